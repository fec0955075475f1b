"""The managers' daily digest: one local day's KPIs, a 7-day trend, the open queue.

:func:`build_digest` reads ``mailbot.store.kpis`` over one session and folds
the rows into a :class:`Digest`; :func:`digest_context` turns it into plain
values for the ``manager/digest`` mail templates. No mail is sent here and no
settings are read; the clock is the injected ``now``. The full definitions,
with examples, are in ``docs/digest.md``.

**Days.** ``day`` is a calendar day in the manager's ``time_zone``: from its
local midnight to the next, converted to UTC with ``zoneinfo`` (so a DST day
lasts 23 or 25 hours). The trend is the 7 local days ending with ``day``, one
:class:`DayFigures` each. Spam is left out everywhere.

**Per day** (``start <= instant < end``):

* *volume*: tickets created that day, by category, priority and source
  (merged tickets included: they were received).
* *first response*: over the tickets created that day (merged ones left
  out), ``first_response_at - created_at`` of those answered by ``now``
  (median, 90th percentile); ``unanswered`` counts the others. *First response
  within SLA*: answered at or before the first-response due time, over the
  tickets with such a due time that are answered or whose due time has passed
  on their clock (``now``, or ``pending_since`` while the SLA clock is stopped).
* *resolution*: over the tickets resolved that day (``resolved_at`` in the
  day, still resolved or closed, not merged), ``resolved_at - created_at``.
  Wall-clock durations: time spent pending is not subtracted.
* *within SLA*: of those resolved tickets that have at least one due time,
  the share whose first public reply came at or before the first-response
  due time (none at all is a miss) and whose resolution came at or before the
  resolution due time. A missing due time is no target.
* *satisfaction*: the average rating (1-5) of the tickets resolved that day
  that have one, and how many have one (ratings arrive after the resolution,
  so recent days fill in over time).
* *first-contact resolution*: of the tickets resolved that day, the share
  with exactly one public agent reply (``author_type`` support, not
  internal) that were never reopened.
* *reopen rate*: tickets reopened that day (a status change to
  ``reopened``) over tickets finished that day (a status change to
  ``resolved``, or to ``closed`` from any status but ``resolved``), both
  counted once per ticket, merged tickets left out. It can exceed 100%.
* *escalations*: ``history`` rows ``field="escalation"`` that day.
* *per agent*: the resolved tickets by assignee: how many, median resolution,
  satisfaction, within SLA. Active agents (role ``agent``) with none are
  listed too, and unassigned tickets get a row of their own.

**As of now**: the *backlog* (open tickets: not resolved, closed, spam or
merged) by status and by age ``now - created_at`` (under 1 day, 1-3, 3-7, 7
days or more); *breached* tickets (an SLA target passed on the ticket's
clock; the first-response target only while unanswered) and *at risk* ones
(not breached, clock running, a target due within ``at_risk``).

**Recurring subjects**: over the 7 days' created tickets, normalised subjects
(:func:`normalise_subject`) shared by at least ``recurring_min`` tickets.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session

from mailbot.language import PRIORITY_NAMES, STATUS_NAMES
from mailbot.states import AgentRole, Priority, TicketSource, TicketStatus
from mailbot.store import kpis
from mailbot.store.kpis import AGE_BUCKETS, CreatedTicket, EventKind, ResolvedTicket

TREND_DAYS = 7
#: The statuses of an open ticket, in the spec's order.
OPEN_STATUSES = tuple(
    s.value for s in TicketStatus if s not in (TicketStatus.resolved, TicketStatus.closed)
)
#: Recurring subjects shown at most.
RECURRING_LIMIT = 10


@dataclass(frozen=True, slots=True)
class Share:
    """``hits`` out of ``total``; ``ratio`` is None when there is nothing to count."""

    hits: int
    total: int

    @property
    def ratio(self) -> float | None:
        return self.hits / self.total if self.total else None


@dataclass(frozen=True, slots=True)
class Durations:
    count: int
    median: timedelta | None
    #: 90th percentile, nearest rank: the smallest value with at least 90% of
    #: the values at or below it.
    p90: timedelta | None

    @classmethod
    def of(cls, values: Iterable[timedelta]) -> Durations:
        ordered = sorted(values)
        if not ordered:
            return cls(0, None, None)
        n = len(ordered)
        middle = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
        return cls(n, middle, ordered[(90 * n + 99) // 100 - 1])


@dataclass(frozen=True, slots=True)
class Satisfaction:
    count: int
    average: float | None

    @classmethod
    def of(cls, ratings: Iterable[int | None]) -> Satisfaction:
        given = [r for r in ratings if r is not None]
        return cls(len(given), sum(given) / len(given) if given else None)


@dataclass(frozen=True, slots=True)
class AgentFigures:
    #: None for the row of unassigned tickets.
    email: str | None
    name: str
    handled: int
    resolution: Durations
    satisfaction: Satisfaction
    sla: Share


@dataclass(frozen=True, slots=True)
class DayFigures:
    day: date
    start: datetime
    end: datetime
    created: int
    by_category: Mapping[str | None, int]
    by_priority: Mapping[str, int]
    by_source: Mapping[str, int]
    first_response: Durations
    unanswered: int
    first_response_sla: Share
    resolved: int
    resolution: Durations
    sla: Share
    satisfaction: Satisfaction
    first_contact: Share
    #: hits: tickets reopened, total: tickets finished.
    reopen_rate: Share
    escalations: int
    agents: tuple[AgentFigures, ...]


@dataclass(frozen=True, slots=True)
class Backlog:
    #: Every open status, zeros included, in the spec's order.
    by_status: Mapping[str, int]
    #: Every age bucket key of ``kpis.AGE_BUCKETS``, in order.
    by_age: Mapping[str, int]
    cells: Mapping[tuple[str, str], int]

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True, slots=True)
class RecurringSubject:
    subject: str
    count: int
    #: Ticket numbers, oldest first.
    numbers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Digest:
    day: date
    time_zone: str
    now: datetime
    at_risk: timedelta
    #: The trend, oldest first; the last one is ``day``.
    days: tuple[DayFigures, ...]
    backlog: Backlog
    watch: kpis.SlaWatch
    recurring: tuple[RecurringSubject, ...]
    recurring_min: int

    @property
    def figures(self) -> DayFigures:
        return self.days[-1]


def day_start(day: date, zone: ZoneInfo) -> datetime:
    """The UTC instant of ``day``'s local midnight (the first one if it repeats)."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


_TICKET_TOKEN = re.compile(r"\[[^\[\]]*#\s*\d+[^\[\]]*\]")
_REPLY_PREFIX = re.compile(
    r"^(?:(?:re|fwd?|aw|wg|sv|vs|tr|antw|отв|ответ|пересл)\s*(?:\[\d+\]|\(\d+\))?\s*:\s*)+",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_SPACE = re.compile(r"\s+")


def normalise_subject(subject: str) -> str:
    """Lower-case, without ticket tokens (``[#12]``) and reply or forward prefixes
    (``Re:``, ``Fwd:``, ``AW:``, ``Отв:`` ...), numbers collapsed to ``#``.

    ``"[#12] RE: Fwd: Invoice 2024-117 missing"`` becomes ``"invoice # missing"``.
    """
    text = _SPACE.sub(" ", _TICKET_TOKEN.sub(" ", subject)).strip()
    text = _REPLY_PREFIX.sub("", text).lower()
    return _SPACE.sub(" ", _NUMBER.sub("#", text)).strip(" -:;,.!?")


def recurring_subjects(
    created: Iterable[CreatedTicket], minimum: int, limit: int = RECURRING_LIMIT
) -> tuple[RecurringSubject, ...]:
    """Normalised subjects of at least ``minimum`` tickets, most frequent first."""
    numbers: dict[str, list[int]] = defaultdict(list)
    for ticket in created:
        key = normalise_subject(ticket.subject)
        if key:
            numbers[key].append(ticket.number)
    found = [
        RecurringSubject(key, len(found), tuple(found))
        for key, found in numbers.items()
        if len(found) >= minimum
    ]
    found.sort(key=lambda r: (-r.count, r.subject))
    return tuple(found[:limit])


def first_response_met(ticket: CreatedTicket, now: datetime) -> bool | None:
    """Whether the first response met its due time; None while undecided or without one."""
    due = ticket.first_response_due_at
    if due is None:
        return None
    if ticket.first_response_at is not None:
        return ticket.first_response_at <= due
    clock = min(now, ticket.pending_since) if ticket.pending_since else now
    return False if due < clock else None


def sla_met(ticket: ResolvedTicket) -> bool | None:
    """Whether a resolved ticket met both its due times; None when it has none."""
    first_due, resolution_due = ticket.first_response_due_at, ticket.resolution_due_at
    if first_due is None and resolution_due is None:
        return None
    first_ok = first_due is None or (
        ticket.first_response_at is not None and ticket.first_response_at <= first_due
    )
    return first_ok and (resolution_due is None or ticket.resolved_at <= resolution_due)


def _sla_share(resolved: Sequence[ResolvedTicket]) -> Share:
    states = [s for s in map(sla_met, resolved) if s is not None]
    return Share(sum(states), len(states))


def _agent_figures(
    resolved: Sequence[ResolvedTicket], agents: Sequence[kpis.AgentRow]
) -> tuple[AgentFigures, ...]:
    by_agent: dict[int | None, list[ResolvedTicket]] = defaultdict(list)
    for ticket in resolved:
        by_agent[ticket.assignee_id].append(ticket)
    known = {a.id for a in agents}
    rows: list[tuple[str | None, str, list[ResolvedTicket]]] = []
    for agent in agents:
        mine = by_agent.get(agent.id, [])
        if mine or (agent.active and agent.role == AgentRole.agent.value):
            rows.append((agent.email, agent.name, mine))
    # A ticket's assignee is an agent; an id missing from the table reads as unassigned.
    orphans = [t for key, group in by_agent.items() if key not in known for t in group]
    if orphans:
        rows.append((None, "", orphans))
    figures = [
        AgentFigures(
            email=email,
            name=name,
            handled=len(mine),
            resolution=Durations.of(t.resolved_at - t.created_at for t in mine),
            satisfaction=Satisfaction.of(t.rating for t in mine),
            sla=_sla_share(mine),
        )
        for email, name, mine in rows
    ]
    figures.sort(key=lambda a: (a.email is None, -a.handled, a.email or ""))
    return tuple(figures)


def _by_count(counts: Counter[str | None]) -> dict[str | None, int]:
    """Largest first; ties by name, with None (no category) last."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or "")))


def day_figures(
    day: date,
    start: datetime,
    end: datetime,
    *,
    created: Sequence[CreatedTicket],
    resolved: Sequence[ResolvedTicket],
    events: Sequence[kpis.TicketEvent],
    agents: Sequence[kpis.AgentRow],
    now: datetime,
) -> DayFigures:
    """One day's figures from its rows (already limited to ``[start, end)``). Pure."""
    own = [t for t in created if not t.merged]  # a merged ticket is answered on its target
    answered = [t for t in own if t.first_response_at is not None]
    first_states = [s for s in (first_response_met(t, now) for t in own) if s is not None]
    reopened = {e.ticket_id for e in events if e.kind is EventKind.reopened}
    finished = {e.ticket_id for e in events if e.kind is EventKind.finished}
    priorities = Counter(t.priority for t in created)
    sources = Counter(t.source for t in created)
    return DayFigures(
        day=day,
        start=start,
        end=end,
        created=len(created),
        by_category=_by_count(Counter(t.category for t in created)),
        by_priority={p.value: priorities.get(p.value, 0) for p in Priority},
        by_source={s.value: sources.get(s.value, 0) for s in TicketSource},
        first_response=Durations.of(
            t.first_response_at - t.created_at for t in answered if t.first_response_at
        ),
        unanswered=len(own) - len(answered),
        first_response_sla=Share(sum(first_states), len(first_states)),
        resolved=len(resolved),
        resolution=Durations.of(t.resolved_at - t.created_at for t in resolved),
        sla=_sla_share(resolved),
        satisfaction=Satisfaction.of(t.rating for t in resolved),
        first_contact=Share(
            sum(1 for t in resolved if t.public_replies == 1 and not t.reopened), len(resolved)
        ),
        reopen_rate=Share(len(reopened), len(finished)),
        escalations=sum(1 for e in events if e.kind is EventKind.escalation),
        agents=_agent_figures(resolved, agents),
    )


def _backlog(counts: Iterable[kpis.BacklogCount]) -> Backlog:
    cells: dict[tuple[str, str], int] = {}
    by_status = dict.fromkeys(OPEN_STATUSES, 0)
    by_age = {key: 0 for key, _ in AGE_BUCKETS}
    for c in counts:
        cells[(c.status, c.age)] = cells.get((c.status, c.age), 0) + c.count
        by_status[c.status] = by_status.get(c.status, 0) + c.count
        by_age[c.age] += c.count
    return Backlog(by_status=by_status, by_age=by_age, cells=cells)


def build_digest(
    session: Session,
    *,
    day: date,
    time_zone: str,
    now: datetime,
    at_risk: timedelta,
    recurring_min: int = 3,
    watch_limit: int = 20,
) -> Digest:
    """The digest of local ``day`` in ``time_zone`` and the 6 days before it, as of ``now``.

    Raises ``ValueError`` for a naive ``now`` and ``zoneinfo.ZoneInfoNotFoundError``
    for an unknown time zone.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    zone = ZoneInfo(time_zone)
    days = [day - timedelta(days=back) for back in range(TREND_DAYS - 1, -1, -1)]
    bounds = [day_start(d, zone) for d in days] + [day_start(day + timedelta(days=1), zone)]
    start, end = bounds[0], bounds[-1]

    def per_day(rows: Iterable[Any], at: str) -> list[list[Any]]:
        out: list[list[Any]] = [[] for _ in days]
        for row in rows:
            out[bisect_right(bounds, getattr(row, at)) - 1].append(row)
        return out

    created = kpis.created_tickets(session, start, end)
    resolved = per_day(kpis.resolved_tickets(session, start, end), "resolved_at")
    events = per_day(kpis.ticket_events(session, start, end), "at")
    created_by_day = per_day(created, "created_at")
    agents = kpis.agents(session)
    figures = tuple(
        day_figures(
            d,
            bounds[i],
            bounds[i + 1],
            created=created_by_day[i],
            resolved=resolved[i],
            events=events[i],
            agents=agents,
            now=now,
        )
        for i, d in enumerate(days)
    )
    return Digest(
        day=day,
        time_zone=time_zone,
        now=now,
        at_risk=at_risk,
        days=figures,
        backlog=_backlog(kpis.backlog(session, now)),
        watch=kpis.sla_watch(session, now, at_risk, limit=watch_limit),
        recurring=recurring_subjects(created, recurring_min),
        recurring_min=recurring_min,
    )


# -- the templates' context -----------------------------------------------------------

_WORDS: dict[str, dict[str, Any]] = {
    "en": {
        "min": "min",
        "h": "h",
        "d": "d",
        "weekdays": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
        "short_weekdays": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
        "months": (
            "January", "February", "March", "April", "May", "June", "July", "August",
            "September", "October", "November", "December",
        ),
        "sources": {"web": "web", "email": "email", "chat": "chat", "api": "API"},
        "ages": {"lt1d": "< 1 d", "1-3d": "1-3 d", "3-7d": "3-7 d", "gt7d": "7 d +"},
        "no_category": "(none)",
        "unassigned": "(unassigned)",
        "targets": {"first_response": "first response", "resolution": "resolution"},
        "overdue": "overdue by {}",
        "due_in": "due in {}",
    },
    "ru": {
        "min": "мин",
        "h": "ч",
        "d": "д",
        "weekdays": (
            "понедельник", "вторник", "среда", "четверг", "пятница", "суббота", "воскресенье",
        ),
        "short_weekdays": ("пн", "вт", "ср", "чт", "пт", "сб", "вс"),
        "months": (
            "января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа",
            "сентября", "октября", "ноября", "декабря",
        ),
        "sources": {"web": "веб", "email": "почта", "chat": "чат", "api": "API"},
        "ages": {"lt1d": "< 1 д", "1-3d": "1-3 д", "3-7d": "3-7 д", "gt7d": "7 д +"},
        "no_category": "(без категории)",
        "unassigned": "(не назначен)",
        "targets": {"first_response": "первый ответ", "resolution": "решение"},
        "overdue": "просрочен на {}",
        "due_in": "срок через {}",
    },
}  # fmt: skip
NONE = "—"


def format_duration(value: timedelta | None, lang: str = "en") -> str:
    """``45 min``, ``2 h 05 min``, ``3 d 04 h`` (rounded to the minute); ``—`` for None."""
    if value is None:
        return NONE
    w = _WORDS.get(lang, _WORDS["en"])
    seconds = value.total_seconds()
    sign, minutes = ("-" if seconds < 0 else ""), int(abs(seconds) / 60 + 0.5)
    hours, mins = divmod(minutes, 60)
    if not hours:
        return f"{sign}{mins} {w['min']}"
    if hours < 24:
        return f"{sign}{hours} {w['h']} {mins:02d} {w['min']}"
    days, hours = divmod(hours, 24)
    return f"{sign}{days} {w['d']} {hours:02d} {w['h']}"


def format_share(share: Share, *, counts: bool = True) -> str:
    """``80% (4/5)``, or ``80%``; ``—`` when there is nothing to count."""
    if share.ratio is None:
        return NONE
    percent = f"{int(share.ratio * 100 + 0.5)}%"
    return f"{percent} ({share.hits}/{share.total})" if counts else percent


def format_rating(satisfaction: Satisfaction, lang: str) -> str:
    if satisfaction.average is None:
        return NONE
    text = f"{satisfaction.average:.1f}"
    return text.replace(".", ",") if lang == "ru" else text


def _date_label(day: date, lang: str) -> str:
    w = _WORDS[lang]
    weekday, month = w["weekdays"][day.weekday()], w["months"][day.month - 1]
    return f"{weekday}, {day.day} {month} {day.year}"


def _counts(pairs: Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
    return [{"name": name, "count": n} for name, n in pairs]


def digest_context(digest: Digest, lang: str) -> dict[str, Any]:
    """Plain values for ``mail/manager/digest.<lang>.*.j2``: strings and numbers only."""
    lang = lang if lang in _WORDS else "en"
    w = _WORDS[lang]
    zone = ZoneInfo(digest.time_zone)
    day = digest.figures

    def local(at: datetime) -> str:
        return at.astimezone(zone).strftime("%Y-%m-%d %H:%M")

    def dur(value: timedelta | None) -> str:
        return format_duration(value, lang)

    today = {
        "created": day.created,
        "resolved": day.resolved,
        "answered": day.first_response.count,
        "unanswered": day.unanswered,
        "first_response_median": dur(day.first_response.median),
        "first_response_p90": dur(day.first_response.p90),
        "first_response_sla": format_share(day.first_response_sla),
        "resolution_median": dur(day.resolution.median),
        "resolution_p90": dur(day.resolution.p90),
        "sla": format_share(day.sla),
        "satisfaction": format_rating(day.satisfaction, lang),
        "ratings": day.satisfaction.count,
        "first_contact": format_share(day.first_contact),
        "reopen_rate": format_share(day.reopen_rate),
        "reopened": day.reopen_rate.hits,
        "finished": day.reopen_rate.total,
        "escalations": day.escalations,
    }
    volume = {
        "by_category": _counts(
            (w["no_category"] if k is None else k, n) for k, n in day.by_category.items()
        ),
        "by_priority": _counts(
            (PRIORITY_NAMES[lang].get(k, k), n) for k, n in day.by_priority.items()
        ),
        "by_source": _counts((w["sources"].get(k, k), n) for k, n in day.by_source.items()),
    }
    trend = [
        {
            "day": f.day.strftime("%d.%m"),
            "weekday": w["short_weekdays"][f.day.weekday()],
            "created": f.created,
            "resolved": f.resolved,
            "first_response_median": dur(f.first_response.median),
            "resolution_median": dur(f.resolution.median),
            "sla": format_share(f.sla, counts=False),
            "satisfaction": format_rating(f.satisfaction, lang),
            "first_contact": format_share(f.first_contact, counts=False),
            "reopen_rate": format_share(f.reopen_rate, counts=False),
            "escalations": f.escalations,
        }
        for f in digest.days
    ]
    agents = [
        {
            "name": a.name or a.email or w["unassigned"],
            "email": a.email or "",
            "handled": a.handled,
            "resolution_median": dur(a.resolution.median),
            "satisfaction": format_rating(a.satisfaction, lang),
            "ratings": a.satisfaction.count,
            "sla": format_share(a.sla),
        }
        for a in day.agents
    ]
    ages = [key for key, _ in AGE_BUCKETS]
    backlog = {
        "total": digest.backlog.total,
        "ages": [w["ages"][k] for k in ages],
        "age_totals": [digest.backlog.by_age[k] for k in ages],
        "rows": [
            {
                "status": STATUS_NAMES[lang].get(status, status),
                "total": total,
                "counts": [digest.backlog.cells.get((status, k), 0) for k in ages],
            }
            for status, total in digest.backlog.by_status.items()
        ],
    }
    watch = digest.watch
    sla = {
        "breached": watch.breached,
        "at_risk": watch.at_risk,
        "more": watch.breached + watch.at_risk - len(watch.tickets),
        "tickets": [
            {
                "number": t.number,
                "subject": t.subject,
                "priority": PRIORITY_NAMES[lang].get(t.priority, t.priority),
                "status": STATUS_NAMES[lang].get(t.status, t.status),
                "assignee": t.assignee or w["unassigned"],
                "target": w["targets"][t.due_kind],
                "due": local(t.due_at),
                "breached": t.breached,
                "state": (w["overdue"] if t.breached else w["due_in"]).format(
                    dur(abs(digest.now - t.due_at))
                ),
            }
            for t in watch.tickets
        ],
    }
    recurring = [
        {
            "subject": r.subject,
            "count": r.count,
            "numbers": ", ".join(f"#{n}" for n in r.numbers[:5])
            + (", …" if len(r.numbers) > 5 else ""),
        }
        for r in digest.recurring
    ]
    return {
        "lang": lang,
        "day": digest.day.isoformat(),
        "day_label": _date_label(digest.day, lang),
        "time_zone": digest.time_zone,
        "generated_at": local(digest.now),
        "at_risk": dur(digest.at_risk),
        "recurring_min": digest.recurring_min,
        "today": today,
        "volume": volume,
        "trend": trend,
        "agents": agents,
        "backlog": backlog,
        "sla": sla,
        "recurring": recurring,
    }
