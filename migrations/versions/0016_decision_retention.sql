-- Revision 0016 (frozen): payment decisions leave by retention.
-- risk_decisions kept every decision forever (a repeated transaction_id gets
-- its recorded decision back): at the payments benchmark's 6,000 decisions/s,
-- half a billion rows a day. run_maintenance() now deletes those decided
-- longer ago than settings.decision_retention (30 days), at most 100,000 a
-- call, oldest first, and says 'more' when a call is due again. The outbound
-- dead letters leave by dead_letter_retention, as the inbound ones did, and
-- station_wait_times counts riders as a bigint (an integer overflowed). The
-- train events (once rolled up) and the departures leave by history_retention.
SET search_path = metro, pg_catalog;

-- tables
ALTER TABLE settings ADD COLUMN decision_retention interval NOT NULL DEFAULT '30 days'
    CHECK (decision_retention >= interval '1 day');
COMMENT ON COLUMN settings.dead_letter_retention IS 'run_maintenance() deletes the bridge''s dead letters (bridge_dead_letters, bridge_outbound_dead_letters) set aside longer ago than this (default 30 days)';
COMMENT ON COLUMN settings.history_retention IS 'run_maintenance() drops a daily partition of card_history_second and station_second_slots once all of it is older than this, and deletes older train_events and station_departures rows (default 90 days)';
COMMENT ON COLUMN settings.decision_retention IS 'run_maintenance() deletes risk_decisions rows decided longer ago than this (default 30 days; at least 1 day): a transaction_id is answered with its recorded decision for this long, and decided afresh if it comes again later';

-- functions
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

-- views
DROP VIEW station_wait_times;
-- Over every departure kept: riders as bigint, since an integer overflowed (and the
-- view failed) once a station's riders passed 2,147,483,647.
CREATE VIEW station_wait_times AS
SELECT st.station_id, st.name, count(*)::integer AS departures, sum(d.riders)::bigint AS riders,
       round(sum(d.wait_seconds) / nullif(sum(d.riders), 0), 1) AS average_wait_seconds
FROM station_departures d
JOIN stations st USING (station_id)
GROUP BY st.station_id, st.name;
COMMENT ON VIEW station_wait_times IS 'Average wait per station over the departures kept (settings.history_retention): seconds between a rider''s entry and the next departure';
GRANT SELECT ON station_wait_times TO metro_reader;
