"""The durable outbound queue: enqueue, claim, sent, retry_later, failed.

A row is written in the same transaction as the change that caused the mail
(the transactional outbox); its Message-ID is fixed at enqueue time, so a
resend after a crash carries the same ID and mail clients thread it once.
Lifecycle: ``pending -> sending -> sent`` or ``-> failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, bindparam, func, or_, select, update
from sqlmodel import Session, SQLModel, col

from mailbot.store.db import Database
from mailbot.store.fast import Fast
from mailbot.store.models import Outbound, OutboundStatus
from mailbot.store.types import utcnow

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MAX_ERROR_CHARS = 4000


@dataclass(frozen=True, slots=True)
class OutboundItem:
    id: int
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    raw: bytes
    attempts: int
    created_at: datetime


_outbound = SQLModel.metadata.tables["outbound"]
_INSERT = Fast(_outbound.insert().returning(_outbound.c.id))
_RECENT_AUTO = Fast(
    select(func.count())
    .select_from(_outbound)
    .where(
        _outbound.c.primary_recipient == bindparam("rcpt"),
        _outbound.c.auto.is_(True),
        _outbound.c.created_at >= bindparam("since"),
    )
)


def enqueue(
    session: Session,
    *,
    raw: bytes,
    sender: str,
    recipients: Sequence[str],
    message_id: str,
    ticket_id: int | None,
    event: str = "",
    auto: bool = False,
    clock: Clock = utcnow,
) -> int:
    """Add a mail to the queue inside the caller's transaction; returns its id."""
    values = {
        "ticket_id": ticket_id,
        "message_id": message_id,
        "sender": sender,
        "recipients": list(recipients),
        "primary_recipient": recipients[0].lower() if recipients else "",
        "event": event,
        "auto": auto,
        "raw": raw,
        "status": OutboundStatus.pending.value,
        "attempts": 0,
        "last_error": None,
        "created_at": clock(),
        "next_attempt_at": None,
        "sent_at": None,
        "bounced_at": None,
    }
    return int(_INSERT.execute(session.connection(), values).scalar_one())


_READY = (
    select(_outbound.c.id)
    .where(
        _outbound.c.status == OutboundStatus.pending.value,
        or_(_outbound.c.next_attempt_at.is_(None), _outbound.c.next_attempt_at <= bindparam("now")),
    )
    .order_by(_outbound.c.id)
    .limit(1)
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
_CLAIM = Fast(
    update(_outbound)
    .where(_outbound.c.id == _READY)
    .values(
        status=OutboundStatus.sending.value,
        attempts=_outbound.c.attempts + 1,
        # While ``sending``, next_attempt_at holds the claim time (for recovery).
        next_attempt_at=bindparam("claimed_at"),
    )
    .returning(
        _outbound.c.id,
        _outbound.c.message_id,
        _outbound.c.sender,
        _outbound.c.recipients,
        _outbound.c.raw,
        _outbound.c.attempts,
        _outbound.c.created_at,
    ),
    # Planned for each run on PostgreSQL, like the inbox claim (``inbox._CLAIM``):
    # a prepared plan made on a nearly empty table can walk the whole table later.
    prepare=False,
)
_SENT = Fast(
    update(_outbound)
    .where(_outbound.c.id == bindparam("outbound_id"))
    .values(
        status=OutboundStatus.sent.value,
        sent_at=bindparam("sent_at"),
        last_error=None,
        next_attempt_at=None,
    )
)


def claim(db: Database, *, clock: Clock = utcnow) -> OutboundItem | None:
    now = clock()
    with db.begin() as conn:
        row = _CLAIM.execute(conn, {"now": now, "claimed_at": now}).one_or_none()
    if row is None:
        return None
    return OutboundItem(
        id=row[0],
        message_id=row[1],
        sender=row[2],
        recipients=tuple(row[3] or ()),
        raw=row[4],
        attempts=row[5],
        created_at=row[6],
    )


def _set(db: Database, outbound_id: int, **values: Any) -> None:
    with db.transaction() as session:
        session.execute(update(Outbound).where(col(Outbound.id) == outbound_id).values(**values))


def mark_sent(db: Database, outbound_id: int, *, clock: Clock = utcnow) -> None:
    with db.begin() as conn:
        _SENT.execute(conn, {"outbound_id": outbound_id, "sent_at": clock()})


def retry_later(
    db: Database, outbound_id: int, error: str, *, delay: timedelta, clock: Clock = utcnow
) -> None:
    _set(
        db,
        outbound_id,
        status=OutboundStatus.pending.value,
        last_error=error[:MAX_ERROR_CHARS],
        next_attempt_at=clock() + delay,
    )


def mark_failed(db: Database, outbound_id: int, error: str) -> None:
    _set(
        db,
        outbound_id,
        status=OutboundStatus.failed.value,
        last_error=error[:MAX_ERROR_CHARS],
        next_attempt_at=None,
    )


def recover_stale(db: Database, *, lease: timedelta | None, clock: Clock = utcnow) -> int:
    """Rows left ``sending`` by a dead sender go back to ``pending``.

    Whether the relay got the mail is unknown; it is sent again with the same
    Message-ID, which receiving systems and mail clients deduplicate.
    ``lease=None`` takes back every such row (SQLite: one daemon, at start-up).
    """
    stale = [col(Outbound.status) == OutboundStatus.sending.value]
    if lease is not None:
        stale.append(col(Outbound.next_attempt_at) < clock() - lease)
    with db.transaction() as session:
        result = cast(
            "CursorResult[Any]",
            session.execute(
                update(Outbound).where(*stale).values(status=OutboundStatus.pending.value)
            ),
        )
    return int(result.rowcount)


def count_recent_auto(session: Session, recipient: str, since: datetime) -> int:
    """Automatic mails queued for ``recipient`` since ``since`` (the loop-safety cap)."""
    params = {"rcpt": recipient.lower(), "since": since}
    return int(_RECENT_AUTO.execute(session.connection(), params).scalar_one())


@dataclass(frozen=True, slots=True)
class BouncedMail:
    outbound_id: int
    ticket_id: int | None
    recipients: tuple[str, ...]


def mark_bounced(
    session: Session, message_ids: Sequence[str], reason: str, now: datetime
) -> list[BouncedMail]:
    """Mark our mail named by ``message_ids`` as bounced (failed, with the reason)."""
    if not message_ids:
        return []
    rows = session.execute(
        select(Outbound).where(col(Outbound.message_id).in_(list(message_ids)))
    ).scalars()
    found = []
    for row in rows:
        row.status = OutboundStatus.failed
        row.bounced_at = now
        row.last_error = f"bounced: {reason}"[:MAX_ERROR_CHARS]
        session.add(row)
        assert row.id is not None
        found.append(BouncedMail(row.id, row.ticket_id, tuple(row.recipients)))
    return found


def list_outbound(
    db: Database, *, status: OutboundStatus | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Rows without their bytes, newest first, as plain dicts."""
    columns = (
        col(Outbound.id),
        col(Outbound.status),
        col(Outbound.event),
        col(Outbound.message_id),
        col(Outbound.recipients),
        col(Outbound.attempts),
        col(Outbound.created_at),
        col(Outbound.next_attempt_at),
        col(Outbound.sent_at),
        col(Outbound.ticket_id),
        col(Outbound.last_error),
    )
    stmt = select(*columns).order_by(col(Outbound.id).desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(col(Outbound.status) == status.value)
    with db.transaction() as session:
        return [dict(row._mapping) for row in session.execute(stmt).all()]


def requeue(db: Database, ids: Sequence[int] = (), *, all_failed: bool = False) -> int:
    """Send failed (or given) rows again; a sent row is never sent again."""
    conditions: list[Any] = [col(Outbound.status) != OutboundStatus.sent.value]
    if all_failed:
        conditions.append(col(Outbound.status) == OutboundStatus.failed.value)
    if ids:
        conditions.append(col(Outbound.id).in_(list(ids)))
    if len(conditions) == 1:
        return 0
    with db.transaction() as session:
        result = cast(
            "CursorResult[Any]",
            session.execute(
                update(Outbound)
                .where(*conditions)
                .values(status=OutboundStatus.pending.value, next_attempt_at=None, attempts=0)
            ),
        )
    return int(result.rowcount)


def counts(db: Database) -> dict[OutboundStatus, int]:
    stmt = select(col(Outbound.status), func.count()).group_by(col(Outbound.status))
    with db.transaction() as session:
        found = {OutboundStatus(s): n for s, n in session.execute(stmt).all()}
    return {status: found.get(status, 0) for status in OutboundStatus}
