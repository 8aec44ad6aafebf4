"""A swipe compiles less.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02

Applies 0023_swipes_compile_less.sql, frozen (see 0001): cents_text is one numeric
product (inlined into entry_outcome, which validate_entry compiles in every
transaction), and validate_entry reads the rules with SELECT INTO. Only functions
change; no table is locked.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
