-- The bridge's side of the streams: registering a stream, the NOTIFY
-- wake-up, reading past the commit horizon, acknowledging, pruning and lag.
-- All of them read the registry metro.streams. The bridge (bridge/) calls
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
COMMENT ON FUNCTION notify_bridge() IS 'Trigger on every stream: NOTIFY metro_bridge, only while the bridge sleeps (it holds advisory lock (1836348002, 2)) and bridge_settings.notify is on';

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

-- The bridge's reads, for every registered stream: the next rows after
-- (after_txid, after_position) in (txid, position) order, only from
-- transactions below the snapshot's xmin: those have all ended, so no row can
-- later appear before the last one returned; the cursor moves to the last of
-- them (ahead false). Kafka must see a key's rows in commit order, which is
-- their position order (writers of one key are serialized: a card's row
-- lock, a payment's risk_decisions row); transaction ids are taken at a
-- transaction's first write, so a transaction that waited for a card's lock
-- can hold a smaller txid than the one it waited for. So the rows of the
-- same keys with a smaller position that lie beyond the batch are returned
-- too (ahead true: committed, sent before their successors, delivered again
-- when the cursor reaches them), and everything comes in position order.
-- value is the stream row without position and txid, columns in table
-- order, timestamps in UTC; key is its key_column.
CREATE OR REPLACE FUNCTION bridge_batch(stream text, after_txid xid8, after_position bigint, max_rows integer)
RETURNS TABLE (row_txid xid8, row_position bigint, key text, value text, ahead boolean)
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
        'WITH batch AS MATERIALIZED ('
        '    SELECT s.txid, s.position, s.%1$I AS k FROM %2$I s'
        '    WHERE (s.txid, s.position) > ($1, $2) AND s.txid < $3'
        '    ORDER BY s.txid, s.position LIMIT $4'
        '), last AS ('
        '    SELECT b.txid, b.position FROM batch b ORDER BY b.txid DESC, b.position DESC LIMIT 1'
        '), earlier AS ('
        -- One (key, position) index range per key of the batch: OFFSET 0 keeps the
        -- planner from turning the lookup into a hash join over the whole stream.
        '    SELECT e.txid, e.position FROM (SELECT b.k, max(b.position) AS p FROM batch b'
        '                                    GROUP BY b.k) keys'
        '    CROSS JOIN last'
        '    CROSS JOIN LATERAL (SELECT s.txid, s.position FROM %2$I s'
        '                        WHERE s.%1$I = keys.k AND s.position < keys.p'
        '                          AND (s.txid, s.position) > (last.txid, last.position)'
        '                        OFFSET 0) e'
        '), picked AS ('
        '    SELECT b.txid, b.position, false AS ahead FROM batch b'
        '    UNION ALL SELECT e.txid, e.position, true FROM earlier e'
        ')'
        ' SELECT s.txid, s.position, s.%1$I::text, row_to_json(v)::text, p.ahead'
        ' FROM picked p CROSS JOIN LATERAL (SELECT * FROM %2$I r'
        '     WHERE (r.txid, r.position) = (p.txid, p.position) OFFSET 0) s'
        ' CROSS JOIN LATERAL (SELECT %3$s) v'
        ' ORDER BY s.position', v_key, stream, v_columns)
        USING after_txid, after_position, horizon, max_rows;
END
$$;
COMMENT ON FUNCTION bridge_batch(text, xid8, bigint, integer) IS 'The next rows of a stream after (after_txid, after_position) in (txid, position) order and below the commit horizon, with the rows of the same keys and a smaller position beyond them (ahead), all in position order: (row_txid, row_position, key, value, ahead), the Kafka key and the row as JSON; MT005 unknown stream';

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
COMMENT ON FUNCTION bridge_has_rows(text, xid8, bigint) IS 'Whether committed rows of a stream follow (after_txid, after_position), readable yet or held back by the commit horizon; MT005 unknown stream';

-- The Kafka key column of a registered stream; MT005 for any other name, so
-- only registered streams ever reach the dynamic SQL above.
CREATE OR REPLACE FUNCTION bridge_stream_key(stream text)
RETURNS text LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    v_key text;
BEGIN
    SELECT s.key_column INTO v_key FROM streams s WHERE s.stream = bridge_stream_key.stream;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Unknown stream: %', stream
            USING ERRCODE = 'MT005',
                  HINT = 'Streams are the rows of metro.streams.';
    END IF;
    RETURN v_key;
END
$$;
COMMENT ON FUNCTION bridge_stream_key(text) IS 'The Kafka key column of a registered stream; MT005 unknown stream';

-- The lease: only one bridge sends. It is a row of bridge_state (holder,
-- backend pid and start, expiry), taken, renewed and released only through
-- these functions, which only metro_bridge may execute: no other role can
-- hold it (an advisory lock could be taken by any role). A lease is stale
-- when its expiry passed or its backend is gone (pg_stat_activity); a stale
-- lease is taken over. A bridge that lost its lease is refused (MT012) when it
-- tries to move a cursor.

-- Whether the lease is held by a live session other than this one.
CREATE OR REPLACE FUNCTION bridge_lease_held_elsewhere()
RETURNS boolean LANGUAGE sql STABLE SET search_path = metro, pg_temp AS $$
    SELECT s.lease_pid IS NOT NULL AND s.lease_pid <> pg_backend_pid()
           AND s.lease_expires > clock_timestamp()
           AND EXISTS (SELECT FROM pg_stat_activity a
                       WHERE a.pid = s.lease_pid
                         AND (a.backend_start IS NULL OR s.lease_backend_start IS NULL
                              OR a.backend_start = s.lease_backend_start))
    FROM bridge_state s
$$;
COMMENT ON FUNCTION bridge_lease_held_elsewhere() IS 'Whether another live session holds a lease that has not expired';

-- Takes the lease for holder (host:pid) when it is free, stale or already
-- this session's; true when this session holds it afterwards. ttl: how long
-- it lasts without bridge_renew_lease().
CREATE OR REPLACE FUNCTION bridge_take_lease(holder text, ttl interval)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_holder ALIAS FOR $1;
BEGIN
    IF p_holder IS NULL THEN PERFORM raise_null_argument('bridge_take_lease', 'holder'); END IF;
    IF ttl IS NULL THEN PERFORM raise_null_argument('bridge_take_lease', 'ttl'); END IF;
    IF ttl <= interval '0' OR ttl > interval '1 hour' THEN
        RAISE EXCEPTION 'bridge_take_lease: ttl must be above 0 and at most 1 hour, got %', ttl
            USING ERRCODE = '22023', HINT = 'The bridge renews its lease every few seconds: 30 seconds is plenty.';
    END IF;
    PERFORM FROM bridge_state FOR UPDATE;
    IF bridge_lease_held_elsewhere() THEN
        RETURN false;
    END IF;
    UPDATE bridge_state s
    SET holder = left(p_holder, 200),
        since = CASE WHEN s.lease_pid = pg_backend_pid() THEN s.since ELSE now() END,
        heartbeat_at = now(), lease_pid = pg_backend_pid(),
        lease_backend_start = (SELECT a.backend_start FROM pg_stat_activity a
                               WHERE a.pid = pg_backend_pid()),
        lease_expires = clock_timestamp() + ttl;
    RETURN true;
END
$$;
COMMENT ON FUNCTION bridge_take_lease(text, interval) IS 'Takes the bridge lease for holder when it is free, stale (expired, or its backend gone) or already this session''s; true when this session holds it';

-- Extends this session's lease by ttl; false when it no longer holds it.
CREATE OR REPLACE FUNCTION bridge_renew_lease(ttl interval)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
BEGIN
    IF ttl IS NULL OR ttl <= interval '0' OR ttl > interval '1 hour' THEN
        RAISE EXCEPTION 'bridge_renew_lease: ttl must be above 0 and at most 1 hour, got %', ttl
            USING ERRCODE = '22023', HINT = 'The bridge renews its lease every few seconds: 30 seconds is plenty.';
    END IF;
    UPDATE bridge_state s SET heartbeat_at = now(), lease_expires = clock_timestamp() + ttl
    WHERE s.lease_pid = pg_backend_pid();
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION bridge_renew_lease(interval) IS 'Extends this session''s bridge lease by ttl and records a heartbeat; false when another bridge took it over';

-- Gives the lease up (a stopping bridge); the holder stays as the last one.
CREATE OR REPLACE FUNCTION bridge_release_lease()
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
BEGIN
    UPDATE bridge_state s SET lease_pid = NULL, lease_backend_start = NULL, lease_expires = NULL
    WHERE s.lease_pid = pg_backend_pid();
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION bridge_release_lease() IS 'Releases this session''s bridge lease; false when it did not hold it';

-- Records the bridge's last error, for metro bridge --status.
CREATE OR REPLACE FUNCTION bridge_report_error(message text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
BEGIN
    UPDATE bridge_state SET last_error = left(coalesce(message, '(no message)'), 1000),
                            last_error_at = now();
END
$$;
COMMENT ON FUNCTION bridge_report_error(text) IS 'Records the bridge''s last error (cut at 1,000 characters) and its time in bridge_state';

-- Refuses (MT012) a session that would move a cursor while another live
-- session holds the lease.
CREATE OR REPLACE FUNCTION bridge_check_lease(function_name text)
RETURNS void LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
BEGIN
    IF bridge_lease_held_elsewhere() THEN
        RAISE EXCEPTION '%: another bridge holds the lease (%)', function_name,
            (SELECT s.holder FROM bridge_state s)
            USING ERRCODE = 'MT012',
                  HINT = 'This bridge lost its lease (it stalled past the lease''s expiry); it must take the lease again before sending.';
    END IF;
END
$$;
COMMENT ON FUNCTION bridge_check_lease(text) IS 'Raises MT012 when another live session holds the bridge lease';

-- Records that Kafka acknowledged a stream up to (last_txid, last_position).
-- The cursor only moves forward; a stale bridge cannot move it back, and a
-- bridge whose lease another one took over is refused (MT012).
CREATE OR REPLACE FUNCTION bridge_ack(stream text, last_txid xid8, last_position bigint, rows_acked bigint)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_stream ALIAS FOR $1;
BEGIN
    PERFORM bridge_stream_key(p_stream);
    PERFORM bridge_check_lease('bridge_ack');
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
COMMENT ON FUNCTION bridge_ack(text, xid8, bigint, bigint) IS 'Records that Kafka acknowledged a stream up to (last_txid, last_position); moves the cursor forward only and returns whether it moved; MT005 unknown stream, MT012 another bridge holds the lease';

-- Sets aside a stream row Kafka refused (too large, invalid), so its stream
-- moves on; the caller acknowledges the batch in the same transaction.
CREATE OR REPLACE FUNCTION bridge_outbound_dead_letter(stream text, row_txid xid8, row_position bigint,
                                                       key text, value text, reason text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_stream ALIAS FOR $1;
BEGIN
    PERFORM bridge_stream_key(p_stream);
    PERFORM bridge_check_lease('bridge_outbound_dead_letter');
    INSERT INTO bridge_outbound_dead_letters (stream, position, txid, key, value, reason)
    VALUES (p_stream, row_position, row_txid, key, value,
            left(coalesce(reason, '(no reason)'), 1000))
    ON CONFLICT ON CONSTRAINT bridge_outbound_dead_letters_stream_position_key DO NOTHING;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION bridge_outbound_dead_letter(text, xid8, bigint, text, text, text) IS 'Records a stream row Kafka refused in bridge_outbound_dead_letters (once per stream and position); MT005 unknown stream, MT012 another bridge holds the lease';

-- The oldest running transaction with a transaction id, in any database of
-- the cluster, or prepared: it holds the commit horizon, so no stream row
-- written after it started is delivered before it ends. For --status.
CREATE OR REPLACE FUNCTION bridge_horizon()
RETURNS TABLE (pid integer, role text, database text, application_name text, state text,
               xact_start timestamptz, xact_age interval, backend_xid xid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = metro, pg_temp AS $$
    SELECT h.pid, h.role, h.database, h.application_name, h.state, h.xact_start,
           clock_timestamp() - h.xact_start, h.backend_xid
    FROM (SELECT a.pid, a.usename::text AS role, a.datname::text AS database,
                 a.application_name, a.state, a.xact_start, a.backend_xid
          FROM pg_stat_activity a
          WHERE a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid()
          UNION ALL
          SELECT NULL, p.owner::text, p.database::text, 'prepared transaction ' || p.gid,
                 'prepared', p.prepared, p.transaction
          FROM pg_prepared_xacts p) h
    ORDER BY age(h.backend_xid) DESC
    LIMIT 1
$$;
COMMENT ON FUNCTION bridge_horizon() IS 'The oldest running or prepared transaction holding a transaction id (pid, role, database, application_name, state, xact_start, xact_age, backend_xid): stream rows of later transactions wait until it ends; no row when none runs';

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

-- grants
REVOKE ALL ON FUNCTION notify_bridge(), register_stream(text, text, text, text),
    bridge_batch(text, xid8, bigint, integer),
    bridge_has_rows(text, xid8, bigint), bridge_stream_key(text),
    bridge_lease_held_elsewhere(), bridge_take_lease(text, interval), bridge_renew_lease(interval),
    bridge_release_lease(), bridge_report_error(text), bridge_check_lease(text),
    bridge_ack(text, xid8, bigint, bigint),
    bridge_outbound_dead_letter(text, xid8, bigint, text, text, text), bridge_horizon(),
    bridge_prune(interval, integer), bridge_lag(bigint)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bridge_batch(text, xid8, bigint, integer),
    bridge_has_rows(text, xid8, bigint), bridge_stream_key(text),
    bridge_take_lease(text, interval), bridge_renew_lease(interval), bridge_release_lease(),
    bridge_report_error(text), bridge_ack(text, xid8, bigint, bigint),
    bridge_outbound_dead_letter(text, xid8, bigint, text, text, text), bridge_horizon(),
    bridge_prune(interval, integer), bridge_lag(bigint)
    TO metro_bridge;
GRANT EXECUTE ON FUNCTION bridge_lag(bigint), bridge_horizon() TO metro_reader;
