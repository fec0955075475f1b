"""Attachment filenames as safe display metadata (B-06, B-08).

A filename from a mail is never a path: attachments are stored under generated
names. What is kept is a label that is safe to show and to store in a bounded
column: no directory parts, no control or bidi characters, no leading dots, at
most :data:`MAX_FILENAME_BYTES` bytes of UTF-8, unique within one mail.
"""

from __future__ import annotations

import re
from typing import Final

#: Longest filename kept, in bytes of UTF-8.
MAX_FILENAME_BYTES: Final = 200

#: Longest extension kept when truncating, in characters (including the dot).
_MAX_EXT_CHARS: Final = 16

_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)
_SPACES = re.compile(r"\s+")


def _fit_bytes(text: str, budget: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 form fits ``budget`` bytes."""
    data = text.encode("utf-8")
    if len(data) <= budget:
        return text
    return data[: max(budget, 0)].decode("utf-8", errors="ignore")


def _split_ext(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) + 1 > _MAX_EXT_CHARS or not ext.strip():
        return name, ""
    return stem, "." + ext


def _truncate(name: str, budget: int = MAX_FILENAME_BYTES) -> str:
    if len(name.encode("utf-8")) <= budget:
        return name
    stem, ext = _split_ext(name)
    ext = _fit_bytes(ext, budget // 2)
    stem = _fit_bytes(stem, budget - len(ext.encode("utf-8"))).rstrip()
    return stem + ext


def sanitize_filename(name: str | None, fallback: str) -> str:
    """``name`` made safe to display and store; ``fallback`` when nothing is left.

    Directory parts (``/`` and ``\\``) are dropped (only the last component is
    kept), as are NUL, control characters, CR/LF, bidi controls and leading dots.
    The result is at most 200 bytes of UTF-8, cut on a character boundary,
    keeping the extension.
    """
    text = name or ""
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = _UNSAFE.sub("", text)
    text = _SPACES.sub(" ", text).strip()
    text = text.lstrip(". ").rstrip(" ")
    if not text or not text.strip("."):
        return _truncate(_UNSAFE.sub("", fallback.replace("/", "_").replace("\\", "_")))
    return _truncate(text)


def unique_filename(name: str, used: set[str]) -> str:
    """``name``, or ``name (2).ext``, ``name (3).ext`` ... not yet in ``used``.

    Comparison is case-insensitive; the chosen name is added to ``used``
    (lower-cased) and still fits :data:`MAX_FILENAME_BYTES`.
    """
    candidate = name
    counter = 1
    while candidate.lower() in used:
        counter += 1
        stem, ext = _split_ext(name)
        suffix = f" ({counter}){ext}"
        stem = _fit_bytes(stem, MAX_FILENAME_BYTES - len(suffix.encode("utf-8")))
        candidate = stem + suffix
    used.add(candidate.lower())
    return candidate
