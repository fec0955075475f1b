"""The rules engine: ``rules.yaml`` to a decision per mail, explainably and without I/O.

The caller reads the file and passes its text::

    rules = load_rules(text, source=str(path), directory=Directory(agents, teams))
    decision = evaluate(rules, RuleInput(msg, recipients, is_new_ticket, ...))
    decision.category, decision.priority, decision.hits, explain(decision)

``load_rules`` raises :class:`RulesError` (a ``ConfigError``) listing every
problem with its rule id, field and line. See ``docs/rules.md``.
"""

from mailbot.rules.actions import ACTIONS, CATEGORIES, Directory
from mailbot.rules.conditions import CONDITIONS, MAIL_CLASSES, PRIORITIES, RuleInput
from mailbot.rules.engine import (
    DEFAULT_CATEGORY,
    DEFAULT_PRIORITY,
    DEFAULT_SUBCATEGORY,
    Decision,
    Outcome,
    Verdict,
    evaluate,
    explain,
)
from mailbot.rules.schema import Rule, RuleProblem, RulesError, RuleSet, load_rules, reload_rules

__all__ = [
    "ACTIONS",
    "CATEGORIES",
    "CONDITIONS",
    "DEFAULT_CATEGORY",
    "DEFAULT_PRIORITY",
    "DEFAULT_SUBCATEGORY",
    "MAIL_CLASSES",
    "PRIORITIES",
    "Decision",
    "Directory",
    "Outcome",
    "Rule",
    "RuleInput",
    "RuleProblem",
    "RuleSet",
    "RulesError",
    "Verdict",
    "evaluate",
    "explain",
    "load_rules",
    "reload_rules",
]
