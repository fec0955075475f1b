"""Text matching for the rules: the per-mail word index, keyword lists, regexes.

Keywords are compared in a normalised form (lower case, ``ё`` as ``е``) against
a word index built once per text, so that hundreds of keyword rules cost a few
set look-ups each; regular expressions are pre-checked against that index and
searched only when their fixed text can be present.
"""

from __future__ import annotations

import functools
import importlib
import re
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

_WORD = re.compile(r"\w+")
_KEYWORD_WORD = re.compile(r"\w+\*?")
_BAD_STAR = re.compile(r"(?<!\w)\*|\*(?=[\w*])")


def strings(arg: object, what: str) -> tuple[str, ...]:
    """A string or a non-empty list of non-empty strings."""
    items = [arg] if isinstance(arg, str) else arg
    if not isinstance(items, list) or not items:
        raise ValueError(f"expected {what} or a list of them")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str | int) or isinstance(item, bool) or not str(item).strip():
            raise ValueError(f"expected {what}, got {item!r}")
        out.append(str(item).strip())
    return tuple(out)


def normalise(text: str) -> str:
    """The form keywords and text are compared in: lower case, ``ё`` as ``е``."""
    return text.lower().replace("ё", "е")


class WordIndex:
    """The distinct words of one text, normalised, for exact and prefix look-ups.

    Built from the distinct whitespace-separated tokens of the normalised
    text: far cheaper than tokenising the whole body with a regular expression.
    """

    __slots__ = ("_text", "raw", "sorted", "words")

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self._text: str | None = normalise(raw)
        # C-level loops only: split, set, filter; the few tokens with punctuation
        # inside ("e-mail", "(api)") are split on \W in one regex pass.
        tokens = set(self._text.split())
        words = set(filter(str.isalnum, tokens))  # \w is alphanumeric or "_"
        odd = tokens - words
        if odd:
            words.update(_WORD.findall(" ".join(odd)))
        self.words = frozenset(words)
        self.sorted: list[str] = sorted(words)

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = normalise(self.raw)
        return self._text

    def find(self, word: str, prefix: bool) -> str | None:
        """``word`` itself, or with ``prefix`` the first word starting with it."""
        if not prefix:
            return word if word in self.words else None
        i = bisect_left(self.sorted, word)
        if i < len(self.sorted):
            found: str = self.sorted[i]
            if found.startswith(word):
                return found
        return None


@functools.cache
def _caseless_safe(char: str) -> bool:
    """Whether every character ``re.IGNORECASE`` equates with ``char`` lowers to its lower.

    Then "``char.lower()`` occurs in ``text.lower()``" is a safe pre-check for the
    literal: false for ``s`` (long s), ``i`` (dotless i) and a few more.
    """
    if char.lower() == char.upper():
        return True
    target = char.lower()
    matches = re.findall(re.escape(char), _bmp(), re.IGNORECASE)
    return all(other.lower() == target for other in matches)


@functools.cache
def _bmp() -> str:
    return "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x10000)))


@dataclass(frozen=True, slots=True)
class Prechecks:
    """What every match of a pattern needs in the text, checked before searching.

    ``words`` must be words of the text, ``prefixes`` must start a word (both
    through the :class:`WordIndex`, in its normalised form), and ``literals``
    must occur in the lower-cased text (used only when no word is known).
    """

    words: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    literals: tuple[str, ...] = ()


def prechecks(pattern: str, flags: int = 0) -> Prechecks:
    """The :class:`Prechecks` of ``pattern``, read from the parse tree of ``re``.

    ``re._parser`` is private: on any surprise the answer is "no pre-check",
    which only costs speed. Runs of literal characters count in the top-level
    sequence, in groups and in repeats of at least one; a ``\\b`` next to a run
    closes the word at that end.
    """
    try:
        parser: Any = importlib.import_module("re._parser")
        tree = parser.parse(pattern, flags)
    except Exception:  # private API: fall back to always searching
        return Prechecks()
    runs: list[tuple[str, bool, bool]] = []

    def walk(items: Any) -> None:
        current: list[str] = []
        closed_before = False
        pending_boundary = False

        def cut(boundary_after: bool = False) -> None:
            nonlocal closed_before
            if current:
                runs.append(("".join(current), closed_before, boundary_after))
            current.clear()
            closed_before = False

        for op, av in items:
            name = str(op)
            if name == "LITERAL" and _caseless_safe(chr(av)):
                if not current:
                    closed_before = pending_boundary
                current.append(chr(av).lower())
                pending_boundary = False
                continue
            boundary = name == "AT" and str(av) == "AT_BOUNDARY"
            if name == "AT" and not boundary:
                continue  # other anchors are zero width and say nothing of words
            cut(boundary_after=boundary)
            pending_boundary = boundary
            if name == "SUBPATTERN":
                walk(av[-1])
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") and av[0] >= 1:
                walk(av[2])
        cut()

    walk(tree)
    words: set[str] = set()
    prefixes: set[str] = set()
    literals: set[str] = set()
    for run, closed_before, closed_after in runs:
        normal = run.replace("ё", "е")
        for match in _WORD.finditer(normal):
            left = match.start() > 0 or closed_before
            right = match.end() < len(normal) or closed_after
            if left and right:
                words.add(match.group(0))
            elif left:
                prefixes.add(match.group(0))
        if len(run) >= 3:
            literals.add(run)
    if words or prefixes:
        return Prechecks(frozenset(words), tuple(sorted(prefixes, key=len, reverse=True)[:3]))
    return Prechecks(literals=tuple(sorted(literals, key=len, reverse=True)[:2]))


class Regex:
    """A compiled case-insensitive pattern with cheap :class:`Prechecks`.

    Most rules' patterns do not occur in most mail: a set look-up in the word
    index says so far faster than a case-insensitive scan of the body.
    """

    __slots__ = ("checks", "pattern")

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.checks = prechecks(pattern.pattern, pattern.flags)

    def search(self, text: str, lowered: str, index: WordIndex) -> str | None:
        checks = self.checks
        if not checks.words <= index.words:
            return None
        for prefix in checks.prefixes:
            if index.find(prefix, True) is None:
                return None
        for literal in checks.literals:
            if literal not in lowered:
                return None
        match = self.pattern.search(text)
        return None if match is None else repr(match.group(0)[:60])


# -- keywords ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keywords:
    """A rule's keyword list, compiled once.

    Single words are one set operation on the word index, prefixes a binary
    search each; phrases are pre-filtered by their words and confirmed by one
    regular expression for all the phrases of the list.
    """

    exact: frozenset[str]
    prefixes: tuple[str, ...]
    phrases: tuple[tuple[frozenset[str], tuple[str, ...]], ...]
    phrase_regex: re.Pattern[str] | None

    def search(self, index: WordIndex) -> str | None:
        """The text that matched, or None."""
        if not self.exact.isdisjoint(index.words):
            return min(self.exact & index.words)
        ordered = index.sorted
        size = len(ordered)
        for prefix in self.prefixes:  # index.find, inlined: this is the hot loop
            i = bisect_left(ordered, prefix)
            if i < size and ordered[i].startswith(prefix):
                found: str = ordered[i]
                return found
        for words, prefixes in self.phrases:
            if words <= index.words and all(index.find(p, True) for p in prefixes):
                assert self.phrase_regex is not None
                match = self.phrase_regex.search(index.text)
                return match.group(0) if match else None
        return None


def compile_keywords(arg: object) -> Keywords:
    """Compile a keyword list (see the module docstring for the syntax)."""
    exact: set[str] = set()
    prefixes: list[str] = []
    phrases: list[tuple[frozenset[str], tuple[str, ...]]] = []
    patterns: list[str] = []
    for keyword in strings(arg, "a keyword"):
        text = normalise(keyword)
        tokens = _KEYWORD_WORD.findall(text)
        if not tokens or _BAD_STAR.search(text):
            raise ValueError(f"bad keyword {keyword!r}: '*' may only end a word")
        words = [(t.rstrip("*"), t.endswith("*")) for t in tokens]
        if len(words) == 1:
            word, prefix = words[0]
            if prefix:
                prefixes.append(word)
            else:
                exact.add(word)
            continue
        whole = frozenset(w for w, p in words if not p)
        phrases.append((whole, tuple(w for w, p in words if p)))
        patterns.append(r"\W+".join(re.escape(w) + (r"\w*" if p else "") for w, p in words))
    regex = re.compile(r"(?<!\w)(?:" + "|".join(patterns) + r")(?!\w)") if patterns else None
    return Keywords(frozenset(exact), tuple(prefixes), tuple(phrases), regex)
