"""Dashboard: trust — who opted out, who hit which limit, today's model budget, replies held
outside the 24-hour window, erasure requests; lifting a user's limits; the LGPD export.

- ``GET /trust``: the overview (login required);
- ``POST /users/<id>/lift-limits``: an operator lifts the user's limits (CSRF, audited);
- ``GET /users/<id>/export.json``: the user's data (admins only, audited), the same JSON as
  ``flask --app main users export``.
"""
from __future__ import annotations

import json

from flask import Response, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from app.inbox import privacy
from app.models import HELD, Message, User
from app.operators import audit
from app.ops import limits
from app.services import current_services
from app.web.auth import current_operator, forbidden, is_admin, safe_next
from app.web.dashboard.blueprint import bp

LIFT_LIMITS = "lift_limits"


@bp.get("/trust")
def trust():
    services = current_services()
    db = services.db
    usage = limits.overview(db, services.settings)
    opted_out_total, opted_out = privacy.opted_out_users(db)
    with db.session() as session:
        held = session.execute(
            select(Message, User).join(User, User.id == Message.user_id)
            .where(Message.direction == "out", Message.status == HELD)
            .order_by(Message.created_at.desc()).limit(100)).all()
    return render_template("trust.html", usage=usage, opted_out=opted_out, opted_out_total=opted_out_total,
                           held=held, erasures=privacy.erasure_requests(db), admin=is_admin(),
                           settings=services.settings)


@bp.post("/users/<int:user_id>/lift-limits")
def lift_limits(user_id: int):
    services = current_services()
    operator = current_operator()
    if not limits.lift(services.db, user_id, operator.name):
        abort(404)
    audit.record(services.db, operator, LIFT_LIMITS, user_id=user_id)
    flash("Limites liberados: as próximas mensagens desse contato voltam a ser respondidas.", "success")
    return redirect(safe_next(request.form.get("next"), url_for("dashboard.trust")))


@bp.get("/users/<int:user_id>/export.json")
def export_user(user_id: int):
    # Admins only. Checked here rather than with @admin_only: the route walk of admin pages
    # expects each to answer 200 without arguments, and this one needs a user that exists.
    if not is_admin():
        return forbidden()
    services = current_services()
    try:
        data = privacy.export_user(services.db, user_id)
    except privacy.PrivacyError:
        abort(404)
    audit.record(services.db, current_operator(), audit.EXPORT, user_id=user_id, detail={"format": "json"})
    body = json.dumps(data, ensure_ascii=False, indent=2)
    return Response(body, mimetype="application/json", headers={
        "Content-Disposition": f'attachment; filename="dados-usuario-{user_id}.json"'})
