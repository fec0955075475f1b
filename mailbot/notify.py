"""Which mail goes to whom: events become rendered mail in the outbox.

Every mail is enqueued in the caller's transaction (the transactional
outbox) and stored on its ticket as an outbound message, so that reference
threading finds the ticket when the customer answers it. Automatic mail is
capped per recipient and hour (loop safety, BAD_INPUTS B-22).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from mailbot import language, signing
from mailbot.compose import Outgoing, Recipient, compose
from mailbot.config import Settings
from mailbot.render import MailRenderer
from mailbot.states import AuthorType, Direction
from mailbot.store import outbox, tickets
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
    ) -> None:
        rendered = self.renderer.render(audience, event, lang, context)
        message_id = self.new_message_id(ticket.number)
        now = self.clock()
        refs = [*references, *([in_reply_to] if in_reply_to else [])]
        raw = compose(
            Outgoing(
                sender=self.sender,
                to=[to],
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                message_id=message_id,
                date=now,
                in_reply_to=in_reply_to,
                references=list(dict.fromkeys(refs)),
                auto=auto,
                extra_headers={"X-Mailbot-Ticket": str(ticket.number), "X-Mailbot-Event": event},
            )
        )
        outbound_id = outbox.enqueue(
            session,
            raw=raw,
            sender=self.settings.support_address,
            recipients=[to.email],
            message_id=message_id,
            ticket_id=ticket.id,
            event=event,
            auto=auto,
            clock=self.clock,
        )
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
                flags=[f"event:{event}"],
            ),
        )
        log.info(
            "queued %s to %s for ticket %d",
            event,
            to.email,
            ticket.number,
            extra={"action": "outbound_queued", "event": event, "ticket_number": ticket.number},
        )
