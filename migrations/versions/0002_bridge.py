"""Bridge: cursors, lease, inbound offsets, dead letters and the NOTIFY wake-up.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Applies 0002_bridge.sql, frozen (see 0001): what 0002 applied when it was
released, before revision 0003 was added (0117b3f): sql/07_bridge.sql, then
procedures/07_bridge.sql, at commit 1f6292b, where the revision was last changed
(writers notify only while the bridge sleeps). bridge_cursors then had no
key_column; 0003 added it.
"""

from pathlib import Path

from alembic import op

from metro.schema import run_revision_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    conn = op.get_bind().connection.driver_connection
    assert conn is not None
    conn.execute("""
        DROP TRIGGER fraud_notify_bridge ON metro.fraud;
        DROP TRIGGER card_alert_export_notify_bridge ON metro.card_alert_export;
        DROP TRIGGER trips_notify_bridge ON metro.trips;
        DROP FUNCTION metro.notify_bridge(), metro.bridge_batch(text, xid8, bigint, integer),
            metro.bridge_has_rows(text, xid8, bigint),
            metro.bridge_ack(text, xid8, bigint, bigint), metro.bridge_prune(interval, integer),
            metro.bridge_lag();
        DROP INDEX metro.fraud_txid_position, metro.card_alert_export_txid_position,
            metro.trips_txid_position;
        DROP TABLE metro.bridge_dead_letters, metro.bridge_inbound_offsets, metro.bridge_state,
            metro.bridge_acks, metro.bridge_cursors, metro.bridge_settings;
        REVOKE EXECUTE ON FUNCTION metro.record_train_event(integer, integer, integer, timestamptz),
            metro.recharge_card(bigint, integer, integer, timestamptz) FROM metro_bridge;
        REVOKE DELETE ON metro.fraud, metro.card_alert_export, metro.trips FROM metro_bridge;
    """)
