"""The read side of tickets: lists and the full detail, for the CLI and the web page.

ORM objects are fine here (one ticket, or a page of them); the pipeline's hot
writes live in ``store.tickets``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlmodel import Session, col

from mailbot.store.models import (
    Agent,
    Attachment,
    Customer,
    History,
    Message,
    RuleHit,
    Ticket,
    TicketStatus,
)


@dataclass(frozen=True, slots=True)
class TicketDetail:
    ticket: Ticket
    requester: Customer | None
    messages: list[Message]
    attachments: dict[int, list[Attachment]]
    history: list[History]
    rule_hits: list[RuleHit]
    assignee: str | None


def get_ticket(session: Session, ticket_id: int) -> Ticket | None:
    return session.get(Ticket, ticket_id)


def list_tickets(
    session: Session,
    *,
    status: TicketStatus | None = None,
    limit: int = 50,
    offset: int = 0,
    spam: bool = False,
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
    # Spam is kept but stays out of the queue unless asked for.
    stmt = stmt.where(col(Ticket.spam).is_(spam))
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
    hits = list(
        session.execute(
            select(RuleHit).where(col(RuleHit.ticket_id) == ticket.id).order_by(col(RuleHit.id))
        ).scalars()
    )
    assignee = session.get(Agent, ticket.assignee_id) if ticket.assignee_id else None
    return TicketDetail(
        ticket,
        requester,
        messages,
        attachments,
        history,
        hits,
        assignee.email if assignee else None,
    )


def count_tickets(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(Ticket)).scalar_one())
