"""app/audio/pcm.py with the real FFmpeg and webrtcvad: decode to PCM16 24 kHz, trim, encode."""
from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from app.audio.ffmpeg import AudioError
from app.audio.pcm import (
    DEFAULT_PADDING_SECONDS,
    duration_seconds,
    pcm_to_ogg_opus,
    speech_frames,
    to_pcm16_24k,
    trim_silence,
)
from tests.fakes.audio_samples import SPEECH_EXPR, ffmpeg_exe, pcm_s16le, render, speech_like_ogg, truncated

HISS = "0.01*(2*random(0)-1)"  # about -50 dBFS of broadband noise, like a phone in a quiet room


def write(tmp_path, data: bytes, name: str = "note.ogg"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def padded_note(tmp_path, *, before: float = 1.0, voiced: float = 3.0, after: float = 1.0, noise: str = "0"):
    """A voice note: ``before`` s of silence (or ``noise``), ``voiced`` s of speech, ``after`` s of silence."""
    expr = f"if(between(t,{before},{before + voiced}),{SPEECH_EXPR},0)+{noise}"
    return write(tmp_path, render(expr, before + voiced + after, "ogg_opus", 48000, "24k"))


def ffmpeg_reported_seconds(path) -> float:
    """The duration ffmpeg -i prints for a file (the imageio-ffmpeg wheel has no ffprobe)."""
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, timeout=30)
    match = re.search(r"Duration: (\d+):(\d+):(\d+\.\d+)", result.stderr.decode(errors="replace"))
    assert match, result.stderr.decode(errors="replace")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_to_pcm16_24k_decodes_the_whole_note(tmp_path):
    pcm = to_pcm16_24k(write(tmp_path, speech_like_ogg(2.5)))
    assert duration_seconds(pcm) == pytest.approx(2.5, abs=0.03)
    assert np.abs(np.frombuffer(pcm, dtype="<i2")).max() > 3000  # real signal, not zeros


def test_to_pcm16_24k_refuses_broken_and_long_notes(tmp_path):
    with pytest.raises(AudioError) as caught:
        to_pcm16_24k(write(tmp_path, truncated(speech_like_ogg(3.0)), "cut.ogg"))
    assert caught.value.kind == "corrupt"
    with pytest.raises(AudioError) as caught:
        to_pcm16_24k(write(tmp_path, speech_like_ogg(3.0), "long.ogg"), max_seconds=2)
    assert caught.value.kind == "too_long"


@pytest.mark.parametrize("noise", ["0", HISS])
def test_trim_keeps_the_voiced_part_and_a_little_padding(tmp_path, noise):
    pcm = to_pcm16_24k(padded_note(tmp_path, before=1.0, voiced=3.0, after=1.0, noise=noise))

    trimmed = trim_silence(pcm)

    # The synthetic voice fades in and out within its 3 s (syllable and phrase envelopes),
    # hence the tolerance; what must go is the 2 s of silence around it.
    assert duration_seconds(trimmed) - 2 * DEFAULT_PADDING_SECONDS == pytest.approx(3.0, abs=0.25)
    # The cut is where the speech is: the kept audio starts about `padding` before 1.0 s.
    start = pcm.find(trimmed) / 2 / 24000
    assert start == pytest.approx(1.0 - DEFAULT_PADDING_SECONDS, abs=0.1)


def test_all_silent_or_hiss_only_notes_trim_to_nothing(tmp_path):
    assert trim_silence(to_pcm16_24k(write(tmp_path, render("0", 3.0, "ogg_opus", 48000, "24k")))) == b""
    assert trim_silence(to_pcm16_24k(write(tmp_path, render(HISS, 3.0, "ogg_opus", 48000, "24k"), "h.ogg"))) == b""


def test_a_tap_on_the_phone_does_not_hold_the_note_open():
    speech = pcm_s16le(2.0, 24000)
    rng = np.random.default_rng(7)
    tap = (rng.uniform(-1, 1, 24 * 60) * 0.5 * 32767).astype("<i2").tobytes()  # 60 ms, loud, broadband
    pcm = speech + b"\0\0" * 36000 + tap + b"\0\0" * 12000  # 1.5 s after the speech, then 0.5 s

    assert duration_seconds(trim_silence(pcm)) == pytest.approx(2.0 + DEFAULT_PADDING_SECONDS, abs=0.1)
    # A longer knock passes the 90 ms run but not the 300 ms of speech a note needs.
    knock = (rng.uniform(-1, 1, 24 * 150) * 0.5 * 32767).astype("<i2").tobytes()
    alone = b"\0\0" * 24000 + knock + b"\0\0" * 24000
    assert speech_frames(alone).sum() >= 3
    assert trim_silence(alone) == b""


def test_trim_of_speech_without_silence_keeps_it_all():
    pcm = pcm_s16le(2.0, 24000)
    assert duration_seconds(trim_silence(pcm)) == pytest.approx(2.0, abs=0.1)


def test_pcm_to_ogg_opus_is_a_voice_note_of_the_same_length(tmp_path):
    pcm = pcm_s16le(2.4, 24000)

    ogg = pcm_to_ogg_opus(pcm)

    assert ogg.startswith(b"OggS") and b"OpusHead" in ogg[:96]
    assert ffmpeg_reported_seconds(write(tmp_path, ogg, "answer.ogg")) == pytest.approx(2.4, abs=0.05)


def test_pcm_to_ogg_opus_refuses_nothing():
    with pytest.raises(AudioError):
        pcm_to_ogg_opus(b"")
