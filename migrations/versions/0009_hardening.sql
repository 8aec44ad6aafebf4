-- Revision 0009 (frozen): hardening. No client can bend a decision, stall
-- delivery or crash a tool:
-- - time: settings.max_clock_skew; role metro_replay (the bridge is a member);
--   checked_ts() at the top of every writing function: MT009 a ts infinite or
--   outside [2000-01-01, 2200-01-01), MT010 further than max_clock_skew from
--   now() for a caller not in metro_replay; process_exit closes each accepted
--   entry once, whatever order exits arrive in;
-- - the bridge lease is a row of bridge_state taken and renewed through
--   functions only metro_bridge may execute (no advisory lock any role could
--   hold); bridge_ack refuses a bridge that lost it (MT012); bridge_horizon()
--   names the transaction holding delivery back;
-- - bridge_outbound_dead_letters: rows Kafka refuses, set aside so their
--   stream moves on; card name, phone and e-mail bounded (200/40/320);
-- - roles: metro_bridge reads the streams and writes through its functions,
--   no function executable by PUBLIC;
-- - payments: a transaction_id reused with another account or amount is
--   refused (MT011); ids of only whitespace, control or zero-width characters
--   are MT007.
-- - order per key: bridge_batch returns rows in position order, with the
--   earlier rows of the same keys beyond the batch (ahead); every stream gets
--   a (key, position) index.
-- Functions of procedures/gates.sql, recharge.sql and trains.sql are patched
-- in place (one check each), so this revision keeps whatever else an earlier
-- revision put in their bodies.
SET search_path = metro, pg_catalog;

-- roles
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['metro_app', 'metro_reader', 'metro_bridge', 'metro_replay'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            -- Roles are shared by the cluster: commented once, when created.
            EXECUTE format('COMMENT ON ROLE %I IS %L', r, CASE r
                WHEN 'metro_app' THEN 'metro: calls the decision functions; ts within settings.max_clock_skew of now()'
                WHEN 'metro_reader' THEN 'metro: reads the views and bridge_lag()'
                WHEN 'metro_bridge' THEN 'metro: the bridge: reads the streams, holds the lease, acknowledges through its functions; applies inbound topics'
                ELSE 'metro: may pass any ts in [2000-01-01, 2200-01-01) to the functions its other roles can call (simulations, backfills)' END);
        END IF;
    END LOOP;
END
$$;
GRANT metro_replay TO metro_bridge;

-- settings
ALTER TABLE settings
    ADD COLUMN max_clock_skew interval NOT NULL DEFAULT '10 minutes' CHECK (max_clock_skew >= interval '0');
COMMENT ON COLUMN settings.max_clock_skew IS 'How far from now() a metro_app caller may pass ts (turnstiles that store and forward); metro_replay members may pass any valid ts';

-- cards: bounded holder details. Longer values are cut, with a NOTICE.
CREATE DOMAIN card_name AS text
    CONSTRAINT card_name_at_most_200_characters CHECK (length(VALUE) <= 200);
COMMENT ON DOMAIN card_name IS 'Card holder name, at most 200 characters';
CREATE DOMAIN card_phone AS text
    CONSTRAINT card_phone_at_most_40_characters CHECK (length(VALUE) <= 40);
COMMENT ON DOMAIN card_phone IS 'Card holder phone, at most 40 characters';
CREATE DOMAIN card_email AS text
    CONSTRAINT card_email_at_most_320_characters CHECK (length(VALUE) <= 320);
COMMENT ON DOMAIN card_email IS 'Card holder e-mail, at most 320 characters';
DO $$
DECLARE
    n bigint;
BEGIN
    UPDATE cards SET name = left(name, 200), phone = left(phone, 40), email = left(email, 320)
    WHERE length(name) > 200 OR length(phone) > 40 OR length(email) > 320;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        RAISE NOTICE 'cut the name, phone or e-mail of % cards to 200, 40 and 320 characters', n;
    END IF;
END
$$;
ALTER TABLE cards ALTER COLUMN name TYPE card_name, ALTER COLUMN phone TYPE card_phone,
    ALTER COLUMN email TYPE card_email;

-- error codes
UPDATE error_codes SET meaning = 'A payment transaction_id that is empty, only whitespace, control or zero-width characters, or over 200 characters'
WHERE sqlstate = 'MT007';
INSERT INTO error_codes (sqlstate, name, meaning, row_level) VALUES
    ('MT009', 'invalid_timestamp', 'A ts that is infinite or outside [2000-01-01, 2200-01-01) UTC, from any caller', true),
    ('MT010', 'timestamp_outside_clock_skew', 'A ts further than settings.max_clock_skew from now() passed by a caller that is not a member of metro_replay', true),
    ('MT011', 'transaction_id_reused', 'A payment transaction_id already decided for another account or amount', true),
    ('MT012', 'bridge_lease_not_held', 'A bridge function that moves the outbound cursor called by a session that does not hold the bridge lease (another bridge took it over)', false);

-- bridge state: the lease
ALTER TABLE bridge_state ADD COLUMN lease_pid integer, ADD COLUMN lease_backend_start timestamptz,
    ADD COLUMN lease_expires timestamptz;
COMMENT ON TABLE bridge_state IS 'The bridge lease (holder, its backend and expiry; taken and renewed only through bridge_take_lease and bridge_renew_lease) and the last error, for metro bridge --status';
COMMENT ON COLUMN bridge_state.lease_pid IS 'Backend process id of the session holding the lease (NULL: released)';
COMMENT ON COLUMN bridge_state.lease_backend_start IS 'Start time of that backend, so a reused process id is not mistaken for the holder';
COMMENT ON COLUMN bridge_state.lease_expires IS 'The lease is stale after this unless renewed; a stale lease, or one whose backend is gone, is taken over';

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

-- bridge_batch returns whether a row is sent ahead of the cursor.
DROP FUNCTION bridge_batch(text, xid8, bigint, integer);

-- grants: metro_bridge reads; it writes through its functions, except its
-- inbound bookkeeping.
REVOKE INSERT, UPDATE, DELETE ON bridge_cursors, bridge_state FROM metro_bridge;
REVOKE ALL ON bridge_acks FROM metro_bridge;
REVOKE DELETE ON bridge_inbound_offsets, bridge_dead_letters FROM metro_bridge;
GRANT SELECT ON bridge_outbound_dead_letters TO metro_bridge;
DO $$
DECLARE
    s text;
BEGIN
    FOR s IN SELECT stream FROM streams ORDER BY stream LOOP
        EXECUTE format('REVOKE DELETE ON %I FROM metro_bridge', s);
    END LOOP;
END
$$;

-- procedures/support.sql as of this revision (its trigger exists already)

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


-- Time. A caller passes ts to replay its own clock. Whoever calls, ts must be
-- finite and in [2000-01-01, 2200-01-01) UTC (MT009). A metro_app caller may
-- pass a ts only within settings.max_clock_skew of now() (turnstiles that
-- store and forward); members of metro_replay may pass any valid ts
-- (simulations, backfills, the bridge applying inbound topics), and so may the
-- schema's owner and superusers (loader, producers, tests). The functions are
-- SECURITY DEFINER, so the caller is session_user, the role that logged in
-- (or that SET SESSION AUTHORIZATION chose): SET ROLE cannot widen it.

-- Whether the session's login role may pass any valid ts.
CREATE OR REPLACE FUNCTION replay_caller()
RETURNS boolean LANGUAGE sql STABLE SET search_path = metro, pg_temp AS $$
    SELECT pg_has_role(session_user, 'metro_replay', 'MEMBER')
        OR pg_has_role(session_user, n.nspowner, 'MEMBER')
    FROM pg_namespace n WHERE n.nspname = 'metro'
$$;
COMMENT ON FUNCTION replay_caller() IS 'Whether session_user may pass any valid ts: a member of metro_replay, of the schema''s owner, or a superuser';

-- Refuses, before anything is written, a ts the caller may not pass: MT009
-- for an infinite ts or one outside [2000-01-01, 2200-01-01) UTC, MT010 for a
-- ts further than settings.max_clock_skew from now() from a caller that is
-- not replay_caller(). NULL passes (the callers raise MT004 for it). ts =
-- now(), the default, costs no read of settings.
CREATE OR REPLACE FUNCTION checked_ts(function_name text, argument text, ts timestamptz)
RETURNS void LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    v_skew interval;
BEGIN
    IF ts IS NULL THEN
        RETURN;
    END IF;
    IF isfinite(ts) AND ts >= timestamptz '2000-01-01 00:00:00+00'
       AND ts < timestamptz '2200-01-01 00:00:00+00' THEN
        IF ts = now() THEN
            RETURN;
        END IF;
        SELECT s.max_clock_skew INTO v_skew FROM settings s;
        IF ts BETWEEN now() - v_skew AND now() + v_skew OR replay_caller() THEN
            RETURN;
        END IF;
        RAISE EXCEPTION '%: % % is more than % away from the server''s clock (%)',
            function_name, argument, ts, v_skew, now()
            USING ERRCODE = 'MT010',
                  DETAIL = format('Role %s may pass a ts only within settings.max_clock_skew of now(); it is not a member of metro_replay.', session_user),
                  HINT = 'Omit ts to use now(), fix the client''s clock, or run simulations and backfills as a member of metro_replay.';
    END IF;
    RAISE EXCEPTION '%: % must be a finite time from 2000-01-01 up to 2200-01-01 UTC, got %',
        function_name, argument, ts
        USING ERRCODE = 'MT009',
              HINT = 'Pass the time the event happened (timestamptz, e.g. 2026-11-02 08:00:00+00), or omit ts to use now().';
END
$$;
COMMENT ON FUNCTION checked_ts(text, text, timestamptz) IS 'Refuses a ts the caller may not pass: MT009 infinite or outside [2000-01-01, 2200-01-01), MT010 further than settings.max_clock_skew from now() for a caller not in metro_replay; NULL passes';

-- The ordinal of the first element of a batch's ts array that checked_ts
-- would refuse, NULL when none (NULL elements mean now() and pass). One
-- set-wise statement for the common case of a batch within the skew.
CREATE OR REPLACE FUNCTION ts_array_refusal(ts timestamptz[])
RETURNS integer LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    v_skew interval := (SELECT s.max_clock_skew FROM settings s);
    v_first integer;
BEGIN
    IF ts IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT min(u.n) INTO v_first FROM unnest(ts) WITH ORDINALITY u(t, n)
    WHERE NOT (isfinite(u.t) AND u.t >= timestamptz '2000-01-01 00:00:00+00'
               AND u.t < timestamptz '2200-01-01 00:00:00+00'
               AND u.t BETWEEN now() - v_skew AND now() + v_skew);
    IF v_first IS NULL OR NOT replay_caller() THEN
        RETURN v_first;
    END IF;
    SELECT min(u.n) INTO v_first FROM unnest(ts) WITH ORDINALITY u(t, n)
    WHERE NOT (isfinite(u.t) AND u.t >= timestamptz '2000-01-01 00:00:00+00'
               AND u.t < timestamptz '2200-01-01 00:00:00+00');
    RETURN v_first;
END
$$;
COMMENT ON FUNCTION ts_array_refusal(timestamptz[]) IS 'Ordinal of the first element of a ts array that checked_ts refuses (NULL: none; NULL elements pass)';

-- checked_ts for the first refused element of a batch's ts array, named ts[i].
CREATE OR REPLACE FUNCTION checked_ts_array(function_name text, ts timestamptz[])
RETURNS void LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    v_first integer := ts_array_refusal(ts);
BEGIN
    IF v_first IS NOT NULL THEN
        PERFORM checked_ts(function_name, format('ts[%s]', v_first), ts[v_first]);
    END IF;
END
$$;
COMMENT ON FUNCTION checked_ts_array(text, timestamptz[]) IS 'checked_ts for the first refused element of a ts array (MT009 or MT010 naming ts[i])';

-- grants: every function above is private to the schema's owner.
REVOKE ALL ON FUNCTION raise_null_argument(text, text), raise_unknown_station(integer),
    cents_text(bigint), fraud_trans_id(bigint, timestamptz), settings_keep_row(),
    replay_caller(), checked_ts(text, text, timestamptz), ts_array_refusal(timestamptz[]),
    checked_ts_array(text, timestamptz[])
    FROM PUBLIC;

-- procedures/bridge.sql as of this revision

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
-- reads by, the (key, position) index that keeps a key's rows in order, the
-- NOTIFY trigger and the bridge's grants. The one step that
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
    -- bridge_batch finds the earlier rows of a key through it.
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (%I, position)',
                   p_stream || '_key_position', p_stream, key_column);
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', p_stream || '_notify_bridge', p_stream);
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION notify_bridge()',
                   p_stream || '_notify_bridge', p_stream);
    -- The bridge reads a stream; it deletes delivered rows only through
    -- bridge_prune().
    EXECUTE format('GRANT SELECT ON %I TO metro_bridge', p_stream);
END
$$;
COMMENT ON FUNCTION register_stream(text, text, text, text) IS 'Makes a table of schema metro a stream forwarded to Kafka: its row in streams (topic, key column, time column), bridge cursor, (txid, position) and (key, position) indexes, NOTIFY trigger and SELECT for metro_bridge; 42P01 no such table, 42703 a column missing';

-- The bridge's reads, for every registered stream: the next rows after
-- (after_txid, after_position) in (txid, position) order, only from
-- transactions below the snapshot's xmin: those have all ended, so no row can
-- later appear before the last one returned; the cursor moves to the last of
-- them (ahead false). Kafka must see a key's rows in commit order, which is
-- their position order (writers of one key are serialized: a card's row
-- lock, a payment's risk_decisions row); transaction ids are taken at a
-- transaction's first write, so a transaction that waited for a card's lock
-- can hold a smaller txid than the one it waited for. So the rows of the
-- same keys with a smaller position that lie beyond the batch are returned
-- too (ahead true: committed, sent before their successors, delivered again
-- when the cursor reaches them), and everything comes in position order.
-- value is the stream row without position and txid, columns in table
-- order, timestamps in UTC; key is its key_column.
CREATE OR REPLACE FUNCTION bridge_batch(stream text, after_txid xid8, after_position bigint, max_rows integer)
RETURNS TABLE (row_txid xid8, row_position bigint, key text, value text, ahead boolean)
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
        'WITH batch AS MATERIALIZED ('
        '    SELECT s.txid, s.position, s.%1$I AS k FROM %2$I s'
        '    WHERE (s.txid, s.position) > ($1, $2) AND s.txid < $3'
        '    ORDER BY s.txid, s.position LIMIT $4'
        '), last AS ('
        '    SELECT b.txid, b.position FROM batch b ORDER BY b.txid DESC, b.position DESC LIMIT 1'
        '), earlier AS ('
        -- One (key, position) index range per key of the batch: OFFSET 0 keeps the
        -- planner from turning the lookup into a hash join over the whole stream.
        '    SELECT e.txid, e.position FROM (SELECT b.k, max(b.position) AS p FROM batch b'
        '                                    GROUP BY b.k) keys'
        '    CROSS JOIN last'
        '    CROSS JOIN LATERAL (SELECT s.txid, s.position FROM %2$I s'
        '                        WHERE s.%1$I = keys.k AND s.position < keys.p'
        '                          AND (s.txid, s.position) > (last.txid, last.position)'
        '                        OFFSET 0) e'
        '), picked AS ('
        '    SELECT b.txid, b.position, false AS ahead FROM batch b'
        '    UNION ALL SELECT e.txid, e.position, true FROM earlier e'
        ')'
        ' SELECT s.txid, s.position, s.%1$I::text, row_to_json(v)::text, p.ahead'
        ' FROM picked p CROSS JOIN LATERAL (SELECT * FROM %2$I r'
        '     WHERE (r.txid, r.position) = (p.txid, p.position) OFFSET 0) s'
        ' CROSS JOIN LATERAL (SELECT %3$s) v'
        ' ORDER BY s.position', v_key, stream, v_columns)
        USING after_txid, after_position, horizon, max_rows;
END
$$;
COMMENT ON FUNCTION bridge_batch(text, xid8, bigint, integer) IS 'The next rows of a stream after (after_txid, after_position) in (txid, position) order and below the commit horizon, with the rows of the same keys and a smaller position beyond them (ahead), all in position order: (row_txid, row_position, key, value, ahead), the Kafka key and the row as JSON; MT005 unknown stream';

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

-- The lease: only one bridge sends. It is a row of bridge_state (holder,
-- backend pid and start, expiry), taken, renewed and released only through
-- these functions, which only metro_bridge may execute: no other role can
-- hold it (an advisory lock could be taken by any role). A lease is stale
-- when its expiry passed or its backend is gone (pg_stat_activity); a stale
-- lease is taken over. A bridge that lost its lease is refused (MT012) when it
-- tries to move a cursor.

-- Whether the lease is held by a live session other than this one.
CREATE OR REPLACE FUNCTION bridge_lease_held_elsewhere()
RETURNS boolean LANGUAGE sql STABLE SET search_path = metro, pg_temp AS $$
    SELECT s.lease_pid IS NOT NULL AND s.lease_pid <> pg_backend_pid()
           AND s.lease_expires > clock_timestamp()
           AND EXISTS (SELECT FROM pg_stat_activity a
                       WHERE a.pid = s.lease_pid
                         AND (a.backend_start IS NULL OR s.lease_backend_start IS NULL
                              OR a.backend_start = s.lease_backend_start))
    FROM bridge_state s
$$;
COMMENT ON FUNCTION bridge_lease_held_elsewhere() IS 'Whether another live session holds a lease that has not expired';

-- Takes the lease for holder (host:pid) when it is free, stale or already
-- this session's; true when this session holds it afterwards. ttl: how long
-- it lasts without bridge_renew_lease().
CREATE OR REPLACE FUNCTION bridge_take_lease(holder text, ttl interval)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_holder ALIAS FOR $1;
BEGIN
    IF p_holder IS NULL THEN PERFORM raise_null_argument('bridge_take_lease', 'holder'); END IF;
    IF ttl IS NULL THEN PERFORM raise_null_argument('bridge_take_lease', 'ttl'); END IF;
    IF ttl <= interval '0' OR ttl > interval '1 hour' THEN
        RAISE EXCEPTION 'bridge_take_lease: ttl must be above 0 and at most 1 hour, got %', ttl
            USING ERRCODE = '22023', HINT = 'The bridge renews its lease every few seconds: 30 seconds is plenty.';
    END IF;
    PERFORM FROM bridge_state FOR UPDATE;
    IF bridge_lease_held_elsewhere() THEN
        RETURN false;
    END IF;
    UPDATE bridge_state s
    SET holder = left(p_holder, 200),
        since = CASE WHEN s.lease_pid = pg_backend_pid() THEN s.since ELSE now() END,
        heartbeat_at = now(), lease_pid = pg_backend_pid(),
        lease_backend_start = (SELECT a.backend_start FROM pg_stat_activity a
                               WHERE a.pid = pg_backend_pid()),
        lease_expires = clock_timestamp() + ttl;
    RETURN true;
END
$$;
COMMENT ON FUNCTION bridge_take_lease(text, interval) IS 'Takes the bridge lease for holder when it is free, stale (expired, or its backend gone) or already this session''s; true when this session holds it';

-- Extends this session's lease by ttl; false when it no longer holds it.
CREATE OR REPLACE FUNCTION bridge_renew_lease(ttl interval)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
BEGIN
    IF ttl IS NULL OR ttl <= interval '0' OR ttl > interval '1 hour' THEN
        RAISE EXCEPTION 'bridge_renew_lease: ttl must be above 0 and at most 1 hour, got %', ttl
            USING ERRCODE = '22023', HINT = 'The bridge renews its lease every few seconds: 30 seconds is plenty.';
    END IF;
    UPDATE bridge_state s SET heartbeat_at = now(), lease_expires = clock_timestamp() + ttl
    WHERE s.lease_pid = pg_backend_pid();
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION bridge_renew_lease(interval) IS 'Extends this session''s bridge lease by ttl and records a heartbeat; false when another bridge took it over';

-- Gives the lease up (a stopping bridge); the holder stays as the last one.
CREATE OR REPLACE FUNCTION bridge_release_lease()
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
BEGIN
    UPDATE bridge_state s SET lease_pid = NULL, lease_backend_start = NULL, lease_expires = NULL
    WHERE s.lease_pid = pg_backend_pid();
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION bridge_release_lease() IS 'Releases this session''s bridge lease; false when it did not hold it';

-- Records the bridge's last error, for metro bridge --status.
CREATE OR REPLACE FUNCTION bridge_report_error(message text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
BEGIN
    UPDATE bridge_state SET last_error = left(coalesce(message, '(no message)'), 1000),
                            last_error_at = now();
END
$$;
COMMENT ON FUNCTION bridge_report_error(text) IS 'Records the bridge''s last error (cut at 1,000 characters) and its time in bridge_state';

-- Refuses (MT012) a session that would move a cursor while another live
-- session holds the lease.
CREATE OR REPLACE FUNCTION bridge_check_lease(function_name text)
RETURNS void LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
BEGIN
    IF bridge_lease_held_elsewhere() THEN
        RAISE EXCEPTION '%: another bridge holds the lease (%)', function_name,
            (SELECT s.holder FROM bridge_state s)
            USING ERRCODE = 'MT012',
                  HINT = 'This bridge lost its lease (it stalled past the lease''s expiry); it must take the lease again before sending.';
    END IF;
END
$$;
COMMENT ON FUNCTION bridge_check_lease(text) IS 'Raises MT012 when another live session holds the bridge lease';

-- Records that Kafka acknowledged a stream up to (last_txid, last_position).
-- The cursor only moves forward; a stale bridge cannot move it back, and a
-- bridge whose lease another one took over is refused (MT012).
CREATE OR REPLACE FUNCTION bridge_ack(stream text, last_txid xid8, last_position bigint, rows_acked bigint)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_stream ALIAS FOR $1;
BEGIN
    PERFORM bridge_stream_key(p_stream);
    PERFORM bridge_check_lease('bridge_ack');
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
COMMENT ON FUNCTION bridge_ack(text, xid8, bigint, bigint) IS 'Records that Kafka acknowledged a stream up to (last_txid, last_position); moves the cursor forward only and returns whether it moved; MT005 unknown stream, MT012 another bridge holds the lease';

-- Sets aside a stream row Kafka refused (too large, invalid), so its stream
-- moves on; the caller acknowledges the batch in the same transaction.
CREATE OR REPLACE FUNCTION bridge_outbound_dead_letter(stream text, row_txid xid8, row_position bigint,
                                                       key text, value text, reason text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_stream ALIAS FOR $1;
BEGIN
    PERFORM bridge_stream_key(p_stream);
    PERFORM bridge_check_lease('bridge_outbound_dead_letter');
    INSERT INTO bridge_outbound_dead_letters (stream, position, txid, key, value, reason)
    VALUES (p_stream, row_position, row_txid, key, value,
            left(coalesce(reason, '(no reason)'), 1000))
    ON CONFLICT ON CONSTRAINT bridge_outbound_dead_letters_stream_position_key DO NOTHING;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION bridge_outbound_dead_letter(text, xid8, bigint, text, text, text) IS 'Records a stream row Kafka refused in bridge_outbound_dead_letters (once per stream and position); MT005 unknown stream, MT012 another bridge holds the lease';

-- The oldest running transaction with a transaction id, in any database of
-- the cluster, or prepared: it holds the commit horizon, so no stream row
-- written after it started is delivered before it ends. For --status.
CREATE OR REPLACE FUNCTION bridge_horizon()
RETURNS TABLE (pid integer, role text, database text, application_name text, state text,
               xact_start timestamptz, xact_age interval, backend_xid xid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = metro, pg_temp AS $$
    SELECT h.pid, h.role, h.database, h.application_name, h.state, h.xact_start,
           clock_timestamp() - h.xact_start, h.backend_xid
    FROM (SELECT a.pid, a.usename::text AS role, a.datname::text AS database,
                 a.application_name, a.state, a.xact_start, a.backend_xid
          FROM pg_stat_activity a
          WHERE a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid()
          UNION ALL
          SELECT NULL, p.owner::text, p.database::text, 'prepared transaction ' || p.gid,
                 'prepared', p.prepared, p.transaction
          FROM pg_prepared_xacts p) h
    ORDER BY age(h.backend_xid) DESC
    LIMIT 1
$$;
COMMENT ON FUNCTION bridge_horizon() IS 'The oldest running or prepared transaction holding a transaction id (pid, role, database, application_name, state, xact_start, xact_age, backend_xid): stream rows of later transactions wait until it ends; no row when none runs';

-- Deletes delivered rows acknowledged more than retention ago, at most
-- max_rows per stream per call, and the cursor history they no longer need.
CREATE OR REPLACE FUNCTION bridge_prune(retention interval, max_rows integer)
RETURNS TABLE (stream text, pruned bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
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
            -- Through the (txid, position) index: a stream's key starts with its card.
            EXECUTE format('DELETE FROM %I WHERE (txid, position) IN (SELECT txid, position'
                           ' FROM %I WHERE (txid, position) <= ($1, $2)'
                           ' ORDER BY txid, position LIMIT $3)',
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
-- SECURITY DEFINER: metro_reader sees how far each stream is, never a stream row.
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = metro, pg_temp AS $$
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
REVOKE ALL ON FUNCTION notify_bridge(), register_stream(text, text, text, text),
    bridge_batch(text, xid8, bigint, integer),
    bridge_has_rows(text, xid8, bigint), bridge_stream_key(text),
    bridge_lease_held_elsewhere(), bridge_take_lease(text, interval), bridge_renew_lease(interval),
    bridge_release_lease(), bridge_report_error(text), bridge_check_lease(text),
    bridge_ack(text, xid8, bigint, bigint),
    bridge_outbound_dead_letter(text, xid8, bigint, text, text, text), bridge_horizon(),
    bridge_prune(interval, integer), bridge_lag()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bridge_batch(text, xid8, bigint, integer),
    bridge_has_rows(text, xid8, bigint), bridge_stream_key(text),
    bridge_take_lease(text, interval), bridge_renew_lease(interval), bridge_release_lease(),
    bridge_report_error(text), bridge_ack(text, xid8, bigint, bigint),
    bridge_outbound_dead_letter(text, xid8, bigint, text, text, text), bridge_horizon(),
    bridge_prune(interval, integer), bridge_lag()
    TO metro_bridge;
GRANT EXECUTE ON FUNCTION bridge_lag(), bridge_horizon() TO metro_reader;

-- every stream gets its (key, position) index
SELECT register_stream(s.stream, s.topic, s.key_column, s.time_column) FROM streams s ORDER BY s.stream;

-- procedures/risk.sql as of this revision

-- functions

-- Why evaluate_transaction refuses a payment's arguments, checked in this
-- order: (MT004, the NULL argument's name), (MT007, 'transaction_id') for a
-- transaction_id that is empty, made only of whitespace, control or
-- zero-width (invisible formatting) characters, or too long, (MT003, 'amount') for an amount
-- that is not positive, has more than two decimals or is 10^12 or more; one
-- row (NULL, NULL) when they are fine. ts is not checked here: the batch
-- reads a NULL ts as now(). Inlined, so it names nothing unqualified.
CREATE OR REPLACE FUNCTION payment_refusal(transaction_id text, account_id text, amount numeric)
RETURNS TABLE (sqlstate text, argument text) LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN $1 IS NULL OR $2 IS NULL OR $3 IS NULL THEN 'MT004'
                WHEN $1 ~ '^[\s\x01-\x1f\x7f-\x9f\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0]*$'
                     OR length($1) > 200 THEN 'MT007'
                WHEN $3 <= 0 OR $3 <> round($3, 2) OR $3 >= 1e12 THEN 'MT003' END,
           CASE WHEN $1 IS NULL THEN 'transaction_id'
                WHEN $2 IS NULL THEN 'account_id'
                WHEN $3 IS NULL THEN 'amount'
                WHEN $1 ~ '^[\s\x01-\x1f\x7f-\x9f\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0]*$'
                     OR length($1) > 200 THEN 'transaction_id'
                WHEN $3 <= 0 OR $3 <> round($3, 2) OR $3 >= 1e12 THEN 'amount' END
$$;
COMMENT ON FUNCTION payment_refusal(text, text, numeric) IS 'Why a payment''s arguments are refused: (MT004, argument) NULL, (MT007, transaction_id) empty, only whitespace, control or zero-width characters, or too long, (MT003, amount) not positive, over two decimals or too large; (NULL, NULL) when fine. Inlined into evaluate_transaction and evaluate_transactions';

-- The rule deciding a payment of amount (currency units) from account_id:
-- the first, in rule_order, whose amount range holds the amount and whose
-- minimum level the account's tag reaches (no tag: level 1). One row; rule
-- NULL when no rule matches (the callers raise MT008). Inlined, so it names
-- its tables in full.
CREATE OR REPLACE FUNCTION risk_rule(account_id text, amount numeric)
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
COMMENT ON FUNCTION risk_rule(text, numeric) IS 'The risk rule deciding a payment: the account''s level (1 without a tag), blocked, rule and message of the first matching rule in rule_order (rule NULL when none matches); inlined into evaluate_transaction(s) and recharge_card';

-- Raises MT008: no rule of risk_rules covers the payment.
CREATE OR REPLACE FUNCTION raise_no_risk_rule(account_id text, amount numeric, risk_level smallint)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'No risk rule covers amount % for account % (risk level %)',
        amount, account_id, risk_level
        USING ERRCODE = 'MT008',
              HINT = 'Keep a last rule with amount_range ''(,)'' and min_risk_level 1 in metro.risk_rules.';
END
$$;
COMMENT ON FUNCTION raise_no_risk_rule(text, numeric, smallint) IS 'Raises MT008 naming the amount, the account and its risk level';

-- Raises MT011: transaction_id was decided before for another account or
-- amount. The message names what this call passed, not what was recorded
-- (another payment's details are not the caller's to learn).
CREATE OR REPLACE FUNCTION raise_transaction_id_reused(transaction_id text, account_id text, amount numeric)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'transaction_id % was already used for another payment: account % and amount % differ from the recorded ones',
        quote_literal(left(transaction_id, 40)), account_id, amount
        USING ERRCODE = 'MT011',
              HINT = 'A transaction_id names one payment: repeat it only with the same account_id and amount (to get the recorded decision back), and give a new payment a new transaction_id.';
END
$$;
COMMENT ON FUNCTION raise_transaction_id_reused(text, text, numeric) IS 'Raises MT011 naming the transaction_id and the account and amount passed';

-- Decides a payment with the risk rules and records the decision once:
-- a transaction_id seen before gets its recorded decision back and nothing
-- is written. A new decision is also written to the transaction_decisions
-- stream. Bad arguments raise MT003/MT004/MT007 and write nothing.
CREATE OR REPLACE FUNCTION evaluate_transaction(transaction_id text, account_id text, amount numeric,
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
    d record;
BEGIN
    SELECT * INTO refusal FROM payment_refusal(p_transaction, p_account, p_amount);
    IF refusal.sqlstate = 'MT004' THEN
        PERFORM raise_null_argument('evaluate_transaction', refusal.argument);
    END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('evaluate_transaction', 'ts'); END IF;
    IF refusal.sqlstate = 'MT007' THEN
        RAISE EXCEPTION 'Invalid transaction_id: %', quote_literal(left(p_transaction, 40))
            USING ERRCODE = 'MT007',
                  HINT = 'A transaction_id is 1 to 200 characters, not only spaces, control or zero-width characters.';
    ELSIF refusal.sqlstate = 'MT003' THEN
        RAISE EXCEPTION 'Transaction amount must be positive, below 1,000,000,000,000, with at most two decimals: %', p_amount
            USING ERRCODE = 'MT003', HINT = 'Amounts are currency units with cents: 5000.01.';
    END IF;

    PERFORM checked_ts('evaluate_transaction', 'ts', p_ts);

    SELECT r.blocked, r.rule, r.message, r.account_id, r.amount INTO d
    FROM risk_decisions r WHERE r.transaction_id = p_transaction;
    IF FOUND THEN
        IF d.account_id <> p_account OR d.amount <> p_amount THEN
            PERFORM raise_transaction_id_reused(p_transaction, p_account, p_amount);
        END IF;
        RETURN ROW(d.blocked, d.rule, d.message)::risk_verdict;
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
        SELECT r.blocked, r.rule, r.message, r.account_id, r.amount INTO d
        FROM risk_decisions r WHERE r.transaction_id = p_transaction;
        IF d.account_id <> p_account OR d.amount <> p_amount THEN
            PERFORM raise_transaction_id_reused(p_transaction, p_account, p_amount);
        END IF;
        RETURN ROW(d.blocked, d.rule, d.message)::risk_verdict;
    END IF;
    INSERT INTO transaction_decisions (transaction_id, account_id, amount, ts, risk_level, blocked, rule, message)
    VALUES (p_transaction, p_account, p_amount, p_ts, m.risk_level, m.blocked, m.rule, m.message);
    RETURN ROW(m.blocked, m.rule, m.message)::risk_verdict;
END
$$;
COMMENT ON FUNCTION evaluate_transaction(text, text, numeric, timestamptz) IS 'Decides a payment with the risk rules: (blocked, rule, message), recorded once per transaction_id in risk_decisions and the transaction_decisions stream; a transaction_id seen before with the same account and amount gets its recorded decision and writes nothing. MT004 NULL argument, MT007 invalid transaction_id, MT003 invalid amount, MT009/MT010 ts refused, MT011 transaction_id reused for another account or amount, MT008 no rule covers it';
REVOKE ALL ON FUNCTION evaluate_transaction(text, text, numeric, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evaluate_transaction(text, text, numeric, timestamptz)
    TO metro_app, metro_bridge;

-- Decides payments i = 1..n (transaction_ids[i], account_ids[i], amounts[i],
-- ts[i]) and returns one row per input position, in input order: what
-- evaluate_transaction would return for it, called one by one. A
-- transaction_id decided before gets its recorded decision and writes nothing;
-- a transaction_id repeated within the batch is decided by its first
-- occurrence and the later ones get that decision. ts NULL, or a NULL element,
-- means now(). Arrays of different lengths raise 22023. When any payment would
-- be refused (MT003, MT004, MT007, MT008, MT009, MT010, MT011), the batch is decided by
-- evaluate_transaction one payment at a time, so the caller gets exactly the
-- error of the first refused payment, and the whole call writes nothing.
CREATE OR REPLACE FUNCTION evaluate_transactions(transaction_ids text[], account_ids text[],
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
        UNION ALL
        -- A ts the caller may not pass (MT009, MT010).
        SELECT WHERE ts_array_refusal(ts) IS NOT NULL
        UNION ALL
        -- A transaction_id reused with another account or amount (MT011):
        -- against the recorded decision, or within the batch.
        SELECT FROM payments p JOIN risk_decisions d ON d.transaction_id = p.transaction_id
        WHERE d.account_id <> p.account_id OR d.amount <> p.amount
        UNION ALL
        SELECT FROM (SELECT p.account_id, p.amount,
                            first_value(p.account_id) OVER w AS first_account,
                            first_value(p.amount) OVER w AS first_amount
                     FROM payments p
                     WINDOW w AS (PARTITION BY p.transaction_id ORDER BY p.n)) x
        WHERE x.account_id IS DISTINCT FROM x.first_account
           OR x.amount IS DISTINCT FROM x.first_amount
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
COMMENT ON FUNCTION evaluate_transactions(text[], text[], numeric[], timestamptz[]) IS 'Decides a batch of payments set-wise: (ordinal, blocked, rule, message) per input position, exactly what evaluate_transaction called in input order gives; ts NULL or a NULL element means now(). 22023 arrays of different lengths; a refused payment raises the error a one-by-one caller gets first, and nothing is written';

-- grants
REVOKE ALL ON FUNCTION payment_refusal(text, text, numeric), risk_rule(text, numeric),
    raise_no_risk_rule(text, numeric, smallint), raise_transaction_id_reused(text, text, numeric)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION evaluate_transactions(text[], text[], numeric[], timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evaluate_transactions(text[], text[], numeric[], timestamptz[])
    TO metro_app, metro_bridge;

-- The functions of gates.sql, recharge.sql and trains.sql, patched in place:
-- each takes its ts check after its NULL checks; process_exit closes each
-- accepted entry once. A body without the expected line stops the upgrade.
DO $$
DECLARE
    patch record;
    def text;
BEGIN
    FOR patch IN SELECT * FROM (VALUES
        ('validate_entry(bigint, integer, timestamptz)',
         E'    IF p_ts IS NULL THEN PERFORM raise_null_argument(''validate_entry'', ''ts''); END IF;\n',
         E'    PERFORM checked_ts(''validate_entry'', ''ts'', p_ts);\n'),
        ('validate_entries(bigint[], integer[], timestamptz[])',
         E'    IF station_ids IS NULL THEN PERFORM raise_null_argument(''validate_entries'', ''station_ids''); END IF;\n',
         E'    PERFORM checked_ts_array(''validate_entries'', ts);\n'),
        ('process_exit(bigint, integer, timestamptz)',
         E'    IF p_ts IS NULL THEN PERFORM raise_null_argument(''process_exit'', ''ts''); END IF;\n',
         E'    PERFORM checked_ts(''process_exit'', ''ts'', p_ts);\n'),
        ('recharge_card(bigint, integer, integer, timestamptz)',
         E'    IF p_ts IS NULL THEN PERFORM raise_null_argument(''recharge_card'', ''ts''); END IF;\n',
         E'    PERFORM checked_ts(''recharge_card'', ''ts'', p_ts);\n'),
        ('record_train_event(integer, integer, integer, timestamptz)',
         E'    IF p_ts IS NULL THEN PERFORM raise_null_argument(''record_train_event'', ''ts''); END IF;\n',
         E'    PERFORM checked_ts(''record_train_event'', ''ts'', p_ts);\n')
    ) AS p(function, anchor, addition) LOOP
        def := pg_get_functiondef(('metro.' || patch.function)::regprocedure);
        IF position(patch.addition IN def) > 0 THEN
            CONTINUE;
        END IF;
        IF position(patch.anchor IN def) = 0 THEN
            RAISE EXCEPTION 'revision 0009: % lacks the line the ts check follows', patch.function;
        END IF;
        EXECUTE replace(def, patch.anchor, patch.anchor || patch.addition);
    END LOOP;

    def := pg_get_functiondef('metro.process_exit(bigint, integer, timestamptz)'::regprocedure);
    IF position('One trip per accepted entry' IN def) = 0 THEN
        IF position(E'        IF FOUND AND v_last.activity_code = 1 THEN\n            INSERT INTO trips' IN def) = 0 THEN
            RAISE EXCEPTION 'revision 0009: process_exit lacks the trip rule it replaces';
        END IF;
        EXECUTE replace(def, E'        IF FOUND AND v_last.activity_code = 1 THEN\n            INSERT INTO trips',
            E'        -- One trip per accepted entry whatever order exits arrive in: an\n'
            || E'        -- exit recorded after that entry (a later one that came first) closed it.\n'
            || E'        IF FOUND AND v_last.activity_code = 1 AND NOT EXISTS (\n'
            || E'               SELECT FROM card_events x\n'
            || E'               WHERE x.card_id = p_card AND x.ts >= v_last.ts AND x.activity_code = -1\n'
            || E'                 AND x.ts < coalesce((SELECT min(e.ts) FROM card_events e\n'
            || E'                                      WHERE e.card_id = p_card AND e.ts > v_last.ts\n'
            || E'                                        AND e.activity_code = 1 AND e.accept = 1),\n'
            || E'                                     ''infinity'')) THEN\n'
            || E'            INSERT INTO trips');
    END IF;
END
$$;

-- gates.sql's entry_outcome and every other function: not executable by PUBLIC
REVOKE ALL ON FUNCTION entry_outcome(boolean, smallint, integer, timestamptz, integer, boolean, timestamptz) FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA metro FROM PUBLIC;
