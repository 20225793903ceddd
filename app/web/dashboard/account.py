"""``/account``: a logged-in operator changes their own password.

The current password is checked (throttled and counted like a login: app/operators/login_limits.py);
the change bumps the operator's session version, so every other session of theirs ends,
and this one is renewed with the new version. Written to the audit trail.
"""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from app.operators import accounts, audit, login_limits
from app.operators.accounts import OperatorError
from app.services import current_services
from app.web.auth import client_ip, current_operator, log_in
from app.web.dashboard.blueprint import bp


@bp.get("/account")
def account():
    return render_template("account.html")


@bp.post("/account/password")
def account_password():
    db = current_services().db
    operator = current_operator()
    wait = login_limits.retry_after(db, operator.name, client_ip())
    if wait:
        return render_template("account.html", error=f"Muitas tentativas. Tente de novo em {wait} segundos."), 429
    current_ok = accounts.verify_login(db, operator.name, request.form.get("current", "")) is not None
    login_limits.record(db, operator.name, client_ip(), succeeded=current_ok)
    if not current_ok:
        return render_template("account.html", error="A senha atual não confere."), 400
    new, again = request.form.get("new", ""), request.form.get("again", "")
    if new != again:
        return render_template("account.html", error="As duas senhas novas não são iguais."), 400
    try:
        updated = accounts.set_password(db, operator.name, new)
    except OperatorError as exc:
        return render_template("account.html", error=f"Senha recusada: {exc}"), 400
    audit.record(db, operator, audit.PASSWORD_CHANGE, detail={"operator": operator.name, "via": "dashboard"})
    log_in(updated)  # this session continues; the others ended with the old version
    flash("Senha alterada. Suas outras sessões foram encerradas.", "success")
    return redirect(url_for("dashboard.account"))
