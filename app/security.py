"""Secrets the app makes for itself (the session / URL-signing key) when none is configured."""
from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path


def load_or_create_secret(instance_dir: str | os.PathLike) -> str:
    """A stable per-instance secret in ``{instance_dir}/secret_key`` (created once, mode 0600).

    Used when SECRET_KEY is not configured, so that URLs keep working across restarts and
    across the worker processes of one instance. Creation here is atomic
    (write a temporary file, then hard-link it into place), so two workers starting at once
    agree on one secret and nobody ever reads a half-written file.
    """
    directory = Path(instance_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "secret_key"
    if not path.exists():
        fd, temp_name = tempfile.mkstemp(prefix=".secret_key-", dir=directory)  # mkstemp uses 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
                handle.flush()
                os.fsync(handle.fileno())
            os.link(temp_name, path)
        except FileExistsError:
            pass  # another process won the race; use its secret
        finally:
            os.unlink(temp_name)
    return _read_secret(path)


def _read_secret(path: Path, attempts: int = 20) -> str:
    """Read the secret; an empty or short key must never be used for signing."""
    for _ in range(attempts):
        secret = path.read_text().strip()
        if len(secret) >= 32:
            return secret
        time.sleep(0.05)
    raise RuntimeError(f"{path} holds no usable secret; delete it to create a new one")
