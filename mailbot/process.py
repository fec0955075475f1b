"""One inbound mail, one transaction: the pipeline.

``Pipeline.process_next`` claims a row from the inbox, parses and classifies
it, and then, in one transaction, applies it to the tickets
(``conversation``), queues any automatic answer (``notify``, the outbox) and
marks the row ``done``. This is the only place in the processing path that
catches every exception: a mail that raises anything (``RecursionError`` and
``LookupError`` included) is quarantined with its error and the worker goes on.

Several workers (``inbox.workers``: threads of one process, ``Worker``) share
one ``Pipeline``. A worker claims its next row in the transaction that
completes the current one (one transaction per mail). With parser children
(``parse.processes``, ``parsepool``) a worker keeps two rows claimed ahead: as
soon as it has the parse of the current mail, it hands the next one to a
child, which parses it while the worker stores the current one. The inbox's
claim keeps each sender's and each thread's mail in order, so workers never
race on one conversation. On SQLite, where one writer at a time holds the
database, every writer of the process (workers, listeners, jobs) queues on
the ``Database``'s lock; parsing and classifying happen outside the
transaction and overlap with another thread's writes. On
PostgreSQL their transactions run side by side; when two of them still meet
on a row (a unique key, a deadlock), the later one is tried again at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import traceback
from collections import deque
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
from mailbot.parsepool import ParsePool, Parsing
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
class Chained:
    """What a mail's commit did for the worker's next steps."""

    #: Rows claimed ahead in the commit (the first counted when nothing was held).
    claimed: list[InboundItem]
    #: The held row that comes next, its attempt now counted; None when its
    #: claim was lost. When the mail failed: the held row as it was.
    promoted: InboundItem | None


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
        processes = settings.parse.processes
        self.parsing = (
            ParsePool(processes, self.limits, timeout=settings.parse.timeout_seconds)
            if processes
            else None
        )
        #: Rows a worker keeps claimed ahead: the next mail's parse overlaps this one.
        self.read_ahead = 2 if self.parsing else 1
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

    def start(self, *, wait: bool = False) -> None:
        """Start the parser children ahead of the first mail (``wait``: until loaded)."""
        if self.parsing is not None:
            self.parsing.start(wait=wait)

    def close(self) -> None:
        """Stop the parser children (the daemon and ``mailbot ingest`` call it on the way out)."""
        if self.parsing is not None:
            self.parsing.close()

    def start_parsing(self, item: InboundItem) -> Parsing | None:
        """Hand a claimed row to a parser child; None when parsing is done in-process."""
        return self.parsing.submit(item.raw) if self.parsing is not None else None

    def claim(self) -> InboundItem | None:
        """Claim the next ready row of the inbox, or None."""
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
        while it holds the interpreter (the parser children already use the
        second core). Closing the
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
        return self.process_chained(item, claim_next=0, parsing=self.start_parsing(item))[0]

    def charge(self, item: InboundItem) -> InboundItem | None:
        """Count the attempt of a row claimed ahead, on its own; None when the claim is lost."""
        with self.db.begin() as conn:
            return inbox.charge(conn, item, clock=self.clock)

    def process_chained(
        self,
        item: InboundItem,
        *,
        claim_next: int,
        parsing: Parsing | None = None,
        parsed: Callable[[], None] = lambda: None,
        promote: InboundItem | None = None,
    ) -> tuple[Processed, Chained]:
        """Process ``item``; in its commit, move ``promote`` up and claim more rows.

        ``promote`` is the row claimed ahead that comes next: its attempt is
        counted in this commit (``inbox.charge``). Up to ``claim_next`` more
        rows are claimed ahead, uncounted, or counted when nothing is held
        (the first is then next). When this mail fails nothing is claimed and
        ``promote`` comes back as it was. ``parsing`` is the item's parse under
        way in a child; ``parsed`` is called once the mail is parsed, before
        it is stored.
        """
        unchanged = Chained([], promote)
        try:
            stored, chained = self._handle(
                item, claim_next=claim_next, parsing=parsing, parsed=parsed, promote=promote
            )
        except ClaimLostError as exc:
            log.warning(
                "inbound %d dropped: %s",
                item.id,
                exc,
                extra={"action": "inbound_claim_lost", "inbound_id": item.id},
            )
            return Processed(item.id, "claim-lost", error=str(exc)), unchanged
        except TransientError as exc:
            return self._failed(item, exc, transient=True), unchanged
        except Exception as exc:  # the per-message boundary: quarantine, go on
            return self._failed(item, exc, transient=False), unchanged
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
        return Processed(item.id, stored.outcome, stored.ticket_number), chained

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

    def _handle(
        self,
        item: InboundItem,
        *,
        claim_next: int,
        parsing: Parsing | None,
        parsed: Callable[[], None],
        promote: InboundItem | None,
    ) -> tuple[Applied, Chained]:
        # Parsing and classifying need no database: outside the transaction.
        msg = parsing.result() if parsing is not None else parser.parse(item.raw, self.limits)
        parsed()
        klass = self.classify(msg, item)
        if klass.mail_class is MailClass.loop:
            # Our own mail came back: store nothing, answer nothing (B-21).
            with self.db.transaction() as session:
                chained = self._done(session, item, None, claim_next, promote)
            log.info(
                "inbound %d ignored: %s",
                item.id,
                "; ".join(klass.reasons),
                extra={"action": "inbound_loop_ignored", "inbound_id": item.id},
            )
            return Applied("ignored-loop", None, None), chained
        # Blobs go to disk before the transaction: a crash in between leaves
        # an orphan file (removed by housekeeping), never a row without its file.
        keys = [self.blobs.put(a.payload) for a in msg.attachments]
        for attempt in range(1, CONFLICT_TRIES + 1):
            try:
                with self.db.transaction() as session:
                    applied = self.conversation.apply(session, item, msg, klass, keys)
                    chained = self._done(session, item, applied.ticket_id, claim_next, promote)
                return applied, chained
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
        self,
        session: Session,
        item: InboundItem,
        ticket_id: int | None,
        claim_next: int,
        promote: InboundItem | None,
    ) -> Chained:
        """Mark the row done (only while our claim holds); move up and claim what follows."""
        if not inbox.mark_done(
            session, item.id, ticket_id=ticket_id, claim=item.attempts, clock=self.clock
        ):
            raise ClaimLostError(f"inbound {item.id} was claimed again by another worker")
        conn = session.connection()
        promoted = inbox.charge(conn, promote, clock=self.clock) if promote else None
        claimed: list[InboundItem] = []
        while len(claimed) < claim_next:
            next_up = promote is None and not claimed
            following = inbox.claim_in(conn, clock=self.clock, charge=next_up)
            if following is None:
                break
            claimed.append(following)
        return Chained(claimed, promoted)

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


class Worker:
    """One pipeline worker (one thread): holds the rows it claimed ahead.

    ``step`` processes the first held row, or claims one, and in the same
    commit claims more, up to ``Pipeline.read_ahead`` held. With parser
    children, the next held row goes to a child as soon as the current one is
    parsed (one parse of this worker under way at a time). ``release`` gives
    the held rows back when the worker stops.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.holding: deque[tuple[InboundItem, Parsing | None]] = deque()

    @property
    def held(self) -> InboundItem | None:
        """The row this worker will process next, if it holds one."""
        return self.holding[0][0] if self.holding else None

    def step(self, *, claim_next: bool = True) -> Processed | None:
        """Process one row; None when nothing was ready."""
        if not self.holding:
            item = self.pipeline.claim()
            if item is None:
                return None
            self.holding.append((item, None))
        item, parsing = self.holding.popleft()
        if not item.charged:
            # Held, but the mail before it failed, so its commit did not count
            # this row's attempt: count it now, on its own.
            charged = self.pipeline.charge(item)
            if charged is None:
                return self._lost(item, parsing)
            item = charged
        if parsing is None:
            parsing = self.pipeline.start_parsing(item)
        ahead = self.pipeline.read_ahead - len(self.holding) if claim_next else 0
        promote = self.holding[0][0] if self.holding else None
        result, chained = self.pipeline.process_chained(
            item,
            claim_next=max(ahead, 0),
            parsing=parsing,
            parsed=self._parse_next,
            promote=promote,
        )
        if promote is not None:
            _, next_parsing = self.holding.popleft()
            if chained.promoted is None:
                self._lost(promote, next_parsing)
            else:
                self.holding.appendleft((chained.promoted, next_parsing))
        self.holding.extend((row, None) for row in chained.claimed)
        return result

    def _lost(self, item: InboundItem, parsing: Parsing | None) -> Processed:
        """A held row another worker took back (its lease ran out): drop it."""
        if parsing is not None:
            parsing.cancel()
        log.warning(
            "inbound %d dropped: claimed again by another worker",
            item.id,
            extra={"action": "inbound_claim_lost", "inbound_id": item.id},
        )
        return Processed(item.id, "claim-lost", error="claimed again by another worker")

    def _parse_next(self) -> None:
        if self.holding and self.holding[0][1] is None:
            item = self.holding[0][0]
            self.holding[0] = (item, self.pipeline.start_parsing(item))

    def release(self) -> None:
        """Give back the rows claimed ahead, without spending one of their attempts."""
        while self.holding:
            item, parsing = self.holding.popleft()
            if parsing is not None:
                parsing.cancel()
            try:
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
