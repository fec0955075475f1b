"""The outbox sender against a real SMTP catcher (aiosmtpd) and a real Maildir."""

from __future__ import annotations

import mailbox
from datetime import UTC, datetime, timedelta

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailbot.config import OutgoingSettings
from mailbot.sender import MaildirTransport, RelayTransport, Sender, make_transport
from mailbot.store import outbox
from mailbot.store.models import Outbound, OutboundStatus
from mailbot.testing import free_port

RAW = (
    b"From: support@localhost\r\nTo: ann@example.org\r\nMessage-ID: <out-1@localhost>\r\n\r\nhi\r\n"
)


class Catcher:
    """An SMTP relay stand-in whose answer the test chooses."""

    def __init__(self) -> None:
        self.answer = "250 OK"
        self.received: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.answer.startswith("250"):
            self.received.append(envelope.original_content or b"")
        return self.answer


@pytest.fixture
def relay():
    catcher = Catcher()
    controller = Controller(catcher, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield catcher, controller.port
    finally:
        controller.stop()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _enqueue(db, clock, message_id="out-1@localhost"):
    with db.transaction() as session:
        return outbox.enqueue(
            session,
            raw=RAW,
            sender="support@localhost",
            recipients=["ann@example.org"],
            message_id=message_id,
            ticket_id=None,
            clock=clock,
        )


def _row(db, outbound_id):
    with db.transaction() as session:
        return session.get(Outbound, outbound_id)


def test_maildir_when_no_relay(db, tmp_path):
    transport = make_transport(OutgoingSettings(), tmp_path / "outgoing")
    assert isinstance(transport, MaildirTransport)
    clock = Clock()
    row_id = _enqueue(db, clock)
    sender = Sender(db, transport, retry_period=timedelta(hours=1), clock=clock)
    assert sender.deliver_next() == "sent"
    assert sender.deliver_next() is None
    stored = [bytes(m) for m in mailbox.Maildir(tmp_path / "outgoing", factory=None)]
    assert len(stored) == 1
    assert b"out-1@localhost" in stored[0]
    assert _row(db, row_id).status == OutboundStatus.sent


def _relay_sender(db, port, clock):
    settings = OutgoingSettings(relay_host="127.0.0.1", relay_port=port, relay_timeout=5)
    transport = make_transport(settings, default_maildir=None)  # type: ignore[arg-type]
    assert isinstance(transport, RelayTransport)
    return Sender(db, transport, retry_period=timedelta(hours=2), clock=clock)


def test_relay_250_is_sent_once(db, relay):
    catcher, port = relay
    clock = Clock()
    row_id = _enqueue(db, clock)
    sender = _relay_sender(db, port, clock)
    assert sender.deliver_next() == "sent"
    assert sender.deliver_next() is None
    assert len(catcher.received) == 1
    assert catcher.received[0].rstrip(b"\r\n") == RAW.rstrip(b"\r\n")
    assert _row(db, row_id).sent_at == clock.now


def test_relay_4xx_retries_with_backoff_then_gives_up(db, relay):
    catcher, port = relay
    catcher.answer = "451 4.3.0 try later"
    clock = Clock()
    row_id = _enqueue(db, clock)
    sender = _relay_sender(db, port, clock)
    assert sender.deliver_next() == "deferred"
    row = _row(db, row_id)
    assert row.status == OutboundStatus.pending
    assert row.next_attempt_at == clock.now + timedelta(minutes=1)
    assert "451" in row.last_error
    assert sender.deliver_next() is None  # not due yet
    clock.now += timedelta(minutes=1)
    assert sender.deliver_next() == "deferred"
    assert _row(db, row_id).next_attempt_at == clock.now + timedelta(minutes=2)
    catcher.answer = "250 OK"
    clock.now += timedelta(minutes=2)
    assert sender.deliver_next() == "sent"
    assert len(catcher.received) == 1
    # A second mail that never gets through is failed after the retry period.
    catcher.answer = "421 4.7.0 busy"
    other = _enqueue(db, clock, "out-2@localhost")
    assert sender.deliver_next() == "deferred"
    clock.now += timedelta(hours=3)
    assert sender.deliver_next() == "failed"
    assert _row(db, other).status == OutboundStatus.failed


def test_relay_5xx_fails_permanently(db, relay):
    catcher, port = relay
    catcher.answer = "554 5.7.1 rejected"
    clock = Clock()
    row_id = _enqueue(db, clock)
    assert _relay_sender(db, port, clock).deliver_next() == "failed"
    row = _row(db, row_id)
    assert row.status == OutboundStatus.failed
    assert "554" in row.last_error


def test_relay_down_is_temporary(db):
    clock = Clock()
    row_id = _enqueue(db, clock)
    assert _relay_sender(db, free_port(), clock).deliver_next() == "deferred"
    assert _row(db, row_id).status == OutboundStatus.pending


def test_starttls_required_never_falls_back_to_plaintext(db, relay):
    """B-50: the catcher offers no STARTTLS, so nothing is sent in the clear."""
    catcher, port = relay
    clock = Clock()
    row_id = _enqueue(db, clock)
    settings = OutgoingSettings(
        relay_host="127.0.0.1", relay_port=port, relay_tls="starttls", relay_timeout=5
    )
    sender = Sender(db, RelayTransport(settings), retry_period=timedelta(hours=1), clock=clock)
    assert sender.deliver_next() == "deferred"
    assert catcher.received == []
    assert "STARTTLS" in _row(db, row_id).last_error


def test_confirmed_mail_is_recorded_before_anything_else_is_sent(db, relay, monkeypatch):
    """B-47: the relay said 250 but the bookkeeping write failed."""
    from mailbot.errors import StorageUnavailableError

    catcher, port = relay
    clock = Clock()
    first = _enqueue(db, clock)
    sender = _relay_sender(db, port, clock)
    real_mark_sent = outbox.mark_sent
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise StorageUnavailableError("database away")
        return real_mark_sent(*args, **kwargs)

    monkeypatch.setattr(outbox, "mark_sent", flaky)
    with pytest.raises(StorageUnavailableError):
        sender.deliver_next()
    assert sender.unrecorded == [first]
    assert sender.deliver_next() is None  # records first, finds nothing else due
    assert _row(db, first).status == OutboundStatus.sent
    assert len(catcher.received) == 1


def test_stale_sending_rows_are_recovered(db):
    clock = Clock()
    row_id = _enqueue(db, clock)
    assert outbox.claim(db, clock=clock) is not None
    assert outbox.recover_stale(db, lease=timedelta(minutes=10), clock=clock) == 0
    clock.now += timedelta(minutes=11)
    assert outbox.recover_stale(db, lease=timedelta(minutes=10), clock=clock) == 1
    assert _row(db, row_id).status == OutboundStatus.pending
    assert outbox.counts(db)[OutboundStatus.pending] == 1
