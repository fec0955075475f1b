"""Hot statements compiled once and handed straight to the database driver.

SQLAlchemy's ``Connection.execute`` costs about 100 us per statement before
the database sees it: the statement's cache key, the compiled-cache lookup,
an execution context, events and a result object. The pipeline runs a dozen
statements per mail, so that overhead was a quarter of a mail's time on
SQLite (docs/performance.md). ``Fast`` keeps the parts that matter and drops
the rest: the statement is compiled once per dialect and set of parameter
names, by SQLAlchemy, and each execution applies the compiled statement's own
bind and result processors (the same conversions ``execute`` makes:
datetimes, JSON, TypeDecorators) and calls the driver's cursor.

What it does not do, it refuses at compile time and leaves to
``Connection.execute``: Python-side column defaults, expanding ``IN``
parameters, RETURNING with several parameter sets. Driver errors are raised
as SQLAlchemy's ``DBAPIError`` subclasses, and a lost connection is
invalidated, as ``execute`` would, so callers see no difference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Executable

Params = Mapping[str, Any]
_Processor = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Plan:
    """One compiled form of a statement: SQL text and how to fill it in."""

    sql: str
    positional: tuple[str, ...] | None  # parameter order for qmark drivers
    names: Mapping[str, str]  # parameter -> driver name for pyformat drivers
    binds: Mapping[str, _Processor]
    #: Values the statement carries itself (``.values(x=1)``, ``col == "text"``).
    own: Mapping[str, Any]
    results: tuple[_Processor | None, ...] | None  # None: the statement returns no rows


class Result:
    """The rows a statement returned (already converted), and its row count."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def one_or_none(self) -> tuple[Any, ...] | None:
        if len(self.rows) > 1:
            raise exc.MultipleResultsFound("more than one row where one was expected")
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def scalar_one(self) -> Any:
        row = self.one_or_none()
        if row is None:
            raise exc.NoResultFound("no row where one was expected")
        return row[0]


class Fast:
    """A statement run through the driver directly; build once, at import time."""

    __slots__ = ("_plans", "prepare", "statement")

    def __init__(self, statement: Executable, *, prepare: bool = True) -> None:
        self.statement = statement
        #: False: PostgreSQL plans each execution afresh instead of keeping a prepared
        #: plan (psycopg prepares a statement run five times on a connection).
        self.prepare = prepare
        self._plans: dict[tuple[str, tuple[str, ...]], _Plan | None] = {}

    def execute(self, conn: Connection, params: Params | Sequence[Params]) -> Result:
        """Run with one parameter set, or several (``executemany``, no rows back)."""
        many = not isinstance(params, Mapping)
        sets: Sequence[Params] = [params] if isinstance(params, Mapping) else params
        if not sets:
            return Result([], 0)
        key = (conn.dialect.name, tuple(sets[0]))
        try:
            plan = self._plans[key]
        except KeyError:
            plan = self._plans[key] = _compile(self.statement, conn.dialect, key[1], many=many)
        if plan is None or (many and plan.results is not None):
            return _through_sqlalchemy(conn, self.statement, params)
        driver_params = [_bind(plan, p) for p in sets]
        dbapi = conn.connection
        cursor = dbapi.cursor()
        try:
            if many:
                cursor.executemany(plan.sql, driver_params)
            elif not self.prepare and conn.dialect.driver == "psycopg":
                cast(Any, cursor).execute(plan.sql, driver_params[0], prepare=False)
            else:
                cursor.execute(plan.sql, driver_params[0])
            rows: list[tuple[Any, ...]] = []
            if plan.results is not None:
                processors = plan.results
                rows = [
                    tuple(p(v) if p else v for p, v in zip(processors, row, strict=True))
                    for row in cursor.fetchall()
                ]
            return Result(rows, cursor.rowcount)
        except conn.dialect.loaded_dbapi.Error as error:
            lost = conn.dialect.is_disconnect(error, dbapi, cursor)
            if lost:
                conn.invalidate(error)
            raise exc.DBAPIError.instance(
                plan.sql,
                driver_params,
                error,
                conn.dialect.loaded_dbapi.Error,
                connection_invalidated=lost,
                dialect=conn.dialect,
            ) from error
        finally:
            cursor.close()


def _compile(
    statement: Executable, dialect: Dialect, names: tuple[str, ...], *, many: bool
) -> _Plan | None:
    compiled = statement.compile(dialect=dialect, column_keys=list(names))  # type: ignore[attr-defined]
    assert isinstance(compiled, SQLCompiler)
    if (
        compiled.insert_prefetch
        or compiled.update_prefetch
        or compiled.post_compile_params
        or compiled.literal_execute_params
        or compiled.schema_translate_map
    ):
        return None
    results: tuple[_Processor | None, ...] | None = None
    if compiled._result_columns:
        results = tuple(
            column.type._cached_result_processor(dialect, None)
            for column in compiled._result_columns
        )
    return _Plan(
        sql=compiled.string,
        positional=tuple(compiled.positiontup) if compiled.positional else None,  # type: ignore[arg-type]
        names=dict(compiled.escaped_bind_names),
        binds=dict(compiled._bind_processors),  # type: ignore[arg-type]
        own={
            name: value
            for name, value in compiled.construct_params(escape_names=False, _check=False).items()
            if name not in names
        },
        results=results,
    )


def _bind(plan: _Plan, params: Params) -> Any:
    """The driver's parameters: converted, in the driver's order or under its names."""
    binds = plan.binds
    if plan.own:
        params = {**plan.own, **params}
    if plan.positional is not None:
        return tuple(
            binds[name](params[name]) if name in binds else params[name] for name in plan.positional
        )
    names = plan.names
    return {
        names.get(name, name): binds[name](value) if name in binds else value
        for name, value in params.items()
    }


def _through_sqlalchemy(
    conn: Connection, statement: Executable, params: Params | Sequence[Params]
) -> Result:
    result = conn.execute(statement, params)
    rows = [tuple(row) for row in result] if result.returns_rows else []
    return Result(rows, result.rowcount)
