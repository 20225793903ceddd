"""Masking of secrets and personal data before anything is logged or shown.

Phone numbers are personal data: logs and the dashboard show them masked
(``+55 11 9****-4321``). Secrets (API keys, auth tokens) never appear at all: known
secret values are registered at start-up and every log line passes through ``redact``.
"""
from __future__ import annotations

import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()

# Shapes of provider secrets, masked even when we were not told the value.
_SECRET_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-*]{8,}"),  # OpenAI keys (also the masked form in its errors)
    re.compile(r"(?i)(xi-api-key|authorization|auth_token|api_key|password)([\"']?\s*[:=]\s*[\"']?)((?!\[secret\])[^\s\"',}]+)"),
    re.compile(r"(?i)\b(Basic|Bearer) [A-Za-z0-9+/=._\-]{8,}"),
]
# E.164-ish numbers (optionally after "whatsapp:"); 10-15 digits.
_PHONE = re.compile(r"(?<![\w/])\+?(\d{2})(\d{2})(\d{4,7})(\d{4})(?!\d)")


def register_secret(value: str | None) -> None:
    """Remember a secret value so that it is masked wherever it shows up."""
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)


def mask_phone(phone: str | None) -> str:
    """``+5511987654321`` -> ``+55 11 9****-4321``; anything shorter keeps only its last 4 digits."""
    if not phone:
        return ""
    digits = re.sub(r"\D", "", phone)
    if phone.startswith("sim:"):
        return phone
    if len(digits) >= 12:
        country, area, rest = digits[:2], digits[2:4], digits[4:]
        return f"+{country} {area} {rest[0]}****-{rest[-4:]}"
    if len(digits) > 4:
        return "*" * (len(digits) - 4) + digits[-4:]
    return "****"


def redact(text: str) -> str:
    """Mask registered secrets, secret-looking tokens and phone numbers in ``text``."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "[secret]")
    text = _SECRET_PATTERNS[0].sub("sk-[secret]", text)
    text = _SECRET_PATTERNS[2].sub(lambda m: f"{m.group(1)} [secret]", text)
    text = _SECRET_PATTERNS[1].sub(lambda m: f"{m.group(1)}{m.group(2)}[secret]", text)
    text = _PHONE.sub(lambda m: mask_phone(m.group(0)), text)
    return text
