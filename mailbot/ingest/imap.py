"""IMAP intake: one poller per configured mailbox, each in its own thread.

imapclient is blocking, so every poller runs in a dedicated thread and the
event loop only waits for it (``serve``). The only module that imports
imapclient (an import-linter contract); ``imap_check`` borrows its helpers.

The order that keeps invariants 1 and 2 (STYLE.md "IMAP ordering"):

1. ``UID SEARCH`` above the folder's cursor ``(UIDVALIDITY, last UID)``;
2. ``UID FETCH RFC822.SIZE``: larger than ``max_message_size`` is never
   downloaded (a notice goes to the inbox, the mail to ``oversize_folder``);
3. ``UID FETCH BODY.PEEK[]`` (no implicit ``\\Seen``) and ``inbox.accept``,
   which commits;
4. only then ``UID MOVE`` to ``processed_folder`` (or a flag), then the cursor.

A crash anywhere re-downloads at most one batch, and the inbox's dedupe
(Message-ID, else sha256) swallows it. A UIDVALIDITY change resets the cursor
to 0: the folder is read again and dedupe keeps it from doubling anything.
A lease per mailbox in the database keeps two daemons on one PostgreSQL from
reading one mailbox at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from mailbot.config import ImapMailboxSettings, imap_password
from mailbot.errors import ConfigError, TransientError
from mailbot.ingest.imap_notice import oversize_notice
from mailbot.store import imap_state, inbox
from mailbot.store.db import Database

log = logging.getLogger(__name__)

#: Failures after which a poller disconnects, waits and reconnects: never a crash.
#: IMAPClientError covers NO/BAD answers, aborts, protocol and login errors;
#: OSError covers refused connections, drops, timeouts and TLS failures.
RETRYABLE: tuple[type[BaseException], ...] = (IMAPClientError, OSError, TransientError, ConfigError)

#: Shortest wait between reconnection attempts; doubles up to ``retry_max_seconds``.
FIRST_BACKOFF_SECONDS = 1.0

#: How often a blocked wait (IDLE, poll interval, backoff) looks at the stop flag.
TICK_SECONDS = 0.5

DELETED = b"\\Deleted"


class LeaseLostError(Exception):
    """Another poller took this mailbox's lease: stop reading it and wait."""


def connect(mailbox: ImapMailboxSettings, password: str) -> IMAPClient:
    """A logged-in client; TLS certificates are always checked (B-50).

    ``tls = "starttls"`` fails when the server does not offer STARTTLS: there
    is no plaintext fallback. ``ca_file`` adds a CA or a self-signed
    certificate to the trusted ones for this mailbox only.
    """
    context = ssl.create_default_context(cafile=mailbox.ca_file or None)
    client = IMAPClient(
        mailbox.host,
        port=mailbox.port,
        ssl=mailbox.tls == "tls",
        ssl_context=context if mailbox.tls == "tls" else None,
        timeout=mailbox.timeout,
    )
    try:
        if mailbox.tls == "starttls":
            client.starttls(context)
        client.login(mailbox.username, password)
    except BaseException:
        with contextlib.suppress(Exception):
            client.shutdown()
        raise
    return client


def describe(exc: BaseException, mailbox: ImapMailboxSettings) -> tuple[str, str]:
    """(action, operator-facing explanation) of a failure; never holds the password."""
    where = f"{mailbox.host}:{mailbox.port}"
    if isinstance(exc, LoginError):
        return "imap_login_failed", (
            f"login refused for {mailbox.username!r} at {where} ({exc}); check the password"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "imap_tls_failed", (
            f"TLS certificate of {where} not trusted ({exc.verify_message}); "
            "set ca_file to trust a private CA or self-signed certificate"
        )
    if isinstance(exc, ConfigError):
        return "imap_config_error", str(exc)
    if isinstance(exc, TransientError):
        return "imap_db_unavailable", str(exc)
    return "imap_retry", f"{type(exc).__name__}: {exc} ({where})"


def size_of(item: dict[bytes, Any]) -> int:
    return int(item[b"RFC822.SIZE"])


class MailboxPoller:
    """Reads one mailbox until ``stop()``: sync every folder, then IDLE or sleep."""

    def __init__(
        self,
        db: Database,
        mailbox: ImapMailboxSettings,
        *,
        on_accepted: Callable[[], object] = lambda: None,
        holder: str = "",
        password: Callable[[], str] | None = None,
    ) -> None:
        self.db = db
        self.mailbox = mailbox
        self.source = f"imap:{mailbox.name}"
        self.lease_name = f"imap:{mailbox.name}"
        self.holder = holder or thread_holder()
        self.on_accepted = on_accepted
        self._password = password or (lambda: imap_password(mailbox))
        self.stopping = threading.Event()
        self.client: IMAPClient | None = None
        self.backoff = FIRST_BACKOFF_SECONDS
        self.has_lease = False
        self.lease_checked = 0.0
        self.accepted = 0
        self.failures = 0

    def stop(self) -> None:
        self.stopping.set()

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        """Until stopped: hold the lease, connect, read; every failure waits and retries."""
        if not self.db.is_postgres:
            # SQLite serves one daemon: a lease found at start is a dead run's (as in
            # Daemon.recover), so a restart after a crash need not wait for it to expire.
            with contextlib.suppress(TransientError):
                imap_state.clear_lease(self.db, self.lease_name)
        try:
            while not self.stopping.is_set():
                try:
                    if not self.keep_lease():
                        self.wait(self.mailbox.lease_seconds / 3)
                        continue
                    self.client = connect(self.mailbox, self._password())
                    log.info(
                        "imap %s: connected to %s:%d",
                        self.mailbox.name,
                        self.mailbox.host,
                        self.mailbox.port,
                        extra={"action": "imap_connected", "mailbox": self.mailbox.name},
                    )
                    self.prepare_folders()
                    self.serve()
                except LeaseLostError:
                    self.disconnect()
                except RETRYABLE as exc:
                    self.failures += 1
                    action, text = describe(exc, self.mailbox)
                    log.warning(
                        "imap %s: %s; retrying in %.1fs",
                        self.mailbox.name,
                        text,
                        self.backoff,
                        extra={
                            "action": action,
                            "mailbox": self.mailbox.name,
                            "error": type(exc).__name__,
                        },
                    )
                    self.disconnect()
                    self.wait(self.backoff)
                    self.backoff = min(self.backoff * 2, self.mailbox.retry_max_seconds)
        finally:
            self.disconnect()
            if self.has_lease:
                with contextlib.suppress(TransientError):
                    imap_state.release_lease(self.db, self.lease_name, self.holder)
            log.info(
                "imap %s: stopped",
                self.mailbox.name,
                extra={"action": "imap_stopped", "mailbox": self.mailbox.name},
            )

    def serve(self) -> None:
        while not self.stopping.is_set():
            taken = sum(self.sync_folder(folder) for folder in self.mailbox.folders)
            self.backoff = FIRST_BACKOFF_SECONDS
            if self.stopping.is_set():
                return
            if taken:
                # news of mail that came meanwhile may have arrived with MOVE's answer,
                # which IDLE would not repeat: look again until a pass finds nothing
                continue
            if self.mailbox.idle and b"IDLE" in self.conn.capabilities():
                many = len(self.mailbox.folders) > 1
                self.idle(self.mailbox.poll_seconds if many else self.mailbox.idle_seconds)
            else:
                self.wait(self.mailbox.poll_seconds)
                self.conn.noop()

    @property
    def conn(self) -> IMAPClient:
        if self.client is None:
            raise IMAPClientAbortError("not connected")
        return self.client

    def disconnect(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.shutdown()

    # -- the lease ---------------------------------------------------------------------

    def keep_lease(self) -> bool:
        """Take or renew the lease, at most every third of its length; False if another has it."""
        now = time.monotonic()
        if self.has_lease and now - self.lease_checked < self.mailbox.lease_seconds / 3:
            return True
        held = imap_state.acquire_lease(
            self.db, self.lease_name, self.holder, self.mailbox.lease_seconds
        )
        self.lease_checked = now
        if held != self.has_lease:
            log.info(
                "imap %s: lease %s by %s",
                self.mailbox.name,
                "taken" if held else "held elsewhere, not",
                self.holder,
                extra={
                    "action": "imap_lease_taken" if held else "imap_lease_busy",
                    "mailbox": self.mailbox.name,
                },
            )
        self.has_lease = held
        return held

    def require_lease(self) -> None:
        if not self.keep_lease():
            raise LeaseLostError(self.lease_name)

    def wait(self, seconds: float) -> None:
        """Sleep until ``seconds`` pass or ``stop()``, renewing the lease meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.stopping.wait(min(remaining, TICK_SECONDS))
            if self.has_lease:
                with contextlib.suppress(TransientError):
                    self.keep_lease()

    # -- folders -----------------------------------------------------------------------

    def prepare_folders(self) -> None:
        targets = [self.mailbox.oversize_folder]
        if self.mailbox.processed_action == "move":
            targets.append(self.mailbox.processed_folder)
        for target in targets:
            if not self.conn.folder_exists(target):
                with contextlib.suppress(IMAPClientError):  # created meanwhile by another client
                    self.conn.create_folder(target)
                log.info(
                    "imap %s: created folder %s",
                    self.mailbox.name,
                    target,
                    extra={"action": "imap_folder_created", "mailbox": self.mailbox.name},
                )

    def sync_folder(self, folder: str) -> int:
        """Take every mail above the cursor of ``folder``, in UID order; return how many."""
        self.require_lease()
        info = self.conn.select_folder(folder)
        uidvalidity = int(info[b"UIDVALIDITY"])
        cursor = imap_state.get_cursor(self.db, self.mailbox.name, folder)
        last_uid = 0
        if cursor is not None and cursor.uidvalidity == uidvalidity:
            last_uid = cursor.last_uid
        elif cursor is not None:
            log.warning(
                "imap %s: UIDVALIDITY of %s changed from %d to %d; reading it again",
                self.mailbox.name,
                folder,
                cursor.uidvalidity,
                uidvalidity,
                extra={"action": "imap_uidvalidity_changed", "mailbox": self.mailbox.name},
            )
        uids = sorted(u for u in self.conn.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid)
        if not uids and (cursor is None or cursor.uidvalidity != uidvalidity):
            imap_state.save_cursor(
                self.db, self.mailbox.name, folder, imap_state.Cursor(uidvalidity, last_uid)
            )
        size = self.mailbox.batch_size
        for start in range(0, len(uids), size):
            if self.stopping.is_set():
                break
            self.require_lease()
            self.take_batch(folder, uidvalidity, uids[start : start + size])
        return len(uids)

    def fetch_sizes(self, uids: Sequence[int]) -> dict[int, dict[bytes, Any]]:
        """``RFC822.SIZE`` of each UID that still exists (a seam for the expunge test)."""
        return dict(self.conn.fetch(uids, ["RFC822.SIZE"]))

    def fetch_bodies(self, uids: Sequence[int]) -> dict[int, dict[bytes, Any]]:
        """``BODY.PEEK[]`` of each UID still there; a NO (expunged meanwhile) asks again."""
        if not uids:
            return {}
        try:
            return dict(self.conn.fetch(uids, ["BODY.PEEK[]"]))
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            log.info(
                "imap %s: FETCH refused (%s); fetching what is left",
                self.mailbox.name,
                exc,
                extra={"action": "imap_fetch_refused", "mailbox": self.mailbox.name},
            )
            self.conn.noop()
            present = set(self.conn.search(["UID", ",".join(str(u) for u in uids)]))
            left = [u for u in uids if u in present]
            return dict(self.conn.fetch(left, ["BODY.PEEK[]"])) if left else {}

    def take_batch(self, folder: str, uidvalidity: int, uids: Sequence[int]) -> None:
        sizes = self.fetch_sizes(uids)
        limit = self.mailbox.max_message_size
        small = [u for u in uids if u in sizes and size_of(sizes[u]) <= limit]
        large = [u for u in uids if u in sizes and size_of(sizes[u]) > limit]
        bodies = self.fetch_bodies(small)
        taken: list[int] = []
        for uid in small:
            raw = bodies.get(uid, {}).get(b"BODY[]")
            if raw is None:
                continue
            self.accept(bytes(raw), uid)
            taken.append(uid)
        oversized = self.take_oversized(folder, uidvalidity, large, sizes)
        vanished = [u for u in uids if u not in taken and u not in oversized]
        if vanished:
            log.info(
                "imap %s: %d mail(s) in %s expunged by another client before FETCH: %s",
                self.mailbox.name,
                len(vanished),
                folder,
                vanished,
                extra={"action": "imap_vanished", "mailbox": self.mailbox.name},
            )
        self.mark_processed(taken)
        if oversized:
            self.move(oversized, self.mailbox.oversize_folder)
        imap_state.save_cursor(
            self.db, self.mailbox.name, folder, imap_state.Cursor(uidvalidity, uids[-1])
        )

    def accept(self, raw: bytes, uid: int, *, source: str = "") -> None:
        accepted = inbox.accept(self.db, raw, source=source or self.source)
        self.accepted += not accepted.duplicate
        log.info(
            "accepted inbound %d from %s uid %d%s",
            accepted.inbound_id,
            source or self.source,
            uid,
            " (duplicate)" if accepted.duplicate else "",
            extra={
                "action": "inbound_duplicate" if accepted.duplicate else "inbound_accepted",
                "inbound_id": accepted.inbound_id,
                "source": source or self.source,
            },
        )
        if not accepted.duplicate:
            self.on_accepted()

    def take_oversized(
        self,
        folder: str,
        uidvalidity: int,
        uids: Sequence[int],
        sizes: dict[int, dict[bytes, Any]],
    ) -> list[int]:
        """Commit a notice for each too large mail (never downloaded); return those UIDs."""
        if not uids:
            return []
        envelopes = dict(self.conn.fetch(uids, ["ENVELOPE"]))
        done: list[int] = []
        for uid in uids:
            if uid not in envelopes:
                continue
            envelope = envelopes[uid].get(b"ENVELOPE")
            size = size_of(sizes[uid])
            log.warning(
                "imap %s: mail uid %d in %s is %d bytes (limit %d): left on the server in %s",
                self.mailbox.name,
                uid,
                folder,
                size,
                self.mailbox.max_message_size,
                self.mailbox.oversize_folder,
                extra={"action": "imap_oversize", "mailbox": self.mailbox.name, "size": size},
            )
            notice = oversize_notice(self.mailbox, folder, uidvalidity, uid, size, envelope)
            self.accept(notice, uid, source=f"{self.source}:oversize")
            done.append(uid)
        return done

    def mark_processed(self, uids: Sequence[int]) -> None:
        if not uids:
            return
        if self.mailbox.processed_action == "flag":
            self.conn.add_flags(uids, [self.mailbox.processed_flag])
        else:
            self.move(uids, self.mailbox.processed_folder)

    def move(self, uids: Sequence[int], target: str) -> None:
        """UID MOVE, or COPY + \\Deleted + UID EXPUNGE where MOVE is missing: after the commit."""
        capabilities = self.conn.capabilities()
        if b"MOVE" in capabilities:
            self.conn.move(uids, target)
            return
        self.conn.copy(uids, target)
        self.conn.add_flags(uids, [DELETED])
        if b"UIDPLUS" in capabilities:
            self.conn.uid_expunge(uids)
        else:
            self.conn.expunge()

    # -- waiting for news --------------------------------------------------------------

    def idle(self, seconds: float) -> None:
        """IDLE on the first folder until new mail, ``seconds`` or ``stop()``."""
        client = self.conn
        if len(self.mailbox.folders) > 1:
            client.select_folder(self.mailbox.folders[0])
        client.idle()
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set() and time.monotonic() < deadline:
            responses = client.idle_check(timeout=TICK_SECONDS)
            # anything but a keep-alive (new mail, EXPUNGE, BYE...) ends the IDLE: look again
            if any(r[:1] != (b"OK",) for r in responses):
                break
            self.require_lease()
        client.idle_done()


def thread_holder() -> str:
    """A lease holder name unique to this process: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def serve(poller: MailboxPoller, stopping: asyncio.Event) -> None:
    """Run ``poller`` in its own thread until ``stopping`` is set; re-raise if it crashed.

    A dedicated thread rather than ``asyncio.to_thread``: IDLE holds its
    thread for minutes and must not starve the default executor.
    """
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()

    def relay(exc: BaseException | None) -> None:
        if finished.done():
            return
        if exc is None:
            finished.set_result(None)
        else:
            finished.set_exception(exc)

    def target() -> None:
        try:
            poller.run()
        except BaseException as exc:  # handed to the event loop, which re-raises it
            loop.call_soon_threadsafe(relay, exc)
        else:
            loop.call_soon_threadsafe(relay, None)

    thread = threading.Thread(target=target, name=f"imap-{poller.mailbox.name}", daemon=True)
    thread.start()
    stop: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
    waits: list[asyncio.Future[Any]] = [finished, stop]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        poller.stop()
        stop.cancel()
    await finished
