"""Masking of secrets and personal data before anything is logged or shown.

Phone numbers are personal data: logs and the dashboard show them masked
(``+55 11 9****-4321``, ``+1 ******0123``). Numbers are recognised by parsing them with the
``phonenumbers`` package (Google's numbering plan data), so a number of any country and any
length is masked, not only the 12-13 digit Brazilian ones. Secrets (API keys, auth tokens) never appear at all: known
secret values are registered at start-up and every log line passes through ``redact``.
"""
from __future__ import annotations

import re
import threading

import phonenumbers

_lock = threading.Lock()
_secrets: set[str] = set()

# Shapes of provider secrets, masked even when we were not told the value.
_SECRET_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-*]{8,}"),  # OpenAI keys (also the masked form in its errors)
    re.compile(r"(?i)(xi-api-key|authorization|auth_token|api_key|password)([\"']?\s*[:=]\s*[\"']?)((?!\[secret\])[^\s\"',}]+)"),
    re.compile(r"(?i)\b(Basic|Bearer) [A-Za-z0-9+/=._\-]{8,}"),
]
# Candidate phone numbers: "+" and 7-15 digits (spaces, dots, dashes and brackets allowed
# between them, as people type them), or a bare run of 10-15 digits (Twilio's WaId, a number
# written without "+"). Each candidate is masked only when it parses as a possible number.
_PLUS_PHONE = re.compile(r"(?<![\w/])\+\d(?:[\s().\-]{0,2}\d){6,16}(?!\d)")
_BARE_PHONE = re.compile(r"(?<![\w/+])(?<!\d\.)\d{10,15}(?!\d|\.\d)")


def register_secret(value: str | None) -> None:
    """Remember a secret value so that it is masked wherever it shows up."""
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)


def _parse(digits: str):
    try:
        number = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_possible_number(number) else None


def mask_phone(phone: str | None) -> str:
    """``+5511987654321`` -> ``+55 11 9****-4321``; ``+14155550123`` -> ``+1 ******0123``.

    The country code stays (operators tell countries apart), the last four digits stay (they
    tell two contacts apart); everything else is masked. A value that is no phone number at
    all keeps only its last four digits.
    """
    if not phone:
        return ""
    if phone.startswith("sim:"):
        return phone
    digits = re.sub(r"\D", "", phone)
    number = _parse(digits) if 7 <= len(digits) <= 17 else None
    if number is not None:
        country = str(number.country_code)
        national = digits[len(country):]
        if country == "55" and len(national) >= 10:
            # Brazil: the area code helps operators and identifies no one.
            return f"+55 {national[:2]} {national[2]}****-{national[-4:]}"
        return f"+{country} " + "*" * max(len(national) - 4, 2) + national[-4:]
    if len(digits) > 4:
        return "*" * (len(digits) - 4) + digits[-4:]
    return "****"


def _mask_candidate(match: re.Match) -> str:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    if not 7 <= len(digits) <= 15 or _parse(digits) is None:
        return text
    return mask_phone(digits)


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
    if any(ch.isdigit() for ch in text):
        text = _PLUS_PHONE.sub(_mask_candidate, text)
        text = _BARE_PHONE.sub(_mask_candidate, text)
    return text
