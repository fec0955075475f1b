"""Staff sessions: a cookie signed with the secret key, naming the agent.

The cookie is ``<email, base64url>.<expiry>.<token generation>.<hmac>``. The
generation is a fingerprint of the agent's current token, so setting a new
token (or revoking it) ends older sessions. Nothing is kept in memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import datetime, timedelta

COOKIE = "mailbot_session"


def _mac(key: bytes, text: str) -> str:
    return hmac.new(key, f"web-session.{text}".encode(), hashlib.sha256).hexdigest()


def make_session(key: bytes, email: str, generation: str, now: datetime, life: timedelta) -> str:
    name = base64.urlsafe_b64encode(email.encode()).decode().rstrip("=")
    expiry = int((now + life).timestamp())
    body = f"{name}.{expiry}.{generation}"
    return f"{body}.{_mac(key, body)}"


def read_session(key: bytes, cookie: str, now: datetime) -> tuple[str, str] | None:
    """(email, token generation) of a valid, unexpired cookie; None otherwise."""
    parts = cookie.split(".")
    if len(parts) != 4 or len(cookie) > 1000:
        return None
    name, expiry, generation, signature = parts
    if not hmac.compare_digest(signature, _mac(key, f"{name}.{expiry}.{generation}")):
        return None
    if not expiry.isdigit() or int(expiry) < now.timestamp():
        return None
    try:
        email = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return email, generation


def safe_next(target: str | None) -> str:
    """A local path to go to after login; anything else becomes ``/``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
