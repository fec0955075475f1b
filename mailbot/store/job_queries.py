"""What the scheduled jobs read, and the claims that make each of their acts happen once.

Jobs are driven by the tickets' state: a reminder is due when its time has
come and ``*_reminded_at`` is still empty, a breach when the due time passed
and ``*_breached_at`` is empty, an auto-close when the ticket is still in the
status it was found in. Each act starts with a *claim*: a conditional UPDATE
(or the insert of a unique ``job_mark``) that only one transaction can win.
On PostgreSQL a second daemon's UPDATE waits for the first one's commit and
then finds the condition false; on SQLite writers are serialised. The claim,
the change and the mail it sends commit together, so a daemon killed between
two runs neither loses nor repeats anything, and a missed run simply finds
more work waiting (catch-up).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, and_, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel

from mailbot.states import TicketStatus

_tables = SQLModel.metadata.tables
_ticket, _attachment, _mark = _tables["ticket"], _tables["attachment"], _tables["job_mark"]

#: The statuses in which the SLA clock runs.
RUNNING = (
    TicketStatus.new.value,
    TicketStatus.assigned.value,
    TicketStatus.in_progress.value,
    TicketStatus.reopened.value,
)
BATCH = 500


def _conn(session: Session) -> Connection:
    return session.connection()


def _live() -> list[ColumnElement[bool]]:
    return [_ticket.c.spam.is_(False), _ticket.c.merged_into_id.is_(None)]


def reminder_candidates(session: Session, kind: str) -> list[int]:
    """Open, assigned tickets whose ``kind`` (first_response | resolution) reminder is unsent."""
    reminded = _ticket.c[f"{kind}_reminded_at"]
    due = _ticket.c[f"sla_{kind}_due_at"]
    conditions = [
        *_live(),
        _ticket.c.status.in_(RUNNING),
        _ticket.c.assignee_id.is_not(None),
        reminded.is_(None),
        due.is_not(None),
    ]
    if kind == "first_response":
        conditions.append(_ticket.c.first_response_at.is_(None))
    stmt = select(_ticket.c.id).where(*conditions).order_by(_ticket.c.id).limit(BATCH * 4)
    return list(_conn(session).execute(stmt).scalars())


def breach_candidates(session: Session, kind: str, now: datetime) -> list[int]:
    """Tickets past their ``kind`` due time whose breach is not recorded yet.

    Pending tickets are not breached: their clock stands still, and the due
    times move when the customer answers.
    """
    due = _ticket.c[f"sla_{kind}_due_at"]
    conditions = [
        *_live(),
        _ticket.c.status.in_(RUNNING),
        _ticket.c[f"{kind}_breached_at"].is_(None),
        due.is_not(None),
        due < now,
    ]
    if kind == "first_response":
        conditions.append(_ticket.c.first_response_at.is_(None))
    stmt = select(_ticket.c.id).where(*conditions).order_by(_ticket.c.id).limit(BATCH)
    return list(_conn(session).execute(stmt).scalars())


def pending_since_before(
    session: Session, before: datetime, *, unreminded: bool
) -> list[tuple[int, datetime]]:
    """Pending tickets waiting since before ``before`` (only unreminded ones if asked)."""
    conditions = [
        *_live(),
        _ticket.c.status == TicketStatus.pending.value,
        _ticket.c.pending_since.is_not(None),
        _ticket.c.pending_since <= before,
    ]
    if unreminded:
        conditions.append(_ticket.c.pending_reminded_at.is_(None))
    stmt = (
        select(_ticket.c.id, _ticket.c.pending_since)
        .where(*conditions)
        .order_by(_ticket.c.id)
        .limit(BATCH)
    )
    return [(row.id, row.pending_since) for row in _conn(session).execute(stmt)]


def resolved_before(session: Session, before: datetime) -> list[tuple[int, datetime]]:
    stmt = (
        select(_ticket.c.id, _ticket.c.resolved_at)
        .where(
            *_live(),
            _ticket.c.status == TicketStatus.resolved.value,
            _ticket.c.resolved_at.is_not(None),
            _ticket.c.resolved_at <= before,
        )
        .order_by(_ticket.c.id)
        .limit(BATCH)
    )
    return [(row.id, row.resolved_at) for row in _conn(session).execute(stmt)]


def queued_in_teams(session: Session) -> list[int]:
    """Unassigned open tickets waiting in a team's queue, oldest first."""
    stmt = (
        select(_ticket.c.id)
        .where(
            *_live(),
            _ticket.c.team.is_not(None),
            _ticket.c.assignee_id.is_(None),
            _ticket.c.status.in_((TicketStatus.new.value, TicketStatus.reopened.value)),
        )
        .order_by(_ticket.c.id)
        .limit(BATCH)
    )
    return list(_conn(session).execute(stmt).scalars())


# -- claims -----------------------------------------------------------------------------


def claim_marker(session: Session, ticket_id: int, column: str, now: datetime) -> bool:
    """Set ``column`` (a ``*_at`` marker) if it is still empty; True when this call won."""
    marker = _ticket.c[column]
    stmt = (
        _ticket.update()
        .where(_ticket.c.id == bindparam("tid"), marker.is_(None))
        .values({column: now})
    )
    return _conn(session).execute(stmt, {"tid": ticket_id}).rowcount == 1


def claim_status(
    session: Session,
    ticket_id: int,
    status: TicketStatus,
    *,
    since_column: str,
    since: datetime,
    now: datetime,
) -> bool:
    """Claim a ticket still in ``status`` since ``since`` (touching ``updated_at``)."""
    stmt = (
        _ticket.update()
        .where(
            and_(
                _ticket.c.id == bindparam("tid"),
                _ticket.c.status == status.value,
                _ticket.c[since_column] == bindparam("since"),
            )
        )
        .values(updated_at=now)
    )
    return _conn(session).execute(stmt, {"tid": ticket_id, "since": since}).rowcount == 1


def claim_unassigned(session: Session, ticket_id: int, agent_id: int, now: datetime) -> bool:
    """Give a still unassigned ticket to ``agent_id``; True when this call won."""
    stmt = (
        _ticket.update()
        .where(_ticket.c.id == bindparam("tid"), _ticket.c.assignee_id.is_(None))
        .values(assignee_id=agent_id, updated_at=now)
    )
    return _conn(session).execute(stmt, {"tid": ticket_id}).rowcount == 1


_INSERT_MARK = {
    name: dialect.insert(_mark)
    .on_conflict_do_nothing(index_elements=["job", "key"])
    .returning(_mark.c.id)
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}


def claim_mark(session: Session, job: str, key: str, now: datetime) -> bool:
    """Insert the unique (job, key) mark; True when this call inserted it."""
    stmt = _INSERT_MARK[session.get_bind().dialect.name]
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT.
    result = _conn(session).execute(stmt, {"job": job, "key": key[:255], "created_at": now})
    return result.first() is not None


def marks(session: Session, job: str) -> list[str]:
    stmt = select(_mark.c.key).where(_mark.c.job == job).order_by(_mark.c.id)
    return list(_conn(session).execute(stmt).scalars())


# -- housekeeping -----------------------------------------------------------------------


def referenced_keys(session: Session, keys: Iterable[str]) -> set[str]:
    """Which of ``keys`` an attachment row refers to."""
    wanted: Sequence[str] = list(keys)
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        stmt = select(_attachment.c.storage_key).where(_attachment.c.storage_key.in_(chunk))
        found.update(_conn(session).execute(stmt).scalars())
    return found
