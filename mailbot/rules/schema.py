"""``rules.yaml`` text to typed, compiled rules: every key declared, every problem named.

The file is an ordered list of rules::

    - id: platform-down            # kebab-case, unique
      description: optional text
      enabled: true                # optional, default true
      when:                        # optional (no when: always matches)
        any:                       # all: [...] | any: [...] | not: {...} | one condition
          - subject-contains: [недоступ*, "not available"]
          - body-matches: 'HTTP 5\\d\\d'
      then:                        # a mapping of action ids (or a list of one-key mappings)
        set-priority: critical
        escalate: platform unavailable
      stop: true                   # optional: no later rule runs

:func:`load_rules` parses with PyYAML's composer so that every node keeps its
line, checks everything, and raises one :class:`RulesError` listing *all* the
problems (rule id, field path, line), or returns a :class:`RuleSet` whose
keywords, regular expressions and time zones are compiled once, with a
:class:`~mailbot.rules.index.RuleIndex` of what each rule needs in a mail.

Scalars follow YAML 1.2: only ``true`` and ``false`` are booleans (``no`` or
``on`` stay words) and ``18:00`` is a string, not the YAML 1.1 sexagesimal
number 1080.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import yaml

from mailbot.errors import ConfigError
from mailbot.rules.actions import ACTIONS, Apply, Directory
from mailbot.rules.conditions import CONDITIONS, Facts, Gated, Predicate
from mailbot.rules.index import Gate, RuleIndex
from mailbot.rules.matching import Needs
from mailbot.rules.outcome import Outcome, Verdict

RULE_KEYS: Final = ("id", "description", "enabled", "when", "then", "stop")
GROUPS: Final = ("all", "any", "not")
_RULE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,79}")


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars (see the module docstring)."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regex)
        for tag, regex in resolvers
        if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """One thing wrong with the rules file; ``rule_id`` is None outside a rule."""

    line: int
    rule_id: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"rule {self.rule_id!r}" if self.rule_id else "file"
        field = f" {self.field}:" if self.field else ""
        return f"line {self.line}: {where}:{field} {self.message}"


class RulesError(ConfigError):
    """The rules file is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[RuleProblem], source: str = "rules.yaml") -> None:
        self.problems = tuple(problems)
        self.source = source
        lines = "\n".join(f"{source}: {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in {source}:\n{lines}")


# -- compiled rules ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition id with its compiled argument.

    ``needs`` is what the mail must have for it to hold (None: not known).
    """

    id: str
    label: str
    line: int
    predicate: Predicate
    needs: Needs | None = None

    def check(self, facts: Facts) -> str | None:
        """Why it holds, or None (then ``facts.miss`` names this condition)."""
        found = self.predicate(facts)
        if found is None:
            facts.miss = self.label
            return None
        return f"{self.id}: {found}"

    def unmet(self) -> str | None:
        """What :meth:`check` leaves in ``facts.miss`` on a mail without its ``needs``."""
        return self.label


@dataclass(frozen=True, slots=True)
class Group:
    """``all``, ``any`` or ``not`` over nested conditions.

    ``needs``: for ``all`` those of its first child with known needs; for
    ``any`` those of every child (when all are known); ``not`` has none.
    """

    kind: str
    children: tuple[Condition | Group, ...]
    label: str
    needs: Needs | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        needs = [child.needs for child in self.children]
        if self.kind == "all":
            found = next((n for n in needs if n is not None), None)
        elif self.kind == "any" and None not in needs:
            found = tuple(alt for n in needs if n is not None for alt in n)
        else:
            found = None
        object.__setattr__(self, "needs", found)

    def unmet(self) -> str | None:
        """What :meth:`check` leaves in ``facts.miss`` on a mail without ``needs``.

        None when that depends on the mail: an ``all`` whose needs come from a
        later child fails on whichever child fails first.
        """
        if self.needs is None:
            return None
        if self.kind == "all":
            first = self.children[0]
            return first.unmet() if first.needs is not None else None
        return f"none of {self.label}"

    def check(self, facts: Facts) -> str | None:
        if self.kind == "all":
            found: list[str] = []
            for child in self.children:
                hit = child.check(facts)
                if hit is None:
                    return None
                found.append(hit)
            return "; ".join(found)
        if self.kind == "any":
            for child in self.children:
                hit = child.check(facts)
                if hit is not None:
                    return hit
            facts.miss = f"none of {self.label}"
            return None
        hit = self.children[0].check(facts)
        if hit is None:
            return f"not ({facts.miss})"
        facts.miss = f"not: {hit}"
        return None


@dataclass(frozen=True, slots=True)
class Action:
    id: str
    label: str
    apply: Apply


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    line: int
    when: Condition | Group | None
    then: tuple[Action, ...]
    stop: bool = False
    enabled: bool = True
    description: str = ""
    #: The labels of ``then``, for the outcome of a match.
    labels: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(action.label for action in self.then))


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The compiled rules of one file, in file order, and their index.

    ``unmet`` holds each rule's outcome when the index rules it out (disabled,
    or missed with the explanation a test would give); None where only a test
    can explain a miss, and ``untold`` lists those rules.
    """

    rules: tuple[Rule, ...]
    source: str = "rules.yaml"
    index: RuleIndex = field(init=False, repr=False, compare=False)
    unmet: tuple[Outcome | None, ...] = field(init=False, repr=False, compare=False)
    untold: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        gates = [_gate(rule) for rule in self.rules]
        unmet = tuple(_unmet(rule, gate) for rule, gate in zip(self.rules, gates, strict=True))
        object.__setattr__(self, "index", RuleIndex(gates))
        object.__setattr__(self, "unmet", unmet)
        object.__setattr__(self, "untold", tuple(i for i, o in enumerate(unmet) if o is None))

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(rule.id for rule in self.rules)


def _gate(rule: Rule) -> Gate:
    when = rule.when
    if when is None or when.needs is None:
        return Gate(rule.enabled, None, None)
    also: tuple[Needs, ...] = ()
    if isinstance(when, Group) and when.kind == "all":
        # Every condition of an all must hold: the needs of the others count too.
        gated = [child.needs for child in when.children if child.needs is not None]
        also = tuple(gated[1:])
    return Gate(rule.enabled, when.needs, when.unmet(), also)


def _unmet(rule: Rule, gate: Gate) -> Outcome | None:
    if not rule.enabled:
        return Outcome(rule.id, rule.line, Verdict.disabled, "enabled: false")
    if gate.unmet is None:
        return None
    return Outcome(rule.id, rule.line, Verdict.missed, gate.unmet)


# -- loading ----------------------------------------------------------------------


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _short(value: object, limit: int = 60) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    text = f"[{text}]" if isinstance(value, list) else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hint(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Compiler:
    def __init__(self, loader: _Loader, directory: Directory) -> None:
        self.loader = loader
        self.directory = directory
        self.problems: list[RuleProblem] = []
        self.rule_id: str | None = None

    def problem(self, node: yaml.Node, field: str, message: str) -> None:
        self.problems.append(RuleProblem(_line(node), self.rule_id, field, message))

    def value(self, node: yaml.Node, field: str) -> tuple[bool, object]:
        try:
            return True, self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.problem(node, field, f"cannot read the value: {exc}")
            return False, None

    def pairs(self, node: yaml.MappingNode, field: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """The keys of a mapping as strings, reporting duplicates."""
        seen: set[str] = set()
        out: list[tuple[str, yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            name = f"{field}.{key}" if field else key
            if key in seen:
                self.problem(key_node, name, f"duplicate key {key!r}")
                continue
            seen.add(key)
            out.append((key, key_node, value_node))
        return out

    def rule(self, node: yaml.Node, index: int) -> Rule | None:
        self.rule_id = None
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"[{index}]", "a rule must be a mapping with id, when and then")
            return None
        fields = {key: (k, v) for key, k, v in self.pairs(node, "")}
        id_node = fields.get("id", (None, None))[1]
        if id_node is None:
            self.rule_id = f"#{index + 1}"
            self.problem(node, "id", "missing rule id")
        elif not isinstance(id_node, yaml.ScalarNode) or not _RULE_ID.fullmatch(id_node.value):
            self.rule_id = f"#{index + 1}"
            self.problem(id_node, "id", "a rule id is kebab-case: a-z, 0-9 and '-'")
        else:
            self.rule_id = id_node.value
        for key, (key_node, _) in fields.items():
            if key not in RULE_KEYS:
                hint = _hint(key, RULE_KEYS)
                self.problem(key_node, key, f"unknown key{hint}; a rule has {', '.join(RULE_KEYS)}")
        when = None
        if "when" in fields:
            when = self.condition(fields["when"][1], "when")
        then: tuple[Action, ...] = ()
        if "then" in fields:
            then = self.actions(fields["then"][1])
        stop = self.flag(fields, "stop", False)
        enabled = self.flag(fields, "enabled", True)
        description = ""
        if "description" in fields:
            ok, text = self.value(fields["description"][1], "description")
            if ok and not isinstance(text, str):
                self.problem(fields["description"][1], "description", "expected text")
            description = text if isinstance(text, str) else ""
        if "then" not in fields and not stop:
            self.problem(node, "then", "a rule needs then (actions) or stop: true")
        return Rule(str(self.rule_id), _line(node), when, then, stop, enabled, description)

    def flag(self, fields: dict[str, tuple[yaml.Node, yaml.Node]], key: str, default: bool) -> bool:
        if key not in fields:
            return default
        ok, value = self.value(fields[key][1], key)
        if ok and not isinstance(value, bool):
            self.problem(fields[key][1], key, f"expected true or false, got {value!r}")
            return default
        return bool(value)

    def condition(self, node: yaml.Node, field: str) -> Condition | Group | None:
        if isinstance(node, yaml.SequenceNode):
            return self.group("all", node, field)
        if not isinstance(node, yaml.MappingNode) or len(node.value) != 1:
            message = "expected one condition, or all/any/not, as a one-key mapping"
            self.problem(node, field, message)
            return None
        key_node, value_node = node.value[0]
        key = str(key_node.value)
        if key in ("all", "any"):
            return self.group(key, value_node, f"{field}.{key}")
        if key == "not":
            inner = self.condition(value_node, f"{field}.not")
            return None if inner is None else Group("not", (inner,), f"not ({inner.label})")
        path = f"{field}.{key}"
        factory = CONDITIONS.get(key)
        if factory is None:
            hint = _hint(key, [*CONDITIONS, *GROUPS])
            self.problem(key_node, path, f"unknown condition {key!r}{hint}")
            return None
        ok, arg = self.value(value_node, path)
        if not ok:
            return None
        try:
            predicate = factory(arg)
        except ValueError as exc:
            self.problem(value_node, path, str(exc))
            return None
        needs = None
        if isinstance(predicate, Gated):
            needs = predicate.needs
            predicate = predicate.test
        return Condition(key, f"{key} {_short(arg)}", _line(key_node), predicate, needs)

    def group(self, kind: str, node: yaml.Node, field: str) -> Condition | Group | None:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.problem(node, field, f"{kind} needs a non-empty list of conditions")
            return None
        children = [self.condition(child, f"{field}[{i}]") for i, child in enumerate(node.value)]
        kept = tuple(c for c in children if c is not None)
        if len(kept) != len(children):
            return None
        if len(kept) == 1:
            return kept[0]
        return Group(kind, kept, f"{kind}[{', '.join(c.label for c in kept)}]")

    def actions(self, node: yaml.Node) -> tuple[Action, ...]:
        items: list[tuple[str, yaml.Node, yaml.Node]] = []
        if isinstance(node, yaml.MappingNode):
            items = self.pairs(node, "then")
        elif isinstance(node, yaml.SequenceNode):
            for i, child in enumerate(node.value):
                if not isinstance(child, yaml.MappingNode) or len(child.value) != 1:
                    self.problem(child, f"then[{i}]", "expected one action as a one-key mapping")
                    continue
                key_node, value_node = child.value[0]
                items.append((str(key_node.value), key_node, value_node))
        else:
            self.problem(node, "then", "expected a mapping of actions (action-id: argument)")
        out: list[Action] = []
        for key, key_node, value_node in items:
            path = f"then.{key}"
            factory = ACTIONS.get(key)
            if factory is None:
                self.problem(key_node, path, f"unknown action {key!r}{_hint(key, list(ACTIONS))}")
                continue
            ok, arg = self.value(value_node, path)
            if not ok:
                continue
            try:
                out.append(Action(key, f"{key} {_short(arg)}", factory(arg, self.directory)))
            except ValueError as exc:
                self.problem(value_node, path, str(exc))
        return tuple(out)


def load_rules(text: str, *, source: str = "rules.yaml", directory: Directory) -> RuleSet:
    """Compile the rules in ``text`` (the file's content; ``source`` names it in errors).

    Raises :class:`RulesError` with every problem found: YAML syntax, unknown
    keys, unknown condition or action ids, bad arguments (regular expressions,
    keywords, times, categories...), agents, teams or templates missing from
    ``directory``, and duplicate rule ids.
    """
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            line = int(mark.line) + 1 if mark is not None else 1
            problem = getattr(exc, "problem", None) or str(exc)
            raise RulesError([RuleProblem(line, None, "", f"YAML: {problem}")], source) from None
        if not isinstance(root, yaml.SequenceNode):
            line = _line(root) if root is not None else 1
            raise RulesError([RuleProblem(line, None, "", "expected a list of rules")], source)
        compiler = _Compiler(loader, directory)
        rules: list[Rule] = []
        first_line: dict[str, int] = {}
        for index, node in enumerate(root.value):
            rule = compiler.rule(node, index)
            if rule is None:
                continue
            if rule.id in first_line and not rule.id.startswith("#"):
                compiler.problem(
                    node, "id", f"duplicate rule id (first used on line {first_line[rule.id]})"
                )
            first_line.setdefault(rule.id, rule.line)
            rules.append(rule)
    finally:
        loader.dispose()
    if compiler.problems:
        raise RulesError(sorted(compiler.problems, key=lambda p: p.line), source)
    return RuleSet(tuple(rules), source)


def reload_rules(
    previous: RuleSet, text: str, *, source: str = "rules.yaml", directory: Directory
) -> tuple[RuleSet, RulesError | None]:
    """Compile new rules for a reload (SIGHUP or a file change), keeping the last good ones.

    Returns the new rules and None, or ``previous`` and the error for the
    caller to log: a broken edit never leaves the daemon without rules.
    """
    try:
        return load_rules(text, source=source, directory=directory), None
    except RulesError as exc:
        return previous, exc
