"""The durable inbound queue: accept, claim, complete, retry, shunt, recover.

A mail is ours once ``accept`` returns: its raw bytes are committed. Every
later failure leaves a row an operator can see and retry. The lifecycle is
``received -> processing -> done`` or ``-> shunted`` (quarantine).

Several workers may claim at once, and the claim keeps conversations in
order: it skips a row while an earlier row (lower id) with the same
``sender_key`` or the same ``thread_key`` is still waiting (``received``,
due now or later, or ``processing``). A reply is therefore never processed
before the mail it answers has committed its ticket, whatever the number of
workers. A quarantined row no longer holds back the ones after it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from email.utils import getaddresses
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Update,
    bindparam,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlmodel import Session, SQLModel, col

from mailbot.headers import (
    HEADER_SCAN_BYTES,
    extract_message_id,
    message_id_key,
    split_message_ids,
)
from mailbot.store.db import Database
from mailbot.store.fast import Fast
from mailbot.store.models import INBOUND_WAITING_WHERE, Inbound, InboundStatus
from mailbot.store.types import utcnow

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Stored errors are capped so that a pathological traceback cannot bloat a row.
MAX_ERROR_CHARS = 8000


@dataclass(frozen=True, slots=True)
class Accepted:
    inbound_id: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Delivery:
    """A mail handed to us by a listener, with its envelope."""

    raw: bytes
    source: str
    envelope_from: str = ""
    envelope_to: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class InboundItem:
    """A claimed inbound row, detached from any session."""

    id: int
    raw: bytes
    source: str
    envelope_from: str
    envelope_to: tuple[str, ...]
    attempts: int
    received_at: datetime
    #: False for a row claimed ahead and not yet due: its attempt is counted
    #: (``charge``) only when the worker moves it up to be processed next, so
    #: a worker killed while holding it does not count a try against it.
    charged: bool = True


@dataclass(frozen=True, slots=True)
class InboundSummary:
    id: int
    status: InboundStatus
    source: str
    message_id: str | None
    envelope_from: str
    envelope_to: tuple[str, ...]
    size: int
    attempts: int
    received_at: datetime
    processed_at: datetime | None
    ticket_id: int | None
    last_error: str | None


_inbound = SQLModel.metadata.tables["inbound"]
_BY_DEDUPE_KEY = Fast(select(_inbound.c.id).where(_inbound.c.dedupe_key == bindparam("key")))
_ACCEPT = {
    name: Fast(
        dialect.insert(_inbound)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(_inbound.c.id)
    )
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}


#: The row a claim looks at; every earlier row is an ``earlier_*`` alias.
_candidate = _inbound.alias("candidate")


def _waiting_before(key: str) -> Any:
    """EXISTS an earlier row, still waiting, with the same ``key`` as the candidate.

    The status condition is the partial indexes' own text, constants included:
    with a bound parameter neither database could prove that the index covers
    the query.
    """
    earlier = _inbound.alias(f"earlier_{key}")
    return exists().where(
        earlier.c[key] == _candidate.c[key],
        earlier.c.id < _candidate.c.id,
        text(f"earlier_{key}.{INBOUND_WAITING_WHERE}"),
    )


def _claim_statement(*, skip_locked: bool, charge: bool = True) -> Update:
    ready = (
        select(_candidate.c.id)
        .where(
            _candidate.c.status == InboundStatus.received.value,
            or_(
                _candidate.c.next_attempt_at.is_(None),
                _candidate.c.next_attempt_at <= bindparam("now"),
            ),
            # Conversations stay in order: not while an earlier mail of the
            # same sender or thread is waiting or being processed.
            ~_waiting_before("sender_key"),
            ~_waiting_before("thread_key"),
        )
        .order_by(_candidate.c.id)
        .limit(1)
    )
    if skip_locked:
        ready = ready.with_for_update(skip_locked=True)
    return (
        _inbound.update()
        .where(_inbound.c.id == ready.scalar_subquery())
        .values(
            status=InboundStatus.processing.value,
            claimed_at=bindparam("now"),
            attempts=_inbound.c.attempts + 1 if charge else _inbound.c.attempts,
        )
        .returning(
            _inbound.c.id,
            _inbound.c.raw,
            _inbound.c.source,
            _inbound.c.envelope_from,
            _inbound.c.envelope_to,
            _inbound.c.attempts,
            _inbound.c.received_at,
        )
    )


#: Never a prepared plan on PostgreSQL: one made while the inbox was nearly empty
#: (a fresh install, the first mails of a burst) stays with the connection, and
#: walked the whole inbox for each claim once thousands of rows had come in
#: (seconds per claim; docs/performance.md). Planning it afresh costs ~1.5 ms.
_CLAIM = {
    (dialect, charge): Fast(
        _claim_statement(skip_locked=dialect == "postgresql", charge=charge), prepare=False
    )
    for dialect in ("sqlite", "postgresql")
    for charge in (True, False)
}
_CHARGE = Fast(
    _inbound.update()
    .where(
        _inbound.c.id == bindparam("row_id"),
        _inbound.c.status == InboundStatus.processing.value,
        _inbound.c.attempts == bindparam("claim"),
    )
    .values(attempts=_inbound.c.attempts + 1, claimed_at=bindparam("now"))
)
_DONE_ANY = (
    _inbound.update()
    .where(_inbound.c.id == bindparam("row_id"))
    .values(
        status=InboundStatus.done.value,
        processed_at=bindparam("now"),
        ticket_id=bindparam("ticket"),
        last_error=None,
        next_attempt_at=None,
    )
)
_DONE = Fast(_DONE_ANY)
_DONE_CLAIMED = Fast(
    _DONE_ANY.where(
        _inbound.c.status == InboundStatus.processing.value,
        _inbound.c.attempts == bindparam("claim"),
    )
)


_ORDER_FIELDS = re.compile(
    rb"^(from|references|in-reply-to)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE
)
#: A From of one address, bare or after a display name without quotes or commas.
_ADDR = r'[^<>\s"@,;:()\[\]\\]+@[^<>\s"@,;:()\[\]\\]+'
_PLAIN_FROM = re.compile(rf'\s*(?:[^"<>,;:()\[\]\\@]*<({_ADDR})>|({_ADDR}))\s*')
_HEADER_END = re.compile(rb"\r?\n\r?\n")
#: Longest sender key kept (the longest address RFC 5321 allows is shorter).
MAX_SENDER_KEY = 320


def order_keys(
    raw: bytes, *, envelope_from: str = "", message_id: str | None = None
) -> tuple[str | None, str | None]:
    """(sender key, thread key) of a raw mail: what the claim keeps in order.

    The sender is the first From address, else the envelope sender (not the
    null sender ``<>`` of bounces), lower-cased: the From is who the ticket
    belongs to, and mail imported from an mbox or fetched over IMAP has no
    envelope. The thread key is a hash of the conversation's first
    Message-ID: the first of References, else of In-Reply-To, else the mail's
    own. Either is None when the mail does not say; None never orders anything.
    Reads only the header block and never raises.
    """
    fields: dict[bytes, bytes] = {}
    # headers.header_block without its copy of up to 256 KB of body.
    end = _HEADER_END.search(raw, 0, HEADER_SCAN_BYTES)
    for match in _ORDER_FIELDS.finditer(raw, 0, end.start() if end else HEADER_SCAN_BYTES):
        fields.setdefault(match.group(1).lower(), match.group(2))
    sender = None
    if b"from" in fields:
        value = fields[b"from"].decode("utf-8", "replace").replace("\x00", "")
        plain = _PLAIN_FROM.fullmatch(value)
        if plain:  # "Name <a@b>" or "a@b", the usual forms: no full address parse
            sender = plain.group(1) or plain.group(2)
        else:
            sender = next((a for _, a in getaddresses([value]) if "@" in a), None)
    if sender is None and envelope_from not in ("", "<>"):
        sender = envelope_from.replace("\x00", "")
    root = None
    for name in (b"references", b"in-reply-to"):
        ids = split_message_ids(fields[name].decode("ascii", "replace")) if name in fields else ()
        if ids:
            root = ids[0]
            break
    root = root or message_id
    return (
        sender.lower()[:MAX_SENDER_KEY] if sender else None,
        message_id_key(root) if root else None,
    )


def dedupe_key(raw: bytes) -> tuple[str, str, str | None]:
    """(dedupe key, sha256 of the bytes, normalised Message-ID) of a raw mail."""
    digest = hashlib.sha256(raw).hexdigest()
    message_id = extract_message_id(raw)
    key = f"mid:{message_id_key(message_id)}" if message_id else f"raw:{digest}"
    return key, digest, message_id


def accept(
    db: Database,
    raw: bytes,
    *,
    source: str,
    envelope_from: str = "",
    envelope_to: Sequence[str] = (),
    clock: Clock = utcnow,
) -> Accepted:
    """Commit the raw mail to the inbox; a mail seen before is a no-op success.

    Raises StorageUnavailableError (a TransientError) when the database cannot
    take it; the caller must then answer "try again later".
    """
    delivery = Delivery(raw, source, envelope_from, envelope_to)
    return accept_deliveries(db, [delivery], clock=clock)[0]


def accept_many(
    db: Database, raws: Iterable[bytes], *, source: str, clock: Clock = utcnow
) -> list[Accepted]:
    """Commit several raw mails in one transaction, for imports (``mailbot ingest --mbox``).

    All or none: nothing has been acknowledged to anyone before the commit, and
    an import run again skips what is already in (the same dedupe as ``accept``).
    """
    return accept_deliveries(db, [Delivery(raw, source) for raw in raws], clock=clock)


def accept_deliveries(
    db: Database, deliveries: Sequence[Delivery], *, clock: Clock = utcnow
) -> list[Accepted]:
    """Commit mails that several listener sessions finished together, in one transaction.

    The listener's group commit (``ingest.smtp``): nobody has had an answer
    yet, so all or none is safe; on an error the listener tries them one by one.
    """
    with db.begin() as conn:
        now = clock()
        return [
            _insert(conn, d.raw, d.source, d.envelope_from, d.envelope_to, now) for d in deliveries
        ]


def _insert(
    conn: Connection,
    raw: bytes,
    source: str,
    envelope_from: str,
    envelope_to: Sequence[str],
    now: datetime,
) -> Accepted:
    key, digest, message_id = dedupe_key(raw)
    sender_key, thread_key = order_keys(raw, envelope_from=envelope_from, message_id=message_id)
    values = {
        "raw": raw,
        "size": len(raw),
        "sha256": digest,
        "dedupe_key": key,
        "message_id": message_id,
        "envelope_from": envelope_from.replace("\x00", ""),
        "envelope_to": [r.replace("\x00", "") for r in envelope_to],
        "source": source,
        "status": InboundStatus.received.value,
        "attempts": 0,
        "received_at": now,
        "sender_key": sender_key,
        "thread_key": thread_key,
    }
    new_id = _ACCEPT[conn.dialect.name].execute(conn, values).scalar()
    if new_id is not None:
        return Accepted(inbound_id=new_id, duplicate=False)
    existing = _BY_DEDUPE_KEY.execute(conn, {"key": key}).scalar_one()
    return Accepted(inbound_id=existing, duplicate=True)


def claim(db: Database, *, clock: Clock = utcnow) -> InboundItem | None:
    """Take the oldest ready row for processing, or None when there is none.

    A row is ready when it is ``received``, due, and no earlier row of its
    sender or thread is waiting (see the module's docstring). On PostgreSQL
    the row is locked with ``FOR UPDATE SKIP LOCKED`` so that several workers
    (or hosts) never take the same mail; SQLite serialises writers with
    ``BEGIN IMMEDIATE``.
    """
    with db.begin() as conn:
        return claim_in(conn, clock=clock)


def claim_in(conn: Connection, *, clock: Clock = utcnow, charge: bool = True) -> InboundItem | None:
    """``claim`` inside the caller's transaction: it commits or rolls back with it.

    The pipeline claims its next rows in the transaction that completes the
    current one: one transaction per mail instead of two. ``charge=False``
    claims a row ahead without counting an attempt (see ``charge``).
    """
    stmt = _CLAIM[conn.dialect.name, charge]
    row = stmt.execute(conn, {"now": clock()}).one_or_none()
    if row is None:
        return None
    return InboundItem(
        id=row[0],
        raw=row[1],
        source=row[2],
        envelope_from=row[3],
        envelope_to=tuple(row[4] or ()),
        attempts=row[5],
        received_at=row[6],
        charged=charge,
    )


def charge(conn: Connection, item: InboundItem, *, clock: Clock = utcnow) -> InboundItem | None:
    """Count the attempt of a row claimed ahead, now that it is next; None if the claim is lost.

    Done in the commit of the mail before it, so an attempt is counted for
    every row a dying worker was about to process or processing, and for no
    row it merely held further ahead.
    """
    if item.charged:
        return item
    params = {"row_id": item.id, "claim": item.attempts, "now": clock()}
    if _CHARGE.execute(conn, params).rowcount != 1:
        return None
    return replace(item, attempts=item.attempts + 1, charged=True)


def _claimed(inbound_id: int, claim: int | None) -> list[Any]:
    """WHERE clauses for a row, and, with ``claim``, only while that claim holds.

    ``claim`` is the attempt number the claim returned: once a stale claim was
    taken back and the row claimed again, the first worker's writes match
    nothing, so a mail is never stored twice.
    """
    conditions: list[Any] = [col(Inbound.id) == inbound_id]
    if claim is not None:
        conditions.append(col(Inbound.status) == InboundStatus.processing.value)
        conditions.append(col(Inbound.attempts) == claim)
    return conditions


def mark_done(
    session: Session,
    inbound_id: int,
    *,
    ticket_id: int | None,
    claim: int | None = None,
    clock: Clock = utcnow,
) -> bool:
    """Mark a row processed, inside the transaction that stored its effects.

    Returns False when the claim no longer holds; the caller must then roll
    back its transaction.
    """
    values = {"row_id": inbound_id, "now": clock(), "ticket": ticket_id}
    if claim is None:
        result = _DONE.execute(session.connection(), values)
    else:
        result = _DONE_CLAIMED.execute(session.connection(), {**values, "claim": claim})
    return int(result.rowcount) == 1


def _rowcount(session: Session, stmt: Update) -> int:
    result = cast("CursorResult[Any]", session.execute(stmt))
    return int(result.rowcount)


def _cap(error: str) -> str:
    return error.replace("\x00", "")[:MAX_ERROR_CHARS]


def shunt(
    db: Database, inbound_id: int, error: str, *, claim: int | None = None, clock: Clock = utcnow
) -> bool:
    """Quarantine a row with the reason; an operator can retry it later."""
    with db.transaction() as session:
        return (
            _rowcount(
                session,
                update(Inbound)
                .where(*_claimed(inbound_id, claim))
                .values(
                    status=InboundStatus.shunted.value,
                    last_error=_cap(error),
                    processed_at=clock(),
                    next_attempt_at=None,
                ),
            )
            == 1
        )


def retry_later(
    db: Database,
    inbound_id: int,
    error: str,
    *,
    delay: timedelta,
    claim: int | None = None,
    clock: Clock = utcnow,
) -> bool:
    """Put a row back in the queue after a temporary failure."""
    with db.transaction() as session:
        return (
            _rowcount(
                session,
                update(Inbound)
                .where(*_claimed(inbound_id, claim))
                .values(
                    status=InboundStatus.received.value,
                    last_error=_cap(error),
                    next_attempt_at=clock() + delay,
                ),
            )
            == 1
        )


def release(db: Database, item: InboundItem) -> bool:
    """Give back a row claimed but never started, as if it had not been claimed.

    A worker that stops while holding the row it claimed ahead returns it
    without spending one of its attempts. False when the claim no longer holds.
    """
    with db.transaction() as session:
        return (
            _rowcount(
                session,
                update(Inbound)
                .where(*_claimed(item.id, item.attempts))
                .values(
                    status=InboundStatus.received.value,
                    attempts=col(Inbound.attempts) - (1 if item.charged else 0),
                    claimed_at=None,
                ),
            )
            == 1
        )


def recover_stale(
    db: Database,
    *,
    lease: timedelta | None,
    max_attempts: int,
    clock: Clock = utcnow,
) -> tuple[int, int]:
    """Take back claims left by a dead worker; returns (requeued, shunted).

    ``lease=None`` takes back every claim (a SQLite database has one daemon,
    so at its start-up no claim can be alive). A row whose claims keep dying
    with the worker is quarantined after ``max_attempts``.
    """
    now = clock()
    stale = [col(Inbound.status) == InboundStatus.processing.value]
    if lease is not None:
        stale.append(col(Inbound.claimed_at) < now - lease)
    with db.transaction() as session:
        shunted = _rowcount(
            session,
            update(Inbound)
            .where(*stale, col(Inbound.attempts) >= max_attempts)
            .values(
                status=InboundStatus.shunted.value,
                last_error="the worker stopped while processing this mail, "
                f"{max_attempts} times: quarantined",
                processed_at=now,
            ),
        )
        requeued = _rowcount(
            session,
            update(Inbound)
            .where(*stale)
            .values(status=InboundStatus.received.value, claimed_at=None),
        )
    if requeued or shunted:
        log.warning(
            "recovered %d stale claims, quarantined %d",
            requeued,
            shunted,
            extra={"action": "inbound_recovered", "requeued": requeued, "shunted": shunted},
        )
    return requeued, shunted


def requeue(db: Database, ids: Sequence[int] = (), *, all_shunted: bool = False) -> int:
    """Send quarantined (or given) rows back through the pipeline; returns the count."""
    conditions = []
    if all_shunted:
        conditions.append(col(Inbound.status) == InboundStatus.shunted.value)
    if ids:
        conditions.append(col(Inbound.id).in_(list(ids)))
        conditions.append(col(Inbound.status) != InboundStatus.processing.value)
    if not conditions:
        return 0
    with db.transaction() as session:
        return _rowcount(
            session,
            update(Inbound)
            .where(*conditions)
            .values(
                status=InboundStatus.received.value,
                attempts=0,
                next_attempt_at=None,
                claimed_at=None,
            ),
        )


_SUMMARY_COLUMNS = (
    col(Inbound.id),
    col(Inbound.status),
    col(Inbound.source),
    col(Inbound.message_id),
    col(Inbound.envelope_from),
    col(Inbound.envelope_to),
    col(Inbound.size),
    col(Inbound.attempts),
    col(Inbound.received_at),
    col(Inbound.processed_at),
    col(Inbound.ticket_id),
    col(Inbound.last_error),
)


def _summary(row: Sequence[object]) -> InboundSummary:
    return InboundSummary(
        id=row[0],  # type: ignore[arg-type]
        status=InboundStatus(row[1]),  # type: ignore[arg-type]
        source=row[2],  # type: ignore[arg-type]
        message_id=row[3],  # type: ignore[arg-type]
        envelope_from=row[4],  # type: ignore[arg-type]
        envelope_to=tuple(row[5] or ()),  # type: ignore[arg-type]
        size=row[6],  # type: ignore[arg-type]
        attempts=row[7],  # type: ignore[arg-type]
        received_at=row[8],  # type: ignore[arg-type]
        processed_at=row[9],  # type: ignore[arg-type]
        ticket_id=row[10],  # type: ignore[arg-type]
        last_error=row[11],  # type: ignore[arg-type]
    )


def list_inbound(
    db: Database, *, status: InboundStatus | None = None, limit: int = 50
) -> list[InboundSummary]:
    stmt = select(*_SUMMARY_COLUMNS).order_by(col(Inbound.id).desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(col(Inbound.status) == status.value)
    with db.transaction() as session:
        return [_summary(row) for row in session.execute(stmt).all()]


def get_inbound(db: Database, inbound_id: int) -> tuple[InboundSummary, bytes] | None:
    stmt = select(*_SUMMARY_COLUMNS, col(Inbound.raw)).where(col(Inbound.id) == inbound_id)
    with db.transaction() as session:
        row = session.execute(stmt).one_or_none()
    if row is None:
        return None
    return _summary(row[:-1]), row[-1]


def counts(db: Database) -> dict[InboundStatus, int]:
    """How many rows are in each state."""
    stmt = select(col(Inbound.status), func.count()).group_by(col(Inbound.status))
    with db.transaction() as session:
        found = {InboundStatus(s): n for s, n in session.execute(stmt).all()}
    return {status: found.get(status, 0) for status in InboundStatus}
