"""Builds outgoing mail as bytes from rendered parts. Pure.

No header is ever built from raw user input: addresses go through
``email.headerregistry.Address`` (which refuses CR/LF and unparsable
addresses), display names and the subject have control characters replaced
(BAD_INPUTS B-44), and the ``EmailMessage`` API refuses any header value that
still holds a line break.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import format_datetime

from mailbot.errors import PermanentError

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_ADDR_SPEC = re.compile(r"^[^\s@<>()\[\]\\,;:\"]+@[^\s@<>()\[\]\\,;:\"]+$")
MAX_SUBJECT_CHARS = 250


class HeaderInjectionError(PermanentError):
    """A value meant for a header would change the mail's structure."""


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Outgoing:
    sender: Recipient
    to: Sequence[Recipient]
    subject: str
    text: str
    message_id: str
    date: datetime
    html: str | None = None
    in_reply_to: str | None = None
    references: Sequence[str] = ()
    auto: bool = False
    extra_headers: Mapping[str, str] = field(default_factory=dict)


def clean_text(value: str, limit: int = MAX_SUBJECT_CHARS) -> str:
    """One line of text safe for a header: control characters become spaces."""
    return " ".join(_CONTROL.sub(" ", value).split())[:limit]


def header_address(recipient: Recipient) -> HeaderAddress:
    if not _ADDR_SPEC.match(recipient.email):
        raise HeaderInjectionError(f"refusing to address mail to {recipient.email!r}")
    local, _, domain = recipient.email.rpartition("@")
    try:
        return HeaderAddress(
            display_name=clean_text(recipient.name, 120), username=local, domain=domain
        )
    except (ValueError, TypeError) as exc:
        raise HeaderInjectionError(f"refusing address {recipient.email!r}: {exc}") from exc


def _msgid(value: str) -> str:
    if not _ADDR_SPEC.match(value):
        raise HeaderInjectionError(f"refusing Message-ID {value!r}")
    return f"<{value}>"


def compose(mail: Outgoing) -> bytes:
    """The mail as bytes with CRLF line endings, ready for SMTP or a Maildir."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = header_address(mail.sender)
    msg["To"] = [header_address(r) for r in mail.to]
    msg["Subject"] = clean_text(mail.subject)
    msg["Date"] = format_datetime(mail.date)
    msg["Message-ID"] = _msgid(mail.message_id)
    if mail.in_reply_to:
        msg["In-Reply-To"] = _msgid(mail.in_reply_to)
    references = [r for r in mail.references if _ADDR_SPEC.match(r)][-20:]
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
    if mail.auto:
        # RFC 3834: automatic mail says so, and asks Exchange not to answer it.
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
        msg["Precedence"] = "auto_reply"
    for name, value in mail.extra_headers.items():
        msg[name] = clean_text(value, 200)
    msg.set_content(mail.text)
    if mail.html is not None:
        msg.add_alternative(mail.html, subtype="html")
    return msg.as_bytes()
