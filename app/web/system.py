"""System endpoints: GET /health (public, no personal data, no secrets)."""
from __future__ import annotations

import time

from flask import Blueprint, jsonify

from app.config import VERSION
from app.ops.model_watch import current_deprecations
from app.services import current_services

bp = Blueprint("system", __name__)


@bp.get("/health")
def health():
    services = current_services()
    settings = services.settings
    database_ok = services.db.ping()
    depth = None
    if database_ok:
        try:
            depth = services.inbox.depth()
        except Exception:  # noqa: BLE001 - the database answered the ping; report what we can
            depth = None
    body = {
        "status": "ok" if database_ok else "error",
        "mode": "offline" if settings.offline else "online",
        "version": VERSION,
        "uptime_seconds": round(time.time() - services.started_at, 1),
        "database": {"reachable": database_ok, "backend": services.db.engine.dialect.name},
        "inbox_depth": depth,
        "providers": {**settings.providers_configured(), "storage": settings.media_backend},
        "knowledge": _knowledge_status(services),
        # Configured OpenAI models with an announced shutdown (model names and dates only).
        "deprecations": current_deprecations(),
    }
    return jsonify(body), 200 if database_ok else 503


def _knowledge_status(services) -> dict:
    try:
        status = services.knowledge.status()
    except Exception as exc:  # noqa: BLE001 - health must answer even if the index is broken
        return {"error": type(exc).__name__}
    return {key: status.get(key) for key in ("mode", "chunks", "model", "loaded_at")}
