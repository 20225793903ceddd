"""Audio for the realtime path: voice note -> PCM16 24 kHz mono -> trimmed -> (answer) -> OGG/Opus.

- ``to_pcm16_24k``: FFmpeg decodes any supported note to headerless 16-bit mono PCM at 24 kHz,
  the only input format the Realtime session is configured for. It reuses app/audio/ffmpeg.py's
  binary lookup, argument building, sniffing and timeout-bounded subprocess runner, so a
  hostile file is refused or killed exactly as on the transcription path.
- ``trim_silence``: WebRTC's voice activity detector (webrtcvad-wheels: Google's GMM detector,
  maintained binary wheels, no model download) cuts the silence before the first and after
  the last stretch of speech, keeping a little padding. Pauses inside the speech stay: they
  are part of how people talk, and the model hears them. Every second cut is a second less
  to upload and for the model to listen to before it answers.
  webrtcvad alone takes steady hiss for speech, so each frame must also pass the adaptive
  energy bar app/audio/ffmpeg.py uses for its silence check (see ``loud_frames``).
- ``pcm_to_ogg_opus``: the answer as a WhatsApp voice note, through app/audio/ffmpeg.py's FFmpeg
  encoder. Measured against in-process encoding with PyAV (bench/bench_realtime_audio.py):
  see the figures and the choice in ``pcm_to_ogg_opus``.
"""
from __future__ import annotations

import os
from pathlib import Path

import ffmpeg
import numpy as np
import webrtcvad

from app.audio.ffmpeg import (
    ABSOLUTE_FLOOR_DBFS,
    DEFAULT_TIMEOUT,
    MIN_SPEECH_SECONDS,
    NOISE_FLOOR_PERCENTILE,
    SPEECH_MARGIN_DB,
    THRESHOLD_CEILING_DBFS,
    AudioError,
    _checked_source_kind,
    _classify_decode_failure,
    _command,
    _run,
    encode_ogg_opus,
    frame_levels_dbfs,
)

RATE = 24_000
SAMPLE_BYTES = 2
FRAME_MS = 30  # webrtcvad takes 10, 20 or 30 ms frames; the longest means the fewest calls
# 0 (least) to 3 (most aggressive about calling a frame non-speech). With the energy gate
# below doing the hiss rejection, 2 finds onsets that 3 finds 30-60 ms later (test notes).
VAD_MODE = 2
# Speech must last this many consecutive frames (90 ms) to count: a click or a tap on the
# phone is shorter and must not hold the trimmed note open.
MIN_RUN_FRAMES = 3
# Kept before the first and after the last speech frame: onsets and word endings are soft
# and the detector decides a little late on both; the Realtime server VAD pads its own
# turns by 300 ms for the same reason.
DEFAULT_PADDING_SECONDS = 0.2
_VAD_RATES = (8_000, 16_000, 32_000, 48_000)


def to_pcm16_24k(path: str | os.PathLike, *, timeout: float = DEFAULT_TIMEOUT,
                 max_seconds: float | None = 300) -> bytes:
    """Decode a voice note (any format app.audio.ffmpeg accepts) into PCM16 24 kHz mono bytes.

    Raises app.audio.ffmpeg.AudioError: ``unsupported``, ``corrupt`` (also for a truncated OGG or
    a note with no samples), ``too_long`` (over ``max_seconds``), ``timeout``.
    """
    src = str(path)
    kind = _checked_source_kind(Path(path))
    options = {"map": "0:a:0", "vn": None, "ac": 1, "ar": RATE, "acodec": "pcm_s16le", "f": "s16le"}
    if max_seconds is not None:
        # One second more than allowed: enough to tell the note is too long, without
        # decoding an hour of audio.
        options["t"] = f"{max_seconds + 1:g}"
    result = _run(_command(ffmpeg.input(src).output("pipe:1", **options)), timeout)
    if result.returncode != 0:
        raise _classify_decode_failure(result, kind)
    pcm = result.stdout[: len(result.stdout) - len(result.stdout) % SAMPLE_BYTES]
    if not pcm:
        raise AudioError("corrupt", "no audio samples could be decoded")
    if max_seconds is not None and duration_seconds(pcm) > max_seconds:
        raise AudioError("too_long", f"audio lasts more than {max_seconds:g} s")
    return pcm


def duration_seconds(pcm: bytes, rate: int = RATE) -> float:
    """Seconds of 16-bit mono PCM."""
    return len(pcm) / SAMPLE_BYTES / rate


def speech_frames(pcm: bytes, rate: int = RATE, mode: int = VAD_MODE) -> np.ndarray:
    """One bool per whole 30 ms frame of 16-bit mono PCM: did webrtcvad hear speech in it.

    webrtcvad takes 8, 16, 32 or 48 kHz; other rates that divide 48 kHz (24 kHz, 12 kHz) are
    upsampled by repeating samples. The images that adds lie above the original Nyquist
    frequency, which the detector's own band split discards: its features stop at 4 kHz.
    """
    factor = 1 if rate in _VAD_RATES else 48_000 // rate
    if rate * factor not in _VAD_RATES:
        raise ValueError(f"unsupported sample rate {rate}")
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % SAMPLE_BYTES], dtype="<i2")
    frame_len = rate * FRAME_MS // 1000
    count = len(samples) // frame_len
    if count == 0:
        return np.zeros(0, dtype=bool)
    frames = samples[: count * frame_len].reshape(count, frame_len)
    if factor > 1:
        frames = np.repeat(frames, factor, axis=1)
    vad = webrtcvad.Vad(mode)
    vad_rate = rate * factor
    voiced = np.fromiter((vad.is_speech(frame.tobytes(), vad_rate) for frame in frames), dtype=bool, count=count)
    return voiced & loud_frames(samples, rate)[:count]


def loud_frames(samples: np.ndarray, rate: int) -> np.ndarray:
    """One bool per 30 ms frame: does it stand out from the note's own noise floor.

    webrtcvad alone calls steady broadband hiss speech (at -48 dBFS, in every mode but 3, and
    even mode 3 at -40 dBFS) once it has heard a voice, which would keep a noisy note's tail.
    The adaptive energy bar of app.audio.ffmpeg.voice_activity (noise floor + 10 dB, within
    -50..-35 dBFS) rejects hiss and nothing a voice says.
    """
    levels = frame_levels_dbfs(samples, rate, FRAME_MS / 1000)
    if levels.size == 0:
        return np.zeros(0, dtype=bool)
    noise_floor = float(np.percentile(levels, NOISE_FLOOR_PERCENTILE))
    threshold = min(max(noise_floor + SPEECH_MARGIN_DB, ABSOLUTE_FLOOR_DBFS), THRESHOLD_CEILING_DBFS)
    return levels > threshold


def speech_bounds(flags: np.ndarray, min_run: int = MIN_RUN_FRAMES) -> tuple[int, int] | None:
    """(first frame, one past the last frame) spanned by runs of at least ``min_run`` speech frames."""
    runs = []
    start = None
    for index, flag in enumerate(np.append(flags, False)):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            if index - start >= min_run:
                runs.append((start, index))
            start = None
    if not runs:
        return None
    return runs[0][0], runs[-1][1]


def trim_silence(pcm: bytes, rate: int = RATE, *, padding_seconds: float = DEFAULT_PADDING_SECONDS,
                 min_speech_seconds: float = MIN_SPEECH_SECONDS, mode: int = VAD_MODE) -> bytes:
    """The PCM from just before the first to just after the last speech; b"" when there is none.

    "None" means less than ``min_speech_seconds`` of speech frames in runs of 90 ms or more
    (the same 300 ms bar app.audio.ffmpeg.is_silent uses), so a caller can treat b"" as a silent note.
    """
    flags = speech_frames(pcm, rate, mode)
    bounds = speech_bounds(flags)
    if bounds is None:
        return b""
    first, last = bounds
    frame_seconds = FRAME_MS / 1000
    if np.count_nonzero(flags[first:last]) * frame_seconds < min_speech_seconds:
        return b""
    frame_len = rate * FRAME_MS // 1000
    pad = int(round(padding_seconds * rate))
    total = len(pcm) // SAMPLE_BYTES
    start = max(0, first * frame_len - pad)
    end = min(total, last * frame_len + pad)
    return pcm[start * SAMPLE_BYTES: end * SAMPLE_BYTES]


def pcm_to_ogg_opus(pcm: bytes, rate: int = RATE, *, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """PCM16 mono at ``rate`` as a WhatsApp voice note (OGG container, Opus codec).

    FFmpeg in a subprocess (app.audio.ffmpeg.encode_ogg_opus: libopus complexity 3, 32 kbps VBR),
    not in-process. bench/bench_realtime_audio.py, 2 cores, medians of 15: a 5 s answer costs
    40 ms with FFmpeg and 24 ms with PyAV 18.1 at the same settings, a 30 s answer 172 ms and
    123 ms (same sizes within 0.1 %). PyAV saves the process start and the pipe copies, 16-50
    ms against a 12 s turn budget, but installs 103 MB (its own copy of FFmpeg's libraries)
    beside the FFmpeg the project already ships; not worth it. Raises app.audio.ffmpeg.AudioError.
    """
    if not pcm:
        raise AudioError("corrupt", "no audio to encode")
    return encode_ogg_opus(pcm[: len(pcm) - len(pcm) % SAMPLE_BYTES], pcm_rate=rate, timeout=timeout)
