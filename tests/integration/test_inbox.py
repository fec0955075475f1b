"""The durable inbox (``mailbot.store.inbox``) on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlmodel import col

from mailbot.headers import message_id_key
from mailbot.store import inbox, schema
from mailbot.store.db import Database
from mailbot.store.models import Inbound, InboundStatus
from mailbot.store.types import utcnow
from mailbot.testing import PostgresServer

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A settable clock to inject into the inbox functions."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def mail(n: int | str, *, message_id: str | None = "auto", body: str = "hello") -> bytes:
    mid = f"<m{n}@example.com>" if message_id == "auto" else message_id
    head = f"From: a{n}@example.com\r\nSubject: mail {n}\r\n"
    if mid is not None:
        head += f"Message-ID: {mid}\r\n"
    return (head + f"\r\n{body} {n}\r\n").encode()


def conversation_mail(
    n: int | str, sender: str, *, references: str = "", in_reply_to: str = ""
) -> bytes:
    """A mail from ``sender`` with Message-ID ``<c{n}@example.com>``."""
    head = f"From: {sender}\r\nSubject: mail {n}\r\nMessage-ID: <c{n}@example.com>\r\n"
    if references:
        head += f"References: {references}\r\n"
    if in_reply_to:
        head += f"In-Reply-To: {in_reply_to}\r\n"
    return (head + f"\r\nbody {n}\r\n").encode()


def claim_id(db: Database, clock: Callable[[], datetime] = utcnow) -> int | None:
    item = inbox.claim(db, clock=clock)
    return None if item is None else item.id


def finish(db: Database, inbound_id: int) -> None:
    with db.transaction() as session:
        assert inbox.mark_done(session, inbound_id, ticket_id=None)


def raw_column(db: Database, inbound_id: int) -> bytes:
    """Read ``raw`` back through a new engine: proves it was committed."""
    other = Database(db.url)
    try:
        with other.transaction() as session:
            return bytes(
                session.execute(
                    select(col(Inbound.raw)).where(col(Inbound.id) == inbound_id)
                ).scalar_one()
            )
    finally:
        other.close()


def row(db: Database, inbound_id: int) -> Inbound:
    with db.transaction() as session:
        found = session.get(Inbound, inbound_id)
        assert found is not None
        session.expunge(found)
        return found


# -- accept ------------------------------------------------------------------------------


def test_accept_commits_the_exact_bytes(db: Database) -> None:
    raw = (
        b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.com>\r\n"
        b"Subject: caf\xe9 \xff\xfe 8-bit\r\n"
        b"Message-ID: <exact@example.com>\r\n"
        b"\r\n"
        b"line one\r\nbare lf\nbare cr\rnul \x00 byte \x00\x00\r\n"
        + bytes(range(256))
        + b"\r\n.\r\n"
    )
    accepted = inbox.accept(
        db, raw, source="smtp", envelope_from="j@example.com", envelope_to=["support@x.org"]
    )
    assert not accepted.duplicate
    assert raw_column(db, accepted.inbound_id) == raw
    found = inbox.get_inbound(db, accepted.inbound_id)
    assert found is not None
    summary, stored = found
    assert stored == raw
    assert summary.size == len(raw)
    assert summary.status is InboundStatus.received
    assert summary.source == "smtp"
    assert summary.envelope_from == "j@example.com"
    assert summary.envelope_to == ("support@x.org",)
    assert summary.message_id == "exact@example.com"
    assert summary.attempts == 0


def test_accept_strips_nul_from_envelope_but_not_from_raw(db: Database) -> None:
    raw = b"Subject: x\r\n\r\n\x00\x00\r\n"
    accepted = inbox.accept(
        db, raw, source="smtp", envelope_from="a\x00@x.org", envelope_to=["b\x00@y.org"]
    )
    summary, stored = inbox.get_inbound(db, accepted.inbound_id) or (None, b"")
    assert summary is not None
    assert stored == raw
    assert summary.envelope_from == "a@x.org"
    assert summary.envelope_to == ("b@y.org",)


def test_dedupe_on_message_id_even_with_different_bytes(db: Database) -> None:
    first = inbox.accept(db, mail(1, body="first copy"), source="smtp")
    again = inbox.accept(db, mail(1, body="re-sent with other trace headers"), source="imap:INBOX")
    assert not first.duplicate
    assert again.duplicate
    assert again.inbound_id == first.inbound_id
    assert raw_column(db, first.inbound_id) == mail(1, body="first copy")
    assert len(inbox.list_inbound(db)) == 1


def test_message_id_domain_case_and_brackets_do_not_defeat_dedupe(db: Database) -> None:
    first = inbox.accept(db, mail(1, message_id="<Case@Example.COM>"), source="smtp")
    again = inbox.accept(db, mail(2, message_id="  <Case@example.com>  "), source="smtp")
    other_local = inbox.accept(db, mail(3, message_id="<case@example.com>"), source="smtp")
    assert again.duplicate
    assert again.inbound_id == first.inbound_id
    # The local part is case-sensitive (RFC 5322): a different mail.
    assert not other_local.duplicate


def test_dedupe_on_sha256_without_message_id(db: Database) -> None:
    raw = mail(1, message_id=None)
    first = inbox.accept(db, raw, source="pipe")
    again = inbox.accept(db, raw, source="pipe")
    other = inbox.accept(db, mail(1, message_id=None, body="different"), source="pipe")
    assert not first.duplicate
    assert again.duplicate
    assert again.inbound_id == first.inbound_id
    assert not other.duplicate
    assert other.inbound_id != first.inbound_id
    summary = inbox.get_inbound(db, first.inbound_id)
    assert summary is not None
    assert summary[0].message_id is None


@pytest.mark.parametrize("header", ["<>", "", "   ", "<  >"])
def test_empty_message_id_falls_back_to_the_hash(db: Database, header: str) -> None:
    one = mail(1, message_id=header)
    two = mail(2, message_id=header)
    first = inbox.accept(db, one, source="smtp")
    second = inbox.accept(db, two, source="smtp")
    replay = inbox.accept(db, one, source="smtp")
    assert not first.duplicate
    assert not second.duplicate, "two different mails with an empty Message-ID are two mails"
    assert replay.duplicate
    assert replay.inbound_id == first.inbound_id
    found = inbox.get_inbound(db, first.inbound_id)
    assert found is not None
    assert found[0].message_id is None
    with db.transaction() as session:
        keys = session.execute(select(col(Inbound.dedupe_key))).scalars().all()
    assert all(k.startswith("raw:") for k in keys)


def test_two_kilobyte_message_id(db: Database) -> None:
    """B-24: a 2 KB Message-ID is stored whole and still dedupes."""
    long_id = "x" * 2048 + "@example.com"
    first = inbox.accept(db, mail(1, message_id=f"<{long_id}>"), source="smtp")
    again = inbox.accept(db, mail(2, message_id=f"<{long_id}>"), source="smtp")
    other = inbox.accept(db, mail(3, message_id=f"<{'y' * 2048}@example.com>"), source="smtp")
    assert not first.duplicate
    assert again.duplicate
    assert again.inbound_id == first.inbound_id
    assert not other.duplicate
    found = inbox.get_inbound(db, first.inbound_id)
    assert found is not None
    assert found[0].message_id == long_id


def test_accepted_fixture_with_long_message_id(db: Database) -> None:
    from tests.conftest import EMAILS

    raw = (EMAILS / "b24-message-id-long.eml").read_bytes()
    accepted = inbox.accept(db, raw, source="smtp")
    assert raw_column(db, accepted.inbound_id) == raw
    assert inbox.accept(db, raw, source="smtp").duplicate


# -- claim -------------------------------------------------------------------------------


def test_claim_returns_none_when_empty(db: Database) -> None:
    assert inbox.claim(db) is None


def test_claim_takes_the_oldest_and_counts_the_attempt(db: Database, clock: FakeClock) -> None:
    ids = [inbox.accept(db, mail(n), source="smtp", clock=clock).inbound_id for n in range(3)]
    clock.advance(timedelta(minutes=1))
    item = inbox.claim(db, clock=clock)
    assert item is not None
    assert item.id == ids[0]
    assert item.raw == mail(0)
    assert item.attempts == 1
    assert item.source == "smtp"
    assert item.received_at == T0
    stored = row(db, ids[0])
    assert stored.status == InboundStatus.processing
    assert stored.attempts == 1
    assert stored.claimed_at == T0 + timedelta(minutes=1)
    # The claimed row is not handed out again; the next oldest is.
    second = inbox.claim(db, clock=clock)
    assert second is not None
    assert second.id == ids[1]
    third = inbox.claim(db, clock=clock)
    assert third is not None
    assert third.id == ids[2]
    assert inbox.claim(db, clock=clock) is None


def test_claim_skips_rows_that_are_not_received(db: Database) -> None:
    done = inbox.accept(db, mail(1), source="smtp").inbound_id
    shunted = inbox.accept(db, mail(2), source="smtp").inbound_id
    ready = inbox.accept(db, mail(3), source="smtp").inbound_id
    with db.transaction() as session:
        inbox.mark_done(session, done, ticket_id=None)
    inbox.shunt(db, shunted, "broken")
    item = inbox.claim(db)
    assert item is not None
    assert item.id == ready
    assert inbox.claim(db) is None


def test_a_row_due_later_is_not_claimed(db: Database, clock: FakeClock) -> None:
    inbound_id = inbox.accept(db, mail(1), source="smtp", clock=clock).inbound_id
    item = inbox.claim(db, clock=clock)
    assert item is not None
    inbox.retry_later(db, inbound_id, "DNS down", delay=timedelta(minutes=5), clock=clock)
    stored = row(db, inbound_id)
    assert stored.status == InboundStatus.received
    assert stored.next_attempt_at == T0 + timedelta(minutes=5)
    assert stored.last_error == "DNS down"

    clock.advance(timedelta(minutes=4, seconds=59))
    assert inbox.claim(db, clock=clock) is None
    clock.advance(timedelta(seconds=1))
    again = inbox.claim(db, clock=clock)
    assert again is not None
    assert again.id == inbound_id
    assert again.attempts == 2


def test_a_later_row_that_is_due_overtakes_one_that_is_not(db: Database, clock: FakeClock) -> None:
    waiting = inbox.accept(db, mail(1), source="smtp", clock=clock).inbound_id
    ready = inbox.accept(db, mail(2), source="smtp", clock=clock).inbound_id
    assert inbox.claim(db, clock=clock) is not None
    inbox.retry_later(db, waiting, "later", delay=timedelta(hours=1), clock=clock)
    item = inbox.claim(db, clock=clock)
    assert item is not None
    assert item.id == ready


# -- order: one sender's and one thread's mail, one at a time, in order ------------------


@pytest.mark.parametrize(
    ("raw", "envelope_from", "sender", "root"),
    [
        (
            b"From: Anna <Anna@Example.COM>\r\nMessage-ID: <a@x>\r\n\r\n",
            "",
            "anna@example.com",
            "a@x",
        ),
        (
            b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.de>\r\nMessage-ID: <b@x>\r\n"
            b"References: <root@x>\r\n <mid@x>\r\nIn-Reply-To: <mid@x>\r\n\r\n",
            "bounce@relay.example",
            "j@example.de",
            "root@x",
        ),
        (
            b"from: plain@example.org\r\nin-reply-to: <Up@X.ORG>\r\n\r\n",
            "",
            "plain@example.org",
            "Up@x.org",
        ),
        (
            b"Subject: no From\r\nMessage-ID: <c@x>\r\n\r\n",
            "Env@Example.com",
            "env@example.com",
            "c@x",
        ),
        (b"Subject: bounce\r\n\r\n", "<>", None, None),
        (b"From: undisclosed-recipients:;\r\nReferences: garbage\r\n\r\n", "", None, None),
        (b"\xff\xfe not a mail at all", "", None, None),
    ],
)
def test_order_keys(raw: bytes, envelope_from: str, sender: str | None, root: str | None) -> None:
    message_id = inbox.dedupe_key(raw)[2]
    keys = inbox.order_keys(raw, envelope_from=envelope_from, message_id=message_id)
    assert keys == (sender, message_id_key(root) if root else None)


def test_accept_stores_the_order_keys(db: Database) -> None:
    first = inbox.accept(db, conversation_mail(1, "Anna <anna@example.com>"), source="smtp")
    stored = row(db, first.inbound_id)
    assert stored.sender_key == "anna@example.com"
    assert stored.thread_key == message_id_key("c1@example.com")


def test_one_senders_mail_is_claimed_in_order_one_at_a_time(db: Database) -> None:
    a1 = inbox.accept(db, conversation_mail(1, "a@example.com"), source="smtp").inbound_id
    b1 = inbox.accept(db, conversation_mail(2, "b@example.com"), source="smtp").inbound_id
    a2 = inbox.accept(db, conversation_mail(3, "A@Example.com"), source="smtp").inbound_id
    b2 = inbox.accept(db, conversation_mail(4, "b@example.com"), source="smtp").inbound_id
    assert claim_id(db) == a1
    assert claim_id(db) == b1
    assert claim_id(db) is None  # a2 and b2 wait for a1 and b1
    finish(db, b1)
    assert claim_id(db) == b2
    finish(db, a1)
    assert claim_id(db) == a2
    assert claim_id(db) is None


def test_a_reply_waits_for_the_mail_it_answers_whoever_sends_it(db: Database) -> None:
    first = inbox.accept(db, conversation_mail(1, "customer@example.com"), source="smtp")
    # A colleague in Cc answers at once, before the first mail was processed.
    reply = inbox.accept(
        db,
        conversation_mail(2, "colleague@example.com", references="<c1@example.com>"),
        source="smtp",
    )
    by_parent = inbox.accept(
        db, conversation_mail(3, "third@example.com", in_reply_to="<c1@example.com>"), source="smtp"
    )
    other = inbox.accept(db, conversation_mail(4, "other@example.com"), source="smtp")
    assert claim_id(db) == first.inbound_id
    assert claim_id(db) == other.inbound_id
    assert claim_id(db) is None
    finish(db, first.inbound_id)
    assert claim_id(db) == reply.inbound_id
    assert claim_id(db) is None  # the thread's next waits for the reply
    finish(db, reply.inbound_id)
    assert claim_id(db) == by_parent.inbound_id


def test_mail_without_keys_is_never_held_back(db: Database) -> None:
    bare = b"Subject: nothing to go by\r\n\r\nbody\r\n"
    one = inbox.accept(db, bare, source="pipe").inbound_id
    two = inbox.accept(db, bare + b"2", source="pipe").inbound_id
    assert claim_id(db) == one
    assert claim_id(db) == two


def test_a_quarantined_mail_does_not_hold_back_its_sender(db: Database) -> None:
    bad = inbox.accept(db, conversation_mail(1, "a@example.com"), source="smtp").inbound_id
    good = inbox.accept(db, conversation_mail(2, "a@example.com"), source="smtp").inbound_id
    assert claim_id(db) == bad
    assert claim_id(db) is None
    inbox.shunt(db, bad, "ParseError: broken")
    assert claim_id(db) == good


def test_a_mail_waiting_for_its_retry_holds_back_its_sender(db: Database, clock: FakeClock) -> None:
    first = inbox.accept(db, conversation_mail(1, "a@example.com"), source="smtp", clock=clock)
    later = inbox.accept(db, conversation_mail(2, "a@example.com"), source="smtp", clock=clock)
    other = inbox.accept(db, conversation_mail(3, "b@example.com"), source="smtp", clock=clock)
    assert claim_id(db, clock) == first.inbound_id
    inbox.retry_later(db, first.inbound_id, "DNS down", delay=timedelta(minutes=5), clock=clock)
    assert claim_id(db, clock) == other.inbound_id
    assert claim_id(db, clock) is None
    clock.advance(timedelta(minutes=5))
    assert claim_id(db, clock) == first.inbound_id
    finish(db, first.inbound_id)
    assert claim_id(db, clock) == later.inbound_id


def test_a_stale_claim_holds_back_its_sender_until_recovered(
    db: Database, clock: FakeClock
) -> None:
    first = inbox.accept(db, conversation_mail(1, "a@example.com"), source="smtp", clock=clock)
    inbox.accept(db, conversation_mail(2, "a@example.com"), source="smtp", clock=clock)
    assert claim_id(db, clock) == first.inbound_id  # and the worker dies
    assert claim_id(db, clock) is None
    assert inbox.recover_stale(db, lease=None, max_attempts=3, clock=clock) == (1, 0)
    assert claim_id(db, clock) == first.inbound_id


def test_claim_in_commits_and_rolls_back_with_the_callers_transaction(db: Database) -> None:
    a = inbox.accept(db, conversation_mail(1, "a@example.com"), source="smtp").inbound_id
    a2 = inbox.accept(db, conversation_mail(2, "a@example.com"), source="smtp").inbound_id
    assert claim_id(db) == a

    def crash() -> None:
        with db.transaction() as session:
            assert inbox.mark_done(session, a, ticket_id=None, claim=1)
            following = inbox.claim_in(session.connection())
            assert following is not None
            assert following.id == a2  # the done row no longer holds it back, in here
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError, match="rolled back"):
        crash()
    assert row(db, a).status == InboundStatus.processing
    assert row(db, a2).status == InboundStatus.received
    assert row(db, a2).attempts == 0
    with db.transaction() as session:
        assert inbox.mark_done(session, a, ticket_id=None, claim=1)
        following = inbox.claim_in(session.connection())
    assert following is not None
    assert following.id == a2
    assert row(db, a2).status == InboundStatus.processing


def test_release_gives_a_claim_back_without_spending_an_attempt(db: Database) -> None:
    inbound_id = inbox.accept(db, mail(1), source="smtp").inbound_id
    item = inbox.claim(db)
    assert item is not None
    assert inbox.release(db, item)
    stored = row(db, inbound_id)
    assert stored.status == InboundStatus.received
    assert stored.attempts == 0
    assert stored.claimed_at is None
    assert not inbox.release(db, item), "a claim given back cannot be given back twice"
    again = inbox.claim(db)
    assert again is not None
    assert again.attempts == 1


# -- done, shunt, recover, requeue ------------------------------------------------------


def test_mark_done_and_shunt(db: Database, clock: FakeClock) -> None:
    a = inbox.accept(db, mail(1), source="smtp", clock=clock).inbound_id
    b = inbox.accept(db, mail(2), source="smtp", clock=clock).inbound_id
    inbox.claim(db, clock=clock)
    inbox.claim(db, clock=clock)
    with db.transaction() as session:
        inbox.mark_done(session, a, ticket_id=None, clock=clock)
    inbox.shunt(db, b, "ParseError: \x00bad" + "x" * 20000, clock=clock)
    assert row(db, a).status == InboundStatus.done
    assert row(db, a).processed_at == T0
    shunted = row(db, b)
    assert shunted.status == InboundStatus.shunted
    assert shunted.last_error is not None
    assert shunted.last_error.startswith("ParseError: bad")
    assert len(shunted.last_error) == inbox.MAX_ERROR_CHARS


def test_mark_done_rolls_back_with_its_transaction(db: Database) -> None:
    inbound_id = inbox.accept(db, mail(1), source="smtp").inbound_id
    inbox.claim(db)

    def crash() -> None:
        with db.transaction() as session:
            inbox.mark_done(session, inbound_id, ticket_id=None)
            raise RuntimeError("crash after mark_done, before commit")

    with pytest.raises(RuntimeError, match="before commit"):
        crash()
    assert row(db, inbound_id).status == InboundStatus.processing


def test_recover_stale_without_lease_takes_back_every_claim(db: Database, clock: FakeClock) -> None:
    ids = [inbox.accept(db, mail(n), source="smtp", clock=clock).inbound_id for n in range(3)]
    inbox.claim(db, clock=clock)
    inbox.claim(db, clock=clock)
    assert inbox.recover_stale(db, lease=None, max_attempts=3, clock=clock) == (2, 0)
    for inbound_id in ids:
        stored = row(db, inbound_id)
        assert stored.status == InboundStatus.received
        assert stored.claimed_at is None
    assert inbox.recover_stale(db, lease=None, max_attempts=3, clock=clock) == (0, 0)
    # They are claimable again, oldest first, with the attempt remembered.
    item = inbox.claim(db, clock=clock)
    assert item is not None
    assert item.id == ids[0]
    assert item.attempts == 2


def test_recover_stale_honours_the_lease(db: Database, clock: FakeClock) -> None:
    lease = timedelta(minutes=10)
    old = inbox.accept(db, mail(1), source="smtp", clock=clock).inbound_id
    young = inbox.accept(db, mail(2), source="smtp", clock=clock).inbound_id
    inbox.claim(db, clock=clock)  # old, claimed at T0
    clock.advance(timedelta(minutes=8))
    inbox.claim(db, clock=clock)  # young, claimed at T0+8
    clock.advance(timedelta(minutes=1))  # T0+9: nothing is older than the lease yet
    assert inbox.recover_stale(db, lease=lease, max_attempts=3, clock=clock) == (0, 0)
    clock.advance(timedelta(minutes=2))  # T0+11: only the first claim is stale
    assert inbox.recover_stale(db, lease=lease, max_attempts=3, clock=clock) == (1, 0)
    assert row(db, old).status == InboundStatus.received
    assert row(db, young).status == InboundStatus.processing


def test_recover_stale_quarantines_after_max_attempts(db: Database, clock: FakeClock) -> None:
    inbound_id = inbox.accept(db, mail(1), source="smtp", clock=clock).inbound_id
    other = inbox.accept(db, mail(2), source="smtp", clock=clock).inbound_id
    results = []
    for _ in range(3):
        item = inbox.claim(db, clock=clock)
        assert item is not None
        assert item.id == inbound_id
        results.append(inbox.recover_stale(db, lease=None, max_attempts=3, clock=clock))
    assert results == [(1, 0), (1, 0), (0, 1)]
    stored = row(db, inbound_id)
    assert stored.status == InboundStatus.shunted
    assert stored.attempts == 3
    assert stored.last_error is not None
    assert "3 times" in stored.last_error
    assert row(db, other).status == InboundStatus.received


def test_requeue_by_id(db: Database, clock: FakeClock) -> None:
    a = inbox.accept(db, mail(1), source="smtp", clock=clock).inbound_id
    b = inbox.accept(db, mail(2), source="smtp", clock=clock).inbound_id
    c = inbox.accept(db, mail(3), source="smtp", clock=clock).inbound_id
    for _ in range(3):
        inbox.claim(db, clock=clock)
    inbox.shunt(db, a, "boom", clock=clock)
    inbox.shunt(db, b, "boom", clock=clock)
    # c is being processed right now: requeue by id must not steal it.
    assert inbox.requeue(db, [a, c]) == 1
    requeued = row(db, a)
    assert requeued.status == InboundStatus.received
    assert requeued.attempts == 0
    assert requeued.next_attempt_at is None
    assert row(db, b).status == InboundStatus.shunted
    assert row(db, c).status == InboundStatus.processing
    assert inbox.requeue(db) == 0
    item = inbox.claim(db, clock=clock)
    assert item is not None
    assert item.id == a
    assert item.attempts == 1


def test_requeue_all_shunted(db: Database, clock: FakeClock) -> None:
    ids = [inbox.accept(db, mail(n), source="smtp", clock=clock).inbound_id for n in range(4)]
    for _ in range(4):
        inbox.claim(db, clock=clock)
    inbox.shunt(db, ids[0], "x", clock=clock)
    inbox.shunt(db, ids[2], "x", clock=clock)
    with db.transaction() as session:
        inbox.mark_done(session, ids[1], ticket_id=None, clock=clock)
    assert inbox.requeue(db, all_shunted=True) == 2
    assert [row(db, i).status for i in ids] == [
        InboundStatus.received,
        InboundStatus.done,
        InboundStatus.received,
        InboundStatus.processing,
    ]
    assert inbox.requeue(db, all_shunted=True) == 0


# -- read side ---------------------------------------------------------------------------


def test_list_get_and_counts(db: Database, clock: FakeClock) -> None:
    assert inbox.counts(db) == {s: 0 for s in InboundStatus}
    ids = [inbox.accept(db, mail(n), source="smtp", clock=clock).inbound_id for n in range(5)]
    inbox.claim(db, clock=clock)
    inbox.claim(db, clock=clock)
    inbox.claim(db, clock=clock)
    with db.transaction() as session:
        inbox.mark_done(session, ids[0], ticket_id=None, clock=clock)
    inbox.shunt(db, ids[1], "ValueError: nope", clock=clock)

    assert inbox.counts(db) == {
        InboundStatus.received: 2,
        InboundStatus.processing: 1,
        InboundStatus.done: 1,
        InboundStatus.shunted: 1,
    }
    listed = inbox.list_inbound(db)
    assert [r.id for r in listed] == list(reversed(ids))
    assert [r.id for r in inbox.list_inbound(db, limit=2)] == [ids[4], ids[3]]
    shunted = inbox.list_inbound(db, status=InboundStatus.shunted)
    assert [r.id for r in shunted] == [ids[1]]
    assert shunted[0].last_error == "ValueError: nope"
    assert shunted[0].attempts == 1
    assert [r.id for r in inbox.list_inbound(db, status=InboundStatus.received)] == [
        ids[4],
        ids[3],
    ]

    found = inbox.get_inbound(db, ids[2])
    assert found is not None
    summary, raw = found
    assert raw == mail(2)
    assert summary.status is InboundStatus.processing
    assert summary.message_id == "m2@example.com"
    assert summary.received_at == T0
    assert inbox.get_inbound(db, 99999) is None


# -- concurrency (PostgreSQL) ------------------------------------------------------------


@pytest.fixture
def pg_db(pg_server: PostgresServer) -> Iterator[Callable[[], Database]]:
    url = pg_server.create_database()
    opened: list[Database] = []

    def connect() -> Database:
        database = Database(url)
        opened.append(database)
        return database

    schema.upgrade(connect())
    try:
        yield connect
    finally:
        for database in opened:
            database.close()


@pytest.mark.postgres
def test_concurrent_claims_never_take_the_same_row(pg_db: Callable[[], Database]) -> None:
    main = pg_db()
    total = 200
    for n in range(total):
        inbox.accept(main, mail(n), source="smtp")
    workers = 4
    start = threading.Barrier(workers)
    claimed: list[list[int]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def loop(index: int) -> None:
        db = pg_db()
        try:
            start.wait(timeout=30)
            while (item := inbox.claim(db)) is not None:
                claimed[index].append(item.id)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    everything = [i for ids in claimed for i in ids]
    assert len(everything) == len(set(everything)), "a row was claimed twice"
    assert len(everything) == total
    with main.transaction() as session:
        attempts = session.execute(select(col(Inbound.attempts))).scalars().all()
        statuses = set(session.execute(select(col(Inbound.status))).scalars().all())
    assert sorted(set(attempts)) == [1]
    assert statuses == {InboundStatus.processing.value}
    assert inbox.claim(main) is None


@pytest.mark.postgres
def test_concurrent_claims_keep_each_sender_and_thread_in_order(
    pg_db: Callable[[], Database],
) -> None:
    """4 workers, 240 mails of 12 senders, some threads across senders: a row is
    only ever claimed once every earlier row of its sender and thread is done."""
    main = pg_db()
    senders = [f"s{n}@example.com" for n in range(12)]
    rng = random.Random(7)
    for n in range(240):
        refs = f"<c{rng.randrange(n)}@example.com>" if n > 10 and rng.random() < 0.3 else ""
        raw = conversation_mail(n, rng.choice(senders), references=refs)
        inbox.accept(main, raw, source="smtp")
    with main.transaction() as session:
        keys = {
            r.id: (r.sender_key, r.thread_key)
            for r in session.execute(select(Inbound.id, Inbound.sender_key, Inbound.thread_key))
        }
    workers = 4
    start = threading.Barrier(workers)
    problems: list[str] = []
    errors: list[BaseException] = []
    done: list[int] = []

    def loop() -> None:
        db = pg_db()
        try:
            start.wait(timeout=30)
            while (item := inbox.claim(db)) is not None:
                sender, thread = keys[item.id]
                with db.transaction() as session:
                    status = {
                        int(i): str(st)
                        for i, st in session.execute(select(Inbound.id, Inbound.status)).all()
                    }
                problems.extend(
                    f"{item.id} claimed while {earlier} was {status[earlier]}"
                    for earlier, (s, t) in keys.items()
                    if earlier < item.id
                    and ((s is not None and s == sender) or (t is not None and t == thread))
                    and status[earlier] != InboundStatus.done.value
                )
                time.sleep(rng.random() / 1000)
                finish(db, item.id)
                done.append(item.id)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=loop) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert problems == []
    assert sorted(done) == sorted(keys)
