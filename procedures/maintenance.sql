-- Old data leaves by partition. card_events, card_history_second and
-- station_second_slots are partitioned by UTC day (native partitioning, no
-- extension); run_maintenance() creates the partitions of the coming days
-- and drops those past their retention (settings), and deletes old dead
-- letters. The worker calls it every few minutes; so can pg_cron:
--   SELECT cron.schedule('metro-maintenance', '*/10 * * * *', 'SELECT * FROM metro.run_maintenance()');
-- A day without a partition of its own (a replay or a load of past dates, a
-- ts far ahead) goes to the table's default partition, which keeps it until
-- its retention; create_partitions() makes the partitions of a backfill's
-- days first, so that they leave by partition too.
SET search_path = metro, pg_catalog;

-- functions

-- The partitioned tables, the column they are partitioned by and their retention.
CREATE OR REPLACE FUNCTION partitioned_tables()
RETURNS TABLE (table_name text, time_column text, retention interval)
LANGUAGE sql STABLE SET search_path = metro, pg_temp AS $$
    SELECT t.table_name, t.time_column, t.retention
    FROM settings s
    CROSS JOIN LATERAL (VALUES ('card_events', 'ts', s.event_retention),
                               ('card_history_second', 'second_start', s.history_retention),
                               ('station_second_slots', 'second_start', s.history_retention)
                       ) t(table_name, time_column, retention)
$$;
COMMENT ON FUNCTION partitioned_tables() IS 'The tables partitioned by UTC day, their time column and their retention (settings.event_retention, history_retention)';

-- Creates the daily partitions of from_day through to_day (UTC days) that do
-- not exist, for every partitioned table. A day that already has rows in the
-- table's default partition keeps them there (reported as kept_in_default):
-- those rows leave by their retention.
CREATE OR REPLACE FUNCTION create_partitions(from_day date, to_day date)
RETURNS TABLE (action text, table_name text, partition_name text, rows bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp SET TimeZone = 'UTC' AS $$
DECLARE
    t record;
    d date;
    found_rows boolean;
BEGIN
    IF from_day IS NULL THEN PERFORM raise_null_argument('create_partitions', 'from_day'); END IF;
    IF to_day IS NULL THEN PERFORM raise_null_argument('create_partitions', 'to_day'); END IF;
    IF to_day < from_day OR to_day - from_day > 3660
       OR from_day < date '2000-01-01' OR to_day >= date '2200-01-01' THEN
        RAISE EXCEPTION 'create_partitions: days % to % are not a range of at most 10 years within 2000-01-01 and 2200-01-01',
            from_day, to_day
            USING ERRCODE = '22023', HINT = 'Pass the first and the last UTC day to create, e.g. create_partitions(''2026-01-01'', ''2026-01-31'').';
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
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               partition_name, t.table_name, d::timestamptz, (d + 1)::timestamptz);
                EXECUTE format('COMMENT ON TABLE %I IS %L', partition_name,
                               format('%s of %s (UTC); dropped by run_maintenance() past its retention', t.table_name, d));
                action := 'created';
                rows := 0;
            END IF;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION create_partitions(date, date) IS 'Creates the missing daily partitions of from_day through to_day (UTC) for card_events, card_history_second and station_second_slots: (action created or kept_in_default, table_name, partition_name, rows); for a load or replay of past dates. MT004 NULL argument, 22023 not a range of at most 10 years in [2000-01-01, 2200-01-01)';
REVOKE ALL ON FUNCTION create_partitions(date, date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION create_partitions(date, date) TO metro_worker;

-- Creates the partitions of today through settings.partitions_ahead days
-- ahead, drops the partitions whose whole day is older than the table's
-- retention (a partition locked by a long transaction is left for the next
-- run, reported as busy, rather than stalling the writers queued behind the
-- drop), deletes the rows of the default partitions past retention, the
-- bridge's dead letters past settings.dead_letter_retention, the train events
-- and departures past settings.history_retention and the payment decisions
-- past settings.decision_retention. Records what it did in
-- worker_state. Decisions leave at most decision_batch a call, oldest first:
-- a DELETE holds back the commit horizon (the bridge and the rollup wait)
-- while it runs, and a busy payment network decides millions a day; 'more'
-- says another call is due.
CREATE OR REPLACE FUNCTION run_maintenance()
RETURNS TABLE (action text, table_name text, partition_name text, rows bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp SET TimeZone = 'UTC'
    SET lock_timeout = '2s' AS $$
DECLARE
    s settings%ROWTYPE;
    t record;
    p record;
    today date := (now() AT TIME ZONE 'UTC')::date;
    cutoff timestamptz;
    n bigint;
    done text[] := '{}';
    -- 100,000 decisions took 0.2 to 0.5 s to delete (ad hoc, idle server).
    decision_batch constant integer := 100000;
BEGIN
    SELECT * INTO s FROM settings;
    FOR action, table_name, partition_name, rows IN
        SELECT * FROM create_partitions(today, today + s.partitions_ahead) LOOP
        done := done || action;
        RETURN NEXT;
    END LOOP;

    FOR t IN SELECT * FROM partitioned_tables() pt ORDER BY pt.table_name LOOP
        cutoff := now() - t.retention;
        table_name := t.table_name;
        FOR p IN
            SELECT c.relname, to_date(substring(c.relname FROM '_p([0-9]{8})$'), 'YYYYMMDD') AS day
            FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = format('metro.%I', t.table_name)::regclass
              AND c.relname ~ ('^' || t.table_name || '_p[0-9]{8}$')
            ORDER BY c.relname
        LOOP
            CONTINUE WHEN (p.day + 1)::timestamptz > cutoff;
            partition_name := p.relname;
            rows := NULL;
            BEGIN
                EXECUTE format('DROP TABLE %I', p.relname);
                action := 'dropped';
            EXCEPTION WHEN lock_not_available THEN
                action := 'busy';
            END;
            done := done || action;
            RETURN NEXT;
        END LOOP;
        EXECUTE format('DELETE FROM %I WHERE %I < $1', t.table_name || '_default', t.time_column)
            USING cutoff;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            action := 'deleted'; partition_name := t.table_name || '_default'; rows := n;
            done := done || action;
            RETURN NEXT;
        END IF;
    END LOOP;

    -- Tables that leave row by row: the bridge's dead letters, inbound and
    -- outbound, by the time they were set aside; the trains' events and the
    -- departures' wait times with the history. A train event leaves only once
    -- the rollup has read it (a stopped worker loses no departure).
    FOR t IN VALUES
        ('bridge_dead_letters', 'received_at', s.dead_letter_retention, ''),
        ('bridge_outbound_dead_letters', 'at', s.dead_letter_retention, ''),
        ('station_departures', 'ts', s.history_retention, ''),
        ('train_events', 'ts', s.history_retention,
         ' AND txid <= (SELECT c.txid FROM worker_cursors c WHERE c.source = ''train_events'')')
    LOOP
        EXECUTE format('DELETE FROM %I WHERE %I < $1', t.column1, t.column2) || t.column4
            USING now() - t.column3;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            action := 'deleted'; table_name := t.column1; partition_name := NULL; rows := n;
            done := done || action;
            RETURN NEXT;
        END IF;
    END LOOP;

    DELETE FROM risk_decisions d WHERE d.transaction_id IN (
        SELECT r.transaction_id FROM risk_decisions r
        WHERE r.decided_at < now() - s.decision_retention
        ORDER BY r.decided_at LIMIT decision_batch);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        action := 'deleted'; table_name := 'risk_decisions'; partition_name := NULL; rows := n;
        done := done || action;
        RETURN NEXT;
    END IF;
    IF n = decision_batch THEN
        action := 'more'; rows := NULL;
        RETURN NEXT;
    END IF;

    UPDATE worker_state SET last_maintenance_at = clock_timestamp(),
        last_maintenance = format('created %s, dropped %s, deleted from %s, busy %s',
            cardinality(array_positions(done, 'created')), cardinality(array_positions(done, 'dropped')),
            cardinality(array_positions(done, 'deleted')), cardinality(array_positions(done, 'busy')));
END
$$;
COMMENT ON FUNCTION run_maintenance() IS 'Creates the daily partitions of today through settings.partitions_ahead days ahead, drops those past event_retention (card_events) or history_retention (card_history_second, station_second_slots), deletes default-partition rows past retention, bridge_dead_letters and bridge_outbound_dead_letters past dead_letter_retention, train_events (once rolled up) and station_departures past history_retention, risk_decisions past decision_retention (at most 100,000 a call, oldest first): one row (action created, kept_in_default, dropped, busy, deleted or more: more rows of the table are past retention, call again; table_name, partition_name, rows: rows deleted, 0 for a new partition, NULL when not counted) per thing done';
REVOKE ALL ON FUNCTION run_maintenance() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION run_maintenance() TO metro_worker;
