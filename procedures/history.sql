-- Derived data follows its sources exactly once, by one mechanism for every
-- writer (the functions, batches, COPY, plain INSERT): run_rollup() reads the
-- source rows committed since its cursor, behind the same commit horizon the
-- bridge uses (rows only from transactions older than
-- pg_snapshot_xmin(pg_current_snapshot()), so a row committing late is never
-- skipped), adds them to the derived tables and moves its cursor in the same
-- transaction. A crash anywhere loses nothing and counts nothing twice. The
-- hot path writes none of it: it decides, charges and records.
--
--   card_events       -> card_history_second, station_second_slots, station_totals,
--                        and the departures the new entries belong to
--   card_alert_export -> card_export_stats (kept when the bridge prunes, which
--                        bridge_prune() does only behind this cursor)
--   transaction_decisions -> payment_totals (likewise)
--   train_events      -> station_departures (a new departure, and the next
--                        one at the station, whose window it shortens)
--
-- Also here: the triggers that keep card_events a checked, append-only log.
SET search_path = metro, pg_catalog;

-- functions

-- Checks the stations of the card events a statement inserted, in place of a
-- foreign key (see card_events.station_id): one anti-join per statement, so
-- that a batch (validate_entries, COPY) pays one check rather than a trigger
-- call per row (measured: 12% more swipes/s for validate_entries at 250 per
-- call, the same for single swipes). AFTER the statement, so the error undoes
-- every row of it; the lowest unknown station is named. A statement on the
-- parent table only: inserting into a day's partition directly, which only
-- the schema's owner may do, is not checked. Nor are the rows the schema's
-- functions write for another session user (the owner, who may create in
-- schema metro, writing for someone else): validate_entry(ies), process_exit
-- and recharge_card refuse an unknown station before they record a swipe, and
-- checking it a second time was a fifth of the least a swipe costs. A direct
-- INSERT or COPY, the owner's too, is checked.
CREATE OR REPLACE FUNCTION card_events_check_station()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
DECLARE
    v_unknown integer;
BEGIN
    IF session_user <> current_user AND has_schema_privilege('metro', 'CREATE') THEN
        RETURN NULL;
    END IF;
    SELECT min(n.station_id) INTO v_unknown FROM new_events n
    WHERE NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = n.station_id);
    IF v_unknown IS NOT NULL THEN
        PERFORM raise_unknown_station(v_unknown);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION card_events_check_station() IS 'Statement trigger: refuses the card events of a statement when one has an unknown station (MT001, naming the lowest); leaves out the rows the schema''s functions write for another session user, which refuse an unknown station themselves';

-- Events are facts: changing or deleting one would make the history lie.
CREATE OR REPLACE FUNCTION card_events_refuse_change()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'card_events is append-only: % refused', TG_OP
        USING ERRCODE = 'MT006',
              HINT = 'Record a new event instead; TRUNCATE clears the events and their history together; run_maintenance() drops days past settings.event_retention.';
END
$$;
COMMENT ON FUNCTION card_events_refuse_change() IS 'Trigger: card_events is append-only, UPDATE and DELETE are refused (MT006)';

-- TRUNCATE of a source empties the tables derived from it, named by the
-- trigger's arguments (the schema's own names, never a caller's).
CREATE OR REPLACE FUNCTION clear_derived()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    EXECUTE 'TRUNCATE ' || (SELECT string_agg(format('%I', t), ', ') FROM unnest(TG_ARGV) t);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION clear_derived() IS 'Trigger: TRUNCATE of a source table empties the derived tables named by the trigger''s arguments';

-- Moves a rollup cursor past the rows_rolled_up rows just rolled up, in the
-- transaction that wrote what they add up to; nothing when there were none.
CREATE OR REPLACE FUNCTION advance_rollup_cursor(source text, rows_rolled_up bigint,
                                                 last_txid xid8, last_position bigint)
RETURNS void LANGUAGE sql SET search_path = metro, pg_temp AS $$
    UPDATE worker_cursors c
    SET txid = $3, position = $4, rolled_up = c.rolled_up + $2, rolled_up_at = now()
    WHERE c.source = $1 AND $2 > 0
$$;
COMMENT ON FUNCTION advance_rollup_cursor(text, bigint, xid8, bigint) IS 'Moves the rollup cursor of a source to (last_txid, last_position) and counts rows_rolled_up more rows, when there were any';

-- The rows of table_name the rollup has not read yet, as an SQL condition on
-- its columns (the cursor as literals, so that an index serves it); NULL when
-- the rollup reads no rows of the table that anything else deletes.
-- run_maintenance() drops or deletes nothing the condition holds for: a
-- stopped worker, or one held back by a long transaction, loses nothing.
CREATE OR REPLACE FUNCTION rollup_unread(table_name text)
RETURNS text LANGUAGE sql STABLE SET search_path = metro, pg_temp AS $$
    SELECT CASE c.source
               WHEN 'card_events' THEN format('(txid, event_id) > (%L::xid8, %s)', c.txid, c.position)
               -- Whole transactions at a time: its cursor's position is not used.
               WHEN 'train_events' THEN format('txid > %L::xid8', c.txid)
           END
    FROM worker_cursors c
    WHERE c.source = $1
$$;
COMMENT ON FUNCTION rollup_unread(text) IS 'The rows of card_events or train_events the rollup has not read yet, as an SQL condition (NULL for other tables): run_maintenance() keeps them';
REVOKE ALL ON FUNCTION rollup_unread(text) FROM PUBLIC;

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
COMMENT ON FUNCTION run_rollup(integer) IS 'One round of the rollup: at most max_rows committed rows of each source (card_events, card_alert_export, train_events, transaction_decisions) after its cursor and behind the commit horizon, added once to card_history_second, station_second_slots, station_totals, card_export_stats, station_departures and payment_totals, the cursor moved in the same transaction; (source, rolled_up, full_round) per source. 22023 max_rows not positive';
REVOKE ALL ON FUNCTION run_rollup(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION run_rollup(integer) TO metro_worker;

-- How far derived data lags behind its sources: per source, the rows rolled
-- up so far and when the cursor last moved, the committed rows not rolled up
-- yet and the event time of the oldest of them. Cost grows with the lag, not
-- with the table; count_limit bounds it for a caller that asks every second
-- (the dashboard), whatever the backlog: a worker stopped for an hour leaves
-- millions of rows, and counting them all took 9 ms per 100,000.
CREATE OR REPLACE FUNCTION worker_lag(count_limit bigint DEFAULT NULL)
RETURNS TABLE (source text, rolled_up bigint, rolled_up_at timestamptz, pending bigint,
               oldest_pending timestamptz)
-- SECURITY DEFINER: metro_reader sees how far the rollup is, never a source row.
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    c record;
    rows_to_read bigint := lag_rows_to_read('worker_lag', count_limit, 'source');
BEGIN
    -- The first pending rows in the rollup's order, at most count_limit + 1 of
    -- them: a pending above count_limit says there are more.
    FOR c IN SELECT * FROM worker_cursors wc ORDER BY wc.source LOOP
        source := c.source;
        rolled_up := c.rolled_up;
        rolled_up_at := c.rolled_up_at;
        IF c.source = 'card_events' THEN
            SELECT count(*), min(p.ts) INTO pending, oldest_pending
            FROM (SELECT e.ts FROM card_events e
                  WHERE (e.txid, e.event_id) > (c.txid, c.position)
                  ORDER BY e.txid, e.event_id LIMIT rows_to_read) p;
        ELSIF c.source = 'train_events' THEN
            SELECT count(*), min(p.ts) INTO pending, oldest_pending
            FROM (SELECT te.ts FROM train_events te WHERE te.txid > c.txid
                  ORDER BY te.txid LIMIT rows_to_read) p;
        ELSE
            -- A stream (card_alert_export, transaction_decisions): the table is
            -- named by the cursor's row, which the schema writes.
            EXECUTE format('SELECT count(*), min(p.ts) FROM (SELECT s.ts FROM %I s'
                           ' WHERE (s.txid, s.position) > ($1, $2)'
                           ' ORDER BY s.txid, s.position LIMIT $3) p', c.source)
                INTO pending, oldest_pending USING c.txid, c.position, rows_to_read;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION worker_lag(bigint) IS 'Lag of derived data per source: (source, rolled_up, rolled_up_at, pending, oldest_pending): rows rolled up, when the cursor last moved, committed rows not rolled up yet and the event time of the oldest of them; count_limit (NULL: all) counts at most count_limit + 1 of them, the first in the rollup''s order, so a pending above count_limit means more. 22023 count_limit not positive';
REVOKE ALL ON FUNCTION worker_lag(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION worker_lag(bigint) TO metro_reader, metro_worker;

-- triggers
CREATE TRIGGER card_events_station AFTER INSERT ON card_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION card_events_check_station();
CREATE TRIGGER card_events_append_only BEFORE UPDATE OR DELETE ON card_events
    FOR EACH STATEMENT EXECUTE FUNCTION card_events_refuse_change();
CREATE TRIGGER card_events_truncate AFTER TRUNCATE ON card_events
    FOR EACH STATEMENT
    EXECUTE FUNCTION clear_derived('card_history_second', 'station_second_slots', 'station_totals');
CREATE TRIGGER card_alert_export_truncate AFTER TRUNCATE ON card_alert_export
    FOR EACH STATEMENT EXECUTE FUNCTION clear_derived('card_export_stats');
CREATE TRIGGER transaction_decisions_truncate AFTER TRUNCATE ON transaction_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION clear_derived('payment_totals');
