"""Ticket, customer, message and history queries and commands.

The only SQL the use cases run for tickets. ``SessionLookup`` implements the
threader's ``TicketLookup`` protocol over one session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from mailbot.headers import message_id_key
from mailbot.states import ParticipantRole
from mailbot.store.models import (
    Attachment,
    AuthorType,
    Counter,
    Customer,
    Direction,
    History,
    Message,
    Priority,
    Ticket,
    TicketLink,
    TicketParticipant,
    TicketSource,
    TicketStatus,
)

TICKET_COUNTER = "ticket"


class SessionLookup:
    """The threader's view of the tickets, inside one transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def ticket_for_message_ids(self, message_ids: Sequence[str]) -> int | None:
        keys = [message_id_key(m) for m in message_ids]
        if not keys:
            return None
        # Prefer the ticket of the most recent referenced message.
        stmt = (
            select(col(Message.ticket_id))
            .where(col(Message.message_id_key).in_(keys))
            .order_by(col(Message.id).desc())
            .limit(1)
        )
        ticket_id = self.session.execute(stmt).scalar_one_or_none()
        return None if ticket_id is None else self._survivor(ticket_id)

    def ticket_id_for_number(self, number: int) -> int | None:
        stmt = select(col(Ticket.id)).where(col(Ticket.number) == number)
        ticket_id = self.session.execute(stmt).scalar_one_or_none()
        return None if ticket_id is None else self._survivor(ticket_id)

    def participants(self, ticket_id: int) -> frozenset[str]:
        requester = (
            select(col(Customer.email))
            .join(Ticket, col(Ticket.requester_id) == col(Customer.id))
            .where(col(Ticket.id) == ticket_id)
        )
        others = select(col(TicketParticipant.email)).where(
            col(TicketParticipant.ticket_id) == ticket_id
        )
        found = [
            *self.session.execute(requester).scalars(),
            *self.session.execute(others).scalars(),
        ]
        return frozenset(e.lower() for e in found)

    def _survivor(self, ticket_id: int) -> int:
        """Follow merges to the ticket that lives on (bounded, so a cycle cannot hang)."""
        current = ticket_id
        for _ in range(32):
            merged = self.session.execute(
                select(col(Ticket.merged_into_id)).where(col(Ticket.id) == current)
            ).scalar_one_or_none()
            if merged is None:
                return current
            current = merged
        return current


def next_ticket_number(session: Session) -> int:
    """The next ticket number: sequential, never repeated, safe under concurrency."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert(Counter)
        .values(name=TICKET_COUNTER, value=1)
        .on_conflict_do_update(index_elements=["name"], set_={"value": col(Counter.value) + 1})
        .returning(col(Counter.value))
    )
    return int(session.execute(stmt).scalar_one())


def get_or_create_customer(session: Session, email: str, name: str) -> Customer:
    email = email.lower()
    customer = session.execute(
        select(Customer).where(col(Customer.email) == email)
    ).scalar_one_or_none()
    if customer is None:
        customer = Customer(email=email, name=name[:200])
        session.add(customer)
        session.flush()
    elif name and not customer.name:
        customer.name = name[:200]
    return customer


def mark_bouncing(session: Session, email: str) -> None:
    """Our mail to this customer bounced."""
    customer = session.execute(
        select(Customer).where(col(Customer.email) == email.lower())
    ).scalar_one_or_none()
    if customer is not None:
        customer.bouncing = True
        session.add(customer)


def create_ticket(
    session: Session,
    *,
    subject: str,
    description: str,
    requester: Customer | None,
    priority: Priority,
    category: str | None,
    now: datetime,
    source: TicketSource = TicketSource.email,
    actor: str = "system",
    sla_first_response_due_at: datetime | None = None,
    sla_resolution_due_at: datetime | None = None,
) -> Ticket:
    ticket = Ticket(
        sla_first_response_due_at=sla_first_response_due_at,
        sla_resolution_due_at=sla_resolution_due_at,
        number=next_ticket_number(session),
        subject=subject,
        description=description,
        status=TicketStatus.new,
        priority=priority,
        category=category,
        requester_id=requester.id if requester else None,
        source=source,
        created_at=now,
        updated_at=now,
    )
    session.add(ticket)
    session.flush()
    assert ticket.id is not None
    add_history(session, ticket.id, "status", None, TicketStatus.new.value, actor, now)
    return ticket


def add_history(
    session: Session,
    ticket_id: int,
    field_name: str,
    old: str | None,
    new: str | None,
    actor: str,
    now: datetime,
) -> None:
    session.add(
        History(
            ticket_id=ticket_id,
            field=field_name,
            old_value=old,
            new_value=new,
            actor=actor[:320],
            created_at=now,
        )
    )


@dataclass(frozen=True, slots=True)
class NewMessage:
    ticket_id: int
    subject: str
    text_body: str
    html_body: str | None
    author_email: str
    author_name: str
    author_type: AuthorType
    direction: Direction
    message_id: str | None
    in_reply_to: Sequence[str]
    references: Sequence[str]
    created_at: datetime
    inbound_id: int | None = None
    outbound_id: int | None = None
    internal: bool = False
    flags: Sequence[str] = field(default=())


def add_message(session: Session, new: NewMessage) -> Message:
    message = Message(
        ticket_id=new.ticket_id,
        inbound_id=new.inbound_id,
        outbound_id=new.outbound_id,
        subject=new.subject,
        text_body=new.text_body,
        html_body=new.html_body,
        author_email=new.author_email[:320],
        author_name=new.author_name[:200],
        author_type=new.author_type,
        direction=new.direction,
        internal=new.internal,
        message_id=new.message_id,
        message_id_key=message_id_key(new.message_id) if new.message_id else None,
        in_reply_to=" ".join(f"<{m}>" for m in new.in_reply_to),
        references=" ".join(f"<{m}>" for m in new.references),
        flags=list(new.flags),
        created_at=new.created_at,
    )
    session.add(message)
    session.flush()
    return message


def add_attachment(
    session: Session,
    *,
    message_id: int,
    file_name: str,
    size: int,
    content_type: str,
    storage_key: str,
    content_id: str | None,
    inline: bool,
) -> None:
    session.add(
        Attachment(
            message_id=message_id,
            file_name=file_name[:255],
            size=size,
            content_type=content_type[:255],
            storage_key=storage_key,
            content_id=content_id[:255] if content_id else None,
            inline=inline,
        )
    )


def add_participant(session: Session, ticket_id: int, email: str, role: ParticipantRole) -> None:
    """Make ``email`` a participant of the ticket (once)."""
    email = email.lower()
    exists = session.execute(
        select(col(TicketParticipant.id)).where(
            col(TicketParticipant.ticket_id) == ticket_id, col(TicketParticipant.email) == email
        )
    ).first()
    if exists is None:
        session.add(TicketParticipant(ticket_id=ticket_id, email=email[:320], role=role))


def link_tickets(session: Session, ticket_id: int, other_ticket_id: int, kind: str) -> None:
    session.add(TicketLink(ticket_id=ticket_id, other_ticket_id=other_ticket_id, kind=kind))


def set_status(
    session: Session, ticket: Ticket, status: TicketStatus, actor: str, now: datetime
) -> None:
    """Change a ticket's status, with its history entry and the time stamps."""
    if ticket.status == status:
        return
    assert ticket.id is not None
    add_history(session, ticket.id, "status", ticket.status, status.value, actor, now)
    ticket.status = status
    if status is TicketStatus.resolved:
        ticket.resolved_at = now
    elif status is TicketStatus.closed:
        ticket.closed_at = now
    elif status is TicketStatus.reopened:
        ticket.resolved_at = None
        ticket.closed_at = None
    ticket.updated_at = now
    session.add(ticket)


def touch(session: Session, ticket: Ticket, now: datetime) -> None:
    ticket.updated_at = now
    session.add(ticket)


# -- read side -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TicketDetail:
    ticket: Ticket
    requester: Customer | None
    messages: list[Message]
    attachments: dict[int, list[Attachment]]
    history: list[History]


def get_ticket(session: Session, ticket_id: int) -> Ticket | None:
    return session.get(Ticket, ticket_id)


def list_tickets(
    session: Session,
    *,
    status: TicketStatus | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[tuple[Ticket, str | None]]:
    """Tickets, newest first, with the requester's address."""
    stmt = (
        select(Ticket, col(Customer.email))
        .outerjoin(Customer, col(Customer.id) == col(Ticket.requester_id))
        .order_by(col(Ticket.number).desc())
        .limit(limit)
        .offset(offset)
    )
    if status is not None:
        stmt = stmt.where(col(Ticket.status) == status.value)
    return [(t, e) for t, e in session.execute(stmt).all()]


def ticket_detail(session: Session, number: int) -> TicketDetail | None:
    ticket = session.execute(
        select(Ticket).where(col(Ticket.number) == number)
    ).scalar_one_or_none()
    if ticket is None:
        return None
    requester = session.get(Customer, ticket.requester_id) if ticket.requester_id else None
    messages = list(
        session.execute(
            select(Message).where(col(Message.ticket_id) == ticket.id).order_by(col(Message.id))
        ).scalars()
    )
    attachments: dict[int, list[Attachment]] = {}
    if messages:
        rows = session.execute(
            select(Attachment)
            .where(col(Attachment.message_id).in_([m.id for m in messages]))
            .order_by(col(Attachment.id))
        ).scalars()
        for attachment in rows:
            attachments.setdefault(attachment.message_id, []).append(attachment)
    history = list(
        session.execute(
            select(History).where(col(History.ticket_id) == ticket.id).order_by(col(History.id))
        ).scalars()
    )
    return TicketDetail(ticket, requester, messages, attachments, history)


def count_tickets(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(Ticket)).scalar_one())
