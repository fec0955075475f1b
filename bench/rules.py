"""Rules engine benchmark: 500 generated rules against a 20 KB mail.

The rules mix what real files hold: keyword lists on the subject, the body or
both (single words, ``prefix*`` forms and phrases, Russian and English),
regular expressions on the subject and the body, header tests, sender domains,
and ``all``/``any``/``not`` groups. A few rules match; most do not, as in a
real file. Compilation is timed once; evaluation is timed per run. Every run
builds its own view of the mail (word index, tokens), as the pipeline does for
each mail: nothing is carried from one run to the next.

    .venv/bin/python bench/rules.py                  # 500 rules, 20 KB, 2,000 runs
    .venv/bin/python bench/rules.py --rules 2000 --runs 500
    .venv/bin/python bench/rules.py --rules-file rules.yaml   # a real file, same mail
    .venv/bin/python bench/rules.py --profile 1000   # cProfile of 1,000 evaluations
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from mailbot.message import Address, ParsedMessage
from mailbot.rules import Directory, RuleInput, evaluate, load_rules
from mailbot.rules.facts import Facts

WORDS_EN = [
    "account",
    "billing",
    "invoice",
    "connector",
    "scenario",
    "webhook",
    "token",
    "timeout",
    "latency",
    "export",
    "import",
    "dashboard",
    "schedule",
    "trigger",
    "mapping",
    "field",
    "record",
    "pipeline",
    "request",
    "response",
    "payload",
    "customer",
    "report",
    "filter",
    "module",
    "license",
    "upgrade",
    "workflow",
    "database",
    "archive",
]
WORDS_RU = [
    "аккаунт",
    "оплата",
    "счёт",
    "коннектор",
    "сценарий",
    "вебхук",
    "токен",
    "задержка",
    "выгрузка",
    "загрузка",
    "панель",
    "расписание",
    "триггер",
    "поле",
    "запись",
    "запрос",
    "ответ",
    "клиент",
    "отчёт",
    "фильтр",
    "модуль",
    "лицензия",
    "процесс",
    "база",
    "архив",
    "интеграция",
    "пользователь",
    "ошибка",
]
HEADERS = ("X-Mailer", "X-Priority", "List-Id", "X-Campaign", "X-Spam-Flag", "Organization")


def make_rules(count: int, seed: int = 7) -> str:
    rnd = random.Random(seed)
    vocab = WORDS_EN + WORDS_RU
    rules = []
    for i in range(count):
        kind = i % 10
        conditions: list[dict[str, object]]
        if kind < 5:  # keyword lists, the bulk of a real file
            field = rnd.choice(["subject-contains", "body-contains", "text-contains"])
            words = [
                rnd.choice(vocab) + f"{i}" + ("*" if rnd.random() < 0.3 else "")
                for _ in range(rnd.randint(3, 8))
            ]
            words.append(f"{rnd.choice(vocab)} {rnd.choice(vocab)}x{i}")  # a phrase
            conditions = [{field: words}]
        elif kind < 7:  # regular expressions
            field = rnd.choice(["subject-matches", "body-matches", "text-matches"])
            conditions = [{field: rf"\b{rnd.choice(WORDS_EN)}-{i}\d+\b"}]
        elif kind < 9:  # headers
            name = rnd.choice(HEADERS)
            if rnd.random() < 0.5:
                conditions = [{"header-present": f"{name}-{i}"}]
            else:
                conditions = [{"header-matches": {name: rf"^v{i}\b"}}]
        else:  # a group of cheap tests
            conditions = [
                {"any": [{"from-domain": f"corp{i}.example"}, {"to-address": f"s{i}@ex.org"}]},
                {"not": {"mail-class": ["bounce", "loop"]}},
            ]
        # Rules whose first keyword does occur in the mail, so some rules do fire.
        if i % 50 == 0:
            conditions = [{"text-contains": [rnd.choice(vocab), "недоступ*"]}]
        rules.append(
            {
                "id": f"rule-{i}",
                "when": {"all": conditions},
                "then": {"add-tags": [f"t{i}"], "set-priority": rnd.choice(["low", "high"])},
            }
        )
    return yaml.safe_dump(rules, allow_unicode=True, sort_keys=False)


def make_mail(size: int, seed: int = 11) -> ParsedMessage:
    rnd = random.Random(seed)
    vocab = [*WORDS_EN, *WORDS_RU, "the", "and", "не", "и", "в", "на", "платформа", "недоступна"]
    words: list[str] = []
    length = 0
    endings = ["", "", "", "а", "ы", "ов", "ами", "ой", "s", "ed", "ing", "er"]
    while length < size:
        # About a thousand distinct words, as in real text of this size.
        word = rnd.choice(vocab) + rnd.choice(endings)
        if rnd.random() < 0.1:
            word += str(rnd.randint(1, 500))
        words.append(word + ("." if rnd.random() < 0.08 else ""))
        length += len(word.encode()) + 1
    text = " ".join(words)
    return ParsedMessage(
        message_id="bench@example.com",
        subject="Платформа недоступна since 10:00, connector timeout on export",
        sender=Address("alice@customer.example"),
        from_header="Alice <alice@customer.example>",
        to=(Address("support@example.com"),),
        text=text,
        headers=(
            ("From", "Alice <alice@customer.example>"),
            ("To", "support@example.com"),
            ("Subject", "Платформа недоступна"),
            ("X-Mailer", "Thunderbird 115"),
            ("Organization", "Customer Ltd"),
        ),
    )


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted timings."""
    return ordered[max(0, int(len(ordered) * fraction + 0.5) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=500, help="generated rules")
    parser.add_argument("--rules-file", type=Path, help="a rules file to use instead")
    parser.add_argument("--size", type=int, default=20 * 1024, help="body size in bytes")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--profile", type=int, metavar="N", help="cProfile N evaluations instead")
    args = parser.parse_args()

    text = args.rules_file.read_text() if args.rules_file else make_rules(args.rules)
    started = time.perf_counter()
    rules = load_rules(text, source="bench", directory=Directory())
    compile_ms = (time.perf_counter() - started) * 1000
    msg = make_mail(args.size)
    mail = RuleInput(msg, ("support@example.com",), True, True, "human", datetime.now(UTC))

    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(lambda: [evaluate(rules, mail, explain=False) for _ in range(args.profile)])
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(15)
        stats.sort_stats("cumulative").print_stats(15)
        return

    def measure(explain: bool) -> list[float]:
        for _ in range(50):  # warm up
            evaluate(rules, mail, explain=explain)
        timings = []
        for _ in range(args.runs):
            started = time.perf_counter()
            evaluate(rules, mail, explain=explain)
            timings.append((time.perf_counter() - started) * 1000)
        return sorted(timings)

    decision = evaluate(rules, mail)
    load = os.getloadavg()[0]
    results = {
        "pipeline (matched rules only)": measure(False),
        "explain (every rule)": measure(True),
    }
    body_kb = len(msg.text.encode()) / 1024
    print(
        f"rules: {len(rules)} ({len(text) / 1024:.0f} KB of YAML), compiled in {compile_ms:.0f} ms"
    )
    distinct = len(set(msg.text.split()))
    tested = len(rules.index.candidates(Facts(mail)))
    print(
        f"mail: {body_kb:.1f} KB body, {distinct} distinct words, {len(decision.hits)} hits; "
        f"{tested} of {len(rules)} rules tested, the others ruled out by the index"
    )
    for label, timings in results.items():
        print(
            f"evaluate, {label}: median {statistics.median(timings):.3f} ms, "
            f"p90 {percentile(timings, 0.90):.3f} ms, p95 {percentile(timings, 0.95):.3f} ms, "
            f"min {timings[0]:.3f} ms over {args.runs} runs"
        )
    print(f"load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
