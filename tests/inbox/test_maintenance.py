"""Hourly housekeeping (app/inbox/maintenance.py): expired handoffs closed, old voice files
and simulator uploads removed."""
from __future__ import annotations

from sqlalchemy import select

PATH = "/webhook/whatsapp"


def test_maintenance_closes_expired_handoffs_and_removes_old_media(make_app, tmp_path):
    import datetime as dt
    import os

    from app.db import utcnow
    from app.models import Handoff, User

    app = make_app(start_workers=False, media_retention_days=1)
    services = app.extensions["endrigo"]
    with services.db.session() as session:
        user = User(phone="+5511912345678")
        session.add(user)
        session.flush()
        session.add_all([
            Handoff(user_id=user.id, reason="old", expires_at=utcnow() - dt.timedelta(hours=1)),
            Handoff(user_id=user.id, reason="current", expires_at=utcnow() + dt.timedelta(hours=1)),
        ])
    old = services.storage.save(b"OggS" + b"\0" * 100, "audio/ogg", ".ogg", base_url="https://x")
    fresh = services.storage.save(b"OggS" + b"\0" * 100, "audio/ogg", ".ogg", base_url="https://x")
    old_path = services.storage.path_for(old.key)
    two_days_ago = old_path.stat().st_mtime - 2 * 86400
    os.utime(old_path, (two_days_ago, two_days_ago))
    services.inbox.maintenance()
    with services.db.session() as session:
        states = {h.reason: (h.status, h.closed_by) for h in session.scalars(select(Handoff))}
    assert states == {"old": ("closed", "expired"), "current": ("open", None)}
    assert not old_path.exists() and services.storage.path_for(fresh.key).exists()


def test_maintenance_removes_simulator_uploads_past_the_retention(make_app):
    import os

    from app.channels.simulator.inbound import uploads_dir

    app = make_app(start_workers=False, media_retention_days=1)
    services = app.extensions["endrigo"]
    folder = uploads_dir(services.settings)
    folder.mkdir(parents=True, exist_ok=True)
    old, fresh = folder / ("o" * 24 + ".ogg"), folder / ("f" * 24 + ".ogg")
    for path in (old, fresh):
        path.write_bytes(b"OggS" + b"\0" * 100)
    two_days_ago = old.stat().st_mtime - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    services.inbox.maintenance()
    assert not old.exists() and fresh.exists()
