"""The scheduled jobs on a clock the tests move: reminders, escalations, auto-close,
hand-out, housekeeping, satisfaction; each act exactly once. SQLite and PostgreSQL.

The daemon-level tests (SIGKILL between runs, two daemons on one PostgreSQL)
are in tests/e2e/test_jobs_daemon.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col

from mailbot.config import Settings
from mailbot.jobs import Jobs
from mailbot.message import Attachment as MailAttachment
from mailbot.process import Pipeline
from mailbot.scheduler import build_jobs
from mailbot.states import Priority, TicketStatus
from mailbot.store import inbox, ticket_changes, tickets
from mailbot.store.db import Database
from mailbot.store.models import Attachment, Message, Outbound
from tests.integration.test_conversation import (
    CUSTOMER,
    SUPPORT,
    T0,
    FakeClock,
    history,
    make_mail,
    plain_text,
    rows,
    ticket,
)

BOB = "bob@example.org"
MIA = "mia@example.org"
AGENTS = f"""
agents:
  - {{email: {BOB}, name: Bob Builder}}
  - {{email: {MIA}, name: Mia Manager, role: manager, time_zone: Europe/Berlin}}
teams:
  - {{name: desk, members: [{BOB}], skills: [other], mode: round-robin}}
"""


class World:
    def __init__(self, db: Database, pipeline: Pipeline, clock: FakeClock) -> None:
        self.db, self.pipeline, self.clock = db, pipeline, clock
        self.jobs: Jobs = build_jobs(db, pipeline)

    def mail(self, raw: bytes) -> Any:
        inbox.accept(self.db, raw, source="smtp", clock=self.clock)
        result = self.pipeline.process_next()
        assert result is not None
        assert result.error is None, result.error
        return result

    def open(self, subject: str = "Printer does not print") -> int:
        raw, _ = make_mail(subject)
        result = self.mail(raw)
        assert result.outcome == "created"
        return int(result.ticket_number)

    def at(self, delta: timedelta) -> None:
        self.clock.now = T0 + delta

    def run(self, name: str, *, dry_run: bool = False) -> list[str]:
        return self.jobs.run(name, dry_run=dry_run).done

    def status(self, number: int, status: TicketStatus, actor: str = BOB) -> None:
        with self.db.transaction() as session:
            facts = ticket_changes.facts_by_number(session, number)
            assert facts is not None
            self.jobs.sla.set_status(session, facts.row, status, actor, self.clock())

    def events(self, number: int | None = None) -> list[tuple[str, str]]:
        found = rows(self.db, Outbound)
        wanted = None if number is None else ticket(self.db, number).id
        return [
            (o.event, o.recipients[0]) for o in found if wanted is None or o.ticket_id == wanted
        ]


@pytest.fixture
def make_world(
    db: Database, settings_for: Callable[..., Settings], tmp_path: Path
) -> Callable[..., World]:
    def build(agents: str = AGENTS, **sections: Any) -> World:
        rules = tmp_path / "no-rules.yaml"
        rules.write_text("[]\n")
        people = tmp_path / "agents.yaml"
        people.write_text(agents)
        settings = settings_for(rules_file=str(rules), agents_file=str(people), **sections)
        clock = FakeClock()
        pipeline = Pipeline(db, settings, clock=clock)
        pipeline.sync_people()
        return World(db, pipeline, clock)

    return build


# -- SLA reminders and escalations ----------------------------------------------------------


def test_reminders_at_three_quarters_of_the_way_once(make_world: Callable[..., World]) -> None:
    world = make_world()
    number = world.open()  # medium: first response 8 h, resolution 24 h
    world.at(timedelta(hours=5, minutes=59))
    assert world.run("sla-reminders") == []
    world.at(timedelta(hours=6))
    assert world.run("sla-reminders") == [f"ticket {number}: first_response reminder"]
    assert world.run("sla-reminders") == []
    world.at(timedelta(hours=18))
    assert world.run("sla-reminders") == [f"ticket {number}: resolution reminder"]
    world.at(timedelta(days=3))
    assert world.run("sla-reminders") == []
    reminders = [e for e in world.events(number) if e[0] == "sla-reminder"]
    assert reminders == [("sla-reminder", BOB), ("sla-reminder", BOB)]


def test_a_missed_run_catches_up_once(make_world: Callable[..., World]) -> None:
    world = make_world()
    number = world.open()
    world.at(timedelta(days=2))  # the daemon was down: both reminders are due at once
    done = world.run("sla-reminders")
    assert sorted(done) == [
        f"ticket {number}: first_response reminder",
        f"ticket {number}: resolution reminder",
    ]
    assert world.run("sla-reminders") == []


def test_no_first_response_reminder_after_the_first_response(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    number = world.open()
    with world.db.transaction() as session:
        facts = ticket_changes.facts_by_number(session, number)
        assert facts is not None
        ticket_changes.set_first_response(session, facts, T0 + timedelta(hours=1))
    world.at(timedelta(hours=7))
    assert world.run("sla-reminders") == []


def test_breach_escalates_once_and_tells_managers_and_team(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    number = world.open()
    world.at(timedelta(hours=8))
    assert world.run("sla-escalations") == []  # exactly at the due time: not yet
    world.at(timedelta(hours=8, minutes=1))
    assert world.run("sla-escalations") == [f"ticket {number}: first response breached, escalated"]
    assert world.run("sla-escalations") == []
    t = ticket(world.db, number)
    assert t.escalation_level == 1
    assert t.first_response_breached_at == T0 + timedelta(hours=8, minutes=1)
    assert ("escalation", "0", "1: SLA breach: first response") in history(world.db, number)
    breach = sorted(e for e in world.events(number) if e[0] == "sla-breach")
    assert breach == [("sla-breach", BOB), ("sla-breach", MIA)]
    world.at(timedelta(hours=25))
    assert world.run("sla-escalations") == [f"ticket {number}: resolution breached, escalated"]
    assert ticket(world.db, number).escalation_level == 2


def test_pending_tickets_do_not_breach_and_the_pause_moves_the_due_times(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    number = world.open()
    world.at(timedelta(hours=1))
    world.status(number, TicketStatus.pending)
    assert ticket(world.db, number).pending_since == T0 + timedelta(hours=1)
    world.at(timedelta(hours=30))
    assert world.run("sla-escalations") == []
    # The customer answers 29 hours later: both due times move by 29 hours.
    raw, _ = make_mail(f"Re: [#{number}] Printer does not print", body="Here is the photo.")
    world.mail(raw)
    t = ticket(world.db, number)
    assert t.status == TicketStatus.in_progress
    assert t.pending_since is None
    assert t.sla_paused_seconds == 29 * 3600
    assert t.sla_first_response_due_at == T0 + timedelta(hours=8 + 29)
    assert t.sla_resolution_due_at == T0 + timedelta(hours=24 + 29)


def test_priority_change_recomputes_the_due_times(make_world: Callable[..., World]) -> None:
    world = make_world()
    number = world.open()
    with world.db.transaction() as session:
        facts = ticket_changes.facts_by_number(session, number)
        assert facts is not None
        world.jobs.sla.set_priority(session, facts, Priority.critical, BOB, T0)
    t = ticket(world.db, number)
    assert t.sla_first_response_due_at == T0 + timedelta(hours=1)
    assert t.sla_resolution_due_at == T0 + timedelta(hours=4)


def test_business_hours_calendar_from_the_settings(make_world: Callable[..., World]) -> None:
    # T0 is Monday 2030-03-04 09:00 UTC = 10:00 in Berlin; 8 business hours of a
    # 09:00-17:00 Berlin day: 7 on Monday (10-17), 1 on Tuesday (09-10) = Tue 09:00 UTC.
    calendar = {"time_zone": "Europe/Berlin", "hours": {"mon-fri": ["09:00-17:00"]}}
    world = make_world(sla={"calendar": calendar})
    number = world.open()
    t = ticket(world.db, number)
    assert t.sla_first_response_due_at == T0 + timedelta(days=1)


# -- auto-close ------------------------------------------------------------------------------


def test_pending_reminder_then_close_with_notices(make_world: Callable[..., World]) -> None:
    world = make_world()
    number = world.open()
    world.status(number, TicketStatus.pending)
    world.at(timedelta(days=3) - timedelta(minutes=1))
    assert world.run("pending-close") == []
    world.at(timedelta(days=3))
    assert world.run("pending-close") == [f"ticket {number}: pending reminder to the customer"]
    assert world.run("pending-close") == []
    world.at(timedelta(days=7))
    assert world.run("pending-close") == [f"ticket {number}: closed after 7.0 days pending"]
    assert world.run("pending-close") == []
    t = ticket(world.db, number)
    assert t.status == TicketStatus.closed
    customer = [e for e in world.events(number) if e[1] == CUSTOMER]
    assert [e[0] for e in customer] == ["ticket-opened", "pending-reminder", "ticket-closed"]
    (closing,) = [o for o in rows(world.db, Outbound) if o.event == "ticket-closed"]
    text = plain_text(bytes(closing.raw))
    assert "did not hear back" in text
    assert "from 1" in text


def test_resolved_tickets_close_after_three_days(make_world: Callable[..., World]) -> None:
    world = make_world()
    number = world.open()
    world.status(number, TicketStatus.resolved)
    world.at(timedelta(days=3) - timedelta(seconds=1))
    assert world.run("resolved-close") == []
    world.at(timedelta(days=3))
    assert world.run("resolved-close") == [f"ticket {number}: closed 3.0 days after resolution"]
    assert world.run("resolved-close") == []
    assert ticket(world.db, number).status == TicketStatus.closed
    assert ("status", "resolved", "closed") in history(world.db, number, "status")


def test_a_dry_run_changes_nothing(make_world: Callable[..., World]) -> None:
    world = make_world()
    number = world.open()
    world.status(number, TicketStatus.resolved)
    world.at(timedelta(days=4))
    before = world.events()
    assert world.run("resolved-close", dry_run=True) == [
        f"ticket {number}: closed 3.0 days after resolution"
    ]
    assert ticket(world.db, number).status == TicketStatus.resolved
    assert world.events() == before
    assert world.run("resolved-close") != []


# -- satisfaction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "rating", "comment"),
    [
        ("5", 5, None),
        ("4 - quick, but I had to ask twice", 4, "quick, but I had to ask twice"),
        ("Отлично", 5, None),
        ("5, спасибо большое!", 5, "спасибо большое!"),
        ("👍", 5, None),
        ("1 - nobody understood the question", 1, "nobody understood the question"),
    ],
)
def test_satisfaction_replies_are_recorded(
    make_world: Callable[..., World], reply: str, rating: int, comment: str | None
) -> None:
    world = make_world()
    number = world.open()
    world.status(number, TicketStatus.resolved)
    world.at(timedelta(days=3))
    world.run("resolved-close")
    (closing,) = [o for o in rows(world.db, Outbound) if o.event == "ticket-closed"]
    raw, _ = make_mail(
        f"Re: [#{number}] Printer does not print",
        in_reply_to=f"<{closing.message_id}>",
        body=f"{reply}\n\nOn Mon, Mar 4, 2030 at 9:00 AM Support <{SUPPORT}> wrote:\n> Rate us",
    )
    world.mail(raw)
    t = ticket(world.db, number)
    assert t.status == TicketStatus.closed
    assert t.rating == rating
    assert t.rating_comment == comment
    assert ("rating", None, str(rating)) in history(world.db, number)


@pytest.mark.parametrize("reply", ["It broke again this morning.", "5 users cannot log in now"])
def test_other_replies_to_a_closed_ticket_reopen_it(
    make_world: Callable[..., World], reply: str
) -> None:
    world = make_world()
    number = world.open()
    world.status(number, TicketStatus.closed)
    world.at(timedelta(days=1))
    raw, _ = make_mail(f"Re: [#{number}] Printer does not print", body=reply)
    world.mail(raw)
    t = ticket(world.db, number)
    assert t.status == TicketStatus.reopened
    assert t.rating is None


# -- hand-out --------------------------------------------------------------------------------

SHIFTS = f"""
agents:
  - {{email: {BOB}, name: Bob Builder, time_zone: UTC, working_hours: {{mon-fri: ["12:00-18:00"]}}}}
teams:
  - {{name: desk, members: [{BOB}], skills: [other], mode: round-robin}}
"""


def test_queued_tickets_go_to_the_first_agent_on_shift(make_world: Callable[..., World]) -> None:
    world = make_world(SHIFTS)
    number = world.open()  # Monday 09:00 UTC: Bob starts at 12:00
    t = ticket(world.db, number)
    assert (t.assignee_id, t.team) == (None, "desk")
    world.at(timedelta(hours=2, minutes=59))
    assert world.run("hand-out") == []
    world.at(timedelta(hours=3))
    assert world.run("hand-out") == [f"ticket {number}: assigned to {BOB}"]
    assert world.run("hand-out") == []
    t = ticket(world.db, number)
    assert t.status == TicketStatus.assigned
    assert t.assignee_id is not None
    assert ("ticket-assigned", BOB) in world.events(number)


# -- housekeeping ----------------------------------------------------------------------------


def test_orphaned_attachment_files_are_deleted(make_world: Callable[..., World]) -> None:
    world = make_world()
    blobs = world.jobs.blobs
    used = blobs.put(b"referenced")
    orphan = blobs.put(b"nobody refers to me")
    fresh = blobs.put(b"an orphan, but too young")
    number = world.open()
    (first,) = rows(world.db, Message, col(Message.ticket_id) == ticket(world.db, number).id)[:1]
    with world.db.transaction() as session:
        tickets.add_attachments(
            session, first.id, [MailAttachment("a.txt", "text/plain", b"referenced")], [used]
        )
    # File ages count on the job's clock: two days old, and one just written.
    old, young = (T0 - timedelta(days=2)).timestamp(), T0.timestamp()
    for key in (used, orphan):
        os.utime(blobs.path_for(key), (old, old))
    os.utime(blobs.path_for(fresh), (young, young))
    assert len(world.run("housekeeping", dry_run=True)) == 1
    assert blobs.path_for(orphan).exists()
    assert len(world.run("housekeeping")) == 1
    assert not blobs.path_for(orphan).exists()
    assert blobs.path_for(used).exists()
    assert blobs.path_for(fresh).exists()
    assert len(rows(world.db, Attachment, col(Attachment.storage_key) == used)) == 1


def test_job_names_are_the_documented_ones() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "jobs.md").read_text()
    for name in Jobs.NAMES:
        assert f"`{name}`" in docs


# -- digest ----------------------------------------------------------------------------------


def test_digest_once_per_manager_and_day_at_the_local_time(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    world.open()
    # T0 is 09:00 UTC = 10:00 in Berlin, after 08:00: yesterday's digest goes now, once.
    assert world.run("digest") == [f"digest of 2030-03-03 to {MIA}"]
    assert world.run("digest") == []
    world.at(timedelta(hours=21, minutes=59))  # Tuesday 07:59 in Berlin
    assert world.run("digest") == []
    world.at(timedelta(hours=22))  # 08:00 in Berlin
    assert world.run("digest") == [f"digest of 2030-03-04 to {MIA}"]
    digests = [o for o in rows(world.db, Outbound) if o.event == "daily-digest"]
    assert [o.recipients for o in digests] == [[MIA], [MIA]]
    assert "2030-03-04" in plain_text(bytes(digests[1].raw)) or "04.03.2030" in plain_text(
        bytes(digests[1].raw)
    )
