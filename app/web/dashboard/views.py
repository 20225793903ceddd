"""Dashboard pages with personal data (login required): stats, conversations, leads, handoffs.

- ``/stats`` (HTML, or JSON when asked with ``Accept: application/json``) and ``/stats.json``;
  simulator traffic is counted unless ``?simulator=0``;
- ``/conversations/<id>``: one user's transcript, both sides in order, audio players,
  transcriptions, stage timings, delivery status, the team's messages with their author,
  the reply box and takeover/close buttons (app/web/dashboard/inbox.py handles their
  POSTs; the list itself lives there too), the team notifications and the audit trail;
  failed turns can be retried (POST);
- ``/leads`` and ``/handoffs`` (an operator closes a handoff so the bot speaks again);
- ``/audio/inbound/<message_id>``: a simulator upload, for the transcript's player.
  Inbound WhatsApp voice notes stay at Twilio (fetching them needs our credentials), so
  for those the page shows the transcription only.

Phone numbers are always shown masked (``mask_phone``). Leads are the exception: their
e-mail and phone were given to us through capture_lead precisely so the team gets back in
touch, so the (login-only) leads page shows them in full.
"""
from __future__ import annotations

import math
from urllib.parse import urlsplit

from flask import abort, flash, jsonify, redirect, render_template, request, send_file, url_for
from sqlalchemy import func, select, true

from app.assistant import handoff, team_notify
from app.audio.formats import mime_for_suffix
from app.channels.simulator.inbound import UPLOAD_SCHEME, SimulatorInputError, upload_path
from app.clients.storage import CONTENT_TYPES_BY_SUFFIX, LocalStorage, MediaTokenExpired, MediaTokenInvalid
from app.db import utcnow
from app.models import TURN_FAILED, TURN_TEAM, WAITING_HUMAN, Handoff, Lead, Message, Operator, Turn, User
from app.operators import audit
from app.redaction import redact
from app.services import current_services
from app.web.auth import current_operator, is_admin, json_endpoint, safe_next
from app.web.conversations import fingerprint, mark_read, waited_label
from app.web.dashboard.blueprint import bp
from app.web.dashboard.stats import STAGES, compute_stats

PAGE_SIZE = 25
TRANSCRIPT_PAGE = 200
LEADS_PAGE = 50


@bp.app_template_filter("redact")
def _redact_filter(value: str | None) -> str:
    return redact(value) if value else ""


def _page_arg() -> int:
    try:
        return max(1, int(request.args.get("page", 1)))
    except ValueError:
        return 1


# ---- stats ---------------------------------------------------------------------------------

def _include_simulator() -> bool:
    """``?simulator=0`` hides the simulator's traffic from every figure; shown by default."""
    return request.args.get("simulator", "1").strip().lower() not in ("0", "false", "no", "off")


@bp.get("/stats")
def stats():
    data = compute_stats(current_services().db, include_simulator=_include_simulator())
    if request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json":
        return jsonify(data)
    return render_template("stats.html", stats=data, stages=STAGES)


@bp.get("/stats.json")
@json_endpoint
def stats_json():
    return jsonify(compute_stats(current_services().db, include_simulator=_include_simulator()))


# ---- audio URLs --------------------------------------------------------------------------------

def _media_key(storage: LocalStorage, token: str) -> str | None:
    try:
        return storage.verify_token(token)
    except MediaTokenExpired:
        # The URL Twilio got has a short life; the operator may look weeks later. The token's
        # signature is still checked (without the age limit) before a fresh one is issued.
        try:
            key = storage.verify_token(token, ignore_age=True)
        except MediaTokenInvalid:
            return None
        return key if storage.path_for(key) else None
    except MediaTokenInvalid:
        return None


def playable_audio_url(message: Message) -> str | None:
    """A URL the operator's browser can play for ``message``'s audio, or None."""
    url = message.media_url
    if not url or message.kind != "audio":
        return None
    if message.direction == "in":
        if url.startswith(UPLOAD_SCHEME):
            return url_for("dashboard.inbound_audio", message_id=message.id)
        return None  # Twilio-hosted: needs our credentials; the transcription is shown instead
    storage = current_services().storage
    if isinstance(storage, LocalStorage):
        path = urlsplit(url).path
        if not path.startswith("/media/"):
            return None
        key = _media_key(storage, path[len("/media/"):])
        if key is None or storage.path_for(key) is None:
            return None
        # Same origin as the page, whatever PUBLIC_BASE_URL says (it may be a tunnel).
        return "/media/" + storage.make_token(key)
    return url if url.startswith(("https://", "http://")) else None


@bp.get("/audio/inbound/<int:message_id>")
def inbound_audio(message_id: int):
    with current_services().db.session() as session:
        message = session.get(Message, message_id)
    if message is None or message.direction != "in" or not (message.media_url or "").startswith(UPLOAD_SCHEME):
        abort(404)
    try:
        path = upload_path(current_services().settings, message.media_url)
    except SimulatorInputError:
        abort(404)
    if not path.is_file():
        abort(404)
    mimetype = mime_for_suffix(path.suffix) or "application/octet-stream"
    return send_file(path, mimetype=mimetype, conditional=True)


# ---- conversations ---------------------------------------------------------------------------

@bp.get("/conversations/<int:user_id>")
def transcript(user_id: int):
    before = request.args.get("before", type=int)
    with current_services().db.session() as session:
        user = session.get(User, user_id)
        if user is None:
            abort(404)
        rows = select(Message).where(Message.user_id == user_id)
        if before:
            rows = rows.where(Message.id < before)
        messages = list(reversed(session.scalars(
            rows.order_by(Message.created_at.desc(), Message.id.desc()).limit(TRANSCRIPT_PAGE + 1)).all()))
        has_older = len(messages) > TRANSCRIPT_PAGE
        messages = messages[-TRANSCRIPT_PAGE:] if has_older else messages
        turn_ids = {m.turn_id for m in messages if m.turn_id}
        turns = {t.id: t for t in session.scalars(select(Turn).where(Turn.id.in_(turn_ids)))} if turn_ids else {}
        handoffs = session.scalars(
            select(Handoff).where(Handoff.user_id == user_id).order_by(Handoff.opened_at.desc()).limit(10)).all()
        leads = session.scalars(select(Lead).where(Lead.user_id == user_id).order_by(Lead.created_at.desc())).all()
        open_handoff = session.scalar(select(Handoff).where(Handoff.user_id == user_id, Handoff.is_open(utcnow()))
                                      .order_by(Handoff.id.desc()).limit(1))
        author_ids = {m.operator_id for m in messages if m.operator_id}
        if open_handoff is not None and open_handoff.operator_id:
            author_ids.add(open_handoff.operator_id)
        authors = dict(session.execute(select(Operator.id, Operator.name).where(Operator.id.in_(author_ids))).all()
                       ) if author_ids else {}
        notifications = team_notify.for_handoffs(session, [h.id for h in handoffs])
    # Team turns with a part the provider did not take: the transcript offers to resend them.
    failed_team_turns = {m.turn_id for m in messages if m.direction == "out" and m.turn_id in turns
                         and turns[m.turn_id].status == TURN_TEAM and m.status in ("failed", "sending")}
    actions = audit.recent(current_services().db, limit=30, user_id=user_id)
    operator = current_operator()
    mark_read(current_services().db, operator.id, user_id)
    # A turn's summary goes after the last of its messages shown on this page.
    last_of_turn = {}
    for index, message in enumerate(messages):
        if message.turn_id:
            last_of_turn[message.turn_id] = index
    entries = [{
        "message": m,
        "audio_url": playable_audio_url(m),
        "turn": turns.get(m.turn_id) if last_of_turn.get(m.turn_id) == i else None,
    } for i, m in enumerate(messages)]
    now = utcnow()
    waiting = [m for m in messages if m.direction == "in" and m.status == WAITING_HUMAN]
    waited = waited_label(int((now - waiting[0].created_at).total_seconds())) if waiting else ""
    return render_template("transcript.html", user=user, entries=entries, has_older=has_older,
                           oldest_id=messages[0].id if messages else None, handoffs=handoffs, leads=leads,
                           stages=STAGES + ("realtime", "end_to_end"), turn_failed=TURN_FAILED, failed_team_turns=failed_team_turns,
                           open_handoff=open_handoff, authors=authors, actions=actions,
                           notifications=notifications, waited=waited, now=now,
                           state=fingerprint(current_services().db, user_id),
                           accept=",".join(sorted(CONTENT_TYPES_BY_SUFFIX)), admin=is_admin())


@bp.post("/turns/<int:turn_id>/retry")
def retry_turn(turn_id: int):
    services = current_services()
    with services.db.session() as session:
        turn = session.get(Turn, turn_id)
        if turn is None:
            abort(404)
        user_id = turn.user_id
    if services.inbox.retry_failed_turn(turn_id):
        flash("Nova tentativa iniciada. A resposta aparece aqui em instantes.", "success")
    else:
        flash("Esse atendimento não está mais com falha; nada a refazer.", "warning")
    return redirect(url_for("dashboard.transcript", user_id=user_id) + f"#turn-{turn_id}")


# ---- leads and handoffs ----------------------------------------------------------------------

@bp.get("/leads")
def leads():
    page = _page_arg()
    with current_services().db.session() as session:
        total = session.scalar(select(func.count()).select_from(Lead)) or 0
        pages = max(1, math.ceil(total / LEADS_PAGE))
        page = min(page, pages)
        rows = session.execute(
            select(Lead, User).join(User, User.id == Lead.user_id)
            .order_by(Lead.created_at.desc(), Lead.id.desc()).offset((page - 1) * LEADS_PAGE).limit(LEADS_PAGE)
        ).all()
    return render_template("leads.html", rows=rows, page=page, pages=pages, total=total)


HANDOFF_FILTERS = ("open", "closed", "all")


@bp.get("/handoffs")
def handoffs():
    status = request.args.get("status", "open")
    status = status if status in HANDOFF_FILTERS else "open"
    page = _page_arg()
    with current_services().db.session() as session:
        condition = true() if status == "all" else Handoff.status == status
        total = session.scalar(select(func.count()).select_from(Handoff).where(condition)) or 0
        pages = max(1, math.ceil(total / LEADS_PAGE))
        page = min(page, pages)
        rows = session.execute(
            select(Handoff, User).join(User, User.id == Handoff.user_id).where(condition)
            .order_by(Handoff.opened_at.desc(), Handoff.id.desc())
            .offset((page - 1) * LEADS_PAGE).limit(LEADS_PAGE)
        ).all()
        counts = dict(session.execute(select(Handoff.status, func.count()).group_by(Handoff.status)).all())
        notifications = team_notify.for_handoffs(session, [h.id for h, _ in rows])
    return render_template("handoffs.html", rows=rows, status=status, page=page, pages=pages, total=total,
                           counts=counts, now=utcnow(), notifications=notifications)


@bp.post("/handoffs/<int:handoff_id>/close")
def close_handoff(handoff_id: int):
    with current_services().db.session() as session:
        row = session.get(Handoff, handoff_id)
        user_id = row.user_id if row is not None else None
    if user_id is None:
        abort(404)
    if handoff.close_handoff(current_services(), user_id, by=current_operator(), handoff_id=handoff_id):
        flash("Atendimento humano encerrado: o robô volta a responder esse contato.", "success")
    else:
        flash("Esse atendimento humano já estava encerrado.", "info")
    return redirect(safe_next(request.form.get("next"), url_for("dashboard.handoffs")))
