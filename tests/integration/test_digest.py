"""Digest figures equal to a hand-computed fixture of tickets (SQLite and PostgreSQL).

The fixture: 23 tickets written directly, around Sunday 2026-10-25 in
Europe/Berlin, the day summer time ends (03:00 CEST becomes 02:00 CET), so
the local day lasts 25 hours: 2026-10-24 22:00Z to 2026-10-25 23:00Z. The
digest is built at 2026-10-26 07:00 CET (06:00Z) with a 2-hour at-risk window.
Every expected value below is worked out by hand in the comments; times in
the fixture are UTC (``z("10-25 08:00")`` is 2026-10-25 08:00Z).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session

from mailbot.digest import (
    Digest,
    Durations,
    Share,
    build_digest,
    digest_context,
    format_duration,
    normalise_subject,
)
from mailbot.render import MailRenderer
from mailbot.store.db import Database
from mailbot.store.models import Agent, AgentRole, History, Message, Ticket

ZONE = "Europe/Berlin"
DAY = date(2026, 10, 25)
AT_RISK = timedelta(hours=2)


def z(text: str) -> datetime:
    """``"10-25 08:00"`` -> 2026-10-25 08:00 UTC."""
    return datetime.fromisoformat(f"2026-{text}").replace(tzinfo=UTC)


NOW = z("10-26 06:00")  # 07:00 CET


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


@dataclass
class Desk:
    session: Session
    ids: dict[int, int] = field(default_factory=dict)  # ticket number -> id
    agents: dict[str, int] = field(default_factory=dict)

    def agent(self, email: str, role: str = "agent", active: bool = True) -> None:
        name = email.split("@")[0].title()
        row = Agent(email=email, name=name, role=AgentRole(role), active=active)
        self.session.add(row)
        self.session.flush()
        assert row.id is not None
        self.agents[email] = row.id

    def ticket(
        self,
        number: int,
        created: str,
        subject: str,
        *,
        priority: str = "medium",
        category: str | None = None,
        source: str = "email",
        status: str = "new",
        assignee: str | None = None,
        answered: str | None = None,
        first_due: str | None = None,
        resolution_due: str | None = None,
        resolved: str | None = None,
        closed: str | None = None,
        pending_since: str | None = None,
        rating: int | None = None,
        spam: bool = False,
        merged_into: int | None = None,
    ) -> None:
        def at(text: str | None) -> datetime | None:
            return None if text is None else z(text)

        row = Ticket(
            number=number,
            subject=subject,
            status=status,  # type: ignore[arg-type]
            priority=priority,  # type: ignore[arg-type]
            category=category,
            source=source,  # type: ignore[arg-type]
            created_at=z(created),
            updated_at=z(created),
            assignee_id=self.agents[assignee] if assignee else None,
            first_response_at=at(answered),
            sla_first_response_due_at=at(first_due),
            sla_resolution_due_at=at(resolution_due),
            resolved_at=at(resolved),
            closed_at=at(closed),
            pending_since=at(pending_since),
            rating=rating,
            rated_at=at(resolved) if rating else None,
            spam=spam,
            merged_into_id=self.ids[merged_into] if merged_into else None,
        )
        self.session.add(row)
        self.session.flush()
        assert row.id is not None
        self.ids[number] = row.id
        self.status(number, None, "new", created)

    def status(self, number: int, old: str | None, new: str, at: str) -> None:
        self.session.add(
            History(
                ticket_id=self.ids[number], field="status", old_value=old, new_value=new,
                created_at=z(at),
            )
        )  # fmt: skip

    def escalate(self, number: int, at: str) -> None:
        self.session.add(
            History(
                ticket_id=self.ids[number], field="escalation", old_value="0",
                new_value="1: rule", created_at=z(at),
            )
        )  # fmt: skip

    def message(
        self, number: int, at: str, author_type: str = "support", internal: bool = False
    ) -> None:
        self.session.add(
            Message(
                ticket_id=self.ids[number], author_type=author_type,  # type: ignore[arg-type]
                internal=internal, created_at=z(at),
            )
        )  # fmt: skip


def seed(desk: Desk) -> None:
    d = desk
    for email in ("olga@example.org", "ivan@example.org", "petr@example.org"):
        d.agent(email)
    d.agent("mgr@example.org", role="manager")
    d.agent("old@example.org", active=False)

    # -- created on Sunday 10-25 (local), 10-24 22:00Z .. 10-25 23:00Z ----------------
    # T101: 00:30 CEST on the 25th, still the 24th in UTC. Answered in 1 h (due 4 h),
    # resolved after 4 h (due 8 h): both met. One public reply; the internal note and
    # the customer's mail do not count.
    d.ticket(101, "10-24 22:30", "Invoice 2024-117 missing", priority="high",
             category="billing", status="resolved", assignee="olga@example.org",
             answered="10-24 23:30", first_due="10-25 02:30", resolution_due="10-25 06:30",
             resolved="10-25 02:30", rating=5)  # fmt: skip
    d.status(101, "new", "assigned", "10-24 22:40")
    d.status(101, "assigned", "resolved", "10-25 02:30")
    d.message(101, "10-24 22:30", author_type="user")
    d.message(101, "10-24 23:00", internal=True)
    d.message(101, "10-24 23:30")
    # T102: answered in 30 min (due 1 h), resolved after 6 h (due 4 h): missed.
    # Two public replies: not first contact. Escalated at 09:00Z.
    d.ticket(102, "10-25 08:00", "Re: [#55] API down", priority="critical",
             category="technical", source="web", status="resolved",
             assignee="ivan@example.org", answered="10-25 08:30", first_due="10-25 09:00",
             resolution_due="10-25 12:00", resolved="10-25 14:00", rating=2)  # fmt: skip
    d.status(102, "new", "in_progress", "10-25 08:30")
    d.status(102, "in_progress", "resolved", "10-25 14:00")
    d.message(102, "10-25 08:30")
    d.message(102, "10-25 13:59")
    d.escalate(102, "10-25 09:00")
    # T103: answered after 2 h 15 (due 8 h), open; resolution due 10-26 10:00 (4 h after now).
    d.ticket(103, "10-25 10:00", "API down", category="technical", source="chat",
             status="in_progress", assignee="olga@example.org", answered="10-25 12:15",
             first_due="10-25 18:00", resolution_due="10-26 10:00")  # fmt: skip
    # T104: 23:30 CET on the 25th (00:30 on the 26th if the offset were still +2).
    # Unanswered, first response due 10-26 22:30: not decided yet.
    d.ticket(104, "10-25 22:30", "API down!!", priority="low", category="usage",
             first_due="10-26 22:30", resolution_due="10-27 22:30")  # fmt: skip
    # T105: created exactly 1 day before now; unanswered past its due: a first-response
    # miss, breached. Escalated.
    d.ticket(105, "10-25 06:00", "fwd: Invoice 3001 missing", priority="high",
             category="billing", source="api", first_due="10-25 10:00",
             resolution_due="10-25 14:00")  # fmt: skip
    d.escalate(105, "10-25 09:30")
    # T106: spam, excluded everywhere (volume, resolution, rating, events, backlog, subjects).
    d.ticket(106, "10-25 11:00", "API down", priority="critical", category="technical",
             status="new", resolved="10-25 12:00", first_due="10-25 11:30",
             resolution_due="10-25 12:00", rating=1, spam=True)  # fmt: skip
    d.status(106, "new", "resolved", "10-25 12:00")
    d.status(106, "resolved", "reopened", "10-25 13:00")
    d.escalate(106, "10-25 12:30")
    d.message(106, "10-25 11:10")
    # T108: created Thursday 10-22, answered in 1 h (due 4 h), resolved Friday 10-23,
    # reopened Sunday 07:00Z, resolved again 09:00Z: 72 h, due 10-22 17:00 missed.
    # One public reply, but reopened: not first contact.
    d.ticket(108, "10-22 09:00", "Password reset", priority="high", category="account",
             status="resolved", assignee="olga@example.org", answered="10-22 10:00",
             first_due="10-22 13:00", resolution_due="10-22 17:00", resolved="10-25 09:00",
             rating=4)  # fmt: skip
    d.status(108, "new", "resolved", "10-23 09:00")
    d.status(108, "resolved", "reopened", "10-25 07:00")
    d.status(108, "reopened", "resolved", "10-25 09:00")
    d.message(108, "10-22 10:00")
    # T107: merged into T108 on Sunday: in the volume, nowhere else (its unanswered,
    # overdue first response is not a miss; its closing is no finish).
    d.ticket(107, "10-25 12:00", "Password reset", status="closed", closed="10-25 13:00",
             first_due="10-25 20:00", merged_into=108)  # fmt: skip
    d.status(107, "new", "closed", "10-25 13:00")
    # T109: created Saturday 08:00 CEST, answered in 1 h; resolved 23:45 CET Sunday
    # (22:45Z): 40 h 45. Resolution due moved to 10-26 06:00 by a pause: met.
    # Auto-closed after the window (resolved -> closed is no finish anyway).
    d.ticket(109, "10-24 06:00", "Printer offline", category="technical", status="closed",
             assignee="ivan@example.org", answered="10-24 07:00", first_due="10-24 14:00",
             resolution_due="10-26 06:00", resolved="10-25 22:45",
             closed="10-26 05:00")  # fmt: skip
    d.status(109, "new", "in_progress", "10-24 07:00")
    d.status(109, "in_progress", "resolved", "10-25 22:45")
    d.status(109, "resolved", "closed", "10-26 05:00")
    d.message(109, "10-24 07:00")
    d.escalate(109, "10-24 21:50")  # 23:50 CEST Saturday
    # T110: created Tuesday 10-20, resolved Sunday: 5 d 5 h, due 10-22 10:00 missed.
    # By an agent now inactive. One public reply (the acknowledgement is "system").
    d.ticket(110, "10-20 10:00", "How to export", priority="low", category="usage",
             source="web", status="resolved", assignee="old@example.org",
             answered="10-20 11:00", first_due="10-21 10:00", resolution_due="10-22 10:00",
             resolved="10-25 15:00", rating=3)  # fmt: skip
    d.status(110, "new", "in_progress", "10-20 11:00")
    d.status(110, "in_progress", "resolved", "10-25 15:00")
    d.message(110, "10-20 10:00", author_type="system")
    d.message(110, "10-20 11:00")
    # T111: unassigned, no SLA due times at all; answered in 20 min, resolved in 1 h.
    d.ticket(111, "10-25 09:00", "How to export", priority="low", category="usage",
             status="resolved", answered="10-25 09:20", resolved="10-25 10:00",
             rating=5)  # fmt: skip
    d.status(111, "new", "resolved", "10-25 10:00")
    d.message(111, "10-25 09:20")
    # T112: answered in 10 min (due 8 h), closed without a resolution: a finish,
    # not a resolved ticket.
    d.ticket(112, "10-25 11:00", "How to export", category="account", status="closed",
             assignee="olga@example.org", answered="10-25 11:10", first_due="10-25 19:00",
             resolution_due="10-26 11:00", closed="10-25 11:30")  # fmt: skip
    d.status(112, "new", "closed", "10-25 11:30")
    d.message(112, "10-25 11:10")
    # T116: answered in 1 h (due 8 h); resolution due 10-26 07:30, 1 h 30 after now: at risk.
    d.ticket(116, "10-25 18:00", "Refund request", category="billing",
             status="in_progress", assignee="olga@example.org", answered="10-25 19:00",
             first_due="10-26 02:00", resolution_due="10-26 07:30")  # fmt: skip

    # -- the other days of the trend ---------------------------------------------------
    # T113 (Wednesday 10-21): resolved Saturday 10-24 10:00Z, reopened Sunday: open,
    # resolution due 10-22 08:00 passed: breached. Escalated Sunday 20:30Z, and again
    # at 00:10 CET Monday (outside the day).
    d.ticket(113, "10-21 08:00", "Sync fails on item 42 <b>&</b>", category="technical",
             status="reopened", assignee="ivan@example.org", answered="10-21 08:30",
             first_due="10-21 16:00", resolution_due="10-22 08:00")  # fmt: skip
    d.status(113, "new", "resolved", "10-24 10:00")
    d.status(113, "resolved", "reopened", "10-25 20:00")
    d.escalate(113, "10-25 20:30")
    d.escalate(113, "10-25 23:10")
    # T115 (Friday 10-23): answered in 30 min (due 1 h); paused at 12:00, after its
    # resolution due of 10:00: breached. Created exactly 3 days before now.
    d.ticket(115, "10-23 06:00", "Printer offline", priority="critical",
             category="technical", status="pending", assignee="ivan@example.org",
             answered="10-23 06:30", first_due="10-23 07:00", resolution_due="10-23 10:00",
             pending_since="10-23 12:00")  # fmt: skip
    # T119 (Saturday 10-24): answered in 1 h, resolved in 4 h (both met), rated 4;
    # auto-closed Sunday (no finish: it was resolved).
    d.ticket(119, "10-24 08:00", "Refund request", category="billing", status="closed",
             assignee="olga@example.org", answered="10-24 09:00", first_due="10-24 16:00",
             resolution_due="10-25 08:00", resolved="10-24 12:00", closed="10-25 12:00",
             rating=4)  # fmt: skip
    d.status(119, "new", "resolved", "10-24 12:00")
    d.status(119, "resolved", "closed", "10-25 12:00")
    d.message(119, "10-24 09:00")
    # T120 (Monday 10-19, 08:00 CEST): unanswered, due passed: breached; created
    # exactly 7 days before now.
    d.ticket(120, "10-19 06:00", "Feature idea", priority="low", category="other",
             status="assigned", assignee="olga@example.org", first_due="10-20 06:00",
             resolution_due="10-21 06:00")  # fmt: skip
    # T121 (Monday 10-19): answered in 1 h, resolved in 3 h, no due times.
    d.ticket(121, "10-19 09:00", "AW: Invoice 17 missing", priority="low",
             category="billing", status="resolved", assignee="ivan@example.org",
             answered="10-19 10:00", resolved="10-19 12:00")  # fmt: skip
    d.status(121, "new", "resolved", "10-19 12:00")
    d.message(121, "10-19 10:00")

    # -- outside the 7 days ------------------------------------------------------------
    # T100: 23:30 CEST on Sunday 10-18, just before the week.
    d.ticket(100, "10-18 21:30", "How to export", status="resolved",
             answered="10-18 21:40", resolved="10-18 21:45")  # fmt: skip
    d.status(100, "new", "resolved", "10-18 21:45")
    # T114: pending since 12:00, before its resolution due of 18:00: the clock stopped
    # in time, so neither breached nor at risk though the due lies in the past.
    d.ticket(114, "10-18 10:00", "Printer offline", priority="high", category="technical",
             status="pending", assignee="ivan@example.org", answered="10-18 10:30",
             first_due="10-18 14:00", resolution_due="10-18 18:00",
             pending_since="10-18 12:00")  # fmt: skip
    # T117, T118: Monday 10-26 (local), after the day. T117's first response is due
    # exactly at now + 2 h: not at risk (strictly within); T118's at 07:45: at risk.
    d.ticket(117, "10-26 04:00", "Cannot log in", priority="high", category="account",
             first_due="10-26 08:00", resolution_due="10-26 12:00")  # fmt: skip
    d.ticket(118, "10-26 05:30", "Cannot pay", priority="high", category="billing",
             first_due="10-26 07:45", resolution_due="10-26 13:30")  # fmt: skip


@pytest.fixture
def digest(db: Database) -> Iterator[Digest]:
    with db.transaction() as session:
        seed(Desk(session))
    with db.transaction() as session:
        yield build_digest(session, day=DAY, time_zone=ZONE, now=NOW, at_risk=AT_RISK)


def test_digest_figures_equal_hand_computed_fixture(digest: Digest) -> None:
    day = digest.figures
    assert [f.day for f in digest.days] == [date(2026, 10, d) for d in range(19, 26)]
    # Local midnight CEST (+2) to local midnight CET (+1): 25 hours.
    assert (day.start, day.end) == (z("10-24 22:00"), z("10-25 23:00"))
    assert day.end - day.start == timedelta(hours=25)
    assert digest.days[0].start == z("10-18 22:00")

    # Volume: 101, 102, 103, 104, 105, 107 (merged), 111, 112, 116 = 9; not 106 (spam),
    # 117/118 (Monday), 109/119 (Saturday).
    assert day.created == 9
    # billing 101 105 116; technical 102 103; usage 104 111; account 112; none 107.
    assert day.by_category == {"billing": 3, "technical": 2, "usage": 2, "account": 1, None: 1}
    assert list(day.by_category) == ["billing", "technical", "usage", "account", None]
    # critical 102; high 101 105; medium 103 107 112 116; low 104 111.
    assert day.by_priority == {"critical": 1, "high": 2, "medium": 4, "low": 2}
    # web 102; email 101 104 107 111 112 116; chat 103; api 105.
    assert day.by_source == {"web": 1, "email": 6, "chat": 1, "api": 1}

    # First response, 107 (merged) left out: 101 60, 102 30, 103 135, 111 20, 112 10,
    # 116 60 min. Sorted 10 20 30 60 60 135: median (30 + 60) / 2 = 45; p90 rank
    # ceil(0.9 * 6) = 6 -> 135. Unanswered: 104, 105.
    assert day.first_response == Durations(6, minutes(45), minutes(135))
    assert day.unanswered == 2
    # Met: 101 102 103 112 116; missed: 105 (due 10:00 passed); 104 undecided (due
    # later), 111 no due -> 5/6.
    assert day.first_response_sla == Share(5, 6)

    # Resolved: 101 102 108 109 110 111 (112 closed unresolved, 113 reopened, 106 spam).
    assert day.resolved == 6
    # 101 240, 102 360, 108 4320, 109 2445, 110 7500, 111 60 min. Sorted 60 240 360
    # 2445 4320 7500: median (360 + 2445) / 2 = 1402.5 min; p90 rank 6 -> 7500.
    assert day.resolution == Durations(6, minutes(1402.5), minutes(7500))
    # With a due time: 101 met, 102 missed (resolution), 108 missed, 109 met (moved due),
    # 110 missed; 111 has none -> 2/5.
    assert day.sla == Share(2, 5)
    # Ratings 101 5, 102 2, 108 4, 110 3, 111 5 (109 none, 106 spam) = 19 / 5.
    assert day.satisfaction.count == 5
    assert day.satisfaction.average == pytest.approx(3.8)
    # One public reply and never reopened: 101 109 110 111; 102 has two, 108 reopened.
    assert day.first_contact == Share(4, 6)
    # Reopened: 108, 113 (106 spam). Finished: 101 102 108 109 110 111 (resolved),
    # 112 (closed from new); not 107 (merge), 119 (closed from resolved) -> 2/7.
    assert day.reopen_rate == Share(2, 7)
    # 102, 105, 113 at 20:30Z; not 113 at 23:10Z (Monday 00:10 CET), nor 106 (spam).
    assert day.escalations == 3

    # Per agent (resolved that day): ivan 102 109, olga 101 108, old 110 (inactive but
    # worked), petr none (active, listed), mgr none (a manager: not listed), unassigned 111.
    agents = {a.email: a for a in day.agents}
    assert [a.email for a in day.agents] == [
        "ivan@example.org",
        "olga@example.org",
        "old@example.org",
        "petr@example.org",
        None,
    ]
    ivan, olga = agents["ivan@example.org"], agents["olga@example.org"]
    # ivan: 360 and 2445 min -> median 1402.5; rating 2 (109 unrated); 102 missed, 109 met.
    assert (ivan.handled, ivan.resolution.median) == (2, minutes(1402.5))
    assert (ivan.satisfaction.count, ivan.satisfaction.average, ivan.sla) == (1, 2.0, Share(1, 2))
    # olga: 240 and 4320 -> median 2280 min (38 h); ratings 5, 4 -> 4.5; 101 met, 108 missed.
    assert (olga.handled, olga.resolution.median) == (2, minutes(2280))
    assert (olga.satisfaction.count, olga.satisfaction.average, olga.sla) == (2, 4.5, Share(1, 2))
    old = agents["old@example.org"]
    assert (old.handled, old.resolution.median, old.satisfaction.average, old.sla) == (
        1,
        minutes(7500),
        3.0,
        Share(0, 1),
    )
    petr = agents["petr@example.org"]
    assert (petr.handled, petr.resolution.median, petr.sla.ratio) == (0, None, None)
    nobody = agents[None]
    assert (nobody.handled, nobody.resolution.median, nobody.sla) == (1, minutes(60), Share(0, 0))


def test_trend_days(digest: Digest) -> None:
    # Created per local day 19..25: 120 121 | 110 | 113 | 108 | 115 | 109 119 | 9 on Sunday.
    assert [f.created for f in digest.days] == [2, 1, 1, 1, 1, 2, 9]
    # Resolved (current resolution): 121 on the 19th, 119 on the 24th (113 was reopened).
    assert [f.resolved for f in digest.days] == [1, 0, 0, 0, 0, 1, 6]
    # Finished: 121; 108 (first resolution, Friday); 113 and 119 (Saturday); Sunday 7.
    assert [f.reopen_rate for f in digest.days] == [
        Share(0, 1), Share(0, 0), Share(0, 0), Share(0, 0), Share(0, 1), Share(0, 2), Share(2, 7),
    ]  # fmt: skip
    # 109 at 23:50 CEST Saturday.
    assert [f.escalations for f in digest.days] == [0, 0, 0, 0, 0, 1, 3]

    monday, saturday = digest.days[0], digest.days[5]
    # Monday: 121 answered in 1 h (no due); 120 unanswered, due passed -> 0/1.
    assert (monday.first_response, monday.unanswered) == (Durations(1, minutes(60), minutes(60)), 1)
    assert monday.first_response_sla == Share(0, 1)
    # 121 resolved in 3 h, no due times; one public reply.
    assert (monday.resolution.median, monday.sla, monday.first_contact) == (
        minutes(180),
        Share(0, 0),
        Share(1, 1),
    )
    # Saturday: 109 and 119 answered in 1 h each, both in time; 119 resolved in 4 h,
    # in time, rated 4, one reply.
    assert saturday.first_response == Durations(2, minutes(60), minutes(60))
    assert saturday.first_response_sla == Share(2, 2)
    assert (saturday.resolution.median, saturday.sla) == (minutes(240), Share(1, 1))
    assert (saturday.satisfaction.count, saturday.satisfaction.average) == (1, 4.0)
    assert [(a.email, a.handled) for a in saturday.agents if a.handled] == [("olga@example.org", 1)]
    # Friday: 115 answered in 30 min, due 1 h.
    assert digest.days[4].first_response == Durations(1, minutes(30), minutes(30))


def test_queue_and_recurring_subjects(digest: Digest) -> None:
    # Open, not spam, not merged, at 10-26 06:00Z. Ages: 103 20 h, 104 7.5 h, 116 12 h,
    # 117 2 h, 118 30 min (< 1 d); 105 exactly 1 d (1-3 d); 113 4 d 22 h and 115
    # exactly 3 d (3-7 d); 114 7 d 20 h and 120 exactly 7 d (7 d or more).
    backlog = digest.backlog
    assert backlog.by_status == {
        "new": 4,  # 104 105 117 118
        "assigned": 1,  # 120
        "in_progress": 2,  # 103 116
        "pending": 2,  # 114 115
        "reopened": 1,  # 113
    }
    assert backlog.by_age == {"lt1d": 5, "1-3d": 1, "3-7d": 2, "gt7d": 2}
    assert backlog.total == 10
    assert backlog.cells == {
        ("new", "lt1d"): 3,
        ("new", "1-3d"): 1,
        ("assigned", "gt7d"): 1,
        ("in_progress", "lt1d"): 2,
        ("pending", "gt7d"): 1,
        ("pending", "3-7d"): 1,
        ("reopened", "3-7d"): 1,
    }

    # Breached: 120 (first response due 10-20 06:00), 113 (resolution 10-22 08:00),
    # 115 (resolution 10-23 10:00, paused after it), 105 (first response 10-25 10:00).
    # At risk (before 08:00Z): 116 (resolution 07:30), 118 (first response 07:45).
    # Neither: 114 (paused before its due), 117 (due exactly at 08:00), 103, 104.
    watch = digest.watch
    assert (watch.breached, watch.at_risk) == (4, 2)
    assert [(t.number, t.due_kind, t.due_at, t.breached) for t in watch.tickets] == [
        (120, "first_response", z("10-20 06:00"), True),
        (113, "resolution", z("10-22 08:00"), True),
        (115, "resolution", z("10-23 10:00"), True),
        (105, "first_response", z("10-25 10:00"), True),
        (116, "resolution", z("10-26 07:30"), False),
        (118, "first_response", z("10-26 07:45"), False),
    ]
    assert watch.tickets[0].assignee == "olga@example.org"
    assert watch.tickets[3].assignee is None

    # Created 10-19 .. 10-25 (not 100: 23:30 CEST on the 18th; not 106: spam).
    # "api down": 102 ("Re: [#55] API down"), 103, 104 ("API down!!");
    # "how to export": 110 111 112; "invoice # missing": 121 (AW:), 101, 105 (fwd:).
    # Two each only: "password reset" 107 108, "refund request" 116 119, "printer offline"
    # 109 115.
    assert [(r.subject, r.count, r.numbers) for r in digest.recurring] == [
        ("api down", 3, (102, 103, 104)),
        ("how to export", 3, (110, 111, 112)),
        ("invoice # missing", 3, (121, 101, 105)),
    ]


def test_renders_both_languages(digest: Digest) -> None:
    renderer = MailRenderer()
    en = renderer.render("manager", "digest", "en", digest_context(digest, "en"))
    assert en.subject == (
        "Support digest for Sunday, 25 October 2026: 9 new, 6 resolved, 4 breached"
    )
    for text in (en.text, en.html):
        assert text is not None
        for figure in (
            "45 min",  # first response median
            "2 h 15 min",  # its 90th percentile
            "83% (5/6)",  # first response within SLA
            "23 h 23 min",  # resolution median, 1402.5 min rounded
            "5 d 05 h",  # its 90th percentile (7500 min)
            "40% (2/5)",
            "3.8",
            "67% (4/6)",  # first-contact resolution
            "29% (2/7)",  # reopen rate
            "#120",
            "api down",
            "#121, #101, #105",
            "2026-10-26 08:45",  # T118's due, in CET
            "overdue by 6 d 00 h",  # T120
            "due in 1 h 30 min",  # T116
        ):
            assert figure in text, figure
    assert "(2026-10-25, Europe/Berlin)" in en.text
    assert "Sync fails on item 42 <b>&</b>" in en.text
    assert en.html is not None
    assert "Day 2026-10-25, times in Europe/Berlin" in en.html
    assert "Sync fails on item 42 &lt;b&gt;&amp;&lt;/b&gt;" in en.html
    assert "<b>&</b>" not in en.html
    for external in ("http://", "https://", "src=", "<link", "<script"):
        assert external not in en.html

    ru = renderer.render("manager", "digest", "ru", digest_context(digest, "ru"))
    assert ru.subject == (
        "Сводка поддержки за воскресенье, 25 октября 2026: новых 9, решено 6, просрочено 4"
    )
    for text in (ru.text, ru.html):
        assert text is not None
        for figure in ("45 мин", "2 ч 15 мин", "23 ч 23 мин", "5 д 05 ч", "3,8", "83% (5/6)",
                       "29% (2/7)", "просрочен на 6 д 00 ч", "срок через 1 ч 30 мин",
                       "переоткрыт", "(без категории)", "(не назначен)"):  # fmt: skip
            assert figure in text, figure


def test_context_is_plain_values(digest: Digest) -> None:
    def plain(value: Any) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return isinstance(value, str | int | float | bool)

    assert plain(digest_context(digest, "en"))


@pytest.mark.parametrize(
    ("subject", "normalised"),
    [
        ("[#12] RE: Fwd: Invoice 2024-117 missing", "invoice # missing"),
        ("Re: [Support #7] Printer 3 offline!", "printer # offline"),
        ("Отв: Не работает вход", "не работает вход"),
        ("AW: WG: Version 1.2.3 crashes", "version # crashes"),
        ("   ", ""),
    ],
)
def test_normalise_subject(subject: str, normalised: str) -> None:
    assert normalise_subject(subject) == normalised


@pytest.mark.parametrize(
    ("value", "en", "ru"),
    [
        (None, "—", "—"),
        (timedelta(seconds=29), "0 min", "0 мин"),
        (timedelta(minutes=45), "45 min", "45 мин"),
        (timedelta(hours=2, minutes=5), "2 h 05 min", "2 ч 05 мин"),
        (timedelta(hours=49, minutes=40), "2 d 01 h", "2 д 01 ч"),
    ],
)
def test_format_duration(value: timedelta | None, en: str, ru: str) -> None:
    assert (format_duration(value, "en"), format_duration(value, "ru")) == (en, ru)
