"""Payment ids without padding; hints that say what works.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01

Applies 0018_payment_ids_and_hints.sql, frozen (see 0001): a payment's transaction_id
or account_id may not start or end with whitespace or an invisible character (MT007,
MT014), nor may a risk tag's account_id (a CHECK; an upgrade over such tags stops and
names them); the NULL-argument and unknown-station hints say what works.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
