"""`mailbot run` reading a real Dovecot mailbox, killed with SIGKILL mid-batch.

The end-to-end proof of invariants 1 and 2 for IMAP: mail waits in the
mailbox, the daemon is killed while it takes a batch (some mail committed and
not yet moved, some not fetched) and started again, twice. Afterwards every
mail is in the inbox exactly once, processed into exactly one message, and
sits in the processed folder; the mailbox's INBOX is empty.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient
from sqlalchemy import text

from mailbot.store.db import Database
from mailbot.testing import ServiceMissingError
from tests.conftest import missing_service
from tests.dovecot import DovecotServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOTAL = 400
WAIT = 90.0


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    try:
        server = DovecotServer({"support": "e2e-secret"})
    except ServiceMissingError as exc:
        missing_service(str(exc))
    try:
        yield server
    finally:
        server.stop()


def wait_for(predicate: Callable[[], bool], what: str, log: Path, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)


def scalar(db: Database, sql: str) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def folder_count(client: IMAPClient, folder: str) -> int:
    if not client.folder_exists(folder):
        return 0
    return int(client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"])


def test_sigkill_mid_batch_every_mail_exactly_once(dovecot: DovecotServer, tmp_path: Path) -> None:
    secret = tmp_path / "imap.password"
    secret.write_text("e2e-secret\n")
    db_path = tmp_path / "var" / "mailbot.db"
    config = tmp_path / "mailbot.toml"
    mailbox = {
        "name": "support",
        "host": "127.0.0.1",
        "port": dovecot.port,
        "tls": "none",
        "username": "support",
        "password_file": str(secret),
        "batch_size": 20,
        "poll_seconds": 0.5,
        "retry_max_seconds": 1,
    }
    config.write_text(
        f'data_dir = "{tmp_path / "var"}"\n[smtp]\nenabled = false\n'
        "[inbox]\npoll_seconds = 0.2\n[[imap]]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in mailbox.items())
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update({"MAILBOT_CONFIG": str(config), "PYTHONUNBUFFERED": "1"})
    log = tmp_path / "daemon.log"

    def mailbot(*args: str) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "mailbot", *args],
                env=env,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )

    assert mailbot("db", "upgrade").wait(timeout=120) == 0

    client = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False, timeout=10)
    client.login("support", "e2e-secret")
    for n in range(TOTAL):
        client.append(
            "INBOX",
            (
                f"From: Customer {n} <c{n}@example.org>\r\nTo: support@localhost\r\n"
                f"Subject: e2e question {n}\r\nMessage-ID: <e2e.{n}@imap-test.example>\r\n"
                f"Date: Mon, 03 Mar 2025 10:00:00 +0000\r\n\r\nHello {n}\r\n"
            ).encode(),
        )
    db = Database(f"sqlite:///{db_path}")
    start = time.monotonic()
    try:
        inbound = "SELECT count(*) FROM inbound"
        for kill_at in (60, 200):  # kill twice, each time in the middle of the stream
            proc = mailbot("run")
            try:
                wait_for(lambda n=kill_at: scalar(db, inbound) >= n, f"{kill_at} accepted", log)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            left = folder_count(client, "INBOX")
            assert 0 < left < TOTAL, "the kill must land mid-stream"
        proc = mailbot("run")
        try:
            wait_for(lambda: folder_count(client, "Processed") == TOTAL, "all moved", log)
            done = "SELECT count(*) FROM inbound WHERE status = 'done'"
            wait_for(lambda: scalar(db, done) == TOTAL, "all processed", log)
            elapsed = time.monotonic() - start
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        print(f"\n{TOTAL} mails through two SIGKILLs in {elapsed:.1f}s")
        assert folder_count(client, "INBOX") == 0
        assert scalar(db, "SELECT count(*) FROM inbound") == TOTAL
        assert scalar(db, "SELECT count(DISTINCT message_id) FROM inbound") == TOTAL
        assert scalar(db, "SELECT count(*) FROM inbound WHERE source <> 'imap:support'") == 0
        mine = "FROM message WHERE message_id LIKE '%@imap-test.example%'"
        assert scalar(db, f"SELECT count(*) {mine}") == TOTAL
        assert scalar(db, f"SELECT count(DISTINCT message_id) {mine}") == TOTAL
        assert "imap_connected" in log.read_text() or "connected to" in log.read_text()
    finally:
        db.close()
        client.logout()
