"""``/operators`` (admins only): list operators, add one, disable/enable, issue and revoke API tokens.

The same operations as the command line (app/operators/cli.py), each written to the audit
trail with the admin as actor. A new token is shown once, in the page that answers the
POST (never through a redirect: flashed messages live in the signed, readable cookie).
"""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from app.operators import accounts, audit, tokens
from app.operators.accounts import OperatorError
from app.services import current_services
from app.web.auth import admin_only, current_operator
from app.web.dashboard.blueprint import bp


def _page(status: int = 200, **values):
    db = current_services().db
    rows = accounts.list_accounts(db)
    token_lists = {a.name: tokens.list_tokens(db, a.name) for a in rows}
    return render_template("operators.html", operators=rows, token_lists=token_lists, **values), status


@bp.get("/operators")
@admin_only
def operators():
    return _page()


@bp.post("/operators")
@admin_only
def operator_add():
    db = current_services().db
    name, role = request.form.get("name", ""), request.form.get("role", "")
    try:
        account = accounts.create(db, name, role, request.form.get("password", ""))
    except OperatorError as exc:
        return _page(400, error=f"Não foi possível criar o operador: {exc}")
    audit.record(db, current_operator(), audit.OPERATOR_CREATE, detail={"operator": account.name, "role": account.role})
    flash(f"Operador {account.name} criado ({account.role}).", "success")
    return redirect(url_for("dashboard.operators"))


@bp.post("/operators/<name>/disable")
@admin_only
def operator_disable(name: str):
    if accounts.normalize_name(name) == current_operator().name:
        flash("Você não pode desativar a sua própria conta.", "warning")
        return redirect(url_for("dashboard.operators"))
    return _change_account(accounts.disable, name, audit.OPERATOR_DISABLE,
                           "{name} desativado: sessões encerradas e tokens revogados.")


@bp.post("/operators/<name>/enable")
@admin_only
def operator_enable(name: str):
    return _change_account(accounts.enable, name, audit.OPERATOR_ENABLE,
                           "{name} reativado (tokens antigos continuam revogados).")


def _change_account(change, name: str, action: str, done: str):
    """Apply ``change(db, name)``, record it with its operator, say so on the operators page."""
    db = current_services().db
    try:
        account = change(db, name)
    except OperatorError as exc:
        flash(str(exc), "danger")
        return redirect(url_for("dashboard.operators"))
    audit.record(db, current_operator(), action, detail={"operator": account.name})
    flash(done.format(name=account.name), "success")
    return redirect(url_for("dashboard.operators"))


@bp.post("/operators/<name>/tokens")
@admin_only
def operator_token_issue(name: str):
    db = current_services().db
    try:
        issued = tokens.issue(db, name)
    except OperatorError as exc:
        return _page(400, error=str(exc))
    audit.record(db, current_operator(), audit.TOKEN_ISSUE,
                 detail={"operator": accounts.normalize_name(name), "prefix": issued.prefix})
    return _page(new_token=issued.token, new_token_owner=accounts.normalize_name(name))


@bp.post("/operators/<name>/tokens/<int:token_id>/revoke")
@admin_only
def operator_token_revoke(name: str, token_id: int):
    db = current_services().db
    owned = {t.id: t for t in tokens.list_tokens(db, name)} if accounts.get(db, name) else {}
    if token_id in owned and tokens.revoke(db, token_id):
        audit.record(db, current_operator(), audit.TOKEN_REVOKE,
                     detail={"operator": owned[token_id].operator_name, "prefix": owned[token_id].prefix})
        flash(f"Token {owned[token_id].prefix} revogado.", "success")
    else:
        flash("Token não encontrado ou já revogado.", "info")
    return redirect(url_for("dashboard.operators"))
