"""Ticket, customer, message and history queries and commands.

The only SQL the use cases run for tickets. ``SessionLookup`` implements the
threader's ``TicketLookup`` protocol over one session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache

from sqlalchemy import BindParameter, Connection, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel

from mailbot.headers import message_id_key
from mailbot.message import Attachment
from mailbot.states import ParticipantRole
from mailbot.store.fast import Fast
from mailbot.store.models import (
    AuthorType,
    Direction,
    Priority,
    TicketSource,
    TicketStatus,
)

TICKET_COUNTER = "ticket"


_tables = SQLModel.metadata.tables
_ticket, _customer, _message = _tables["ticket"], _tables["customer"], _tables["message"]
_history, _attachment = _tables["history"], _tables["attachment"]
_participant, _link, _counter = (
    _tables["ticket_participant"],
    _tables["ticket_link"],
    _tables["counter"],
)

# The pipeline's statements are built once: SQLAlchemy then reuses their
# compiled form, which is several times cheaper per mail than ORM objects.
#: Most References headers are short: a statement per count of keys, built once.
MAX_REFERENCE_KEYS = 100


@cache
def _ticket_for_keys(count: int) -> Fast:
    keys: list[BindParameter[str]] = [bindparam(f"k{n}") for n in range(count)]
    return Fast(
        select(_message.c.ticket_id)
        .where(_message.c.message_id_key.in_(keys))
        .order_by(_message.c.id.desc())
        .limit(1)
    )


_TICKET_BY_NUMBER = Fast(select(_ticket.c.id).where(_ticket.c.number == bindparam("number")))
_MERGED_INTO = Fast(select(_ticket.c.merged_into_id).where(_ticket.c.id == bindparam("id")))
#: The requester and the other participants of a ticket, in one statement.
_PEOPLE = Fast(
    select(_customer.c.email)
    .select_from(_ticket.join(_customer, _customer.c.id == _ticket.c.requester_id))
    .where(_ticket.c.id == bindparam("id"))
    .union_all(select(_participant.c.email).where(_participant.c.ticket_id == bindparam("id")))
)
_TICKET_ROW_SELECT = select(
    _ticket.c.id,
    _ticket.c.number,
    _ticket.c.subject,
    _ticket.c.status,
    _ticket.c.priority,
    _ticket.c.closed_at,
    _ticket.c.requester_id,
).where(_ticket.c.id == bindparam("id"))
_TICKET_ROW = Fast(_TICKET_ROW_SELECT)
_CUSTOMER_BY_EMAIL = Fast(
    select(
        _customer.c.id,
        _customer.c.email,
        _customer.c.name,
        _customer.c.language,
        _customer.c.bouncing,
    ).where(_customer.c.email == bindparam("email"))
)
_INSERT_CUSTOMER = Fast(_customer.insert().returning(_customer.c.id))
_UPDATE_CUSTOMER = _customer.update().where(_customer.c.id == bindparam("cid"))
_BOUNCING = _customer.update().where(_customer.c.email == bindparam("addr")).values(bouncing=True)
_INSERT_TICKET = Fast(_ticket.insert().returning(_ticket.c.id))
_UPDATE_TICKET = _ticket.update().where(_ticket.c.id == bindparam("tid"))
_INSERT_HISTORY = Fast(_history.insert())
_INSERT_MESSAGE = Fast(_message.insert().returning(_message.c.id))
_INSERT_ATTACHMENT = Fast(_attachment.insert())
_INSERT_LINK = _link.insert()
_NEXT_NUMBER = {
    name: Fast(
        dialect.insert(_counter)
        .values(name=TICKET_COUNTER, value=1)
        .on_conflict_do_update(index_elements=["name"], set_={"value": _counter.c.value + 1})
        .returning(_counter.c.value)
    )
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}
_ADD_PARTICIPANT = {
    name: Fast(
        dialect.insert(_participant).on_conflict_do_nothing(index_elements=["ticket_id", "email"])
    )
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}


def _conn(session: Session) -> Connection:
    return session.connection()


@dataclass(frozen=True, slots=True)
class TicketRow:
    """The facts of a ticket the pipeline decides on."""

    id: int
    number: int
    subject: str
    status: TicketStatus
    priority: Priority
    closed_at: datetime | None
    requester_id: int | None


@dataclass(frozen=True, slots=True)
class CustomerRow:
    id: int
    email: str
    name: str
    language: str | None
    bouncing: bool
    #: Created by this mail (the "customer is new" of the rules).
    is_new: bool = False


class SessionLookup:
    """The threader's view of the tickets, inside one transaction."""

    def __init__(self, session: Session) -> None:
        self.conn = _conn(session)

    def ticket_for_message_ids(self, message_ids: Sequence[str]) -> int | None:
        keys = list(dict.fromkeys(message_id_key(m) for m in message_ids[:MAX_REFERENCE_KEYS]))
        if not keys:
            return None
        # Prefer the ticket of the most recent referenced message.
        params = {f"k{n}": key for n, key in enumerate(keys)}
        ticket_id = _ticket_for_keys(len(keys)).execute(self.conn, params).scalar()
        return None if ticket_id is None else self.survivor(ticket_id)

    def ticket_id_for_number(self, number: int) -> int | None:
        ticket_id = _TICKET_BY_NUMBER.execute(self.conn, {"number": number}).scalar()
        return None if ticket_id is None else self.survivor(ticket_id)

    def participants(self, ticket_id: int) -> frozenset[str]:
        rows = _PEOPLE.execute(self.conn, {"id": ticket_id}).rows
        return frozenset(email.lower() for (email,) in rows)

    def survivor(self, ticket_id: int) -> int:
        """Follow merges to the ticket that lives on (bounded, so a cycle cannot hang)."""
        current = ticket_id
        for _ in range(32):
            merged = _MERGED_INTO.execute(self.conn, {"id": current}).scalar()
            if merged is None:
                return int(current)
            current = merged
        return int(current)


def next_ticket_number(session: Session) -> int:
    """The next ticket number: sequential, never repeated, safe under concurrency."""
    stmt = _NEXT_NUMBER[session.get_bind().dialect.name]
    return int(stmt.execute(_conn(session), {}).scalar_one())


def ticket_row(session: Session, ticket_id: int) -> TicketRow | None:
    row = _TICKET_ROW.execute(_conn(session), {"id": ticket_id}).one_or_none()
    if row is None:
        return None
    row_id, number, subject, status, priority, closed_at, requester_id = row
    return TicketRow(
        id=row_id,
        number=number,
        subject=subject,
        status=TicketStatus(status),
        priority=Priority(priority),
        closed_at=closed_at,
        requester_id=requester_id,
    )


def get_or_create_customer(
    session: Session,
    email: str,
    name: str,
    *,
    now: datetime,
    language: Callable[[], str | None] | None = None,
    bouncing: bool | None = None,
) -> CustomerRow:
    """The customer with this address, created on first sight.

    ``language`` (called only when needed) is set when the customer has none
    yet; ``bouncing`` (when given) replaces the flag: a customer who writes is
    reachable again.
    """
    email = email.lower()[:320]
    conn = _conn(session)
    row = _CUSTOMER_BY_EMAIL.execute(conn, {"email": email}).one_or_none()
    if row is None:
        lang = language() if language else None
        values = {
            "email": email,
            "name": name[:200],
            "language": lang,
            "bouncing": bool(bouncing),
            "created_at": now,
        }
        new_id = _INSERT_CUSTOMER.execute(conn, values).scalar_one()
        return CustomerRow(new_id, email, name[:200], lang, bool(bouncing), is_new=True)
    row_id, row_email, row_name, row_language, row_bouncing = row
    changes: dict[str, object] = {}
    if name and not row_name:
        changes["name"] = name[:200]
    if language and not row_language:
        lang = language()
        if lang:
            changes["language"] = lang
    if bouncing is not None and bool(row_bouncing) != bouncing:
        changes["bouncing"] = bouncing
    if changes:
        conn.execute(_UPDATE_CUSTOMER.values(**changes), {"cid": row_id})
    return CustomerRow(
        row_id,
        row_email,
        str(changes.get("name", row_name)),
        str(changes["language"]) if "language" in changes else row_language,
        bool(changes.get("bouncing", row_bouncing)),
    )


def mark_bouncing(session: Session, email: str) -> None:
    """Our mail to this customer bounced."""
    _conn(session).execute(_BOUNCING, {"addr": email.lower()})


def create_ticket(
    session: Session,
    *,
    subject: str,
    description: str,
    requester: CustomerRow | None,
    priority: Priority,
    category: str | None,
    now: datetime,
    subcategory: str | None = None,
    tags: Sequence[str] = (),
    spam: bool = False,
    source: TicketSource = TicketSource.email,
    actor: str = "system",
    sla_first_response_due_at: datetime | None = None,
    sla_resolution_due_at: datetime | None = None,
) -> TicketRow:
    number = next_ticket_number(session)
    values = {
        "number": number,
        "subject": subject,
        "description": description,
        "status": TicketStatus.new.value,
        "priority": priority.value,
        "category": category,
        "subcategory": subcategory,
        "requester_id": requester.id if requester else None,
        "assignee_id": None,
        "source": source.value,
        "merged_into_id": None,
        "tags": list(dict.fromkeys(tags)),
        "spam": spam,
        "escalation_level": 0,
        "sla_paused_seconds": 0,
        "created_at": now,
        "updated_at": now,
        "resolved_at": None,
        "closed_at": None,
        "first_response_at": None,
        "sla_first_response_due_at": sla_first_response_due_at,
        "sla_resolution_due_at": sla_resolution_due_at,
    }
    ticket_id = _INSERT_TICKET.execute(_conn(session), values).scalar_one()
    add_history(session, ticket_id, "status", None, TicketStatus.new.value, actor, now)
    return TicketRow(
        id=ticket_id,
        number=number,
        subject=subject,
        status=TicketStatus.new,
        priority=priority,
        closed_at=None,
        requester_id=requester.id if requester else None,
    )


def add_history(
    session: Session,
    ticket_id: int,
    field_name: str,
    old: str | None,
    new: str | None,
    actor: str,
    now: datetime,
) -> None:
    _INSERT_HISTORY.execute(
        _conn(session),
        {
            "ticket_id": ticket_id,
            "field": field_name,
            "old_value": old,
            "new_value": new,
            "actor": actor[:320],
            "created_at": now,
        },
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


def add_message(session: Session, new: NewMessage) -> int:
    """Store a message on its ticket; returns its id."""
    values = {
        "ticket_id": new.ticket_id,
        "inbound_id": new.inbound_id,
        "outbound_id": new.outbound_id,
        "subject": new.subject,
        "text_body": new.text_body,
        "html_body": new.html_body,
        "author_email": new.author_email[:320],
        "author_name": new.author_name[:200],
        "author_type": new.author_type.value,
        "direction": new.direction.value,
        "internal": new.internal,
        "message_id": new.message_id,
        "message_id_key": message_id_key(new.message_id) if new.message_id else None,
        "in_reply_to": " ".join(f"<{m}>" for m in new.in_reply_to),
        "references": " ".join(f"<{m}>" for m in new.references),
        "flags": list(new.flags),
        "created_at": new.created_at,
    }
    return int(_INSERT_MESSAGE.execute(_conn(session), values).scalar_one())


def add_attachments(
    session: Session, message_id: int, files: Sequence[Attachment], keys: Sequence[str]
) -> None:
    """Rows for the files of a stored message; ``keys`` are their blob storage keys."""
    if not files:
        return
    _INSERT_ATTACHMENT.execute(
        _conn(session),
        [
            {
                "message_id": message_id,
                "file_name": file.filename[:255],
                "size": file.size,
                "content_type": file.content_type[:255],
                "storage_key": key,
                "content_id": file.content_id[:255] if file.content_id else None,
                "inline": file.inline,
            }
            for file, key in zip(files, keys, strict=True)
        ],
    )


def add_participant(
    session: Session, ticket_id: int, email: str, role: ParticipantRole, now: datetime
) -> None:
    """Make ``email`` a participant of the ticket (once)."""
    stmt = _ADD_PARTICIPANT[session.get_bind().dialect.name]
    stmt.execute(
        _conn(session),
        {
            "ticket_id": ticket_id,
            "email": email.lower()[:320],
            "role": role.value,
            "created_at": now,
        },
    )


def link_tickets(
    session: Session, ticket_id: int, other_ticket_id: int, kind: str, now: datetime
) -> None:
    _conn(session).execute(
        _INSERT_LINK,
        {
            "ticket_id": ticket_id,
            "other_ticket_id": other_ticket_id,
            "kind": kind,
            "created_at": now,
        },
    )


def set_status(
    session: Session, ticket: TicketRow, status: TicketStatus, actor: str, now: datetime
) -> TicketRow:
    """Change a ticket's status, with its history entry and the time stamps."""
    if ticket.status is status:
        return ticket
    add_history(session, ticket.id, "status", ticket.status.value, status.value, actor, now)
    values: dict[str, object] = {"status": status.value, "updated_at": now}
    if status is TicketStatus.resolved:
        values["resolved_at"] = now
    elif status is TicketStatus.closed:
        values["closed_at"] = now
    elif status is TicketStatus.reopened:
        values["resolved_at"] = None
        values["closed_at"] = None
    _conn(session).execute(_UPDATE_TICKET.values(**values), {"tid": ticket.id})
    closed_at = now if status is TicketStatus.closed else None
    if status not in (TicketStatus.closed, TicketStatus.reopened):
        closed_at = ticket.closed_at
    return replace(ticket, status=status, closed_at=closed_at)


_TAGS_OF = select(_ticket.c.tags).where(_ticket.c.id == bindparam("id"))
_LEVEL_OF = select(_ticket.c.escalation_level).where(_ticket.c.id == bindparam("id"))
_INSERT_RULE_HIT = Fast(_tables["rule_hit"].insert())
_REOPENS = (
    select(func.count())
    .select_from(_history)
    .where(
        _history.c.ticket_id == bindparam("id"),
        _history.c.field == "status",
        _history.c.new_value == TicketStatus.reopened.value,
    )
)


def reopen_count(session: Session, ticket_id: int) -> int:
    """How many times the ticket has been reopened so far (status changes to ``reopened``)."""
    return int(_conn(session).execute(_REOPENS, {"id": ticket_id}).scalar_one())


def add_tags(session: Session, ticket_id: int, tags: Sequence[str]) -> None:
    conn = _conn(session)
    current = list(conn.execute(_TAGS_OF, {"id": ticket_id}).scalar_one() or [])
    merged = list(dict.fromkeys([*current, *tags]))
    if merged != current:
        conn.execute(_UPDATE_TICKET.values(tags=merged), {"tid": ticket_id})


def escalate(session: Session, ticket_id: int, reason: str, actor: str, now: datetime) -> None:
    """Raise the ticket's escalation level, with the reason in its history."""
    conn = _conn(session)
    level = int(conn.execute(_LEVEL_OF, {"id": ticket_id}).scalar_one() or 0)
    conn.execute(_UPDATE_TICKET.values(escalation_level=level + 1), {"tid": ticket_id})
    add_history(session, ticket_id, "escalation", str(level), f"{level + 1}: {reason}", actor, now)


def set_team(session: Session, ticket_id: int, team: str) -> None:
    _conn(session).execute(_UPDATE_TICKET.values(team=team[:64]), {"tid": ticket_id})


def assign(
    session: Session, ticket: TicketRow, agent_id: int, agent_email: str, actor: str, now: datetime
) -> None:
    """Assign the ticket; a new ticket becomes ``assigned``."""
    values: dict[str, object] = {"assignee_id": agent_id, "updated_at": now}
    add_history(session, ticket.id, "assignee", None, agent_email, actor, now)
    if ticket.status is TicketStatus.new:
        values["status"] = TicketStatus.assigned.value
        add_history(session, ticket.id, "status", ticket.status.value, "assigned", actor, now)
    _conn(session).execute(_UPDATE_TICKET.values(**values), {"tid": ticket.id})


def add_rule_hits(
    session: Session,
    *,
    inbound_id: int | None,
    ticket_id: int | None,
    hits: Sequence[tuple[str, str]],
    now: datetime,
) -> None:
    """Record which rules matched a mail, with their explanations."""
    if hits:
        _INSERT_RULE_HIT.execute(
            _conn(session),
            [
                {
                    "inbound_id": inbound_id,
                    "ticket_id": ticket_id,
                    "rule_id": rule_id[:128],
                    "matched": True,
                    "detail": detail[:2000],
                    "created_at": now,
                }
                for rule_id, detail in hits
            ],
        )


_TOUCH = Fast(_UPDATE_TICKET.values(updated_at=bindparam("now")))


def touch(session: Session, ticket_id: int, now: datetime) -> None:
    _TOUCH.execute(_conn(session), {"tid": ticket_id, "now": now})
