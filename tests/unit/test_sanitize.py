"""Unit and property tests for mailbot.sanitize (B-01, B-02, B-09)."""

from __future__ import annotations

import random
import re
from html.parser import HTMLParser

import pytest

from mailbot.sanitize import sanitize_html


class _Attrs(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Attrs()
    parser.feed(html)
    parser.close()
    return parser.tags


def assert_inert(out: str) -> None:
    lowered = out.lower()
    assert "<script" not in lowered
    assert "javascript:" not in lowered
    assert "vbscript:" not in lowered
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", lowered)
    for tag, attrs in _tags(out):
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "style" not in attrs
        if tag == "img":
            assert (attrs.get("src") or "").startswith("cid:")
        for name in ("href", "src"):
            # What a browser would use: entities decoded (by the parser), and
            # ASCII whitespace/control characters removed from the URL.
            value = re.sub(r"[\x00-\x20]", "", attrs.get(name) or "").lower()
            assert not value.startswith(("javascript:", "vbscript:", "data:")), value


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<p>Hello <b>world</b></p>", "<p>Hello <b>world</b></p>"),
        ('<a href="https://example.com/x">x</a>', '<a href="https://example.com/x">x</a>'),
        ('<a href="mailto:a@example.com">m</a>', '<a href="mailto:a@example.com">m</a>'),
        ('<a href=" javascript:alert(1)">x</a>', "<a>x</a>"),
        ('<a href="jAvAsCrIpT&#58;alert(1)">x</a>', "<a>x</a>"),
        ('<a href="data:text/html,<script>">x</a>', "<a>x</a>"),
        ('<a href="cid:part1">x</a>', "<a>x</a>"),
        ('<p style="color:red" onclick="x()">t</p>', "<p>t</p>"),
        ("<script>alert(1)</script>ok", "ok"),
        ("<style>p{color:red}</style>ok", "ok"),
        ('<img src="http://169.254.169.254/latest/meta-data">', ""),
        ('<img src="https://tracker.example/pixel.gif" width="1" height="1">', ""),
        (
            '<img src="cid:logo@example.com" alt="logo" onerror="x()">',
            '<img src="cid:logo@example.com" alt="logo">',
        ),
        ('<iframe src=" javascript:alert(1)"></iframe>', ""),
        ("<svg onload=alert(1)><circle/></svg>", ""),
        ('<div style="background:url(http://x/y)">c</div>', "<div>c</div>"),
        ("<p>1 &lt; 2 &amp; 3</p>", "<p>1 &lt; 2 &amp; 3</p>"),
    ],
)
def test_sanitize_examples(html: str, expected: str) -> None:
    out = sanitize_html(html)
    assert out == expected
    assert_inert(out)


@pytest.mark.parametrize(
    "html",
    [
        "<scr<script>ipt>alert(1)</scr</script>ipt>",
        "<<script>script>alert(1)<</script>/script>",
        '<a href="javascript:javascript:alert(1)">x</a>',
        "javascript:javascript:alert(1)",
        '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;:alert(1)">x</a>',
        '<a href="&#x6A;avascript&colon;alert(1)">x</a>',
        '<img src=x onerror="alert(1)">',
        '<body onload="alert(1)">',
        "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
        '<a href="java\tscript:alert(1)">x</a>',
        '<a href="vbscript:msgbox(1)">x</a>',
        "<p title='x\" onmouseover=\"alert(1)'>t</p>",
    ],
)
def test_obfuscated_payloads_are_inert(html: str) -> None:
    assert_inert(sanitize_html(html))


def test_output_is_stable() -> None:
    html = "<scr<script>ipt>alert(1)</script><p onclick=x>hi</p>"
    once = sanitize_html(html)
    assert sanitize_html(once) == once


_FRAGMENTS = [
    "<", ">", "</", "/>", "script", "scr", "ipt", "img", "a", "svg", "iframe", "style", " ",
    "onerror", "onload", "=", '"', "'", "javascript", ":", "&#58;", "&colon;", "java\tscript",
    "src", "href", "cid:x", "http://x/", "alert(1)", "<p>", "</p>", "&", "#", "x", "\x00",
    "<!--", "-->", "<![CDATA[", "]]>", "`", "data:", "vbscript", "\n",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(300))
def test_property_random_markup_is_inert(seed: int) -> None:
    rng = random.Random(seed)
    html = "".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(1, 60)))
    assert_inert(sanitize_html(html))
