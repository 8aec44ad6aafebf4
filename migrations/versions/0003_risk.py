"""Payment risk control: risk tags, rules as rows, evaluate_transaction, decisions stream.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Applies 0003_risk.sql, frozen (see 0001): what 0003 applied when it was
released, before revision 0004 was added (7a6971f): sql/08_risk.sql,
procedures/08_risk.sql and procedures/05_recharge.sql (recharge_card applying
the risk rules), at commit 0117b3f, where the revision was added and last
changed in what it applies. That procedures/08_risk.sql also made the bridge's
stream functions generic over bridge_cursors.key_column.
"""

from pathlib import Path

from metro.schema import run_revision_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    raise NotImplementedError(
        "0003 has no downgrade: recharge_card would have to be restored from an older "
        "checkout")
