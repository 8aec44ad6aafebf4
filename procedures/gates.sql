-- Gate decisions: entry and exit swipes. Each call is one transaction; the
-- card's row lock serializes all work on one card.
SET search_path = metro, pg_catalog;

-- functions

-- The outcome of an entry swipe, the single place where the messages are
-- decided (validate_entry and validate_entries both use it): unknown card
-- (enabled is NULL), disabled card, fraud (no charge), unlimited card valid or
-- expired, pay-per-ride charged when balance > fare, otherwise refused with an
-- Insufficient Balance alert. accept: 1 accepted, 0 rejected, -1 fraud.
CREATE OR REPLACE FUNCTION entry_outcome(enabled boolean, card_type smallint, balance integer,
                                         expires timestamptz, fare integer, fraud boolean,
                                         ts timestamptz)
RETURNS entry_result
-- One row expression, so that PostgreSQL inlines it: validate_entry assigns
-- it as a PL/pgSQL expression (no query), validate_entries joins it per swipe.
-- One CASE whose branches are whole results, each condition tested once:
-- validate_entry compiles the expression afresh in every transaction, and a
-- CASE per field (each testing the conditions again) cost 18,800 instructions
-- more a swipe (revision 0026).
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN enabled IS NULL THEN ROW(0, 0, 'Card Invalid', NULL)::metro.entry_result
                WHEN NOT enabled THEN ROW(0, 0, 'Card Disabled', NULL)::metro.entry_result
                WHEN fraud THEN ROW(-1, 0, 'Fraudulent transaction', NULL)::metro.entry_result
                -- In UTC whatever the caller's TimeZone (VoltDB's timestamps are UTC).
                WHEN card_type = 1 AND expires > ts
                    THEN ROW(1, 0, 'Card Expires: '
                                   || to_char(expires AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS"+00"'),
                             NULL)::metro.entry_result
                WHEN card_type = 1 THEN ROW(0, 0, 'Card Expired', NULL)::metro.entry_result
                WHEN balance > fare
                    THEN ROW(1, fare, 'Remaining Balance: ' || cents_text(balance - fare),
                             NULL)::metro.entry_result
                ELSE ROW(0, 0, 'Card has insufficient balance: ' || cents_text(balance),
                         'Insufficient Balance')::metro.entry_result END
$$;
COMMENT ON FUNCTION entry_outcome(boolean, smallint, integer, timestamptz, integer, boolean, timestamptz) IS 'The outcome of an entry swipe (accept, amount charged, message, alert): the one place the gate messages are decided, the expiry in UTC whatever the caller''s TimeZone; inlined into validate_entry and validate_entries';
REVOKE ALL ON FUNCTION entry_outcome(boolean, smallint, integer, timestamptz, integer, boolean, timestamptz) FROM PUBLIC;

-- Decides an entry swipe and records it whatever the outcome, with a fraud
-- row for fraud and a card_alert_export row for an insufficient balance when
-- the card wants alerts.
CREATE OR REPLACE FUNCTION validate_entry(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS decision LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp
-- Generic plans, pruned to the ts's partitions when they run: with card_events
-- partitioned, PostgreSQL would otherwise plan the rules afresh on every call
-- (measured: half the swipes per second at 8 clients).
SET plan_cache_mode = force_generic_plan
-- A generic plan lives as long as the session: planned while today's
-- partition was freshly analyzed and empty, the rules would scan the whole
-- partition on every swipe all day (measured: 670-1,070 µs a swipe instead
-- of 80 after 20,000 swipes in one session).
SET enable_seqscan = off
-- Without JIT: before PostgreSQL 18 a disabled scan costs 10^10, over
-- jit_above_cost, and a server with JIT compiled every swipe (measured on
-- 15: 90 ms a call instead of 0.1).
SET jit = off AS $$
DECLARE
    p_card ALIAS FOR $1;
    p_station ALIAS FOR $2;
    p_ts ALIAS FOR $3;
    v_fare integer;
    v_station_name text;
    v_window interval;
    v_entry_limit integer;
    v_station_limit integer;
    v_rule smallint;
    c cards%ROWTYPE;
    o entry_result;
BEGIN
    IF p_card IS NULL THEN PERFORM raise_null_argument('validate_entry', 'card_id'); END IF;
    IF p_station IS NULL THEN PERFORM raise_null_argument('validate_entry', 'station_id'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('validate_entry', 'ts'); END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM raise_read_committed_required('validate_entry');
    END IF;
    -- A gate that leaves ts out (now() of a fresh transaction) needs no check.
    IF NOT fresh_default_ts(p_ts) THEN PERFORM checked_ts('validate_entry', 'ts', p_ts); END IF;

    -- The card is locked before its events are read, so a concurrent swipe of
    -- the same card is seen by the rules. One query reads the station and the
    -- rules' thresholds, the next the card's recent events; the outcome is an
    -- expression, not a query.
    SELECT * INTO c FROM cards WHERE cards.card_id = p_card FOR NO KEY UPDATE;
    SELECT s.fare, s.name, t.fraud_window, t.fraud_entry_limit, t.fraud_station_limit
    INTO v_fare, v_station_name, v_window, v_entry_limit, v_station_limit
    FROM stations s CROSS JOIN settings t
    WHERE s.station_id = p_station;
    IF NOT FOUND THEN PERFORM raise_unknown_station(p_station); END IF;
    -- SELECT INTO, not an assignment of a scalar subquery: one plan node and
    -- its parameter less to start on every call (about 8,000 instructions).
    SELECT f.rule INTO v_rule
    FROM fraud_rule(p_card, p_ts, v_window, v_entry_limit, v_station_limit) f;
    -- Assigned alone: with the rules' query among its arguments, entry_outcome
    -- would no longer be inlined.
    o := entry_outcome(c.enabled, c.card_type, c.balance, c.expires, v_fare, v_rule <> 0, p_ts);

    IF o.accept = -1 THEN
        INSERT INTO fraud (trans_id, card_id, ts, station_id, activity_code, amount)
        VALUES (fraud_trans_id(p_card, p_ts), p_card, p_ts, p_station, 1, v_fare);
    ELSIF o.amount > 0 THEN
        UPDATE cards SET balance = c.balance - o.amount WHERE cards.card_id = p_card;
    ELSIF o.alert IS NOT NULL AND c.notify <> 0 THEN
        INSERT INTO card_alert_export (card_id, ts, station_name, name, phone, email, notify, alert_message)
        VALUES (p_card, p_ts, v_station_name, c.name, c.phone, c.email, c.notify, o.alert);
    END IF;
    INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
    VALUES (p_card, p_ts, p_station, 1, o.amount, o.accept);
    RETURN ROW(o.accept = 1, o.message)::decision;
END
$$;
COMMENT ON FUNCTION validate_entry(bigint, integer, timestamptz) IS 'Decides an entry swipe: (accepted, message) as Card Invalid, Card Disabled, Fraudulent transaction, Remaining Balance: 12.50, Card has insufficient balance: 1.00, Card Expires: <ts>, Card Expired; records it in card_events whatever the outcome, with a fraud or card_alert_export row when due. MT004 NULL argument, MT001 unknown station, MT013 not in a READ COMMITTED transaction';
REVOKE ALL ON FUNCTION validate_entry(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION validate_entry(bigint, integer, timestamptz) TO metro_app;

-- Decides a batch of entry swipes in one call, each swipe getting exactly the
-- result it would get from validate_entry called alone, in input order. Every
-- known card of the batch is locked first, in card order, so concurrent
-- batches cannot deadlock (an unknown card has no row to lock and nothing to
-- share: it is refused whatever its past, and the batch writes no derived
-- row). Swipes are then decided set-wise in rounds: round k holds each card's
-- k-th swipe, so a card swiped twice sees its first swipe (balance,
-- same-second rule) as it would alone. The swipes are sorted into rounds once
-- and each round reads only its own slice, so the work grows linearly with
-- the batch whatever the repetition of cards. ts NULL means now() for every
-- swipe.
CREATE OR REPLACE FUNCTION validate_entries(card_ids bigint[], station_ids integer[],
                                            ts timestamptz[] DEFAULT NULL)
RETURNS TABLE (ordinal integer, accepted boolean, message text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp
-- Generic plans: a round is one statement, and planning it afresh for every
-- round (PostgreSQL's choice for its cost estimates) cost ten times the round.
SET plan_cache_mode = force_generic_plan
-- As validate_entry's: never a plan that scans a partition analyzed empty,
-- and no JIT.
SET enable_seqscan = off SET jit = off AS $$
DECLARE
    v_missing integer;
    v_size integer := cardinality(card_ids);
    -- The swipes sorted by (round, card): round k is the slice
    -- v_ends[k - 1] + 1 .. v_ends[k].
    s_ordinal integer[];
    s_card bigint[];
    s_station integer[];
    s_ts timestamptz[];
    v_ends integer[];
    v_first integer := 1;
    -- One round's results, then every swipe's, by ordinal.
    r_ordinal integer[];
    r_accepted boolean[];
    r_message text[];
    v_accepted boolean[];
    v_messages text[];
BEGIN
    IF card_ids IS NULL THEN PERFORM raise_null_argument('validate_entries', 'card_ids'); END IF;
    IF station_ids IS NULL THEN PERFORM raise_null_argument('validate_entries', 'station_ids'); END IF;
    PERFORM checked_ts_array('validate_entries', ts);
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM raise_read_committed_required('validate_entries');
    END IF;
    IF cardinality(station_ids) <> cardinality(card_ids)
       OR (ts IS NOT NULL AND cardinality(ts) <> cardinality(card_ids)) THEN
        RAISE EXCEPTION 'validate_entries: card_ids, station_ids and ts must have the same length, got %, % and %',
            cardinality(card_ids), cardinality(station_ids), cardinality(ts)
            USING ERRCODE = '22023';
    END IF;
    SELECT min(u.n) INTO v_missing
    FROM unnest(card_ids, station_ids) WITH ORDINALITY u(card_id, station_id, n)
    WHERE u.card_id IS NULL OR u.station_id IS NULL;
    IF v_missing IS NOT NULL THEN
        PERFORM raise_null_argument('validate_entries',
            format('card_ids[%s] or station_ids[%s]', v_missing, v_missing));
    END IF;
    SELECT min(u.station_id) INTO v_missing
    FROM unnest(station_ids) u(station_id)
    WHERE NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = u.station_id);
    IF v_missing IS NOT NULL THEN PERFORM raise_unknown_station(v_missing); END IF;
    IF v_size = 0 THEN
        RETURN;
    END IF;

    PERFORM FROM cards c WHERE c.card_id = ANY (card_ids) ORDER BY c.card_id FOR NO KEY UPDATE;

    WITH numbered AS (
        SELECT x.n::integer AS n, x.card_id, x.station_id, coalesce(x.ts, now()) AS ts,
               row_number() OVER (PARTITION BY x.card_id ORDER BY x.n) AS k
        FROM unnest(card_ids, station_ids, ts) WITH ORDINALITY x(card_id, station_id, ts, n)
    )
    SELECT array_agg(u.n ORDER BY u.k, u.card_id, u.n), array_agg(u.card_id ORDER BY u.k, u.card_id, u.n),
           array_agg(u.station_id ORDER BY u.k, u.card_id, u.n), array_agg(u.ts ORDER BY u.k, u.card_id, u.n),
           (SELECT array_agg(e.last_index ORDER BY e.k)
            FROM (SELECT r.k, (sum(count(*)) OVER (ORDER BY r.k))::integer AS last_index
                  FROM numbered r GROUP BY r.k) e)
    INTO s_ordinal, s_card, s_station, s_ts, v_ends
    FROM numbered u;
    v_accepted := array_fill(NULL::boolean, ARRAY[v_size]);
    v_messages := array_fill(NULL::text, ARRAY[v_size]);

    FOR v_round IN 1..cardinality(v_ends) LOOP
        WITH swipes AS (
            SELECT s_ordinal[i] AS ordinal, s_card[i] AS card_id, s_station[i] AS station_id,
                   s_ts[i] AS ts
            FROM generate_series(v_first, v_ends[v_round]) i
        ), decided AS MATERIALIZED (
            SELECT w.*, st.fare, st.name AS station_name, c.name, c.phone, c.email, c.notify,
                   c.balance, o.accept, o.amount, o.message, o.alert
            FROM swipes w
            JOIN stations st ON st.station_id = w.station_id
            LEFT JOIN cards c ON c.card_id = w.card_id
            CROSS JOIN settings t
            CROSS JOIN LATERAL fraud_rule(w.card_id, w.ts, t.fraud_window, t.fraud_entry_limit,
                                          t.fraud_station_limit) f
            CROSS JOIN LATERAL entry_outcome(c.enabled, c.card_type, c.balance, c.expires,
                                             st.fare, f.rule <> 0, w.ts) o
        ), charged AS (
            UPDATE cards SET balance = d.balance - d.amount
            FROM decided d WHERE d.amount > 0 AND cards.card_id = d.card_id
        ), frauds AS (
            INSERT INTO fraud (trans_id, card_id, ts, station_id, activity_code, amount)
            SELECT fraud_trans_id(d.card_id, d.ts), d.card_id, d.ts, d.station_id, 1, d.fare
            FROM decided d WHERE d.accept = -1 ORDER BY d.card_id
        ), alerts AS (
            INSERT INTO card_alert_export (card_id, ts, station_name, name, phone, email, notify, alert_message)
            SELECT d.card_id, d.ts, d.station_name, d.name, d.phone, d.email, d.notify, d.alert
            FROM decided d WHERE d.alert IS NOT NULL AND d.notify <> 0 ORDER BY d.card_id
        ), recorded AS (
            INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
            SELECT d.card_id, d.ts, d.station_id, 1, d.amount, d.accept
            FROM decided d ORDER BY d.card_id
        )
        SELECT array_agg(d.ordinal), array_agg(d.accept = 1), array_agg(d.message)
        INTO r_ordinal, r_accepted, r_message
        FROM decided d;
        FOR j IN 1..cardinality(r_ordinal) LOOP
            v_accepted[r_ordinal[j]] := r_accepted[j];
            v_messages[r_ordinal[j]] := r_message[j];
        END LOOP;
        v_first := v_ends[v_round] + 1;
    END LOOP;

    RETURN QUERY SELECT r.ordinal::integer, r.accepted, r.message
                 FROM unnest(v_accepted, v_messages) WITH ORDINALITY r(accepted, message, ordinal)
                 ORDER BY r.ordinal;
END
$$;
COMMENT ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) IS 'Decides a batch of entry swipes set-wise: (ordinal, accepted, message) per swipe, in input order, each exactly what validate_entry gives it alone; ts NULL or a NULL element means now(); time linear in the batch size. 22023 arrays of different lengths, MT004 NULL element, MT001 unknown station, MT013 not in a READ COMMITTED transaction';
REVOKE ALL ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) TO metro_app;

-- The card's latest accepted entry or exit at or before until, not older than
-- since: one backward read of card_events' primary key. process_exit asks for
-- the last day first, so that its generic plan opens one or two daily
-- partitions when it starts, and for all of history only when that day holds
-- none (a latest row within the day is the latest of all). Asked for all of
-- history at once, the plan merged the newest index entries of every retained
-- day's partition on every exit: a ride in and out cost 1.5 times the CPU at
-- 8 clients (revision 0027). A plain SQL function returning a set, so that
-- PostgreSQL inlines it into process_exit's two reads.
CREATE OR REPLACE FUNCTION latest_entry_or_exit(card_id bigint, until timestamptz,
                                                since timestamptz)
RETURNS TABLE (activity_code card_activity, accept card_outcome, station_id integer,
               ts timestamptz) LANGUAGE sql STABLE AS $$
    SELECT e.activity_code, e.accept, e.station_id, e.ts
    FROM metro.card_events e
    WHERE e.card_id = $1 AND e.ts <= $2 AND e.ts >= $3
      AND (e.activity_code = -1 OR (e.activity_code = 1 AND e.accept = 1))
    ORDER BY e.ts DESC
    LIMIT 1
$$;
COMMENT ON FUNCTION latest_entry_or_exit(bigint, timestamptz, timestamptz) IS 'The card''s latest accepted entry or exit in [since, until]: (activity_code, accept, station_id, ts), or no row; inlined into process_exit';
REVOKE ALL ON FUNCTION latest_entry_or_exit(bigint, timestamptz, timestamptz) FROM PUBLIC;

-- Records an exit swipe. When the card's latest accepted entry or exit before
-- it is an entry (refused entries let nobody in), the trip is closed and a
-- trips row written. Exits of a known card are never refused: riders must be
-- able to leave.
CREATE OR REPLACE FUNCTION process_exit(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS decision LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp
-- As validate_entry's: generic plans that never scan a partition analyzed
-- empty, and no JIT.
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
DECLARE
    p_card ALIAS FOR $1;
    p_station ALIAS FOR $2;
    p_ts ALIAS FOR $3;
    v_last record;
    v_accept smallint := 1;
    v_message text;
BEGIN
    IF p_card IS NULL THEN PERFORM raise_null_argument('process_exit', 'card_id'); END IF;
    IF p_station IS NULL THEN PERFORM raise_null_argument('process_exit', 'station_id'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('process_exit', 'ts'); END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM raise_read_committed_required('process_exit');
    END IF;
    IF NOT fresh_default_ts(p_ts) THEN PERFORM checked_ts('process_exit', 'ts', p_ts); END IF;
    IF NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = p_station) THEN
        PERFORM raise_unknown_station(p_station);
    END IF;

    PERFORM FROM cards WHERE cards.card_id = p_card FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        v_accept := 0;
        v_message := 'Card Invalid';
    ELSE
        SELECT l.activity_code, l.accept, l.station_id, l.ts INTO v_last
        FROM latest_entry_or_exit(p_card, p_ts, p_ts - interval '1 day') l;
        IF NOT FOUND THEN
            SELECT l.activity_code, l.accept, l.station_id, l.ts INTO v_last
            FROM latest_entry_or_exit(p_card, p_ts, '-infinity') l;
        END IF;
        -- One trip per accepted entry whatever order exits arrive in: an
        -- exit recorded after that entry (a later one that came first) closed it.
        IF FOUND AND v_last.activity_code = 1 AND NOT EXISTS (
               SELECT FROM card_events x
               WHERE x.card_id = p_card AND x.ts >= v_last.ts AND x.activity_code = -1
                 AND x.ts < coalesce((SELECT min(e.ts) FROM card_events e
                                      WHERE e.card_id = p_card AND e.ts > v_last.ts
                                        AND e.activity_code = 1 AND e.accept = 1),
                                     'infinity')) THEN
            INSERT INTO trips (card_id, entry_station, entry_ts, exit_station, exit_ts)
            VALUES (p_card, v_last.station_id, v_last.ts, p_station, p_ts);
            v_message := 'Exit recorded';
        ELSE
            v_message := 'Exit recorded without an open entry';
        END IF;
    END IF;

    INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
    VALUES (p_card, p_ts, p_station, -1, 0, v_accept);
    RETURN ROW(v_accept = 1, v_message)::decision;
END
$$;
COMMENT ON FUNCTION process_exit(bigint, integer, timestamptz) IS 'Records an exit swipe: (true, Exit recorded) and a trips row when it closes an accepted entry, (true, Exit recorded without an open entry), (false, Card Invalid). MT004 NULL argument, MT001 unknown station, MT013 not in a READ COMMITTED transaction';
REVOKE ALL ON FUNCTION process_exit(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION process_exit(bigint, integer, timestamptz) TO metro_app;
