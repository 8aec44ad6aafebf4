"""The entry outcome as one CASE.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-03

Applies 0026_outcome_as_one_case.sql, frozen (see 0001): entry_outcome, inlined into
validate_entry and validate_entries, is one CASE whose branches are whole results instead
of a CASE per field, so that the expression validate_entry compiles in every transaction
is smaller. Only a function changes; no table is locked.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
