"""HTTP blueprints: webhook (Twilio), system (health), media (our audio), dashboard (operators)."""
from __future__ import annotations


def register_blueprints(app) -> None:
    from app.web import dashboard, media, system, webhook

    for module in (webhook, system, media, dashboard):
        app.register_blueprint(module.bp)
