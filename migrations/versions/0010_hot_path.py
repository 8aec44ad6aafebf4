"""A cheaper hot path with plans that stay good.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

Applies 0010_hot_path.sql, frozen (see 0001): fraud_rule in one backward range
read; entry_outcome an inlined row expression (type entry_result) assigned
without a query; cents_text inlined; validate_entry reads station and rules in
one query after locking the card and skips checked_ts() for ts = now(); the
functions reading card_events per card run with enable_seqscan off, so no
session keeps a plan made while a partition was analyzed empty.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
