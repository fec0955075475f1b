"""Read-only queries behind the KPIs: the managers' digest now, the web dashboard later.

Plain functions of a session and UTC bounds ``[start, end)`` returning small
frozen dataclasses. Spam is left out everywhere. Each query reaches its rows
through an index, so the cost follows the size of the window, not of the
table:

* :func:`created_tickets` — ``ix_ticket_created_at_spam``;
* :func:`resolved_tickets` — ``ix_ticket_resolved_at_spam``, with two
  correlated look-ups per ticket (``ix_message_ticket_id``,
  ``ix_history_ticket_id``) for first-contact resolution;
* :func:`backlog` and :func:`sla_watch` — the open-queue partial index
  ``ix_ticket_open_queue`` (its condition repeated word for word);
* :func:`ticket_events` — the exception: ``history`` has no index on
  ``created_at``, so this one reads the history table (small rows; one
  statement per digest). An index on ``history (created_at)`` would make it
  a range scan.

Percentiles and per-day buckets are left to the caller (``mailbot.digest``):
local calendar days do not map to one SQL expression on both SQLite and
PostgreSQL, and a week's rows are few.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, not_, or_, select, text
from sqlalchemy.sql.elements import ColumnElement, TextClause
from sqlmodel import Session, SQLModel

from mailbot.states import AuthorType, TicketStatus
from mailbot.store.models import OPEN_QUEUE_WHERE

_t = SQLModel.metadata.tables
_ticket, _history, _message, _agent = _t["ticket"], _t["history"], _t["message"], _t["agent"]

_DONE = (TicketStatus.resolved.value, TicketStatus.closed.value)
#: Backlog age buckets: (key, upper bound of the age; None = no bound).
AGE_BUCKETS: tuple[tuple[str, timedelta | None], ...] = (
    ("lt1d", timedelta(days=1)),
    ("1-3d", timedelta(days=3)),
    ("3-7d", timedelta(days=7)),
    ("gt7d", None),
)


@dataclass(frozen=True, slots=True)
class CreatedTicket:
    """A ticket created in the window: volume, first response, recurring subjects."""

    id: int
    number: int
    subject: str
    priority: str
    category: str | None
    source: str
    created_at: datetime
    first_response_at: datetime | None
    first_response_due_at: datetime | None
    #: Set while the SLA clock is stopped (waiting for the customer).
    pending_since: datetime | None
    #: Merged into another ticket (closed by the merge).
    merged: bool


def created_tickets(session: Session, start: datetime, end: datetime) -> list[CreatedTicket]:
    """Non-spam tickets with ``start <= created_at < end`` (merged ones included)."""
    t = _ticket.c
    stmt = (
        select(
            t.id,
            t.number,
            t.subject,
            t.priority,
            t.category,
            t.source,
            t.created_at,
            t.first_response_at,
            t.sla_first_response_due_at,
            t.pending_since,
            t.merged_into_id,
        )
        .where(t.created_at >= start, t.created_at < end, t.spam.is_(False))
        .order_by(t.created_at, t.id)
    )
    return [
        CreatedTicket(
            id=int(r[0]),
            number=int(r[1]),
            subject=str(r[2] or ""),
            priority=str(r[3]),
            category=r[4],
            source=str(r[5]),
            created_at=r[6],
            first_response_at=r[7],
            first_response_due_at=r[8],
            pending_since=r[9],
            merged=r[10] is not None,
        )
        for r in session.connection().execute(stmt)
    ]


@dataclass(frozen=True, slots=True)
class ResolvedTicket:
    """A ticket whose current resolution falls in the window."""

    id: int
    assignee_id: int | None
    created_at: datetime
    resolved_at: datetime
    first_response_at: datetime | None
    first_response_due_at: datetime | None
    resolution_due_at: datetime | None
    rating: int | None
    #: Public replies by agents (``author_type`` support, not internal), ever.
    public_replies: int
    #: Whether the ticket was ever reopened (a status change to ``reopened``).
    reopened: bool


def resolved_tickets(session: Session, start: datetime, end: datetime) -> list[ResolvedTicket]:
    """Non-spam, unmerged tickets with ``start <= resolved_at < end``, still resolved or closed.

    ``resolved_at`` is the latest resolution: a reopening clears it, so a
    ticket counts on the day it was last resolved. A ticket moved from
    ``resolved`` back to ``in_progress`` keeps a stale ``resolved_at``, hence
    the status condition.
    """
    t = _ticket.c
    replies = (
        select(func.count())
        .where(
            _message.c.ticket_id == t.id,
            _message.c.author_type == AuthorType.support.value,
            _message.c.internal.is_(False),
        )
        .scalar_subquery()
    )
    reopened = exists().where(
        _history.c.ticket_id == t.id,
        _history.c.field == "status",
        _history.c.new_value == TicketStatus.reopened.value,
    )
    stmt = (
        select(
            t.id,
            t.assignee_id,
            t.created_at,
            t.resolved_at,
            t.first_response_at,
            t.sla_first_response_due_at,
            t.sla_resolution_due_at,
            t.rating,
            replies,
            case((reopened, 1), else_=0),
        )
        .where(
            t.resolved_at >= start,
            t.resolved_at < end,
            t.spam.is_(False),
            t.merged_into_id.is_(None),
            t.status.in_(_DONE),
        )
        .order_by(t.resolved_at, t.id)
    )
    return [
        ResolvedTicket(
            id=int(r[0]),
            assignee_id=r[1],
            created_at=r[2],
            resolved_at=r[3],
            first_response_at=r[4],
            first_response_due_at=r[5],
            resolution_due_at=r[6],
            rating=None if r[7] is None else int(r[7]),
            public_replies=int(r[8] or 0),
            reopened=bool(r[9]),
        )
        for r in session.connection().execute(stmt)
    ]


_SPAM, _MERGED = 2, 1


class EventKind(enum.StrEnum):
    #: A ``history`` row ``field="escalation"``.
    escalation = "escalation"
    #: A status change to ``reopened``.
    reopened = "reopened"
    #: A status change to ``resolved``, or to ``closed`` from anything but
    #: ``resolved`` (a ticket closed without a resolution first).
    finished = "finished"


@dataclass(frozen=True, slots=True)
class TicketEvent:
    ticket_id: int
    kind: EventKind
    at: datetime


def _kind(field: str, old: str | None, new: str | None, merged: bool) -> EventKind | None:
    if field == "escalation":
        return EventKind.escalation
    if merged:  # merging closes a ticket: neither a resolution nor a reopening
        return None
    if new == TicketStatus.reopened.value:
        return EventKind.reopened
    if new == TicketStatus.resolved.value or (
        new == TicketStatus.closed.value and old != TicketStatus.resolved.value
    ):
        return EventKind.finished
    return None


def ticket_events(session: Session, start: datetime, end: datetime) -> list[TicketEvent]:
    """Escalations, reopenings and finishes of non-spam tickets with ``start <= at < end``.

    Reopenings and finishes of merged tickets are left out; their escalations count.
    The ticket's flags come from a correlated look-up by primary key rather than a
    join, so that the history rows drive the plan: joined, SQLite chose to walk every
    ticket and its history instead (twice the time on 100,000 tickets).
    """
    h, t = _history.c, _ticket.c
    flag = (
        select(case((t.spam.is_(True), _SPAM), (t.merged_into_id.is_not(None), _MERGED), else_=0))
        .where(t.id == h.ticket_id)
        .scalar_subquery()
    )
    stmt = select(h.ticket_id, h.field, h.old_value, h.new_value, h.created_at, flag).where(
        h.created_at >= start,
        h.created_at < end,
        or_(
            h.field == "escalation",
            and_(h.field == "status", h.new_value.in_((TicketStatus.reopened.value, *_DONE))),
        ),
    )
    events = []
    for ticket_id, field, old, new, at, flags in session.connection().execute(stmt):
        if flags == _SPAM:
            continue
        kind = _kind(str(field), old, new, flags == _MERGED)
        if kind is not None:
            events.append(TicketEvent(int(ticket_id), kind, at))
    return events


@dataclass(frozen=True, slots=True)
class AgentRow:
    id: int
    email: str
    name: str
    role: str
    active: bool


def agents(session: Session) -> list[AgentRow]:
    a = _agent.c
    stmt = select(a.id, a.email, a.name, a.role, a.active).order_by(a.email)
    return [
        AgentRow(int(r[0]), str(r[1]), str(r[2] or ""), str(r[3]), bool(r[4]))
        for r in session.connection().execute(stmt)
    ]


# -- the open queue, as of now ------------------------------------------------------


def _open_queue() -> list[ColumnElement[bool] | TextClause]:
    """Open, non-spam, unmerged: the partial index's condition, word for word."""
    return [_ticket.c.spam.is_(False), text(OPEN_QUEUE_WHERE), _ticket.c.merged_into_id.is_(None)]


@dataclass(frozen=True, slots=True)
class BacklogCount:
    status: str
    #: One of the keys of :data:`AGE_BUCKETS`.
    age: str
    count: int


def backlog(session: Session, now: datetime) -> list[BacklogCount]:
    """Open tickets by status and by age (``now - created_at``) bucket."""
    t = _ticket.c
    whens = [
        (t.created_at > now - bound, index)
        for index, (_, bound) in enumerate(AGE_BUCKETS)
        if bound is not None
    ]
    bucket = case(*whens, else_=len(AGE_BUCKETS) - 1)
    stmt = select(t.status, bucket, func.count()).where(*_open_queue()).group_by(t.status, bucket)
    return [
        BacklogCount(str(status), AGE_BUCKETS[int(index)][0], int(n))
        for status, index, n in session.connection().execute(stmt)
    ]


def _passed(due: Any, now: datetime) -> ColumnElement[bool]:
    """``due`` lies before the ticket's clock: ``now``, or when it was paused (pending)."""
    t = _ticket.c
    return or_(
        and_(t.pending_since.is_(None), due < now),
        and_(t.pending_since.is_not(None), due < t.pending_since),
    )


def _sla_state(now: datetime, at_risk: timedelta) -> tuple[ColumnElement[bool], ...]:
    t = _ticket.c
    first_running = and_(t.first_response_at.is_(None), t.sla_first_response_due_at.is_not(None))
    resolution = t.sla_resolution_due_at.is_not(None)
    late = or_(
        and_(first_running, _passed(t.sla_first_response_due_at, now)),
        and_(resolution, _passed(t.sla_resolution_due_at, now)),
    )
    limit = now + at_risk
    risky = and_(
        not_(late),
        t.pending_since.is_(None),
        or_(
            and_(first_running, t.sla_first_response_due_at < limit),
            and_(resolution, t.sla_resolution_due_at < limit),
        ),
    )
    return late, risky


@dataclass(frozen=True, slots=True)
class WatchTicket:
    number: int
    subject: str
    status: str
    priority: str
    assignee: str | None
    #: The nearest running target: the first response while unanswered, else the resolution.
    due_kind: str  # "first_response" | "resolution"
    due_at: datetime
    breached: bool


@dataclass(frozen=True, slots=True)
class SlaWatch:
    breached: int
    at_risk: int
    #: Up to ``limit`` of them, the breached first, each group by its due time.
    tickets: tuple[WatchTicket, ...]


def sla_watch(session: Session, now: datetime, at_risk: timedelta, *, limit: int = 20) -> SlaWatch:
    """Open tickets past an SLA target (breached) or due within ``at_risk`` (at risk).

    A target is passed when its due time lies before the ticket's clock:
    ``now``, or ``pending_since`` while the ticket waits for the customer
    (the clock is stopped; a pending ticket is never at risk). The first
    response target counts only while the ticket is unanswered.
    """
    t = _ticket.c
    late, risky = _sla_state(now, at_risk)
    counts = select(
        func.coalesce(func.sum(case((late, 1), else_=0)), 0),
        func.coalesce(func.sum(case((risky, 1), else_=0)), 0),
    ).where(*_open_queue())
    n_late, n_risky = session.connection().execute(counts).one()
    first_next = and_(
        t.first_response_at.is_(None),
        t.sla_first_response_due_at.is_not(None),
        or_(
            t.sla_resolution_due_at.is_(None),
            t.sla_first_response_due_at <= t.sla_resolution_due_at,
        ),
    )
    due = case((first_next, t.sla_first_response_due_at), else_=t.sla_resolution_due_at)
    is_late = case((late, 1), else_=0)
    stmt = (
        select(
            t.number,
            t.subject,
            t.status,
            t.priority,
            _agent.c.email,
            case((first_next, 1), else_=0),
            t.sla_first_response_due_at,
            t.sla_resolution_due_at,
            is_late,
        )
        .select_from(_ticket.outerjoin(_agent, _agent.c.id == t.assignee_id))
        .where(*_open_queue(), or_(late, risky))
        .order_by(is_late.desc(), due, t.number)
        .limit(limit)
    )
    rows = [
        WatchTicket(
            number=int(r[0]),
            subject=str(r[1] or ""),
            status=str(r[2]),
            priority=str(r[3]),
            assignee=r[4],
            due_kind="first_response" if r[5] else "resolution",
            due_at=r[6] if r[5] else r[7],
            breached=bool(r[8]),
        )
        for r in session.connection().execute(stmt)
    ]
    return SlaWatch(breached=int(n_late), at_risk=int(n_risky), tickets=tuple(rows))
