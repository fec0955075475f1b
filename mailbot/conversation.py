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
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from mailbot import language, lifecycle, signing, sla
from mailbot.classify import Classification, MailClass, read_bounce
from mailbot.config import Settings
from mailbot.message import ParsedMessage
from mailbot.notify import Notifier
from mailbot.states import AuthorType, Direction, ParticipantRole, Priority, TicketStatus
from mailbot.store import outbox, tickets
from mailbot.store.inbox import InboundItem
from mailbot.store.models import Customer, Ticket
from mailbot.threader import SubjectToken, ThreadedBy, ThreadMatch, find_ticket, plus_ticket_numbers

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Shown instead of an empty body (BAD_INPUTS B-35): a mail is never dropped as empty.
NO_TEXT = "(no text)"
UNKNOWN_SENDER = "(unknown sender)"
MAX_SUBJECT_CHARS = 998


@dataclass(frozen=True, slots=True)
class Applied:
    """The result of one mail: which ticket, and what happened."""

    outcome: str  # created | appended | reopened | bounce-linked
    ticket_id: int | None
    ticket_number: int | None
    acknowledged: bool = False


class Conversation:
    def __init__(self, settings: Settings, notifier: Notifier, key: bytes, clock: Clock) -> None:
        self.settings = settings
        self.notifier = notifier
        self.key = key
        self.clock = clock
        self.token = SubjectToken(settings.tickets.token_format)
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
        customer = (
            tickets.get_or_create_customer(session, msg.sender.email, msg.sender.name)
            if msg.sender
            else None
        )
        if customer is not None and klass.mail_class is MailClass.human:
            customer.bouncing = False
            if customer.language is None:
                customer.language = self._language(msg)
        ticket, outcome = self._target(session, match, msg, klass, customer, now)
        assert ticket.id is not None
        self._store_message(session, ticket, item, msg, klass, match, blob_keys, now)
        acknowledged = False
        if outcome == "created" and customer is not None and klass.may_auto_answer:
            acknowledged = self.notifier.acknowledge(
                session,
                ticket,
                customer,
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

    def _target(
        self,
        session: Session,
        match: ThreadMatch,
        msg: ParsedMessage,
        klass: Classification,
        customer: Customer | None,
        now: datetime,
    ) -> tuple[Ticket, str]:
        actor = msg.sender.email if msg.sender else "system"
        if match.ticket_id is None:
            return self._new_ticket(session, msg, customer, now, related=None), "created"
        existing = tickets.get_ticket(session, match.ticket_id)
        assert existing is not None
        trusted = match.participant or self.settings.conversation.unknown_sender == "append"
        if not trusted:
            log.info(
                "reply from a non-participant to ticket %d opens a linked ticket",
                existing.number,
                extra={"action": "thread_not_participant", "ticket_number": existing.number},
            )
            return self._new_ticket(session, msg, customer, now, related=existing), "created"
        if klass.mail_class is not MailClass.human:
            # Auto-replies and unmatched reports are kept, but change nothing.
            tickets.touch(session, existing, now)
            return existing, "appended"
        effect = lifecycle.customer_reply(
            TicketStatus(existing.status),
            closed_at=existing.closed_at,
            now=now,
            reopen_window=self.reopen_window,
        )
        if effect.action is lifecycle.ReplyAction.new_linked:
            return self._new_ticket(session, msg, customer, now, related=existing), "created"
        if effect.status is not None:
            tickets.set_status(session, existing, effect.status, actor, now)
        tickets.touch(session, existing, now)
        return existing, (
            "reopened" if effect.action is lifecycle.ReplyAction.reopen else "appended"
        )

    def _new_ticket(
        self,
        session: Session,
        msg: ParsedMessage,
        customer: Customer | None,
        now: datetime,
        *,
        related: Ticket | None,
    ) -> Ticket:
        priority = Priority(self.settings.tickets.default_priority)
        table = self.settings.sla
        ticket = tickets.create_ticket(
            session,
            subject=msg.subject[:MAX_SUBJECT_CHARS],
            description=msg.text if msg.text.strip() else NO_TEXT,
            requester=customer,
            priority=priority,
            category=self.settings.tickets.default_category,
            now=now,
            actor=msg.sender.email if msg.sender else "system",
            sla_first_response_due_at=sla.due(now, priority, table.first_response),
            sla_resolution_due_at=sla.due(now, priority, table.resolution),
        )
        assert ticket.id is not None
        if customer is not None:
            tickets.add_participant(session, ticket.id, customer.email, ParticipantRole.requester)
        ours = self.settings.our_addresses
        cc = [a.email for a in msg.cc if a.email.lower() not in ours]
        for email in cc[: self.settings.conversation.max_cc_participants]:
            tickets.add_participant(session, ticket.id, email, ParticipantRole.cc)
        if related is not None:
            assert related.id is not None
            tickets.link_tickets(session, ticket.id, related.id, "related")
            tickets.add_history(
                session, ticket.id, "related", None, str(related.number), "system", now
            )
        return ticket

    def _store_message(
        self,
        session: Session,
        ticket: Ticket,
        item: InboundItem,
        msg: ParsedMessage,
        klass: Classification,
        match: ThreadMatch,
        blob_keys: Sequence[str],
        now: datetime,
    ) -> None:
        assert ticket.id is not None
        flags = [f"threaded-by:{match.how.value}", f"class:{klass.mail_class.value}"]
        flags.extend(msg.fallbacks)
        flags.extend(f"defect:{d}" for d in msg.defects[:20])
        if msg.sender is None:
            flags.append("unknown-sender")
        if match.how is not ThreadedBy.new and not match.participant:
            flags.append("not-participant")
        message = tickets.add_message(
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
        assert message.id is not None
        for attachment, key in zip(msg.attachments, blob_keys, strict=True):
            tickets.add_attachment(
                session,
                message_id=message.id,
                file_name=attachment.filename,
                size=attachment.size,
                content_type=attachment.content_type,
                storage_key=key,
                content_id=attachment.content_id,
                inline=attachment.inline,
            )

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
            found = tickets.get_ticket(session, ticket_id)
            number = found.number if found else None
        log.info(
            "bounce of outbound %s: %s",
            ",".join(str(b.outbound_id) for b in bounced),
            report.reason,
            extra={"action": "outbound_bounced", "ticket_number": number},
        )
        return Applied("bounce-linked", ticket_id, number)
