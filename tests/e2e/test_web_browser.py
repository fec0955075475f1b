"""Every page in headless Chromium (Debian's, via Playwright), hostile mail included.

B-01..B-04, B-09, B-10 rendered in the browser must run no script (no dialog,
no page error, no console error from injected code) and fetch nothing beyond
this server. Screenshots land in test-artifacts/web/.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import uvicorn

from mailbot.config import Settings
from mailbot.web.app import create_app
from tests.conftest import ROOT, free_port, missing_service
from tests.integration.test_web import HOSTILE, NOTE, Site, build_site

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "web"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def served(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[tuple[Site, str]]:
    gen = build_site(make_settings(f"sqlite:///{tmp_path / 'web.db'}"))
    site = next(gen)
    port = free_port()
    app = create_app(site.settings, site.read_db, site.key)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "web server did not start"
        time.sleep(0.05)
    try:
        yield site, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        gen.close()


def test_every_page_in_chromium_runs_no_injected_script(served: tuple[Site, str]) -> None:
    if not CHROMIUM.exists():
        missing_service("Debian's chromium is not installed (/usr/bin/chromium)")
    from playwright.sync_api import sync_playwright

    site, base = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dialogs: list[str] = []
    errors: list[str] = []
    foreign: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on(
                "console",
                lambda m: (
                    errors.append(m.text) if m.type == "error" and "alert" in m.text else None
                ),
            )
            context.on(
                "request",
                lambda r: (
                    foreign.append(r.url)
                    if urlparse(r.url).hostname not in ("127.0.0.1", "localhost", None)
                    and not r.url.startswith(("data:", "about:"))
                    else None
                ),
            )

            def visit(path: str, shot: str) -> None:
                answer = page.goto(base + path, wait_until="load")
                assert answer is not None
                page.wait_for_timeout(150)  # let any injected timer or handler fire
                page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)

            visit("/", "login-redirect")
            assert "/login" in page.url
            page.fill("input[name=token]", site.token)
            page.click("button[type=submit]")
            page.wait_for_url(base + "/")
            visit("/", "dashboard")
            assert page.locator("svg").count() >= 1
            visit("/tickets", "tickets")
            assert page.locator("#tickets tr").count() == len(HOSTILE) + 1
            visit("/tickets?q=B-0&sort=priority", "tickets-filtered")
            for name in HOSTILE:
                number = site.numbers[name]
                visit(f"/tickets/{number}", f"ticket-{name[:3]}-text")
                visit(f"/tickets/{number}?view=html", f"ticket-{name[:3]}-html")
            mine = site.numbers[HOSTILE[0]]
            visit(site.status_link(mine), "status-page")
            assert NOTE not in page.content()
            answer = page.goto(base + site.status_link(mine).replace(".", ".9", 1))
            assert answer is not None
            assert answer.status == 403
            page.screenshot(path=str(ARTIFACTS / "status-tampered.png"))
        finally:
            browser.close()
    assert not dialogs, dialogs
    assert not errors, errors
    assert not foreign, foreign
