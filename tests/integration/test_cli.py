"""The ``mailbot`` command line, called in-process through ``cli.main`` on a SQLite file."""

from __future__ import annotations

import gc
import io
import json
import logging
import mailbox
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mailbot import cli
from mailbot.store import inbox
from mailbot.store.db import Database
from mailbot.store.models import InboundStatus
from tests.conftest import EMAILS

EX_OK, EX_FAIL, EX_USAGE, EX_TEMPFAIL = 0, 1, 2, 75


@pytest.fixture(autouse=True)
def _environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MAILBOT_DATA_DIR", str(tmp_path))
    # No rules: tickets keep the defaults (other, medium); rules have their own tests.
    (tmp_path / "no-rules.yaml").write_text("[]\n")
    monkeypatch.setenv("MAILBOT_RULES_FILE", str(tmp_path / "no-rules.yaml"))
    # cli.main points the root logger at the (captured) stderr; put the old handlers back.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def call(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Callable[[], Database]]:
    """Open the CLI's SQLite database (after the test made it) for checking."""
    opened: list[Database] = []

    def open_db() -> Database:
        db = Database(f"sqlite:///{(tmp_path / 'mailbot.db').resolve()}")
        opened.append(db)
        return db

    yield open_db
    for db in opened:
        db.close()


@pytest.fixture
def migrated(run: Run) -> None:
    code, out, _ = run("db", "upgrade")
    assert code == EX_OK, out


def make_mail(n: int, *, sender: str | None = None, subject: str | None = None) -> bytes:
    return (
        f"From: User {n} <{sender or f'user{n}@example.com'}>\n"
        "To: support@example.org\n"
        f"Subject: {subject or f'Question number {n}'}\n"
        f"Message-ID: <cli-{n}@example.com>\n"
        "Date: Mon, 02 Jan 2023 10:00:00 +0100\n"
        "\n"
        f"Body of mail {n}.\n"
    ).encode()


def five_mails_one_duplicate() -> list[bytes]:
    mails = [make_mail(n) for n in range(1, 5)]
    # Same Message-ID as mail 2, re-sent with another trace header: a duplicate.
    mails.insert(3, b"Received: from relay.example by mx.example\n" + make_mail(2))
    return mails


def stdin_with(monkeypatch: pytest.MonkeyPatch, raw: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(raw)))


def ticket_numbers(run: Run) -> list[int]:
    code, out, _ = run("ticket", "list", "--json")
    assert code == EX_OK
    return sorted(t["number"] for t in json.loads(out))


# -- db, check-config ---------------------------------------------------------------------


def test_db_check_fails_before_upgrade_and_passes_after(run: Run) -> None:
    code, _, err = run("db", "check")
    assert code == EX_FAIL
    assert "mailbot db upgrade" in err
    code, out, _ = run("db", "upgrade")
    assert code == EX_OK
    assert "database at revision" in out
    code, out, _ = run("db", "check")
    assert code == EX_OK
    assert "(head)" in out
    code, out, _ = run("db", "current")
    assert code == EX_OK
    current, head = out.split()[1], out.split()[3]
    assert current == head != "None"


def test_db_upgrade_twice_is_fine(run: Run) -> None:
    assert run("db", "upgrade")[0] == EX_OK
    assert run("db", "upgrade")[0] == EX_OK
    assert run("db", "check")[0] == EX_OK


def test_check_config_masks_the_database_password(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "MAILBOT_DATABASE_URL", "postgresql+psycopg://mailbot:s3cr3t-p4ss@db.internal:5432/helpdesk"
    )
    monkeypatch.setenv("MAILBOT_SMTP__PORT", "2600")
    code, out, _ = run("check-config")
    assert code == EX_OK
    assert "s3cr3t-p4ss" not in out
    data = json.loads(out)
    assert data["database_url"] == "postgresql+psycopg://mailbot:***@db.internal:5432/helpdesk"
    assert data["smtp"]["port"] == 2600
    assert data["inbox"]["max_attempts"] == 3


def test_check_config_shows_the_default_sqlite_url(run: Run, tmp_path: Path) -> None:
    code, out, _ = run("check-config")
    assert code == EX_OK
    data = json.loads(out)
    assert data["database_url"] == f"sqlite:///{(tmp_path / 'mailbot.db').resolve()}"
    assert Path(data["data_dir"]) == tmp_path


@pytest.mark.parametrize(
    "argv",
    [
        ("check-config",),
        ("db", "check"),
        ("db", "upgrade"),
        ("ticket", "list"),
        ("inbox", "list"),
        ("run",),
    ],
)
def test_invalid_config_is_a_usage_error_naming_the_setting(
    run: Run, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...]
) -> None:
    monkeypatch.setenv("MAILBOT_SMTP__PORT", "notanumber")
    code, out, err = run(*argv)
    assert code == EX_USAGE
    assert "smtp.port" in err
    assert out == ""


def test_invalid_config_makes_ingest_tempfail(
    run: Run, monkeypatch: pytest.MonkeyPatch, migrated: None, database: Callable[[], Database]
) -> None:
    monkeypatch.setenv("MAILBOT_SMTP__PORT", "notanumber")
    stdin_with(monkeypatch, make_mail(1))
    code, _, err = run("ingest")
    assert code == EX_TEMPFAIL
    assert "smtp.port" in err
    assert inbox.list_inbound(database()) == []


# -- ingest ---------------------------------------------------------------------------------


def test_ingest_one_mail_from_stdin(
    run: Run, monkeypatch: pytest.MonkeyPatch, migrated: None, database: Callable[[], Database]
) -> None:
    raw = make_mail(1).replace(b"\n", b"\r\n") + b"8-bit \xe9\xff and NUL \x00\r\n"
    stdin_with(monkeypatch, raw)
    code, _, _ = run("ingest")
    assert code == EX_OK
    (row,) = inbox.list_inbound(database())
    assert row.source == "pipe"
    assert row.status is InboundStatus.received  # the daemon processes it
    assert row.message_id == "cli-1@example.com"
    found = inbox.get_inbound(database(), row.id)
    assert found is not None
    assert found[1] == raw
    # The MTA retries after a lost exit status: still one row, still success.
    stdin_with(monkeypatch, raw)
    assert run("ingest")[0] == EX_OK
    assert len(inbox.list_inbound(database())) == 1


def test_ingest_into_an_unmigrated_database_tempfails(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin_with(monkeypatch, make_mail(1))
    code, _, _ = run("ingest")
    assert code == EX_TEMPFAIL
    # The other commands say what to do, with a plain failure.
    code, _, err = run("ticket", "list")
    assert code == EX_FAIL
    assert "mailbot db upgrade" in err


def test_ingest_too_large_is_refused(
    run: Run, monkeypatch: pytest.MonkeyPatch, migrated: None, database: Callable[[], Database]
) -> None:
    monkeypatch.setenv("MAILBOT_SMTP__MAX_MESSAGE_SIZE", "100")
    stdin_with(monkeypatch, make_mail(1) + b"x" * 200)
    code, _, _ = run("ingest")
    assert code not in (EX_OK, EX_TEMPFAIL)
    assert inbox.list_inbound(database()) == []


def _mbox(path: Path, mails: list[bytes]) -> Path:
    box = mailbox.mbox(str(path), create=True)
    try:
        for raw in mails:
            box.add(raw)
        box.flush()
    finally:
        box.close()
    return path


def _maildir(path: Path, mails: list[bytes]) -> Path:
    box = mailbox.Maildir(str(path), create=True)
    for raw in mails:
        box.add(raw)
    return path


@pytest.mark.parametrize("kind", ["mbox", "maildir"])
def test_ingest_import_creates_tickets_and_skips_duplicates(
    run: Run, tmp_path: Path, migrated: None, database: Callable[[], Database], kind: str
) -> None:
    mails = five_mails_one_duplicate()
    if kind == "mbox":
        source = _mbox(tmp_path / "import.mbox", mails)
    else:
        source = _maildir(tmp_path / "import-maildir", mails)
    code, _, err = run("ingest", f"--{kind}", str(source))
    assert code == EX_OK
    assert "accepted 4 new mail(s), 1 already known" in err
    assert ticket_numbers(run) == [1, 2, 3, 4]
    counts = inbox.counts(database())
    assert counts[InboundStatus.done] == 4
    assert sum(counts.values()) == 4
    # Importing the same file again creates nothing.
    code, _, err = run("ingest", f"--{kind}", str(source))
    assert code == EX_OK
    assert "accepted 0 new mail(s), 5 already known" in err
    assert ticket_numbers(run) == [1, 2, 3, 4]


@pytest.mark.parametrize("kind", ["mbox", "maildir"])
def test_ingest_no_process_only_accepts(
    run: Run, tmp_path: Path, migrated: None, database: Callable[[], Database], kind: str
) -> None:
    mails = five_mails_one_duplicate()
    if kind == "mbox":
        source = _mbox(tmp_path / "import.mbox", mails)
    else:
        source = _maildir(tmp_path / "import-maildir", mails)
    code, _, _ = run("ingest", f"--{kind}", str(source), "--no-process")
    assert code == EX_OK
    assert ticket_numbers(run) == []
    counts = inbox.counts(database())
    assert counts[InboundStatus.received] == 4
    assert sum(counts.values()) == 4
    sources = {r.source for r in inbox.list_inbound(database())}
    assert sources == {"import"}


def test_ingest_commits_an_import_in_batches(
    run: Run,
    tmp_path: Path,
    migrated: None,
    database: Callable[[], Database],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches of 2: a duplicate inside a batch and one across batches are both skipped."""
    monkeypatch.setattr(cli, "IMPORT_BATCH_MAILS", 2)
    committed: list[int] = []
    accept_many = inbox.accept_many

    def counting(db: Database, raws: list[bytes], **kwargs: Any) -> list[inbox.Accepted]:
        committed.append(len(raws))
        return accept_many(db, raws, **kwargs)

    monkeypatch.setattr(inbox, "accept_many", counting)
    mails = [make_mail(1), make_mail(1), make_mail(2), make_mail(3), make_mail(2)]
    code, _, err = run("ingest", "--mbox", str(_mbox(tmp_path / "import.mbox", mails)))
    assert code == EX_OK
    assert committed == [2, 2, 1]
    assert "accepted 3 new mail(s), 2 already known" in err
    assert ticket_numbers(run) == [1, 2, 3]
    assert inbox.counts(database())[InboundStatus.done] == 3


def test_ingest_mbox_closes_the_mbox_file(run: Run, tmp_path: Path, migrated: None) -> None:
    source = _mbox(tmp_path / "import.mbox", five_mails_one_duplicate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        code, _, _ = run("ingest", "--mbox", str(source))
        gc.collect()
    assert code == EX_OK
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


@pytest.mark.parametrize("kind", ["mbox", "maildir"])
def test_ingest_missing_source_is_reported_not_raised(
    run: Run, tmp_path: Path, migrated: None, kind: str
) -> None:
    missing = tmp_path / f"nope.{kind}"
    code, _, err = run("ingest", f"--{kind}", str(missing))
    assert code != EX_OK
    assert str(missing) in err


# -- ticket -----------------------------------------------------------------------------------


@pytest.fixture
def with_tickets(run: Run, tmp_path: Path, migrated: None) -> None:
    """Ticket 1 with an attachment and a reply, ticket 2 plain."""
    reply = (
        b"From: Paula Parts <paula@example.com>\n"
        b"To: support@example.org\n"
        b"Subject: Re: [#1] Files attached\n"
        b"Message-ID: <cli-reply@example.com>\n"
        b"In-Reply-To: <store-attachments@example.com>\n"
        b"\n"
        b"Did you get them?\n"
    )
    mails = [(EMAILS / "store-attachments.eml").read_bytes(), make_mail(7), reply]
    # Maildir keys are not ordered: import one at a time so the numbers are known.
    for n, raw in enumerate(mails):
        source = _maildir(tmp_path / f"tickets-{n}", [raw])
        code, _, _ = run("ingest", "--maildir", str(source))
        assert code == EX_OK


@pytest.mark.usefixtures("with_tickets")
def test_ticket_list_json(run: Run) -> None:
    code, out, _ = run("ticket", "list", "--json")
    assert code == EX_OK
    data = json.loads(out)
    assert [t["number"] for t in data] == [2, 1]  # newest first
    first = data[1]
    assert first["subject"] == "Files attached"
    assert first["status"] == "new"
    assert first["priority"] == "medium"
    assert first["category"] == "other"
    assert first["requester"] == "paula@example.com"
    code, out, _ = run("ticket", "list")
    assert code == EX_OK
    assert "paula@example.com" in out
    code, out, _ = run("ticket", "list", "--json", "--status", "closed")
    assert json.loads(out) == []


@pytest.mark.usefixtures("with_tickets")
def test_ticket_show_json(run: Run, tmp_path: Path) -> None:
    code, out, _ = run("ticket", "show", "1", "--json")
    assert code == EX_OK
    data = json.loads(out)
    assert data["number"] == 1
    assert data["requester"] == {"email": "paula@example.com", "name": "Paula Parts"}
    assert {"messages", "history"} <= data.keys()
    assert [h["field"] for h in data["history"]] == ["status"]
    assert data["history"][0]["new"] == "new"
    acks = [m for m in data["messages"] if m["direction"] == "outbound"]
    assert [m["author_type"] for m in acks] == ["system"]
    assert "event:ticket-opened" in acks[0]["flags"]
    messages = [m for m in data["messages"] if m["direction"] == "inbound"]
    assert len(messages) == 2
    assert all("attachments" in m for m in messages)
    assert messages[0]["message_id"] == "store-attachments@example.com"
    assert messages[0]["direction"] == "inbound"
    assert messages[0]["author_type"] == "user"
    assert messages[0]["text"].strip() == "Please see the attached files."
    assert messages[1]["text"].strip() == "Did you get them?"
    assert messages[1]["attachments"] == []
    attachments = messages[0]["attachments"]
    assert [a["file_name"] for a in attachments] == [
        "passwd",
        "report.pdf",
        "copy of report.pdf",
        "abs.txt",
    ]
    for a in attachments:
        key = a["storage_key"]
        assert (tmp_path / "attachments" / key[:2] / key[2:4] / key).stat().st_size == a["size"]
    code, out, _ = run("ticket", "show", "1")
    assert code == EX_OK
    assert "[attachment] report.pdf" in out


@pytest.mark.usefixtures("with_tickets")
def test_ticket_show_missing(run: Run) -> None:
    code, _out, err = run("ticket", "show", "999")
    assert code == EX_FAIL
    assert "999" in err
    code, _, _ = run("ticket", "show", "999", "--json")
    assert code == EX_FAIL


# -- inbox --------------------------------------------------------------------------------------


DEEP = (
    b"From: deep@example.com\nSubject: too deep\nContent-Type: multipart/mixed; boundary=b0\n\n"
    + (
        b"".join(
            f"--b{d - 1}\nContent-Type: multipart/mixed; boundary=b{d}\n\n".encode()
            for d in range(1, 60)
        )
    )
)


@pytest.fixture
def with_inbox(run: Run, tmp_path: Path, migrated: None) -> list[int]:
    """Two mails processed into tickets and one quarantined; their inbound ids."""
    for n, raw in enumerate([make_mail(1), DEEP, make_mail(2)]):
        source = _maildir(tmp_path / f"inbox-{n}", [raw])
        assert run("ingest", "--maildir", str(source))[0] == EX_OK
    _code, out, _ = run("inbox", "list", "--json")
    return sorted(r["id"] for r in json.loads(out))


def test_inbox_list_json(run: Run, with_inbox: list[int]) -> None:
    code, out, _ = run("inbox", "list", "--json")
    assert code == EX_OK
    data = json.loads(out)
    assert [r["id"] for r in data] == sorted(with_inbox, reverse=True)
    assert [r["status"] for r in data] == ["done", "shunted", "done"]
    assert data[1]["last_error"]
    assert "LimitExceededError" in data[1]["last_error"]
    assert data[0]["ticket_id"] is not None
    assert data[1]["ticket_id"] is None
    assert data[0]["source"] == "import"
    code, out, _ = run("inbox", "list", "--json", "--status", "shunted")
    assert [r["id"] for r in json.loads(out)] == [with_inbox[1]]
    code, out, _ = run("inbox", "list")
    assert code == EX_OK
    assert "shunted=1" in out
    assert "done=2" in out


def test_inbox_show_json(run: Run, with_inbox: list[int]) -> None:
    code, out, _ = run("inbox", "show", str(with_inbox[0]), "--json")
    assert code == EX_OK
    data = json.loads(out)
    assert data["id"] == with_inbox[0]
    assert data["status"] == "done"
    assert data["message_id"] == "cli-1@example.com"
    assert data["size"] == len(make_mail(1))
    code, out, _ = run("inbox", "show", str(with_inbox[1]))
    assert code == EX_OK
    assert "LimitExceededError" in out
    code, _, err = run("inbox", "show", "9999", "--json")
    assert code == EX_FAIL
    assert "9999" in err


def test_inbox_show_raw_writes_the_exact_bytes(
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
    database: Callable[[], Database],
) -> None:
    assert cli.main(["db", "upgrade"]) == EX_OK
    raw = b"Subject: raw\r\nMessage-ID: <raw@x>\r\n\r\n\x00\xff\xfe\r\nlf only\nend\r\n"
    stdin_with(monkeypatch, raw)
    assert cli.main(["ingest"]) == EX_OK
    (row,) = inbox.list_inbound(database())
    capsysbinary.readouterr()
    assert cli.main(["inbox", "show", str(row.id), "--raw"]) == EX_OK
    assert capsysbinary.readouterr().out == raw


def test_inbox_retry_all_shunted(
    run: Run, with_inbox: list[int], database: Callable[[], Database]
) -> None:
    code, _, err = run("inbox", "retry")
    assert code == EX_USAGE
    assert "--all-shunted" in err
    code, out, _ = run("inbox", "retry", "--all-shunted")
    assert code == EX_OK
    assert "requeued 1 mail(s)" in out
    found = inbox.get_inbound(database(), with_inbox[1])
    assert found is not None
    assert found[0].status is InboundStatus.received
    assert found[0].attempts == 0
    code, out, _ = run("inbox", "retry", "--all-shunted")
    assert "requeued 0 mail(s)" in out
    # By id: a done row can be sent through again on purpose.
    code, out, _ = run("inbox", "retry", str(with_inbox[0]))
    assert code == EX_OK
    assert "requeued 1 mail(s)" in out


# -- mail inspect -----------------------------------------------------------------------------


def test_mail_inspect_json(run: Run) -> None:
    code, out, _ = run("mail", "inspect", str(EMAILS / "store-inspect.eml"), "--json")
    assert code == EX_OK
    data: dict[str, Any] = json.loads(out)
    assert data["message_id"] == "store-inspect@example.com"
    assert data["subject"] == "Grüße with a file"
    assert data["from"] == {"email": "dana@example.com", "name": "Dana Inspect"}
    assert data["to"] == [
        {"email": "support@example.org", "name": "Support"},
        {"email": "second@example.org", "name": ""},
    ]
    assert data["cc"] == [{"email": "carl@example.net", "name": "Carl Copy"}]
    assert data["reply_to"] == [{"email": "replies@example.com", "name": ""}]
    assert data["in_reply_to"] == ["parent@example.com"]
    assert data["references"] == ["root@example.com", "parent@example.com"]
    assert data["text"].strip() == "Hallo, anbei die Datei."
    assert data["attachments"] == [
        {
            "filename": "data.csv",
            "content_type": "text/csv",
            "size": 8,
            "content_id": None,
            "inline": False,
        }
    ]
    assert data["defects"] == []
    assert data["fallbacks"] == []


def test_mail_inspect_reports_defects_and_fallbacks(run: Run) -> None:
    code, out, _ = run("mail", "inspect", str(EMAILS / "b34-no-boundary.eml"), "--json")
    assert code == EX_OK
    data = json.loads(out)
    assert "NoBoundaryInMultipartDefect" in data["defects"]
    assert "multipart-unparsed-as-text" in data["fallbacks"]


def test_mail_inspect_text_and_parse_error(run: Run, tmp_path: Path) -> None:
    code, out, _ = run("mail", "inspect", str(EMAILS / "store-inspect.eml"))
    assert code == EX_OK
    assert "store-inspect@example.com" in out
    assert "Hallo, anbei die Datei." in out
    deep = tmp_path / "deep.eml"
    deep.write_bytes(DEEP)
    code, out, _ = run("mail", "inspect", str(deep), "--json")
    assert code == EX_FAIL
    assert "LimitExceededError" in json.loads(out)["error"]
