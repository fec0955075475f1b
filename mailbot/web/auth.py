"""Staff sessions, and the login form's CSRF token.

The session cookie is ``<email, base64url>.<expiry>.<token generation>.<hmac>``.
The generation is a fingerprint of the agent's current token, so setting a new
token (or revoking it) ends older sessions. Nothing is kept in memory.

The login form is protected by a signed double-submit token bound to a
pre-session cookie: ``GET /login`` sets a random nonce in an ``HttpOnly``,
``SameSite=Strict`` cookie and puts ``<expiry>.<hmac(key, nonce, expiry)>``
into a hidden field. ``POST /login`` is accepted only when the field matches
the cookie's nonce and has not expired. Another site can neither read the
field nor send the cookie; without the key it cannot make a pair of its own
either. This stops login CSRF: a page elsewhere logging a staff member into a
session of its choosing. Over HTTPS the cookie is ``__Host-``, so a
neighbouring subdomain cannot plant a nonce of its own. A post whose
``Origin`` names another site is refused as well (an extra check only: a
page can make the browser send ``null`` instead, which must pass, see
``same_origin``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from urllib.parse import urlsplit

COOKIE = "mailbot_session"
#: The login form's pre-session cookie. Over HTTPS it carries the ``__Host-``
#: prefix, so a neighbouring subdomain cannot plant one of its own.
LOGIN_COOKIE = "mailbot_login"
SECURE_LOGIN_COOKIE = "__Host-mailbot_login"
#: How long a login form may be left open before it must be reloaded.
LOGIN_FORM_LIFE = timedelta(hours=2)
_NONCE = re.compile(r"[A-Za-z0-9_-]{22,64}")


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


# -- the login form's CSRF token ---------------------------------------------------


def login_cookie_name(secure: bool) -> str:
    return SECURE_LOGIN_COOKIE if secure else LOGIN_COOKIE


def login_nonce(current: str | None) -> str:
    """The pre-session nonce to use: the browser's own if well formed, else a new one."""
    if current and _NONCE.fullmatch(current):
        return current
    return secrets.token_urlsafe(24)


def _form_mac(key: bytes, nonce: str, expiry: int) -> str:
    return hmac.new(key, f"login-form.{nonce}.{expiry}".encode(), hashlib.sha256).hexdigest()


def login_form_token(key: bytes, nonce: str, now: datetime) -> str:
    """The hidden field of a login form served with the cookie ``nonce``."""
    expiry = int((now + LOGIN_FORM_LIFE).timestamp())
    return f"{expiry}.{_form_mac(key, nonce, expiry)}"


def check_login_form(key: bytes, nonce: str | None, token: str | None, now: datetime) -> bool:
    """True when ``token`` was issued for this ``nonce`` and has not expired."""
    if not nonce or not token or not _NONCE.fullmatch(nonce):
        return False
    expiry, _, signature = token.partition(".")
    if not expiry.isdigit() or len(expiry) > 12 or int(expiry) < now.timestamp():
        return False
    return hmac.compare_digest(signature, _form_mac(key, nonce, int(expiry)))


def same_origin(origin: str | None, host: str | None, allowed: Iterable[str]) -> bool:
    """Whether a request's ``Origin`` header is ours, as far as it tells.

    Ours is the ``Host`` the request came to or one of ``allowed`` (the
    configured public address, as a TLS proxy in front may change the host);
    any other site fails. No header (older browsers, scripts) and ``null``
    pass, and the token decides: our pages send ``Referrer-Policy:
    no-referrer``, under which browsers post our own form with ``Origin:
    null``. (The other senders of ``null``, sandboxed frames, are cross-site
    for ``SameSite`` and so come without the pre-session cookie.)
    """
    if origin is None or origin.strip() == "null":
        return True
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    if host and parts.netloc == host.strip().lower():
        return True
    return f"{parts.scheme}://{parts.netloc}" in {a.lower().rstrip("/") for a in allowed}
