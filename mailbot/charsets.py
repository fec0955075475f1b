"""Charset labels as mail really uses them, and decoding that never raises.

Mail declares charsets that Python does not know (``x-user-defined``,
``windows-874``), misspells them (``uft-8``), or declares none and sends 8-bit
bytes anyway. :func:`decode_text` maps the label through an alias table, then
tries declared -> UTF-8 -> cp1252 (with ``errors="replace"``) and reports which
fallback it used, so the caller can flag the message as "decoded with fallback".

Also here: :func:`decode_header_value` (best-effort RFC 2047) and :func:`scrub`,
which removes NUL and lone surrogates from any string that leaves the parser.
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

#: Labels that are bogus or unknown to Python, mapped to the codec to use.
#: Using one of these is recorded as a fallback.
BOGUS_ALIASES: Final[Mapping[str, str]] = {
    "x-user-defined": "cp1252",
    "unknown-8bit": "cp1252",
    "unknown": "cp1252",
    "x-unknown": "cp1252",
    "default": "utf-8",
    "default_charset": "utf-8",
    "charset": "utf-8",
    "none": "utf-8",
    "uft-8": "utf-8",
    "utf8mb3": "utf-8",
    "utf8mb4": "utf-8",
    "utf-8mb4": "utf-8",
    "cp-850": "cp850",
    "cp-1252": "cp1252",
    "win-1252": "cp1252",
    "x-mac-roman": "mac_roman",
    "x-mac-cyrillic": "mac_cyrillic",
    "x-mac-greek": "mac_greek",
    "x-mac-turkish": "mac_turkish",
    "x-mac-ce": "mac_latin2",
    "windows-874": "cp874",
    "x-windows-874": "cp874",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-8-e": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "iso-8859-6-e": "iso-8859-6",
    "x-sjis": "cp932",
    "x-euc-jp": "euc_jp",
    "x-gbk": "gb18030",
    "ansi": "cp1252",
    "8bit": "cp1252",
    "7bit": "utf-8",
    "binary": "cp1252",
}

#: Labels Python knows, silently widened to the superset real mailers emit
#: (WHATWG Encoding Standard). Not recorded as a fallback.
SUPERSETS: Final[Mapping[str, str]] = {
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "iso-8859-9": "cp1254",
}

#: Codecs that are "text encodings" to Python but must never decode mail:
#: they interpret escapes (B-28) or always fail.
_FORBIDDEN_CODECS: Final[frozenset[str]] = frozenset(
    {"unicode-escape", "raw-unicode-escape", "undefined", "punycode", "idna", "unicode-internal"}
)

_SURROGATES = re.compile("[\ud800-\udfff]")
_LABEL_JUNK = re.compile(r"[\s\"']+")


def scrub(text: str) -> str:
    """``text`` without NUL and with every lone surrogate replaced by U+FFFD."""
    return _SURROGATES.sub("\ufffd", text.replace("\x00", ""))


def _normalize_label(label: str | None) -> str:
    return _LABEL_JUNK.sub("", label or "").lower()


def resolve_codec(label: str | None) -> tuple[str | None, bool]:
    """The Python codec name for a declared charset label.

    Returns ``(codec, aliased)``: ``codec`` is None when the label is empty or
    unusable; ``aliased`` is True when a bogus label was mapped through
    :data:`BOGUS_ALIASES`.
    """
    norm = _normalize_label(label)
    if not norm:
        return None, False
    aliased = norm in BOGUS_ALIASES
    name = BOGUS_ALIASES.get(norm) or SUPERSETS.get(norm) or norm
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None, aliased
    if info.name in _FORBIDDEN_CODECS or not getattr(info, "_is_text_encoding", True):
        return None, aliased
    return info.name, aliased


@dataclass(frozen=True, slots=True)
class Decoded:
    """Decoded text and, when the declared charset was not used as is, a note."""

    text: str
    fallback: str | None = None


def decode_text(data: bytes, declared: str | None) -> Decoded:
    """Decode ``data`` declared as ``declared``; never raises.

    Order: alias table, declared codec, UTF-8, cp1252 with ``errors="replace"``.
    The note looks like ``charset:x-user-defined->cp1252``. The text is scrubbed.
    """
    label = _normalize_label(declared) or "(none)"
    codec, aliased = resolve_codec(declared)
    if codec is not None:
        try:
            text = data.decode(codec)
        except (UnicodeError, LookupError, ValueError):
            pass
        else:
            note = f"charset:{label}->{codec}" if aliased else None
            return Decoded(scrub(text), note)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        note = None if codec is None and label == "(none)" else f"charset:{label}->utf-8"
        return Decoded(scrub(text), note)
    return Decoded(scrub(data.decode("cp1252", errors="replace")), f"charset:{label}->cp1252")


def decode_8bit(value: str) -> Decoded:
    """A header value read from bytes (8-bit octets as surrogate escapes) as text."""
    if not _SURROGATES.search(value):
        return Decoded(scrub(value))
    raw = value.encode("utf-8", "surrogateescape")
    return decode_text(raw, None)


_ENCODED_WORD = re.compile(
    r"=\?(?P<charset>[^?*\s]+)(?:\*[^?\s]*)?\?(?P<enc>[QqBb])\?(?P<text>[^?]*?)\?=",
)
_BASE64_TEXT = re.compile(r"^[A-Za-z0-9+/]*$")
_FOLD = re.compile(r"\r?\n|\r")


def _decode_word_bytes(enc: str, text: str) -> bytes | None:
    try:
        if enc in "Bb":
            compact = re.sub(r"\s+", "", text).rstrip("=")
            if not _BASE64_TEXT.match(compact):
                return None
            compact += "=" * (-len(compact) % 4)
            return binascii.a2b_base64(compact.encode("ascii", "replace"))
        return binascii.a2b_qp(text.encode("ascii", "replace"), header=True)
    except (binascii.Error, ValueError):
        return None


def _decode_words_once(value: str, notes: list[str]) -> str:
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset = ""
    previous_was_word = False
    pos = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending:
            decoded = decode_text(b"".join(pending), pending_charset)
            if decoded.fallback:
                notes.append(decoded.fallback)
            out.append(decoded.text)
            pending.clear()
            pending_charset = ""

    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        data = _decode_word_bytes(match.group("enc"), match.group("text"))
        charset = match.group("charset").lower()
        pos = match.end()
        if data is None:
            flush()
            out.append(between + match.group(0))
            previous_was_word = False
            continue
        if not (previous_was_word and not between.strip()):
            flush()
            out.append(between)
        elif pending and pending_charset != charset:
            flush()
        pending.append(data)
        pending_charset = charset
        previous_was_word = True
    flush()
    out.append(value[pos:])
    return "".join(out)


def decode_header_value(value: str, notes: list[str] | None = None) -> str:
    """Best-effort decode of a raw header value; never raises.

    Unfolds, decodes raw 8-bit octets (UTF-8, else cp1252), then RFC 2047
    encoded-words. Adjacent encoded-words of one charset are joined as bytes
    before decoding, so a multibyte character split across words survives.
    A doubly encoded value is decoded a second time. The result is scrubbed.
    """
    sink: list[str] = [] if notes is None else notes
    first = decode_8bit(value)
    if first.fallback:
        sink.append(first.fallback)
    text = _FOLD.sub("", first.text)
    for _ in range(2):
        if "=?" not in text:
            break
        text = _decode_words_once(text, sink)
    return scrub(text)
