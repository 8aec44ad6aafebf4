-- Fraud rules, checked against the card's earlier events before a swipe is
-- recorded. Thresholds come from settings, read on every call.
SET search_path = metro, pg_catalog;

-- functions

-- Which rule fires for an entry of card_id at ts: 0 none,
-- 1 the card already has an event in the same second,
-- 3 fraud_entry_limit or more entries in [ts - fraud_window, ts),
-- 2 fraud_station_limit or more distinct stations among those entries.
-- The entry scan stops after fraud_entry_limit rows, so its cost is bounded
-- by the threshold, not by the card's history. One statement reads the
-- settings and evaluates all three rules: each statement has a fixed start-up
-- cost, paid on every swipe. Called once per swipe, so it names its tables in
-- full instead of paying for a SET search_path clause on every call.
CREATE OR REPLACE FUNCTION fraud_rule(card_id bigint, ts timestamptz)
RETURNS smallint LANGUAGE plpgsql STABLE AS $$
DECLARE
    p_card ALIAS FOR $1;
    p_ts ALIAS FOR $2;
    v_same_second boolean;
    v_entries bigint;
    v_stations bigint;
    v_entry_limit integer;
    v_station_limit integer;
BEGIN
    SELECT EXISTS (SELECT 1 FROM metro.card_history_second h
                   WHERE h.card_id = p_card AND h.second_start = date_trunc('second', p_ts)),
           recent.entries, recent.stations, s.fraud_entry_limit, s.fraud_station_limit
    INTO STRICT v_same_second, v_entries, v_stations, v_entry_limit, v_station_limit
    FROM metro.settings s
    CROSS JOIN LATERAL (
        SELECT count(*) AS entries, count(DISTINCT e.station_id) AS stations
        FROM (SELECT e.station_id FROM metro.card_events e
              WHERE e.card_id = p_card AND e.activity_code = 1
                AND e.ts >= p_ts - s.fraud_window AND e.ts < p_ts
              ORDER BY e.ts DESC
              LIMIT s.fraud_entry_limit) e
    ) recent;
    IF v_same_second THEN
        RETURN 1;
    ELSIF v_entries >= v_entry_limit THEN
        RETURN 3;
    ELSIF v_stations >= v_station_limit THEN
        RETURN 2;
    END IF;
    RETURN 0;
END
$$;

-- Would an entry of card_id at station_id at ts be refused as fraud?
-- Read-only: records nothing.
CREATE OR REPLACE FUNCTION is_fraud(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS boolean LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = metro, pg_temp AS $$
BEGIN
    IF $1 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'card_id'); END IF;
    IF $2 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'station_id'); END IF;
    IF $3 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'ts'); END IF;
    IF NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = $2) THEN
        PERFORM raise_unknown_station($2);
    END IF;
    RETURN fraud_rule($1, $3) <> 0;
END
$$;
REVOKE ALL ON FUNCTION is_fraud(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION is_fraud(bigint, integer, timestamptz) TO metro_app;
