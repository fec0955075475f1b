"""Reading ``Authentication-Results`` (RFC 8601) to trust an agent's From. Pure.

Only the topmost header whose authserv-id is the one the operator trusts
counts: that is the header our own receiving server added last. Headers
further down, or from other servers, may have been written by the sender
(BAD_INPUTS B-13). A mail passes when DKIM passed for a domain aligned with
the From domain (``header.d``), or SPF passed for an aligned envelope sender
(``smtp.mailfrom``). Alignment is relaxed: equal domains, or one a subdomain
of the other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_COMMENT = re.compile(r"\([^()]*\)")
_RESULT = re.compile(r"\b(dkim|spf)\s*=\s*([a-z]+)\b([^;]*)", re.IGNORECASE)
_PROPERTY = re.compile(r"\b(header\.d|header\.i|smtp\.mailfrom)\s*=\s*\"?([^\s;\"]+)", re.I)


def _domain(value: str) -> str:
    return value.rpartition("@")[2].strip().strip(".").lower()


def aligned(a: str, b: str) -> bool:
    """Relaxed alignment of two domains."""
    a, b = a.lower().strip("."), b.lower().strip(".")
    if not a or not b:
        return False
    if a == b:
        return True
    # A parent domain aligns, but never a bare top-level domain.
    shorter, longer = sorted((a, b), key=len)
    return "." in shorter and longer.endswith("." + shorter)


def authserv_id(value: str) -> str:
    """The authserv-id of one header value (before the first ``;``)."""
    head = _COMMENT.sub(" ", value.split(";", 1)[0]).split()
    return head[0].lower() if head else ""


def passes(headers: Iterable[tuple[str, str]], trusted_id: str, from_address: str) -> bool:
    """Does the topmost trusted Authentication-Results show an aligned pass?"""
    wanted = trusted_id.strip().lower()
    from_domain = _domain(from_address)
    if not wanted or not from_domain:
        return False
    for name, value in headers:
        if name.lower() != "authentication-results":
            continue
        if authserv_id(value) != wanted:
            continue
        # The topmost header of the trusted server decides, pass or not.
        text = _COMMENT.sub(" ", " ".join(value.split()))
        for part in text.split(";")[1:]:
            found = _RESULT.search(part)
            if found is None or found.group(2).lower() != "pass":
                continue
            method = found.group(1).lower()
            for key, domain in _PROPERTY.findall(found.group(3)):
                wanted_key = key.lower() in (
                    ("header.d", "header.i") if method == "dkim" else ("smtp.mailfrom",)
                )
                if wanted_key and aligned(_domain(domain), from_domain):
                    return True
        return False
    return False
