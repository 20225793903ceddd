"""The operators' dashboard, a blueprint as a package.

``blueprint.py`` creates ``bp`` with its login guard and template helpers; each view module
registers its routes on it when imported here: ``views`` (stats, transcript, leads,
handoffs), ``inbox`` (the live conversation list, takeover, replies, close), ``operators``
(admins), ``account`` (one's own password), ``simulator`` (the chat), ``system`` (status
page and system JSON), ``trust`` (opt-outs, limits, held replies, LGPD); login and logout come from app/web/auth.py. ``stats`` computes the
figures the stats page shows; ``formatting`` adds the ``whatsapp`` filter (WhatsApp's *bold*
and friends, escaped first).
"""
from __future__ import annotations

from app.web.dashboard import (  # noqa: F401 - they register their routes
    account,
    formatting,
    inbox,
    operators,
    simulator,
    system,
    trust,
    views,
)
from app.web.dashboard.blueprint import bp

__all__ = ["bp"]
