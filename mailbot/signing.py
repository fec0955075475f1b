"""HMAC-signed identifiers: our outgoing Message-IDs and the status-page links.

Pure functions over a secret key. A Message-ID we send looks like
``<mb.42.k3j9x2q8.5f1c0a9e7b2d4c11@example.org>``: ticket number, a random
nonce, and the first 16 hex digits of an HMAC over both. Reference threading
only trusts such an ID when its signature checks, so a sender cannot attach a
mail to a ticket by guessing IDs (BAD_INPUTS B-12, B-22).

A status link token is ``<number>.<expiry unix time>.<signature>``: it names
one ticket, expires, and cannot be altered to name another.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime

_OUR_ID = re.compile(r"^mb\.(\d{1,10})\.([0-9a-z]{8,32})\.([0-9a-f]{16})@(.+)$")
_LINK = re.compile(r"^(\d{1,10})\.(\d{1,12})\.([0-9a-f]{32})$")


def _mac(key: bytes, text: str, length: int) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:length]


def make_message_id(key: bytes, ticket_number: int, domain: str, nonce: str | None = None) -> str:
    """A new Message-ID (without angle brackets) for mail about ``ticket_number``."""
    nonce = nonce or secrets.token_hex(6)
    return f"mb.{ticket_number}.{nonce}.{_mac(key, f'{ticket_number}.{nonce}', 16)}@{domain}"


def ticket_of_message_id(key: bytes, message_id: str) -> int | None:
    """The ticket number an ID of ours names, or None (not ours, or forged)."""
    match = _OUR_ID.match(message_id)
    if not match:
        return None
    number, nonce, signature = match.group(1), match.group(2), match.group(3)
    if not hmac.compare_digest(signature, _mac(key, f"{number}.{nonce}", 16)):
        return None
    return int(number)


def looks_like_ours(message_id: str) -> bool:
    """Has the shape of our IDs (signed or not): used to spot forgeries and loops."""
    return _OUR_ID.match(message_id) is not None


def make_status_token(key: bytes, ticket_number: int, expires: datetime) -> str:
    expiry = int(expires.timestamp())
    return f"{ticket_number}.{expiry}.{_mac(key, f'status.{ticket_number}.{expiry}', 32)}"


def read_status_token(key: bytes, token: str, now: datetime) -> int | None:
    """The ticket number of a valid, unexpired token; None if tampered or expired."""
    match = _LINK.match(token)
    if not match:
        return None
    number, expiry, signature = match.group(1), match.group(2), match.group(3)
    expected = _mac(key, f"status.{number}.{expiry}", 32)
    if not hmac.compare_digest(signature, expected):
        return None
    if int(expiry) < now.timestamp():
        return None
    return int(number)
