-- Old data leaves by partition. card_events, card_history_second and
-- station_second_slots are partitioned by UTC day (native partitioning, no
-- extension); run_maintenance() creates the partitions of the coming days
-- and drops those past their retention (settings), and deletes what leaves
-- row by row (dead letters, decisions, ...) a bounded batch at a time. The
-- worker calls it every few minutes; so can pg_cron:
--   SELECT cron.schedule('metro-maintenance', '*/10 * * * *', 'CALL metro.run_maintenance_until_done()');
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

-- Runs a partition's CREATE or DROP. Either locks the partitioned table
-- exclusively, and while it waits for a transaction still reading the table
-- (a report, a client holding its transaction open), every swipe queues
-- behind it (the rollup, for the history tables). So it waits at most
-- 200 ms, then gives up (false: busy) and leaves it to the next
-- run_maintenance(); swipes take about a millisecond, so in a steady stream
-- of them it gets its lock at once. Done, it keeps the lock until the
-- caller's transaction ends: run_maintenance() does its partitions last.
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
                                   -- The day as the name has it, whatever the caller's DateStyle.
                                   format('%s of %s (UTC); dropped by run_maintenance() past its retention',
                                          t.table_name, to_char(d, 'YYYY-MM-DD')));
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

-- Deletes at most batch rows of table_name whose time_column is before cutoff
-- (and that meet also, an SQL condition of the caller's), whichever come
-- first, and returns how many. One bounded statement: a long DELETE holds
-- back the commit horizon, so the bridge and the rollup wait while it runs.
CREATE OR REPLACE FUNCTION delete_expired(table_name text, time_column text, cutoff timestamptz,
                                          batch integer, also text DEFAULT '')
RETURNS bigint LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('DELETE FROM %1$I WHERE ctid = ANY (ARRAY('
                   'SELECT ctid FROM %1$I WHERE %2$I < $1%3$s LIMIT $2))',
                   table_name, time_column, also)
        USING cutoff, batch;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION delete_expired(text, text, timestamptz, integer, text) IS 'Deletes at most batch rows of the table older than cutoff (and meeting the extra condition): run_maintenance()''s one way to delete by retention';
REVOKE ALL ON FUNCTION delete_expired(text, text, timestamptz, integer, text) FROM PUBLIC;

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

-- For a scheduler without the worker (pg_cron): calls run_maintenance() until
-- nothing more is due, each call its own transaction. Run by CALL outside a
-- transaction block; a security invoker with no settings of its own, so that
-- it may commit between calls.
CREATE OR REPLACE PROCEDURE run_maintenance_until_done()
LANGUAGE plpgsql AS $$
DECLARE
    more boolean;
BEGIN
    LOOP
        SELECT bool_or(m.action = 'more') INTO more FROM metro.run_maintenance() m;
        COMMIT;
        EXIT WHEN NOT coalesce(more, false);
    END LOOP;
END
$$;
COMMENT ON PROCEDURE run_maintenance_until_done() IS 'Calls run_maintenance() until nothing more is due, committing after each call: for pg_cron (CALL metro.run_maintenance_until_done()); not inside a transaction block';
REVOKE ALL ON PROCEDURE run_maintenance_until_done() FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE run_maintenance_until_done() TO metro_worker;
