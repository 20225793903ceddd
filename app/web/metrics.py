"""GET /metrics: Prometheus text format (app/ops/metrics.py says what is in it).

Answered only to ``Authorization: Bearer <METRICS_TOKEN>``; anything else, and every
request while METRICS_TOKEN is unset, gets 401. The figures hold no personal data, but
queue depths and error rates are still nobody else's business.
"""
from __future__ import annotations

import threading

from flask import Blueprint, Response, current_app, request

from app.ops import metrics
from app.services import current_services

bp = Blueprint("metrics", __name__)

_registry_lock = threading.Lock()


@bp.get("/metrics")
def scrape():
    services = current_services()
    token = services.settings.metrics_token
    if not metrics.authorized(request.headers.get("Authorization"), token):
        reason = "a bearer token is required" if token else "metrics are off: set METRICS_TOKEN to enable them"
        return Response(reason + "\n", status=401, mimetype="text/plain",
                        headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    with _registry_lock:
        registry = current_app.extensions.get("endrigo_metrics")
        if registry is None:
            registry = current_app.extensions["endrigo_metrics"] = metrics.registry_for(services.settings, services)
    body, content_type = metrics.exposition(registry, request.headers.get("Accept"))
    return Response(body, status=200, content_type=content_type)
