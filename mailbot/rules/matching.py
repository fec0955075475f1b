"""Text matching for the rules: the per-mail word index, keyword lists, regexes.

Keywords are compared in a normalised form (lower case, ``ё`` as ``е``) against
a word index built once per text, so that hundreds of keyword rules cost a few
set look-ups each; regular expressions are pre-checked against that index and
searched only when their fixed text can be present.

Keyword lists and regexes also say what they :data:`Needs` in a text (words,
word starts): the rule index (``rules/index.py``) looks those up once per mail
for all rules together and runs only the rules that can match.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from itertools import chain
from typing import Any, Final

_WORD = re.compile(r"\w+")
_KEYWORD_WORD = re.compile(r"\w+\*?")
_BAD_STAR = re.compile(r"(?<!\w)\*|\*(?=[\w*])")
#: Punctuation often glued to words; none of it is \w, so it may become a space.
_SEPARATORS: Final = ".,;:!?()\"'"


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


#: Kinds of :data:`Token`: a word of the subject or the body, a word start
#: (``недоступ*``), a header name, the sender's address, a domain the sender's
#: domain is or is under, a recipient's address. Values are in their compared form
#: (normalised words, lower-case names and addresses).
SUBJECT_WORD: Final = "subject"
SUBJECT_PREFIX: Final = "subject*"
BODY_WORD: Final = "body"
BODY_PREFIX: Final = "body*"
HEADER: Final = "header"
SENDER: Final = "sender"
DOMAIN: Final = "domain"
RECIPIENT: Final = "recipient"
Token = tuple[str, str]
#: What a condition needs in a mail to hold: every token of at least one
#: alternative. None (where ``Needs | None`` is used) means "cannot tell": the
#: condition is always tested.
Needs = tuple[frozenset[Token], ...]


def any_of(kind: str, values: Iterable[str]) -> Needs:
    """Needs met by any one of ``values`` of ``kind``."""
    return tuple(frozenset({(kind, value)}) for value in sorted(set(values)))


def normalise(text: str) -> str:
    """The form keywords and text are compared in: lower case, ``ё`` as ``е``."""
    return text.lower().replace("ё", "е")


def _split_words(tokens: Iterable[str]) -> set[str]:
    """The ``\\w+`` words of ``tokens`` that are not words themselves ("e-mail", "api.")."""
    text = " ".join(tokens)
    for separator in _SEPARATORS:  # str.replace is far cheaper than a regex per character
        if separator in text:
            text = text.replace(separator, " ")
    parts = set(text.split())
    words = set(filter(str.isalnum, parts))
    if len(words) < len(parts):
        words.update(_WORD.findall(" ".join(parts - words)))
    return words


class WordIndex:
    """The distinct words of one text, normalised, for exact and prefix look-ups.

    Built from the distinct whitespace-separated tokens of the normalised
    text: far cheaper than tokenising the whole body with a regular expression.

    Word starts: :meth:`starting` finds all the prefixes of a :class:`PrefixTable`
    in one pass and remembers which are present; :meth:`find` looks a word
    start up as a substring (``"\\n" + prefix``) of the words joined by newlines.
    """

    __slots__ = ("_first", "_joined", "_known", "_present", "lowered", "raw", "text", "words")

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self.lowered = raw.lower()
        self.text = self.lowered.replace("ё", "е")  # normalise(raw)
        # C-level loops only: split, set, filter. Splitting on " " alone is cheaper
        # than on any whitespace; the tokens with other whitespace ("a\tb") or with
        # punctuation ("e-mail", "(api)") are not alphanumeric and are split apart
        # by _split_words.
        spaced = self.text.replace("\n", " ") if "\n" in self.text else self.text
        tokens = set(spaced.split(" "))
        words = set(filter(str.isalnum, tokens))  # \w is alphanumeric or "_"
        if len(words) < len(tokens):
            words |= _split_words(tokens - words)
        #: The words (a set, not to be changed).
        self.words: AbstractSet[str] = words
        self._joined: str | None = None
        self._known: Mapping[str, int] = {}
        self._present: frozenset[str] = frozenset()
        self._first: dict[str, str | None] = {}

    @property
    def joined(self) -> str:
        """Every word after a newline: ``"\\nword\\nword..."``."""
        if self._joined is None:
            self._joined = "\n" + "\n".join(self.words) if self.words else ""
        return self._joined

    def find(self, word: str, prefix: bool) -> str | None:
        """``word`` itself, or with ``prefix`` the first word (code point order) with it."""
        if not prefix:
            return word if word in self.words else None
        if word in self._known and word not in self._present:
            return None
        if word in self._first:
            return self._first[word]
        joined, key = self.joined, "\n" + word
        at = joined.find(key)
        first: str | None = None
        while at >= 0:
            end = joined.find("\n", at + 1)
            found = joined[at + 1 : end] if end >= 0 else joined[at + 1 :]
            if first is None or found < first:
                first = found
            at = joined.find(key, end) if end >= 0 else -1
        self._first[word] = first
        return first

    def starting(self, table: PrefixTable) -> list[int]:
        """The ids of the ``table`` prefixes that start a word of this text.

        Later :meth:`find` calls for absent prefixes of the table return at once.
        """
        present = table.present(self.joined)
        self._known, self._present = table.ids, present
        return list(map(table.ids.__getitem__, present))


class PrefixTable:
    """Word starts to look up in one text at once, each with its token id.

    Compiled into one regular expression, a trie (``недоступ(?:н(?:ый|ая)|)``),
    that finds the longest table prefix of every word in a single C-level pass
    over the words; the shorter table prefixes of that prefix follow from it.
    """

    __slots__ = ("_pattern", "_within", "ids")

    def __init__(self, ids: Mapping[str, int]) -> None:
        self.ids = dict(ids)
        #: Each prefix's own prefixes (itself included) that are in the table.
        self._within = {p: tuple(p[:n] for n in range(1, len(p) + 1) if p[:n] in ids) for p in ids}
        self._pattern: re.Pattern[str] | None = None
        if ids:
            try:
                self._pattern = re.compile("\n(" + _trie(sorted(ids)) + ")")
            except (RecursionError, re.error, OverflowError):  # absurdly deep: slow path
                self._pattern = None

    def present(self, joined: str) -> frozenset[str]:
        """The table prefixes that start a word of ``joined`` (see :attr:`WordIndex.joined`)."""
        if not self.ids:
            return frozenset()
        if self._pattern is None:
            return frozenset(p for p in self.ids if "\n" + p in joined)
        longest = set(self._pattern.findall(joined))
        return frozenset(chain.from_iterable(map(self._within.__getitem__, longest)))


def _trie(words: Sequence[str]) -> str:
    """A regex matching the longest of ``words`` (sorted, distinct, non-empty) at a position."""
    branches: dict[str, list[str]] = {}
    ends = False
    for word in words:
        if word:
            branches.setdefault(word[0], []).append(word[1:])
        else:
            ends = True
    alternatives = [re.escape(char) + _trie(rests) for char, rests in branches.items()]
    if not alternatives:
        return ""
    body = alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"
    return f"(?:{body}|)" if ends else body


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

    def needs(self, word_kind: str, prefix_kind: str) -> Needs | None:
        """The words and word starts every match needs, or None when only literals are known."""
        checks = self.checks
        if not checks.words and not checks.prefixes:
            return None
        tokens = {(word_kind, w) for w in checks.words}
        tokens.update((prefix_kind, p) for p in checks.prefixes)
        return (frozenset(tokens),)


# -- keywords ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keywords:
    """A rule's keyword list, compiled once.

    Single words are one set operation on the word index, prefixes a look-up
    each (answered from memory for the prefixes of the rule index's table);
    phrases are pre-filtered by their words and confirmed by one regular
    expression for all the phrases of the list.
    """

    exact: frozenset[str]
    prefixes: tuple[str, ...]
    phrases: tuple[tuple[frozenset[str], tuple[str, ...]], ...]
    phrase_regex: re.Pattern[str] | None

    def search(self, index: WordIndex) -> str | None:
        """The text that matched, or None."""
        if not self.exact.isdisjoint(index.words):
            return min(self.exact & index.words)
        for prefix in self.prefixes:
            found = index.find(prefix, True)
            if found is not None:
                return found
        for words, prefixes in self.phrases:
            if words <= index.words and all(index.find(p, True) for p in prefixes):
                assert self.phrase_regex is not None
                match = self.phrase_regex.search(index.text)
                return match.group(0) if match else None
        return None

    def needs(self, word_kind: str, prefix_kind: str) -> Needs:
        """One alternative per keyword: its word, its word start, or a phrase's words."""
        alternatives = [*any_of(word_kind, self.exact), *any_of(prefix_kind, self.prefixes)]
        for words, prefixes in self.phrases:
            tokens = {(word_kind, w) for w in words}
            tokens.update((prefix_kind, p) for p in prefixes)
            alternatives.append(frozenset(tokens))
        return tuple(alternatives)


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
