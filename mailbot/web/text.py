"""Plain text from mail made into safe HTML: escaped, http/https/mailto links only (B-04)."""

from __future__ import annotations

import re
from html import escape

_URL = re.compile(r"\b(?:https?://|mailto:)[^\s<>\"'()\[\]]+", re.IGNORECASE)


def linkify(text: str) -> str:
    """Escape ``text``; wrap http, https and mailto URLs in links. Nothing else is a link.

    Markdown is not interpreted, so ``[x](javascript:...)`` stays text.
    """
    out: list[str] = []
    pos = 0
    for match in _URL.finditer(text):
        url = match.group().rstrip(".,;:!?")
        end = match.start() + len(url)
        out.append(escape(text[pos : match.start()]))
        href = escape(url, quote=True)
        out.append(f'<a href="{href}" rel="noopener noreferrer nofollow">{href}</a>')
        pos = end
    out.append(escape(text[pos:]))
    return "".join(out)
