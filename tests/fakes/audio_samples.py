"""Test audio made with the real ffmpeg binary (imageio-ffmpeg), no network, no fixtures on disk.

Real encoders matter: the app transcodes, sniffs and uploads these bytes, so a hand-made
"OggS" header would hide bugs. Every generator is cached because one ffmpeg run costs
~100 ms.
"""
from __future__ import annotations

import os
import subprocess
from functools import lru_cache

import imageio_ffmpeg

# Voiced harmonics on a gliding pitch (~120-160 Hz), gated into ~4 syllables/s with a slower
# phrase envelope, plus a little noise for consonants: close enough to speech for VAD,
# loudness and codec behaviour, without shipping a recording.
_PITCH = "(2*PI*140*t+6*sin(2*PI*0.9*t))"
_VOICE = (f"(0.45*sin({_PITCH})+0.25*sin(2*{_PITCH})+0.15*sin(3*{_PITCH})+0.08*sin(5*{_PITCH}))"
          "*pow(max(0,sin(2*PI*3.7*t)),2)*(0.55+0.45*sin(2*PI*0.45*t+1))")
_CONSONANTS = "0.06*(2*random(0)-1)*pow(max(0,sin(2*PI*3.7*t+2.4)),8)"
SPEECH_EXPR = f"{_VOICE}+{_CONSONANTS}"

# Output encodings: name -> ffmpeg output arguments (before the sample rate is applied).
_ENCODERS = {
    "ogg_opus": ["-c:a", "libopus", "-application", "voip", "-f", "ogg"],
    "mp3": ["-c:a", "libmp3lame", "-f", "mp3"],
    "wav": ["-c:a", "pcm_s16le", "-f", "wav"],
    "s16le": ["-c:a", "pcm_s16le", "-f", "s16le"],
    "mulaw": ["-c:a", "pcm_mulaw", "-f", "mulaw"],
    "alaw": ["-c:a", "pcm_alaw", "-f", "alaw"],
}


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


@lru_cache(maxsize=128)
def render(expr: str, seconds: float, encoding: str, rate: int, bitrate: str | None = None) -> bytes:
    """Synthesize ``expr`` (an ffmpeg aevalsrc expression of t) for ``seconds`` as mono ``encoding``."""
    args = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
            "-f", "lavfi", "-i", f"aevalsrc=exprs='{expr}':s=48000:d={seconds:.3f}",
            "-ac", "1", "-ar", str(rate)]
    if bitrate:
        args += ["-b:a", bitrate]
    args += _ENCODERS[encoding] + ["-map_metadata", "-1", "pipe:1"]
    result = subprocess.run(args, capture_output=True, check=False, timeout=60)
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"ffmpeg failed: {result.stderr.decode(errors='replace')[-500:]}")
    return result.stdout


def speech_like_ogg(seconds: float = 3.0, bitrate: str = "24k") -> bytes:
    """A WhatsApp-style voice note: OGG container, Opus codec, mono, 48 kHz."""
    return render(SPEECH_EXPR, seconds, "ogg_opus", 48000, bitrate)


def silent_ogg(seconds: float = 3.0) -> bytes:
    """Digital silence in OGG/Opus: valid audio that should transcribe to nothing."""
    return render("0", seconds, "ogg_opus", 48000, "24k")


def truncated(data: bytes, keep: float = 0.4) -> bytes:
    """The first ``keep`` fraction of ``data``: a download cut short."""
    return data[: max(1, int(len(data) * keep))]


def mp3(seconds: float = 3.0) -> bytes:
    return render(SPEECH_EXPR, seconds, "mp3", 44100, "64k")


def wav_pcm16(seconds: float = 3.0, rate: int = 16000) -> bytes:
    return render(SPEECH_EXPR, seconds, "wav", rate)


def pcm_s16le(seconds: float = 3.0, rate: int = 24000) -> bytes:
    """Headerless 16-bit little-endian mono PCM (what Realtime and ElevenLabs pcm_* carry)."""
    return render(SPEECH_EXPR, seconds, "s16le", rate)


@lru_cache(maxsize=8)
def big_blob(n_bytes: int) -> bytes:
    """``n_bytes`` of random (undecodable) data, for size-limit tests. Random so it does not
    compress away if something gzips it."""
    return os.urandom(n_bytes)
