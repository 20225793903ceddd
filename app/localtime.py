"""Brasília time: the database keeps naive UTC, people (users and operators) read São Paulo time.

Brazil has had no daylight saving time since 2019, so a fixed UTC-3 is exact where the
system has no time-zone database (slim images without tzdata).
"""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def _sao_paulo_zone() -> dt.tzinfo:
    try:
        return ZoneInfo("America/Sao_Paulo")
    except ZoneInfoNotFoundError:
        return dt.timezone(dt.timedelta(hours=-3), "BRT")


SAO_PAULO = _sao_paulo_zone()
TIMEZONE_LABEL = "America/Sao_Paulo (UTC-03:00)"
WEEKDAYS_PT = ("segunda-feira", "terça-feira", "quarta-feira", "quinta-feira", "sexta-feira", "sábado", "domingo")


def now_local() -> dt.datetime:
    return dt.datetime.now(SAO_PAULO)


def to_local(naive_utc: dt.datetime | None) -> dt.datetime | None:
    """A stored naive-UTC timestamp as an aware São Paulo time (None stays None)."""
    if naive_utc is None:
        return None
    return naive_utc.replace(tzinfo=dt.timezone.utc).astimezone(SAO_PAULO)


def local_midnight_utc(day: dt.date) -> dt.datetime:
    """The naive-UTC instant at which the São Paulo ``day`` starts."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=SAO_PAULO)
    return start.astimezone(dt.timezone.utc).replace(tzinfo=None)
