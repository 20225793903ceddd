"""Benchmark of the audio path: FFmpeg decoding of voice notes and Opus encoding of replies.

Run from the project root: ``python bench/bench_audio.py [--repeat N]``. Prints Markdown tables:

1. the baseline, a bare ``ffmpeg -version`` (the cost of starting the process at all);
2. ``app.audio.ffmpeg.to_wav16k`` on a 30 s and a 120 s speech-like OGG/Opus note, as wall time and as a
   real-time factor (processing seconds per second of audio), plus the silence check;
3. ``app.audio.ffmpeg.encode_ogg_opus`` of 30 s of 24 kHz PCM (what ElevenLabs ``pcm_24000`` returns)
   at a sweep of libopus complexities, the chosen default marked.

Medians of ``--repeat`` runs; the test notes are synthesised by the same generator the tests use.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.audio import ffmpeg as audio  # noqa: E402
from tests.fakes import audio_samples  # noqa: E402


def median_seconds(action, repeat: int) -> float:
    """Median wall time of ``action``."""
    return measure(action, repeat)[0]


def measure(action, repeat: int) -> tuple[float, float]:
    """Medians of (wall time, CPU time of child processes) of ``action``. CPU time is the fairer
    figure on a shared 2-core machine where other work competes for the cores."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        action()
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return statistics.median(walls), statistics.median(cpus)


def bench_process_start(repeat: int) -> float:
    argv = [audio.ffmpeg_binary(), "-hide_banner", "-version"]
    return median_seconds(lambda: subprocess.run(argv, capture_output=True, check=True, timeout=30), repeat)


def bench_decoding(workdir: Path, repeat: int, baseline: float) -> list[str]:
    rows = ["| input | audio s | to_wav16k ms | RTF | minus process start ms | is_silent ms |",
            "|---|---:|---:|---:|---:|---:|"]
    for seconds in (30, 120):
        src = workdir / f"note{seconds}.ogg"
        src.write_bytes(audio_samples.speech_like_ogg(float(seconds), "24k"))
        dst = workdir / f"note{seconds}.wav"
        decode = median_seconds(lambda src=src, dst=dst: audio.to_wav16k(src, dst, timeout=60), repeat)
        silence = median_seconds(lambda dst=dst: audio.is_silent(dst), repeat)
        rows.append(f"| OGG/Opus 24 kbps mono, {src.stat().st_size // 1024} KiB | {seconds} | {decode * 1000:.0f} | "
                    f"{decode / seconds:.4f} | {(decode - baseline) * 1000:.0f} | {silence * 1000:.1f} |")
    return rows


OPUS_COMPLEXITIES = (0, 1, 3, 5, 8, 10, audio.DEFAULT_OPUS_COMPLEXITY)


def bench_encoding(repeat: int) -> list[str]:
    pcm = audio_samples.pcm_s16le(30.0, 24000)
    rows = ["| libopus complexity | encode 30 s, wall ms | ffmpeg CPU ms | RTF (wall) | output KiB |",
            "|---|---:|---:|---:|---:|"]
    for complexity in sorted(set(OPUS_COMPLEXITIES)):
        output: dict[str, bytes] = {}

        def encode(level=complexity, into=output):
            into["data"] = audio.encode_ogg_opus(pcm, pcm_rate=24000, complexity=level)

        wall, cpu = measure(encode, repeat)
        label = str(complexity)
        if complexity == audio.DEFAULT_OPUS_COMPLEXITY:
            label += " (chosen)"
        elif complexity == 10:
            label += " (FFmpeg default)"
        rows.append(f"| {label} | {wall * 1000:.0f} | {cpu * 1000:.0f} | {wall / 30:.4f} | "
                    f"{len(output['data']) / 1024:.1f} |")
    wall, cpu = measure(lambda: audio.transcode_to_mp3(pcm, pcm_rate=24000), repeat)
    rows.append(f"| MP3 fallback (libmp3lame 64 kbps) | {wall * 1000:.0f} | {cpu * 1000:.0f} | {wall / 30:.4f} | - |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    baseline = bench_process_start(args.repeat * 2)
    print(f"ffmpeg: `{audio.ffmpeg_binary()}`, median of {args.repeat} runs\n")
    print("| baseline | ms |\n|---|---:|")
    print(f"| `ffmpeg -version` process start | {baseline * 1000:.1f} |\n")
    with tempfile.TemporaryDirectory() as workdir:
        print("\n".join(bench_decoding(Path(workdir), args.repeat, baseline)))
    print()
    print("\n".join(bench_encoding(args.repeat)))


if __name__ == "__main__":
    main()
