"""The Celery worker of QUEUE_BACKEND=celery: ``celery -A app.worker worker``.

It runs the turns that the web processes enqueue (app/inbox/queue.py): the task
``endrigo.drain`` calls ``inbox.drain(user_id)`` inside the app made by
``create_app(role="worker")`` (same settings, database, services and pipeline as the web;
no blueprint is served, and the web's thread pool is not started). Each worker process
also runs one housekeeping thread: it renews the leases the process holds, and the
recovery sweep and the hourly maintenance run in whichever worker takes the round's Redis
lock, so no beat process is needed and a dead worker's rounds are taken by another.

    QUEUE_BACKEND=celery CELERY_BROKER_URL=redis://127.0.0.1:6379/0 DATABASE_URL=postgresql://... \\
        celery -A app.worker worker --loglevel INFO

Defaults (app/inbox/queue.py): the threads pool with WORKERS threads, one task at a time
per thread, acknowledged after it ran; ``--concurrency`` overrides WORKERS. For child
processes use ``--pool processes`` (Celery's prefork pool under its other name: Celery
takes an explicit ``--pool prefork`` for its own default and keeps the configured
threads pool); the app is then built in each child, after the fork, and a child killed
mid-task has its task put back on the queue by the parent. Environment and ``.env`` as
for the web (main.py).
"""
from __future__ import annotations

import logging
import os
import threading

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in main.py: before numpy is imported
os.environ.setdefault("OMP_NUM_THREADS", "1")

from celery import signals  # noqa: E402
from dotenv import load_dotenv  # noqa: E402

load_dotenv()

from app.config import ConfigError, Settings  # noqa: E402
from app.inbox.queue import CALL_TASK, DRAIN_TASK, make_celery  # noqa: E402

log = logging.getLogger("app.worker")

settings = Settings.from_env()
if settings.queue_backend != "celery":
    raise ConfigError("app.worker runs turns for QUEUE_BACKEND=celery; set QUEUE_BACKEND=celery and "
                      "CELERY_BROKER_URL (the web processes must use the same)")

celery = make_celery(settings)

_flask_app = None
_build_lock = threading.Lock()


def flask_app():
    """This process's app (built once, on first need: after the fork under prefork)."""
    global _flask_app
    with _build_lock:
        if _flask_app is None:
            from app import create_app

            _flask_app = create_app(settings, role="worker")
        return _flask_app


def _inbox():
    return flask_app().extensions["endrigo"].inbox


@celery.task(name=DRAIN_TASK, ignore_result=True)
def drain(user_id) -> None:
    """Process one user's pending work (any number of deliveries of this task are safe)."""
    if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id < 1:
        log.warning("ignored a drain task with a bad user id")
        return
    app = flask_app()
    with app.app_context():
        _inbox().run_drain(user_id)


@celery.task(name=CALL_TASK, ignore_result=True)
def call(name, with_services, args) -> None:
    """A short background call handed over by a web process (only app/inbox/queue.py's ALLOWED_CALLS)."""
    if not isinstance(name, str) or not isinstance(args, list):
        log.warning("ignored a malformed call task")
        return
    app = flask_app()
    with app.app_context():
        _inbox().call(name, bool(with_services), args)


def _forks_children(worker) -> bool:
    pool = worker.pool_cls
    label = pool if isinstance(pool, str) else f"{getattr(pool, '__module__', '')}.{getattr(pool, '__name__', '')}"
    return "prefork" in label.lower() or "processes" in label.lower()


@signals.worker_init.connect
def _build_in_main_process(sender=None, **_kwargs) -> None:
    # threads/solo pools run tasks in this process: build now, so start-up warnings and
    # the housekeeping thread come at once. prefork: never before the fork.
    forks = sender is not None and _forks_children(sender)
    if sender is not None and not forks:
        _start()
    if settings.worker_metrics_address:
        if forks and not settings.prometheus_multiproc_dir:
            log.warning("WORKER_METRICS_ADDRESS with a prefork pool needs PROMETHEUS_MULTIPROC_DIR: "
                        "without it the children's counts are not seen")
        from app.ops import metrics

        metrics.serve(settings, metrics.registry_for(settings))


@signals.worker_process_init.connect
def _build_in_child(**_kwargs) -> None:
    _start()


def _start() -> None:
    flask_app()  # create_app starts the inbox (housekeeping thread) unless INBOX_ENABLED=false
    if not settings.start_workers:
        log.warning("INBOX_ENABLED=false: this worker takes no turns and runs no recovery sweep")


@signals.worker_shutdown.connect
@signals.worker_process_shutdown.connect
def _stop(**_kwargs) -> None:
    if _flask_app is not None:
        _flask_app.extensions["endrigo"].inbox.shutdown(wait=False)
