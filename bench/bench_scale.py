"""Benchmark: QUEUE_BACKEND=celery on this machine, with emulated provider delays.

1. Turns per second for 1, 2 and 4 Celery worker processes (``--concurrency 8`` each,
   threads pool), ratio to 1: one gunicorn web instance (2 workers x 8 threads) takes a
   burst of one message from each of ``--turns-per-worker`` x N distinct users (each one
   turn); the clock runs from the first webhook to the last message answered (read in
   the database). The answer call takes ``--answer-latency`` s at the OpenAI emulator and
   each Twilio send ``--send-latency`` s.
2. Webhook ingest with the pipeline running in the web processes (QUEUE_BACKEND=thread:
   2 gunicorn workers x 8 threads, each with its inbox's 8 executor threads) vs in 2
   Celery worker processes (x 8 threads: the same pipeline capacity): open-loop p50/p99
   at 80 and 200 msg/s (distinct signed messages from 200 users, coalescing window 0 so
   that the pipeline stays busy), and closed-loop throughput with wrk (when installed).

A fresh PostgreSQL schema and an empty Redis of the benchmark's own for every run; the
emulators run in a process of their own (bench/emulators.py). Needs TEST_DATABASE_URL
(PostgreSQL) and redis-server. Prints Markdown tables.

    python bench/bench_scale.py [--seconds 10] [--turns-per-worker 120]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402

from bench.bench_webhook import paced_latencies, percentile, wrk_throughput  # noqa: E402
from tests.pg_schema import throwaway_schema  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402

WEB_WORKERS, WEB_THREADS, WORKER_THREADS = 2, 8, 8
TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()
    except OSError:
        return None


def tree_cpu_seconds(root: int) -> float:
    """CPU time (user + system) of ``root`` and all its descendants now alive (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                parents[int(entry)] = int(fields[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    total = 0
    for pid in tree:
        fields = _stat(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


class Emulators:
    def __init__(self, answer_latency: float, send_latency: float):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.emulators", "--answer-latency", str(answer_latency),
             "--send-latency", str(send_latency)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=10)


class Deployment:
    """One web instance (gunicorn) and N Celery workers on a fresh schema and an empty Redis."""

    def __init__(self, emulators: Emulators, redis_server: RedisServer, backend: str, logdir: Path,
                 pin: bool = False):
        self.pin = pin
        self.url, self._drop = throwaway_schema(os.environ["TEST_DATABASE_URL"])
        self.engine = create_engine(self.url.replace("postgresql://", "postgresql+psycopg2://", 1))
        info = emulators.info
        self.token = info["auth_token"]
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.logdir = logdir
        self.processes: list[subprocess.Popen] = []
        redis_server_url = redis_server.url(0)
        subprocess.run(["redis-cli", "-p", str(redis_server.port), "FLUSHALL"], check=True, capture_output=True)
        self.env = {
            "PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "PYTHONPATH": str(ROOT),
            "DATABASE_URL": self.url, "PUBLIC_BASE_URL": self.base, "QUEUE_BACKEND": backend,
            "CELERY_BROKER_URL": redis_server_url, "CELERY_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:6]}:",
            "TWILIO_ACCOUNT_SID": info["account_sid"], "TWILIO_AUTH_TOKEN": info["auth_token"],
            "TWILIO_PHONE_NUMBER": info["number"], "TWILIO_API_BASE_URL": info["twilio_url"],
            "OPENAI_API_KEY": info["openai_key"], "OPENAI_BASE_URL": info["openai_url"],
            "COALESCE_WINDOW_SECONDS": "0", "SECRET_KEY": "bench-scale-secret-0123456789", "LOG_LEVEL": "INFO",
            "WORKERS": str(WORKER_THREADS), "WEB_CONCURRENCY": str(WEB_WORKERS), "GUNICORN_THREADS": str(WEB_THREADS),
        }

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        # --pin: the web instance on CPU 0, workers on CPU 1 (as if the workers had a host of their own).
        cpus = ({0} if name == "web" else {1}) if self.pin else None
        process = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        self.processes.append(process)
        return process

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of (the web instance, the Celery workers)."""
        web, *workers = self.processes
        return tree_cpu_seconds(web.pid), sum(tree_cpu_seconds(w.pid) for w in workers)

    def start(self, workers: int) -> "Deployment":
        self._spawn("web", [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind",
                            f"127.0.0.1:{self.port}", "main:app"])
        names = [f"w{i}-{uuid.uuid4().hex[:4]}" for i in range(workers)]
        for name in names:
            self._spawn(name, [sys.executable, "-m", "celery", "-A", "app.worker", "worker", "--pool", "threads",
                               "--concurrency", str(WORKER_THREADS), "--without-mingle", "--without-gossip",
                               "--loglevel", "INFO", "-n", f"{name}@%h"])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                web = requests.get(self.base + "/health", timeout=0.5).status_code == 200
            except requests.RequestException:
                web = False
            ready = all(re.search(r"@\S+ ready\.", (self.logdir / f"{n}.log").read_text(errors="replace"))
                        for n in names if (self.logdir / f"{n}.log").exists())
            if web and ready and all((self.logdir / f"{n}.log").exists() for n in names):
                return self
            time.sleep(0.2)
        raise RuntimeError("the deployment did not start; see " + str(self.logdir))

    def answered(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'answered'"
                                     )).scalar()

    def forms(self, count: int, users: int) -> list[tuple[str, str]]:
        validator = RequestValidator(self.token)
        url = self.base + "/webhook/whatsapp"
        out = []
        run = uuid.uuid4().hex[:6]
        for i in range(count):
            form = {"MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": self.env["TWILIO_ACCOUNT_SID"],
                    "From": f"whatsapp:+55119{i % users:08d}", "To": self.env["TWILIO_PHONE_NUMBER"],
                    "Body": f"Quais serviços vocês oferecem? ({run} {i})", "NumMedia": "0",
                    "ProfileName": "Bench", "WaId": f"55119{i % users:08d}", "MessageType": "text",
                    "SmsStatus": "received", "ApiVersion": "2010-04-01"}
            out.append((validator.compute_signature(url, form), urlencode(form)))
        return out

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.engine.dispose()
        self._drop()


def turns_per_second(emulators, redis_server, logdir: Path, workers: int, turns: int) -> dict:
    deployment = Deployment(emulators, redis_server, "celery", logdir).start(workers)
    try:
        forms = deployment.forms(turns, users=turns)
        url = deployment.base + "/webhook/whatsapp"
        sessions = [requests.Session() for _ in range(16)]

        def post(i: int) -> int:
            sig, body = forms[i]
            return sessions[i % 16].post(url, data=body, headers={
                "X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"}, timeout=30).status_code

        web_cpu0, workers_cpu0 = deployment.cpu()
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(post, range(turns)))
        posted = time.perf_counter() - started
        while deployment.answered() < turns:
            if time.perf_counter() - started > 300:
                raise RuntimeError(f"only {deployment.answered()}/{turns} answered; see {logdir}")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        web_cpu1, workers_cpu1 = deployment.cpu()
    finally:
        deployment.stop()
    return {"workers": workers, "turns": turns, "seconds": elapsed, "tps": turns / elapsed, "posted": posted,
            "non200": sum(1 for s in statuses if s != 200),
            "worker_cpu_ms": (workers_cpu1 - workers_cpu0) * 1000 / turns,
            "web_cpu_ms": (web_cpu1 - web_cpu0) * 1000 / turns}


def ingest(emulators, redis_server, logdir: Path, backend: str, rate: int | None, seconds: int,
           pin: bool = False) -> dict:
    deployment = Deployment(emulators, redis_server, backend, logdir, pin).start(2 if backend == "celery" else 0)
    try:
        if rate is None:
            rps = wrk_throughput(deployment.port, deployment.forms(60_000, users=200), seconds)
            return {"backend": backend, "rps": rps, "answered": deployment.answered()}
        forms = deployment.forms(rate * seconds, users=200)
        web_cpu0, _ = deployment.cpu()
        latencies, errors = paced_latencies(deployment.port, forms, rate, seconds)
        web_cpu1, _ = deployment.cpu()
        answered = deployment.answered()
    finally:
        deployment.stop()
    return {"backend": backend, "rate": rate, "p50": statistics.median(latencies), "p99": percentile(latencies, 99),
            "errors": errors, "n": len(latencies), "answered": answered,
            "web_cpu": (web_cpu1 - web_cpu0) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--turns-per-worker", type=int, default=120)
    parser.add_argument("--answer-latency", type=float, default=0.5)
    parser.add_argument("--send-latency", type=float, default=0.1)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--parts", default="scaling,ingest,wrk", help="which tables to measure")
    parser.add_argument("--pin", action="store_true",
                        help="ingest runs: web on CPU 0, Celery workers on CPU 1 (a worker host of their own)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not os.environ.get("TEST_DATABASE_URL"):
        print("bench_scale skipped: it needs PostgreSQL (set TEST_DATABASE_URL)")
        return
    if not shutil.which("redis-server"):
        print("bench_scale skipped: it needs redis-server (apt-get install -y redis-server)")
        return
    emulators = Emulators(args.answer_latency, args.send_latency)
    redis_server = RedisServer().start()
    logdir = Path(tempfile.mkdtemp(prefix="bench_scale-"))
    try:
        scaling = [turns_per_second(emulators, redis_server, logdir, n, args.turns_per_worker * n)
                   for n in (int(x) for x in args.workers.split(","))] if "scaling" in parts else []
        latency = [ingest(emulators, redis_server, logdir, backend, rate, args.seconds, args.pin)
                   for backend in ("thread", "celery") for rate in (80, 200)] if "ingest" in parts else []
        closed = [ingest(emulators, redis_server, logdir, backend, None, max(3, args.seconds // 2), args.pin)
                  for backend in ("thread", "celery")] if shutil.which("wrk") and "wrk" in parts else []
    finally:
        redis_server.stop()
        emulators.close()
    print(f"\n{os.cpu_count()} CPUs; answer {args.answer_latency} s, Twilio send {args.send_latency} s at the "
          f"emulators; web: gunicorn {WEB_WORKERS}x{WEB_THREADS}; workers: --pool threads --concurrency "
          f"{WORKER_THREADS}; {'pinned: web CPU 0, workers CPU 1; ' if args.pin else ''}logs in {logdir}\n")
    if scaling:
        base = scaling[0]["tps"]
        print("| Celery worker processes | turns | seconds | turns/s | vs 1 worker | worker CPU ms/turn | "
              "web CPU ms/webhook |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for row in scaling:
            print(f"| {row['workers']} | {row['turns']} | {row['seconds']:.1f} | {row['tps']:.1f} | "
                  f"{row['tps'] / base:.2f}x | {row['worker_cpu_ms']:.1f} | {row['web_cpu_ms']:.1f} |")
    if latency:
        print("\n| pipeline runs in | rate msg/s | p50 ms | p99 ms | non-200 | answered during the run | "
              "web processes' CPU (cores) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for row in latency:
            where = "web processes (thread)" if row["backend"] == "thread" else "2 Celery workers (celery)"
            print(f"| {where} | {row['rate']} | {row['p50']:.1f} | {row['p99']:.1f} | {row['errors']} | "
                  f"{row['answered']} of {row['n']} | {row['web_cpu']:.2f} |")
    if closed:
        print(f"\n| pipeline runs in | webhook req/s, wrk -t2 -c32 {max(3, args.seconds // 2)} s |")
        print("|---|---:|")
        for row in closed:
            print(f"| {row['backend']} | {row['rps']:.0f} |")


if __name__ == "__main__":
    main()
