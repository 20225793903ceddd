"""Turn assembly and running: the user's pending messages become ONE turn, run through the pipeline.

A stranded or due turn is taken first (new messages join it while its answer is not yet
decided); otherwise a new turn gathers every ``received`` message. There is no fixed wait:
a turn starts at once, and an ``AttemptGuard`` tells the pipeline when a newer message makes
the attempt stale (the scheduler then waits COALESCE_WINDOW_SECONDS of quiet and answers the
grown turn, once). While a turn works: Twilio's typing indicator, and the holding message
when the answer is not decided TURN_BUDGET_SECONDS after the turn began.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import func, select, update

from app.channels.outbox import HOLDING_INDEX
from app.db import utcnow
from app.inbox import outcomes
from app.models import (
    ANSWERED,
    PROCESSING,
    RECEIVED,
    TURN_ANSWERED,
    TURN_PROCESSING,
    TURN_WAITING_RETRY,
    WAITING_HUMAN,
    Handoff,
    Message,
    Turn,
    User,
)
from app.pipeline import notices, run_pipeline
from app.pipeline.context import InboundItem, TurnContext
from app.turn import PermanentTurnError, RetryableTurnError, TurnSuperseded, UserSnapshot

log = logging.getLogger(__name__)

# How often a running attempt looks in the database for a newer message that another process
# stored (this process's own webhooks wake it at once). One query per attempt in flight per
# interval: at 0.25 s it was the largest cost under load (bench/bench_load.py, 40 msg/s: webhook
# p99 532 ms vs 111 ms with a rare check); 1 s keeps a burst split across workers under a second.
SUPERSEDE_POLL_SECONDS = 1.0
# Twilio's typing indicator lasts 25 s; renew it before that on long turns (voice).
TYPING_REFRESH_SECONDS = 20.0


class AttemptGuard:
    """Whether a newer message of the user has arrived since this attempt took its messages.

    The answer is always the database's: a ``received`` message of the user not yet in a turn.
    ``wake()`` (this process's webhook, through ``Inbox.notify``) makes the next look happen at
    once; otherwise the cheap indexed query runs at most every SUPERSEDE_POLL_SECONDS, which is
    how messages stored by other processes are seen. A wake-up alone (the recovery sweep also
    notifies) never drops an attempt.
    """

    def __init__(self, db, user_id: int, may_abandon: bool):
        self.db, self.user_id, self.may_abandon = db, user_id, may_abandon
        self._event = threading.Event()
        self._checked_at = 0.0
        self._superseded = False

    def wake(self) -> None:
        self._event.set()

    def __call__(self) -> bool:
        if not self.may_abandon:
            return False
        if self._superseded:
            return True
        now = time.monotonic()
        if not self._event.is_set() and now - self._checked_at < SUPERSEDE_POLL_SECONDS:
            return False
        self._event.clear()
        self._checked_at = now
        with self.db.session() as session:
            newer = session.scalar(select(Message.id).where(
                Message.user_id == self.user_id, Message.direction == "in", Message.status == RECEIVED).limit(1))
        self._superseded = newer is not None
        return self._superseded


def handoff_open(session, user_id: int) -> bool:
    """Whether a human handoff is open (and not expired) for the user: the one definition."""
    now = utcnow()
    return bool(session.scalar(
        select(func.count()).select_from(Handoff).where(Handoff.user_id == user_id, Handoff.is_open(now))
    ))


def wait_for_quiet(db, user_id: int, window: float, stop: threading.Event) -> None:
    """Coalescing: wait until the user's newest pending message is ``window`` seconds old."""
    if window <= 0:
        return
    deadline = time.monotonic() + max(window * 10, 30.0)  # a user typing forever still gets answers
    while time.monotonic() < deadline and not stop.is_set():
        with db.session() as session:
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


def take_turn(db, user_id: int) -> int | None:
    """The turn to run now: a stranded or due one (new messages join it), else a new one."""
    now = utcnow()
    with db.session() as session:
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
            # A decided turn (answer and parts stored) keeps its words; new messages wait for the
            # next turn. Before the decision they join it, and an answer made without them is stale.
            if new_ids and turn.decided_at is None:
                _attach(session, turn.id, new_ids)
                turn.reply_text = None
            if turn.status == TURN_WAITING_RETRY and turn.next_attempt_at and turn.next_attempt_at > now:
                return None
            turn.status = TURN_PROCESSING
            return turn.id
        if not new_ids:
            return None
        turn = Turn(user_id=user_id, status=TURN_PROCESSING)
        session.add(turn)
        session.flush()
        _attach(session, turn.id, new_ids)
        return turn.id


def _attach(session, turn_id: int, message_ids: list[int]) -> None:
    session.execute(update(Message).where(Message.id.in_(message_ids)).values(status=PROCESSING, turn_id=turn_id))


def run_turn(services, turn_id: int, guard: AttemptGuard | None = None) -> None:
    """One attempt at the turn. Raises ``TurnSuperseded`` when a newer message made it stale."""
    ctx = load_context(services, turn_id)
    if ctx is None:
        return
    if guard is not None:
        ctx.superseded, ctx.may_abandon = guard, guard.may_abandon
    with services.db.session() as session:
        silent = handoff_open(session, ctx.user.id)
    if silent:
        # The team answers these (app/assistant/handoff.py); the inbox shows how long they wait.
        outcomes.finish(services, ctx, TURN_ANSWERED, inbound_status=WAITING_HUMAN)
        return
    ctx.tmpdir = Path(tempfile.mkdtemp(prefix=f"turn{turn_id}-"))
    helpers = _TurnHelpers(services, ctx)
    try:
        run_pipeline(ctx)
    except TurnSuperseded:
        outcomes.record_abandoned(services, ctx)
        raise
    except RetryableTurnError as exc:
        outcomes.retry_or_fail(services, ctx, exc.reason, exc.kind)
    except PermanentTurnError as exc:
        outcomes.fail(services, ctx, exc.reason, exc.kind)
    except Exception as exc:  # noqa: BLE001 - a bug must not lose the message: retry, then fail
        ctx.log.exception("unexpected error in the pipeline")
        outcomes.retry_or_fail(services, ctx, f"internal error: {type(exc).__name__}", "internal")
    else:
        if ctx.halt_status is not None:  # the gate ended the turn (opt-out, silence, limits)
            outcomes.finish(services, ctx, TURN_ANSWERED, inbound_status=ctx.halt_status, reason=ctx.halt_reason)
        else:
            outcomes.finish(services, ctx, TURN_ANSWERED, inbound_status=ANSWERED)
    finally:
        helpers.stop()
        shutil.rmtree(ctx.tmpdir, ignore_errors=True)


def load_context(services, turn_id: int) -> TurnContext | None:
    with services.db.session() as session:
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
        reply_text, reply_kind, decided = turn.reply_text, turn.reply_kind, turn.decided_at is not None
        snapshot = UserSnapshot.of(user)
    if not messages:
        outcomes.finish_empty(services, turn_id)
        return None
    items = [
        InboundItem(
            message_id=m.id, kind=m.kind, body=m.body, media_url=m.media_url, media_type=m.media_type,
            extra=m.extra or {}, transcription=m.transcription,
        )
        for m in messages
    ]
    ctx = TurnContext(
        services=services, turn_id=turn_id, user=snapshot, items=items, attempt=attempt,
        log=logging.LoggerAdapter(logging.getLogger("app.pipeline"), {}),
        started_monotonic=time.monotonic(),
    )
    if reply_text is not None:
        # A previous attempt produced the answer (crash, send failure): stages up to the
        # answer skip themselves and the same words are sent.
        ctx.answer_text = reply_text
    if decided:
        # The parts are stored: nothing is made again, the send stage sends what is stored.
        ctx.decided, ctx.reply_kind = True, reply_kind or "text"
    return ctx


class _TurnHelpers:
    """What runs beside a turn's pipeline: the typing indicator and the holding-message timer."""

    def __init__(self, services, ctx: TurnContext):
        self.services, self.ctx = services, ctx
        self._stop = threading.Event()
        self._timers: list[threading.Thread] = []
        if ctx.decided:
            return  # only stored parts are sent now: nothing to wait for
        with services.db.session() as session:
            if session.scalar(select(User.opted_out_at).where(User.id == ctx.user.id)) is not None:
                return  # opted out: silence, not even "typing..." (the gate decides the rest)
        settings = services.settings
        if ctx.user.channel == "whatsapp" and settings.twilio_typing_indicator and services.twilio.available:
            sid = _newest_sid(services, ctx)
            if sid:
                self._start(self._typing, sid)
        with services.db.session() as session:
            turn = session.get(Turn, ctx.turn_id)
            holding_due = not turn.holding_sent
            began = turn.created_at
        if holding_due:
            delay = settings.turn_budget_seconds - (utcnow() - began).total_seconds()
            self._start(self._holding, max(0.0, delay))

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=f"turn{self.ctx.turn_id}-helper", daemon=True)
        thread.start()
        self._timers.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def _typing(self, message_sid: str) -> None:
        """Typing indicator now and every TYPING_REFRESH_SECONDS; one failure logged, then quiet."""
        while not self._stop.is_set():
            try:
                self.services.twilio.typing(message_sid)
            except Exception as exc:  # noqa: BLE001 - a courtesy: never delays or fails the turn
                log.warning("typing indicator failed (%s); not retried for this turn", getattr(exc, "reason", exc))
                return
            if self._stop.wait(TYPING_REFRESH_SECONDS):
                return

    def _holding(self, delay: float) -> None:
        """The holding message when the answer is not decided within the turn's budget."""
        if self._stop.wait(delay):
            return
        ctx = self.ctx
        with ctx.decision_lock:  # the send stage decides under the same lock: never after the answer
            if ctx.decided or self._stop.is_set():
                return
            with self.services.db.session() as session:
                turn = session.get(Turn, ctx.turn_id)
                if turn.holding_sent:
                    return
                turn.holding_sent = True
            ctx.log.info("answer not ready %.0f s into the turn: holding message", ctx.settings.turn_budget_seconds)
            outcomes.say(self.services, ctx, HOLDING_INDEX, notices.HOLDING)


def _newest_sid(services, ctx: TurnContext) -> str | None:
    with services.db.session() as session:
        return session.scalar(
            select(Message.provider_sid).where(Message.id.in_([item.message_id for item in ctx.items]))
            .order_by(Message.created_at.desc(), Message.id.desc()).limit(1))
