"""Staff login tokens for the web page and the JSON API.

A token is shown once, when it is set; only its SHA-256 is stored. Tokens are
256 random bits, so a plain hash is enough (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import delete, select
from sqlmodel import Session, SQLModel

from mailbot.store import models  # noqa: F401  (registers the tables)
from mailbot.store.types import utcnow

_credential = SQLModel.metadata.tables["web_credential"]
_agent = SQLModel.metadata.tables["agent"]

TOKEN_BYTES = 32


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def agent_exists(session: Session, email: str) -> bool:
    row = session.execute(
        select(_agent.c.id).where(_agent.c.email == email.lower(), _agent.c.active.is_(True))
    ).first()
    return row is not None


def set_token(session: Session, email: str, now: datetime | None = None) -> str:
    """Give ``email`` a new token (replacing any old one) and return it."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    email = email.lower()
    session.execute(delete(_credential).where(_credential.c.email == email))
    session.execute(
        _credential.insert().values(
            email=email, token_hash=token_hash(token), created_at=now or utcnow()
        )
    )
    return token


def revoke(session: Session, email: str) -> bool:
    result = session.execute(delete(_credential).where(_credential.c.email == email.lower()))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def email_for_token(session: Session, token: str) -> str | None:
    """The agent a token belongs to (an active agent only), or None."""
    if not token or len(token) > 200:
        return None
    row = session.execute(
        select(_credential.c.email)
        .select_from(_credential.join(_agent, _agent.c.email == _credential.c.email))
        .where(_credential.c.token_hash == token_hash(token), _agent.c.active.is_(True))
    ).first()
    return str(row[0]) if row else None


def token_generation(session: Session, email: str) -> str | None:
    """A short fingerprint of the agent's current token, or None (no token, inactive).

    Session cookies carry it, so setting a new token or revoking it ends
    every session of the old one.
    """
    row = session.execute(
        select(_credential.c.token_hash)
        .select_from(_credential.join(_agent, _agent.c.email == _credential.c.email))
        .where(_credential.c.email == email.lower(), _agent.c.active.is_(True))
    ).first()
    return str(row[0])[:16] if row else None
