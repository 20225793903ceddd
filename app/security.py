"""Secrets the app makes for itself (the session / URL-signing key) when none is configured."""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create_secret(instance_dir: str) -> str:
    """A stable per-instance secret in ``instance/secret_key`` (mode 0600), created once."""
    path = Path(instance_dir) / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        value = secrets.token_urlsafe(48)
        handle.write(value)
    return value
