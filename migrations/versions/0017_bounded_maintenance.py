"""Maintenance keeps what the rollup has not read; bounded row-by-row deletes.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01

Applies 0017_bounded_maintenance.sql, frozen (see 0001): run_maintenance() drops no
partition and deletes no row the rollup has not read (rollup_unread()), runs one call at
a time with create_partitions(), and deletes the default partitions' rows, dead letters,
train events, departures and payment decisions past retention at most 100,000 rows a
call in all (delete_expired()), saying 'more' when another call is due;
run_maintenance_until_done() repeats it for pg_cron.
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
