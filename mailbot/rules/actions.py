"""Rule actions: what a matching rule does to the decision being built.

Each entry of :data:`ACTIONS` maps a kebab-case id (as written in
``rules.yaml``) to a *factory*: it takes the argument from the file and the
:class:`Directory` of known agents, teams and templates, checks and compiles the
argument once (raising :class:`ValueError` with a message for the operator) and
returns an :data:`Apply` that changes a :class:`Draft`. Later rules override
what earlier ones set (category, priority, assignee); tags and escalations add
up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from mailbot.rules.conditions import PRIORITIES

#: The spec's categories and their subcategories, in the spec's order.
CATEGORIES: Final[Mapping[str, tuple[str, ...]]] = {
    "technical": ("connector_errors", "api", "integration", "interface", "performance"),
    "usage": ("connector_setup", "scenarios", "features", "best_practices", "limits"),
    "account": ("access", "subscriptions", "billing", "users", "security"),
    "feature_request": (
        "new_features",
        "new_connectors",
        "improvements",
        "documentation",
        "interface",
    ),
    "other": ("general", "partnership", "feedback", "training"),
}
TEAM_PREFIX: Final = "team:"
_TAG = re.compile(r"[\w][\w.:/-]{0,63}")


@dataclass(frozen=True, slots=True)
class Directory:
    """What rules may refer to, as the caller knows it (from the settings).

    ``agents`` are addresses (compared in lower case), ``teams`` names;
    ``templates`` is None when auto-reply template names are not checked.
    """

    agents: frozenset[str] = frozenset()
    teams: frozenset[str] = frozenset()
    templates: frozenset[str] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "agents", frozenset(a.lower() for a in self.agents))


@dataclass(slots=True)
class Draft:
    """The decision while the rules run (mutable; the engine freezes it)."""

    category: str | None = None
    subcategory: str | None = None
    priority: str | None = None
    assignee: str | None = None
    team: str | None = None
    tags: list[str] = field(default_factory=list)
    escalations: list[str] = field(default_factory=list)
    auto_reply: str | None = None
    spam: bool = False
    stop: bool = False


Apply = Callable[[Draft], None]
ActionFactory = Callable[[object, Directory], Apply]


def _text(arg: object, what: str) -> str:
    if not isinstance(arg, str) or not arg.strip():
        raise ValueError(f"expected {what} (a non-empty string), got {arg!r}")
    return arg.strip()


def set_category(arg: object, directory: Directory) -> Apply:
    """``technical``, ``technical/api`` or ``{category: technical, subcategory: api}``."""
    if isinstance(arg, dict):
        unknown = sorted(set(map(str, arg)) - {"category", "subcategory"})
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r} (allowed: category, subcategory)")
        category = _text(arg.get("category"), "a category")
        sub = arg.get("subcategory")
        subcategory = None if sub is None else _text(sub, "a subcategory")
    else:
        category, _, rest = _text(arg, "a category").partition("/")
        subcategory = rest or None
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r} (use {', '.join(CATEGORIES)})")
    if subcategory is not None and subcategory not in CATEGORIES[category]:
        allowed = ", ".join(CATEGORIES[category])
        raise ValueError(f"unknown subcategory {subcategory!r} of {category} (use {allowed})")

    def apply(draft: Draft) -> None:
        draft.category = category
        draft.subcategory = subcategory

    return apply


def set_priority(arg: object, directory: Directory) -> Apply:
    priority = _text(arg, "a priority").lower()
    if priority not in PRIORITIES:
        raise ValueError(f"unknown priority {priority!r} (use {', '.join(PRIORITIES)})")

    def apply(draft: Draft) -> None:
        draft.priority = priority

    return apply


def assign(arg: object, directory: Directory) -> Apply:
    """An agent's address, or ``team:<name>`` to let routing pick a member."""
    target = _text(arg, "an agent address or team:<name>")
    if target.startswith(TEAM_PREFIX):
        team = target[len(TEAM_PREFIX) :].strip()
        if team not in directory.teams:
            raise ValueError(f"unknown team {team!r}")

        def to_team(draft: Draft) -> None:
            draft.team, draft.assignee = team, None

        return to_team
    agent = target.lower()
    if agent not in directory.agents:
        raise ValueError(f"unknown agent {target!r}")

    def to_agent(draft: Draft) -> None:
        draft.assignee, draft.team = agent, None

    return to_agent


def add_tags(arg: object, directory: Directory) -> Apply:
    items = [arg] if isinstance(arg, str) else arg
    if not isinstance(items, list) or not items:
        raise ValueError("expected a tag or a list of tags")
    tags: list[str] = []
    for item in items:
        if not isinstance(item, str) or not _TAG.fullmatch(item.strip().lower()):
            raise ValueError(f"bad tag {item!r}: letters, digits and . : / - _ without spaces")
        tags.append(item.strip().lower())

    def apply(draft: Draft) -> None:
        draft.tags.extend(t for t in tags if t not in draft.tags)

    return apply


def escalate(arg: object, directory: Directory) -> Apply:
    reason = _text(arg, "a reason")

    def apply(draft: Draft) -> None:
        if reason not in draft.escalations:
            draft.escalations.append(reason)

    return apply


def auto_reply(arg: object, directory: Directory) -> Apply:
    template = _text(arg, "a template name")
    if directory.templates is not None and template not in directory.templates:
        raise ValueError(f"unknown auto-reply template {template!r}")

    def apply(draft: Draft) -> None:
        draft.auto_reply = template

    return apply


def _only_true(arg: object) -> None:
    if arg is not True:
        raise ValueError(f"expected true, got {arg!r}")


def mark_spam(arg: object, directory: Directory) -> Apply:
    _only_true(arg)

    def apply(draft: Draft) -> None:
        draft.spam = True

    return apply


def stop(arg: object, directory: Directory) -> Apply:
    _only_true(arg)

    def apply(draft: Draft) -> None:
        draft.stop = True

    return apply


#: Every action id of ``rules.yaml`` and the factory that compiles its argument.
ACTIONS: Final[Mapping[str, ActionFactory]] = {
    "set-category": set_category,
    "set-priority": set_priority,
    "assign": assign,
    "add-tags": add_tags,
    "escalate": escalate,
    "auto-reply": auto_reply,
    "mark-spam": mark_spam,
    "stop": stop,
}
