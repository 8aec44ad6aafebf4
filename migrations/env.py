"""Alembic environment: runs revisions on the database metro selects, one transaction each."""

from __future__ import annotations

import psycopg
from alembic import context
from sqlalchemy import create_engine, pool, text

from metro import database

dsn = context.config.attributes.get("dsn") or database.conninfo()
engine = create_engine("postgresql+psycopg://", poolclass=pool.NullPool,
                       creator=lambda: psycopg.connect(dsn))

with engine.connect() as connection:
    # The version table lives in the metro schema with everything else.
    connection.execute(text("CREATE SCHEMA IF NOT EXISTS metro"))
    connection.commit()
    context.configure(connection=connection, version_table_schema="metro",
                      transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
