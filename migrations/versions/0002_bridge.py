"""Bridge: cursors, lease, inbound offsets, dead letters and the NOTIFY wake-up.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Applies sql/07_bridge.sql and procedures/07_bridge.sql (see 0001 for how the
tree and the revisions relate).
"""

from alembic import op

from metro.schema import apply_revision_files

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLE_FILES = ["07_bridge.sql"]
PROCEDURE_FILES = ["07_bridge.sql"]


def upgrade() -> None:
    apply_revision_files(TABLE_FILES, PROCEDURE_FILES)


def downgrade() -> None:
    conn = op.get_bind().connection.driver_connection
    conn.execute("""
        DROP TRIGGER fraud_notify_bridge ON metro.fraud;
        DROP TRIGGER card_alert_export_notify_bridge ON metro.card_alert_export;
        DROP TRIGGER trips_notify_bridge ON metro.trips;
        DROP FUNCTION metro.notify_bridge(), metro.bridge_batch(text, xid8, bigint, integer),
            metro.bridge_has_rows(text, xid8, bigint), metro.bridge_stream_key(text),
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
