-- Revision 0005: the schema by domain, one owner per fact, each rule once.
-- Frozen: this file is never edited again; later changes are new revisions.
--
-- Upgrades any database stamped 0004 to the tree of this revision, whichever
-- checkout installed it: the revisions before 0005 re-applied the tree's files
-- as they were at upgrade time, so a 0004 database has either the original
-- tables (integer columns with table CHECKs, a foreign key from card_events to
-- stations, a statement-level history trigger) or the later ones (domains, no
-- foreign key, a row trigger). Every step below is written to reach the same
-- result from both. Data is kept; tables whose column types change to a
-- domain are rewritten once (card_events among them).
--
-- Steps: drop the derived objects (views, triggers, functions), which are all
-- created again below; convert the tables; add the registries metro.streams
-- and metro.error_codes; create the functions; register the streams; the
-- views.
SET search_path = metro, pg_catalog;

-- ---- derived objects: dropped here, created again below
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.oid::regclass AS view FROM pg_class c
             WHERE c.relnamespace = 'metro'::regnamespace AND c.relkind = 'v' LOOP
        EXECUTE format('DROP VIEW %s', r.view);
    END LOOP;
    FOR r IN SELECT t.tgname, t.tgrelid::regclass AS tab FROM pg_trigger t
             JOIN pg_class c ON c.oid = t.tgrelid
             WHERE c.relnamespace = 'metro'::regnamespace AND NOT t.tgisinternal LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.tab);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS fn FROM pg_proc p
             WHERE p.pronamespace = 'metro'::regnamespace AND p.prokind = 'f' LOOP
        EXECUTE format('DROP FUNCTION %s', r.fn);
    END LOOP;
END
$$;

-- ---- domains (databases installed before the hot-path work lack them)
DO $$
BEGIN
    IF to_regtype('metro.cents') IS NULL THEN
        CREATE DOMAIN cents AS integer CHECK (VALUE >= 0);
        CREATE DOMAIN card_type_code AS smallint CHECK (VALUE IN (0, 1));
        CREATE DOMAIN notify_channel AS smallint CHECK (VALUE IN (0, 1, 2));
        CREATE DOMAIN card_activity AS smallint CHECK (VALUE IN (1, -1, 2));
        CREATE DOMAIN card_outcome AS smallint CHECK (VALUE IN (1, 0, -1));
        CREATE DOMAIN train_activity AS smallint CHECK (VALUE IN (0, 1));
    END IF;
END
$$;
COMMENT ON DOMAIN cents IS 'An amount of money in cents, never negative (1250 is 12.50)';
COMMENT ON DOMAIN card_type_code IS '0 pay-per-ride, 1 unlimited';
COMMENT ON DOMAIN notify_channel IS 'Alert channel: 0 none, 1 e-mail, 2 text';
COMMENT ON DOMAIN card_activity IS '1 entry, -1 exit, 2 purchase';
COMMENT ON DOMAIN card_outcome IS '1 accepted, 0 rejected, -1 refused as fraud';
COMMENT ON DOMAIN train_activity IS '0 arrival, 1 departure';

-- ---- tables: coded values and money as domains, no table CHECKs on the hot path
ALTER TABLE stations
    DROP CONSTRAINT IF EXISTS stations_fare_check,
    ALTER COLUMN fare TYPE cents;
ALTER TABLE cards
    DROP CONSTRAINT IF EXISTS cards_card_id_check,
    DROP CONSTRAINT IF EXISTS cards_card_type_check,
    DROP CONSTRAINT IF EXISTS cards_balance_check,
    DROP CONSTRAINT IF EXISTS cards_notify_check,
    ALTER COLUMN card_type TYPE card_type_code,
    ALTER COLUMN balance TYPE cents,
    ALTER COLUMN notify TYPE notify_channel,
    SET (fillfactor = 90);
ALTER TABLE card_events
    DROP CONSTRAINT IF EXISTS card_events_station_id_fkey,
    DROP CONSTRAINT IF EXISTS card_events_activity_code_check,
    DROP CONSTRAINT IF EXISTS card_events_amount_check,
    DROP CONSTRAINT IF EXISTS card_events_accept_check,
    ALTER COLUMN activity_code TYPE card_activity,
    ALTER COLUMN amount TYPE cents,
    ALTER COLUMN accept TYPE card_outcome;
COMMENT ON COLUMN card_events.station_id IS 'Where the swipe happened; checked against stations by the history trigger (a foreign key would take a share lock on the station row in every swipe)';
ALTER TABLE train_events
    DROP CONSTRAINT IF EXISTS train_events_activity_type_check,
    ALTER COLUMN activity_type TYPE train_activity;
ALTER TABLE card_history_second
    DROP CONSTRAINT IF EXISTS card_history_second_swipes_check;
ALTER TABLE station_second_slots
    DROP CONSTRAINT IF EXISTS station_second_slots_slot_check,
    DROP CONSTRAINT IF EXISTS station_second_slots_swipes_check,
    DROP CONSTRAINT IF EXISTS station_second_slots_entries_check,
    DROP CONSTRAINT IF EXISTS station_second_slots_accepted_check,
    DROP CONSTRAINT IF EXISTS station_second_slots_rejected_check,
    DROP CONSTRAINT IF EXISTS station_second_slots_fraud_check,
    DROP CONSTRAINT IF EXISTS station_second_slots_revenue_check,
    DROP CONSTRAINT IF EXISTS station_second_slots_check,
    ALTER COLUMN slot TYPE integer;
COMMENT ON COLUMN station_second_slots.slot IS 'Stripe written by one backend (its pid)';
COMMENT ON COLUMN station_second_slots.fraud IS 'Entries refused as fraud (entries = accepted + rejected + fraud)';
ALTER TABLE fraud
    DROP CONSTRAINT IF EXISTS fraud_activity_code_check,
    DROP CONSTRAINT IF EXISTS fraud_amount_check,
    ALTER COLUMN activity_code TYPE card_activity,
    ALTER COLUMN amount TYPE cents;
ALTER TABLE card_alert_export
    DROP CONSTRAINT IF EXISTS card_alert_export_notify_check,
    ALTER COLUMN notify TYPE notify_channel;
COMMENT ON COLUMN bridge_inbound_offsets.topic IS 'Inbound topic (TRAINTOPIC, RECHARGE, transaction_topic)';
COMMENT ON COLUMN bridge_acks.stream IS 'Stream (a row of streams)';

-- ---- error codes (sql/errors.sql)
-- Error codes: every SQLSTATE the metro functions raise on bad input, with
-- its meaning and whether it condemns only the row (or message) that caused
-- it. The functions raise the MT codes through the helpers in
-- procedures/support.sql; clients classify errors by reading this table.
SET search_path = metro, pg_catalog;

-- tables
CREATE TABLE error_codes (
    sqlstate text PRIMARY KEY CHECK (sqlstate ~ '^[0-9A-Z]{5}$'),
    name text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    meaning text NOT NULL CHECK (meaning <> ''),
    row_level boolean NOT NULL
);
COMMENT ON TABLE error_codes IS 'SQLSTATEs the metro functions raise on bad input: what each means and whether it rejects only the offending row or message';
COMMENT ON COLUMN error_codes.sqlstate IS 'Five-character SQLSTATE; MT... are metro''s own, the others PostgreSQL''s';
COMMENT ON COLUMN error_codes.name IS 'Short name, e.g. for an exception class';
COMMENT ON COLUMN error_codes.meaning IS 'When it is raised';
COMMENT ON COLUMN error_codes.row_level IS 'true: the input row or message is bad, reject it (dead-letter it) and go on; false: the call or the configuration is wrong and retrying other rows will not help';
INSERT INTO error_codes (sqlstate, name, meaning, row_level) VALUES
    ('MT001', 'unknown_station', 'Unknown station: no row of stations has the station_id', true),
    ('MT002', 'unknown_train', 'Unknown train: no row of trains has the train_id', true),
    ('MT003', 'invalid_amount', 'Recharge amount not a positive number of cents; payment amount not positive, with more than two decimals or too large', true),
    ('MT004', 'null_argument', 'An argument of a function is NULL (only ts has a default)', true),
    ('MT005', 'invalid_code', 'A coded value outside its set (train activity_type, stream name)', true),
    ('MT006', 'refused_change', 'A refused change: UPDATE or DELETE of card_events, removing the settings row', false),
    ('MT007', 'invalid_transaction_id', 'A payment transaction_id that is empty, blank or over 200 characters', true),
    ('MT008', 'no_risk_rule', 'No row of risk_rules covers the payment: the rules lack a catch-all, fix them before retrying', false),
    ('22023', 'invalid_parameter_value', 'Arrays of a batch function (validate_entries, evaluate_transactions) of different lengths', true),
    ('22P02', 'invalid_text_representation', 'A value that does not parse as its type (a number, a boolean)', true),
    ('22003', 'numeric_value_out_of_range', 'A number too large for its column or argument', true),
    ('22007', 'invalid_datetime_format', 'A timestamp that does not parse', true),
    ('22008', 'datetime_field_overflow', 'A timestamp field out of range', true),
    ('23502', 'not_null_violation', 'A NULL in a column that requires a value', true),
    ('23514', 'check_violation', 'A value outside its domain or a table CHECK (card type, notify, activity, negative amount, negative id)', true);

-- grants
GRANT SELECT ON error_codes TO metro_app, metro_reader, metro_bridge;

RESET search_path;
SET search_path = metro, pg_catalog;

-- ---- the streams registry (sql/bridge.sql)
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
GRANT SELECT ON streams TO metro_bridge;
GRANT SELECT ON streams TO metro_reader;

-- ---- functions: support and bridge (procedures/support.sql, procedures/bridge.sql)
-- Shared helpers: argument errors and money formatting. Private (no grants).
-- Every SQLSTATE raised on bad input is a row of metro.error_codes
-- (sql/errors.sql), with its meaning.
SET search_path = metro, pg_catalog;

-- functions

-- Raises MT004 for a NULL argument of a public function.
CREATE OR REPLACE FUNCTION raise_null_argument(function_name text, argument text)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION '%: % must not be NULL', function_name, argument
        USING ERRCODE = 'MT004', HINT = 'Pass a value for every argument; only ts has a default (now()).';
END
$$;
COMMENT ON FUNCTION raise_null_argument(text, text) IS 'Raises MT004 naming the function and its NULL argument';

-- Raises MT001 for a station that is not in stations.
CREATE OR REPLACE FUNCTION raise_unknown_station(station_id integer)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'Unknown station: %', station_id
        USING ERRCODE = 'MT001', DETAIL = format('No row in metro.stations has station_id %s.', station_id),
              HINT = 'Load the stations first: loader data/stations.csv';
END
$$;
COMMENT ON FUNCTION raise_unknown_station(integer) IS 'Raises MT001 naming the station';

-- Amounts are printed as units.cents: 1250 -> 12.50, 5 -> 0.05.
CREATE OR REPLACE FUNCTION cents_text(cents bigint)
RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN cents < 0 THEN '-' ELSE '' END
           || (abs(cents) / 100)::text || '.' || lpad((abs(cents) % 100)::text, 2, '0')
$$;
COMMENT ON FUNCTION cents_text(bigint) IS 'Cents as units.cents text: 1250 -> 12.50';

-- Kafka key of a fraud row: <card_id>_<epoch microseconds>.
CREATE OR REPLACE FUNCTION fraud_trans_id(card_id bigint, ts timestamptz)
RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT card_id::text || '_' || (extract(epoch FROM ts) * 1000000)::bigint::text
$$;
COMMENT ON FUNCTION fraud_trans_id(bigint, timestamptz) IS 'Kafka key of a fraud row: <card_id>_<epoch microseconds of ts>';

-- The fraud rules read the one settings row on every swipe: it may be
-- updated, never removed.
CREATE OR REPLACE FUNCTION settings_keep_row()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'settings keeps exactly one row: % refused', TG_OP
        USING ERRCODE = 'MT006', HINT = 'UPDATE metro.settings SET ... changes a threshold.';
END
$$;
COMMENT ON FUNCTION settings_keep_row() IS 'Trigger: refuses DELETE and TRUNCATE of settings (MT006)';

-- triggers
CREATE TRIGGER settings_keep_row BEFORE DELETE OR TRUNCATE ON settings
    FOR EACH STATEMENT EXECUTE FUNCTION settings_keep_row();

RESET search_path;
SET search_path = metro, pg_catalog;

-- The bridge's side of the streams: registering a stream, the NOTIFY
-- wake-up, reading past the commit horizon, acknowledging, pruning and lag.
-- All of them read the registry metro.streams. The bridge (bridge/) calls
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
COMMENT ON FUNCTION notify_bridge() IS 'Trigger on every stream: NOTIFY metro_bridge, only while the bridge sleeps (it holds advisory lock (1836348002, 2)) and bridge_settings.notify is on';

-- Registers a stream table of schema metro: its row in streams (topic, key
-- and time column), its bridge cursor, the (txid, position) index the bridge
-- reads by, the NOTIFY trigger and the bridge's grants. The one step that
-- makes a new outbox table a stream; calling it again for a registered
-- stream changes its topic or columns and keeps its cursor. Private: the
-- schema's owner calls it where the table is created.
CREATE OR REPLACE FUNCTION register_stream(stream text, topic text, key_column text,
                                           time_column text)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
DECLARE
    p_stream ALIAS FOR $1;
    v_table regclass := to_regclass(format('metro.%I', p_stream));
    v_column text;
BEGIN
    IF v_table IS NULL THEN
        RAISE EXCEPTION 'register_stream: no table metro.%', p_stream
            USING ERRCODE = '42P01', HINT = 'Create the stream table first.';
    END IF;
    FOREACH v_column IN ARRAY ARRAY['position', 'txid', key_column, time_column] LOOP
        IF NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = v_table
                       AND a.attname = v_column AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'register_stream: table metro.% has no column %', p_stream, v_column
                USING ERRCODE = '42703',
                      HINT = 'A stream table has position and txid columns besides its key and time columns.';
        END IF;
    END LOOP;
    INSERT INTO streams AS s (stream, topic, key_column, time_column)
    VALUES (p_stream, topic, key_column, time_column)
    ON CONFLICT ON CONSTRAINT streams_pkey DO UPDATE
        SET topic = excluded.topic, key_column = excluded.key_column,
            time_column = excluded.time_column;
    INSERT INTO bridge_cursors (stream) VALUES (p_stream) ON CONFLICT DO NOTHING;
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (txid, position)',
                   p_stream || '_txid_position', p_stream);
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', p_stream || '_notify_bridge', p_stream);
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION notify_bridge()',
                   p_stream || '_notify_bridge', p_stream);
    EXECUTE format('GRANT SELECT, DELETE ON %I TO metro_bridge', p_stream);
END
$$;
COMMENT ON FUNCTION register_stream(text, text, text, text) IS 'Makes a table of schema metro a stream forwarded to Kafka: its row in streams (topic, key column, time column), bridge cursor, (txid, position) index, NOTIFY trigger and grants to metro_bridge; 42P01 no such table, 42703 a column missing';

-- The bridge's reads, for every registered stream: the next rows after
-- (after_txid, after_position) in (txid, position) order, only from
-- transactions below the snapshot's xmin: those have all ended, so no row can
-- later appear before the last one returned. value is the stream row without
-- position and txid, columns in table order, timestamps in UTC; key is its
-- key_column.
CREATE OR REPLACE FUNCTION bridge_batch(stream text, after_txid xid8, after_position bigint, max_rows integer)
RETURNS TABLE (row_txid xid8, row_position bigint, key text, value text)
LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp SET TimeZone = 'UTC' AS $$
DECLARE
    -- The same snapshot serves the horizon and the read below (STABLE).
    horizon xid8 := pg_snapshot_xmin(pg_current_snapshot());
    v_key text := bridge_stream_key(stream);
    v_columns text;
BEGIN
    SELECT string_agg(format('s.%I', a.attname), ', ' ORDER BY a.attnum) INTO v_columns
    FROM pg_attribute a
    WHERE a.attrelid = format('metro.%I', stream)::regclass AND a.attnum > 0
      AND NOT a.attisdropped AND a.attname NOT IN ('position', 'txid');
    RETURN QUERY EXECUTE format(
        'SELECT s.txid, s.position, s.%I::text, row_to_json(v)::text FROM %I s'
        ' CROSS JOIN LATERAL (SELECT %s) v'
        ' WHERE (s.txid, s.position) > ($1, $2) AND s.txid < $3'
        ' ORDER BY s.txid, s.position LIMIT $4', v_key, stream, v_columns)
        USING after_txid, after_position, horizon, max_rows;
END
$$;
COMMENT ON FUNCTION bridge_batch(text, xid8, bigint, integer) IS 'The next rows of a stream after (after_txid, after_position), in (txid, position) order and below the commit horizon: (row_txid, row_position, key, value) with the Kafka key and the row as JSON; MT005 unknown stream';

-- Whether committed rows of a stream follow (after_txid, after_position),
-- readable yet or still held back by the commit horizon.
CREATE OR REPLACE FUNCTION bridge_has_rows(stream text, after_txid xid8, after_position bigint)
RETURNS boolean LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    found boolean;
BEGIN
    PERFORM bridge_stream_key(stream);
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE (txid, position) > ($1, $2))', stream)
        INTO found USING after_txid, after_position;
    RETURN found;
END
$$;
COMMENT ON FUNCTION bridge_has_rows(text, xid8, bigint) IS 'Whether committed rows of a stream follow (after_txid, after_position), readable yet or held back by the commit horizon; MT005 unknown stream';

-- The Kafka key column of a registered stream; MT005 for any other name, so
-- only registered streams ever reach the dynamic SQL above.
CREATE OR REPLACE FUNCTION bridge_stream_key(stream text)
RETURNS text LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    v_key text;
BEGIN
    SELECT s.key_column INTO v_key FROM streams s WHERE s.stream = bridge_stream_key.stream;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Unknown stream: %', stream
            USING ERRCODE = 'MT005',
                  HINT = 'Streams are the rows of metro.streams.';
    END IF;
    RETURN v_key;
END
$$;
COMMENT ON FUNCTION bridge_stream_key(text) IS 'The Kafka key column of a registered stream; MT005 unknown stream';

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
COMMENT ON FUNCTION bridge_ack(text, xid8, bigint, bigint) IS 'Records that Kafka acknowledged a stream up to (last_txid, last_position); moves the cursor forward only and returns whether it moved';

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
            -- Table names come from the streams registry, never from a caller.
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
COMMENT ON FUNCTION bridge_prune(interval, integer) IS 'Deletes stream rows acknowledged more than retention ago, at most max_rows per stream: (stream, pruned) per stream';

-- Lag per stream: committed rows not yet acknowledged by Kafka and the event
-- time (the registry's time_column) of the oldest of them.
CREATE OR REPLACE FUNCTION bridge_lag()
RETURNS TABLE (stream text, topic text, delivered bigint, acked_at timestamptz, pending bigint,
               oldest_pending timestamptz)
LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT s.stream, s.topic, s.time_column, bc.delivered, bc.acked_at, bc.txid, bc.position
             FROM streams s JOIN bridge_cursors bc USING (stream)
             ORDER BY s.stream LOOP
        stream := c.stream;
        topic := c.topic;
        delivered := c.delivered;
        acked_at := c.acked_at;
        EXECUTE format('SELECT count(*), min(%I) FROM %I WHERE (txid, position) > ($1, $2)',
                       c.time_column, c.stream)
            INTO pending, oldest_pending USING c.txid, c.position;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION bridge_lag() IS 'Per stream: (stream, topic, delivered, acked_at, pending, oldest_pending), rows not yet acknowledged by Kafka and the event time of the oldest of them';

-- grants
REVOKE ALL ON FUNCTION bridge_batch(text, xid8, bigint, integer),
    bridge_has_rows(text, xid8, bigint), bridge_stream_key(text),
    bridge_ack(text, xid8, bigint, bigint), bridge_prune(interval, integer), bridge_lag()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bridge_batch(text, xid8, bigint, integer),
    bridge_has_rows(text, xid8, bigint), bridge_stream_key(text),
    bridge_ack(text, xid8, bigint, bigint), bridge_prune(interval, integer), bridge_lag()
    TO metro_bridge;
GRANT EXECUTE ON FUNCTION bridge_lag() TO metro_reader;

RESET search_path;
SET search_path = metro, pg_catalog;

-- ---- streams: the registry replaces bridge_cursors' topic, key_column and CHECK list;
-- registering keeps each cursor and creates the index, trigger and grants
ALTER TABLE bridge_cursors
    DROP CONSTRAINT bridge_cursors_stream_check,
    DROP COLUMN topic,
    DROP COLUMN key_column;
COMMENT ON COLUMN bridge_cursors.stream IS 'Stream (a row of streams)';
SELECT register_stream('fraud', 'FRAUD', 'trans_id', 'ts');
SELECT register_stream('card_alert_export', 'CARD_ALERT_EXPORT', 'card_id', 'ts');
SELECT register_stream('trips', 'TRIPS', 'trip_id', 'exit_ts');
SELECT register_stream('transaction_decisions', 'transaction_decisions', 'transaction_id', 'ts');
ALTER TABLE bridge_cursors ADD CONSTRAINT bridge_cursors_stream_fkey
    FOREIGN KEY (stream) REFERENCES streams;

-- ---- views (sql/views.sql)
-- Dashboard views (VoltDB's metro dashboard queries), all read from the
-- materialized history or the streams, never from a scan of card_events.
SET search_path = metro, pg_catalog;

-- views
CREATE VIEW station_second_stats AS
SELECT station_id, second_start,
       sum(swipes)::integer AS swipes, sum(entries)::integer AS entries,
       sum(accepted)::integer AS accepted, sum(rejected)::integer AS rejected,
       sum(fraud)::integer AS fraud, sum(revenue)::bigint AS revenue
FROM station_second_slots
GROUP BY station_id, second_start;
COMMENT ON VIEW station_second_stats IS 'Per station and second: swipes, entries and their outcomes, fares charged (cents)';

CREATE VIEW swipes_per_second AS
SELECT second_start, sum(swipes)::integer AS swipes, sum(entries)::integer AS entries
FROM station_second_slots
GROUP BY second_start;
COMMENT ON VIEW swipes_per_second IS 'Card events and entries per second, network-wide; filter on second_start';

CREATE VIEW acceptance_rate AS
SELECT second_start, sum(entries)::integer AS entries, sum(accepted)::integer AS accepted,
       round(sum(accepted)::numeric / nullif(sum(entries), 0), 4) AS rate
FROM station_second_slots
GROUP BY second_start;
COMMENT ON VIEW acceptance_rate IS 'Share of entry swipes accepted, per second';

CREATE VIEW busiest_stations AS
SELECT st.station_id, st.name, sum(sl.swipes)::integer AS swipes, sum(sl.entries)::integer AS entries
FROM station_second_slots sl
JOIN stations st USING (station_id)
WHERE sl.second_start >= date_trunc('second', now()) - interval '1 minute'
GROUP BY st.station_id, st.name
ORDER BY swipes DESC, st.station_id;
COMMENT ON VIEW busiest_stations IS 'Stations by card events in the last minute, busiest first';

CREATE VIEW card_export_stats AS
SELECT card_id, station_name, count(*)::integer AS alerts
FROM card_alert_export
GROUP BY card_id, station_name;
COMMENT ON VIEW card_export_stats IS 'Alerts exported per card and station';

CREATE VIEW station_wait_times AS
SELECT st.station_id, st.name, count(*)::integer AS departures, sum(d.riders)::integer AS riders,
       round(sum(d.wait_seconds) / nullif(sum(d.riders), 0), 1) AS average_wait_seconds
FROM station_departures d
JOIN stations st USING (station_id)
GROUP BY st.station_id, st.name;
COMMENT ON VIEW station_wait_times IS 'Average wait per station: seconds between a rider''s entry and the next departure';

-- grants
GRANT SELECT ON station_second_stats, swipes_per_second, acceptance_rate, busiest_stations,
    card_export_stats, station_wait_times TO metro_reader;

RESET search_path;
SET search_path = metro, pg_catalog;

-- ---- functions (procedures/history.sql, fraud.sql, gates.sql, risk.sql, recharge.sql, trains.sql)
-- Incremental maintenance of the per-second history from card_events: a row
-- trigger, so every writer (the functions, COPY, plain INSERT) keeps the
-- history equal to a recomputation from card_events. A row trigger costs
-- the single-swipe path less than a statement trigger with a transition
-- table, which PostgreSQL has to materialize and plan around on every call.
SET search_path = metro, pg_catalog;

-- functions

-- Adds one event to card_history_second and to this backend's slot of
-- station_second_slots, after checking its station (in place of a foreign
-- key, see card_events.station_id).
CREATE OR REPLACE FUNCTION card_events_add_history()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
DECLARE
    v_second timestamptz := date_trunc('second', NEW.ts);
    v_entry boolean := NEW.activity_code = 1;
BEGIN
    PERFORM FROM stations s WHERE s.station_id = NEW.station_id;
    IF NOT FOUND THEN
        PERFORM raise_unknown_station(NEW.station_id);
    END IF;

    INSERT INTO card_history_second AS h (card_id, second_start, swipes)
    VALUES (NEW.card_id, v_second, 1)
    ON CONFLICT (card_id, second_start) DO UPDATE SET swipes = h.swipes + 1;

    INSERT INTO station_second_slots AS s
        (station_id, second_start, slot, swipes, entries, accepted, rejected, fraud, revenue)
    VALUES (NEW.station_id, v_second, pg_backend_pid(), 1, v_entry::integer,
            (v_entry AND NEW.accept = 1)::integer, (v_entry AND NEW.accept = 0)::integer,
            (v_entry AND NEW.accept = -1)::integer,
            CASE WHEN v_entry AND NEW.accept = 1 THEN NEW.amount ELSE 0 END)
    ON CONFLICT (station_id, second_start, slot) DO UPDATE SET
        swipes = s.swipes + 1,
        entries = s.entries + excluded.entries,
        accepted = s.accepted + excluded.accepted,
        rejected = s.rejected + excluded.rejected,
        fraud = s.fraud + excluded.fraud,
        revenue = s.revenue + excluded.revenue;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION card_events_add_history() IS 'Trigger: adds a card event to card_history_second and station_second_slots after checking its station (MT001)';

-- Events are facts: changing or deleting one would make the history lie.
CREATE OR REPLACE FUNCTION card_events_refuse_change()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'card_events is append-only: % refused', TG_OP
        USING ERRCODE = 'MT006',
              HINT = 'Record a new event instead; TRUNCATE clears the events and their history together.';
END
$$;
COMMENT ON FUNCTION card_events_refuse_change() IS 'Trigger: card_events is append-only, UPDATE and DELETE are refused (MT006)';

-- TRUNCATE card_events empties the history derived from it.
CREATE OR REPLACE FUNCTION card_events_clear_history()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    TRUNCATE card_history_second, station_second_slots;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION card_events_clear_history() IS 'Trigger: TRUNCATE card_events empties the history derived from it';

-- triggers
-- validate_entries writes the history of its own events set-wise and sets
-- metro.history_written for the duration (transaction-local, undone with the
-- transaction); every other writer goes through the trigger.
CREATE TRIGGER card_events_history AFTER INSERT ON card_events
    FOR EACH ROW WHEN (current_setting('metro.history_written', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION card_events_add_history();
CREATE TRIGGER card_events_append_only BEFORE UPDATE OR DELETE ON card_events
    FOR EACH STATEMENT EXECUTE FUNCTION card_events_refuse_change();
CREATE TRIGGER card_events_truncate AFTER TRUNCATE ON card_events
    FOR EACH STATEMENT EXECUTE FUNCTION card_events_clear_history();

RESET search_path;
SET search_path = metro, pg_catalog;

-- Fraud rules, checked against the card's earlier events before a swipe is
-- recorded. Thresholds come from settings, read on every call.
SET search_path = metro, pg_catalog;

-- functions

-- Which rule fires for an entry of card_id at ts: 0 none,
-- 1 the card already has an event in the same second,
-- 3 fraud_entry_limit or more entries in [ts - fraud_window, ts),
-- 2 fraud_station_limit or more distinct stations among those entries.
-- The entry scan stops after fraud_entry_limit rows, so its cost is bounded
-- by the threshold, not by the card's history. A plain SQL function returning
-- a set, so that PostgreSQL inlines it into the caller's query: validate_entry
-- runs it without a nested executor, validate_entries runs it set-wise. It
-- names its tables in full because an inlined function cannot carry a SET
-- search_path clause.
CREATE OR REPLACE FUNCTION fraud_rule(card_id bigint, ts timestamptz)
RETURNS TABLE (rule smallint) LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM metro.card_history_second h
                             WHERE h.card_id = $1 AND h.second_start = date_trunc('second', $2))
                    THEN 1
                WHEN recent.entries >= s.fraud_entry_limit THEN 3
                WHEN recent.stations >= s.fraud_station_limit THEN 2
                ELSE 0 END::smallint
    FROM metro.settings s
    CROSS JOIN LATERAL (
        SELECT count(*) AS entries, count(DISTINCT e.station_id) AS stations
        FROM (SELECT e.station_id FROM metro.card_events e
              WHERE e.card_id = $1 AND e.activity_code = 1
                AND e.ts >= $2 - s.fraud_window AND e.ts < $2
              ORDER BY e.ts DESC
              LIMIT s.fraud_entry_limit) e
    ) recent
$$;
COMMENT ON FUNCTION fraud_rule(bigint, timestamptz) IS 'Which fraud rule an entry of the card at ts breaks: 0 none, 1 same second, 2 too many stations, 3 too many entries in the window; inlined into its callers';

-- Would an entry of card_id at station_id at ts be refused as fraud?
-- Read-only: records nothing.
CREATE OR REPLACE FUNCTION is_fraud(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS boolean LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = metro, pg_temp AS $$
BEGIN
    IF $1 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'card_id'); END IF;
    IF $2 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'station_id'); END IF;
    IF $3 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'ts'); END IF;
    IF NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = $2) THEN
        PERFORM raise_unknown_station($2);
    END IF;
    RETURN (SELECT f.rule FROM fraud_rule($1, $3) f) <> 0;
END
$$;
COMMENT ON FUNCTION is_fraud(bigint, integer, timestamptz) IS 'Would an entry of card_id at station_id at ts be refused as fraud? Reads only. MT004 NULL argument, MT001 unknown station';
REVOKE ALL ON FUNCTION is_fraud(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION is_fraud(bigint, integer, timestamptz) TO metro_app;

RESET search_path;
SET search_path = metro, pg_catalog;

-- Gate decisions: entry and exit swipes. Each call is one transaction; the
-- card's row lock serializes all work on one card.
SET search_path = metro, pg_catalog;

-- functions

-- The outcome of an entry swipe, the single place where the messages are
-- decided (validate_entry and validate_entries both use it): unknown card
-- (enabled is NULL), disabled card, fraud (no charge), unlimited card valid or
-- expired, pay-per-ride charged when balance > fare, otherwise refused with an
-- Insufficient Balance alert. accept: 1 accepted, 0 rejected, -1 fraud.
CREATE OR REPLACE FUNCTION entry_outcome(enabled boolean, card_type smallint, balance integer,
                                         expires timestamptz, fare integer, fraud boolean,
                                         ts timestamptz)
RETURNS TABLE (accept smallint, amount integer, message text, alert text)
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN enabled IS NULL OR NOT enabled THEN 0
                WHEN fraud THEN -1
                WHEN card_type = 1 THEN (expires > ts)::integer
                ELSE (balance > fare)::integer END::smallint,
           CASE WHEN enabled AND NOT fraud AND card_type = 0 AND balance > fare THEN fare
                ELSE 0 END,
           CASE WHEN enabled IS NULL THEN 'Card Invalid'
                WHEN NOT enabled THEN 'Card Disabled'
                WHEN fraud THEN 'Fraudulent transaction'
                WHEN card_type = 1 AND expires > ts
                    THEN 'Card Expires: ' || to_char(expires, 'YYYY-MM-DD HH24:MI:SSOF')
                WHEN card_type = 1 THEN 'Card Expired'
                WHEN balance > fare THEN 'Remaining Balance: ' || cents_text(balance - fare)
                ELSE 'Card has insufficient balance: ' || cents_text(balance) END,
           CASE WHEN enabled AND NOT fraud AND card_type = 0 AND balance <= fare
                THEN 'Insufficient Balance' END
$$;
COMMENT ON FUNCTION entry_outcome(boolean, smallint, integer, timestamptz, integer, boolean, timestamptz) IS 'The outcome of an entry swipe (accept, amount charged, message, alert): the one place the gate messages are decided; inlined into validate_entry and validate_entries';

-- Decides an entry swipe and records it whatever the outcome, with a fraud
-- row for fraud and a card_alert_export row for an insufficient balance when
-- the card wants alerts.
CREATE OR REPLACE FUNCTION validate_entry(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS decision LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_card ALIAS FOR $1;
    p_station ALIAS FOR $2;
    p_ts ALIAS FOR $3;
    v_fare integer;
    v_station_name text;
    c cards%ROWTYPE;
    v_fraud boolean := false;
    o record;
BEGIN
    IF p_card IS NULL THEN PERFORM raise_null_argument('validate_entry', 'card_id'); END IF;
    IF p_station IS NULL THEN PERFORM raise_null_argument('validate_entry', 'station_id'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('validate_entry', 'ts'); END IF;
    SELECT s.fare, s.name INTO v_fare, v_station_name FROM stations s WHERE s.station_id = p_station;
    IF NOT FOUND THEN PERFORM raise_unknown_station(p_station); END IF;

    -- Simple statements: measured cheaper per swipe than one statement joining
    -- station, card, rules and outcome.
    SELECT * INTO c FROM cards WHERE cards.card_id = p_card FOR NO KEY UPDATE;
    IF c.enabled THEN
        SELECT f.rule <> 0 INTO STRICT v_fraud FROM fraud_rule(p_card, p_ts) f;
    END IF;
    SELECT * INTO o FROM entry_outcome(c.enabled, c.card_type, c.balance, c.expires, v_fare, v_fraud, p_ts);

    IF o.accept = -1 THEN
        INSERT INTO fraud (trans_id, card_id, ts, station_id, activity_code, amount)
        VALUES (fraud_trans_id(p_card, p_ts), p_card, p_ts, p_station, 1, v_fare);
    ELSIF o.amount > 0 THEN
        UPDATE cards SET balance = c.balance - o.amount WHERE cards.card_id = p_card;
    ELSIF o.alert IS NOT NULL AND c.notify <> 0 THEN
        INSERT INTO card_alert_export (card_id, ts, station_name, name, phone, email, notify, alert_message)
        VALUES (p_card, p_ts, v_station_name, c.name, c.phone, c.email, c.notify, o.alert);
    END IF;
    INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
    VALUES (p_card, p_ts, p_station, 1, o.amount, o.accept);
    RETURN ROW(o.accept = 1, o.message)::decision;
END
$$;
COMMENT ON FUNCTION validate_entry(bigint, integer, timestamptz) IS 'Decides an entry swipe: (accepted, message) as Card Invalid, Card Disabled, Fraudulent transaction, Remaining Balance: 12.50, Card has insufficient balance: 1.00, Card Expires: <ts>, Card Expired; records it in card_events whatever the outcome, with a fraud or card_alert_export row when due. MT004 NULL argument, MT001 unknown station';
REVOKE ALL ON FUNCTION validate_entry(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION validate_entry(bigint, integer, timestamptz) TO metro_app;

-- Decides a batch of entry swipes in one call, each swipe getting exactly the
-- result it would get from validate_entry called alone, in input order. Every
-- card of the batch is locked first, in card order, so concurrent batches
-- cannot deadlock. Swipes are then decided set-wise in rounds: round k holds
-- each card's k-th swipe, so a card swiped twice sees its first swipe (balance,
-- same-second rule) as it would alone. The batch writes the per-second
-- history itself, one aggregate upsert per round, and tells the row trigger
-- on card_events to stand aside (metro.history_written). ts NULL means now()
-- for every swipe.
CREATE OR REPLACE FUNCTION validate_entries(card_ids bigint[], station_ids integer[],
                                            ts timestamptz[] DEFAULT NULL)
RETURNS TABLE (ordinal integer, accepted boolean, message text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    v_rounds integer;
    v_missing integer;
    v_ordinals integer[] := '{}';
    v_accepted boolean[] := '{}';
    v_messages text[] := '{}';
BEGIN
    IF card_ids IS NULL THEN PERFORM raise_null_argument('validate_entries', 'card_ids'); END IF;
    IF station_ids IS NULL THEN PERFORM raise_null_argument('validate_entries', 'station_ids'); END IF;
    IF cardinality(station_ids) <> cardinality(card_ids)
       OR (ts IS NOT NULL AND cardinality(ts) <> cardinality(card_ids)) THEN
        RAISE EXCEPTION 'validate_entries: card_ids, station_ids and ts must have the same length, got %, % and %',
            cardinality(card_ids), cardinality(station_ids), cardinality(ts)
            USING ERRCODE = '22023';
    END IF;
    SELECT min(u.n) INTO v_missing
    FROM unnest(card_ids, station_ids) WITH ORDINALITY u(card_id, station_id, n)
    WHERE u.card_id IS NULL OR u.station_id IS NULL;
    IF v_missing IS NOT NULL THEN
        PERFORM raise_null_argument('validate_entries',
            format('card_ids[%s] or station_ids[%s]', v_missing, v_missing));
    END IF;
    SELECT min(u.station_id) INTO v_missing
    FROM unnest(station_ids) u(station_id)
    WHERE NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = u.station_id);
    IF v_missing IS NOT NULL THEN PERFORM raise_unknown_station(v_missing); END IF;

    PERFORM FROM cards c WHERE c.card_id = ANY (card_ids) ORDER BY c.card_id FOR NO KEY UPDATE;
    SELECT max(per_card.n) INTO v_rounds
    FROM (SELECT count(*) AS n FROM unnest(card_ids) u(card_id) GROUP BY u.card_id) per_card;

    PERFORM set_config('metro.history_written', 'on', true);
    FOR v_round IN 1..coalesce(v_rounds, 0) LOOP
        WITH swipes AS (
            SELECT u.n::integer AS ordinal, u.card_id, u.station_id, coalesce(u.ts, now()) AS ts
            FROM (SELECT x.*, row_number() OVER (PARTITION BY x.card_id ORDER BY x.n) AS k
                  FROM unnest(card_ids, station_ids, ts) WITH ORDINALITY x(card_id, station_id, ts, n)) u
            WHERE u.k = v_round
        ), decided AS MATERIALIZED (
            SELECT w.*, st.fare, st.name AS station_name, c.name, c.phone, c.email, c.notify,
                   c.balance, o.accept, o.amount, o.message, o.alert
            FROM swipes w
            JOIN stations st ON st.station_id = w.station_id
            LEFT JOIN cards c ON c.card_id = w.card_id
            CROSS JOIN LATERAL fraud_rule(w.card_id, w.ts) f
            CROSS JOIN LATERAL entry_outcome(c.enabled, c.card_type, c.balance, c.expires,
                                             st.fare, f.rule <> 0, w.ts) o
        ), charged AS (
            UPDATE cards SET balance = d.balance - d.amount
            FROM decided d WHERE d.amount > 0 AND cards.card_id = d.card_id
        ), frauds AS (
            INSERT INTO fraud (trans_id, card_id, ts, station_id, activity_code, amount)
            SELECT fraud_trans_id(d.card_id, d.ts), d.card_id, d.ts, d.station_id, 1, d.fare
            FROM decided d WHERE d.accept = -1 ORDER BY d.card_id
        ), alerts AS (
            INSERT INTO card_alert_export (card_id, ts, station_name, name, phone, email, notify, alert_message)
            SELECT d.card_id, d.ts, d.station_name, d.name, d.phone, d.email, d.notify, d.alert
            FROM decided d WHERE d.alert IS NOT NULL AND d.notify <> 0 ORDER BY d.card_id
        ), recorded AS (
            INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
            SELECT d.card_id, d.ts, d.station_id, 1, d.amount, d.accept
            FROM decided d ORDER BY d.card_id
        ), card_seconds AS (
            -- One swipe per card in a round: one row per (card, second).
            INSERT INTO card_history_second AS h (card_id, second_start, swipes)
            SELECT d.card_id, date_trunc('second', d.ts), 1 FROM decided d ORDER BY d.card_id
            ON CONFLICT (card_id, second_start) DO UPDATE SET swipes = h.swipes + 1
        ), station_seconds AS (
            INSERT INTO station_second_slots AS s
                (station_id, second_start, slot, swipes, entries, accepted, rejected, fraud, revenue)
            SELECT d.station_id, date_trunc('second', d.ts), pg_backend_pid(), count(*), count(*),
                   count(*) FILTER (WHERE d.accept = 1), count(*) FILTER (WHERE d.accept = 0),
                   count(*) FILTER (WHERE d.accept = -1), sum(d.amount)
            FROM decided d GROUP BY 1, 2 ORDER BY 1, 2
            ON CONFLICT (station_id, second_start, slot) DO UPDATE SET
                swipes = s.swipes + excluded.swipes,
                entries = s.entries + excluded.entries,
                accepted = s.accepted + excluded.accepted,
                rejected = s.rejected + excluded.rejected,
                fraud = s.fraud + excluded.fraud,
                revenue = s.revenue + excluded.revenue
        )
        SELECT v_ordinals || array_agg(d.ordinal), v_accepted || array_agg(d.accept = 1),
               v_messages || array_agg(d.message)
        INTO v_ordinals, v_accepted, v_messages
        FROM decided d;
    END LOOP;
    PERFORM set_config('metro.history_written', 'off', true);

    RETURN QUERY SELECT r.ordinal, r.accepted, r.message
                 FROM unnest(v_ordinals, v_accepted, v_messages) r(ordinal, accepted, message)
                 ORDER BY r.ordinal;
END
$$;
COMMENT ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) IS 'Decides a batch of entry swipes set-wise: (ordinal, accepted, message) per swipe, in input order, each exactly what validate_entry gives it alone; ts NULL or a NULL element means now(). 22023 arrays of different lengths, MT004 NULL element, MT001 unknown station';
REVOKE ALL ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) TO metro_app;

-- Records an exit swipe. When the card's latest accepted entry or exit before
-- it is an entry (refused entries let nobody in), the trip is closed and a
-- trips row written. Exits of a known card are never refused: riders must be
-- able to leave.
CREATE OR REPLACE FUNCTION process_exit(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS decision LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_card ALIAS FOR $1;
    p_station ALIAS FOR $2;
    p_ts ALIAS FOR $3;
    v_last record;
    v_accept smallint := 1;
    v_message text;
BEGIN
    IF p_card IS NULL THEN PERFORM raise_null_argument('process_exit', 'card_id'); END IF;
    IF p_station IS NULL THEN PERFORM raise_null_argument('process_exit', 'station_id'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('process_exit', 'ts'); END IF;
    IF NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = p_station) THEN
        PERFORM raise_unknown_station(p_station);
    END IF;

    PERFORM FROM cards WHERE cards.card_id = p_card FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        v_accept := 0;
        v_message := 'Card Invalid';
    ELSE
        SELECT e.activity_code, e.accept, e.station_id, e.ts INTO v_last
        FROM card_events e
        WHERE e.card_id = p_card AND e.ts <= p_ts
          AND (e.activity_code = -1 OR (e.activity_code = 1 AND e.accept = 1))
        ORDER BY e.ts DESC
        LIMIT 1;
        IF FOUND AND v_last.activity_code = 1 THEN
            INSERT INTO trips (card_id, entry_station, entry_ts, exit_station, exit_ts)
            VALUES (p_card, v_last.station_id, v_last.ts, p_station, p_ts);
            v_message := 'Exit recorded';
        ELSE
            v_message := 'Exit recorded without an open entry';
        END IF;
    END IF;

    INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
    VALUES (p_card, p_ts, p_station, -1, 0, v_accept);
    RETURN ROW(v_accept = 1, v_message)::decision;
END
$$;
COMMENT ON FUNCTION process_exit(bigint, integer, timestamptz) IS 'Records an exit swipe: (true, Exit recorded) and a trips row when it closes an accepted entry, (true, Exit recorded without an open entry), (false, Card Invalid). MT004 NULL argument, MT001 unknown station';
REVOKE ALL ON FUNCTION process_exit(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION process_exit(bigint, integer, timestamptz) TO metro_app;

RESET search_path;
SET search_path = metro, pg_catalog;

-- Payment risk control: which payments are refused, which rule decides a
-- payment (shared by payments and recharges), evaluate_transaction and its
-- set-wise form evaluate_transactions. Each rule is written once, as a plain
-- SQL function that PostgreSQL inlines into the single and the batch path.
SET search_path = metro, pg_catalog;

-- functions

-- Why evaluate_transaction refuses a payment's arguments, checked in this
-- order: (MT004, the NULL argument's name), (MT007, 'transaction_id') for an
-- empty, blank or too long transaction_id, (MT003, 'amount') for an amount
-- that is not positive, has more than two decimals or is 10^12 or more; one
-- row (NULL, NULL) when they are fine. ts is not checked here: the batch
-- reads a NULL ts as now(). Inlined, so it names nothing unqualified.
CREATE OR REPLACE FUNCTION payment_refusal(transaction_id text, account_id bigint, amount numeric)
RETURNS TABLE (sqlstate text, argument text) LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN $1 IS NULL OR $2 IS NULL OR $3 IS NULL THEN 'MT004'
                WHEN btrim($1) = '' OR length($1) > 200 THEN 'MT007'
                WHEN $3 <= 0 OR $3 <> round($3, 2) OR $3 >= 1e12 THEN 'MT003' END,
           CASE WHEN $1 IS NULL THEN 'transaction_id'
                WHEN $2 IS NULL THEN 'account_id'
                WHEN $3 IS NULL THEN 'amount'
                WHEN btrim($1) = '' OR length($1) > 200 THEN 'transaction_id'
                WHEN $3 <= 0 OR $3 <> round($3, 2) OR $3 >= 1e12 THEN 'amount' END
$$;
COMMENT ON FUNCTION payment_refusal(text, bigint, numeric) IS 'Why a payment''s arguments are refused: (MT004, argument) NULL, (MT007, transaction_id) empty or too long, (MT003, amount) not positive, over two decimals or too large; (NULL, NULL) when fine. Inlined into evaluate_transaction and evaluate_transactions';

-- The rule deciding a payment of amount (currency units) from account_id:
-- the first, in rule_order, whose amount range holds the amount and whose
-- minimum level the account's tag reaches (no tag: level 1). One row; rule
-- NULL when no rule matches (the callers raise MT008). Inlined, so it names
-- its tables in full.
CREATE OR REPLACE FUNCTION risk_rule(account_id bigint, amount numeric)
RETURNS TABLE (risk_level smallint, blocked boolean, rule text, message text)
LANGUAGE sql STABLE AS $$
    SELECT m.risk_level, r.blocked, r.rule, r.message
    FROM (SELECT coalesce((SELECT t.risk_level FROM metro.risk_tags t WHERE t.account_id = $1),
                          1)::smallint AS risk_level) m
    LEFT JOIN LATERAL (SELECT k.action = 'block' AS blocked, k.rule, k.reason AS message
                       FROM metro.risk_rules k
                       WHERE k.amount_range @> $2 AND k.min_risk_level <= m.risk_level
                       ORDER BY k.rule_order
                       LIMIT 1) r ON true
$$;
COMMENT ON FUNCTION risk_rule(bigint, numeric) IS 'The risk rule deciding a payment: the account''s level (1 without a tag), blocked, rule and message of the first matching rule in rule_order (rule NULL when none matches); inlined into evaluate_transaction(s) and recharge_card';

-- Raises MT008: no rule of risk_rules covers the payment.
CREATE OR REPLACE FUNCTION raise_no_risk_rule(account_id bigint, amount numeric, risk_level smallint)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'No risk rule covers amount % for account % (risk level %)',
        amount, account_id, risk_level
        USING ERRCODE = 'MT008',
              HINT = 'Keep a last rule with amount_range ''(,)'' and min_risk_level 1 in metro.risk_rules.';
END
$$;
COMMENT ON FUNCTION raise_no_risk_rule(bigint, numeric, smallint) IS 'Raises MT008 naming the amount, the account and its risk level';

-- Decides a payment with the risk rules and records the decision once:
-- a transaction_id seen before gets its recorded decision back and nothing
-- is written. A new decision is also written to the transaction_decisions
-- stream. Bad arguments raise MT003/MT004/MT007 and write nothing.
CREATE OR REPLACE FUNCTION evaluate_transaction(transaction_id text, account_id bigint, amount numeric,
                                                ts timestamptz DEFAULT now())
RETURNS risk_verdict LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_transaction ALIAS FOR $1;
    p_account ALIAS FOR $2;
    p_amount ALIAS FOR $3;
    p_ts ALIAS FOR $4;
    v risk_verdict;
    refusal record;
    m record;
BEGIN
    SELECT * INTO refusal FROM payment_refusal(p_transaction, p_account, p_amount);
    IF refusal.sqlstate = 'MT004' THEN
        PERFORM raise_null_argument('evaluate_transaction', refusal.argument);
    END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('evaluate_transaction', 'ts'); END IF;
    IF refusal.sqlstate = 'MT007' THEN
        RAISE EXCEPTION 'Invalid transaction_id: %', quote_literal(left(p_transaction, 40))
            USING ERRCODE = 'MT007',
                  HINT = 'A transaction_id is 1 to 200 characters, not only spaces.';
    ELSIF refusal.sqlstate = 'MT003' THEN
        RAISE EXCEPTION 'Transaction amount must be positive, below 1,000,000,000,000, with at most two decimals: %', p_amount
            USING ERRCODE = 'MT003', HINT = 'Amounts are currency units with cents: 5000.01.';
    END IF;

    SELECT d.blocked, d.rule, d.message INTO v
    FROM risk_decisions d WHERE d.transaction_id = p_transaction;
    IF FOUND THEN
        RETURN v;
    END IF;

    SELECT * INTO m FROM risk_rule(p_account, p_amount);
    IF m.rule IS NULL THEN
        PERFORM raise_no_risk_rule(p_account, p_amount, m.risk_level);
    END IF;
    INSERT INTO risk_decisions (transaction_id, account_id, amount, ts, risk_level, blocked, rule, message)
    VALUES (p_transaction, p_account, p_amount, p_ts, m.risk_level, m.blocked, m.rule, m.message)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        -- The same transaction_id was decided by a call that committed meanwhile.
        SELECT d.blocked, d.rule, d.message INTO v
        FROM risk_decisions d WHERE d.transaction_id = p_transaction;
        RETURN v;
    END IF;
    INSERT INTO transaction_decisions (transaction_id, account_id, amount, ts, risk_level, blocked, rule, message)
    VALUES (p_transaction, p_account, p_amount, p_ts, m.risk_level, m.blocked, m.rule, m.message);
    RETURN ROW(m.blocked, m.rule, m.message)::risk_verdict;
END
$$;
COMMENT ON FUNCTION evaluate_transaction(text, bigint, numeric, timestamptz) IS 'Decides a payment with the risk rules: (blocked, rule, message), recorded once per transaction_id in risk_decisions and the transaction_decisions stream; a transaction_id seen before gets its recorded decision and writes nothing. MT004 NULL argument, MT007 invalid transaction_id, MT003 invalid amount, MT008 no rule covers it';
REVOKE ALL ON FUNCTION evaluate_transaction(text, bigint, numeric, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evaluate_transaction(text, bigint, numeric, timestamptz)
    TO metro_app, metro_bridge;

-- Decides payments i = 1..n (transaction_ids[i], account_ids[i], amounts[i],
-- ts[i]) and returns one row per input position, in input order: what
-- evaluate_transaction would return for it, called one by one. A
-- transaction_id decided before gets its recorded decision and writes nothing;
-- a transaction_id repeated within the batch is decided by its first
-- occurrence and the later ones get that decision. ts NULL, or a NULL element,
-- means now(). Arrays of different lengths raise 22023. When any payment would
-- be refused (MT003, MT004, MT007, MT008), the batch is decided by
-- evaluate_transaction one payment at a time, so the caller gets exactly the
-- error of the first refused payment, and the whole call writes nothing.
CREATE OR REPLACE FUNCTION evaluate_transactions(transaction_ids text[], account_ids bigint[],
                                                 amounts numeric[], ts timestamptz[] DEFAULT NULL)
RETURNS TABLE (ordinal integer, blocked boolean, rule text, message text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    v_refused boolean;
    v_payment record;
    v risk_verdict;
BEGIN
    IF transaction_ids IS NULL THEN PERFORM raise_null_argument('evaluate_transactions', 'transaction_ids'); END IF;
    IF account_ids IS NULL THEN PERFORM raise_null_argument('evaluate_transactions', 'account_ids'); END IF;
    IF amounts IS NULL THEN PERFORM raise_null_argument('evaluate_transactions', 'amounts'); END IF;
    IF cardinality(account_ids) <> cardinality(transaction_ids)
       OR cardinality(amounts) <> cardinality(transaction_ids)
       OR (ts IS NOT NULL AND cardinality(ts) <> cardinality(transaction_ids)) THEN
        RAISE EXCEPTION 'evaluate_transactions: transaction_ids, account_ids, amounts and ts must have the same length, got %, %, % and %',
            cardinality(transaction_ids), cardinality(account_ids), cardinality(amounts), cardinality(ts)
            USING ERRCODE = '22023';
    END IF;

    WITH payments AS (
        SELECT u.n, u.transaction_id, u.account_id, u.amount, coalesce(u.ts, now()) AS ts
        FROM unnest(transaction_ids, account_ids, amounts, ts)
             WITH ORDINALITY u(transaction_id, account_id, amount, ts, n)
    ), fresh AS MATERIALIZED (
        -- First occurrences of the transaction_ids not decided before, with
        -- the rule that decides them (NULL rule: none matches, MT008).
        SELECT f.*, r.risk_level, r.blocked, r.rule, r.message
        FROM (SELECT DISTINCT ON (p.transaction_id) p.*
              FROM payments p
              WHERE NOT EXISTS (SELECT FROM risk_decisions d WHERE d.transaction_id = p.transaction_id)
              ORDER BY p.transaction_id, p.n) f
        CROSS JOIN LATERAL risk_rule(f.account_id, f.amount) r
    ), refused AS (
        SELECT FROM payments p CROSS JOIN LATERAL payment_refusal(p.transaction_id, p.account_id, p.amount) x
        WHERE x.sqlstate IS NOT NULL
        UNION ALL
        SELECT FROM fresh f WHERE f.rule IS NULL
    ), decided AS (
        INSERT INTO risk_decisions AS d (transaction_id, account_id, amount, ts, risk_level, blocked, rule, message)
        SELECT f.transaction_id, f.account_id, f.amount, f.ts, f.risk_level, f.blocked, f.rule, f.message
        FROM fresh f
        WHERE NOT EXISTS (SELECT FROM refused)
        ORDER BY f.n
        ON CONFLICT DO NOTHING
        RETURNING d.transaction_id
    ), streamed AS (
        INSERT INTO transaction_decisions (transaction_id, account_id, amount, ts, risk_level, blocked, rule, message)
        SELECT f.transaction_id, f.account_id, f.amount, f.ts, f.risk_level, f.blocked, f.rule, f.message
        FROM decided d JOIN fresh f ON f.transaction_id = d.transaction_id
        ORDER BY f.n
    )
    SELECT EXISTS (SELECT FROM refused) INTO v_refused;

    IF v_refused THEN
        FOR v_payment IN SELECT u.n, u.transaction_id, u.account_id, u.amount, coalesce(u.ts, now()) AS ts
                 FROM unnest(transaction_ids, account_ids, amounts, ts)
                      WITH ORDINALITY u(transaction_id, account_id, amount, ts, n)
                 ORDER BY u.n LOOP
            v := evaluate_transaction(v_payment.transaction_id, v_payment.account_id, v_payment.amount, v_payment.ts);
            ordinal := v_payment.n;
            blocked := v.blocked;
            rule := v.rule;
            message := v.message;
            RETURN NEXT;
        END LOOP;
        RETURN;
    END IF;
    -- A new statement: it sees this call's decisions and those that concurrent
    -- calls committed meanwhile (the ON CONFLICT DO NOTHING above).
    RETURN QUERY
        SELECT u.n::integer, d.blocked, d.rule, d.message
        FROM unnest(transaction_ids) WITH ORDINALITY u(transaction_id, n)
        JOIN risk_decisions d ON d.transaction_id = u.transaction_id
        ORDER BY u.n;
END
$$;
COMMENT ON FUNCTION evaluate_transactions(text[], bigint[], numeric[], timestamptz[]) IS 'Decides a batch of payments set-wise: (ordinal, blocked, rule, message) per input position, exactly what evaluate_transaction called in input order gives; ts NULL or a NULL element means now(). 22023 arrays of different lengths; a refused payment raises the error a one-by-one caller gets first, and nothing is written';

-- grants
REVOKE ALL ON FUNCTION evaluate_transactions(text[], bigint[], numeric[], timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evaluate_transactions(text[], bigint[], numeric[], timestamptz[])
    TO metro_app, metro_bridge;

RESET search_path;
SET search_path = metro, pg_catalog;

-- Recharges at ticket machines.
SET search_path = metro, pg_catalog;

-- functions

-- Credits amount cents to an enabled card exactly once, records the purchase
-- and writes a card_alert_export row. Unknown and disabled cards are refused
-- (and recorded); a non-positive amount is an error and writes nothing.
-- The payment risk rules apply with the card as the account and the amount
-- in currency units: a blocked recharge credits nothing, is refused with the
-- rule's reason, recorded as refused (accept -1) and written to fraud.
CREATE OR REPLACE FUNCTION recharge_card(card_id bigint, amount integer, station_id integer, ts timestamptz DEFAULT now())
RETURNS decision LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_card ALIAS FOR $1;
    p_amount ALIAS FOR $2;
    p_station ALIAS FOR $3;
    p_ts ALIAS FOR $4;
    v_station_name text;
    c cards%ROWTYPE;
    v_balance integer;
    v_accept smallint := 0;
    v_message text;
    v_risk record;
BEGIN
    IF p_card IS NULL THEN PERFORM raise_null_argument('recharge_card', 'card_id'); END IF;
    IF p_amount IS NULL THEN PERFORM raise_null_argument('recharge_card', 'amount'); END IF;
    IF p_station IS NULL THEN PERFORM raise_null_argument('recharge_card', 'station_id'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('recharge_card', 'ts'); END IF;
    IF p_amount <= 0 THEN
        RAISE EXCEPTION 'Recharge amount must be a positive number of cents: %', p_amount
            USING ERRCODE = 'MT003', HINT = 'Amounts are integer cents: 2000 is 20.00.';
    END IF;
    SELECT s.name INTO v_station_name FROM stations s WHERE s.station_id = p_station;
    IF NOT FOUND THEN PERFORM raise_unknown_station(p_station); END IF;

    SELECT * INTO c FROM cards WHERE cards.card_id = p_card FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        v_message := 'Card Invalid';
    ELSIF NOT c.enabled THEN
        v_message := 'Card Disabled';
    ELSE
        SELECT * INTO v_risk FROM risk_rule(p_card, p_amount::numeric / 100);
        IF v_risk.rule IS NULL THEN
            PERFORM raise_no_risk_rule(p_card, p_amount::numeric / 100, v_risk.risk_level);
        END IF;
        IF v_risk.blocked THEN
            v_accept := -1;
            v_message := v_risk.message;
            INSERT INTO fraud (trans_id, card_id, ts, station_id, activity_code, amount)
            VALUES (fraud_trans_id(p_card, p_ts), p_card, p_ts, p_station, 2, p_amount);
        ELSE
            UPDATE cards SET balance = c.balance + p_amount WHERE cards.card_id = p_card
            RETURNING balance INTO v_balance;
            v_accept := 1;
            v_message := 'Recharged: ' || cents_text(p_amount) || ', Balance: ' || cents_text(v_balance);
            INSERT INTO card_alert_export (card_id, ts, station_name, name, phone, email, notify, alert_message)
            VALUES (p_card, p_ts, v_station_name, c.name, c.phone, c.email, c.notify, v_message);
        END IF;
    END IF;

    INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
    VALUES (p_card, p_ts, p_station, 2, CASE WHEN v_accept = 1 THEN p_amount ELSE 0 END, v_accept);
    RETURN ROW(v_accept = 1, v_message)::decision;
END
$$;
COMMENT ON FUNCTION recharge_card(bigint, integer, integer, timestamptz) IS 'Credits amount cents to an enabled card once: (true, Recharged: 20.00, Balance: 32.50) and a card_alert_export row; (false, Card Invalid), (false, Card Disabled), or refused with the reason of a risk rule that blocks it (recorded with accept -1 and a fraud row). MT004 NULL argument, MT003 amount not positive, MT001 unknown station, MT008 no risk rule covers it';
REVOKE ALL ON FUNCTION recharge_card(bigint, integer, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION recharge_card(bigint, integer, integer, timestamptz)
    TO metro_app, metro_bridge;

RESET search_path;
SET search_path = metro, pg_catalog;

-- Train movements and the wait-time statistics they produce.
SET search_path = metro, pg_catalog;

-- functions

-- Records an arrival (0) or departure (1). A departure turns the accepted
-- entries at that station since the previous departure (at most
-- settings.max_wait back) into a station_departures row.
CREATE OR REPLACE FUNCTION record_train_event(train_id integer, station_id integer, activity_type integer, ts timestamptz DEFAULT now())
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_train ALIAS FOR $1;
    p_station ALIAS FOR $2;
    p_activity ALIAS FOR $3;
    p_ts ALIAS FOR $4;
    v_since timestamptz;
    v_riders integer;
    v_wait numeric;
BEGIN
    IF p_train IS NULL THEN PERFORM raise_null_argument('record_train_event', 'train_id'); END IF;
    IF p_station IS NULL THEN PERFORM raise_null_argument('record_train_event', 'station_id'); END IF;
    IF p_activity IS NULL THEN PERFORM raise_null_argument('record_train_event', 'activity_type'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('record_train_event', 'ts'); END IF;
    IF p_activity NOT IN (0, 1) THEN
        RAISE EXCEPTION 'record_train_event: activity_type must be 0 (arrival) or 1 (departure), got %', p_activity
            USING ERRCODE = 'MT005';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM trains t WHERE t.train_id = p_train) THEN
        RAISE EXCEPTION 'Unknown train: %', p_train
            USING ERRCODE = 'MT002', DETAIL = format('No row in metro.trains has train_id %s.', p_train),
                  HINT = 'Load the trains first: loader data/trains.csv';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = p_station) THEN
        PERFORM raise_unknown_station(p_station);
    END IF;

    IF p_activity = 1 THEN
        SELECT greatest(max(te.ts), p_ts - (SELECT max_wait FROM settings)) INTO v_since
        FROM train_events te
        WHERE te.station_id = p_station AND te.activity_type = 1 AND te.ts < p_ts;
        -- One-second buckets: a bucket belongs to the first departure at or
        -- after its start, so consecutive departures never count it twice.
        SELECT coalesce(sum(sl.accepted), 0),
               coalesce(sum(sl.accepted * extract(epoch FROM p_ts - sl.second_start)), 0)
        INTO v_riders, v_wait
        FROM station_second_slots sl
        WHERE sl.station_id = p_station
          AND sl.second_start > date_trunc('second', v_since)
          AND sl.second_start <= p_ts;
        INSERT INTO station_departures (station_id, train_id, ts, riders, wait_seconds)
        VALUES (p_station, p_train, p_ts, v_riders, v_wait);
    END IF;
    INSERT INTO train_events (train_id, station_id, activity_type, ts)
    VALUES (p_train, p_station, p_activity, p_ts);
END
$$;
COMMENT ON FUNCTION record_train_event(integer, integer, integer, timestamptz) IS 'Records a train arrival (0) or departure (1); a departure writes a station_departures row with the riders that waited for it. MT004 NULL argument, MT005 activity_type not 0 or 1, MT002 unknown train, MT001 unknown station';
REVOKE ALL ON FUNCTION record_train_event(integer, integer, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION record_train_event(integer, integer, integer, timestamptz)
    TO metro_app, metro_bridge;

RESET search_path;
SET search_path = metro, pg_catalog;
