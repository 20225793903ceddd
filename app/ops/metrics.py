"""Prometheus metrics (prometheus-client): what the processes count, and what the database says at scrape time.

Counted where they happen (per process; under gunicorn or Celery with several processes,
set PROMETHEUS_MULTIPROC_DIR so that every process writes its counts there and a scrape
adds them up):

* ``endrigo_webhooks_received_total{outcome}`` — inbound webhooks: stored, duplicate,
  bad_request, bad_signature;
* ``endrigo_stage_duration_seconds{stage}`` — each pipeline stage that did work;
  ``endrigo_pipeline_duration_seconds`` — one run of the stages;
* ``endrigo_provider_errors_total{provider,kind}`` — provider calls that failed, by the
  gateway's error kind (``unspecified`` where the caller did not say);
* ``endrigo_queue_enqueue_failures_total`` — notify() calls Redis refused (QUEUE_BACKEND=celery).

Read from the database at each scrape (the same for every instance; nothing to add up):

* ``endrigo_turns_total{outcome}`` — turns that ended: answered (by the bot, or kept for
  the team while a handoff is open), team (an operator's reply), failed (the apology went out);
* ``endrigo_turns_abandoned`` — turns being processed whose lease is free or expired:
  their processor died and the recovery sweep has not taken them up yet;
* ``endrigo_turns_waiting_retry``, ``endrigo_queue_depth`` (inbound messages not yet
  answered), ``endrigo_handoffs_open``, ``endrigo_messages_waiting_for_human`` (inbound
  messages the bot left to the team, not answered by it yet);
* ``endrigo_queue_tasks_waiting`` — drain tasks waiting in Redis (QUEUE_BACKEND=celery).

Labels are fixed vocabularies (no phone number, no user id, no message text).
"""
from __future__ import annotations

import hmac
import logging
import re
import socketserver
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)

WEBHOOK_OUTCOMES = ("stored", "duplicate", "bad_request", "bad_signature")

WEBHOOKS = Counter("endrigo_webhooks_received", "Inbound webhooks by outcome", ["outcome"])
STAGE_SECONDS = Histogram(
    "endrigo_stage_duration_seconds", "Duration of each pipeline stage that did work", ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
)
PIPELINE_SECONDS = Histogram(
    "endrigo_pipeline_duration_seconds", "Duration of one run of the pipeline's stages",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 6, 8, 12, 16, 32, 64),
)
PROVIDER_ERRORS = Counter("endrigo_provider_errors", "Failed provider calls by provider and error kind",
                          ["provider", "kind"])
ENQUEUE_FAILURES = Counter("endrigo_queue_enqueue_failures", "Enqueues the queue (Redis) refused")

_LABEL = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def label(value: str | None, default: str = "unspecified") -> str:
    """A label value from our own vocabulary; anything else becomes ``other`` (no free text in labels)."""
    if not value:
        return default
    value = value.strip().lower()
    return value if _LABEL.match(value) else "other"


def webhook(outcome: str) -> None:
    WEBHOOKS.labels(outcome=outcome if outcome in WEBHOOK_OUTCOMES else "other").inc()


def stage_finished(stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(stage=label(stage)).observe(seconds)


def pipeline_finished(seconds: float) -> None:
    PIPELINE_SECONDS.observe(seconds)


def provider_error(provider: str, kind: str | None) -> None:
    PROVIDER_ERRORS.labels(provider=label(provider), kind=label(kind)).inc()


def enqueue_failed() -> None:
    ENQUEUE_FAILURES.inc()


class DatabaseCollector:
    """The gauges (and the turn totals) read from the database at each scrape."""

    def __init__(self, services):
        self.services = services

    def collect(self):
        up = GaugeMetricFamily("endrigo_database_up", "Whether the scrape could read the database")
        try:
            figures = database_figures(self.services.db)
        except Exception:  # noqa: BLE001 - a scrape reports the database as down, never fails
            log.warning("metrics: the database did not answer", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        turns = CounterMetricFamily("endrigo_turns", "Turns that ended, by outcome", labels=["outcome"])
        for outcome in ("answered", "team", "failed"):
            turns.add_metric([outcome], figures["turns"].get(outcome, 0))
        yield turns
        for name, help_text in (
            ("turns_abandoned", "Turns in processing whose processor died (lease free or expired)"),
            ("turns_waiting_retry", "Turns waiting for a retry"),
            ("queue_depth", "Inbound messages not yet answered"),
            ("handoffs_open", "Open human handoffs"),
            ("messages_waiting_for_human", "Inbound messages left to the team and not answered yet"),
        ):
            gauge = GaugeMetricFamily(f"endrigo_{name}", help_text)
            gauge.add_metric([], figures[name])
            yield gauge
        status = getattr(self.services.inbox, "queue_status", None)
        if status is not None:
            waiting = status().get("waiting_tasks")
            gauge = GaugeMetricFamily("endrigo_queue_tasks_waiting", "Drain tasks waiting in Redis (celery)")
            if waiting is not None:
                gauge.add_metric([], waiting)
            yield gauge


def database_figures(db) -> dict:
    """One scrape's worth of database figures (a handful of indexed counts)."""
    from sqlalchemy import func, select

    from app.db import utcnow
    from app.models import (
        PROCESSING,
        RECEIVED,
        TURN_ANSWERED,
        TURN_FAILED,
        TURN_PROCESSING,
        TURN_TEAM,
        TURN_WAITING_RETRY,
        WAITING_HUMAN,
        Handoff,
        Message,
        Turn,
        User,
    )

    now = utcnow()
    count = select(func.count())
    with db.session() as session:
        by_status = dict(session.execute(
            select(Turn.status, func.count()).where(Turn.status.in_((TURN_ANSWERED, TURN_TEAM, TURN_FAILED)))
            .group_by(Turn.status)).all())
        abandoned = session.scalar(count.select_from(Turn).join(User, User.id == Turn.user_id).where(
            Turn.status == TURN_PROCESSING,
            (User.lease_expires_at.is_(None)) | (User.lease_expires_at < now))) or 0
        waiting_retry = session.scalar(count.select_from(Turn).where(Turn.status == TURN_WAITING_RETRY)) or 0
        depth = session.scalar(count.select_from(Message).where(
            Message.direction == "in", Message.status.in_((RECEIVED, PROCESSING)))) or 0
        handoffs = session.scalar(count.select_from(Handoff).where(Handoff.is_open(now))) or 0
        waiting_human = session.scalar(count.select_from(Message).where(
            Message.direction == "in", Message.status == WAITING_HUMAN)) or 0
    return {
        "turns": {"answered": by_status.get(TURN_ANSWERED, 0), "team": by_status.get(TURN_TEAM, 0),
                  "failed": by_status.get(TURN_FAILED, 0)},
        "turns_abandoned": abandoned, "turns_waiting_retry": waiting_retry, "queue_depth": depth,
        "handoffs_open": handoffs, "messages_waiting_for_human": waiting_human,
    }


def registry_for(settings, services=None) -> CollectorRegistry:
    """What a scrape shows: this process's counts (all processes' in multiprocess mode), and the
    database's figures when ``services`` is given (web instances; a worker reports its counts only)."""
    registry = CollectorRegistry()
    if settings.prometheus_multiproc_dir:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=settings.prometheus_multiproc_dir)
    else:
        for collector in (WEBHOOKS, STAGE_SECONDS, PIPELINE_SECONDS, PROVIDER_ERRORS, ENQUEUE_FAILURES):
            registry.register(collector)
    if services is not None:
        registry.register(DatabaseCollector(services))
    return registry


def serve(settings, registry: CollectorRegistry) -> threading.Thread:
    """A Celery worker's own GET /metrics on WORKER_METRICS_ADDRESS (bearer METRICS_TOKEN), in a daemon thread."""
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *_args):  # scrapes are not worth a log line each
            pass

    class Threaded(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    def application(wsgi_env, start_response):
        if wsgi_env.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        if not authorized(wsgi_env.get("HTTP_AUTHORIZATION"), settings.metrics_token):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                ("WWW-Authenticate", 'Bearer realm="metrics"')])
            return [b"a bearer token is required\n"]
        body, content_type = exposition(registry, wsgi_env.get("HTTP_ACCEPT"))
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    host, _, port = settings.worker_metrics_address.rpartition(":")
    server = make_server(host, int(port), application, server_class=Threaded, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True)
    thread.start()
    log.info("worker metrics on http://%s:%s/metrics", host, port)
    return thread


def exposition(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """The scrape's body and content type, in the format the scraper's Accept header asks for."""
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def authorized(header: str | None, token: str | None) -> bool:
    """``Authorization: Bearer <METRICS_TOKEN>``, compared in constant time."""
    if not token or not header:
        return False
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
