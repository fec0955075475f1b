"""The tables, and only the tables (state enums live in ``mailbot.states``).

No ``from __future__ import annotations`` here: SQLModel reads the annotations
at runtime. Timestamps end in ``_at``, are timezone-aware UTC, and state
columns are ``StrEnum`` values stored as short strings.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from mailbot.states import (
    AgentRole,
    AuthorType,
    Direction,
    InboundStatus,
    OutboundStatus,
    ParticipantRole,
    Priority,
    TicketSource,
    TicketStatus,
)
from mailbot.store.types import UTCDateTime, utcnow

#: The state enums are re-exported for callers that know them from here.
__all__ = [
    "Agent",
    "AgentRole",
    "Attachment",
    "AuthorType",
    "Counter",
    "Customer",
    "Direction",
    "History",
    "ImapCursor",
    "Inbound",
    "InboundStatus",
    "JobMark",
    "Lease",
    "Message",
    "Outbound",
    "OutboundStatus",
    "ParticipantRole",
    "Priority",
    "RoutingState",
    "RuleHit",
    "Ticket",
    "TicketLink",
    "TicketParticipant",
    "TicketSource",
    "TicketStatus",
    "WebCredential",
]


def _ts(nullable: bool = False, index: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_type=UTCDateTime, nullable=True, index=index)
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False, index=index)


class Customer(SQLModel, table=True):
    __tablename__ = "customer"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)
    name: str = Field(default="", max_length=200)
    language: str | None = Field(default=None, max_length=8)
    #: Set when a bounce of our mail to this customer came back.
    bouncing: bool = Field(default=False)
    created_at: datetime = _ts()


class Agent(SQLModel, table=True):
    __tablename__ = "agent"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)
    name: str = Field(default="", max_length=200)
    role: AgentRole = Field(default=AgentRole.agent, sa_type=String(16))
    skills: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    time_zone: str = Field(default="UTC", max_length=64)
    working_hours: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    active: bool = Field(default=True)
    created_at: datetime = _ts()


#: The condition of the partial index ``ix_ticket_open_queue``: the tickets still
#: open. The web page's queries repeat it word for word, constants included
#: (``mailbot.store.reports._open``), or the databases cannot use the index.
OPEN_QUEUE_WHERE = f"status NOT IN ('{TicketStatus.resolved}', '{TicketStatus.closed}')"


class Ticket(SQLModel, table=True):
    __tablename__ = "ticket"
    __table_args__ = (
        # Status filters and counts; with spam last the ticket list's count of
        # non-spam tickets reads this index alone, not the table.
        Index("ix_ticket_status_priority_spam", "status", "priority", "spam"),
        # The web page's 30-day trend and "today" figures, read from the index alone.
        Index("ix_ticket_created_at_spam", "created_at", "spam"),
        Index("ix_ticket_resolved_at_spam", "resolved_at", "spam"),
        # The open queue (a few % of all tickets) with every column the
        # dashboard's queue counts and SLA watch list need: they never touch
        # the finished tickets nor the table. Spam first: both skip spam.
        Index(
            "ix_ticket_open_queue",
            "spam",
            "status",
            "priority",
            "category",
            "assignee_id",
            "first_response_at",
            "sla_first_response_due_at",
            "sla_resolution_due_at",
            "number",
            sqlite_where=text(OPEN_QUEUE_WHERE),
            postgresql_where=text(OPEN_QUEUE_WHERE),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    number: int = Field(unique=True)
    subject: str = Field(default="", sa_type=Text)
    description: str = Field(default="", sa_type=Text)
    status: TicketStatus = Field(default=TicketStatus.new, sa_type=String(16))
    priority: Priority = Field(default=Priority.medium, sa_type=String(16))
    #: Indexed for the ticket list's category menu and filter.
    category: str | None = Field(default=None, max_length=64, index=True)
    subcategory: str | None = Field(default=None, max_length=64)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    resolved_at: datetime | None = _ts(nullable=True)
    closed_at: datetime | None = _ts(nullable=True)
    first_response_at: datetime | None = _ts(nullable=True)
    sla_first_response_due_at: datetime | None = _ts(nullable=True)
    sla_resolution_due_at: datetime | None = _ts(nullable=True)
    requester_id: int | None = Field(default=None, foreign_key="customer.id", index=True)
    assignee_id: int | None = Field(default=None, foreign_key="agent.id", index=True)
    source: TicketSource = Field(default=TicketSource.email, sa_type=String(8))
    merged_into_id: int | None = Field(default=None, foreign_key="ticket.id")
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    #: Marked as spam by a rule: kept, not in the queue, never acknowledged.
    spam: bool = Field(default=False)
    escalation_level: int = Field(default=0)
    #: The team whose queue the ticket waits in (routing found nobody on shift).
    team: str | None = Field(default=None, max_length=64, index=True)
    #: The SLA clock (issue #7): stopped while pending; the paused (business)
    #: time is added to the due times when the customer answers.
    pending_since: datetime | None = _ts(nullable=True)
    sla_paused_seconds: int = Field(default=0)
    #: Breaches recorded by the escalation job, reminders by the reminder job:
    #: set once, in the transaction that sends the mail, so nothing is sent twice.
    first_response_breached_at: datetime | None = _ts(nullable=True)
    resolution_breached_at: datetime | None = _ts(nullable=True)
    first_response_reminded_at: datetime | None = _ts(nullable=True)
    resolution_reminded_at: datetime | None = _ts(nullable=True)
    #: The pending auto-close reminder to the customer.
    pending_reminded_at: datetime | None = _ts(nullable=True)
    #: The customer's satisfaction rating (1-5) and comment, for the ticket and its agent.
    rating: int | None = Field(default=None)
    rating_comment: str | None = Field(default=None, sa_type=Text)
    rated_at: datetime | None = _ts(nullable=True)


class TicketParticipant(SQLModel, table=True):
    """Who may write to a ticket: its requester, people copied on it, agents."""

    __tablename__ = "ticket_participant"
    __table_args__ = (UniqueConstraint("ticket_id", "email"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    email: str = Field(max_length=320, index=True)
    role: ParticipantRole = Field(default=ParticipantRole.cc, sa_type=String(16))
    created_at: datetime = _ts()


class TicketLink(SQLModel, table=True):
    """A relation between two tickets (``related``: a stranger's reply, a late follow-up)."""

    __tablename__ = "ticket_link"
    __table_args__ = (UniqueConstraint("ticket_id", "other_ticket_id", "kind"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    other_ticket_id: int = Field(foreign_key="ticket.id", index=True)
    kind: str = Field(default="related", max_length=16)
    created_at: datetime = _ts()


class Message(SQLModel, table=True):
    __tablename__ = "message"

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    inbound_id: int | None = Field(default=None, foreign_key="inbound.id", index=True)
    author_email: str = Field(default="", max_length=320)
    author_name: str = Field(default="", max_length=200)
    author_type: AuthorType = Field(default=AuthorType.user, sa_type=String(8))
    internal: bool = Field(default=False)
    direction: Direction = Field(default=Direction.inbound, sa_type=String(8))
    subject: str = Field(default="", sa_type=Text)
    message_id: str | None = Field(default=None, sa_type=Text)
    message_id_key: str | None = Field(default=None, max_length=64, index=True)
    in_reply_to: str = Field(default="", sa_type=Text)
    references: str = Field(default="", sa_type=Text)
    text_body: str = Field(default="", sa_type=Text)
    html_body: str | None = Field(default=None, sa_type=Text)
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    outbound_id: int | None = Field(default=None, foreign_key="outbound.id")
    created_at: datetime = _ts()


class History(SQLModel, table=True):
    __tablename__ = "history"

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    field: str = Field(max_length=64)
    old_value: str | None = Field(default=None, sa_type=Text)
    new_value: str | None = Field(default=None, sa_type=Text)
    actor: str = Field(default="system", max_length=320)
    #: Indexed for the digest's events of a day (escalations, reopenings).
    created_at: datetime = _ts(index=True)


class Attachment(SQLModel, table=True):
    __tablename__ = "attachment"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", index=True)
    file_name: str = Field(max_length=255)
    size: int
    content_type: str = Field(max_length=255)
    storage_key: str = Field(max_length=64, index=True)
    content_id: str | None = Field(default=None, max_length=255)
    inline: bool = Field(default=False)


#: The inbox rows still to be processed: the condition of the partial indexes
#: behind the claim's ordering check. ``mailbot.store.inbox`` repeats it word for
#: word, constants included, or the databases cannot use the indexes.
INBOUND_WAITING_WHERE = (
    f"status IN ('{InboundStatus.received.value}', '{InboundStatus.processing.value}')"
)


class Inbound(SQLModel, table=True):
    """One raw mail as it was received: the durable inbox."""

    __tablename__ = "inbound"
    __table_args__ = (
        # (status, id): the claim walks the ready rows in id order and stops at the
        # first, instead of sorting every waiting row on each claim.
        Index("ix_inbound_status_id", "status", "id"),
        # The claim's ordering check ("is an earlier mail of this sender or of this
        # thread still waiting?") reads these: only the waiting rows, a few at most.
        Index(
            "ix_inbound_waiting_sender",
            "sender_key",
            "id",
            sqlite_where=text(INBOUND_WAITING_WHERE),
            postgresql_where=text(INBOUND_WAITING_WHERE),
        ),
        Index(
            "ix_inbound_waiting_thread",
            "thread_key",
            "id",
            sqlite_where=text(INBOUND_WAITING_WHERE),
            postgresql_where=text(INBOUND_WAITING_WHERE),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    size: int = Field(default=0)
    sha256: str = Field(max_length=64, index=True)
    dedupe_key: str = Field(max_length=80, unique=True)
    message_id: str | None = Field(default=None, sa_type=Text)
    envelope_from: str = Field(default="", sa_type=Text)
    envelope_to: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    source: str = Field(max_length=64)
    status: InboundStatus = Field(default=InboundStatus.received, sa_type=String(16))
    attempts: int = Field(default=0)
    last_error: str | None = Field(default=None, sa_type=Text)
    received_at: datetime = _ts()
    claimed_at: datetime | None = _ts(nullable=True)
    next_attempt_at: datetime | None = _ts(nullable=True)
    processed_at: datetime | None = _ts(nullable=True)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id")
    #: Who wrote it, lower-cased: the From address, else the envelope sender.
    #: Mails with the same key are processed in the order they were received.
    sender_key: str | None = Field(default=None, max_length=320)
    #: Hash of the conversation's first Message-ID (References, In-Reply-To, or
    #: the mail's own): a reply is never processed before a waiting mail it answers.
    thread_key: str | None = Field(default=None, max_length=64)


class Outbound(SQLModel, table=True):
    """One outgoing mail, written in the transaction that caused it."""

    __tablename__ = "outbound"
    __table_args__ = (Index("ix_outbound_status_id", "status", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    message_id: str = Field(max_length=255, unique=True)
    sender: str = Field(max_length=320)
    recipients: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    #: The first recipient, lower-cased: rate limits of automatic mail count by it.
    primary_recipient: str = Field(default="", max_length=320, index=True)
    #: What caused the mail (``ticket-opened``, ``agent-reply``, ...).
    event: str = Field(default="", max_length=64)
    #: Automatic mail (acknowledgements, notices) as opposed to a person's reply.
    auto: bool = Field(default=False)
    bounced_at: datetime | None = _ts(nullable=True)
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: OutboundStatus = Field(default=OutboundStatus.pending, sa_type=String(16))
    attempts: int = Field(default=0)
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = _ts()
    next_attempt_at: datetime | None = _ts(nullable=True)
    sent_at: datetime | None = _ts(nullable=True)


class RuleHit(SQLModel, table=True):
    """Which rules matched an inbound mail: the explanation shown to operators."""

    __tablename__ = "rule_hit"

    id: int | None = Field(default=None, primary_key=True)
    inbound_id: int | None = Field(default=None, foreign_key="inbound.id", index=True)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    rule_id: str = Field(max_length=128)
    matched: bool = Field(default=True)
    detail: str = Field(default="", sa_type=Text)
    created_at: datetime = _ts()


class ImapCursor(SQLModel, table=True):
    """How far each IMAP folder has been read: (UIDVALIDITY, last committed UID)."""

    __tablename__ = "imap_cursor"
    __table_args__ = (UniqueConstraint("mailbox", "folder"),)

    id: int | None = Field(default=None, primary_key=True)
    mailbox: str = Field(max_length=64)
    folder: str = Field(max_length=255)
    uidvalidity: int = Field(default=0, sa_type=BigInteger)
    last_uid: int = Field(default=0, sa_type=BigInteger)
    updated_at: datetime = _ts()


class JobMark(SQLModel, table=True):
    """One thing a scheduled job did once (a manager's digest of a day): the
    unique key is the claim, so two daemons cannot both do it."""

    __tablename__ = "job_mark"
    __table_args__ = (UniqueConstraint("job", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    job: str = Field(max_length=64)
    key: str = Field(max_length=255)
    created_at: datetime = _ts()


class Lease(SQLModel, table=True):
    """A named lock with an expiry: one IMAP poller per mailbox, one scheduler leader."""

    __tablename__ = "lease"

    name: str = Field(primary_key=True, max_length=128)
    holder: str = Field(max_length=128)
    expires_at: datetime = _ts()


class RoutingState(SQLModel, table=True):
    """The last agent a team's round robin assigned, so the rotation survives restarts."""

    __tablename__ = "routing_state"

    team: str = Field(primary_key=True, max_length=64)
    last_assigned: str = Field(default="", max_length=320)
    updated_at: datetime = _ts()


class Counter(SQLModel, table=True):
    """Named sequences that must not skip or repeat (ticket numbers)."""

    __tablename__ = "counter"
    name: str = Field(primary_key=True, max_length=32)
    value: int = Field(default=0)


class WebCredential(SQLModel, table=True):
    """An agent's login token for the web page and the JSON API: only its SHA-256 is kept."""

    __tablename__ = "web_credential"

    email: str = Field(primary_key=True, max_length=320)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _ts()
