"""Delivers the outbox: to an SMTP relay, or into a local Maildir when none is set.

The relay's answer decides: ``250`` marks the row sent (and it is never sent
again); a 4xx answer, a timeout or a connection error retries with backoff
until ``outgoing.retry_hours`` have passed; a 5xx answer marks it failed.
TLS, when configured, always verifies the certificate and never falls back
to plaintext.
"""

from __future__ import annotations

import logging
import mailbox
import smtplib
import ssl
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from mailbot.config import OutgoingSettings
from mailbot.store import outbox
from mailbot.store.db import Database
from mailbot.store.outbox import OutboundItem
from mailbot.store.types import utcnow

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Longest wait between two tries; the first is ``outgoing.retry_first_seconds``.
MAX_RETRY_DELAY = timedelta(hours=1)


class TemporaryDeliveryError(Exception):
    """The relay may take the mail later."""


class PermanentDeliveryError(Exception):
    """The relay refused the mail for good."""


class Transport(Protocol):
    """Where mail goes: ``RelayTransport`` or ``MaildirTransport``."""

    def send(self, item: OutboundItem) -> None: ...


class MaildirTransport:
    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, item: OutboundItem) -> None:
        box = mailbox.Maildir(self.path, factory=None, create=True)
        try:
            box.add(item.raw)
        except OSError as exc:
            raise TemporaryDeliveryError(f"Maildir {self.path}: {exc}") from exc


class RelayTransport:
    def __init__(self, settings: OutgoingSettings) -> None:
        self.settings = settings
        # Built once: loading the system's CA store costs tens of milliseconds.
        self.context = ssl.create_default_context() if settings.relay_tls != "none" else None
        self.password = (
            Path(settings.relay_password_file).read_text().strip()
            if settings.relay_password_file
            else ""
        )

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = self.context
        if s.relay_tls == "tls":
            return smtplib.SMTP_SSL(
                s.relay_host, s.relay_port, timeout=s.relay_timeout, context=context
            )
        client = smtplib.SMTP(s.relay_host, s.relay_port, timeout=s.relay_timeout)
        if s.relay_tls == "starttls":
            try:
                client.starttls(context=context)
            except BaseException:
                client.close()
                raise
        return client

    def send(self, item: OutboundItem) -> None:
        try:
            with self._connect() as client:
                if self.settings.relay_username:
                    client.login(self.settings.relay_username, self.password)
                refused = client.sendmail(item.sender, list(item.recipients), item.raw)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            _raise_for(min(codes), f"all recipients refused: {_codes(exc.recipients)}")
        except smtplib.SMTPResponseException as exc:
            _raise_for(exc.smtp_code, f"{exc.smtp_code} {exc.smtp_error!r}")
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryDeliveryError(f"{type(exc).__name__}: {exc}") from exc
        if refused:
            # Some recipients took it: it counts as sent (never resent to the
            # others' duplicates); the refusals are logged.
            log.warning(
                "outbound %d partly refused: %s",
                item.id,
                _codes(refused),
                extra={"action": "outbound_partly_refused", "outbound_id": item.id},
            )


def _codes(refused: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{rcpt}: {code}" for rcpt, (code, _) in refused.items())


def _raise_for(code: int, text: str) -> None:
    if 400 <= code < 500:
        raise TemporaryDeliveryError(text)
    raise PermanentDeliveryError(text)


def make_transport(settings: OutgoingSettings, default_maildir: Path) -> Transport:
    if settings.relay_host:
        return RelayTransport(settings)
    return MaildirTransport(Path(settings.maildir) if settings.maildir else default_maildir)


class Sender:
    def __init__(
        self,
        db: Database,
        transport: Transport,
        *,
        retry_period: timedelta,
        first_retry: timedelta = timedelta(minutes=1),
        clock: Clock = utcnow,
    ) -> None:
        self.db = db
        self.transport = transport
        self.retry_period = retry_period
        self.first_retry = first_retry
        self.clock = clock
        #: Rows the relay took whose "sent" state could not be written yet
        #: (the database was away). They are recorded before anything else is
        #: sent, so a confirmed mail is never sent twice by this process.
        self.unrecorded: list[int] = []

    def _record_sent(self) -> None:
        while self.unrecorded:
            outbox.mark_sent(self.db, self.unrecorded[0], clock=self.clock)
            self.unrecorded.pop(0)

    def deliver_next(self) -> str | None:
        """Deliver one due row; returns the outcome, or None when nothing is due.

        Raises TransientError when the database is unreachable.
        """
        self._record_sent()
        item = outbox.claim(self.db, clock=self.clock)
        if item is None:
            return None
        extra = {"outbound_id": item.id, "attempts": item.attempts}
        try:
            self.transport.send(item)
        except PermanentDeliveryError as exc:
            outbox.mark_failed(self.db, item.id, str(exc))
            log.error(
                "outbound %d failed: %s", item.id, exc, extra={"action": "outbound_failed", **extra}
            )
            return "failed"
        except TemporaryDeliveryError as exc:
            if self.clock() - item.created_at > self.retry_period:
                outbox.mark_failed(self.db, item.id, f"gave up after retrying: {exc}")
                log.error(
                    "outbound %d failed after retries: %s",
                    item.id,
                    exc,
                    extra={"action": "outbound_failed", **extra},
                )
                return "failed"
            delay = min(self.first_retry * 2 ** (item.attempts - 1), MAX_RETRY_DELAY)
            outbox.retry_later(self.db, item.id, str(exc), delay=delay, clock=self.clock)
            log.warning(
                "outbound %d deferred %s: %s",
                item.id,
                delay,
                exc,
                extra={"action": "outbound_deferred", **extra},
            )
            return "deferred"
        self.unrecorded.append(item.id)
        log.info("outbound %d sent", item.id, extra={"action": "outbound_sent", **extra})
        self._record_sent()
        return "sent"
