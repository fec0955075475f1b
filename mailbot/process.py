"""One inbound mail, one transaction: the pipeline.

``Pipeline.process_next`` claims a row from the inbox, parses and classifies
it, and then, in one transaction, applies it to the tickets
(``conversation``), queues any automatic answer (``notify``, the outbox) and
marks the row ``done``. This is the only place in the processing path that
catches every exception: a mail that raises anything (``RecursionError`` and
``LookupError`` included) is quarantined with its error and the worker goes on.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlmodel import Session

from mailbot import loaders, signing
from mailbot import parse as parser
from mailbot.classify import Classification, MailClass, classify
from mailbot.config import Settings
from mailbot.conversation import NO_TEXT, Applied, Conversation
from mailbot.errors import ClaimLostError, PermanentError, TransientError
from mailbot.message import ParsedMessage
from mailbot.notify import Notifier
from mailbot.render import MailRenderer
from mailbot.store import inbox, keyfile
from mailbot.store import people as people_store
from mailbot.store.blobs import BlobStore
from mailbot.store.db import Database
from mailbot.store.inbox import InboundItem
from mailbot.store.types import utcnow

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

__all__ = ["NO_TEXT", "Pipeline", "Processed"]


@dataclass(frozen=True, slots=True)
class Processed:
    """What happened to one inbound row."""

    inbound_id: int
    #: created | appended | reopened | bounce-linked | ignored-loop | retry |
    #: quarantined | claim-lost
    outcome: str
    ticket_number: int | None = None
    error: str | None = None


class Pipeline:
    """Turns inbox rows into tickets; built once by the daemon or the CLI."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        key: bytes | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.blobs = BlobStore(settings.attachment_dir)
        self.limits = settings.parse.limits()
        self.key = key if key is not None else keyfile.load_or_create(settings.secret_key_path)
        templates = settings.conversation.templates_dir
        renderer = MailRenderer(Path(templates) if templates else None)
        notifier = Notifier(settings, renderer, self.key, clock)
        self.people = loaders.read_people(settings)
        self.directory = loaders.directory_of(self.people, renderer.events("customer"))
        self.rules = loaders.RulesWatcher(
            settings, self.directory, loaders.read_rules(settings, self.directory)
        )
        self.conversation = Conversation(
            settings,
            notifier,
            self.key,
            clock,
            rules=lambda: self.rules.rules,
            people=self.people,
        )

    def sync_people(self) -> None:
        """Write the agents of ``agents.yaml`` to the database (routing assigns by id)."""
        with self.db.transaction() as session:
            people_store.sync_agents(session, self.people, self.clock())

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
        log.info(
            "inbound %d %s ticket %s",
            item.id,
            stored.outcome,
            stored.ticket_number,
            extra={
                "action": "inbound_processed",
                "inbound_id": item.id,
                "ticket_number": stored.ticket_number,
                "outcome": stored.outcome,
            },
        )
        return Processed(item.id, stored.outcome, stored.ticket_number)

    # -- the steps -------------------------------------------------------------

    def classify(self, msg: ParsedMessage, item: InboundItem) -> Classification:
        # The SMTP envelope sender: "<>" is the null sender of bounces; "" unknown.
        envelope_from = "" if item.envelope_from == "<>" else (item.envelope_from or None)
        return classify(
            msg,
            our_addresses=self.settings.our_addresses,
            envelope_from=envelope_from,
            is_our_message_id=lambda mid: signing.ticket_of_message_id(self.key, mid) is not None,
        )

    def _handle(self, item: InboundItem) -> Applied:
        msg = parser.parse(item.raw, self.limits)
        klass = self.classify(msg, item)
        if klass.mail_class is MailClass.loop:
            # Our own mail came back: store nothing, answer nothing (B-21).
            with self.db.transaction() as session:
                self._done(session, item, None)
            log.info(
                "inbound %d ignored: %s",
                item.id,
                "; ".join(klass.reasons),
                extra={"action": "inbound_loop_ignored", "inbound_id": item.id},
            )
            return Applied("ignored-loop", None, None)
        # Blobs go to disk before the transaction: a crash in between leaves
        # an orphan file (removed by housekeeping), never a row without its file.
        keys = [self.blobs.put(a.payload) for a in msg.attachments]
        with self.db.transaction() as session:
            applied = self.conversation.apply(session, item, msg, klass, keys)
            self._done(session, item, applied.ticket_id)
            return applied

    def _done(self, session: Session, item: InboundItem, ticket_id: int | None) -> None:
        if not inbox.mark_done(
            session, item.id, ticket_id=ticket_id, claim=item.attempts, clock=self.clock
        ):
            raise ClaimLostError(f"inbound {item.id} was claimed again by another worker")

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


def _describe(exc: BaseException) -> str:
    """Type, message and a short traceback, for the row's ``last_error``."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=8)
    text = "".join(lines)
    return f"{type(exc).__name__}: {exc}\n{text}"
