"""Decisions no session setting can bend.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02

Applies 0021_decisions_no_session_setting_bends.sql, frozen (see 0001): recharge_card and
the payment decisions need READ COMMITTED (MT013), as the gates do; settings'
fraud_window, max_clock_skew and max_wait are kept in hours and seconds, so that no
session time zone changes their length; invalid_payment_id's pattern reads the same
whatever standard_conforming_strings; schema_revision() for the services.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
