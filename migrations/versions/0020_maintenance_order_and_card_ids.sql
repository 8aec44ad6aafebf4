-- Revision 0020 (frozen): maintenance that deletes before it locks; card
-- ids that cannot be negative; a stream's key index only where none serves.
-- - run_maintenance() created and dropped partitions first, and each keeps
--   its table locked until the call commits: its row-by-row deletes after
--   them (up to 100,000 rows) held every swipe behind that lock. It deletes
--   first now, and does its partitions last.
-- - cards.card_id had no CHECK: a card loaded as -5 was kept and its swipes
--   decided, though every id is non-negative (stations' and trains' are
--   checked). It is refused now; an upgrade over such cards stops and names
--   them.
-- - register_stream() took any index starting with (key, position) for the
--   stream's key index, an invalid one (a failed CREATE INDEX CONCURRENTLY)
--   or one of another access method too: only a valid btree index counts now.
-- - The worker names itself host:pid:tag (two workers alike in host name and
--   pid, two containers on the host's network, both renewed one lease).
SET search_path = metro, pg_catalog;

-- functions
-- Deletes, row by row, what is past retention outside the partitions: the
-- default partitions' rows, the bridge's dead letters
-- (settings.dead_letter_retention), the train events and departures
-- (settings.history_retention) and the payment decisions
-- (settings.decision_retention). Those deletes share a budget of 100,000 rows
-- a call: a DELETE holds back the commit horizon (the bridge and the rollup
-- wait) while it runs, and a replay of past dates or a busy payment network
-- leaves millions of rows due at once; 'more' says another call is due. Then
-- creates the partitions of today through settings.partitions_ahead days
-- ahead and drops the partitions whose whole day is older than the table's
-- retention, last, because each keeps its table locked until the call
-- commits (a table locked by a long transaction is left for the next run,
-- reported as busy, rather than stalling the writers queued behind the
-- create or drop: partition_ddl; a day holding rows the rollup has not read
-- yet stays, as not_rolled_up, so that a stopped worker loses no swipe from
-- the totals). Rows the rollup has not read stay. One call at a time
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

    -- The partitions last: a CREATE or DROP keeps its table locked until the
    -- call commits, and every swipe waits for card_events meanwhile.
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

    UPDATE worker_state SET last_maintenance_at = clock_timestamp(),
        last_maintenance = format('created %s, dropped %s, deleted %s rows, busy %s, not rolled up %s',
            cardinality(array_positions(done, 'created')), cardinality(array_positions(done, 'dropped')),
            deleted, cardinality(array_positions(done, 'busy')),
            cardinality(array_positions(done, 'not_rolled_up')));
END
$$;
COMMENT ON FUNCTION run_maintenance() IS 'Deletes, at most 100,000 rows a call in all, default-partition rows past retention, bridge_dead_letters and bridge_outbound_dead_letters past dead_letter_retention, risk_decisions past decision_retention, station_departures and train_events (once rolled up) past history_retention; then creates the daily partitions of today through settings.partitions_ahead days ahead and drops those past event_retention (card_events) or history_retention (card_history_second, station_second_slots): rows the rollup has not read stay; one call at a time: one row (action created, kept_in_default, dropped, busy: the table was held by another transaction for 200 ms, left for the next call, not_rolled_up: a partition past retention with rows the rollup has not read, deleted or more: more rows are past retention, call again; table_name, partition_name, rows: rows deleted, 0 for a new partition, NULL when not counted) per thing done';
REVOKE ALL ON FUNCTION run_maintenance() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION run_maintenance() TO metro_worker;

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
    -- a valid btree index that starts with (key, position) already, its
    -- primary key (card_alert_export), gets no second one to write on every row.
    IF NOT EXISTS (SELECT FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
                   WHERE i.indrelid = v_table AND i.indisvalid
                     AND x.relam = (SELECT am.oid FROM pg_am am WHERE am.amname = 'btree')
                     AND i.indexprs IS NULL AND i.indpred IS NULL
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
COMMENT ON FUNCTION register_stream(text, text, text, text) IS 'Makes a table of schema metro a stream forwarded to Kafka: its row in streams (topic, key column, time column), bridge cursor, (txid, position) index, a (key, position) index unless a btree index already starts with those columns, NOTIFY trigger and SELECT for metro_bridge; 42P01 no such table, 42703 a column missing';

-- Checks a holder name and a lease duration.
CREATE OR REPLACE FUNCTION worker_check_lease_arguments(function_name text, holder text, lease interval)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    IF holder IS NULL THEN PERFORM raise_null_argument(function_name, 'holder'); END IF;
    IF lease IS NULL THEN PERFORM raise_null_argument(function_name, 'lease'); END IF;
    IF btrim(holder) = '' OR length(holder) > 200 THEN
        RAISE EXCEPTION '%: holder must be 1 to 200 characters, not blank, got "%"', function_name, holder
            USING ERRCODE = '22023', HINT = 'The worker passes host:pid:tag.';
    END IF;
    IF lease < interval '1 second' OR lease > interval '1 hour' THEN
        RAISE EXCEPTION '%: lease must be between 1 second and 1 hour, got %', function_name, lease
            USING ERRCODE = '22023', HINT = 'The worker renews a 15 s lease every 3 s.';
    END IF;
END
$$;
COMMENT ON FUNCTION worker_check_lease_arguments(text, text, interval) IS 'Raises MT004 for a NULL holder or lease, 22023 for a blank or too long holder or a lease outside [1 s, 1 h]';
COMMENT ON FUNCTION worker_take_lease(text, interval) IS 'Takes or renews the worker lease for holder (host:pid:tag) until now() + lease, when it is free, expired or holder''s: (held, lease_holder, lease_until). MT004 NULL argument, 22023 blank holder or lease outside [1 s, 1 h]';

-- comments
COMMENT ON COLUMN worker_state.holder IS 'host:pid:tag of the worker holding the lease (or that last held it), the tag random per worker process';

-- constraints
-- A card's id is non-negative, as a station's and a train's are: a card
-- loaded as -5 was kept and its swipes decided. One already there stops the
-- upgrade, named, rather than being changed or dropped unseen. Adding the
-- CHECK reads every card under the table's lock: it waits 3 s at most for a
-- transaction holding cards, then stops and says why. A database of the
-- release whose revision 0019 already added it keeps its own.
DO $$
DECLARE
    v_count bigint := (SELECT count(*) FROM cards WHERE card_id < 0);
BEGIN
    IF v_count > 0 THEN
        RAISE EXCEPTION 'cards holds % card(s) with a negative card_id, which no card may have: %', v_count,
            (SELECT string_agg(c.card_id::text, ', ' ORDER BY c.card_id)
             FROM (SELECT card_id FROM cards WHERE card_id < 0 ORDER BY card_id LIMIT 10) c)
            || CASE WHEN v_count > 10 THEN format(' and %s more', v_count - 10) ELSE '' END
            USING ERRCODE = '23514',
                  HINT = 'Renumber them (UPDATE metro.cards SET card_id = ...) or delete them, then run metro install again.';
    END IF;
END
$$;
DO $$
DECLARE
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    IF EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'cards'::regclass
               AND conname = 'cards_card_id_check') THEN
        RETURN;
    END IF;
    PERFORM set_config('lock_timeout', '3s', true);
    ALTER TABLE cards ADD CONSTRAINT cards_card_id_check CHECK (card_id >= 0);
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
EXCEPTION WHEN lock_not_available THEN
    RAISE EXCEPTION 'cards stayed locked for 3 s by another transaction (a client holding its transaction open?), so the upgrade stopped rather than hold every swipe back'
        USING ERRCODE = '55P03',
              HINT = 'SELECT pid, xact_start, query FROM pg_stat_activity WHERE state LIKE ''idle in transaction%'' lists transactions held open; end it and run metro install again.';
END
$$;

-- grants
-- As procedures/privileges.sql: no function of schema metro is PUBLIC's.
REVOKE ALL ON ALL ROUTINES IN SCHEMA metro FROM PUBLIC;
