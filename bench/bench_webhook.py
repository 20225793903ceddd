"""Benchmark: signed inbound webhooks under gunicorn (gthread), against a bare Flask baseline.

For each database (SQLite, and PostgreSQL when TEST_DATABASE_URL is set) it starts, one
after the other and with the same gunicorn settings (2 workers x 8 threads):
  * the bare baseline: a Flask app whose POST /webhook/whatsapp returns ``<Response/>``;
  * the real app (main:app) with signature check and the durable insert, the inbox paused
    (INBOX_ENABLED=false) so only ingestion is measured.
Each gets (1) a closed-loop throughput run with wrk when installed (else a Python client)
and (2) an open-loop run at a fixed 200 requests/s for p50/p99 latency. Every request is a
distinct, correctly signed Twilio form. Prints a Markdown table.

    python bench/bench_webhook.py [--seconds 10] [--rate 200]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402

from tests.pg_schema import throwaway_schema  # noqa: E402

TOKEN = "bench-auth-token-0123456789abcdef"
ACCOUNT = "AC" + "b" * 32
THREADS, WORKERS = 8, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signed_requests(base_url: str, count: int) -> list[tuple[str, str]]:
    """(signature, urlencoded body) for ``count`` distinct inbound messages from 500 users."""
    validator = RequestValidator(TOKEN)
    url = base_url + "/webhook/whatsapp"
    out = []
    for i in range(count):
        form = {
            "MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": ACCOUNT, "SmsStatus": "received",
            "From": f"whatsapp:+55119{i % 500:08d}", "To": "whatsapp:+14155238886",
            "Body": f"Olá, mensagem de teste número {i}", "NumMedia": "0", "ProfileName": "Bench",
            "WaId": f"55119{i % 500:08d}", "MessageType": "text", "ApiVersion": "2010-04-01",
        }
        out.append((validator.compute_signature(url, form), urlencode(form)))
    return out


def start_gunicorn(app_spec: str, port: int, env_extra: dict) -> subprocess.Popen:
    env = dict(os.environ, **env_extra)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
         "--workers", str(WORKERS), "--threads", str(THREADS), app_spec],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.post(f"http://127.0.0.1:{port}/webhook/whatsapp", timeout=2)
            return process
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"gunicorn did not start for {app_spec}")


def wrk_throughput(port: int, reqs: list[tuple[str, str]], seconds: int) -> float | None:
    if not shutil.which("wrk"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "reqs.tsv"
        data.write_text("\n".join(f"{sig}\t{body}" for sig, body in reqs))
        script = Path(tmp) / "post.lua"
        script.write_text(f"""
local reqs = {{}}
for line in io.lines("{data}") do
  local sig, body = line:match("([^\\t]+)\\t(.*)")
  reqs[#reqs + 1] = {{sig, body}}
end
local counter = 0
local offset = 0
local threads_seen = 0
setup = function(thread) thread:set("offset", threads_seen * math.floor(#reqs / 4)); threads_seen = threads_seen + 1 end
init = function(args) counter = 0 end
request = function()
  counter = counter + 1
  local r = reqs[((offset + counter) % #reqs) + 1]
  return wrk.format("POST", "/webhook/whatsapp",
    {{["Content-Type"] = "application/x-www-form-urlencoded", ["X-Twilio-Signature"] = r[1]}}, r[2])
end
""")
        result = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "-s", str(script),
                                 f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True)
    for line in result.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


def paced_latencies(port: int, reqs: list[tuple[str, str]], rate: int, seconds: int) -> tuple[list[float], int]:
    """Open loop: send at ``rate``/s regardless of responses; latency per request in ms."""
    url = f"http://127.0.0.1:{port}/webhook/whatsapp"
    total = rate * seconds
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = time.perf_counter() + 0.2
    senders = 16

    def sender(index: int) -> None:
        session = requests.Session()
        for n in range(index, total, senders):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sig, body = reqs[n % len(reqs)]
            t0 = time.perf_counter()
            response = session.post(url, data=body, headers={
                "X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"})
            elapsed = (time.perf_counter() - max(t0, due)) * 1000
            with lock:
                latencies.append(elapsed)
                if response.status_code != 200:
                    errors[0] += 1

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def measure(label: str, app_spec: str, env_extra: dict, seconds: int, rate: int) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_gunicorn(app_spec, port, dict(env_extra, PUBLIC_BASE_URL=base))
    try:
        throughput = wrk_throughput(port, signed_requests(base, 60_000), seconds)
        latencies, errors = paced_latencies(port, signed_requests(base, rate * seconds), rate, seconds)
    finally:
        process.terminate()
        process.wait(timeout=20)
    return {"label": label, "rps": throughput, "p50": statistics.median(latencies),
            "p99": percentile(latencies, 99), "errors": errors, "n": len(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rate", type=int, default=200)
    args = parser.parse_args()
    common = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_PHONE_NUMBER": "+14155238886",
              "INBOX_ENABLED": "false", "LOG_LEVEL": "WARNING", "SECRET_KEY": "bench"}
    rows = [measure("bare Flask `<Response/>`", "bench.bare_app:app", {}, args.seconds, args.rate)]
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(measure("webhook, SQLite (WAL)", "main:app",
                            dict(common, DATABASE_URL=f"sqlite:///{tmp}/bench.db"), args.seconds, args.rate))
    pg = os.environ.get("TEST_DATABASE_URL")
    if pg:
        url, drop = throwaway_schema(pg)
        try:
            rows.append(measure("webhook, PostgreSQL", "main:app", dict(common, DATABASE_URL=url),
                                args.seconds, args.rate))
        finally:
            drop()
    bare = rows[0]["rps"]
    print(f"\ngunicorn gthread {WORKERS}x{THREADS}, {os.cpu_count()} CPUs; wrk -t2 -c32 {args.seconds}s; "
          f"latency open loop at {args.rate} req/s for {args.seconds}s\n")
    print("| server | req/s (closed loop) | vs bare | p50 ms @%d/s | p99 ms @%d/s | non-200 |" % (args.rate, args.rate))
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        ratio = f"{row['rps'] / bare:.0%}" if row["rps"] and bare else "n/a"
        rps = f"{row['rps']:.0f}" if row["rps"] else "n/a (no wrk)"
        print(f"| {row['label']} | {rps} | {ratio} | {row['p50']:.1f} | {row['p99']:.1f} | {row['errors']} |")


if __name__ == "__main__":
    main()
