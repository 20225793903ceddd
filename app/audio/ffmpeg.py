"""Audio handling with the real FFmpeg binary: decoding, silence check, encoding.

Every FFmpeg call goes through ffmpeg-python to build the argument list and then through
``subprocess.run`` with a timeout, because ffmpeg-python's own ``run`` cannot time out and
a hostile or broken file must never hang a worker. The binary comes from PATH or, on a
fresh machine, from the imageio-ffmpeg wheel (which has libopus and libmp3lame but no
ffprobe: durations are computed from the decoded samples instead).

Failures are ``AudioError(kind, message)`` with kind in ``AUDIO_ERROR_KINDS``; the pipeline
turns them into a Portuguese notice for the user instead of crashing the turn.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Union

import ffmpeg
import numpy as np

from app.audio.formats import sniff_audio_type

log = logging.getLogger(__name__)

AUDIO_ERROR_KINDS = frozenset({"corrupt", "too_long", "timeout", "unsupported"})

TARGET_RATE = 16_000  # what speech-to-text models are trained on; also keeps WAV files small
DEFAULT_TIMEOUT = 30.0

# libopus complexity 0-10 (FFmpeg's compression_level; its default is 10). Measured with
# bench/bench_audio.py on 30 s of 24 kHz speech (FFmpeg 9 / imageio-ffmpeg, 2 cores): 10 and 5
# cost the same (~250 ms CPU), 3 about 15 % less, 0-1 about 40 % less but switch libopus to
# its cheapest analysis, audibly worse. At 7 and above VBR also overshoots 32 kbps by ~25 %
# (bigger uploads for Twilio to fetch). 3 is the cheapest setting at full speech quality.
DEFAULT_OPUS_COMPLEXITY = 3
DEFAULT_OPUS_BITRATE_KBPS = 32
DEFAULT_MP3_BITRATE_KBPS = 64

# Sample rates libopus accepts without resampling; anything else is resampled to 48 kHz.
_OPUS_NATIVE_RATES = (48_000, 24_000, 16_000, 12_000, 8_000)

Source = Union[str, os.PathLike, bytes]


class AudioError(Exception):
    """An audio file could not be used. ``kind`` is one of AUDIO_ERROR_KINDS."""

    def __init__(self, kind: str, message: str):
        if kind not in AUDIO_ERROR_KINDS:
            raise ValueError(f"unknown AudioError kind {kind!r}")
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


# ---- the binary ------------------------------------------------------------------------

@lru_cache(maxsize=1)
def ffmpeg_binary() -> str:
    """Path of the ffmpeg executable: PATH first (distro builds), else the imageio-ffmpeg wheel."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg  # imported lazily: only needed when PATH has no ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


# Global options first: ffmpeg-python appends global_args after the outputs, where recent
# FFmpeg versions warn about "trailing options".
_GLOBAL_ARGS = ["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]


def _command(stream) -> list[str]:
    """Compile an ffmpeg-python graph into argv with our binary and global options."""
    compiled = ffmpeg.compile(stream, cmd=ffmpeg_binary())
    return [compiled[0], *_GLOBAL_ARGS, *compiled[1:]]


def _run(argv: list[str], timeout: float, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run FFmpeg with a hard timeout; subprocess.run kills the child when it expires."""
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AudioError("timeout", f"ffmpeg took longer than {timeout:.0f} s") from exc


def _stderr_tail(result: subprocess.CompletedProcess, limit: int = 300) -> str:
    return result.stderr.decode("utf-8", errors="replace").strip()[-limit:]


def _read_head(path: Path, size: int = 96) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


def ogg_is_complete(path: Path) -> bool:
    """True when the OGG file is a sequence of whole pages.

    FFmpeg decodes a cut-short OGG without complaint (it simply stops early), so a voice
    note truncated in transit would be transcribed half-way. Walking the page headers is
    cheap (a 16 MB file has a few thousand pages) and catches a page cut in the middle.
    """
    size = path.stat().st_size
    offset = 0
    with open(path, "rb") as handle:
        while offset < size:
            handle.seek(offset)
            header = handle.read(27)
            if len(header) < 27 or not header.startswith(b"OggS"):
                return False
            segment_count = header[26]
            lacing = handle.read(segment_count)
            if len(lacing) < segment_count:
                return False
            offset += 27 + segment_count + sum(lacing)
    return offset == size


# ---- decoding for transcription ----------------------------------------------------------

def to_wav16k(src_path: str | os.PathLike, dst_path: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT,
              *, max_seconds: float | None = 300) -> float:
    """Decode any supported audio file into 16 kHz mono s16 WAV; return its duration in seconds.

    Raises AudioError: ``unsupported`` (not an audio format we know, or no audio stream),
    ``corrupt`` (undecodable or truncated), ``too_long`` (over ``max_seconds``),
    ``timeout``. ``dst_path`` is removed on failure.
    """
    src, dst = Path(src_path), Path(dst_path)
    kind = _checked_source_kind(src)
    stream = ffmpeg.input(str(src))
    output_options = {"map": "0:a:0", "vn": None, "ac": 1, "ar": TARGET_RATE, "acodec": "pcm_s16le", "f": "wav"}
    if max_seconds is not None:
        # Decode one second more than allowed: enough to know the note is too long
        # without paying for decoding an hour of audio.
        output_options["t"] = f"{max_seconds + 1:g}"
    argv = _command(stream.output(str(dst), **output_options))
    try:
        result = _run(argv, timeout)
        if result.returncode != 0:
            raise _classify_decode_failure(result, kind)
        seconds = wav_duration(dst)
        if seconds <= 0:
            raise AudioError("corrupt", "no audio samples could be decoded")
        if max_seconds is not None and seconds > max_seconds:
            raise AudioError("too_long", f"audio lasts more than {max_seconds:g} s")
        return seconds
    except BaseException:
        dst.unlink(missing_ok=True)
        raise


def _checked_source_kind(src: Path) -> str:
    """Sniff the source; reject unknown formats and structurally truncated OGG files."""
    if not src.is_file() or src.stat().st_size == 0:
        raise AudioError("corrupt", "the file is empty")
    kind = sniff_audio_type(_read_head(src))
    if kind is None:
        raise AudioError("unsupported", "not a recognised audio format")
    if kind in ("opus", "ogg") and not ogg_is_complete(src):
        raise AudioError("corrupt", "the OGG file is truncated")
    return kind


def _classify_decode_failure(result: subprocess.CompletedProcess, kind: str) -> AudioError:
    stderr = _stderr_tail(result)
    log.info("ffmpeg could not decode %s audio (exit %s): %s", kind, result.returncode, stderr)
    if "matches no streams" in stderr or "does not contain any stream" in stderr:
        return AudioError("unsupported", f"the {kind} file has no audio stream")
    return AudioError("corrupt", f"ffmpeg could not decode the {kind} file")


def wav_duration(path: str | os.PathLike) -> float:
    """Seconds of audio in a PCM WAV file, from its sample count."""
    try:
        with wave.open(str(path), "rb") as wav:
            return wav.getnframes() / float(wav.getframerate())
    except (wave.Error, EOFError, OSError) as exc:
        raise AudioError("corrupt", "the decoded WAV is unreadable") from exc


def read_wav_samples(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(mono int16 samples, sample rate) of a 16-bit PCM WAV file."""
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise AudioError("unsupported", "only 16-bit PCM WAV is supported")
            channels, rate = wav.getnchannels(), wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    except (wave.Error, EOFError) as exc:
        raise AudioError("corrupt", "unreadable WAV file") from exc
    if channels > 1:
        samples = samples[: len(samples) - len(samples) % channels].reshape(-1, channels).mean(axis=1)
        samples = samples.astype(np.int16)
    return samples, rate


# ---- voice activity ------------------------------------------------------------------------

FRAME_SECONDS = 0.030
MIN_SPEECH_SECONDS = 0.300
# A frame is speech when it stands this far above the note's own noise floor ...
SPEECH_MARGIN_DB = 10.0
# ... and above this absolute level (quieter than any real voice through a phone mic) ...
ABSOLUTE_FLOOR_DBFS = -50.0
# ... but the bar never rises above this, so a loud, continuous voice with few pauses (which
# lifts the "noise floor" percentile into the voice itself) still counts as speech.
THRESHOLD_CEILING_DBFS = -35.0
NOISE_FLOOR_PERCENTILE = 10


@dataclass(frozen=True)
class VoiceActivity:
    """What the energy detector measured; logged with the silence decision."""

    speech_seconds: float
    total_seconds: float
    noise_floor_dbfs: float
    threshold_dbfs: float
    peak_dbfs: float

    @property
    def has_speech(self) -> bool:
        return self.speech_seconds >= MIN_SPEECH_SECONDS


def frame_levels_dbfs(samples: np.ndarray, rate: int, frame_seconds: float = FRAME_SECONDS) -> np.ndarray:
    """RMS level of each whole frame in dBFS (digital silence is -120 dBFS, not -inf)."""
    frame_len = max(1, int(rate * frame_seconds))
    usable = len(samples) - len(samples) % frame_len
    if usable == 0:
        return np.empty(0)
    frames = samples[:usable].astype(np.float64).reshape(-1, frame_len) / 32768.0
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    return 20.0 * np.log10(np.maximum(rms, 1e-6))


def voice_activity(wav_path: str | os.PathLike) -> VoiceActivity:
    """Energy-based voice activity on a 16 kHz mono WAV, with an adaptive noise floor."""
    samples, rate = read_wav_samples(wav_path)
    levels = frame_levels_dbfs(samples, rate)
    total = len(samples) / float(rate) if rate else 0.0
    if levels.size == 0:
        return VoiceActivity(0.0, total, -120.0, ABSOLUTE_FLOOR_DBFS, -120.0)
    noise_floor = float(np.percentile(levels, NOISE_FLOOR_PERCENTILE))
    threshold = min(max(noise_floor + SPEECH_MARGIN_DB, ABSOLUTE_FLOOR_DBFS), THRESHOLD_CEILING_DBFS)
    speech_frames = int(np.count_nonzero(levels > threshold))
    return VoiceActivity(
        speech_seconds=speech_frames * FRAME_SECONDS,
        total_seconds=total,
        noise_floor_dbfs=round(noise_floor, 1),
        threshold_dbfs=round(threshold, 1),
        peak_dbfs=round(float(levels.max()), 1),
    )


def is_silent(wav_path: str | os.PathLike) -> bool:
    """True when the note holds less than ~300 ms of anything that stands out like a voice."""
    activity = voice_activity(wav_path)
    log.debug("voice activity: %s", activity)
    return not activity.has_speech


# ---- encoding for replies --------------------------------------------------------------------

def _input_stream(source: Source, pcm_rate: int | None):
    """(ffmpeg-python input node, bytes for stdin or None) for a path, a file's bytes or raw PCM."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if pcm_rate:
            return ffmpeg.input("pipe:0", f="s16le", ar=pcm_rate, ac=1), bytes(source)
        return ffmpeg.input("pipe:0"), bytes(source)
    if pcm_rate:
        return ffmpeg.input(str(source), f="s16le", ar=pcm_rate, ac=1), None
    return ffmpeg.input(str(source)), None


def _encode(source: Source, pcm_rate: int | None, output_options: dict, timeout: float, label: str) -> bytes:
    stream, stdin = _input_stream(source, pcm_rate)
    argv = _command(stream.output("pipe:1", **output_options))
    result = _run(argv, timeout, stdin=stdin)
    if result.returncode != 0 or not result.stdout:
        log.warning("ffmpeg %s encoding failed (exit %s): %s", label, result.returncode, _stderr_tail(result))
        raise AudioError("corrupt", f"could not encode {label}")
    return result.stdout


def encode_ogg_opus(source: Source, *, pcm_rate: int | None = None,
                    bitrate_kbps: int = DEFAULT_OPUS_BITRATE_KBPS,
                    complexity: int = DEFAULT_OPUS_COMPLEXITY,
                    timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """Encode audio as a WhatsApp voice note: OGG container, Opus codec, mono.

    ``source`` is a file path, a file's bytes (any format FFmpeg reads), or headerless
    16-bit mono PCM bytes when ``pcm_rate`` is given (ElevenLabs ``pcm_*``, Realtime audio).
    """
    if not 0 <= complexity <= 10:
        raise ValueError("complexity must be between 0 and 10")
    options = {
        "map": "0:a:0", "vn": None, "ac": 1, "acodec": "libopus", "b:a": f"{bitrate_kbps}k",
        "application": "voip", "compression_level": complexity, "map_metadata": -1, "f": "ogg",
    }
    if pcm_rate and pcm_rate not in _OPUS_NATIVE_RATES:
        options["ar"] = 48_000
    data = _encode(source, pcm_rate, options, timeout, "OGG/Opus")
    if sniff_audio_type(data[:96]) != "opus":
        raise AudioError("corrupt", "encoder output is not OGG/Opus")
    return data


def transcode_to_mp3(source: Source, *, pcm_rate: int | None = None,
                     bitrate_kbps: int = DEFAULT_MP3_BITRATE_KBPS,
                     timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """MP3 (libmp3lame, mono): the fallback when WhatsApp refuses an OGG/Opus voice note."""
    options = {"map": "0:a:0", "vn": None, "ac": 1, "acodec": "libmp3lame", "b:a": f"{bitrate_kbps}k",
               "map_metadata": -1, "f": "mp3"}
    data = _encode(source, pcm_rate, options, timeout, "MP3")
    if sniff_audio_type(data[:16]) != "mp3":
        raise AudioError("corrupt", "encoder output is not MP3")
    return data
