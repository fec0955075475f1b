"""The composition root: builds everything from Settings and runs it.

One asyncio process: the SMTP and LMTP listeners, the pipeline workers
(``inbox.workers`` threads) and the outbox sender.
On SIGTERM or SIGINT it stops intake first, lets each worker finish the message
in hand, and returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Callable
from datetime import timedelta

from mailbot.config import Settings
from mailbot.errors import TransientError
from mailbot.ingest import imap
from mailbot.ingest.smtp import InboxHandler, serve
from mailbot.process import Pipeline, Worker
from mailbot.scheduler import JobScheduler, build_jobs
from mailbot.sender import Sender, make_transport
from mailbot.store import inbox, keyfile, outbox, schema
from mailbot.store.db import Database
from mailbot.web import server as web_server
from mailbot.web.app import create_app

log = logging.getLogger(__name__)

#: How often the worker looks whether the rules file changed.
RULES_CHECK_SECONDS = 2.0

#: Most mails a pipeline worker processes per trip to its thread.
PIPELINE_BATCH = 100
#: Longest pause between tries when the database is unreachable.
MAX_BACKOFF_SECONDS = 30.0


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.effective_database_url)
        self.pipeline = Pipeline(self.db, settings)
        self.sender = Sender(
            self.db,
            make_transport(settings.outgoing, settings.outgoing_maildir),
            retry_period=timedelta(hours=settings.outgoing.retry_hours),
            first_retry=timedelta(seconds=settings.outgoing.retry_first_seconds),
        )
        self.lease = settings.inbox.lease_seconds
        self.last_recovery = self.last_outbox_recovery = time.monotonic()
        self.last_rules_check = time.monotonic()
        self.stopping = asyncio.Event()
        self.wake = asyncio.Event()
        self.wake_sender = asyncio.Event()
        self.servers: list[asyncio.Server] = []

    def recover(self) -> None:
        """Take back claims of a previous run that died.

        SQLite serves one daemon, so at its start every claim is dead; on
        PostgreSQL other hosts may be working, so only claims older than the
        lease are taken back.
        """
        lease = (
            None
            if not self.db.is_postgres
            else timedelta(seconds=self.settings.inbox.lease_seconds)
        )
        inbox.recover_stale(self.db, lease=lease, max_attempts=self.settings.inbox.max_attempts)
        outbox.recover_stale(self.db, lease=lease)
        self.last_recovery = time.monotonic()

    async def start_listeners(self) -> None:
        handler = InboxHandler(
            self.db,
            self.settings.our_addresses,
            max_recipients=self.settings.smtp.max_recipients,
            on_accepted=self.wake.set,
        )
        smtp, lmtp = self.settings.smtp, self.settings.lmtp
        if smtp.enabled:
            self.servers.append(
                await serve(
                    handler,
                    host=smtp.host,
                    port=smtp.port,
                    max_message_size=smtp.max_message_size,
                    hostname=smtp.hostname,
                    idle_timeout=smtp.timeout,
                )
            )
        if lmtp.enabled:
            self.servers.append(
                await serve(
                    handler,
                    host=lmtp.host,
                    port=lmtp.port,
                    lmtp=True,
                    max_message_size=smtp.max_message_size,
                    hostname=smtp.hostname,
                    idle_timeout=smtp.timeout,
                )
            )

    def process_step(self, worker: Worker) -> object | None:
        if time.monotonic() - self.last_rules_check > RULES_CHECK_SECONDS:
            self.last_rules_check = time.monotonic()
            if self.pipeline.rules.changed():
                self.pipeline.rules.reload("file changed")
        # Once stopping, claim nothing ahead: the mail in hand is the last one.
        result = worker.step(claim_next=not self.stopping.is_set())
        if self.db.is_postgres and time.monotonic() - self.last_recovery > self.lease / 2:
            self.last_recovery = time.monotonic()
            self.recover()
        return result

    def process_run(self, worker: Worker) -> object | None:
        """Steps in a row, in one trip to a thread, while mail is ready (at most a batch).

        One ``to_thread`` per mail sent each step through the event loop and the
        default executor's queue, behind the listeners' commits: under a burst
        the workers waited there more than they worked.
        """
        result = None
        for _ in range(PIPELINE_BATCH):
            step = self.process_step(worker)
            if step is None:
                break
            result = step
            if self.stopping.is_set():
                break
        return result

    async def run_pipeline(self) -> None:
        """The pipeline workers: ``inbox.workers`` loops, each running its steps in a thread.

        A worker that crashes stops the others (and the daemon); each gives back
        the row it claimed ahead before the task ends.
        """

        async def one(name: str, worker: Worker) -> None:
            try:
                await self.loop(name, lambda: self.process_run(worker), self.wake)
            except BaseException:
                self.stopping.set()
                raise
            finally:
                await asyncio.to_thread(worker.release)

        count = self.settings.inbox.workers
        results = await asyncio.gather(
            *(
                one(f"pipeline-{n}" if count > 1 else "pipeline", self.pipeline.worker())
                for n in range(count)
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def send_step(self) -> object | None:
        if time.monotonic() - self.last_outbox_recovery > self.lease / 2:
            outbox.recover_stale(self.db, lease=timedelta(seconds=self.lease))
            self.last_outbox_recovery = time.monotonic()
        return self.sender.deliver_next()

    async def loop(self, name: str, step: Callable[[], object | None], wake: asyncio.Event) -> None:
        """Run ``step`` in a thread until asked to stop; the item in hand is finished.

        A None result means nothing was due: sleep until woken or the poll
        interval passes. A TransientError (the database is away) backs off.
        """
        backoff = 1.0
        while not self.stopping.is_set():
            # Cleared before the step, not after it: mail accepted while the step
            # found nothing still wakes the sleep below.
            wake.clear()
            try:
                result = await asyncio.to_thread(step)
                backoff = 1.0
            except TransientError as exc:
                log.warning(
                    "%s waiting %.0fs: %s",
                    name,
                    backoff,
                    exc,
                    extra={"action": "worker_backoff", "worker": name, "error": type(exc).__name__},
                )
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            if result is None:
                await self._sleep(self.settings.inbox.poll_seconds, wake=wake)

    async def _sleep(self, seconds: float, *, wake: asyncio.Event | None = None) -> None:
        waits = [asyncio.ensure_future(self.stopping.wait())]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        _, pending = await asyncio.wait(waits, timeout=seconds, return_when="FIRST_COMPLETED")
        for task in pending:
            task.cancel()

    def start_web(self, workers: list[asyncio.Task[None]]) -> asyncio.Task[None] | None:
        """The read-only web page on its own read-only engine (docs/web.md); not a worker:
        a web page that cannot start is logged and leaves mail intake running."""
        web = self.settings.web
        if not web.enabled:
            return None
        read_db = Database(self.settings.effective_database_url, read_only=True)
        names = ["pipeline", "sender", *(f"imap:{m.name}" for m in self.settings.imap)]
        app = create_app(
            self.settings,
            read_db,
            keyfile.load_or_create(self.settings.secret_key_path),
            workers=lambda: {n: not w.done() for n, w in zip(names, workers, strict=False)},
        )

        async def serve() -> None:
            try:
                await web_server.serve(app, web.host, web.port, self.stopping)
            finally:
                read_db.close()

        return asyncio.create_task(serve())

    def start_scheduler(self) -> JobScheduler | None:
        """The scheduled jobs (docs/jobs.md) on APScheduler's background thread."""
        if not self.settings.jobs.enabled:
            return None
        scheduler = JobScheduler(
            build_jobs(self.db, self.pipeline), self.settings.jobs.interval_seconds
        )
        scheduler.start()
        return scheduler

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.pipeline.rules.reload, "SIGHUP")
        await asyncio.to_thread(schema.check_schema, self.db)
        await asyncio.to_thread(self.recover)
        await asyncio.to_thread(self.pipeline.sync_people)
        # Before the workers claim anything: a worker that claimed mail and then
        # waited for a child to load would hold it through a kill in that time.
        await asyncio.to_thread(functools.partial(self.pipeline.start, wait=True))
        workers = [
            asyncio.create_task(self.run_pipeline()),
            asyncio.create_task(self.loop("sender", self.send_step, self.wake_sender)),
        ]
        web_task = self.start_web(workers)
        scheduler = self.start_scheduler()
        holder = imap.thread_holder()
        for mailbox in self.settings.imap:  # one poller thread per [[imap]] mailbox
            poller = imap.MailboxPoller(
                self.db,
                mailbox,
                on_accepted=lambda: loop.call_soon_threadsafe(self.wake.set),
                holder=f"{holder}:{mailbox.name}",
            )
            workers.append(asyncio.create_task(imap.serve(poller, self.stopping)))
        try:
            await self.start_listeners()
            log.info(
                "mailbot running: database %s",
                self.db.display_url,
                extra={"action": "daemon_started"},
            )
            stop = asyncio.ensure_future(self.stopping.wait())
            await asyncio.wait([stop, *workers], return_when="FIRST_COMPLETED")
            for worker in workers:
                if worker.done():
                    worker.result()  # a crashed worker stops the daemon, loudly
        finally:
            self.stopping.set()
            log.info("stopping: intake closed", extra={"action": "daemon_stopping"})
            for server in self.servers:
                server.close()
            for server in self.servers:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), timeout=5)
            await asyncio.gather(*workers)
            if scheduler is not None:
                await asyncio.to_thread(scheduler.shutdown)
            if web_task is not None:
                await web_task
            await asyncio.to_thread(self.pipeline.close)
            self.db.close()
            log.info("stopped", extra={"action": "daemon_stopped"})
        return 0


def run(settings: Settings) -> int:
    return asyncio.run(Daemon(settings).run())
