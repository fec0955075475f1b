"""The customer conversation: threading, trust, lifecycle and the acknowledgement.

Replies come in the header and quote layouts of real clients
(``tests/data/emails/client-*.eml``, filled in with our acknowledgement's
Message-ID and ``[#N]`` subject), over the real SMTP listener where the
transport matters and straight into the inbox otherwise. BAD_INPUTS B-11,
B-12, B-15, B-38, B-39, B-44.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
import smtplib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, inspect, select, update
from sqlmodel import SQLModel, col

from mailbot import signing
from mailbot.config import Settings
from mailbot.ingest.smtp import InboxHandler, serve
from mailbot.process import Pipeline, Processed
from mailbot.store import inbox
from mailbot.store.db import Database
from mailbot.store.models import (
    Customer,
    History,
    Message,
    Outbound,
    Ticket,
    TicketLink,
    TicketStatus,
)
from tests.conftest import EMAILS

M = TypeVar("M", bound=SQLModel)
SUPPORT = "support@localhost"
CUSTOMER = "anna@example.com"
T0 = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)
CLIENTS = ["gmail", "outlook", "applemail", "thunderbird", "russian", "iphone", "android"]


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def new_mid() -> str:
    return f"conv-{next(_ids)}@client.example"


def make_mail(
    subject: str = "Printer does not print",
    *,
    sender: str = f"Anna Petrova <{CUSTOMER}>",
    to: str = f"Support <{SUPPORT}>",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    body: str = "Hello, the printer on floor 3 does not print.",
    extra: tuple[str, ...] = (),
) -> tuple[bytes, str]:
    """A small mail (headers given as they go on the wire) and its Message-ID."""
    mid = message_id or new_mid()
    headers = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        "Date: Mon, 04 Mar 2030 08:55:00 +0100",
        f"Message-ID: <{mid}>",
    ]
    if in_reply_to:
        headers.append(f"In-Reply-To: {in_reply_to}")
    if references:
        headers.append(f"References: {references}")
    headers += [*extra, "MIME-Version: 1.0"]
    if body.isascii():
        headers += ["Content-Type: text/plain; charset=utf-8"]
        payload = body
    else:
        headers += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: base64"]
        payload = base64.encodebytes(body.encode()).decode()
    return ("\r\n".join(headers) + "\r\n\r\n" + payload + "\r\n").encode(), mid


def client_reply(client: str, **values: str) -> bytes:
    """A ``client-<name>.eml`` template with its @@PLACEHOLDERS@@ filled in."""
    raw = (EMAILS / f"client-{client}.eml").read_bytes()
    for key, value in values.items():
        raw = raw.replace(f"@@{key.upper()}@@".encode(), value.encode())
    assert b"@@" not in raw, f"unfilled placeholder in client-{client}.eml"
    return raw


def rows(db: Database, model: type[M], *where: Any) -> list[M]:
    with db.transaction() as session:
        key = inspect(model).primary_key[0]
        found = list(session.execute(select(model).where(*where).order_by(key)).scalars())
        for item in found:
            session.expunge(item)
        return found


def count(db: Database, model: type[SQLModel], *where: Any) -> int:
    with db.transaction() as session:
        stmt = select(func.count()).select_from(model).where(*where)
        return int(session.execute(stmt).scalar_one())


def ticket(db: Database, number: int) -> Ticket:
    (found,) = rows(db, Ticket, col(Ticket.number) == number)
    return found


def inbound_messages(db: Database, number: int) -> list[Message]:
    t = ticket(db, number)
    return rows(db, Message, col(Message.ticket_id) == t.id, col(Message.direction) == "inbound")


def acks(db: Database, number: int) -> list[Outbound]:
    t = ticket(db, number)
    return rows(
        db, Outbound, col(Outbound.ticket_id) == t.id, col(Outbound.event) == "ticket-opened"
    )


def the_ack(db: Database, number: int) -> Outbound:
    (found,) = acks(db, number)
    return found


def parsed(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def plain_text(raw: bytes) -> str:
    body = parsed(raw).get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def set_ticket(db: Database, number: int, **values: Any) -> None:
    with db.transaction() as session:
        session.execute(update(Ticket).where(col(Ticket.number) == number).values(**values))


def history(db: Database, number: int, field: str | None = None) -> list[tuple[str, Any, Any]]:
    t = ticket(db, number)
    found = rows(db, History, col(History.ticket_id) == t.id)
    return [(h.field, h.old_value, h.new_value) for h in found if field in (None, h.field)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def no_rules(tmp_path: Path) -> str:
    # No rules: tickets keep the defaults (other, medium); rules have their own tests.
    path = tmp_path / "no-rules.yaml"
    path.write_text("[]\n")
    return str(path)


@pytest.fixture
def settings(settings_for: Callable[..., Settings], no_rules: str) -> Settings:
    return settings_for(rules_file=no_rules)


@pytest.fixture
def pipeline(db: Database, settings: Settings, clock: FakeClock) -> Pipeline:
    return Pipeline(db, settings, clock=clock)


class Deliver:
    """Accept a raw mail into the inbox and run the pipeline once."""

    def __init__(self, db: Database, pipeline: Pipeline, clock: Callable[[], datetime]) -> None:
        self.db, self.pipeline, self.clock = db, pipeline, clock

    def __call__(self, raw: bytes, envelope_to: tuple[str, ...] = ()) -> Processed:
        accepted = inbox.accept(
            self.db, raw, source="smtp", envelope_to=envelope_to, clock=self.clock
        )
        assert not accepted.duplicate
        result = self.pipeline.process_next()
        assert result is not None
        assert result.inbound_id == accepted.inbound_id
        assert result.error is None, result.error
        return result


@pytest.fixture
def deliver(db: Database, pipeline: Pipeline, clock: FakeClock) -> Deliver:
    return Deliver(db, pipeline, clock)


def open_ticket(
    deliver: Deliver, db: Database, subject: str = "Printer does not print"
) -> tuple[str, Outbound]:
    """Anna's first mail; returns its Message-ID and our acknowledgement."""
    raw, mid = make_mail(subject)
    result = deliver(raw)
    assert result.outcome == "created"
    assert result.ticket_number is not None
    return mid, the_ack(db, result.ticket_number)


# -- over SMTP: the conversation in the formats of real clients --------------------------


@pytest.fixture
async def smtp_port(db: Database, settings: Settings) -> AsyncIterator[int]:
    handler = InboxHandler(db, settings.our_addresses)
    server = await serve(
        handler, host="127.0.0.1", port=0, max_message_size=1 << 20, hostname="mailbot.test"
    )
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), timeout=10)


async def smtp_deliver(port: int, pipeline: Pipeline, raw: bytes) -> Processed:
    """Send ``raw`` to the listener as an MTA would, then run the pipeline once."""

    def send() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            return client.sendmail(CUSTOMER, [SUPPORT], raw)

    assert await asyncio.to_thread(send) == {}
    result = await asyncio.to_thread(pipeline.process_next)
    assert result is not None
    assert result.error is None, result.error
    return result


@pytest.fixture
def live_pipeline(db: Database, settings: Settings) -> Pipeline:
    return Pipeline(db, settings)  # the real clock: the SMTP listener stamps real times


async def test_conversation_of_real_clients_lands_on_one_ticket(
    db: Database, live_pipeline: Pipeline, smtp_port: int
) -> None:
    first, first_mid = make_mail("Printer does not print")
    opened = await smtp_deliver(smtp_port, live_pipeline, first)
    assert (opened.outcome, opened.ticket_number) == ("created", 1)
    ack = the_ack(db, 1)
    ack_subject = str(parsed(ack.raw)["Subject"])
    assert ack_subject == "[#1] Printer does not print"

    for client in CLIENTS:
        raw = client_reply(
            client,
            mid=new_mid(),
            first_mid=first_mid,
            ack_mid=ack.message_id,
            subject=ack_subject,
            customer=CUSTOMER,
            support=SUPPORT,
            number="1",
        )
        result = await smtp_deliver(smtp_port, live_pipeline, raw)
        assert (result.outcome, result.ticket_number) == ("appended", 1), client

    assert count(db, Ticket) == 1
    messages = inbound_messages(db, 1)
    assert len(messages) == 1 + len(CLIENTS)
    assert all("threaded-by:references" in m.flags for m in messages[1:])
    assert all(m.author_email == CUSTOMER for m in messages)
    texts = "\n".join(m.text_body for m in messages)
    for needle in ("it still does not print", "E-51", "paper jam", "toner", "лампочка"):
        assert needle in texts
    # a conversation of replies sends nothing more: one acknowledgement in all
    assert count(db, Outbound) == 1
    assert ticket(db, 1).status == TicketStatus.new


async def test_reply_with_only_references_lands(
    db: Database, live_pipeline: Pipeline, smtp_port: int
) -> None:
    first, first_mid = make_mail("VPN drops every hour")
    await smtp_deliver(smtp_port, live_pipeline, first)
    ack = the_ack(db, 1)
    reply, _ = make_mail(
        "Re: VPN drops every hour",  # no token, no In-Reply-To
        references=f"<{first_mid}> <{ack.message_id}>",
        body="It dropped again at 10:00.",
    )
    result = await smtp_deliver(smtp_port, live_pipeline, reply)
    assert (result.outcome, result.ticket_number) == ("appended", 1)
    assert "threaded-by:references" in inbound_messages(db, 1)[-1].flags


async def test_reply_with_rewritten_subject_lands_by_references(
    db: Database, live_pipeline: Pipeline, smtp_port: int
) -> None:
    first, first_mid = make_mail("VPN drops every hour")
    await smtp_deliver(smtp_port, live_pipeline, first)
    ack = the_ack(db, 1)
    reply, _ = make_mail(
        "Also: the wifi password expired",
        in_reply_to=f"<{ack.message_id}>",
        references=f"<{first_mid}> <{ack.message_id}>",
    )
    result = await smtp_deliver(smtp_port, live_pipeline, reply)
    assert (result.outcome, result.ticket_number) == ("appended", 1)
    assert count(db, Ticket) == 1


# -- trust: strangers, forged and unknown tokens (B-11, B-12) --------------------------------


def test_stranger_with_token_gets_new_linked_ticket_and_learns_nothing(
    db: Database, deliver: Deliver
) -> None:
    open_ticket(deliver, db, "Zephyr merger invoice 7731")
    raw, mallory_mid = make_mail(
        "Re: [#1] question", sender="Mallory <mallory@evil.test>", body="What is this about?"
    )
    result = deliver(raw)
    assert (result.outcome, result.ticket_number) == ("created", 2)
    old, new = ticket(db, 1), ticket(db, 2)
    links = rows(db, TicketLink)
    assert [(lk.ticket_id, lk.other_ticket_id, lk.kind) for lk in links] == [
        (new.id, old.id, "related")
    ]
    assert len(inbound_messages(db, 1)) == 1  # nothing appended to the old ticket
    assert "not-participant" in inbound_messages(db, 2)[0].flags
    ack = the_ack(db, 2)
    assert ack.recipients == ["mallory@evil.test"]
    assert parsed(ack.raw)["In-Reply-To"] == f"<{mallory_mid}>"
    for secret in (b"Zephyr", b"7731", CUSTOMER.encode(), b"Anna"):
        assert secret not in ack.raw
    text = plain_text(ack.raw)
    assert "opened ticket 2" in text
    # [#1] appears only where Mallory's own subject is echoed
    assert text.count("[#1]") == text.count("Re: [#1] question")


def test_stranger_by_plus_address_learns_not_even_the_number(
    db: Database, deliver: Deliver
) -> None:
    open_ticket(deliver, db, "Zephyr merger invoice 7731")
    raw, _ = make_mail(
        "hello", sender="mallory@evil.test", to="support+1@localhost", body="Anything?"
    )
    result = deliver(raw, envelope_to=("support+1@localhost",))
    assert (result.outcome, result.ticket_number) == ("created", 2)
    links = rows(db, TicketLink)
    assert [(lk.other_ticket_id, lk.kind) for lk in links] == [(ticket(db, 1).id, "related")]
    ack = the_ack(db, 2).raw
    for secret in (b"Zephyr", b"7731", CUSTOMER.encode(), b"[#1]", b"ticket 1", b"support+1@"):
        assert secret not in ack


def test_plus_address_threads_for_the_requester(db: Database, deliver: Deliver) -> None:
    open_ticket(deliver, db)
    raw, _ = make_mail("one more thing", to="support+1@localhost", body="The model is X-200.")
    result = deliver(raw, envelope_to=("support+1@localhost",))
    assert (result.outcome, result.ticket_number) == ("appended", 1)
    assert "threaded-by:plus-address" in inbound_messages(db, 1)[-1].flags


def test_forged_signed_looking_message_id_does_not_thread(db: Database, deliver: Deliver) -> None:
    open_ticket(deliver, db)
    forged = "mb.1.xxxxxxxx.0123456789abcdef@localhost"
    assert signing.looks_like_ours(forged)
    raw, _ = make_mail("Another printer", references=f"<{forged}>", in_reply_to=f"<{forged}>")
    result = deliver(raw)
    assert (result.outcome, result.ticket_number) == ("created", 2)
    assert len(inbound_messages(db, 1)) == 1


def test_token_of_a_ticket_that_does_not_exist_opens_a_new_ticket(
    db: Database, deliver: Deliver
) -> None:
    raw, _ = make_mail("Re: [#999] still broken")
    result = deliver(raw)
    assert (result.outcome, result.ticket_number) == ("created", 1)
    assert rows(db, TicketLink) == []
    assert "opened ticket 1" in plain_text(the_ack(db, 1).raw)


def test_reply_to_a_merged_ticket_goes_to_the_survivor(db: Database, deliver: Deliver) -> None:
    _, ack1 = open_ticket(deliver, db, "Printer does not print")
    open_ticket(deliver, db, "Printer still does not print")
    set_ticket(db, 1, merged_into_id=ticket(db, 2).id)
    by_token, _ = make_mail("Re: [#1] Printer does not print", body="by token")
    result = deliver(by_token)
    assert (result.outcome, result.ticket_number) == ("appended", 2)
    by_ref, _ = make_mail("Re: whatever", in_reply_to=f"<{ack1.message_id}>", body="by ref")
    result = deliver(by_ref)
    assert (result.outcome, result.ticket_number) == ("appended", 2)
    assert [m.text_body.strip() for m in inbound_messages(db, 2)[1:]] == ["by token", "by ref"]
    assert len(inbound_messages(db, 1)) == 1


# -- lifecycle: closed, pending (B-39) --------------------------------------------------------


def test_reply_to_closed_ticket_within_window_reopens_with_history(
    db: Database, deliver: Deliver, clock: FakeClock, settings: Settings
) -> None:
    open_ticket(deliver, db)
    set_ticket(db, 1, status=TicketStatus.closed, closed_at=clock())
    clock.advance(timedelta(days=settings.conversation.reopen_days) - timedelta(hours=1))
    raw, _ = make_mail("Re: [#1] Printer does not print", body="It broke again.")
    result = deliver(raw)
    assert (result.outcome, result.ticket_number) == ("reopened", 1)
    assert count(db, Ticket) == 1
    assert ticket(db, 1).status == TicketStatus.reopened
    assert ("status", "closed", "reopened") in history(db, 1, "status")


REOPEN_RULES = """\
- id: reopened
  when: {reopens-ticket: true}
  then: {add-tags: reopened}
- id: reopened-twice
  when: {reopens-ticket: 2}
  then: {escalate: reopened twice}
- id: outage
  when: {text-contains: outage}
  then: {escalate: outage}
"""


def test_rules_see_reopenings_and_only_the_new_text_of_a_reply(
    db: Database, settings_for: Callable[..., Settings], tmp_path: Path, clock: FakeClock
) -> None:
    rules = tmp_path / "reopen.yaml"
    rules.write_text(REOPEN_RULES)
    deliver = Deliver(db, Pipeline(db, settings_for(rules_file=str(rules)), clock=clock), clock)
    open_ticket(deliver, db)

    def escalations() -> list[str]:
        return [new for _, _, new in history(db, 1, "escalation")]

    set_ticket(db, 1, status=TicketStatus.closed, closed_at=clock())
    clock.advance(timedelta(hours=1))
    first, _ = make_mail("Re: [#1] Printer does not print", body="It broke again.")
    assert deliver(first).outcome == "reopened"
    assert ticket(db, 1).tags == ["reopened"]
    assert escalations() == []  # the first reopening: `reopens-ticket: 2` does not hold

    set_ticket(db, 1, status=TicketStatus.resolved, resolved_at=clock())
    clock.advance(timedelta(hours=1))
    second, _ = make_mail("Re: [#1] Printer does not print", body="Still nothing on paper.")
    assert deliver(second).outcome == "appended"  # resolved: the reply reopens it in place
    assert ticket(db, 1).status == TicketStatus.reopened
    assert escalations() == ["1: reopened twice"]

    # A reply that only quotes the word: the rules read the new text, nothing fires.
    quoting, _ = make_mail(
        "Re: [#1] Printer does not print",
        body="Any news?\r\n\r\nOn Mon, Anna wrote:\r\n> Is this an outage?\r\n",
    )
    assert deliver(quoting).outcome == "appended"
    assert escalations() == ["1: reopened twice"]
    said, _ = make_mail("Re: [#1] Printer does not print", body="Is this an outage?")
    assert deliver(said).outcome == "appended"
    assert escalations() == ["1: reopened twice", "2: outage"]


def test_reply_to_closed_ticket_after_window_opens_linked_ticket(
    db: Database, deliver: Deliver, clock: FakeClock, settings: Settings
) -> None:
    _, ack = open_ticket(deliver, db)
    set_ticket(db, 1, status=TicketStatus.closed, closed_at=clock())
    clock.advance(timedelta(days=settings.conversation.reopen_days) + timedelta(hours=1))
    raw, _ = make_mail("Re: [#1] Printer does not print", in_reply_to=f"<{ack.message_id}>")
    result = deliver(raw)
    assert (result.outcome, result.ticket_number) == ("created", 2)
    assert ticket(db, 1).status == TicketStatus.closed
    links = rows(db, TicketLink)
    assert [(lk.ticket_id, lk.other_ticket_id, lk.kind) for lk in links] == [
        (ticket(db, 2).id, ticket(db, 1).id, "related")
    ]
    assert ("related", None, "1") in history(db, 2, "related")
    assert len(acks(db, 2)) == 1  # the requester is told the new number


def test_pending_ticket_goes_in_progress_on_customer_reply(db: Database, deliver: Deliver) -> None:
    open_ticket(deliver, db)
    set_ticket(db, 1, status=TicketStatus.pending)
    raw, _ = make_mail("Re: [#1] Printer does not print", body="Here is the info you asked.")
    assert deliver(raw).outcome == "appended"
    assert ticket(db, 1).status == TicketStatus.in_progress
    assert ("status", "pending", "in_progress") in history(db, 1, "status")


def test_cc_of_first_mail_is_participant(db: Database, deliver: Deliver) -> None:
    raw, _ = make_mail(extra=("Cc: Boss <boss@example.com>, support@localhost",))
    deliver(raw)
    reply, _ = make_mail("Re: [#1] Printer does not print", sender="boss@example.com")
    assert (deliver(reply).outcome, count(db, Ticket)) == ("appended", 1)
    assert acks(db, 1)[0].recipients == [CUSTOMER]  # Cc is never notified automatically


def test_reply_to_takes_no_part_in_identity(db: Database, deliver: Deliver) -> None:
    """B-15: a stranger naming the requester in Reply-To is still a stranger."""
    open_ticket(deliver, db)
    raw, _ = make_mail(
        "Re: [#1] Printer does not print",
        sender="mallory@evil.test",
        extra=(f"Reply-To: {CUSTOMER}",),
    )
    assert deliver(raw).outcome == "created"
    assert ticket(db, 2).requester_id != ticket(db, 1).requester_id


# -- the acknowledgement -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "phrase"),
    [
        ("critical", "within 1 hour"),
        ("high", "within 4 hours"),
        ("medium", "within 8 hours"),
        ("low", "within 24 hours"),
    ],
)
def test_acknowledgement_content(
    db: Database,
    settings_for: Callable[..., Settings],
    tmp_path: Path,
    clock: FakeClock,
    priority: str,
    phrase: str,
) -> None:
    rules = tmp_path / "priority.yaml"
    rules.write_text(f"- id: everything\n  then:\n    set-priority: {priority}\n")
    settings = settings_for(
        rules_file=str(rules), conversation={"public_url": "https://help.example.org/"}
    )
    pipeline = Pipeline(db, settings, clock=clock)
    deliver = Deliver(db, pipeline, clock)
    raw, mid = make_mail("Printer does not print")
    deliver(raw)
    ack = the_ack(db, 1)
    assert ticket(db, 1).priority == priority
    assert ack.auto
    assert ack.recipients == [CUSTOMER]
    assert ack.status == "pending"
    msg = parsed(ack.raw)
    assert msg["Subject"] == "[#1] Printer does not print"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["In-Reply-To"] == f"<{mid}>"
    assert f"<{mid}>" in str(msg["References"])
    assert msg["Message-ID"] == f"<{ack.message_id}>"
    assert signing.ticket_of_message_id(pipeline.key, ack.message_id) == 1
    assert str(msg["From"]) == f"Support <{SUPPORT}>"
    assert str(msg["To"]) == f"Anna Petrova <{CUSTOMER}>"
    text = plain_text(ack.raw)
    assert phrase in text
    links = re.findall(r"https://help\.example\.org/status/(\S+)", text)
    assert links, text
    token = links[0]
    assert signing.read_status_token(pipeline.key, token, clock()) == 1
    number, expiry, mac = token.split(".")
    tampered = [
        f"2.{expiry}.{mac}",
        f"{number}.{int(expiry) + 86400}.{mac}",
        f"{number}.{expiry}.{mac[:-1]}{'0' if mac[-1] != '0' else '1'}",
    ]
    for bad in tampered:
        assert signing.read_status_token(pipeline.key, bad, clock()) is None, bad
    assert signing.read_status_token(b"another key", token, clock()) is None
    assert (
        signing.read_status_token(
            pipeline.key,
            token,
            clock() + timedelta(days=settings.conversation.status_link_days + 1),
        )
        is None
    )
    # the ticket message of the ack exists, so replies to it thread
    t = ticket(db, 1)
    (stored,) = rows(
        db, Message, col(Message.ticket_id) == t.id, col(Message.direction) == "outbound"
    )
    assert stored.message_id == ack.message_id


def test_russian_customer_gets_russian_acknowledgement(db: Database, deliver: Deliver) -> None:
    subject = "=?utf-8?b?" + base64.b64encode("Не работает принтер".encode()).decode() + "?="
    raw, _ = make_mail(
        subject,
        sender="=?utf-8?b?"
        + base64.b64encode("Иван Петров".encode()).decode()
        + "?= <ivan@example.ru>",
        body="Здравствуйте! Принтер на третьем этаже не печатает, помогите пожалуйста.",
    )
    deliver(raw)
    (customer,) = rows(db, Customer)
    assert customer.language == "ru"
    ack = the_ack(db, 1)
    msg = parsed(ack.raw)
    assert msg["Subject"] == "[#1] Не работает принтер"
    text = plain_text(ack.raw)
    assert "Здравствуйте, Иван Петров!" in text
    assert "в течение 8 часов" in text
    assert "Приоритет: средний" in text
    assert "we have received" not in text


def test_header_injection_in_name_and_subject_gives_clean_ack(
    db: Database, deliver: Deliver
) -> None:
    """B-44: CR/LF and Bcc smuggled through RFC 2047 words stay text."""

    def word(text: str) -> str:
        return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="

    raw, _ = make_mail(
        word("Help\r\nBcc: victim@evil.test\r\n\r\nInjected body"),
        sender=word("Eve\r\nBcc: victim2@evil.test\r\nX-Evil: 1") + " <eve@example.com>",
    )
    result = deliver(raw)
    assert result.outcome == "created"
    ack = the_ack(db, 1)
    assert ack.recipients == ["eve@example.com"]
    head = ack.raw.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    names = [ln.split(b":", 1)[0].lower() for ln in lines if not ln[:1].isspace()]
    assert b"bcc" not in names
    assert b"x-evil" not in names
    assert names.count(b"to") == 1
    assert b"\n" not in head.replace(b"\r\n", b"")
    assert b"\r" not in head.replace(b"\r\n", b"")
    msg = parsed(ack.raw)
    assert msg["Bcc"] is None
    assert [a.addr_spec for a in msg["To"].addresses] == ["eve@example.com"]
    assert "\n" not in str(msg["Subject"])
    assert "\r" not in str(msg["Subject"])
    assert not msg.defects


def test_default_priority_setting_sets_ticket_priority_and_sla_phrase(
    db: Database, settings_for: Callable[..., Settings], no_rules: str, clock: FakeClock
) -> None:
    settings = settings_for(rules_file=no_rules, tickets={"default_priority": "high"})
    deliver = Deliver(db, Pipeline(db, settings, clock=clock), clock)
    deliver(make_mail()[0])
    assert ticket(db, 1).priority == "high"
    assert "within 4 hours" in plain_text(the_ack(db, 1).raw)
