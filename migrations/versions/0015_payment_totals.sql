-- Revision 0015 (frozen): payment counters kept by the rollup.
-- dashboard_totals counted risk_decisions on every /metrics scrape, and that
-- table keeps every decision (a repeated transaction_id gets it back), so a
-- scrape read a row for every payment ever decided. The rollup now counts the
-- transaction_decisions stream into payment_totals (two rows), as it counts
-- alerts into card_export_stats, and the bridge prunes a decision only once it
-- is counted: bridge_prune() stops at the rollup's cursor of each stream the
-- rollup reads, in place of a trigger on every deleted alert (which made
-- pruning 3.5 to 4 times slower). The rollup's cursors move through one
-- function, and the sources' TRUNCATE triggers share theirs.
SET search_path = metro, pg_catalog;

-- tables
-- Lifetime counters of the decisions, added to by the rollup from the
-- transaction_decisions stream. /metrics exports them as counters: counted from
-- risk_decisions, which keeps every decision, each scrape read a row per
-- payment ever decided.
CREATE TABLE payment_totals (
    blocked boolean PRIMARY KEY,
    payments bigint NOT NULL CHECK (payments >= 0)
);
COMMENT ON TABLE payment_totals IS 'Payments decided, by decision, counted by the rollup from transaction_decisions; kept when the bridge prunes delivered stream rows, emptied with transaction_decisions by TRUNCATE';
COMMENT ON COLUMN payment_totals.blocked IS 'The decision: blocked (true) or approved (false)';
COMMENT ON COLUMN payment_totals.payments IS 'Decisions of that kind rolled up';

ALTER TABLE worker_cursors DROP CONSTRAINT worker_cursors_source_check,
    ADD CONSTRAINT worker_cursors_source_check
        CHECK (source IN ('card_events', 'card_alert_export', 'train_events', 'transaction_decisions'));
COMMENT ON COLUMN worker_cursors.source IS 'Source table: card_events (per-second history, station counters), card_alert_export (card_export_stats), train_events (station_departures), transaction_decisions (payment_totals)';
COMMENT ON COLUMN worker_cursors.position IS 'event_id (card_events) or stream position (card_alert_export, transaction_decisions) of the last row rolled up; 0 for train_events, read whole transactions at a time';
INSERT INTO worker_cursors (source) VALUES ('transaction_decisions');

-- The counters start with the decisions whose stream rows the bridge has
-- already pruned; the rollup counts the rest from the stream, from its start.
-- The locks wait for the decisions being written and hold new ones back, so
-- every decision is counted once, here or by the rollup.
LOCK TABLE risk_decisions, transaction_decisions IN SHARE MODE;
INSERT INTO payment_totals (blocked, payments)
SELECT r.blocked, count(*) FROM risk_decisions r
WHERE NOT EXISTS (SELECT FROM transaction_decisions d WHERE d.transaction_id = r.transaction_id)
GROUP BY r.blocked;

-- functions
DROP TRIGGER card_events_truncate ON card_events;
DROP TRIGGER card_alert_export_keep_uncounted ON card_alert_export;
DROP TRIGGER card_alert_export_truncate ON card_alert_export;
DROP FUNCTION card_events_clear_history();
DROP FUNCTION card_alert_export_clear_stats();
DROP FUNCTION card_alert_export_keep_uncounted();

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

-- Deletes delivered rows acknowledged more than retention ago, at most
-- max_rows per stream per call, and the cursor history they no longer need. A
-- stream the rollup counts (card_alert_export, transaction_decisions) is pruned
-- only as far as the rollup has read it, so a stopped worker loses no count.
CREATE OR REPLACE FUNCTION bridge_prune(retention interval, max_rows integer)
RETURNS TABLE (stream text, pruned bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    c record;
    mark record;
    counted record;
    n bigint;
BEGIN
    FOR c IN SELECT bc.stream FROM bridge_cursors bc ORDER BY bc.stream LOOP
        SELECT a.txid, a.position INTO mark FROM bridge_acks a
        WHERE a.stream = c.stream AND a.acked_at <= now() - retention
        ORDER BY a.txid DESC, a.position DESC LIMIT 1;
        n := 0;
        IF FOUND THEN
            SELECT w.txid, w.position INTO counted FROM worker_cursors w
            WHERE w.source = c.stream AND (w.txid, w.position) < (mark.txid, mark.position);
            IF FOUND THEN
                mark := counted;
            END IF;
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
COMMENT ON FUNCTION bridge_prune(interval, integer) IS 'Deletes stream rows acknowledged more than retention ago, at most max_rows per stream, and for a stream the rollup counts only rows it has read: (stream, pruned) per stream';

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
    SELECT max(t.txid) INTO last_txid
    FROM (SELECT te.txid FROM train_events te
          WHERE te.txid > cur.txid AND te.txid < horizon
          ORDER BY te.txid LIMIT max_rows) t;
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
                   sum(sl.accepted * extract(epoch FROM te.ts - sl.second_start)) AS wait_seconds
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

REVOKE ALL ON FUNCTION clear_derived(),
    advance_rollup_cursor(text, bigint, xid8, bigint) FROM PUBLIC;

-- triggers
CREATE TRIGGER card_events_truncate AFTER TRUNCATE ON card_events
    FOR EACH STATEMENT
    EXECUTE FUNCTION clear_derived('card_history_second', 'station_second_slots', 'station_totals');
CREATE TRIGGER card_alert_export_truncate AFTER TRUNCATE ON card_alert_export
    FOR EACH STATEMENT EXECUTE FUNCTION clear_derived('card_export_stats');
CREATE TRIGGER transaction_decisions_truncate AFTER TRUNCATE ON transaction_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION clear_derived('payment_totals');

-- views
-- Totals since the data began, for Prometheus counters (metro dashboard's
-- /metrics), from the rollup's lifetime counters as far as it has come: card
-- events per station (one row a station), payments per decision (two rows).
-- Neither is lowered when old history is dropped or delivered stream rows are
-- pruned. One scrape every few seconds, not on the page's refresh.
CREATE OR REPLACE VIEW dashboard_totals AS
SELECT h.swipes, h.entries, h.accepted, h.rejected, h.fraud, h.revenue,
       p.approved, p.blocked
FROM (SELECT coalesce(sum(swipes), 0)::bigint AS swipes,
             coalesce(sum(entries), 0)::bigint AS entries,
             coalesce(sum(accepted), 0)::bigint AS accepted,
             coalesce(sum(rejected), 0)::bigint AS rejected,
             coalesce(sum(fraud), 0)::bigint AS fraud,
             coalesce(sum(revenue), 0)::bigint AS revenue
      FROM station_totals) h
CROSS JOIN (SELECT coalesce(sum(payments) FILTER (WHERE NOT blocked), 0)::bigint AS approved,
                   coalesce(sum(payments) FILTER (WHERE blocked), 0)::bigint AS blocked
            FROM payment_totals) p;
COMMENT ON VIEW dashboard_totals IS 'Totals rolled up so far: card events, entries by outcome and fares (cents) from station_totals, payments approved and blocked from payment_totals; neither falls when old rows are dropped or pruned';
