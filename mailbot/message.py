"""Domain value types that flow through the pipeline: what a parsed mail is.

These are plain frozen dataclasses; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox: the address (domain lower-cased) and the display name."""

    email: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attached or inline part.

    ``filename`` is already sanitised display metadata: it never becomes a path.
    """

    filename: str
    content_type: str
    payload: bytes
    content_id: str | None = None
    inline: bool = False

    @property
    def size(self) -> int:
        return len(self.payload)


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Limits that keep a hostile mail from exhausting the worker."""

    max_parts: int = 500
    max_depth: int = 30
    max_header_bytes: int = 256 * 1024
    max_decoded_bytes: int = 50 * 1024 * 1024
    max_text_chars: int = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """What the pipeline knows of one inbound mail after parsing.

    ``sender`` is None when From is missing or ambiguous (several mailboxes,
    group syntax, unparseable): mailbot never guesses an identity.
    Message-IDs are kept without angle brackets.
    """

    message_id: str | None
    subject: str
    sender: Address | None
    from_header: str
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    date: datetime | None = None
    text: str = ""
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    defects: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = field(default=())

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None
