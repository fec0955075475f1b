"""parse() over the shared real-world corpus (../shared/corpus, see its manifest.json).

Every rfc822 entry and every message of the mbox entries must parse to a clean
ParsedMessage or raise ParseError; the Outlook .msg and raw TNEF files are not
mails, but are fed in as raw bytes too and must behave the same way.
"""

from __future__ import annotations

import json
import mailbox
import os
from pathlib import Path
from typing import Any

import pytest

from mailbot.errors import ParseError
from mailbot.message import ParsedMessage
from mailbot.parse import parse

pytestmark = pytest.mark.corpus

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
MAIL_FORMATS = {"rfc822", "mbox"}
RAW_ONLY_FORMATS = {"tnef", "outlook-msg"}  # not mails: must not crash either

#: Entries where raising ParseError is the expected, correct outcome.
EXPECTED_PARSE_ERRORS = {
    # 3 MB bounce loop with ~3000 MIME parts: LimitExceededError (max_parts).
    "flanker/enclosed-endless.eml",
    # Binary TNEF with no header/body separator in the first 256 kB: max_header_bytes.
    "tnefparse/MAPI_OBJECT.tnef",
}


def _entries() -> list[dict[str, Any]]:
    manifest = CORPUS / "manifest.json"
    if not manifest.is_file():
        return []
    data = json.loads(manifest.read_text(encoding="utf-8"))
    return [e for e in data["entries"] if e["format"] in MAIL_FORMATS | RAW_ONLY_FORMATS]


ENTRIES = _entries()


@pytest.fixture(scope="module", autouse=True)
def _require_corpus() -> None:
    if not (CORPUS / "manifest.json").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail("../shared/corpus not found")
        pytest.skip("../shared/corpus not found")


def _raw_messages(entry: dict[str, Any]) -> list[bytes]:
    path = CORPUS / entry["file"]
    if entry["format"] == "mbox":
        box = mailbox.mbox(str(path), create=False)
        try:
            return [box.get_bytes(key) for key in box.iterkeys()]
        finally:
            box.close()
    return [path.read_bytes()]


def _assert_clean(msg: ParsedMessage) -> None:
    strings: list[str] = [msg.subject, msg.from_header, msg.text, msg.html or ""]
    strings += [msg.message_id or "", *msg.in_reply_to, *msg.references]
    strings += [*msg.defects, *msg.fallbacks]
    for addr in (msg.sender, *msg.to, *msg.cc, *msg.reply_to):
        if addr is not None:
            strings += [addr.email, addr.name]
    for att in msg.attachments:
        strings += [att.filename, att.content_type, att.content_id or ""]
        assert "/" not in att.filename
        assert "\\" not in att.filename
    for name, value in msg.headers:
        strings += [name, value]
    for text in strings:
        assert "\x00" not in text
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    if msg.html is not None:
        assert "<script" not in msg.html.lower()


def _id(entry: dict[str, Any]) -> str:
    return str(entry["file"])


def _parse_or_error(raw: bytes) -> ParsedMessage | ParseError:
    try:
        return parse(raw)
    except ParseError as exc:
        return exc


@pytest.mark.parametrize("entry", ENTRIES, ids=_id)
def test_corpus_entry_parses_or_raises_parse_error(entry: dict[str, Any]) -> None:
    for raw in _raw_messages(entry):
        result = _parse_or_error(raw)  # anything but ParseError propagates and fails
        if isinstance(result, ParseError):
            assert entry["file"] in EXPECTED_PARSE_ERRORS, repr(result)
            continue
        assert entry["file"] not in EXPECTED_PARSE_ERRORS
        _assert_clean(result)


def _expected_entries() -> list[dict[str, Any]]:
    keys = {"subject", "subject_startswith", "body_text", "body_text_contains"}
    return [e for e in ENTRIES if e["format"] == "rfc822" and keys & set(e["expected"])]


def _squash(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("entry", _expected_entries(), ids=_id)
def test_corpus_expected_subject_and_body(entry: dict[str, Any]) -> None:
    expected = entry["expected"]
    msg = parse((CORPUS / entry["file"]).read_bytes())
    if "subject" in expected:
        assert msg.subject == expected["subject"]
    if "subject_startswith" in expected:
        assert msg.subject.startswith(expected["subject_startswith"])
    if "body_text" in expected:
        # django-helpdesk stores the ticket description after its own clean-up
        # (strip, line-ending normalisation); we keep the part as sent, so the
        # comparison ignores surrounding whitespace.
        assert msg.text.strip() == expected["body_text"].strip()
    for needle in expected.get("body_text_contains", []):
        # django-helpdesk builds the description from the HTML part when there
        # is one, while our ``text`` is the text/plain part; the phrase may be
        # only in the HTML alternative (utf-nondecodable.eml) and may be
        # wrapped across lines, so compare without whitespace against both.
        html_text = _squash(msg.html or "")
        assert _squash(needle) in _squash(msg.text) or _squash(needle) in html_text


def test_corpus_mail_parser_expectations() -> None:
    """A few library-level values from mail-parser's own tests (loosely)."""
    by_file = {e["file"]: e["expected"] for e in ENTRIES}
    gtube = parse((CORPUS / "mailparser-spamscope/mail_test_16").read_bytes())
    exp = by_file["mailparser-spamscope/mail_test_16"]
    # mail-parser keeps the angle brackets; ParsedMessage stores ids without them.
    assert gtube.message_id == exp["message_id"].strip("<>")
    assert gtube.sender is not None
    assert (gtube.sender.name, gtube.sender.email) == tuple(exp["from"][0])
    # mail-parser reports the defect class names; ours come from the stdlib walk.
    for name in ("mail_malformed_1", "mail_malformed_2"):
        msg = parse((CORPUS / "mailparser-spamscope" / name).read_bytes())
        assert set(by_file[f"mailparser-spamscope/{name}"]["defects"]) <= set(msg.defects)
    # "alice@example.com" <bob@example.com>: quoted display name, one mailbox.
    msg19 = parse((CORPUS / "mailparser-spamscope/mail_test_19").read_bytes())
    assert msg19.from_header == "alice@example.com <bob@example.com>"
