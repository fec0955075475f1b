"""Raw mail bytes -> :class:`ParsedMessage`. Pure: no I/O, no DB, no network.

This is the only module that imports ``mailparser`` (mail-parser), whose
forensic address and date readers it uses; the MIME tree comes from the stdlib
parser (see ``_build_tree``). Everything that
must never raise or must be safe (charset fallbacks, filenames, sanitised HTML,
strict sender parsing, limits) is done here and in the helper modules.

``parse`` raises only :class:`ParseError` (or its subclass
:class:`LimitExceededError`); any other failure is wrapped and chained.
"""

from __future__ import annotations

import email
import email.errors
import email.policy
import email.utils
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from typing import Any, Final

from mailparser import dates as mp_dates
from mailparser import utils as mp_utils

from mailbot.charsets import decode_8bit, decode_header_value, decode_text, scrub
from mailbot.errors import LimitExceededError, ParseError
from mailbot.filenames import sanitize_filename, unique_filename
from mailbot.headers import normalize_message_id, split_message_ids
from mailbot.htmltext import html_to_text
from mailbot.message import Address, Attachment, ParsedMessage, ParseLimits
from mailbot.sanitize import sanitize_html

MAX_HEADERS: Final = 500
MAX_HEADER_VALUE_CHARS: Final = 4000
MAX_ADDRESSES: Final = 1000
#: Address headers longer than this are cut at a comma before parsing (B-33).
MAX_ADDRESS_HEADER_CHARS: Final = 64 * 1024
#: A From header longer than this is not a plausible single mailbox.
MAX_FROM_CHARS: Final = 4096
#: HTML fed to the sanitiser is capped: bleach is slow on megabytes of markup.
MAX_HTML_CHARS: Final = 512 * 1024

_BODY_TYPES: Final = ("text/plain", "text/html")
_CONTENT_TYPE = re.compile(r"^\s*([a-z0-9!#$&^_.+\-]+/[a-z0-9!#$&^_.+\-]+)", re.IGNORECASE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_BOUNDARY_PARAM = re.compile(rb"""boundary\s*=\s*(?:"([^"\r\n]*)"|([^\s;"]+))""", re.IGNORECASE)
_PRESCAN_LINES = re.compile(
    rb"^(?:--[^\r\n]*|[^\r\n]*?boundary[^\r\n]*|content-type[^\r\n]*)",
    re.IGNORECASE | re.MULTILINE,
)
_RFC822_TYPE = re.compile(rb"^content-type\s*:\s*message/(?:rfc822|global)", re.IGNORECASE)
_DOMAIN = re.compile(r"^(?:[a-z0-9](?:[a-z0-9\-_]*[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9\-_]*[a-z0-9])?$")
_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+)*$")
_FATAL_ADDRESS_DEFECTS: Final = frozenset(
    {"InvalidHeaderDefect", "HeaderMissingRequiredValue", "NonASCIILocalPartDefect"}
)


def _prescan(raw: bytes, limits: ParseLimits) -> None:
    """Cheap checks on the bytes before any MIME parsing (B-32, B-33).

    Tracks declared boundaries as a stack to estimate nesting depth and counts
    delimiter lines as parts, so a 1000-deep or 10k-part bomb never reaches the
    recursive stdlib parser.
    """
    match = _HEADER_END.search(raw, 0, limits.max_header_bytes + 4)
    header_len = match.start() if match else len(raw)
    if header_len > limits.max_header_bytes:
        raise LimitExceededError(
            f"max_header_bytes: header block is over {limits.max_header_bytes} bytes"
        )
    stack: list[bytes] = []
    parts = 1
    # Only delimiter, boundary and Content-Type lines matter: the regex skips the
    # rest (base64 bodies) in C instead of a Python loop over every line.
    for found_line in _PRESCAN_LINES.finditer(raw):
        line = found_line.group(0)
        if line.startswith(b"--") and stack:
            token = line[2:].rstrip()
            closing = token.endswith(b"--") and token[:-2] in stack
            name = token[:-2] if closing else token
            if name in stack:
                del stack[stack.index(name) + (0 if closing else 1) :]
                if not closing:
                    parts += 1
                    if parts > limits.max_parts:
                        raise LimitExceededError(
                            f"max_parts: more than {limits.max_parts} MIME parts"
                        )
                continue
        lower = line[:200].lower()
        if b"boundary" in lower:
            found = _BOUNDARY_PARAM.search(line)
            if found:
                stack.append((found.group(1) or found.group(2) or b"").rstrip())
        elif lower.startswith(b"content-type") and _RFC822_TYPE.match(line):
            stack.append(b"\x00rfc822")
        if len(stack) > limits.max_depth:
            raise LimitExceededError(f"max_depth: MIME nesting deeper than {limits.max_depth}")


def _header_text(msg: Message, name: str, notes: list[str] | None = None) -> str | None:
    """First ``name`` header decoded (``notes`` given) or only unfolded (8-bit read), or None."""
    for key, value in msg.raw_items():
        if key.lower() == name:
            if notes is None:
                return re.sub(r"\r?\n|\r", "", decode_8bit(str(value)).text)
            return decode_header_value(str(value), notes).strip()
    return None


def _valid_addr(username: str, domain: str) -> str | None:
    """``user@domain`` (domain lower-cased) when both halves are valid, else None."""
    domain = domain.strip().lower()
    if not username or not domain or not username.isascii():
        return None
    if not _DOT_ATOM.match(username) and not (
        len(username) > 2 and username.startswith('"') and username.endswith('"')
    ):
        return None
    if domain.startswith("[") and domain.endswith("]"):
        ok = len(domain) > 2
    else:
        try:
            ascii_domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None
        ok = bool(_DOMAIN.match(ascii_domain))
    if not ok or len(username) > 64 or len(domain) > 255:
        return None
    return scrub(f"{username}@{domain}")


def _parse_address_header(value: str) -> tuple[list[tuple[str, Address]], list[str], int]:
    """(group name, mailbox) pairs, defect names and the group count of an address header."""
    header: Any = email.policy.default.header_factory("to", value)
    found: list[tuple[str, Address]] = []
    for group in header.groups:
        for addr in group.addresses:
            spec = _valid_addr(addr.username, addr.domain)
            if spec is not None:
                found.append((group.display_name or "", Address(spec, scrub(addr.display_name))))
    defects = [type(d).__name__ for d in header.defects]
    return found, defects, len(header.groups)


_ADDR_CHARS = r"[^<>@\s\",;:()\[\]\\]+"
#: The common, plainly unambiguous From forms: ``a@b``, ``<a@b>``, ``Name <a@b>``,
#: ``"Name" <a@b>``, ``=?utf-8?...?= <a@b>``. Anything else takes the strict parser.
_SIMPLE_FROM = re.compile(
    r"^\s*(?:(?P<bare>ADDR@ADDR)|"
    r"(?:(?P<name>[^@<>,;:\"\\()\[\]\x00-\x1f\x7f]*?)|\"(?P<quoted>[^\"\\@<>\x00-\x1f\x7f]*)\")"
    r"\s*<(?P<angle>ADDR@ADDR)>)\s*$".replace("ADDR", _ADDR_CHARS)
)


def _simple_sender(raw_from: str) -> Address | None:
    match = _SIMPLE_FROM.match(raw_from)
    if match is None:
        return None
    spec = match["bare"] or match["angle"]
    username, _, domain = spec.rpartition("@")
    valid = _valid_addr(username, domain)
    if valid is None:
        return None
    name = (match["quoted"] if match["quoted"] is not None else match["name"] or "").strip()
    if "=?" in name:
        name = decode_header_value(name)
    return Address(valid, scrub(name))


def _sender(raw_from: str | None) -> Address | None:
    """The one unambiguous mailbox of From, else None (B-16). Never raises."""
    if not raw_from or not raw_from.strip() or len(raw_from) > MAX_FROM_CHARS:
        return None
    simple = _simple_sender(raw_from)
    if simple is not None:
        return simple
    try:
        found, defects, groups = _parse_address_header(raw_from)
    except Exception:  # the stdlib header parser has had IndexError bugs
        return None
    if groups != 1 or len(found) != 1 or found[0][0] or _FATAL_ADDRESS_DEFECTS & set(defects):
        return None
    return found[0][1]


def _addresses(raw: str | None) -> tuple[Address, ...]:
    """The mailboxes of To, Cc or Reply-To that parse cleanly (mail-parser's recovery)."""
    if not raw:
        return ()
    if len(raw) > MAX_ADDRESS_HEADER_CHARS:
        raw = raw[: raw.rfind(",", 0, MAX_ADDRESS_HEADER_CHARS) + 1 or MAX_ADDRESS_HEADER_CHARS]
    try:
        pairs = mp_utils.get_addresses(raw, decode_names=True)
    except Exception:  # a library bug must not cost us the mail
        return ()
    found: list[Address] = []
    for name, spec in pairs[: MAX_ADDRESSES * 2]:
        username, at, domain = str(spec).rpartition("@")
        valid = _valid_addr(username, domain) if at else None
        if valid is not None:
            found.append(Address(valid, scrub(str(name or ""))[:200]))
        if len(found) >= MAX_ADDRESSES:
            break
    return tuple(found)


def _date(value: str | None) -> datetime | None:
    """The Date header as aware UTC, or None; mail-parser reads obsolete forms too."""
    if not value:
        return None
    try:
        parsed = mp_dates.parse_mail_date(value).value
    except Exception:
        return None
    if not isinstance(parsed, datetime):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _content_type(part: Message) -> str:
    value = part.get("content-type")
    match = _CONTENT_TYPE.match(decode_8bit(str(value)).text) if value else None
    return match.group(1).lower() if match else "application/octet-stream"


def _filename(part: Message, notes: list[str]) -> str | None:
    try:
        name = part.get_filename() or part.get_param("name")
    except Exception:
        return None
    if isinstance(name, tuple):
        name = email.utils.collapse_rfc2231_value(name)
    return decode_header_value(str(name), notes) if name else None


def _message_bytes(part: Message) -> bytes:
    inner = part.get_payload()
    msg = inner[0] if isinstance(inner, list) and len(inner) == 1 else part
    if not isinstance(msg, Message):
        return b""
    for policy in (email.policy.compat32, email.policy.SMTP):
        try:
            return msg.as_bytes(policy=policy)
        except Exception:
            continue
    return b""


@dataclass
class _Walk:
    limits: ParseLimits
    notes: list[str] = field(default_factory=list)
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    used_names: set[str] = field(default_factory=set)
    decoded_bytes: int = 0

    def count(self, size: int) -> None:
        self.decoded_bytes += size
        if self.decoded_bytes > self.limits.max_decoded_bytes:
            raise LimitExceededError(
                f"max_decoded_bytes: decoded parts exceed {self.limits.max_decoded_bytes} bytes"
            )

    def attach(self, part: Message, ctype: str, payload: bytes) -> None:
        index = len(self.attachments) + 1
        ext = ".eml" if ctype == "message/rfc822" else ".bin"
        name = sanitize_filename(_filename(part, self.notes), f"attachment-{index}{ext}")
        cid = normalize_message_id(decode_header_value(str(part.get("content-id") or "")))
        disposition = (part.get_content_disposition() or "").lower()
        inline = disposition == "inline" or (bool(cid) and disposition != "attachment")
        self.attachments.append(
            Attachment(
                filename=unique_filename(name, self.used_names),
                content_type=ctype,
                payload=payload,
                content_id=scrub(cid) if cid else None,
                inline=inline,
            )
        )


def _iter_parts(root: Message, limits: ParseLimits) -> Iterator[Message]:
    """Depth-first (part, depth) without recursion; attached messages are not entered."""
    stack: list[tuple[Message, int]] = [(root, 0)]
    seen = 0
    while stack:
        part, depth = stack.pop()
        seen += 1
        if seen > limits.max_parts:
            raise LimitExceededError(f"max_parts: more than {limits.max_parts} MIME parts")
        if depth > limits.max_depth:
            raise LimitExceededError(f"max_depth: MIME nesting deeper than {limits.max_depth}")
        yield part
        if part.get_content_maintype() == "multipart" and isinstance(part.get_payload(), list):
            children = [c for c in part.get_payload() if isinstance(c, Message)]
            stack.extend((child, depth + 1) for child in reversed(children))


def _walk(root: Message, limits: ParseLimits, notes: list[str]) -> _Walk:
    state = _Walk(limits, notes)
    for part in _iter_parts(root, limits):
        payload_obj = part.get_payload()
        ctype = _content_type(part)
        if part.get_content_maintype() == "multipart":
            if isinstance(payload_obj, list):
                continue
            if state.text is None and isinstance(payload_obj, str):
                # B-34: boundary missing or never found; the raw payload is the
                # best body we have. It is also kept whole as an attachment.
                state.text = decode_text(
                    payload_obj.encode("utf-8", "surrogateescape"), part.get_content_charset()
                ).text
                state.notes.append("multipart-unparsed-as-text")
        if isinstance(payload_obj, list) or ctype.startswith("message/"):
            data = _message_bytes(part)
            state.count(len(data))
            state.attach(
                part, ctype if ctype != "application/octet-stream" else "message/rfc822", data
            )
            continue
        raw = part.get_payload(decode=True)
        data = raw if isinstance(raw, bytes) else b""
        state.count(len(data))
        disposition = (part.get_content_disposition() or "").lower()
        if (
            part.get_content_type() in _BODY_TYPES
            and disposition != "attachment"
            and not _filename(part, [])
        ):
            slot = "text" if part.get_content_type() == "text/plain" else "html"
            if getattr(state, slot) is None:
                decoded = decode_text(data, part.get_content_charset())
                if decoded.fallback:
                    state.notes.append(decoded.fallback)
                setattr(state, slot, decoded.text)
                continue
        state.attach(part, ctype, data)
    return state


def _defects(message: Message) -> tuple[str, ...]:
    names: set[str] = set()
    stack = [message]
    while stack:
        part = stack.pop()
        names.update(type(d).__name__ for d in getattr(part, "defects", ()))
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(p for p in payload if isinstance(p, Message))
    return tuple(sorted(names))


def _build_tree(raw: bytes) -> Message:
    """The MIME tree, by the stdlib parser (compat32: raw header values kept).

    mail-parser's ``MailParser`` wraps this very parser but also re-encodes
    every attachment and indexes every header: measured at about 1.2 ms per
    mail, the largest single cost of intake. We walk the tree ourselves and
    use mail-parser where it adds judgement: forensic address and date
    parsing (``_addresses``, ``_date``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return email.message_from_bytes(raw, policy=email.policy.compat32)


def _parse(raw: bytes, limits: ParseLimits) -> ParsedMessage:
    _prescan(raw, limits)
    notes: list[str] = []
    message = _build_tree(raw)
    state = _walk(message, limits, notes)

    text = state.text
    html_src = state.html
    if (text is None or not text.strip()) and html_src:
        text = html_to_text(html_src)
        notes.append("text-from-html")
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    if len(text) > limits.max_text_chars:
        text = text[: limits.max_text_chars]
        notes.append("text-truncated")
    html: str | None = None
    if html_src is not None:
        if len(html_src) > MAX_HTML_CHARS:
            html_src = html_src[:MAX_HTML_CHARS]
            notes.append("html-truncated")
        html = scrub(sanitize_html(html_src))

    headers: list[tuple[str, str]] = []
    for name, value in list(message.raw_items())[:MAX_HEADERS]:
        decoded = decode_header_value(str(value), notes)
        headers.append((decode_8bit(name).text, decoded[:MAX_HEADER_VALUE_CHARS]))

    subject = _header_text(message, "subject", notes) or ""
    raw_from = _header_text(message, "from")
    return ParsedMessage(
        message_id=normalize_message_id(_header_text(message, "message-id", notes)),
        subject=subject[:MAX_HEADER_VALUE_CHARS],
        sender=_sender(raw_from),
        from_header=_header_text(message, "from", notes) or "",
        to=_addresses(_header_text(message, "to")),
        cc=_addresses(_header_text(message, "cc")),
        reply_to=_addresses(_header_text(message, "reply-to")),
        in_reply_to=split_message_ids(_header_text(message, "in-reply-to", notes)),
        references=split_message_ids(_header_text(message, "references", notes)),
        date=_date(_header_text(message, "date")),
        text=scrub(text),
        html=html,
        attachments=tuple(state.attachments),
        headers=tuple(headers),
        defects=_defects(message),
        fallbacks=tuple(dict.fromkeys(notes)),
    )


def parse(raw: bytes, limits: ParseLimits = ParseLimits()) -> ParsedMessage:  # noqa: B008
    """Parse one raw mail. Raises only ParseError / LimitExceededError."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ParseError(f"parse() needs bytes, got {type(raw).__name__}")
    try:
        return _parse(bytes(raw), limits)
    except ParseError:
        raise
    except RecursionError as exc:
        raise LimitExceededError(f"max_depth: MIME nesting too deep to parse: {exc!r}") from exc
    except Exception as exc:
        raise ParseError(f"cannot parse mail: {exc!r}") from exc
