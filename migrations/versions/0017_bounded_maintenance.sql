-- Revision 0017 (frozen): what leaves row by row leaves in bounded batches.
-- run_maintenance() deleted the default partitions' rows, the dead letters,
-- the train events and the departures past retention in one DELETE each,
-- whatever their number (only the payment decisions went 100,000 a call): a
-- replay of a month into a default partition, or a flood of dead letters, made
-- a DELETE of millions of rows that held back the commit horizon, and the
-- bridge and the rollup with it, for as long as it ran. Every row-by-row
-- delete now goes through delete_expired(), within a budget of 100,000 rows a
-- call shared by all tables, and says 'more' when the budget ran out. For
-- pg_cron, run_maintenance_until_done() calls it again while more is due.
SET search_path = metro, pg_catalog;

-- functions
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

-- Creates the partitions of today through settings.partitions_ahead days
-- ahead and drops the partitions whose whole day is older than the table's
-- retention (a partition locked by a long transaction is left for the next
-- run, reported as busy, rather than stalling the writers queued behind the
-- drop). Then deletes, row by row, what is past retention elsewhere: the
-- default partitions' rows, the bridge's dead letters
-- (settings.dead_letter_retention), the train events and departures
-- (settings.history_retention) and the payment decisions
-- (settings.decision_retention). Those deletes share a budget of
-- delete_budget rows a call: a DELETE holds back the commit horizon (the
-- bridge and the rollup wait) while it runs, and a replay of past dates or a
-- busy payment network leaves millions of rows due at once; 'more' says
-- another call is due. Records what it did in worker_state.
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
    done text[] := '{}';
    -- 100,000 decisions took 0.2 to 0.5 s to delete (ad hoc, idle server).
    budget bigint := 100000;
BEGIN
    SELECT * INTO s FROM settings;
    FOR action, table_name, partition_name, rows IN
        SELECT * FROM create_partitions(today, today + s.partitions_ahead) LOOP
        done := done || action;
        RETURN NEXT;
    END LOOP;

    FOR t IN SELECT * FROM partitioned_tables() pt ORDER BY pt.table_name LOOP
        table_name := t.table_name;
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
            BEGIN
                EXECUTE format('DROP TABLE %I', p.relname);
                action := 'dropped';
            EXCEPTION WHEN lock_not_available THEN
                action := 'busy';
            END;
            done := done || action;
            RETURN NEXT;
        END LOOP;
    END LOOP;

    -- What leaves row by row, by table name. A train event leaves only once
    -- the rollup has read it (a stopped worker loses no departure).
    FOR t IN
        SELECT pt.table_name, pt.table_name || '_default' AS partition_name, pt.time_column,
               pt.retention, '' AS also
        FROM partitioned_tables() pt
        UNION ALL
        VALUES ('bridge_dead_letters', NULL, 'received_at', s.dead_letter_retention, ''),
               ('bridge_outbound_dead_letters', NULL, 'at', s.dead_letter_retention, ''),
               ('station_departures', NULL, 'ts', s.history_retention, ''),
               ('train_events', NULL, 'ts', s.history_retention,
                ' AND txid <= (SELECT c.txid FROM worker_cursors c WHERE c.source = ''train_events'')'),
               ('risk_decisions', NULL, 'decided_at', s.decision_retention, '')
        ORDER BY 1
    LOOP
        n := delete_expired(coalesce(t.partition_name, t.table_name), t.time_column,
                            now() - t.retention, budget::integer, t.also);
        table_name := t.table_name; partition_name := t.partition_name;
        IF n > 0 THEN
            action := 'deleted'; rows := n;
            done := done || action;
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
        last_maintenance = format('created %s, dropped %s, deleted from %s, busy %s',
            cardinality(array_positions(done, 'created')), cardinality(array_positions(done, 'dropped')),
            cardinality(array_positions(done, 'deleted')), cardinality(array_positions(done, 'busy')));
END
$$;
COMMENT ON FUNCTION run_maintenance() IS 'Creates the daily partitions of today through settings.partitions_ahead days ahead, drops those past event_retention (card_events) or history_retention (card_history_second, station_second_slots); then deletes, at most 100,000 rows a call in all, default-partition rows past retention, bridge_dead_letters and bridge_outbound_dead_letters past dead_letter_retention, risk_decisions past decision_retention, station_departures and train_events (once rolled up) past history_retention: one row (action created, kept_in_default, dropped, busy, deleted or more: more rows are past retention, call again; table_name, partition_name, rows: rows deleted, 0 for a new partition, NULL when not counted) per thing done';
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
