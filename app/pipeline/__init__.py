"""The pipeline: one ordered list of stages that turns a user's turn into a sent reply.

Each stage is a function ``run(ctx: TurnContext) -> None`` in its own module; ``STAGES`` is
the one list of their order and names. Stages skip
themselves when they have nothing to do (no media, answer already known from a previous
attempt, text reply). A stage may end the turn early with ``ctx.halt`` (the gate does, before
the realtime path too: an opted-out or limited user costs no model call). ``run_pipeline``
times every stage (``ctx.timings``, milliseconds, and the Prometheus histograms of
app/ops/metrics.py).


A turn made only of voice notes that came in on /webhook/whatsapp/realtime takes the
realtime voice path first (app/pipeline/realtime.py: one Realtime session, speech to
speech); when that path cannot answer, the same turn goes through the stages below, once.
Either way the reply leaves through the send stage's outbox.
"""
from __future__ import annotations

import time
from typing import Callable

from app.ops import metrics
from app.pipeline import answer, convert, download, gate, realtime, retrieve, send, speak, store, transcribe
from app.pipeline.context import TurnContext

STAGES: list[tuple[str, Callable[[TurnContext], None]]] = [
    ("gate", gate.run),              # opt-out / opt-in / erasure commands, silence, limits
    ("download", download.run),      # fetch media from Twilio (allowed hosts only)
    ("convert", convert.run),        # FFmpeg -> 16 kHz mono WAV, silence check
    ("transcribe", transcribe.run),  # Portuguese speech to text (OpenAI)
    ("retrieve", retrieve.run),      # hybrid search over documents/
    ("answer", answer.run),          # persona + Responses API + tools (or offline responder)
    ("speak", speak.run),            # ElevenLabs TTS when a voice reply is due
    ("store", store.run),            # keep the audio (local or GCS) and get its URL
    ("send", send.run),              # split, send in order, record outbound rows
]
# The stage names in order: the keys of a turn's timings, the dashboard's latency table.
STAGE_NAMES: tuple[str, ...] = tuple(name for name, _ in STAGES)


def run_pipeline(ctx: TurnContext) -> None:
    """Answer the turn; exceptions propagate to the inbox, which decides retry or fail.

    The realtime path when the turn qualifies (``realtime.eligible``), else or after its
    fallback the stages, without those the realtime path already ran (the download).
    Between stages a stale attempt (a newer message arrived before the decision) stops with
    ``TurnSuperseded``: nothing of it has been sent, and the inbox answers the grown turn.
    """
    begun = time.perf_counter()
    try:
        _run_paths(ctx)
    finally:
        metrics.pipeline_finished(time.perf_counter() - begun)


def _run_paths(ctx: TurnContext) -> None:
    """The gate, then the realtime path when the turn qualifies, then (or after its fallback) the stages."""
    run_stages(ctx, only=("gate",))  # before any model call, the realtime path's included
    if ctx.halt_status is not None:
        return
    done: tuple[str, ...] = ("gate",)
    if realtime.eligible(ctx):
        started = time.perf_counter()
        outcome = realtime.run(ctx)
        ctx.timings["realtime_path"] = round((time.perf_counter() - started) * 1000, 1)
        if outcome.answered:
            return
        done += tuple(outcome.stages_done)
    run_stages(ctx, skip=done)


def run_stages(ctx: TurnContext, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None) -> None:
    """Run every stage in order (but those in ``skip``; or just those in ``only``) until one halts the turn."""
    for name, stage in STAGES:
        if name in skip or (only is not None and name not in only):
            continue
        if ctx.halt_status is not None:
            break
        ctx.check_superseded()
        started = time.perf_counter()
        try:
            stage(ctx)
        finally:
            elapsed = time.perf_counter() - started
            # Stages that did nothing cost microseconds; keep only the ones that worked.
            if elapsed >= 0.0005 or name in ("answer", "send"):
                ctx.timings[name] = round(elapsed * 1000, 1)
                metrics.stage_finished(name, elapsed)
