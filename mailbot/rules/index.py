"""Which rules can match a mail: one look-up per mail for all rules, not one test per rule.

Most rules of a real file do not match most mail, and each rule's conditions
say what they need to hold (:data:`~mailbot.rules.matching.Needs`: a keyword's
word, a regex's fixed words, a header name, a domain...). The index turns the
needs of every rule into token ids once, when the rules are loaded. Per mail it
intersects the words of the subject and the body, the header names, the
sender and the recipients with those tokens (C-level set operations and one
binary search per word start), and returns the rules whose needs are met, in
file order. Only those are tested; the others cannot match.

A rule without known needs (a time window, ``category-is``, ``not``...) is
always tested. The index only skips work: a rule it returns is tested exactly
as before, so the outcome and its explanation are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, repeat
from typing import NamedTuple

from mailbot.rules.facts import Facts
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
    PrefixTable,
    Token,
)

_PREFIX_KINDS = frozenset({SUBJECT_PREFIX, BODY_PREFIX})


class Gate(NamedTuple):
    """What the index knows of one rule.

    ``needs`` None: always tested. ``unmet``: the explanation of a miss on a mail
    without the needs, None when it depends on the mail (then the rule is
    tested when every outcome is wanted). ``also``: more needs that must all be
    met as well (the other conditions of an ``all``); a mail without them cannot
    match either, but which condition fails first depends on the mail.
    """

    enabled: bool
    needs: Needs | None
    unmet: str | None
    also: tuple[Needs, ...] = ()


def _rank(token: Token) -> tuple[bool, int]:
    """Rarer tokens rank higher: whole words before word starts, long before short."""
    kind, value = token
    return kind not in _PREFIX_KINDS, len(value)


class RuleIndex:
    """The needs of a rule set's rules as token ids, for :meth:`candidates`."""

    __slots__ = (
        "also",
        "always",
        "body_prefixes",
        "body_words",
        "by_token",
        "domains",
        "gates",
        "headers",
        "recipients",
        "senders",
        "subject_prefixes",
        "subject_words",
        "with_others",
    )

    def __init__(self, gates: Sequence[Gate]) -> None:
        self.gates = tuple(gates)
        ids: dict[Token, int] = {}

        def token_id(token: Token) -> int:
            return ids.setdefault(token, len(ids))

        always: list[int] = []
        by_token: dict[int, list[int]] = {}
        with_others: dict[int, list[tuple[int, frozenset[int]]]] = {}
        also: dict[int, tuple[tuple[frozenset[int], ...], ...]] = {}
        for position, gate in enumerate(self.gates):
            if not gate.enabled:
                continue
            if gate.needs is None:
                always.append(position)
                continue
            if gate.also:
                also[position] = tuple(
                    tuple(frozenset(map(token_id, alt)) for alt in needs) for needs in gate.also
                )
            for alternative in gate.needs:
                # Filed under its rarest token; the others are checked when it is present.
                key = max(sorted(alternative), key=_rank)
                others = frozenset(token_id(t) for t in alternative if t != key)
                if others:
                    with_others.setdefault(token_id(key), []).append((position, others))
                else:
                    by_token.setdefault(token_id(key), []).append(position)
        self.always = tuple(always)
        self.also = also
        self.by_token = {token: tuple(dict.fromkeys(rules)) for token, rules in by_token.items()}
        self.with_others = {token: tuple(rules) for token, rules in with_others.items()}

        def table(kind: str) -> dict[str, int]:
            return {value: token for (k, value), token in ids.items() if k == kind}

        self.subject_words = table(SUBJECT_WORD)
        self.subject_prefixes = PrefixTable(table(SUBJECT_PREFIX))
        self.body_words = table(BODY_WORD)
        self.body_prefixes = PrefixTable(table(BODY_PREFIX))
        self.headers = table(HEADER)
        self.senders = table(SENDER)
        self.domains = table(DOMAIN)
        self.recipients = table(RECIPIENT)

    def present(self, facts: Facts) -> set[int]:
        """The ids of the tokens this mail has."""
        found: set[int] = set()
        add = found.update
        if self.subject_words or self.subject_prefixes.ids:
            subject = facts.subject
            words = self.subject_words
            add(map(words.__getitem__, words.keys() & subject.words))
            add(subject.starting(self.subject_prefixes))
        if self.body_words or self.body_prefixes.ids:
            body = facts.body
            words = self.body_words
            add(map(words.__getitem__, words.keys() & body.words))
            add(body.starting(self.body_prefixes))
        if self.headers:
            add(map(self.headers.__getitem__, self.headers.keys() & facts.headers.keys()))
        if self.recipients:
            add(map(self.recipients.__getitem__, self.recipients.keys() & facts.recipients))
        sender = facts.sender
        if sender and self.senders and sender in self.senders:
            found.add(self.senders[sender])
        if sender and self.domains:
            # The domain and every domain it is under: a.b.example, b.example, example.
            parts = facts.sender_domain.split(".")
            suffixes = {".".join(parts[i:]) for i in range(len(parts))}
            add(map(self.domains.__getitem__, self.domains.keys() & suffixes))
        return found

    def candidates(self, facts: Facts, *, strict: bool = True) -> list[int]:
        """The positions of the enabled rules that may match this mail, in file order.

        ``strict`` also drops the rules that meet their ``needs`` but not their
        ``also``: they cannot match, but the explanation of their miss is only
        known by testing them, so an explaining caller passes False.
        """
        present = self.present(facts)
        found = set(self.always)
        found.update(chain.from_iterable(map(self.by_token.get, present, repeat(()))))
        with_others = self.with_others
        for token in with_others.keys() & present:
            for position, others in with_others[token]:
                if others <= present:
                    found.add(position)
        if strict and self.also:
            also = self.also
            for position in found & also.keys():
                for needs in also[position]:
                    if not any(alt <= present for alt in needs):
                        found.discard(position)
                        break
        return sorted(found)
