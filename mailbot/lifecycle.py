"""Ticket status rules: what an agent may do to a status, what a customer's mail does. Pure.

The spec's statuses: new, assigned, in_progress, pending (waiting for the
customer; the SLA clock stops), resolved (waiting for the customer's
confirmation), closed, reopened.

Agents change the status with commands (``#resolve``, ``#status pending``, see
``mailbot.commands``); :data:`TRANSITIONS` says which changes are allowed and
:func:`transition` checks one. Customers change it only by writing:
:func:`customer_reply` (with :func:`confirms_resolution` for "thanks, it works").
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from mailbot.states import TicketStatus as TicketState

_S = TicketState

#: The status changes an agent may make, by current status. A ticket is created
#: ``new`` and never goes back there, except that an agent may hand an assigned
#: ticket back to the queue. ``reopened`` is reached only from ``resolved`` or
#: ``closed``, and a closed ticket must be reopened before anything else. Staying
#: in the same status is not a change and is always allowed (see :func:`transition`).
TRANSITIONS: Final[Mapping[TicketState, frozenset[TicketState]]] = {
    _S.new: frozenset({_S.assigned, _S.in_progress, _S.pending, _S.resolved, _S.closed}),
    _S.assigned: frozenset({_S.new, _S.in_progress, _S.pending, _S.resolved, _S.closed}),
    _S.in_progress: frozenset({_S.assigned, _S.pending, _S.resolved, _S.closed}),
    _S.pending: frozenset({_S.in_progress, _S.resolved, _S.closed}),
    _S.resolved: frozenset({_S.in_progress, _S.closed, _S.reopened}),
    _S.closed: frozenset({_S.reopened}),
    _S.reopened: frozenset({_S.assigned, _S.in_progress, _S.pending, _S.resolved, _S.closed}),
}


class TransitionError(ValueError):
    """An agent asked for a status change the table does not allow."""

    def __init__(self, current: TicketState, target: TicketState) -> None:
        self.current = TicketState(current)
        self.target = TicketState(target)
        self.allowed = allowed_targets(current)
        names = ", ".join(self.allowed)
        text = f"cannot change status from {self.current} to {self.target} (allowed: {names})"
        super().__init__(text)


def allowed_targets(current: TicketState) -> tuple[TicketState, ...]:
    """The statuses an agent may move a ``current`` ticket to, in the spec's order."""
    return tuple(s for s in TicketState if s in TRANSITIONS[TicketState(current)])


def can_transition(current: TicketState, target: TicketState) -> bool:
    """Whether :func:`transition` accepts the change (the same status included).

    Plain strings (a status read back as ``str``) are accepted and compared by value.
    """
    current, target = TicketState(current), TicketState(target)
    return target is current or target in TRANSITIONS[current]


def transition(current: TicketState, target: TicketState) -> TicketState:
    """The status after an agent asks for ``target``; raises :class:`TransitionError`.

    Asking for the status the ticket already has is not an error: it returns
    ``current`` unchanged, and the caller sees there is nothing to record.
    """
    current, target = TicketState(current), TicketState(target)
    if not can_transition(current, target):
        raise TransitionError(current, target)
    return target


class ReplyAction(enum.StrEnum):
    append = "append"
    reopen = "reopen"
    new_linked = "new-linked"
    #: The customer confirmed the resolution: the ticket closes.
    close = "close"


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
    confirms: bool = False,
) -> ReplyEffect:
    """The effect of the requester's (or a participant's) reply on a ticket.

    * pending: the customer answered, work goes on (in_progress);
    * resolved and ``confirms`` (see :func:`confirms_resolution`): the customer
      confirmed the solution, the ticket closes (action ``close``, status closed);
    * resolved otherwise: the customer writes again, so the solution did not
      hold: reopened;
    * closed within the reopen window: reopened; later: a new ticket linked to it;
    * otherwise the status stays. ``confirms`` matters only for a resolved ticket.
    """
    status = TicketState(status)
    if status is TicketState.pending:
        return ReplyEffect(ReplyAction.append, TicketState.in_progress)
    if status is TicketState.resolved:
        if confirms:
            return ReplyEffect(ReplyAction.close, TicketState.closed)
        return ReplyEffect(ReplyAction.append, TicketState.reopened)
    if status is TicketState.closed:
        if closed_at is not None and now - closed_at <= reopen_window:
            return ReplyEffect(ReplyAction.reopen, TicketState.reopened)
        return ReplyEffect(ReplyAction.new_linked, None)
    return ReplyEffect(ReplyAction.append, None)


# -- "thanks, it works" --------------------------------------------------------------------

#: Longer replies say more than "it works"; an agent reads them (the ticket reopens).
CONFIRMATION_MAX_CHARS: Final = 200

_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")
#: Words that say "yes, solved" (after lower-casing, ё → е, ’ → ').
_YES_WORDS: Final = frozenset(
    {
        # English
        "works", "working", "worked", "solved", "resolved", "fixed", "helped", "sorted",
        "yes", "confirm", "confirmed", "close", "closed",
        # Russian
        "работает", "работают", "заработало", "заработал", "заработала", "получилось",
        "решено", "решена", "решен", "решили", "помогло", "помогли", "исправлено",
        "исправили", "да", "закрывать", "закрывайте", "закрыть", "закрывай", "подтверждаю",
    }
)  # fmt: skip
_YES_PHRASES: Final = (
    "all good",
    "that did it",
    "did the trick",
    "все хорошо",
    "все ок",
    "все в порядке",
    "вопрос снят",
)
#: Words that cast doubt: a negation, a "but", a "still", a "will try later".
_DOUBT_WORDS: Final = frozenset(
    {
        # English
        "not", "no", "never", "nothing", "nor", "neither", "still", "but", "however",
        "again", "yet", "unfortunately", "error", "errors", "fail", "fails", "failed",
        "failing", "broken", "wrong", "try", "later", "tomorrow", "cannot",
        # Russian
        "не", "нет", "ни", "но", "однако", "снова", "опять", "завтра", "позже", "потом",
    }
)  # fmt: skip
_DOUBT_PREFIXES: Final = ("ошибк", "сломал", "попроб", "провер", "сожален", "прежнему", "по-прежн")
_DOUBT_PHRASES: Final = ("все еще", "до сих пор")


def confirms_resolution(text: str) -> bool:
    """Whether a customer's short reply confirms the solution ("thanks, it works").

    Conservative: a question mark, any negation or doubt ("still", "but", "not",
    "n't", "не", "нет", "снова", "попробую"...), or more than
    :data:`CONFIRMATION_MAX_CHARS` characters means no. A bare "thanks" is not a
    confirmation either: something must say it works, is solved, or may be closed.
    """
    flat = " ".join(text.split()).lower().replace("ё", "е").replace("’", "'")
    if not flat or len(flat) > CONFIRMATION_MAX_CHARS or "?" in flat:
        return False
    words = _WORD.findall(flat)
    spaced = " " + " ".join(words) + " "
    for word in words:
        if word in _DOUBT_WORDS or word.endswith("n't") or word.startswith(_DOUBT_PREFIXES):
            return False
        if word in ("dont", "doesnt", "didnt", "isnt", "cant", "wont", "havent", "wasnt"):
            return False
    if any(f" {p} " in spaced for p in _DOUBT_PHRASES):
        return False
    return any(w in _YES_WORDS for w in words) or any(f" {p} " in spaced for p in _YES_PHRASES)
