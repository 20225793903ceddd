"""The dashboard's system JSON (app/web/dashboard/system.py): the media storage's status."""
from __future__ import annotations

from tests.web.dashboard.test_dashboard import PASSWORD, login


def test_advanced_status_reports_the_media_storage_without_secrets(make_app):
    app = make_app(start_workers=False, dashboard_password=PASSWORD, media_retention_days=3)
    services = app.extensions["endrigo"]
    services.storage.save(b"OggS" + b"\0" * 100, "audio/ogg", ".ogg", base_url="https://x")
    client = app.test_client()
    login(client)
    storage = client.get("/system/advanced-status").get_json()["storage"]
    assert (storage["backend"], storage["files"], storage["bytes"]) == ("local", 1, 104)
    assert storage["retention_days"] == 3 and storage["secret_source"] == "SECRET_KEY"
    assert "test-secret-key-123456" not in str(storage)
