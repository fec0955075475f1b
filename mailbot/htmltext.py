"""A plain-text rendering of an HTML body, with the stdlib HTML parser only.

Used when a mail has no text/plain part. Block elements and ``<br>`` become line
breaks, ``<script>``/``<style>``/``<head>`` content is skipped, entities are
unescaped, and whitespace is collapsed (except inside ``<pre>``).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Final

_BLOCK: Final = frozenset(
    {
        "address", "article", "aside", "blockquote", "center", "dd", "details", "dialog",
        "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1",
        "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p",
        "pre", "section", "summary", "table", "tbody", "thead", "tfoot", "tr", "ul",
        "body", "html",
    }
)  # fmt: skip
_SKIP: Final = frozenset({"script", "style", "head", "title", "template", "noscript"})
_CELL: Final = frozenset({"td", "th"})
_INLINE_WS = re.compile(r"[ \t\r\n\f\v\u00a0]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_TRAILING_WS = re.compile(r"[ \t]+\n")
_LEADING_WS = re.compile(r"\n[ \t]+")
_MANY_SPACES = re.compile(r"[ \t]{2,}")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip_depth += 1
        elif tag == "br":
            self.chunks.append("\n")
        elif tag in _BLOCK:
            if tag == "pre":
                self._pre_depth += 1
            self.chunks.append("\n")
            if tag == "li":
                self.chunks.append("- ")
        elif tag in _CELL:
            self.chunks.append(" ")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt and not self._skip_depth:
                self.chunks.append(f" {alt} ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            return
        self.handle_starttag(tag, attrs)
        if tag == "pre":
            self._pre_depth = max(self._pre_depth - 1, 0)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip_depth = max(self._skip_depth - 1, 0)
        elif tag in _BLOCK:
            if tag == "pre":
                self._pre_depth = max(self._pre_depth - 1, 0)
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._pre_depth:
            self.chunks.append(data.replace("\r\n", "\n").replace("\u00a0", " "))
        else:
            self.chunks.append(_INLINE_WS.sub(" ", data))


def html_to_text(html: str) -> str:
    """The readable text of ``html``; never raises on malformed markup."""
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError):  # pragma: no cover - defensive, old parsers
        pass
    text = "".join(parser.chunks)
    text = _TRAILING_WS.sub("\n", text)
    text = _LEADING_WS.sub("\n", text)
    text = _MANY_SPACES.sub(" ", text)
    text = _MANY_NEWLINES.sub("\n\n", text)
    return text.strip().replace("\x00", "")
