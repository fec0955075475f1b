"""The scheduled jobs: SLA reminders and escalations, auto-close, hand-out, housekeeping, digest.

Each job is a function of the database's state and an injected clock: it
finds what is due, *claims* each item (``store.job_queries``), changes the
ticket and queues its mail in one transaction. Running a job twice, on two
daemons at once, after a crash or after a long stop does each act exactly
once (docs/jobs.md). ``Jobs.run(name, dry_run=True)`` does the same work in a
transaction that is rolled back, and deletes no file: it reports what would
happen and changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlmodel import Session

from mailbot import commands, digest
from mailbot.config import Settings
from mailbot.directory import AgentRecord, People
from mailbot.notify import Notifier
from mailbot.routing import route
from mailbot.slaclock import SlaClock
from mailbot.states import TicketStatus
from mailbot.store import job_queries, ticket_changes, tickets
from mailbot.store import people as people_store
from mailbot.store.blobs import BlobStore
from mailbot.store.db import Database
from mailbot.store.ticket_changes import TicketFacts

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
SYSTEM = "system"


class DryRun(Exception):
    """Raised inside a dry run's transaction so that it rolls back."""


@dataclass(slots=True)
class Report:
    """What one run of a job did (or, dry, would do)."""

    job: str
    dry_run: bool
    done: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


class Jobs:
    NAMES = (
        "sla-reminders",
        "sla-escalations",
        "pending-close",
        "resolved-close",
        "hand-out",
        "housekeeping",
        "digest",
    )

    def __init__(
        self,
        db: Database,
        settings: Settings,
        notifier: Notifier,
        sla_clock: SlaClock,
        people: Callable[[], People],
        clock: Clock,
    ) -> None:
        self.db = db
        self.settings = settings
        self.notifier = notifier
        self.sla = sla_clock
        self.people = people
        self.clock = clock
        self.blobs = BlobStore(settings.attachment_dir)

    def run(self, name: str, *, dry_run: bool = False) -> Report:
        """Run job ``name`` once; ``dry_run`` rolls everything back."""
        job = getattr(self, "_" + name.replace("-", "_"), None)
        if name not in self.NAMES or job is None:
            raise KeyError(name)
        report = Report(name, dry_run)
        now = self.clock()
        started = time.perf_counter()
        try:
            with self.db.transaction() as session:
                job(session, now, report)
                if dry_run:
                    raise DryRun
        except DryRun:
            pass
        if not dry_run:
            for path in report.files:
                path.unlink(missing_ok=True)
        if report.done:
            log.info(
                "job %s%s: %d act(s) in %.0f ms",
                name,
                " (dry run)" if dry_run else "",
                len(report.done),
                (time.perf_counter() - started) * 1000,
                extra={"action": "job_ran", "job": name, "count": len(report.done)},
            )
        return report

    def enabled(self, name: str) -> bool:
        return name != "digest" or self.settings.jobs.digest

    # -- SLA -------------------------------------------------------------------------------

    def _sla_reminders(self, session: Session, now: datetime, report: Report) -> None:
        """Remind the assignee at ``sla.reminder_share`` of the way to each due time."""
        people = self.people()
        for kind in ("first_response", "resolution"):
            for ticket_id in job_queries.reminder_candidates(session, kind):
                facts = ticket_changes.facts(session, ticket_id)
                if facts is None or facts.assignee_email is None:
                    continue
                first_at, resolution_at = self.sla.reminder_times(facts)
                at = first_at if kind == "first_response" else resolution_at
                if at is None or at > now:
                    continue
                if not job_queries.claim_marker(session, ticket_id, f"{kind}_reminded_at", now):
                    continue
                agent = people.find(facts.assignee_email)
                if agent is not None and agent.active:
                    due = (
                        facts.sla_first_response_due_at
                        if kind == "first_response"
                        else facts.sla_resolution_due_at
                    )
                    self._tell(session, facts, agent, "sla-reminder", kind=kind, due=due)
                report.done.append(f"ticket {facts.number}: {kind} reminder")

    def _sla_escalations(self, session: Session, now: datetime, report: Report) -> None:
        """A missed due time: breach recorded, escalation level up, managers and team told."""
        people = self.people()
        for kind in ("first_response", "resolution"):
            for ticket_id in job_queries.breach_candidates(session, kind, now):
                if not job_queries.claim_marker(session, ticket_id, f"{kind}_breached_at", now):
                    continue
                facts = ticket_changes.facts(session, ticket_id)
                assert facts is not None
                label = "first response" if kind == "first_response" else "resolution"
                tickets.escalate(session, ticket_id, f"SLA breach: {label}", SYSTEM, now)
                facts = ticket_changes.facts(session, ticket_id)
                assert facts is not None
                due = (
                    facts.sla_first_response_due_at
                    if kind == "first_response"
                    else facts.sla_resolution_due_at
                )
                for person in people.escalation_audience(facts.team, facts.assignee_email):
                    self._tell(session, facts, person, "sla-breach", kind=kind, due=due)
                report.done.append(f"ticket {facts.number}: {label} breached, escalated")

    # -- auto-close ------------------------------------------------------------------------

    def _pending_close(self, session: Session, now: datetime, report: Report) -> None:
        """Pending too long: a reminder to the customer after N days, closed after M."""
        jobs = self.settings.jobs
        close_before = now - timedelta(days=jobs.pending_close_days)
        for ticket_id, since in job_queries.pending_since_before(
            session, close_before, unreminded=False
        ):
            if not job_queries.claim_status(
                session,
                ticket_id,
                TicketStatus.pending,
                since_column="pending_since",
                since=since,
                now=now,
            ):
                continue
            closed = self._close(session, ticket_id, now, "no-answer")
            report.done.append(
                f"ticket {closed.number}: closed after {jobs.pending_close_days} days pending"
            )
        remind_before = now - timedelta(days=jobs.pending_reminder_days)
        for ticket_id, _since in job_queries.pending_since_before(
            session, remind_before, unreminded=True
        ):
            if not job_queries.claim_marker(session, ticket_id, "pending_reminded_at", now):
                continue
            found = ticket_changes.facts(session, ticket_id)
            assert found is not None
            facts = found
            customer = self._requester(session, facts)
            if customer is not None:
                closes = (facts.pending_since or now) + timedelta(days=jobs.pending_close_days)
                self.notifier.tell_customer(
                    session,
                    facts,
                    customer,
                    "pending-reminder",
                    {"close_days": _days(jobs.pending_close_days), "closes_on": closes.date()},
                )
            report.done.append(f"ticket {facts.number}: pending reminder to the customer")

    def _resolved_close(self, session: Session, now: datetime, report: Report) -> None:
        """Resolved and not answered for K days: closed, with the survey."""
        days = self.settings.jobs.resolved_close_days
        for ticket_id, since in job_queries.resolved_before(session, now - timedelta(days=days)):
            if not job_queries.claim_status(
                session,
                ticket_id,
                TicketStatus.resolved,
                since_column="resolved_at",
                since=since,
                now=now,
            ):
                continue
            facts = self._close(session, ticket_id, now, "resolved")
            report.done.append(f"ticket {facts.number}: closed {days} days after resolution")

    def _close(self, session: Session, ticket_id: int, now: datetime, reason: str) -> TicketFacts:
        facts = ticket_changes.facts(session, ticket_id)
        assert facts is not None
        self.sla.set_status(session, facts.row, TicketStatus.closed, f"{SYSTEM} (auto-close)", now)
        closed = ticket_changes.facts(session, ticket_id)
        assert closed is not None
        customer = self._requester(session, closed)
        if customer is not None:
            self.notifier.tell_customer(
                session,
                closed,
                customer,
                "ticket-closed",
                {"reason": reason, "survey": self.settings.conversation.satisfaction_survey},
            )
        return closed

    def _requester(self, session: Session, facts: TicketFacts) -> tickets.CustomerRow | None:
        if facts.requester_id is None:
            return None
        return ticket_changes.customer(session, facts.requester_id)

    # -- hand-out --------------------------------------------------------------------------

    def _hand_out(self, session: Session, now: datetime, report: Report) -> None:
        """Tickets waiting in a team's queue go to the first member who comes on shift."""
        people = self.people()
        if not people.agents:
            return
        ids = people_store.agent_ids(session)
        for ticket_id in job_queries.queued_in_teams(session):
            facts = ticket_changes.facts(session, ticket_id)
            if facts is None or facts.team is None:
                continue
            chosen = route(
                category=facts.category or self.settings.tickets.default_category,
                teams=people.teams,
                agents=people.routing_agents,
                at=now,
                state=people_store.routing_state(session),
                rule_team=facts.team,
            )
            if chosen.assignee is None or chosen.assignee not in ids:
                continue
            if not job_queries.claim_unassigned(session, ticket_id, ids[chosen.assignee], now):
                continue
            ticket_changes.set_assignee(
                session,
                facts,
                ids[chosen.assignee],
                chosen.assignee,
                actor=f"routing ({chosen.how}, on shift)",
                now=now,
            )
            people_store.set_last_assigned(session, facts.team, chosen.assignee, now)
            agent = people.find(chosen.assignee)
            assigned = ticket_changes.facts(session, ticket_id)
            assert assigned is not None
            if agent is not None:
                self._tell(session, assigned, agent, "ticket-assigned", text="", author="")
            report.done.append(f"ticket {facts.number}: assigned to {chosen.assignee}")

    # -- housekeeping ----------------------------------------------------------------------

    def _housekeeping(self, session: Session, now: datetime, report: Report) -> None:
        """Attachment files that no message refers to, older than ``jobs.orphan_hours``."""
        root = self.blobs.root
        if not root.is_dir():
            return
        cutoff = now.timestamp() - self.settings.jobs.orphan_hours * 3600
        candidates: dict[str, Path] = {}
        for path in root.glob("??/??/*"):
            if path.is_file() and path.stat().st_mtime < cutoff:
                candidates[path.name] = path
            if len(candidates) >= 5000:
                break
        used = job_queries.referenced_keys(session, candidates)
        for key, path in sorted(candidates.items()):
            if key not in used:
                report.files.append(path)
                report.done.append(f"orphaned attachment file {key[:16]}... deleted")

    # -- digest ----------------------------------------------------------------------------

    def _digest(self, session: Session, now: datetime, report: Report) -> None:
        """Each manager's digest of yesterday, once, at ``jobs.digest_time`` their time."""
        hour, minute = (int(p) for p in self.settings.jobs.digest_time.split(":"))
        for manager in self.people().managers:
            zone = ZoneInfo(manager.agent.time_zone)
            local = now.astimezone(zone)
            if (local.hour, local.minute) < (hour, minute):
                continue
            day = local.date() - timedelta(days=1)
            if not job_queries.claim_mark(session, "digest", f"{manager.email}:{day}", now):
                continue
            self.send_digest(session, manager, day, now)
            report.done.append(f"digest of {day} to {manager.email}")

    def send_digest(self, session: Session, manager: AgentRecord, day: date, now: datetime) -> str:
        """Queue ``manager``'s digest of ``day``; returns the text part (for dry runs)."""
        built = digest.build_digest(
            session,
            day=day,
            time_zone=manager.agent.time_zone,
            now=now,
            at_risk=timedelta(hours=self.settings.jobs.at_risk_hours),
        )
        lang = self.notifier.agent_language(manager)
        return self.notifier.send_digest(session, manager, digest.digest_context(built, lang), lang)

    # -- mail ------------------------------------------------------------------------------

    def _tell(
        self,
        session: Session,
        facts: TicketFacts,
        agent: AgentRecord,
        event: str,
        **extra: object,
    ) -> None:
        context: dict[str, object] = dict(extra)
        if "due" in context:
            due = context["due"]
            context["due"] = (
                due.strftime("%Y-%m-%d %H:%M UTC") if isinstance(due, datetime) else "-"
            )
        self.notifier.notify_agent(
            session,
            facts,
            agent,
            event,
            commands=commands.valid_commands(facts.status),
            extra=context,
        )


def _days(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"
