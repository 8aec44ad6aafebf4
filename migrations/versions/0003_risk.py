"""Payment risk control: risk tags, rules as rows, evaluate_transaction, decisions stream.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Applies sql/08_risk.sql and procedures/08_risk.sql, and re-applies
procedures/05_recharge.sql, whose recharge_card now applies the risk rules
(see 0001 for how the tree and the revisions relate).
"""


from metro.schema import apply_revision_files

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLE_FILES = ["08_risk.sql"]
PROCEDURE_FILES = ["08_risk.sql", "05_recharge.sql"]


def upgrade() -> None:
    apply_revision_files(TABLE_FILES, PROCEDURE_FILES)


def downgrade() -> None:
    raise NotImplementedError(
        "0003 has no downgrade: recharge_card would have to be restored from an older "
        "checkout")
