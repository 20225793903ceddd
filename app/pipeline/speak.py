"""The speak stage: Endrigo's cloned voice (ElevenLabs) when a voice reply is due.

Due when the user's preference is ``audio``, or ``auto`` and they sent a voice note.
Anything that goes wrong here (no key, quota, timeout, too little time left in the
turn's budget) falls back to a text reply: the user always gets the answer. The text after
the voice note (``ctx.text_after_audio``) carries every link, e-mail address and phone number
of the answer (a listener cannot click a voice note) and the unspoken rest as written. Unusable Opus
bytes from ElevenLabs fall back to encoding its PCM with FFmpeg (OGG/Opus, then MP3).
"""
from __future__ import annotations

from app.assistant.reply_mode import voice_reply_due
from app.assistant.speech_text import split_answer_for_speech, text_after_voice
from app.audio.ffmpeg import AudioError, encode_ogg_opus, transcode_to_mp3
from app.clients.elevenlabs_client import SpeechAudio, TTSError
from app.pipeline.context import TurnContext

# What synthesis, storage and sending still need; below this, answer by text in time.
MIN_SECONDS_LEFT_FOR_VOICE = 2.5
# Long answers: speak about a minute, send the rest as text.
MAX_SPOKEN_CHARS = 900


def run(ctx: TurnContext) -> None:
    if ctx.decided:
        return  # the stored parts (voice note included) are what gets sent
    ctx.reply_kind = "text"
    if not ctx.answer_text or not voice_reply_due(ctx.user.reply_mode, ctx.has_voice_note):
        return
    if not ctx.services.tts.available:
        return
    if ctx.remaining_budget() < MIN_SECONDS_LEFT_FOR_VOICE:
        ctx.log.info("voice reply skipped: %.1f s left of the turn budget", ctx.remaining_budget())
        return
    spoken, rest = split_answer_for_speech(ctx.answer_text, MAX_SPOKEN_CHARS)
    if not spoken.strip():
        return
    try:
        audio = _synthesize(ctx, spoken)
    except (TTSError, AudioError) as exc:
        if isinstance(exc, TTSError):
            ctx.services.provider_health.error("elevenlabs", exc.reason)
        ctx.log.warning("voice reply failed (%s); answering by text", exc.kind)
        return
    ctx.services.provider_health.ok("elevenlabs")
    ctx.audio_bytes = audio.data
    ctx.audio_content_type = audio.content_type
    ctx.reply_kind = "audio"
    ctx.text_after_audio = text_after_voice(ctx.answer_text, rest)


def _synthesize(ctx: TurnContext, spoken: str) -> SpeechAudio:
    """Opus straight from ElevenLabs; if those bytes are unusable, its raw PCM encoded by our
    FFmpeg as OGG/Opus, and MP3 (which WhatsApp also plays) if even that fails."""
    tts = ctx.services.tts
    try:
        return tts.synthesize(spoken, timeout=_seconds_for_tts(ctx))
    except TTSError as exc:
        if exc.kind != "bad_audio":
            raise
        ctx.log.warning("ElevenLabs sent unusable Opus; encoding its PCM ourselves")
    pcm = tts.synthesize(spoken, output_format="pcm_24000", timeout=_seconds_for_tts(ctx))
    try:
        return SpeechAudio(encode_ogg_opus(pcm.data, pcm_rate=24000), "audio/ogg", "ogg_ffmpeg")
    except AudioError:
        return SpeechAudio(transcode_to_mp3(pcm.data, pcm_rate=24000), "audio/mpeg", "mp3_ffmpeg")


def _seconds_for_tts(ctx: TurnContext) -> float:
    return max(1.0, ctx.remaining_budget() - 1.0)

