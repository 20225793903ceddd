"""Operator login for the dashboard: one shared password (DASHBOARD_PASSWORD), a session cookie.

- The password is compared with ``hmac.compare_digest`` (constant time). The session keeps
  an HMAC fingerprint of the password, not a bare flag, so changing DASHBOARD_PASSWORD logs
  every operator out.
- Failed logins are rate limited in process memory: 5 per client IP per 5 minutes, plus a
  global ceiling of 100 per 5 minutes because the client IP comes from X-Forwarded-For
  (ProxyFix trusts one hop) and can be forged when nobody strips it. With several gunicorn
  workers each process counts on its own, so the effective limit is N times higher; a
  shared counter (Redis) can replace ``LoginRateLimiter`` when the app scales out.
- With no DASHBOARD_PASSWORD, pages with personal data refuse (503) with a page that says
  how to set it; JSON endpoints answer JSON (503, or 401 when simply not logged in).

The dashboard blueprint denies by default: every view needs a login unless marked
``@public``. The route-walking test in tests/test_dashboard.py keeps it that way.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import threading
import time
from urllib.parse import urlsplit

from flask import current_app, flash, jsonify, redirect, render_template, request, session, url_for

from app.services import current_services

MAX_FAILURES_PER_IP = 5
MAX_FAILURES_GLOBAL = 100
FAILURE_WINDOW_SECONDS = 300
SESSION_KEY = "operator"


def public(view):
    """Mark a dashboard view as reachable without login (no personal data behind it)."""
    view.dashboard_public = True
    return view


def json_endpoint(view):
    """Mark a view whose refusals must be JSON (401/503), never a redirect to the login page."""
    view.dashboard_json = True
    return view


class LoginRateLimiter:
    """Sliding-window counter of failed logins, per client IP and overall (in-process)."""

    def __init__(self, per_ip: int = MAX_FAILURES_PER_IP, overall: int = MAX_FAILURES_GLOBAL,
                 window: float = FAILURE_WINDOW_SECONDS, clock=time.monotonic):
        self.per_ip, self.overall, self.window, self.clock = per_ip, overall, window, clock
        self._by_ip: dict[str, collections.deque] = {}
        self._all: collections.deque = collections.deque()
        self._lock = threading.Lock()

    def _prune(self, now: float) -> None:
        cutoff = now - self.window
        while self._all and self._all[0] <= cutoff:
            self._all.popleft()
        for ip in list(self._by_ip):
            times = self._by_ip[ip]
            while times and times[0] <= cutoff:
                times.popleft()
            if not times:
                del self._by_ip[ip]  # keeps memory bounded by the attackers of the last window

    def retry_after(self, ip: str) -> int:
        """Seconds until ``ip`` may try again; 0 when it may try now."""
        now = self.clock()
        with self._lock:
            self._prune(now)
            waits = []
            times = self._by_ip.get(ip)
            if times and len(times) >= self.per_ip:
                waits.append(times[0] + self.window - now)
            if len(self._all) >= self.overall:
                waits.append(self._all[0] + self.window - now)
        return max(1, int(max(waits)) + 1) if waits else 0

    def record_failure(self, ip: str) -> None:
        now = self.clock()
        with self._lock:
            self._by_ip.setdefault(ip, collections.deque()).append(now)
            self._all.append(now)

    def reset(self, ip: str) -> None:
        with self._lock:
            self._by_ip.pop(ip, None)


# ---- state ---------------------------------------------------------------------------------

def _settings():
    return current_services().settings


def password_configured() -> bool:
    return bool(_settings().dashboard_password)


def _fingerprint(password: str) -> str:
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, b"dashboard-login:" + password.encode(), hashlib.sha256).hexdigest()


def password_matches(candidate: str) -> bool:
    expected = _settings().dashboard_password
    if not expected:
        return False
    # Compare digests of equal length so neither content nor length leaks through timing.
    return hmac.compare_digest(hashlib.sha256(candidate.encode()).digest(),
                               hashlib.sha256(expected.encode()).digest())


def is_logged_in() -> bool:
    password = _settings().dashboard_password
    token = session.get(SESSION_KEY)
    return bool(password and isinstance(token, str) and hmac.compare_digest(token, _fingerprint(password)))


def is_admin() -> bool:
    """Whether the operator of this request may use admin-only features (the LGPD export).

    With the one shared DASHBOARD_PASSWORD there are no roles: whoever logged in holds it and
    is the admin. Operator accounts with roles (app/operators/) answer this from the role.
    """
    return is_logged_in()


def operator_name() -> str:
    """Who acts in this request, for the audit trail (the shared login has no name of its own)."""
    return "dashboard"


def client_ip() -> str:
    return request.remote_addr or "unknown"


def wants_json() -> bool:
    view = current_app.view_functions.get(request.endpoint)
    if getattr(view, "dashboard_json", False) or request.path.endswith(".json"):
        return True
    # Browsers send text/html first (or */*, which also picks HTML); fetch() and curl ask for JSON.
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


def safe_next(target: str | None, default: str = "/") -> str:
    """Only local paths: an attacker's link must not bounce a fresh login to another site."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def refusal():
    """The response for a request that needs a login and has none (None when it has one)."""
    if not password_configured():
        if wants_json():
            return jsonify(error="dashboard_password_unset",
                           message="Defina DASHBOARD_PASSWORD para liberar o painel."), 503
        return render_template("password_unset.html"), 503
    if is_logged_in():
        return None
    if wants_json():
        return jsonify(error="login_required", message="Faça login no painel."), 401
    return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))


def log_in() -> None:
    session.clear()  # a fresh session (and CSRF token) after login: no session fixation
    session[SESSION_KEY] = _fingerprint(_settings().dashboard_password)
    session.permanent = True


# ---- views (registered on the dashboard blueprint by app/web/dashboard.py) ------------------

def login():
    if not password_configured():
        return render_template("password_unset.html"), 503
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        if is_logged_in():
            return redirect(next_url)
        return render_template("login.html", next_url=next_url, https_hint=_https_hint())

    limiter: LoginRateLimiter = current_app.extensions["dashboard_login_limiter"]
    ip = client_ip()
    wait = limiter.retry_after(ip)
    if wait:
        response = current_app.make_response(
            (render_template("login.html", next_url=next_url,
                             error=f"Muitas tentativas. Tente de novo em {wait} segundos."), 429))
        response.headers["Retry-After"] = str(wait)
        return response
    if not password_matches(request.form.get("password", "")):
        limiter.record_failure(ip)
        current_app.logger.warning("dashboard: failed login from %s", ip)
        return render_template("login.html", next_url=next_url, error="Senha incorreta."), 401
    limiter.reset(ip)
    log_in()
    flash("Você entrou no painel.", "success")
    return redirect(next_url)


def _https_hint() -> str | None:
    """The https origin to use when this plain-http page cannot keep a Secure session cookie."""
    if current_app.config.get("SESSION_COOKIE_SECURE") and not request.is_secure:
        return _settings().public_base_url
    return None


def logout():
    session.clear()
    flash("Você saiu do painel.", "info")
    return redirect(url_for("dashboard.status"))
