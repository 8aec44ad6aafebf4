"""Initial schema: stations, trains, cards, card events, per-second history, the
gates' streams, views, roles and the gate functions.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Applies 0001_initial.sql, frozen: never edited again. Every revision applies its
own frozen SQL file; the current schema lives in sql/ and procedures/ (install
order: metro.schema.TREE), and tests/test_migrations.py checks that replaying the
revisions and installing the tree give the same catalog.

Until revision 0005 the revisions applied the files of the tree they listed, as
those files were at upgrade time. 0001_initial.sql is what 0001 applied when it
was released, before revision 0002 was added: sql/01_schema.sql ..
sql/06_roles.sql, then procedures/01_support.sql .. procedures/06_trains.sql, at
commit 8884bd7 (the revision was not changed before 0002 was added in dbfbed0).
The later in-place edits of those files (87ade1d: domains instead of table
CHECKs, row-level history trigger; 77f3443: validate_entries) reached only
databases installed after them; revision 0005 brings both kinds to one schema.
"""

from pathlib import Path

from metro.schema import run_revision_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    raise NotImplementedError(
        "the initial schema has no downgrade: DROP SCHEMA metro CASCADE removes it")
