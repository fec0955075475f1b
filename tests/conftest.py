"""Shared fixtures: clean environment, settings, and SQLite or private PostgreSQL databases.

Tests that need a real service start it themselves. Where the binary is
missing they skip with a reason, except under ``CI=true``, where a missing
service is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailbot.config import Settings, load_settings
from mailbot.store import schema
from mailbot.store.db import Database
from mailbot.testing import PostgresServer, ServiceMissingError
from mailbot.testing import free_port as free_port

IN_CI = os.environ.get("CI", "").lower() == "true"
ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
EMAILS = Path(__file__).resolve().parent / "data" / "emails"


def missing_service(reason: str) -> None:
    """Skip locally; fail under CI=true, so a missing service cannot pass silently."""
    if IN_CI:
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("MAILBOT_"):
            monkeypatch.delenv(key)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings with the data directory under tmp_path; keyword arguments override.

    Mail is parsed in the worker itself (``parse.processes = 0``): tests replace
    the parser, and starting a child per test is slow. The parser children
    have their own tests (``test_parse_pool.py``), and the daemon tests run
    them as shipped.
    """

    def build(database_url: str = "", **sections: Any) -> Settings:
        env = {"MAILBOT_DATA_DIR": str(tmp_path / "var"), "MAILBOT_PARSE__PROCESSES": "0"}
        if database_url:
            env["MAILBOT_DATABASE_URL"] = database_url
        settings = load_settings(environ=env)
        if sections:
            data = settings.model_dump()
            for key, value in sections.items():
                if isinstance(value, dict):
                    data[key].update(value)
                else:
                    data[key] = value
            settings = Settings.model_validate(data)
        return settings

    return build


# -- PostgreSQL -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except ServiceMissingError as exc:
        missing_service(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    return pg_server.create_database()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL: SQLite file, then private PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mailbot.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A database migrated to head, on SQLite and on PostgreSQL."""
    database = Database(db_url)
    schema.upgrade(database)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def settings_for(make_settings: Callable[..., Settings], db_url: str) -> Callable[..., Settings]:
    """Settings bound to the test's database (same parametrisation as ``db``)."""

    def build(**sections: Any) -> Settings:
        return make_settings(db_url, **sections)

    return build
