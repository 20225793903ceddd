"""gunicorn settings: gthread workers; each worker process runs its own inbox executor.

Do not enable preload_app: the inbox's threads are started in create_app and would not
survive the fork into the workers.
"""
import os

# One BLAS thread per process: retrieval's matrix product is small, and on 2 cores shared by
# several workers multi-threaded BLAS made it 5-20x slower under load (bench_retrieval).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

bind = os.environ.get("BIND", f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# Twilio gives up after 15 s; a request that takes longer than this is a bug, not load.
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = "-" if os.environ.get("ACCESS_LOG", "").lower() in ("1", "true") else None
errorlog = "-"
preload_app = False
