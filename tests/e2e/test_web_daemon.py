"""The web page as `mailbot run` serves it: health, login redirect, the API with a token."""

from __future__ import annotations

import json
import smtplib
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.test_daemon import DaemonProcess

pytestmark = pytest.mark.e2e

AGENTS = "agents:\n  - email: olga@example.org\n    name: Olga\n"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


def get(url: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_http(url: str, daemon: DaemonProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if get(url)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{url} not answering:\n{daemon.log()[-3000:]}")
        time.sleep(0.1)


def test_mailbot_run_serves_the_web_page_and_the_api(tmp_path: Path) -> None:
    agents = tmp_path / "agents.yaml"
    agents.write_text(AGENTS)
    port = free_port()
    daemon = DaemonProcess(tmp_path, MAILBOT_WEB__PORT=str(port), MAILBOT_AGENTS_FILE=str(agents))
    daemon.upgrade()
    token = daemon.cli("web", "token", "set", "olga@example.org").stdout.strip()
    assert len(token) >= 20
    base = f"http://127.0.0.1:{port}"
    daemon.start()
    try:
        wait_http(f"{base}/healthz", daemon)
        status, headers, _ = get(f"{base}/")
        assert status in (302, 303, 307)
        assert "/login" in headers.get("location", headers.get("Location", ""))
        assert get(f"{base}/api/tickets")[0] == 401
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = (
            "Ann <ann@example.org>",
            "support@localhost",
            "Hi",
        )
        mail["Message-ID"] = "<web-e2e@example.org>"
        mail.set_content("Where is my order?")
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=10) as client:
            client.send_message(mail)
        deadline = time.monotonic() + 30
        while True:
            status, _, body = get(f"{base}/api/tickets", token)
            assert status == 200
            if "Hi" in body.decode():
                break
            if time.monotonic() > deadline:
                pytest.fail(f"ticket not in the API: {body[:500]!r}")
            time.sleep(0.2)
        assert json.loads(body)  # a JSON document
        metrics = get(f"{base}/metrics")[2].decode()
        assert "mailbot_" in metrics
        assert daemon.terminate(timeout=15) == 0
    finally:
        daemon.stop()
