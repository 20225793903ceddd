"""Per-user leases: one atomic UPDATE decides who processes a user, in any thread of any process.

A lease is ``users.lease_owner`` (``host:pid:nonce``) with ``lease_expires_at``. The holder
renews every lease it holds from the recovery loop (one UPDATE per sweep, whatever a stage
takes); a dead process stops renewing and its leases expire. Leases of dead processes on
this host are broken at once, without waiting for expiry.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid

from sqlalchemy import or_, select, update

from app.db import utcnow
from app.models import User

log = logging.getLogger(__name__)


def process_alive(owner: str) -> bool:
    """Whether the process named in ``owner`` (``host:pid:nonce``, this host) can still be working.

    ``os.kill(pid, 0)`` succeeds on a zombie (a dead child its parent has not reaped yet),
    so the process state is read too: a zombie or a dead task holds nothing.
    """
    try:
        pid = int(owner.split(":")[1])
    except (IndexError, ValueError):
        return True  # not ours to judge
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _state(pid) not in ("Z", "X", "x")


def _state(pid: int) -> str | None:
    """The one-letter state of /proc/<pid>/stat (None where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode(errors="replace")
    except OSError:
        return None
    # "pid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'.
    return stat.rpartition(")")[2].split()[0] if ")" in stat else None


class Leases:
    def __init__(self, db, lease_seconds: float):
        self.db = db
        self.lease_seconds = lease_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held: set[int] = set()  # users whose lease this process holds right now
        self._held_lock = threading.Lock()

    def _length(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.lease_seconds)

    def claim(self, user_id: int) -> bool:
        now = utcnow()
        with self.db.session() as session:
            result = session.execute(
                update(User)
                .where(
                    User.id == user_id,
                    or_(User.lease_owner.is_(None), User.lease_expires_at < now, User.lease_owner == self.owner),
                )
                .values(lease_owner=self.owner, lease_expires_at=now + self._length())
            )
            claimed = result.rowcount == 1
        if claimed:
            with self._held_lock:
                self._held.add(user_id)
        return claimed

    def renew_held(self) -> None:
        """Extend every lease this process holds: one UPDATE per sweep, whatever a stage takes.

        Runs from the recovery loop (every RECOVERY interval, well under the lease length), so a
        long stage (several voice notes, a slow provider within its timeouts) keeps its user,
        while a dead process stops renewing and its leases expire.
        """
        with self._held_lock:
            held = list(self._held)
        if not held:
            return
        with self.db.session() as session:
            session.execute(
                update(User)
                .where(User.id.in_(held), User.lease_owner == self.owner)
                .values(lease_expires_at=utcnow() + self._length())
            )

    def release(self, user_id: int) -> None:
        with self._held_lock:
            self._held.discard(user_id)
        with self.db.session() as session:
            session.execute(
                update(User)
                .where(User.id == user_id, User.lease_owner == self.owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def break_dead(self) -> list[int]:
        """Free leases held by dead processes of this host (a SIGKILLed worker), without waiting for expiry.

        Owners are ``host:pid:nonce``; a pid that no longer runs on this host cannot be
        processing anything. Leases of other hosts are left to expire. Returns the users freed.
        """
        host = socket.gethostname()
        freed: list[int] = []
        with self.db.session() as session:
            held = session.execute(
                select(User.id, User.lease_owner).where(
                    User.lease_owner.is_not(None), User.lease_owner.like(f"{host}:%"),
                    User.lease_owner != self.owner,
                )
            ).all()
            for user_id, owner in held:
                if not process_alive(owner):
                    log.warning("breaking the lease of dead process %s on user %s", owner.split(":")[1], user_id)
                    session.execute(
                        update(User).where(User.id == user_id, User.lease_owner == owner)
                        .values(lease_owner=None, lease_expires_at=None)
                    )
                    freed.append(user_id)
        return freed
