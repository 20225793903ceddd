"""Benchmark: our pipeline's overhead on a text turn, with zero-latency OpenAI and Twilio emulators.

For each database (SQLite, and PostgreSQL when TEST_DATABASE_URL is set) it drives N text
turns, one at a time, through the real app: a signed webhook into the real inbox (coalescing
window 0), retrieval, the persona + Responses call (emulator), the Twilio send (emulator),
and the inbox's bookkeeping. For each turn it reads what the inbox stored: ``end_to_end``
(turn finished − webhook received) and the per-stage timings.

Baseline, in the same run and against the same emulators: one ``responses.create`` plus one
Twilio ``messages.create`` made directly with the SDKs, without our pipeline. Our overhead
is ours − baseline. Target: overhead p50 under 30 ms. Prints Markdown tables.

    python bench/bench_pipeline.py [--turns 200] [--users 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openai import OpenAI  # noqa: E402
from sqlalchemy import select  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402
from twilio.rest import Client  # noqa: E402

from app import create_app  # noqa: E402
from app.config import Settings  # noqa: E402
from app.models import Message, Turn  # noqa: E402
from app.pipeline import STAGES  # noqa: E402
from tests.fakes.openai_fake import OpenAIFake  # noqa: E402
from tests.fakes.twilio_fake import TwilioFake  # noqa: E402
from tests.pg_schema import throwaway_schema  # noqa: E402

NUMBER = "whatsapp:+14155238886"
PUBLIC = "https://bot.example.com"
QUESTIONS = (
    "Quais serviços a Endrigo Digital oferece?",
    "Vocês fazem gestão de tráfego pago no Google?",
    "Qual o horário de atendimento?",
    "Quanto custa um site institucional?",
    "Posso falar com alguém da equipe amanhã?",
)
TARGET_OVERHEAD_MS = 30.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def build_app(database_url: str, tmp: str, twilio: TwilioFake, openai_fake: OpenAIFake):
    settings = Settings.from_env(
        env={}, database_url=database_url, instance_dir=f"{tmp}/instance", public_base_url=PUBLIC,
        twilio_account_sid=twilio.account_sid, twilio_auth_token=twilio.auth_token, twilio_phone_number=NUMBER,
        twilio_api_base_url=twilio.base_url, openai_api_key=openai_fake.api_key,
        openai_base_url=openai_fake.v1_url, coalesce_window_seconds=0.0, secret_key="bench-secret",
        log_level="WARNING",
    )
    return create_app(settings)


def one_turn(app, twilio: TwilioFake, n: int, users: int) -> tuple[int, float]:
    """Post one signed text webhook; wait until the reply reached Twilio and the turn is recorded.

    Returns (turn id, client-side seconds from the POST to the reply at Twilio).
    """
    before = len(twilio.sent)
    form = twilio.inbound_form(from_=f"whatsapp:+55119{n % users:08d}", body=QUESTIONS[n % len(QUESTIONS)],
                               profile_name=f"Pessoa {n % users}")
    signature = RequestValidator(twilio.auth_token).compute_signature(PUBLIC + "/webhook/whatsapp", form)
    started = time.perf_counter()
    response = app.test_client().post("/webhook/whatsapp", data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200, response.status_code
    while len(twilio.sent) == before:
        if time.perf_counter() - started > 30:
            raise RuntimeError("no reply within 30 s")
        time.sleep(0.0005)
    at_twilio = time.perf_counter() - started
    services = app.extensions["endrigo"]
    while True:  # the inbox records the outcome right after the send
        with services.db.session() as session:
            row = session.execute(
                select(Message.turn_id, Message.status).where(Message.provider_sid == form["MessageSid"])
            ).one()
        if row.status == "answered":
            return row.turn_id, at_twilio
        if row.status == "failed":
            raise RuntimeError(f"turn failed: {row}")
        time.sleep(0.001)


def baseline_round_trip(oai: OpenAI, tw: Client, n: int) -> tuple[float, float]:
    """One Responses call and one Twilio send, straight through the SDKs: the floor we cannot beat.

    Returns the seconds of each call.
    """
    started = time.perf_counter()
    answer = oai.responses.create(model="gpt-5.4-mini", input=QUESTIONS[n % len(QUESTIONS)], store=False)
    answered = time.perf_counter()
    tw.messages.create(to=f"whatsapp:+55119{n % 20:08d}", from_=NUMBER, body=answer.output_text)
    return answered - started, time.perf_counter() - answered


def measure(label: str, database_url: str, turns: int, users: int) -> dict:
    with TwilioFake() as twilio, OpenAIFake() as openai_fake, tempfile.TemporaryDirectory() as tmp:
        app = build_app(database_url, tmp, twilio, openai_fake)
        services = app.extensions["endrigo"]
        oai = OpenAI(api_key=openai_fake.api_key, base_url=openai_fake.v1_url, max_retries=0)
        tw = Client(twilio.account_sid, twilio.auth_token)
        tw.api.base_url = twilio.base_url
        try:
            for n in range(10):  # warm-up: imports, the BM25 index, persona, pooled connections
                one_turn(app, twilio, n, users)
                baseline_round_trip(oai, tw, n)
            turn_ids, client_side, baseline, base_openai, base_twilio = [], [], [], [], []
            for n in range(turns):
                # Interleaved, so both see the same machine state (caches, other load).
                openai_s, twilio_s = baseline_round_trip(oai, tw, n)
                base_openai.append(openai_s * 1000)
                base_twilio.append(twilio_s * 1000)
                baseline.append((openai_s + twilio_s) * 1000)
                turn_id, at_twilio = one_turn(app, twilio, 10 + n, users)
                turn_ids.append(turn_id)
                client_side.append(at_twilio * 1000)
            with services.db.session() as session:
                timings = [t for t in session.scalars(select(Turn.timings).where(Turn.id.in_(turn_ids)))]
        finally:
            services.inbox.shutdown(wait=True)
            services.db.dispose()
    end_to_end = [t["end_to_end"] for t in timings]
    # Stages that took under 0.5 ms are not stored (app/pipeline/__init__.py): they count as 0.
    stage_names = [name for name, _ in STAGES if any(name in t for t in timings)]
    stages = {name: [t.get(name, 0.0) for t in timings] for name in stage_names}
    stages["inbox (claim, load, finish)"] = [
        t["end_to_end"] - sum(t.get(name, 0.0) for name in stage_names) for t in timings
    ]
    return {"label": label, "turns": turns, "end_to_end": end_to_end, "client_side": client_side,
            "baseline": baseline, "base_openai": base_openai, "base_twilio": base_twilio, "stages": stages}


def print_tables(results: list[dict]) -> None:
    print("\n### Text turn, zero-latency emulators, turns one at a time, coalescing window 0\n")
    print("| database | turns | webhook → turn finished p50 / p95 | webhook → reply at Twilio p50 / p95 "
          "| baseline (SDK calls alone) p50 / p95 | **overhead p50** (target < 30 ms) | overhead p95 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        e2e, client, base = r["end_to_end"], r["client_side"], r["baseline"]
        overhead50 = statistics.median(e2e) - statistics.median(base)
        overhead95 = percentile(e2e, 95) - percentile(base, 95)
        verdict = "ok" if overhead50 < TARGET_OVERHEAD_MS else "OVER"
        print(f"| {r['label']} | {r['turns']} | {statistics.median(e2e):.1f} / {percentile(e2e, 95):.1f} ms "
              f"| {statistics.median(client):.1f} / {percentile(client, 95):.1f} ms "
              f"| {statistics.median(base):.1f} / {percentile(base, 95):.1f} ms "
              f"| **{overhead50:.1f} ms** ({verdict}) | {overhead95:.1f} ms |")
    for r in results:
        print(f"\nPer stage, {r['label']} (ms; the answer and send stages include the emulators' round trips):\n")
        print("| stage | p50 | p95 | provider call alone (baseline) p50 |")
        print("|---|---:|---:|---:|")
        floors = {"answer": r["base_openai"], "send": r["base_twilio"]}
        for name, values in r["stages"].items():
            floor = f"{statistics.median(floors[name]):.1f}" if name in floors else "—"
            print(f"| {name} | {statistics.median(values):.1f} | {percentile(values, 95):.1f} | {floor} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--users", type=int, default=20, help="distinct senders (each builds a history)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(measure("SQLite (WAL)", f"sqlite:///{tmp}/bench.db", args.turns, args.users))
    pg = os.environ.get("TEST_DATABASE_URL")
    if pg:
        url, drop = throwaway_schema(pg)
        try:
            results.append(measure("PostgreSQL", url, args.turns, args.users))
        finally:
            drop()
    print_tables(results)


if __name__ == "__main__":
    main()
