"""The expiry message in UTC.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-02

Applies 0024_expiry_in_utc.sql, frozen (see 0001): entry_outcome prints an unlimited
card's expiry in UTC whatever the caller's TimeZone. Only a function changes; no table
is locked.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
