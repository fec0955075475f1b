"""Which ticket a mail belongs to: pure decisions over a lookup protocol.

In order: any Message-ID in In-Reply-To or References that we stored or sent
for a ticket; then the subject token (``[#42]`` by default, anywhere in the
subject, so that reply and forward prefixes in any language and list tags do
not matter); else the mail starts a new ticket.

A reply is only appended when its sender is a participant of the ticket;
anyone else's mail opens a new ticket, so that a guessed token cannot be used
to write into (or read from) another customer's conversation.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mailbot.message import ParsedMessage


class TicketLookup(Protocol):
    """What the threader needs from storage (implemented in ``store.tickets``)."""

    def ticket_for_message_ids(self, message_ids: Sequence[str]) -> int | None: ...

    def ticket_id_for_number(self, number: int) -> int | None: ...

    def participants(self, ticket_id: int) -> frozenset[str]: ...


class ThreadedBy(enum.StrEnum):
    references = "references"
    subject_token = "subject-token"
    new = "new"
    not_participant = "not-participant"


@dataclass(frozen=True, slots=True)
class ThreadMatch:
    ticket_id: int | None
    how: ThreadedBy
    #: The ticket the mail referred to when it is not appended to it.
    related_ticket_id: int | None = None


#: Upper bound for a ticket number read from a subject (no int overflow in SQL).
MAX_TICKET_NUMBER = 2**31 - 1


class SubjectToken:
    """Reads and writes the ticket token of a subject, e.g. ``[#42]``."""

    def __init__(self, token_format: str) -> None:
        before, _, after = token_format.partition("{number}")
        self.token_format = token_format
        self._pattern = re.compile(re.escape(before) + r"\s*(\d{1,10})\s*" + re.escape(after))

    def find(self, subject: str) -> int | None:
        """The first ticket number in ``subject``, or None."""
        for match in self._pattern.finditer(subject):
            number = int(match.group(1))
            if 0 < number <= MAX_TICKET_NUMBER:
                return number
        return None

    def render(self, number: int) -> str:
        return self.token_format.replace("{number}", str(number))

    def add(self, subject: str, number: int) -> str:
        """``subject`` with the ticket's token, exactly once."""
        if self.find(subject) == number:
            return subject
        return f"{self.render(number)} {subject}".strip()


def find_ticket(msg: ParsedMessage, lookup: TicketLookup, token: SubjectToken) -> ThreadMatch:
    """Decide which ticket ``msg`` belongs to."""
    ids = [*msg.in_reply_to, *reversed(msg.references)]
    ticket_id: int | None = None
    how = ThreadedBy.new
    if ids:
        ticket_id = lookup.ticket_for_message_ids(ids)
        if ticket_id is not None:
            how = ThreadedBy.references
    if ticket_id is None:
        number = token.find(msg.subject)
        if number is not None:
            ticket_id = lookup.ticket_id_for_number(number)
            if ticket_id is not None:
                how = ThreadedBy.subject_token
    if ticket_id is None:
        return ThreadMatch(None, ThreadedBy.new)
    sender = msg.sender.email.lower() if msg.sender else None
    if sender is None or sender not in lookup.participants(ticket_id):
        return ThreadMatch(None, ThreadedBy.not_participant, related_ticket_id=ticket_id)
    return ThreadMatch(ticket_id, how)
