"""When the team works: BUSINESS_HOURS, parsed once at start-up, read in São Paulo time.

Grammar (case-insensitive; spaces around separators are free)::

    spec   := "always" | rule (";" rule)*
    rule   := days " " range ("," range)*
    days   := day | day "-" day          (a range wraps: "sat-mon" is Saturday to Monday)
    day    := mon | tue | wed | thu | fri | sat | sun
    range  := HH:MM "-" HH:MM            (start before end; "24:00" ends at midnight)

Examples: ``mon-fri 09:00-18:00`` (the default), ``mon-fri 08:00-12:00,13:00-18:00; sat 09:00-13:00``,
``always`` (24/7). A rule naming a day again adds ranges to it. A bad value stops start-up
with a message naming the variable (``ConfigError`` from app/config.py).

``BusinessHours.is_open(at)``, ``next_opening(at)`` (``at`` itself when open) and
``describe()`` (Portuguese, for the user) are all the rest of the app needs.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from app.localtime import SAO_PAULO, WEEKDAYS_PT

DEFAULT_BUSINESS_HOURS = "mon-fri 09:00-18:00"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES_PT = ("segunda", "terça", "quarta", "quinta", "sexta", "sábado", "domingo")
_RANGE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


class BusinessHoursError(ValueError):
    """BUSINESS_HOURS does not follow the grammar; the message says where."""


@dataclass(frozen=True)
class BusinessHours:
    # Per weekday (0 = Monday), sorted (start_minute, end_minute) pairs; all empty + always=True for 24/7.
    week: tuple[tuple[tuple[int, int], ...], ...]
    always: bool = False
    spec: str = DEFAULT_BUSINESS_HOURS

    # ---- parsing -------------------------------------------------------------------------
    @classmethod
    def parse(cls, spec: str | None) -> "BusinessHours":
        text = " ".join((spec or DEFAULT_BUSINESS_HOURS).strip().lower().split())
        if text in {"always", "24/7"}:
            return cls(week=((),) * 7, always=True, spec=text)
        week: list[list[tuple[int, int]]] = [[] for _ in DAYS]
        for rule in filter(None, (part.strip() for part in text.split(";"))):
            days_text, _, ranges_text = rule.partition(" ")
            days = _days(days_text, rule)
            ranges = [_range(part.strip(), rule) for part in ranges_text.replace(" ", "").split(",") if part.strip()]
            if not ranges:
                raise BusinessHoursError(f"'{rule}': missing the hours (e.g. mon-fri 09:00-18:00)")
            for day in days:
                week[day].extend(ranges)
        if not any(week):
            raise BusinessHoursError("no working hours at all (use 'always' for 24/7)")
        return cls(week=tuple(tuple(sorted(day)) for day in week), spec=text)

    # ---- questions -----------------------------------------------------------------------
    def is_open(self, at: dt.datetime) -> bool:
        """Whether ``at`` (aware, or naive UTC) falls in working hours."""
        if self.always:
            return True
        local = _local(at)
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.week[local.weekday()])

    def next_opening(self, at: dt.datetime) -> dt.datetime:
        """The first working moment at or after ``at``, as aware São Paulo time."""
        local = _local(at)
        if self.is_open(local):
            return local
        minute = local.hour * 60 + local.minute
        for offset in range(8):
            day = local.date() + dt.timedelta(days=offset)
            for start, _end in self.week[day.weekday()]:
                if offset == 0 and start <= minute:
                    continue
                return dt.datetime.combine(day, dt.time(start // 60, start % 60), tzinfo=SAO_PAULO)
        return local  # unreachable: parse() refuses a week without hours

    def describe(self) -> str:
        """The working hours in Portuguese, e.g. 'de segunda a sexta, das 09:00 às 18:00'."""
        if self.always:
            return "todos os dias, a qualquer hora"
        groups: list[tuple[list[int], tuple]] = []
        for day, ranges in enumerate(self.week):
            if not ranges:
                continue
            if groups and groups[-1][1] == ranges and groups[-1][0][-1] == day - 1:
                groups[-1][0].append(day)
            else:
                groups.append(([day], ranges))
        parts = []
        for days, ranges in groups:
            if len(days) == 1:
                label = f"{'no' if days[0] in (5, 6) else 'na'} {_DAY_NAMES_PT[days[0]]}"
            else:
                label = f"de {_DAY_NAMES_PT[days[0]]} a {_DAY_NAMES_PT[days[-1]]}"
            hours = " e ".join(f"das {_hhmm(start)} às {_hhmm(end)}" for start, end in ranges)
            parts.append(f"{label}, {hours}")
        return "; ".join(parts)


def describe_moment(moment: dt.datetime, now: dt.datetime) -> str:
    """'hoje às 09:00', 'amanhã às 09:00' or 'segunda-feira (07/12) às 09:00' in São Paulo time."""
    local, today = _local(moment), _local(now).date()
    time_text = local.strftime("%H:%M")
    if local.date() == today:
        return f"hoje às {time_text}"
    if local.date() == today + dt.timedelta(days=1):
        return f"amanhã às {time_text}"
    return f"{WEEKDAYS_PT[local.weekday()]} ({local.strftime('%d/%m')}) às {time_text}"


def _local(at: dt.datetime) -> dt.datetime:
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.timezone.utc)
    return at.astimezone(SAO_PAULO)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _days(text: str, rule: str) -> list[int]:
    first, _, last = text.partition("-")
    if first not in DAYS or (last and last not in DAYS):
        raise BusinessHoursError(f"'{rule}': days must be mon, tue, wed, thu, fri, sat, sun or a range like mon-fri")
    start = DAYS.index(first)
    end = DAYS.index(last) if last else start
    return [(start + i) % 7 for i in range((end - start) % 7 + 1)]


def _range(text: str, rule: str) -> tuple[int, int]:
    match = _RANGE.match(text)
    if not match:
        raise BusinessHoursError(f"'{rule}': hours must look like 09:00-18:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60 or start >= end:
        raise BusinessHoursError(f"'{rule}': '{text}' is not a range within one day (start before end)")
    return start, end
