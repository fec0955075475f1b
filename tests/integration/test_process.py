"""The pipeline (``mailbot.process``): one mail, one transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections import Counter as Tally
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, col

from mailbot.config import Settings
from mailbot.errors import StorageUnavailableError
from mailbot.message import ParsedMessage, ParseLimits
from mailbot.parse import parse as real_parse
from mailbot.process import NO_TEXT, Pipeline, Processed
from mailbot.store import inbox
from mailbot.store.db import Database
from mailbot.store.models import (
    Attachment,
    AuthorType,
    Counter,
    Customer,
    Direction,
    History,
    Inbound,
    InboundStatus,
    Message,
    Priority,
    Ticket,
    TicketStatus,
)
from tests.conftest import EMAILS

M = TypeVar("M", bound=SQLModel)
T0 = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def make_mail(
    subject: str = "Printer is broken",
    *,
    sender: str | None = "Alice Example <alice@example.com>",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    body: str = "Hello, it does not print.",
) -> tuple[bytes, str]:
    """A small RFC 5322 mail and its Message-ID (without brackets)."""
    mid = message_id or f"mail-{next(_ids)}@client.example"
    headers = []
    if sender is not None:
        headers.append(f"From: {sender}")
    headers += [
        "To: Support <support@example.org>",
        f"Subject: {subject}",
        "Date: Mon, 02 Jan 2023 10:00:00 +0100",
        f"Message-ID: <{mid}>",
    ]
    if in_reply_to:
        headers.append(f"In-Reply-To: {in_reply_to}")
    if references:
        headers.append(f"References: {references}")
    headers += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode(), mid


def rows(db: Database, model: type[M], *where: Any) -> list[M]:
    with db.transaction() as session:
        key = inspect(model).primary_key[0]
        found = list(session.execute(select(model).where(*where).order_by(key)).scalars())
        for item in found:
            session.expunge(item)
        return found


def count(db: Database, model: type[SQLModel]) -> int:
    with db.transaction() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def inbound_row(db: Database, inbound_id: int) -> Inbound:
    (found,) = rows(db, Inbound, col(Inbound.id) == inbound_id)
    return found


def ticket_by_number(db: Database, number: int) -> Ticket:
    (found,) = rows(db, Ticket, col(Ticket.number) == number)
    return found


def messages_of(db: Database, ticket: Ticket) -> list[Message]:
    """The customer's messages of a ticket (acknowledgements have their own tests)."""
    return rows(
        db,
        Message,
        col(Message.ticket_id) == ticket.id,
        col(Message.direction) == "inbound",
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(settings_for: Callable[..., Settings], tmp_path: Path) -> Settings:
    # No rules: tickets keep the defaults (other, medium); rules have their own tests.
    (tmp_path / "no-rules.yaml").write_text("[]\n")
    return settings_for(
        inbox={"max_attempts": 3, "retry_seconds": 30}, rules_file=str(tmp_path / "no-rules.yaml")
    )


@pytest.fixture
def pipeline(db: Database, settings: Settings, clock: FakeClock) -> Pipeline:
    return Pipeline(db, settings, clock=clock)


class Deliver:
    """Accept a raw mail into the inbox and run the pipeline once."""

    def __init__(self, db: Database, pipeline: Pipeline, clock: FakeClock) -> None:
        self.db, self.pipeline, self.clock = db, pipeline, clock

    def accept(self, raw: bytes) -> int:
        accepted = inbox.accept(self.db, raw, source="smtp", clock=self.clock)
        assert not accepted.duplicate
        return accepted.inbound_id

    def __call__(self, raw: bytes) -> Processed:
        inbound_id = self.accept(raw)
        result = self.pipeline.process_next()
        assert result is not None
        assert result.inbound_id == inbound_id
        return result


@pytest.fixture
def deliver(db: Database, pipeline: Pipeline, clock: FakeClock) -> Deliver:
    return Deliver(db, pipeline, clock)


# -- new tickets ----------------------------------------------------------------------


def test_new_mail_creates_customer_and_sequential_tickets(db: Database, deliver: Deliver) -> None:
    senders = ["Alice Example <Alice@Example.com>", "bob@example.net", "Carol <carol@example.org>"]
    results = []
    for n, sender in enumerate(senders):
        raw, _ = make_mail(f"Problem {n}", sender=sender, body=f"Body {n}")
        results.append(deliver(raw))
    assert [r.outcome for r in results] == ["created"] * 3
    assert [r.ticket_number for r in results] == [1, 2, 3]

    customers = rows(db, Customer)
    assert [c.email for c in customers] == [
        "alice@example.com",
        "bob@example.net",
        "carol@example.org",
    ]
    assert customers[0].name == "Alice Example"

    tickets = rows(db, Ticket)
    assert [t.number for t in tickets] == [1, 2, 3]
    for n, (ticket, customer) in enumerate(zip(tickets, customers, strict=True)):
        assert ticket.status == TicketStatus.new
        assert ticket.priority == Priority.medium
        assert ticket.category == "other"
        assert ticket.subject == f"Problem {n}"
        assert ticket.requester_id == customer.id
        assert ticket.description.strip() == f"Body {n}"
        history = rows(db, History, col(History.ticket_id) == ticket.id)
        assert [(h.field, h.old_value, h.new_value) for h in history] == [("status", None, "new")]
        (message,) = messages_of(db, ticket)
        assert message.author_type == AuthorType.user
        assert message.direction == Direction.inbound
        assert message.author_email.lower() == customer.email
        assert message.text_body.strip() == f"Body {n}"
        assert "threaded-by:new" in message.flags
        assert message.inbound_id == results[n].inbound_id
        inbound = inbound_row(db, results[n].inbound_id)
        assert inbound.status == InboundStatus.done
        assert inbound.ticket_id == ticket.id
        assert inbound.processed_at is not None
        assert inbound.last_error is None
    (counter,) = rows(db, Counter)
    assert counter.value == 3


def test_process_next_on_empty_inbox(pipeline: Pipeline) -> None:
    assert pipeline.process_next() is None


def test_reply_with_token_from_same_sender_appends(db: Database, deliver: Deliver) -> None:
    raw, _ = make_mail("Printer is broken")
    assert deliver(raw).ticket_number == 1
    reply, _ = make_mail("Re: [#1] Printer is broken", body="Still broken.")
    result = deliver(reply)
    assert result.outcome == "appended"
    assert result.ticket_number == 1
    assert count(db, Ticket) == 1
    ticket = ticket_by_number(db, 1)
    messages = messages_of(db, ticket)
    assert len(messages) == 2
    assert messages[1].text_body.strip() == "Still broken."
    assert "threaded-by:subject-token" in messages[1].flags
    assert inbound_row(db, result.inbound_id).ticket_id == ticket.id
    assert count(db, Customer) == 1


def test_token_anywhere_in_subject_and_case_of_sender(db: Database, deliver: Deliver) -> None:
    deliver(make_mail("Question")[0])
    reply, _ = make_mail("AW: WG: [list] [#1] Question", sender="ALICE <alice@EXAMPLE.com>")
    assert deliver(reply).outcome == "appended"
    assert count(db, Ticket) == 1


@pytest.mark.parametrize("header", ["in-reply-to", "references"])
def test_reply_by_message_id_appends_without_token(
    db: Database, deliver: Deliver, header: str
) -> None:
    first, first_id = make_mail("Printer is broken")
    deliver(first)
    deliver(make_mail("Another topic", sender="zed@example.com")[0])
    kwargs = {
        "in_reply_to": f"<{first_id}>" if header == "in-reply-to" else None,
        "references": f"<unknown@elsewhere> <{first_id}>" if header == "references" else None,
    }
    reply, _ = make_mail("Re: Printer", **kwargs)  # type: ignore[arg-type]
    result = deliver(reply)
    assert result.outcome == "appended"
    assert result.ticket_number == 1
    assert count(db, Ticket) == 2
    messages = messages_of(db, ticket_by_number(db, 1))
    assert len(messages) == 2
    assert "threaded-by:references" in messages[1].flags


def test_token_reply_from_another_sender_opens_a_new_ticket(db: Database, deliver: Deliver) -> None:
    deliver(make_mail("My invoice")[0])
    intruder, _ = make_mail("Re: [#1] My invoice", sender="mallory@evil.example")
    result = deliver(intruder)
    assert result.outcome == "created"
    assert result.ticket_number == 2
    assert len(messages_of(db, ticket_by_number(db, 1))) == 1
    new = ticket_by_number(db, 2)
    history = rows(db, History, col(History.ticket_id) == new.id)
    related = [h for h in history if h.field == "related"]
    assert [h.new_value for h in related] == ["1"]
    (message,) = messages_of(db, new)
    assert "not-participant" in message.flags


def test_references_from_another_sender_do_not_append(db: Database, deliver: Deliver) -> None:
    first, first_id = make_mail("My invoice")
    deliver(first)
    other, _ = make_mail("Re: x", sender="mallory@evil.example", in_reply_to=f"<{first_id}>")
    assert deliver(other).ticket_number == 2
    assert len(messages_of(db, ticket_by_number(db, 1))) == 1


def test_token_of_a_ticket_that_does_not_exist_opens_a_new_ticket(
    db: Database, deliver: Deliver
) -> None:
    raw, _ = make_mail("Re: [#4711] old conversation")
    result = deliver(raw)
    assert result.outcome == "created"
    assert result.ticket_number == 1
    ticket = ticket_by_number(db, 1)
    history = rows(db, History, col(History.ticket_id) == ticket.id)
    assert [h.field for h in history] == ["status"]
    (message,) = messages_of(db, ticket)
    assert "threaded-by:new" in message.flags


# -- attachments, odd mail ----------------------------------------------------------------


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_attachments_are_stored_by_hash_and_names_never_become_paths(
    db: Database, deliver: Deliver, settings: Settings, tmp_path: Path
) -> None:
    raw = (EMAILS / "store-attachments.eml").read_bytes()
    before = _files(tmp_path)
    result = deliver(raw)
    after = _files(tmp_path)
    assert result.outcome == "created"

    attachment_dir = settings.attachment_dir.resolve()
    assert attachment_dir.is_relative_to(tmp_path.resolve())
    new_files = {
        p.resolve()
        for p in after - before
        if not p.name.startswith("mailbot.db")  # SQLite's own -wal/-shm files
    }
    outside = {p for p in new_files if not p.is_relative_to(attachment_dir)}
    assert outside == set(), f"files written outside the attachment dir: {outside}"
    assert not (settings.attachment_dir / "../../etc/passwd").exists()
    assert all(p.name != "passwd" for p in after)

    payloads = {
        "passwd": b"root:x:0:0:root:/root:/bin/bash\n",
        "report.pdf": b"%PDF-1.4 fake report\n",
        "copy of report.pdf": b"%PDF-1.4 fake report\n",
        "abs.txt": b"absolute\n",
    }
    (message,) = messages_of(db, ticket_by_number(db, 1))
    attachments = rows(db, Attachment, col(Attachment.message_id) == message.id)
    assert [a.file_name for a in attachments] == list(payloads)
    for attachment in attachments:
        payload = payloads[attachment.file_name]
        assert "/" not in attachment.file_name
        assert "\\" not in attachment.file_name
        assert attachment.storage_key == hashlib.sha256(payload).hexdigest()
        assert attachment.size == len(payload)
        assert not attachment.inline
        stored = attachment_dir / attachment.storage_key[:2] / attachment.storage_key[2:4]
        assert (stored / attachment.storage_key).read_bytes() == payload
    # Same content twice is one file.
    blobs = {p for p in new_files if not p.name.startswith(".tmp-")}
    assert len(blobs) == 3
    assert attachments[0].content_type == "application/octet-stream"
    assert attachments[1].content_type == "application/pdf"


def test_hostile_filenames_fixture(db: Database, deliver: Deliver, settings: Settings) -> None:
    raw = (EMAILS / "b06-filename-traversal.eml").read_bytes()
    assert deliver(raw).outcome == "created"
    attachments = rows(db, Attachment)
    assert len(attachments) >= 5
    for attachment in attachments:
        name = attachment.file_name
        assert name
        assert "/" not in name
        assert "\\" not in name
        assert "\x00" not in name
        assert not name.startswith(".")
        assert "\r" not in name
        assert "\n" not in name
        assert len(name.encode()) <= 255
        path = settings.attachment_dir / attachment.storage_key[:2] / attachment.storage_key[2:4]
        assert (path / attachment.storage_key).is_file()


def test_empty_body_is_stored_as_no_text(db: Database, deliver: Deliver) -> None:
    raw = (EMAILS / "b35-no-body.eml").read_bytes()
    assert deliver(raw).outcome == "created"
    ticket = ticket_by_number(db, 1)
    assert ticket.description == NO_TEXT == "(no text)"
    (message,) = messages_of(db, ticket)
    assert message.text_body == "(no text)"


def test_whitespace_only_body_is_stored_as_no_text(db: Database, deliver: Deliver) -> None:
    raw, _ = make_mail("blank", body=" \r\n\t\r\n")
    deliver(raw)
    (message,) = messages_of(db, ticket_by_number(db, 1))
    assert message.text_body == NO_TEXT


def test_mail_without_from_gets_a_ticket_with_no_requester(db: Database, deliver: Deliver) -> None:
    raw, _ = make_mail("Who am I", sender=None)
    result = deliver(raw)
    assert result.outcome == "created"
    ticket = ticket_by_number(db, 1)
    assert ticket.requester_id is None
    assert count(db, Customer) == 0
    (message,) = messages_of(db, ticket)
    assert "unknown-sender" in message.flags
    assert message.author_email == ""
    # A later mail without From and with the token cannot join this ticket.
    again, _ = make_mail("Re: [#1] Who am I", sender=None)
    assert deliver(again).ticket_number == 2


def test_ambiguous_from_fixture_is_unknown_sender(db: Database, deliver: Deliver) -> None:
    raw = (EMAILS / "b16-from-several.eml").read_bytes()
    deliver(raw)
    ticket = ticket_by_number(db, 1)
    assert ticket.requester_id is None
    (message,) = messages_of(db, ticket)
    assert "unknown-sender" in message.flags


# -- per-message isolation -------------------------------------------------------------


def faulty_parse(failures: dict[str, BaseException]) -> Callable[..., ParsedMessage]:
    """parse() that raises ``failures[marker]`` for a mail whose bytes hold the marker."""

    def parse(raw: bytes, limits: ParseLimits = ParseLimits()) -> ParsedMessage:  # noqa: B008
        for marker, exc in failures.items():
            if marker.encode() in raw:
                raise exc
        return real_parse(raw, limits)

    return parse


def test_a_failing_mail_is_quarantined_and_the_worker_goes_on(
    db: Database, deliver: Deliver, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "mailbot.process.parser.parse",
        faulty_parse(
            {
                "BAD-RECURSION": RecursionError("maximum recursion depth exceeded"),
                "BAD-LOOKUP": LookupError("unknown encoding: x-nonsense"),
                "BAD-VALUE": ValueError("something odd"),
            }
        ),
    )
    plan = ["good", "BAD-RECURSION", "good", "BAD-LOOKUP", "good", "BAD-VALUE", "good"]
    ids = [
        deliver.accept(make_mail(f"mail {n} {label}", sender=f"u{n}@example.com")[0])
        for n, label in enumerate(plan)
    ]
    results = []
    while (result := pipeline.process_next()) is not None:
        results.append(result)
    assert [r.inbound_id for r in results] == ids
    assert [r.outcome for r in results] == [
        "created",
        "quarantined",
        "created",
        "quarantined",
        "created",
        "quarantined",
        "created",
    ]
    assert [r.ticket_number for r in results if r.outcome == "created"] == [1, 2, 3, 4]
    expected = {1: "RecursionError", 3: "LookupError", 5: "ValueError"}
    for index, inbound_id in enumerate(ids):
        row = inbound_row(db, inbound_id)
        if index in expected:
            assert row.status == InboundStatus.shunted
            assert row.last_error is not None
            assert expected[index] in row.last_error
            assert row.ticket_id is None
            assert row.attempts == 1
        else:
            assert row.status == InboundStatus.done
            assert row.ticket_id is not None
    assert count(db, Ticket) == 4
    assert inbox.counts(db)[InboundStatus.shunted] == 3


def test_a_real_parse_error_is_quarantined(db: Database, deliver: Deliver) -> None:
    raw = b"Subject: deep\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
    for depth in range(1, 60):
        raw += (
            f"--b{depth - 1}\r\nContent-Type: multipart/mixed; boundary=b{depth}\r\n\r\n".encode()
        )
    result = deliver(raw)
    assert result.outcome == "quarantined"
    row = inbound_row(db, result.inbound_id)
    assert row.status == InboundStatus.shunted
    assert row.last_error is not None
    assert "LimitExceededError" in row.last_error
    assert count(db, Ticket) == 0


def test_transient_error_retries_with_backoff_then_quarantines_and_requeue_fixes(
    db: Database,
    deliver: Deliver,
    pipeline: Pipeline,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        "mailbot.process.parser.parse",
        faulty_parse({"FLAKY": StorageUnavailableError("database unavailable: gone")}),
    )
    inbound_id = deliver.accept(make_mail("FLAKY mail")[0])

    first = pipeline.process_next()
    assert first is not None
    assert first.outcome == "retry"
    row = inbound_row(db, inbound_id)
    assert row.status == InboundStatus.received
    assert row.attempts == 1
    assert row.next_attempt_at == T0 + timedelta(seconds=30)
    assert row.last_error is not None
    assert "StorageUnavailableError" in row.last_error
    # Not due yet: nothing to do, and a good mail is not held up by it.
    assert pipeline.process_next() is None
    good = deliver.accept(make_mail("good mail", sender="bob@example.com")[0])
    done = pipeline.process_next()
    assert done is not None
    assert done.inbound_id == good
    assert done.outcome == "created"

    clock.advance(timedelta(seconds=30))
    second = pipeline.process_next()
    assert second is not None
    assert second.outcome == "retry"
    row = inbound_row(db, inbound_id)
    assert row.attempts == 2
    assert row.next_attempt_at == clock.now + timedelta(seconds=60)  # doubled

    clock.advance(timedelta(seconds=59))
    assert pipeline.process_next() is None
    clock.advance(timedelta(seconds=1))
    third = pipeline.process_next()
    assert third is not None
    assert third.outcome == "quarantined"
    row = inbound_row(db, inbound_id)
    assert row.status == InboundStatus.shunted
    assert row.attempts == 3
    assert row.last_error is not None
    assert "StorageUnavailableError" in row.last_error
    assert count(db, Ticket) == 1

    # The operator fixes the cause and requeues: the mail becomes a ticket.
    monkeypatch.undo()
    assert inbox.requeue(db, all_shunted=True) == 1
    fixed = pipeline.process_next()
    assert fixed is not None
    assert fixed.outcome == "created"
    assert fixed.ticket_number == 2
    row = inbound_row(db, inbound_id)
    assert row.status == InboundStatus.done
    assert row.ticket_id == ticket_by_number(db, 2).id
    assert pipeline.process_next() is None


def test_max_attempts_setting_is_honoured(
    db: Database,
    settings_for: Callable[..., Settings],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipeline = Pipeline(db, settings_for(inbox={"max_attempts": 1}), clock=clock)
    monkeypatch.setattr(
        "mailbot.process.parser.parse",
        faulty_parse({"FLAKY": StorageUnavailableError("down")}),
    )
    inbound_id = inbox.accept(db, make_mail("FLAKY")[0], source="smtp", clock=clock).inbound_id
    result = pipeline.process_next()
    assert result is not None
    assert result.outcome == "quarantined"
    assert inbound_row(db, inbound_id).status == InboundStatus.shunted


def test_requeued_permanent_failure_is_processed_after_the_fix(
    db: Database, deliver: Deliver, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "mailbot.process.parser.parse", faulty_parse({"BROKEN": ValueError("bug in parser")})
    )
    result = deliver(make_mail("BROKEN mail")[0])
    assert result.outcome == "quarantined"
    assert inbox.requeue(db, [result.inbound_id]) == 1
    # Still broken: quarantined again, not lost.
    again = pipeline.process_next()
    assert again is not None
    assert again.outcome == "quarantined"
    monkeypatch.undo()
    assert inbox.requeue(db, [result.inbound_id]) == 1
    fixed = pipeline.process_next()
    assert fixed is not None
    assert fixed.outcome == "created"
    assert fixed.ticket_number == 1
    assert inbound_row(db, result.inbound_id).status == InboundStatus.done


# -- one transaction -------------------------------------------------------------------


def _assert_nothing_stored(db: Database) -> None:
    for model in (Ticket, Message, History, Attachment, Customer):
        assert count(db, model) == 0, f"{model.__name__} rows survived a rolled-back mail"


@pytest.fixture
def crash_on_attachment(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def boom(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        raise RuntimeError("simulated crash while storing an attachment")

    monkeypatch.setattr("mailbot.conversation.tickets.add_attachments", boom)
    return calls


def test_crash_mid_transaction_leaves_no_half_stored_ticket(
    db: Database,
    deliver: Deliver,
    pipeline: Pipeline,
    crash_on_attachment: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = (EMAILS / "store-attachments.eml").read_bytes()
    result = deliver(raw)
    assert crash_on_attachment, "the crash point was not reached"
    assert result.outcome == "quarantined"
    _assert_nothing_stored(db)
    row = inbound_row(db, result.inbound_id)
    assert row.status == InboundStatus.shunted
    assert row.ticket_id is None
    assert row.last_error is not None
    assert "RuntimeError" in row.last_error
    assert rows(db, Counter) == []  # the ticket number was not used up

    monkeypatch.undo()
    assert inbox.requeue(db, [result.inbound_id]) == 1
    fixed = pipeline.process_next()
    assert fixed is not None
    assert fixed.outcome == "created"
    assert fixed.ticket_number == 1
    assert count(db, Ticket) == 1
    assert len(rows(db, Message, col(Message.direction) == "inbound")) == 1
    assert count(db, Attachment) == 4
    assert pipeline.process_next() is None


def test_transient_crash_mid_transaction_is_retried_not_half_stored(
    db: Database, deliver: Deliver, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise StorageUnavailableError("database connection lost")

    monkeypatch.setattr("mailbot.conversation.tickets.add_attachments", unavailable)
    result = deliver((EMAILS / "store-attachments.eml").read_bytes())
    assert result.outcome == "retry"
    _assert_nothing_stored(db)
    row = inbound_row(db, result.inbound_id)
    assert row.status == InboundStatus.received
    assert row.next_attempt_at is not None
    assert row.next_attempt_at > T0


def test_a_done_mail_is_not_processed_again(
    db: Database, deliver: Deliver, pipeline: Pipeline
) -> None:
    raw, _ = make_mail("once")
    result = deliver(raw)
    assert inbox.accept(db, raw, source="imap:INBOX").duplicate
    assert inbox.recover_stale(db, lease=None, max_attempts=3) == (0, 0)
    assert pipeline.process_next() is None
    assert count(db, Ticket) == 1
    assert len(rows(db, Message, col(Message.direction) == "inbound")) == 1
    assert inbound_row(db, result.inbound_id).status == InboundStatus.done


def test_a_worker_whose_claim_was_taken_back_cannot_store_it_twice(
    db: Database, pipeline: Pipeline, clock: FakeClock
) -> None:
    raw, _ = make_mail("slow worker")
    inbox.accept(db, raw, source="smtp", clock=clock)
    slow = inbox.claim(db, clock=clock)  # worker A claims, then stalls past the lease
    assert slow is not None
    clock.advance(timedelta(hours=1))
    assert inbox.recover_stale(db, lease=timedelta(minutes=10), max_attempts=3, clock=clock) == (
        1,
        0,
    )
    fast = pipeline.process_next()  # worker B takes it back and finishes
    assert fast is not None
    assert fast.outcome == "created"
    late = pipeline.process(slow)  # worker A wakes up and finishes too
    assert late.outcome != "created"
    assert count(db, Ticket) == 1
    assert len(rows(db, Message, col(Message.direction) == "inbound")) == 1


# -- several workers --------------------------------------------------------------------


def test_a_worker_claims_its_next_mail_in_the_same_commit(
    db: Database, pipeline: Pipeline, clock: FakeClock
) -> None:
    ids = [
        inbox.accept(db, make_mail(f"topic {n}", sender=f"c{n}@example.com")[0], source="smtp")
        for n in range(3)
    ]
    worker = pipeline.worker()
    first = worker.step()
    assert first is not None
    assert first.inbound_id == ids[0].inbound_id
    assert worker.held is not None
    assert worker.held.id == ids[1].inbound_id
    assert inbound_row(db, ids[1].inbound_id).status == InboundStatus.processing
    second = worker.step(claim_next=False)  # the held one; nothing claimed ahead
    assert second is not None
    assert second.inbound_id == ids[1].inbound_id
    assert worker.held is None
    third = worker.step()
    assert third is not None
    assert third.inbound_id == ids[2].inbound_id
    assert worker.step() is None
    assert [r.outcome for r in (first, second, third)] == ["created"] * 3


def test_a_stopping_worker_gives_back_the_mail_it_claimed_ahead(
    db: Database, pipeline: Pipeline
) -> None:
    inbox.accept(db, make_mail("one", sender="a@example.com")[0], source="smtp")
    later = inbox.accept(db, make_mail("two", sender="b@example.com")[0], source="smtp")
    worker = pipeline.worker()
    assert worker.step() is not None
    worker.release()
    assert worker.held is None
    row = inbound_row(db, later.inbound_id)
    assert row.status == InboundStatus.received
    assert row.attempts == 0  # giving back spends no attempt
    worker.release()  # nothing held: nothing to do
    again = pipeline.process_next()
    assert again is not None
    assert again.inbound_id == later.inbound_id


def test_a_failed_mail_claims_nothing_ahead(
    db: Database, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mailbot.process.parser.parse", faulty_parse({"boom": ValueError("x")}))
    inbox.accept(db, make_mail("boom")[0], source="smtp")
    waiting = inbox.accept(db, make_mail("fine", sender="b@example.com")[0], source="smtp")
    worker = pipeline.worker()
    result = worker.step()
    assert result is not None
    assert result.outcome == "quarantined"
    assert worker.held is None
    assert inbound_row(db, waiting.inbound_id).status == InboundStatus.received


def _conversations(customers: int, replies: int) -> list[bytes]:
    """Each customer's first mail right followed by ``replies`` answers (by References).

    The worst order for several workers: without the claim's ordering they
    would take a first mail and its replies at once, and each reply would
    open a ticket of its own.
    """
    mails = []
    for n in range(customers):
        sender = f"Customer {n} <cust{n}@example.com>"
        first, first_id = make_mail(f"Problem of customer {n}", sender=sender)
        mails.append(first)
        for r in range(replies):
            mails.append(make_mail(f"Re: {r}", sender=sender, references=f"<{first_id}>")[0])
    return mails


@pytest.mark.parametrize("workers", [1, 4])
def test_drain_with_workers_keeps_every_conversation_on_its_ticket(
    db: Database, pipeline: Pipeline, workers: int
) -> None:
    customers, replies = 24, 2
    for raw in _conversations(customers, replies):
        inbox.accept(db, raw, source="import")
    outcomes = Tally(r.outcome for r in pipeline.drain(workers))
    assert outcomes == {"created": customers, "appended": customers * replies}
    assert count(db, Ticket) == customers
    assert count(db, Customer) == customers
    for ticket in rows(db, Ticket):
        assert len(messages_of(db, ticket)) == 1 + replies
    assert {r.status for r in rows(db, Inbound)} == {InboundStatus.done}
    assert sorted(t.number for t in rows(db, Ticket)) == list(range(1, customers + 1))


def test_worker_threads_keep_every_conversation_on_its_ticket(
    db: Database, pipeline: Pipeline
) -> None:
    """Four ``Worker``s in threads, as the daemon runs them (on SQLite too)."""
    customers, replies = 20, 2
    for raw in _conversations(customers, replies):
        inbox.accept(db, raw, source="smtp")
    results: list[Processed] = []
    errors: list[BaseException] = []

    def run() -> None:
        worker = pipeline.worker()
        try:
            while (result := worker.step()) is not None:
                results.append(result)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)
        finally:
            worker.release()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    # A thread that found nothing ready stops; whatever is left is the others' work.
    results += list(pipeline.drain())
    outcomes = Tally(r.outcome for r in results)
    assert outcomes == {"created": customers, "appended": customers * replies}
    for ticket in rows(db, Ticket):
        assert len(messages_of(db, ticket)) == 1 + replies


def test_closing_drain_early_gives_back_what_was_claimed_ahead(
    db: Database, pipeline: Pipeline
) -> None:
    for raw in _conversations(12, 1):
        inbox.accept(db, raw, source="import")
    results = pipeline.drain(3)
    first = next(results)
    results.close()  # Ctrl-C in `mailbot ingest`: every thread stops after its mail
    statuses = Tally(r.status for r in rows(db, Inbound))
    assert statuses[InboundStatus.processing] == 0, "a claim was left behind"
    assert statuses[InboundStatus.done] >= 1
    assert inbound_row(db, first.inbound_id).status == InboundStatus.done
    assert all(r.attempts == 0 for r in rows(db, Inbound) if r.status == InboundStatus.received)
    rest = list(pipeline.drain(3))
    assert statuses[InboundStatus.done] + len(rest) == 24


class _LostRace(Exception):
    """What the driver raises when a concurrent transaction got there first."""

    sqlstate = "23505"


def _lost_race(text: str) -> IntegrityError:
    """The driver's error as SQLAlchemy hands it on."""
    return IntegrityError("INSERT INTO customer ...", {}, _LostRace(text))


def test_a_transaction_that_lost_a_race_is_tried_again_at_once(
    db: Database, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_apply = pipeline.conversation.apply
    calls: list[int] = []

    def racing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise _lost_race("duplicate key value violates unique constraint")
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(pipeline.conversation, "apply", racing)
    inbox.accept(db, make_mail("race")[0], source="smtp")
    result = pipeline.process_next()
    assert result is not None
    assert result.outcome == "created"
    assert len(calls) == 2
    assert inbound_row(db, result.inbound_id).attempts == 1
    assert count(db, Ticket) == 1


def test_a_race_lost_every_time_is_an_ordinary_failure(
    db: Database, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    def always(*args: Any, **kwargs: Any) -> Any:
        raise _lost_race("deadlock detected")

    monkeypatch.setattr(pipeline.conversation, "apply", always)
    inbox.accept(db, make_mail("race")[0], source="smtp")
    result = pipeline.process_next()
    assert result is not None
    assert result.outcome == "quarantined"
    _assert_nothing_stored(db)
