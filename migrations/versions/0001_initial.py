"""Initial schema: the sql/ and procedures/ tree.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Later schema changes add a numbered file to sql/ (the files listed here are
not edited once released) and a revision that applies it; a changed
procedures/ file is re-applied by the revision that changes it
(CREATE OR REPLACE). tests/test_migrations.py checks that the tree and the
revisions build the same schema.
"""


from metro.schema import apply_revision_files

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLE_FILES = ["01_schema.sql", "02_tables.sql", "03_history.sql", "04_streams.sql",
               "05_views.sql", "06_roles.sql"]
PROCEDURE_FILES = ["01_support.sql", "02_history.sql", "03_fraud.sql", "04_gates.sql",
                   "05_recharge.sql", "06_trains.sql"]


def upgrade() -> None:
    apply_revision_files(TABLE_FILES, PROCEDURE_FILES)


def downgrade() -> None:
    raise NotImplementedError(
        "the initial schema has no downgrade: DROP SCHEMA metro CASCADE removes it")
