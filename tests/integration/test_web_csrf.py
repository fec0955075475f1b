"""The login form's CSRF protection: a signed token bound to a pre-session cookie.

A POST to /login without the token of a form we served to this browser, with
a token made for another browser, an expired one, or from another site's
page is refused with 403 and the form shown again; with the right token the
login works. The page keeps its policy: no script anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from mailbot.config import Settings
from mailbot.web import auth
from mailbot.web.app import PAGE_CSP, create_app
from tests.integration.test_web import Site, TestClient, build_site, form_token

REFUSED = "did not come from this site"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def site(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Site]:
    yield from build_site(make_settings(f"sqlite:///{tmp_path / 'web.db'}"))


def post_login(client: TestClient, token: str, csrf: str | None, **headers: str) -> httpx.Response:
    data = {"token": token, "next": "/tickets"}
    if csrf is not None:
        data["csrf"] = csrf
    return client.post("/login", data=data, headers=headers, follow_redirects=False)


def assert_refused(answer: httpx.Response, client: TestClient) -> None:
    assert answer.status_code == 403, answer.text
    assert REFUSED in answer.text
    assert "mailbot_session=" not in answer.headers.get("set-cookie", "")
    assert 'name="csrf"' in answer.text  # shown again, fresh token
    assert client.get("/", follow_redirects=False).status_code == 303  # still logged out


def test_the_form_carries_a_token_and_sets_a_strict_cookie(site: Site) -> None:
    client = site.client()
    page = client.get("/login")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == PAGE_CSP
    assert "<script" not in page.text.lower()
    assert re.search(r'name="csrf" value="\d+\.[0-9a-f]{64}"', page.text)
    cookie = page.headers["set-cookie"].lower()
    assert cookie.startswith(f"{auth.LOGIN_COOKIE}=")
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/" in cookie


def test_the_right_token_logs_in(site: Site) -> None:
    client = site.client()
    answer = post_login(client, site.token, form_token(client))
    assert answer.status_code == 303
    assert answer.headers["location"] == "/tickets"
    cookies = answer.headers.get_list("set-cookie")
    assert any(c.startswith(f"{auth.COOKIE}=") for c in cookies)
    assert any(c.startswith(f'{auth.LOGIN_COOKIE}=""') for c in cookies)  # spent
    assert client.get("/", follow_redirects=False).status_code == 200


def test_a_post_without_a_token_is_refused(site: Site) -> None:
    client = site.client()
    form_token(client)  # the cookie alone is not enough
    assert_refused(post_login(client, site.token, None), client)
    assert_refused(post_login(client, site.token, ""), client)


def test_a_wrong_or_tampered_token_is_refused(site: Site) -> None:
    client = site.client()
    good = form_token(client)
    expiry, mac = good.split(".")
    for bad in (
        f"{expiry}.{'0' * 64}",
        f"{int(expiry) + 3600}.{mac}",  # a longer life is not ours to give
        mac,
        "garbage",
        f"{expiry}.{mac}.x",
    ):
        assert_refused(post_login(client, site.token, bad), client)


def test_a_token_is_bound_to_its_browser(site: Site) -> None:
    attacker, victim = site.client(), site.client()
    foreign = form_token(attacker)  # a valid pair, for the attacker's cookie
    form_token(victim)
    assert_refused(post_login(victim, site.token, foreign), victim)
    fresh = site.client()  # no pre-session cookie at all
    assert_refused(post_login(fresh, site.token, foreign), fresh)


def test_the_form_expires(site: Site) -> None:
    clock = Clock()
    client = TestClient(create_app(site.settings, site.read_db, site.key, clock=clock))
    token = form_token(client)
    clock.now += auth.LOGIN_FORM_LIFE + timedelta(seconds=1)
    answer = post_login(client, site.token, token)
    assert_refused(answer, client)
    retry = re.search(r'name="csrf" value="([^"]+)"', answer.text)
    assert retry
    assert post_login(client, site.token, retry.group(1)).status_code == 303


@pytest.mark.parametrize("origin", ["https://evil.example", "http://testserver.evil", "data:"])
def test_a_foreign_origin_is_refused_even_with_a_token(site: Site, origin: str) -> None:
    client = site.client()
    answer = post_login(client, site.token, form_token(client), origin=origin)
    assert_refused(answer, client)


@pytest.mark.parametrize("origin", ["http://testserver", "http://127.0.0.1:8025", "null"])
def test_our_own_origin_passes(site: Site, origin: str) -> None:
    # The request's own host, the configured public address (default 127.0.0.1:8025),
    # and "null": what browsers send for our own form under Referrer-Policy: no-referrer.
    client = site.client()
    answer = post_login(client, site.token, form_token(client), origin=origin)
    assert answer.status_code == 303


def test_over_https_the_cookie_is_host_only_and_secure(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        f"sqlite:///{tmp_path / 'web.db'}",
        conversation={"public_url": "https://help.example.org"},
    )
    for site in build_site(settings):
        client = site.client(base_url="https://testserver")
        page = client.get("/login")
        cookie = page.headers["set-cookie"].lower()
        assert cookie.startswith(f"{auth.SECURE_LOGIN_COOKIE.lower()}=")
        assert "secure" in cookie
        assert "path=/" in cookie
        assert "domain=" not in cookie
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token
        # Behind a TLS proxy the Host may differ: the public address is ours too.
        answer = post_login(client, site.token, token.group(1), origin="https://help.example.org")
        assert answer.status_code == 303


def test_same_origin_rules() -> None:
    allowed = ("https://help.example.org",)
    assert auth.same_origin(None, "testserver", allowed)
    assert auth.same_origin("http://TestServer", "testserver", allowed)
    assert auth.same_origin("https://help.example.org", "127.0.0.1:8025", allowed)
    assert not auth.same_origin("http://help.example.org", "127.0.0.1:8025", allowed)
    assert auth.same_origin("null", "testserver", allowed)  # the token decides
    assert not auth.same_origin("file://", "testserver", allowed)
    assert not auth.same_origin("https://evil.example", "testserver", allowed)
