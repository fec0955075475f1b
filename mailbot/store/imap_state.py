"""IMAP poller state in the database: folder cursors and the per-mailbox lease.

A cursor is ``(UIDVALIDITY, last UID)`` per mailbox and folder: the highest
UID whose mail is committed *and* moved or flagged. It only saves work; the
inbox's dedupe is what makes a re-download harmless.

A lease names one holder per mailbox until ``expires_at``: two daemons on one
PostgreSQL never read the same mailbox at once. Taking it is one atomic
upsert, so two pollers racing for a free or expired lease get one winner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col

from mailbot.store.db import Database
from mailbot.store.models import ImapCursor, Lease
from mailbot.store.types import utcnow

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Cursor:
    uidvalidity: int
    last_uid: int


def get_cursor(db: Database, mailbox: str, folder: str) -> Cursor | None:
    with db.transaction() as session:
        row = session.execute(
            select(col(ImapCursor.uidvalidity), col(ImapCursor.last_uid)).where(
                col(ImapCursor.mailbox) == mailbox, col(ImapCursor.folder) == folder
            )
        ).one_or_none()
    return None if row is None else Cursor(uidvalidity=int(row[0]), last_uid=int(row[1]))


def save_cursor(
    db: Database,
    mailbox: str,
    folder: str,
    cursor: Cursor,
    *,
    clock: Clock = utcnow,
) -> None:
    """Record the cursor; a change of UIDVALIDITY replaces it, else it only moves forward."""
    insert = postgresql.insert if db.is_postgres else sqlite.insert
    stmt = insert(ImapCursor).values(
        mailbox=mailbox,
        folder=folder,
        uidvalidity=cursor.uidvalidity,
        last_uid=cursor.last_uid,
        updated_at=clock(),
    )
    table = ImapCursor.__table__  # type: ignore[attr-defined]
    stmt = stmt.on_conflict_do_update(
        index_elements=["mailbox", "folder"],
        set_={
            "uidvalidity": stmt.excluded.uidvalidity,
            "last_uid": stmt.excluded.last_uid,
            "updated_at": stmt.excluded.updated_at,
        },
        where=(table.c.uidvalidity != stmt.excluded.uidvalidity)
        | (table.c.last_uid < stmt.excluded.last_uid),
    )
    with db.transaction() as session:
        session.execute(stmt)


def acquire_lease(
    db: Database,
    name: str,
    holder: str,
    seconds: float,
    *,
    clock: Clock = utcnow,
) -> bool:
    """Take or renew the lease ``name`` for ``holder``; False while someone else holds it."""
    now = clock()
    insert = postgresql.insert if db.is_postgres else sqlite.insert
    stmt = insert(Lease).values(
        name=name, holder=holder, expires_at=now + timedelta(seconds=seconds)
    )
    table = Lease.__table__  # type: ignore[attr-defined]
    upsert = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={"holder": stmt.excluded.holder, "expires_at": stmt.excluded.expires_at},
        where=(table.c.holder == stmt.excluded.holder) | (table.c.expires_at < now),
    ).returning(table.c.holder)
    with db.transaction() as session:
        won = session.execute(upsert).scalar_one_or_none()
    return won == holder


def release_lease(db: Database, name: str, holder: str) -> None:
    """Give the lease up (only if ``holder`` still has it), so another poller need not wait."""
    with db.transaction() as session:
        session.execute(delete(Lease).where(col(Lease.name) == name, col(Lease.holder) == holder))


def lease_holder(db: Database, name: str, *, clock: Clock = utcnow) -> str | None:
    """Who holds the lease now, or None when it is free or expired."""
    with db.transaction() as session:
        row = session.execute(
            select(col(Lease.holder), col(Lease.expires_at)).where(col(Lease.name) == name)
        ).one_or_none()
    if row is None:
        return None
    expires = row[1] if row[1].tzinfo else row[1].replace(tzinfo=clock().tzinfo)
    return str(row[0]) if expires >= clock() else None


def clear_lease(db: Database, name: str) -> None:
    """Drop the lease whoever holds it: only for a start where no other holder can live."""
    with db.transaction() as session:
        session.execute(delete(Lease).where(col(Lease.name) == name))
