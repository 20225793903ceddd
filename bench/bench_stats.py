"""Benchmark: GET /stats.json on 100,000 messages and 5,000 users, SQLite and PostgreSQL.

For each database (SQLite in a temporary file; PostgreSQL when --pg or TEST_DATABASE_URL is
given, in a throw-away schema) it builds the real app (migrations included), bulk-inserts
users, messages (all inside the 30-day window, the worst case for the per-day query),
turns with stage timings, leads and handoffs, logs in, and times:

  * baseline: one ``SELECT count(*) FROM messages`` round trip through the app's engine;
  * compute_stats(): the aggregates and percentiles, without HTTP;
  * GET /stats.json through Flask's test client (session check, JSON encoding included).

Prints a Markdown table of p50/p95 (ms). The target is p50 under 200 ms on both.

The p95 of a request that allocates a few thousand objects is set by Python's full
(generation 2) garbage collections, which walk every object of the process (~90 ms here).
``--freeze-gc`` calls ``gc.freeze()`` once the app is built, as a server would after
start-up, to show the difference.

    python bench/bench_stats.py [--pg postgresql://postgres@127.0.0.1:5432/test] [--runs 30] [--freeze-gc]
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, text  # noqa: E402

from app import create_app  # noqa: E402
from app.db import utcnow  # noqa: E402
from app.models import Handoff, Lead, Message, Turn, User  # noqa: E402
from app.web.dashboard.stats import compute_stats  # noqa: E402
from tests.pg_schema import throwaway_schema  # noqa: E402

PASSWORD = "bench-dashboard-password"
BATCH = 10_000
STAGE_MEANS = {"download": 150, "convert": 200, "transcribe": 900, "retrieve": 25, "answer": 1800,
               "speak": 1100, "store": 40, "send": 300}


def seed(db, users: int, messages: int) -> dict:
    """Bulk-insert a realistic month of traffic; returns the row counts."""
    rng = random.Random(7)
    now = utcnow()
    window = 29 * 86400  # every row inside the 30-day window: the heaviest case
    started = time.perf_counter()
    with db.engine.begin() as conn:
        conn.execute(insert(User), [{
            "phone": f"+55119{i:08d}", "channel": "simulator" if i % 100 == 0 else "whatsapp",
            "profile_name": f"Pessoa {i}", "reply_mode": "auto", "message_count": 0,
            "first_seen_at": now - dt.timedelta(seconds=rng.randrange(window)),
            "last_seen_at": now - dt.timedelta(seconds=rng.randrange(window)),
        } for i in range(users)])
        user_ids = [row[0] for row in conn.execute(text("SELECT id FROM users ORDER BY id"))]

        turns = messages // 2  # one inbound + one reply per turn
        turn_rows = []
        for _ in range(turns):
            failed = rng.random() < 0.05
            voice = rng.random() < 0.3
            timings = {stage: round(rng.expovariate(1 / mean), 1) for stage, mean in STAGE_MEANS.items()
                       if voice or stage not in ("download", "convert", "transcribe", "speak", "store")}
            timings["end_to_end"] = round(sum(timings.values()) + rng.uniform(0, 500), 1)
            turn_rows.append({
                "user_id": rng.choice(user_ids), "status": "failed" if failed else "answered", "attempts": 1,
                "holding_sent": False, "error_kind": rng.choice(["answer", "transcribe", "send"]) if failed else None,
                "timings": timings, "created_at": now - dt.timedelta(seconds=rng.randrange(window)),
                "reply_kind": "audio" if voice else "text",
            })
        # Rows arrive in time order in production (ids grow with created_at); random order would
        # scatter the window's rows over the whole table and slow every range scan unfairly.
        turn_rows.sort(key=lambda row: row["created_at"])
        for start in range(0, len(turn_rows), BATCH):
            conn.execute(insert(Turn), turn_rows[start:start + BATCH])
        turn_ids = [row[0] for row in conn.execute(text("SELECT id FROM turns ORDER BY id"))]

        statuses = ["delivered"] * 60 + ["read"] * 30 + ["sent"] * 6 + ["failed"] * 3 + ["undelivered"]
        batch = []
        for turn_id, turn in zip(turn_ids, turn_rows, strict=True):
            at = turn["created_at"]
            kind = turn["reply_kind"]
            status = rng.choice(statuses)
            common = {"user_id": turn["user_id"], "turn_id": turn_id, "channel": "whatsapp", "num_media": 0}
            batch.append(dict(common, direction="in", kind=kind, status="answered", body="Olá, quanto custa?",
                              created_at=at, updated_at=at, part_index=None))
            batch.append(dict(common, direction="out", kind=kind, status=status, body="Resposta do Endrigo.",
                              error_code="63016" if status in ("failed", "undelivered") else None,
                              created_at=at + dt.timedelta(seconds=3), updated_at=at, part_index=0))
            if len(batch) >= BATCH:
                conn.execute(insert(Message), batch)
                batch = []
        if batch:
            conn.execute(insert(Message), batch)
        conn.execute(insert(Lead), [{"user_id": rng.choice(user_ids), "name": "Lead", "interest": "site",
                                     "created_at": now - dt.timedelta(days=rng.randrange(60))} for _ in range(500)])
        conn.execute(insert(Handoff), [{"user_id": rng.choice(user_ids), "reason": "humano",
                                        "status": "open" if i % 4 == 0 else "closed",
                                        "opened_at": now - dt.timedelta(days=rng.randrange(30))} for i in range(200)])
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    with db.engine.connect() as conn:
        counts = {table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                  for table in ("users", "messages", "turns")}
    counts["seed_seconds"] = round(time.perf_counter() - started, 1)
    return counts


def timed(fn, runs: int) -> list[float]:
    fn()  # warm-up: connection pool, statement caches, imports
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def measure(label: str, database_url: str, instance_dir: str, users: int, messages: int, runs: int,
            freeze_gc: bool = False) -> list[dict]:
    app = create_app({"database_url": database_url, "instance_dir": instance_dir, "start_workers": False,
                      "dashboard_password": PASSWORD, "secret_key": "bench-secret-key-0123456789"})
    services = app.extensions["endrigo"]
    counts = seed(services.db, users, messages)
    print(f"{label}: seeded {counts['users']} users, {counts['messages']} messages, {counts['turns']} turns "
          f"in {counts['seed_seconds']} s", file=sys.stderr)
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post("/login", data={"password": PASSWORD, "csrf_token": token}).status_code == 302
    if freeze_gc:
        gc.collect()
        gc.freeze()

    def baseline():
        with services.db.engine.connect() as conn:
            conn.execute(text("SELECT count(*) FROM messages")).scalar_one()

    def direct():
        compute_stats(services.db)

    def http():
        response = client.get("/stats.json")
        assert response.status_code == 200
        response.get_json()

    rows = []
    for name, fn in (("baseline: SELECT count(*) FROM messages", baseline), ("compute_stats()", direct),
                     ("GET /stats.json", http)):
        samples = timed(fn, runs)
        rows.append({"database": label, "what": name, "p50": statistics.median(samples), "p95": pct(samples, 95),
                     "max": max(samples)})
    services.db.dispose()
    if freeze_gc:
        gc.unfreeze()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", default=os.environ.get("TEST_DATABASE_URL"),
                        help="PostgreSQL URL (a throw-away schema is created in it)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--freeze-gc", action="store_true", help="gc.freeze() after start-up (see above)")
    args = parser.parse_args()

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-stats-") as tmp:
        rows += measure("SQLite", f"sqlite:///{tmp}/bench.db", f"{tmp}/instance-sqlite", args.users,
                        args.messages, args.runs, args.freeze_gc)
        if args.pg:
            url, drop = throwaway_schema(args.pg)
            try:
                rows += measure("PostgreSQL", url, f"{tmp}/instance-pg", args.users, args.messages, args.runs,
                                args.freeze_gc)
            finally:
                drop()

    print(f"\n/stats.json on {args.messages:,} messages and {args.users:,} users, {args.runs} runs each (ms)"
          f"{', gc frozen after start-up' if args.freeze_gc else ''}\n")
    print("| database | what | p50 | p95 | max |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['database']} | {row['what']} | {row['p50']:.1f} | {row['p95']:.1f} | {row['max']:.1f} |")
    slow = [r for r in rows if r["what"] == "GET /stats.json" and r["p50"] >= 200]
    if slow:
        print("\nFAIL: p50 of /stats.json is 200 ms or more on " + ", ".join(r["database"] for r in slow))
        sys.exit(1)


if __name__ == "__main__":
    main()
