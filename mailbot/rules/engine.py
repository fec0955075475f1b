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

from dataclasses import dataclass
from typing import Final, cast

from mailbot.rules.actions import Draft
from mailbot.rules.facts import Facts, RuleInput
from mailbot.rules.outcome import Outcome, Verdict
from mailbot.rules.schema import Condition, Rule, RuleSet

__all__ = [
    "DEFAULT_CATEGORY",
    "DEFAULT_PRIORITY",
    "DEFAULT_SUBCATEGORY",
    "Decision",
    "Outcome",
    "Verdict",
    "evaluate",
    "explain",
]

DEFAULT_CATEGORY: Final = "other"
DEFAULT_SUBCATEGORY: Final = "general"
DEFAULT_PRIORITY: Final = "medium"


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

    Only the rules the index finds possible for this mail are tested (see
    ``rules/index.py``); the others miss, with the explanation a test would give.
    """
    facts = Facts(mail)
    draft = Draft()
    ordered = rules.rules
    index = rules.index
    if not explain:
        hits: list[Outcome] = []
        for position in index.candidates(facts):
            rule = ordered[position]
            hit = _check(rule, facts)
            if hit is not None:
                hits.append(_apply(rule, hit, draft, facts))
                if rule.stop or draft.stop:
                    break
        return _decide(draft, hits, default_category, default_priority)
    # Every rule the index rules out already has its outcome (missed, disabled);
    # the others are tested in order.
    outcomes: list[Outcome | None] = list(rules.unmet)
    tested = set(index.candidates(facts, strict=False))
    tested.update(rules.untold)
    for position in sorted(tested):
        rule = ordered[position]
        hit = _check(rule, facts)
        if hit is None:
            why = rule.when.label if type(rule.when) is Condition else facts.miss
            outcomes[position] = _new_outcome(Outcome, (rule.id, rule.line, _MISSED, why, ()))
            continue
        outcomes[position] = _apply(rule, hit, draft, facts)
        if rule.stop or draft.stop:
            why = f"not run: {rule.id} stopped"
            later = ordered[position + 1 :]
            outcomes[position + 1 :] = [Outcome(r.id, r.line, Verdict.skipped, why) for r in later]
            break
    # Every place is filled now: the ruled-out rules from the start, the others tested.
    return _decide(draft, cast("list[Outcome]", outcomes), default_category, default_priority)


def _check(rule: Rule, facts: Facts) -> str | None:
    """Why the rule's ``when`` holds, or None."""
    when = rule.when
    if when is None:
        return "always"
    if type(when) is Condition:  # the common case, one call less
        found = when.predicate(facts)
        return None if found is None else f"{when.id}: {found}"
    return when.check(facts)


def _apply(rule: Rule, hit: str, draft: Draft, facts: Facts) -> Outcome:
    for action in rule.then:
        action.apply(draft)
    facts.category, facts.priority = draft.category, draft.priority
    return Outcome(rule.id, rule.line, _MATCHED, hit, rule.labels)


def _decide(
    draft: Draft, outcomes: list[Outcome], default_category: str, default_priority: str
) -> Decision:
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
