"""``store.fast``: statements sent straight to the driver behave like ``Connection.execute``.

Each case runs the same statement both ways, on SQLite and PostgreSQL, and
compares what the database holds and what comes back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, exc, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel

from mailbot.store import models  # noqa: F401 (fills the metadata)
from mailbot.store.db import Database
from mailbot.store.fast import Fast

T0 = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
_tables = SQLModel.metadata.tables
_ticket, _history, _counter = _tables["ticket"], _tables["history"], _tables["counter"]
_customer = _tables["customer"]

TICKET = {
    "number": 1,
    "subject": "Привет, world",
    "description": "text",
    "status": "new",
    "priority": "high",
    "category": "technical",
    "subcategory": None,
    "requester_id": None,
    "assignee_id": None,
    "source": "email",
    "merged_into_id": None,
    "tags": ["vip", "eu"],
    "spam": False,
    "escalation_level": 0,
    "sla_paused_seconds": 0,
    "created_at": T0,
    "updated_at": T0,
    "resolved_at": None,
    "closed_at": None,
    "first_response_at": None,
    "sla_first_response_due_at": T0 + timedelta(hours=4),
    "sla_resolution_due_at": None,
}
_INSERT_TICKET = Fast(_ticket.insert().returning(_ticket.c.id))
_TICKET_BACK = Fast(
    select(_ticket.c.subject, _ticket.c.tags, _ticket.c.created_at, _ticket.c.spam).where(
        _ticket.c.id == bindparam("id")
    )
)


def _insert_ticket(db: Database, **changes: object) -> int:
    with db.begin() as conn:
        return int(_INSERT_TICKET.execute(conn, {**TICKET, **changes}).scalar_one())


def test_insert_and_select_convert_values_as_sqlalchemy_does(db: Database) -> None:
    ticket_id = _insert_ticket(db)
    with db.begin() as conn:
        fast = _TICKET_BACK.execute(conn, {"id": ticket_id}).one_or_none()
        slow = conn.execute(_TICKET_BACK.statement, {"id": ticket_id}).one()
    assert fast == tuple(slow)
    assert fast == ("Привет, world", ["vip", "eu"], T0, False)


def test_a_missing_row_and_too_many_rows(db: Database) -> None:
    with db.begin() as conn:
        assert _TICKET_BACK.execute(conn, {"id": 999}).one_or_none() is None
        assert _TICKET_BACK.execute(conn, {"id": 999}).scalar() is None
        with pytest.raises(exc.NoResultFound):
            _TICKET_BACK.execute(conn, {"id": 999}).scalar_one()
    _insert_ticket(db, number=2)
    _insert_ticket(db, number=3)
    every = Fast(select(_ticket.c.id))
    with db.begin() as conn, pytest.raises(exc.MultipleResultsFound):
        every.execute(conn, {}).one_or_none()


def test_several_parameter_sets_and_the_row_count(db: Database) -> None:
    ticket_id = _insert_ticket(db)
    insert = Fast(_history.insert())
    rows = [
        {
            "ticket_id": ticket_id,
            "field": "status",
            "old_value": str(n),
            "new_value": str(n + 1),
            "actor": "test",
            "created_at": T0 + timedelta(minutes=n),
        }
        for n in range(5)
    ]
    rename = Fast(
        _history.update()
        .where(_history.c.ticket_id == bindparam("tid"), _history.c.old_value < "3")
        .values(actor=bindparam("who"))
    )
    with db.begin() as conn:
        insert.execute(conn, rows)
        assert rename.execute(conn, {"tid": ticket_id, "who": "renamed"}).rowcount == 3
        found = conn.execute(
            select(_history.c.actor, _history.c.created_at).order_by(_history.c.id)
        ).all()
    assert [tuple(r) for r in found] == [
        ("renamed", T0),
        ("renamed", T0 + timedelta(minutes=1)),
        ("renamed", T0 + timedelta(minutes=2)),
        ("test", T0 + timedelta(minutes=3)),
        ("test", T0 + timedelta(minutes=4)),
    ]


@pytest.mark.parametrize("dialect", [sqlite, postgresql], ids=["sqlite", "postgresql"])
def test_values_the_statement_carries_and_a_repeated_parameter(
    db: Database, dialect: object
) -> None:
    """``.values(name=..., value=1)`` and one ``:id`` used twice (a UNION)."""
    name = db.engine.dialect.name
    if dialect is not (postgresql if name == "postgresql" else sqlite):
        pytest.skip("each dialect's upsert runs on its own database")
    upsert = Fast(
        dialect.insert(_counter)  # type: ignore[attr-defined]
        .values(name="fast-test", value=1)
        .on_conflict_do_update(index_elements=["name"], set_={"value": _counter.c.value + 1})
        .returning(_counter.c.value)
    )
    with db.begin() as conn:
        assert [upsert.execute(conn, {}).scalar_one() for _ in range(3)] == [1, 2, 3]
    ticket_id = _insert_ticket(db)
    twice = Fast(
        select(_ticket.c.subject)
        .where(_ticket.c.id == bindparam("id"))
        .union_all(select(_ticket.c.status).where(_ticket.c.id == bindparam("id")))
    )
    with db.begin() as conn:
        assert sorted(twice.execute(conn, {"id": ticket_id}).rows) == [
            ("new",),
            ("Привет, world",),
        ]


def test_what_it_cannot_send_directly_goes_through_sqlalchemy(db: Database) -> None:
    """A Python-side column default (``sla_paused_seconds``) and an expanding IN."""
    values = {k: v for k, v in TICKET.items() if k != "sla_paused_seconds"}
    with db.begin() as conn:
        ticket_id = _INSERT_TICKET.execute(conn, values).scalar_one()
        paused = conn.execute(
            select(_ticket.c.sla_paused_seconds).where(_ticket.c.id == ticket_id)
        ).scalar_one()
        expanding = Fast(
            select(_ticket.c.number).where(_ticket.c.id.in_(bindparam("ids", expanding=True)))
        )
        assert expanding.execute(conn, {"ids": [ticket_id, 999]}).rows == [(1,)]
    assert paused == 0


def test_driver_errors_are_sqlalchemy_errors(db: Database) -> None:
    _insert_ticket(db)
    with pytest.raises(exc.IntegrityError), db.begin() as conn:
        _INSERT_TICKET.execute(conn, TICKET)  # the same number again
    insert_customer = Fast(_customer.insert())
    with pytest.raises(exc.IntegrityError), db.begin() as conn:
        insert_customer.execute(conn, {"email": None, "name": "x", "created_at": T0})
    # The failed transactions left nothing behind and the connection still works.
    with db.begin() as conn:
        assert conn.execute(select(_ticket.c.number)).scalars().all() == [1]


@pytest.mark.parametrize("prepare", [True, False], ids=["prepared", "planned-each-time"])
def test_a_statement_can_refuse_a_prepared_plan(db: Database, prepare: bool) -> None:
    """``prepare=False``: PostgreSQL never keeps a plan of it (the inbox claim's case)."""
    if not db.is_postgres:
        pytest.skip("SQLite has no server-side plans to keep")
    marker = f"prepare_{prepare}".lower()
    stmt = Fast(
        select(_ticket.c.id.label(marker)).where(_ticket.c.id == bindparam("id")),
        prepare=prepare,
    )
    with db.begin() as conn:
        for n in range(10):  # psycopg prepares what runs five times
            assert stmt.execute(conn, {"id": n}).rows == []
        kept = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %(m)s",
            {"m": f"%{marker}%"},
        ).scalar_one()
    assert kept == (1 if prepare else 0)
