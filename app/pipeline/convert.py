"""The convert stage: FFmpeg converts each voice note to 16 kHz mono WAV; silent notes stop here.

The silence check runs before transcription so a note with no speech costs no API call.
"""
from __future__ import annotations

from sqlalchemy import update

from app.audio.ffmpeg import AudioError, is_silent, to_wav16k
from app.models import Message
from app.pipeline import notices
from app.pipeline.context import TurnContext

FFMPEG_TIMEOUT_SECONDS = 30


def run(ctx: TurnContext) -> None:
    if ctx.answer_text is not None:
        return
    for item in ctx.items:
        if item.media_path is None:
            continue
        wav_path = item.media_path.with_suffix(".16k.wav")
        try:
            item.audio_seconds = to_wav16k(
                item.media_path, wav_path, timeout=FFMPEG_TIMEOUT_SECONDS,
                max_seconds=ctx.settings.max_audio_seconds,
            )
        except AudioError as exc:
            ctx.log.info("audio not usable (%s)", exc.kind)
            if exc.kind == "too_long":
                item.notice = notices.AUDIO_TOO_LONG.format(minutes=ctx.settings.max_audio_seconds // 60)
            else:
                item.notice = notices.AUDIO_UNREADABLE
            continue
        ctx.log.info("voice note of %.1f s converted", item.audio_seconds)
        with ctx.services.db.session() as session:  # counted against USER_AUDIO_SECONDS_PER_DAY
            session.execute(update(Message).where(Message.id == item.message_id)
                            .values(audio_seconds=item.audio_seconds))
        if is_silent(wav_path):
            item.notice = notices.AUDIO_SILENT
            continue
        item.wav_path = wav_path
