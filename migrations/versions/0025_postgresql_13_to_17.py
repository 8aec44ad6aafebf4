"""metro on PostgreSQL 13 to 17.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-02

Applies 0025_postgresql_13_to_17.sql, frozen (see 0001): validate_entry, validate_entries,
process_exit and is_fraud run with jit off (before 18 their disabled scans cost enough to
compile every swipe), and run_rollup does without max(xid8) (not in 13) and sums waits
as numeric; create_partitions writes its comment's day in ISO form whatever the DateStyle.
Only functions change; no table is locked.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
