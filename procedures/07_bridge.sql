-- The bridge's side of the streams: the NOTIFY wake-up, reading past the
-- commit horizon, acknowledging, pruning and lag. The bridge (bridge/) calls
-- these as metro_bridge; Kafka never sees a row before every transaction that
-- could still commit an earlier row has finished.
SET search_path = metro, pg_catalog;

-- functions

-- Wakes the bridge when it sleeps. NOTIFY serializes committing transactions
-- on a cluster-wide lock, so a writer notifies only while the bridge is idle:
-- an idle bridge holds advisory lock (1836348002, 2) exclusively. A writer
-- that finds it free takes it shared until commit instead, so the bridge
-- cannot go idle before that writer's row is visible to its last look.
-- Statement-level, and PostgreSQL folds identical notifications of a
-- transaction: at most one per transaction. bridge_settings.notify = false
-- leaves the bridge to its polling alone.
CREATE OR REPLACE FUNCTION notify_bridge()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    IF (SELECT s.notify FROM bridge_settings s)
       AND NOT pg_try_advisory_xact_lock_shared(1836348002, 2) THEN
        PERFORM pg_notify('metro_bridge', TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END
$$;

-- The bridge's reads, for every stream in bridge_cursors: the next rows after
-- (after_txid, after_position) in (txid, position) order, only from
-- transactions below the snapshot's xmin: those have all ended, so no row can
-- later appear before the last one returned. value is the stream row without
-- position and txid, columns in table order, timestamps in UTC; key is its
-- key_column.
CREATE OR REPLACE FUNCTION bridge_batch(stream text, after_txid xid8, after_position bigint, max_rows integer)
RETURNS TABLE (row_txid xid8, row_position bigint, key text, value text)
LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp SET TimeZone = 'UTC' AS $$
DECLARE
    -- The same snapshot serves the horizon and the read below (STABLE).
    horizon xid8 := pg_snapshot_xmin(pg_current_snapshot());
    v_key text := bridge_stream_key(stream);
    v_columns text;
BEGIN
    SELECT string_agg(format('s.%I', a.attname), ', ' ORDER BY a.attnum) INTO v_columns
    FROM pg_attribute a
    WHERE a.attrelid = format('metro.%I', stream)::regclass AND a.attnum > 0
      AND NOT a.attisdropped AND a.attname NOT IN ('position', 'txid');
    RETURN QUERY EXECUTE format(
        'SELECT s.txid, s.position, s.%I::text, row_to_json(v)::text FROM %I s'
        ' CROSS JOIN LATERAL (SELECT %s) v'
        ' WHERE (s.txid, s.position) > ($1, $2) AND s.txid < $3'
        ' ORDER BY s.txid, s.position LIMIT $4', v_key, stream, v_columns)
        USING after_txid, after_position, horizon, max_rows;
END
$$;

-- Whether committed rows of a stream follow (after_txid, after_position),
-- readable yet or still held back by the commit horizon.
CREATE OR REPLACE FUNCTION bridge_has_rows(stream text, after_txid xid8, after_position bigint)
RETURNS boolean LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    found boolean;
BEGIN
    PERFORM bridge_stream_key(stream);
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE (txid, position) > ($1, $2))', stream)
        INTO found USING after_txid, after_position;
    RETURN found;
END
$$;

-- The Kafka key column of a registered stream; MT005 for any other name, so
-- only bridge_cursors' streams ever reach the dynamic SQL above.
CREATE OR REPLACE FUNCTION bridge_stream_key(stream text)
RETURNS text LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    v_key text;
BEGIN
    SELECT c.key_column INTO v_key FROM bridge_cursors c WHERE c.stream = bridge_stream_key.stream;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Unknown stream: %', stream
            USING ERRCODE = 'MT005',
                  HINT = 'Streams are the rows of metro.bridge_cursors.';
    END IF;
    RETURN v_key;
END
$$;

-- Records that Kafka acknowledged a stream up to (last_txid, last_position).
-- The cursor only moves forward; a stale bridge cannot move it back.
CREATE OR REPLACE FUNCTION bridge_ack(stream text, last_txid xid8, last_position bigint, rows_acked bigint)
RETURNS boolean LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
DECLARE
    p_stream ALIAS FOR $1;
BEGIN
    UPDATE bridge_cursors c
    SET txid = last_txid, position = last_position, delivered = c.delivered + rows_acked,
        acked_at = now()
    WHERE c.stream = p_stream AND (c.txid, c.position) < (last_txid, last_position);
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO bridge_acks (stream, txid, position) VALUES (p_stream, last_txid, last_position)
    ON CONFLICT DO NOTHING;
    RETURN true;
END
$$;

-- Deletes delivered rows acknowledged more than retention ago, at most
-- max_rows per stream per call, and the cursor history they no longer need.
CREATE OR REPLACE FUNCTION bridge_prune(retention interval, max_rows integer)
RETURNS TABLE (stream text, pruned bigint)
LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
DECLARE
    c record;
    mark record;
    n bigint;
BEGIN
    FOR c IN SELECT bc.stream FROM bridge_cursors bc ORDER BY bc.stream LOOP
        SELECT a.txid, a.position INTO mark FROM bridge_acks a
        WHERE a.stream = c.stream AND a.acked_at <= now() - retention
        ORDER BY a.txid DESC, a.position DESC LIMIT 1;
        n := 0;
        IF FOUND THEN
            -- Table names come from bridge_cursors' CHECK list, never from a caller.
            EXECUTE format('DELETE FROM %I WHERE position IN (SELECT position FROM %I'
                           ' WHERE (txid, position) <= ($1, $2) ORDER BY txid, position LIMIT $3)',
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

-- Lag per stream: committed rows not yet acknowledged by Kafka and the event
-- time of the oldest of them (ts; exit_ts for trips).
CREATE OR REPLACE FUNCTION bridge_lag()
RETURNS TABLE (stream text, topic text, delivered bigint, acked_at timestamptz, pending bigint,
               oldest_pending timestamptz)
LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT * FROM bridge_cursors bc ORDER BY bc.stream LOOP
        stream := c.stream;
        topic := c.topic;
        delivered := c.delivered;
        acked_at := c.acked_at;
        EXECUTE format('SELECT count(*), min(%I) FROM %I WHERE (txid, position) > ($1, $2)',
                       CASE c.stream WHEN 'trips' THEN 'exit_ts' ELSE 'ts' END, c.stream)
            INTO pending, oldest_pending USING c.txid, c.position;
        RETURN NEXT;
    END LOOP;
END
$$;

-- triggers
DROP TRIGGER IF EXISTS fraud_notify_bridge ON fraud;
CREATE TRIGGER fraud_notify_bridge AFTER INSERT ON fraud
    FOR EACH STATEMENT EXECUTE FUNCTION notify_bridge();
DROP TRIGGER IF EXISTS card_alert_export_notify_bridge ON card_alert_export;
CREATE TRIGGER card_alert_export_notify_bridge AFTER INSERT ON card_alert_export
    FOR EACH STATEMENT EXECUTE FUNCTION notify_bridge();
DROP TRIGGER IF EXISTS trips_notify_bridge ON trips;
CREATE TRIGGER trips_notify_bridge AFTER INSERT ON trips
    FOR EACH STATEMENT EXECUTE FUNCTION notify_bridge();

-- grants
REVOKE ALL ON FUNCTION bridge_batch(text, xid8, bigint, integer),
    bridge_has_rows(text, xid8, bigint), bridge_stream_key(text),
    bridge_ack(text, xid8, bigint, bigint), bridge_prune(interval, integer), bridge_lag()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bridge_batch(text, xid8, bigint, integer),
    bridge_has_rows(text, xid8, bigint), bridge_stream_key(text),
    bridge_ack(text, xid8, bigint, bigint), bridge_prune(interval, integer), bridge_lag()
    TO metro_bridge;
GRANT EXECUTE ON FUNCTION bridge_lag() TO metro_reader;
-- Inbound topics feed these functions.
GRANT EXECUTE ON FUNCTION record_train_event(integer, integer, integer, timestamptz),
    recharge_card(bigint, integer, integer, timestamptz) TO metro_bridge;
