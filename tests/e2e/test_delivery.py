"""Delivery of the outbox through a relay that goes away (DESIGN invariant 4, BAD_INPUTS B-47).

* A relay that answers ``421`` (or is not listening) while 200 acknowledgements
  are queued, then comes back: all 200 arrive exactly once. The sender's first
  retry waits ``outgoing.retry_first_seconds`` (a minute by default), so this
  runs ``Sender`` in-process with an injected clock against a real SMTP catcher
  (aiosmtpd); the acknowledgements are real ones, made by the pipeline for 200
  customers.
* ``mailbot run`` killed with SIGKILL while the relay is in the middle of a
  DATA: after a restart every acknowledgement arrives, at most one twice.
"""

from __future__ import annotations

import asyncio
import email.policy
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import text

from mailbot.config import OutgoingSettings, Settings
from mailbot.headers import extract_message_id
from mailbot.process import Pipeline
from mailbot.sender import RelayTransport, Sender
from mailbot.store import inbox, schema
from mailbot.store.db import Database
from tests.conftest import free_port
from tests.e2e.test_daemon import DaemonProcess, scalar, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COUNT = 200
SUPPORT = "support@localhost"

#: The Sender's default first retry delay (``outgoing.retry_first_seconds``).
FIRST_RETRY = timedelta(minutes=1)


class Catcher:
    """A relay stand-in: counts the Message-IDs it accepted; its answer is the test's choice."""

    def __init__(self) -> None:
        self.answer = "250 2.0.0 OK"
        self.data_delay = 0.0
        self.refuse_every = 0  # refuse every n-th DATA with 421 (0: never)
        self.received: Counter[str] = Counter()
        self.refused = 0
        self.datas = 0
        self.in_data = threading.Event()
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.datas += 1
            flaky = self.refuse_every and self.datas % self.refuse_every == 0
        if flaky or not self.answer.startswith("250"):
            self.refused += 1
            return "421 4.3.2 Service not available, try later" if flaky else self.answer
        raw = envelope.original_content or b""
        mid = extract_message_id(raw) or f"no-id-{len(raw)}"
        # The relay has the whole mail: from here on it will deliver it, whatever
        # happens to the client before it reads the 250 (the B-47 window).
        with self.lock:
            self.received[mid] += 1
        if self.data_delay:
            self.in_data.set()
            try:
                await asyncio.sleep(self.data_delay)
            finally:
                self.in_data.clear()
        return self.answer

    def total(self) -> int:
        with self.lock:
            return sum(self.received.values())


@dataclass
class Relay:
    catcher: Catcher
    port: int
    controller: Controller | None = None
    controllers: list[Controller] = field(default_factory=list)

    def start(self) -> None:
        self.controller = Controller(self.catcher, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        self.controllers.append(self.controller)

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def relay() -> Iterator[Relay]:
    found = Relay(Catcher(), free_port())
    try:
        yield found
    finally:
        found.stop()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def customer_mail(i: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {i} <customer{i}@example.com>"
    msg["To"] = SUPPORT
    msg["Subject"] = f"Question number {i}"
    msg["Message-ID"] = f"<q-{i}@client.example.com>"
    msg["Date"] = "Mon, 04 Mar 2030 08:00:00 +0000"
    msg.set_content(f"Hello, this is question {i}.\n")
    return msg.as_bytes(policy=email.policy.SMTP)


def queued_message_ids(db: Database) -> list[str]:
    with db.transaction() as session:
        return [str(m) for m in session.execute(text("SELECT message_id FROM outbound")).scalars()]


@pytest.fixture
def acks(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[tuple[Database, Clock]]:
    """A fresh SQLite database holding the 200 acknowledgements of 200 new tickets."""
    url = f"sqlite:///{tmp_path / 'acks.db'}"
    db = Database(url)
    schema.upgrade(db)
    clock = Clock()
    (tmp_path / "no-rules.yaml").write_text("[]\n")
    pipeline = Pipeline(
        db, make_settings(url, rules_file=str(tmp_path / "no-rules.yaml")), clock=clock
    )
    for i in range(COUNT):
        inbox.accept(db, customer_mail(i), source="smtp", clock=clock)
        result = pipeline.process_next()
        assert result is not None
        assert result.outcome == "created", result
    assert scalar(db, "SELECT count(*) FROM outbound WHERE status = 'pending'") == COUNT
    try:
        yield db, clock
    finally:
        db.close()


def drain(sender: Sender) -> Counter[str]:
    """Run the sender until nothing is due; the outcomes."""
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + 60
    while (outcome := sender.deliver_next()) is not None:
        outcomes[outcome] += 1
        assert time.monotonic() < deadline, f"sender did not drain: {outcomes}"
    return outcomes


@pytest.mark.parametrize("outage", ["421", "not-listening"])
def test_relay_outage_then_back_every_ack_arrives_exactly_once(
    acks: tuple[Database, Clock], relay: Relay, outage: str
) -> None:
    db, clock = acks
    expected = set(queued_message_ids(db))
    assert len(expected) == COUNT
    if outage == "421":
        relay.catcher.answer = "421 4.3.2 Service shutting down"
        relay.start()
    transport = RelayTransport(
        OutgoingSettings(relay_host="127.0.0.1", relay_port=relay.port, relay_timeout=5)
    )
    sender = Sender(db, transport, retry_period=timedelta(hours=48), clock=clock)

    assert drain(sender) == Counter({"deferred": COUNT})
    assert relay.catcher.total() == 0
    assert scalar(db, "SELECT count(*) FROM outbound WHERE status = 'pending'") == COUNT
    assert scalar(db, "SELECT count(*) FROM outbound WHERE last_error IS NULL") == 0
    # nothing is due again before the first retry delay
    clock.now += FIRST_RETRY - timedelta(seconds=1)
    assert sender.deliver_next() is None

    # the relay comes back
    if outage == "421":
        relay.catcher.answer = "250 2.0.0 OK"
    else:
        relay.start()
    clock.now += timedelta(seconds=2)
    assert drain(sender) == Counter({"sent": COUNT})
    received = relay.catcher.received
    assert set(received) == expected
    assert [m for m, n in received.items() if n != 1] == []
    assert scalar(db, "SELECT count(*) FROM outbound WHERE status = 'sent'") == COUNT
    # and never again
    clock.now += timedelta(days=3)
    assert sender.deliver_next() is None
    assert relay.catcher.total() == COUNT


def test_flapping_relay_delivers_every_ack_exactly_once(
    acks: tuple[Database, Clock], relay: Relay
) -> None:
    db, clock = acks
    relay.catcher.refuse_every = 3
    relay.start()
    transport = RelayTransport(
        OutgoingSettings(relay_host="127.0.0.1", relay_port=relay.port, relay_timeout=5)
    )
    sender = Sender(db, transport, retry_period=timedelta(hours=48), clock=clock)
    rounds = 0
    while scalar(db, "SELECT count(*) FROM outbound WHERE status != 'sent'"):
        drain(sender)
        clock.now += timedelta(hours=1)  # past the longest backoff
        rounds += 1
        assert rounds < 20, "the outbox does not drain through a flapping relay"
    assert relay.catcher.refused > 0
    received = relay.catcher.received
    assert set(received) == set(queued_message_ids(db))
    assert [m for m, n in received.items() if n != 1] == []


# -- the daemon killed mid-delivery ------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    made: list[DaemonProcess] = []

    def make(**extra_env: str) -> DaemonProcess:
        found = DaemonProcess(tmp_path / f"d{len(made)}", **extra_env)
        made.append(found)
        found.upgrade()
        return found

    yield make
    for found in made:
        found.stop()


def send_all(port: int, mails: list[bytes]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for raw in mails:
            assert client.sendmail("customer@example.com", [SUPPORT], raw) == {}


def test_sigkill_mid_delivery_sends_at_most_the_in_flight_mail_twice(
    daemon: Callable[..., DaemonProcess], relay: Relay, tmp_path: Path
) -> None:
    relay.catcher.data_delay = 0.05
    relay.start()
    (tmp_path / "no-rules.yaml").write_text("[]\n")
    proc = daemon(
        MAILBOT_OUTGOING__RELAY_HOST="127.0.0.1",
        MAILBOT_OUTGOING__RELAY_PORT=str(relay.port),
        MAILBOT_OUTGOING__RELAY_TIMEOUT="10",
        MAILBOT_RULES_FILE=str(tmp_path / "no-rules.yaml"),
        # a claim of the killed sender is stale after 2 s (recovery runs every lease/2)
        MAILBOT_INBOX__LEASE_SECONDS="2",
    )
    proc.start()
    send_all(proc.smtp_port, [customer_mail(i) for i in range(COUNT)])
    catcher = relay.catcher

    wait_for(lambda: catcher.total() >= COUNT // 5, 40, f"{COUNT // 5} acks at the relay")
    wait_for(catcher.in_data.is_set, 10, "the relay to be inside a DATA")
    proc.kill()
    at_kill = catcher.total()
    assert at_kill < COUNT, "the daemon delivered everything before the kill"
    proc.start()

    db = proc.database()
    try:
        wait_for(
            lambda: scalar(db, "SELECT count(*) FROM outbound WHERE status = 'sent'") == COUNT,
            45,
            "every acknowledgement to be sent after the restart",
        )
        expected = set(queued_message_ids(db))
        assert scalar(db, "SELECT count(*) FROM ticket") == COUNT
    finally:
        db.close()
    assert len(expected) == COUNT
    received = catcher.received
    assert set(received) == expected
    twice = [m for m, n in received.items() if n == 2]
    assert all(n <= 2 for n in received.values()), received.most_common(3)
    assert len(twice) <= 1, twice
    assert proc.terminate(timeout=15) == 0
    print(f"\nkilled at {at_kill} delivered; resent twice: {twice}")


def test_plain_relay_does_not_build_a_tls_context_per_mail(
    acks: tuple[Database, Clock], relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    db, clock = acks
    relay.start()
    calls: list[int] = []
    real = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: calls.append(1) or real())
    transport = RelayTransport(OutgoingSettings(relay_host="127.0.0.1", relay_port=relay.port))
    sender = Sender(db, transport, retry_period=timedelta(hours=48), clock=clock)
    for _ in range(3):
        assert sender.deliver_next() == "sent"
    assert len(calls) <= 1
