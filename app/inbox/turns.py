"""Turn assembly and running: the user's pending messages become ONE turn, run through the pipeline.

A stranded or due turn is taken first (new messages join it while its answer is unknown);
otherwise a new turn gathers every ``received`` message. Coalescing waits until the user
has been quiet for COALESCE_WINDOW_SECONDS. The pipeline's turn errors decide the outcome.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import func, select, update

from app.db import utcnow
from app.inbox import outcomes
from app.models import (
    ANSWERED,
    IGNORED,
    PROCESSING,
    RECEIVED,
    TURN_ANSWERED,
    TURN_PROCESSING,
    TURN_WAITING_RETRY,
    Handoff,
    Message,
    Turn,
    User,
)
from app.pipeline import run_pipeline
from app.pipeline.context import InboundItem, TurnContext
from app.turn import PermanentTurnError, RetryableTurnError, UserSnapshot


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
            # A turn whose answer is already known keeps its words; new messages wait for the next.
            if new_ids and turn.reply_text is None:
                _attach(session, turn.id, new_ids)
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


def run_turn(services, turn_id: int) -> None:
    ctx = load_context(services, turn_id)
    if ctx is None:
        return
    with services.db.session() as session:
        silent = handoff_open(session, ctx.user.id)
    if silent:
        outcomes.finish(services, ctx, TURN_ANSWERED, inbound_status=IGNORED,
                        reason="handoff open: a human is handling this conversation")
        return
    ctx.tmpdir = Path(tempfile.mkdtemp(prefix=f"turn{turn_id}-"))
    try:
        run_pipeline(ctx)
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
        reply_text = turn.reply_text
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
    return ctx
