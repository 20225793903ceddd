"""app/audio/ (ffmpeg.py, formats.py) with the real FFmpeg binary: sniffing, decoding to
16 kHz WAV, silence, encoding."""
from __future__ import annotations

import os
import stat
import subprocess
import wave

import pytest

from app.audio import ffmpeg as audio
from app.audio.ffmpeg import AudioError
from app.audio.formats import sniff_audio_type
from tests.fakes import audio_samples as samples

PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(200)


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _noise_ogg(amplitude: float, seconds: float = 3.0) -> bytes:
    """White noise ("hiss") of a given amplitude, encoded like a voice note."""
    argv = [audio.ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi",
            "-i", f"anoisesrc=a={amplitude}:c=white:d={seconds}", "-ac", "1", "-c:a", "libopus",
            "-b:a", "24k", "-f", "ogg", "pipe:1"]
    return subprocess.run(argv, capture_output=True, check=True, timeout=30).stdout


# ---- sniffing ------------------------------------------------------------------------------

@pytest.mark.parametrize("head, expected", [
    (b"OggS\x00\x02" + b"\x00" * 22 + b"\x01\x13OpusHead\x01", "opus"),
    (b"OggS\x00\x02" + b"\x00" * 22 + b"\x01\x1e\x01vorbis", "ogg"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00", "mp3"),
    (b"\xff\xfb\x90\x64\x00\x00", "mp3"),  # MPEG-1 layer III frame sync, no ID3 tag
    (b"\xff\xf3\x84\xc4\x00\x00", "mp3"),  # MPEG-2 layer III
    (b"\xff\xf1\x50\x80\x02\x1f\xfc", "aac"),  # ADTS, MPEG-4
    (b"\xff\xf9\x50\x80\x02\x1f\xfc", "aac"),  # ADTS, MPEG-2
    (b"RIFF\x24\x08\x00\x00WAVEfmt ", "wav"),
    (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", "mp4"),
    (b"\x00\x00\x00\x18ftyp3gp4\x00\x00\x00\x00", "mp4"),
    (b"#!AMR\n\x3c", "amr"),
    (b"#!AMR-WB\n", "amr"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", "webm"),
    (b"fLaC\x00\x00\x00\x22", "flac"),
    (PNG_BYTES[:32], None),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", None),  # JPEG starts with 0xFF too
    (b"RIFF\x24\x08\x00\x00WEBPVP8 ", None),
    (b"%PDF-1.7", None),
    (b"", None),
    (b"Oi", None),
])
def test_sniff_audio_type_by_magic_bytes(head, expected):
    assert sniff_audio_type(head) == expected


def test_sniff_recognises_real_encoder_output():
    assert sniff_audio_type(samples.speech_like_ogg(1.0)[:96]) == "opus"
    assert sniff_audio_type(samples.mp3(1.0)[:96]) == "mp3"
    assert sniff_audio_type(samples.wav_pcm16(1.0)[:96]) == "wav"


def test_ffmpeg_binary_is_found_and_cached():
    first = audio.ffmpeg_binary()
    assert os.access(first, os.X_OK)
    assert audio.ffmpeg_binary() is first


# ---- decoding ------------------------------------------------------------------------------

@pytest.mark.parametrize("bitrate", ["16k", "24k"])
def test_voice_note_converts_to_16k_mono_wav_and_is_not_silent(tmp_path, bitrate):
    src = _write(tmp_path, "note.ogg", samples.speech_like_ogg(4.0, bitrate))
    dst = tmp_path / "note.wav"

    seconds = audio.to_wav16k(src, dst, timeout=20)

    assert seconds == pytest.approx(4.0, abs=0.05)
    with wave.open(str(dst)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
    assert not audio.is_silent(dst)
    assert audio.voice_activity(dst).speech_seconds > 1.0


@pytest.mark.parametrize("name, data, seconds", [
    ("a.mp3", samples.mp3(2.0), 2.0),
    ("a.wav", samples.wav_pcm16(2.0, 8000), 2.0),
])
def test_other_formats_convert(tmp_path, name, data, seconds):
    dst = tmp_path / "out.wav"
    assert audio.to_wav16k(_write(tmp_path, name, data), dst, timeout=20) == pytest.approx(seconds, abs=0.06)
    assert not audio.is_silent(dst)


def test_silent_note_is_silent(tmp_path):
    dst = tmp_path / "silent.wav"
    audio.to_wav16k(_write(tmp_path, "silent.ogg", samples.silent_ogg(3.0)), dst, timeout=20)
    assert audio.is_silent(dst)


@pytest.mark.parametrize("amplitude", [0.003, 0.02])  # about -60 dBFS and -44 dBFS of hiss
def test_low_level_hiss_is_silent(tmp_path, amplitude):
    dst = tmp_path / "hiss.wav"
    audio.to_wav16k(_write(tmp_path, "hiss.ogg", _noise_ogg(amplitude)), dst, timeout=20)
    assert audio.is_silent(dst)


@pytest.mark.parametrize("keep", [0.02, 0.4, 0.95])
def test_truncated_note_is_corrupt_not_a_crash(tmp_path, keep):
    src = _write(tmp_path, "cut.ogg", samples.truncated(samples.speech_like_ogg(3.0), keep))
    dst = tmp_path / "cut.wav"
    with pytest.raises(AudioError) as err:
        audio.to_wav16k(src, dst, timeout=20)
    assert err.value.kind == "corrupt"
    assert not dst.exists()


def test_garbage_after_a_valid_header_is_corrupt(tmp_path):
    data = samples.speech_like_ogg(2.0)[:200] + os.urandom(5000)
    with pytest.raises(AudioError) as err:
        audio.to_wav16k(_write(tmp_path, "bad.ogg", data), tmp_path / "bad.wav", timeout=20)
    assert err.value.kind == "corrupt"


@pytest.mark.parametrize("data", [PNG_BYTES, b"Oi, tudo bem?" * 50])
def test_non_audio_bytes_are_unsupported(tmp_path, data):
    with pytest.raises(AudioError) as err:
        audio.to_wav16k(_write(tmp_path, "x.ogg", data), tmp_path / "x.wav", timeout=20)
    assert err.value.kind == "unsupported"


def test_empty_file_is_corrupt(tmp_path):
    with pytest.raises(AudioError) as err:
        audio.to_wav16k(_write(tmp_path, "empty.ogg", b""), tmp_path / "x.wav", timeout=20)
    assert err.value.kind == "corrupt"


def test_too_long_note_is_refused_without_decoding_all_of_it(tmp_path):
    dst = tmp_path / "long.wav"
    with pytest.raises(AudioError) as err:
        audio.to_wav16k(_write(tmp_path, "long.ogg", samples.speech_like_ogg(5.0)), dst, timeout=20, max_seconds=2)
    assert err.value.kind == "too_long"
    assert not dst.exists()


def test_ffmpeg_that_hangs_is_killed_at_the_timeout(tmp_path, monkeypatch):
    hanging = tmp_path / "ffmpeg"
    hanging.write_text("#!/bin/sh\nsleep 30\n")
    hanging.chmod(hanging.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(audio, "ffmpeg_binary", lambda: str(hanging))
    src = _write(tmp_path, "note.ogg", samples.speech_like_ogg(1.0))

    with pytest.raises(AudioError) as err:
        audio.to_wav16k(src, tmp_path / "note.wav", timeout=0.5)
    assert err.value.kind == "timeout"
    with pytest.raises(AudioError) as err:
        audio.encode_ogg_opus(samples.pcm_s16le(1.0), pcm_rate=24000, timeout=0.5)
    assert err.value.kind == "timeout"


# ---- encoding ----------------------------------------------------------------------------

def _decoded_seconds(tmp_path, data: bytes, name: str) -> float:
    return audio.to_wav16k(_write(tmp_path, name, data), tmp_path / (name + ".wav"), timeout=20)


@pytest.mark.parametrize("complexity", [audio.DEFAULT_OPUS_COMPLEXITY, 10])
def test_encode_ogg_opus_from_pcm(tmp_path, complexity):
    data = audio.encode_ogg_opus(samples.pcm_s16le(3.0, 24000), pcm_rate=24000, complexity=complexity)
    assert data.startswith(b"OggS") and b"OpusHead" in data[:96]
    assert _decoded_seconds(tmp_path, data, "reply.ogg") == pytest.approx(3.0, abs=0.05)
    # ~32 kbps mono: about 4 KB per second, far below the WAV's 48 KB.
    assert len(data) < 3 * 6000


def test_encode_ogg_opus_from_a_file_and_from_file_bytes(tmp_path):
    mp3_path = _write(tmp_path, "in.mp3", samples.mp3(1.5))
    assert audio.encode_ogg_opus(mp3_path).startswith(b"OggS")
    assert audio.encode_ogg_opus(samples.wav_pcm16(1.5, 22050)).startswith(b"OggS")


def test_transcode_to_mp3(tmp_path):
    data = audio.transcode_to_mp3(samples.speech_like_ogg(2.0))
    assert sniff_audio_type(data[:16]) == "mp3"
    assert _decoded_seconds(tmp_path, data, "reply.mp3") == pytest.approx(2.0, abs=0.1)
    assert audio.transcode_to_mp3(samples.pcm_s16le(1.0, 24000), pcm_rate=24000).startswith(b"ID3")


def test_encoding_garbage_is_an_audio_error():
    with pytest.raises(AudioError) as err:
        audio.encode_ogg_opus(b"not audio at all" * 100)
    assert err.value.kind == "corrupt"
    with pytest.raises(ValueError):
        audio.encode_ogg_opus(samples.pcm_s16le(1.0), pcm_rate=24000, complexity=11)
