"""Tests for mailbot.parse: one fixture per BAD_INPUTS row (B-05..B-37), plus bombs.

The fixtures in tests/data/emails were written by us for these tests.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailbot.errors import LimitExceededError, ParseError
from mailbot.filenames import MAX_FILENAME_BYTES
from mailbot.message import Address, ParsedMessage, ParseLimits
from mailbot.parse import parse

EMAILS = Path(__file__).resolve().parents[1] / "data" / "emails"


def load(name: str) -> ParsedMessage:
    return parse((EMAILS / name).read_bytes())


def strings_of(msg: ParsedMessage) -> list[str]:
    """Every str reachable from a ParsedMessage (including nested ones)."""
    found: list[str] = []

    def visit(value: object) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, tuple | list):
            for item in value:
                visit(item)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                visit(getattr(value, f.name))

    visit(msg)
    return found


def assert_clean(msg: ParsedMessage) -> None:
    for text in strings_of(msg):
        assert "\x00" not in text
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text), text


ALL_FIXTURES = sorted(p.name for p in EMAILS.glob("*.eml"))


def test_fixtures_present() -> None:
    rows = {name.split("-", 1)[0] for name in ALL_FIXTURES}
    assert rows >= {
        "b05", "b06", "b07", "b08", "b16", "b24", "b27", "b28", "b29", "b30", "b31",
        "b32", "b34", "b35", "b36", "b37",
    }  # fmt: skip


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_fixture_parses_clean(name: str) -> None:
    msg = load(name)
    assert_clean(msg)
    assert len(msg.headers) <= 500
    for att in msg.attachments:
        assert "/" not in att.filename
        assert "\\" not in att.filename
        assert len(att.filename.encode()) <= MAX_FILENAME_BYTES
        assert att.content_type == att.content_type.lower()
    if msg.html is not None:
        assert "<script" not in msg.html.lower()
    assert msg.date is None or msg.date.tzinfo == UTC


# B-05: HTML/SVG/lying attachments stay attachments with their declared type.
def test_b05_html_and_svg_attachments_are_not_bodies() -> None:
    msg = load("b05-html-svg-attachments.eml")
    assert msg.html is None
    assert msg.text.strip() == "Hello, see attached."
    assert [(a.filename, a.content_type) for a in msg.attachments] == [
        ("page.html", "text/html"),
        ("logo.svg", "image/svg+xml"),
        ("invoice.pdf", "application/pdf"),
    ]
    assert msg.attachments[0].payload == b"<script>alert(1)</script><p>hi</p>"
    assert not any(a.inline for a in msg.attachments)


# B-06: hostile filenames become safe display metadata.
def test_b06_filenames_sanitised() -> None:
    names = [a.filename for a in load("b06-filename-traversal.eml").attachments]
    assert names[:7] == [
        "passwd",
        "shell.php",
        "evil.dll",
        "badname.txt",
        "line1line2.txt",
        "invoicefdp.exe",
        "leftmark.txt",
    ]
    assert len(names[7].encode()) <= MAX_FILENAME_BYTES
    assert names[7].endswith(".pdf")
    assert names[8:] == ["attachment-9.bin", "attachment-10.bin", "hidden"]
    assert len(set(names)) == len(names)


# B-07: dangerous extensions never abort parsing; every part is kept.
def test_b07_dangerous_extensions_kept() -> None:
    msg = load("b07-dangerous-extensions.eml")
    assert [a.filename for a in msg.attachments] == [
        "shell.php",
        "shell.pht",
        "setup.exe",
        "page.html",
        "weird.xyz",
    ]
    assert msg.attachments[0].payload.startswith(b"<?php")
    assert msg.attachments[2].payload == b"MZ\x90\x00binary"


# B-08: RFC 2231 / RFC 2047 names decoded, duplicates disambiguated.
def test_b08_encoded_and_duplicate_filenames() -> None:
    names = [a.filename for a in load("b08-rfc2231-filenames.eml").attachments]
    assert names == [
        "見積書.pdf",
        "Zgłoszenie błędu.pdf",
        "Grüße Müller.txt",
        "report.pdf",
        "Report (2).pdf",
        "report (3).pdf",
    ]


# B-16: ambiguous From never yields a guessed sender.
@pytest.mark.parametrize(
    "name",
    [
        "b16-from-two-addr-specs.eml",
        "b16-from-paren.eml",
        "b16-from-several.eml",
        "b16-from-group.eml",
        "b16-from-empty.eml",
        "b16-from-empty-quoted-local.eml",
        "b16-from-non-ascii-local.eml",
        "b16-from-no-domain.eml",
        "b36-missing-from-to-date.eml",
    ],
)
def test_b16_ambiguous_from_has_no_sender(name: str) -> None:
    msg = load(name)
    assert msg.sender is None


def test_b16_from_header_kept_decoded() -> None:
    assert load("b16-from-two-addr-specs.eml").from_header == "a@example.com <b@example.net>"
    assert load("b16-from-several.eml").from_header == "a@example.com, b@example.net"


def test_b16_valid_from_is_parsed_with_domain_lowercased() -> None:
    msg = load("b16-from-valid.eml")
    assert msg.sender == Address("Joerg.Mueller@example.com", "Jörg Müller")
    assert msg.to == (Address("support@example.org", "Support"),)


# B-24: missing, empty, duplicated or absurd Message-ID.
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("b24-message-id-empty.eml", None),
        ("b24-message-id-missing.eml", None),
        ("b24-message-id-duplicate.eml", "first@example.com"),
        ("b24-message-id-long.eml", "x" * 2048 + "@example.com"),
    ],
)
def test_b24_message_id(name: str, expected: str | None) -> None:
    assert load(name).message_id == expected


# B-27: bogus charset labels decode with a recorded fallback, never raise.
@pytest.mark.parametrize(
    ("label", "text", "fallback"),
    [
        ("x-user-defined", "Café €5", "charset:x-user-defined->cp1252"),
        ("unknown-8bit", "Café naïve", "charset:unknown-8bit->cp1252"),
        ("windows-874", "สวัสดี", "charset:windows-874->cp874"),
        ("iso-8859-8-i", "שלום", "charset:iso-8859-8-i->iso8859-8"),
        ("default", "Grüße", "charset:default->utf-8"),
        ("cp-850", "Señor", "charset:cp-850->cp850"),
        ("uft-8", "Привет", "charset:uft-8->utf-8"),
        ("utf8mb3", "Ångström", "charset:utf8mb3->utf-8"),
        ("x-mac-roman", "Café", "charset:x-mac-roman->mac-roman"),
        ("empty", "Café", "charset:(none)->cp1252"),
        ("utf8-invalid-bytes", "naïve café", "charset:utf-8->cp1252"),
    ],
)
def test_b27_bogus_charsets(label: str, text: str, fallback: str) -> None:
    msg = load(f"b27-charset-{label}.eml")
    assert msg.text.strip() == text
    assert fallback in msg.fallbacks


# B-28: raw 8-bit headers and body without declaration, parsed from bytes.
def test_b28_undeclared_8bit() -> None:
    msg = load("b28-undeclared-8bit.eml")
    assert msg.subject == "Résumé à voir"
    assert msg.sender == Address("rene@example.com", "René")
    assert msg.text.strip() == "Voilà le résumé."
    assert msg.header("X-Utf8") == "café"
    assert "charset:(none)->cp1252" in msg.fallbacks


def test_b28_str_input_is_refused() -> None:
    with pytest.raises(ParseError):
        parse("From: a@example.com\r\n\r\nbody")  # type: ignore[arg-type]


# B-29: malformed RFC 2047, best effort.
def test_b29_malformed_encoded_words() -> None:
    msg = load("b29-malformed-rfc2047.eml")
    assert msg.subject == "日本語café"
    assert msg.header("X-Emoji") == "😀"
    assert msg.header("X-Double") == "case double"
    assert (msg.header("X-Broken") or "").startswith("=?utf-8?q?unterminated and abc")
    assert msg.from_header == "Bad Space <bad@example.com>"


# B-30: CJK and Cyrillic bodies and subjects (golden text).
@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("b30-iso-2022-jp.eml", "こんにちは、世界。"),
        ("b30-shift-jis.eml", "こんにちは、世界。"),
        ("b30-koi8-r.eml", "Привет, мир!"),
        ("b30-gb2312-japanese.eml", "日本のテキスト"),
    ],
)
def test_b30_cjk_and_cyrillic(name: str, text: str) -> None:
    msg = load(name)
    assert msg.text.strip() == text
    assert msg.subject == text
    assert msg.fallbacks == ()


# B-31: NUL bytes and lone surrogates never reach a string field.
def test_b31_nul_and_surrogates() -> None:
    msg = load("b31-nul-surrogates.eml")
    assert_clean(msg)
    assert msg.subject == "Subject \ufffd"
    assert msg.sender == Address("nul@example.com", "Nul Name")
    assert msg.text.startswith("beforeafter")
    assert msg.html is not None
    assert "\ufffd" in msg.html
    assert msg.attachments[0].filename == "nulbyte.txt"
    assert msg.attachments[0].payload == b"\x00binary\x00"  # payload bytes kept intact


# B-32: depth limits; attached message chains kept whole.
def test_b32_rfc822_chain_kept_whole() -> None:
    msg = load("b32-rfc822-chain.eml")
    assert msg.text.strip() == "Hello, see attached."
    (att,) = msg.attachments
    assert att.content_type == "message/rfc822"
    assert att.filename.endswith(".eml")
    assert b"Innermost body" in att.payload
    assert b"Subject: level 0" in att.payload


def _nested_multipart(depth: int) -> bytes:
    head = b"From: a@example.com\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    out = b"Content-Type: text/plain\r\n\r\ncore\r\n"
    for level in reversed(range(depth)):
        b = b"b%d" % level
        out = (
            b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n--' + b + b"\r\n"
            + out + b"\r\n--" + b + b"--\r\n"
        )  # fmt: skip
    return head + out


def _nested_rfc822(depth: int) -> bytes:
    out = b"From: z@example.com\r\nSubject: core\r\n\r\ncore\r\n"
    for level in range(depth):
        out = b"Subject: l%d\r\nContent-Type: message/rfc822\r\n\r\n" % level + out
    return b"From: a@example.com\r\n" + out


@pytest.mark.parametrize("builder", [_nested_multipart, _nested_rfc822])
def test_b32_thousand_deep_nesting_hits_depth_limit(builder: object) -> None:
    assert callable(builder)
    with pytest.raises(LimitExceededError, match="max_depth"):
        parse(builder(1000))


@pytest.mark.parametrize("builder", [_nested_multipart, _nested_rfc822])
def test_b32_moderate_nesting_parses(builder: object) -> None:
    assert callable(builder)
    msg = parse(builder(5))
    assert isinstance(msg, ParsedMessage)


def test_b32_depth_limit_is_configurable() -> None:
    with pytest.raises(LimitExceededError, match="max_depth"):
        parse(_nested_multipart(6), ParseLimits(max_depth=3))


# B-33: part, header and size bombs.
def _many_parts(count: int) -> bytes:
    parts = b"".join(
        b"--B\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(count)
    )
    return (
        b'From: a@example.com\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
        + parts + b"--B--\r\n"
    )  # fmt: skip


def test_b33_ten_thousand_parts() -> None:
    with pytest.raises(LimitExceededError, match="max_parts"):
        parse(_many_parts(10_000))


def test_b33_part_limit_is_configurable() -> None:
    assert len(parse(_many_parts(20)).attachments) == 19
    with pytest.raises(LimitExceededError, match="max_parts"):
        parse(_many_parts(20), ParseLimits(max_parts=10))


def test_b33_megabyte_header_line() -> None:
    raw = b"From: a@example.com\r\nX-Big: " + b"A" * 1_100_000 + b"\r\n\r\nbody\r\n"
    with pytest.raises(LimitExceededError, match="max_header_bytes"):
        parse(raw)


def test_b33_ten_thousand_recipients_capped() -> None:
    to = b", ".join(b"user%d@example.com" % i for i in range(10_000))
    raw = b"From: a@example.com\r\nTo: " + to + b"\r\nSubject: many\r\n\r\nbody\r\n"
    msg = parse(raw)
    assert 0 < len(msg.to) <= 1000
    assert msg.to[0] == Address("user0@example.com")
    assert all(len(value) <= 4000 for _, value in msg.headers)


def test_b33_decoded_size_limit() -> None:
    payload = b"QUFB" * 50_000  # 200 kB base64 -> 150 kB decoded
    raw = (
        b"From: a@example.com\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + payload + b"\r\n"
    )
    assert parse(raw).attachments[0].size == 150_000
    with pytest.raises(LimitExceededError, match="max_decoded_bytes"):
        parse(raw, ParseLimits(max_decoded_bytes=100_000))


def test_b33_text_truncated_and_whitespace_bomb() -> None:
    raw = b"From: a@example.com\r\n\r\n" + b" \t" * 500_000 + b"x" * 3000
    msg = parse(raw, ParseLimits(max_text_chars=1000))
    assert len(msg.text) == 1000
    assert "text-truncated" in msg.fallbacks


def test_b33_many_links_and_many_headers() -> None:
    links = b"".join(b'<a href="https://example.com/%d">l</a> ' % i for i in range(5000))
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
    raw = b"From: a@example.com\r\n" + headers + b"Content-Type: text/html\r\n\r\n" + links
    msg = parse(raw)
    assert len(msg.headers) == 500
    assert msg.html is not None
    assert msg.html.count("<a ") == 5000


# B-34: broken structure, best effort.
def test_b34_dash_boundary() -> None:
    msg = load("b34-boundary-dash.eml")
    assert msg.text.strip() == "Dash boundary body"
    assert [a.filename for a in msg.attachments] == ["a.png"]


def test_b34_missing_closing_boundary() -> None:
    msg = load("b34-missing-closing-boundary.eml")
    assert msg.text.strip() == "Body before the end"
    assert [a.filename for a in msg.attachments] == ["cut.pdf"]
    assert "CloseBoundaryNotFoundDefect" in msg.defects


def test_b34_multipart_without_boundary() -> None:
    msg = load("b34-no-boundary.eml")
    assert msg.text.strip() == "Just some text with no boundary at all."
    assert "NoBoundaryInMultipartDefect" in msg.defects
    assert len(msg.attachments) == 1  # the unparsed rest is kept


def test_b34_duplicate_content_type() -> None:
    msg = load("b34-duplicate-content-type.eml")
    assert msg.text.strip() == "Duplicate header body"


# B-35: no body / attachment only / empty text / HTML without <html>.
@pytest.mark.parametrize(
    ("name", "attachments"),
    [
        ("b35-no-body.eml", []),
        ("b35-attachment-only.eml", ["only.pdf"]),
        ("b35-empty-text-part.eml", ["p.jpg"]),
    ],
)
def test_b35_no_text(name: str, attachments: list[str]) -> None:
    msg = load(name)
    assert msg.text == ""
    assert msg.html is None
    assert [a.filename for a in msg.attachments] == attachments


def test_b35_html_only_rendered_as_text() -> None:
    msg = load("b35-html-without-html-tag.eml")
    assert msg.text == "Hello there\n\nSecond line & more"
    assert "text-from-html" in msg.fallbacks
    assert msg.html == "<p>Hello <b>there</b></p><div>Second&nbsp;line &amp; more</div>\n"


# B-36: missing headers and absurd dates never raise.
def test_b36_missing_from_to_date() -> None:
    msg = load("b36-missing-from-to-date.eml")
    assert (msg.sender, msg.from_header, msg.to, msg.date) == (None, "", (), None)
    assert msg.text.strip() == "Anonymous body"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("b36-date-2050.eml", datetime(2050, 1, 1, tzinfo=UTC)),
        ("b36-date-1970.eml", datetime(1970, 1, 1, tzinfo=UTC)),
        ("b36-date-garbage.eml", None),
        ("b16-from-valid.eml", datetime(2023, 1, 2, 9, 0, tzinfo=UTC)),
    ],
)
def test_b36_dates(name: str, expected: datetime | None) -> None:
    assert load(name).date == expected


def test_b36_fused_date_does_not_raise() -> None:
    msg = load("b36-date-fused.eml")
    assert msg.date is None or msg.date.tzinfo == UTC
    assert msg.text.strip() == "fused"


# B-37: TNEF, PGP/MIME and S/MIME parts kept intact.
def test_b37_tnef_kept_intact() -> None:
    (att,) = load("b37-tnef-winmail.eml").attachments
    assert (att.filename, att.content_type) == ("winmail.dat", "application/ms-tnef")
    assert att.payload == b"\x78\x9f\x3e\x22" + bytes(range(256)) * 2


@pytest.mark.parametrize(
    ("name", "text", "types"),
    [
        ("b37-pgp-mime-signed.eml", "Signed body text", ["application/pgp-signature"]),
        ("b37-smime-signed.eml", "S/MIME signed text", ["application/pkcs7-signature"]),
        ("b37-pgp-encrypted.eml", "", ["application/pgp-encrypted", "application/octet-stream"]),
    ],
)
def test_b37_signed_and_encrypted(name: str, text: str, types: list[str]) -> None:
    msg = load(name)
    assert msg.text.strip() == text
    assert [a.content_type for a in msg.attachments] == types
    assert all(a.payload for a in msg.attachments)


# Inline images (B-10 at the parse level) and header bookkeeping.
def test_inline_cid_image_and_sanitised_html() -> None:
    raw = (
        b'From: a@example.com\r\nContent-Type: multipart/related; boundary="R"\r\n\r\n'
        b"--R\r\nContent-Type: text/html\r\n\r\n"
        b'<p onclick="x">Hi<img src="cid:logo@Example.com"><img src="http://evil/p.gif"></p>\r\n'
        b"--R\r\nContent-Type: image/png\r\nContent-ID: <logo@Example.com>\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\niVBORw==\r\n--R--\r\n"
    )
    msg = parse(raw)
    assert msg.html == '<p>Hi<img src="cid:logo@Example.com"></p>'
    assert msg.text == "Hi"
    (att,) = msg.attachments
    assert (att.content_id, att.inline, att.filename) == (
        "logo@example.com",
        True,
        "attachment-1.bin",
    )
    assert att.payload == b"\x89PNG"


def test_threading_headers() -> None:
    raw = (
        b"From: a@example.com\r\nMessage-ID: <Abc@Example.COM>\r\n"
        b"In-Reply-To: <p1@example.com>\r\n"
        b"References: <r1@x.org>\r\n <r2@X.org> junk <r1@x.org>\r\n"
        b"Cc: ok@example.com, junk, <>, Bob <bob@example.net>\r\nReply-To: r@example.com\r\n\r\nb"
    )
    msg = parse(raw)
    assert msg.message_id == "Abc@example.com"
    assert msg.in_reply_to == ("p1@example.com",)
    assert msg.references == ("r1@x.org", "r2@x.org")
    assert msg.cc == (Address("ok@example.com"), Address("bob@example.net", "Bob"))
    assert msg.reply_to == (Address("r@example.com"),)


@pytest.mark.parametrize("raw", [b"", b"\r\n\r\n", b"garbage", b"\x00" * 100, b"\xff\xfe" * 50])
def test_degenerate_inputs(raw: bytes) -> None:
    msg = parse(raw)
    assert_clean(msg)


_CHUNKS = [
    b"From: ", b"a@example.com", b"\r\n", b"Subject: ", b"=?utf-8?q?x=C3?=", b"\x00", b"\xff",
    b"Content-Type: multipart/mixed; boundary=\"Z\"\r\n", b"--Z\r\n", b"--Z--\r\n",
    b"Content-Type: text/html; charset=x-user-defined\r\n", b"<script>alert(1)</script>",
    b"Content-Transfer-Encoding: base64\r\n", b"QUJD", b"Content-Type: message/rfc822\r\n",
    b"\r\n\r\n", b"Content-Disposition: attachment; filename*=utf-8''..%2F%00x\r\n", b"body",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(150))
def test_property_random_mail_never_escapes(seed: int) -> None:
    rng = random.Random(seed)
    raw = b"".join(rng.choice(_CHUNKS) for _ in range(rng.randint(0, 60)))
    try:
        msg = parse(raw)
    except ParseError:
        return
    assert_clean(msg)
    if msg.html is not None:
        assert "<script" not in msg.html.lower()
    for att in msg.attachments:
        assert "/" not in att.filename
