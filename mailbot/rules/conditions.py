"""Rule conditions: one small pure predicate per condition id.

Each entry of :data:`CONDITIONS` maps a kebab-case id (as written in
``rules.yaml``) to a *factory*: it takes the argument from the file, checks and
compiles it once (raising :class:`ValueError` with a message for the operator)
and returns a :data:`Predicate`. A predicate takes the :class:`Facts` of one
mail and returns ``None`` when the condition does not hold, or a short text
saying why it holds (the keyword found, the header value...): that text is the
explanation stored with the rule hit.

Keywords (``*-contains``) are case-insensitive, match whole words, and a
trailing ``*`` makes a word a prefix (``недоступ*`` matches ``недоступна``).
``ё`` and ``е`` are the same letter. Words of a phrase (``не могу войти``) must
follow each other, with any spaces or punctuation between them. Matching goes
through a per-mail word index, so that hundreds of keyword rules cost a few
set look-ups each instead of a scan of the body.

Predicates that can say what they need in a mail (keywords, regexes with known
words, headers, addresses, domains) come as :class:`Gated`: the rule index looks
those needs up for all rules at once and skips the rules that cannot match.

Regular expressions (``*-matches``) are Python ``re`` syntax, searched
case-insensitively (``(?-i:...)`` turns that off for a group).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, time
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Re-exported: tests and callers know these from here.
from mailbot.rules.facts import BODY_SEARCH_LIMIT as BODY_SEARCH_LIMIT
from mailbot.rules.facts import Facts as Facts
from mailbot.rules.facts import RuleInput as RuleInput
from mailbot.rules.matching import (
    BODY_PREFIX,
    BODY_WORD,
    DOMAIN,
    HEADER,
    RECIPIENT,
    SENDER,
    SUBJECT_PREFIX,
    SUBJECT_WORD,
    Needs,
    Regex,
    any_of,
    strings,
)
from mailbot.rules.matching import Keywords as Keywords
from mailbot.rules.matching import Prechecks as Prechecks
from mailbot.rules.matching import compile_keywords as compile_keywords
from mailbot.rules.matching import prechecks as prechecks

MAIL_CLASSES: Final = ("human", "auto-reply", "bounce", "loop")
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Ticket priorities, most urgent first.
PRIORITIES: Final = ("critical", "high", "medium", "low")


Predicate = Callable[[Facts], str | None]
ConditionFactory = Callable[[object], Predicate]


class Gated:
    """A predicate and what it :data:`Needs` in a mail to hold (None: cannot tell).

    Called like the predicate it wraps; ``rules/schema.py`` unwraps it, keeping
    ``test`` for the engine and ``needs`` for the rule index.
    """

    __slots__ = ("needs", "test")

    def __init__(self, test: Predicate, needs: Needs | None) -> None:
        self.test = test
        self.needs = needs

    def __call__(self, facts: Facts) -> str | None:
        return self.test(facts)


def _either(first: Needs | None, second: Needs | None) -> Needs | None:
    """The needs of "first or second": both must be known."""
    return None if first is None or second is None else first + second


# -- argument helpers -------------------------------------------------------------


def _flag(arg: object) -> bool:
    if not isinstance(arg, bool):
        raise ValueError(f"expected true or false, got {arg!r}")
    return arg


def _regex(arg: object) -> Regex:
    if not isinstance(arg, str) or not arg:
        raise ValueError("expected a regular expression (a non-empty string)")
    try:
        return Regex(re.compile(arg, re.IGNORECASE))
    except re.error as exc:
        raise ValueError(f"bad regular expression {arg!r}: {exc}") from None


def _zone(arg: object) -> ZoneInfo:
    if not isinstance(arg, str):
        raise ValueError(f"expected an IANA time zone name, got {arg!r}")
    try:
        return ZoneInfo(arg)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {arg!r}") from None


def parse_time(value: object) -> time:
    """``HH:MM`` (24-hour) as a time; ``24:00`` is midnight at the end of the day."""
    text = str(value).strip()
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if match is None or int(match[1]) > 24 or int(match[2]) > 59:
        raise ValueError(f"expected a time as HH:MM, got {value!r}")
    if int(match[1]) == 24:
        if int(match[2]):
            raise ValueError(f"expected a time as HH:MM, got {value!r}")
        return time(0, 0)
    return time(int(match[1]), int(match[2]))


def _mapping(arg: object, allowed: Iterable[str], required: Iterable[str]) -> dict[str, object]:
    if not isinstance(arg, dict):
        raise ValueError(f"expected a mapping with keys {', '.join(allowed)}")
    unknown = sorted(set(map(str, arg)) - set(allowed))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (allowed: {', '.join(allowed)})")
    missing = [key for key in required if key not in arg]
    if missing:
        raise ValueError(f"missing key {missing[0]!r}")
    return {str(k): v for k, v in arg.items()}


# -- regular expressions ----------------------------------------------------------


def subject_contains(arg: object) -> Predicate:
    keywords = compile_keywords(arg)
    needs = keywords.needs(SUBJECT_WORD, SUBJECT_PREFIX)
    return Gated(lambda facts: keywords.search(facts.subject), needs)


def body_contains(arg: object) -> Predicate:
    keywords = compile_keywords(arg)
    return Gated(lambda facts: keywords.search(facts.body), keywords.needs(BODY_WORD, BODY_PREFIX))


def text_contains(arg: object) -> Predicate:
    keywords = compile_keywords(arg)

    def test(facts: Facts) -> str | None:
        return keywords.search(facts.subject) or keywords.search(facts.body)

    needs = keywords.needs(SUBJECT_WORD, SUBJECT_PREFIX) + keywords.needs(BODY_WORD, BODY_PREFIX)
    return Gated(test, needs)


# -- regular expression conditions -----------------------------------------------


def subject_matches(arg: object) -> Predicate:
    regex = _regex(arg)
    return Gated(
        lambda facts: regex.search(facts.mail.msg.subject, facts.subject_lower, facts.subject),
        regex.needs(SUBJECT_WORD, SUBJECT_PREFIX),
    )


def body_matches(arg: object) -> Predicate:
    regex = _regex(arg)
    return Gated(
        lambda facts: regex.search(facts.raw_body, facts.body_lower, facts.body),
        regex.needs(BODY_WORD, BODY_PREFIX),
    )


def text_matches(arg: object) -> Predicate:
    regex = _regex(arg)

    def test(facts: Facts) -> str | None:
        return regex.search(
            facts.mail.msg.subject, facts.subject_lower, facts.subject
        ) or regex.search(facts.raw_body, facts.body_lower, facts.body)

    needs = _either(regex.needs(SUBJECT_WORD, SUBJECT_PREFIX), regex.needs(BODY_WORD, BODY_PREFIX))
    return Gated(test, needs)


# -- addresses --------------------------------------------------------------------


def _addresses(arg: object) -> frozenset[str]:
    found = frozenset(a.lower() for a in strings(arg, "an address"))
    bad = sorted(a for a in found if "@" not in a.strip("@") or a.startswith("@"))
    if bad:
        raise ValueError(f"not an address: {bad[0]!r}")
    return found


def _domains(arg: object) -> tuple[str, ...]:
    found = tuple(d.lower().lstrip("@") for d in strings(arg, "a domain"))
    bad = [d for d in found if "@" in d or "." not in d.strip(".")]
    if bad:
        raise ValueError(f"not a domain: {bad[0]!r}")
    return found


def _domain_match(domain: str, domains: tuple[str, ...]) -> str | None:
    for wanted in domains:
        if domain == wanted or domain.endswith("." + wanted):
            return wanted
    return None


def from_address(arg: object) -> Predicate:
    addresses = _addresses(arg)
    return Gated(
        lambda facts: facts.sender if facts.sender in addresses else None,
        any_of(SENDER, addresses),
    )


def from_domain(arg: object) -> Predicate:
    domains = _domains(arg)
    return Gated(
        lambda facts: _domain_match(facts.sender_domain, domains) if facts.sender else None,
        any_of(DOMAIN, domains),
    )


def to_address(arg: object) -> Predicate:
    addresses = _addresses(arg)

    def test(facts: Facts) -> str | None:
        hits = addresses & facts.recipients
        return min(hits) if hits else None

    return Gated(test, any_of(RECIPIENT, addresses))


def customer_in(arg: object) -> Predicate:
    entries = strings(arg, "an address or a domain")
    emails = [e for e in entries if "@" in e.strip("@")]
    others = [e for e in entries if e not in emails]
    addresses = _addresses(emails) if emails else frozenset()
    domains = _domains(others) if others else ()

    def test(facts: Facts) -> str | None:
        if not facts.sender:
            return None
        if facts.sender in addresses:
            return facts.sender
        return _domain_match(facts.sender_domain, domains)

    return Gated(test, any_of(SENDER, addresses) + any_of(DOMAIN, domains))


def customer_new(arg: object) -> Predicate:
    wanted = _flag(arg)
    label = "new customer" if wanted else "known customer"
    return lambda facts: label if (not facts.mail.customer_known) == wanted else None


# -- headers and attachments ------------------------------------------------------


def header_present(arg: object) -> Predicate:
    names = tuple(n.lower() for n in strings(arg, "a header name"))

    def test(facts: Facts) -> str | None:
        for name in names:
            if name in facts.headers:
                return name
        return None

    return Gated(test, any_of(HEADER, names))


def header_matches(arg: object) -> Predicate:
    if not isinstance(arg, dict) or not arg:
        raise ValueError("expected a mapping of header name to regular expression")
    patterns = tuple((str(name).lower(), _regex(value)) for name, value in arg.items())

    def test(facts: Facts) -> str | None:
        found: list[str] = []
        for name, regex in patterns:
            hit = next((v for v in facts.headers.get(name, ()) if regex.pattern.search(v)), None)
            if hit is None:
                return None
            found.append(f"{name}: {hit[:60]}")
        return "; ".join(found)

    return Gated(test, (frozenset((HEADER, name) for name, _ in patterns),))


def has_attachment(arg: object) -> Predicate:
    wanted = _flag(arg)

    def test(facts: Facts) -> str | None:
        count = sum(1 for a in facts.mail.msg.attachments if not a.inline)
        if (count > 0) != wanted:
            return None
        return f"{count} attachment(s)"

    return test


def attachment_type(arg: object) -> Predicate:
    entries = tuple(e.lower() for e in strings(arg, "a MIME type or an .extension"))
    for entry in entries:
        if not entry.startswith(".") and not re.fullmatch(r"[\w.+-]+/(\*|[\w.+-]+)", entry):
            raise ValueError(f"expected a MIME type (image/png, image/*) or .ext, got {entry!r}")

    def test(facts: Facts) -> str | None:
        for att in facts.mail.msg.attachments:
            ctype = att.content_type.lower()
            name = att.filename.lower()
            for entry in entries:
                if entry.startswith("."):
                    if name.endswith(entry):
                        return att.filename
                elif entry.endswith("/*"):
                    if ctype.startswith(entry[:-1]):
                        return f"{att.filename} ({ctype})"
                elif ctype == entry:
                    return f"{att.filename} ({ctype})"
        return None

    return test


# -- time -------------------------------------------------------------------------


def _when(facts: Facts, zone: ZoneInfo) -> datetime | None:
    at = facts.mail.received_at
    return None if at is None else at.astimezone(zone)


def time_between(arg: object) -> Predicate:
    spec = _mapping(arg, ("start", "end", "time-zone"), ("start", "end"))
    start, end = parse_time(spec["start"]), parse_time(spec["end"])
    zone = _zone(spec.get("time-zone", "UTC"))
    if start == end:
        raise ValueError("start and end are the same time")

    def test(facts: Facts) -> str | None:
        local = _when(facts, zone)
        if local is None:
            return None
        now = local.time().replace(tzinfo=None)
        inside = start <= now < end if start < end else (now >= start or now < end)
        return f"{now:%H:%M} {zone.key}" if inside else None

    return test


def weekday_in(arg: object) -> Predicate:
    if isinstance(arg, dict):
        spec = _mapping(arg, ("days", "time-zone"), ("days",))
        days, zone = spec["days"], _zone(spec.get("time-zone", "UTC"))
    else:
        days, zone = arg, ZoneInfo("UTC")
    wanted: set[int] = set()
    for day in strings(days, "a weekday (mon..sun)"):
        if day.lower()[:3] not in WEEKDAYS:
            raise ValueError(f"unknown weekday {day!r} (use mon, tue, ... sun)")
        wanted.add(WEEKDAYS.index(day.lower()[:3]))

    def test(facts: Facts) -> str | None:
        local = _when(facts, zone)
        if local is None or local.weekday() not in wanted:
            return None
        return f"{WEEKDAYS[local.weekday()]} {zone.key}"

    return test


# -- what kind of mail ------------------------------------------------------------


def mail_class(arg: object) -> Predicate:
    classes = frozenset(c.lower() for c in strings(arg, "a mail class"))
    unknown = sorted(classes - set(MAIL_CLASSES))
    if unknown:
        raise ValueError(f"unknown mail class {unknown[0]!r} (use {', '.join(MAIL_CLASSES)})")
    return lambda facts: facts.mail.mail_class if facts.mail.mail_class in classes else None


def is_new_ticket(arg: object) -> Predicate:
    wanted = _flag(arg)
    return lambda facts: "new ticket" if facts.mail.is_new_ticket == wanted else None


def is_reply(arg: object) -> Predicate:
    wanted = _flag(arg)
    return lambda facts: "reply" if (not facts.mail.is_new_ticket) == wanted else None


def reopens_ticket(arg: object) -> Predicate:
    """``true``: the mail reopens its ticket; ``N``: for at least the N-th time."""
    if isinstance(arg, bool):
        wanted = arg
        return lambda facts: "reopens the ticket" if (facts.mail.reopens > 0) == wanted else None
    if not isinstance(arg, int) or arg < 1:
        raise ValueError(f"expected true, false or a number of reopenings from 1, got {arg!r}")
    least = arg

    def test(facts: Facts) -> str | None:
        count = facts.mail.reopens
        return f"reopening number {count}" if count >= least else None

    return test


# -- the decision so far ----------------------------------------------------------


def category_is(arg: object) -> Predicate:
    wanted = frozenset(strings(arg, "a category"))
    return lambda facts: facts.category if facts.category in wanted else None


def priority_is(arg: object) -> Predicate:
    wanted = frozenset(p.lower() for p in strings(arg, "a priority"))
    unknown = sorted(wanted - set(PRIORITIES))
    if unknown:
        raise ValueError(f"unknown priority {unknown[0]!r} (use {', '.join(PRIORITIES)})")
    return lambda facts: facts.priority if facts.priority in wanted else None


def always(arg: object) -> Predicate:
    if arg is not True:
        raise ValueError("expected true")
    return lambda facts: "always"


#: Every condition id of ``rules.yaml`` and the factory that compiles its argument.
CONDITIONS: Final[Mapping[str, ConditionFactory]] = {
    "from-address": from_address,
    "from-domain": from_domain,
    "to-address": to_address,
    "customer-new": customer_new,
    "customer-in": customer_in,
    "subject-contains": subject_contains,
    "body-contains": body_contains,
    "text-contains": text_contains,
    "subject-matches": subject_matches,
    "body-matches": body_matches,
    "text-matches": text_matches,
    "header-present": header_present,
    "header-matches": header_matches,
    "has-attachment": has_attachment,
    "attachment-type": attachment_type,
    "time-between": time_between,
    "weekday-in": weekday_in,
    "mail-class": mail_class,
    "is-new-ticket": is_new_ticket,
    "is-reply": is_reply,
    "reopens-ticket": reopens_ticket,
    "category-is": category_is,
    "priority-is": priority_is,
    "always": always,
}
