"""Run a :class:`RuleSet` over one mail: a pure function from facts to a decision.

Rules run in file order. A rule whose ``when`` holds (or that has none) applies
its actions in the order written; a later rule overrides an earlier one's
category, subcategory, priority, assignee or team, while tags and escalations
add up. A matching rule with ``stop: true`` (or the ``stop`` action) ends the
run. Every rule gets an :class:`Outcome`, so a dry run and the stored hits can
say exactly why a ticket got its category, priority and assignee.

Nothing is set by default except what :data:`DEFAULT_CATEGORY`,
:data:`DEFAULT_SUBCATEGORY` and :data:`DEFAULT_PRIORITY` give when no rule set
a category or a priority (the default ``rules.yaml`` sets both explicitly).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, NamedTuple

from mailbot.rules.actions import Draft
from mailbot.rules.conditions import Facts, RuleInput
from mailbot.rules.schema import Condition, RuleSet

DEFAULT_CATEGORY: Final = "other"
DEFAULT_SUBCATEGORY: Final = "general"
DEFAULT_PRIORITY: Final = "medium"


class Verdict(enum.StrEnum):
    matched = "matched"
    missed = "missed"
    disabled = "disabled"
    skipped = "skipped"  # an earlier matching rule stopped the run


class Outcome(NamedTuple):
    """What one rule did with one mail, for ``rules test`` and the stored hits."""

    rule_id: str
    line: int
    verdict: Verdict
    explanation: str
    actions: tuple[str, ...] = ()

    @property
    def matched(self) -> bool:
        return self.verdict is Verdict.matched


@dataclass(frozen=True, slots=True)
class Decision:
    """The result of the rules for one mail.

    ``assignee`` is an agent address set by an ``assign`` action; ``team`` is
    set by ``assign: team:<name>`` and means "let routing pick a member". When
    both are None the caller routes by category. ``spam`` mail is kept but gets
    no acknowledgement or auto-reply and stays out of the queue.
    """

    category: str
    subcategory: str | None
    priority: str
    assignee: str | None
    team: str | None
    tags: tuple[str, ...]
    escalations: tuple[str, ...]
    auto_reply: str | None
    spam: bool
    outcomes: tuple[Outcome, ...]

    @property
    def hits(self) -> tuple[str, ...]:
        """The ids of the rules that matched, in order."""
        return tuple(o.rule_id for o in self.outcomes if o.matched)


_MATCHED, _MISSED = Verdict.matched, Verdict.missed
_new_outcome = tuple.__new__  # NamedTuple construction without a Python-level __new__


def evaluate(
    rules: RuleSet,
    mail: RuleInput,
    *,
    explain: bool = True,
    default_category: str = DEFAULT_CATEGORY,
    default_priority: str = DEFAULT_PRIORITY,
) -> Decision:
    """Run ``rules`` over ``mail`` (pure: no I/O, no clock, no randomness).

    With ``explain`` (the default) every rule's outcome is recorded, for
    ``mailbot rules test``; the pipeline passes ``explain=False`` and gets only
    the matched rules, which is what it stores, at a fraction of the cost.
    The defaults apply where no rule set a category or priority (the
    ``tickets.default_*`` settings); the default category's subcategory is
    ``general`` for ``other`` and none otherwise.
    """
    facts = Facts(mail)
    draft = Draft()
    outcomes: list[Outcome] = []
    add = outcomes.append
    stopped_by: str | None = None
    for rule in rules.rules:
        if stopped_by is not None:
            if not explain:
                break
            why = f"not run: {stopped_by} stopped"
            add(Outcome(rule.id, rule.line, Verdict.skipped, why))
            continue
        if not rule.enabled:
            if explain:
                add(Outcome(rule.id, rule.line, Verdict.disabled, "enabled: false"))
            continue
        when = rule.when
        if when is None:
            hit: str | None = "always"
        elif type(when) is Condition:  # the common case, one call less
            found = when.predicate(facts)
            if found is None:
                if explain:
                    add(_new_outcome(Outcome, (rule.id, rule.line, _MISSED, when.label, ())))
                continue
            hit = f"{when.id}: {found}"
        else:
            hit = when.check(facts)
        if hit is None:
            if explain:
                add(_new_outcome(Outcome, (rule.id, rule.line, _MISSED, facts.miss, ())))
            continue
        for action in rule.then:
            action.apply(draft)
        facts.category, facts.priority = draft.category, draft.priority
        add(Outcome(rule.id, rule.line, _MATCHED, hit, tuple(a.label for a in rule.then)))
        if rule.stop or draft.stop:
            stopped_by = rule.id
    category = draft.category or default_category
    if draft.category:
        subcategory = draft.subcategory
    else:
        subcategory = DEFAULT_SUBCATEGORY if default_category == DEFAULT_CATEGORY else None
    return Decision(
        category=category,
        subcategory=subcategory,
        priority=draft.priority or default_priority,
        assignee=draft.assignee,
        team=draft.team,
        tags=tuple(draft.tags),
        escalations=tuple(draft.escalations),
        auto_reply=draft.auto_reply,
        spam=draft.spam,
        outcomes=tuple(outcomes),
    )


def explain(decision: Decision) -> str:
    """A plain-text report of a decision: one line per rule, then the result."""
    lines = []
    for o in decision.outcomes:
        mark = {"matched": "+", "missed": "-", "disabled": "~", "skipped": " "}[o.verdict]
        done = f"  => {', '.join(o.actions)}" if o.actions else ""
        lines.append(f"{mark} {o.rule_id} (line {o.line}): {o.verdict}: {o.explanation}{done}")
    sub = f"/{decision.subcategory}" if decision.subcategory else ""
    lines += [
        f"category: {decision.category}{sub}",
        f"priority: {decision.priority}",
        f"assignee: {decision.assignee or '-'}",
        f"team: {decision.team or '-'}",
        f"tags: {', '.join(decision.tags) or '-'}",
        f"escalations: {'; '.join(decision.escalations) or '-'}",
        f"auto-reply: {decision.auto_reply or '-'}",
        f"spam: {'yes' if decision.spam else 'no'}",
    ]
    return "\n".join(lines)
