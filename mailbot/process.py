"""One inbound mail, one transaction: the pipeline.

``Pipeline.process_next`` claims a row from the inbox, parses it, finds its
ticket, and stores the ticket, message, attachments and the row's ``done``
state in one transaction. This is the only place in the processing path that
catches every exception: a mail that raises anything (``RecursionError`` and
``LookupError`` included) is quarantined with its error and the worker goes on.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailbot import parse as parser
from mailbot.config import Settings
from mailbot.errors import ClaimLostError, PermanentError, TransientError
from mailbot.message import ParsedMessage
from mailbot.store import inbox, tickets
from mailbot.store.blobs import BlobStore
from mailbot.store.db import Database
from mailbot.store.inbox import InboundItem
from mailbot.store.models import AuthorType, Direction, Priority
from mailbot.store.types import utcnow
from mailbot.threader import SubjectToken, ThreadedBy, find_ticket

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Shown instead of an empty body (BAD_INPUTS B-35): a mail is never dropped as empty.
NO_TEXT = "(no text)"
UNKNOWN_SENDER = "(unknown sender)"
MAX_SUBJECT_CHARS = 998


@dataclass(frozen=True, slots=True)
class Processed:
    """What happened to one inbound row."""

    inbound_id: int
    outcome: str  # "created" | "appended" | "retry" | "quarantined" | "claim-lost"
    ticket_number: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Stored:
    ticket_id: int
    ticket_number: int
    created: bool


class Pipeline:
    """Turns inbox rows into tickets; built once by the daemon or the CLI."""

    def __init__(self, db: Database, settings: Settings, *, clock: Clock = utcnow) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.blobs = BlobStore(settings.attachment_dir)
        self.token = SubjectToken(settings.tickets.token_format)
        self.limits = settings.parse.limits()

    def process_next(self) -> Processed | None:
        """Process one ready row; None when the inbox has nothing ready."""
        item = inbox.claim(self.db, clock=self.clock)
        if item is None:
            return None
        return self.process(item)

    def process(self, item: InboundItem) -> Processed:
        try:
            stored = self._handle(item)
        except ClaimLostError as exc:
            log.warning(
                "inbound %d dropped: %s",
                item.id,
                exc,
                extra={"action": "inbound_claim_lost", "inbound_id": item.id},
            )
            return Processed(item.id, "claim-lost", error=str(exc))
        except TransientError as exc:
            return self._failed(item, exc, transient=True)
        except Exception as exc:  # the per-message boundary: quarantine, go on
            return self._failed(item, exc, transient=False)
        outcome = "created" if stored.created else "appended"
        log.info(
            "inbound %d %s ticket %d",
            item.id,
            outcome,
            stored.ticket_number,
            extra={
                "action": "inbound_processed",
                "inbound_id": item.id,
                "ticket_number": stored.ticket_number,
                "outcome": outcome,
            },
        )
        return Processed(item.id, outcome, stored.ticket_number)

    # -- the steps -------------------------------------------------------------

    def _handle(self, item: InboundItem) -> _Stored:
        msg = parser.parse(item.raw, self.limits)
        # Blobs go to disk before the transaction: a crash in between leaves
        # an orphan file (removed by housekeeping), never a row without its file.
        keys = [self.blobs.put(a.payload) for a in msg.attachments]
        now = self.clock()
        with self.db.transaction() as session:
            lookup = tickets.SessionLookup(session)
            match = find_ticket(msg, lookup, self.token)
            sender_email = msg.sender.email if msg.sender else ""
            sender_name = msg.sender.name if msg.sender else UNKNOWN_SENDER
            text = msg.text if msg.text.strip() else NO_TEXT
            customer = (
                tickets.get_or_create_customer(session, msg.sender.email, msg.sender.name)
                if msg.sender
                else None
            )
            if match.ticket_id is None:
                ticket = tickets.create_ticket(
                    session,
                    subject=_subject(msg),
                    description=text,
                    requester=customer,
                    priority=Priority(self.settings.tickets.default_priority),
                    category=self.settings.tickets.default_category,
                    now=now,
                    actor=sender_email or "system",
                )
                assert ticket.id is not None
                if match.how is ThreadedBy.not_participant and match.related_ticket_id:
                    related = tickets.get_ticket(session, match.related_ticket_id)
                    tickets.add_history(
                        session,
                        ticket.id,
                        "related",
                        None,
                        str(related.number) if related else None,
                        "system",
                        now,
                    )
                created = True
            else:
                found = tickets.get_ticket(session, match.ticket_id)
                assert found is not None
                assert found.id is not None
                ticket = found
                tickets.touch(session, ticket, now)
                created = False
            assert ticket.id is not None
            message = tickets.add_message(
                session,
                tickets.NewMessage(
                    ticket_id=ticket.id,
                    inbound_id=item.id,
                    subject=_subject(msg),
                    text_body=text,
                    html_body=msg.html,
                    author_email=sender_email,
                    author_name=sender_name,
                    author_type=AuthorType.user,
                    direction=Direction.inbound,
                    message_id=msg.message_id,
                    in_reply_to=msg.in_reply_to,
                    references=msg.references,
                    created_at=now,
                    flags=_flags(msg, match.how),
                ),
            )
            assert message.id is not None
            for attachment, key in zip(msg.attachments, keys, strict=True):
                tickets.add_attachment(
                    session,
                    message_id=message.id,
                    file_name=attachment.filename,
                    size=attachment.size,
                    content_type=attachment.content_type,
                    storage_key=key,
                    content_id=attachment.content_id,
                    inline=attachment.inline,
                )
            if not inbox.mark_done(
                session, item.id, ticket_id=ticket.id, claim=item.attempts, clock=self.clock
            ):
                raise ClaimLostError(f"inbound {item.id} was claimed again by another worker")
            return _Stored(ticket.id, ticket.number, created)

    def _failed(self, item: InboundItem, exc: BaseException, *, transient: bool) -> Processed:
        error = _describe(exc)
        retry = transient and item.attempts < self.settings.inbox.max_attempts
        extra = {"inbound_id": item.id, "attempts": item.attempts, "error": type(exc).__name__}
        try:
            if retry:
                delay = timedelta(
                    seconds=self.settings.inbox.retry_seconds * 2 ** (item.attempts - 1)
                )
                inbox.retry_later(
                    self.db, item.id, error, delay=delay, claim=item.attempts, clock=self.clock
                )
                log.warning(
                    "inbound %d failed, retry in %s: %s",
                    item.id,
                    delay,
                    exc,
                    extra={"action": "inbound_retry", **extra},
                )
                return Processed(item.id, "retry", error=error)
            inbox.shunt(self.db, item.id, error, claim=item.attempts, clock=self.clock)
        except TransientError:
            # The database itself is gone: the claim stays and recovery takes it back.
            log.exception(
                "inbound %d could not be marked failed",
                item.id,
                extra={"action": "inbound_mark_failed_error", **extra},
            )
            return Processed(item.id, "retry", error=error)
        kind = "permanent" if isinstance(exc, PermanentError) else "unexpected"
        log.error(
            "inbound %d quarantined (%s error): %s",
            item.id,
            kind,
            exc,
            exc_info=not isinstance(exc, PermanentError),
            extra={"action": "inbound_quarantined", **extra},
        )
        return Processed(item.id, "quarantined", error=error)


def _subject(msg: ParsedMessage) -> str:
    return msg.subject[:MAX_SUBJECT_CHARS]


def _flags(msg: ParsedMessage, how: ThreadedBy) -> list[str]:
    flags = [f"threaded-by:{how.value}"]
    flags.extend(msg.fallbacks)
    flags.extend(f"defect:{d}" for d in msg.defects[:20])
    if msg.sender is None:
        flags.append("unknown-sender")
    return flags


def _describe(exc: BaseException) -> str:
    """Type, message and a short traceback, for the row's ``last_error``."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=8)
    text = "".join(lines)
    return f"{type(exc).__name__}: {exc}\n{text}"
