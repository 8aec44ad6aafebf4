-- Bridge state: what Kafka has acknowledged per stream, who may send, what
-- came in from Kafka and what could not be applied. The stream tables stay the
-- truth; these tables only say how far the bridge got.
SET search_path = metro, pg_catalog;

-- tables
CREATE TABLE bridge_settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    notify boolean NOT NULL DEFAULT true
);
COMMENT ON TABLE bridge_settings IS 'Operator switches of the bridge, one row';
COMMENT ON COLUMN bridge_settings.singleton IS 'Always true: the table holds exactly one row';
COMMENT ON COLUMN bridge_settings.notify IS 'Stream writes send a NOTIFY metro_bridge wake-up; when false the bridge relies on its polling alone';
INSERT INTO bridge_settings DEFAULT VALUES;

CREATE TABLE bridge_cursors (
    stream text PRIMARY KEY CHECK (stream IN ('fraud', 'card_alert_export', 'trips')),
    topic text NOT NULL,
    key_column text NOT NULL,
    txid xid8 NOT NULL DEFAULT '0',
    position bigint NOT NULL DEFAULT 0 CHECK (position >= 0),
    delivered bigint NOT NULL DEFAULT 0 CHECK (delivered >= 0),
    acked_at timestamptz
);
COMMENT ON TABLE bridge_cursors IS 'Durable outbound cursor: every stream row at or before (txid, position) was acknowledged by Kafka';
COMMENT ON COLUMN bridge_cursors.stream IS 'Stream table in schema metro';
COMMENT ON COLUMN bridge_cursors.topic IS 'Kafka topic the stream is forwarded to';
COMMENT ON COLUMN bridge_cursors.key_column IS 'Column of the stream row sent as the Kafka key';
COMMENT ON COLUMN bridge_cursors.txid IS 'Writing transaction of the last acknowledged row (rows are read in (txid, position) order)';
COMMENT ON COLUMN bridge_cursors.position IS 'Stream position of the last acknowledged row';
COMMENT ON COLUMN bridge_cursors.delivered IS 'Rows acknowledged since the stream was created';
COMMENT ON COLUMN bridge_cursors.acked_at IS 'When Kafka last acknowledged a batch of this stream';
INSERT INTO bridge_cursors (stream, topic, key_column) VALUES
    ('fraud', 'FRAUD', 'trans_id'), ('card_alert_export', 'CARD_ALERT_EXPORT', 'card_id'),
    ('trips', 'TRIPS', 'trip_id');

CREATE TABLE bridge_acks (
    stream text NOT NULL REFERENCES bridge_cursors (stream),
    txid xid8 NOT NULL,
    position bigint NOT NULL,
    acked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, txid, position)
);
CREATE INDEX bridge_acks_stream_acked_at ON bridge_acks (stream, acked_at);
COMMENT ON TABLE bridge_acks IS 'Cursor history: when each acknowledged batch ended, so rows are pruned a retention period after delivery';
COMMENT ON COLUMN bridge_acks.stream IS 'Stream table in schema metro';
COMMENT ON COLUMN bridge_acks.txid IS 'Writing transaction of the last row of the batch';
COMMENT ON COLUMN bridge_acks.position IS 'Stream position of the last row of the batch';
COMMENT ON COLUMN bridge_acks.acked_at IS 'When Kafka acknowledged the batch';

CREATE TABLE bridge_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    holder text,
    since timestamptz,
    heartbeat_at timestamptz,
    last_error text,
    last_error_at timestamptz
);
COMMENT ON TABLE bridge_state IS 'The bridge holding the lease (a session advisory lock) and its last error, for metro bridge --status';
COMMENT ON COLUMN bridge_state.singleton IS 'Always true: the table holds exactly one row';
COMMENT ON COLUMN bridge_state.holder IS 'host:pid of the bridge that holds the lease (or last held it)';
COMMENT ON COLUMN bridge_state.since IS 'When the holder took the lease';
COMMENT ON COLUMN bridge_state.heartbeat_at IS 'Last sign of life of the holder';
COMMENT ON COLUMN bridge_state.last_error IS 'Last error the bridge reported (Kafka or PostgreSQL unavailable, ...)';
COMMENT ON COLUMN bridge_state.last_error_at IS 'When last_error happened';
INSERT INTO bridge_state DEFAULT VALUES;

CREATE TABLE bridge_inbound_offsets (
    topic text NOT NULL,
    kafka_partition integer NOT NULL CHECK (kafka_partition >= 0),
    next_offset bigint NOT NULL CHECK (next_offset >= 0),
    applied bigint NOT NULL DEFAULT 0 CHECK (applied >= 0),
    dead_lettered bigint NOT NULL DEFAULT 0 CHECK (dead_lettered >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition)
);
COMMENT ON TABLE bridge_inbound_offsets IS 'Inbound Kafka position, written in the same transaction as the function calls it covers';
COMMENT ON COLUMN bridge_inbound_offsets.topic IS 'Inbound topic (TRAINTOPIC, RECHARGE)';
COMMENT ON COLUMN bridge_inbound_offsets.kafka_partition IS 'Partition of the topic';
COMMENT ON COLUMN bridge_inbound_offsets.next_offset IS 'Offset of the next message to apply; earlier ones were applied or dead-lettered';
COMMENT ON COLUMN bridge_inbound_offsets.applied IS 'Messages applied through their function';
COMMENT ON COLUMN bridge_inbound_offsets.dead_lettered IS 'Messages sent to bridge_dead_letters';
COMMENT ON COLUMN bridge_inbound_offsets.updated_at IS 'When the offset last moved';

CREATE TABLE bridge_dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    key bytea,
    value bytea,
    reason text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, kafka_partition, kafka_offset)
);
COMMENT ON TABLE bridge_dead_letters IS 'Inbound messages that could not be parsed or that the function refused with an error; they never block their partition';
COMMENT ON COLUMN bridge_dead_letters.id IS 'Arrival order';
COMMENT ON COLUMN bridge_dead_letters.topic IS 'Topic of the message';
COMMENT ON COLUMN bridge_dead_letters.kafka_partition IS 'Partition of the message';
COMMENT ON COLUMN bridge_dead_letters.kafka_offset IS 'Offset of the message';
COMMENT ON COLUMN bridge_dead_letters.key IS 'Message key as received';
COMMENT ON COLUMN bridge_dead_letters.value IS 'Message value as received';
COMMENT ON COLUMN bridge_dead_letters.reason IS 'Why it was not applied: the parse error, or SQLSTATE and message of the function';
COMMENT ON COLUMN bridge_dead_letters.received_at IS 'When the bridge set it aside';

-- indexes: the bridge reads each stream in (txid, position) order
CREATE INDEX fraud_txid_position ON fraud (txid, position);
CREATE INDEX card_alert_export_txid_position ON card_alert_export (txid, position);
CREATE INDEX trips_txid_position ON trips (txid, position);

-- grants
GRANT SELECT, DELETE ON fraud, card_alert_export, trips TO metro_bridge;
GRANT SELECT ON bridge_settings TO metro_bridge;
GRANT SELECT, INSERT, UPDATE, DELETE ON bridge_cursors, bridge_acks, bridge_state,
    bridge_inbound_offsets, bridge_dead_letters TO metro_bridge;
GRANT SELECT ON bridge_cursors, bridge_state, bridge_inbound_offsets, bridge_dead_letters
    TO metro_reader;
