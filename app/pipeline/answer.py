"""Stage 5: the answer text.

With an OpenAI key: Endrigo's persona on the Responses API with the function-tool loop
(app/responder.py). Without one (offline mode): the best knowledge passages with a short
Portuguese framing (app/offline.py). A turn with nothing to answer (only notices) has no
answer text; the send stage then sends the notices alone.
"""
from __future__ import annotations

from app import offline
from app.pipeline import notices
from app.pipeline.context import TurnContext


def run(ctx: TurnContext) -> None:
    if ctx.answer_text is not None:
        return
    if not ctx.user_text:
        if not ctx.notices:
            ctx.answer_text = notices.EMPTY_TURN
        return
    if ctx.services.openai.available:
        from app.responder import answer_turn

        ctx.answer_text = answer_turn(ctx)
    else:
        ctx.answer_text = offline.answer(ctx.user_text, ctx.passages, ctx.user.name)
