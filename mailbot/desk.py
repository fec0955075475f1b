"""What an agent's mail does to a ticket: commands, the reply relay, internal notes.

An agent answers a notification from their mail client. ``Desk`` decides
whether the mail may command at all (``authority``), reads the agent's new
text (``replytext``) and its command lines (``commands``), checks every
command against the ticket before anything is written, and then changes the
ticket, stores the agent's message and relays the text to the customer,
inside the pipeline's transaction (DESIGN invariant 6).

A refused command stops the whole mail: the ticket does not change, the
customer receives nothing, and the agent is told what was wrong and what
would have been valid.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.parser import BytesHeaderParser
from email.utils import getaddresses

from sqlmodel import Session

from mailbot import authres, commands, lifecycle, replytext, signing
from mailbot.commands import Command, CommandName, Problem
from mailbot.compose import OutgoingFile
from mailbot.config import Settings
from mailbot.directory import AgentRecord, People
from mailbot.message import Address, ParsedMessage
from mailbot.notify import Notifier
from mailbot.slaclock import SlaClock
from mailbot.states import AuthorType, Direction, ParticipantRole, Priority, TicketStatus
from mailbot.store import people as people_store
from mailbot.store import ticket_changes, tickets
from mailbot.store.inbox import InboundItem
from mailbot.store.ticket_changes import TicketFacts

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Files an agent attached are relayed to the customer up to this total size;
#: larger ones stay on the ticket (web page) only.
MAX_RELAYED_BYTES = 20 * 1024 * 1024

_FORWARD_FROM = re.compile(
    r"^\s*\*?(?:from|von|de|от|da|van)\s*\*?\s*:\s*\*?\s*(.+?)\s*$", re.IGNORECASE
)
_FORWARD_SUBJECT = re.compile(
    r"^\s*\*?(?:subject|betreff|objet|asunto|тема|oggetto)\s*\*?\s*:\s*(.*?)\s*$", re.IGNORECASE
)
#: Closing lines that start an agent's unmarked signature block.
_SIGN_OFFS = (
    "best regards",
    "kind regards",
    "regards",
    "best",
    "cheers",
    "thanks",
    "thank you",
    "many thanks",
    "с уважением",
    "всего доброго",
    "спасибо",
    "mit freundlichen grüßen",
    "viele grüße",
    "cordialement",
    "bien cordialement",
    "saludos",
    "un saludo",
    "atentamente",
)
_FORWARD_SEPARATOR = re.compile(
    r"^\s*-{2,}\s*(?:forwarded message|original message|пересылаемое сообщение|"
    r"weitergeleitete nachricht|message transféré|mensaje reenviado)",
    re.IGNORECASE,
)
_FORWARD_PREFIX = re.compile(
    r"^\s*(?:(?:fwd?|fw|wg|tr|rv|пересл|переслано|enc)\s*:\s*)+", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Applied:
    """The result of one mail: which ticket, and what happened."""

    outcome: str  # created | appended | reopened | bounce-linked | agent-reply | refused
    ticket_id: int | None
    ticket_number: int | None
    acknowledged: bool = False


@dataclass(frozen=True, slots=True)
class Forwarded:
    """A customer's mail that an agent forwarded with ``#new``."""

    sender: Address
    subject: str
    text: str
    #: The agent's own lines above the forwarded mail (commands, a note).
    agent_text: str = ""


@dataclass(slots=True)
class _Plan:
    """Everything an agent's mail will change, checked before anything is written."""

    status_steps: list[TicketStatus] = field(default_factory=list)
    priority: Priority | None = None
    category: tuple[str, str | None] | None = None
    assignee: AgentRecord | None = None
    unassign: bool = False
    add_tags: list[str] = field(default_factory=list)
    remove_tags: list[str] = field(default_factory=list)
    escalations: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    merge_into: TicketFacts | None = None
    internal: bool = False
    help: bool = False
    done: list[str] = field(default_factory=list)


class Desk:
    def __init__(
        self,
        settings: Settings,
        notifier: Notifier,
        key: bytes,
        clock: Clock,
        sla_clock: SlaClock,
    ) -> None:
        self.clock_of_sla = sla_clock
        self.settings = settings
        self.notifier = notifier
        self.key = key
        self.clock = clock

    # -- who may command ------------------------------------------------------------

    def authority(
        self,
        session: Session,
        msg: ParsedMessage,
        agent: AgentRecord,
        ticket_id: int | None,
        *,
        fresh_allowed: bool = False,
    ) -> str | None:
        """None when ``agent``'s mail may command; otherwise the reason it may not."""
        if not agent.active:
            return "agent is deactivated"
        trusted = self.settings.desk.trusted_authserv_id
        if trusted and not authres.passes(msg.headers, trusted, agent.email):
            return "no aligned dkim or spf pass from the trusted server"
        if fresh_allowed or self.settings.desk.commands_in_fresh_mail:
            return None
        refs = [r for r in (*msg.in_reply_to, *msg.references) if r]
        signed = [r for r in refs if signing.ticket_of_message_id(self.key, r) is not None]
        lookup = tickets.SessionLookup(session)
        answered = {
            lookup.survivor(t) for t in ticket_changes.sent_to(session, signed, agent.email)
        }
        if ticket_id is None or ticket_id not in answered:
            return "does not answer a notification sent to this agent"
        return None

    # -- #new -----------------------------------------------------------------------

    @staticmethod
    def forwarded(msg: ParsedMessage) -> Forwarded | None:
        """The customer's mail inside an agent's ``#new`` forward, or None.

        An attached message (message/rfc822) wins; otherwise the first
        ``From:`` line of an inline forward (also ``От:``, ``Von:``, ``De:``).
        """
        lines = msg.text.splitlines()
        start = next(
            (i for i, line in enumerate(lines) if line.strip().lower().startswith("#new")), None
        )
        if start is None:
            return None
        below = lines[start + 1 :]
        cut = next(
            (
                i
                for i, line in enumerate(below)
                if _FORWARD_FROM.match(line) or _FORWARD_SEPARATOR.match(line)
            ),
            len(below),
        )
        agent_text = "\n".join([*lines[:start], *below[:cut]]).strip()
        for attachment in msg.attachments:
            if attachment.content_type.lower() in ("message/rfc822", "message/global"):
                headers = BytesHeaderParser().parsebytes(attachment.payload[:65536])
                found = _one_address(str(headers.get("From", "")))
                if found is not None:
                    subject = str(headers.get("Subject", "")) or msg.subject
                    text = "\n".join(below[cut:]).strip()
                    return Forwarded(found, _clean_subject(subject), text or msg.text, agent_text)
        for index, line in enumerate(below):
            match = _FORWARD_FROM.match(line)
            if match is None:
                continue
            found = _one_address(match.group(1).replace("mailto:", ""))
            if found is None:
                continue
            subject = _clean_subject(msg.subject)
            body_start = index + 1
            for offset, header in enumerate(below[index + 1 : index + 8]):
                subject_match = _FORWARD_SUBJECT.match(header)
                if subject_match:
                    subject = _clean_subject(subject_match.group(1)) or subject
                if not header.strip():
                    body_start = index + 1 + offset + 1
                    break
            text = "\n".join(below[body_start:]).strip()
            return Forwarded(found, subject, text or "\n".join(below).strip(), agent_text)
        return None

    # -- an agent's reply -----------------------------------------------------------

    def reply(
        self,
        session: Session,
        item: InboundItem,
        msg: ParsedMessage,
        ticket_id: int,
        agent: AgentRecord,
        people: People,
        blob_keys: Sequence[str],
        now: datetime,
    ) -> Applied:
        """Apply an authorised agent's reply to ``ticket_id``: all of it, or nothing."""
        ticket = ticket_changes.facts(session, ticket_id)
        assert ticket is not None
        new = replytext.new_text(msg.text)
        read = commands.read_commands(
            strip_sign_off(new.text, agent), templates=self.notifier.renderer.responses()
        )
        problems = [*read.problems, *commands.check(read, ticket.status)]
        plan = _Plan()
        if not problems:
            problems = self._check(session, ticket, read.commands, agent, people, plan)
        if problems:
            self._refuse(session, ticket, agent, problems, msg)
            return Applied("refused", ticket.id, ticket.number)
        return self._apply(session, item, msg, ticket, agent, people, read, plan, blob_keys, now)

    def commands_for_new(
        self,
        session: Session,
        item: InboundItem,
        msg: ParsedMessage,
        ticket_id: int,
        agent: AgentRecord,
        people: People,
        text: str,
        now: datetime,
    ) -> None:
        """The other commands of a ``#new`` forward, on the ticket it opened.

        The agent's own text is kept as an internal note; nothing of it goes to
        the customer. A refused command leaves the ticket as opened, and the
        agent is told.
        """
        read = commands.read_commands(
            strip_sign_off(text, agent), templates=self.notifier.renderer.responses()
        )
        kept = tuple(c for c in read.commands if c.name is not CommandName.new)
        read = replace(read, commands=kept)
        if not kept and not read.text.strip():
            return
        ticket = ticket_changes.facts(session, ticket_id)
        assert ticket is not None
        problems = [*read.problems, *commands.check(read, ticket.status)]
        plan = _Plan()
        if not problems:
            problems = self._check(session, ticket, read.commands, agent, people, plan)
        if problems:
            self._refuse(session, ticket, agent, problems, msg)
            return
        plan.internal = True
        own = replace(msg, attachments=(), message_id=None)
        self._apply(session, item, own, ticket, agent, people, read, plan, (), now)

    def _check(
        self,
        session: Session,
        ticket: TicketFacts,
        given: Sequence[Command],
        agent: AgentRecord,
        people: People,
        plan: _Plan,
    ) -> list[Problem]:
        problems: list[Problem] = []
        status = ticket.status
        for command in given:
            name = command.name
            if command.status is not None:
                try:
                    target = lifecycle.transition(status, command.status)
                except lifecycle.TransitionError as exc:
                    problems.append(Problem(command.line, str(exc), _suggest_status(status)))
                    continue
                if target is not status:
                    plan.status_steps.append(target)
                    status = target
            elif name is CommandName.priority and command.priority is not None:
                plan.priority = command.priority
            elif name is CommandName.category and command.category is not None:
                plan.category = (command.category, command.subcategory)
            elif name is CommandName.assign:
                if command.unassign:
                    plan.unassign, plan.assignee = True, None
                    continue
                target_agent = _find_agent(people, command.assignee or "", agent)
                if target_agent is None or not target_agent.active:
                    nearest = _nearest_agent(people, command.assignee or "")
                    problems.append(
                        Problem(
                            command.line,
                            f"no active agent {command.assignee!r}",
                            f"#assign {nearest}" if nearest else "#assign me",
                        )
                    )
                    continue
                plan.assignee, plan.unassign = target_agent, False
                if status is TicketStatus.new:
                    status = TicketStatus.assigned
            elif name is CommandName.tag:
                plan.add_tags.extend(command.add_tags)
                plan.remove_tags.extend(command.remove_tags)
            elif name is CommandName.escalate:
                plan.escalations.append(command.reason or "escalated by agent")
            elif name is CommandName.cc and command.address:
                plan.cc.append(command.address)
            elif name is CommandName.template and command.template:
                plan.templates.append(command.template)
            elif name is CommandName.internal:
                plan.internal = True
            elif name is CommandName.help:
                plan.help = True
            elif name is CommandName.merge and command.merge_into is not None:
                target_ticket = ticket_changes.facts_by_number(session, command.merge_into)
                if target_ticket is None or target_ticket.spam:
                    problems.append(
                        Problem(command.line, f"there is no ticket {command.merge_into}", None)
                    )
                elif target_ticket.id == ticket.id:
                    problems.append(
                        Problem(command.line, "a ticket cannot be merged into itself", None)
                    )
                else:
                    plan.merge_into = target_ticket
            elif name is CommandName.new:
                problems.append(
                    Problem(
                        command.line,
                        "#new opens a ticket from a forwarded mail; this mail answers "
                        f"ticket {ticket.number}",
                        None,
                    )
                )
        return problems

    def _apply(
        self,
        session: Session,
        item: InboundItem,
        msg: ParsedMessage,
        ticket: TicketFacts,
        agent: AgentRecord,
        people: People,
        read: commands.Commands,
        plan: _Plan,
        blob_keys: Sequence[str],
        now: datetime,
    ) -> Applied:
        actor = agent.email
        done = plan.done
        if plan.category is not None:
            ticket_changes.set_category(session, ticket, *plan.category, actor=actor, now=now)
            done.append(f"category: {'/'.join(p for p in plan.category if p)}")
        if plan.priority is not None and plan.priority is not ticket.priority:
            self.clock_of_sla.set_priority(session, ticket, plan.priority, actor, now)
            done.append(f"priority: {plan.priority.value}")
        if plan.assignee is not None or plan.unassign:
            self._assign(session, ticket, plan.assignee, people, actor, now)
            done.append(f"assignee: {plan.assignee.email if plan.assignee else 'none'}")
        current = ticket_changes.facts(session, ticket.id)
        assert current is not None
        row = current.row
        for step in plan.status_steps:
            row = self.clock_of_sla.set_status(session, row, step, actor, now)
            done.append(f"status: {step.value}")
        if plan.add_tags or plan.remove_tags:
            current = ticket_changes.facts(session, ticket.id)
            assert current is not None
            ticket_changes.change_tags(
                session, current, plan.add_tags, plan.remove_tags, actor=actor, now=now
            )
            done.append("tags: " + " ".join([*plan.add_tags, *(f"-{t}" for t in plan.remove_tags)]))
        for reason in plan.escalations:
            tickets.escalate(session, ticket.id, reason, actor, now)
            done.append(f"escalated: {reason}")
        for address in plan.cc:
            tickets.add_participant(session, ticket.id, address, ParticipantRole.cc, now)
            tickets.add_history(session, ticket.id, "cc", None, address, actor, now)
            done.append(f"cc: {address}")
        current = ticket_changes.facts(session, ticket.id)
        assert current is not None
        requester = (
            ticket_changes.customer(session, current.requester_id)
            if current.requester_id is not None
            else None
        )
        text = self._text_with_templates(read.text, plan.templates, current, requester)
        relayed = self._store_and_relay(
            session, item, msg, current, agent, requester, text, plan, blob_keys, now
        )
        if relayed:
            done.append("answer sent to the customer")
        if plan.merge_into is not None:
            self._merge(session, current, plan.merge_into, requester, actor, now)
            done.append(f"merged into {plan.merge_into.number}")
        self._after(session, ticket, agent, people, plan, msg)
        log.info(
            "agent %s on ticket %d: %s",
            agent.email,
            ticket.number,
            "; ".join(done) or "no change",
            extra={"action": "agent_reply", "ticket_number": ticket.number},
        )
        return Applied("agent-reply", ticket.id, ticket.number)

    def _assign(
        self,
        session: Session,
        ticket: TicketFacts,
        target: AgentRecord | None,
        people: People,
        actor: str,
        now: datetime,
    ) -> None:
        agent_id = None
        if target is not None:
            agent_id = people_store.agent_ids(session).get(target.email)
            if agent_id is None:  # agents.yaml changed and was not synced yet
                people_store.sync_agents(session, people, now)
                agent_id = people_store.agent_ids(session)[target.email]
        ticket_changes.set_assignee(
            session,
            ticket,
            agent_id,
            target.email if target else None,
            actor=f"{actor} (#assign)",
            now=now,
        )

    def _text_with_templates(
        self,
        text: str,
        names: Sequence[str],
        ticket: TicketFacts,
        requester: tickets.CustomerRow | None,
    ) -> str:
        lang = (requester.language if requester else None) or "en"
        parts = [text.strip()] if text.strip() else []
        context = {
            "number": ticket.number,
            "subject": ticket.subject,
            "customer_name": requester.name if requester else "",
            "team_name": self.settings.conversation.team_name,
        }
        for name in names:
            parts.append(self.notifier.renderer.render_response(name, lang, context))
        return "\n\n".join(parts)

    def _store_and_relay(
        self,
        session: Session,
        item: InboundItem,
        msg: ParsedMessage,
        ticket: TicketFacts,
        agent: AgentRecord,
        requester: tickets.CustomerRow | None,
        text: str,
        plan: _Plan,
        blob_keys: Sequence[str],
        now: datetime,
    ) -> bool:
        """Store the agent's message; relay its text to the customer unless internal."""
        flags = ["agent-reply"]
        outbound_id: int | None = None
        message_id = msg.message_id
        public = bool(text) and not plan.internal and requester is not None
        if text and not plan.internal and requester is None:
            flags.append("not-relayed:no-requester")
        if public:
            assert requester is not None
            cc = [
                email
                for email, role in ticket_changes.participants(session, ticket.id)
                if role is ParticipantRole.cc and email.lower() != requester.email.lower()
            ]
            references = list(reversed(ticket_changes.recent_message_ids(session, ticket.id)))
            files = [
                OutgoingFile(a.filename, a.content_type, a.payload)
                for a in msg.attachments
                if not a.inline
            ]
            if sum(len(f.payload) for f in files) > MAX_RELAYED_BYTES:
                flags.append("attachments-not-relayed:too-large")
                files = []
            outbound_id, message_id = self.notifier.relay(
                session,
                ticket,
                requester,
                cc,
                agent=agent,
                text=text,
                status=ticket.status.value,
                references=references,
                files=files,
            )
            ticket_changes.set_first_response(session, ticket, now)
            flags.append(f"relayed-as:{message_id}")
            if msg.message_id:
                flags.append(f"agent-message-id:{msg.message_id}"[:300])
        elif not text:
            flags.append("commands-only")
        if plan.internal:
            flags.append("internal-note")
        stored_id = tickets.add_message(
            session,
            tickets.NewMessage(
                ticket_id=ticket.id,
                inbound_id=item.id,
                outbound_id=outbound_id,
                subject=msg.subject[:998],
                text_body=text or "\n".join(c for c in plan.done) or "(commands only)",
                html_body=None,
                author_email=agent.email,
                author_name=agent.agent.name,
                author_type=AuthorType.support,
                direction=Direction.outbound if public else Direction.inbound,
                message_id=message_id,
                in_reply_to=msg.in_reply_to,
                references=msg.references,
                created_at=now,
                internal=not public,
                flags=flags,
            ),
        )
        tickets.add_attachments(session, stored_id, msg.attachments, blob_keys)
        return public

    def _merge(
        self,
        session: Session,
        source: TicketFacts,
        target: TicketFacts,
        requester: tickets.CustomerRow | None,
        actor: str,
        now: datetime,
    ) -> None:
        ticket_changes.merge(
            session,
            source,
            target,
            requester_email=requester.email if requester else None,
            actor=actor,
            now=now,
        )
        if requester is not None:
            self.notifier.tell_customer(
                session,
                source,
                requester,
                "ticket-merged",
                {
                    "target_number": target.number,
                    "target_token": self.notifier.token.render(target.number),
                },
            )

    def _after(
        self,
        session: Session,
        ticket: TicketFacts,
        agent: AgentRecord,
        people: People,
        plan: _Plan,
        msg: ParsedMessage,
    ) -> None:
        """Tell the new assignee, and answer the agent (#help, receipts)."""
        current = ticket_changes.facts(session, ticket.id)
        assert current is not None
        valid = commands.valid_commands(current.status)
        if plan.assignee is not None and plan.assignee.email != agent.email:
            self.notifier.notify_agent(
                session,
                current,
                plan.assignee,
                "ticket-assigned",
                commands=valid,
                extra={"text": "", "author": agent.email},
            )
        if plan.escalations:
            self.notifier.escalated(
                session,
                current,
                [
                    p
                    for p in people.escalation_audience(current.team, current.assignee_email)
                    if p.email != agent.email
                ],
                reason="; ".join(plan.escalations),
                author=agent.email,
                commands=valid,
            )
        if plan.help:
            self.notifier.notify_agent(
                session,
                current,
                agent,
                "command-help",
                commands=valid,
                in_reply_to=msg.message_id,
            )
        elif plan.done and self.settings.desk.receipts == "always":
            self.notifier.notify_agent(
                session,
                current,
                agent,
                "command-receipt",
                commands=valid,
                extra={"done": list(plan.done)},
                in_reply_to=msg.message_id,
            )

    def _refuse(
        self,
        session: Session,
        ticket: TicketFacts,
        agent: AgentRecord,
        problems: Sequence[Problem],
        msg: ParsedMessage,
    ) -> None:
        log.info(
            "agent %s: commands refused on ticket %d: %s",
            agent.email,
            ticket.number,
            "; ".join(p.problem for p in problems),
            extra={"action": "agent_commands_refused", "ticket_number": ticket.number},
        )
        self.notifier.notify_agent(
            session,
            ticket,
            agent,
            "command-error",
            commands=commands.valid_commands(ticket.status),
            extra={
                "problems": [
                    {"line": p.line, "problem": p.problem, "suggestion": p.suggestion or ""}
                    for p in problems
                ]
            },
            in_reply_to=msg.message_id,
        )


def strip_sign_off(text: str, agent: AgentRecord) -> str:
    """Drop the agent's own unmarked signature: a last short paragraph that
    starts with a sign-off ("Best regards,", "С уважением,") or the agent's name.

    The customer mail carries the agent's name and the team in its own footer.
    """
    paragraphs = re.split(r"\n\s*\n", text.strip())
    if len(paragraphs) < 2:
        return text.strip()
    last = paragraphs[-1].strip().splitlines()
    first = last[0].strip().rstrip(",.!:;").lower()
    name = agent.agent.name.strip().lower()
    names = {name, name.split(" ")[0]} - {""}
    if len(last) <= 6 and (first in _SIGN_OFFS or first in names):
        return "\n\n".join(paragraphs[:-1]).strip()
    return text.strip()


def _one_address(value: str) -> Address | None:
    found = [(n, e) for n, e in getaddresses([value]) if "@" in e]
    if len(found) != 1:
        return None
    name, email = found[0]
    local, _, domain = email.strip().rpartition("@")
    if not local or not domain or any(c in email for c in "\r\n <>,;"):
        return None
    return Address(f"{local}@{domain.lower()}", name.strip())


def _clean_subject(subject: str) -> str:
    return _FORWARD_PREFIX.sub("", " ".join(subject.split())) or "(no subject)"


def _find_agent(people: People, wanted: str, me: AgentRecord) -> AgentRecord | None:
    wanted = wanted.strip().lower()
    if wanted == "me":
        return me
    found = people.find(wanted)
    if found is not None:
        return found
    for record in people.agents.values():
        local = record.email.partition("@")[0]
        if wanted in (local, record.agent.name.lower(), record.agent.name.lower().split(" ")[0]):
            return record
    return None


def _nearest_agent(people: People, wanted: str) -> str | None:
    names = [r.email.partition("@")[0] for r in people.agents.values() if r.active]
    found = difflib.get_close_matches(wanted.partition("@")[0].lower(), names, n=1, cutoff=0.5)
    return found[0] if found else None


def _suggest_status(status: TicketStatus) -> str | None:
    allowed = sorted(lifecycle.TRANSITIONS.get(status, ()))
    return f"#status {allowed[0]}" if allowed else None
