"""Maintenance that deletes before it locks; card ids that cannot be negative; a stream's
key index only where none serves.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02

Applies 0020_maintenance_order_and_card_ids.sql, frozen (see 0001): run_maintenance()
deletes what leaves row by row first and creates and drops partitions last (each keeps
its table locked until the call commits); a negative card_id is refused (a CHECK; an
upgrade over such cards stops and names them, and waits 3 s at most for a transaction
holding cards); register_stream() counts only a valid btree index as a stream's key
index; the worker's holder is host:pid:tag.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
