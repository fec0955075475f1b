"""The IMAP poller against a real Dovecot (B-23, B-25, B-26, B-50; DESIGN invariants 1-2).

Each test gets its own Dovecot user (own mail store), a fresh SQLite inbox
(PostgreSQL for the two-poller test) and runs ``MailboxPoller`` in a thread,
as the daemon does. Every wait polls with a deadline; nothing sleeps to assert.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient
from sqlalchemy import text

from mailbot import cli
from mailbot.config import ImapMailboxSettings
from mailbot.ingest import imap_check
from mailbot.ingest.imap import MailboxPoller
from mailbot.store import imap_state, schema
from mailbot.store.db import Database
from mailbot.testing import ServiceMissingError
from tests.conftest import missing_service
from tests.dovecot import DovecotServer

WAIT = 60.0


# -- fixtures and helpers ----------------------------------------------------------------


USERS = [f"user{n}" for n in range(30)]


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    try:
        server = DovecotServer({name: f"pw-{name}-{uuid.uuid4().hex[:6]}" for name in USERS})
    except ServiceMissingError as exc:
        missing_service(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def user(dovecot: DovecotServer) -> str:
    """A user of its own (own mail store) for each test."""
    return USERS.pop()


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """``cli.main`` installs its log handler on stderr: put the test's handlers back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the head revision, migrated once and copied for each test."""
    path = tmp_path_factory.mktemp("template") / "mailbot.db"
    db = Database(f"sqlite:///{path}")
    schema.upgrade(db)
    db.close()
    return path


@pytest.fixture
def sqlite_db(tmp_path: Path, migrated: Path) -> Iterator[Database]:
    shutil.copy(migrated, tmp_path / "mailbot.db")
    db = Database(f"sqlite:///{tmp_path / 'mailbot.db'}")
    try:
        yield db
    finally:
        db.close()


def mailbox_for(
    dovecot: DovecotServer, user: str, tmp_path: Path, **overrides: Any
) -> ImapMailboxSettings:
    secret = tmp_path / f"{user}.password"
    if not secret.exists():
        secret.write_text(dovecot.users[user] + "\n")
    values: dict[str, Any] = {
        "name": "t",
        "host": "127.0.0.1",
        "port": dovecot.port,
        "tls": "none",
        "username": user,
        "password_file": str(secret),
        "poll_seconds": 0.3,
        "idle_seconds": 30,
        "timeout": 10,
        "batch_size": 50,
        "lease_seconds": 6,
        "retry_max_seconds": 0.5,
    }
    values.update(overrides)
    return ImapMailboxSettings.model_validate(values)


_OPEN: list[IMAPClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        with contextlib.suppress(Exception):
            _OPEN.pop().shutdown()


def imap(dovecot: DovecotServer, user: str) -> IMAPClient:
    """A test-side client (closed after the test), like a user's mail program."""
    client = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False, timeout=10)
    _OPEN.append(client)
    client.login(user, dovecot.users[user])
    return client


def make_mail(tag: str, n: int, size: int = 0) -> bytes:
    body = f"mail {n} of {tag}\r\n" + ("x" * 76 + "\r\n") * (size // 78)
    return (
        f"From: Customer {n} <c{n}@example.org>\r\n"
        f"To: support@localhost\r\n"
        f"Subject: {tag} question {n}\r\n"
        f"Message-ID: <{tag}.{n}@imap-test.example>\r\n"
        f"Date: Mon, 03 Mar 2025 10:00:00 +0000\r\n"
        f"\r\n{body}"
    ).encode()


def append(client: IMAPClient, folder: str, tag: str, numbers: range | list[int]) -> None:
    for n in numbers:
        client.append(folder, make_mail(tag, n))


def count(client: IMAPClient, folder: str) -> int:
    """Messages in ``folder`` (0 when missing); -1 on Dovecot's rare SERVERBUG under a race."""
    if not client.folder_exists(folder):
        return 0
    try:
        return int(client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"])
    except IMAPClient.Error as exc:
        if "SERVERBUG" not in str(exc):
            raise
        return -1


def inbound(db: Database) -> list[tuple[str, str]]:
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT message_id, source FROM inbound ORDER BY id")).all()
    return [(str(r[0]), str(r[1])) for r in rows]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def running(poller: MailboxPoller) -> Iterator[threading.Thread]:
    thread = threading.Thread(target=poller.run, name="test-poller", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        poller.stop()
        thread.join(timeout=20)
        assert not thread.is_alive(), "poller did not stop"


def assert_exactly_once(db: Database, tag: str, numbers: range | list[int]) -> None:
    ids = [mid for mid, _ in inbound(db) if f"{tag}." in mid]
    expected = {f"{tag}.{n}@imap-test.example" for n in numbers}
    assert len(ids) == len(set(ids)), "duplicate inbound rows"
    assert set(ids) == expected


# -- 500 mails while the poller runs ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["idle", "poll"])
def test_500_mails_appended_while_polling(
    dovecot: DovecotServer, user: str, sqlite_db: Database, tmp_path: Path, mode: str
) -> None:
    settings = mailbox_for(dovecot, user, tmp_path, idle=mode == "idle", poll_seconds=0.5)
    wakes = []
    poller = MailboxPoller(sqlite_db, settings, on_accepted=lambda: wakes.append(1))
    client = imap(dovecot, user)
    start = time.monotonic()
    with running(poller):
        append(client, "INBOX", mode, range(500))
        wait_for(lambda: count(client, "Processed") == 500, "500 mails in Processed")
    elapsed = time.monotonic() - start
    print(f"\n{mode}: 500 mails appended and taken in {elapsed:.1f}s ({500 / elapsed:.0f}/s)")
    assert_exactly_once(sqlite_db, mode, range(500))
    assert count(client, "INBOX") == 0
    assert len(wakes) == 500
    assert {source for _, source in inbound(sqlite_db)} == {"imap:t"}
    client.select_folder("Processed", readonly=True)
    assert client.search(["SEEN"]) == [], "BODY.PEEK[] must not set \\Seen"
    client.logout()


# -- failures mid-batch -----------------------------------------------------------------------


class RestartingPoller(MailboxPoller):
    """Restarts Dovecot between the size FETCH and the body FETCH of its third batch."""

    def __init__(self, *args: Any, server: DovecotServer, **kw: Any):
        super().__init__(*args, **kw)
        self.server, self.batches = server, 0

    def fetch_bodies(self, uids: Any) -> Any:
        self.batches += 1
        if self.batches == 3:
            self.server.restart()
        return super().fetch_bodies(uids)


def test_dovecot_restarted_mid_batch(
    dovecot: DovecotServer, user: str, sqlite_db: Database, tmp_path: Path
) -> None:
    client = imap(dovecot, user)
    append(client, "INBOX", "restart", range(100))
    client.logout()
    settings = mailbox_for(dovecot, user, tmp_path, batch_size=10)
    poller = RestartingPoller(sqlite_db, settings, server=dovecot)
    with running(poller):
        wait_for(lambda: poller.batches > 3, "batches after the restart")
        client = imap(dovecot, user)
        wait_for(lambda: count(client, "Processed") == 100, "100 mails in Processed")
    assert poller.failures >= 1, "the restart must have cut a batch"
    assert_exactly_once(sqlite_db, "restart", range(100))
    assert count(client, "INBOX") == 0
    client.logout()


def test_uidvalidity_change_rescans_without_duplicates(
    dovecot: DovecotServer, user: str, sqlite_db: Database, tmp_path: Path
) -> None:
    client = imap(dovecot, user)
    client.create_folder("Support")
    append(client, "Support", "uv", range(5))
    settings = mailbox_for(dovecot, user, tmp_path, folders=["Support"])
    poller = MailboxPoller(sqlite_db, settings)
    with running(poller):
        wait_for(lambda: count(client, "Processed") == 5, "the first five processed")
        old = imap_state.get_cursor(sqlite_db, "t", "Support")
        assert old is not None
        assert old.last_uid == 5
        client.delete_folder("Support")  # the poller, IDLE in it, is disconnected
        if int(time.time()) == old.uidvalidity:  # Dovecot derives UIDVALIDITY from the clock
            wait_for(lambda: int(time.time()) != old.uidvalidity, "the next second")
        client.create_folder("Support")
        # New mail gets UIDs 1-3, below the stale cursor: a poller ignoring UIDVALIDITY loses it.
        append(client, "Support", "uv", range(100, 103))
        append(client, "Support", "uv", range(5))  # restored copies of taken mail
        wait_for(lambda: count(client, "Processed") == 13, "the recreated folder processed")
    new = imap_state.get_cursor(sqlite_db, "t", "Support")
    assert new is not None
    assert new.uidvalidity != old.uidvalidity
    assert new.last_uid == 8
    assert_exactly_once(sqlite_db, "uv", [*range(5), *range(100, 103)])
    # A fresh session: the one that deleted the folder can keep failing STATUS on it
    # with Dovecot's SERVERBUG.
    fresh = imap(dovecot, user)
    wait_for(lambda: count(fresh, "Support") == 0, "the recreated folder emptied")
    fresh.logout()
    client.logout()


class ExpungingPoller(MailboxPoller):
    """Has another client expunge one mail right before this poller's FETCH."""

    def __init__(self, *args: Any, seam: str, victim: Callable[[list[int]], None], **kw: Any):
        super().__init__(*args, **kw)
        self.seam, self.victim, self.struck = seam, victim, False

    def strike(self, uids: Any) -> None:
        if not self.struck and len(uids) > 2:
            self.struck = True
            self.victim(list(uids))

    def fetch_sizes(self, uids: Any) -> Any:
        if self.seam == "sizes":
            self.strike(uids)
        return super().fetch_sizes(uids)

    def fetch_bodies(self, uids: Any) -> Any:
        if self.seam == "bodies":
            self.strike(uids)
        return super().fetch_bodies(uids)


@pytest.mark.parametrize("seam", ["sizes", "bodies"])
def test_message_expunged_between_search_and_fetch(
    dovecot: DovecotServer, user: str, sqlite_db: Database, tmp_path: Path, seam: str
) -> None:
    client = imap(dovecot, user)
    append(client, "INBOX", "gone", range(10))
    other = imap(dovecot, user)

    def expunge_second(uids: list[int]) -> None:
        other.select_folder("INBOX")
        other.add_flags([uids[1]], [b"\\Deleted"])
        other.uid_expunge([uids[1]])

    poller = ExpungingPoller(
        sqlite_db, mailbox_for(dovecot, user, tmp_path), seam=seam, victim=expunge_second
    )
    with running(poller) as thread:
        wait_for(lambda: count(client, "INBOX") == 0, "INBOX emptied")
        assert thread.is_alive()
    assert poller.struck
    # the expunged mail is gone (someone else removed it); nothing else was skipped
    assert_exactly_once(sqlite_db, "gone", [n for n in range(10) if n != 1])
    assert count(client, "Processed") == 9
    client.logout()
    other.logout()


def test_wrong_password_retries_then_recovers(
    dovecot: DovecotServer,
    user: str,
    sqlite_db: Database,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = tmp_path / "wrong.password"
    secret.write_text("not-the-password\n")
    settings = mailbox_for(dovecot, user, tmp_path, password_file=str(secret))
    client = imap(dovecot, user)
    append(client, "INBOX", "pw", range(3))
    poller = MailboxPoller(sqlite_db, settings)
    with caplog.at_level(logging.WARNING, logger="mailbot.ingest.imap"), running(poller) as thread:
        wait_for(lambda: poller.failures >= 2, "two refused logins")
        assert thread.is_alive()
        assert inbound(sqlite_db) == []
        refused = [r for r in caplog.records if getattr(r, "action", "") == "imap_login_failed"]
        assert refused
        message = refused[0].getMessage()
        assert "login refused" in message
        assert user in message
        assert "not-the-password" not in caplog.text
        secret.write_text(dovecot.users[user] + "\n")  # the operator fixes the file
        wait_for(lambda: count(client, "Processed") == 3, "mail taken after the fix")
    assert_exactly_once(sqlite_db, "pw", range(3))
    client.logout()


def test_self_signed_certificate_refused_unless_trusted(
    dovecot: DovecotServer,
    user: str,
    sqlite_db: Database,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = imap(dovecot, user)
    append(client, "INBOX", "tls", range(2))
    untrusted = mailbox_for(dovecot, user, tmp_path, tls="tls", port=dovecot.tls_port)
    poller = MailboxPoller(sqlite_db, untrusted)
    with caplog.at_level(logging.WARNING, logger="mailbot.ingest.imap"), running(poller) as thread:
        wait_for(lambda: poller.failures >= 2, "two refused handshakes")
        assert thread.is_alive()
    assert inbound(sqlite_db) == []
    assert count(client, "INBOX") == 2
    actions = {getattr(r, "action", "") for r in caplog.records}
    assert "imap_tls_failed" in actions
    assert "ca_file" in caplog.text

    trusted = mailbox_for(
        dovecot, user, tmp_path, tls="tls", port=dovecot.tls_port, ca_file=str(dovecot.cert_path)
    )
    with running(MailboxPoller(sqlite_db, trusted)):
        wait_for(lambda: count(client, "Processed") == 2, "mail taken over trusted TLS")
    assert_exactly_once(sqlite_db, "tls", range(2))
    client.logout()


def test_starttls_is_required_and_checked(
    dovecot: DovecotServer, user: str, sqlite_db: Database, tmp_path: Path
) -> None:
    client = imap(dovecot, user)
    append(client, "INBOX", "starttls", range(2))
    settings = mailbox_for(dovecot, user, tmp_path, tls="starttls", ca_file=str(dovecot.cert_path))
    with running(MailboxPoller(sqlite_db, settings)):
        wait_for(lambda: count(client, "Processed") == 2, "mail taken over STARTTLS")
    untrusted = mailbox_for(dovecot, user, tmp_path, tls="starttls", name="u")
    poller = MailboxPoller(sqlite_db, untrusted)
    append(client, "INBOX", "starttls", range(2, 3))
    with running(poller):
        wait_for(lambda: poller.failures >= 1, "a refused STARTTLS handshake")
    assert count(client, "INBOX") == 1
    client.logout()


# -- oversize, flag mode, check --------------------------------------------------------------


def test_oversized_mail_stays_on_the_server_and_is_listed(
    dovecot: DovecotServer,
    user: str,
    sqlite_db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    keep_logging: None,
) -> None:
    client = imap(dovecot, user)
    client.append("INBOX", make_mail("big", 1, size=20_000))
    append(client, "INBOX", "small", range(2))
    settings = mailbox_for(dovecot, user, tmp_path, max_message_size=10_000)
    with running(MailboxPoller(sqlite_db, settings)):
        wait_for(lambda: count(client, "Processed") == 2, "small mail processed")
        wait_for(lambda: count(client, "Oversize") == 1, "big mail in Oversize")
    rows = inbound(sqlite_db)
    assert ("big.1@imap-test.example", "imap:t") not in rows
    notices = [mid for mid, source in rows if source == "imap:t:oversize"]
    assert len(notices) == 1
    client.select_folder("Oversize", readonly=True)
    assert client.search(["SEEN"]) == [], "the big mail was never downloaded"

    monkeypatch.setenv("MAILBOT_DATABASE_URL", sqlite_db.url)
    assert cli.main(["inbox", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    notice = next(r for r in listed if r["source"] == "imap:t:oversize")
    assert cli.main(["inbox", "show", str(notice["id"]), "--raw"]) == 0
    raw = capsys.readouterr().out
    assert "Oversized message left on the IMAP server" in raw
    assert "<big.1@imap-test.example>" in raw
    assert "Oversize" in raw
    client.logout()


def test_flag_mode_leaves_mail_in_place(
    dovecot: DovecotServer, user: str, sqlite_db: Database, tmp_path: Path
) -> None:
    client = imap(dovecot, user)
    append(client, "INBOX", "flag", range(4))
    settings = mailbox_for(dovecot, user, tmp_path, processed_action="flag")
    client.select_folder("INBOX", readonly=True)

    def flagged() -> int:
        client.noop()
        return len(client.search(["KEYWORD", "$MailbotProcessed"]))

    with running(MailboxPoller(sqlite_db, settings)):
        wait_for(lambda: flagged() == 4, "four flagged mails")
    assert_exactly_once(sqlite_db, "flag", range(4))
    assert count(client, "INBOX") == 4
    assert not client.folder_exists("Processed")
    client.logout()


def test_imap_check_changes_nothing(
    dovecot: DovecotServer,
    user: str,
    sqlite_db: Database,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    keep_logging: None,
) -> None:
    client = imap(dovecot, user)
    append(client, "INBOX", "check", range(3))
    client.append("INBOX", make_mail("check", 9, size=20_000))
    settings = mailbox_for(dovecot, user, tmp_path, max_message_size=10_000)
    config = tmp_path / "mailbot.toml"
    config.write_text(
        f'database_url = "{sqlite_db.url}"\n[[imap]]\n'
        + "".join(
            f"{key} = {json.dumps(value)}\n"
            for key, value in settings.model_dump(mode="json").items()
        )
    )
    assert cli.main(["--config", str(config), "imap", "check"]) == 0
    out = capsys.readouterr().out
    assert "mailbox t:" in out
    assert "INBOX" in out
    assert "would fetch 3 new message(s)" in out
    assert "1 message(s) over 10000 bytes" in out
    assert "Processed: missing: the poller would create it" in out
    assert dovecot.users[user] not in out
    # nothing changed: no folder, no flag, no inbound row, no cursor
    assert not client.folder_exists("Processed")
    client.select_folder("INBOX", readonly=True)
    assert client.search(["SEEN"]) == []
    assert count(client, "INBOX") == 4
    assert inbound(sqlite_db) == []
    assert imap_state.get_cursor(sqlite_db, "t", "INBOX") is None

    wrong = settings.model_copy(update={"port": dovecot.tls_port, "tls": "tls"})
    buffer = io.StringIO()
    assert imap_check.check([wrong], None, buffer) == 1
    assert "cannot connect" in buffer.getvalue()
    client.logout()


# -- two pollers, one mailbox, one PostgreSQL ---------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
def test_two_pollers_on_one_mailbox_never_duplicate(
    dovecot: DovecotServer, user: str, pg_url: str, tmp_path: Path
) -> None:
    first_db, second_db = Database(pg_url), Database(pg_url)
    schema.upgrade(first_db)
    settings = mailbox_for(dovecot, user, tmp_path, batch_size=10, lease_seconds=3)
    first = MailboxPoller(first_db, settings, holder="host-a")
    second = MailboxPoller(second_db, settings, holder="host-b")
    client = imap(dovecot, user)
    try:
        with running(first), running(second):
            append(client, "INBOX", "two", range(150))
            wait_for(lambda: count(client, "Processed") == 150, "150 mails processed")
            # exactly one of them holds the mailbox; the other only waited
            assert sorted([first.accepted, second.accepted]) == [0, 150]
            leader, follower = (first, second) if first.accepted else (second, first)
            leader.stop()  # the leader leaves: the follower takes over
            append(client, "INBOX", "two", range(150, 200))
            wait_for(lambda: count(client, "Processed") == 200, "the follower took over")
            assert follower.accepted == 50
        assert_exactly_once(first_db, "two", range(200))
    finally:
        client.logout()
        first_db.close()
        second_db.close()
