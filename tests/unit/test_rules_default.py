"""The default rules.yaml classifies sample mails as the spec asks (Russian and English)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailbot.message import Address, ParsedMessage
from mailbot.rules import Directory, RuleInput, evaluate, load_rules

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rules():
    return load_rules((ROOT / "rules.yaml").read_text(), source="rules.yaml", directory=Directory())


def mail(subject: str, body: str, **kw) -> RuleInput:
    msg = ParsedMessage(
        message_id="m@example.com",
        subject=subject,
        sender=Address("customer@client.example"),
        from_header="customer@client.example",
        text=body,
        headers=kw.pop("headers", ()),
    )
    return RuleInput(
        msg,
        ("support@example.com",),
        True,
        True,
        kw.pop("mail_class", "human"),
        datetime(2025, 3, 3, 10, 0, tzinfo=UTC),
    )


# (subject, body, category, subcategory, priority)
CASES = [
    # technical
    (
        "Ошибка коннектора amoCRM",
        "Коннектор выдаёт ошибку 'invalid field' при обработке сделки.",
        "technical",
        "connector_errors",
        "medium",
    ),
    (
        "Connector error",
        "The HubSpot connector fails with an exception on every run.",
        "technical",
        "connector_errors",
        "medium",
    ),
    (
        "Перестал работать коннектор",
        "Ключевой коннектор к 1С полностью перестал работать с утра.",
        "technical",
        "connector_errors",
        "high",
    ),
    (
        "Salesforce connector stopped working",
        "Our main connector stopped working, all syncs fail.",
        "technical",
        "connector_errors",
        "high",
    ),
    (
        "API возвращает 500",
        "При вызове метода получаем HTTP 500 от вашего API.",
        "technical",
        "api",
        "medium",
    ),
    (
        "Webhook not firing",
        "Our webhook endpoint gets no calls, looks like an error on your side.",
        "technical",
        "api",
        "medium",
    ),
    (
        "Проблема с интеграцией",
        "Синхронизация с 1С не работает, данные не выгружаются.",
        "technical",
        "integration",
        "medium",
    ),
    (
        "Sync issue",
        "The integration with Google Sheets fails to sync new rows.",
        "technical",
        "integration",
        "medium",
    ),
    (
        "Кнопка не нажимается",
        "В интерфейсе кнопка «Сохранить» не работает на странице сценария.",
        "technical",
        "interface",
        "medium",
    ),
    (
        "Page layout broken",
        "The settings page layout is broken in Firefox, buttons overlap.",
        "technical",
        "interface",
        "medium",
    ),
    (
        "Всё очень медленно",
        "Редактор тормозит, страницы долго загружаются, задержка 30 секунд.",
        "technical",
        "performance",
        "medium",
    ),
    (
        "Slow dashboard",
        "Performance is terrible today, every request runs into a timeout.",
        "technical",
        "performance",
        "medium",
    ),
    (
        "Платформа недоступна",
        "С 10 утра платформа недоступна, сайт не открывается.",
        "technical",
        "performance",
        "critical",
    ),
    (
        "Outage?",
        "Your platform is down for the whole team, 502 bad gateway.",
        "technical",
        "performance",
        "critical",
    ),
    (
        "Пропали данные",
        "После обновления пропали данные всех наших сценариев!",
        "technical",
        None,
        "critical",
    ),
    (
        "Data loss after import",
        "We lost all our data in the workspace yesterday.",
        "technical",
        None,
        "critical",
    ),
    # usage
    (
        "Как настроить коннектор?",
        "Подскажите, как настроить коннектор к Битрикс24?",
        "usage",
        "connector_setup",
        "low",
    ),
    (
        "Connector setup",
        "How do I set up the Pipedrive connector for our account?",
        "usage",
        "connector_setup",
        "low",
    ),
    (
        "Создание сценария",
        "Как создать сценарий, который запускается по расписанию?",
        "usage",
        "scenarios",
        "low",
    ),
    (
        "Workflow question",
        "Can a scenario wait for an approval step before continuing?",
        "usage",
        "scenarios",
        "low",
    ),
    ("Вопрос по функциям", "Можно ли выгружать отчёты в PDF?", "usage", "features", "low"),
    (
        "Is it possible?",
        "Is it possible to schedule reports every Monday?",
        "usage",
        "features",
        "low",
    ),
    (
        "Как правильно?",
        "Как правильно организовать обработку ошибок? Посоветуйте подход.",
        "usage",
        "best_practices",
        "low",
    ),
    (
        "Best practice",
        "What is the best way to structure many scenarios? Any best practices?",
        "usage",
        "best_practices",
        "low",
    ),
    ("Лимиты", "Какие ограничения на количество операций в месяц?", "usage", "limits", "low"),
    (
        "Rate limits",
        "What are the rate limits and is it compatible with Python 3.8?",
        "usage",
        "limits",
        "low",
    ),
    # account
    (
        "Не могу войти",
        "Не могу войти в личный кабинет, пишет неверный пароль.",
        "account",
        "access",
        "critical",
    ),
    (
        "Login",
        "I can't log in since this morning, the page just reloads.",
        "account",
        "access",
        "critical",
    ),
    (
        "Регистрация",
        "Не приходит письмо подтверждения после регистрации.",
        "account",
        "access",
        "medium",
    ),
    ("Тариф", "Хотим сменить тариф на годовую подписку.", "account", "subscriptions", "medium"),
    (
        "Upgrade plan",
        "Please upgrade our subscription to the Business plan.",
        "account",
        "subscriptions",
        "medium",
    ),
    (
        "Оплата не прошла",
        "Оплата картой не прошла, деньги списали дважды.",
        "account",
        "billing",
        "high",
    ),
    (
        "Payment failed",
        "Our payment was declined although the card is valid.",
        "account",
        "billing",
        "high",
    ),
    (
        "Счёт на оплату",
        "Пришлите, пожалуйста, счёт на оплату за март.",
        "account",
        "billing",
        "medium",
    ),
    (
        "Добавить сотрудника",
        "Как добавить пользователя и дать ему права доступа?",
        "account",
        "users",
        "medium",
    ),
    ("Invite", "How can I invite a colleague and set user roles?", "account", "users", "medium"),
    (
        "Безопасность",
        "Подозреваем взлом аккаунта, включите двухфакторную аутентификацию.",
        "account",
        "security",
        "medium",
    ),
    (
        "GDPR request",
        "Please tell us how you process personal data under GDPR.",
        "account",
        "security",
        "medium",
    ),
    # feature requests
    (
        "Предложение",
        "Было бы здорово добавить экспорт отчётов в Excel.",
        "feature_request",
        "new_features",
        "low",
    ),
    (
        "Feature request",
        "It would be nice to have versioning of scenarios.",
        "feature_request",
        "new_features",
        "low",
    ),
    (
        "Коннектор для Мегаплана",
        "Прошу добавить новый коннектор для Мегаплан.",
        "feature_request",
        "new_connectors",
        "low",
    ),
    (
        "New connector",
        "Could you add a connector for Zoho Books?",
        "feature_request",
        "new_connectors",
        "low",
    ),
    (
        "Улучшение",
        "Предлагаю доработать редактор: хотелось бы сделать поиск удобнее.",
        "feature_request",
        "improvements",
        "low",
    ),
    (
        "Docs",
        "The documentation for webhooks is outdated, please update the guide.",
        "feature_request",
        "documentation",
        "low",
    ),
    ("Тёмная тема", "Хотелось бы тёмную тему интерфейса.", "feature_request", "interface", "low"),
    # other
    ("Общий вопрос", "Добрый день! Где находится ваш офис?", "other", "general", "low"),
    ("Hello", "Who should I talk to about your company?", "other", "general", "low"),
    # Nothing recognisable and no question: the spec's "medium otherwise".
    ("Printer on fire", "It started this morning.", "other", "general", "medium"),
    ("Странная штука", "С утра всё иначе, чем вчера.", "other", "general", "medium"),
    (
        "Сотрудничество",
        "Предлагаем партнерство: мы интегратор и реселлер.",
        "other",
        "partnership",
        "low",
    ),
    (
        "Partnership",
        "We are interested in a reseller partnership in Germany.",
        "other",
        "partnership",
        "low",
    ),
    ("Отзыв", "Хочу оставить отзыв: поддержка отличная, спасибо!", "other", "feedback", "low"),
    ("Feedback", "Some feedback: great job on the new release.", "other", "feedback", "low"),
    (
        "Обучение",
        "Хотим заказать обучение для сотрудников, есть ли вебинары?",
        "other",
        "training",
        "low",
    ),
    ("Training", "Do you offer training or webinars for new users?", "other", "training", "low"),
]


@pytest.mark.parametrize(
    ("subject", "body", "category", "subcategory", "priority"),
    CASES,
    ids=[f"{i:02d}-{c[2]}-{c[3]}-{c[4]}" for i, c in enumerate(CASES)],
)
def test_default_rules_classify(rules, subject, body, category, subcategory, priority):
    decision = evaluate(rules, mail(subject, body))
    got = (decision.category, decision.subcategory, decision.priority)
    assert got == (category, subcategory, priority), "\n" + "\n".join(
        f"{o.rule_id}: {o.explanation}" for o in decision.outcomes if o.matched
    )


def test_cases_cover_every_category_and_priority():
    assert len(CASES) >= 40
    assert {c[2] for c in CASES} == {"technical", "usage", "account", "feature_request", "other"}
    assert {c[4] for c in CASES} == {"critical", "high", "medium", "low"}
    assert any("а" in c[1] for c in CASES)
    assert any("the" in c[1].lower() for c in CASES)


def test_critical_mail_is_escalated(rules):
    decision = evaluate(rules, mail("Платформа недоступна", "Сервис лежит"))
    assert decision.escalations == ("critical: platform unavailable",)


def test_automatic_mail_is_not_classified(rules):
    decision = evaluate(rules, mail("Auto: out of office", "I am away", mail_class="auto-reply"))
    assert decision.tags == ("automatic",)
    assert decision.hits == ("automatic-mail",)


def test_spam_flag_marks_spam_and_stops(rules):
    decision = evaluate(rules, mail("WIN", "cheap", headers=(("X-Spam-Flag", "YES"),)))
    assert decision.spam
    assert decision.hits == ("spam-flagged",)
