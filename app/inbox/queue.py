"""QUEUE_BACKEND=celery: the inbox's public seams on a Celery queue in Redis.

``CeleryInbox`` is the ``Inbox`` with another transport between ``notify`` and ``drain``:

* in a web process (``role="web"``) ``notify(user_id)`` only enqueues one Celery task per
  user (``endrigo.drain``), deduplicated by a short Redis key ``SET NX`` per user; no
  executor, no recovery loop run there;
* in a worker process (``role="worker"``, see app/worker.py) that task calls
  ``inbox.drain(user_id)``. The database lease still decides who processes a user, so any
  number of workers on any number of machines keep each user's messages in order; a
  second delivery of the same task (redelivery after a crash, a sweep) finds the lease
  taken or nothing to do. One housekeeping thread per worker process renews the leases it
  holds; the recovery sweep and the hourly maintenance run in ONE worker at a time,
  whichever takes the Redis lock of the round.

Redis down: ``notify`` logs once and returns (the message is already committed); the
recovery sweep enqueues every user with work once Redis answers again; ``queue_status``
says ``degraded`` meanwhile (GET /health).

Tasks are acknowledged late (after they ran), and rejected back to the queue when the
process running them dies (``task_reject_on_worker_lost``); a task of a worker killed as
a whole comes back after CELERY_VISIBILITY_TIMEOUT_SECONDS. The outbox (send-once per
reply part) is what makes running a turn's tail twice harmless.
"""
from __future__ import annotations

import importlib
import logging
import threading
import time

from app.config import shared_state_warnings
from app.inbox import Inbox
from app.ops import metrics
from app.redaction import register_secret

log = logging.getLogger(__name__)

DRAIN_TASK = "endrigo.drain"
CALL_TASK = "endrigo.call"
QUEUE_NAME = "endrigo.turns"
# A user's "a task is queued" key (its value: when) lives at least this long. A notify that
# finds it older than two recovery intervals enqueues again: the task may have been reserved
# by a worker that died before starting it. Under a long backlog a user may so get a second
# task: harmless.
QUEUED_KEY_SECONDS = 60
# After Redis refused us, webhooks do not try it again for this long (no connect per request).
RETRY_REDIS_AFTER_SECONDS = 1.0
# Background calls a web process may hand to the workers (``Inbox.submit``); nothing else
# named in a task message is ever imported or called.
ALLOWED_CALLS = frozenset({"app.channels.outbox:send_text_fallback"})


def make_inbox(services, role: str = "web") -> Inbox:
    """The inbox of QUEUE_BACKEND: the thread pool (default) or Celery.

    Also what every scale-out start needs before the inbox logs anything: the broker's
    password and the metrics token are masked in logs, and the shared-state warnings
    (app/config.py) are logged.
    """
    settings = services.settings
    register_secret(settings.metrics_token)
    register_secret(_url_password(settings.celery_broker_url))
    for warning in shared_state_warnings(settings):
        log.warning(warning)
    if settings.queue_backend == "celery":
        return CeleryInbox(services, role)
    if role != "web":
        raise ValueError("a Celery worker needs QUEUE_BACKEND=celery")
    return Inbox(services)


def _url_password(url: str | None) -> str | None:
    """The password in a URL such as redis://:secret@host/0."""
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password if url else None
    except ValueError:
        return None


def make_celery(settings):
    """The Celery app of this deployment (the same configuration for web and workers)."""
    from celery import Celery

    celery = Celery("endrigo", broker=settings.celery_broker_url, set_as_current=False)
    celery.conf.update(
        task_default_queue=QUEUE_NAME,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # Acknowledged after the task ran; a task whose process died goes back to the queue.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One task at a time per worker thread: a busy worker does not hoard others' turns.
        worker_prefetch_multiplier=1,
        # Turns wait on providers (network): threads, WORKERS of them per worker process.
        worker_pool="threads",
        worker_concurrency=settings.workers,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits for Redis however long it is away
        # The webhook never waits for Redis: one fast attempt, failure handled by the sweep.
        task_publish_retry=False,
        broker_transport_options={
            "visibility_timeout": settings.celery_visibility_timeout_seconds,
            "global_keyprefix": settings.celery_key_prefix,
            "socket_connect_timeout": 1.0,
            "socket_timeout": 5.0,
        },
    )
    return celery


def make_redis(settings):
    import redis

    return redis.Redis.from_url(settings.celery_broker_url, socket_connect_timeout=1.0, socket_timeout=2.0,
                                health_check_interval=30)


class CeleryInbox(Inbox):
    """The inbox with turns run by Celery workers (see the module docstring)."""

    def __init__(self, services, role: str = "web"):
        super().__init__(services)
        if role not in ("web", "worker"):
            raise ValueError(f"unknown role {role!r}")
        self.role = role
        self.prefix = self.settings.celery_key_prefix
        self.celery = make_celery(self.settings)
        self.redis = make_redis(self.settings)
        self._started = False
        self._queue_failing_since: float | None = None
        self._retry_redis_at = 0.0
        self._failure_lock = threading.Lock()
        self._draining: set[int] = set()
        self._again: set[int] = set()
        self._draining_lock = threading.Lock()
        self._housekeeping: threading.Thread | None = None
        # A user's queued task older than this is enqueued again by the next notify (the sweep's).
        self._stale_seconds = max(2 * self.settings.recovery_interval_seconds, 5.0)
        self._key_seconds = int(max(QUEUED_KEY_SECONDS, 4 * self._stale_seconds))

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Web: enqueue on notify. Worker: also the housekeeping thread (leases, sweep, maintenance)."""
        if self._started:
            return
        self._started = True
        if self.role == "worker":
            self._housekeeping = threading.Thread(target=self._housekeeping_loop, name="inbox-housekeeping",
                                                  daemon=True)
            self._housekeeping.start()

    def shutdown(self, wait: bool = True) -> None:
        self._stop.set()
        self._started = False
        if wait and self._housekeeping is not None and self._housekeeping is not threading.current_thread():
            self._housekeeping.join(timeout=5)
        try:
            self.redis.close()
        except Exception:  # noqa: BLE001 - closing a dead connection
            pass

    # ---- enqueueing --------------------------------------------------------------------
    def queued_key(self, user_id: int) -> str:
        return f"{self.prefix}queued:{user_id}"

    def notify(self, user_id: int) -> None:
        """Enqueue one drain task for the user unless one is already waiting; never raises."""
        if not self._started:
            return
        if self._redis_resting():
            metrics.enqueue_failed()
            return
        key = self.queued_key(user_id)
        now = time.time()
        try:
            if not self.redis.set(key, f"{now:.3f}", nx=True, ex=self._key_seconds):
                queued_at = self.redis.get(key)
                if queued_at is None or now - float(queued_at) < self._stale_seconds:
                    self._queue_ok()
                    return  # a task for this user is queued and has not started: it will see this message
                # Queued long ago: taken by a worker that died before starting it, or a long
                # backlog. Another task is harmless (the lease), a lost one would strand the user.
                self.redis.set(key, f"{now:.3f}", ex=self._key_seconds)
            try:
                self.celery.send_task(DRAIN_TASK, args=[int(user_id)])
            except BaseException:
                self.redis.delete(key)  # best effort: the next notify must not be swallowed
                raise
        except Exception as exc:  # noqa: BLE001 - the message is stored; the sweep enqueues it later
            metrics.enqueue_failed()
            self._queue_failed(exc)
            return
        self._queue_ok()

    def submit(self, fn, *args) -> None:
        """Hand a short background call to the workers (e.g. a voice note's text fallback)."""
        name = f"{fn.__module__}:{fn.__qualname__}"
        with_services = bool(args) and args[0] is self.services
        rest = list(args[1:] if with_services else args)
        if self.role == "web" and self._started and name in ALLOWED_CALLS and not self._redis_resting():
            try:
                self.celery.send_task(CALL_TASK, args=[name, with_services, rest])
                self._queue_ok()
                return
            except Exception as exc:  # noqa: BLE001 - run it here rather than lose it
                self._queue_failed(exc)
        threading.Thread(target=self._call_logged, args=(fn, args), name="inbox-call", daemon=True).start()

    @staticmethod
    def _call_logged(fn, args) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - a background call's failure is logged
            log.exception("background call %s failed", getattr(fn, "__qualname__", fn))

    def _redis_resting(self) -> bool:
        return self._queue_failing_since is not None and time.monotonic() < self._retry_redis_at

    def _queue_failed(self, exc: Exception) -> None:
        with self._failure_lock:
            first = self._queue_failing_since is None
            if first:
                self._queue_failing_since = time.time()
            self._retry_redis_at = time.monotonic() + RETRY_REDIS_AFTER_SECONDS
        if first:
            log.warning("the queue (Redis) is unavailable (%s): messages are stored and will be enqueued by the "
                        "recovery sweep once it answers", type(exc).__name__)

    def _queue_ok(self) -> None:
        if self._queue_failing_since is None:
            return
        with self._failure_lock:
            since, self._queue_failing_since = self._queue_failing_since, None
        if since is not None:
            log.warning("the queue (Redis) answers again after %.0f s", time.time() - since)

    def queue_status(self) -> dict:
        """For /health: reachable or not, and how many drain tasks wait (no personal data)."""
        try:
            waiting = int(self.redis.llen(self.prefix + QUEUE_NAME))
        except Exception as exc:  # noqa: BLE001 - health reports, never raises
            self._queue_failed(exc)
            return {"backend": "celery", "state": "degraded", "reachable": False, "waiting_tasks": None}
        self._queue_ok()
        return {"backend": "celery", "state": "ok", "reachable": True, "waiting_tasks": waiting}

    # ---- worker side ---------------------------------------------------------------------
    def run_drain(self, user_id: int) -> None:
        """The drain task's body: process the user's work in this process, once at a time.

        The worker's threads share one lease owner, so two tasks of one user in one process
        would both pass the lease: the second only asks the first to look once more.
        """
        self.redis_delete_quietly(self.queued_key(user_id))  # from now on a new message enqueues again
        if not self._started:
            return  # INBOX_ENABLED=false: the sweep of a running worker enqueues this user again
        with self._draining_lock:
            if user_id in self._draining:
                self._again.add(user_id)
                return
            self._draining.add(user_id)
        try:
            while True:
                try:
                    self.drain(user_id)
                except Exception:  # noqa: BLE001 - the recovery sweep will try this user again
                    log.exception("processing user %s failed", user_id)
                with self._draining_lock:
                    if user_id in self._again and not self._stop.is_set():
                        self._again.discard(user_id)
                        continue
                    self._again.discard(user_id)
                    return
        finally:
            with self._draining_lock:
                self._draining.discard(user_id)

    def redis_delete_quietly(self, key: str) -> None:
        try:
            self.redis.delete(key)
        except Exception:  # noqa: BLE001 - the key expires by itself
            pass

    def call(self, name: str, with_services: bool, args: list) -> None:
        """The call task's body: only names in ALLOWED_CALLS."""
        if name not in ALLOWED_CALLS:
            log.warning("refused a background call of %r (not allowed)", name[:80])
            return
        module, _, attribute = name.partition(":")
        fn = getattr(importlib.import_module(module), attribute)
        fn(*([self.services] if with_services else []), *args)

    def take_round(self, name: str, seconds: float) -> bool:
        """Whether this process runs the round ``name`` (one per ``seconds`` in the whole deployment)."""
        return bool(self.redis.set(f"{self.prefix}round:{name}", self.owner, nx=True, px=max(1, int(seconds * 1000))))

    def _housekeeping_loop(self) -> None:
        interval = self.settings.recovery_interval_seconds
        while not self._stop.is_set():
            try:
                self.leases.renew_held()
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.exception("renewing leases failed")
            try:
                # A little shorter than the interval: the next round's taker is not locked out.
                if self.take_round("recovery", interval * 0.9):
                    self.recover()
                    if self.take_round("maintenance", 3600):
                        self.maintenance()
                self._queue_ok()
            except Exception as exc:  # noqa: BLE001 - Redis or the database away: next round
                if _is_redis_error(exc):
                    self._queue_failed(exc)
                else:
                    log.exception("inbox recovery sweep failed")
            self._stop.wait(interval)


def _is_redis_error(exc: BaseException) -> bool:
    import redis

    return isinstance(exc, redis.RedisError)
