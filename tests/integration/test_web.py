"""The web app in-process (Starlette's TestClient): access, customer link, API, metrics.

Data comes from real mail through the pipeline (the hostile fixtures of
BAD_INPUTS B-01..B-05, B-09, B-10) plus an internal note and a second
customer's ticket written directly.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

with warnings.catch_warnings():  # starlette 1.x nudges towards httpx2; httpx works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient
from sqlalchemy import text

from mailbot import signing
from mailbot.config import Settings
from mailbot.process import Pipeline
from mailbot.store import credentials, inbox, keyfile, schema, tickets
from mailbot.store.db import Database
from mailbot.store.models import Agent, AuthorType, Direction
from mailbot.web.app import PAGE_CSP, create_app
from tests.conftest import EMAILS

HOSTILE = sorted(p.name for p in EMAILS.glob("b*.eml") if re.match(r"b(0[1-5]|09|10)-", p.name))
AGENT = "olga@example.org"
NOTE = "INTERNAL-NOTE-do-not-show-customers"


@dataclass
class Site:
    settings: Settings
    db: Database
    key: bytes
    token: str
    numbers: dict[str, int]  # fixture file name -> ticket number
    read_db: Database

    def client(self, **kwargs: object) -> TestClient:
        return TestClient(create_app(self.settings, self.read_db, self.key), **kwargs)  # type: ignore[arg-type]

    def status_link(self, number: int, *, days: int = 1) -> str:
        expires = datetime.now(UTC) + timedelta(days=days)
        return "/status/" + signing.make_status_token(self.key, number, expires)


def build_site(settings: Settings) -> Iterator[Site]:
    db = Database(settings.effective_database_url)
    schema.upgrade(db)
    pipeline = Pipeline(db, settings)
    numbers: dict[str, int] = {}
    for name in HOSTILE:
        accepted = inbox.accept(db, (EMAILS / name).read_bytes(), source="test")
        result = pipeline.process_next()
        assert result is not None, name
        with db.transaction() as s:
            row = s.execute(
                text(
                    "SELECT t.number FROM inbound i JOIN ticket t ON t.id = i.ticket_id "
                    "WHERE i.id = :id"
                ),
                {"id": accepted.inbound_id},
            ).scalar_one()
        numbers[name] = int(row)
    now = datetime.now(UTC)
    with db.transaction() as s:
        s.add(Agent(email=AGENT, name="Olga"))
        s.flush()
        ticket_id = s.execute(
            text("SELECT id FROM ticket WHERE number = :n"), {"n": numbers[HOSTILE[0]]}
        ).scalar_one()
        tickets.add_message(
            s,
            tickets.NewMessage(
                ticket_id=ticket_id, subject="note", text_body=NOTE, html_body=None,
                author_email=AGENT, author_name="Olga", author_type=AuthorType.support,
                direction=Direction.outbound, message_id=None, in_reply_to=(), references=(),
                created_at=now, internal=True,
            ),
        )  # fmt: skip
        token = credentials.set_token(s, AGENT)
    read_db = Database(settings.effective_database_url, read_only=True)
    key = keyfile.load_or_create(settings.secret_key_path)
    try:
        yield Site(settings, db, key, token, numbers, read_db)
    finally:
        read_db.close()
        db.close()


@pytest.fixture
def site(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Site]:
    yield from build_site(make_settings(f"sqlite:///{tmp_path / 'web.db'}"))


def login(client: TestClient, token: str) -> None:
    answer = client.post("/login", data={"token": token, "next": "/"}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "secure" not in cookie


STAFF_PAGES = ["/", "/tickets", "/tickets?status=new&sort=priority&q=B-0", "/tickets/1"]


@pytest.mark.parametrize("path", STAFF_PAGES)
def test_staff_pages_redirect_to_login_without_a_session(site: Site, path: str) -> None:
    answer = site.client().get(path, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=")


def test_a_wrong_token_is_refused_and_a_forged_cookie_ignored(site: Site) -> None:
    client = site.client()
    assert client.post("/login", data={"token": "nope"}).status_code == 401
    client.cookies.set("mailbot_session", "b2xnYUBleGFtcGxlLm9yZw.9999999999.abc.def")
    assert client.get("/", follow_redirects=False).status_code == 303


def test_staff_pages_after_login(site: Site) -> None:
    client = site.client()
    login(client, site.token)
    for path in STAFF_PAGES:
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-security-policy"] == PAGE_CSP
        assert "<script" not in answer.text.lower().replace("&lt;script", "")
    board = client.get("/").text
    assert "<svg" in board
    assert "quarantined" in board
    listing = client.get("/tickets?q=B-04").text
    assert "B-04 markdown link" in listing
    assert "B-01 script" not in listing


def test_new_token_ends_old_sessions(site: Site) -> None:
    client = site.client()
    login(client, site.token)
    assert client.get("/", follow_redirects=False).status_code == 200
    with site.db.transaction() as s:
        credentials.set_token(s, AGENT)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_hostile_text_is_escaped_and_markdown_not_linked(site: Site) -> None:
    client = site.client()
    login(client, site.token)
    page = client.get(f"/tickets/{site.numbers['b03-html-in-names.eml']}").text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(" in page
    assert "<svg onload" not in page
    page = client.get(f"/tickets/{site.numbers['b04-markdown-javascript-link.eml']}").text
    assert 'href="javascript' not in page.lower()
    assert '<a href="https://example.org/help"' in page
    assert '<a href="mailto:help@example.org"' in page


def test_html_view_is_sanitised_in_a_sandboxed_frame(site: Site) -> None:
    client = site.client()
    login(client, site.token)
    number = site.numbers["b01-html-script-handlers.eml"]
    page = client.get(f"/tickets/{number}?view=html").text
    src = re.search(r'<iframe sandbox="" src="([^"]+)"', page)
    assert src, page
    frame = client.get(src.group(1))
    assert "sandbox" in frame.headers["content-security-policy"]
    body = frame.text.lower()
    assert "<script" not in body
    assert "onerror" not in body
    assert "javascript:" not in body


def test_attachments_are_downloads_only(site: Site) -> None:
    client = site.client()
    login(client, site.token)
    number = site.numbers["b05-html-svg-attachments.eml"]
    page = client.get(f"/tickets/{number}").text
    links = re.findall(r'href="(/attachments/\d+)"', page)
    assert links
    for link in links:
        answer = client.get(link)
        assert answer.status_code == 200
        assert answer.headers["content-disposition"].startswith("attachment;")
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["content-type"].split(";")[0] not in {"text/html", "image/svg+xml"}
    assert site.client().get(links[0], follow_redirects=False).status_code == 303


def test_customer_link_shows_one_ticket_without_internal_notes(site: Site) -> None:
    client = site.client()
    mine = site.numbers[HOSTILE[0]]
    answer = client.get(site.status_link(mine))
    assert answer.status_code == 200
    assert NOTE not in answer.text
    assert f"#{mine}" in answer.text
    others = [n for n in site.numbers.values() if n != mine]
    for other in others:
        assert f"#{other}<" not in answer.text
    assert "Plain part of B-01." in answer.text


def test_tampered_or_expired_links_get_403(site: Site) -> None:
    client = site.client()
    good = site.status_link(site.numbers[HOSTILE[0]])
    number, expiry, mac = good.rsplit("/", 1)[1].split(".")
    other = site.numbers[HOSTILE[1]]
    for bad in (
        f"/status/{other}.{expiry}.{mac}",
        f"/status/{number}.{int(expiry) + 1}.{mac}",
        f"/status/{number}.{expiry}.{'0' * 32}",
        "/status/garbage",
        site.status_link(int(number), days=-1),
    ):
        answer = client.get(bad)
        assert answer.status_code == 403, bad
        assert NOTE not in answer.text


def test_api_needs_a_bearer_token(site: Site) -> None:
    client = site.client()
    assert client.get("/api/tickets").status_code == 401
    assert client.get("/api/kpis", headers={"Authorization": "Bearer x"}).status_code == 401
    auth = {"Authorization": f"Bearer {site.token}"}
    page = client.get("/api/tickets?page_size=2&sort=number", headers=auth).json()
    assert page["total"] == len(HOSTILE)
    assert len(page["tickets"]) == 2
    one = client.get(f"/api/tickets/{site.numbers[HOSTILE[0]]}", headers=auth).json()
    assert any(m["internal"] for m in one["messages"])
    assert client.get("/api/tickets/999999", headers=auth).status_code == 404
    kpis = client.get("/api/kpis", headers=auth).json()
    assert kpis["open"] == len(HOSTILE)
    assert "/api/tickets" in client.get("/api/openapi.json").json()["paths"]


def test_metrics_and_health(site: Site) -> None:
    client = site.client()
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text_ = metrics.text
    for name in (
        "mailbot_inbox_depth 0",
        "mailbot_inbox_quarantined",
        "mailbot_outbox_pending",
        "mailbot_outbox_failed",
        "mailbot_sla_breached_tickets",
        f'mailbot_processing_latency_seconds_bucket{{le="+Inf"}} {len(HOSTILE)}',
    ):
        assert name in text_, name
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["database"] is True


def test_the_web_session_cannot_write(site: Site) -> None:
    with (
        pytest.raises(Exception, match=r"readonly|read-only|read only"),
        site.read_db.transaction() as s,
    ):
        s.execute(text("UPDATE ticket SET subject = 'x'"))
