"""What agents do to tickets: the facts they decide on and the changes they make.

Every change writes its history entry with the actor in the same call, so a
caller cannot forget it. Merges move messages (with their attachments) and
participants to the surviving ticket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, select
from sqlmodel import Session, SQLModel

from mailbot.states import ParticipantRole, Priority, TicketStatus
from mailbot.store import tickets
from mailbot.store.tickets import CustomerRow

_tables = SQLModel.metadata.tables
_ticket, _customer, _agent = _tables["ticket"], _tables["customer"], _tables["agent"]
_message, _participant, _outbound = (
    _tables["message"],
    _tables["ticket_participant"],
    _tables["outbound"],
)
_UPDATE_TICKET = _ticket.update().where(_ticket.c.id == bindparam("tid"))
_FACTS = (
    select(
        _ticket,
        _agent.c.email.label("assignee_email"),
        _agent.c.name.label("assignee_name"),
    )
    .select_from(_ticket.outerjoin(_agent, _agent.c.id == _ticket.c.assignee_id))
    .where(_ticket.c.id == bindparam("id"))
)
_CUSTOMER = select(
    _customer.c.id, _customer.c.email, _customer.c.name, _customer.c.language, _customer.c.bouncing
).where(_customer.c.id == bindparam("id"))
_PARTICIPANTS = select(_participant.c.email, _participant.c.role).where(
    _participant.c.ticket_id == bindparam("id")
)
_OUTBOUND_RECIPIENTS = select(_outbound.c.recipients, _outbound.c.ticket_id).where(
    _outbound.c.message_id.in_(bindparam("ids", expanding=True))
)
_LAST_INBOUND_IDS = (
    select(_message.c.message_id)
    .where(
        _message.c.ticket_id == bindparam("id"),
        _message.c.message_id.is_not(None),
        _message.c.internal.is_(False),
    )
    .order_by(_message.c.id.desc())
    .limit(10)
)


def _conn(session: Session) -> Connection:
    return session.connection()


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """A ticket as agents' mail and commands see it."""

    id: int
    number: int
    subject: str
    status: TicketStatus
    priority: Priority
    category: str | None
    subcategory: str | None
    tags: tuple[str, ...]
    team: str | None
    assignee_id: int | None
    assignee_email: str | None
    assignee_name: str | None
    requester_id: int | None
    created_at: datetime
    first_response_at: datetime | None
    sla_first_response_due_at: datetime | None
    sla_resolution_due_at: datetime | None
    closed_at: datetime | None
    merged_into_id: int | None
    escalation_level: int
    spam: bool
    pending_since: datetime | None = None
    sla_paused_seconds: int = 0
    first_response_breached_at: datetime | None = None
    resolution_breached_at: datetime | None = None
    resolved_at: datetime | None = None
    rating: int | None = None

    @property
    def row(self) -> tickets.TicketRow:
        return tickets.TicketRow(
            id=self.id,
            number=self.number,
            subject=self.subject,
            status=self.status,
            priority=self.priority,
            closed_at=self.closed_at,
            requester_id=self.requester_id,
        )


def facts(session: Session, ticket_id: int) -> TicketFacts | None:
    row = _conn(session).execute(_FACTS, {"id": ticket_id}).one_or_none()
    if row is None:
        return None
    return TicketFacts(
        id=row.id,
        number=row.number,
        subject=row.subject,
        status=TicketStatus(row.status),
        priority=Priority(row.priority),
        category=row.category,
        subcategory=row.subcategory,
        tags=tuple(row.tags or ()),
        team=row.team,
        assignee_id=row.assignee_id,
        assignee_email=row.assignee_email,
        assignee_name=row.assignee_name,
        requester_id=row.requester_id,
        created_at=row.created_at,
        first_response_at=row.first_response_at,
        sla_first_response_due_at=row.sla_first_response_due_at,
        sla_resolution_due_at=row.sla_resolution_due_at,
        closed_at=row.closed_at,
        merged_into_id=row.merged_into_id,
        escalation_level=row.escalation_level,
        spam=row.spam,
        pending_since=row.pending_since,
        sla_paused_seconds=row.sla_paused_seconds,
        first_response_breached_at=row.first_response_breached_at,
        resolution_breached_at=row.resolution_breached_at,
        resolved_at=row.resolved_at,
        rating=row.rating,
    )


def facts_by_number(session: Session, number: int) -> TicketFacts | None:
    ticket_id = tickets.SessionLookup(session).ticket_id_for_number(number)
    return None if ticket_id is None else facts(session, ticket_id)


def customer(session: Session, customer_id: int) -> CustomerRow | None:
    row = _conn(session).execute(_CUSTOMER, {"id": customer_id}).one_or_none()
    if row is None:
        return None
    return CustomerRow(row.id, row.email, row.name, row.language, row.bouncing)


def participants(session: Session, ticket_id: int) -> list[tuple[str, ParticipantRole]]:
    rows = _conn(session).execute(_PARTICIPANTS, {"id": ticket_id}).all()
    return [(r.email, ParticipantRole(r.role)) for r in rows]


def recent_message_ids(session: Session, ticket_id: int) -> list[str]:
    """The newest public Message-IDs of a ticket, newest first (for References)."""
    return list(_conn(session).execute(_LAST_INBOUND_IDS, {"id": ticket_id}).scalars())


def sent_to(session: Session, message_ids: Sequence[str], email: str) -> set[int]:
    """The tickets of those of ``message_ids`` that are our mail to ``email``."""
    ids = [m for m in message_ids[:100] if m]
    if not ids:
        return set()
    wanted = email.lower()
    found: set[int] = set()
    for recipients, ticket_id in _conn(session).execute(_OUTBOUND_RECIPIENTS, {"ids": ids}):
        if ticket_id is not None and any(r.lower() == wanted for r in recipients or ()):
            found.add(int(ticket_id))
    return found


def _update(session: Session, ticket_id: int, now: datetime, **values: object) -> None:
    _conn(session).execute(_UPDATE_TICKET.values(updated_at=now, **values), {"tid": ticket_id})


def set_priority(
    session: Session,
    ticket: TicketFacts,
    priority: Priority,
    *,
    first_response_due: datetime | None,
    resolution_due: datetime | None,
    actor: str,
    now: datetime,
) -> None:
    """A new priority, and the SLA due times it implies."""
    if ticket.priority is priority:
        return
    tickets.add_history(
        session, ticket.id, "priority", ticket.priority.value, priority.value, actor, now
    )
    _update(
        session,
        ticket.id,
        now,
        priority=priority.value,
        sla_first_response_due_at=first_response_due,
        sla_resolution_due_at=resolution_due,
    )


def set_category(
    session: Session,
    ticket: TicketFacts,
    category: str,
    subcategory: str | None,
    *,
    actor: str,
    now: datetime,
) -> None:
    old = "/".join(p for p in (ticket.category, ticket.subcategory) if p) or None
    new = "/".join(p for p in (category, subcategory) if p)
    if old == new:
        return
    tickets.add_history(session, ticket.id, "category", old, new, actor, now)
    _update(session, ticket.id, now, category=category[:64], subcategory=(subcategory or None))


def set_assignee(
    session: Session,
    ticket: TicketFacts,
    agent_id: int | None,
    agent_email: str | None,
    *,
    actor: str,
    now: datetime,
) -> TicketStatus:
    """Assign (or unassign with None); returns the ticket's status afterwards.

    A new ticket becomes ``assigned``; an unassigned ``assigned`` ticket goes
    back to ``new``.
    """
    if ticket.assignee_id == agent_id:
        return ticket.status
    tickets.add_history(
        session, ticket.id, "assignee", ticket.assignee_email, agent_email, actor, now
    )
    status = ticket.status
    if agent_id is not None and status is TicketStatus.new:
        status = TicketStatus.assigned
    elif agent_id is None and status is TicketStatus.assigned:
        status = TicketStatus.new
    if status is not ticket.status:
        tickets.add_history(session, ticket.id, "status", ticket.status.value, status, actor, now)
    _update(session, ticket.id, now, assignee_id=agent_id, status=status.value)
    return status


def change_tags(
    session: Session,
    ticket: TicketFacts,
    add: Sequence[str],
    remove: Sequence[str],
    *,
    actor: str,
    now: datetime,
) -> None:
    dropped = {t.lower() for t in remove}
    tags = [t for t in ticket.tags if t.lower() not in dropped]
    tags = list(dict.fromkeys([*tags, *(t[:64] for t in add)]))
    if tags == list(ticket.tags):
        return
    tickets.add_history(
        session, ticket.id, "tags", " ".join(ticket.tags) or None, " ".join(tags), actor, now
    )
    _update(session, ticket.id, now, tags=tags)


def pause_clock(session: Session, ticket_id: int, now: datetime) -> None:
    """The ticket went pending: the SLA clock stops now."""
    _conn(session).execute(_UPDATE_TICKET.values(pending_since=now), {"tid": ticket_id})


def resume_clock(
    session: Session,
    ticket_id: int,
    *,
    paused_seconds: int,
    first_response_due: datetime,
    resolution_due: datetime,
) -> None:
    """The clock runs again: the paused total and the due times it implies."""
    _conn(session).execute(
        _UPDATE_TICKET.values(
            pending_since=None,
            sla_paused_seconds=paused_seconds,
            sla_first_response_due_at=first_response_due,
            sla_resolution_due_at=resolution_due,
        ),
        {"tid": ticket_id},
    )


def record_rating(
    session: Session,
    ticket: TicketFacts,
    score: int,
    comment: str,
    *,
    actor: str,
    now: datetime,
) -> None:
    """The customer's satisfaction rating (the latest one counts)."""
    tickets.add_history(
        session,
        ticket.id,
        "rating",
        None if ticket.rating is None else str(ticket.rating),
        str(score),
        actor,
        now,
    )
    _conn(session).execute(
        _UPDATE_TICKET.values(rating=score, rating_comment=comment[:2000] or None, rated_at=now),
        {"tid": ticket.id},
    )


def set_first_response(session: Session, ticket: TicketFacts, now: datetime) -> None:
    """The first public answer of an agent; later ones change nothing."""
    if ticket.first_response_at is None:
        _update(session, ticket.id, now, first_response_at=now)


def merge(
    session: Session,
    source: TicketFacts,
    target: TicketFacts,
    *,
    requester_email: str | None,
    actor: str,
    now: datetime,
) -> None:
    """Merge ``source`` into ``target``: messages, attachments and participants move.

    The source is closed and points at the target; both get a history entry.
    The source's requester becomes a participant of the target, so that
    their replies thread there.
    """
    conn = _conn(session)
    conn.execute(
        _message.update().where(_message.c.ticket_id == source.id).values(ticket_id=target.id)
    )
    moved = participants(session, source.id)
    if requester_email:
        moved.append((requester_email, ParticipantRole.requester))
    have = {e.lower() for e, _ in participants(session, target.id)}
    target_requester = customer(session, target.requester_id) if target.requester_id else None
    if target_requester is not None:
        have.add(target_requester.email.lower())
    for email, role in moved:
        if email.lower() in have:
            continue
        have.add(email.lower())
        kept = ParticipantRole.cc if role is ParticipantRole.requester else role
        tickets.add_participant(session, target.id, email, kept, now)
    tickets.add_history(session, source.id, "merged_into", None, str(target.number), actor, now)
    tickets.add_history(session, target.id, "merged_from", None, str(source.number), actor, now)
    if source.status is not TicketStatus.closed:
        tickets.add_history(session, source.id, "status", source.status.value, "closed", actor, now)
    _update(
        session,
        source.id,
        now,
        merged_into_id=target.id,
        status=TicketStatus.closed.value,
        closed_at=now,
    )
    _update(session, target.id, now)
