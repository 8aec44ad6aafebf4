"""The fraud rules take their thresholds as arguments.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

Applies 0011_rule_thresholds.sql, frozen (see 0001): fraud_rule(card_id, ts,
fraud_window, entry_limit, station_limit) replaces fraud_rule(card_id, ts),
which read settings inside the rules' query; validate_entry reads the
thresholds with the station, so the rules' read is bounded when its plan
starts and opens only the partitions the window spans.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
