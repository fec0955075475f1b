"""Figures for the web page and the JSON API, computed from store query results.

Pure calculations (no I/O): the queries live in ``mailbot.store.reports``;
``build_dashboard`` runs them over one session and folds the results into
plain values. A digest can reuse the same figures later.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from mailbot.states import Priority, TicketStatus
from mailbot.store import reports as queries
from mailbot.store.models import Ticket
from mailbot.store.reports import TicketLine

#: Tickets due within this time count as at risk.
AT_RISK = timedelta(hours=2)
TREND_DAYS = 30


@dataclass(frozen=True, slots=True)
class Kpis:
    created_today: int
    resolved_today: int
    open: int
    breached: int
    at_risk: int
    median_first_response_minutes: float | None


@dataclass(frozen=True, slots=True)
class TrendDay:
    day: str
    created: int
    resolved: int


@dataclass(frozen=True, slots=True)
class Dashboard:
    now: datetime
    by_status: dict[str, int]
    by_priority: dict[str, int]
    by_category: dict[str, int]
    by_agent: dict[str, int]
    kpis: Kpis
    trend: list[TrendDay]
    watch: list[TicketLine]
    inbound: dict[str, int] = field(default_factory=dict)
    outbound: dict[str, int] = field(default_factory=dict)

    @property
    def quarantined(self) -> int:
        return self.inbound.get("shunted", 0)

    @property
    def failed_mail(self) -> int:
        return self.outbound.get("failed", 0)


def day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _ranked(counts: dict[str | None, int], missing: str) -> dict[str, int]:
    """Largest first (ties by name), with ``None`` shown as ``missing``."""
    named: Counter[str] = Counter()
    for key, n in counts.items():
        named[key or missing] += n
    return dict(sorted(named.items(), key=lambda kv: (-kv[1], kv[0])))


def trend(
    created: dict[str, int], resolved: dict[str, int], today: datetime, days: int
) -> list[TrendDay]:
    out = []
    for back in range(days - 1, -1, -1):
        key = (today - timedelta(days=back)).date().isoformat()
        out.append(TrendDay(key, created.get(key, 0), resolved.get(key, 0)))
    return out


def median_minutes(pairs: list[tuple[datetime, datetime]]) -> float | None:
    waits = [(b - a).total_seconds() / 60 for a, b in pairs]
    return round(statistics.median(waits), 1) if waits else None


def build_dashboard(session: Session, now: datetime) -> Dashboard:
    today = day_start(now)
    since = today - timedelta(days=TREND_DAYS - 1)
    queue = queries.open_queue(session, now, AT_RISK)
    all_status = queries.status_counts(session)
    days = trend(
        queries.daily_counts(session, "created_at", since),
        queries.daily_counts(session, "resolved_at", since),
        today,
        TREND_DAYS,
    )
    kpis = Kpis(
        created_today=days[-1].created,
        resolved_today=days[-1].resolved,
        open=queue.total,
        breached=queue.breached,
        at_risk=queue.at_risk,
        median_first_response_minutes=median_minutes(queries.first_responses_since(session, today)),
    )
    return Dashboard(
        now=now,
        by_status={s.value: all_status.get(s.value, 0) for s in TicketStatus},
        by_priority={p.value: queue.by_priority.get(p.value, 0) for p in Priority},
        by_category=_ranked(queue.by_category, "(none)"),
        by_agent=_ranked(queue.by_assignee, "(unassigned)"),
        kpis=kpis,
        trend=days,
        watch=queries.sla_watch(session, now, AT_RISK),
        inbound=queries.inbound_counts(session),
        outbound=queries.outbound_counts(session),
    )


@dataclass(frozen=True, slots=True)
class SlaClock:
    """Where a ticket stands against its SLA, for people to read."""

    state: str  # "met", "running", "at risk", "breached", "none"
    first_response: str
    resolution: str


def _left(due: datetime | None, now: datetime) -> str:
    if due is None:
        return "no target"
    seconds = (due - now).total_seconds()
    span = abs(seconds)
    text = f"{int(span // 3600)}h {int(span % 3600 // 60):02d}m"
    return f"{text} left" if seconds >= 0 else f"overdue by {text}"


def ticket_clock(ticket: Ticket, now: datetime) -> SlaClock:
    """The SLA clock of a stored ticket (the ticket page and the JSON API)."""
    return sla_clock(
        status=ticket.status,
        first_response_at=ticket.first_response_at,
        first_response_due_at=ticket.sla_first_response_due_at,
        resolution_due_at=ticket.sla_resolution_due_at,
        resolved_at=ticket.resolved_at,
        now=now,
    )


def sla_clock(
    *,
    status: str,
    first_response_at: datetime | None,
    first_response_due_at: datetime | None,
    resolution_due_at: datetime | None,
    resolved_at: datetime | None,
    now: datetime,
) -> SlaClock:
    done = status in queries.DONE_STATUSES
    if first_response_at is not None:
        met = first_response_due_at is None or first_response_at <= first_response_due_at
        first = "answered in time" if met else "answered late"
    else:
        first = _left(first_response_due_at, now)
    if done:
        end = resolved_at or now
        met = resolution_due_at is None or end <= resolution_due_at
        resolution = "resolved in time" if met else "resolved late"
        return SlaClock("met" if met else "breached", first, resolution)
    resolution = _left(resolution_due_at, now)
    dues = [d for d in (resolution_due_at,) if d is not None]
    if first_response_at is None and first_response_due_at is not None:
        dues.append(first_response_due_at)
    if not dues:
        return SlaClock("none", first, resolution)
    nearest = min(dues)
    state = "breached" if nearest < now else "at risk" if nearest < now + AT_RISK else "running"
    return SlaClock(state, first, resolution)
