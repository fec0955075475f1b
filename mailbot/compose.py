"""Builds outgoing mail as bytes from rendered parts. Pure.

No header is ever built from raw user input: addresses must be plain
dot-atom ``local@domain`` (anything else, CR/LF included, is refused), display
names and the subject have control characters replaced and are RFC 2047
encoded when not ASCII (BAD_INPUTS B-44), header names are checked, and a
final check refuses any header value that still holds a line break.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from urllib.parse import quote

from mailbot.errors import PermanentError

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
#: Plain dot-atom addresses only: no quoted local parts, no comments, ASCII.
_ADDR_SPEC = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$"
)
_ATOM_PHRASE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+$")
_HEADER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,60}$")
MAX_SUBJECT_CHARS = 250


class HeaderInjectionError(PermanentError):
    """A value meant for a header would change the mail's structure."""


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class OutgoingFile:
    """A file attached to outgoing mail (an agent's screenshot, relayed)."""

    filename: str
    content_type: str
    payload: bytes


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
    #: RFC 3834 kind of automatic mail: ``auto-replied`` answers a mail,
    #: ``auto-generated`` (notifications to agents) answers nothing.
    auto_kind: str = "auto-replied"
    cc: Sequence[Recipient] = ()
    attachments: Sequence[OutgoingFile] = ()
    extra_headers: Mapping[str, str] = field(default_factory=dict)


def clean_text(value: str, limit: int = MAX_SUBJECT_CHARS) -> str:
    """One line of text safe for a header: control characters become spaces."""
    return " ".join(_CONTROL.sub(" ", value).split())[:limit]


def _check_address(email: str) -> str:
    if not _ADDR_SPEC.match(email):
        raise HeaderInjectionError(f"refusing to address mail to {email!r}")
    return email


def _encoded_words(text: str) -> str:
    """RFC 2047 ``=?utf-8?b?...?=`` words, each under 76 characters, folded."""
    words, chunk = [], ""
    for ch in text:
        if len((chunk + ch).encode()) > 45:
            words.append(chunk)
            chunk = ""
        chunk += ch
    if chunk:
        words.append(chunk)
    return "\r\n ".join(
        "=?utf-8?b?" + base64.b64encode(w.encode()).decode("ascii") + "?=" for w in words
    )


def _unstructured(text: str) -> str:
    """A header value of free text (a subject): ASCII as it is, else encoded words."""
    if text.isascii() and len(text) <= 900:
        return text
    return _encoded_words(text)


def _mailbox(recipient: Recipient) -> str:
    email = _check_address(recipient.email)
    name = clean_text(recipient.name, 120)
    if not name:
        return email
    if name.isascii():
        if _ATOM_PHRASE.match(name):
            return f"{name} <{email}>"
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{email}>'
    return f"{_encoded_words(name)} <{email}>"


def _msgid(value: str) -> str:
    if not _ADDR_SPEC.match(value):
        raise HeaderInjectionError(f"refusing Message-ID {value!r}")
    return f"<{value}>"


def _body(text: str, subtype: str) -> list[str]:
    """The header lines and encoded body of one text part."""
    data = text.replace("\r\n", "\n").replace("\r", "\n")
    if data.isascii() and all(len(line) < 900 for line in data.split("\n")):
        encoding, payload = "7bit", data.replace("\n", "\r\n")
    else:
        encoding = "base64"
        payload = base64.encodebytes(data.encode()).decode("ascii").replace("\n", "\r\n")
    return [
        f"Content-Type: text/{subtype}; charset=utf-8",
        f"Content-Transfer-Encoding: {encoding}",
        "",
        payload.rstrip("\r\n"),
    ]


def compose(mail: Outgoing) -> bytes:
    """The mail as bytes with CRLF line endings, ready for SMTP or a Maildir.

    Written out directly rather than through ``email.generator``, which took
    several milliseconds per acknowledgement: every value is checked or
    encoded here, and no header value can hold a line break.
    """
    headers = [
        ("From", _mailbox(mail.sender)),
        ("To", ", ".join(_mailbox(r) for r in mail.to)),
    ]
    if mail.cc:
        headers.append(("Cc", ", ".join(_mailbox(r) for r in mail.cc)))
    headers += [
        ("Subject", _unstructured(clean_text(mail.subject))),
        ("Date", format_datetime(mail.date)),
        ("Message-ID", _msgid(mail.message_id)),
    ]
    if mail.in_reply_to:
        headers.append(("In-Reply-To", _msgid(mail.in_reply_to)))
    references = [r for r in mail.references if _ADDR_SPEC.match(r)][-20:]
    if references:
        headers.append(("References", "\r\n ".join(f"<{r}>" for r in references)))
    if mail.auto:
        # RFC 3834: automatic mail says so, and asks Exchange not to answer it.
        if mail.auto_kind not in ("auto-replied", "auto-generated"):
            raise HeaderInjectionError(f"refusing Auto-Submitted {mail.auto_kind!r}")
        headers.append(("Auto-Submitted", mail.auto_kind))
        headers.append(("X-Auto-Response-Suppress", "All"))
        if mail.auto_kind == "auto-replied":
            headers.append(("Precedence", "auto_reply"))
    for name, value in mail.extra_headers.items():
        if not _HEADER_NAME.match(name):
            raise HeaderInjectionError(f"refusing header name {name!r}")
        headers.append((name, _unstructured(clean_text(value, 200))))
    headers.append(("MIME-Version", "1.0"))
    lines = [f"{name}: {value}" for name, value in headers]
    if mail.attachments:
        mixed = "=_mb_" + secrets.token_hex(12)
        lines.append(f'Content-Type: multipart/mixed; boundary="{mixed}"')
        lines.append("")
        lines.append(f"--{mixed}")
        lines.extend(_text_parts(mail))
        for item in mail.attachments:
            lines.append(f"--{mixed}")
            lines.extend(_file_part(item))
        lines.append(f"--{mixed}--")
    else:
        lines.extend(_text_parts(mail))
    for name, value in headers:
        if "\n" in value.replace("\r\n ", "") or "\r" in value.replace("\r\n ", ""):
            raise HeaderInjectionError(f"line break in header {name}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _text_parts(mail: Outgoing) -> list[str]:
    """The text part, or text and HTML as multipart/alternative, with their headers."""
    if mail.html is None:
        return _body(mail.text, "plain")
    boundary = "=_mb_" + secrets.token_hex(12)
    lines = [f'Content-Type: multipart/alternative; boundary="{boundary}"', ""]
    for text, subtype in ((mail.text, "plain"), (mail.html, "html")):
        lines.append(f"--{boundary}")
        lines.extend(_body(text, subtype))
    lines.append(f"--{boundary}--")
    return lines


_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


def _file_part(item: OutgoingFile) -> list[str]:
    """One attachment: a checked content type, an RFC 2231 file name, base64."""
    ctype = item.content_type.lower()
    if not _CONTENT_TYPE.match(ctype) or ctype.startswith("multipart/"):
        ctype = "application/octet-stream"
    name = clean_text(item.filename, 200).replace("/", "_").replace("\\", "_") or "attachment"
    if name.isascii() and _ATOM_PHRASE.match(name.replace(".", "")):
        disposition = f'attachment; filename="{name}"'
    else:
        disposition = "attachment; filename*=utf-8''" + quote(name, safe="")
    payload = base64.encodebytes(item.payload).decode("ascii").replace("\n", "\r\n")
    return [
        f"Content-Type: {ctype}",
        f"Content-Disposition: {disposition}",
        "Content-Transfer-Encoding: base64",
        "",
        payload.rstrip("\r\n"),
    ]
