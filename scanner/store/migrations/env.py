"""Alembic environment: migrations run on the connection the store hands over (never from a
URL in an ini file), inside the store's own transaction and lock."""

from __future__ import annotations

from alembic import context

from scanner.store.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
