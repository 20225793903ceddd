"""gunicorn settings: gthread workers; each worker process runs its own inbox executor.

gunicorn reads this file before it imports main.py, so the operator's .env is loaded here
too (``load_env_file``: the real environment wins over the file).

Do not enable preload_app: the inbox's threads are started in create_app and would not
survive the fork into the workers.
"""
import os
import sys
from pathlib import Path

# gunicorn's console script does not put the project on sys.path; app.config lives here.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from app.config import listen_address, load_env_file  # noqa: E402

load_env_file()

# One BLAS thread per process: retrieval's matrix product is small, and on 2 cores shared by
# several workers multi-threaded BLAS made it 5-20x slower under load (bench_retrieval).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _env(name: str, default: str) -> str:
    # A .env copied from .env.example carries empty values: they mean "the default".
    return os.environ.get(name, "").strip() or default


bind = listen_address()
workers = int(_env("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(_env("GUNICORN_THREADS", "8"))
# Twilio gives up after 15 s; a request that takes longer than this is a bug, not load.
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = "-" if _env("ACCESS_LOG", "false").lower() in ("1", "true", "yes", "on") else None
errorlog = "-"
preload_app = False
