"""Benchmark: the dashboard and the ticket list over 100,000 SQLite tickets.

    .venv/bin/python bench/web.py [--tickets 100000] [--requests 30] [--postgres]
                                  [--no-analyze]

Seeds a fresh database (SQLite, or a private PostgreSQL server with
``--postgres``): about 5% of the tickets open, the rest resolved or closed,
over a year. Then ANALYZE (unless ``--no-analyze``), serve the app with uvicorn
on loopback, log in through the form (CSRF token included), and time GET / and
GET /tickets with httpx, one request at a time. Target: median under 50 ms.
Results: docs/performance.md, "The web page".
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from sqlmodel import SQLModel

from mailbot.config import Settings
from mailbot.store import credentials, keyfile, schema
from mailbot.store.db import Database
from mailbot.testing import PostgresServer, free_port
from mailbot.web.app import create_app

AGENTS = [f"agent{i}@example.org" for i in range(10)]
CATEGORIES = ["billing", "technical", "usage", "account", "other"]
PRIORITIES = ["critical", "high", "medium", "low"]
PATHS = ("/", "/tickets", "/tickets?status=new&sort=priority&q=jam")


def seed(db: Database, count: int) -> str:
    tables = SQLModel.metadata.tables
    now = datetime.now(UTC)
    rng = random.Random(8)
    with db.begin() as conn:
        conn.execute(
            tables["agent"].insert(),
            [
                {"email": a, "name": a, "role": "agent", "skills": [], "time_zone": "UTC",
                 "working_hours": {}, "active": True, "created_at": now}
                for a in AGENTS
            ],
        )  # fmt: skip
        conn.execute(
            tables["customer"].insert(),
            [
                {"email": f"c{i}@example.com", "name": f"C {i}", "bouncing": False,
                 "created_at": now}
                for i in range(5000)
            ],
        )  # fmt: skip
        rows = []
        for n in range(1, count + 1):
            created = now - timedelta(minutes=(count - n) * 5.25 + rng.random())
            done = n < count * 0.95
            status = (
                rng.choice(["resolved", "closed"])
                if done
                else rng.choice(["new", "assigned", "in_progress", "pending", "reopened"])
            )
            resolved = created + timedelta(hours=rng.uniform(1, 60)) if done else None
            rows.append(
                {
                    "number": n,
                    "subject": f"Ticket {n}: printer {rng.choice(['jam', 'offline', 'smoke'])}",
                    "description": "",
                    "status": status,
                    "priority": rng.choice(PRIORITIES),
                    "category": rng.choice(CATEGORIES),
                    "created_at": created,
                    "updated_at": resolved or created,
                    "resolved_at": resolved,
                    "first_response_at": created + timedelta(hours=1) if done else None,
                    "sla_first_response_due_at": created + timedelta(hours=4),
                    "sla_resolution_due_at": created + timedelta(hours=24),
                    "requester_id": rng.randint(1, 5000),
                    "assignee_id": rng.randint(1, len(AGENTS)),
                    "source": "email",
                    "tags": [],
                    "spam": False,
                    "escalation_level": 0,
                }
            )
            if len(rows) == 10_000:
                conn.execute(tables["ticket"].insert(), rows)
                rows = []
        if rows:
            conn.execute(tables["ticket"].insert(), rows)
    with db.transaction() as s:
        return credentials.set_token(s, AGENTS[0])


def prepare(db: Database, analyze: bool) -> None:
    """Planner statistics, as a database in service has them (VACUUM: PostgreSQL's
    index-only scans need the visibility map that autovacuum keeps)."""
    if not analyze:
        return
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with db.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


def measure(base: str, token: str, requests: int) -> None:
    with httpx.Client(base_url=base) as client:
        form = client.get("/login").text  # the CSRF token and its cookie
        found = re.search(r'name="csrf" value="([^"]+)"', form)
        csrf = found.group(1) if found else ""
        answer = client.post("/login", data={"token": token, "next": "/", "csrf": csrf})
        if answer.status_code != 303:
            raise SystemExit(f"login failed: {answer.status_code} {answer.text[:200]}")
        for path in PATHS:
            client.get(path).raise_for_status()  # warm up
            times = []
            for _ in range(requests):
                t0 = time.perf_counter()
                client.get(path).raise_for_status()
                times.append((time.perf_counter() - t0) * 1000)
            print(
                f"GET {path:<45} median {statistics.median(times):6.1f} ms  "
                f"p90 {sorted(times)[int(len(times) * 0.9) - 1]:6.1f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="seed a private PostgreSQL server (mailbot.testing.PostgresServer), not SQLite",
    )
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="skip ANALYZE after seeding: the planner as in a young database, without statistics",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        if args.postgres:
            pg = PostgresServer()
            stack.callback(pg.stop)
            url = pg.create_database()
        else:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        db = Database(url)
        stack.callback(db.close)
        schema.upgrade(db)
        started = time.perf_counter()
        token = seed(db, args.tickets)
        prepare(db, args.analyze)
        print(
            f"seeded {args.tickets} tickets into {db.engine.dialect.name} in "
            f"{time.perf_counter() - started:.1f}s{'' if args.analyze else ' (no ANALYZE)'}"
        )
        settings = Settings.model_validate({"data_dir": tmp, "database_url": url})
        read_db = Database(url, read_only=True)
        stack.callback(read_db.close)
        app = create_app(settings, read_db, keyfile.load_or_create(settings.secret_key_path))
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            measure(f"http://127.0.0.1:{port}", token, args.requests)
        finally:
            server.should_exit = True
            thread.join(timeout=10)


if __name__ == "__main__":
    main()
