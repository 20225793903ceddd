"""Where reply audio lives until Twilio fetches it: local files or Google Cloud Storage.

Two real implementations behind one small interface (``MediaStorage``), chosen by
``MEDIA_BACKEND``; ``build_storage(settings)`` is the registry. Local is the default so a
fresh checkout works:

- ``LocalStorage`` keeps files under ``{instance_dir}/media/`` with random names and hands
  out ``{public_base_url}/media/<token>`` URLs. The token is the file name signed with
  itsdangerous and time-stamped, so the URL cannot be guessed, altered or used after
  ``media_url_ttl_seconds``; app/web/media.py serves it.
- ``GCSStorage`` uploads to a bucket with the right Content-Type (Twilio reads it) and hands
  out either the public URL or a V4 signed URL. Under ``STORAGE_EMULATOR_HOST`` the client is
  anonymous (real credentials hang on a token refresh offline) and URLs are signed with a
  local key and pointed at the emulator.

``status()`` reports configuration and contents for the dashboard's /system/advanced-status
and never includes secrets.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from app.config import Settings, load_or_create_secret

log = logging.getLogger(__name__)

# Reply audio we store and the Content-Type Twilio must see for it (WhatsApp accepts these).
CONTENT_TYPES_BY_SUFFIX = {
    ".ogg": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".amr": "audio/amr",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    # Files an operator sends from the dashboard (types WhatsApp delivers as media).
    ".pdf": "application/pdf",
    ".jpg": "image/jpeg",
    ".png": "image/png",
}
_CONTENT_TYPE_ALIASES = {"audio/mp3": "audio/mpeg", "audio/opus": "audio/ogg", "image/jpg": "image/jpeg"}

# 32 URL-safe random characters (192 bits) plus a known suffix: the only names we create,
# and the only names the media route will ever open.
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}\.(?:ogg|mp3|amr|m4a|aac|pdf|jpg|png)")  # always used with fullmatch
TOKEN_SALT = "endrigo.media-url"  # separates these tokens from anything else signed with the key
MAX_V4_EXPIRY_SECONDS = 7 * 24 * 3600  # GCS refuses longer V4 signatures


class StorageError(Exception):
    """Storing or reading media failed; the message is safe to log."""


class MediaTokenInvalid(StorageError):
    """The URL token was altered, forged or names something we never stored."""


class MediaTokenExpired(MediaTokenInvalid):
    """The URL token is genuine but older than media_url_ttl_seconds."""


@dataclass(frozen=True)
class StoredMedia:
    key: str
    url: str
    content_type: str
    size: int


class MediaStorage(Protocol):
    backend: str

    def save(self, data: bytes, content_type: str, suffix: str, *, base_url: str | None = None) -> StoredMedia: ...

    def open(self, key: str) -> tuple[bytes, str]: ...

    def cleanup(self, older_than_days: float | None = None) -> int: ...

    def key_for_url(self, url: str) -> str | None: ...

    def delete(self, key: str) -> bool: ...

    def status(self) -> dict: ...


def build_storage(settings: Settings) -> MediaStorage:
    """The storage MEDIA_BACKEND names."""
    if settings.media_backend == "gcs":
        return GCSStorage(settings)
    return LocalStorage(settings)


def _new_key(suffix: str) -> str:
    return secrets.token_urlsafe(24) + suffix


def _checked_content_type(content_type: str, suffix: str) -> str:
    """The Content-Type for ``suffix``; refuse a suffix we do not serve or a contradicting type."""
    expected = CONTENT_TYPES_BY_SUFFIX.get(suffix)
    if expected is None:
        raise StorageError(f"unsupported media suffix {suffix!r}")
    given = content_type.split(";", 1)[0].strip().lower()
    given = _CONTENT_TYPE_ALIASES.get(given, given)
    if given != expected:
        raise StorageError(f"content type {content_type!r} does not match suffix {suffix!r}")
    return expected


# ---- local files -----------------------------------------------------------------------------

class LocalStorage:
    """Files under ``{instance_dir}/media/``, served by app/web/media.py through signed URLs."""

    backend = "local"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = Path(settings.instance_dir) / "media"
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl_seconds = settings.media_url_ttl_seconds
        secret = settings.secret_key or load_or_create_secret(settings.instance_dir)
        self._serializer = URLSafeTimedSerializer(secret, salt=TOKEN_SALT)

    # -- URLs --------------------------------------------------------------------------
    def make_token(self, key: str) -> str:
        return self._serializer.dumps(key)

    def verify_token(self, token: str, *, ignore_age: bool = False) -> str:
        """The storage key a URL token names; MediaTokenExpired / MediaTokenInvalid otherwise.

        ``ignore_age``: still check the signature, but accept an expired token (the operator's
        dashboard re-issues fresh URLs for old replies).
        """
        try:
            key = self._serializer.loads(token, max_age=None if ignore_age else self.ttl_seconds)
        except SignatureExpired as exc:
            raise MediaTokenExpired("media URL expired") from exc
        except BadSignature as exc:
            raise MediaTokenInvalid("media URL signature is invalid") from exc
        if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
            raise MediaTokenInvalid("media URL names no valid file")
        return key

    def url_for(self, key: str, base_url: str | None = None) -> str:
        """The signed URL of ``key`` on ``base_url`` (default PUBLIC_BASE_URL); ``""`` gives a
        relative ``/media/…`` URL, for pages served by this app itself (the simulator)."""
        base = self.settings.public_base_url if base_url is None else base_url
        if base is None:
            raise StorageError("no public base URL: set PUBLIC_BASE_URL or pass base_url")
        return f"{base.rstrip('/')}/media/{self.make_token(key)}"

    # -- files ---------------------------------------------------------------------------
    def path_for(self, key: str) -> Path | None:
        """Path of a stored file, or None when missing. Only KEY_PATTERN names are looked up,
        so no key can point outside the media folder."""
        if not KEY_PATTERN.fullmatch(key):
            return None
        path = self.root / key
        return path if path.is_file() else None

    def content_type_for(self, key: str) -> str:
        return CONTENT_TYPES_BY_SUFFIX[Path(key).suffix]

    def save(self, data: bytes, content_type: str, suffix: str, *, base_url: str | None = None) -> StoredMedia:
        content_type = _checked_content_type(content_type, suffix)
        key = _new_key(suffix)
        url = self.url_for(key, base_url)  # fail before writing when no URL can be made
        # Write then rename, so the media route never serves a half-written file.
        fd, temp_name = tempfile.mkstemp(prefix=".upload-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(temp_name, 0o640)
            os.replace(temp_name, self.root / key)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return StoredMedia(key=key, url=url, content_type=content_type, size=len(data))

    def open(self, key: str) -> tuple[bytes, str]:
        path = self.path_for(key)
        if path is None:
            raise FileNotFoundError(key)
        return path.read_bytes(), self.content_type_for(key)

    def key_for_url(self, url: str) -> str | None:
        """The key behind one of our media URLs (signature checked, age ignored), or None."""
        path = urlsplit(url or "").path
        if not path.startswith("/media/"):
            return None
        try:
            return self.verify_token(path[len("/media/"):], ignore_age=True)
        except MediaTokenInvalid:
            return None

    def delete(self, key: str) -> bool:
        """Delete one stored file (LGPD erasure, retention); True when a file was removed."""
        path = self.path_for(key)
        if path is None:
            return False
        path.unlink(missing_ok=True)
        return True

    def cleanup(self, older_than_days: float | None = None) -> int:
        """Delete stored files (and abandoned uploads) older than the retention; return how many."""
        days = self.settings.media_retention_days if older_than_days is None else older_than_days
        cutoff = time.time() - days * 86400
        removed = 0
        for path in self.root.iterdir():
            if not path.is_file() or not (KEY_PATTERN.fullmatch(path.name) or path.name.startswith(".upload-")):
                continue
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass  # removed concurrently by another worker's cleanup
        return removed

    def status(self) -> dict:
        files = [p for p in self.root.iterdir() if p.is_file() and KEY_PATTERN.fullmatch(p.name)]
        return {
            "backend": self.backend,
            "directory": str(self.root),
            "files": len(files),
            "bytes": sum(p.stat().st_size for p in files),
            "url_ttl_seconds": self.ttl_seconds,
            "retention_days": self.settings.media_retention_days,
            "public_base_url": self.settings.public_base_url,
            "secret_source": "SECRET_KEY" if self.settings.secret_key else "instance file",
        }


# ---- Google Cloud Storage ---------------------------------------------------------------------

def ephemeral_signing_credentials():
    """Service-account credentials around a freshly generated RSA key.

    Only for the emulator, which does not check signatures: it lets the production code path
    (V4 signed URLs) run offline. Never used against real GCS.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.oauth2 import service_account

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    info = {
        "type": "service_account",
        "project_id": "local-emulator",
        "private_key_id": secrets.token_hex(8),
        "private_key": pem,
        "client_email": "emulator-signer@local-emulator.iam.gserviceaccount.com",
        "client_id": "0",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return service_account.Credentials.from_service_account_info(info)


class GCSStorage:
    """Objects in ``GCS_BUCKET_NAME`` under ``media/``; URLs public or V4-signed."""

    backend = "gcs"
    PREFIX = "media/"
    UPLOAD_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds, as google-cloud-storage accepts

    def __init__(self, settings: Settings, *, client=None, signing_credentials=None):
        if not settings.gcs_bucket_name:
            raise StorageError("GCS_BUCKET_NAME is not set")
        self.settings = settings
        self.bucket_name = settings.gcs_bucket_name
        self.emulator_host = self._emulator_host(settings)
        self._client = client
        self._signing_credentials = signing_credentials
        self.ttl_seconds = min(settings.media_url_ttl_seconds, MAX_V4_EXPIRY_SECONDS)

    @staticmethod
    def _emulator_host(settings: Settings) -> str | None:
        # The environment is read here too (against the rule that only config.py reads it) because
        # google-cloud-storage itself obeys STORAGE_EMULATOR_HOST: when it is set, the client talks
        # to the emulator whatever Settings say, and must then be anonymous.
        host = settings.storage_emulator_host or os.environ.get("STORAGE_EMULATOR_HOST")
        if not host:
            return None
        return host if "://" in host else f"http://{host}"

    # -- client --------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self):
        from google.cloud import storage

        if self.emulator_host:
            from google.auth.credentials import AnonymousCredentials

            # Anonymous on purpose: real credentials try a token refresh that hangs offline.
            return storage.Client(project="local-emulator", credentials=AnonymousCredentials(),
                                  client_options={"api_endpoint": self.emulator_host})
        if self.settings.google_application_credentials:
            return storage.Client.from_service_account_json(self.settings.google_application_credentials)
        return storage.Client()

    @property
    def bucket(self):
        return self.client.bucket(self.bucket_name)

    # -- operations ------------------------------------------------------------------------------
    def save(self, data: bytes, content_type: str, suffix: str, *, base_url: str | None = None) -> StoredMedia:
        """Upload and return a URL Twilio can fetch. ``base_url`` is accepted for interface
        compatibility and ignored: GCS URLs do not depend on our origin."""
        content_type = _checked_content_type(content_type, suffix)
        key = self.PREFIX + _new_key(suffix)
        blob = self.bucket.blob(key)
        blob.cache_control = "private, max-age=3600"
        try:
            # if_generation_match=0: create-only, which also makes the upload safe to retry.
            blob.upload_from_string(data, content_type=content_type, if_generation_match=0,
                                    timeout=self.UPLOAD_TIMEOUT)
        except Exception as exc:  # google.api_core and transport errors: report without detail
            raise StorageError(f"GCS upload failed: {type(exc).__name__}") from exc
        return StoredMedia(key=key, url=self.url_for(blob), content_type=content_type, size=len(data))

    def url_for(self, blob) -> str:
        if self.settings.gcs_public_bucket:
            if self.emulator_host:
                return f"{self.emulator_host}/{self.bucket_name}/{blob.name}"
            return blob.public_url
        return blob.generate_signed_url(
            version="v4",
            expiration=dt.timedelta(seconds=self.ttl_seconds),
            method="GET",
            # A V4 URL points at storage.googleapis.com unless told otherwise.
            api_access_endpoint=self.emulator_host,
            **self._signing_kwargs(),
        )

    def _signing_kwargs(self) -> dict:
        """Credentials to sign with: given ones, an ephemeral key under the emulator, or the
        client's own (a service-account key signs locally; on Cloud Run/GCE the metadata
        credentials cannot, so IAM signBlob is used through an access token)."""
        if self._signing_credentials is None and self.emulator_host:
            self._signing_credentials = ephemeral_signing_credentials()
        if self._signing_credentials is not None:
            return {"credentials": self._signing_credentials}
        credentials = self.client._credentials
        if hasattr(credentials, "sign_bytes") and getattr(credentials, "signer", None) is not None:
            return {"credentials": credentials}
        from google.auth.transport.requests import Request

        if not credentials.valid:
            credentials.refresh(Request())
        return {"service_account_email": credentials.service_account_email, "access_token": credentials.token}

    def open(self, key: str) -> tuple[bytes, str]:
        blob = self.bucket.get_blob(key)
        if blob is None:
            raise FileNotFoundError(key)
        return blob.download_as_bytes(), blob.content_type or "application/octet-stream"

    def key_for_url(self, url: str) -> str | None:
        """The object name behind one of our URLs (public or V4 signed: /bucket/name), or None."""
        path = unquote(urlsplit(url or "").path)
        marker = f"/{self.bucket_name}/"
        if marker not in path:
            return None
        key = path.split(marker, 1)[1]
        return key if key.startswith(self.PREFIX) and ".." not in key else None

    def delete(self, key: str) -> bool:
        try:
            self.bucket.blob(key).delete(timeout=self.UPLOAD_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - NotFound or transport: report without detail
            if type(exc).__name__ == "NotFound":
                return False
            raise StorageError(f"GCS delete failed: {type(exc).__name__}") from exc
        return True

    def cleanup(self, older_than_days: float | None = None) -> int:
        """Delete our objects older than the retention. A bucket lifecycle rule does the same
        job better in production; this keeps the emulator and small setups tidy."""
        days = self.settings.media_retention_days if older_than_days is None else older_than_days
        cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)
        removed = 0
        for blob in self.client.list_blobs(self.bucket_name, prefix=self.PREFIX):
            if blob.time_created is not None and blob.time_created < cutoff:
                blob.delete()
                removed += 1
        return removed

    def status(self) -> dict:
        return {
            "backend": self.backend,
            "bucket": self.bucket_name,
            "public_bucket": self.settings.gcs_public_bucket,
            "emulator": bool(self.emulator_host),
            "url_ttl_seconds": self.ttl_seconds,
            "retention_days": self.settings.media_retention_days,
            "credentials": self._credentials_source(),
        }

    def _credentials_source(self) -> str:
        if self.emulator_host:
            return "anonymous (emulator)"
        if self.settings.google_application_credentials:
            return "service account file"
        return "application default"
