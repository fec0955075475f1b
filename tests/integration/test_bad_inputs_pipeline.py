"""BAD_INPUTS rows through the whole pipeline, on SQLite and on PostgreSQL.

The parse-level assertions live in tests/unit/test_parse.py; here every
fixture must become a ticket (or be quarantined with a reason), store the same
thing on both databases (B-31: PostgreSQL rejects NUL in text, SQLite does
not), and never write a file outside the attachment store.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from mailbot.process import NO_TEXT, Pipeline
from mailbot.store import inbox
from mailbot.store.models import Attachment, Customer, Inbound, InboundStatus, Message, Ticket

EMAILS = Path(__file__).resolve().parents[1] / "data" / "emails"
FIXTURES = sorted(p.name for p in EMAILS.glob("b*.eml"))
FIXED_NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _run_one(db, settings, name):
    pipeline = Pipeline(db, settings, clock=lambda: FIXED_NOW)
    accepted = inbox.accept(db, (EMAILS / name).read_bytes(), source="test")
    result = pipeline.process_next()
    assert result is not None
    assert result.inbound_id == accepted.inbound_id
    return result


def test_there_are_fixtures_for_every_parsing_row():
    rows = {name.split("-")[0] for name in FIXTURES}
    expected = {"b05", "b06", "b07", "b08", "b16", "b24", "b27", "b28", "b29", "b30", "b31"}
    expected |= {"b32", "b34", "b35", "b36", "b37"}
    assert expected <= rows


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_becomes_a_ticket(db, settings_for, tmp_path, name):
    settings = settings_for()
    before = _files(tmp_path)
    result = _run_one(db, settings, name)
    assert result.outcome == "created", result.error
    created = _files(tmp_path) - before
    store = settings.attachment_dir.resolve()
    for path in created:
        resolved = path.resolve()
        if resolved.name.startswith("mailbot.db") or resolved.name == "secret.key":
            continue
        assert resolved.is_relative_to(store), f"file outside the attachment store: {path}"
        assert len(resolved.name) == 64
    with db.transaction() as session:
        ticket = session.exec(select(Ticket)).one()
        message = session.exec(select(Message).where(Message.direction == "inbound")).one()
        for text in (ticket.subject, ticket.description, message.text_body, message.author_name):
            assert "\x00" not in text
        # B-36: SLA maths use the receipt time, never the Date header.
        assert ticket.created_at == FIXED_NOW
        row = session.exec(select(Inbound)).one()
        assert row.status == InboundStatus.done
        assert row.ticket_id == ticket.id


@pytest.mark.parametrize(
    "name",
    [
        "b16-from-two-addr-specs.eml",
        "b16-from-paren.eml",
        "b16-from-several.eml",
        "b16-from-group.eml",
        "b16-from-empty.eml",
        "b36-missing-from-to-date.eml",
    ],
)
def test_ambiguous_or_missing_sender_is_never_guessed(db, settings_for, name):
    _run_one(db, settings_for(), name)
    with db.transaction() as session:
        ticket = session.exec(select(Ticket)).one()
        message = session.exec(select(Message).where(Message.direction == "inbound")).one()
        assert ticket.requester_id is None
        assert session.exec(select(Customer)).all() == []
        assert "unknown-sender" in message.flags
        assert message.author_email == ""


def test_valid_sender_becomes_the_requester(db, settings_for):
    _run_one(db, settings_for(), "b16-from-valid.eml")
    with db.transaction() as session:
        customer = session.exec(select(Customer)).one()
        assert customer.email == "joerg.mueller@example.com"
        assert customer.name == "Jörg Müller"
        assert session.exec(select(Ticket)).one().requester_id == customer.id


@pytest.mark.parametrize("name", ["b35-no-body.eml", "b35-attachment-only.eml"])
def test_empty_body_gets_the_no_text_marker(db, settings_for, name):
    _run_one(db, settings_for(), name)
    with db.transaction() as session:
        assert (
            session.exec(select(Message).where(Message.direction == "inbound")).one().text_body
            == NO_TEXT
        )


def test_attachment_names_never_become_paths(db, settings_for):
    settings = settings_for()
    _run_one(db, settings, "b06-filename-traversal.eml")
    with db.transaction() as session:
        attachments = session.exec(select(Attachment)).all()
    assert attachments
    for attachment in attachments:
        assert "/" not in attachment.file_name
        assert "\\" not in attachment.file_name
        assert "\x00" not in attachment.file_name
        assert len(attachment.file_name.encode()) <= 200
        stored = settings.attachment_dir / attachment.storage_key[:2] / attachment.storage_key[2:4]
        assert (stored / attachment.storage_key).is_file()


def test_duplicate_and_long_message_ids_are_stored_once(db, settings_for):
    settings = settings_for()
    raw = (EMAILS / "b24-message-id-long.eml").read_bytes()
    _run_one(db, settings, "b24-message-id-long.eml")
    assert inbox.accept(db, raw, source="again").duplicate
    assert Pipeline(db, settings).process_next() is None


def test_nul_and_surrogates_store_identically(db, settings_for):
    """B-31: the same stored text on SQLite and PostgreSQL (compared to a fixed value)."""
    _run_one(db, settings_for(), "b31-nul-surrogates.eml")
    with db.transaction() as session:
        message = session.exec(select(Message).where(Message.direction == "inbound")).one()
    assert "\x00" not in message.text_body
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in message.text_body)
    assert message.text_body.strip()


def test_deep_nesting_is_quarantined_and_the_worker_goes_on(db, settings_for):
    """B-32: a 1,000-deep multipart is quarantined with a reason; the next mail works."""
    settings = settings_for()
    deep = b"From: a@example.org\r\nSubject: deep\r\nMessage-ID: <deep@example.org>\r\n"
    body = b""
    for level in range(1000):
        body += f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n'.encode()
    body += b"Content-Type: text/plain\r\n\r\nbottom\r\n"
    inbox.accept(db, deep + body, source="test")
    inbox.accept(db, b"From: b@example.org\r\nSubject: fine\r\n\r\nok\r\n", source="test")
    pipeline = Pipeline(db, settings)
    first, second = pipeline.process_next(), pipeline.process_next()
    assert first is not None
    assert second is not None
    assert first.outcome == "quarantined"
    assert "max_depth" in (first.error or "") or "LimitExceeded" in (first.error or "")
    assert second.outcome == "created"
    with db.transaction() as session:
        row = session.get(Inbound, first.inbound_id)
        assert row is not None
        assert row.status == InboundStatus.shunted
        assert row.last_error


def test_received_time_is_used_when_the_date_is_absurd(db, settings_for):
    settings = settings_for()
    now = datetime.now(UTC)
    accepted = inbox.accept(db, (EMAILS / "b36-date-2050.eml").read_bytes(), source="t")
    Pipeline(db, settings).process_next()
    with db.transaction() as session:
        ticket = session.exec(select(Ticket)).one()
        assert abs(ticket.created_at - now) < timedelta(minutes=5)
        assert session.get(Inbound, accepted.inbound_id) is not None
