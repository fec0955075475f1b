"""The closed vocabularies of mailbot: ticket statuses, priorities, sources, roles.

A leaf module, so that pure decisions (``lifecycle``, ``rules``) and the
tables share one definition.
"""

from __future__ import annotations

import enum


class TicketStatus(enum.StrEnum):
    new = "new"
    assigned = "assigned"
    in_progress = "in_progress"
    pending = "pending"
    resolved = "resolved"
    closed = "closed"
    reopened = "reopened"


class Priority(enum.StrEnum):
    critical = "critical"
    high = "high"
    medium = "medium"
    low = "low"


class TicketSource(enum.StrEnum):
    web = "web"
    email = "email"
    chat = "chat"
    api = "api"


class AuthorType(enum.StrEnum):
    user = "user"
    support = "support"
    system = "system"


class Direction(enum.StrEnum):
    inbound = "inbound"
    outbound = "outbound"


class AgentRole(enum.StrEnum):
    agent = "agent"
    manager = "manager"
    admin = "admin"


class InboundStatus(enum.StrEnum):
    received = "received"
    processing = "processing"
    done = "done"
    shunted = "shunted"


class OutboundStatus(enum.StrEnum):
    pending = "pending"
    sending = "sending"
    sent = "sent"
    failed = "failed"


class ParticipantRole(enum.StrEnum):
    requester = "requester"
    cc = "cc"
    agent = "agent"
