"""The SMTP and LMTP listener: one aiosmtpd handler served both ways.

A ``250`` is given only after the raw bytes are committed (the mails of
concurrent sessions in one transaction: ``GroupCommit``).
Any internal error answers ``451`` so that the sending MTA keeps the mail and
retries (aiosmtpd's default would be ``500``, which makes senders give up).
Recipients that are not ours get ``550`` at RCPT: never an open relay. Mail
above the size limit gets ``552`` from aiosmtpd's ``data_size_limit``.
LMTP answers one status line per accepted recipient.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any, cast

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailbot.store import inbox
from mailbot.store.db import Database

log = logging.getLogger(__name__)

REPLY_250_OK = "250 2.0.0 OK: queued as {id}"
REPLY_250_RCPT_OK = "250 2.1.5 OK"
REPLY_250_LMTP_DELIVERED = "250 2.0.0 <{rcpt}> delivered as {id}"
REPLY_451_TRY_LATER = "451 4.3.0 Temporary failure, please try again later"
REPLY_452_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
REPLY_550_NO_MAILBOX = "550 5.1.1 <{rcpt}>: recipient is not a mailbox of ours"
REPLY_553_BAD_ADDRESS = "553 5.1.3 Bad recipient address syntax"

#: Lines longer than RFC 5321's 1000 octets are common in real mail; refusing
#: them would bounce a customer's message, so the limit is raised.
LINE_LENGTH_LIMIT = 64 * 1024

_PLUS = re.compile(r"^(?P<local>[^+@]+)\+[^@]*@(?P<domain>.+)$")


class _SMTP(SMTP):
    line_length_limit = LINE_LENGTH_LIMIT


class _LMTP(LMTP):
    line_length_limit = LINE_LENGTH_LIMIT


#: Most mails one group commit carries.
GROUP_COMMIT_MAX = 64


class GroupCommit:
    """Commits the mails of concurrent sessions together: one transaction, one thread hop.

    A session whose DATA ends while a commit is under way waits for the next
    one, which takes every mail that came in meanwhile: under a burst from
    several senders a commit carries several mails, and a lone sender's mail
    goes in at once, alone. Each session still answers ``250`` only after the
    commit that holds its mail. When a commit fails its mails are tried one by
    one, so that a mail the database refuses costs only its own sender a ``451``.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiting: list[tuple[inbox.Delivery, asyncio.Future[inbox.Accepted]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def accept(self, delivery: inbox.Delivery) -> inbox.Accepted:
        future: asyncio.Future[inbox.Accepted] = asyncio.get_running_loop().create_future()
        self._waiting.append((delivery, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_waiting(), name="smtp-commit")
        return await future

    async def _commit_waiting(self) -> None:
        while self._waiting:
            batch = self._waiting[:GROUP_COMMIT_MAX]
            del self._waiting[:GROUP_COMMIT_MAX]
            try:
                await self._commit(batch)
            except BaseException:  # cancelled at shutdown: nobody waiting gets a 250
                for _, future in [*batch, *self._waiting]:
                    future.cancel()
                self._waiting.clear()
                raise

    @property
    def waiting(self) -> int:
        """Mails waiting for the next commit."""
        return len(self._waiting)

    async def _commit(
        self, batch: list[tuple[inbox.Delivery, asyncio.Future[inbox.Accepted]]]
    ) -> None:
        try:
            done = await asyncio.to_thread(
                inbox.accept_deliveries, self.db, [delivery for delivery, _ in batch]
            )
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], error=exc)
                return
            for one in batch:  # which of them was it?
                await self._commit([one])
            return
        for (_, future), accepted in zip(batch, done, strict=True):
            _settle(future, accepted)


def _settle(
    future: asyncio.Future[inbox.Accepted],
    accepted: inbox.Accepted | None = None,
    *,
    error: Exception | None = None,
) -> None:
    if future.done():  # the session went away meanwhile; its mail is in all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(cast(inbox.Accepted, accepted))


class InboxHandler:
    """The aiosmtpd handler: validates recipients and commits mail to the inbox."""

    def __init__(
        self,
        db: Database,
        our_addresses: frozenset[str],
        *,
        max_recipients: int = 100,
        on_accepted: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.our_addresses = frozenset(a.lower() for a in our_addresses)
        self.max_recipients = max_recipients
        self.on_accepted = on_accepted
        self.commits = GroupCommit(db)

    def is_ours(self, address: str) -> bool:
        """Our support address or an alias, also with a ``+tag`` in its local part."""
        address = address.strip().lower()
        if address in self.our_addresses:
            return True
        plus = _PLUS.match(address)
        return bool(plus and f"{plus['local']}@{plus['domain']}" in self.our_addresses)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if any(c in address for c in "\r\n\x00"):
            return REPLY_553_BAD_ADDRESS
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return REPLY_452_TOO_MANY_RECIPIENTS
        if not self.is_ours(address):
            log.info(
                "refused recipient %r",
                address,
                extra={"action": "smtp_recipient_refused", "peer": str(session.peer)},
            )
            return REPLY_550_NO_MAILBOX.format(rcpt=address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return REPLY_250_RCPT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content
        if raw is None:
            raw = envelope.content if isinstance(envelope.content, bytes) else b""
        lmtp = isinstance(server, LMTP)
        source = "lmtp" if lmtp else "smtp"
        try:
            accepted = await self.commits.accept(
                inbox.Delivery(
                    bytes(raw),
                    source,
                    # "<>" records the null sender of bounces ("" means unknown).
                    envelope_from=envelope.mail_from or "<>",
                    envelope_to=list(envelope.rcpt_tos),
                )
            )
        except Exception as exc:  # nothing is acknowledged: the sender must retry
            log.error(
                "could not store mail over %s, answered 451: %s",
                source,
                exc,
                exc_info=exc,
                extra={"action": "smtp_error", "error": type(exc).__name__},
            )
            # Returned (not raised) so that aiosmtpd ends the transaction, and
            # LMTP gets the one reply per recipient that RFC 2033 requires.
            return (
                self._per_recipient(envelope, REPLY_451_TRY_LATER) if lmtp else REPLY_451_TRY_LATER
            )
        log.info(
            "accepted inbound %d over %s%s",
            accepted.inbound_id,
            source,
            " (duplicate)" if accepted.duplicate else "",
            extra={
                "action": "inbound_duplicate" if accepted.duplicate else "inbound_accepted",
                "inbound_id": accepted.inbound_id,
                "source": source,
                "size": len(raw),
            },
        )
        if self.on_accepted is not None and not accepted.duplicate:
            self.on_accepted()
        if lmtp:
            return "\r\n".join(
                REPLY_250_LMTP_DELIVERED.format(rcpt=r, id=accepted.inbound_id)
                for r in envelope.rcpt_tos
            )
        return REPLY_250_OK.format(id=accepted.inbound_id)

    @staticmethod
    def _per_recipient(envelope: Envelope, reply: str) -> str:
        return "\r\n".join(reply for _ in envelope.rcpt_tos) or reply

    async def handle_exception(self, error: Exception) -> str:
        log.error(
            "SMTP session failed: %s",
            error,
            exc_info=error,
            extra={"action": "smtp_error", "error": type(error).__name__},
        )
        return REPLY_451_TRY_LATER


async def serve(
    handler: InboxHandler,
    *,
    host: str,
    port: int,
    lmtp: bool = False,
    max_message_size: int,
    hostname: str = "",
    idle_timeout: float = 120,
) -> asyncio.Server:
    """Start an SMTP (or LMTP) server on ``host:port`` in the running loop."""
    protocol = _LMTP if lmtp else _SMTP
    kwargs: dict[str, Any] = {
        "data_size_limit": max_message_size,
        "enable_SMTPUTF8": True,
        "decode_data": False,
        "hostname": hostname or None,
        "ident": "mailbot",
        "timeout": idle_timeout,
    }
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: protocol(handler, loop=loop, **kwargs), host, port)
    log.info(
        "%s listening on %s:%d",
        "LMTP" if lmtp else "SMTP",
        host,
        port,
        extra={"action": "listener_started", "protocol": "lmtp" if lmtp else "smtp"},
    )
    return server
