"""What one inbound mail does to the tickets, inside the pipeline's transaction.

Threading (``threader``), trust (participants), the ticket lifecycle
(``lifecycle``), storage of the message and its attachments, and the
automatic answers (``notify``). Loop safety decides before anything is sent:
only human mail is ever answered automatically; bounces of our own mail mark
the outgoing row and open no ticket; an auto-reply is stored on its ticket
without changing its status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlmodel import Session

from mailbot import commands, language, lifecycle, ratings, replytext, signing
from mailbot.classify import Classification, MailClass, read_bounce
from mailbot.config import Settings
from mailbot.desk import Applied, Desk
from mailbot.directory import People
from mailbot.message import ParsedMessage
from mailbot.notify import Notifier
from mailbot.routing import route
from mailbot.rules import Decision, RuleInput, RuleSet, evaluate
from mailbot.slaclock import SlaClock
from mailbot.states import AuthorType, Direction, ParticipantRole, Priority, TicketStatus
from mailbot.store import outbox, ticket_changes, tickets
from mailbot.store import people as people_store
from mailbot.store.inbox import InboundItem
from mailbot.store.tickets import CustomerRow, TicketRow
from mailbot.threader import SubjectToken, ThreadedBy, ThreadMatch, find_ticket, plus_ticket_numbers

log = logging.getLogger(__name__)

__all__ = ["NO_TEXT", "Applied", "Conversation"]

Clock = Callable[[], datetime]

#: Shown instead of an empty body (BAD_INPUTS B-35): a mail is never dropped as empty.
NO_TEXT = "(no text)"
UNKNOWN_SENDER = "(unknown sender)"
MAX_SUBJECT_CHARS = 998


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where a mail goes before anything is written: an existing ticket or a new one."""

    existing: TicketRow | None
    related: TicketRow | None = None
    status: TicketStatus | None = None
    reopen: bool = False
    #: With ``reopen``: the reopenings of the ticket, this one included.
    reopens: int = 0
    #: A human reply from a participant: the assignee hears of it.
    trusted: bool = False
    #: The customer's answer to the satisfaction survey of a closed ticket.
    rating: ratings.Rating | None = None

    @property
    def new(self) -> bool:
        return self.existing is None


class Conversation:
    def __init__(
        self,
        settings: Settings,
        notifier: Notifier,
        key: bytes,
        clock: Clock,
        *,
        rules: Callable[[], RuleSet],
        people: People,
    ) -> None:
        self.settings = settings
        self.notifier = notifier
        self.key = key
        self.clock = clock
        self.rules = rules
        self.people = people
        self.token = SubjectToken(settings.tickets.token_format)
        self.sla_clock = SlaClock(settings)
        self.desk = Desk(settings, notifier, key, clock, self.sla_clock)
        self.reopen_window = timedelta(days=settings.conversation.reopen_days)

    def apply(
        self,
        session: Session,
        item: InboundItem,
        msg: ParsedMessage,
        klass: Classification,
        blob_keys: Sequence[str],
    ) -> Applied:
        now = self.clock()
        if klass.mail_class is MailClass.bounce:
            linked = self._bounce(session, msg, now)
            if linked is not None:
                return linked
        match = self._thread(session, item, msg)
        human = klass.mail_class is MailClass.human
        agent = self.people.find(msg.sender.email) if human and msg.sender else None
        flags: list[str] = []
        opened_by: str | None = None
        agent_text = ""
        original = msg
        if agent is not None:
            if match.ticket_id is not None:
                refused = self.desk.authority(session, msg, agent, match.ticket_id)
                if refused is None:
                    return self.desk.reply(
                        session, item, msg, match.ticket_id, agent, self.people, blob_keys, now
                    )
            else:
                forwarded = Desk.forwarded(msg)
                refused = (
                    self.desk.authority(session, msg, agent, None, fresh_allowed=True)
                    if forwarded is not None
                    else None
                )
                if forwarded is not None and refused is None:
                    # "#new": the ticket is the customer's, opened by the agent.
                    opened_by = agent.email
                    agent_text = forwarded.agent_text
                    flags.append(f"opened-by:{agent.email}")
                    msg = replace(
                        msg,
                        sender=forwarded.sender,
                        from_header=str(forwarded.sender),
                        subject=forwarded.subject,
                        text=forwarded.text,
                        html=None,
                        cc=(),
                        in_reply_to=(),
                        references=(),
                    )
            if refused is not None:
                flags.append("commands-ignored")
                if not agent.active and match.ticket_id is not None:
                    # BAD_INPUTS B-14: told why, at most auto_reply_limit times an hour.
                    facts = ticket_changes.facts(session, match.ticket_id)
                    if facts is not None:
                        self.notifier.refused(session, facts, agent, refused)
                log.warning(
                    "mail from agent %s is not obeyed: %s",
                    agent.email,
                    refused,
                    extra={"action": "agent_mail_not_trusted"},
                )
        customer = (
            tickets.get_or_create_customer(
                session,
                msg.sender.email,
                msg.sender.name,
                now=now,
                language=(lambda: self._language(msg)) if human else None,
                # A customer who writes to us is reachable again.
                bouncing=False if human else None,
            )
            if msg.sender
            else None
        )
        plan = self._plan(session, match, klass, msg)
        decision = evaluate(
            self.rules(),
            RuleInput(
                # On a reply the rules read what the customer wrote now, not the quote
                # of the mail that was classified already (docs/rules.md, "Replies").
                msg=msg if plan.new else replace(msg, text=replytext.new_text(msg.text).text),
                recipients=tuple(item.envelope_to) or tuple(a.email for a in msg.to),
                is_new_ticket=plan.new,
                customer_known=customer is not None and not customer.is_new,
                mail_class=klass.mail_class.value,
                received_at=now,
                reopens=plan.reopens,
            ),
            explain=False,
            default_category=self.settings.tickets.default_category,
            default_priority=self.settings.tickets.default_priority,
        )
        actor = msg.sender.email if msg.sender else "system"
        if plan.existing is None:
            ticket = self._new_ticket(session, msg, customer, decision, now, related=plan.related)
            outcome = "created"
            if opened_by is not None:
                tickets.add_history(
                    session, ticket.id, "opened_by", None, opened_by, opened_by, now
                )
        else:
            ticket = self._update(session, plan.existing, plan, decision, actor, now)
            outcome = "reopened" if plan.reopen else "appended"
        self._store_message(session, ticket, item, msg, klass, match, blob_keys, now, flags)
        if opened_by is not None and agent is not None:
            self.desk.commands_for_new(
                session, item, original, ticket.id, agent, self.people, agent_text, now
            )
            ticket = tickets.ticket_row(session, ticket.id) or ticket
        if human and not decision.spam:
            self._tell_agents(session, ticket, msg, outcome, plan, skip=opened_by)
        if decision.escalations and not decision.spam and self.people.agents:
            facts = ticket_changes.facts(session, ticket.id)
            assert facts is not None
            self.notifier.escalated(
                session,
                facts,
                self.people.escalation_audience(facts.team, facts.assignee_email),
                reason="; ".join(decision.escalations),
                author="rules",
                commands=commands.valid_commands(facts.status),
            )
        tickets.add_rule_hits(
            session,
            inbound_id=item.id,
            ticket_id=ticket.id,
            hits=[(o.rule_id, o.explanation) for o in decision.outcomes if o.matched],
            now=now,
        )
        acknowledged = False
        if customer is not None and klass.may_auto_answer and not decision.spam:
            if outcome == "created":
                acknowledged = self.notifier.acknowledge(
                    session,
                    ticket,
                    customer,
                    in_reply_to=msg.message_id,
                    references=msg.references,
                )
            if decision.auto_reply:
                self.notifier.auto_reply(
                    session,
                    ticket,
                    customer,
                    decision.auto_reply,
                    in_reply_to=msg.message_id,
                    references=msg.references,
                )
        return Applied(outcome, ticket.id, ticket.number, acknowledged)

    # -- steps ----------------------------------------------------------------------

    def _language(self, msg: ParsedMessage) -> str:
        configured = self.settings.conversation.language
        return language.detect(msg.subject, msg.text) if configured == "auto" else configured

    def _thread(self, session: Session, item: InboundItem, msg: ParsedMessage) -> ThreadMatch:
        plus: list[int] = []
        if self.settings.conversation.plus_addressing:
            addresses = [*item.envelope_to, *(a.email for a in (*msg.to, *msg.cc))]
            plus = plus_ticket_numbers(addresses, self.settings.our_addresses)
        return find_ticket(
            msg,
            tickets.SessionLookup(session),
            self.token,
            plus_numbers=plus,
            signed_ticket=lambda mid: signing.ticket_of_message_id(self.key, mid),
            looks_signed=signing.looks_like_ours,
        )

    def _tell_agents(
        self,
        session: Session,
        ticket: TicketRow,
        msg: ParsedMessage,
        outcome: str,
        plan: _Plan,
        *,
        skip: str | None = None,
    ) -> None:
        """Mail the assignee (or the team) about a new ticket or a customer's reply."""
        if not self.people.agents:
            return
        facts = ticket_changes.facts(session, ticket.id)
        assert facts is not None
        if outcome != "created" and not plan.trusted:
            return
        new_text = replytext.new_text(msg.text).text if outcome != "created" else msg.text
        extra = {
            "text": new_text.strip() or NO_TEXT,
            "author": str(msg.sender) if msg.sender else UNKNOWN_SENDER,
        }
        valid = commands.valid_commands(facts.status)
        assignee = self.people.find(facts.assignee_email) if facts.assignee_email else None
        if assignee is not None and assignee.active:
            if assignee.email != skip:  # the agent who opened it with #new knows
                event = "ticket-assigned" if outcome == "created" else "customer-reply"
                self.notifier.notify_agent(
                    session, facts, assignee, event, commands=valid, extra=extra
                )
            return
        if self.settings.desk.notify_unassigned == "none":
            return
        event = "ticket-unassigned" if outcome == "created" else "customer-reply"
        for member in self.people.team_members(facts.team):
            self.notifier.notify_agent(session, facts, member, event, commands=valid, extra=extra)

    def _plan(
        self, session: Session, match: ThreadMatch, klass: Classification, msg: ParsedMessage
    ) -> _Plan:
        if match.ticket_id is None:
            return _Plan(None)
        existing = tickets.ticket_row(session, match.ticket_id)
        assert existing is not None
        trusted = match.participant or self.settings.conversation.unknown_sender == "append"
        if not trusted:
            log.info(
                "reply from a non-participant to ticket %d opens a linked ticket",
                existing.number,
                extra={"action": "thread_not_participant", "ticket_number": existing.number},
            )
            return _Plan(None, related=existing)
        if klass.mail_class is not MailClass.human:
            # Auto-replies and unmatched reports are kept, but change nothing.
            return _Plan(existing)
        if (
            existing.status is TicketStatus.closed
            and self.settings.conversation.satisfaction_survey
        ):
            rating = ratings.read_rating(replytext.new_text(msg.text).text)
            if rating is not None:
                return _Plan(existing, rating=rating)
        confirms = existing.status is TicketStatus.resolved and lifecycle.confirms_resolution(
            replytext.new_text(msg.text).text
        )
        effect = lifecycle.customer_reply(
            existing.status,
            closed_at=existing.closed_at,
            now=self.clock(),
            reopen_window=self.reopen_window,
            confirms=confirms,
        )
        if effect.action is lifecycle.ReplyAction.new_linked:
            return _Plan(None, related=existing)
        # A closed ticket comes back (outcome "reopened"); a resolved one takes the
        # reply and turns ``reopened`` too: both are reopenings for the rules.
        reopening = effect.status is TicketStatus.reopened
        return _Plan(
            existing,
            status=effect.status,
            reopen=effect.action is lifecycle.ReplyAction.reopen,
            reopens=tickets.reopen_count(session, existing.id) + 1 if reopening else 0,
            trusted=True,
        )

    def _update(
        self,
        session: Session,
        ticket: TicketRow,
        plan: _Plan,
        decision: Decision,
        actor: str,
        now: datetime,
    ) -> TicketRow:
        """A reply: the lifecycle's status change; the rules add tags and escalations."""
        if plan.rating is not None:
            facts = ticket_changes.facts(session, ticket.id)
            assert facts is not None
            ticket_changes.record_rating(
                session, facts, plan.rating.score, plan.rating.comment, actor=actor, now=now
            )
        if plan.status is not None:
            ticket = self.sla_clock.set_status(session, ticket, plan.status, actor, now)
        else:
            tickets.touch(session, ticket.id, now)
        if decision.tags:
            tickets.add_tags(session, ticket.id, decision.tags)
        for reason in decision.escalations:
            tickets.escalate(session, ticket.id, reason, "rules", now)
        return ticket

    def _new_ticket(
        self,
        session: Session,
        msg: ParsedMessage,
        customer: CustomerRow | None,
        decision: Decision,
        now: datetime,
        *,
        related: TicketRow | None,
    ) -> TicketRow:
        priority = Priority(decision.priority)
        due = self.sla_clock.due_times(now, priority, decision.team)
        ticket = tickets.create_ticket(
            session,
            subject=msg.subject[:MAX_SUBJECT_CHARS],
            description=msg.text if msg.text.strip() else NO_TEXT,
            requester=customer,
            priority=priority,
            category=decision.category,
            subcategory=decision.subcategory,
            tags=decision.tags,
            spam=decision.spam,
            now=now,
            actor=msg.sender.email if msg.sender else "system",
            sla_first_response_due_at=due.first_response,
            sla_resolution_due_at=due.resolution,
        )
        if customer is not None:
            tickets.add_participant(
                session, ticket.id, customer.email, ParticipantRole.requester, now
            )
        ours = self.settings.our_addresses
        cc = [a.email for a in msg.cc if a.email.lower() not in ours]
        for email in cc[: self.settings.conversation.max_cc_participants]:
            tickets.add_participant(session, ticket.id, email, ParticipantRole.cc, now)
        if related is not None:
            tickets.link_tickets(session, ticket.id, related.id, "related", now)
            tickets.add_history(
                session, ticket.id, "related", None, str(related.number), "system", now
            )
        for reason in decision.escalations:
            tickets.escalate(session, ticket.id, reason, "rules", now)
        if not decision.spam:
            self._route(session, ticket, decision, now)
        return ticket

    def _route(
        self, session: Session, ticket: TicketRow, decision: Decision, now: datetime
    ) -> None:
        """Assign a new ticket through routing, or leave it in its team's queue."""
        if not self.people.agents and not decision.assignee:
            return
        state = people_store.routing_state(session)
        chosen = route(
            category=decision.category,
            teams=self.people.teams,
            agents=self.people.routing_agents,
            at=now,
            state=state,
            rule_assignee=decision.assignee,
            rule_team=decision.team,
        )
        if chosen.team is not None:
            tickets.set_team(session, ticket.id, chosen.team)
        if chosen.assignee is None:
            return
        agent_id = people_store.agent_ids(session).get(chosen.assignee)
        if agent_id is None:
            log.warning(
                "routing chose %s, who is not an agent in the database",
                chosen.assignee,
                extra={"action": "routing_unknown_agent", "ticket_number": ticket.number},
            )
            return
        tickets.assign(session, ticket, agent_id, chosen.assignee, f"routing ({chosen.how})", now)
        if chosen.team is not None:
            people_store.set_last_assigned(session, chosen.team, chosen.assignee, now)

    def _store_message(
        self,
        session: Session,
        ticket: TicketRow,
        item: InboundItem,
        msg: ParsedMessage,
        klass: Classification,
        match: ThreadMatch,
        blob_keys: Sequence[str],
        now: datetime,
        extra_flags: Sequence[str] = (),
    ) -> None:
        flags = [f"threaded-by:{match.how.value}", f"class:{klass.mail_class.value}"]
        flags.extend(extra_flags)
        flags.extend(msg.fallbacks)
        flags.extend(f"defect:{d}" for d in msg.defects[:20])
        if msg.sender is None:
            flags.append("unknown-sender")
        if match.how is not ThreadedBy.new and not match.participant:
            flags.append("not-participant")
        message_id = tickets.add_message(
            session,
            tickets.NewMessage(
                ticket_id=ticket.id,
                inbound_id=item.id,
                subject=msg.subject[:MAX_SUBJECT_CHARS],
                text_body=msg.text if msg.text.strip() else NO_TEXT,
                html_body=msg.html,
                author_email=msg.sender.email if msg.sender else "",
                author_name=msg.sender.name if msg.sender else UNKNOWN_SENDER,
                author_type=AuthorType.user,
                direction=Direction.inbound,
                message_id=msg.message_id,
                in_reply_to=msg.in_reply_to,
                references=msg.references,
                created_at=now,
                flags=flags,
            ),
        )
        tickets.add_attachments(session, message_id, msg.attachments, blob_keys)

    def _bounce(self, session: Session, msg: ParsedMessage, now: datetime) -> Applied | None:
        """A bounce of our own mail: mark the outgoing row; None when it is not ours."""
        report = read_bounce(msg)
        bounced = outbox.mark_bounced(session, report.original_message_ids, report.reason, now)
        if not bounced:
            return None
        ticket_id = bounced[0].ticket_id
        number = None
        for mail in bounced:
            for address in report.failed_recipients or mail.recipients:
                tickets.mark_bouncing(session, address)
            if mail.ticket_id is not None:
                tickets.add_history(
                    session,
                    mail.ticket_id,
                    "delivery",
                    None,
                    f"bounced: {report.reason}"[:500],
                    "system",
                    now,
                )
        if ticket_id is not None:
            found = tickets.ticket_row(session, ticket_id)
            number = found.number if found else None
        log.info(
            "bounce of outbound %s: %s",
            ",".join(str(b.outbound_id) for b in bounced),
            report.reason,
            extra={"action": "outbound_bounced", "ticket_number": number},
        )
        return Applied("bounce-linked", ticket_id, number)
