"""Stage 6: Endrigo's cloned voice (ElevenLabs) when a voice reply is due.

Due when the user's preference is ``audio``, or ``auto`` and they sent a voice note.
Anything that goes wrong here (no key, quota, timeout, too little time left in the
turn's budget) falls back to a text reply: the user always gets the answer.
"""
from __future__ import annotations

from app.clients.elevenlabs_client import TTSError, prepare_for_speech, split_for_speech
from app.pipeline.context import TurnContext

# What synthesis, storage and sending still need; below this, answer by text in time.
MIN_SECONDS_LEFT_FOR_VOICE = 2.5
# Long answers: speak about a minute, send the rest as text.
MAX_SPOKEN_CHARS = 900


def voice_reply_due(ctx: TurnContext) -> bool:
    mode = ctx.user.reply_mode
    return mode == "audio" or (mode == "auto" and ctx.has_voice_note)


def run(ctx: TurnContext) -> None:
    ctx.reply_kind = "text"
    if not ctx.answer_text or not voice_reply_due(ctx):
        return
    if not ctx.services.tts.available:
        return
    if ctx.remaining_budget() < MIN_SECONDS_LEFT_FOR_VOICE:
        ctx.log.info("voice reply skipped: %.1f s left of the turn budget", ctx.remaining_budget())
        return
    spoken, rest = split_for_speech(prepare_for_speech(ctx.answer_text), MAX_SPOKEN_CHARS)
    if not spoken.strip():
        return
    try:
        audio = ctx.services.tts.synthesize(spoken, timeout=max(1.0, ctx.remaining_budget() - 1.0))
    except TTSError as exc:
        ctx.services.provider_health.error("elevenlabs", exc.reason)
        ctx.log.warning("TTS failed (%s); answering by text", exc.kind)
        return
    ctx.services.provider_health.ok("elevenlabs")
    ctx.audio_bytes = audio.data
    ctx.audio_content_type = audio.content_type
    ctx.reply_kind = "audio"
    ctx.text_after_audio = _unspoken_text(ctx.answer_text, rest)


def _unspoken_text(answer: str, rest_of_speech: str) -> str | None:
    """The part of the written answer the voice did not cover (None when it spoke it all)."""
    return rest_of_speech.strip() or None
