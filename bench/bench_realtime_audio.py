"""Benchmark of the realtime path's audio steps (app/audio/pcm.py).

Run from the project root: ``python bench/bench_realtime_audio.py [--repeat N]``. Prints Markdown:

1. ``to_pcm16_24k`` of a 30 s speech-like OGG/Opus note and ``trim_silence`` of the result;
2. encoding a Realtime answer (PCM16 24 kHz) as OGG/Opus with FFmpeg in a subprocess
   (``pcm_to_ogg_opus``, the chosen path) against in-process encoding with PyAV, at the same
   libopus settings (32 kbps, voip, complexity 3), for 5 s and 30 s answers. PyAV is not a
   project dependency: install it somewhere and put it on PYTHONPATH to get its column
   (``pip install --target /tmp/av av==18.1.0``); without it the column says so.

Wall-time medians of ``--repeat`` runs; CPU time (own process + children) beside it, which is
the fairer figure on a shared machine.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.audio import pcm as rt_audio  # noqa: E402
from tests.fakes import audio_samples  # noqa: E402


def measure(action, repeat: int) -> tuple[float, float]:
    """Medians of (wall ms, CPU ms of this process and its children)."""
    walls, cpus = [], []
    for _ in range(repeat):
        before_cpu = _cpu()
        started = time.perf_counter()
        action()
        walls.append((time.perf_counter() - started) * 1000)
        cpus.append((_cpu() - before_cpu) * 1000)
    return statistics.median(walls), statistics.median(cpus)


def _cpu() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def pyav_ogg_opus(pcm: bytes, rate: int = 24_000) -> bytes:
    """The in-process alternative: PyAV's libopus and OGG muxer, same settings as app.audio."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=rate, layout="mono")
        stream.bit_rate = rt_audio_bitrate() * 1000
        stream.codec_context.options = {"application": "voip", "compression_level": "3"}
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def rt_audio_bitrate() -> int:
    from app.audio.ffmpeg import DEFAULT_OPUS_BITRATE_KBPS

    return DEFAULT_OPUS_BITRATE_KBPS


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    note = audio_samples.speech_like_ogg(30.0)
    with tempfile.NamedTemporaryFile(suffix=".ogg") as handle:
        handle.write(note)
        handle.flush()
        pcm = rt_audio.to_pcm16_24k(handle.name)
        decode = measure(lambda: rt_audio.to_pcm16_24k(handle.name), args.repeat)
    trim = measure(lambda: rt_audio.trim_silence(pcm), args.repeat)
    print("| step (30 s note) | wall ms | CPU ms |\n|---|---|---|")
    print(f"| to_pcm16_24k | {decode[0]:.0f} | {decode[1]:.0f} |")
    print(f"| trim_silence (webrtcvad + energy gate) | {trim[0]:.0f} | {trim[1]:.0f} |")

    try:
        import av  # noqa: F401

        have_av = True
    except ImportError:
        have_av = False
    print("\n| answer | FFmpeg subprocess wall / CPU ms | PyAV in-process wall / CPU ms | bytes FFmpeg / PyAV |")
    print("|---|---|---|---|")
    for seconds in (5.0, 30.0):
        answer = audio_samples.pcm_s16le(seconds, 24_000)
        ffmpeg_ms = measure(lambda: rt_audio.pcm_to_ogg_opus(answer), args.repeat)
        ffmpeg_size = len(rt_audio.pcm_to_ogg_opus(answer))
        if have_av:
            av_ms = measure(lambda: pyav_ogg_opus(answer), args.repeat)
            av_cell, av_size = f"{av_ms[0]:.0f} / {av_ms[1]:.0f}", str(len(pyav_ogg_opus(answer)))
        else:
            av_cell, av_size = "PyAV not installed", "-"
        print(f"| {seconds:g} s | {ffmpeg_ms[0]:.0f} / {ffmpeg_ms[1]:.0f} | {av_cell} | {ffmpeg_size} / {av_size} |")


if __name__ == "__main__":
    main()
