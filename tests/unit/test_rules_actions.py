"""Every rule action: what it does to the decision, through the engine, and its bad arguments."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailbot.message import Address, ParsedMessage
from mailbot.rules import ACTIONS, Directory, RuleInput, evaluate, load_rules
from mailbot.rules.actions import Draft

DIRECTORY = Directory(
    agents=frozenset({"Anna@example.com"}),
    teams=frozenset({"billing"}),
    templates=frozenset({"out-of-hours"}),
)


def run(yaml_text: str):
    rules = load_rules(yaml_text, source="t", directory=DIRECTORY)
    msg = ParsedMessage("m@x", "Subject", Address("c@client.example"), "c@client.example")
    return evaluate(
        rules, RuleInput(msg, (), True, False, "human", datetime(2025, 1, 1, tzinfo=UTC))
    )


CASES = [
    ("set-category", "technical/api", "category", "technical"),
    ("set-category", "technical/api", "subcategory", "api"),
    ("set-category", {"category": "usage", "subcategory": "limits"}, "subcategory", "limits"),
    ("set-category", "account", "subcategory", None),
    ("set-priority", "High", "priority", "high"),
    ("assign", "anna@example.com", "assignee", "anna@example.com"),
    ("assign", "team:billing", "team", "billing"),
    ("add-tags", ["VIP", "vip", "eu"], "tags", ["vip", "eu"]),
    ("add-tags", "urgent", "tags", ["urgent"]),
    ("escalate", "angry customer", "escalations", ["angry customer"]),
    ("auto-reply", "out-of-hours", "auto_reply", "out-of-hours"),
    ("mark-spam", True, "spam", True),
    ("stop", True, "stop", True),
]


@pytest.mark.parametrize(("aid", "arg", "attr", "expected"), CASES)
def test_action_changes_the_draft(aid, arg, attr, expected):
    draft = Draft()
    ACTIONS[aid](arg, DIRECTORY)(draft)
    assert getattr(draft, attr) == expected


def test_every_action_has_cases():
    assert {c[0] for c in CASES} == set(ACTIONS)


@pytest.mark.parametrize(
    ("aid", "arg", "message"),
    [
        ("set-category", "hardware", "unknown category"),
        ("set-category", "technical/printers", "unknown subcategory"),
        ("set-category", {"category": "usage", "colour": "red"}, "unknown key"),
        ("set-priority", "urgent", "unknown priority"),
        ("assign", "bob@example.com", "unknown agent"),
        ("assign", "team:sales", "unknown team"),
        ("add-tags", ["two words"], "bad tag"),
        ("add-tags", [], "expected a tag"),
        ("escalate", "", "expected a reason"),
        ("auto-reply", "welcome", "unknown auto-reply template"),
        ("mark-spam", False, "expected true"),
        ("stop", "yes", "expected true"),
    ],
)
def test_bad_arguments(aid, arg, message):
    with pytest.raises(ValueError, match=message):
        ACTIONS[aid](arg, DIRECTORY)


def test_later_rules_override_and_tags_add_up():
    decision = run("""
- id: a
  then: {set-category: usage/limits, set-priority: low, add-tags: [one], assign: team:billing}
- id: b
  then: {set-category: technical/api, add-tags: [two], assign: anna@example.com}
""")
    assert (decision.category, decision.subcategory, decision.priority) == (
        "technical",
        "api",
        "low",
    )
    assert decision.tags == ("one", "two")
    assert (decision.assignee, decision.team) == ("anna@example.com", None)


def test_stop_action_and_stop_key_end_the_run():
    for stop in (
        "then: {set-priority: high, stop: true}",
        "then: {set-priority: high}\n  stop: true",
    ):
        decision = run(f"""
- id: first
  {stop}
- id: second
  then: {{set-priority: low}}
""")
        assert decision.priority == "high"
        assert [o.verdict for o in decision.outcomes] == ["matched", "skipped"]
        assert "first" in decision.outcomes[1].explanation


def test_defaults_when_no_rule_sets_anything():
    decision = run("- id: nothing\n  when: {is-reply: true}\n  then: {set-priority: low}\n")
    assert (decision.category, decision.subcategory, decision.priority) == (
        "other",
        "general",
        "medium",
    )
    assert decision.outcomes[0].explanation == "is-reply True"


def test_spam_escalate_auto_reply_through_the_engine():
    decision = run("""
- id: all-of-them
  then:
    - escalate: looks bad
    - auto-reply: out-of-hours
    - mark-spam: true
""")
    assert decision.spam
    assert decision.escalations == ("looks bad",)
    assert decision.auto_reply == "out-of-hours"
    assert decision.hits == ("all-of-them",)
    assert decision.outcomes[0].actions == (
        "escalate looks bad",
        "auto-reply out-of-hours",
        "mark-spam True",
    )


def test_explanations_name_the_condition():
    from mailbot.rules import explain

    decision = run("""
- id: subj
  when: {all: [{subject-contains: [subject]}, {not: {customer-new: false}}]}
  then: {add-tags: [x]}
- id: miss
  when: {any: [{from-domain: other.example}, {is-reply: true}]}
  then: {add-tags: [y]}
- id: off
  enabled: false
  then: {add-tags: [z]}
""")
    hit, miss, off = decision.outcomes
    assert hit.explanation == "subject-contains: subject; not (customer-new False)"
    assert miss.explanation.startswith("none of any[")
    assert off.verdict == "disabled"
    report = explain(decision)
    assert "+ subj (line 2): matched" in report
    assert "tags: x" in report
