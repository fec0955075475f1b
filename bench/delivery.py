"""Delivery rate of the outbox: mails per second from the queue to a relay or a Maildir.

Enqueues N acknowledgement-like mails (``mailbot.compose`` + ``outbox.enqueue``)
into a fresh SQLite database, then runs ``mailbot.sender.Sender`` until the
queue is empty, once with a ``RelayTransport`` to a local SMTP catcher
(aiosmtpd, in a thread of this process) and once with the ``MaildirTransport``.

    .venv/bin/python bench/delivery.py            # 2000 mails
    .venv/bin/python bench/delivery.py --count 500
"""

from __future__ import annotations

import argparse
import mailbox
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailbot import signing
from mailbot.compose import Outgoing, Recipient, compose
from mailbot.config import OutgoingSettings
from mailbot.sender import MaildirTransport, RelayTransport, Sender, Transport
from mailbot.store import outbox, schema
from mailbot.store.db import Database
from mailbot.testing import free_port

KEY = b"bench-key-0123456789abcdef"
TEXT = (
    "Hello Customer,\n\nwe have received your request and opened ticket {n}.\n\n"
    "Subject: Question {n}\nPriority: medium\nWe will answer within 8 hours.\n\n"
    "You can follow the ticket here:\nhttp://127.0.0.1:8025/status/{n}.0.x\n\n--\nSupport\n"
)


class Catcher:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.count += 1
        return "250 2.0.0 OK"


def fill(db: Database, count: int) -> float:
    """Enqueue ``count`` mails; seconds taken."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    with db.transaction() as session:
        for n in range(1, count + 1):
            mid = signing.make_message_id(KEY, n, "localhost")
            raw = compose(
                Outgoing(
                    sender=Recipient("support@localhost", "Support"),
                    to=[Recipient(f"customer{n}@example.com", f"Customer {n}")],
                    subject=f"[#{n}] Question {n}",
                    text=TEXT.format(n=n),
                    message_id=mid,
                    date=now,
                    in_reply_to=f"q-{n}@client.example.com",
                    references=[f"q-{n}@client.example.com"],
                    auto=True,
                )
            )
            outbox.enqueue(
                session,
                raw=raw,
                sender="support@localhost",
                recipients=[f"customer{n}@example.com"],
                message_id=mid,
                ticket_id=None,
                event="ticket-opened",
                auto=True,
            )
    return time.perf_counter() - started


def run(work: Path, name: str, transport: Transport, count: int) -> tuple[float, float, int]:
    db = Database(f"sqlite:///{work / f'{name}.db'}")
    schema.upgrade(db)
    fill_seconds = fill(db, count)
    sender = Sender(db, transport, retry_period=timedelta(hours=48))
    started = time.perf_counter()
    sent = 0
    while (outcome := sender.deliver_next()) is not None:
        if outcome != "sent":
            raise SystemExit(f"{name}: unexpected outcome {outcome}")
        sent += 1
    seconds = time.perf_counter() - started
    db.close()
    return fill_seconds, seconds, sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=2000, help="mails to enqueue (2000)")
    args = parser.parse_args(argv)
    ok = True
    rows = []
    with tempfile.TemporaryDirectory(prefix="mailbot-bench-delivery-") as tmp:
        work = Path(tmp)
        catcher = Catcher()
        controller = Controller(catcher, hostname="127.0.0.1", port=free_port())
        controller.start()
        try:
            relay = RelayTransport(
                OutgoingSettings(relay_host="127.0.0.1", relay_port=controller.port)
            )
            fill_s, send_s, sent = run(work, "relay", relay, args.count)
            ok &= sent == args.count == catcher.count
            rows.append(("relay (SMTP, one connection per mail)", fill_s, send_s, sent))
        finally:
            controller.stop()
        maildir = work / "outgoing"
        fill_s, send_s, sent = run(work, "maildir", MaildirTransport(maildir), args.count)
        ok &= sent == args.count == len(mailbox.Maildir(maildir, factory=None))
        rows.append(("Maildir", fill_s, send_s, sent))
    print(f"\noutbox delivery, {args.count} mails, SQLite, one sender")
    print(f"{'transport':<40} {'enqueue/s':>10} {'sent':>6} {'seconds':>8} {'mails/s':>8}")
    for name, fill_s, send_s, sent in rows:
        print(
            f"{name:<40} {args.count / fill_s:>10.0f} {sent:>6} {send_s:>8.2f} "
            f"{sent / send_s:>8.1f}"
        )
    if not ok:
        print("CHECK FAILED: not every mail arrived exactly once", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
