"""The scheduled jobs inside `mailbot run`: exactly once across SIGKILL, caught up after a
restart, and once in all between two daemons on one PostgreSQL (issue #7).

Tickets are written straight into the database with due times in the past (the
daemons run on the real clock); the jobs run every 0.2 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session

from mailbot.store.db import Database
from mailbot.store.models import Customer, Ticket, TicketStatus
from tests.conftest import PostgresServer
from tests.e2e.test_daemon import DaemonProcess, daemons, scalar

pytestmark = pytest.mark.e2e

__all__ = ["daemons"]

MIA = "mia@example.org"
LEO = "leo@example.org"
JOB_ENV = {
    "MAILBOT_JOBS__INTERVAL_SECONDS": "0.2",
    "MAILBOT_JOBS__DIGEST_TIME": "00:00",
    "MAILBOT_WEB__ENABLED": "false",
}


def agents_file(tmp_path: Path) -> str:
    path = tmp_path / "agents.yaml"
    path.write_text(
        "agents:\n"
        "  - {email: bob@example.org, name: Bob}\n"
        f"  - {{email: {MIA}, name: Mia, role: manager, time_zone: Europe/Berlin}}\n"
        f"  - {{email: {LEO}, name: Leo, role: manager, time_zone: America/New_York}}\n"
    )
    return str(path)


def seed(db: Database, first: int, count: int, *, kind: str) -> None:
    """``count`` tickets numbered from ``first``: breached (``kind="breach"``) or
    resolved four days ago (``kind="resolved"``)."""
    now = datetime.now(UTC)
    with db.transaction() as session:
        assert isinstance(session, Session)
        for number in range(first, first + count):
            customer = Customer(email=f"c{number}@example.com", name=f"C {number}")
            session.add(customer)
            session.flush()
            values: dict[str, object] = {
                "number": number,
                "subject": f"Ticket {number}",
                "requester_id": customer.id,
                "created_at": now - timedelta(hours=10),
                "updated_at": now - timedelta(hours=10),
                "sla_first_response_due_at": now - timedelta(hours=2),
                "sla_resolution_due_at": now + timedelta(hours=14),
            }
            if kind == "resolved":
                values.update(
                    status=TicketStatus.resolved,
                    first_response_at=now - timedelta(hours=9),
                    resolved_at=now - timedelta(days=4),
                )
            session.add(Ticket(**values))  # type: ignore[arg-type]
        # The ticket counter must stay ahead of the numbers used here.
        session.execute(text("DELETE FROM counter"))


def events(db: Database, event: str) -> list[tuple[int | None, str]]:
    with db.transaction() as session:
        rows = session.execute(
            text("SELECT ticket_id, recipients FROM outbound WHERE event = :e ORDER BY id"),
            {"e": event},
        ).all()
    return [(r[0], str(r[1])) for r in rows]


def wait_for(check: Callable[[], bool], daemon: DaemonProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if not daemon.alive():
            pytest.fail(f"daemon died:\n{daemon.log()[-5000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"jobs did not finish in {timeout}s:\n{daemon.log()[-3000:]}")
        time.sleep(0.1)


def test_escalations_once_across_sigkill_and_a_missed_run_is_caught_up(
    daemons: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    daemon = daemons(MAILBOT_AGENTS_FILE=agents_file(tmp_path), **JOB_ENV)
    db = daemon.database()
    try:
        seed(db, 1, 15, kind="breach")
        daemon.start()
        wait_for(lambda: len(events(db, "sla-breach")) >= 15 * 2, daemon)
        daemon.kill()  # SIGKILL, possibly in the middle of a run
        # While the daemon is down more tickets breach: the restart catches up.
        seed(db, 101, 15, kind="breach")
        seed(db, 201, 5, kind="resolved")
        daemon.start()
        wait_for(lambda: len(events(db, "sla-breach")) >= 30 * 2, daemon)
        wait_for(lambda: len(events(db, "ticket-closed")) >= 5, daemon)
        daemon.kill()
        daemon.start()
        time.sleep(2.0)  # about ten more runs of every job
        daemon.terminate()
        breach = events(db, "sla-breach")
        # Two managers are told of each breach, once.
        assert len(breach) == 30 * 2
        assert len(set(breach)) == 30 * 2
        escalated = "SELECT count(*) FROM ticket WHERE escalation_level = 1"
        assert scalar(db, escalated) == 30
        assert scalar(db, "SELECT count(*) FROM history WHERE field = 'escalation'") == 30
        closed = events(db, "ticket-closed")
        assert len(closed) == 5
        assert len(set(closed)) == 5
        digests = events(db, "daily-digest")
        assert sorted(r for _, r in digests) == sorted([f'["{MIA}"]', f'["{LEO}"]'])
    finally:
        db.close()


@pytest.mark.postgres
def test_two_daemons_on_one_postgresql_do_everything_once(
    daemons: Callable[..., DaemonProcess], pg_server: PostgresServer, tmp_path: Path
) -> None:
    url = pg_server.create_database()
    env = {"MAILBOT_AGENTS_FILE": agents_file(tmp_path), **JOB_ENV}
    first = daemons(url, **env)
    second = daemons(url, **env)
    db = Database(url)
    try:
        seed(db, 1, 40, kind="breach")
        seed(db, 501, 20, kind="resolved")
        first.start()
        second.start()
        wait_for(lambda: len(events(db, "sla-breach")) >= 40 * 2, first)
        wait_for(lambda: len(events(db, "ticket-closed")) >= 20, first)
        time.sleep(2.0)
        assert first.alive()
        assert second.alive()
        breach = events(db, "sla-breach")
        assert len(breach) == 80
        assert len(set(breach)) == 80
        assert scalar(db, "SELECT count(*) FROM history WHERE field = 'escalation'") == 40
        assert len(events(db, "ticket-closed")) == 20
        assert (
            scalar(
                db, "SELECT count(*) FROM history WHERE field = 'status' AND new_value = 'closed'"
            )
            == 20
        )
        assert len(events(db, "daily-digest")) == 2
    finally:
        db.close()
        first.stop()
        second.stop()
