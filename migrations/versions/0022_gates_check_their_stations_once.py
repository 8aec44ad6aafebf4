"""A swipe's station is checked once.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02

Applies 0022_gates_check_their_stations_once.sql, frozen (see 0001): card_events'
station trigger returns at once for the rows the schema's SECURITY DEFINER functions
write for another session user (they refuse an unknown station themselves); direct
INSERT and COPY are checked as before. No lock on card_events is taken.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
