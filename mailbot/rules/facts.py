"""One mail as the rule conditions see it: what the caller knows, normalised and indexed lazily."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Final

from mailbot.message import ParsedMessage
from mailbot.rules.matching import WordIndex

#: Only this many characters of the body are searched (keywords and regexes).
BODY_SEARCH_LIMIT: Final = 100_000


@dataclass(frozen=True, slots=True)
class RuleInput:
    """Everything the rules may look at for one inbound mail.

    ``recipients`` are the addresses the mail came to (envelope RCPT TO, else
    To and Cc), ``mail_class`` is one of ``conditions.MAIL_CLASSES``, and
    ``received_at`` is an aware datetime (UTC by convention). ``reopens`` is
    0 unless this mail reopens its ticket; then it counts the reopenings,
    this one included (1 the first time).
    """

    msg: ParsedMessage
    recipients: tuple[str, ...] = ()
    is_new_ticket: bool = True
    customer_known: bool = False
    mail_class: str = "human"
    received_at: datetime | None = None
    reopens: int = 0


class Facts:
    """One mail as the predicates see it: normalised once, indexed lazily.

    ``category`` and ``priority`` are the decision so far; the engine updates
    them as rules fire, so later rules can test them.
    """

    def __init__(self, mail: RuleInput) -> None:
        self.mail = mail
        self.category: str | None = None
        self.priority: str | None = None
        #: The label of the condition that failed last (the explanation of a miss).
        self.miss = ""

    @cached_property
    def raw_body(self) -> str:
        return self.mail.msg.text[:BODY_SEARCH_LIMIT]

    @property
    def subject_lower(self) -> str:
        return self.subject.lowered

    @property
    def body_lower(self) -> str:
        return self.body.lowered

    @cached_property
    def subject(self) -> WordIndex:
        return WordIndex(self.mail.msg.subject)

    @cached_property
    def body(self) -> WordIndex:
        return WordIndex(self.raw_body)

    @cached_property
    def sender(self) -> str:
        sender = self.mail.msg.sender
        return sender.email.lower() if sender else ""

    @cached_property
    def sender_domain(self) -> str:
        return self.sender.rpartition("@")[2]

    @cached_property
    def recipients(self) -> frozenset[str]:
        return frozenset(r.lower() for r in self.mail.recipients)

    @cached_property
    def headers(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for name, value in self.mail.msg.headers:
            found.setdefault(name.lower(), []).append(value)
        return found
