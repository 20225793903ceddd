"""Benchmark: sustained signed load with the pipeline running, under gunicorn on PostgreSQL.

The real app (``gunicorn -c gunicorn.conf.py main:app``, 2 workers x 8 threads, the inbox
running in both workers with WORKERS inbox threads each) on a throwaway PostgreSQL schema
(TEST_DATABASE_URL), against the emulators in this process with realistic delays: the answer
takes 2.0 s (an OpenAI handler that sleeps), a Twilio send 0.15 s. A separate sender process
posts ``--rate`` distinct, correctly signed messages per second for ``--seconds`` s, open
loop, from 500 users in turn (each user writes every 500 / rate s). Then it waits until every
inbound message is answered and reports:
  * webhook latency p50/p99 (target p99 under 50 ms) and non-200 answers;
  * every message answered once: all inbound rows ``answered``; answer sends = answered
    turns; no answer sent twice;
  * reply latency p50/p95: a message's webhook → the first answer to its user after it (at
    the Twilio emulator; both processes read CLOCK_MONOTONIC through ``perf_counter``);
  * the gunicorn workers' RSS (VmRSS) after a warm-up and after the run.

    TEST_DATABASE_URL=postgresql://... python bench/bench_load.py [--rate 80] [--seconds 60]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from bisect import bisect_right
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

USERS = 500
ANSWER_S, SEND_S = 2.0, 0.15
NUMBER = "whatsapp:+14155238886"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def user_of(i: int) -> str:
    return f"whatsapp:+55119{i % USERS:08d}"


# -- the sender process -----------------------------------------------------------------------

def send(path: str, url: str, rate: float, out: str, senders: int = 24) -> None:
    """Open loop: request n is due at start + n / rate, whatever the earlier ones took."""
    reqs = json.loads(Path(path).read_text())
    results: list = [None] * len(reqs)
    start = time.perf_counter() + 0.5

    def worker(index: int) -> None:
        session = requests.Session()
        for n in range(index, len(reqs), senders):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sig, body = reqs[n]
            t0 = time.perf_counter()
            response = session.post(url, data=body, timeout=30, headers={
                "X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"})
            # Latency from the due time: a late sender counts against us, not in our favour.
            results[n] = (max(t0, due), (time.perf_counter() - max(t0, due)) * 1000, response.status_code)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    Path(out).write_text(json.dumps(results))


# -- the run ------------------------------------------------------------------------------------

def worker_rss_mib(master: int) -> list[float]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() == str(master):
            out.append(int(fields["VmRSS"].split()[0]) / 1024)
    return sorted(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=80)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--inbox-threads", type=int, default=100, help="WORKERS (inbox threads) per process")
    parser.add_argument("--app", default="main:app", help="the WSGI app gunicorn serves (for diagnostics)")
    parser.add_argument("--send", nargs=3, metavar=("REQS", "URL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send:
        send(args.send[0], args.send[1], args.rate, args.send[2])
        return

    from sqlalchemy import create_engine, text
    from twilio.request_validator import RequestValidator

    from bench.bench_latency import MARK, Answerer, StampedTwilio, free_port
    from tests.fakes.openai_fake import OpenAIFake
    from tests.pg_schema import throwaway_schema

    pg = os.environ.get("TEST_DATABASE_URL")
    if not pg:
        print("bench_load: skipped, it needs PostgreSQL (set TEST_DATABASE_URL)")
        return
    url, drop = throwaway_schema(pg)
    with StampedTwilio() as twilio, OpenAIFake() as openai_fake, tempfile.TemporaryDirectory() as tmp:
        answerer = Answerer()
        openai_fake.set_handler(answerer)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "OPENAI_", "ELEVENLABS_"))}
        env.update({
            "DATABASE_URL": url, "PUBLIC_BASE_URL": base, "TWILIO_ACCOUNT_SID": twilio.account_sid,
            "TWILIO_AUTH_TOKEN": twilio.auth_token, "TWILIO_PHONE_NUMBER": NUMBER,
            "TWILIO_API_BASE_URL": twilio.base_url, "OPENAI_API_KEY": openai_fake.api_key,
            "OPENAI_BASE_URL": openai_fake.v1_url, "LOG_LEVEL": "WARNING", "SECRET_KEY": "bench-secret",
            "WORKERS": str(args.inbox_threads), "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "8",
        })
        log = open(f"{tmp}/gunicorn.log", "w")  # noqa: SIM115
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind",
                                   f"127.0.0.1:{port}", args.app], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    requests.get(base + "/health", timeout=1)
                    break
                except requests.RequestException:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError(f"gunicorn did not start: {Path(tmp, 'gunicorn.log').read_text()[-2000:]}")
                    time.sleep(0.2)
            validator = RequestValidator(twilio.auth_token)
            hook = base + "/webhook/whatsapp"

            def form(i: int, body: str, user: str | None = None) -> dict:
                user = user or user_of(i)
                return {"MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": twilio.account_sid,
                        "SmsStatus": "received", "From": user, "To": NUMBER, "Body": body, "NumMedia": "0",
                        "ProfileName": f"Pessoa {i % USERS}", "WaId": user.split("+")[1],
                        "MessageType": "text", "ApiVersion": "2010-04-01"}

            # Warm-up: both workers import, load the knowledge base and open connections.
            answerer.delay = 0.0
            for i in range(20):
                f = form(i, "Olá, quais serviços vocês oferecem?", f"whatsapp:+55118{i:08d}")
                requests.post(hook, data=f, headers={"X-Twilio-Signature": validator.compute_signature(hook, f)},
                              timeout=10)
            time.sleep(3)
            master = server.pid
            rss_before = worker_rss_mib(master)
            warm_sent = len(twilio.sent)

            answerer.delay = ANSWER_S
            twilio.send_latency = SEND_S
            total = int(args.rate * args.seconds)
            reqs = []
            for i in range(total):
                f = form(i, f"Olá, quero saber dos serviços de vocês (mensagem {i})")
                reqs.append((validator.compute_signature(hook, f), urlencode(f)))
            Path(tmp, "reqs.json").write_text(json.dumps(reqs))
            calls_before = len(answerer.calls)
            subprocess.run([sys.executable, __file__, "--rate", str(args.rate), "--send", f"{tmp}/reqs.json",
                            hook, f"{tmp}/out.json"], check=True)
            sent_results = json.loads(Path(tmp, "out.json").read_text())
            sent_done = time.perf_counter()

            deadline = time.monotonic() + 180
            while True:
                with engine.connect() as conn:
                    statuses = dict(conn.execute(text(
                        "SELECT status, count(*) FROM messages WHERE direction = 'in' GROUP BY status")).all())
                pending = sum(n for s, n in statuses.items() if s != "answered")
                if not pending or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            drained_after = time.perf_counter() - sent_done
            time.sleep(ANSWER_S + 1)
            rss_after = worker_rss_mib(master)
            with engine.connect() as conn:
                answered_turns = conn.execute(text("SELECT count(*) FROM turns WHERE status = 'answered'")).scalar()
                statuses = dict(conn.execute(text(
                    "SELECT status, count(*) FROM messages WHERE direction = 'in' GROUP BY status")).all())
            model_calls = len(answerer.calls) - calls_before
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
            engine.dispose()
            drop()

    answers = [r for r in twilio.sent if MARK in (r["body"] or "")]
    duplicates = len(answers) - len({r["body"] for r in answers})
    load_answers = twilio.sent[warm_sent:]
    replies: dict[str, list[float]] = {}
    for r in load_answers:
        if MARK in (r["body"] or ""):
            replies.setdefault(r["to"], []).append(r["at"])
    for times in replies.values():
        times.sort()
    webhook = [ms for _, ms, _ in sent_results]
    non200 = sum(1 for _, _, status in sent_results if status != 200)
    latency, unmatched = [], 0
    for i, (t_sent, _, _) in enumerate(sent_results):
        times = replies.get(user_of(i), [])
        k = bisect_right(times, t_sent)
        if k < len(times):
            latency.append(times[k] - t_sent)
        else:
            unmatched += 1
    print(f"\n### Sustained load: {args.rate:.0f} signed messages/s for {args.seconds} s from {USERS} users "
          f"(pipeline running)\n")
    print(f"gunicorn gthread 2x8, WORKERS={args.inbox_threads} inbox threads per process, PostgreSQL, "
          f"{os.cpu_count()} CPUs shared with the emulators and the sender; answer {ANSWER_S} s, Twilio send {SEND_S} s\n")
    print("| measure | value |")
    print("|---|---:|")
    print(f"| messages posted | {len(sent_results)} (non-200: {non200}) |")
    print(f"| webhook p50 / p99 / max | {statistics.median(webhook):.1f} / {percentile(webhook, 99):.1f} / "
          f"{max(webhook):.1f} ms |")
    print(f"| inbound messages by status | {json.dumps(statuses)} |")
    print(f"| answered turns / answer sends (load + warm-up) / answers sent twice | {answered_turns} / "
          f"{len(answers)} / {duplicates} |")
    print(f"| model calls during the load | {model_calls} |")
    print(f"| all answered within | {drained_after:.1f} s after the last message was posted |")
    if latency:
        print(f"| reply latency (webhook → answer at Twilio) p50 / p95 / max | {statistics.median(latency):.2f} / "
              f"{percentile(latency, 95):.2f} / {max(latency):.2f} s (unmatched: {unmatched}) |")
    print(f"| worker RSS after warm-up → after the run | {', '.join(f'{x:.0f}' for x in rss_before)} → "
          f"{', '.join(f'{x:.0f}' for x in rss_after)} MiB |")


if __name__ == "__main__":
    main()
