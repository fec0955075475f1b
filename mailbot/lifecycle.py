"""Ticket status rules: what a customer's mail does to a ticket. Pure.

The spec's statuses: new, assigned, in_progress, pending (waiting for the
customer; the SLA clock stops), resolved (waiting for the customer's
confirmation), closed, reopened.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailbot.states import TicketStatus as TicketState


class ReplyAction(enum.StrEnum):
    append = "append"
    reopen = "reopen"
    new_linked = "new-linked"


@dataclass(frozen=True, slots=True)
class ReplyEffect:
    action: ReplyAction
    #: The status the ticket moves to, or None to leave it.
    status: TicketState | None


def customer_reply(
    status: TicketState,
    *,
    closed_at: datetime | None,
    now: datetime,
    reopen_window: timedelta,
) -> ReplyEffect:
    """The effect of the requester's (or a participant's) reply on a ticket.

    * pending: the customer answered, work goes on (in_progress);
    * resolved: the customer writes again, so the solution did not hold: reopened;
    * closed within the reopen window: reopened; later: a new ticket linked to it;
    * otherwise the status stays.
    """
    if status is TicketState.pending:
        return ReplyEffect(ReplyAction.append, TicketState.in_progress)
    if status is TicketState.resolved:
        return ReplyEffect(ReplyAction.append, TicketState.reopened)
    if status is TicketState.closed:
        if closed_at is not None and now - closed_at <= reopen_window:
            return ReplyEffect(ReplyAction.reopen, TicketState.reopened)
        return ReplyEffect(ReplyAction.new_linked, None)
    return ReplyEffect(ReplyAction.append, None)
