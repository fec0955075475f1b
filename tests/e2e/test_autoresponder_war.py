"""Two mailbot daemons answering each other (BAD_INPUTS B-22): they fall silent within the cap.

A (``support@a.test``) relays its outgoing mail to B's SMTP port and B to A's,
so every acknowledgement of one is inbound mail of the other. The war is
seeded with one mail to A From ``support@b.test``: for A that is a human,
for B it would be its own address, but B never receives it.

* well-behaved: our mail carries ``Auto-Submitted`` and B answers nothing;
* a peer that strips the automatic-mail headers: threading by our Message-ID
  and the subject token keeps the answers on the existing tickets;
* the worst case, a relay that strips those headers, the references and the
  subject token too, so each side sees every mail as a new human request:
  only the per-recipient cap (``conversation.auto_reply_limit``) stops it.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailbot.store.db import Database
from tests.conftest import free_port
from tests.e2e.test_daemon import DaemonProcess, scalar, status_counts

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

A, B = "support@a.test", "support@b.test"
LIMIT = 5
QUIET_SECONDS = 4.0
DEADLINE = 45.0
AUTO_HEADERS = ("Auto-Submitted", "X-Auto-Response-Suppress", "Precedence")
THREAD_HEADERS = ("In-Reply-To", "References")


class StrippingRelay:
    """Forwards every mail to ``target_port`` after removing the headers of ``mode``."""

    def __init__(self, target_port: int, mode: str) -> None:
        self.target_port = target_port
        self.mode = mode
        self.forwarded = 0

    def rewrite(self, raw: bytes) -> bytes:
        head, sep, body = raw.partition(b"\r\n\r\n")
        drop = {h.lower() for h in AUTO_HEADERS}
        if self.mode == "strip-all":
            drop |= {h.lower() for h in THREAD_HEADERS}
        kept: list[bytes] = []
        skipping = False
        for line in head.split(b"\r\n"):
            if line[:1] in (b" ", b"\t"):
                if not skipping:
                    kept.append(line)
                continue
            name = line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
            skipping = name in drop
            if skipping:
                continue
            if self.mode == "strip-all" and name == "subject":
                line = re.sub(rb"\[#\d+\]\s*", b"", line)
            kept.append(line)
        return b"\r\n".join(kept) + sep + body

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = self.rewrite(envelope.original_content or b"")
        for header in AUTO_HEADERS:
            assert f"\n{header}:".encode() not in raw

        def forward() -> None:
            with smtplib.SMTP("127.0.0.1", self.target_port, timeout=10) as client:
                client.sendmail(envelope.mail_from, envelope.rcpt_tos, raw)

        try:
            await asyncio.to_thread(forward)
        except (OSError, smtplib.SMTPException) as exc:
            return f"451 4.4.1 forward failed: {exc}"
        self.forwarded += 1
        return "250 2.0.0 forwarded"


@pytest.fixture
def controllers() -> Iterator[list[Controller]]:
    started: list[Controller] = []
    yield started
    for controller in started:
        controller.stop()


@pytest.fixture
def pair(
    tmp_path: Path,
) -> Iterator[Callable[[str, list[Controller]], tuple[DaemonProcess, DaemonProcess]]]:
    made: list[DaemonProcess] = []

    def make(mode: str, started: list[Controller]) -> tuple[DaemonProcess, DaemonProcess]:
        a = DaemonProcess(tmp_path / "a", MAILBOT_SUPPORT_ADDRESS=A)
        b = DaemonProcess(tmp_path / "b", MAILBOT_SUPPORT_ADDRESS=B)
        made.extend([a, b])
        for me, peer in ((a, b), (b, a)):
            port = peer.smtp_port
            if mode != "direct":
                relay = Controller(
                    StrippingRelay(peer.smtp_port, mode), hostname="127.0.0.1", port=free_port()
                )
                relay.start()
                started.append(relay)
                port = relay.port
            me.env.update(
                {
                    "MAILBOT_OUTGOING__RELAY_HOST": "127.0.0.1",
                    "MAILBOT_OUTGOING__RELAY_PORT": str(port),
                    "MAILBOT_OUTGOING__RELAY_TIMEOUT": "15",
                    "MAILBOT_CONVERSATION__AUTO_REPLY_LIMIT": str(LIMIT),
                }
            )
            me.upgrade()
        a.start()
        b.start()
        return a, b

    yield make
    for daemon in made:
        daemon.stop()


def seed(port: int) -> None:
    msg = EmailMessage()
    msg["From"] = f"Support B <{B}>"
    msg["To"] = A
    msg["Subject"] = "Our printer is broken, please help"
    msg["Message-ID"] = "<seed-1@b.test>"
    msg["Date"] = "Mon, 04 Mar 2030 09:00:00 +0000"
    msg.set_content("Hello A, our printer does not print.\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        assert client.sendmail(B, [A], msg.as_bytes()) == {}


def snapshot(db: Database) -> tuple[int, int, int]:
    """(outbound rows, outbound rows not yet settled, inbound rows not yet done)."""
    busy = sum(n for s, n in status_counts(db).items() if s in ("received", "processing"))
    return (
        scalar(db, "SELECT count(*) FROM outbound"),
        scalar(db, "SELECT count(*) FROM outbound WHERE status IN ('pending', 'sending')"),
        busy,
    )


def wait_silent(a: DaemonProcess, b: DaemonProcess) -> tuple[int, int]:
    """Until neither side has work and the outbound counts hold for QUIET_SECONDS."""
    dbs = [a.database(), b.database()]
    try:
        deadline = time.monotonic() + DEADLINE
        last: tuple[tuple[int, int, int], ...] = ()
        since = time.monotonic()
        while True:
            for daemon in (a, b):
                if not daemon.alive():
                    pytest.fail(f"daemon died:\n{daemon.log()[-3000:]}")
            now = tuple(snapshot(db) for db in dbs)
            if now != last:
                last, since = now, time.monotonic()
            settled = all(pending == 0 and busy == 0 for _, pending, busy in now)
            if settled and now[0][0] >= 1 and time.monotonic() - since >= QUIET_SECONDS:
                return now[0][0], now[1][0]
            if time.monotonic() > deadline:
                pytest.fail(f"still talking after {DEADLINE}s: A, B = {now}")
            time.sleep(0.25)
    finally:
        for db in dbs:
            db.close()


def counts(daemon: DaemonProcess, sql: str) -> int:
    db = daemon.database()
    try:
        return scalar(db, sql)
    finally:
        db.close()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("direct", (1, 0)),  # B sees Auto-Submitted: answers nothing
        ("strip-auto", (1, 1)),  # B answers once; A threads it onto ticket 1
        ("strip-all", (LIMIT, LIMIT)),  # only the cap ends it
    ],
)
def test_two_daemons_fall_silent_within_the_cap(
    pair: Callable[[str, list[Controller]], tuple[DaemonProcess, DaemonProcess]],
    controllers: list[Controller],
    mode: str,
    expected: tuple[int, int],
) -> None:
    a, b = pair(mode, controllers)
    seed(a.smtp_port)
    out_a, out_b = wait_silent(a, b)
    assert out_a <= LIMIT, (out_a, out_b)
    assert out_b <= LIMIT, (out_a, out_b)
    assert (out_a, out_b) == expected
    for daemon in (a, b):
        assert counts(daemon, "SELECT count(*) FROM outbound WHERE status != 'sent'") == 0
        assert counts(daemon, "SELECT count(*) FROM inbound WHERE status != 'done'") == 0
    # every mail one side sent arrived at the other: A's sent mail is B's inbound
    assert counts(b, "SELECT count(*) FROM inbound") == out_a
    assert counts(a, "SELECT count(*) FROM inbound") == out_b + 1  # + the seed
    if mode == "strip-all":
        assert "auto_reply_suppressed" in a.log()
        assert counts(a, "SELECT count(*) FROM ticket") == LIMIT + 1
    else:
        assert counts(a, "SELECT count(*) FROM ticket") == 1
    assert a.terminate() == 0
    assert b.terminate() == 0
