"""The send stage: compose the reply parts and hand them to the outbox (app/channels/outbox.py).

Notices first, then the answer: a voice note (and the unspoken rest as text), or the text
split at WhatsApp's 1,600-character limit.
"""
from __future__ import annotations

from app.channels import channel_for
from app.channels.outbox import deliver, text_parts
from app.pipeline.context import TurnContext
from app.turn import OutboundPart


def run(ctx: TurnContext) -> None:
    if not ctx.parts:
        ctx.parts = compose_parts(ctx)
    deliver(ctx.services, ctx.turn_id, ctx.user, ctx.parts, spoken_text=ctx.answer_text)


def compose_parts(ctx: TurnContext) -> list[OutboundPart]:
    limit = channel_for(ctx.services, ctx.user).max_body_chars
    notice_text = "\n\n".join(ctx.notices)
    if ctx.reply_kind == "audio" and ctx.audio_url:
        parts: list[OutboundPart] = []
        if notice_text:
            parts.extend(text_parts(notice_text, limit, first_index=len(parts)))
        parts.append(OutboundPart(index=len(parts), media_url=ctx.audio_url,
                                  media_type=ctx.audio_content_type, kind="audio"))
        if ctx.text_after_audio:
            parts.extend(text_parts(ctx.text_after_audio, limit, first_index=len(parts)))
        return parts
    text = "\n\n".join(t for t in (notice_text, ctx.answer_text) if t)
    return text_parts(text, limit, first_index=0)
