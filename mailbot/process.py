"""One inbound mail, one transaction: the pipeline.

``Pipeline.process_next`` claims a row from the inbox, parses and classifies
it, and then, in one transaction, applies it to the tickets
(``conversation``), queues any automatic answer (``notify``, the outbox) and
marks the row ``done``. This is the only place in the processing path that
catches every exception: a mail that raises anything (``RecursionError`` and
``LookupError`` included) is quarantined with its error and the worker goes on.

Several workers (``inbox.workers``: threads of one process, ``Worker``) share
one ``Pipeline``. A worker claims its next row in the transaction that
completes the current one (one transaction per mail). The inbox's claim keeps
each sender's and each thread's mail in order, so workers never race on one
conversation. On SQLite, where one writer at a time holds the database, the
workers queue for it on a lock of this process; parsing and classifying happen
outside the transaction and overlap with another worker's writes. On
PostgreSQL their transactions run side by side; when two of them still meet
on a row (a unique key, a deadlock), the later one is tried again at once.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import DBAPIError
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

__all__ = ["NO_TEXT", "Pipeline", "Processed", "Worker"]

#: Tries of one mail's transaction when it meets a concurrent write (PostgreSQL).
CONFLICT_TRIES = 3
#: SQLSTATEs of a transaction that lost a race to another one: unique_violation,
#: serialization_failure, deadlock_detected. Trying again sees the winner's rows.
CONFLICT_SQLSTATES = frozenset({"23505", "40001", "40P01"})


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
        # SQLite takes one writer at a time (BEGIN IMMEDIATE) and makes the others
        # sleep in its busy handler (1 ms, 2 ms, 5 ms, ...): the workers of this
        # process queue on a lock instead. PostgreSQL needs none.
        self.writing: contextlib.AbstractContextManager[object] = (
            contextlib.nullcontext() if db.is_postgres else threading.Lock()
        )
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

    def claim(self) -> InboundItem | None:
        """Claim the next ready row of the inbox, or None."""
        with self.writing:
            return inbox.claim(self.db, clock=self.clock)

    def process_next(self) -> Processed | None:
        """Process one ready row; None when the inbox has nothing ready."""
        item = self.claim()
        if item is None:
            return None
        return self.process(item)

    def worker(self) -> Worker:
        """A worker of this pipeline, for one thread."""
        return Worker(self)

    def drain(self, workers: int = 1) -> Iterator[Processed]:
        """Process until nothing is ready, with ``workers`` threads; yields each result.

        Used by ``mailbot ingest``. On SQLite one thread does it, whatever
        ``workers`` says: with no intake beside them, a second thread only
        queues for the write lock and stretches the first one's transactions
        while it holds the GIL (20 % slower, docs/performance.md). Closing the
        generator early (Ctrl-C) lets every thread finish the mail in hand and
        give back the one it claimed ahead.
        """
        if workers <= 1 or not self.db.is_postgres:
            worker = self.worker()
            try:
                while (result := worker.step()) is not None:
                    yield result
            finally:
                worker.release()
            return
        yield from _Threads(self, workers).results()

    def process(self, item: InboundItem) -> Processed:
        return self.process_chained(item, claim_next=False)[0]

    def process_chained(
        self, item: InboundItem, *, claim_next: bool
    ) -> tuple[Processed, InboundItem | None]:
        """Process ``item``; with ``claim_next``, also claim the next row in its commit.

        The next row comes back claimed (None when nothing was ready, or when
        this mail failed): the caller processes it or gives it back.
        """
        try:
            stored, following = self._handle(item, claim_next=claim_next)
        except ClaimLostError as exc:
            log.warning(
                "inbound %d dropped: %s",
                item.id,
                exc,
                extra={"action": "inbound_claim_lost", "inbound_id": item.id},
            )
            return Processed(item.id, "claim-lost", error=str(exc)), None
        except TransientError as exc:
            return self._failed(item, exc, transient=True), None
        except Exception as exc:  # the per-message boundary: quarantine, go on
            return self._failed(item, exc, transient=False), None
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
        return Processed(item.id, stored.outcome, stored.ticket_number), following

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

    def _handle(self, item: InboundItem, *, claim_next: bool) -> tuple[Applied, InboundItem | None]:
        # Parsing and classifying need no database: outside the transaction.
        msg = parser.parse(item.raw, self.limits)
        klass = self.classify(msg, item)
        if klass.mail_class is MailClass.loop:
            # Our own mail came back: store nothing, answer nothing (B-21).
            with self.writing, self.db.transaction() as session:
                following = self._done(session, item, None, claim_next=claim_next)
            log.info(
                "inbound %d ignored: %s",
                item.id,
                "; ".join(klass.reasons),
                extra={"action": "inbound_loop_ignored", "inbound_id": item.id},
            )
            return Applied("ignored-loop", None, None), following
        # Blobs go to disk before the transaction: a crash in between leaves
        # an orphan file (removed by housekeeping), never a row without its file.
        keys = [self.blobs.put(a.payload) for a in msg.attachments]
        for attempt in range(1, CONFLICT_TRIES + 1):
            try:
                with self.writing, self.db.transaction() as session:
                    applied = self.conversation.apply(session, item, msg, klass, keys)
                    following = self._done(session, item, applied.ticket_id, claim_next=claim_next)
                return applied, following
            except (DBAPIError, TransientError) as exc:
                if attempt == CONFLICT_TRIES or not _lost_race(exc):
                    raise
                log.info(
                    "inbound %d met a concurrent transaction, trying again: %s",
                    item.id,
                    type(exc).__name__,
                    extra={"action": "inbound_conflict", "inbound_id": item.id},
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _done(
        self, session: Session, item: InboundItem, ticket_id: int | None, *, claim_next: bool
    ) -> InboundItem | None:
        """Mark the row done (only while our claim holds) and claim the next one."""
        if not inbox.mark_done(
            session, item.id, ticket_id=ticket_id, claim=item.attempts, clock=self.clock
        ):
            raise ClaimLostError(f"inbound {item.id} was claimed again by another worker")
        if not claim_next:
            return None
        return inbox.claim_in(session.connection(), clock=self.clock)

    def _failed(self, item: InboundItem, exc: BaseException, *, transient: bool) -> Processed:
        error = _describe(exc)
        retry = transient and item.attempts < self.settings.inbox.max_attempts
        extra = {"inbound_id": item.id, "attempts": item.attempts, "error": type(exc).__name__}
        try:
            if retry:
                delay = timedelta(
                    seconds=self.settings.inbox.retry_seconds * 2 ** (item.attempts - 1)
                )
                with self.writing:
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
            with self.writing:
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


class Worker:
    """One pipeline worker (one thread): holds the row it claimed ahead.

    ``step`` processes the held row, or claims one, and claims the next in
    the same commit. ``release`` gives the held row back when the worker stops.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.held: InboundItem | None = None

    def step(self, *, claim_next: bool = True) -> Processed | None:
        """Process one row; None when nothing was ready."""
        item, self.held = self.held, None
        if item is None:
            item = self.pipeline.claim()
            if item is None:
                return None
        result, self.held = self.pipeline.process_chained(item, claim_next=claim_next)
        return result

    def release(self) -> None:
        """Give back the row claimed ahead, without spending one of its attempts."""
        item, self.held = self.held, None
        if item is None:
            return
        try:
            with self.pipeline.writing:
                inbox.release(self.pipeline.db, item)
        except TransientError:
            # The database is away: recovery takes the claim back at the next start.
            log.warning(
                "inbound %d could not be given back",
                item.id,
                exc_info=True,
                extra={"action": "inbound_release_error", "inbound_id": item.id},
            )


class _Threads:
    """``workers`` threads draining the inbox for ``Pipeline.drain``."""

    def __init__(self, pipeline: Pipeline, workers: int) -> None:
        self.stop = threading.Event()
        self.out: queue.SimpleQueue[Processed | BaseException | None] = queue.SimpleQueue()
        self.threads = [
            threading.Thread(
                target=self._run, args=(pipeline.worker(),), name=f"pipeline-{n}", daemon=True
            )
            for n in range(workers)
        ]

    def _run(self, worker: Worker) -> None:
        try:
            while not self.stop.is_set():
                result = worker.step(claim_next=not self.stop.is_set())
                if result is None:
                    break  # nothing ready: whatever follows is another thread's
                self.out.put(result)
        except BaseException as exc:  # handed to the caller's thread
            self.out.put(exc)
        finally:
            try:
                worker.release()
            finally:
                self.out.put(None)

    def results(self) -> Iterator[Processed]:
        for thread in self.threads:
            thread.start()
        running = len(self.threads)
        try:
            while running:
                got = self.out.get()
                if got is None:
                    running -= 1
                elif isinstance(got, BaseException):
                    raise got
                else:
                    yield got
        finally:
            self.stop.set()
            for thread in self.threads:
                thread.join()


def _lost_race(exc: BaseException) -> bool:
    """Did this transaction fail because a concurrent one got there first?"""
    seen: BaseException | None = exc
    for _ in range(6):  # the error, SQLAlchemy's wrapper, the driver's error
        if seen is None:
            return False
        for candidate in (seen, getattr(seen, "orig", None)):
            if getattr(candidate, "sqlstate", None) in CONFLICT_SQLSTATES:
                return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(exc: BaseException) -> str:
    """Type, message and a short traceback, for the row's ``last_error``."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=8)
    text = "".join(lines)
    return f"{type(exc).__name__}: {exc}\n{text}"
