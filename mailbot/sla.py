"""Service-level due times: the priority table, business-hours calendars, pauses. Pure.

All inputs must be aware datetimes (a naive one raises ValueError) and every
instant returned is in UTC. Local time exists only inside a :class:`Calendar`,
through :mod:`zoneinfo`.

* **Targets.** The priority table gives hours to the first response and to
  resolution (spec defaults: critical 1/4, high 4/8, medium 8/24, low 24/48;
  the numbers come from settings). Both clocks start when the ticket opens.
* **Calendars.** A target is *business* time in a :class:`Calendar`: weekly
  shifts in the calendar's IANA time zone, minus holidays (local dates).
  :meth:`Calendar.always` (24/7, the default) makes business time wall time.
  Shifts follow ``agents.yaml`` (``{"mon-fri": ["09:00-18:00"]}``); an end of
  ``24:00`` closes the day and an end not after the start (``22:00-06:00``)
  runs past midnight. A shift belongs to the day it starts on, so a holiday
  cancels the shifts that start on it. Overlapping shifts count once.
* **DST.** Shifts are wall-clock times: a shift starts at the first instant
  the local clock shows its start and ends at the first instant it shows its
  end. A time skipped by a spring-forward jump therefore maps to the jump
  itself, a time repeated by a fall-back to its first occurrence; a
  ``00:00-24:00`` day lasts 23 or 25 hours on those dates.
* **Pauses.** While a ticket is pending the SLA clock stops. A pause is
  measured in the *business* time of the ticket's calendar
  (:func:`paused_time`), summed on the ticket, and added to the targets before
  they are laid on the calendar (:func:`due_times`), so a due time is always
  "opened + target + paused, counted in working time". A pause over a weekend
  or a holiday therefore moves nothing, and under 24/7 business time is wall
  time. Adding wall time instead would push a due by two working days after
  a pending weekend. A pause that starts after a due has passed cannot make it
  pass again later: the new due is still at or before the resumption.
* **Priority changes** recompute both due times from the opening time with
  the new priority's targets, keeping the paused time. A first response that
  was already sent keeps the due it was measured against.
* **Calendar choice** (:func:`choose_calendar`): a calendar set for the
  priority wins (e.g. critical is 24/7), then the team's, then the default.
  If the calendar changes with the priority, the paused time measured under
  the old one is kept as is; a caller that needs it exact re-measures the
  ticket's pauses with :func:`paused_time` under the new calendar.
* **Breaches and reminders.** A due is breached when the work was done, or is
  still not done at ``at``, strictly after the due time. A reminder falls a
  share of the way from start to due, in business time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: add_business_time gives up after walking this many days (about ten years).
MAX_WALK_DAYS: Final = 3660

ZERO: Final = timedelta(0)
_DAY: Final = timedelta(days=1)

#: A shift in local time: ``(start, end)``. The shift lasts ``(end - start)``
#: modulo 24 hours, where 0 means 24 hours: an end not after the start runs
#: past midnight and ``(00:00, 00:00)`` is the whole day ("00:00-24:00").
Shift = tuple[time, time]
_Interval = tuple[datetime, datetime]

_WHOLE_DAY: Final[Shift] = (time(0), time(0))
_FULL_WEEK: Final = tuple((_WHOLE_DAY,) for _ in WEEKDAYS)


def _offset(t: time) -> timedelta:
    return timedelta(hours=t.hour, minutes=t.minute, seconds=t.second, microseconds=t.microsecond)


def _length(shift: Shift) -> timedelta:
    return (_offset(shift[1]) - _offset(shift[0])) % _DAY or _DAY


@dataclass(frozen=True, slots=True)
class Calendar:
    """Working time: weekly shifts (index 0 = Monday) in ``time_zone``, minus holidays."""

    time_zone: str = "UTC"
    hours: tuple[tuple[Shift, ...], ...] = _FULL_WEEK
    holidays: frozenset[date] = frozenset()
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.time_zone!r}") from None
        object.__setattr__(self, "zone", zone)
        if len(self.hours) != len(WEEKDAYS):
            raise ValueError("hours needs one tuple of shifts per weekday, Monday first")
        week = []
        for shifts in self.hours:
            for start, end in shifts:
                if start.tzinfo is not None or end.tzinfo is not None:
                    raise ValueError("shift times are local: they take no tzinfo")
            week.append(tuple(sorted(shifts)))
        if not any(week):
            raise ValueError("the calendar has no working hours at all")
        object.__setattr__(self, "hours", tuple(week))
        object.__setattr__(self, "holidays", frozenset(self.holidays))

    @classmethod
    def always(cls) -> Calendar:
        """Round the clock, every day: business time is wall time."""
        return cls()

    @classmethod
    def weekly(
        cls,
        time_zone: str,
        hours: Mapping[int, Iterable[Shift]],
        holidays: Iterable[date] = (),
    ) -> Calendar:
        """From ``{weekday: shifts}`` (0 = Monday), as ``parse_working_hours`` returns."""
        if any(day not in range(7) for day in hours):
            raise ValueError("weekdays run from 0 (Monday) to 6 (Sunday)")
        week = tuple(tuple(hours.get(day, ())) for day in range(7))
        return cls(time_zone, week, frozenset(holidays))

    @property
    def is_always(self) -> bool:
        return not self.holidays and all(_WHOLE_DAY in shifts for shifts in self.hours)


ALWAYS: Final = Calendar.always()


class DueTimes(NamedTuple):
    first_response: datetime
    resolution: datetime


# -- parsing -----------------------------------------------------------------

_CALENDAR_KEYS: Final = frozenset({"time_zone", "hours", "holidays"})
_SHIFT_RE: Final = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")


def _parse_days(text: str) -> list[int]:
    first, _, last = text.strip().lower().partition("-")
    if first not in WEEKDAYS or (last and last not in WEEKDAYS):
        raise ValueError(f"unknown weekday or range {text!r} (use mon..sun, mon-fri)")
    start, end = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
    return [(start + i) % 7 for i in range((end - start) % 7 + 1)]


def _parse_shift(text: str) -> Shift:
    match = _SHIFT_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"expected a shift as HH:MM-HH:MM, got {text!r}")
    h1, m1, h2, m2 = map(int, match.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"bad time in shift {text!r}")
    if (h1, m1) == (h2, m2):
        raise ValueError(f"empty shift {text!r}")
    return time(h1, m1), time(h2 % 24, m2)


def _parse_hours(spec: Any, where: str) -> tuple[tuple[Shift, ...], ...]:
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a mapping of weekdays to shifts")
    week: list[list[Shift]] = [[] for _ in WEEKDAYS]
    for days, shifts in spec.items():
        if not isinstance(days, str):
            raise ValueError(f"{where}: expected a weekday or range, got {days!r}")
        if isinstance(shifts, str):
            shifts = [shifts]
        if not isinstance(shifts, Sequence) or not all(isinstance(s, str) for s in shifts):
            raise ValueError(f"{where}.{days}: expected a list of HH:MM-HH:MM shifts")
        try:
            day_list = _parse_days(days)
            parsed = [_parse_shift(text) for text in shifts]
        except ValueError as exc:
            raise ValueError(f"{where}.{days}: {exc}") from None
        for day in day_list:
            week[day].extend(parsed)
    if not any(week):
        raise ValueError(f"{where}: no working time in the week")
    return tuple(tuple(shifts) for shifts in week)


def _parse_holidays(spec: Any, where: str) -> frozenset[date]:
    if isinstance(spec, str) or not isinstance(spec, Sequence):
        raise ValueError(f"{where}: expected a list of dates YYYY-MM-DD")
    days: set[date] = set()
    for index, item in enumerate(spec):
        if isinstance(item, date) and not isinstance(item, datetime):
            days.add(item)
            continue
        try:
            if not isinstance(item, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", item.strip()):
                raise ValueError
            days.add(date.fromisoformat(item.strip()))
        except ValueError:
            raise ValueError(
                f"{where}[{index}]: expected a date YYYY-MM-DD, got {item!r}"
            ) from None
    return frozenset(days)


def parse_calendar(spec: Mapping[str, Any], *, where: str) -> Calendar:
    """A calendar from config: ``time_zone`` (default UTC), ``hours``, ``holidays``.

    ``{"time_zone": "Europe/Moscow", "hours": {"mon-fri": ["09:00-18:00"]},
    "holidays": ["2026-01-01"]}``. ``hours`` uses the ``agents.yaml`` syntax
    plus an end of ``24:00``; without it every day is worked in full. Raises
    ValueError naming ``where`` and the field.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a mapping")
    unknown = set(spec) - _CALENDAR_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    time_zone = spec.get("time_zone", "UTC")
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"{where}.time_zone: unknown time zone {time_zone!r}") from None
    hours = _parse_hours(spec["hours"], f"{where}.hours") if "hours" in spec else _FULL_WEEK
    holidays = _parse_holidays(spec.get("holidays", []), f"{where}.holidays")
    return Calendar(time_zone, hours, holidays)


# -- calendar arithmetic -------------------------------------------------------


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _instant(local: datetime, zone: ZoneInfo) -> datetime:
    """The first instant at which the clock in ``zone`` shows naive ``local`` or later."""
    before = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    after = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if before <= after:  # exists once, or twice (fall back): take the first
        return before
    # Skipped by a spring-forward jump: the answer is the jump. fold=1 read the
    # time with the new offset (an instant before the jump), fold=0 with the
    # old one (after it). Transitions fall on whole seconds: bisect them.
    new_offset = local.replace(tzinfo=zone, fold=1).utcoffset()
    lo, hi = math.floor(after.timestamp()), math.ceil(before.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == new_offset:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _day_intervals(calendar: Calendar, day: date) -> list[_Interval]:
    if day in calendar.holidays:
        return []
    midnight = datetime.combine(day, time())
    out = []
    for shift in calendar.hours[day.weekday()]:
        local_start = midnight + _offset(shift[0])
        start = _instant(local_start, calendar.zone)
        end = _instant(local_start + _length(shift), calendar.zone)
        if start < end:
            out.append((start, end))
    return out


def _intervals(calendar: Calendar, first: date, last: date) -> Iterator[_Interval]:
    """Working time of the shifts starting on ``first``..``last``, merged, in order."""
    current: _Interval | None = None
    day = first
    while day <= last:
        for start, end in _day_intervals(calendar, day):
            if current is None:
                current = (start, end)
            elif start <= current[1]:
                current = (current[0], max(current[1], end))
            else:
                yield current
                current = (start, end)
        day += _DAY
    if current is not None:
        yield current


def add_business_time(start: datetime, duration: timedelta, calendar: Calendar) -> datetime:
    """The instant at which ``duration`` of working time has passed since ``start``.

    A zero duration gives ``start`` itself. Raises ValueError for a naive
    ``start``, a negative duration, or when the calendar has not that much
    working time within :data:`MAX_WALK_DAYS` days.
    """
    start = _utc(start, "start")
    if duration < ZERO:
        raise ValueError(f"duration must not be negative, got {duration}")
    if calendar.is_always or not duration:
        return start + duration
    remaining = duration
    # A shift of the previous local day may still be running at ``start``.
    first = start.astimezone(calendar.zone).date() - _DAY
    for begin, end in _intervals(calendar, first, first + timedelta(days=MAX_WALK_DAYS)):
        if end <= start:
            continue
        begin = max(begin, start)
        if end - begin >= remaining:
            return begin + remaining
        remaining -= end - begin
    raise ValueError(f"the calendar has not {duration} of working time within {MAX_WALK_DAYS} days")


def business_time_between(start: datetime, end: datetime, calendar: Calendar) -> timedelta:
    """Working time from ``start`` to ``end``; ValueError if ``end`` is before ``start``."""
    start, end = _utc(start, "start"), _utc(end, "end")
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    if calendar.is_always:
        return end - start
    total = ZERO
    first = start.astimezone(calendar.zone).date() - _DAY
    last = end.astimezone(calendar.zone).date()
    for begin, finish in _intervals(calendar, first, last):
        lo, hi = max(begin, start), min(finish, end)
        if hi > lo:
            total += hi - lo
    return total


# -- a ticket's clock ----------------------------------------------------------


def due(start: datetime, priority: str, hours: Mapping[str, float]) -> datetime:
    """When the clock that started at ``start`` runs out for ``priority`` (wall time)."""
    if start.tzinfo is None:
        raise ValueError("SLA arithmetic needs an aware datetime")
    return start + timedelta(hours=hours[priority])


def target(priority: str, hours: Mapping[str, float]) -> timedelta:
    """The target for ``priority`` in a ``{priority: hours}`` table; ValueError if missing."""
    try:
        value = hours[priority]
    except KeyError:
        raise ValueError(f"no SLA hours for priority {priority!r}") from None
    if value < 0 or math.isnan(value):
        raise ValueError(f"SLA hours for priority {priority!r} must not be negative")
    return timedelta(hours=value)


def due_times(
    opened_at: datetime,
    priority: str,
    first_response_hours: Mapping[str, float],
    resolution_hours: Mapping[str, float],
    calendar: Calendar = ALWAYS,
    paused: timedelta = ZERO,
) -> DueTimes:
    """Both due times of a ticket opened at ``opened_at``, after ``paused`` business time."""
    if paused < ZERO:
        raise ValueError(f"paused time must not be negative, got {paused}")
    first = target(priority, first_response_hours) + paused
    resolution = target(priority, resolution_hours) + paused
    return DueTimes(
        first_response=add_business_time(opened_at, first, calendar),
        resolution=add_business_time(opened_at, resolution, calendar),
    )


def on_priority_change(
    opened_at: datetime,
    new_priority: str,
    first_response_hours: Mapping[str, float],
    resolution_hours: Mapping[str, float],
    calendar: Calendar = ALWAYS,
    paused: timedelta = ZERO,
    *,
    first_responded_at: datetime | None = None,
    first_response_due: datetime | None = None,
) -> DueTimes:
    """Due times recomputed from the opening time for ``new_priority``, pauses kept.

    Once the first response went out (``first_responded_at``), its outcome is
    settled: the current ``first_response_due``, when given, is kept.
    """
    fresh = due_times(
        opened_at, new_priority, first_response_hours, resolution_hours, calendar, paused
    )
    if first_responded_at is not None:
        _utc(first_responded_at, "first_responded_at")
        if first_response_due is not None:
            return fresh._replace(first_response=_utc(first_response_due, "first_response_due"))
    return fresh


def paused_time(
    pause_started: datetime, resumed: datetime, calendar: Calendar = ALWAYS
) -> timedelta:
    """The business time a pending spell took: add it to the ticket's paused total."""
    return business_time_between(pause_started, resumed, calendar)


def choose_calendar(
    priority: str,
    team: str | None,
    *,
    by_priority: Mapping[str, Calendar],
    by_team: Mapping[str, Calendar],
    default: Calendar = ALWAYS,
) -> Calendar:
    """The priority's calendar, else the team's, else ``default``."""
    if priority in by_priority:
        return by_priority[priority]
    if team is not None and team in by_team:
        return by_team[team]
    return default


def breached(due: datetime | None, at: datetime, done_at: datetime | None) -> bool:
    """Whether ``due`` was missed: done after it, or still not done after it at ``at``."""
    at = _utc(at, "at")
    if due is None:
        return False
    deadline = _utc(due, "due")
    if done_at is not None:
        return _utc(done_at, "done_at") > deadline
    return at > deadline


def reminder_at(
    start: datetime, due: datetime, share: float, calendar: Calendar = ALWAYS
) -> datetime:
    """The instant ``share`` (0..1) of the business time from ``start`` to ``due`` has passed."""
    if not 0 <= share <= 1:
        raise ValueError(f"share must lie between 0 and 1, got {share}")
    span = business_time_between(start, due, calendar)
    return add_business_time(start, span * share, calendar)
