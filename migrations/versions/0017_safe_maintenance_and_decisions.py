"""Maintenance that loses nothing; decisions no client can bend.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01

Applies 0017_safe_maintenance_and_decisions.sql, frozen (see 0001): run_maintenance()
keeps what the rollup has not read (rollup_unread()), runs one call at a time with
create_partitions() (which makes only days rows are kept for), and deletes row by row at
most 100,000 rows a call (delete_expired(); run_maintenance_until_done() for pg_cron);
evaluate_transactions refuses a transaction_id a concurrent call committed for another
payment (MT011); account ids are bounded (MT014); the gates refuse REPEATABLE READ and
SERIALIZABLE (MT013); the clock skew is measured against the server's clock, and is_fraud
checks ts.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
