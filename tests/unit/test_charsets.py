"""Unit and property tests for mailbot.charsets (B-27, B-28, B-29, B-31)."""

from __future__ import annotations

import random

import pytest

from mailbot.charsets import decode_header_value, decode_text, resolve_codec, scrub


@pytest.mark.parametrize(
    ("label", "data", "text", "fallback"),
    [
        ("utf-8", "héllo".encode(), "héllo", None),
        ("UTF8", "héllo".encode(), "héllo", None),
        (None, b"plain ascii", "plain ascii", None),
        (None, "ünïcode".encode(), "ünïcode", None),
        (None, "café".encode("cp1252"), "café", "charset:(none)->cp1252"),
        ("", "café".encode("cp1252"), "café", "charset:(none)->cp1252"),
        ("x-user-defined", "€5".encode("cp1252"), "€5", "charset:x-user-defined->cp1252"),
        ("unknown-8bit", "naïve".encode("cp1252"), "naïve", "charset:unknown-8bit->cp1252"),
        ("windows-874", "สวัสดี".encode("cp874"), "สวัสดี", "charset:windows-874->cp874"),
        ("iso-8859-8-i", "שלום".encode("iso-8859-8"), "שלום", "charset:iso-8859-8-i->iso8859-8"),
        ("default", "Grüße".encode(), "Grüße", "charset:default->utf-8"),
        ("cp-850", "Señor".encode("cp850"), "Señor", "charset:cp-850->cp850"),
        ("uft-8", "Привет".encode(), "Привет", "charset:uft-8->utf-8"),
        ("utf8mb3", "Å".encode(), "Å", "charset:utf8mb3->utf-8"),
        ("x-mac-roman", "Café".encode("mac_roman"), "Café", "charset:x-mac-roman->mac-roman"),
        ("no-such-charset", b"abc", "abc", "charset:no-such-charset->utf-8"),
        ("no-such-charset", b"caf\xe9", "café", "charset:no-such-charset->cp1252"),
        ("utf-8", b"caf\xe9", "café", "charset:utf-8->cp1252"),
        ("koi8-r", "Привет".encode("koi8-r"), "Привет", None),
        ("iso-2022-jp", "日本語".encode("iso-2022-jp"), "日本語", None),
        ("gb2312", "中文".encode("gb2312"), "中文", None),
        ("shift_jis", "日本語".encode("shift_jis"), "日本語", None),
        ("iso-8859-1", b"caf\xe9 \x80", "café €", None),
    ],
)
def test_decode_text(label: str | None, data: bytes, text: str, fallback: str | None) -> None:
    decoded = decode_text(data, label)
    assert decoded.text == text
    assert decoded.fallback == fallback


@pytest.mark.parametrize("label", ["unicode_escape", "raw-unicode-escape", "undefined", "base64"])
def test_dangerous_codecs_are_never_used(label: str) -> None:
    assert resolve_codec(label)[0] is None
    assert decode_text(b"\\x41\\u0042", label).text == "\\x41\\u0042"


def test_scrub_removes_nul_and_lone_surrogates() -> None:
    assert scrub("a\x00b\ud800c\udfffd") == "ab\ufffdc\ufffdd"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain", "plain"),
        ("=?utf-8?q?caf=C3=A9?=", "café"),
        ("=?ISO-8859-1?Q?Gr=FC=DFe?= an alle", "Grüße an alle"),
        ("=?utf-8?b?8J+Y?= =?utf-8?b?gA==?=", "😀"),  # multibyte char split across words
        ("=?UTF-8?B?5pel5pys?=\r\n =?UTF-8?B?6Kqe?=", "日本語"),
        ("=?utf-8?q?hello world?=", "hello world"),  # space inside an encoded word
        ("=?UTF-8?B?PT9VVEYtOD9RP2Nhc2VfZG91YmxlPz0=?=", "case double"),  # double encoding
        ("=?utf-8?q?broken", "=?utf-8?q?broken"),
        ("=?utf-8?b?###?=", "=?utf-8?b?###?="),
        ("=?koi8-r?b?8NLJ18XU?=", "Привет"),
        ("a =?utf-8?q?b?= c", "a b c"),
        ("Ren\udce9", "René"),  # raw 8-bit octet read with surrogateescape
        ("caf\udcc3\udca9", "café"),
        ("x\x00y", "xy"),
        ("=?utf-7?q?+2D0-?=", "\ufffd"),
    ],
)
def test_decode_header_value(raw: str, expected: str) -> None:
    assert decode_header_value(raw) == expected


_PIECES = [
    "=?", "?=", "?q?", "?b?", "?Q?", "utf-8", "x-user-defined", "=C3", "=A9", "_", " ",
    "\r\n ", "abc", "\udce9", "\x00", "8J+Y", "==", "=?utf-8?b?", "=?utf-7?q?+2D0-?=", "?",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(300))
def test_property_header_decoding_never_raises_nor_leaks(seed: int) -> None:
    rng = random.Random(seed)
    raw = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 40)))
    notes: list[str] = []
    out = decode_header_value(raw, notes)
    assert "\x00" not in out
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in out)
    assert "\n" not in out


@pytest.mark.parametrize("seed", range(200))
def test_property_decode_text_never_raises(seed: int) -> None:
    rng = random.Random(seed)
    data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    label = rng.choice(
        [None, "", "utf-8", "utf-7", "utf-16", "x-user-defined", "bogus", "iso-2022-jp", "ascii"]
    )
    out = decode_text(data, label).text
    assert "\x00" not in out
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in out)
