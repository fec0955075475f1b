"""Unit and property tests for mailbot.filenames (B-06, B-08)."""

from __future__ import annotations

import random

import pytest

from mailbot.filenames import MAX_FILENAME_BYTES, sanitize_filename, unique_filename

_FORBIDDEN = [
    "/",
    "\\",
    "\x00",
    "\r",
    "\n",
    "\u202e",
    "\u202a",
    "\u2066",
    "\u2069",
    "\u200e",
    "\u200f",
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("/abs/path/file.txt", "file.txt"),
        ("C:\\Windows\\evil.exe", "evil.exe"),
        ("bad\x00name.txt", "badname.txt"),
        ("line1\r\nline2.txt", "line1line2.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("a\u200fb\u2066c\u2069.txt", "abc.txt"),
        (".hidden", "hidden"),
        ("...", "attachment-1.bin"),
        ("", "attachment-1.bin"),
        (None, "attachment-1.bin"),
        ("dir/", "attachment-1.bin"),
        ("  spaced   name .txt ", "spaced name .txt"),
        ("見積書.pdf", "見積書.pdf"),
    ],
)
def test_sanitize_filename(raw: str | None, expected: str) -> None:
    assert sanitize_filename(raw, "attachment-1.bin") == expected


@pytest.mark.parametrize("char", ["a", "é", "見", "😀"])
def test_long_names_truncated_by_bytes_keeping_extension(char: str) -> None:
    name = sanitize_filename(char * 400 + ".pdf", "x.bin")
    assert len(name.encode("utf-8")) <= MAX_FILENAME_BYTES
    assert name.endswith(".pdf")
    assert name.startswith(char)
    name.encode("utf-8").decode("utf-8")  # never split inside a character


def test_unique_filename_disambiguates_case_insensitively() -> None:
    used: set[str] = set()
    got = [unique_filename(n, used) for n in ["a.txt", "A.txt", "a.txt", "b", "b"]]
    assert got == ["a.txt", "A (2).txt", "a (3).txt", "b", "b (2)"]


def test_unique_filename_stays_within_byte_limit() -> None:
    used: set[str] = set()
    name = sanitize_filename("é" * 300 + ".txt", "x")
    first = unique_filename(name, used)
    second = unique_filename(name, used)
    assert first != second
    assert second.endswith(" (2).txt")
    assert len(second.encode("utf-8")) <= MAX_FILENAME_BYTES


_ALPHABET = (
    "abcXYZ019._-/\\ \t\r\n\x00\x01\x1f\x7f\x85\u202a\u202e\u2066\u2069\u200e\u200féßж見😀\ufeff."
)


@pytest.mark.parametrize("seed", range(200))
def test_property_sanitized_names_are_safe(seed: int) -> None:
    rng = random.Random(seed)
    raw = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 400)))
    name = sanitize_filename(raw, f"attachment-{seed}.bin")
    assert name
    assert not any(bad in name for bad in _FORBIDDEN)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name)
    assert not name.startswith(".")
    assert len(name.encode("utf-8")) <= MAX_FILENAME_BYTES
    assert sanitize_filename(name, "other.bin") == name  # idempotent
