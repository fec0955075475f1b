"""Agents work from their mail client: notifications, the reply relay, command tags.

End to end through the real SMTP listener and the pipeline, on SQLite and
PostgreSQL, with agents' replies in the layouts of real clients
(``tests/data/emails/agent-*.eml``: our notification quoted below the agent's
text, with the marker line, a signature and the client's quote header).
DESIGN invariant 6; BAD_INPUTS B-13, B-14, B-15, B-18, B-46.
"""

from __future__ import annotations

import asyncio
import itertools
import smtplib
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col

from mailbot import replytext
from mailbot.config import Settings
from mailbot.ingest.smtp import InboxHandler, serve
from mailbot.lifecycle import TRANSITIONS
from mailbot.process import Pipeline, Processed
from mailbot.store.db import Database
from mailbot.store.models import Message, Outbound, Ticket, TicketStatus
from tests.conftest import EMAILS
from tests.integration.test_conversation import (
    CUSTOMER,
    SUPPORT,
    FakeClock,
    history,
    make_mail,
    parsed,
    plain_text,
    rows,
    ticket,
)

BOB = "bob@example.org"
CAROL = "carol@example.org"
ZOE = "zoe@example.net"
AGENT_CLIENTS = ["outlook", "gmail", "thunderbird", "iphone", "russian"]
_ids = itertools.count(1)

AGENTS_ROUTED = f"""
agents:
  - {{email: {BOB}, name: Bob Builder, skills: [other]}}
  - {{email: {CAROL}, name: Carol King, skills: [technical]}}
teams:
  - {{name: desk, members: [{BOB}], skills: [other], mode: round-robin}}
"""
AGENTS_UNROUTED = f"""
agents:
  - {{email: {BOB}, name: Bob Builder}}
  - {{email: {CAROL}, name: Carol King}}
"""


def agents_file(tmp_path: Path, text: str, name: str = "agents.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


class Desk:
    """A running listener and pipeline, and what an agent or customer sends to it."""

    def __init__(self, db: Database, pipeline: Pipeline, port: int) -> None:
        self.db, self.pipeline, self.port = db, pipeline, port

    async def send(self, raw: bytes, sender: str = CUSTOMER) -> Processed:
        def go() -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
                return client.sendmail(sender, [SUPPORT], raw)

        assert await asyncio.to_thread(go) == {}
        result = await asyncio.to_thread(self.pipeline.process_next)
        assert result is not None
        assert result.error is None, result.error
        return result

    async def customer_opens(
        self, subject: str = "Printer does not print", sender: str = f"Anna <{CUSTOMER}>"
    ) -> int:
        raw, _ = make_mail(subject, sender=sender)
        result = await self.send(raw)
        assert result.outcome == "created"
        assert result.ticket_number is not None
        return result.ticket_number

    def outbound(self, number: int, event: str | None = None, to: str | None = None) -> list[Any]:
        t = ticket(self.db, number)
        found = rows(self.db, Outbound, col(Outbound.ticket_id) == t.id)
        return [
            o
            for o in found
            if (event is None or o.event == event) and (to is None or to in o.recipients)
        ]

    def note_to(self, number: int, agent: str) -> Outbound:
        """The newest notification of ``agent`` about ticket ``number``."""
        notes = [o for o in self.outbound(number, to=agent) if o.event != "agent-reply"]
        assert notes, f"no notification to {agent} for ticket {number}"
        return notes[-1]

    async def agent_replies(
        self,
        number: int,
        body: str,
        *,
        client: str = "gmail",
        agent: str = BOB,
        note: Outbound | None = None,
        extra: str = "",
    ) -> Processed:
        note = note or self.note_to(number, agent)
        raw = (EMAILS / f"agent-{client}.eml").read_text(encoding="utf-8")
        values = {
            "AGENT": agent,
            "SUPPORT": SUPPORT,
            "SUBJECT": f"[#{number}] Printer does not print",
            "MID": f"agent-{next(_ids)}@mail.example.org",
            "NOTE_MID": note.message_id,
            "NUMBER": str(number),
            "MARKER": replytext.MARKER,
            "EXTRA": extra,
            "BODY": body,
        }
        for key, value in values.items():
            raw = raw.replace(f"@@{key}@@", value)
        raw = raw.replace("\n\n\n", "\n\n", 1) if not extra else raw
        assert "@@" not in raw
        data = raw.replace("\n", "\r\n").encode()
        return await self.send(data, sender=agent)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def desk_for(
    db: Database, settings_for: Callable[..., Settings], tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Callable[..., Desk]]:
    servers: list[Any] = []
    rules = tmp_path / "no-rules.yaml"
    rules.write_text("[]\n")

    async def build(agents: str = AGENTS_ROUTED, rules_text: str = "", **sections: Any) -> Desk:
        if rules_text:
            rules.write_text(rules_text)
        settings = settings_for(
            rules_file=str(rules),
            agents_file=agents_file(tmp_path, agents, f"agents-{len(servers)}.yaml"),
            **sections,
        )
        pipeline = Pipeline(db, settings, clock=clock)
        pipeline.sync_people()
        server = await serve(
            InboxHandler(db, settings.our_addresses),
            host="127.0.0.1",
            port=0,
            max_message_size=1 << 20,
            hostname="mailbot.test",
        )
        servers.append(server)
        return Desk(db, pipeline, int(server.sockets[0].getsockname()[1]))

    yield build
    for server in servers:
        server.close()
        await asyncio.wait_for(server.wait_closed(), timeout=10)


# -- notifications -----------------------------------------------------------------------


async def test_assigned_agent_is_notified_with_facts_marker_and_commands(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for()
    number = await desk.customer_opens()
    assert ticket(db, number).status == TicketStatus.assigned
    note = desk.note_to(number, BOB)
    assert note.event == "ticket-assigned"
    assert note.recipients == [BOB]
    raw = bytes(note.raw)
    assert f"X-Mailbot-Ticket: {number}".encode() in raw
    assert b"X-Mailbot-Event: ticket-assigned" in raw
    assert b"Auto-Submitted: auto-generated" in raw
    text = plain_text(raw)
    assert text.lstrip().startswith(replytext.MARKER)
    assert "the printer on floor 3 does not print" in text
    assert "#pending" in text
    assert "#resolve" in text
    assert "Priority:" in text
    assert "Resolution due:" in text
    # Notifications are internal messages: no customer ever sees them.
    (stored,) = [m for m in rows(db, Message) if m.message_id == note.message_id]
    assert stored.internal


async def test_customer_reply_notifies_the_assignee(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for()
    number = await desk.customer_opens()
    ack = desk.outbound(number, "ticket-opened")[0]
    raw, _ = make_mail(
        f"Re: [#{number}] Printer does not print",
        in_reply_to=f"<{ack.message_id}>",
        body="It now shows E-51.\n\nOn Mon, Support wrote:\n> we have received your request",
    )
    await desk.send(raw)
    note = desk.note_to(number, BOB)
    assert note.event == "customer-reply"
    text = plain_text(bytes(note.raw))
    assert "It now shows E-51." in text
    assert "we have received your request" not in text


async def test_unassigned_ticket_notifies_every_active_agent(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for(AGENTS_UNROUTED)
    number = await desk.customer_opens()
    assert ticket(db, number).assignee_id is None
    events = {
        (o.recipients[0], o.event) for o in desk.outbound(number) if o.event != "ticket-opened"
    }
    assert events == {(BOB, "ticket-unassigned"), (CAROL, "ticket-unassigned")}


async def test_notify_unassigned_none_mails_nobody(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for(AGENTS_UNROUTED, desk={"notify_unassigned": "none"})
    number = await desk.customer_opens()
    assert [o.event for o in desk.outbound(number)] == ["ticket-opened"]


# -- the reply relay ---------------------------------------------------------------------


@pytest.mark.parametrize("client", AGENT_CLIENTS)
async def test_reply_with_pending_sends_the_customer_the_text_only(
    desk_for: Callable[..., Any], db: Database, client: str
) -> None:
    desk = await desk_for()
    number = await desk.customer_opens()
    result = await desk.agent_replies(
        number, "Could you send a photo of the display?\n#pending", client=client
    )
    assert result.outcome == "agent-reply"
    t = ticket(db, number)
    assert t.status == TicketStatus.pending
    assert ("status", "assigned", "pending") in history(db, number, "status")
    assert any(h.actor == BOB for h in _history_rows(db, number) if h.field == "status")
    (answer,) = desk.outbound(number, "agent-reply")
    assert answer.recipients == [CUSTOMER]
    raw = bytes(answer.raw)
    assert f'From: "Bob Builder (Support)" <{SUPPORT}>'.encode() in raw
    assert BOB.encode() not in raw
    assert f"[#{number}]".encode() in raw
    assert b"Auto-Submitted" not in raw
    text = plain_text(raw).replace("\r\n", "\n")
    body = text.split("\n--\n")[0].strip()
    assert body == "Could you send a photo of the display?"
    for leak in ("#pending", replytext.MARKER, "Second-level", "+49 30", "Боб", "wrote", "iPhone"):
        assert leak not in text
    assert t.first_response_at is not None
    # The customer's answer to the relayed mail threads back and resumes work.
    raw, _ = make_mail(
        f"Re: [#{number}] Printer does not print",
        in_reply_to=f"<{answer.message_id}>",
        body="Photo attached.",
    )
    reply = await desk.send(raw)
    assert reply.ticket_number == number
    assert ticket(db, number).status == TicketStatus.in_progress


async def test_only_commands_change_the_ticket_and_send_the_customer_nothing(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for()
    number = await desk.customer_opens()
    await desk.agent_replies(
        number, "#priority high\n#tag +printer +floor3\n#category technical/hardware"
    )
    t = ticket(db, number)
    assert (t.priority, t.category, t.subcategory) == ("high", "technical", "hardware")
    assert t.tags == ["printer", "floor3"]
    assert t.sla_resolution_due_at is not None
    assert t.sla_resolution_due_at - t.created_at == (__import__("datetime").timedelta(hours=8))
    assert desk.outbound(number, "agent-reply") == []
    assert t.first_response_at is None


async def test_typo_refuses_the_whole_reply_and_suggests_the_command(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for()
    number = await desk.customer_opens()
    before = ticket(db, number)
    messages_before = len(rows(db, Message, col(Message.ticket_id) == before.id))
    result = await desk.agent_replies(
        number, "Internal: the customer is on the old plan.\n#internl"
    )
    assert result.outcome == "refused"
    after = ticket(db, number)
    assert (after.status, after.priority, after.updated_at) == (
        before.status,
        before.priority,
        before.updated_at,
    )
    assert desk.outbound(number, "agent-reply") == []
    (error,) = desk.outbound(number, "command-error", to=BOB)
    text = plain_text(bytes(error.raw))
    assert "#internl" in text
    assert "#internal" in text
    # Only the error mail (an internal note of ours) was added to the ticket.
    added = rows(db, Message, col(Message.ticket_id) == before.id)[messages_before:]
    assert [m.outbound_id for m in added] == [error.id]


async def test_internal_note_reaches_no_customer(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for()
    number = await desk.customer_opens()
    await desk.agent_replies(number, "#internal\nThe customer is on the old plan; ask sales.")
    assert desk.outbound(number, "agent-reply") == []
    t = ticket(db, number)
    notes = [m for m in rows(db, Message, col(Message.ticket_id) == t.id) if m.author_email == BOB]
    assert len(notes) == 1
    assert notes[0].internal
    assert notes[0].text_body == "The customer is on the old plan; ask sales."
    assert t.first_response_at is None


async def test_template_is_inserted_in_the_customers_language(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for()
    number = await desk.customer_opens()
    await desk.agent_replies(number, "Hello Anna,\n#template need-details")
    (answer,) = desk.outbound(number, "agent-reply")
    text = plain_text(bytes(answer.raw))
    assert text.startswith("Hello Anna,")
    assert "the exact error message or a screenshot" in text
    assert "#template" not in text


async def test_unknown_template_is_refused(desk_for: Callable[..., Any], db: Database) -> None:
    desk = await desk_for()
    number = await desk.customer_opens()
    result = await desk.agent_replies(number, "Hi\n#template no-such-thing")
    assert result.outcome == "refused"
    assert desk.outbound(number, "agent-reply") == []


async def test_assign_me_from_a_team_notification(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for(AGENTS_UNROUTED)
    number = await desk.customer_opens()
    await desk.agent_replies(number, "#assign me", agent=CAROL)
    t = ticket(db, number)
    assert t.status == TicketStatus.assigned
    assert ("assignee", None, CAROL) in history(db, number, "assignee")
    # Carol assigned herself: nobody else is told; Bob's assign of Carol would notify her.
    assert desk.outbound(number, "ticket-assigned") == []
    await desk.agent_replies(number, "#assign bob", agent=CAROL)
    (note,) = desk.outbound(number, "ticket-assigned", to=BOB)
    assert note.recipients == [BOB]


async def test_assign_unknown_agent_is_refused_with_a_suggestion(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for(AGENTS_UNROUTED)
    number = await desk.customer_opens()
    result = await desk.agent_replies(number, "#assign carl", agent=BOB)
    assert result.outcome == "refused"
    (error,) = desk.outbound(number, "command-error", to=BOB)
    assert "#assign carol" in plain_text(bytes(error.raw))


async def test_merge_moves_messages_and_participants_and_tells_the_customer(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for()
    first = await desk.customer_opens()
    second = await desk.customer_opens("Printer again", sender=f"Zoe <{ZOE}>")
    await desk.agent_replies(second, f"#merge {first}")
    survivor, merged = ticket(db, first), ticket(db, second)
    assert merged.merged_into_id == survivor.id
    assert merged.status == TicketStatus.closed
    # Only the merge notice (sent after the move) stays on the merged ticket.
    left = rows(db, Message, col(Message.ticket_id) == merged.id)
    assert [m.flags[0] for m in left] == ["event:ticket-merged"]
    authors = {m.author_email for m in rows(db, Message, col(Message.ticket_id) == survivor.id)}
    assert ZOE in authors
    assert ("merged_into", None, str(first)) in history(db, second)
    assert ("merged_from", None, str(second)) in history(db, first)
    (notice,) = [o for o in rows(db, Outbound) if o.event == "ticket-merged"]
    assert notice.recipients == [ZOE]
    assert f"[#{first}]" in plain_text(bytes(notice.raw))
    # Zoe's later reply with the old token lands on the survivor, as a participant's.
    raw, _ = make_mail(f"Re: [#{second}] Printer again", sender=f"Zoe <{ZOE}>", body="Still?")
    result = await desk.send(raw)
    assert (result.outcome, result.ticket_number) == ("appended", first)


async def test_merge_into_a_missing_ticket_is_refused(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for()
    number = await desk.customer_opens()
    result = await desk.agent_replies(number, "#merge 999")
    assert result.outcome == "refused"
    assert ticket(db, number).merged_into_id is None


async def test_new_opens_a_ticket_for_the_forwarded_sender(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for()
    body = (
        "#new\n\n"
        "---------- Forwarded message ---------\n"
        f"From: Zoe Quinn <{ZOE}>\n"
        "Date: Mon, 4 Mar 2030 at 08:00\n"
        "Subject: VPN is down for the whole office\n"
        f"To: Bob Builder <{BOB}>\n\n"
        "Nobody here can connect to the VPN since this morning.\n"
    )
    raw, _ = make_mail("Fwd: VPN is down for the whole office", sender=f"Bob <{BOB}>", body=body)
    result = await desk.send(raw, sender=BOB)
    assert result.outcome == "created"
    assert result.ticket_number is not None
    t = ticket(db, result.ticket_number)
    assert t.subject == "VPN is down for the whole office"
    assert "Nobody here can connect" in t.description
    (requester,) = [o for o in desk.outbound(result.ticket_number, "ticket-opened")]
    assert requester.recipients == [ZOE]
    assert ("opened_by", None, BOB) in history(db, result.ticket_number)


# -- who may command ---------------------------------------------------------------------


async def test_fresh_mail_with_the_token_does_not_command(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for()
    number = await desk.customer_opens()
    raw, _ = make_mail(
        f"Re: [#{number}] Printer does not print", sender=f"Bob <{BOB}>", body="#close"
    )
    result = await desk.send(raw, sender=BOB)
    assert ticket(db, number).status == TicketStatus.assigned
    assert result.outcome != "agent-reply"
    assert desk.outbound(number, "agent-reply") == []


async def test_fresh_mail_commands_when_allowed(desk_for: Callable[..., Any], db: Database) -> None:
    desk = await desk_for(desk={"commands_in_fresh_mail": True})
    number = await desk.customer_opens()
    raw, _ = make_mail(
        f"Re: [#{number}] Printer does not print", sender=f"Bob <{BOB}>", body="#pending"
    )
    await desk.send(raw, sender=BOB)
    assert ticket(db, number).status == TicketStatus.pending


async def test_a_strangers_close_is_plain_text(desk_for: Callable[..., Any], db: Database) -> None:
    desk = await desk_for()
    number = await desk.customer_opens()
    ack = desk.outbound(number, "ticket-opened")[0]
    raw, _ = make_mail(
        f"Re: [#{number}] Printer does not print",
        in_reply_to=f"<{ack.message_id}>",
        body="#close\nthanks",
    )
    await desk.send(raw)
    t = ticket(db, number)
    assert t.status == TicketStatus.assigned
    assert any("#close" in m.text_body for m in rows(db, Message, col(Message.ticket_id) == t.id))


@pytest.mark.parametrize(
    ("header", "obeyed"),
    [
        ("", False),
        ("Authentication-Results: mx.test; dkim=fail header.d=example.org", False),
        ("Authentication-Results: evil.test; dkim=pass header.d=example.org", False),
        ("Authentication-Results: mx.test; spf=pass smtp.mailfrom=bob@elsewhere.test", False),
        ("Authentication-Results: mx.test; dkim=pass header.d=example.org", True),
        ("Authentication-Results: mx.test; spf=pass smtp.mailfrom=bob@mail.example.org", True),
    ],
)
async def test_commands_need_an_aligned_pass_when_configured(
    desk_for: Callable[..., Any], db: Database, header: str, obeyed: bool
) -> None:
    desk = await desk_for(desk={"trusted_authserv_id": "mx.test"})
    number = await desk.customer_opens()
    await desk.agent_replies(number, "We are on it.\n#pending", extra=header)
    assert (ticket(db, number).status == TicketStatus.pending) is obeyed
    assert bool(desk.outbound(number, "agent-reply")) is obeyed


async def test_a_forged_header_below_the_trusted_one_does_not_help(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for(desk={"trusted_authserv_id": "mx.test"})
    number = await desk.customer_opens()
    forged = (
        "Authentication-Results: mx.test; dkim=none\r\n"
        "Authentication-Results: mx.test; dkim=pass header.d=example.org"
    )
    await desk.agent_replies(number, "#close", extra=forged)
    assert ticket(db, number).status == TicketStatus.assigned


async def test_a_deactivated_agents_commands_are_refused(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for()
    number = await desk.customer_opens()
    note = desk.note_to(number, BOB)
    gone = await desk_for(
        AGENTS_ROUTED.replace("skills: [other]}", "skills: [other], active: false}", 1)
    )
    await gone.agent_replies(number, "Done.\n#resolve", note=note)
    assert ticket(db, number).status == TicketStatus.assigned
    assert gone.outbound(number, "agent-reply") == []
    (told,) = gone.outbound(number, "mail-refused")
    assert told.recipients == [BOB]
    assert "agent is deactivated" in plain_text(bytes(told.raw))


# -- the lifecycle -----------------------------------------------------------------------

STATUSES = list(TicketStatus)
#: The table as the spec reads (docs/commands.md); the lifecycle module must agree.
EXPECTED = {
    "new": {"assigned", "in_progress", "pending", "resolved", "closed"},
    "assigned": {"new", "in_progress", "pending", "resolved", "closed"},
    "in_progress": {"assigned", "pending", "resolved", "closed"},
    "pending": {"in_progress", "resolved", "closed"},
    "resolved": {"in_progress", "closed", "reopened"},
    "closed": {"reopened"},
    "reopened": {"assigned", "in_progress", "pending", "resolved", "closed"},
}


@pytest.mark.parametrize("target", STATUSES, ids=lambda s: s.value)
@pytest.mark.parametrize("start", STATUSES, ids=lambda s: s.value)
async def test_every_transition_of_the_table(
    desk_for: Callable[..., Any], db: Database, db_url: str, start: Any, target: Any
) -> None:
    if db_url.startswith("postgresql"):
        pytest.skip("the whole table runs on SQLite; PostgreSQL runs the scenarios above")
    desk = await desk_for()
    number = await desk.customer_opens()
    with db.transaction() as session:
        session.execute(
            update(Ticket).where(col(Ticket.number) == number).values(status=start.value)
        )
    result = await desk.agent_replies(number, f"#status {target.value}")
    allowed = target.value in EXPECTED[start.value] or target is start
    assert (target in TRANSITIONS[start] or target is start) is allowed
    assert ticket(db, number).status == (target if allowed else start)
    assert result.outcome == ("agent-reply" if allowed else "refused")


async def test_customer_confirmation_closes_a_resolved_ticket(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for()
    number = await desk.customer_opens()
    await desk.agent_replies(number, "The driver is updated, please try again.\n#resolve")
    (answer,) = desk.outbound(number, "agent-reply")
    assert "thanks, solved" in plain_text(bytes(answer.raw))
    raw, _ = make_mail(
        f"Re: [#{number}] Printer does not print",
        in_reply_to=f"<{answer.message_id}>",
        body="Thanks, it works now!",
    )
    await desk.send(raw)
    assert ticket(db, number).status == TicketStatus.closed


async def test_other_customer_reply_reopens_a_resolved_ticket(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for()
    number = await desk.customer_opens()
    await desk.agent_replies(number, "Try again please.\n#resolve")
    (answer,) = desk.outbound(number, "agent-reply")
    raw, _ = make_mail(
        f"Re: [#{number}] Printer does not print",
        in_reply_to=f"<{answer.message_id}>",
        body="No, it still does not print.",
    )
    await desk.send(raw)
    assert ticket(db, number).status == TicketStatus.reopened
    assert desk.note_to(number, BOB).event == "customer-reply"


def _history_rows(db: Database, number: int) -> list[Any]:
    from mailbot.store.models import History

    t = ticket(db, number)
    return rows(db, History, col(History.ticket_id) == t.id)


AGENTS_WITH_MANAGER = f"""
agents:
  - {{email: {BOB}, name: Bob Builder, skills: [other]}}
  - {{email: mia@example.org, name: Mia Manager, role: manager}}
teams:
  - {{name: desk, members: [{BOB}], skills: [other], mode: round-robin}}
"""


async def test_escalate_raises_the_level_and_tells_the_managers(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for(AGENTS_WITH_MANAGER)
    number = await desk.customer_opens()
    await desk.agent_replies(number, "#escalate customer threatens to cancel")
    assert ticket(db, number).escalation_level == 1
    assert ("escalation", "0", "1: customer threatens to cancel") in history(db, number)
    (note,) = desk.outbound(number, "ticket-escalated")
    assert note.recipients == ["mia@example.org"]
    assert "customer threatens to cancel" in plain_text(bytes(note.raw))
    assert desk.outbound(number, "agent-reply") == []


async def test_a_rule_escalation_tells_the_managers(
    desk_for: Callable[..., Any], db: Database
) -> None:
    rules = (
        "- id: outage\n"
        "  when: {text-contains: [outage]}\n"
        "  then: {set-priority: critical, escalate: 'critical: outage'}\n"
    )
    desk = await desk_for(AGENTS_WITH_MANAGER, rules_text=rules)
    raw, _ = make_mail("Total outage", body="We have an outage since 9:00.")
    result = await desk.send(raw)
    assert result.ticket_number is not None
    notes = desk.outbound(result.ticket_number, "ticket-escalated")
    # The managers, and the team the ticket was routed to (Bob is also its assignee).
    assert sorted(n.recipients[0] for n in notes) == [BOB, "mia@example.org"]
    assert "critical: outage" in plain_text(bytes(notes[0].raw))


async def test_an_agents_attachment_goes_to_the_customer(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for()
    number = await desk.customer_opens()
    note = desk.note_to(number, BOB)
    msg = EmailMessage()
    msg["From"] = f"Bob Builder <{BOB}>"
    msg["To"] = SUPPORT
    msg["Subject"] = f"Re: [#{number}] Printer does not print"
    msg["Message-ID"] = "<agent-attach@mail.example.org>"
    msg["In-Reply-To"] = f"<{note.message_id}>"
    msg.set_content("The new driver is attached.\n#resolve\n")
    msg.add_attachment(
        b"%PDF-1.4 driver notes",
        maintype="application",
        subtype="pdf",
        filename="Treiber-Übersicht.pdf",
    )
    await desk.send(bytes(msg), sender=BOB)
    (answer,) = desk.outbound(number, "agent-reply")
    relayed = parsed(bytes(answer.raw))
    (part,) = list(relayed.iter_attachments())
    assert part.get_filename() == "Treiber-Übersicht.pdf"
    assert part.get_content_type() == "application/pdf"
    assert part.get_payload(decode=True) == b"%PDF-1.4 driver notes"
    body = relayed.get_body(("plain",))
    assert body is not None
    assert "The new driver is attached." in str(body.get_content())
    assert ticket(db, number).status == TicketStatus.resolved


async def test_new_with_more_commands_applies_them_to_the_new_ticket(
    desk_for: Callable[..., Any], db: Database
) -> None:
    desk = await desk_for(AGENTS_UNROUTED)
    body = (
        "#new\n#priority high\n#assign me\nVIP customer, please be quick.\n\n"
        "-------- Original Message --------\n"
        f"From: Zoe Quinn <{ZOE}>\n"
        "Subject: Invoices are wrong\n\n"
        "The March invoice charges us twice.\n"
    )
    raw, _ = make_mail("Fwd: Invoices are wrong", sender=f"Bob <{BOB}>", body=body)
    result = await desk.send(raw, sender=BOB)
    assert result.ticket_number is not None
    t = ticket(db, result.ticket_number)
    assert (t.subject, t.priority, t.status) == ("Invoices are wrong", "high", "assigned")
    assert "charges us twice" in t.description
    assert ("assignee", None, BOB) in history(db, result.ticket_number, "assignee")
    notes = [m for m in rows(db, Message, col(Message.ticket_id) == t.id) if m.author_email == BOB]
    assert [n.text_body for n in notes] == ["VIP customer, please be quick."]
    assert notes[0].internal
    # Zoe's acknowledgement only: Bob took the ticket himself, nobody else is told.
    events = sorted((o.event, o.recipients[0]) for o in desk.outbound(result.ticket_number))
    assert events == [("ticket-opened", ZOE)]
