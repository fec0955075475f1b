"""Which mail goes to whom: events become rendered mail in the outbox.

Every mail is enqueued in the caller's transaction (the transactional
outbox) and stored on its ticket as an outbound message, so that reference
threading finds the ticket when the customer answers it. Automatic mail is
capped per recipient and hour (loop safety, BAD_INPUTS B-22).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlmodel import Session

from mailbot import language, replytext, signing
from mailbot.compose import Outgoing, OutgoingFile, Recipient, compose
from mailbot.config import Settings
from mailbot.directory import AgentRecord
from mailbot.render import MailRenderer
from mailbot.states import AuthorType, Direction
from mailbot.store import outbox, tickets
from mailbot.store.ticket_changes import TicketFacts
from mailbot.store.tickets import CustomerRow, TicketRow
from mailbot.threader import SubjectToken

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class Notifier:
    def __init__(
        self, settings: Settings, renderer: MailRenderer, key: bytes, clock: Clock
    ) -> None:
        self.settings = settings
        self.renderer = renderer
        self.key = key
        self.clock = clock
        self.token = SubjectToken(settings.tickets.token_format)
        self.domain = settings.support_address.rpartition("@")[2]
        self.sender = Recipient(settings.support_address, settings.conversation.team_name)

    def status_url(self, ticket_number: int) -> str:
        expires = self.clock() + timedelta(days=self.settings.conversation.status_link_days)
        token = signing.make_status_token(self.key, ticket_number, expires)
        return f"{self.settings.conversation.public_url}/status/{token}"

    def new_message_id(self, ticket_number: int) -> str:
        return signing.make_message_id(self.key, ticket_number, self.domain)

    def _over_cap(self, session: Session, recipient: str) -> bool:
        limit = self.settings.conversation.auto_reply_limit
        since = self.clock() - timedelta(hours=1)
        return outbox.count_recent_auto(session, recipient, since) >= limit

    def _customer_context(self, ticket: TicketRow, customer: CustomerRow) -> dict[str, Any]:
        lang = customer.language or "en"
        hours = self.settings.sla.first_response[ticket.priority]
        return {
            "number": ticket.number,
            "token": self.token.render(ticket.number),
            "subject": ticket.subject or "(no subject)",
            "priority": language.PRIORITY_NAMES[lang].get(ticket.priority, ticket.priority),
            "first_response": language.hours_phrase(hours, lang),
            "status_url": self.status_url(ticket.number),
            "customer_name": customer.name,
            "team_name": self.settings.conversation.team_name,
            "support_address": self.settings.support_address,
        }

    def _held_back(self, session: Session, ticket: TicketRow, customer: CustomerRow) -> bool:
        if not self._over_cap(session, customer.email):
            return False
        log.warning(
            "automatic mail to %s held back: %d in the last hour",
            customer.email,
            self.settings.conversation.auto_reply_limit,
            extra={"action": "auto_reply_suppressed", "ticket_number": ticket.number},
        )
        return True

    def acknowledge(
        self,
        session: Session,
        ticket: TicketRow,
        customer: CustomerRow,
        *,
        in_reply_to: str | None,
        references: Sequence[str],
    ) -> bool:
        """Queue the acknowledgement of a new ticket; False when the cap held it back."""
        return self.auto_reply(
            session,
            ticket,
            customer,
            "ticket-opened",
            in_reply_to=in_reply_to,
            references=references,
        )

    def auto_reply(
        self,
        session: Session,
        ticket: TicketRow,
        customer: CustomerRow,
        template: str,
        *,
        in_reply_to: str | None,
        references: Sequence[str],
    ) -> bool:
        """Queue the customer template ``template`` as an automatic answer (capped)."""
        if self._held_back(session, ticket, customer):
            return False
        self._enqueue(
            session,
            ticket,
            Recipient(customer.email, customer.name),
            event=template,
            audience="customer",
            lang=customer.language or "en",
            context=self._customer_context(ticket, customer),
            in_reply_to=in_reply_to,
            references=references,
            auto=True,
        )
        return True

    # -- agents ---------------------------------------------------------------------

    def agent_context(self, ticket: TicketFacts, lang: str) -> dict[str, Any]:
        """The ticket's facts as agents' mail shows them."""
        category = "/".join(p for p in (ticket.category, ticket.subcategory) if p)
        return {
            "number": ticket.number,
            "token": self.token.render(ticket.number),
            "subject": ticket.subject or "(no subject)",
            "status": language.STATUS_NAMES[lang].get(ticket.status, ticket.status),
            "priority": language.PRIORITY_NAMES[lang].get(ticket.priority, ticket.priority),
            "category": category or "-",
            "assignee": ticket.assignee_email or "-",
            "team": ticket.team or "-",
            "tags": " ".join(ticket.tags) or "-",
            "first_response_due": _when(ticket.sla_first_response_due_at),
            "first_response_done": ticket.first_response_at is not None,
            "resolution_due": _when(ticket.sla_resolution_due_at),
            "marker": replytext.MARKER,
            "ticket_url": f"{self.settings.conversation.public_url}/tickets/{ticket.number}",
            "team_name": self.settings.conversation.team_name,
        }

    def agent_language(self, agent: AgentRecord) -> str:
        return agent.language or self.settings.desk.agent_language

    def notify_agent(
        self,
        session: Session,
        ticket: TicketFacts,
        agent: AgentRecord,
        event: str,
        *,
        commands: Sequence[str],
        extra: dict[str, Any] | None = None,
        in_reply_to: str | None = None,
    ) -> str:
        """Mail ``agent`` about ``ticket`` (template ``mail/agent/<event>``); its Message-ID.

        Stored on the ticket as an internal message, so that the agent's reply
        threads to it and no customer ever sees it. Not capped: agents are
        our own people, and their auto-replies are never answered.
        """
        lang = self.agent_language(agent)
        context = self.agent_context(ticket, lang)
        context.update({"agent_name": agent.agent.name or agent.email, "commands": list(commands)})
        context.update(extra or {})
        refs = [in_reply_to] if in_reply_to else []
        _, message_id = self._enqueue(
            session,
            ticket.row,
            Recipient(agent.email, agent.agent.name),
            event=event,
            audience="agent",
            lang=lang,
            context=context,
            in_reply_to=in_reply_to,
            references=refs,
            auto=True,
            auto_kind="auto-generated",
            stored="internal",
        )
        return message_id

    def refused(
        self, session: Session, ticket: TicketFacts, agent: AgentRecord, reason: str
    ) -> bool:
        """Tell a deactivated agent why their mail did nothing (capped like automatic mail)."""
        if self._over_cap(session, agent.email):
            return False
        lang = self.agent_language(agent)
        context = self.agent_context(ticket, lang)
        context["reason"] = reason
        self._enqueue(
            session,
            ticket.row,
            Recipient(agent.email, agent.agent.name),
            event="mail-refused",
            audience="agent",
            lang=lang,
            context=context,
            in_reply_to=None,
            references=(),
            auto=True,
            stored="internal",
        )
        return True

    def escalated(
        self,
        session: Session,
        ticket: TicketFacts,
        audience: Sequence[AgentRecord],
        *,
        reason: str,
        author: str,
        commands: Sequence[str],
    ) -> None:
        """Tell the managers (and the team) that ``ticket`` was escalated."""
        for person in audience:
            self.notify_agent(
                session,
                ticket,
                person,
                "ticket-escalated",
                commands=commands,
                extra={"reason": reason, "author": author},
            )

    def relay(
        self,
        session: Session,
        ticket: TicketFacts,
        customer: CustomerRow,
        cc: Sequence[str],
        *,
        agent: AgentRecord,
        text: str,
        status: str,
        references: Sequence[str],
        files: Sequence[OutgoingFile] = (),
    ) -> tuple[int, str]:
        """Queue an agent's answer to the customer: (outbound id, Message-ID).

        Sent from the support address (the agent's name shown beside it), with
        the ticket token, never from the agent's own address. The caller stores
        the agent's message with the returned Message-ID.
        """
        lang = customer.language or "en"
        context = self._customer_context(ticket.row, customer)
        team = self.settings.conversation.team_name
        context.update(
            {
                "text": text,
                "status_code": status,
                "agent_name": agent.agent.name or team,
                "survey": self.settings.conversation.satisfaction_survey,
            }
        )
        sender = Recipient(
            self.settings.support_address,
            f"{agent.agent.name} ({team})" if agent.agent.name else team,
        )
        refs = list(references)
        return self._enqueue(
            session,
            ticket.row,
            Recipient(customer.email, customer.name),
            event="agent-reply",
            audience="customer",
            lang=lang,
            context=context,
            in_reply_to=refs[-1] if refs else None,
            references=refs[:-1],
            auto=False,
            stored="none",
            cc=[Recipient(a) for a in cc],
            sender=sender,
            files=files,
        )

    def tell_customer(
        self,
        session: Session,
        ticket: TicketFacts,
        customer: CustomerRow,
        event: str,
        extra: dict[str, Any],
    ) -> bool:
        """An automatic notice to the requester (merge, auto-close); capped like all."""
        if self._held_back(session, ticket.row, customer):
            return False
        context = self._customer_context(ticket.row, customer)
        context.update(extra)
        self._enqueue(
            session,
            ticket.row,
            Recipient(customer.email, customer.name),
            event=event,
            audience="customer",
            lang=customer.language or "en",
            context=context,
            in_reply_to=None,
            references=(),
            auto=True,
        )
        return True

    def send_digest(
        self, session: Session, manager: AgentRecord, context: dict[str, Any], lang: str
    ) -> str:
        """Queue a manager's daily digest (no ticket); returns its text part."""
        rendered = self.renderer.render("manager", "digest", lang, context)
        message_id = signing.make_message_id(self.key, 0, self.domain)
        raw = compose(
            Outgoing(
                sender=self.sender,
                to=[Recipient(manager.email, manager.agent.name)],
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                message_id=message_id,
                date=self.clock(),
                auto=True,
                auto_kind="auto-generated",
                extra_headers={"X-Mailbot-Event": "daily-digest"},
            )
        )
        outbox.enqueue(
            session,
            raw=raw,
            sender=self.settings.support_address,
            recipients=[manager.email],
            message_id=message_id,
            ticket_id=None,
            event="daily-digest",
            auto=True,
            clock=self.clock,
        )
        log.info(
            "queued the daily digest to %s",
            manager.email,
            extra={"action": "outbound_queued", "event": "daily-digest"},
        )
        return rendered.text

    def _enqueue(
        self,
        session: Session,
        ticket: TicketRow,
        to: Recipient,
        *,
        event: str,
        audience: str,
        lang: str,
        context: dict[str, Any],
        in_reply_to: str | None,
        references: Sequence[str],
        auto: bool,
        auto_kind: str = "auto-replied",
        stored: Literal["system", "internal", "none"] = "system",
        cc: Sequence[Recipient] = (),
        sender: Recipient | None = None,
        files: Sequence[OutgoingFile] = (),
    ) -> tuple[int, str]:
        rendered = self.renderer.render(audience, event, lang, context)
        message_id = self.new_message_id(ticket.number)
        now = self.clock()
        refs = [*references, *([in_reply_to] if in_reply_to else [])]
        raw = compose(
            Outgoing(
                sender=sender or self.sender,
                to=[to],
                cc=cc,
                attachments=files,
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                message_id=message_id,
                date=now,
                in_reply_to=in_reply_to,
                references=list(dict.fromkeys(refs)),
                auto=auto,
                auto_kind=auto_kind,
                extra_headers={"X-Mailbot-Ticket": str(ticket.number), "X-Mailbot-Event": event},
            )
        )
        outbound_id = outbox.enqueue(
            session,
            raw=raw,
            sender=self.settings.support_address,
            recipients=[to.email, *(c.email for c in cc)],
            message_id=message_id,
            ticket_id=ticket.id,
            event=event,
            auto=auto,
            clock=self.clock,
        )
        if stored != "none":
            tickets.add_message(
                session,
                tickets.NewMessage(
                    ticket_id=ticket.id,
                    outbound_id=outbound_id,
                    subject=rendered.subject,
                    text_body=rendered.text,
                    html_body=None,
                    author_email=self.settings.support_address,
                    author_name=self.settings.conversation.team_name,
                    author_type=AuthorType.system,
                    direction=Direction.outbound,
                    message_id=message_id,
                    in_reply_to=[in_reply_to] if in_reply_to else [],
                    references=refs,
                    created_at=now,
                    internal=stored == "internal",
                    flags=[f"event:{event}", f"to:{to.email}"],
                ),
            )
        log.info(
            "queued %s to %s for ticket %d",
            event,
            to.email,
            ticket.number,
            extra={"action": "outbound_queued", "event": event, "ticket_number": ticket.number},
        )
        return outbound_id, message_id


def _when(value: datetime | None) -> str:
    """A due time for agents: UTC, to the minute."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
