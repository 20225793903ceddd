"""HTTP blueprints: webhook (Twilio), system (health), media (our audio), dashboard (operators),
api (the operators' JSON API under /api/v1).

``register_blueprints`` also sets up the app-wide browser security (app/web/security.py)
before any blueprint, so no blueprint owns what applies to all of them.
"""
from __future__ import annotations


def register_blueprints(app, settings) -> None:
    from app.web import api, dashboard, media, system, webhook
    from app.web.security import init_security

    init_security(app, settings)
    for module in (webhook, system, media, dashboard, api):
        app.register_blueprint(module.bp)
    api.register_error_handlers(app)
