-- Gate decisions: entry and exit swipes. Each call is one transaction; the
-- card's row lock serializes all work on one card.
SET search_path = metro, pg_catalog;

-- functions

-- Decides an entry swipe and records it whatever the outcome:
-- unknown card, disabled card, fraud (no charge, fraud row), unlimited card
-- valid or expired, pay-per-ride charged when balance > fare, otherwise
-- refused with an Insufficient Balance alert for cards that want alerts.
CREATE OR REPLACE FUNCTION validate_entry(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS decision LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_card ALIAS FOR $1;
    p_station ALIAS FOR $2;
    p_ts ALIAS FOR $3;
    v_fare integer;
    v_station_name text;
    c cards%ROWTYPE;
    v_accept smallint := 0;
    v_amount integer := 0;
    v_message text;
BEGIN
    IF p_card IS NULL THEN PERFORM raise_null_argument('validate_entry', 'card_id'); END IF;
    IF p_station IS NULL THEN PERFORM raise_null_argument('validate_entry', 'station_id'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('validate_entry', 'ts'); END IF;
    SELECT s.fare, s.name INTO v_fare, v_station_name FROM stations s WHERE s.station_id = p_station;
    IF NOT FOUND THEN PERFORM raise_unknown_station(p_station); END IF;

    SELECT * INTO c FROM cards WHERE cards.card_id = p_card FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        v_message := 'Card Invalid';
    ELSIF NOT c.enabled THEN
        v_message := 'Card Disabled';
    ELSIF fraud_rule(p_card, p_ts) <> 0 THEN
        v_accept := -1;
        v_message := 'Fraudulent transaction';
        INSERT INTO fraud (trans_id, card_id, ts, station_id, activity_code, amount)
        VALUES (fraud_trans_id(p_card, p_ts), p_card, p_ts, p_station, 1, v_fare);
    ELSIF c.card_type = 1 THEN
        IF c.expires > p_ts THEN
            v_accept := 1;
            v_message := 'Card Expires: ' || to_char(c.expires, 'YYYY-MM-DD HH24:MI:SSOF');
        ELSE
            v_message := 'Card Expired';
        END IF;
    ELSIF c.balance > v_fare THEN
        UPDATE cards SET balance = c.balance - v_fare WHERE cards.card_id = p_card;
        v_accept := 1;
        v_amount := v_fare;
        v_message := 'Remaining Balance: ' || cents_text(c.balance - v_fare);
    ELSE
        v_message := 'Card has insufficient balance: ' || cents_text(c.balance);
        IF c.notify <> 0 THEN
            INSERT INTO card_alert_export (card_id, ts, station_name, name, phone, email, notify, alert_message)
            VALUES (p_card, p_ts, v_station_name, c.name, c.phone, c.email, c.notify, 'Insufficient Balance');
        END IF;
    END IF;

    INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
    VALUES (p_card, p_ts, p_station, 1, v_amount, v_accept);
    RETURN ROW(v_accept = 1, v_message)::decision;
END
$$;
REVOKE ALL ON FUNCTION validate_entry(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION validate_entry(bigint, integer, timestamptz) TO metro_app;

-- Records an exit swipe. When the card's latest accepted entry or exit before
-- it is an entry (refused entries let nobody in), the trip is closed and a
-- trips row written. Exits of a known card are never refused: riders must be
-- able to leave.
CREATE OR REPLACE FUNCTION process_exit(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS decision LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
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
    IF NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = p_station) THEN
        PERFORM raise_unknown_station(p_station);
    END IF;

    PERFORM FROM cards WHERE cards.card_id = p_card FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        v_accept := 0;
        v_message := 'Card Invalid';
    ELSE
        SELECT e.activity_code, e.accept, e.station_id, e.ts INTO v_last
        FROM card_events e
        WHERE e.card_id = p_card AND e.ts <= p_ts
          AND (e.activity_code = -1 OR (e.activity_code = 1 AND e.accept = 1))
        ORDER BY e.ts DESC
        LIMIT 1;
        IF FOUND AND v_last.activity_code = 1 THEN
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
REVOKE ALL ON FUNCTION process_exit(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION process_exit(bigint, integer, timestamptz) TO metro_app;
