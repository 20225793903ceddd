"""Fixtures of the inbox tests."""
from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest

import app.pipeline as pipeline
from app.turn import RetryableTurnError


@pytest.fixture
def probe(monkeypatch):
    """A pipeline stage that records, per user, when each turn ran (and may be told to fail)."""
    intervals: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    lock = threading.Lock()
    failures = {"remaining": 0}

    def stage(ctx):
        started = time.monotonic()
        time.sleep(0.02)
        with lock:
            intervals[ctx.user.id].append((started, time.monotonic(), ctx.turn_id))
            if failures["remaining"] > 0:
                failures["remaining"] -= 1
                raise RetryableTurnError("emulated provider outage")

    stages = list(pipeline.STAGES)
    index = [name for name, _ in stages].index("answer")
    stages.insert(index, ("probe", stage))
    monkeypatch.setattr(pipeline, "STAGES", stages)
    return {"intervals": intervals, "failures": failures}
