"""Schema migrations, run by the store itself on open (``alembic upgrade head``).

The upgrade runs inside one write transaction holding a lock (SQLite ``BEGIN IMMEDIATE``, a
PostgreSQL advisory lock), so several processes opening a fresh store at once migrate it once.
A database at a revision this code does not know was written by a newer iotbaseline: refuse it
rather than guess.
"""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

MIGRATIONS = "scanner.store:migrations"
# Any fixed number: PostgreSQL advisory locks are keyed by a 64-bit integer.
_MIGRATION_LOCK = 0x10_7B_A5_E1


class StoreError(Exception):
    """The store cannot be used as asked: shown as one line."""


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("scanner.store") / "migrations"))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the store ships at least one migration"
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Bring the schema to ``revision`` (default: the newest); return the revision it is at."""
    scripts = ScriptDirectory.from_config(_config())
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": _MIGRATION_LOCK})
        current = current_revision(connection)
        if current is not None and current not in {s.revision for s in scripts.walk_revisions()}:
            raise StoreError(
                f"the store's schema is at revision {current}, newer than this iotbaseline "
                f"knows (up to {scripts.get_current_head()}); upgrade iotbaseline")
        target = scripts.get_current_head() if revision == "head" else revision
        if current != target:
            command.upgrade(_config(connection), revision)
        return current_revision(connection) or ""
