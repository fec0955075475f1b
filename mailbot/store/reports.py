"""Read-only queries for the web page, the JSON API and /metrics.

Aggregates are pushed into SQL (one grouped scan for the queue breakdown) so
the dashboard stays fast on 100,000 tickets. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Date, and_, case, cast, func, literal, not_, or_, select
from sqlalchemy.sql.elements import ColumnElement
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
#: The rest: an index range on status, so the dashboard never scans finished tickets.
OPEN_STATUSES = tuple(s.value for s in TicketStatus if s.value not in DONE_STATUSES)
PRIORITY_ORDER = {p.value: i for i, p in enumerate(Priority)}
#: Processing-latency histogram buckets, in seconds (Prometheus ``le`` values).
LATENCY_BUCKETS = (0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0)


def _open() -> ColumnElement[bool]:
    return _ticket.c.status.in_(OPEN_STATUSES)


def _breached(now: datetime) -> ColumnElement[bool]:
    return and_(
        _open(),
        or_(
            and_(
                _ticket.c.first_response_at.is_(None),
                _ticket.c.sla_first_response_due_at < now,
            ),
            _ticket.c.sla_resolution_due_at < now,
        ),
    )


def _due_before(limit: datetime) -> ColumnElement[bool]:
    return and_(
        _open(),
        or_(
            and_(
                _ticket.c.first_response_at.is_(None),
                _ticket.c.sla_first_response_due_at < limit,
            ),
            _ticket.c.sla_resolution_due_at < limit,
        ),
    )


@dataclass(frozen=True, slots=True)
class QueueGroup:
    status: str
    priority: str
    category: str | None
    assignee: str | None
    breached: bool
    at_risk: bool
    count: int


def status_counts(session: Session) -> dict[str, int]:
    """All tickets (spam included) per status: one pass over the status index."""
    stmt = select(_ticket.c.status, func.count()).group_by(_ticket.c.status)
    return {str(s): int(n) for s, n in session.execute(stmt).all()}


def queue_groups(session: Session, now: datetime, at_risk: timedelta) -> list[QueueGroup]:
    """Open non-spam tickets counted by status, priority, category, assignee and SLA state."""
    breached = _breached(now)
    risky = and_(not_(breached), _due_before(now + at_risk))
    stmt = (
        select(
            _ticket.c.status,
            _ticket.c.priority,
            _ticket.c.category,
            _agent.c.email,
            case((breached, 1), else_=0).label("breached"),
            case((risky, 1), else_=0).label("at_risk"),
            func.count().label("n"),
        )
        .select_from(_ticket.outerjoin(_agent, _agent.c.id == _ticket.c.assignee_id))
        .where(_ticket.c.spam.is_(False), _ticket.c.status.in_(OPEN_STATUSES))
        .group_by(
            _ticket.c.status,
            _ticket.c.priority,
            _ticket.c.category,
            _agent.c.email,
            "breached",
            "at_risk",
        )
    )
    return [
        QueueGroup(str(s), str(p), c, a, bool(b), bool(r), int(n))
        for s, p, c, a, b, r, n in session.execute(stmt).all()
    ]


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


def _line_columns(now: datetime) -> list[Any]:
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


def sla_watch(
    session: Session, now: datetime, at_risk: timedelta, *, limit: int = 20
) -> list[TicketLine]:
    """Open tickets breached or due within ``at_risk``, the most overdue first."""
    due: Any = func.min(
        func.coalesce(
            case(
                (_ticket.c.first_response_at.is_(None), _ticket.c.sla_first_response_due_at),
                else_=None,
            ),
            _ticket.c.sla_resolution_due_at,
        ),
        func.coalesce(_ticket.c.sla_resolution_due_at, _ticket.c.sla_first_response_due_at),
    )
    if session.get_bind().dialect.name == "postgresql":
        due = func.least(
            func.coalesce(
                case(
                    (_ticket.c.first_response_at.is_(None), _ticket.c.sla_first_response_due_at),
                    else_=None,
                ),
                _ticket.c.sla_resolution_due_at,
            ),
            func.coalesce(_ticket.c.sla_resolution_due_at, _ticket.c.sla_first_response_due_at),
        )
    stmt = (
        select(*_line_columns(now))
        .select_from(_joined())
        .where(_ticket.c.spam.is_(False), _due_before(now + at_risk))
        .order_by(due, _ticket.c.number)
        .limit(limit)
    )
    return _lines(session.execute(stmt).all())


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
    count_from = (
        _ticket.outerjoin(_agent, _agent.c.id == _ticket.c.assignee_id)
        if flt.assignee and flt.assignee != "-"
        else _ticket
    )
    total = session.execute(select(func.count()).select_from(count_from).where(*where))
    return rows, int(total.scalar_one())


def categories(session: Session) -> list[str]:
    stmt = select(_ticket.c.category).where(_ticket.c.category.is_not(None)).distinct()
    return sorted(str(c) for (c,) in session.execute(stmt).all())


def agent_emails(session: Session) -> list[str]:
    return [str(e) for (e,) in session.execute(select(_agent.c.email).order_by(_agent.c.email))]


# -- trend, KPIs, queues ------------------------------------------------------------


def _day(session: Session, column: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)


def daily_counts(session: Session, column_name: str, since: datetime) -> dict[str, int]:
    """Tickets per UTC day (``YYYY-MM-DD``) whose ``column_name`` is at or after ``since``."""
    column = _ticket.c[column_name]
    day = _day(session, column)
    stmt = select(day, func.count()).where(column >= since, _ticket.c.spam.is_(False)).group_by(day)
    return {str(d): int(n) for d, n in session.execute(stmt).all()}


def first_responses_since(session: Session, since: datetime) -> list[tuple[datetime, datetime]]:
    """(created_at, first_response_at) of tickets created since ``since`` and answered."""
    stmt = select(_ticket.c.created_at, _ticket.c.first_response_at).where(
        _ticket.c.created_at >= since, _ticket.c.first_response_at.is_not(None)
    )
    return [(a, b) for a, b in session.execute(stmt).all()]


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
