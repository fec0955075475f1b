"""Cheap, pure header reading used before a mail is fully parsed.

``inbox.accept`` must commit the raw bytes before anything else, and needs the
Message-ID for dedupe; a full MIME parse there would slow intake and could fail
on hostile mail. This module reads only the header block, with a size cap, and
never raises on bad input.
"""

from __future__ import annotations

import hashlib
import re

#: Only this many bytes are scanned for the header block at intake.
HEADER_SCAN_BYTES = 256 * 1024

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_MSGID_LINE = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_ANGLE = re.compile(r"<([^<>\s]+)>")
_WS = re.compile(r"\s+")

#: Message-IDs longer than this are not useful identifiers; they are still
#: kept as text but dedupe and lookups go through their hash.
MAX_MESSAGE_ID_CHARS = 998


def header_block(raw: bytes) -> bytes:
    """The bytes before the first empty line, capped at ``HEADER_SCAN_BYTES``."""
    head = raw[:HEADER_SCAN_BYTES]
    match = _HEADER_END.search(head)
    return head[: match.start()] if match else head


def normalize_message_id(value: str | None) -> str | None:
    """``<Abc@Example.COM>`` -> ``Abc@example.com``; None for empty or ``<>``.

    The local part keeps its case (RFC 5322 treats it as case-sensitive); the
    domain part is lower-cased. Whitespace and NUL are removed.
    """
    if not value:
        return None
    text = value.replace("\x00", "")
    match = _ANGLE.search(text)
    candidate = match.group(1) if match else _WS.sub("", text).strip("<>")
    candidate = candidate.strip()
    if not candidate:
        return None
    local, sep, domain = candidate.rpartition("@")
    if sep:
        candidate = f"{local}@{domain.lower()}"
    return candidate


def split_message_ids(value: str | None) -> tuple[str, ...]:
    """All ``<id>`` tokens of a References or In-Reply-To header, in order."""
    if not value:
        return ()
    found = [normalize_message_id(m) for m in _ANGLE.findall(value.replace("\x00", ""))]
    return tuple(dict.fromkeys(i for i in found if i))


def message_id_key(message_id: str) -> str:
    """A fixed-length key for indexing a Message-ID of any length."""
    return hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()


def extract_message_id(raw: bytes) -> str | None:
    """The normalised Message-ID of a raw mail, or None when it has none usable."""
    match = _MSGID_LINE.search(header_block(raw))
    if not match:
        return None
    text = match.group(1).decode("ascii", "replace")
    return normalize_message_id(text)
