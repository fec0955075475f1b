"""Alembic migrations against the models, on SQLite and PostgreSQL, and the start-up check."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

import mailbot.store.models  # noqa: F401  (registers the tables)
from mailbot import cli
from mailbot.errors import SchemaError
from mailbot.store import inbox, schema
from mailbot.store.db import Database
from tests.conftest import free_port

TABLES = {
    "agent",
    "attachment",
    "counter",
    "customer",
    "history",
    "imap_cursor",
    "inbound",
    "job_mark",
    "lease",
    "message",
    "outbound",
    "routing_state",
    "rule_hit",
    "ticket",
    "ticket_link",
    "ticket_participant",
    "web_credential",
}


@pytest.fixture
def empty_db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    """cli.main installs a handler on the (captured) stderr; put the old ones back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _diffs(db: Database) -> list[Any]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))


def _tables(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_upgrade_head_matches_models(empty_db: Database) -> None:
    assert _tables(empty_db) == set()
    schema.upgrade(empty_db)
    assert _tables(empty_db) == TABLES
    assert set(SQLModel.metadata.tables) == TABLES
    assert _diffs(empty_db) == []
    assert schema.current_revision(empty_db) == schema.head_revision(empty_db)
    assert schema.head_revision(empty_db) is not None


def test_downgrade_to_base_and_upgrade_again(empty_db: Database) -> None:
    schema.upgrade(empty_db)
    inbox.accept(empty_db, b"Message-ID: <before@x>\r\n\r\nbody\r\n", source="pipe")
    schema.downgrade(empty_db, "base")
    assert _tables(empty_db) == set()
    assert schema.current_revision(empty_db) is None
    schema.upgrade(empty_db)
    assert _tables(empty_db) == TABLES
    assert _diffs(empty_db) == []
    # The tables work after the round trip, and the old rows are gone.
    assert inbox.list_inbound(empty_db) == []
    accepted = inbox.accept(empty_db, b"Message-ID: <before@x>\r\n\r\nbody\r\n", source="pipe")
    assert not accepted.duplicate


def test_upgrade_is_idempotent(empty_db: Database) -> None:
    schema.upgrade(empty_db)
    schema.upgrade(empty_db)
    assert schema.current_revision(empty_db) == schema.head_revision(empty_db)
    schema.check_schema(empty_db)


def test_check_schema_on_empty_database_says_what_to_run(empty_db: Database) -> None:
    with pytest.raises(SchemaError) as info:
        schema.check_schema(empty_db)
    assert "mailbot db upgrade" in str(info.value)
    assert "empty" in str(info.value)


def test_check_schema_passes_at_head(empty_db: Database) -> None:
    schema.upgrade(empty_db)
    schema.check_schema(empty_db)


def test_check_schema_after_downgrade_fails_again(empty_db: Database) -> None:
    schema.upgrade(empty_db)
    schema.downgrade(empty_db, "base")
    with pytest.raises(SchemaError, match="mailbot db upgrade"):
        schema.check_schema(empty_db)


@pytest.mark.usefixtures("_restore_logging")
def test_run_refuses_an_unmigrated_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db_file = tmp_path / "unmigrated.db"
    monkeypatch.setenv("MAILBOT_DATABASE_URL", f"sqlite:///{db_file}")
    monkeypatch.setenv("MAILBOT_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("MAILBOT_SMTP__PORT", str(free_port()))
    code = cli.main(["run"])
    captured = capsys.readouterr()
    assert code != 0
    assert "mailbot db upgrade" in captured.err
    # Nothing was created behind the operator's back.
    check = Database(f"sqlite:///{db_file}")
    try:
        assert schema.current_revision(check) is None
        assert _tables(check) == set()
    finally:
        check.close()


def test_upgrade_keeps_existing_rows(empty_db: Database) -> None:
    """Each migration runs over a database that already holds data (new NOT NULL columns)."""
    from sqlalchemy import text

    schema.upgrade(empty_db, "0001")
    with empty_db.transaction() as session:
        session.execute(
            text(
                "INSERT INTO customer (email, name, created_at) "
                "VALUES ('ann@example.org', 'Ann', CURRENT_TIMESTAMP)"
            )
        )
        session.execute(
            text(
                "INSERT INTO ticket (number, subject, description, status, priority, source, "
                "tags, created_at, updated_at) VALUES (1, 's', 'd', 'new', 'medium', 'email', "
                "'[]', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    schema.upgrade(empty_db)
    with empty_db.transaction() as session:
        spam, level = session.execute(text("SELECT spam, escalation_level FROM ticket")).one()
        bouncing = session.execute(text("SELECT bouncing FROM customer")).scalar_one()
    assert (bool(spam), level, bool(bouncing)) == (False, 0, False)
