"""The lag functions take a count limit.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01

Applies 0013_lag_count_limit.sql, frozen (see 0001): worker_lag(count_limit)
and bridge_lag(count_limit) replace worker_lag() and bridge_lag(); with a
limit they count at most count_limit + 1 pending rows, so a caller that asks
every second (the dashboard) pays the same whatever the backlog.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
