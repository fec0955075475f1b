"""Authentication-Results: only the trusted server's topmost header, aligned passes only."""

from __future__ import annotations

import pytest

from mailbot.authres import aligned, authserv_id, passes

FROM = "bob@example.org"


def ar(value: str) -> tuple[str, str]:
    return ("Authentication-Results", value)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], False),
        ([ar("mx.test; dkim=pass header.d=example.org")], True),
        ([ar("mx.test; dkim=pass (good signature) header.d=example.org header.s=s1")], True),
        ([ar("mx.test; dkim=pass header.i=@mail.example.org")], True),
        ([ar("MX.TEST; DKIM=PASS header.d=EXAMPLE.ORG")], True),
        ([ar("mx.test; spf=pass smtp.mailfrom=bounce@example.org")], True),
        ([ar("mx.test; spf=pass smtp.mailfrom=example.org")], True),
        (
            [ar("mx.test; dkim=fail header.d=example.org; spf=pass smtp.mailfrom=x@other.test")],
            False,
        ),
        ([ar("mx.test; dkim=pass header.d=other.test")], False),
        ([ar("mx.test; dkim=pass header.d=notexample.org")], False),
        ([ar("mx.test; spf=softfail smtp.mailfrom=bob@example.org")], False),
        ([ar("mx.test; dkim=none; spf=none")], False),
        ([ar("evil.test; dkim=pass header.d=example.org")], False),
        ([ar("mx.test.evil; dkim=pass header.d=example.org")], False),
        # The topmost trusted header decides; a pass below it was written by the sender.
        (
            [ar("mx.test; dkim=none"), ar("mx.test; dkim=pass header.d=example.org")],
            False,
        ),
        # Headers of other servers above ours do not matter.
        (
            [ar("relay.test; dkim=fail"), ar("mx.test; dkim=pass header.d=example.org")],
            True,
        ),
        ([("X-Authentication-Results", "mx.test; dkim=pass header.d=example.org")], False),
        ([ar("mx.test; dkim=pass header.d=example.org (comment; with semicolon)")], True),
        ([ar("mx.test 1; dkim=pass header.d=example.org")], True),
        ([ar("(comment) mx.test; dkim=pass header.d=example.org")], True),
        ([ar("mx.test; none")], False),
    ],
)
def test_passes(headers: list[tuple[str, str]], expected: bool) -> None:
    assert passes(headers, "mx.test", FROM) is expected


def test_nothing_passes_without_a_trusted_id_or_a_from() -> None:
    header = [ar("mx.test; dkim=pass header.d=example.org")]
    assert not passes(header, "", FROM)
    assert not passes(header, "mx.test", "")


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("example.org", "example.org", True),
        ("mail.example.org", "example.org", True),
        ("example.org", "mail.example.org", True),
        ("badexample.org", "example.org", False),
        ("", "example.org", False),
        ("org", "example.org", False),
        ("a.example.org", "b.example.org", False),
    ],
)
def test_aligned(a: str, b: str, expected: bool) -> None:
    assert aligned(a, b) is expected


def test_authserv_id_ignores_version_and_comments() -> None:
    assert authserv_id("mx.test 1; dkim=pass") == "mx.test"
    assert authserv_id(" (c) MX.test ; spf=pass") == "mx.test"
