-- ---- sql/07_bridge.sql at 1f6292b
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
    txid xid8 NOT NULL DEFAULT '0',
    position bigint NOT NULL DEFAULT 0 CHECK (position >= 0),
    delivered bigint NOT NULL DEFAULT 0 CHECK (delivered >= 0),
    acked_at timestamptz
);
COMMENT ON TABLE bridge_cursors IS 'Durable outbound cursor: every stream row at or before (txid, position) was acknowledged by Kafka';
COMMENT ON COLUMN bridge_cursors.stream IS 'Stream table in schema metro';
COMMENT ON COLUMN bridge_cursors.topic IS 'Kafka topic the stream is forwarded to';
COMMENT ON COLUMN bridge_cursors.txid IS 'Writing transaction of the last acknowledged row (rows are read in (txid, position) order)';
COMMENT ON COLUMN bridge_cursors.position IS 'Stream position of the last acknowledged row';
COMMENT ON COLUMN bridge_cursors.delivered IS 'Rows acknowledged since the stream was created';
COMMENT ON COLUMN bridge_cursors.acked_at IS 'When Kafka last acknowledged a batch of this stream';
INSERT INTO bridge_cursors (stream, topic) VALUES
    ('fraud', 'FRAUD'), ('card_alert_export', 'CARD_ALERT_EXPORT'), ('trips', 'TRIPS');

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

RESET search_path;

-- ---- procedures/07_bridge.sql at 1f6292b
-- The bridge's side of the streams: the NOTIFY wake-up, reading past the
-- commit horizon, acknowledging, pruning and lag. The bridge (bridge/) calls
-- these as metro_bridge; Kafka never sees a row before every transaction that
-- could still commit an earlier row has finished.
SET search_path = metro, pg_catalog;

-- functions

-- Wakes the bridge when it sleeps. NOTIFY serializes committing transactions
-- on a cluster-wide lock, so a writer notifies only while the bridge is idle:
-- an idle bridge holds advisory lock (1836348002, 2) exclusively. A writer
-- that finds it free takes it shared until commit instead, so the bridge
-- cannot go idle before that writer's row is visible to its last look.
-- Statement-level, and PostgreSQL folds identical notifications of a
-- transaction: at most one per transaction. bridge_settings.notify = false
-- leaves the bridge to its polling alone.
CREATE OR REPLACE FUNCTION notify_bridge()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    IF (SELECT s.notify FROM bridge_settings s)
       AND NOT pg_try_advisory_xact_lock_shared(1836348002, 2) THEN
        PERFORM pg_notify('metro_bridge', TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END
$$;

-- The next rows of a stream after (after_txid, after_position), in
-- (txid, position) order, only from transactions below the snapshot's xmin:
-- those have all ended, so no row can later appear before the last one
-- returned. value is the row's contract columns as a JSON object, timestamps
-- in UTC; key is the Kafka key (DESIGN.md).
CREATE OR REPLACE FUNCTION bridge_batch(stream text, after_txid xid8, after_position bigint, max_rows integer)
RETURNS TABLE (row_txid xid8, row_position bigint, key text, value text)
LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp SET TimeZone = 'UTC' AS $$
DECLARE
    -- The same snapshot serves the horizon and the reads below (STABLE).
    horizon xid8 := pg_snapshot_xmin(pg_current_snapshot());
BEGIN
    IF stream = 'fraud' THEN
        RETURN QUERY
        SELECT s.txid, s.position, s.trans_id, row_to_json(v)::text
        FROM fraud s
        CROSS JOIN LATERAL (SELECT s.trans_id, s.card_id, s.ts, s.station_id, s.activity_code,
                                   s.amount) v
        WHERE (s.txid, s.position) > (after_txid, after_position) AND s.txid < horizon
        ORDER BY s.txid, s.position LIMIT max_rows;
    ELSIF stream = 'card_alert_export' THEN
        RETURN QUERY
        SELECT s.txid, s.position, s.card_id::text, row_to_json(v)::text
        FROM card_alert_export s
        CROSS JOIN LATERAL (SELECT s.card_id, s.ts, s.station_name, s.name, s.phone, s.email,
                                   s.notify, s.alert_message) v
        WHERE (s.txid, s.position) > (after_txid, after_position) AND s.txid < horizon
        ORDER BY s.txid, s.position LIMIT max_rows;
    ELSIF stream = 'trips' THEN
        RETURN QUERY
        SELECT s.txid, s.position, s.trip_id::text, row_to_json(v)::text
        FROM trips s
        CROSS JOIN LATERAL (SELECT s.trip_id, s.card_id, s.entry_station, s.entry_ts,
                                   s.exit_station, s.exit_ts) v
        WHERE (s.txid, s.position) > (after_txid, after_position) AND s.txid < horizon
        ORDER BY s.txid, s.position LIMIT max_rows;
    ELSE
        RAISE EXCEPTION 'Unknown stream: %', stream
            USING ERRCODE = 'MT005', HINT = 'Streams are fraud, card_alert_export and trips.';
    END IF;
END
$$;

-- Whether committed rows of a stream follow (after_txid, after_position),
-- readable yet or still held back by the commit horizon.
CREATE OR REPLACE FUNCTION bridge_has_rows(stream text, after_txid xid8, after_position bigint)
RETURNS boolean LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    found boolean;
BEGIN
    IF stream NOT IN ('fraud', 'card_alert_export', 'trips') THEN
        RAISE EXCEPTION 'Unknown stream: %', stream
            USING ERRCODE = 'MT005', HINT = 'Streams are fraud, card_alert_export and trips.';
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE (txid, position) > ($1, $2))', stream)
        INTO found USING after_txid, after_position;
    RETURN found;
END
$$;

-- Records that Kafka acknowledged a stream up to (last_txid, last_position).
-- The cursor only moves forward; a stale bridge cannot move it back.
CREATE OR REPLACE FUNCTION bridge_ack(stream text, last_txid xid8, last_position bigint, rows_acked bigint)
RETURNS boolean LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
DECLARE
    p_stream ALIAS FOR $1;
BEGIN
    UPDATE bridge_cursors c
    SET txid = last_txid, position = last_position, delivered = c.delivered + rows_acked,
        acked_at = now()
    WHERE c.stream = p_stream AND (c.txid, c.position) < (last_txid, last_position);
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO bridge_acks (stream, txid, position) VALUES (p_stream, last_txid, last_position)
    ON CONFLICT DO NOTHING;
    RETURN true;
END
$$;

-- Deletes delivered rows acknowledged more than retention ago, at most
-- max_rows per stream per call, and the cursor history they no longer need.
CREATE OR REPLACE FUNCTION bridge_prune(retention interval, max_rows integer)
RETURNS TABLE (stream text, pruned bigint)
LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
DECLARE
    c record;
    mark record;
    n bigint;
BEGIN
    FOR c IN SELECT bc.stream FROM bridge_cursors bc ORDER BY bc.stream LOOP
        SELECT a.txid, a.position INTO mark FROM bridge_acks a
        WHERE a.stream = c.stream AND a.acked_at <= now() - retention
        ORDER BY a.txid DESC, a.position DESC LIMIT 1;
        n := 0;
        IF FOUND THEN
            -- Table names come from bridge_cursors' CHECK list, never from a caller.
            EXECUTE format('DELETE FROM %I WHERE position IN (SELECT position FROM %I'
                           ' WHERE (txid, position) <= ($1, $2) ORDER BY txid, position LIMIT $3)',
                           c.stream, c.stream)
                USING mark.txid, mark.position, max_rows;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n < max_rows THEN
                DELETE FROM bridge_acks a
                WHERE a.stream = c.stream AND (a.txid, a.position) < (mark.txid, mark.position);
            END IF;
        END IF;
        stream := c.stream;
        pruned := n;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Lag per stream: committed rows not yet acknowledged by Kafka and the event
-- time of the oldest of them (ts; exit_ts for trips).
CREATE OR REPLACE FUNCTION bridge_lag()
RETURNS TABLE (stream text, topic text, delivered bigint, acked_at timestamptz, pending bigint,
               oldest_pending timestamptz)
LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT * FROM bridge_cursors bc ORDER BY bc.stream LOOP
        stream := c.stream;
        topic := c.topic;
        delivered := c.delivered;
        acked_at := c.acked_at;
        EXECUTE format('SELECT count(*), min(%I) FROM %I WHERE (txid, position) > ($1, $2)',
                       CASE c.stream WHEN 'trips' THEN 'exit_ts' ELSE 'ts' END, c.stream)
            INTO pending, oldest_pending USING c.txid, c.position;
        RETURN NEXT;
    END LOOP;
END
$$;

-- triggers
DROP TRIGGER IF EXISTS fraud_notify_bridge ON fraud;
CREATE TRIGGER fraud_notify_bridge AFTER INSERT ON fraud
    FOR EACH STATEMENT EXECUTE FUNCTION notify_bridge();
DROP TRIGGER IF EXISTS card_alert_export_notify_bridge ON card_alert_export;
CREATE TRIGGER card_alert_export_notify_bridge AFTER INSERT ON card_alert_export
    FOR EACH STATEMENT EXECUTE FUNCTION notify_bridge();
DROP TRIGGER IF EXISTS trips_notify_bridge ON trips;
CREATE TRIGGER trips_notify_bridge AFTER INSERT ON trips
    FOR EACH STATEMENT EXECUTE FUNCTION notify_bridge();

-- grants
REVOKE ALL ON FUNCTION bridge_batch(text, xid8, bigint, integer),
    bridge_has_rows(text, xid8, bigint), bridge_ack(text, xid8, bigint, bigint),
    bridge_prune(interval, integer), bridge_lag() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bridge_batch(text, xid8, bigint, integer),
    bridge_has_rows(text, xid8, bigint), bridge_ack(text, xid8, bigint, bigint),
    bridge_prune(interval, integer), bridge_lag() TO metro_bridge;
GRANT EXECUTE ON FUNCTION bridge_lag() TO metro_reader;
-- Inbound topics feed these functions.
GRANT EXECUTE ON FUNCTION record_train_event(integer, integer, integer, timestamptz),
    recharge_card(bigint, integer, integer, timestamptz) TO metro_bridge;

RESET search_path;

