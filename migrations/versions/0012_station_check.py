"""card_events checks its stations once per statement.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01

Applies 0012_station_check.sql, frozen (see 0001): the row trigger that
checked each new card event's station becomes a statement trigger over the
inserted rows (a transition table), one anti-join per statement.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
