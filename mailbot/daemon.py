"""The composition root: builds everything from Settings and runs it.

One asyncio process: the SMTP and LMTP listeners and the pipeline worker.
On SIGTERM or SIGINT it stops intake first, lets the worker finish the message
in hand, and returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from datetime import timedelta

from mailbot.config import Settings
from mailbot.errors import TransientError
from mailbot.ingest.smtp import InboxHandler, serve
from mailbot.process import Pipeline
from mailbot.store import inbox, schema
from mailbot.store.db import Database

log = logging.getLogger(__name__)

#: Longest pause between tries when the database is unreachable.
MAX_BACKOFF_SECONDS = 30.0


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.effective_database_url)
        self.pipeline = Pipeline(self.db, settings)
        self.stopping = asyncio.Event()
        self.wake = asyncio.Event()
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

    async def work(self) -> None:
        """Process the inbox until asked to stop; a message in hand is finished."""
        backoff = 1.0
        lease = self.settings.inbox.lease_seconds
        last_recovery = time.monotonic()
        while not self.stopping.is_set():
            try:
                result = await asyncio.to_thread(self.pipeline.process_next)
                if self.db.is_postgres and time.monotonic() - last_recovery > lease / 2:
                    await asyncio.to_thread(self.recover)
                    last_recovery = time.monotonic()
                backoff = 1.0
            except TransientError as exc:
                log.warning(
                    "worker waiting %.0fs: %s",
                    backoff,
                    exc,
                    extra={"action": "worker_backoff", "error": type(exc).__name__},
                )
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            if result is None:
                self.wake.clear()
                await self._sleep(self.settings.inbox.poll_seconds, wakeable=True)

    async def _sleep(self, seconds: float, *, wakeable: bool = False) -> None:
        waits = [asyncio.ensure_future(self.stopping.wait())]
        if wakeable:
            waits.append(asyncio.ensure_future(self.wake.wait()))
        _, pending = await asyncio.wait(waits, timeout=seconds, return_when="FIRST_COMPLETED")
        for task in pending:
            task.cancel()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await asyncio.to_thread(schema.check_schema, self.db)
        await asyncio.to_thread(self.recover)
        worker = asyncio.create_task(self.work(), name="pipeline-worker")
        try:
            await self.start_listeners()
            log.info(
                "mailbot running: database %s",
                self.db.display_url,
                extra={"action": "daemon_started"},
            )
            stop = asyncio.ensure_future(self.stopping.wait())
            await asyncio.wait([stop, worker], return_when="FIRST_COMPLETED")
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
            await worker
            self.db.close()
            log.info("stopped", extra={"action": "daemon_stopped"})
        return 0


def run(settings: Settings) -> int:
    return asyncio.run(Daemon(settings).run())
