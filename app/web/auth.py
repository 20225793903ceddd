"""Operator login for the dashboard: per-operator accounts (app/operators/), a signed session cookie.

- Login with a name and a password (argon2, constant-time whatever the outcome:
  app/operators/accounts.py). An empty name means the bootstrap ``admin``, whose password
  is DASHBOARD_PASSWORD (``bootstrap_admin`` at start-up), so a one-person set-up logs in
  with the password alone, as before.
- Failed logins are counted in the database (app/operators/login_limits.py): the limits
  hold across gunicorn workers and instances. A throttled login answers 429 + Retry-After.
- The session holds the operator's id and ``session_version``; every request checks both
  (``load_session_operator``), so logout (which bumps the version: every session of that
  operator ends, a copied cookie too), a password change and disabling the account end
  sessions at once.
- Roles: ``agent`` reads conversations, replies, takes over and closes handoffs;
  ``admin`` also manages operators and sees the system pages. Views marked ``@admin_only``
  answer 403 to agents.
- With no active operator at all (no DASHBOARD_PASSWORD, no account), pages with personal
  data refuse (503) with a page that says how to open them; JSON endpoints answer JSON
  (503, or 401 when simply not logged in, 403 for a role that may not).

The dashboard blueprint denies by default: every view needs a login unless marked
``@public``. The route-walking test in tests/test_dashboard.py keeps it that way.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, flash, g, jsonify, redirect, render_template, request, session, url_for

from app.operators import accounts, audit, authenticate_login, load_session_operator, session_payload
from app.operators.accounts import Account
from app.services import current_services


def public(view):
    """Mark a dashboard view as reachable without login (no personal data behind it)."""
    view.dashboard_public = True
    return view


def json_endpoint(view):
    """Mark a view whose refusals must be JSON (401/403/503), never a redirect to the login page."""
    view.dashboard_json = True
    return view


def admin_only(view):
    """Mark a view only admins may use (operators, system pages); agents get 403."""
    view.dashboard_admin = True
    return view


# ---- state ---------------------------------------------------------------------------------

def _db():
    return current_services().db


def accounts_configured() -> bool:
    """Whether anybody can log in at all (an active operator exists)."""
    if "accounts_configured" not in g:
        g.accounts_configured = accounts.count_active(_db()) > 0
    return g.accounts_configured


# Kept for templates and older callers: "a login exists" now means an active operator exists.
password_configured = accounts_configured


def current_operator() -> Account | None:
    """The logged-in operator of this request (checked against the database once per request)."""
    if "operator" not in g:
        g.operator = load_session_operator(_db(), session)
    return g.operator


def is_logged_in() -> bool:
    return current_operator() is not None


def is_admin() -> bool:
    """Whether the operator of this request is an admin (templates: admin-only buttons)."""
    operator = current_operator()
    return operator is not None and operator.is_admin


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


def forbidden(message: str = "Seu perfil de operador não permite esta ação."):
    if wants_json():
        return jsonify(error="forbidden", message=message), 403
    return render_template("error.html", title="Acesso negado", message=message), 403


def refusal(view=None):
    """The response for a request its operator may not make (None when allowed)."""
    operator = current_operator()
    if operator is None:
        if not accounts_configured():
            if wants_json():
                return jsonify(error="dashboard_password_unset",
                               message="Defina DASHBOARD_PASSWORD ou crie um operador para liberar o painel."), 503
            return render_template("password_unset.html"), 503
        if wants_json():
            return jsonify(error="login_required", message="Faça login no painel."), 401
        return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
    if getattr(view, "dashboard_admin", False) and not operator.is_admin:
        return forbidden()
    return None


def log_in(account: Account) -> None:
    session.clear()  # a fresh session (and CSRF token) after login: no session fixation
    session.update(session_payload(account))
    session.permanent = True
    g.operator = account


# ---- views (registered on the dashboard blueprint by app/web/dashboard/blueprint.py) --------

def _login_page(status: int = 200, **values):
    return render_template("login.html", next_url=values.pop("next_url", "/"), https_hint=_https_hint(),
                           name=values.pop("name", ""), **values), status


def login():
    if not accounts_configured():
        return render_template("password_unset.html"), 503
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        if is_logged_in():
            return redirect(next_url)
        return _login_page(next_url=next_url)

    name = (request.form.get("name") or "").strip()[:64]
    result = authenticate_login(_db(), name, request.form.get("password", ""), client_ip())
    if result.throttled:
        response = current_app.make_response(_login_page(
            429, next_url=next_url, name=name,
            error=f"Muitas tentativas. Tente de novo em {result.retry_after} segundos."))
        response.headers["Retry-After"] = str(result.retry_after)
        return response
    if not result.ok:
        return _login_page(401, next_url=next_url, name=name, error="Nome ou senha incorretos.")
    log_in(result.operator)
    flash(f"Você entrou no painel como {result.operator.name}.", "success")
    return redirect(next_url)


def _https_hint() -> str | None:
    """The https origin to use when this plain-http page cannot keep a Secure session cookie."""
    if current_app.config.get("SESSION_COOKIE_SECURE") and not request.is_secure:
        return current_services().settings.public_base_url
    return None


def logout():
    operator = current_operator()
    if operator is not None:
        # Bumping the version ends this session and any copy of its cookie, everywhere.
        accounts.bump_session_version(_db(), operator.name)
        audit.record(_db(), operator, audit.LOGOUT, detail={"client": client_ip()})
    session.clear()
    g.operator = None
    flash("Você saiu do painel.", "info")
    return redirect(url_for("dashboard.status"))
