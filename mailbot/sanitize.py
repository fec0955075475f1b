"""Allowlist HTML sanitising with bleach (B-01, B-02, B-09).

This is the only module that imports bleach. The allowlist is strict: simple
formatting tags, links with http/https/mailto (or relative) targets, and
images only when their source is a ``cid:`` reference to an attached part;
remote images are dropped entirely, so nothing is ever fetched. No ``style``
attribute, no CSS, no event handlers. Cleaning repeats until the output stops
changing, so a nested trick such as ``<scr<script>ipt>`` cannot reassemble.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final, cast

from bleach.sanitizer import Cleaner

ALLOWED_TAGS: Final = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "dd", "del", "div",
        "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "li",
        "ol", "p", "pre", "q", "s", "small", "span", "strong", "sub", "sup", "table",
        "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
    }
)  # fmt: skip
ALLOWED_PROTOCOLS: Final = frozenset({"http", "https", "mailto", "cid"})

#: Attributes allowed per tag; URL attributes are checked again in _allow_attribute.
_ATTRIBUTES: Final[dict[str, frozenset[str]]] = {
    "a": frozenset({"href", "title"}),
    "abbr": frozenset({"title"}),
    "img": frozenset({"src", "alt", "title", "width", "height"}),
    "td": frozenset({"colspan", "rowspan"}),
    "th": frozenset({"colspan", "rowspan"}),
    "ol": frozenset({"start"}),
}
_LINK_SCHEMES: Final = ("http:", "https:", "mailto:")
_SCHEME = re.compile(r"^\s*([a-zA-Z][a-zA-Z0-9+.\-]*):")
_MAX_ROUNDS: Final = 5
_JS_SCHEME = re.compile(r"(java|vb)script:", re.IGNORECASE)
#: Cosmetic only (bleach does the sanitising): drop the *content* of elements
#: whose text is never meant to be read, which bleach's strip mode would keep.
_INVISIBLE = re.compile(
    r"<(script|style|title|head|template)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL
)


def _allow_attribute(tag: str, name: str, value: str) -> bool:
    if name not in _ATTRIBUTES.get(tag, frozenset()):
        return False
    if tag == "img" and name == "src":
        return value.strip().lower().startswith("cid:")
    if tag == "a" and name == "href":
        scheme = _SCHEME.match(value)
        return scheme is None or value.strip().lower().startswith(_LINK_SCHEMES)
    return True


def _drop_remote_images(source: Any) -> Iterator[dict[str, Any]]:
    """Token filter: an ``<img>`` without a surviving ``cid:`` src is removed."""
    for token in source:
        if token.get("name") == "img" and token.get("type") in ("StartTag", "EmptyTag"):
            data = token.get("data") or {}
            src = str(data.get((None, "src"), ""))
            if not src.strip().lower().startswith("cid:"):
                continue
        elif token.get("name") == "img" and token.get("type") == "EndTag":
            continue
        yield token


def _drop_remote_images_filter(*, source: Any) -> Any:
    return _drop_remote_images(source)


_CLEANER: Final = Cleaner(
    tags=ALLOWED_TAGS,
    attributes=_allow_attribute,
    protocols=ALLOWED_PROTOCOLS,
    strip=True,
    strip_comments=True,
    filters=[cast(Any, _drop_remote_images_filter)],
)


def sanitize_html(html: str) -> str:
    """``html`` reduced to the allowlist; safe to show in a sandboxed frame.

    The output never contains ``<script``, a ``javascript:`` or ``vbscript:``
    text, or an ``on*=`` event attribute.
    """
    text = _INVISIBLE.sub("", html.replace("\x00", ""))
    for _ in range(_MAX_ROUNDS):
        cleaned = _CLEANER.clean(text)
        if cleaned == text:
            break
        text = cleaned
    # Scheme-like text left in prose or titles is inert, but neutralise it so
    # the output never even looks like an active URL.
    return _JS_SCHEME.sub(lambda m: m.group(1) + "script&#58;", text)
