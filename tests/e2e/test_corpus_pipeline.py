"""Every real-world mail of ../shared/corpus through a running daemon, over LMTP.

Each mail must be taken (``250``); afterwards each inbound row is processed to
a ticket or quarantined with its reason, the daemon is still running, and no
file appeared anywhere but the database files and content-addressed
attachments (attachment names from mail never become paths).
"""

from __future__ import annotations

import hashlib
import json
import mailbox
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from mailbot.store.db import Database
from mailbot.store.inbox import dedupe_key
from tests.conftest import CORPUS, free_port, missing_service

pytestmark = [pytest.mark.e2e, pytest.mark.corpus]

SUPPORT = "support@localhost"
MAX_MESSAGE_SIZE = 30 * 1024 * 1024
DB_FILES = {"mailbot.db", "mailbot.db-wal", "mailbot.db-shm"}
BLOB_NAME = re.compile(r"^[0-9a-f]{64}$")
_EOL = re.compile(rb"\r\n|\r|\n")


def corpus_mails() -> list[tuple[str, bytes]]:
    """(label, raw) of every full mail: rfc822 entries and each mail of the mbox entries."""
    manifest_path = CORPUS / "manifest.json"
    if not manifest_path.exists():
        missing_service("../shared/corpus not found")
    entries = json.loads(manifest_path.read_text())["entries"]
    mails: list[tuple[str, bytes]] = []
    for entry in entries:
        path = CORPUS / entry["file"]
        if entry["format"] == "rfc822":
            mails.append((entry["file"], path.read_bytes()))
        elif entry["format"] == "mbox":
            box = mailbox.mbox(path, factory=None, create=False)
            try:
                for n, key in enumerate(box.keys()):
                    mails.append((f"{entry['file']}#{n}", box.get_bytes(key)))
            finally:
                box.close()
    assert mails, "the corpus has no rfc822 mail"
    return mails


def on_the_wire(raw: bytes) -> bytes:
    """What an MTA sends: every line ends in CRLF (bare LF and bare CR are line breaks)."""
    wire = _EOL.sub(b"\r\n", raw)
    return wire if wire.endswith(b"\r\n") else wire + b"\r\n"


class Daemon:
    def __init__(self, tmp: Path) -> None:
        self.data_dir = tmp / "var"
        self.cwd = tmp / "cwd"
        self.cwd.mkdir(parents=True)
        self.log_path = tmp / "daemon.log"
        self.lmtp_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
        self.env.update(
            {
                "MAILBOT_DATA_DIR": str(self.data_dir),
                "MAILBOT_SMTP__PORT": str(free_port()),
                "MAILBOT_LMTP__ENABLED": "true",
                "MAILBOT_LMTP__PORT": str(self.lmtp_port),
                "MAILBOT_SMTP__MAX_MESSAGE_SIZE": str(MAX_MESSAGE_SIZE),
                "MAILBOT_INBOX__POLL_SECONDS": "0.5",
            }
        )
        self.url = f"sqlite:///{(self.data_dir / 'mailbot.db').resolve()}"
        subprocess.run(
            [sys.executable, "-m", "mailbot", "db", "upgrade"],
            env=self.env,
            cwd=self.cwd,
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.log_file = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailbot", "run"],
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=self.log_file,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"daemon exited {self.proc.returncode}:\n{self.log()[-5000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.lmtp_port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"LMTP port not open after 30s:\n{self.log()[-5000:]}")
                time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log_file.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = Daemon(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def deliver(port: int, mails: list[tuple[str, bytes]]) -> dict[str, tuple[int, bytes]]:
    """Deliver each mail over LMTP, one connection reused; the final reply per mail."""
    replies: dict[str, tuple[int, bytes]] = {}
    client: smtplib.LMTP | None = None
    for label, raw in mails:
        try:
            if client is None:
                client = smtplib.LMTP("127.0.0.1", port, timeout=60)
                client.ehlo_or_helo_if_needed()
            client.mail("mta@example.com")
            code, reply = client.rcpt(SUPPORT)
            if code == 250:
                code, reply = client.data(raw)
            replies[label] = (code, reply)
            if code != 250:
                client.rset()
        except (smtplib.SMTPException, OSError) as exc:
            replies[label] = (getattr(exc, "smtp_code", -1), repr(exc).encode())
            if client is not None:
                client.close()
            client = None
    if client is not None:
        client.quit()
    return replies


def test_corpus_through_the_daemon(daemon: Daemon, record_property) -> None:
    mails = [(label, on_the_wire(raw)) for label, raw in corpus_mails()]
    started = time.monotonic()
    replies = deliver(daemon.lmtp_port, mails)
    refused = {
        label: reply
        for label, reply in replies.items()
        if reply[0] != 250 and not (reply[0] == 552 and len(dict(mails)[label]) > MAX_MESSAGE_SIZE)
    }
    assert refused == {}, f"{len(refused)} mails refused: {list(refused.items())[:5]}"
    delivered = time.monotonic() - started
    expected_rows = {dedupe_key(raw)[0] for _, raw in mails}

    db = Database(daemon.url)
    try:
        deadline = time.monotonic() + 300
        while True:
            with db.transaction() as session:
                pending = session.execute(
                    text("SELECT count(*) FROM inbound WHERE status IN ('received', 'processing')")
                ).scalar_one()
            if not pending:
                break
            assert daemon.proc.poll() is None, f"daemon died:\n{daemon.log()[-5000:]}"
            assert time.monotonic() < deadline, f"{pending} mails still waiting after 300s"
            time.sleep(0.5)
        processed = time.monotonic() - started - delivered
        with db.transaction() as session:
            rows = session.execute(
                text("SELECT id, status, ticket_id, last_error FROM inbound ORDER BY id")
            ).all()
            tickets = session.execute(text("SELECT count(*) FROM ticket")).scalar_one()
            attachments = session.execute(text("SELECT count(*) FROM attachment")).scalar_one()
    finally:
        db.close()

    assert len(rows) == len(expected_rows)
    bad = [
        (r.id, r.status, r.ticket_id, r.last_error)
        for r in rows
        if not (
            (r.status == "done" and r.ticket_id is not None)
            or (r.status == "shunted" and (r.last_error or "").strip())
        )
    ]
    assert bad == [], f"rows neither done with a ticket nor quarantined with a reason: {bad[:5]}"
    assert daemon.proc.poll() is None, f"daemon died:\n{daemon.log()[-5000:]}"

    # no file anywhere but the database, the signing key, the outgoing Maildir
    # and content-addressed attachments
    stray = []
    blobs = 0
    for root in (daemon.data_dir, daemon.cwd):
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath, name)
                rel = path.relative_to(daemon.data_dir) if root == daemon.data_dir else None
                if rel is not None and rel.parts == (name,) and name in DB_FILES | {"secret.key"}:
                    continue
                if rel is not None and rel.parts[0] == "outgoing":
                    continue  # the outgoing Maildir: acknowledgements written by the sender
                if (
                    rel is not None
                    and rel.parts[0] == "attachments"
                    and BLOB_NAME.match(name)
                    and hashlib.sha256(path.read_bytes()).hexdigest() == name
                ):
                    blobs += 1
                    continue
                stray.append(str(path))
    assert stray == [], f"files outside the database and attachments/: {stray[:10]}"

    done = sum(1 for r in rows if r.status == "done")
    shunted = [r for r in rows if r.status == "shunted"]
    reasons = Counter((r.last_error or "").split(":", 1)[0].strip() for r in shunted)
    summary = {
        "mails_sent": len(mails),
        "inbound_rows": len(rows),
        "duplicates_collapsed": len(mails) - len(rows),
        "done": done,
        "tickets": tickets,
        "quarantined": len(shunted),
        "quarantine_reasons": dict(reasons.most_common()),
        "attachments": attachments,
        "blob_files": blobs,
        "deliver_seconds": round(delivered, 1),
        "process_seconds": round(processed, 1),
    }
    for key, value in summary.items():
        record_property(key, value)
    print("\ncorpus outcome:", json.dumps(summary, ensure_ascii=False))
