-- Fraud rules, checked against the card's earlier events before a swipe is
-- recorded. Thresholds come from settings, read on every call.
SET search_path = metro, pg_catalog;

-- functions

-- Which rule fires for an entry of card_id at ts: 0 none,
-- 1 the card already has an event in the same second,
-- 3 fraud_entry_limit or more entries in [ts - fraud_window, ts),
-- 2 fraud_station_limit or more distinct stations among those entries.
-- The entry scan stops after fraud_entry_limit rows, so its cost is bounded
-- by the threshold, not by the card's history.
CREATE OR REPLACE FUNCTION fraud_rule(card_id bigint, ts timestamptz)
RETURNS smallint LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    p_card ALIAS FOR $1;
    p_ts ALIAS FOR $2;
    s settings%ROWTYPE;
    v_entries integer;
    v_stations integer;
BEGIN
    IF EXISTS (SELECT 1 FROM card_history_second h
               WHERE h.card_id = p_card AND h.second_start = date_trunc('second', p_ts)) THEN
        RETURN 1;
    END IF;
    SELECT * INTO STRICT s FROM settings;
    SELECT count(*), count(DISTINCT recent.station_id) INTO v_entries, v_stations
    FROM (SELECT e.station_id FROM card_events e
          WHERE e.card_id = p_card AND e.activity_code = 1
            AND e.ts >= p_ts - s.fraud_window AND e.ts < p_ts
          ORDER BY e.ts DESC
          LIMIT s.fraud_entry_limit) recent;
    IF v_entries >= s.fraud_entry_limit THEN
        RETURN 3;
    END IF;
    IF v_stations >= s.fraud_station_limit THEN
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
