"""Stage 0: the gate. Before any download or model call, decide whether the turn is answered.

In order:

1. Commands, recognised in a message that is only the word (any case, accents, spaces,
   punctuation or emoji around it): SAIR, PARAR, CANCELAR, DESCADASTRAR or STOP opt the user
   out (stored on the user with the time; one confirmation); VOLTAR or START opt them back in
   (confirmed); APAGAR MEUS DADOS records an erasure request, tells the user how it is
   handled and shows it to operators (dashboard /trust).
2. An opted-out user gets silence: no answer, no model call, no notice (``ignored``).
3. Limits (app/ops/limits.py): messages over a per-user limit or the daily model budget are
   stored as ``limited`` with the reason and leave the turn; the user gets one polite notice
   per limit and window, then silence. If nothing is left, the turn ends here.

A gate decision ends the turn through ``ctx.halt``; the inbox records the outcome.
"""
from __future__ import annotations

import logging
import re
import unicodedata

from sqlalchemy import select, update

from app.channels.outbox import deliver
from app.channels.policy import OPT_OUT_CONFIRMATION_INDEX
from app.db import utcnow
from app.models import ANSWERED, IGNORED, LIMITED, Message, User
from app.ops import limits
from app.pipeline import notices
from app.pipeline.context import TurnContext
from app.turn import OutboundPart, PermanentTurnError, RetryableTurnError

log = logging.getLogger(__name__)

OPT_OUT, OPT_IN, ERASE = "opt_out", "opt_in", "erase"
COMMANDS = {
    "SAIR": OPT_OUT, "PARAR": OPT_OUT, "CANCELAR": OPT_OUT, "DESCADASTRAR": OPT_OUT, "STOP": OPT_OUT,
    "VOLTAR": OPT_IN, "START": OPT_IN,
    "APAGARMEUSDADOS": ERASE,
}
OPT_IN_CONFIRMATION_INDEX = 1003
LIMIT_NOTICE_INDEX = {limits.MINUTE: 1004, limits.DAY: 1005, limits.AUDIO: 1006, limits.AI_BUDGET: 1007}
ERASURE_ANSWER_INDEX = 1008

_NOT_LETTERS = re.compile(r"[^A-Z]")


def command_of(text: str | None) -> str | None:
    """The command a message is, when it is nothing but the command word(s)."""
    if not text or len(text) > 200:
        return None
    # NFKD splits "Ã" into "A" + a combining tilde; dropping everything that is not a
    # letter A-Z then removes accents, spaces, punctuation and emoji alike.
    folded = unicodedata.normalize("NFKD", text).upper()
    return COMMANDS.get(_NOT_LETTERS.sub("", folded))


def run(ctx: TurnContext) -> None:
    if ctx.answer_text is not None:
        return  # a retry of a turn that passed the gate; the outbox re-checks every send
    command = None
    for item in ctx.items:
        found = command_of(item.body) if item.kind == "text" else None
        if found in (OPT_OUT, OPT_IN):
            command = found  # the last word on opting wins
        elif found == ERASE and command is None:
            command = found
    services = ctx.services
    first_id = min(item.message_id for item in ctx.items)
    with services.db.session() as session:
        user = session.get(User, ctx.user.id)
        first_at = session.scalar(select(Message.created_at).where(Message.id == first_id))
        if command == OPT_OUT and user.opted_out_at is None:
            user.opted_out_at = utcnow()
        elif command == OPT_IN and user.opted_out_at is not None:
            user.opted_out_at = None
            command = "opted_in_now"
        elif command == ERASE and user.erasure_requested_at is None:
            user.erasure_requested_at = utcnow()
        opted_out_at = user.opted_out_at
    if command == OPT_OUT:
        # Confirm when this turn opted the user out (again on a retry of it); a second SAIR
        # from someone already opted out gets silence.
        if first_at is not None and opted_out_at >= first_at:
            _say(ctx, OPT_OUT_CONFIRMATION_INDEX, notices.OPTED_OUT, must=True)
            ctx.log.info("user opted out")
            ctx.halt(ANSWERED, "opt-out: the user asked to receive no more messages")
        else:
            ctx.halt(IGNORED, "opted out already: the bot stays silent until the user sends VOLTAR")
        return
    if command == "opted_in_now":
        _say(ctx, OPT_IN_CONFIRMATION_INDEX, notices.OPTED_IN, must=True)
        ctx.log.info("user opted back in")
        ctx.halt(ANSWERED, "opt-in: the user asked to receive messages again")
        return
    if opted_out_at is not None:
        ctx.halt(IGNORED, "opted out: the bot stays silent until the user sends VOLTAR")
        return
    if command == ERASE:
        ctx.log.warning("the user asked for their data to be erased (dashboard: /trust)")
        _say(ctx, ERASURE_ANSWER_INDEX, notices.ERASURE_REQUESTED, must=True)
        ctx.halt(ANSWERED, "erasure requested (LGPD): an operator handles it")
        return
    _apply_limits(ctx)


def _apply_limits(ctx: TurnContext) -> None:
    services = ctx.services
    hits = limits.judge(services.db, services.settings, ctx.user.id, [item.message_id for item in ctx.items])
    if not hits:
        return
    with services.db.session() as session:
        for message_id, hit in hits.items():
            # Out of the turn: stored and visible, never answered.
            session.execute(update(Message).where(Message.id == message_id)
                            .values(status=LIMITED, error=hit.reason, turn_id=None))
    ctx.items = [item for item in ctx.items if item.message_id not in hits]
    ctx.log.info("%d message(s) over a limit: %s", len(hits), sorted({h.limit for h in hits.values()}))
    for hit in {(h.limit, h.window): h for h in hits.values()}.values():
        if limits.first_in_window(services.db, ctx.user.id, hit):
            _say(ctx, LIMIT_NOTICE_INDEX[hit.limit], notices.LIMIT_NOTICES[hit.limit], must=False)
    if not ctx.items:
        ctx.halt(LIMITED, next(iter(hits.values())).reason)


def _say(ctx: TurnContext, index: int, text: str, must: bool) -> None:
    """Send a fixed sentence. ``must``: a failure retries the turn (a confirmation the user
    must get); otherwise it is logged (a notice is worth at most one try)."""
    try:
        deliver(ctx.services, ctx.turn_id, ctx.user, [OutboundPart(index=index, body=text)])
    except (RetryableTurnError, PermanentTurnError) as exc:
        if must:
            raise
        ctx.log.warning("could not send the limit notice: %s", exc.reason)
