"""Stage 3: Portuguese transcription of each voice note (OpenAI), stored on its message.

The prompt carries the knowledge base's names and terms so that they are spelt right.
"""
from __future__ import annotations

from app.clients.openai_client import classify_openai_error
from app.models import Message
from app.pipeline import notices
from app.pipeline.context import PermanentTurnError, RetryableTurnError, TurnContext

# OpenAI accepts these containers as they are; anything else is sent as our WAV.
_UPLOADABLE = {"ogg": "audio/ogg", "mp3": "audio/mpeg", "wav": "audio/wav", "m4a": "audio/mp4",
               "webm": "audio/webm", "flac": "audio/flac"}


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
        except Exception as exc:  # noqa: BLE001 - classified below
            kind, reason = classify_openai_error(exc)
            ctx.services.provider_health.error("openai", reason)
            if kind == "retryable":
                raise RetryableTurnError(reason, kind="transcribe") from exc
            raise PermanentTurnError(reason, kind="transcribe") from exc
        ctx.services.provider_health.ok("openai")
        with ctx.services.db.session() as session:
            message = session.get(Message, item.message_id)
            message.transcription = item.transcription
        if not item.transcription:
            item.notice = notices.AUDIO_SILENT


def _upload_for(item) -> tuple[str, bytes, str]:
    suffix = item.media_path.suffix.lstrip(".").lower() if item.media_path else ""
    if suffix in _UPLOADABLE:
        return f"nota.{suffix}", item.media_path.read_bytes(), _UPLOADABLE[suffix]
    return "nota.wav", item.wav_path.read_bytes(), "audio/wav"


def _vocabulary_prompt(ctx: TurnContext) -> str:
    try:
        terms = ctx.services.knowledge.vocabulary_terms()
    except Exception:  # noqa: BLE001 - a missing knowledge base must not stop transcription
        terms = []
    return ("Conversa em português do Brasil com " + ", ".join(["Endrigo", *terms][:40]) + ".")[:800]
