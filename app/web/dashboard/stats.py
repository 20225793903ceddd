"""Dashboard statistics: SQL aggregates plus latency percentiles, portable to SQLite and PostgreSQL.

``compute_stats(db, now=None, include_simulator=True)`` returns one JSON-ready dict (the
shape of /stats.json):

- ``users``: total, new today, active in the last 7 days, and how many are simulator users;
- ``messages``: per local day for the last 30 days, text vs audio, inbound vs outbound;
- ``delivery``: our replies by delivery status, and the Twilio error codes of failures;
- ``latency``: p50/p95 per pipeline stage and end to end, over the most recent answered turns;
- ``turns``: turns by status and errors by kind (``Turn.error_kind``);
- ``usage``: model calls and tokens (input, cached input, output) per turn and the cached
  share of input, from ``Turn.usage`` of the turns created in the window that called the
  model (every attempt counts: an abandoned or retried one cost its calls too);
- ``leads`` and ``handoffs``.

Counting is done by the database (aggregates over index ranges, ``GROUP BY`` for the
small groupings); percentiles are computed with numpy over the timings JSON of the latest
``LATENCY_SAMPLE`` turns, which is portable (no ``percentile_cont`` on SQLite) and bounded
in cost. bench/bench_stats.py times it all on 100,000 messages.

Days are local days in Brazil: America/Sao_Paulo has been UTC-3 all year since daylight
saving time was abolished in 2019, so a fixed offset is exact. Day boundaries (local
midnight, in naive UTC like every stored timestamp) are computed in Python and passed as
parameters, so no SQL date function is needed and the queries are the same on SQLite and
PostgreSQL.

Simulator traffic (the dashboard's chat) is counted like any other, in every figure alike,
so nine simulator turns show nine turns, their messages and their users; with
``include_simulator=False`` (the page's ``?simulator=0`` toggle) it is left out of every
figure alike: users, messages, deliveries, turns, latency, leads and handoffs.
"""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
from sqlalchemy import Integer, Text, case, cast, func, literal, select, union_all

from app.db import utcnow
from app.localtime import TIMEZONE_LABEL, local_midnight_utc, to_local
from app.models import TURN_ANSWERED, Handoff, Lead, Message, Turn, User
from app.pipeline import STAGE_NAMES

WINDOW_DAYS = 30
ACTIVE_DAYS = 7
LATENCY_SAMPLE = 5000
STAGES = STAGE_NAMES  # the pipeline's stages, in order
LATENCY_KEYS = STAGES + ("end_to_end",)
# Statuses the delivery chart always shows (zero when absent), in the order they happen.
DELIVERY_STATUSES = ("sent", "delivered", "read", "failed")
SIMULATOR = "simulator"


def percentiles(values: list[float]) -> dict:
    """count, p50 and p95 (numpy's linear interpolation), in ms rounded to 0.1."""
    if not values:
        return {"count": 0, "p50": None, "p95": None}
    p50, p95 = np.percentile(np.asarray(values, dtype=float), [50, 95])
    return {"count": len(values), "p50": round(float(p50), 1), "p95": round(float(p95), 1)}


def compute_stats(db, now: dt.datetime | None = None, include_simulator: bool = True) -> dict:
    """Every dashboard figure at ``now`` (naive UTC; default: the current time), with or
    without the simulator's traffic."""
    now = now or utcnow()
    today = to_local(now).date()
    first_day = today - dt.timedelta(days=WINDOW_DAYS - 1)
    window_start = local_midnight_utc(first_day)
    today_start = local_midnight_utc(today)
    active_since = now - dt.timedelta(days=ACTIVE_DAYS)

    sim = include_simulator
    with db.session() as session:
        users = _users(session, today_start, active_since, sim)
        messages = _messages(session, first_day, sim)
        delivery = _delivery(session, window_start, sim)
        turns = _turns(session, window_start, sim)
        usage = _usage(session, window_start, sim)
        latency = _latency(session, sim)
        leads = _leads(session, now - dt.timedelta(days=ACTIVE_DAYS), sim)
        handoffs = _handoffs(session, sim)

    return {
        "generated_at": now.isoformat(timespec="seconds") + "Z",
        "timezone": TIMEZONE_LABEL,
        "window_days": WINDOW_DAYS,
        "include_simulator": include_simulator,
        "users": users,
        "messages": messages,
        "delivery": delivery,
        "latency": latency,
        "turns": turns,
        "usage": usage,
        "leads": leads,
        "handoffs": handoffs,
    }


def _not_simulator(user_id_column):
    """A condition: the row belongs to a user who is not a simulator contact."""
    return user_id_column.not_in(select(User.id).where(User.channel == SIMULATOR))


def _users(session, today_start: dt.datetime, active_since: dt.datetime, include_simulator: bool) -> dict:
    is_sim = case((User.channel == SIMULATOR, 1), else_=0)
    rows = session.execute(
        select(
            is_sim,
            func.count(),
            func.sum(case((User.first_seen_at >= today_start, 1), else_=0)),
            func.sum(case((User.last_seen_at >= active_since, 1), else_=0)),
        ).group_by(is_sim)
    ).all()
    out = {"total": 0, "new_today": 0, "active_7d": 0, "simulator": 0}
    for sim, total, new_today, active in rows:
        if sim:
            out["simulator"] = int(total)
            if not include_simulator:
                continue
        out["total"] += int(total)
        out["new_today"] += int(new_today or 0)
        out["active_7d"] += int(active or 0)
    return out


def _messages(session, first_day: dt.date, include_simulator: bool) -> dict:
    """Messages per local day: one range aggregate per day, sent as one UNION ALL statement.

    Each branch is an index range scan on ``created_at`` (ix_messages_created) with
    conditional sums, and the day boundaries (local midnights, in UTC) come from Python:
    no date function, so the SQL is the same on SQLite and PostgreSQL. It is also faster
    than ``GROUP BY date(...)``, which made SQLite sort every row of the window (82 vs 31 ms
    on 100,000 messages, see bench/bench_stats.py).
    """
    is_in = case((Message.direction == "in", 1), else_=0)
    is_text = case((Message.kind == "text", 1), else_=0)
    is_audio = case((Message.kind == "audio", 1), else_=0)
    channel = [] if include_simulator else [Message.channel != SIMULATOR]
    branches = []
    for index in range(WINDOW_DAYS):
        day = first_day + dt.timedelta(days=index)
        branches.append(
            select(literal(index, Integer).label("day"), func.count().label("total"),
                   func.sum(is_in).label("inbound"), func.sum(is_text).label("text"),
                   func.sum(is_audio).label("audio"))
            .where(Message.created_at >= local_midnight_utc(day),
                   Message.created_at < local_midnight_utc(day + dt.timedelta(days=1)), *channel)
        )
    per_day = []
    totals = {"total": 0, "inbound": 0, "outbound": 0, "text": 0, "audio": 0, "other": 0}
    for index, total, inbound, text, audio in sorted(session.execute(union_all(*branches)).all()):
        total, inbound, text, audio = int(total), int(inbound or 0), int(text or 0), int(audio or 0)
        bucket = {"date": (first_day + dt.timedelta(days=index)).isoformat(), "text": text, "audio": audio,
                  "other": total - text - audio, "inbound": inbound, "outbound": total - inbound}
        per_day.append(bucket)
        totals["total"] += total
        for key in ("text", "audio", "other", "inbound", "outbound"):
            totals[key] += bucket[key]
    return {"last_30_days": totals, "per_day": per_day}


def _delivery(session, window_start: dt.datetime, include_simulator: bool) -> dict:
    # Status and error code are open-ended, so this one is a GROUP BY (over outbound rows only).
    channel = [] if include_simulator else [Message.channel != SIMULATOR]
    rows = session.execute(
        select(Message.status, Message.error_code, func.count())
        .where(Message.direction == "out", Message.created_at >= window_start, *channel)
        .group_by(Message.status, Message.error_code)
    ).all()
    by_status = {status: 0 for status in DELIVERY_STATUSES}
    errors: dict[tuple[str, str], int] = {}
    for status, error_code, count in rows:
        by_status[status] = by_status.get(status, 0) + count
        if error_code:
            errors[(status, error_code)] = errors.get((status, error_code), 0) + count
    error_list = [{"status": s, "code": c, "count": n} for (s, c), n in errors.items()]
    error_list.sort(key=lambda e: (-e["count"], e["code"], e["status"]))
    return {"total": sum(by_status.values()), "by_status": by_status, "errors": error_list}


def _turns(session, window_start: dt.datetime, include_simulator: bool) -> dict:
    # One pass for both groupings: turns has no index on created_at, so each pass is a scan.
    users = [] if include_simulator else [_not_simulator(Turn.user_id)]
    rows = session.execute(
        select(Turn.status, Turn.error_kind, func.count())
        .where(Turn.created_at >= window_start, *users)
        .group_by(Turn.status, Turn.error_kind)
    ).all()
    by_status: dict[str, int] = {}
    errors: dict[str, int] = {}
    for status, error_kind, count in rows:
        by_status[status] = by_status.get(status, 0) + count
        if error_kind:
            errors[error_kind] = errors.get(error_kind, 0) + count
    errors = dict(sorted(errors.items(), key=lambda item: (-item[1], item[0])))
    return {"total": sum(by_status.values()), "by_status": by_status, "errors_by_kind": errors}


USAGE_KEYS = ("model_calls", "input_tokens", "cached_tokens", "output_tokens")


def _usage(session, window_start: dt.datetime, include_simulator: bool) -> dict:
    """Model calls and tokens over the window's turns that called the model.

    ``Turn.usage`` is JSON without a portable SQL accessor, so the column comes as text
    (one ``json.loads`` for all rows, as in ``_latency``) and is summed here; one short
    JSON object per turn of the window.
    """
    query = select(cast(Turn.usage, Text)).where(Turn.created_at >= window_start, Turn.usage.is_not(None))
    if not include_simulator:
        query = query.where(_not_simulator(Turn.user_id))
    raws = [raw for (raw,) in session.execute(query).all() if raw]
    parsed = json.loads("[" + ",".join(raws) + "]") if raws else []
    totals = {key: 0 for key in USAGE_KEYS}
    turns = 0
    for usage in parsed:
        if not isinstance(usage, dict) or not usage.get("model_calls"):
            continue
        turns += 1
        for key in USAGE_KEYS:
            value = usage.get(key)
            if isinstance(value, (int, float)):
                totals[key] += int(value)
    per_turn = {key: ((round(totals[key] / turns, 2) if key == "model_calls" else round(totals[key] / turns))
                      if turns else None)
                for key in USAGE_KEYS}
    share = totals["cached_tokens"] / totals["input_tokens"] if totals["input_tokens"] else None
    return {"turns": turns, "totals": totals, "per_turn": per_turn,
            "cached_share": round(share, 3) if share is not None else None}


def _latency(session, include_simulator: bool) -> dict:
    # The newest turns by primary key (an index walk backwards on both databases, ~2 ms);
    # answered ones are picked here rather than in SQL, where "status = 'answered' ORDER BY
    # id DESC" made both planners use the status index and sort (~60 ms on 50,000 turns).
    # The timings come as text and are parsed in one json.loads call: half the cost of
    # letting the JSON column type decode 5,000 values one by one.
    query = select(Turn.status, cast(Turn.timings, Text))
    if not include_simulator:
        query = query.where(_not_simulator(Turn.user_id))
    rows = session.execute(query.order_by(Turn.id.desc()).limit(LATENCY_SAMPLE)).all()
    parsed = json.loads("[" + ",".join(raw if raw else "null" for _, raw in rows) + "]")
    values: dict[str, list[float]] = {key: [] for key in LATENCY_KEYS}
    used = 0
    for (status, _), timings in zip(rows, parsed, strict=True):
        if status != TURN_ANSWERED or not isinstance(timings, dict):
            continue
        used += 1
        for key in LATENCY_KEYS:
            value = timings.get(key)
            if isinstance(value, (int, float)):
                values[key].append(float(value))
    return {
        "sample_turns": used,
        "sample_limit": LATENCY_SAMPLE,
        "stages": {key: percentiles(values[key]) for key in STAGES},
        "end_to_end": percentiles(values["end_to_end"]),
    }


def _leads(session, since: dt.datetime, include_simulator: bool) -> dict:
    query = select(func.count(), func.sum(case((Lead.created_at >= since, 1), else_=0)))
    if not include_simulator:
        query = query.where(_not_simulator(Lead.user_id))
    total, recent = session.execute(query).one()
    return {"total": int(total or 0), "last_7d": int(recent or 0)}


def _handoffs(session, include_simulator: bool) -> dict:
    query = select(Handoff.status, func.count())
    if not include_simulator:
        query = query.where(_not_simulator(Handoff.user_id))
    counts = dict(session.execute(query.group_by(Handoff.status)).all())
    return {"open": int(counts.get("open", 0)), "closed": int(counts.get("closed", 0)),
            "total": int(sum(counts.values()))}

