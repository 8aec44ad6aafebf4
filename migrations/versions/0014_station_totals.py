"""Lifetime counters per station for /metrics.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01

Applies 0014_station_totals.sql, frozen (see 0001): the rollup adds every batch to
station_totals as well, in the same transaction, and dashboard_totals reads those
counters instead of summing the retained per-second history, so the counters
/metrics exports never fall when old days are dropped and cost one row a station.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
