"""Per-request dependencies: the web state, a read-only session, the staff member."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlmodel import Session

from mailbot.config import Settings
from mailbot.render import PageRenderer
from mailbot.store import credentials
from mailbot.store.blobs import BlobStore
from mailbot.store.db import Database
from mailbot.store.types import utcnow
from mailbot.web import auth


class LoginRequiredError(Exception):
    def __init__(self, target: str) -> None:
        self.target = target


@dataclass
class WebState:
    settings: Settings
    db: Database
    key: bytes
    renderer: PageRenderer
    blobs: BlobStore
    clock: Callable[[], datetime] = utcnow
    workers: Callable[[], Mapping[str, bool]] = field(default=lambda: {})

    @property
    def secure_cookie(self) -> bool:
        return self.settings.conversation.public_url.startswith("https://")


def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


State = Annotated[WebState, Depends(web_state)]


def session(state: State) -> Iterator[Session]:
    with state.db.transaction() as s:
        yield s


Db = Annotated[Session, Depends(session)]


def staff(request: Request, state: State, s: Db) -> str:
    """The logged-in agent; otherwise a redirect to the login page."""
    cookie = request.cookies.get(auth.COOKIE, "")
    found = auth.read_session(state.key, cookie, state.clock()) if cookie else None
    if found is not None:
        email, generation = found
        if credentials.token_generation(s, email) == generation:
            return email
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise LoginRequiredError(target)


Staff = Annotated[str, Depends(staff)]


def bearer(request: Request, s: Db) -> str:
    """The agent whose token came as ``Authorization: Bearer``; otherwise 401."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    email = credentials.email_for_token(s, token.strip()) if scheme.lower() == "bearer" else None
    if email is None:
        raise HTTPException(
            401, "a valid Bearer token is needed", headers={"WWW-Authenticate": "Bearer"}
        )
    return email


Agent = Annotated[str, Depends(bearer)]
