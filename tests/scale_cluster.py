"""Real processes for the scale-out tests and bench/bench_scale.py: web instances and Celery workers
sharing one PostgreSQL and one Redis, against the provider emulators of the calling process.

Web instances are ``python main.py`` (tests) or gunicorn (benchmarks) on their own ports;
workers are ``celery -A app.worker worker``. Every process logs to a file in ``logdir``,
so a failing test can show what each one said.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from sqlalchemy import create_engine, func, select, text

from app.models import ANSWERED, TURN_ANSWERED, Message, Turn, User
from tests.conftest import TWILIO_NUMBER, sign, wait_for
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
METRICS_TOKEN = "scale-out-metrics-token-0123"


class Cluster:
    def __init__(self, database_url: str, broker_url: str, key_prefix: str, twilio, openai, logdir: Path,
                 **env_extra: str):
        self.database_url = database_url
        self.twilio, self.openai = twilio, openai
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": database_url,
            "QUEUE_BACKEND": "celery",
            "CELERY_BROKER_URL": broker_url,
            "CELERY_KEY_PREFIX": key_prefix,
            "CELERY_VISIBILITY_TIMEOUT_SECONDS": "10",
            "RECOVERY_INTERVAL_SECONDS": "1",
            "TWILIO_ACCOUNT_SID": twilio.account_sid,
            "TWILIO_AUTH_TOKEN": twilio.auth_token,
            "TWILIO_PHONE_NUMBER": TWILIO_NUMBER,
            "TWILIO_API_BASE_URL": twilio.base_url,
            "OPENAI_API_KEY": openai.api_key,
            "OPENAI_BASE_URL": openai.v1_url,
            "COALESCE_WINDOW_SECONDS": "0.3",
            "SECRET_KEY": "scale-out-test-secret-0123456789",
            "LOG_LEVEL": "INFO",
            "METRICS_TOKEN": METRICS_TOKEN,
        }
        self.env.update(env_extra)
        self.webs: list[tuple[subprocess.Popen, str]] = []
        self.workers: dict[str, subprocess.Popen] = {}
        self._engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
        self._sessions = threading.local()

    # ---- processes -----------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start_webs(self, count: int = 2, gunicorn: bool = False, **env_extra) -> None:
        started = []
        for i in range(count):
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            env = dict(self.env, PORT=str(port), PUBLIC_BASE_URL=base, **env_extra)
            if gunicorn:
                argv = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
                        "main:app"]
            else:
                argv = [sys.executable, "main.py"]
            started.append((self._spawn(f"web{len(self.webs) + i}", argv, env), base))
        for process, base in started:
            def ready(process=process, base=base):
                if process.poll() is not None:
                    raise AssertionError(f"web instance exited:\n{self.logs()}")
                try:
                    return requests.get(base + "/health", timeout=0.5).status_code == 200
                except (requests.ConnectionError, requests.Timeout):
                    return False
            wait_for(ready, timeout=60, interval=0.1)
        self.webs.extend(started)

    def start_worker(self, name: str, concurrency: int = 4, wait: bool = True, pool: str = "threads",
                     **env_extra) -> subprocess.Popen:
        argv = [sys.executable, "-m", "celery", "-A", "app.worker", "worker", "--pool", pool,
                "--concurrency", str(concurrency), "--without-mingle", "--without-gossip", "--loglevel", "INFO",
                "-n", f"{name}@%h"]
        process = self._spawn(name, argv, dict(self.env, **env_extra))
        self.workers[name] = process
        if wait:
            self.wait_worker_ready(name)
        return process

    def wait_worker_ready(self, name: str) -> None:
        path = self.logdir / f"{name}.log"

        def ready():
            if self.workers[name].poll() is not None:
                raise AssertionError(f"worker {name} exited:\n{self.logs()}")
            return path.exists() and re.search(r"@\S+ ready\.", path.read_text(errors="replace"))
        wait_for(ready, timeout=60, interval=0.1)

    def kill(self, name: str) -> None:
        """SIGKILL a worker (the whole process group: a prefork pool's children too)."""
        process = self.workers[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        processes = [p for p, _ in self.webs] + list(self.workers.values())
        for process in processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self._engine.dispose()

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}"
                         for path in sorted(self.logdir.glob("*.log")))

    # ---- traffic -------------------------------------------------------------------------
    def scrape(self, url: str) -> str:
        response = requests.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5)
        response.raise_for_status()
        return response.text

    def post(self, instance: int, form: dict, session: requests.Session | None = None) -> int:
        base = self.webs[instance % len(self.webs)][1]
        url = base + "/webhook/whatsapp"
        http = session or requests
        return http.post(url, data=form, headers={"X-Twilio-Signature": sign(url, form, self.twilio.auth_token)},
                         timeout=10).status_code

    # ---- the database, as the test sees it ----------------------------------------------------
    def scalar(self, query):
        with self._engine.connect() as conn:
            return conn.execute(query).scalar()

    def answered(self) -> int:
        return self.scalar(select(func.count()).select_from(Message).where(
            Message.direction == "in", Message.status == ANSWERED))

    def inbound(self) -> int:
        return self.scalar(select(func.count()).select_from(Message).where(Message.direction == "in"))

    def answered_turns(self) -> int:
        return self.scalar(select(func.count()).select_from(Turn).where(Turn.status == TURN_ANSWERED))

    def lease_owners(self) -> list[str]:
        with self._engine.connect() as conn:
            return [row[0] for row in conn.execute(select(User.lease_owner).where(User.lease_owner.is_not(None)))]

    def ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(text("SELECT 1"))
