"""Endrigo Digital's WhatsApp assistant: the Flask app factory.

``create_app(config=None)`` is the only place the app is assembled: settings, logging,
database (migrated at start-up), services, the inbox's executor and the blueprints.
``role="worker"`` builds the same app for a Celery worker (app/worker.py,
QUEUE_BACKEND=celery): its inbox runs the turns the web processes enqueue.
"""
from __future__ import annotations

import gc
import logging
import time

from flask import Flask

from app.config import VERSION as __version__  # noqa: F401 - the package's version

log = logging.getLogger(__name__)


def create_app(config=None, role: str = "web") -> Flask:
    """Build the app. ``config``: a Settings, a dict of overrides (tests: no environment is read), or None (env)."""
    from app.config import Settings, load_or_create_secret
    from app.db import Database
    from app.inbox.queue import make_inbox
    from app.logging import configure_logging
    from app.ops.model_watch import start_model_watch
    from app.ops.startup import log_startup_report
    from app.redaction import register_secret
    from app.services import Services

    if config is None:
        settings = Settings.from_env()
    elif isinstance(config, dict):
        settings = Settings.from_env(env={}, **config)
    else:
        settings = config

    configure_logging(settings.log_level)
    for secret in (settings.twilio_auth_token, settings.openai_api_key, settings.elevenlabs_api_key,
                   settings.dashboard_password, settings.secret_key,
                   *(secret for _, secret in settings.twilio_webhook_shared_keys)):
        register_secret(secret)
    log_startup_report(settings)

    app = Flask(__name__, template_folder="../templates", static_folder="../static")
    app.config["SECRET_KEY"] = settings.secret_key or load_or_create_secret(settings.instance_dir)
    register_secret(app.config["SECRET_KEY"])
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_request_bytes
    # Twilio calls us through a proxy (ngrok, a load balancer): rebuild the URL it called,
    # but only from the proxies configured (app/web/proxies.py): a client must not choose
    # its own address or public URL.
    from app.web.proxies import TrustedProxyFix

    app.wsgi_app = TrustedProxyFix(app.wsgi_app, settings.trusted_proxy_count, settings.trusted_proxies)

    db = Database(settings.database_url)
    db.migrate()
    from app.operators import bootstrap_admin

    # DASHBOARD_PASSWORD is the bootstrap operator "admin" (docs/OPERATORS.md).
    bootstrap_admin(db, settings)
    services = Services(settings=settings, db=db, started_at=time.time())
    services.inbox = make_inbox(services, role)  # QUEUE_BACKEND: thread pool or Celery
    app.extensions["endrigo"] = services

    from app.web import register_blueprints

    register_blueprints(app, settings)
    from app.operators.cli import register_cli

    register_cli(app)
    start_model_watch(app, services)  # may refuse to boot: OpenAI says a model every turn needs is gone
    from app.inbox.cli import register_cli as register_users_cli

    register_users_cli(app)

    if settings.start_workers:
        services.inbox.start()
    # Everything built so far lives as long as the process: keep it out of the collector's
    # full passes (they showed up as ~90 ms tails on /stats; bench_stats).
    gc.freeze()
    log.info("app ready (%s mode, database %s)", "offline" if settings.offline else "online",
             db.engine.dialect.name)
    return app
