"""The SLA clock of a ticket: due times, the pause while pending, priority changes.

Every status and priority change of the use cases goes through ``SlaClock``
so that the clock cannot be forgotten: entering ``pending`` stops it (the
time is kept in ``pending_since``); leaving ``pending`` adds the paused
business time to the ticket's total and recomputes both due times from the
opening time; a new priority recomputes them too (a first response already
given keeps its due time). The arithmetic is ``mailbot.sla``; the calendars
come from the ``[sla]`` settings and are checked when the clock is built.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session

from mailbot import sla
from mailbot.config import Settings
from mailbot.errors import ConfigError
from mailbot.states import Priority, TicketStatus
from mailbot.store import ticket_changes, tickets
from mailbot.store.ticket_changes import TicketFacts
from mailbot.store.tickets import TicketRow


class SlaClock:
    def __init__(self, settings: Settings) -> None:
        table = settings.sla
        self.first_response = table.first_response
        self.resolution = table.resolution
        self.reminder_share = table.reminder_share
        try:
            self.default = (
                sla.parse_calendar(table.calendar, where="sla.calendar")
                if table.calendar
                else sla.ALWAYS
            )
            self.by_priority = {
                p: sla.parse_calendar(spec, where=f"sla.priority_calendars.{p}")
                for p, spec in table.priority_calendars.items()
            }
            self.by_team = {
                t: sla.parse_calendar(spec, where=f"sla.team_calendars.{t}")
                for t, spec in table.team_calendars.items()
            }
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def calendar(self, priority: str, team: str | None) -> sla.Calendar:
        return sla.choose_calendar(
            priority, team, by_priority=self.by_priority, by_team=self.by_team, default=self.default
        )

    def due_times(
        self,
        opened_at: datetime,
        priority: str,
        team: str | None = None,
        paused: timedelta = sla.ZERO,
    ) -> sla.DueTimes:
        return sla.due_times(
            opened_at,
            priority,
            self.first_response,
            self.resolution,
            self.calendar(priority, team),
            paused,
        )

    def reminder_times(self, ticket: TicketFacts) -> tuple[datetime | None, datetime | None]:
        """When the assignee is reminded of the first-response and resolution due times."""
        calendar = self.calendar(ticket.priority, ticket.team)
        found: list[datetime | None] = []
        for due in (ticket.sla_first_response_due_at, ticket.sla_resolution_due_at):
            found.append(
                None
                if due is None or due <= ticket.created_at
                else sla.reminder_at(ticket.created_at, due, self.reminder_share, calendar)
            )
        return found[0], found[1]

    # -- changes ------------------------------------------------------------------------

    def set_status(
        self,
        session: Session,
        row: TicketRow,
        status: TicketStatus,
        actor: str,
        now: datetime,
    ) -> TicketRow:
        """Change the status (with history), stopping or restarting the clock."""
        if row.status is status:
            return row
        was_pending = row.status is TicketStatus.pending
        changed = tickets.set_status(session, row, status, actor, now)
        if status is TicketStatus.pending:
            ticket_changes.pause_clock(session, row.id, now)
        elif was_pending:
            self.resume(session, row.id, now)
        return changed

    def resume(self, session: Session, ticket_id: int, now: datetime) -> None:
        """Add the pending spell to the paused total and move the due times."""
        facts = ticket_changes.facts(session, ticket_id)
        if facts is None or facts.pending_since is None:
            return
        calendar = self.calendar(facts.priority, facts.team)
        spell = sla.paused_time(facts.pending_since, max(now, facts.pending_since), calendar)
        paused = timedelta(seconds=facts.sla_paused_seconds) + spell
        due = sla.on_priority_change(
            facts.created_at,
            facts.priority,
            self.first_response,
            self.resolution,
            calendar,
            paused,
            first_responded_at=facts.first_response_at,
            first_response_due=facts.sla_first_response_due_at,
        )
        ticket_changes.resume_clock(
            session,
            ticket_id,
            paused_seconds=int(paused.total_seconds()),
            first_response_due=due.first_response,
            resolution_due=due.resolution,
        )

    def set_priority(
        self,
        session: Session,
        ticket: TicketFacts,
        priority: Priority,
        actor: str,
        now: datetime,
    ) -> None:
        """A new priority: both due times recomputed, the paused time kept."""
        due = sla.on_priority_change(
            ticket.created_at,
            priority,
            self.first_response,
            self.resolution,
            self.calendar(priority, ticket.team),
            timedelta(seconds=ticket.sla_paused_seconds),
            first_responded_at=ticket.first_response_at,
            first_response_due=ticket.sla_first_response_due_at,
        )
        ticket_changes.set_priority(
            session,
            ticket,
            priority,
            first_response_due=due.first_response,
            resolution_due=due.resolution,
            actor=actor,
            now=now,
        )
