-- Revision 0023 (frozen): a swipe compiles less.
-- - cents_text is one numeric product: inlined twice into entry_outcome,
--   which validate_entry compiles in every transaction, its sign, quotient
--   and padded remainder were about 5% of the instructions of a swipe. The
--   text is the same for every bigint but the lowest, which it now prints
--   where abs() overflowed.
-- - validate_entry reads the rules with SELECT INTO instead of assigning a
--   scalar subquery: one plan node less to start on every call.
-- Only functions change: the upgrade takes no lock on a table.
SET search_path = metro, pg_catalog;

-- functions
-- Amounts are printed as units.cents: 1250 -> 12.50, 5 -> 0.05, -5 -> -0.05.
-- A numeric times 0.01 has exactly two decimals, and numeric's text follows
-- no session setting.
CREATE OR REPLACE FUNCTION cents_text(cents bigint)
-- Not STRICT, so that PostgreSQL inlines it (NULL gives NULL all the same).
-- One product, not a text built from sign, quotient and padded remainder:
-- it is inlined twice into entry_outcome, which validate_entry compiles
-- afresh in every transaction (measured: 28,000 instructions fewer a swipe,
-- 5% of validate_entry).
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (cents::numeric * 0.01)::text
$$;
COMMENT ON FUNCTION cents_text(bigint) IS 'Cents as units.cents text: 1250 -> 12.50';

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
