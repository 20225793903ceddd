"""How a turn ends: answered; waiting for a retry (one holding message); or failed (one apology).

The reason of a failure is stored on the turn and on its inbound messages, so operators see
why; the answer text, once known, is stored too, so a retry sends the same words.
"""
from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import select

from app.channels.outbox import APOLOGY_INDEX, HOLDING_INDEX, deliver
from app.db import utcnow
from app.models import FAILED, TURN_ANSWERED, TURN_FAILED, TURN_WAITING_RETRY, Message, Turn
from app.pipeline import notices
from app.pipeline.context import TurnContext
from app.turn import OutboundPart, PermanentTurnError, RetryableTurnError


def finish(services, ctx: TurnContext, turn_status: str, inbound_status: str, reason: str | None = None,
           kind: str | None = None) -> None:
    now = utcnow()
    with services.db.session() as session:
        turn = session.get(Turn, ctx.turn_id)
        turn.status = turn_status
        turn.finished_at = now
        turn.error, turn.error_kind = reason, kind
        if ctx.answer_text is not None and turn.decided_at is None:
            turn.reply_text = ctx.answer_text
        if turn_status == TURN_ANSWERED and turn.decided_at is None:
            turn.reply_kind = ctx.reply_kind
        messages = list(session.scalars(select(Message).where(Message.turn_id == ctx.turn_id,
                                                              Message.direction == "in")))
        first_created = min((m.created_at for m in messages), default=now)
        timings = dict(ctx.timings)
        timings["end_to_end"] = round((now - first_created).total_seconds() * 1000, 1)
        turn.timings = timings
        turn.tool_calls = ctx.tool_calls or None
        turn.usage = _merged_usage(turn.usage, ctx.usage)
        for message in messages:
            message.status = inbound_status
            message.error = reason
            message.timings = timings
    ctx.log.info("turn %s %s (%s) in %.0f ms", ctx.turn_id, turn_status, ctx.reply_kind,
                 (time.monotonic() - ctx.started_monotonic) * 1000)


def _merged_usage(stored: dict | None, new: dict) -> dict | None:
    """The turn's usage over all its attempts (an abandoned or retried attempt cost calls too)."""
    if not stored and not new:
        return None
    merged = dict(stored or {})
    for key, value in new.items():
        merged[key] = merged.get(key, 0) + value
    return merged


def record_abandoned(services, ctx: TurnContext) -> None:
    """An attempt dropped for a newer message: keep what it spent on the model; it was no try."""
    with services.db.session() as session:
        turn = session.get(Turn, ctx.turn_id)
        turn.usage = _merged_usage(turn.usage, ctx.usage)
        turn.attempts = max(0, turn.attempts - 1)  # the retry schedule counts failures, not restarts
    ctx.usage = {}


def finish_empty(services, turn_id: int) -> None:
    with services.db.session() as session:
        turn = session.get(Turn, turn_id)
        turn.status, turn.finished_at = TURN_ANSWERED, utcnow()


def retry_or_fail(services, ctx: TurnContext, reason: str, kind: str) -> None:
    schedule = services.settings.retry_backoff_seconds
    if ctx.attempt > len(schedule):
        fail(services, ctx, f"{reason} (gave up after {ctx.attempt} attempts)", kind)
        return
    delay = schedule[ctx.attempt - 1]
    with services.db.session() as session:
        turn = session.get(Turn, ctx.turn_id)
        turn.usage = _merged_usage(turn.usage, ctx.usage)
        turn.status = TURN_WAITING_RETRY
        turn.next_attempt_at = utcnow() + dt.timedelta(seconds=delay)
        turn.error, turn.error_kind = reason, kind
        if ctx.answer_text is not None and turn.decided_at is None:
            turn.reply_text = ctx.answer_text  # the answer is known: a retry does not ask again
        holding_due = not turn.holding_sent
        turn.holding_sent = True
    ctx.log.warning("turn %s will be retried in %.0f s: %s", ctx.turn_id, delay, reason)
    if holding_due and kind != "send":
        say(services, ctx, HOLDING_INDEX, notices.HOLDING)


def fail(services, ctx: TurnContext, reason: str, kind: str) -> None:
    ctx.log.error("turn %s failed (%s): %s", ctx.turn_id, kind, reason)
    if kind != "send":
        say(services, ctx, APOLOGY_INDEX, notices.APOLOGY)
    finish(services, ctx, TURN_FAILED, inbound_status=FAILED, reason=reason, kind=kind)


def say(services, ctx: TurnContext, index: int, text: str) -> None:
    """Send a fixed message (holding, apology); its own failure is logged, never raised."""
    try:
        deliver(services, ctx.turn_id, ctx.user, [OutboundPart(index=index, body=text)])
    except (RetryableTurnError, PermanentTurnError) as exc:
        ctx.log.warning("could not send the %s message: %s", "holding" if index == HOLDING_INDEX else "apology",
                        exc.reason)
