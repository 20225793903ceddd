"""The transcribe stage: Portuguese transcription of each voice note (OpenAI), stored on its message.

The prompt carries the knowledge base's names and terms so that they are spelt right.
"""
from __future__ import annotations

from app.audio.formats import FORMATS
from app.clients.errors import GatewayError, turn_error
from app.models import Message
from app.pipeline import notices
from app.pipeline.context import TurnContext


def run(ctx: TurnContext) -> None:
    if ctx.answer_text is not None:
        return
    pending = [item for item in ctx.items if item.wav_path is not None and item.transcription is None]
    if not pending:
        return
    if not ctx.services.openai.available:
        for item in pending:
            item.notice = notices.TRANSCRIPTION_OFFLINE
        return
    prompt = _vocabulary_prompt(ctx)
    for item in pending:
        filename, data, content_type = _upload_for(item)
        try:
            item.transcription = ctx.services.openai.transcribe(filename, data, content_type, prompt=prompt)
        except GatewayError as exc:
            ctx.services.provider_health.error("openai", exc.reason)
            raise turn_error(exc, "transcribe") from exc
        ctx.services.provider_health.ok("openai")
        with ctx.services.db.session() as session:
            message = session.get(Message, item.message_id)
            message.transcription = item.transcription
        if not item.transcription:
            item.notice = notices.AUDIO_SILENT


def _upload_for(item) -> tuple[str, bytes, str]:
    """The note as downloaded when OpenAI takes its container as it is; else our 16 kHz WAV."""
    suffix = item.media_path.suffix.lower() if item.media_path else ""
    for fmt in FORMATS.values():
        if fmt.transcribable and fmt.suffix == suffix:
            return f"nota{suffix}", item.media_path.read_bytes(), fmt.mime
    return "nota.wav", item.wav_path.read_bytes(), "audio/wav"


def _vocabulary_prompt(ctx: TurnContext) -> str:
    try:
        terms = ctx.services.knowledge.vocabulary_terms()
    except Exception:  # noqa: BLE001 - a missing knowledge base must not stop transcription
        terms = []
    return ("Conversa em português do Brasil com " + ", ".join(["Endrigo", *terms][:40]) + ".")[:800]
