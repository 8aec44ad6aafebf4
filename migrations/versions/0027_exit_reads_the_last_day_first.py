"""process_exit reads the last day first.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-03

Applies 0027_exit_reads_the_last_day_first.sql, frozen (see 0001): process_exit looks
for the card's latest accepted entry or exit within the last day first (one or two
partitions), and over all of history only when that day holds none, through the new
latest_entry_or_exit, inlined. Only functions change; no table is locked.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
