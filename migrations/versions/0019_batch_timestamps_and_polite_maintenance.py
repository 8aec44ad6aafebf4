"""Batch timestamps checked whatever the array's shape; maintenance that does not stall
the gates; a train event sent twice.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01

Applies 0019_batch_timestamps_and_polite_maintenance.sql, frozen (see 0001):
validate_entries checks every element of a ts array of any shape (MT009, MT010);
partitions are created and dropped waiting 200 ms at most for their table's lock (busy
otherwise); a train event sent again is recorded once, one naming another station is
refused (MT015); card_alert_export loses its second (card_id, position) index.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
