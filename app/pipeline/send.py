"""The send stage: compose the reply parts, store them with the answer (the decision), send them.

Notices first, then the answer: a voice note (and the unspoken rest as text), or the text
split at WhatsApp's 1,600-character limit. ``outbox.decide`` stores the answer and every
part before the first send; a turn decided earlier (recovered after a crash or a send
failure) sends exactly its stored parts (app/channels/outbox.py).
"""
from __future__ import annotations

from app.channels import channel_for
from app.channels.outbox import decide, send_decided, text_parts
from app.pipeline.context import TurnContext
from app.turn import OutboundPart


def run(ctx: TurnContext) -> None:
    if not ctx.decided:
        ctx.parts = compose_parts(ctx)
        with ctx.decision_lock:  # the holding-message timer never speaks after the decision
            decide(ctx.services, ctx.turn_id, ctx.user, ctx.parts, reply_text=ctx.answer_text,
                   reply_kind=ctx.reply_kind, spoken_text=ctx.answer_text, refuse_if_newer=ctx.may_abandon)
            ctx.decided = True
    send_decided(ctx.services, ctx.turn_id, ctx.user)


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
