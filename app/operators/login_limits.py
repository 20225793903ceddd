"""Login throttling counted in the database, so it holds across processes and instances.

Every password check is one row per key in ``login_attempts``. Two keys are counted:

- ``name:<operator>|ip:<address>`` — the pair. At most ``MAX_FAILURES_PER_PAIR`` (5)
  failures in ``WINDOW`` (15 minutes); a success on the pair starts its count afresh
  (the person found their password).
- ``ip:<address>`` — the client, whatever names it tries. At most
  ``MAX_FAILURES_PER_ADDRESS`` (20) failures in the window; successes do not reset it, or an
  attacker holding one valid account could log in every 19 guesses to keep spraying others.

There is deliberately no limit on a name alone. It would let anyone lock a colleague out
by failing with their name from anywhere; with these keys, a correct login from a new
client is never refused because of somebody else's failures. Guessing one name from many
addresses stays slow because every try costs an argon2 verification and each address
gets 5 tries per name per window.

The address is what the web layer passes in (``request.remote_addr``). X-Forwarded-For is
believed only from the proxies configured with TRUSTED_PROXY_COUNT / TRUSTED_PROXIES
(app/web/proxies.py), so a client cannot choose its address by sending the header.

A throttled request is refused without checking the password and is not recorded, so
hammering does not grow the table. Checking and recording are two statements: concurrent
requests can pass the check together and exceed a limit by the number in flight, which
the argon2 cost keeps small. ``prune`` deletes rows past ``KEEP`` (the hourly maintenance
calls it).
"""
from __future__ import annotations

import datetime as dt
import math

from sqlalchemy import delete, func, select

from app.db import Database, utcnow
from app.models import LoginAttempt

MAX_FAILURES_PER_PAIR = 5
MAX_FAILURES_PER_ADDRESS = 20
WINDOW = dt.timedelta(minutes=15)
# Kept longer than the window so a day of attempts can be read back after an incident.
KEEP = dt.timedelta(days=1)
_PART_LENGTH = 64  # names are at most 64 characters, IPv6 addresses 45


def address_key(client_addr: str | None) -> str:
    return f"ip:{(client_addr or 'unknown')[:_PART_LENGTH]}"


def pair_key(name: str, client_addr: str | None) -> str:
    return f"name:{name[:_PART_LENGTH]}|{address_key(client_addr)}"


def _failures_since(session, key: str, since: dt.datetime) -> list[dt.datetime]:
    """Failure times for ``key`` after ``since`` and after the key's last success, newest first.

    Only pair keys ever hold successes (``record``), so only they are reset by one.
    """
    last_success = session.scalar(select(func.max(LoginAttempt.created_at)).where(
        LoginAttempt.key == key, LoginAttempt.succeeded.is_(True), LoginAttempt.created_at > since))
    if last_success is not None:
        since = last_success
    return list(session.scalars(
        select(LoginAttempt.created_at)
        .where(LoginAttempt.key == key, LoginAttempt.succeeded.is_(False), LoginAttempt.created_at > since)
        .order_by(LoginAttempt.created_at.desc())
    ))


def retry_after(db: Database, name: str, client_addr: str | None, now: dt.datetime | None = None) -> int:
    """Whole seconds until ``client_addr`` may try ``name`` again; 0 when it may try now."""
    now = now or utcnow()
    since = now - WINDOW
    waits = []
    with db.session() as session:
        for key, limit in ((pair_key(name, client_addr), MAX_FAILURES_PER_PAIR),
                           (address_key(client_addr), MAX_FAILURES_PER_ADDRESS)):
            failures = _failures_since(session, key, since)
            if len(failures) >= limit:
                # Allowed again once fewer than `limit` failures are left in the window,
                # i.e. when the limit-th newest one leaves it.
                waits.append((failures[limit - 1] + WINDOW - now).total_seconds())
    if not waits:
        return 0
    return max(1, math.ceil(max(waits)))


def record(db: Database, name: str, client_addr: str | None, succeeded: bool,
           now: dt.datetime | None = None) -> None:
    """Count one password check. A success is recorded for the pair only (see the module docstring)."""
    now = now or utcnow()
    with db.session() as session:
        session.add(LoginAttempt(key=pair_key(name, client_addr), succeeded=succeeded, created_at=now))
        if not succeeded:
            session.add(LoginAttempt(key=address_key(client_addr), succeeded=False, created_at=now))


def prune(db: Database, now: dt.datetime | None = None, keep: dt.timedelta = KEEP) -> int:
    """Delete attempts older than ``keep`` (never less than the window); returns how many."""
    cutoff = (now or utcnow()) - max(keep, WINDOW)
    with db.session() as session:
        return session.execute(delete(LoginAttempt).where(LoginAttempt.created_at < cutoff)).rowcount
