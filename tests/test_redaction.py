"""Log redaction (app/redaction.py): secrets and full phone numbers never reach a log line."""
from __future__ import annotations

from app.redaction import mask_phone, redact, register_secret


def test_logs_never_show_secrets_or_full_phone_numbers():
    register_secret("my-very-secret-token")
    line = redact("auth my-very-secret-token from whatsapp:+5511987654321 key sk-proj-abcdefghijklmnop")
    assert "my-very-secret-token" not in line and "sk-proj-abcdefghijklmnop" not in line
    assert "+5511987654321" not in line and "4321" in line
    assert mask_phone("+5511987654321") == "+55 11 9****-4321"
