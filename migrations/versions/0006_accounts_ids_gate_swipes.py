"""Payment accounts as text, ids from 0, fraud rule 1 counting gate swipes only.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26

Applies 0006_accounts_ids_gate_swipes.sql, frozen (see 0001):
- risk_tags, risk_decisions and transaction_decisions.account_id become text
  (existing integer ids keep their digits: 7 -> '7'); evaluate_transaction and
  evaluate_transactions take text account ids; recharges use the card number's
  text as the account.
- stations and trains accept id 0 (VoltDB's stations.csv starts with 0,Airport,
  its TrainProducer numbers trains from 0); negative ids stay refused.
- fraud rule 1 counts gate swipes only (entries and exits, whatever their
  outcome): fraud_rule reads card_events' (card_id, ts) index for the second;
  card_history_second still counts every event, recharges included.
"""

from pathlib import Path

from metro.schema import run_revision_sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    raise NotImplementedError(
        "0006 has no downgrade: text account ids need not fit the integers of 0005")
