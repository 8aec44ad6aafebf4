"""The dashboard's reads: views for metro_reader, bridge_lag() for metro_reader.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

Applies 0007_dashboard.sql, frozen (see 0001):
- views dashboard_seconds, dashboard_stations, dashboard_trains,
  dashboard_fraud_feed, dashboard_payments, dashboard_totals, granted to
  metro_reader, and the index risk_decisions (decided_at) they count through;
- bridge_lag() runs as its owner, so metro_reader learns how far each stream
  is without being able to read a stream row;
- busiest_stations counts [now - 1 minute, now], never a future second.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
