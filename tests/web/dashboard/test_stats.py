"""Dashboard statistics (app/web/dashboard/stats.py) against hand-computed figures, on SQLite and PostgreSQL.

The clock is fixed at 2026-03-10 15:00 UTC, which is 12:00 in Brasília (UTC-3): local
"today" is 2026-03-10 and the 30-day window starts at local 2026-02-09 00:00, i.e.
2026-02-09 03:00 UTC. Rows near those boundaries check the day bucketing of both databases.
"""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from app.models import Handoff, Lead, Message, Turn, User
from app.web.dashboard import stats as stats_module
from app.web.dashboard.stats import compute_stats, percentiles

NOW = dt.datetime(2026, 3, 10, 15, 0)


def T(day: str, hhmm: str = "12:00") -> dt.datetime:  # noqa: N802 - reads like a literal
    return dt.datetime.fromisoformat(f"{day} {hhmm}")


def seed(db) -> dict:
    with db.session() as s:
        u1 = User(phone="+5511900000001", channel="whatsapp", profile_name="Ana",
                  first_seen_at=T("2026-03-10", "04:00"), last_seen_at=T("2026-03-10", "14:00"))
        # First seen at 02:00 UTC = 23:00 of the 9th in Brasília: not "new today".
        u2 = User(phone="+5511900000002", channel="whatsapp", profile_name="Bruno",
                  first_seen_at=T("2026-03-10", "02:00"), last_seen_at=T("2026-03-05"))
        u3 = User(phone="+5511900000003", channel="whatsapp", first_seen_at=T("2026-01-01"),
                  last_seen_at=T("2026-03-01"))
        sim = User(phone="sim:abc", channel="simulator", first_seen_at=T("2026-03-10", "14:00"),
                   last_seen_at=T("2026-03-10", "14:00"))
        s.add_all([u1, u2, u3, sim])
        s.flush()

        def msg(user, direction, kind, at, status, code=None, channel="whatsapp"):
            s.add(Message(user_id=user.id, direction=direction, kind=kind, created_at=at, updated_at=at,
                          status=status, error_code=code, channel=channel, body="x"))

        msg(u1, "in", "text", T("2026-03-10", "04:00"), "answered")               # local 03-10
        msg(u1, "out", "text", T("2026-03-10", "04:01"), "delivered")
        msg(u1, "out", "text", T("2026-03-10", "05:00"), "failed", "63024")
        msg(u2, "in", "audio", T("2026-03-10", "02:00"), "answered")              # local 03-09 23:00
        msg(u2, "out", "audio", T("2026-03-10", "02:30"), "read")
        msg(u2, "out", "text", T("2026-03-10", "02:31"), "failed", "63016")
        msg(u3, "in", "image", T("2026-03-01", "12:00"), "answered")              # other kind
        msg(u3, "out", "text", T("2026-03-01", "12:01"), "undelivered", "63016")
        msg(u3, "out", "text", T("2026-03-01", "12:02"), "sent")
        msg(u3, "in", "text", T("2026-02-09", "02:59"), "answered")               # local 02-08: outside
        msg(u3, "in", "text", T("2026-02-09", "03:00"), "answered")               # local 02-09 00:00: first day
        msg(sim, "in", "text", T("2026-03-10", "14:00"), "answered", channel="simulator")
        msg(sim, "out", "text", T("2026-03-10", "14:01"), "delivered", channel="simulator")

        # 21 answered turns: retrieve 0..200 step 10, answer always 5, end_to_end 1000..1200,
        # transcribe only on the first five (0..40).
        for i in range(21):
            timings = {"retrieve": 10 * i, "answer": 5, "end_to_end": 1000 + 10 * i}
            if i < 5:
                timings["transcribe"] = 10 * i
            s.add(Turn(user_id=u1.id, status="answered", timings=timings, created_at=T("2026-03-05")))
        s.add(Turn(user_id=u1.id, status="answered", timings=None, created_at=T("2026-03-05")))
        # Unanswered turns must not distort latency, and do count as errors.
        for kind, status in (("answer", "failed"), ("answer", "failed"), ("send", "waiting_retry")):
            s.add(Turn(user_id=u2.id, status=status, error_kind=kind, error="boom",
                       timings={"end_to_end": 999_999}, created_at=T("2026-03-09")))
        s.add(Turn(user_id=u3.id, status="failed", error_kind="transcribe", created_at=T("2026-01-01")))

        s.add_all([
            Lead(user_id=u1.id, name="Ana", interest="site", created_at=T("2026-03-08")),
            Lead(user_id=u2.id, name="Bruno", interest="SEO", created_at=T("2026-02-01")),
            Handoff(user_id=u1.id, reason="quer falar", status="open", opened_at=T("2026-03-10")),
            Handoff(user_id=u2.id, reason="x", status="closed", opened_at=T("2026-03-01")),
            Handoff(user_id=u3.id, reason="y", status="closed", opened_at=T("2026-02-01")),
        ])
    return {"users": (u1.id, u2.id, u3.id, sim.id)}


@pytest.fixture
def seeded_db(make_app):
    app = make_app(start_workers=False)
    db = app.extensions["endrigo"].db
    seed(db)
    return db


def test_users_without_the_simulator_use_brazilian_days(seeded_db):
    users = compute_stats(seeded_db, now=NOW, include_simulator=False)["users"]
    assert users == {"total": 3, "new_today": 1, "active_7d": 2, "simulator": 1}


def test_messages_per_local_day_text_vs_audio(seeded_db):
    result = compute_stats(seeded_db, now=NOW, include_simulator=False)
    messages = result["messages"]
    assert messages["last_30_days"] == {"total": 10, "inbound": 4, "outbound": 6, "text": 7, "audio": 2, "other": 1}
    per_day = messages["per_day"]
    assert len(per_day) == 30 and per_day[0]["date"] == "2026-02-09" and per_day[-1]["date"] == "2026-03-10"
    by_date = {d["date"]: d for d in per_day if d["inbound"] or d["outbound"]}
    assert by_date == {
        "2026-02-09": {"date": "2026-02-09", "text": 1, "audio": 0, "other": 0, "inbound": 1, "outbound": 0},
        "2026-03-01": {"date": "2026-03-01", "text": 2, "audio": 0, "other": 1, "inbound": 1, "outbound": 2},
        "2026-03-09": {"date": "2026-03-09", "text": 1, "audio": 2, "other": 0, "inbound": 1, "outbound": 2},
        "2026-03-10": {"date": "2026-03-10", "text": 3, "audio": 0, "other": 0, "inbound": 1, "outbound": 2},
    }
    assert result["timezone"].startswith("America/Sao_Paulo") and result["window_days"] == 30


def test_replies_by_delivery_status_with_error_codes(seeded_db):
    delivery = compute_stats(seeded_db, now=NOW, include_simulator=False)["delivery"]
    assert delivery["by_status"] == {"sent": 1, "delivered": 1, "read": 1, "failed": 2, "undelivered": 1}
    assert delivery["total"] == 6
    assert sorted((e["status"], e["code"], e["count"]) for e in delivery["errors"]) == [
        ("failed", "63016", 1), ("failed", "63024", 1), ("undelivered", "63016", 1)]


def test_latency_percentiles_over_answered_turns(seeded_db):
    latency = compute_stats(seeded_db, now=NOW, include_simulator=False)["latency"]
    assert latency["sample_turns"] == 21
    stages = latency["stages"]
    assert stages["retrieve"] == {"count": 21, "p50": 100.0, "p95": 190.0}
    assert stages["answer"] == {"count": 21, "p50": 5.0, "p95": 5.0}
    assert stages["transcribe"] == {"count": 5, "p50": 20.0, "p95": 38.0}  # 30 + 0.8 * 10
    assert stages["download"] == {"count": 0, "p50": None, "p95": None}
    assert set(stages) == {"gate", "download", "convert", "transcribe", "retrieve", "answer", "speak", "store",
                           "send"}
    assert latency["end_to_end"] == {"count": 21, "p50": 1100.0, "p95": 1190.0}


def test_latency_uses_only_the_most_recent_turns(seeded_db, monkeypatch):
    monkeypatch.setattr(stats_module, "LATENCY_SAMPLE", 8)
    latency = compute_stats(seeded_db, now=NOW, include_simulator=False)["latency"]
    # The newest eight turns: four unanswered ones, the answered one without timings, then the
    # answered ones with i = 20, 19, 18. Only those last three are measured.
    assert latency["sample_turns"] == 3
    assert latency["stages"]["retrieve"] == {"count": 3, "p50": 190.0, "p95": 199.0}


def test_turns_errors_leads_and_handoffs(seeded_db):
    result = compute_stats(seeded_db, now=NOW, include_simulator=False)
    assert result["turns"]["by_status"] == {"answered": 22, "failed": 2, "waiting_retry": 1}
    assert result["turns"]["total"] == 25
    assert result["turns"]["errors_by_kind"] == {"answer": 2, "send": 1}  # the January one is outside
    assert result["leads"] == {"total": 2, "last_7d": 1}
    assert result["handoffs"] == {"open": 1, "closed": 2, "total": 3}


def test_the_simulator_is_counted_in_every_figure_alike(seeded_db):
    with_sim = compute_stats(seeded_db, now=NOW)
    without = compute_stats(seeded_db, now=NOW, include_simulator=False)
    assert with_sim["include_simulator"] is True and without["include_simulator"] is False
    assert with_sim["users"] == {"total": 4, "new_today": 2, "active_7d": 3, "simulator": 1}
    assert with_sim["messages"]["last_30_days"]["total"] == without["messages"]["last_30_days"]["total"] + 2
    assert with_sim["delivery"]["by_status"]["delivered"] == without["delivery"]["by_status"]["delivered"] + 1
    # The simulator user's own turn, lead and handoff appear only when it is counted.
    with seeded_db.session() as s:
        sim_id = s.scalar(select(User.id).where(User.channel == "simulator"))
        s.add(Turn(user_id=sim_id, status="answered", timings={"end_to_end": 50_000}, created_at=T("2026-03-10")))
        s.add(Lead(user_id=sim_id, name="Teste", interest="teste", created_at=T("2026-03-10")))
        s.add(Handoff(user_id=sim_id, reason="teste", status="open", opened_at=T("2026-03-10")))
    with_sim = compute_stats(seeded_db, now=NOW)
    without = compute_stats(seeded_db, now=NOW, include_simulator=False)
    assert with_sim["turns"]["total"] == without["turns"]["total"] + 1 == 26
    assert with_sim["latency"]["sample_turns"] == without["latency"]["sample_turns"] + 1 == 22
    assert with_sim["latency"]["end_to_end"]["count"] == 22 and without["latency"]["end_to_end"]["count"] == 21
    assert with_sim["leads"]["total"] == 3 and without["leads"]["total"] == 2
    assert with_sim["handoffs"]["open"] == 2 and without["handoffs"]["open"] == 1


def test_empty_database(make_app):
    app = make_app(start_workers=False)
    result = compute_stats(app.extensions["endrigo"].db)
    assert result["users"]["total"] == 0 and result["messages"]["last_30_days"]["total"] == 0
    assert result["delivery"]["by_status"] == {"sent": 0, "delivered": 0, "read": 0, "failed": 0}
    assert result["latency"]["end_to_end"]["p50"] is None and len(result["messages"]["per_day"]) == 30


def test_percentiles_helper():
    assert percentiles([]) == {"count": 0, "p50": None, "p95": None}
    assert percentiles([7]) == {"count": 1, "p50": 7.0, "p95": 7.0}
    assert percentiles(list(range(0, 101))) == {"count": 101, "p50": 50.0, "p95": 95.0}


def test_every_pipeline_stage_has_a_latency_row_and_a_label():
    from app import pipeline
    from app.web.dashboard.blueprint import STAGE_LABELS

    names = tuple(name for name, _ in pipeline.STAGES)
    assert stats_module.STAGES == names
    assert set(STAGE_LABELS) == set(names) | {"realtime", "end_to_end"}  # realtime: the session of the realtime path


def seed_usage(db) -> None:
    """Turns with the usage the pipeline stores (app/pipeline/answer.py), around the window."""
    with db.session() as s:
        ana = User(phone="+5511900000011", channel="whatsapp", first_seen_at=T("2026-03-01"), last_seen_at=NOW)
        sim = User(phone="sim:usage", channel="simulator", first_seen_at=T("2026-03-01"), last_seen_at=NOW)
        s.add_all([ana, sim])
        s.flush()
        for usage, at in (
            ({"model_calls": 1, "input_tokens": 2000, "cached_tokens": 1536, "output_tokens": 50}, "2026-03-05"),
            # A burst: one abandoned attempt and the answered one.
            ({"model_calls": 2, "input_tokens": 4000, "cached_tokens": 1024, "output_tokens": 70}, "2026-03-09"),
            ({}, "2026-03-09"),  # no model call (e.g. a handoff already open): not a turn of this figure
            (None, "2026-03-09"),
            ({"model_calls": 9, "input_tokens": 90000, "cached_tokens": 0, "output_tokens": 900}, "2026-01-01"),
        ):
            s.add(Turn(user_id=ana.id, status="answered", usage=usage, created_at=T(at)))
        s.add(Turn(user_id=sim.id, status="answered", created_at=T("2026-03-10"),
                   usage={"model_calls": 1, "input_tokens": 3000, "cached_tokens": 2944, "output_tokens": 30}))


def test_usage_per_turn_and_cached_share_over_the_window(make_app):
    app = make_app(start_workers=False)
    db = app.extensions["endrigo"].db
    seed_usage(db)
    without = compute_stats(db, now=NOW, include_simulator=False)["usage"]
    assert without == {
        "turns": 2,
        "totals": {"model_calls": 3, "input_tokens": 6000, "cached_tokens": 2560, "output_tokens": 120},
        "per_turn": {"model_calls": 1.5, "input_tokens": 3000, "cached_tokens": 1280, "output_tokens": 60},
        "cached_share": round(2560 / 6000, 3),
    }
    with_sim = compute_stats(db, now=NOW)["usage"]
    assert with_sim["turns"] == 3 and with_sim["totals"]["model_calls"] == 4
    assert with_sim["cached_share"] == round((2560 + 2944) / 9000, 3)


def test_stats_page_shows_the_usage_card_or_its_empty_state(make_app):
    from tests.web.dashboard.test_dashboard import PASSWORD, login

    app = make_app(start_workers=False, dashboard_password=PASSWORD)
    client = app.test_client()
    login(client)
    empty = client.get("/stats").get_data(as_text=True)
    assert "Uso do modelo por atendimento" in empty and "Sem chamadas ao modelo neste período" in empty
    assert compute_stats(app.extensions["endrigo"].db)["usage"]["cached_share"] is None

    from app.db import utcnow

    with app.extensions["endrigo"].db.session() as s:
        user = User(phone="+5511900000021", channel="whatsapp", first_seen_at=utcnow(), last_seen_at=utcnow())
        s.add(user)
        s.flush()
        for calls, inp, cached, out in ((1, 2000, 1536, 50), (2, 4000, 1024, 70)):
            s.add(Turn(user_id=user.id, status="answered", created_at=utcnow(),
                       usage={"model_calls": calls, "input_tokens": inp, "cached_tokens": cached, "output_tokens": out}))
    page = client.get("/stats").get_data(as_text=True)
    assert "Sem chamadas ao modelo neste período" not in page
    assert 'data-usage="model_calls">1,50<' in page
    assert 'data-usage="input_tokens">3.000<' in page and 'data-usage="output_tokens">60<' in page
    assert 'data-usage="cached_share">43%<' in page  # 2560 / 6000
    assert "Sobre 2 atendimentos com chamadas ao modelo" in page
