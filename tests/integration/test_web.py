"""The web app in-process (Starlette's TestClient): access, customer link, API, metrics.

Data comes from real mail through the pipeline (the hostile fixtures of
BAD_INPUTS B-01..B-05, B-09, B-10) plus an internal note and a second
customer's ticket written directly. The dashboard's and the ticket list's
figures are checked against tickets written directly, computed a second time
in Python, and their queries against the indexes they are meant to use.
"""

from __future__ import annotations

import random
import re
import statistics
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

with warnings.catch_warnings():  # starlette 1.x nudges towards httpx2; httpx works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient
from sqlalchemy import event, select, text
from sqlmodel import SQLModel

from mailbot import reports, signing
from mailbot.config import Settings
from mailbot.process import Pipeline
from mailbot.states import Priority, TicketStatus
from mailbot.store import credentials, inbox, keyfile, schema, tickets
from mailbot.store import reports as queries
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
    try:
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
    finally:
        pipeline.close()  # settings built without make_settings parse in a child process
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
def site(make_settings: Callable[..., Settings], db_url: str) -> Iterator[Site]:
    """The site on SQLite and on PostgreSQL."""
    yield from build_site(make_settings(db_url))


def form_token(client: TestClient, path: str = "/login") -> str:
    """The CSRF token of the login form (its cookie lands in the client's jar)."""
    page = client.get(path)
    assert page.status_code in (200, 401, 403), page.text
    found = re.search(r'<input type="hidden" name="csrf" value="([^"]+)">', page.text)
    assert found, page.text
    return found.group(1)


def login(client: TestClient, token: str) -> None:
    data = {"token": token, "next": "/", "csrf": form_token(client)}
    answer = client.post("/login", data=data, follow_redirects=False)
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
    answer = client.post("/login", data={"token": "nope", "csrf": form_token(client)})
    assert answer.status_code == 401
    assert "Unknown or revoked token." in answer.text
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


# -- the dashboard's and the ticket list's figures -------------------------------------

DONE = {TicketStatus.resolved.value, TicketStatus.closed.value}
OPEN = {s.value for s in TicketStatus} - DONE
BOB = "bob@example.org"
REPORT_AGENTS = ["ann@example.org", BOB, "cat@example.org"]


def seed_reports(
    db: Database, now: datetime, count: int = 240, open_share: float | None = None
) -> list[dict[str, Any]]:
    """Tickets of every status over 40 days: spam, unanswered, overdue, due soon, no SLA.

    Statuses are drawn evenly, or with ``open_share`` of them open (a real
    helpdesk: almost everything finished).
    """
    tables = SQLModel.metadata.tables
    rng = random.Random(5)
    with db.begin() as conn:
        conn.execute(
            tables["agent"].insert(),
            [{"email": a, "name": a, "role": "agent", "skills": [], "time_zone": "UTC",
              "working_hours": {}, "active": True, "created_at": now} for a in REPORT_AGENTS],
        )  # fmt: skip
        conn.execute(
            tables["customer"].insert(),
            [{"email": f"c{i}@example.com", "name": "", "bouncing": False, "created_at": now}
             for i in range(5)],
        )  # fmt: skip
        agent_ids = list(conn.execute(select(tables["agent"].c.id)).scalars())
        customer_ids = list(conn.execute(select(tables["customer"].c.id)).scalars())
        rows = []
        for n in range(1, count + 1):
            created = now - timedelta(hours=rng.uniform(0, 24 * 40))
            status = rng.choice(list(TicketStatus)).value
            if open_share is not None:
                finished = rng.random() >= open_share
                status = rng.choice(sorted(DONE if finished else OPEN))
            resolved = None
            if status in DONE:
                resolved = min(now, created + timedelta(hours=rng.uniform(0.5, 72)))
            answered: datetime | None = created + timedelta(minutes=rng.uniform(5, 600))
            if answered is not None and (answered >= now or rng.random() < 0.5):
                answered = None
            rows.append(
                {
                    "number": n,
                    "subject": f"Ticket {n} about {rng.choice(['printer', 'invoice', 'login'])}",
                    "description": "",
                    "status": status,
                    "priority": rng.choice(list(Priority)).value,
                    "category": rng.choice([None, "billing", "technical", "usage"]),
                    "created_at": created,
                    "updated_at": resolved or created,
                    "resolved_at": resolved,
                    "first_response_at": answered,
                    "sla_first_response_due_at": (
                        created + timedelta(hours=rng.choice([1, 4, 8, 48]))
                        if rng.random() < 0.85 else None
                    ),
                    "sla_resolution_due_at": (
                        created + timedelta(hours=rng.choice([2, 24, 24 * 30, 24 * 60]))
                        if rng.random() < 0.85 else None
                    ),
                    "requester_id": rng.choice(customer_ids),
                    "assignee_id": rng.choice([None, *agent_ids]),
                    "source": "email",
                    "tags": [],
                    "spam": rng.random() < 0.1,
                    "escalation_level": 0,
                }
            )  # fmt: skip
        # A few that are just about due: at risk, not breached.
        for row in rows[:12]:
            if row["status"] not in DONE:
                row["sla_resolution_due_at"] = now + timedelta(minutes=rng.uniform(5, 110))
                row["sla_first_response_due_at"] = None
        conn.execute(tables["ticket"].insert(), rows)
    emails = dict(zip(agent_ids, REPORT_AGENTS, strict=True))
    for row in rows:
        row["assignee"] = emails.get(row["assignee_id"])
    return rows


def _past(row: dict[str, Any], limit: datetime) -> bool:
    first, resolution = row["sla_first_response_due_at"], row["sla_resolution_due_at"]
    return bool(
        (row["first_response_at"] is None and first is not None and first < limit)
        or (resolution is not None and resolution < limit)
    )


def _nearest_due(row: dict[str, Any]) -> datetime:
    dues = [row["sla_resolution_due_at"]]
    if row["first_response_at"] is None:
        dues.append(row["sla_first_response_due_at"])
    return min(d for d in dues if d is not None)


def _ranked(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def test_dashboard_figures_match_the_tickets(db: Database) -> None:
    now = datetime.now(UTC)
    rows = seed_reports(db, now)
    with db.transaction() as s:
        board = reports.build_dashboard(s, now)
    queue = [r for r in rows if r["status"] not in DONE and not r["spam"]]
    breached = [r for r in queue if _past(r, now)]
    risky = [r for r in queue if not _past(r, now) and _past(r, now + reports.AT_RISK)]
    assert breached
    assert risky
    assert board.kpis.open == len(queue)
    assert board.kpis.breached == len(breached)
    assert board.kpis.at_risk == len(risky)
    assert board.by_status == {
        s.value: sum(r["status"] == s.value for r in rows) for s in TicketStatus
    }
    assert board.by_priority == {p.value: sum(r["priority"] == p for r in queue) for p in Priority}
    assert board.by_category == _ranked(Counter(r["category"] or "(none)" for r in queue))
    assert board.by_agent == _ranked(Counter(r["assignee"] or "(unassigned)" for r in queue))
    watch = sorted(breached + risky, key=lambda r: (_nearest_due(r), r["number"]))[:20]
    assert [w.number for w in board.watch] == [r["number"] for r in watch]
    assert [w.breached for w in board.watch] == [r in breached for r in watch]
    today = reports.day_start(now)
    days = [(today - timedelta(days=back)).date() for back in range(29, -1, -1)]
    kept = [r for r in rows if not r["spam"]]
    created = Counter(r["created_at"].date() for r in kept)
    resolved = Counter(r["resolved_at"].date() for r in kept if r["resolved_at"])
    assert [(d.day, d.created, d.resolved) for d in board.trend] == [
        (d.isoformat(), created[d], resolved[d]) for d in days
    ]
    answered = [
        (r["first_response_at"] - r["created_at"]).total_seconds() / 60
        for r in rows
        if r["created_at"] >= today and r["first_response_at"] is not None
    ]
    expected = round(statistics.median(answered), 1) if answered else None
    assert board.kpis.median_first_response_minutes == expected


@pytest.mark.parametrize(
    ("flt", "keep"),
    [
        (queries.TicketFilter(), lambda r: True),
        (queries.TicketFilter(status="new"), lambda r: r["status"] == "new"),
        (queries.TicketFilter(category="billing"), lambda r: r["category"] == "billing"),
        (queries.TicketFilter(assignee="-"), lambda r: r["assignee"] is None),
        (queries.TicketFilter(assignee=BOB), lambda r: r["assignee"] == BOB),
        (queries.TicketFilter(text="PRINTER"), lambda r: "printer" in r["subject"]),
    ],
)  # fmt: skip
def test_ticket_list_pages_and_totals(db: Database, flt: queries.TicketFilter, keep: Any) -> None:
    now = datetime.now(UTC)
    rows = seed_reports(db, now)
    matches = sorted((r["number"] for r in rows if not r["spam"] and keep(r)), reverse=True)
    assert len(matches) > 20
    seen: list[int] = []
    with db.transaction() as s:
        for offset in range(0, len(matches) + 40, 20):  # one page past the end too
            lines, total = queries.ticket_page(s, flt, now=now, limit=20, offset=offset)
            assert total == len(matches), offset
            seen += [line.number for line in lines]
        assert queries.categories(s) == sorted({r["category"] for r in rows if r["category"]})
    assert seen == matches


def test_breached_filter_matches_the_dashboard(db: Database) -> None:
    now = datetime.now(UTC)
    rows = seed_reports(db, now)
    queue = [r for r in rows if r["status"] not in DONE and not r["spam"]]
    late = {r["number"] for r in queue if _past(r, now)}
    with db.transaction() as s:
        yes, total_yes = queries.ticket_page(
            s, queries.TicketFilter(breached=True), now=now, limit=500
        )
        _, total_no = queries.ticket_page(s, queries.TicketFilter(breached=False), now=now)
        board = reports.build_dashboard(s, now)
    assert {line.number for line in yes} == late
    assert all(line.breached for line in yes)
    assert total_yes == board.kpis.breached == len(late)
    assert total_yes + total_no == sum(not r["spam"] for r in rows)


def _page_statements(db: Database, now: datetime) -> dict[str, list[tuple[str, Any]]]:
    """The SQL (with parameters) of the dashboard and of the ticket list's usual views."""
    statements: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        statements.append((args[2], args[3]))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        with db.transaction() as s:
            reports.build_dashboard(s, now)
            board = statements[:]
            queries.ticket_page(s, queries.TicketFilter(), now=now, limit=10)
            queries.ticket_page(s, queries.TicketFilter(breached=True), now=now, limit=10)
            queries.ticket_page(s, queries.TicketFilter(status="new"), now=now, limit=10)
            queries.categories(s)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    return {"dashboard": board, "list": statements[len(board) :]}


def test_the_pages_read_indexes_not_the_whole_table(db: Database) -> None:
    """The open queue through its partial index; nothing reads every ticket row.

    Guards the literal ``NOT IN ('resolved', 'closed')``: were the statuses
    bound as parameters, or the index's condition worded otherwise, neither
    database could use ``ix_ticket_open_queue``. Checked as the planners see
    a young database (no statistics) and a long-running one (5% open, analysed).
    """
    now = datetime.now(UTC)
    seed_reports(db, now, count=3000, open_share=0.05)
    sqlite = db.engine.dialect.name == "sqlite"
    for analysed in (False, True) if sqlite else (True,):
        if analysed:
            with db.engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
        pages = _page_statements(db, now)
        # The dashboard's queue counts and watch list; on SQLite the breached filter too
        # (PostgreSQL rightly walks the number index instead, for the first page).
        queue = [q for q in pages["dashboard"] if _filters_open_queue(q[0])]
        assert len(queue) == 2
        if sqlite:
            queue += [q for q in pages["list"] if _filters_open_queue(q[0])]
            assert len(queue) == 4  # its page and its count
        with db.engine.connect() as conn:
            for sql, params in pages["dashboard"] + pages["list"]:
                if sqlite:
                    steps = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
                    plan = "\n".join(str(row[3]) for row in steps)
                    assert not re.search(r"^SCAN ticket$", plan, re.M), (analysed, sql, plan)
                else:  # counting half of a small table, PostgreSQL rightly reads it all
                    steps = conn.exec_driver_sql("EXPLAIN " + sql, params)
                    plan = "\n".join(str(row[0]) for row in steps)
                if (sql, params) in queue:
                    assert "ix_ticket_open_queue" in plan, (analysed, sql, plan)


def _filters_open_queue(sql: str) -> bool:
    return "NOT IN ('resolved', 'closed')" in sql.partition("WHERE")[2]
