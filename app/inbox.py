"""The durable inbox: per-user ordering, coalescing, retries and crash recovery.

The webhook only INSERTs the inbound row and calls ``Inbox.notify(user_id)``. A thread of
the executor then:

1. claims the user's lease with one atomic UPDATE (users.lease_owner / lease_expires_at),
   so one user's messages are never processed concurrently, in any thread of any process;
2. waits until the user has been quiet for COALESCE_WINDOW_SECONDS, then takes every
   pending inbound message as ONE turn;
3. runs the pipeline; the recovery loop renews the leases this process holds;
4. records the outcome: answered; or waiting for a retry with backoff (a holding message
   goes out once); or failed with its reason (an apology goes out);
5. releases the lease and looks again, so a message that arrived meanwhile is not stranded.

Recovery (at start and every RECOVERY interval) notifies every user with received
messages, turns whose processor died (expired lease), or retries that are due. All state
is in the database, so a crash loses nothing.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import and_, func, or_, select, update

from app.db import utcnow
from app.logging import work_context
from app.models import (
    ANSWERED,
    FAILED,
    IGNORED,
    PROCESSING,
    RECEIVED,
    TURN_ANSWERED,
    TURN_FAILED,
    TURN_PROCESSING,
    TURN_WAITING_RETRY,
    Handoff,
    Message,
    Turn,
    User,
)
from app.pipeline import run_pipeline
from app.pipeline import notices
from app.pipeline.context import (
    InboundItem,
    OutboundPart,
    PermanentTurnError,
    RetryableTurnError,
    TurnContext,
    UserSnapshot,
)
from app.pipeline.send import APOLOGY_INDEX, HOLDING_INDEX, deliver

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL_SECONDS = 3600.0


def _process_alive(owner: str) -> bool:
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
    return True


class Inbox:
    def __init__(self, services):
        self.services = services
        self.settings = services.settings
        self.db = services.db
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._executor: ThreadPoolExecutor | None = None
        self._scheduled: set[int] = set()
        self._scheduled_lock = threading.Lock()
        self._stop = threading.Event()
        self._held: set[int] = set()  # users whose lease this process holds right now
        self._held_lock = threading.Lock()
        self._recovery_thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=self.settings.workers, thread_name_prefix="inbox")
        self._recovery_thread = threading.Thread(target=self._recovery_loop, name="inbox-recovery", daemon=True)
        self._recovery_thread.start()

    def shutdown(self, wait: bool = True) -> None:
        self._stop.set()
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=not wait)
            self._executor = None

    def _recovery_loop(self) -> None:
        last_maintenance = 0.0
        while not self._stop.is_set():
            try:
                self._renew_held_leases()
                self.recover()
                if time.monotonic() - last_maintenance >= MAINTENANCE_INTERVAL_SECONDS:
                    last_maintenance = time.monotonic()
                    self.maintenance()
            except Exception:  # noqa: BLE001 - keep sweeping; the error is logged
                log.exception("inbox recovery sweep failed")
            self._stop.wait(self.settings.recovery_interval_seconds)

    def maintenance(self) -> None:
        """Hourly housekeeping: close expired handoffs, delete old voice files and simulator uploads."""
        now = utcnow()
        with self.db.session() as session:
            session.execute(
                update(Handoff).where(Handoff.status == "open", Handoff.expires_at < now)
                .values(status="closed", closed_at=now, closed_by="expired")
            )
        retention = self.settings.media_retention_days
        removed = self.services.storage.cleanup(retention)
        uploads = Path(self.settings.instance_dir) / "uploads"
        cutoff = time.time() - retention * 86400
        for path in uploads.glob("*") if uploads.is_dir() else []:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("maintenance removed %d old media files", removed)

    # ---- scheduling -------------------------------------------------------------------
    def notify(self, user_id: int) -> None:
        """Make sure someone processes ``user_id``'s pending messages (cheap, idempotent)."""
        if self._executor is None:
            return
        with self._scheduled_lock:
            if user_id in self._scheduled:
                return
            self._scheduled.add(user_id)
        try:
            self._executor.submit(self._drain_scheduled, user_id)
        except RuntimeError:  # executor shut down
            with self._scheduled_lock:
                self._scheduled.discard(user_id)

    def submit(self, fn, *args) -> None:
        """Run a short background task (e.g. a text fallback) on the inbox's executor."""
        if self._executor is None:
            fn(*args)
            return
        self._executor.submit(fn, *args)

    def _drain_scheduled(self, user_id: int) -> None:
        try:
            self.drain(user_id)
        except Exception:  # noqa: BLE001 - the recovery sweep will try this user again
            log.exception("processing user %s failed", user_id)
        finally:
            with self._scheduled_lock:
                self._scheduled.discard(user_id)

    def recover(self) -> list[int]:
        """Notify every user with work left behind; returns their ids."""
        self._break_dead_leases()
        now = utcnow()
        with self.db.session() as session:
            received = select(Message.user_id).where(Message.direction == "in", Message.status == RECEIVED)
            stranded = (
                select(Turn.user_id)
                .join(User, User.id == Turn.user_id)
                .where(
                    Turn.status == TURN_PROCESSING,
                    or_(User.lease_expires_at.is_(None), User.lease_expires_at < now),
                )
            )
            due = select(Turn.user_id).where(Turn.status == TURN_WAITING_RETRY, Turn.next_attempt_at <= now)
            user_ids = sorted(set(session.scalars(received.union(stranded, due))))
        for user_id in user_ids:
            self.notify(user_id)
        return user_ids

    def _break_dead_leases(self) -> None:
        """Free leases held by dead processes of this host (a SIGKILLed worker), without waiting for expiry.

        Owners are ``host:pid:nonce``; a pid that no longer exists on this host cannot be
        processing anything. Leases of other hosts are left to expire.
        """
        host = socket.gethostname()
        with self.db.session() as session:
            held = session.execute(
                select(User.id, User.lease_owner).where(
                    User.lease_owner.is_not(None), User.lease_owner.like(f"{host}:%"),
                    User.lease_owner != self.owner,
                )
            ).all()
            for user_id, owner in held:
                if not _process_alive(owner):
                    log.warning("breaking the lease of dead process %s on user %s", owner.split(":")[1], user_id)
                    session.execute(
                        update(User).where(User.id == user_id, User.lease_owner == owner)
                        .values(lease_owner=None, lease_expires_at=None)
                    )

    def retry_failed_turn(self, turn_id: int) -> bool:
        """Operator's "retry": a failed turn runs again now, with a fresh retry schedule."""
        with self.db.session() as session:
            turn = session.get(Turn, turn_id)
            if turn is None or turn.status != TURN_FAILED:
                return False
            turn.status, turn.next_attempt_at, turn.attempts = TURN_WAITING_RETRY, utcnow(), 0
            turn.holding_sent = True  # the user already heard from us; no second holding message
            session.execute(
                update(Message).where(Message.turn_id == turn_id, Message.direction == "in")
                .values(status=PROCESSING, error=None)
            )
            user_id = turn.user_id
        self.notify(user_id)
        return True

    def depth(self) -> int:
        """Inbound messages not yet answered (received or in a turn being processed)."""
        with self.db.session() as session:
            return session.scalar(
                select(func.count()).select_from(Message).where(
                    Message.direction == "in", Message.status.in_((RECEIVED, PROCESSING))
                )
            ) or 0

    # ---- the lease ----------------------------------------------------------------------
    def _claim(self, user_id: int) -> bool:
        now = utcnow()
        with self.db.session() as session:
            result = session.execute(
                update(User)
                .where(
                    User.id == user_id,
                    or_(User.lease_owner.is_(None), User.lease_expires_at < now, User.lease_owner == self.owner),
                )
                .values(lease_owner=self.owner, lease_expires_at=now + self._lease_length())
            )
            claimed = result.rowcount == 1
        if claimed:
            with self._held_lock:
                self._held.add(user_id)
        return claimed

    def _renew_held_leases(self) -> None:
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
                .values(lease_expires_at=utcnow() + self._lease_length())
            )

    def _release(self, user_id: int) -> None:
        with self._held_lock:
            self._held.discard(user_id)
        with self.db.session() as session:
            session.execute(
                update(User)
                .where(User.id == user_id, User.lease_owner == self.owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def _lease_length(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.settings.lease_seconds)

    # ---- processing -------------------------------------------------------------------
    def drain(self, user_id: int) -> None:
        """Process the user's pending work until none is left (or another process holds the lease)."""
        while not self._stop.is_set():
            if not self._claim(user_id):
                return  # the holder looks again after releasing
            try:
                worked = self._process_next_turn(user_id)
                while worked and not self._stop.is_set():
                    worked = self._process_next_turn(user_id)
            finally:
                self._release(user_id)
            # A message committed after our last look, whose notify found the lease taken.
            if not self._has_ready_work(user_id):
                return

    def _has_ready_work(self, user_id: int) -> bool:
        now = utcnow()
        with self.db.session() as session:
            received = session.scalar(
                select(func.count()).select_from(Message).where(
                    Message.user_id == user_id, Message.direction == "in", Message.status == RECEIVED
                )
            )
            waiting_due = session.scalar(
                select(func.count()).select_from(Turn).where(
                    Turn.user_id == user_id,
                    or_(Turn.status == TURN_PROCESSING,
                        and_(Turn.status == TURN_WAITING_RETRY, Turn.next_attempt_at <= now)),
                )
            )
            return bool(received or waiting_due)

    def _process_next_turn(self, user_id: int) -> bool:
        """Take and run the user's next turn; False when there is nothing to do now."""
        self._wait_for_quiet(user_id)
        turn_id = self._take_turn(user_id)
        if turn_id is None:
            return False
        with work_context(f"turn={turn_id}"):
            self._run_turn(turn_id)
        return True

    def _wait_for_quiet(self, user_id: int) -> None:
        """Coalescing: wait until the user's newest pending message is WINDOW seconds old."""
        window = self.settings.coalesce_window_seconds
        if window <= 0:
            return
        deadline = time.monotonic() + max(window * 10, 30.0)  # a user typing forever still gets answers
        while time.monotonic() < deadline and not self._stop.is_set():
            with self.db.session() as session:
                newest = session.scalar(
                    select(func.max(Message.created_at)).where(
                        Message.user_id == user_id, Message.direction == "in", Message.status == RECEIVED
                    )
                )
            if newest is None:
                return
            quiet_for = (utcnow() - newest).total_seconds()
            if quiet_for >= window:
                return
            time.sleep(min(window - quiet_for + 0.01, window))

    def _take_turn(self, user_id: int) -> int | None:
        """The turn to run now: a stranded or due one (new messages join it), else a new one."""
        now = utcnow()
        with self.db.session() as session:
            turn = session.scalar(
                select(Turn)
                .where(Turn.user_id == user_id, Turn.status.in_((TURN_PROCESSING, TURN_WAITING_RETRY)))
                .order_by(Turn.id)
                .limit(1)
            )
            new_ids = list(
                session.scalars(
                    select(Message.id)
                    .where(Message.user_id == user_id, Message.direction == "in", Message.status == RECEIVED)
                    .order_by(Message.created_at, Message.id)
                )
            )
            if turn is not None:
                # A turn whose answer is already known keeps its words; new messages wait for the next.
                if new_ids and turn.reply_text is None:
                    self._attach(session, turn.id, new_ids)
                if turn.status == TURN_WAITING_RETRY and turn.next_attempt_at and turn.next_attempt_at > now:
                    return None
                turn.status = TURN_PROCESSING
                return turn.id
            if not new_ids:
                return None
            turn = Turn(user_id=user_id, status=TURN_PROCESSING)
            session.add(turn)
            session.flush()
            self._attach(session, turn.id, new_ids)
            return turn.id

    @staticmethod
    def _attach(session, turn_id: int, message_ids: list[int]) -> None:
        session.execute(
            update(Message).where(Message.id.in_(message_ids)).values(status=PROCESSING, turn_id=turn_id)
        )

    def _run_turn(self, turn_id: int) -> None:
        ctx = self._load_context(turn_id)
        if ctx is None:
            return
        if self._handoff_open(ctx.user.id):
            self._finish(ctx, TURN_ANSWERED, inbound_status=IGNORED,
                         reason="handoff open: a human is handling this conversation")
            return
        ctx.tmpdir = Path(tempfile.mkdtemp(prefix=f"turn{turn_id}-"))
        try:
            run_pipeline(ctx)
        except RetryableTurnError as exc:
            self._retry_or_fail(ctx, exc.reason, exc.kind)
        except PermanentTurnError as exc:
            self._fail(ctx, exc.reason, exc.kind)
        except Exception as exc:  # noqa: BLE001 - a bug must not lose the message: retry, then fail
            ctx.log.exception("unexpected error in the pipeline")
            self._retry_or_fail(ctx, f"internal error: {type(exc).__name__}", "internal")
        else:
            self._finish(ctx, TURN_ANSWERED, inbound_status=ANSWERED)
        finally:
            shutil.rmtree(ctx.tmpdir, ignore_errors=True)

    def _load_context(self, turn_id: int) -> TurnContext | None:
        with self.db.session() as session:
            turn = session.get(Turn, turn_id)
            user = session.get(User, turn.user_id)
            messages = list(
                session.scalars(
                    select(Message)
                    .where(Message.turn_id == turn_id, Message.direction == "in")
                    .order_by(Message.created_at, Message.id)
                )
            )
            turn.attempts += 1
            attempt = turn.attempts
            reply_text = turn.reply_text
            snapshot = UserSnapshot.of(user)
        if not messages:
            self._finish_empty(turn_id)
            return None
        items = [
            InboundItem(
                message_id=m.id, kind=m.kind, body=m.body, media_url=m.media_url, media_type=m.media_type,
                extra=m.extra or {}, transcription=m.transcription,
            )
            for m in messages
        ]
        ctx = TurnContext(
            services=self.services, turn_id=turn_id, user=snapshot, items=items, attempt=attempt,
            log=logging.LoggerAdapter(logging.getLogger("app.pipeline"), {}),
            started_monotonic=time.monotonic(),
        )
        if reply_text is not None:
            # A previous attempt produced the answer (crash, send failure): stages up to the
            # answer skip themselves and the same words are sent.
            ctx.answer_text = reply_text
        return ctx

    def _handoff_open(self, user_id: int) -> bool:
        now = utcnow()
        with self.db.session() as session:
            return bool(
                session.scalar(
                    select(func.count()).select_from(Handoff).where(
                        Handoff.user_id == user_id,
                        Handoff.status == "open",
                        or_(Handoff.expires_at.is_(None), Handoff.expires_at > now),
                    )
                )
            )

    # ---- outcomes -----------------------------------------------------------------------
    def _finish(self, ctx: TurnContext, turn_status: str, inbound_status: str, reason: str | None = None,
                kind: str | None = None) -> None:
        now = utcnow()
        with self.db.session() as session:
            turn = session.get(Turn, ctx.turn_id)
            turn.status = turn_status
            turn.finished_at = now
            turn.error, turn.error_kind = reason, kind
            if ctx.answer_text is not None:
                turn.reply_text = ctx.answer_text
            turn.reply_kind = ctx.reply_kind if turn_status == TURN_ANSWERED else turn.reply_kind
            messages = list(session.scalars(select(Message).where(Message.turn_id == ctx.turn_id,
                                                                  Message.direction == "in")))
            first_created = min((m.created_at for m in messages), default=now)
            timings = dict(ctx.timings)
            timings["end_to_end"] = round((now - first_created).total_seconds() * 1000, 1)
            turn.timings = timings
            turn.tool_calls = ctx.tool_calls or None
            for message in messages:
                message.status = inbound_status
                message.error = reason
                message.timings = timings
        ctx.log.info("turn %s %s (%s) in %.0f ms", ctx.turn_id, turn_status, ctx.reply_kind,
                     (time.monotonic() - ctx.started_monotonic) * 1000)

    def _finish_empty(self, turn_id: int) -> None:
        with self.db.session() as session:
            turn = session.get(Turn, turn_id)
            turn.status, turn.finished_at = TURN_ANSWERED, utcnow()

    def _retry_or_fail(self, ctx: TurnContext, reason: str, kind: str) -> None:
        schedule = self.settings.retry_backoff_seconds
        if ctx.attempt > len(schedule):
            self._fail(ctx, f"{reason} (gave up after {ctx.attempt} attempts)", kind)
            return
        delay = schedule[ctx.attempt - 1]
        with self.db.session() as session:
            turn = session.get(Turn, ctx.turn_id)
            turn.status = TURN_WAITING_RETRY
            turn.next_attempt_at = utcnow() + dt.timedelta(seconds=delay)
            turn.error, turn.error_kind = reason, kind
            if ctx.answer_text is not None:
                turn.reply_text = ctx.answer_text  # the answer is known: a retry only re-sends
            holding_due = not turn.holding_sent
            turn.holding_sent = True
        ctx.log.warning("turn %s will be retried in %.0f s: %s", ctx.turn_id, delay, reason)
        if holding_due and kind != "send":
            self._say(ctx, HOLDING_INDEX, notices.HOLDING)

    def _fail(self, ctx: TurnContext, reason: str, kind: str) -> None:
        ctx.log.error("turn %s failed (%s): %s", ctx.turn_id, kind, reason)
        if kind != "send":
            self._say(ctx, APOLOGY_INDEX, notices.APOLOGY)
        self._finish(ctx, TURN_FAILED, inbound_status=FAILED, reason=reason, kind=kind)

    def _say(self, ctx: TurnContext, index: int, text: str) -> None:
        """Send a fixed message (holding, apology); its own failure is logged, never raised."""
        try:
            deliver(self.services, ctx.turn_id, ctx.user, [OutboundPart(index=index, body=text)])
        except (RetryableTurnError, PermanentTurnError) as exc:
            ctx.log.warning("could not send the %s message: %s", "holding" if index == HOLDING_INDEX else "apology",
                            exc.reason)
