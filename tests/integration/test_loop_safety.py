"""Loop safety (DESIGN invariant 5, BAD_INPUTS B-19..B-22): no automatic answer to
automatic mail, bounces of our mail mark the outgoing row, our own mail coming
back causes nothing, and a per-recipient cap stops any war."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import col

from mailbot.config import Settings
from mailbot.process import Pipeline
from mailbot.store import inbox, outbox, schema
from mailbot.store.db import Database
from mailbot.store.models import (
    Customer,
    Inbound,
    InboundStatus,
    Message,
    Outbound,
    OutboundStatus,
    Ticket,
    TicketStatus,
)
from tests.conftest import CORPUS, missing_service
from tests.integration.test_conversation import (
    CUSTOMER,
    SUPPORT,
    Deliver,
    FakeClock,
    count,
    history,
    make_mail,
    parsed,
    rows,
    set_ticket,
    the_ack,
    ticket,
)

# The fixtures of test_conversation (settings without rules, pipeline, deliver).
from tests.integration.test_conversation import clock as clock
from tests.integration.test_conversation import deliver as deliver
from tests.integration.test_conversation import no_rules as no_rules
from tests.integration.test_conversation import pipeline as pipeline
from tests.integration.test_conversation import settings as settings


def open_ticket(deliver: Deliver, db: Database) -> tuple[str, Outbound]:
    raw, mid = make_mail("Printer does not print")
    assert deliver(raw).outcome == "created"
    return mid, the_ack(db, 1)


# -- the corpus --------------------------------------------------------------------------


def corpus_entries() -> list[tuple[str, str]]:
    manifest = CORPUS / "manifest.json"
    if not manifest.is_file():
        return []
    entries = json.loads(manifest.read_text())["entries"]
    return [
        (e["file"], e["kind"])
        for e in entries
        if e["kind"] in ("bounce", "autoreply") and e["format"] == "rfc822"
    ]


@pytest.mark.corpus
def test_no_corpus_bounce_or_autoreply_is_answered(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    entries = corpus_entries()
    if not entries:
        missing_service("../shared/corpus not found")
    db = Database(f"sqlite:///{tmp_path / 'corpus.db'}")
    schema.upgrade(db)
    # The default rules, and no cap: the cap must not hide an answer that was tried.
    settings = make_settings(
        f"sqlite:///{tmp_path / 'corpus.db'}", conversation={"auto_reply_limit": 100_000}
    )
    pipeline = Pipeline(db, settings)
    answered: list[str] = []
    outcomes: dict[str, int] = {}
    try:
        for name, kind in entries:
            raw = (CORPUS / name).read_bytes()
            accepted = inbox.accept(db, raw, source="import")
            if accepted.duplicate:
                continue
            result = pipeline.process_next()
            assert result is not None
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
            if count(db, Outbound) > len(answered):
                answered.append(f"{kind} {name}")
        assert answered == [], f"{len(answered)} automatic mails answered: {answered[:10]}"
        assert count(db, Outbound) == 0
        assert sum(outcomes.values()) >= len(entries) * 0.9, outcomes
        assert outcomes.get("quarantined", 0) == 0, outcomes
    finally:
        db.close()


# -- bounces of our own mail (B-20) ----------------------------------------------------------


def dsn(
    ack: Outbound,
    *,
    part: str,
    mailer_daemon: str = "MAILER-DAEMON@mx.example.com",
) -> bytes:
    """A delivery status notification (RFC 3464) for our acknowledgement."""
    original = ack.raw.split(b"\r\n\r\n", 1)[0].decode() if part == "headers" else ack.raw.decode()
    content_type = "text/rfc822-headers" if part == "headers" else "message/rfc822"
    boundary = "dsn-boundary-42"
    return (
        "Return-Path: <>\r\n"
        f"From: Mail Delivery System <{mailer_daemon}>\r\n"
        f"To: {SUPPORT}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Date: Mon, 04 Mar 2030 09:01:00 +0000\r\n"
        "Message-ID: <dsn-1@mx.example.com>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n"
        "Arrival-Date: Mon, 04 Mar 2030 09:00:59 +0000\r\n\r\n"
        f"Final-Recipient: rfc822; {CUSTOMER}\r\n"
        "Action: failed\r\n"
        "Status: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <anna@example.com>: Recipient address rejected:\r\n"
        " User unknown in virtual mailbox table\r\n\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: {content_type}\r\n\r\n"
        f"{original}\r\n"
        f"--{boundary}--\r\n"
    ).encode()


@pytest.mark.parametrize("part", ["message", "headers"])
def test_bounce_of_our_ack_marks_the_outgoing_row(
    db: Database, deliver: Deliver, clock: FakeClock, part: str
) -> None:
    _, ack = open_ticket(deliver, db)
    outbox.mark_sent(db, ack.id, clock=clock)  # the relay took it; the bounce comes later
    clock.advance(timedelta(minutes=1))
    accepted = inbox.accept(db, dsn(ack, part=part), source="smtp", envelope_from="<>")
    result = deliver.pipeline.process_next()
    assert result is not None
    assert result.inbound_id == accepted.inbound_id
    assert (result.outcome, result.ticket_number) == ("bounce-linked", 1)

    (row,) = rows(db, Outbound)
    assert row.id == ack.id
    assert row.status == OutboundStatus.failed
    assert row.bounced_at is not None
    assert row.last_error is not None
    assert "5.1.1" in row.last_error
    assert "User unknown" in row.last_error
    (customer,) = rows(db, Customer)
    assert customer.bouncing
    delivery = history(db, 1, "delivery")
    assert len(delivery) == 1
    assert "5.1.1" in str(delivery[0][2])
    assert count(db, Ticket) == 1
    assert count(db, Outbound) == 1
    (inbound,) = rows(db, Inbound, col(Inbound.id) == accepted.inbound_id)
    assert inbound.status == InboundStatus.done


def test_bounce_of_unknown_mail_answers_nothing(db: Database, deliver: Deliver) -> None:
    _, _ack = open_ticket(deliver, db)
    stranger = Outbound(
        message_id="someone-else@other.example",
        sender="x@other.example",
        raw=b"Message-ID: <someone-else@other.example>\r\n\r\nhi\r\n",
    )
    accepted = inbox.accept(db, dsn(stranger, part="headers"), source="smtp", envelope_from="<>")
    result = deliver.pipeline.process_next()
    assert result is not None
    assert result.inbound_id == accepted.inbound_id
    assert count(db, Outbound) == 1  # only the first acknowledgement
    assert the_ack(db, 1).status == OutboundStatus.pending
    assert not rows(db, Customer, col(Customer.email) == CUSTOMER)[0].bouncing


# -- auto-replies to our acknowledgement (B-19) ------------------------------------------------

AUTO_VARIANTS = {
    "auto-submitted": ("Re: [#1] Printer does not print", ("Auto-Submitted: auto-replied",)),
    "ooo-subject": ("Out of Office: [#1] Printer does not print", ()),
    "ooo-subject-ru": ("=?utf-8?b?0JDQstGC0L7QvtGC0LLQtdGCOg==?= [#1] Printer", ()),
    "precedence-bulk": ("Re: [#1] Printer does not print", ("Precedence: bulk",)),
    "list-id": ("Re: [#1] Printer does not print", ("List-Id: <staff.example.com>",)),
    "x-autoreply": ("Re: [#1] Printer does not print", ("X-Autoreply: yes",)),
}


@pytest.mark.parametrize("variant", sorted(AUTO_VARIANTS))
def test_auto_reply_to_our_ack_is_stored_without_any_reaction(
    db: Database, deliver: Deliver, variant: str
) -> None:
    _, ack = open_ticket(deliver, db)
    set_ticket(db, 1, status=TicketStatus.pending)  # a human reply would move it
    subject, extra = AUTO_VARIANTS[variant]
    raw, _ = make_mail(
        subject, in_reply_to=f"<{ack.message_id}>", body="I am away until Monday.", extra=extra
    )
    result = deliver(raw)
    assert (result.outcome, result.ticket_number) == ("appended", 1)
    assert ticket(db, 1).status == TicketStatus.pending
    assert history(db, 1, "status") == [("status", None, "new")]  # pending was set directly
    stored = rows(db, Message, col(Message.ticket_id) == ticket(db, 1).id)
    assert any("class:auto-reply" in m.flags for m in stored)
    assert count(db, Outbound) == 1


def test_human_reply_to_pending_ticket_does_move_it(db: Database, deliver: Deliver) -> None:
    """The control for the test above: without the automatic signals the ticket moves."""
    _, ack = open_ticket(deliver, db)
    set_ticket(db, 1, status=TicketStatus.pending)
    raw, _ = make_mail("Re: [#1] Printer does not print", in_reply_to=f"<{ack.message_id}>")
    deliver(raw)
    assert ticket(db, 1).status == TicketStatus.in_progress


# -- our own mail (B-21) -------------------------------------------------------------------------


def assert_ignored(db: Database, deliver: Deliver, raw: bytes, tickets_before: int) -> None:
    outbound_before = count(db, Outbound)
    accepted = inbox.accept(db, raw, source="smtp")
    result = deliver.pipeline.process_next()
    assert result is not None
    assert result.inbound_id == accepted.inbound_id
    assert result.outcome == "ignored-loop"
    (inbound,) = rows(db, Inbound, col(Inbound.id) == accepted.inbound_id)
    assert inbound.status == InboundStatus.done
    assert inbound.ticket_id is None
    assert count(db, Ticket) == tickets_before
    assert count(db, Outbound) == outbound_before


@pytest.mark.parametrize(
    "sender", [SUPPORT, "SUPPORT@LOCALHOST", "support+7@localhost", "Help <help@localhost>"]
)
def test_mail_from_our_own_address_is_ignored(
    db: Database, settings_for: Callable[..., Settings], no_rules: str, sender: str
) -> None:
    settings = settings_for(rules_file=no_rules, support_aliases=("help@localhost",))
    clock = FakeClock()
    deliver = Deliver(db, Pipeline(db, settings, clock=clock), clock)
    raw, _ = make_mail("Hello", sender=sender)
    assert_ignored(db, deliver, raw, 0)


def test_our_own_signed_message_coming_back_is_ignored(db: Database, deliver: Deliver) -> None:
    _, ack = open_ticket(deliver, db)
    # e.g. a forwarding rule at the customer sends our mail back to us, From rewritten
    msg = parsed(ack.raw)
    del msg["From"]
    msg["From"] = f"Anna Petrova <{CUSTOMER}>"
    assert_ignored(db, deliver, msg.as_bytes(), 1)


def test_forged_message_id_of_our_shape_is_not_a_loop(db: Database, deliver: Deliver) -> None:
    raw, _ = make_mail(message_id="mb.1.abcdefgh.0123456789abcdef@localhost")
    assert deliver(raw).outcome == "created"
    assert count(db, Outbound) == 1


# -- the cap (B-22) --------------------------------------------------------------------------------


def test_six_new_tickets_in_an_hour_get_exactly_the_cap_of_acks(
    db: Database, deliver: Deliver, clock: FakeClock, settings: Settings
) -> None:
    limit = settings.conversation.auto_reply_limit
    assert limit == 5
    results = []
    for n in range(limit + 1):
        raw, _ = make_mail(f"Problem number {n}")
        results.append(deliver(raw))
        clock.advance(timedelta(minutes=5))
    assert [r.outcome for r in results] == ["created"] * (limit + 1)
    assert count(db, Outbound) == limit
    with db.transaction() as session:
        numbers = session.execute(
            select(Ticket.number).join(Outbound, col(Outbound.ticket_id) == col(Ticket.id))
        ).scalars()
        assert sorted(numbers) == list(range(1, limit + 1))
    # another address is not held back by anna's cap
    other, _ = make_mail("Other person", sender="bob@example.com")
    deliver(other)
    assert count(db, Outbound) == limit + 1
    # an hour after the first acknowledgement, anna is answered again
    clock.advance(timedelta(minutes=60 - 5 * (limit + 1)) + timedelta(seconds=1))
    raw, _ = make_mail("Problem after the hour")
    deliver(raw)
    assert count(db, Outbound) == limit + 2
