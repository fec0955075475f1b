"""Read-only queries for the web page, the JSON API and /metrics.

Aggregates are pushed into SQL so the dashboard stays fast on 100,000
tickets. The open queue (about 5% of the rows in a long-running helpdesk) has
its own covering partial index, ``ix_ticket_open_queue``: the dashboard's
queue counts and its SLA watch list read that index and never the finished
tickets. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    Date,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    not_,
    or_,
    select,
    union_all,
)
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.selectable import CompoundSelect, Select
from sqlmodel import Session, SQLModel

from mailbot.states import Priority, TicketStatus
from mailbot.store import models  # noqa: F401  (registers the tables)

_t = SQLModel.metadata.tables
_ticket, _agent, _customer = _t["ticket"], _t["agent"], _t["customer"]
_inbound, _outbound, _attachment, _message = (
    _t["inbound"],
    _t["outbound"],
    _t["attachment"],
    _t["message"],
)

#: A ticket in one of these is finished: its SLA clock has stopped.
DONE_STATUSES = (TicketStatus.resolved.value, TicketStatus.closed.value)
#: The rest.
OPEN_STATUSES = tuple(s.value for s in TicketStatus if s.value not in DONE_STATUSES)
PRIORITY_ORDER = {p.value: i for i, p in enumerate(Priority)}
#: Processing-latency histogram buckets, in seconds (Prometheus ``le`` values).
LATENCY_BUCKETS = (0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0)


def _open() -> ColumnElement[bool]:
    """``status NOT IN ('resolved', 'closed')``, with the constants written into the SQL.

    This is, word for word, the condition of the partial index
    ``ix_ticket_open_queue`` (``models.OPEN_QUEUE_WHERE``). SQLite uses a
    partial index only when the query repeats its condition with the same
    constants, and PostgreSQL must prove the condition too (impossible with a
    generic plan over bound parameters): so the statuses are rendered as
    literals, not bound.
    """
    done: BindParameter[tuple[str, ...]] = bindparam(
        "done_statuses", DONE_STATUSES, expanding=True, literal_execute=True
    )
    return _ticket.c.status.not_in(done)


def _past(limit: datetime | ColumnElement[Any]) -> ColumnElement[bool]:
    """An SLA target (first response while unanswered, or resolution) lies before ``limit``.

    Never NULL: a ticket without a target is simply not past it. (A bare
    ``due < limit`` is NULL there, and ``NOT`` of NULL is NULL again, so such
    tickets used to fall out of "at risk" and of the "not breached" filter.)
    """
    t = _ticket.c
    return or_(
        and_(
            t.first_response_at.is_(None),
            t.sla_first_response_due_at.is_not(None),
            t.sla_first_response_due_at < limit,
        ),
        and_(t.sla_resolution_due_at.is_not(None), t.sla_resolution_due_at < limit),
    )


def _breached(now: datetime | ColumnElement[Any]) -> ColumnElement[bool]:
    return and_(_open(), _past(now))


def _due_before(limit: datetime | ColumnElement[Any]) -> ColumnElement[bool]:
    return and_(_open(), _past(limit))


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


# The dashboard's statements are built once per dialect, with the times as bound
# parameters: building and keying them cost more Python time than running them
# on a small database.
_NOW: BindParameter[datetime] = bindparam("now")
_RISK: BindParameter[datetime] = bindparam("risk")
_SINCE: BindParameter[datetime] = bindparam("since")


def _nearest_due(dialect: str) -> Any:
    """The earliest SLA target still running (for ordering the watch list)."""
    pick = func.least if dialect == "postgresql" else func.min
    return pick(
        func.coalesce(
            case(
                (_ticket.c.first_response_at.is_(None), _ticket.c.sla_first_response_due_at),
                else_=None,
            ),
            _ticket.c.sla_resolution_due_at,
        ),
        func.coalesce(_ticket.c.sla_resolution_due_at, _ticket.c.sla_first_response_due_at),
    )


@cache
def _status_counts_statement() -> Select[Any]:
    # The statuses as literals: each count gets the plan for its own status
    # (a few open tickets through the partial index, half the table otherwise),
    # never one generic plan for all from PostgreSQL's plan cache.
    counts = (
        select(func.count())
        .where(_ticket.c.status == literal(s.value, literal_execute=True))
        .scalar_subquery()
        .label(s.value)
        for s in TicketStatus
    )
    return select(*counts)


def status_counts(session: Session) -> dict[str, int]:
    """All tickets (spam included) per status.

    One range count per status on ``ix_ticket_status_priority_spam``, in one
    statement: counting a range is about twice as fast as grouping every
    entry of the index.
    """
    row = session.execute(_status_counts_statement()).one()
    return {s.value: int(n) for s, n in zip(TicketStatus, row, strict=True) if n}


@dataclass(frozen=True, slots=True)
class OpenQueue:
    """The open non-spam tickets: how many by priority, category and assignee; SLA state."""

    by_priority: dict[str, int]
    by_category: dict[str | None, int]
    by_assignee: dict[str | None, int]
    #: Past an SLA target.
    breached: int
    #: Not breached, but a target falls within the at-risk window.
    at_risk: int

    @property
    def total(self) -> int:
        return sum(self.by_priority.values())


@cache
def _open_queue_statement() -> CompoundSelect[Any]:
    t = _ticket.c
    queue = (t.spam.is_(False), _open())
    late = _past(_NOW)
    risky = and_(not_(late), _past(_RISK))
    zero = literal(0)
    by_priority = (
        select(
            literal("priority").label("kind"),
            t.priority.label("key"),
            func.count().label("n"),
            func.sum(case((late, 1), else_=0)).label("breached"),
            func.sum(case((risky, 1), else_=0)).label("at_risk"),
        )
        .where(*queue)
        .group_by(t.status, t.priority)
    )
    by_category = (
        select(literal("category"), t.category, func.count(), zero, zero)
        .where(*queue)
        .group_by(t.category)
    )
    per_agent = (
        select(t.assignee_id, func.count().label("n"))
        .where(*queue)
        .group_by(t.assignee_id)
        .subquery("per_agent")
    )
    by_assignee = select(
        literal("assignee"), _agent.c.email, per_agent.c.n, zero, zero
    ).select_from(per_agent.outerjoin(_agent, _agent.c.id == per_agent.c.assignee_id))
    return union_all(by_priority, by_category, by_assignee)


def open_queue(session: Session, now: datetime, at_risk: timedelta) -> OpenQueue:
    """Count the open queue, in one statement over ``ix_ticket_open_queue`` only.

    Three small groupings (priority with the SLA sums, category, assignee)
    joined by ``UNION ALL``: a handful of rows per dimension rather than one
    row per combination of them. Priority is grouped with status, the order
    of the index, so that grouping needs no sort. The agents' addresses are
    joined to the per-assignee counts, not to every ticket.
    """
    counts: dict[str, dict[Any, int]] = {"priority": {}, "category": {}, "assignee": {}}
    breached = risk = 0
    params = {"now": now, "risk": now + at_risk}
    for kind, key, n, b, r in session.execute(_open_queue_statement(), params):
        counts[kind][key] = counts[kind].get(key, 0) + int(n)
        breached += int(b or 0)
        risk += int(r or 0)
    return OpenQueue(
        by_priority={str(k): n for k, n in counts["priority"].items()},
        by_category=counts["category"],
        by_assignee=counts["assignee"],
        breached=breached,
        at_risk=risk,
    )


@dataclass(frozen=True, slots=True)
class TicketLine:
    number: int
    subject: str
    status: str
    priority: str
    category: str | None
    assignee: str | None
    requester: str | None
    created_at: datetime
    updated_at: datetime
    first_response_due_at: datetime | None
    resolution_due_at: datetime | None
    first_response_at: datetime | None
    breached: bool


def _line_columns(now: datetime | ColumnElement[Any]) -> list[Any]:
    return [
        _ticket.c.number,
        _ticket.c.subject,
        _ticket.c.status,
        _ticket.c.priority,
        _ticket.c.category,
        _agent.c.email.label("assignee"),
        _customer.c.email.label("requester"),
        _ticket.c.created_at,
        _ticket.c.updated_at,
        _ticket.c.sla_first_response_due_at,
        _ticket.c.sla_resolution_due_at,
        _ticket.c.first_response_at,
        case((_breached(now), 1), else_=0).label("breached"),
    ]


def _joined() -> Any:
    return _ticket.outerjoin(_agent, _agent.c.id == _ticket.c.assignee_id).outerjoin(
        _customer, _customer.c.id == _ticket.c.requester_id
    )


def _lines(rows: Sequence[Any]) -> list[TicketLine]:
    return [
        TicketLine(
            number=r[0],
            subject=r[1],
            status=str(r[2]),
            priority=str(r[3]),
            category=r[4],
            assignee=r[5],
            requester=r[6],
            created_at=r[7],
            updated_at=r[8],
            first_response_due_at=r[9],
            resolution_due_at=r[10],
            first_response_at=r[11],
            breached=bool(r[12]),
        )
        for r in rows
    ]


@cache
def _watch_statement(dialect: str, limit: int) -> Select[Any]:
    due = _nearest_due(dialect)
    picked = (
        select(_ticket.c.id)
        .where(_ticket.c.spam.is_(False), _due_before(_RISK))
        .order_by(due, _ticket.c.number)
        .limit(limit)
    )
    return (
        select(*_line_columns(_NOW))
        .select_from(_joined())
        .where(_ticket.c.id.in_(picked))
        .order_by(due, _ticket.c.number)
    )


def sla_watch(
    session: Session, now: datetime, at_risk: timedelta, *, limit: int = 20
) -> list[TicketLine]:
    """Open tickets breached or due within ``at_risk``, the most overdue first.

    The ``limit`` tickets are picked from ``ix_ticket_open_queue`` alone; only
    they are then read from the table and joined to agent and customer.
    """
    stmt = _watch_statement(_dialect(session), limit)
    return _lines(session.execute(stmt, {"now": now, "risk": now + at_risk}).all())


# -- the ticket list ---------------------------------------------------------------

SORTS: dict[str, tuple[Any, bool]] = {
    "number": (_ticket.c.number, False),
    "-number": (_ticket.c.number, True),
    "created": (_ticket.c.created_at, False),
    "-created": (_ticket.c.created_at, True),
    "updated": (_ticket.c.updated_at, False),
    "-updated": (_ticket.c.updated_at, True),
    "priority": (
        case(*((_ticket.c.priority == k, v) for k, v in PRIORITY_ORDER.items()), else_=9),
        False,
    ),
    "-priority": (
        case(*((_ticket.c.priority == k, v) for k, v in PRIORITY_ORDER.items()), else_=9),
        True,
    ),
    "status": (_ticket.c.status, False),
    "-status": (_ticket.c.status, True),
}


@dataclass(frozen=True, slots=True)
class TicketFilter:
    status: str | None = None
    priority: str | None = None
    category: str | None = None
    assignee: str | None = None
    breached: bool | None = None
    text: str | None = None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conditions(flt: TicketFilter, now: datetime) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [_ticket.c.spam.is_(False)]
    if flt.status:
        where.append(_ticket.c.status == flt.status)
    if flt.priority:
        where.append(_ticket.c.priority == flt.priority)
    if flt.category:
        where.append(_ticket.c.category == flt.category)
    if flt.assignee == "-":
        where.append(_ticket.c.assignee_id.is_(None))
    elif flt.assignee:
        where.append(_agent.c.email == flt.assignee.lower())
    if flt.breached is True:
        where.append(_breached(now))
    elif flt.breached is False:
        where.append(not_(_breached(now)))
    if flt.text:
        pattern = f"%{_escape_like(flt.text.lower())}%"
        where.append(func.lower(_ticket.c.subject).like(pattern, escape="\\"))
    return where


def ticket_page(
    session: Session,
    flt: TicketFilter,
    *,
    now: datetime,
    sort: str = "-number",
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[TicketLine], int]:
    """One page of the filtered, sorted ticket list, and the number of matches."""
    key, descending = SORTS.get(sort, SORTS["-number"])
    where = _conditions(flt, now)
    stmt = (
        select(*_line_columns(now))
        .select_from(_joined())
        .where(*where)
        .order_by(key.desc() if descending else key.asc(), _ticket.c.number.desc())
        .limit(limit)
        .offset(offset)
    )
    rows = _lines(session.execute(stmt).all())
    if rows and len(rows) < limit:
        return rows, offset + len(rows)  # the last page: no need to count
    count_from = (
        _ticket.outerjoin(_agent, _agent.c.id == _ticket.c.assignee_id)
        if flt.assignee and flt.assignee != "-"
        else _ticket
    )
    total = session.execute(select(func.count()).select_from(count_from).where(*where))
    return rows, int(total.scalar_one())


def categories(session: Session) -> list[str]:
    """The distinct categories of all tickets.

    A loose index scan over ``ix_ticket_category`` (a recursive query that
    jumps from one category to the next): a handful of index seeks instead of
    reading 100,000 entries, on SQLite and PostgreSQL alike.
    """
    c = _ticket.c.category
    walk = select(func.min(c).label("category")).cte("walk", recursive=True)
    step = select(select(func.min(c)).where(c > walk.c.category).scalar_subquery()).where(
        walk.c.category.is_not(None)
    )
    walk = walk.union_all(step)
    stmt = select(walk.c.category).where(walk.c.category.is_not(None))
    return sorted(str(v) for (v,) in session.execute(stmt).all())


def agent_emails(session: Session) -> list[str]:
    return [str(e) for (e,) in session.execute(select(_agent.c.email).order_by(_agent.c.email))]


# -- trend, KPIs, queues ------------------------------------------------------------


@cache
def _daily_statement(dialect: str, column_name: str) -> Select[Any]:
    column = _ticket.c[column_name]
    if dialect == "postgresql":
        day: Any = cast(func.timezone("UTC", column), Date)
    else:
        day = func.date(column)
    return (
        select(day, func.count()).where(column >= _SINCE, _ticket.c.spam.is_(False)).group_by(day)
    )


def daily_counts(session: Session, column_name: str, since: datetime) -> dict[str, int]:
    """Tickets per UTC day (``YYYY-MM-DD``) whose ``column_name`` is at or after ``since``."""
    stmt = _daily_statement(_dialect(session), column_name)
    return {str(d): int(n) for d, n in session.execute(stmt, {"since": since}).all()}


_FIRST_RESPONSES = select(_ticket.c.created_at, _ticket.c.first_response_at).where(
    _ticket.c.created_at >= _SINCE, _ticket.c.first_response_at.is_not(None)
)


def first_responses_since(session: Session, since: datetime) -> list[tuple[datetime, datetime]]:
    """(created_at, first_response_at) of tickets created since ``since`` and answered."""
    return [(a, b) for a, b in session.execute(_FIRST_RESPONSES, {"since": since}).all()]


def inbound_counts(session: Session) -> dict[str, int]:
    stmt = select(_inbound.c.status, func.count()).group_by(_inbound.c.status)
    return {str(s): int(n) for s, n in session.execute(stmt).all()}


def outbound_counts(session: Session) -> dict[str, int]:
    stmt = select(_outbound.c.status, func.count()).group_by(_outbound.c.status)
    return {str(s): int(n) for s, n in session.execute(stmt).all()}


def latency_histogram(session: Session) -> tuple[list[int], int, float]:
    """Cumulative counts per LATENCY_BUCKETS, total count and sum (seconds) of processing."""
    if session.get_bind().dialect.name == "postgresql":
        seconds: Any = func.extract("epoch", _inbound.c.processed_at - _inbound.c.received_at)
    else:
        seconds = (
            func.julianday(_inbound.c.processed_at) - func.julianday(_inbound.c.received_at)
        ) * 86400.0
    columns = [func.sum(case((seconds <= b, 1), else_=0)) for b in LATENCY_BUCKETS]
    stmt = select(*columns, func.count(), func.coalesce(func.sum(seconds), 0.0)).where(
        _inbound.c.processed_at.is_not(None), _inbound.c.status == "done"
    )
    row = session.execute(stmt).one()
    buckets = [int(v or 0) for v in row[: len(LATENCY_BUCKETS)]]
    return buckets, int(row[-2] or 0), float(row[-1] or 0.0)


def ping(session: Session) -> None:
    session.execute(select(literal(1)))


# -- one ticket ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    id: int
    file_name: str
    content_type: str
    size: int
    storage_key: str
    ticket_number: int
    internal: bool


def attachment(session: Session, attachment_id: int) -> AttachmentRef | None:
    stmt = (
        select(
            _attachment.c.id,
            _attachment.c.file_name,
            _attachment.c.content_type,
            _attachment.c.size,
            _attachment.c.storage_key,
            _ticket.c.number,
            _message.c.internal,
        )
        .select_from(
            _attachment.join(_message, _message.c.id == _attachment.c.message_id).join(
                _ticket, _ticket.c.id == _message.c.ticket_id
            )
        )
        .where(_attachment.c.id == attachment_id)
    )
    row = session.execute(stmt).first()
    if row is None:
        return None
    return AttachmentRef(
        int(row[0]), str(row[1]), str(row[2]), int(row[3]), str(row[4]), int(row[5]), bool(row[6])
    )
