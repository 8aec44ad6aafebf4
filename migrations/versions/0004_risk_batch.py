"""Payment risk control, set-wise: evaluate_transactions for the bridge's batches.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

Applies procedures/09_risk_batch.sql (see 0001 for how the tree and the revisions
relate).
"""

from alembic import op

from metro.schema import apply_revision_files

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PROCEDURE_FILES = ["09_risk_batch.sql"]


def upgrade() -> None:
    apply_revision_files(procedure_files=PROCEDURE_FILES)


def downgrade() -> None:
    conn = op.get_bind().connection.driver_connection
    conn.execute("DROP FUNCTION metro.evaluate_transactions(text[], bigint[], numeric[],"
                 " timestamptz[])")
