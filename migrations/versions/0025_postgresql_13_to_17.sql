-- Revision 0025 (frozen): metro on PostgreSQL 13 to 17.
-- - validate_entry, validate_entries, process_exit and is_fraud run with jit
--   off. They run with enable_seqscan off, and before PostgreSQL 18 a disabled
--   scan is costed 10^10, far over jit_above_cost: on a server built with JIT
--   (Debian's and most packages are) every call compiled its statements
--   (measured on PostgreSQL 15: 90 ms a swipe instead of 0.1).
-- - run_rollup finds the last train_events transaction of a round without
--   max(xid8), which PostgreSQL 13 does not have: the rollup failed there at
--   its first departure; and it sums the seconds riders waited as numeric
--   (extract() gives double precision before 14).
-- - create_partitions comments a new partition with its day in ISO form
--   whatever the caller's DateStyle ("card_events of 12/02/2026" under SQL, MDY).
-- Only functions change: the upgrade takes no lock on a table.
SET search_path = metro, pg_catalog;

ALTER FUNCTION validate_entry(bigint, integer, timestamptz) SET jit = off;
ALTER FUNCTION validate_entries(bigint[], integer[], timestamptz[]) SET jit = off;
ALTER FUNCTION process_exit(bigint, integer, timestamptz) SET jit = off;
ALTER FUNCTION is_fraud(bigint, integer, timestamptz) SET jit = off;

-- One round of the rollup: at most max_rows rows of each source, committed
-- before the commit horizon, after the source's cursor, in (txid, position)
-- order. Returns per source the rows rolled up and whether the round was
-- full (more may be waiting). Concurrent callers queue on the cursors' row
-- locks and each sees the cursors the one before moved, so two workers, or
-- a worker and pg_cron, never count a row twice.
CREATE OR REPLACE FUNCTION run_rollup(max_rows integer DEFAULT 10000)
RETURNS TABLE (source text, rolled_up bigint, full_round boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    horizon xid8;
    cur record;
    n bigint;
    last_txid xid8;
    last_position bigint;
    dep_stations integer[] := '{}';
    dep_ts timestamptz[] := '{}';
    more_stations integer[];
    more_ts timestamptz[];
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'run_rollup: max_rows must be a positive number of rows, got %',
            coalesce(max_rows::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'SELECT * FROM run_rollup(10000) rolls up at most 10,000 rows of each source.';
    END IF;
    -- One rollup at a time; the horizon is taken once the cursors are ours.
    PERFORM FROM worker_cursors c ORDER BY c.source FOR UPDATE;
    horizon := pg_snapshot_xmin(pg_current_snapshot());

    -- card_events: per-second history and station counters.
    SELECT * INTO cur FROM worker_cursors c WHERE c.source = 'card_events';
    WITH batch AS MATERIALIZED (
        SELECT e.event_id, e.txid, e.card_id, date_trunc('second', e.ts) AS second_start,
               e.station_id, e.activity_code, e.amount, e.accept
        FROM card_events e
        WHERE (e.txid, e.event_id) > (cur.txid, cur.position) AND e.txid < horizon
        ORDER BY e.txid, e.event_id
        LIMIT max_rows
    ), card_seconds AS (
        INSERT INTO card_history_second AS h (card_id, second_start, swipes)
        SELECT b.card_id, b.second_start, count(*) FROM batch b
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (card_id, second_start) DO UPDATE SET swipes = h.swipes + excluded.swipes
    ), per_station_second AS (
        SELECT b.station_id, b.second_start, count(*) AS swipes,
               count(*) FILTER (WHERE b.activity_code = 1) AS entries,
               count(*) FILTER (WHERE b.activity_code = 1 AND b.accept = 1) AS accepted,
               count(*) FILTER (WHERE b.activity_code = 1 AND b.accept = 0) AS rejected,
               count(*) FILTER (WHERE b.activity_code = 1 AND b.accept = -1) AS fraud,
               coalesce(sum(b.amount) FILTER (WHERE b.activity_code = 1 AND b.accept = 1), 0)
                   AS revenue
        FROM batch b
        GROUP BY 1, 2
    ), station_seconds AS (
        INSERT INTO station_second_slots AS s
            (station_id, second_start, swipes, entries, accepted, rejected, fraud, revenue)
        SELECT * FROM per_station_second ORDER BY 1, 2
        ON CONFLICT (station_id, second_start) DO UPDATE SET
            swipes = s.swipes + excluded.swipes,
            entries = s.entries + excluded.entries,
            accepted = s.accepted + excluded.accepted,
            rejected = s.rejected + excluded.rejected,
            fraud = s.fraud + excluded.fraud,
            revenue = s.revenue + excluded.revenue
    ), station_totals_added AS (
        INSERT INTO station_totals AS t
            (station_id, swipes, entries, accepted, rejected, fraud, revenue)
        SELECT p.station_id, sum(p.swipes), sum(p.entries), sum(p.accepted), sum(p.rejected),
               sum(p.fraud), sum(p.revenue)
        FROM per_station_second p
        GROUP BY 1 ORDER BY 1
        ON CONFLICT (station_id) DO UPDATE SET
            swipes = t.swipes + excluded.swipes,
            entries = t.entries + excluded.entries,
            accepted = t.accepted + excluded.accepted,
            rejected = t.rejected + excluded.rejected,
            fraud = t.fraud + excluded.fraud,
            revenue = t.revenue + excluded.revenue
    ), boarded AS (
        -- An accepted entry waits for the first departure at or after its second.
        SELECT DISTINCT d.station_id, d.ts
        FROM (SELECT DISTINCT b.station_id, b.second_start FROM batch b
              WHERE b.activity_code = 1 AND b.accept = 1) x
        CROSS JOIN LATERAL (
            SELECT te.station_id, te.ts FROM train_events te
            WHERE te.station_id = x.station_id AND te.activity_type = 1 AND te.ts >= x.second_start
            ORDER BY te.ts LIMIT 1) d
    ), last_row AS (
        SELECT b.txid, b.event_id FROM batch b ORDER BY b.txid DESC, b.event_id DESC LIMIT 1
    )
    SELECT (SELECT count(*) FROM batch), l.txid, l.event_id,
           coalesce((SELECT array_agg(bo.station_id ORDER BY bo.station_id, bo.ts) FROM boarded bo), '{}'),
           coalesce((SELECT array_agg(bo.ts ORDER BY bo.station_id, bo.ts) FROM boarded bo), '{}')
    INTO n, last_txid, last_position, dep_stations, dep_ts
    FROM (SELECT 1) one LEFT JOIN last_row l ON true;
    PERFORM advance_rollup_cursor('card_events', n, last_txid, last_position);
    source := 'card_events'; rolled_up := n; full_round := n = max_rows;
    RETURN NEXT;

    -- card_alert_export: alerts per card and station.
    SELECT * INTO cur FROM worker_cursors c WHERE c.source = 'card_alert_export';
    WITH batch AS MATERIALIZED (
        SELECT a.position, a.txid, a.card_id, a.station_name
        FROM card_alert_export a
        WHERE (a.txid, a.position) > (cur.txid, cur.position) AND a.txid < horizon
        ORDER BY a.txid, a.position
        LIMIT max_rows
    ), counted AS (
        INSERT INTO card_export_stats AS x (card_id, station_name, alerts)
        SELECT b.card_id, b.station_name, count(*) FROM batch b
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (card_id, station_name) DO UPDATE SET alerts = x.alerts + excluded.alerts
    ), last_row AS (
        SELECT b.txid, b.position FROM batch b ORDER BY b.txid DESC, b.position DESC LIMIT 1
    )
    SELECT (SELECT count(*) FROM batch), l.txid, l.position
    INTO n, last_txid, last_position
    FROM (SELECT 1) one LEFT JOIN last_row l ON true;
    PERFORM advance_rollup_cursor('card_alert_export', n, last_txid, last_position);
    source := 'card_alert_export'; rolled_up := n; full_round := n = max_rows;
    RETURN NEXT;

    -- transaction_decisions: payments by decision.
    SELECT * INTO cur FROM worker_cursors c WHERE c.source = 'transaction_decisions';
    WITH batch AS MATERIALIZED (
        SELECT d.position, d.txid, d.blocked
        FROM transaction_decisions d
        WHERE (d.txid, d.position) > (cur.txid, cur.position) AND d.txid < horizon
        ORDER BY d.txid, d.position
        LIMIT max_rows
    ), counted AS (
        INSERT INTO payment_totals AS t (blocked, payments)
        SELECT b.blocked, count(*) FROM batch b
        GROUP BY 1 ORDER BY 1
        ON CONFLICT (blocked) DO UPDATE SET payments = t.payments + excluded.payments
    ), last_row AS (
        SELECT b.txid, b.position FROM batch b ORDER BY b.txid DESC, b.position DESC LIMIT 1
    )
    SELECT (SELECT count(*) FROM batch), l.txid, l.position
    INTO n, last_txid, last_position
    FROM (SELECT 1) one LEFT JOIN last_row l ON true;
    PERFORM advance_rollup_cursor('transaction_decisions', n, last_txid, last_position);
    source := 'transaction_decisions'; rolled_up := n; full_round := n = max_rows;
    RETURN NEXT;

    -- train_events: whole transactions at a time (up to the one holding the
    -- max_rows-th row). A new departure is computed, and so is the next
    -- departure at its station, whose waiting window it shortens.
    SELECT * INTO cur FROM worker_cursors c WHERE c.source = 'train_events';
    -- The last of the first max_rows (xid8 has no max() before PostgreSQL 14).
    SELECT t.txid INTO last_txid
    FROM (SELECT te.txid FROM train_events te
          WHERE te.txid > cur.txid AND te.txid < horizon
          ORDER BY te.txid LIMIT max_rows) t
    ORDER BY t.txid DESC LIMIT 1;
    n := 0;
    IF last_txid IS NOT NULL THEN
        WITH departed AS (
            SELECT te.station_id, te.ts FROM train_events te
            WHERE te.txid > cur.txid AND te.txid <= last_txid AND te.activity_type = 1
        ), affected AS (
            SELECT d.station_id, d.ts FROM departed d
            UNION
            SELECT nx.station_id, nx.ts FROM departed d
            CROSS JOIN LATERAL (
                SELECT te.station_id, te.ts FROM train_events te
                WHERE te.station_id = d.station_id AND te.activity_type = 1 AND te.ts > d.ts
                ORDER BY te.ts LIMIT 1) nx
        )
        SELECT (SELECT count(*) FROM train_events te WHERE te.txid > cur.txid AND te.txid <= last_txid),
               coalesce(array_agg(a.station_id), '{}'), coalesce(array_agg(a.ts), '{}')
        INTO n, more_stations, more_ts
        FROM affected a;
        dep_stations := dep_stations || more_stations;
        dep_ts := dep_ts || more_ts;
        PERFORM advance_rollup_cursor('train_events', n, last_txid, 0);
    END IF;

    -- The departures touched above, recomputed from the station counters:
    -- the accepted entries since the previous departure from the station (at
    -- most settings.max_wait back), one-second buckets, a bucket belonging to
    -- the first departure at or after its start.
    IF cardinality(dep_stations) > 0 THEN
        INSERT INTO station_departures AS sd (station_id, train_id, ts, riders, wait_seconds)
        SELECT te.station_id, te.train_id, te.ts, coalesce(w.riders, 0), coalesce(w.wait_seconds, 0)
        FROM (SELECT DISTINCT a.station_id, a.ts FROM unnest(dep_stations, dep_ts) a(station_id, ts)) a
        JOIN train_events te ON te.station_id = a.station_id AND te.ts = a.ts AND te.activity_type = 1
        CROSS JOIN settings s
        CROSS JOIN LATERAL (
            SELECT greatest(max(p.ts), te.ts - s.max_wait) AS since FROM train_events p
            WHERE p.station_id = te.station_id AND p.activity_type = 1 AND p.ts < te.ts) prev
        CROSS JOIN LATERAL (
            SELECT sum(sl.accepted)::integer AS riders,
                   sum(sl.accepted * extract(epoch FROM te.ts - sl.second_start)::numeric)
                       AS wait_seconds
            FROM station_second_slots sl
            WHERE sl.station_id = te.station_id
              AND sl.second_start > date_trunc('second', prev.since) AND sl.second_start <= te.ts) w
        ORDER BY 1, 3, 2
        ON CONFLICT (station_id, ts, train_id) DO UPDATE
            SET riders = excluded.riders, wait_seconds = excluded.wait_seconds;
    END IF;
    source := 'train_events'; rolled_up := n; full_round := n >= max_rows;
    RETURN NEXT;
END
$$;

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
