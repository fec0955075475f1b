"""Which language to write to a customer in: Russian or English. Pure."""

from __future__ import annotations

SUPPORTED = ("en", "ru")

#: Share of Cyrillic among the letters from which a mail counts as Russian.
CYRILLIC_SHARE = 0.3


def detect(*texts: str) -> str:
    """ "ru" when enough of the letters are Cyrillic, else "en"."""
    letters = cyrillic = 0
    for text in texts:
        for ch in text[:5000]:
            if ch.isalpha():
                letters += 1
                if "\u0400" <= ch <= "\u04ff":
                    cyrillic += 1
    return "ru" if letters and cyrillic / letters >= CYRILLIC_SHARE else "en"


def hours_phrase(hours: float, language: str) -> str:
    """``within 8 hours`` / ``в течение 8 часов``, for the acknowledgement."""
    whole = int(hours)
    if hours != whole:
        minutes = round(hours * 60)
        return f"within {minutes} minutes" if language != "ru" else f"в течение {minutes} минут"
    if language == "ru":
        word = "часа" if whole % 10 == 1 and whole % 100 != 11 else "часов"
        return f"в течение {whole} {word}"
    return f"within {whole} hour" + ("" if whole == 1 else "s")


PRIORITY_NAMES = {
    "en": {"critical": "critical", "high": "high", "medium": "medium", "low": "low"},
    "ru": {"critical": "критический", "high": "высокий", "medium": "средний", "low": "низкий"},
}

STATUS_NAMES = {
    "en": {
        "new": "new",
        "assigned": "assigned",
        "in_progress": "in progress",
        "pending": "waiting for the customer",
        "resolved": "resolved",
        "closed": "closed",
        "reopened": "reopened",
    },
    "ru": {
        "new": "новый",
        "assigned": "назначен",
        "in_progress": "в работе",
        "pending": "ожидает ответа клиента",
        "resolved": "решён",
        "closed": "закрыт",
        "reopened": "переоткрыт",
    },
}
