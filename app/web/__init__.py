"""HTTP blueprints: webhook (Twilio), system (health), media (our audio), dashboard (operators)."""
from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

_BLUEPRINT_MODULES = ("app.web.webhook", "app.web.system", "app.web.media", "app.web.dashboard")


def register_blueprints(app) -> None:
    for name in _BLUEPRINT_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a part not built yet
        app.register_blueprint(module.bp)
