-- Revision 0019 (frozen): batch timestamps checked whatever the array's
-- shape; maintenance that does not stall the gates; a train event sent twice.
-- - validate_entries checked its ts array's refused element by subscript: an
--   array starting at another index ('[0:0]={...}') or of two dimensions
--   gave NULL, read as now(), and any ts passed (a swipe dated years back or
--   ahead, charged, recorded where the rules of other swipes see it).
--   checked_ts_array finds the element by its ordinal.
-- - Creating a partition had no lock timeout and no busy case: behind a
--   transaction reading card_events, run_maintenance() failed whole, and
--   create_partitions() called directly waited as long as the transaction,
--   every swipe queued behind it. partition_ddl() runs each CREATE and DROP
--   of a partition waiting 200 ms at most (busy: left for the next run).
-- - The same train event sent twice raised a unique violation (23505, not a
--   documented code): it is recorded once now, and one naming another
--   station is refused with MT015.
-- - card_alert_export had two indexes on (card_id, position), its primary
--   key and the stream's key index: register_stream() makes no key index
--   that an index already holds, and the second one is dropped.
SET search_path = metro, pg_catalog;

-- data
INSERT INTO error_codes (sqlstate, name, meaning, row_level) VALUES
    ('MT015', 'train_event_conflict', 'A train arrival or departure at a ts the train already has recorded at another station', true);

-- functions
-- checked_ts for the first refused element of a batch's ts array, named ts[i]
-- (or ts, for a NULL array: now() for every element). i is the element's
-- ordinal, as the batch functions read their arrays (unnest): the element is
-- found by it, never by subscript, because a caller's array may start at
-- another index or have two dimensions ('[0:0]={...}', '{{...}}'), where
-- ts[i] would be NULL, read as now(), and let any ts through.
CREATE OR REPLACE FUNCTION checked_ts_array(function_name text, ts timestamptz[])
RETURNS void LANGUAGE plpgsql VOLATILE SET search_path = metro, pg_temp AS $$
DECLARE
    v_first integer := ts_array_refusal(ts);
BEGIN
    IF v_first IS NOT NULL THEN
        PERFORM checked_ts(function_name,
                           CASE WHEN ts IS NULL THEN 'ts' ELSE format('ts[%s]', v_first) END,
                           coalesce((SELECT u.t FROM unnest(ts) WITH ORDINALITY u(t, n)
                                     WHERE u.n = v_first), now()));
    END IF;
END
$$;
COMMENT ON FUNCTION checked_ts_array(text, timestamptz[]) IS 'checked_ts for the first refused element of a ts array (MT009 or MT010 naming ts[i], or ts for a NULL array)';

-- Runs a partition's CREATE or DROP. Either locks the partitioned table
-- exclusively, and while it waits for a transaction still reading the table
-- (a report, a client holding its transaction open), every swipe queues
-- behind it (the rollup, for the history tables). So it waits at most
-- 200 ms, then gives up (false: busy) and leaves it to the next
-- run_maintenance(); swipes take about a millisecond, so in a steady stream
-- of them it gets its lock at once.
CREATE OR REPLACE FUNCTION partition_ddl(statement text)
RETURNS boolean LANGUAGE plpgsql SET search_path = metro, pg_temp SET lock_timeout = '200ms' AS $$
BEGIN
    EXECUTE statement;
    RETURN true;
EXCEPTION WHEN lock_not_available THEN
    RETURN false;
END
$$;
COMMENT ON FUNCTION partition_ddl(text) IS 'Runs a partition''s CREATE TABLE or DROP TABLE waiting at most 200 ms for its table''s lock: true done, false busy (left for the next run_maintenance())';

-- Creates the daily partitions of from_day through to_day (UTC days) that do
-- not exist, for every partitioned table, one caller at a time, and only for
-- days rows are kept for (back to the longest retention, ahead to
-- settings.partitions_ahead). A day that already has rows in the table's
-- default partition keeps them there (reported as kept_in_default): those
-- rows leave by their retention. A table a long transaction holds is left
-- for the next call (busy, partition_ddl).
CREATE OR REPLACE FUNCTION create_partitions(from_day date, to_day date)
RETURNS TABLE (action text, table_name text, partition_name text, rows bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp SET TimeZone = 'UTC' AS $$
DECLARE
    s settings%ROWTYPE;
    first_kept date;
    last_kept date;
    t record;
    d date;
    found_rows boolean;
BEGIN
    IF from_day IS NULL THEN PERFORM raise_null_argument('create_partitions', 'from_day'); END IF;
    IF to_day IS NULL THEN PERFORM raise_null_argument('create_partitions', 'to_day'); END IF;
    -- Infinite days first: date subtraction refuses them.
    IF NOT (isfinite(from_day) AND isfinite(to_day)) OR to_day < from_day
       OR to_day - from_day > 3660 OR from_day < date '2000-01-01' OR to_day >= date '2200-01-01' THEN
        RAISE EXCEPTION 'create_partitions: days % to % are not a range of at most 10 years within 2000-01-01 and 2200-01-01',
            from_day, to_day
            USING ERRCODE = '22023', HINT = 'Pass the first and the last UTC day to create, e.g. create_partitions(current_date - 7, current_date - 1).';
    END IF;
    -- One caller at a time (two installs, a worker and pg_cron): the second
    -- waits, then finds the partitions made. The settings row, because only
    -- the schema's owner may lock it (an advisory lock, any role could hold).
    SELECT * INTO s FROM settings FOR NO KEY UPDATE;
    -- Only days rows are kept for: every partition is locked by every swipe's
    -- rules, so a thousand days far ahead (never dropped) or long past would
    -- slow every swipe.
    first_kept := ((now() - greatest(s.event_retention, s.history_retention)) AT TIME ZONE 'UTC')::date;
    last_kept := (now() AT TIME ZONE 'UTC')::date + s.partitions_ahead;
    IF from_day < first_kept OR to_day > last_kept THEN
        RAISE EXCEPTION 'create_partitions: days % to % reach outside the days kept, % to %',
            from_day, to_day, first_kept, last_kept
            USING ERRCODE = '22023',
                  HINT = 'Days kept: back to the longest retention (settings.event_retention, history_retention), ahead to settings.partitions_ahead; run_maintenance() makes the days ahead as they come near.';
    END IF;
    FOR t IN SELECT * FROM partitioned_tables() p ORDER BY p.table_name LOOP
        FOR d IN SELECT g::date FROM generate_series(from_day, to_day, interval '1 day') g LOOP
            partition_name := format('%s_p%s', t.table_name, to_char(d, 'YYYYMMDD'));
            CONTINUE WHEN to_regclass(format('metro.%I', partition_name)) IS NOT NULL;
            table_name := t.table_name;
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= $1 AND %I < $2)',
                           t.table_name || '_default', t.time_column, t.time_column)
                INTO found_rows USING d::timestamptz, (d + 1)::timestamptz;
            IF found_rows THEN
                action := 'kept_in_default';
                partition_name := t.table_name || '_default';
                rows := NULL;
            ELSE
                IF partition_ddl(format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                                        partition_name, t.table_name, d::timestamptz,
                                        (d + 1)::timestamptz)) THEN
                    EXECUTE format('COMMENT ON TABLE %I IS %L', partition_name,
                                   format('%s of %s (UTC); dropped by run_maintenance() past its retention', t.table_name, d));
                    action := 'created';
                    rows := 0;
                ELSE
                    action := 'busy';
                    rows := NULL;
                END IF;
            END IF;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION create_partitions(date, date) IS 'Creates the missing daily partitions of from_day through to_day (UTC) for card_events, card_history_second and station_second_slots: (action created, kept_in_default or busy: the table was held by another transaction for 200 ms, call again; table_name, partition_name, rows); for a load or replay of past dates. MT004 NULL argument, 22023 not a range of at most 10 years in [2000-01-01, 2200-01-01) or days outside those kept (back to the longest retention, ahead to settings.partitions_ahead)';
REVOKE ALL ON FUNCTION create_partitions(date, date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION create_partitions(date, date) TO metro_worker;

-- Creates the partitions of today through settings.partitions_ahead days
-- ahead and drops the partitions whose whole day is older than the table's
-- retention (a table locked by a long transaction is left for the next run,
-- reported as busy, rather than stalling the writers queued behind the
-- create or drop: partition_ddl; one holding rows the rollup has not read yet, as not_rolled_up, so
-- that a stopped worker loses no swipe from the totals). Then deletes, row
-- by row, what is past retention elsewhere: the default partitions' rows,
-- the bridge's dead letters (settings.dead_letter_retention), the train
-- events and departures (settings.history_retention) and the payment
-- decisions (settings.decision_retention). Those deletes share a budget of
-- 100,000 rows a call: a DELETE holds back the commit horizon (the bridge and
-- the rollup wait) while it runs, and a replay of past dates or a busy
-- payment network leaves millions of rows due at once; 'more' says another
-- call is due. Rows the rollup has not read stay. One call at a time
-- (create_partitions). Records what it did in worker_state.
CREATE OR REPLACE FUNCTION run_maintenance()
RETURNS TABLE (action text, table_name text, partition_name text, rows bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp SET TimeZone = 'UTC'
    SET lock_timeout = '2s' AS $$
DECLARE
    s settings%ROWTYPE;
    t record;
    p record;
    today date := (now() AT TIME ZONE 'UTC')::date;
    n bigint;
    unread text;
    not_read boolean;
    done text[] := '{}';
    deleted bigint := 0;
    -- 100,000 decisions took 0.2 to 0.5 s to delete (ad hoc, idle server).
    budget bigint := 100000;
BEGIN
    SELECT * INTO s FROM settings FOR NO KEY UPDATE;
    FOR action, table_name, partition_name, rows IN
        SELECT * FROM create_partitions(today, today + s.partitions_ahead) LOOP
        done := done || action;
        RETURN NEXT;
    END LOOP;

    FOR t IN SELECT * FROM partitioned_tables() pt ORDER BY pt.table_name LOOP
        table_name := t.table_name;
        unread := rollup_unread(t.table_name);
        FOR p IN
            SELECT c.relname, to_date(substring(c.relname FROM '_p([0-9]{8})$'), 'YYYYMMDD') AS day
            FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = format('metro.%I', t.table_name)::regclass
              AND c.relname ~ ('^' || t.table_name || '_p[0-9]{8}$')
            ORDER BY c.relname
        LOOP
            CONTINUE WHEN (p.day + 1)::timestamptz > now() - t.retention;
            partition_name := p.relname;
            rows := NULL;
            not_read := false;
            IF unread IS NOT NULL THEN
                EXECUTE format('SELECT EXISTS (SELECT FROM %I WHERE %s)', p.relname, unread)
                    INTO not_read;
            END IF;
            IF not_read THEN
                action := 'not_rolled_up';
            ELSIF partition_ddl(format('DROP TABLE %I', p.relname)) THEN
                action := 'dropped';
            ELSE
                action := 'busy';
            END IF;
            done := done || action;
            RETURN NEXT;
        END LOOP;
    END LOOP;

    -- What leaves row by row, by table name; a row the rollup has not read
    -- stays (a stopped worker loses no swipe and no departure).
    FOR t IN
        SELECT pt.table_name, pt.table_name || '_default' AS partition_name, pt.time_column,
               pt.retention
        FROM partitioned_tables() pt
        UNION ALL
        VALUES ('bridge_dead_letters', NULL, 'received_at', s.dead_letter_retention),
               ('bridge_outbound_dead_letters', NULL, 'at', s.dead_letter_retention),
               ('station_departures', NULL, 'ts', s.history_retention),
               ('train_events', NULL, 'ts', s.history_retention),
               ('risk_decisions', NULL, 'decided_at', s.decision_retention)
        ORDER BY 1
    LOOP
        n := delete_expired(coalesce(t.partition_name, t.table_name), t.time_column,
                            now() - t.retention, budget::integer,
                            coalesce(' AND NOT (' || rollup_unread(t.table_name) || ')', ''));
        table_name := t.table_name; partition_name := t.partition_name;
        IF n > 0 THEN
            action := 'deleted'; rows := n;
            done := done || action;
            deleted := deleted + n;
            RETURN NEXT;
        END IF;
        budget := budget - n;
        IF budget = 0 THEN
            action := 'more'; rows := NULL;
            RETURN NEXT;
            EXIT;
        END IF;
    END LOOP;

    UPDATE worker_state SET last_maintenance_at = clock_timestamp(),
        last_maintenance = format('created %s, dropped %s, deleted %s rows, busy %s, not rolled up %s',
            cardinality(array_positions(done, 'created')), cardinality(array_positions(done, 'dropped')),
            deleted, cardinality(array_positions(done, 'busy')),
            cardinality(array_positions(done, 'not_rolled_up')));
END
$$;
COMMENT ON FUNCTION run_maintenance() IS 'Creates the daily partitions of today through settings.partitions_ahead days ahead, drops those past event_retention (card_events) or history_retention (card_history_second, station_second_slots); then deletes, at most 100,000 rows a call in all, default-partition rows past retention, bridge_dead_letters and bridge_outbound_dead_letters past dead_letter_retention, risk_decisions past decision_retention, station_departures and train_events (once rolled up) past history_retention: rows the rollup has not read stay; one call at a time: one row (action created, kept_in_default, dropped, busy: the table was held by another transaction for 200 ms, left for the next call, not_rolled_up: a partition past retention with rows the rollup has not read, deleted or more: more rows are past retention, call again; table_name, partition_name, rows: rows deleted, 0 for a new partition, NULL when not counted) per thing done';
REVOKE ALL ON FUNCTION run_maintenance() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION run_maintenance() TO metro_worker;

-- Records an arrival (0) or departure (1). The rollup (run_rollup()) turns a
-- departure into a station_departures row: the accepted entries at that
-- station since the previous departure (at most settings.max_wait back).
-- A train moves once at an instant: the same event sent again (a producer's
-- retry) is recorded once, and one naming another station is refused.
CREATE OR REPLACE FUNCTION record_train_event(train_id integer, station_id integer, activity_type integer, ts timestamptz DEFAULT now())
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_train ALIAS FOR $1;
    p_station ALIAS FOR $2;
    p_activity ALIAS FOR $3;
    p_ts ALIAS FOR $4;
    v_recorded integer;
BEGIN
    IF p_train IS NULL THEN PERFORM raise_null_argument('record_train_event', 'train_id'); END IF;
    IF p_station IS NULL THEN PERFORM raise_null_argument('record_train_event', 'station_id'); END IF;
    IF p_activity IS NULL THEN PERFORM raise_null_argument('record_train_event', 'activity_type'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('record_train_event', 'ts'); END IF;
    PERFORM checked_ts('record_train_event', 'ts', p_ts);
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

    INSERT INTO train_events (train_id, station_id, activity_type, ts)
    VALUES (p_train, p_station, p_activity, p_ts)
    ON CONFLICT ON CONSTRAINT train_events_pkey DO NOTHING;
    IF NOT FOUND THEN
        SELECT e.station_id INTO v_recorded FROM train_events e
        WHERE e.train_id = p_train AND e.ts = p_ts AND e.activity_type = p_activity;
        IF v_recorded <> p_station THEN
            RAISE EXCEPTION 'Train % already has its % at % recorded at station %, not %',
                p_train, CASE p_activity WHEN 0 THEN 'arrival' ELSE 'departure' END,
                p_ts, v_recorded, p_station
                USING ERRCODE = 'MT015',
                      HINT = 'A train arrives or departs once at an instant; check the event''s station and ts.';
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION record_train_event(integer, integer, integer, timestamptz) IS 'Records a train arrival (0) or departure (1), once: the same event again records nothing; the rollup turns a departure into a station_departures row with the riders that waited for it. MT004 NULL argument, MT005 activity_type not 0 or 1, MT002 unknown train, MT001 unknown station, MT015 the train already has that arrival or departure at that ts at another station';
REVOKE ALL ON FUNCTION record_train_event(integer, integer, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION record_train_event(integer, integer, integer, timestamptz)
    TO metro_app, metro_bridge;

-- Registers a stream table of schema metro: its row in streams (topic, key
-- and time column), its bridge cursor, the (txid, position) index the bridge
-- reads by, a (key, position) index that keeps a key's rows in order, the
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
    -- bridge_batch finds the earlier rows of a key through it; a table with
    -- an index that starts with (key, position) already, its primary key
    -- (card_alert_export), gets no second one to write on every row.
    IF NOT EXISTS (SELECT FROM pg_index i
                   WHERE i.indrelid = v_table AND i.indexprs IS NULL AND i.indpred IS NULL
                     AND i.indkey[0] = (SELECT a.attnum FROM pg_attribute a
                                        WHERE a.attrelid = v_table AND a.attname = key_column)
                     AND i.indkey[1] = (SELECT a.attnum FROM pg_attribute a
                                        WHERE a.attrelid = v_table AND a.attname = 'position'))
    THEN
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (%I, position)',
                       p_stream || '_key_position', p_stream, key_column);
    END IF;
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

-- indexes
-- Dropping an index locks its table, which every swipe that alerts writes: it
-- waits 3 s at most for a transaction holding it, then stops and says why.
DO $$
DECLARE
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    PERFORM set_config('lock_timeout', '3s', true);
    DROP INDEX card_alert_export_key_position;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
EXCEPTION WHEN lock_not_available THEN
    RAISE EXCEPTION 'card_alert_export stayed locked for 3 s by another transaction (a client holding its transaction open?), so the upgrade stopped rather than hold every swipe back'
        USING ERRCODE = '55P03',
              HINT = 'SELECT pid, xact_start, query FROM pg_stat_activity WHERE state LIKE ''idle in transaction%'' lists transactions held open; end it and run metro install again.';
END
$$;

-- grants
-- As procedures/privileges.sql: no function of schema metro is PUBLIC's.
REVOKE ALL ON ALL ROUTINES IN SCHEMA metro FROM PUBLIC;
