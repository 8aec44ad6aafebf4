-- Revision 0013 (frozen): the lag functions take a count limit.
-- worker_lag() and bridge_lag() counted every pending row. The dashboard asks
-- every second, so with the worker or the bridge stopped its cost grew with the
-- backlog, 9 ms per 100,000 rows each time (measured up to 300,000); past about
-- 50 million rows (extrapolated) a refresh would outlast the dashboard's 5 s
-- statement timeout and the page go blank when it is needed most. worker_lag(count_limit) and
-- bridge_lag(count_limit) count at most count_limit + 1 rows; without an
-- argument they count them all, as before.
SET search_path = metro, pg_catalog;

DROP FUNCTION worker_lag();
DROP FUNCTION bridge_lag();

-- functions
-- How many pending rows the lag functions read for a count_limit: one more than
-- it, which tells whether there are more; NULL (or the largest bigint) reads them
-- all. A count_limit below 1 is refused.
CREATE OR REPLACE FUNCTION lag_rows_to_read(function_name text, count_limit bigint,
                                            counted text)
RETURNS bigint LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    IF count_limit < 1 THEN
        RAISE EXCEPTION '%: count_limit must be a positive number of rows or NULL (count them all), got %',
            function_name, count_limit
            USING ERRCODE = '22023',
                  HINT = format('SELECT * FROM %s(100000) counts at most 100,001 pending rows per %s.',
                                function_name, counted);
    END IF;
    RETURN CASE WHEN count_limit < 9223372036854775807 THEN count_limit + 1 END;
END
$$;
COMMENT ON FUNCTION lag_rows_to_read(text, bigint, text) IS 'Rows worker_lag and bridge_lag read for a count_limit: count_limit + 1, NULL (all) for NULL or the largest bigint; 22023 for a count_limit below 1, naming the function';
REVOKE ALL ON FUNCTION lag_rows_to_read(text, bigint, text) FROM PUBLIC;

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
        ELSIF c.source = 'card_alert_export' THEN
            SELECT count(*), min(p.ts) INTO pending, oldest_pending
            FROM (SELECT a.ts FROM card_alert_export a
                  WHERE (a.txid, a.position) > (c.txid, c.position)
                  ORDER BY a.txid, a.position LIMIT rows_to_read) p;
        ELSE
            SELECT count(*), min(p.ts) INTO pending, oldest_pending
            FROM (SELECT te.ts FROM train_events te WHERE te.txid > c.txid
                  ORDER BY te.txid LIMIT rows_to_read) p;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION worker_lag(bigint) IS 'Lag of derived data per source: (source, rolled_up, rolled_up_at, pending, oldest_pending): rows rolled up, when the cursor last moved, committed rows not rolled up yet and the event time of the oldest of them; count_limit (NULL: all) counts at most count_limit + 1 of them, the first in the rollup''s order, so a pending above count_limit means more. 22023 count_limit not positive';
REVOKE ALL ON FUNCTION worker_lag(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION worker_lag(bigint) TO metro_reader, metro_worker;

-- Lag per stream: committed rows not yet acknowledged by Kafka and the event
-- time (the registry's time_column) of the oldest of them. count_limit bounds
-- the count for a caller that asks every second (the dashboard): a bridge
-- down for an hour leaves millions of rows.
CREATE OR REPLACE FUNCTION bridge_lag(count_limit bigint DEFAULT NULL)
RETURNS TABLE (stream text, topic text, delivered bigint, acked_at timestamptz, pending bigint,
               oldest_pending timestamptz)
-- SECURITY DEFINER: metro_reader sees how far each stream is, never a stream row.
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    c record;
    rows_to_read bigint := lag_rows_to_read('bridge_lag', count_limit, 'stream');
BEGIN
    FOR c IN SELECT s.stream, s.topic, s.time_column, bc.delivered, bc.acked_at, bc.txid, bc.position
             FROM streams s JOIN bridge_cursors bc USING (stream)
             ORDER BY s.stream LOOP
        stream := c.stream;
        topic := c.topic;
        delivered := c.delivered;
        acked_at := c.acked_at;
        -- The first pending rows in delivery order, at most count_limit + 1.
        EXECUTE format('SELECT count(*), min(p.%1$I) FROM (SELECT %1$I FROM %2$I'
                       ' WHERE (txid, position) > ($1, $2) ORDER BY txid, position LIMIT $3) p',
                       c.time_column, c.stream)
            INTO pending, oldest_pending USING c.txid, c.position, rows_to_read;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION bridge_lag(bigint) IS 'Per stream: (stream, topic, delivered, acked_at, pending, oldest_pending), rows not yet acknowledged by Kafka and the event time of the oldest of them; count_limit (NULL: all) counts at most count_limit + 1 of them, the first in delivery order, so a pending above count_limit means more. 22023 count_limit not positive';
REVOKE ALL ON FUNCTION bridge_lag(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bridge_lag(bigint) TO metro_bridge, metro_reader;
