"""Reads a satisfaction rating (1 to 5) from the start of a customer's reply. Pure.

The closing mail asks for a rating by reply. :func:`read_rating` takes the
customer's new text (quotes already stripped) and returns a :class:`Rating`,
or None when the reply is not a rating, in which case it belongs on the
ticket as an ordinary message.

The rating is the start of the first non-blank line, optionally after
``Rating:``/``Оценка:``. Whatever follows it on that line (less leading
separators such as ``-``, ``:``, ``,``) and the lines after it make the
comment.

=====  =====================================================================
score  accepted forms (case does not matter; ``ё`` may be written ``е``)
=====  =====================================================================
5      ``5``, ``5/5``, ``5 из 5``, ``5 out of 5``, ``5 stars``, ``5 звёзд``,
       ``5 баллов``, ``5★``; five, пять, пятёрка; excellent, great, perfect,
       awesome, amazing, fantastic, superb, very good; отлично, прекрасно,
       превосходно, великолепно, супер, очень хорошо;
       😀 😃 😄 😁 😍 🤩 🥰 ❤️ 👍
4      four, четыре, четвёрка; good, nice, not bad; хорошо, неплохо; 🙂 😊 ☺️
3      three, три, тройка; ok, okay, fine, average, so-so; нормально,
       ок, окей, средне, так себе; 😐 😑 😶
2      two, два, двойка; bad, poor; плохо, не очень; 🙁 ☹️ 😕 😞 😟
1      one, один, единица, кол; terrible, awful, horrible, very bad;
       ужасно, отвратительно, кошмар, очень плохо; 😡 😠 🤬 👎
=====  =====================================================================

Stars count: ``★★★★`` and ``⭐⭐⭐⭐`` are 4, ``★★★☆☆`` is 3. Adjective forms
(``отличная работа``, ``great job``, ``terrible service``) count as the word.
A run of faces that disagree (``🙂😡``) is no rating. The faces follow the
usual five-face scale (😡 🙁 😐 🙂 😀); thumbs are the two ends of it, as in
thumbs-up/down surveys.

Conservative by design, since a wrongly read rating hides a real message:

* a digit must stand alone: ``5 users cannot log in``, ``2 questions:``,
  ``10``, ``0``, ``1.5 GB``, ``5:30``, ``12.03``, ``1-2 days`` and ``3/10`` are
  no rating. After a digit, ``.`` and ``)`` only end a bare rating (``5.``),
  because ``1. The login fails`` and ``1) ...`` are numbered lists;
* a word must be followed by punctuation, an emoji or the end of the line:
  ``Good morning``, ``Great news: it is broken again`` are no rating;
* everyday words (ok, okay, fine, good, nice, ок, окей, хорошо, нормально,
  неплохо) count only alone on the first line, give or take punctuation and
  emoji: ``Ok, I tried again`` is a message, ``OK!`` with a comment on the
  next line is a 3;
* faces and stars are unambiguous: text may follow them directly
  (``👍 thanks``), but not a digit (``★ 5``);
* the rating must open the reply: ``Hi,\\n5`` or a sentence with ``good`` in
  it is no rating.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Rating:
    score: int
    comment: str


_WORDS: Final[dict[str, int]] = {
    # English
    "five": 5,
    "excellent": 5,
    "great": 5,
    "perfect": 5,
    "awesome": 5,
    "amazing": 5,
    "fantastic": 5,
    "superb": 5,
    "very good": 5,
    "four": 4,
    "good": 4,
    "nice": 4,
    "not bad": 4,
    "three": 3,
    "ok": 3,
    "okay": 3,
    "fine": 3,
    "average": 3,
    "so-so": 3,
    "so so": 3,
    "two": 2,
    "bad": 2,
    "poor": 2,
    "one": 1,
    "terrible": 1,
    "awful": 1,
    "horrible": 1,
    "very bad": 1,
    # Russian
    "пять": 5,
    "пятерка": 5,
    "отлично": 5,
    "прекрасно": 5,
    "превосходно": 5,
    "великолепно": 5,
    "супер": 5,
    "очень хорошо": 5,
    "четыре": 4,
    "четверка": 4,
    "хорошо": 4,
    "неплохо": 4,
    "три": 3,
    "тройка": 3,
    "нормально": 3,
    "ок": 3,
    "окей": 3,
    "средне": 3,
    "так себе": 3,
    "два": 2,
    "двойка": 2,
    "плохо": 2,
    "не очень": 2,
    "один": 1,
    "единица": 1,
    "кол": 1,
    "ужасно": 1,
    "отвратительно": 1,
    "кошмар": 1,
    "очень плохо": 1,
}

#: Words that open ordinary sentences too: they count only alone on the line.
_EVERYDAY: Final = frozenset(
    {"ok", "okay", "fine", "good", "nice", "ок", "окей", "хорошо", "нормально", "неплохо"}
)

#: Russian adjective stems: ``отличн|ая работа`` reads as ``отлично``.
_STEMS: Final[dict[str, str]] = {
    "отличн": "отлично",
    "прекрасн": "прекрасно",
    "превосходн": "превосходно",
    "великолепн": "великолепно",
    "хорош": "хорошо",
    "нормальн": "нормально",
    "плох": "плохо",
    "ужасн": "ужасно",
    "отвратительн": "отвратительно",
}
_ENDINGS: Final = "(?:ая|ый|ой|ое|ий|ее|о)"
_NOUNS: Final = (
    r"(?:\s+(?:job|work|service|support|help|experience|"
    r"работа|сервис|поддержка|помощь|обслуживание))?"
)

_EMOJI: Final[dict[str, int]] = {
    **dict.fromkeys("😀😃😄😁😍🤩🥰❤👍", 5),
    **dict.fromkeys("🙂😊☺", 4),
    **dict.fromkeys("😐😑😶", 3),
    **dict.fromkeys("🙁☹😕😞😟", 2),
    **dict.fromkeys("😡😠🤬👎", 1),
}
_MODIFIERS: Final = "\ufe0f\U0001f3fb\U0001f3fc\U0001f3fd\U0001f3fe\U0001f3ff"

_PREFIX: Final = re.compile(
    r"(?:(?:my\s+)?(?:rating|score)|(?:моя\s+)?оценка)\s*[:\-–—]?\s*", re.IGNORECASE
)
_STARS: Final = re.compile(r"([★⭐]\ufe0f?)+(☆\ufe0f?)*")
_FACES: Final = re.compile(f"(?:[{''.join(_EMOJI)}][{_MODIFIERS}]*)+")
_SCALE: Final = r"(?:\s*(?:/|из|of|out\s+of)\s*5(?!\d))?"
_UNIT: Final = r"(?:\s*(?:stars?|зв[её]зд[аы]?|балл(?:а|ов)?|points?|[★⭐]\ufe0f?))?"
_DIGIT: Final = re.compile(rf"([1-5])(?!\w){_SCALE}{_UNIT}(?![\w])\+?", re.IGNORECASE)
_PHRASES: Final = "|".join(
    [re.escape(w).replace(r"\ ", r"\s+") for w in sorted(_WORDS, key=len, reverse=True)]
    + [stem + _ENDINGS for stem in _STEMS]
).replace("е", "[её]")
_WORD: Final = re.compile(
    rf"({_PHRASES})(?![\w-]){_NOUNS}(?:\s+(?:out\s+of|из)\s+(?:five|пяти))?{_UNIT}(?![\w])",
    re.IGNORECASE,
)

_SEPARATORS: Final = "-–—:,;!.)"
_LEAD: Final = re.compile(rf"[\s{re.escape(_SEPARATORS)}]*")


def _word_score(found: str) -> int | None:
    key = re.sub(r"\s+", " ", found.lower()).replace("ё", "е")
    if key in _WORDS:
        return _WORDS[key]
    for stem, word in _STEMS.items():
        if re.fullmatch(stem + _ENDINGS, key):
            return _WORDS[word]
    return None


def _bare(text: str) -> bool:
    """No letters or digits: punctuation, emoji and spaces only."""
    return not any(char.isalnum() for char in text)


def _is_emoji(char: str) -> bool:
    return char in _EMOJI or char in "★⭐" or 0x1F000 <= ord(char) <= 0x1FAFF


def _after_digit(rest: str) -> bool:
    """Whether ``rest``, what follows a digit on its line, leaves the digit a rating."""
    text = rest.lstrip()
    if not text:
        return True
    if _is_emoji(text[0]):
        return True
    if text[0] not in _SEPARATORS:
        return False  # "5 users", "5% of", "5/03"
    if text[0] in ".)" and not _bare(text):
        return False  # "1. The login fails", "1) ..."
    after = _LEAD.sub("", text, count=1)
    return not after[:1].isdigit()  # "1.5 GB", "5:30", "1-2 days", "5, 000"


def _after_word(rest: str, everyday: bool) -> bool:
    """Whether ``rest``, what follows a word on its line, leaves the word a rating."""
    text = rest.lstrip()
    if everyday:
        return _bare(text)  # "Ok!", "Хорошо :)"; not "Ok, I tried again"
    return not text or _is_emoji(text[0]) or text[0] in _SEPARATORS


def _rating_at(line: str) -> tuple[int, int] | None:
    """The score at the start of ``line`` and where it ends, if the line opens with one."""
    if match := _STARS.match(line):
        filled = sum(1 for c in match.group() if c in "★⭐")
        total = len(match.group().replace("\ufe0f", ""))
        if total > 5 or line[match.end() :].lstrip()[:1].isdigit():
            return None  # "★★★★★★", "★ 5"
        return filled, match.end()
    if match := _FACES.match(line):
        scores = {_EMOJI[c] for c in match.group() if c in _EMOJI}
        return (scores.pop(), match.end()) if len(scores) == 1 else None
    if match := _DIGIT.match(line):
        if not _after_digit(line[match.end() :]):
            return None
        return int(match.group(1)), match.end()
    if match := _WORD.match(line):
        score = _word_score(match.group(1))
        everyday = match.group(1).lower() in _EVERYDAY and match.end() == match.end(1)
        if score is None or not _after_word(line[match.end() :], everyday):
            return None
        return score, match.end()
    return None


def read_rating(text: str) -> Rating | None:
    """The rating that opens ``text``, with the rest as its comment, or None."""
    lines = text.strip().splitlines()
    if not lines:
        return None
    first = lines[0].strip()
    if prefix := _PREFIX.match(first):
        first = first[prefix.end() :]
    found = _rating_at(first)
    if found is None:
        return None
    score, end = found
    rest = _LEAD.sub("", first[end:], count=1)
    comment = "\n".join([rest, *lines[1:]]).strip()
    return Rating(score, comment)
