"""Payment counters for /metrics kept by the rollup.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01

Applies 0015_payment_totals.sql, frozen (see 0001): the rollup counts the
transaction_decisions stream into payment_totals, and dashboard_totals reads
those two rows instead of counting every decision ever recorded on each scrape.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
