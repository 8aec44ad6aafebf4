"""Payment risk control, set-wise: evaluate_transactions for the bridge's batches.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

Applies 0004_risk_batch.sql, frozen (see 0001): procedures/09_risk_batch.sql at
commit 7a6971f, where the revision was added; the file did not change afterwards.
"""

from pathlib import Path

from alembic import op

from metro.schema import run_revision_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    conn = op.get_bind().connection.driver_connection
    assert conn is not None
    conn.execute("DROP FUNCTION metro.evaluate_transactions(text[], bigint[], numeric[],"
                 " timestamptz[])")
