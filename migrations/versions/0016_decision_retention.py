"""Payment decisions leave by retention.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01

Applies 0016_decision_retention.sql, frozen (see 0001): settings.decision_retention
(30 days), and run_maintenance() deletes the risk_decisions rows older than it, at most
100,000 a call, saying 'more' when another call is due.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
