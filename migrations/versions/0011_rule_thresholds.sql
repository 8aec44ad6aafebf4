-- Revision 0011 (frozen): the fraud rules take their thresholds as arguments.
-- fraud_rule(card_id, ts) read the settings row itself, joined inside the
-- rules' query; its thresholds then bounded the read only during execution,
-- so PostgreSQL chose the card_events partitions again on every call. Now
-- fraud_rule(card_id, ts, fraud_window, entry_limit, station_limit) is the
-- rule and its callers pass settings' thresholds: validate_entry reads them
-- with the station, validate_entries and is_fraud join settings.
SET search_path = metro, pg_catalog;

-- functions
-- Which rule fires for an entry of card_id at ts, with the thresholds of
-- settings (fraud_window, fraud_entry_limit, fraud_station_limit): 0 none,
-- 1 the card already has a gate swipe (entry or exit, whatever its outcome)
--   in the same second; purchases (recharges) do not count,
-- 3 entry_limit or more entries in [ts - fraud_window, ts),
-- 2 station_limit or more distinct stations among those entries.
-- One backward range read of card_events' primary key (card_id, ts, ...):
-- the card's gate swipes of ts's second come first (rule 1 when there is
-- one), then, when there is none, its entries before that second, at most
-- entry_limit of them (rules 3 and 2), so the cost is bounded by the
-- thresholds, not by the card's history. A plain SQL function returning a
-- set, so that PostgreSQL inlines it into the caller's query: validate_entry
-- runs it without a nested executor, validate_entries runs it set-wise (each
-- round sees the events of the rounds before). The caller reads the settings
-- row and passes its thresholds: validate_entry reads them with the station,
-- and as parameters they bound the read when the plan starts, so the plan
-- opens only the partitions the window spans (with settings joined inside,
-- the partitions were chosen again on every execution: validate_entry made
-- 14% fewer swipes/s at 8 clients). It names its tables in full because an
-- inlined function cannot carry a SET search_path clause.
CREATE OR REPLACE FUNCTION fraud_rule(card_id bigint, ts timestamptz, fraud_window interval,
                                      entry_limit integer, station_limit integer)
RETURNS TABLE (rule smallint) LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN max(r.ts) >= date_trunc('second', $2) THEN 1
                WHEN count(*) >= $4 THEN 3
                WHEN count(DISTINCT r.station_id) >= $5 THEN 2
                ELSE 0 END::smallint
    FROM (
        SELECT g.ts, g.station_id FROM metro.card_events g
        WHERE g.card_id = $1
          AND g.ts >= least($2 - $3, date_trunc('second', $2))
          AND g.ts < date_trunc('second', $2) + interval '1 second'
          AND g.activity_code IN (1, -1)
          AND (g.activity_code = 1 OR g.ts >= date_trunc('second', $2))
        ORDER BY g.ts DESC
        LIMIT $4
    ) r
$$;
COMMENT ON FUNCTION fraud_rule(bigint, timestamptz, interval, integer, integer) IS 'Which fraud rule an entry of the card at ts breaks with the given thresholds (settings.fraud_window, fraud_entry_limit, fraud_station_limit): 0 none, 1 a gate swipe (entry or exit) in the same second, 2 too many stations, 3 too many entries in the window; inlined into its callers';
REVOKE ALL ON FUNCTION fraud_rule(bigint, timestamptz, interval, integer, integer) FROM PUBLIC;

-- Would an entry of card_id at station_id at ts be refused as fraud?
-- Read-only: records nothing.
CREATE OR REPLACE FUNCTION is_fraud(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS boolean LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = metro, pg_temp
-- Generic plans, as validate_entry's: planning the rules over the partitions
-- on every call cost more than the rules; and never a partition scan.
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    IF $1 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'card_id'); END IF;
    IF $2 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'station_id'); END IF;
    IF $3 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'ts'); END IF;
    IF NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = $2) THEN
        PERFORM raise_unknown_station($2);
    END IF;
    RETURN (SELECT f.rule
            FROM settings t
            CROSS JOIN LATERAL fraud_rule($1, $3, t.fraud_window, t.fraud_entry_limit,
                                          t.fraud_station_limit) f) <> 0;
END
$$;
COMMENT ON FUNCTION is_fraud(bigint, integer, timestamptz) IS 'Would an entry of card_id at station_id at ts be refused as fraud? Reads only. MT004 NULL argument, MT001 unknown station';
REVOKE ALL ON FUNCTION is_fraud(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION is_fraud(bigint, integer, timestamptz) TO metro_app;

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
SET enable_seqscan = off AS $$
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
    -- A gate that leaves ts out (now()) needs no check: skip the call.
    IF p_ts <> now() THEN PERFORM checked_ts('validate_entry', 'ts', p_ts); END IF;

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
    v_rule := (SELECT f.rule FROM fraud_rule(p_card, p_ts, v_window, v_entry_limit,
                                             v_station_limit) f);
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
COMMENT ON FUNCTION validate_entry(bigint, integer, timestamptz) IS 'Decides an entry swipe: (accepted, message) as Card Invalid, Card Disabled, Fraudulent transaction, Remaining Balance: 12.50, Card has insufficient balance: 1.00, Card Expires: <ts>, Card Expired; records it in card_events whatever the outcome, with a fraud or card_alert_export row when due. MT004 NULL argument, MT001 unknown station';
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
-- As validate_entry's: never a plan that scans a partition analyzed empty.
SET enable_seqscan = off AS $$
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
COMMENT ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) IS 'Decides a batch of entry swipes set-wise: (ordinal, accepted, message) per swipe, in input order, each exactly what validate_entry gives it alone; ts NULL or a NULL element means now(); time linear in the batch size. 22023 arrays of different lengths, MT004 NULL element, MT001 unknown station';
REVOKE ALL ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) TO metro_app;

-- The two-argument form had settings inside; nothing calls it any more.
DROP FUNCTION fraud_rule(bigint, timestamptz);
