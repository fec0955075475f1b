"""Schema migrations with Alembic: upgrade, and the check the daemon runs at start.

The migration scripts ship inside the package (``mailbot/store/migrations/``)
so that ``mailbot db upgrade`` works from an installed wheel, not only from a
source checkout.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from mailbot.errors import SchemaError
from mailbot.store.db import Database

SCRIPT_LOCATION = Path(__file__).with_name("migrations")


def alembic_config(db: Database) -> Config:
    engine = db.engine
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option(
        "sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%")
    )
    config.attributes["engine"] = engine
    return config


def head_revision(db: Database) -> str | None:
    return ScriptDirectory.from_config(alembic_config(db)).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> None:
    command.upgrade(alembic_config(db), revision)


def downgrade(db: Database, revision: str) -> None:
    command.downgrade(alembic_config(db), revision)


def check_schema(db: Database) -> None:
    """Raise SchemaError, saying what to run, unless the database is at head."""
    current, head = current_revision(db), head_revision(db)
    if current != head:
        state = "empty (no schema yet)" if current is None else f"at revision {current}"
        raise SchemaError(
            f"the database is {state} but this mailbot needs revision {head}: "
            "run `mailbot db upgrade` first"
        )
