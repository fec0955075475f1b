"""Which ticket a mail belongs to: pure decisions over a lookup protocol.

In order: any Message-ID in In-Reply-To or References that we stored or sent
for a ticket (our own IDs must carry a valid signature); then the subject
token (``[#42]`` by default, anywhere in the subject, so that reply and
forward prefixes in any language and list tags do not matter); then a plus
address ``support+42@``; else the mail starts a new ticket.

The match says whether the sender is a participant of the ticket; what to do
with a stranger's reply is the caller's policy.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Sequence
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
    plus_address = "plus-address"
    new = "new"


@dataclass(frozen=True, slots=True)
class ThreadMatch:
    """The ticket a mail refers to, how it was found, and whether its sender may write there."""

    ticket_id: int | None
    how: ThreadedBy
    participant: bool = False


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


def plus_ticket_numbers(addresses: Iterable[str], our_addresses: Iterable[str]) -> list[int]:
    """Ticket numbers from ``support+N@...`` among ``addresses`` (ours only)."""
    ours = {a.lower() for a in our_addresses}
    numbers = []
    for address in addresses:
        local, _, domain = address.strip().lower().rpartition("@")
        base, plus, tag = local.partition("+")
        if plus and tag.isdigit() and len(tag) <= 10 and f"{base}@{domain}" in ours:
            number = int(tag)
            if 0 < number <= MAX_TICKET_NUMBER:
                numbers.append(number)
    return numbers


def find_ticket(
    msg: ParsedMessage,
    lookup: TicketLookup,
    token: SubjectToken,
    *,
    plus_numbers: Sequence[int] = (),
    signed_ticket: Callable[[str], int | None] = lambda _: None,
    looks_signed: Callable[[str], bool] = lambda _: False,
) -> ThreadMatch:
    """Decide which ticket ``msg`` refers to, in the order of the module docstring.

    ``signed_ticket`` reads the ticket number of one of our signed
    Message-IDs (None when forged); an ID with our shape but a bad signature
    is ignored, so reference threading cannot be forged by guessing.
    Only the top-level subject and headers count: a token inside an attached
    or forwarded message never threads.
    """
    ids = [
        i
        for i in (*msg.in_reply_to, *reversed(msg.references))
        if not looks_signed(i) or signed_ticket(i) is not None
    ]
    ticket_id: int | None = None
    how = ThreadedBy.new
    if ids:
        ticket_id = lookup.ticket_for_message_ids(ids)
        if ticket_id is None:
            for i in ids:
                number = signed_ticket(i)
                if number is not None:
                    ticket_id = lookup.ticket_id_for_number(number)
                    if ticket_id is not None:
                        break
        if ticket_id is not None:
            how = ThreadedBy.references
    if ticket_id is None:
        number = token.find(msg.subject)
        if number is not None:
            ticket_id = lookup.ticket_id_for_number(number)
            how = ThreadedBy.subject_token
    if ticket_id is None:
        for number in plus_numbers:
            ticket_id = lookup.ticket_id_for_number(number)
            if ticket_id is not None:
                how = ThreadedBy.plus_address
                break
    if ticket_id is None:
        return ThreadMatch(None, ThreadedBy.new)
    sender = msg.sender.email.lower() if msg.sender else None
    participant = sender is not None and sender in lookup.participants(ticket_id)
    return ThreadMatch(ticket_id, how, participant)
