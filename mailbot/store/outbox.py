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

from sqlalchemy import CursorResult, func, or_, select, update
from sqlmodel import Session, col

from mailbot.store.db import Database
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


def enqueue(
    session: Session,
    *,
    raw: bytes,
    sender: str,
    recipients: Sequence[str],
    message_id: str,
    ticket_id: int | None,
    clock: Clock = utcnow,
) -> Outbound:
    """Add a mail to the queue inside the caller's transaction."""
    row = Outbound(
        ticket_id=ticket_id,
        message_id=message_id,
        sender=sender,
        recipients=list(recipients),
        raw=raw,
        status=OutboundStatus.pending,
        created_at=clock(),
    )
    session.add(row)
    session.flush()
    return row


def claim(db: Database, *, clock: Clock = utcnow) -> OutboundItem | None:
    now = clock()
    ready = (
        select(col(Outbound.id))
        .where(
            col(Outbound.status) == OutboundStatus.pending.value,
            or_(col(Outbound.next_attempt_at).is_(None), col(Outbound.next_attempt_at) <= now),
        )
        .order_by(col(Outbound.id))
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        update(Outbound)
        .where(col(Outbound.id) == ready)
        .values(
            status=OutboundStatus.sending.value,
            attempts=col(Outbound.attempts) + 1,
            # While ``sending``, next_attempt_at holds the claim time (for recovery).
            next_attempt_at=now,
        )
        .returning(
            col(Outbound.id),
            col(Outbound.message_id),
            col(Outbound.sender),
            col(Outbound.recipients),
            col(Outbound.raw),
            col(Outbound.attempts),
            col(Outbound.created_at),
        )
    )
    with db.transaction() as session:
        row = session.execute(stmt).one_or_none()
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
    _set(
        db,
        outbound_id,
        status=OutboundStatus.sent.value,
        sent_at=clock(),
        last_error=None,
        next_attempt_at=None,
    )


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


def recover_stale(db: Database, *, lease: timedelta, clock: Clock = utcnow) -> int:
    """Rows left ``sending`` by a dead sender go back to ``pending``.

    Whether the relay got the mail is unknown; it is sent again with the same
    Message-ID, which receiving systems and mail clients deduplicate.
    """
    with db.transaction() as session:
        result = cast(
            "CursorResult[Any]",
            session.execute(
                update(Outbound)
                .where(
                    col(Outbound.status) == OutboundStatus.sending.value,
                    col(Outbound.next_attempt_at) < clock() - lease,
                )
                .values(status=OutboundStatus.pending.value)
            ),
        )
    return int(result.rowcount)


def counts(db: Database) -> dict[OutboundStatus, int]:
    stmt = select(col(Outbound.status), func.count()).group_by(col(Outbound.status))
    with db.transaction() as session:
        found = {OutboundStatus(s): n for s, n in session.execute(stmt).all()}
    return {status: found.get(status, 0) for status in OutboundStatus}
