"""Engine and session factory, and the ``transaction()`` context manager."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, create_engine

from mailbot.errors import StorageUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long a SQLite writer waits for the lock before giving up, in ms.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_read_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=1")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _postgres_read_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    cursor.execute("SET default_transaction_read_only = on")
    cursor.close()
    dbapi_connection.commit()


def make_read_only_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine that cannot write: for the web page (DESIGN invariant 7).

    SQLite connections get ``PRAGMA query_only`` and keep pysqlite's deferred
    BEGIN (no ``BEGIN IMMEDIATE``: a reader must not take the write lock);
    PostgreSQL sessions are ``default_transaction_read_only``.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        event.listen(engine, "connect", _sqlite_read_only)
        return engine
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    event.listen(engine, "connect", _postgres_read_only)
    return engine


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Create the engine for ``url``; SQLite files get WAL mode and a busy timeout.

    On SQLite, WAL with ``synchronous=NORMAL`` keeps every committed
    transaction across a process crash (only an OS crash or power loss can
    lose the last commits); the raw mail is ours once the commit returns.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # Take the write lock at BEGIN: no deadlock between two upgrading readers.
        event.listen(
            engine,
            "begin",
            lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"),
        )

        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


class Database:
    """The one handle the rest of mailbot holds: an engine and its transactions."""

    def __init__(self, url: str, *, pool_size: int = 5, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only
        factory = make_read_only_engine if read_only else make_engine
        self.engine = factory(url, pool_size=pool_size)
        # SQLite has one writer at a time (BEGIN IMMEDIATE), and a connection that
        # finds the database locked sleeps in its busy handler (1 ms, 2 ms, 5 ms,
        # ... up to 100 ms) before looking again: under a burst the pipeline
        # workers slept while the listeners committed, and the other way round.
        # The threads of this process queue on a lock instead and take turns at
        # once. Reentrant: a thread already in a transaction may open another
        # (it then waits for SQLite itself, as before). PostgreSQL needs none.
        self._writing: AbstractContextManager[Any] | None = (
            threading.RLock() if self.engine.dialect.name == "sqlite" and not read_only else None
        )

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def display_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def transaction(self) -> AbstractContextManager[Session]:
        return _serialised(self._writing, transaction(self.engine))

    def begin(self) -> AbstractContextManager[Connection]:
        """A Core connection in a transaction: cheaper than a Session for one statement."""
        return _serialised(self._writing, connection(self.engine))

    def ping(self) -> None:
        """Raise StorageUnavailableError unless the database answers."""
        with self.transaction() as session:
            session.connection().exec_driver_sql("SELECT 1")

    def close(self) -> None:
        self.engine.dispose()


@contextmanager
def _serialised(
    lock: AbstractContextManager[Any] | None, inner: AbstractContextManager[T]
) -> Iterator[T]:
    if lock is None:
        with inner as value:
            yield value
        return
    with lock, inner as value:
        yield value


@contextmanager
def _storage_errors() -> Iterator[None]:
    """Connection-level failures become ``StorageUnavailableError`` ("try later")."""
    try:
        yield
    except OperationalError as exc:
        raise StorageUnavailableError(f"database unavailable: {exc.orig!r}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StorageUnavailableError(f"database connection lost: {exc.orig!r}") from exc
        raise


@contextmanager
def connection(engine: Engine) -> Iterator[Connection]:
    """Like ``transaction`` but a bare Connection, for the hottest single statements."""
    with _storage_errors(), engine.begin() as conn:
        yield conn


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose work commits on a clean exit and rolls back on any error.

    Connection-level failures become ``StorageUnavailableError`` so that
    callers can answer "try later" without knowing SQLAlchemy.
    """
    with (
        _storage_errors(),
        Session(engine, expire_on_commit=False) as session,
        session.begin(),
    ):
        yield session
