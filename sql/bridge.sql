-- Streams and the bridge's state. metro.streams is the registry of the
-- outbox tables: which Kafka topic each goes to, which column is its key and
-- which its event time. Everything else reads it: the bridge's functions,
-- bridge_lag(), and the Python side. A stream table is registered with
-- register_stream() (procedures/bridge.sql) in the file that creates it.
-- The other tables say how far the bridge got, who may send, what came in
-- from Kafka and what could not be applied; the stream tables stay the truth.
SET search_path = metro, pg_catalog;

-- tables
CREATE TABLE streams (
    stream text PRIMARY KEY CHECK (stream ~ '^[a-z_][a-z0-9_]*$'),
    topic text NOT NULL UNIQUE CHECK (topic <> ''),
    key_column text NOT NULL CHECK (key_column <> ''),
    time_column text NOT NULL CHECK (time_column <> '')
);
COMMENT ON TABLE streams IS 'Registry of the outbox streams the bridge forwards to Kafka; a row is added by register_stream()';
COMMENT ON COLUMN streams.stream IS 'Stream table in schema metro (it has position and txid columns)';
COMMENT ON COLUMN streams.topic IS 'Kafka topic the stream is forwarded to';
COMMENT ON COLUMN streams.key_column IS 'Column of the stream row sent as the Kafka key';
COMMENT ON COLUMN streams.time_column IS 'Column holding the event time of a row (bridge_lag() reports the oldest pending one)';

CREATE TABLE bridge_settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    notify boolean NOT NULL DEFAULT true
);
COMMENT ON TABLE bridge_settings IS 'Operator switches of the bridge, one row';
COMMENT ON COLUMN bridge_settings.singleton IS 'Always true: the table holds exactly one row';
COMMENT ON COLUMN bridge_settings.notify IS 'Stream writes send a NOTIFY metro_bridge wake-up; when false the bridge relies on its polling alone';
INSERT INTO bridge_settings DEFAULT VALUES;

CREATE TABLE bridge_cursors (
    stream text PRIMARY KEY REFERENCES streams,
    txid xid8 NOT NULL DEFAULT '0',
    position bigint NOT NULL DEFAULT 0 CHECK (position >= 0),
    delivered bigint NOT NULL DEFAULT 0 CHECK (delivered >= 0),
    acked_at timestamptz
);
COMMENT ON TABLE bridge_cursors IS 'Durable outbound cursor: every stream row at or before (txid, position) was acknowledged by Kafka';
COMMENT ON COLUMN bridge_cursors.stream IS 'Stream (a row of streams)';
COMMENT ON COLUMN bridge_cursors.txid IS 'Writing transaction of the last acknowledged row (rows are read in (txid, position) order)';
COMMENT ON COLUMN bridge_cursors.position IS 'Stream position of the last acknowledged row';
COMMENT ON COLUMN bridge_cursors.delivered IS 'Rows acknowledged since the stream was created';
COMMENT ON COLUMN bridge_cursors.acked_at IS 'When Kafka last acknowledged a batch of this stream';

CREATE TABLE bridge_acks (
    stream text NOT NULL REFERENCES bridge_cursors (stream),
    txid xid8 NOT NULL,
    position bigint NOT NULL,
    acked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, txid, position)
);
CREATE INDEX bridge_acks_stream_acked_at ON bridge_acks (stream, acked_at);
COMMENT ON TABLE bridge_acks IS 'Cursor history: when each acknowledged batch ended, so rows are pruned a retention period after delivery';
COMMENT ON COLUMN bridge_acks.stream IS 'Stream (a row of streams)';
COMMENT ON COLUMN bridge_acks.txid IS 'Writing transaction of the last row of the batch';
COMMENT ON COLUMN bridge_acks.position IS 'Stream position of the last row of the batch';
COMMENT ON COLUMN bridge_acks.acked_at IS 'When Kafka acknowledged the batch';

CREATE TABLE bridge_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    holder text,
    since timestamptz,
    heartbeat_at timestamptz,
    last_error text,
    last_error_at timestamptz,
    lease_pid integer,
    lease_backend_start timestamptz,
    lease_expires timestamptz
);
COMMENT ON TABLE bridge_state IS 'The bridge lease (holder, its backend and expiry; taken and renewed only through bridge_take_lease and bridge_renew_lease) and the last error, for metro bridge --status';
COMMENT ON COLUMN bridge_state.singleton IS 'Always true: the table holds exactly one row';
COMMENT ON COLUMN bridge_state.holder IS 'host:pid of the bridge that holds the lease (or last held it)';
COMMENT ON COLUMN bridge_state.since IS 'When the holder took the lease';
COMMENT ON COLUMN bridge_state.heartbeat_at IS 'Last sign of life of the holder';
COMMENT ON COLUMN bridge_state.last_error IS 'Last error the bridge reported (Kafka or PostgreSQL unavailable, ...)';
COMMENT ON COLUMN bridge_state.last_error_at IS 'When last_error happened';
COMMENT ON COLUMN bridge_state.lease_pid IS 'Backend process id of the session holding the lease (NULL: released)';
COMMENT ON COLUMN bridge_state.lease_backend_start IS 'Start time of that backend, so a reused process id is not mistaken for the holder';
COMMENT ON COLUMN bridge_state.lease_expires IS 'The lease is stale after this unless renewed; a stale lease, or one whose backend is gone, is taken over';
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
COMMENT ON COLUMN bridge_inbound_offsets.topic IS 'Inbound topic (TRAINTOPIC, RECHARGE, transaction_topic)';
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

CREATE TABLE bridge_outbound_dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream text NOT NULL REFERENCES streams,
    position bigint NOT NULL,
    txid xid8 NOT NULL,
    key text,
    value text,
    reason text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream, position)
);
COMMENT ON TABLE bridge_outbound_dead_letters IS 'Stream rows Kafka refused (too large, invalid): set aside so their stream moves on; the row stays in its stream table until pruned';
COMMENT ON COLUMN bridge_outbound_dead_letters.id IS 'Order in which rows were set aside';
COMMENT ON COLUMN bridge_outbound_dead_letters.stream IS 'Stream (a row of streams)';
COMMENT ON COLUMN bridge_outbound_dead_letters.position IS 'Stream position of the refused row';
COMMENT ON COLUMN bridge_outbound_dead_letters.txid IS 'Writing transaction of the refused row';
COMMENT ON COLUMN bridge_outbound_dead_letters.key IS 'Kafka key the row would have had';
COMMENT ON COLUMN bridge_outbound_dead_letters.value IS 'The message value (JSON) Kafka refused';
COMMENT ON COLUMN bridge_outbound_dead_letters.reason IS 'Why: the Kafka error';
COMMENT ON COLUMN bridge_outbound_dead_letters.at IS 'When the bridge set it aside';

-- grants
-- metro_bridge reads; it moves cursors, takes the lease, records errors and
-- outbound dead letters only through the SECURITY DEFINER functions of
-- procedures/bridge.sql. Its inbound bookkeeping it writes itself.
GRANT SELECT ON streams, bridge_settings, bridge_cursors, bridge_state,
    bridge_outbound_dead_letters TO metro_bridge;
GRANT SELECT, INSERT, UPDATE ON bridge_inbound_offsets, bridge_dead_letters TO metro_bridge;
GRANT SELECT ON streams, bridge_cursors, bridge_state, bridge_inbound_offsets, bridge_dead_letters
    TO metro_reader;
