"""Validation of rules.yaml: every problem names the rule id, the field and the line."""

from __future__ import annotations

import pytest

from mailbot.errors import ConfigError
from mailbot.rules import Directory, RulesError, load_rules, reload_rules

DIRECTORY = Directory(
    agents=frozenset({"anna@example.com"}),
    teams=frozenset({"billing"}),
    templates=frozenset({"welcome"}),
)


def problems(text: str):
    with pytest.raises(RulesError) as info:
        load_rules(text, source="rules.yaml", directory=DIRECTORY)
    return info.value.problems


GOOD = """\
- id: ok
  when: {subject-contains: [hello]}
  then: {set-priority: low}
"""

# (yaml, rule id, field, line, words of the message)
CASES = [
    (
        "- id: a\n  when: {always: true}\n  then: {set-priority: low}\n  colour: red\n",
        "a",
        "colour",
        4,
        "unknown key",
    ),
    (
        "- id: a\n  when: {subject-contans: [x]}\n  then: {stop: true}\n",
        "a",
        "when.subject-contans",
        2,
        "unknown condition 'subject-contans' (did you mean",
    ),
    ("- id: a\n  then:\n    set-prio: low\n", "a", "then.set-prio", 3, "unknown action"),
    (
        "- id: a\n  when:\n    all:\n      - body-matches: '(unclosed'\n  then: {stop: true}\n",
        "a",
        "when.all[0].body-matches",
        4,
        "bad regular expression",
    ),
    ("- id: a\n  then: {assign: bob@example.com}\n", "a", "then.assign", 2, "unknown agent"),
    ("- id: a\n  then: {assign: 'team:sales'}\n", "a", "then.assign", 2, "unknown team"),
    (
        "- id: a\n  then: {auto-reply: nope}\n",
        "a",
        "then.auto-reply",
        2,
        "unknown auto-reply template",
    ),
    (GOOD + GOOD, "ok", "id", 4, "duplicate rule id (first used on line 1)"),
    ("- id: Bad_Id\n  then: {stop: true}\n", "#1", "id", 1, "kebab-case"),
    ("- when: {always: true}\n  then: {stop: true}\n", "#1", "id", 1, "missing rule id"),
    ("- id: a\n  when: {always: true}\n", "a", "then", 1, "needs then"),
    ("- id: a\n  then: {add-tags: x}\n  stop: maybe\n", "a", "stop", 3, "expected true or false"),
    ("- id: a\n  when: {any: []}\n  then: {stop: true}\n", "a", "when.any", 2, "non-empty list"),
    (
        "- id: a\n  when: {from-domain: x.org, is-reply: true}\n  then: {stop: true}\n",
        "a",
        "when",
        2,
        "one condition",
    ),
    (
        "- id: a\n  when:\n    not:\n      time-between: {start: '9', end: '10:00'}\n"
        "  then: {stop: true}\n",
        "a",
        "when.not.time-between",
        4,
        "HH:MM",
    ),
    (
        "- id: a\n  then: {set-category: technical/printers}\n",
        "a",
        "then.set-category",
        2,
        "unknown subcategory",
    ),
    (
        "- id: a\n  then: {set-priority: low, set-priority: high}\n",
        "a",
        "then.set-priority",
        2,
        "duplicate key",
    ),
]


@pytest.mark.parametrize(("text", "rule_id", "field", "line", "words"), CASES)
def test_each_problem_names_rule_field_and_line(text, rule_id, field, line, words):
    found = problems(text)
    assert len(found) == 1, found
    problem = found[0]
    assert (problem.rule_id, problem.field, problem.line) == (rule_id, field, line)
    assert words in problem.message
    assert f"line {line}" in str(problem)


def test_all_problems_are_collected_in_one_error():
    text = (
        "- id: a\n  when: {nope: 1}\n  then: {set-priority: urgent}\n"
        "- id: b\n  then: {assign: 'team:x'}\n  extra: 1\n"
    )
    with pytest.raises(RulesError) as info:
        load_rules(text, source="custom.yaml", directory=DIRECTORY)
    assert [(p.rule_id, p.line) for p in info.value.problems] == [
        ("a", 2),
        ("a", 3),
        ("b", 5),
        ("b", 6),
    ]
    assert isinstance(info.value, ConfigError)
    assert str(info.value).startswith("4 problem(s) in custom.yaml")
    assert "custom.yaml: line 6: rule 'b': extra: unknown key" in str(info.value)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [("- id: a\n  then: [unclosed\n", 3, "YAML"), ("id: a\n", 1, "list of rules"), ("", 1, "list")],
)
def test_file_level_problems(text, line, words):
    found = problems(text)
    assert found[0].rule_id is None
    assert found[0].line == line
    assert words in found[0].message


def test_yaml_12_scalars():
    rules = load_rules(
        "- id: a\n  when:\n    all:\n      - time-between: {start: 9:30, end: 18:00}\n"
        "      - subject-contains: [no, on, yes]\n  then: {stop: true}\n",
        directory=DIRECTORY,
    )
    assert rules.ids == ("a",)


def test_a_valid_file_compiles_in_order():
    rules = load_rules(GOOD + GOOD.replace("ok", "second"), directory=DIRECTORY)
    assert rules.ids == ("ok", "second")
    assert len(rules) == 2
    assert rules.rules[1].line == 4


def test_reload_with_a_broken_file_keeps_the_old_rules():
    old = load_rules(GOOD, directory=DIRECTORY)
    kept, error = reload_rules(
        old, "- id: ok\n  when: {bogus: 1}\n  stop: true\n", directory=DIRECTORY
    )
    assert kept is old
    assert error is not None
    assert error.problems[0].field == "when.bogus"
    new, error = reload_rules(old, GOOD.replace("low", "high"), directory=DIRECTORY)
    assert error is None
    assert new is not old
