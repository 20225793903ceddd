"""Download of inbound WhatsApp media from Twilio, defensively.

A MediaUrl arrives in a webhook form, so it is attacker-influenced data until proven
otherwise. The rules, each one tested:

- Only https, only hosts in ``media_allowed_hosts``, no user-info in the URL, and the host must
  not resolve to loopback/private/link-local/reserved addresses. MEDIA_ALLOW_PRIVATE_HOSTS=true
  (staging, emulators; a warning at every start) lifts the scheme and address rules, never
  the host allow-list.
  A refused URL raises ``MediaRefused`` before any request is made.
- Redirects are followed by hand (at most ``MAX_REDIRECTS``) and every hop is checked by the
  same rules. Twilio's credentials go only with the first request, to the Twilio API URL the
  webhook named: the CDN hop gets a presigned URL and no credentials, whatever its host.
- The body is streamed to a temporary file in ``dest_dir`` with the size limit enforced while
  streaming (and up front from Content-Length): ``MediaTooLarge``. Any failure removes the file.
- The result carries both the Content-Type header and the type sniffed from the bytes; the
  caller decides (a header claiming audio over PNG bytes is a lie, see ``header_mismatch``).

The address check resolves the name once, and requests resolves it again when connecting,
so DNS rebinding is not fully closed; the host allow-list is the primary defence.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
import requests.auth

from app.audio.formats import mime_for, sniff_audio_type, suffix_for
from app.config import Settings

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0
# Per-read timeouts do not bound a server that drips one byte every few seconds.
TOTAL_TIMEOUT = 60.0
CHUNK_BYTES = 64 * 1024
SNIFF_BYTES = 96
_REDIRECT_STATUSES = {301, 302, 303, 307, 308}

# Magic bytes of the non-audio types WhatsApp users send, to name what a lying header hides.
_OTHER_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
)

_EXTENSIONS_BY_MIME = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp",
    "application/pdf": ".pdf", "application/zip": ".zip", "video/mp4": ".mp4",
}


class MediaError(Exception):
    """Base of download failures; ``reason`` is safe to log (no credentials, no query strings)."""

    retryable = False

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class MediaRefused(MediaError):
    """The URL broke a rule (host, scheme, address, redirects); nothing was fetched from it."""


class MediaTooLarge(MediaError):
    """The media is larger than ``max_media_bytes``."""


class MediaDownloadError(MediaError):
    """The download failed: HTTP status, network error or timeout."""

    def __init__(self, reason: str, *, status: int | None = None, retryable: bool = False):
        super().__init__(reason)
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True)
class DownloadedMedia:
    """A downloaded file inside ``dest_dir``; the caller owns (and deletes) ``path``."""

    path: Path
    content_type: str | None  # from the Content-Type header, lower-case, without parameters
    sniffed_type: str | None  # MIME type recognised from the first bytes, None if unknown
    size: int
    audio_kind: str | None = None  # app.audio.formats.sniff_audio_type of the bytes

    @property
    def is_audio(self) -> bool:
        """The bytes are audio we can decode (whatever the header said)."""
        return self.audio_kind is not None

    @property
    def header_mismatch(self) -> bool:
        """The header claims a kind of media that the bytes are not (e.g. audio/ogg over a PNG)."""
        claimed = (self.content_type or "").split("/", 1)[0]
        if claimed not in ("audio", "image", "video"):
            return False
        if claimed == "audio":
            return not self.is_audio
        if self.sniffed_type is None:
            return False  # formats we do not sniff (HEIC, 3GP video ...): no evidence either way
        actual = self.sniffed_type.split("/", 1)[0]
        # MP4 and WebM containers hold audio or video: either claim is plausible.
        if self.audio_kind in ("mp4", "webm"):
            return claimed not in ("audio", "video")
        return actual != claimed


# ---- sniffing ----------------------------------------------------------------------------

def sniff_media_type(head: bytes) -> str | None:
    """MIME type of a file from its first bytes: the audio formats of app.audio.formats plus the
    common image/document formats; None when unknown."""
    audio_kind = sniff_audio_type(head)
    if audio_kind is not None:
        return mime_for(audio_kind)
    for magic, mime in _OTHER_MAGIC:
        if head.startswith(magic):
            return mime
    if len(head) >= 12 and head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _header_content_type(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(";", 1)[0].strip().lower() or None


# ---- URL rules -----------------------------------------------------------------------------

def _host_allowed(host: str, port: int | None, settings: Settings) -> bool:
    allowed = {h.strip().lower() for h in settings.media_allowed_hosts}
    return host in allowed or (port is not None and f"{host}:{port}" in allowed)


def _is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # is_global also excludes shared (CGNAT 100.64/10) and documentation ranges, which
    # is_private misses; the explicit checks document the intent.
    return ip.is_global and not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_reserved
                                 or ip.is_multicast or ip.is_unspecified)


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise MediaRefused(f"host {host} does not resolve") from exc
    return sorted({info[4][0] for info in infos})


def check_media_url(url: str, settings: Settings) -> None:
    """Raise MediaRefused unless ``url`` may be fetched; makes no HTTP request."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise MediaRefused("malformed media URL") from exc
    host = (parts.hostname or "").lower()
    allowed_schemes = {"https", "http"} if settings.media_allow_private_hosts else {"https"}
    if parts.scheme not in allowed_schemes:
        raise MediaRefused(f"scheme {parts.scheme or '(none)'} is not allowed")
    if not host:
        raise MediaRefused("media URL has no host")
    if parts.username is not None or parts.password is not None:
        raise MediaRefused("media URL carries credentials")
    if not _host_allowed(host, port, settings):
        raise MediaRefused(f"host {host} is not in MEDIA_ALLOWED_HOSTS")
    if settings.media_allow_private_hosts:
        return
    default_port = 443 if parts.scheme == "https" else 80
    for address in _resolve(host, port or default_port):
        if not _is_public_address(address):
            raise MediaRefused(f"host {host} resolves to a non-public address")


def _safe_url_for_log(url: str) -> str:
    """Scheme, host and path only: CDN query strings are bearer credentials."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


# ---- download ------------------------------------------------------------------------------

def _new_session() -> requests.Session:
    session = requests.Session()
    # No proxies from the environment and, above all, no ~/.netrc credentials, which requests
    # would otherwise attach to any hop that has none - including the CDN.
    session.trust_env = False
    return session


class _NoCredentials(requests.auth.AuthBase):
    """Request-level auth that removes any Authorization header. Passing ``auth=None`` is not
    enough: requests then falls back to ``session.auth`` and ~/.netrc of a caller's session."""

    def __call__(self, request):
        request.headers.pop("Authorization", None)
        return request


def _twilio_auth(settings: Settings) -> tuple[str, str] | None:
    if settings.twilio_account_sid and settings.twilio_auth_token:
        return settings.twilio_account_sid, settings.twilio_auth_token
    return None


def _open_response(url: str, settings: Settings, session: requests.Session) -> requests.Response:
    """GET ``url`` following at most MAX_REDIRECTS redirects, each hop checked; return the
    final streamed response (status not yet checked)."""
    auth = _twilio_auth(settings)
    current = url
    for hop in range(MAX_REDIRECTS + 1):
        check_media_url(current, settings)
        response = session.get(
            current,
            # Credentials only on the first hop (the Twilio API): never on a redirect target.
            auth=(auth or _NoCredentials()) if hop == 0 else _NoCredentials(),
            headers={"Accept-Encoding": "identity"},
            allow_redirects=False,
            stream=True,
            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
        )
        if response.status_code not in _REDIRECT_STATUSES:
            return response
        location = response.headers.get("Location")
        response.close()
        if not location:
            raise MediaDownloadError("redirect without a Location", status=response.status_code)
        current = urljoin(current, location)
    raise MediaRefused(f"more than {MAX_REDIRECTS} redirects")


def _check_status(response: requests.Response, url: str) -> None:
    status = response.status_code
    if status == 200:
        return
    retryable = status == 429 or status >= 500
    raise MediaDownloadError(f"HTTP {status} from {_safe_url_for_log(url)}", status=status, retryable=retryable)


def _check_declared_size(response: requests.Response, max_bytes: int) -> None:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise MediaTooLarge(f"Content-Length {declared} exceeds {max_bytes} bytes")


def _stream_to_file(response: requests.Response, handle, max_bytes: int) -> tuple[int, bytes]:
    """Write the body to ``handle``; return (size, first bytes). Enforce size and total time."""
    deadline = time.monotonic() + TOTAL_TIMEOUT
    size, head = 0, b""
    for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
        if not chunk:
            continue
        size += len(chunk)
        if size > max_bytes:
            raise MediaTooLarge(f"media exceeds {max_bytes} bytes")
        if len(head) < SNIFF_BYTES:
            head += chunk[: SNIFF_BYTES - len(head)]
        handle.write(chunk)
        if time.monotonic() > deadline:
            raise MediaDownloadError(f"download took longer than {TOTAL_TIMEOUT:.0f} s", retryable=True)
    return size, head


def _final_name(temp_path: Path, audio_kind: str | None, sniffed: str | None) -> Path:
    """Give the file the extension of what it really is (FFmpeg and OpenAI look at it)."""
    if audio_kind:
        suffix = suffix_for(audio_kind)
    else:
        suffix = _EXTENSIONS_BY_MIME.get(sniffed or "", ".bin")
    final = temp_path.with_suffix(suffix)
    os.replace(temp_path, final)
    return final


def download_media(url: str, settings: Settings, dest_dir: str | os.PathLike, *,
                   session: requests.Session | None = None) -> DownloadedMedia:
    """Fetch a Twilio MediaUrl into ``dest_dir``. See the module docstring for the rules.

    Raises MediaRefused (nothing fetched), MediaTooLarge, MediaDownloadError (``retryable``
    tells a 5xx/429/network problem from a permanent one). No file is left behind on failure.
    """
    check_media_url(url, settings)  # before anything else, so a refused URL costs nothing
    session = session or _new_session()
    max_bytes = settings.max_media_bytes
    fd, temp_name = tempfile.mkstemp(prefix="media-", suffix=".part", dir=dest_dir)
    temp_path = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            try:
                response = _open_response(url, settings, session)
            except requests.Timeout as exc:
                raise MediaDownloadError("media download timed out", retryable=True) from exc
            except requests.RequestException as exc:
                raise MediaDownloadError(f"media download failed: {type(exc).__name__}", retryable=True) from exc
            with response:
                _check_status(response, url)
                _check_declared_size(response, max_bytes)
                try:
                    size, head = _stream_to_file(response, handle, max_bytes)
                except requests.RequestException as exc:
                    raise MediaDownloadError(f"media download interrupted: {type(exc).__name__}",
                                             retryable=True) from exc
                content_type = _header_content_type(response.headers.get("Content-Type"))
        audio_kind = sniff_audio_type(head)
        sniffed = sniff_media_type(head)
        final_path = _final_name(temp_path, audio_kind, sniffed)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    media = DownloadedMedia(final_path, content_type, sniffed, size, audio_kind)
    if media.header_mismatch:
        log.warning("media header says %s but the bytes look like %s", content_type, sniffed or "unknown data")
    return media
