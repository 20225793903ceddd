"""Twilio's webhook signature: the URL Twilio called, rebuilt as Twilio saw it, and the check.

Twilio signs the full public URL it called (with its query string as sent) plus the form
parameters; a JSON body is signed through its SHA-256 in the URL instead (``bodySHA256`` in
the query, the form left out). Behind a proxy the app sees another URL, so the public one is
rebuilt from two halves:

- the public URL of the app's root: PUBLIC_BASE_URL, or the request's scheme, host and port
  (after ProxyFix applied ``X-Forwarded-Proto/Host/Port``), followed by the mount prefix:
  ``X-Forwarded-Prefix`` (ProxyFix puts it in SCRIPT_NAME), else the SCRIPT_NAME the WSGI
  server mounted the app under. When PUBLIC_BASE_URL carries a path
  (``https://host/bot``) that path IS the mount prefix: the request's prefix is not added
  again, so ``X-Forwarded-Prefix: /bot`` with ``PUBLIC_BASE_URL=https://host/bot`` gives
  ``https://host/bot/webhook/whatsapp``, not ``/bot/bot/``. A PUBLIC_BASE_URL without a path
  is an origin only; the prefix then comes from the request.
- the path inside the app and the query, from the raw request target as the server
  received it (RAW_URI / REQUEST_URI: percent-encoding and parameter order as sent), less
  the server's own SCRIPT_NAME when the target includes it (gunicorn, mod_wsgi, uWSGI do).
"""
from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, unquote, urlsplit

from app.clients.twilio_client import SIGNATURE_SETTINGS_HEADER

BODY_HASH_PARAM = "bodySHA256"
# Characters kept as they are when a path from the WSGI environ is put into a URL: an existing
# %-escape stays one, and so do RFC 3986 sub-delimiters.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


def _wsgi_text(value: str) -> str:
    """A WSGI environ string (bytes as latin-1) as the text it encodes (UTF-8)."""
    return value.encode("latin-1", "replace").decode("utf-8", "replace")


def mount_prefix(wsgi_environ) -> str:
    """Where the app is mounted, as the public sees it: ``/bot``, or ``""`` at the root."""
    prefix = _wsgi_text(wsgi_environ.get("SCRIPT_NAME") or "").strip().rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return quote(prefix, safe=_PATH_SAFE)


def public_app_url(request, public_base_url: str | None) -> str:
    """The public URL of the app's root (no trailing slash): ``https://host`` or ``https://host/bot``."""
    if public_base_url:
        base = public_base_url.rstrip("/")
        if urlsplit(base).path:
            return base  # the configured path is the mount prefix
        return base + mount_prefix(request.environ)
    return request.host_url.rstrip("/") + mount_prefix(request.environ)


def _server_script_name(wsgi_environ) -> str:
    """SCRIPT_NAME as the WSGI server set it, before ProxyFix replaced it with X-Forwarded-Prefix."""
    original = wsgi_environ.get("werkzeug.proxy_fix.orig")
    script = original.get("SCRIPT_NAME") if isinstance(original, dict) else wsgi_environ.get("SCRIPT_NAME")
    return (script or "").rstrip("/")


def path_in_app(wsgi_environ) -> str:
    """The path below the mount prefix plus ``?query``, as the client sent them."""
    target = wsgi_environ.get("RAW_URI") or wsgi_environ.get("REQUEST_URI")
    if not target:
        path = quote(_wsgi_text(wsgi_environ.get("PATH_INFO") or ""), safe=_PATH_SAFE)
        query = wsgi_environ.get("QUERY_STRING") or ""
        return path + ("?" + query if query else "")
    if target.startswith(("http://", "https://")):  # absolute-form request target
        parts = urlsplit(target)
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    path, separator, query = target.partition("?")
    script = _server_script_name(wsgi_environ)
    # Servers differ: gunicorn's RAW_URI includes its SCRIPT_NAME, Werkzeug's test client's does
    # not. Strip it only when what follows is exactly PATH_INFO.
    if script and path.startswith(script) and \
            unquote(path[len(script):]) == _wsgi_text(wsgi_environ.get("PATH_INFO") or ""):
        path = path[len(script):]
    return path + separator + query


def public_request_url(request, public_base_url: str | None) -> str:
    """The URL Twilio called, as Twilio saw it (see the module docstring)."""
    return public_app_url(request, public_base_url) + path_in_app(request.environ)


def body_hash_problem(request) -> str | None:
    """With ``bodySHA256`` in the query, the raw body must hash to it (constant-time compare)."""
    claimed = request.args.getlist(BODY_HASH_PARAM)
    if len(claimed) != 1:
        return f"{BODY_HASH_PARAM} given more than once"
    actual = hashlib.sha256(request.get_data(cache=True)).hexdigest()
    if not hmac.compare_digest(actual.encode("ascii"), claimed[0].strip().lower().encode("utf-8", "replace")):
        return f"body does not match {BODY_HASH_PARAM}"
    return None


def signature_failure(request, settings, twilio) -> tuple[str | None, str, str]:
    """``(reason, url, app_url)``: reason is None when the request is Twilio's (or checking is off);
    ``url`` is the URL Twilio called, ``app_url`` the public URL of the app's root."""
    app_url = public_app_url(request, settings.public_base_url)
    url = app_url + path_in_app(request.environ)
    if BODY_HASH_PARAM in request.args:
        # Twilio signs a JSON (non-form) body through its hash in the URL: no parameters.
        # (Before request.form is touched: parsing a form consumes the body.)
        problem = body_hash_problem(request)
        if problem is not None:
            return problem, url, app_url
        params = {}
    else:
        params = request.form
    if not settings.twilio_validate_signature:
        return None, url, app_url
    problem = twilio.signature_problem(url, params, request.headers.get("X-Twilio-Signature"),
                                       request.headers.get(SIGNATURE_SETTINGS_HEADER))
    return problem, url, app_url
