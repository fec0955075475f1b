"""Every rule condition, as a table: (condition id, argument, mail, expected match)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from mailbot.message import Address, Attachment, ParsedMessage
from mailbot.rules.conditions import CONDITIONS, Facts, RuleInput, compile_keywords, prechecks

MONDAY_10_UTC = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)


def mail(
    subject="Hello",
    text="Body text",
    sender="alice@mail.client.example",
    recipients=("support@example.com",),
    headers=(),
    attachments=(),
    new=True,
    known=False,
    klass="human",
    at=MONDAY_10_UTC,
    reopens=0,
):
    msg = ParsedMessage(
        message_id="x@y",
        subject=subject,
        sender=Address(sender) if sender else None,
        from_header=sender or "",
        text=text,
        headers=tuple(headers),
        attachments=tuple(attachments),
    )
    return RuleInput(msg, tuple(recipients), new, known, klass, at, reopens)


PDF = Attachment("report.PDF", "application/pdf", b"%PDF")
PNG_INLINE = Attachment("logo.png", "image/png", b"\x89PNG", inline=True)

CASES = [
    # from-address
    ("from-address", "alice@mail.client.example", mail(), True),
    ("from-address", ["ALICE@mail.client.example"], mail(), True),
    ("from-address", "bob@mail.client.example", mail(), False),
    ("from-address", "alice@mail.client.example", mail(sender=None), False),
    # from-domain (the domain or a subdomain)
    ("from-domain", "client.example", mail(), True),
    ("from-domain", "@mail.client.example", mail(), True),
    ("from-domain", "other.example", mail(), False),
    ("from-domain", "ent.example", mail(), False),
    # to-address
    ("to-address", "support@example.com", mail(), True),
    ("to-address", ["billing@example.com"], mail(), False),
    ("to-address", "SUPPORT@example.com", mail(recipients=("support@EXAMPLE.com",)), True),
    # customer-new
    ("customer-new", True, mail(known=False), True),
    ("customer-new", True, mail(known=True), False),
    ("customer-new", False, mail(known=True), True),
    # customer-in
    ("customer-in", ["client.example"], mail(), True),
    ("customer-in", ["alice@mail.client.example", "x.example"], mail(), True),
    ("customer-in", ["bob@client.example", "x.example"], mail(), False),
    # subject-contains: words, prefixes, phrases, case, ё
    ("subject-contains", ["недоступ*"], mail(subject="Платформа НЕДОСТУПНА"), True),
    ("subject-contains", ["api"], mail(subject="API down"), True),
    ("subject-contains", ["api"], mail(subject="rapid growth"), False),
    ("subject-contains", ["не могу войти"], mail(subject="Не могу\n войти!"), True),
    ("subject-contains", ["не могу войти"], mail(subject="войти не могу"), False),
    ("subject-contains", ["потер* данн*"], mail(subject="Потеряли данные"), True),
    ("subject-contains", ["счет"], mail(subject="Счёт на оплату"), True),
    ("subject-contains", ["can't log in"], mail(subject="I can’t log in"), True),
    ("subject-contains", ["body"], mail(subject="Hi", text="body"), False),
    # body-contains
    ("body-contains", ["error*"], mail(text="Errors everywhere"), True),
    ("body-contains", ["error*"], mail(subject="error", text="fine"), False),
    ("body-contains", ["data loss"], mail(text="we had a data-loss event"), True),
    # text-contains: subject or body
    ("text-contains", ["urgent"], mail(subject="URGENT"), True),
    ("text-contains", ["urgent"], mail(text="it is urgent"), True),
    ("text-contains", ["urgent"], mail(), False),
    # subject-matches / body-matches / text-matches (case-insensitive)
    ("subject-matches", r"order\s+#\d+", mail(subject="ORDER #123"), True),
    ("subject-matches", r"^re:", mail(subject="Hello re: x"), False),
    ("body-matches", r"\bHTTP 5\d\d\b", mail(text="got http 503 today"), True),
    ("body-matches", r"\bHTTP 5\d\d\b", mail(text="got http 404 today"), False),
    ("body-matches", r"(?-i:ERROR)", mail(text="error"), False),
    ("text-matches", r"inv-\d{4}", mail(subject="x", text="see INV-2024"), True),
    ("text-matches", r"inv-\d{4}", mail(subject="x", text="see INV-20"), False),
    # header-present / header-matches
    ("header-present", "List-Id", mail(headers=[("list-id", "<x.y>")]), True),
    ("header-present", ["X-A", "X-B"], mail(headers=[("X-B", "1")]), True),
    ("header-present", "List-Id", mail(), False),
    ("header-matches", {"X-Priority": "^1"}, mail(headers=[("X-Priority", "1 (Highest)")]), True),
    ("header-matches", {"X-Priority": "^1"}, mail(headers=[("X-Priority", "3")]), False),
    ("header-matches", {"X-Mailer": "outlook"}, mail(), False),
    # has-attachment (inline parts do not count)
    ("has-attachment", True, mail(attachments=[PDF]), True),
    ("has-attachment", True, mail(attachments=[PNG_INLINE]), False),
    ("has-attachment", False, mail(), True),
    # attachment-type: MIME type, wildcard, extension
    ("attachment-type", "application/pdf", mail(attachments=[PDF]), True),
    ("attachment-type", "image/*", mail(attachments=[PNG_INLINE]), True),
    ("attachment-type", ".pdf", mail(attachments=[PDF]), True),
    ("attachment-type", ["image/*", ".zip"], mail(attachments=[PDF]), False),
    # time-between (local time of the zone, crossing midnight)
    ("time-between", {"start": "09:00", "end": "18:00"}, mail(), True),
    (
        "time-between",
        {"start": "09:00", "end": "12:00", "time-zone": "Europe/Moscow"},
        mail(),
        False,
    ),
    (
        "time-between",
        {"start": "22:00", "end": "06:00"},
        mail(at=datetime(2025, 3, 3, 23, 30, tzinfo=UTC)),
        True,
    ),
    ("time-between", {"start": "22:00", "end": "06:00"}, mail(), False),
    # weekday-in
    ("weekday-in", ["mon", "tue"], mail(), True),
    ("weekday-in", ["sat", "sun"], mail(), False),
    (
        "weekday-in",
        {"days": ["tue"], "time-zone": "Pacific/Auckland"},
        mail(at=datetime(2025, 3, 3, 12, 0, tzinfo=UTC)),
        True,
    ),
    ("weekday-in", {"days": ["tue"], "time-zone": "Pacific/Auckland"}, mail(), False),
    # mail-class
    ("mail-class", "human", mail(), True),
    ("mail-class", ["bounce", "auto-reply"], mail(klass="bounce"), True),
    ("mail-class", ["bounce", "auto-reply"], mail(), False),
    # is-new-ticket / is-reply
    ("is-new-ticket", True, mail(new=True), True),
    ("is-new-ticket", True, mail(new=False), False),
    ("is-reply", True, mail(new=False), True),
    ("is-reply", False, mail(new=False), False),
    # reopens-ticket
    ("reopens-ticket", True, mail(new=False, reopens=1), True),
    ("reopens-ticket", True, mail(new=False), False),
    ("reopens-ticket", False, mail(new=False), True),
    ("reopens-ticket", 2, mail(new=False, reopens=1), False),
    ("reopens-ticket", 2, mail(new=False, reopens=2), True),
    ("reopens-ticket", 2, mail(new=False, reopens=3), True),
    # always
    ("always", True, mail(), True),
]


@pytest.mark.parametrize(("cid", "arg", "rule_input", "expected"), CASES)
def test_condition(cid, arg, rule_input, expected):
    predicate = CONDITIONS[cid](arg)
    assert (predicate(Facts(rule_input)) is not None) is expected


@pytest.mark.parametrize(
    ("cid", "value", "expected"),
    [
        ("category-is", "technical", True),
        ("category-is", "usage", False),
        ("priority-is", ["high", "critical"], True),
        ("priority-is", "low", False),
    ],
)
def test_conditions_on_the_decision_so_far(cid, value, expected):
    facts = Facts(mail())
    facts.category, facts.priority = "technical", "critical"
    assert (CONDITIONS[cid](value)(facts) is not None) is expected


def test_every_condition_has_cases():
    tested = {c[0] for c in CASES} | {"category-is", "priority-is"}
    assert tested == set(CONDITIONS)


@pytest.mark.parametrize(
    ("cid", "arg"),
    [
        ("from-address", "not-an-address"),
        ("from-domain", "nodot"),
        ("subject-contains", []),
        ("subject-contains", ["*oops"]),
        ("subject-contains", ["mid*dle"]),
        ("body-matches", "("),
        ("header-matches", {"X": "["}),
        ("has-attachment", "yes"),
        ("attachment-type", "pdf"),
        ("time-between", {"start": "25:00", "end": "10:00"}),
        ("time-between", {"start": "09:00", "end": "10:00", "time-zone": "Mars/Base"}),
        ("time-between", {"start": "09:00"}),
        ("weekday-in", ["funday"]),
        ("mail-class", "robot"),
        ("reopens-ticket", 0),
        ("reopens-ticket", "twice"),
        ("priority-is", "urgent"),
        ("always", False),
    ],
)
def test_bad_arguments_raise_value_error(cid, arg):
    with pytest.raises(ValueError, match=r".+"):
        CONDITIONS[cid](arg)


def test_keyword_match_names_the_word_found():
    keywords = compile_keywords(["недоступ*", "outage"])
    facts = Facts(mail(subject="Сайт недоступен"))
    assert keywords.search(facts.subject) == "недоступен"


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (r"\bfoo-12\d+\b", "x FOO-123 y"),
        (r"ſtop", "STOP"),
        (r"(?:abc)+d", "ABCABCD"),
        (r"ошибка\s+оплаты", "ОШИБКА  ОПЛАТЫ"),
        (r"\bHTTP 5\d\d", "Http 502"),
        ("ё", "Ё"),
    ],
)
def test_prechecks_never_hide_a_match(pattern, text):
    regex = CONDITIONS["text-matches"](pattern)
    assert re.search(pattern, text, re.IGNORECASE)
    assert regex(Facts(mail(subject="", text=text))) is not None


def test_prechecks_find_words_and_prefixes():
    checks = prechecks(r"\bHTTP 5\d\d\b", re.IGNORECASE)
    assert checks.words == {"http"}
    assert checks.prefixes == ("5",)
