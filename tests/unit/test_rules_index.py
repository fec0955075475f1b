"""The rule index and the word index give the same answers as testing every rule naively.

Generated rule files (keywords, regexes, headers, addresses, groups, stop,
disabled rules, rules on the decision so far) run over generated mails: the
engine, which tests only the rules the index finds possible, must give the same
decision and the same outcomes, explanations included, as a reference that
tests every rule in order. The word matching underneath (words, word starts,
keyword lists) is checked against plain regular expressions.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from mailbot.message import Address, Attachment, ParsedMessage
from mailbot.rules import Directory, RuleInput, RuleSet, evaluate, load_rules
from mailbot.rules.actions import Draft
from mailbot.rules.engine import DEFAULT_CATEGORY, DEFAULT_PRIORITY, DEFAULT_SUBCATEGORY
from mailbot.rules.facts import Facts
from mailbot.rules.matching import PrefixTable, WordIndex, compile_keywords, normalise
from mailbot.rules.outcome import Outcome, Verdict
from mailbot.rules.schema import Condition

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "api",
    "error",
    "errors",
    "e",
    "x1",
    "12",
    "123",
    "недоступна",
    "недоступен",
    "ошибка",
    "ошибки",
    "счёт",
    "счет",
    "данные",
    "потеряли",
    "не",
    "могу",
    "войти",
    "_under_",
    "straße",
]
KEYWORDS = [
    "alpha",
    "beta",
    "api",
    "error*",
    "e*",
    "x1",
    "12*",
    "недоступ*",
    "ошибк*",
    "счет",
    "счёт*",
    "alpha beta",
    "не могу войти",
    "потер* данн*",
    "e-mail",
    "_under_",
    "gamma*",
    "strasse",
]
PATTERNS = [
    r"\balpha-\d+",
    r"ошибк\w+",
    r"(?-i:API)",
    r"\d{3}",
    r"be+ta",
    r"a\.b",
    r"\bHTTP 5\d\d\b",
    r"^re:",
    r"не\s+могу",
    r"ſtop",
]
SEPARATORS = [" ", " ", " ", "\n", ", ", ". ", " (", ") ", "\t", "\u00a0", "-", "\u2014", "\x1c"]
SENDERS = ["ann@client.example", "bob@mail.client.example", "eve@other.example", ""]
HEADERS = ["X-A", "X-B", "List-Id", "X-Spam-Flag"]


def _keywords(rnd: random.Random) -> list[str]:
    return rnd.sample(KEYWORDS, rnd.randint(1, 4))


def _condition(rnd: random.Random, depth: int) -> dict[str, object]:
    kind = rnd.randrange(16 if depth < 2 else 13)
    field = rnd.choice(["subject", "body", "text"])
    if kind < 4:
        return {f"{field}-contains": _keywords(rnd)}
    if kind < 6:
        return {f"{field}-matches": rnd.choice(PATTERNS)}
    if kind == 6:
        return {"header-present": rnd.sample(HEADERS, rnd.randint(1, 2))}
    if kind == 7:
        return {"header-matches": {rnd.choice(HEADERS): rnd.choice(["^1", "yes", "v\\d"])}}
    if kind == 8:
        choice = rnd.choice(["from-domain", "from-address", "customer-in", "to-address"])
        if choice == "from-domain":
            return {choice: rnd.sample(["client.example", "other.example", "nowhere.example"], 2)}
        if choice == "to-address":
            return {choice: rnd.choice(["support@example.com", "sales@example.com"])}
        addresses = [s for s in SENDERS if s]
        if choice == "from-address":
            return {choice: rnd.sample(addresses, 2)}
        return {choice: [rnd.choice(addresses), rnd.choice(["client.example", "x.example"])]}
    if kind == 9:
        if rnd.random() < 0.5:
            return {"category-is": rnd.choice(["usage", "technical", "other"])}
        return {"priority-is": rnd.choice(["high", "low"])}
    if kind == 10:
        return {"mail-class": rnd.choice(["human", "bounce"])}
    if kind == 11:
        return {"time-between": {"start": "09:00", "end": "18:00"}}
    if kind == 12:
        return {"has-attachment": rnd.choice([True, False])}
    group = rnd.choice(["all", "any", "not"])
    if group == "not":
        return {"not": _condition(rnd, depth + 1)}
    return {group: [_condition(rnd, depth + 1) for _ in range(rnd.randint(2, 3))]}


def make_rules(rnd: random.Random, count: int) -> str:
    rules: list[dict[str, object]] = []
    for i in range(count):
        rule: dict[str, object] = {"id": f"r{i}"}
        if rnd.random() < 0.95:
            rule["when"] = _condition(rnd, 0)
        then: dict[str, object] = {"add-tags": [f"t{i}"]}
        if rnd.random() < 0.5:
            then["set-priority"] = rnd.choice(["low", "medium", "high", "critical"])
        if rnd.random() < 0.4:
            then["set-category"] = rnd.choice(["usage", "technical/api", "other"])
        rule["then"] = then
        if rnd.random() < 0.04:
            rule["stop"] = True
        if rnd.random() < 0.05:
            rule["enabled"] = False
        rules.append(rule)
    return yaml.safe_dump(rules, allow_unicode=True, sort_keys=False)


def _text(rnd: random.Random, length: int) -> str:
    parts: list[str] = []
    for _ in range(length):
        word = rnd.choice(WORDS)
        if rnd.random() < 0.3:
            word = word.upper() if rnd.random() < 0.5 else word.capitalize()
        if rnd.random() < 0.1:
            word += str(rnd.randint(0, 130))
        if rnd.random() < 0.05:
            word = rnd.choice(["HTTP 503", "alpha-42", "a.b", "re:", "İstanbul", "e\u0301"])
        parts.append(word + rnd.choice(SEPARATORS))
    return "".join(parts)


def make_mail(rnd: random.Random) -> RuleInput:
    headers = tuple(
        (name, rnd.choice(["1 (high)", "yes", "v7", "no"]))
        for name in HEADERS
        if rnd.random() < 0.3
    )
    sender = rnd.choice(SENDERS)
    msg = ParsedMessage(
        message_id="m@example.com",
        subject=_text(rnd, rnd.randint(0, 6)),
        sender=Address(sender) if sender else None,
        from_header=sender,
        text=_text(rnd, rnd.choice([0, 3, 20, 200])),
        headers=headers,
        attachments=(Attachment("a.pdf", "application/pdf", b"%"),) if rnd.random() < 0.3 else (),
    )
    recipients = tuple(rnd.sample(["support@example.com", "sales@example.com"], rnd.randint(0, 2)))
    at = datetime(2025, 3, 3, tzinfo=UTC) + timedelta(hours=rnd.randint(0, 23))
    return RuleInput(msg, recipients, rnd.random() < 0.5, rnd.random() < 0.5, "human", at)


def reference(rules: RuleSet, mail: RuleInput) -> tuple[object, ...]:
    """Every rule tested in file order, as the engine did before the index."""
    facts = Facts(mail)
    draft = Draft()
    outcomes: list[Outcome] = []
    stopped_by: str | None = None
    for rule in rules.rules:
        if stopped_by is not None:
            why = f"not run: {stopped_by} stopped"
            outcomes.append(Outcome(rule.id, rule.line, Verdict.skipped, why))
            continue
        if not rule.enabled:
            outcomes.append(Outcome(rule.id, rule.line, Verdict.disabled, "enabled: false"))
            continue
        when = rule.when
        if when is None:
            hit: str | None = "always"
        elif isinstance(when, Condition):
            found = when.predicate(facts)
            hit = None if found is None else f"{when.id}: {found}"
            facts.miss = when.label
        else:
            hit = when.check(facts)
        if hit is None:
            outcomes.append(Outcome(rule.id, rule.line, Verdict.missed, facts.miss))
            continue
        for action in rule.then:
            action.apply(draft)
        facts.category, facts.priority = draft.category, draft.priority
        labels = tuple(a.label for a in rule.then)
        outcomes.append(Outcome(rule.id, rule.line, Verdict.matched, hit, labels))
        if rule.stop or draft.stop:
            stopped_by = rule.id
    category = draft.category or DEFAULT_CATEGORY
    subcategory = draft.subcategory if draft.category else DEFAULT_SUBCATEGORY
    priority = draft.priority or DEFAULT_PRIORITY
    return (category, subcategory, priority, tuple(draft.tags), draft.spam, tuple(outcomes))


def summary(decision) -> tuple[object, ...]:
    return (
        decision.category,
        decision.subcategory,
        decision.priority,
        decision.tags,
        decision.spam,
        tuple(decision.outcomes),
    )


@pytest.mark.parametrize("seed", range(12))
def test_the_index_agrees_with_testing_every_rule(seed):
    rnd = random.Random(seed)
    rules = load_rules(make_rules(rnd, 60), source="generated", directory=Directory())
    matched = 0
    for _ in range(40):
        mail = make_mail(rnd)
        expected = reference(rules, mail)
        assert summary(evaluate(rules, mail)) == expected
        quick = evaluate(rules, mail, explain=False)
        hits = tuple(o for o in expected[-1] if o.verdict is Verdict.matched)
        assert summary(quick) == (*expected[:-1], hits)
        matched += len(hits)
    assert matched > 40  # the generated rules do match, so the comparison means something


def test_the_index_skips_rules_that_cannot_match():
    text = "- id: a\n  when: {body-contains: [alpha]}\n  then: {set-priority: low}\n"
    text += "- id: b\n  when: {subject-contains: [недоступ*]}\n  then: {set-priority: high}\n"
    text += "- id: c\n  when: {not: {body-contains: [alpha]}}\n  then: {set-priority: low}\n"
    rules = load_rules(text, source="t", directory=Directory())
    msg = ParsedMessage(
        message_id="m", subject="Сайт НЕДОСТУПЕН", sender=None, from_header="", text="beta gamma"
    )
    mail = RuleInput(msg)
    assert rules.index.candidates(Facts(mail)) == [1, 2]
    decision = evaluate(rules, mail)
    assert [o.verdict for o in decision.outcomes] == ["missed", "matched", "matched"]
    assert decision.outcomes[0].explanation == "body-contains [alpha]"
    assert decision.outcomes[1].explanation == "subject-contains: недоступен"


def naive_words(text: str) -> set[str]:
    return set(re.findall(r"\w+", normalise(text)))


@pytest.mark.parametrize("seed", range(30))
def test_word_index_words_are_the_regex_words(seed):
    text = _text(random.Random(seed), 60)
    assert set(WordIndex(text).words) == naive_words(text)


@pytest.mark.parametrize("seed", range(30))
def test_prefix_table_finds_every_word_start(seed):
    rnd = random.Random(seed)
    text = _text(rnd, 80)
    words = naive_words(text)
    pool = sorted({w[:n] for w in [*words, *WORDS, "zz", "ъ"] for n in range(1, len(w) + 1)})
    prefixes = rnd.sample(pool, min(len(pool), 40))
    table = PrefixTable({p: i for i, p in enumerate(prefixes)})
    index = WordIndex(text)
    found = {prefixes[i] for i in index.starting(table)}
    assert found == {p for p in prefixes if any(w.startswith(p) for w in words)}
    for prefix in [*prefixes, "zzz", "alp"]:
        starting = sorted(w for w in words if w.startswith(prefix))
        assert index.find(prefix, True) == (starting[0] if starting else None)
        assert WordIndex(text).find(prefix, True) == (starting[0] if starting else None)


def test_prefix_table_without_a_compiled_pattern_gives_the_same_answers():
    words = ["a" * n for n in range(1, 40)]
    table = PrefixTable({w: i for i, w in enumerate(words)})
    slow = PrefixTable({w: i for i, w in enumerate(words)})
    slow._pattern = None
    index = WordIndex("x " + "a" * 12 + " b")
    assert sorted(index.starting(table)) == list(range(12))
    assert sorted(WordIndex(index.raw).starting(slow)) == list(range(12))


def naive_search(keywords: list[str], text: str) -> str | None:
    """Keyword search with plain regexes, in the documented order."""
    normal = normalise(text)
    words = naive_words(text)
    singles = [normalise(k) for k in keywords if re.fullmatch(r"\w+\*?", normalise(k))]
    exact = sorted(k for k in singles if not k.endswith("*") and k in words)
    if exact:
        return exact[0]
    for prefix in (k[:-1] for k in singles if k.endswith("*")):
        starting = sorted(w for w in words if w.startswith(prefix))
        if starting:
            return starting[0]
    phrases = []
    for keyword in keywords:
        tokens = re.findall(r"\w+\*?", normalise(keyword))
        if len(tokens) > 1:
            parts = [re.escape(t.rstrip("*")) + (r"\w*" if t.endswith("*") else "") for t in tokens]
            phrases.append(r"\W+".join(parts))
    if phrases:
        match = re.search(r"(?<!\w)(?:" + "|".join(phrases) + r")(?!\w)", normal)
        return match.group(0) if match else None
    return None


@pytest.mark.parametrize("seed", range(60))
def test_keyword_search_agrees_with_plain_regexes(seed):
    rnd = random.Random(seed)
    keywords = _keywords(rnd)
    text = _text(rnd, rnd.choice([2, 10, 50]))
    expected = naive_search(keywords, text)
    assert compile_keywords(keywords).search(WordIndex(text)) == expected
