-- Recharges at ticket machines.
SET search_path = metro, pg_catalog;

-- functions

-- Credits amount cents to an enabled card exactly once, records the purchase
-- and writes a card_alert_export row. Unknown and disabled cards are refused
-- (and recorded); a non-positive amount is an error and writes nothing.
-- The payment risk rules apply with the card number as the account (its
-- text, 42 -> '42') and the amount in currency units: a blocked recharge credits nothing, is refused with the
-- rule's reason, recorded as refused (accept -1) and written to fraud.
CREATE OR REPLACE FUNCTION recharge_card(card_id bigint, amount integer, station_id integer, ts timestamptz DEFAULT now())
RETURNS decision LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_card ALIAS FOR $1;
    p_amount ALIAS FOR $2;
    p_station ALIAS FOR $3;
    p_ts ALIAS FOR $4;
    v_station_name text;
    c cards%ROWTYPE;
    v_balance integer;
    v_accept smallint := 0;
    v_message text;
    v_risk record;
BEGIN
    IF p_card IS NULL THEN PERFORM raise_null_argument('recharge_card', 'card_id'); END IF;
    IF p_amount IS NULL THEN PERFORM raise_null_argument('recharge_card', 'amount'); END IF;
    IF p_station IS NULL THEN PERFORM raise_null_argument('recharge_card', 'station_id'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('recharge_card', 'ts'); END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM raise_read_committed_required('recharge_card');
    END IF;
    PERFORM checked_ts('recharge_card', 'ts', p_ts);
    IF p_amount <= 0 THEN
        RAISE EXCEPTION 'Recharge amount must be a positive number of cents: %', p_amount
            USING ERRCODE = 'MT003', HINT = 'Amounts are integer cents: 2000 is 20.00.';
    END IF;
    SELECT s.name INTO v_station_name FROM stations s WHERE s.station_id = p_station;
    IF NOT FOUND THEN PERFORM raise_unknown_station(p_station); END IF;

    SELECT * INTO c FROM cards WHERE cards.card_id = p_card FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        v_message := 'Card Invalid';
    ELSIF NOT c.enabled THEN
        v_message := 'Card Disabled';
    ELSE
        SELECT * INTO v_risk FROM risk_rule(p_card::text, p_amount::numeric / 100);
        IF v_risk.rule IS NULL THEN
            PERFORM raise_no_risk_rule(p_card::text, p_amount::numeric / 100, v_risk.risk_level);
        END IF;
        IF v_risk.blocked THEN
            v_accept := -1;
            v_message := v_risk.message;
            INSERT INTO fraud (trans_id, card_id, ts, station_id, activity_code, amount)
            VALUES (fraud_trans_id(p_card, p_ts), p_card, p_ts, p_station, 2, p_amount);
        ELSE
            UPDATE cards SET balance = c.balance + p_amount WHERE cards.card_id = p_card
            RETURNING balance INTO v_balance;
            v_accept := 1;
            v_message := 'Recharged: ' || cents_text(p_amount) || ', Balance: ' || cents_text(v_balance);
            INSERT INTO card_alert_export (card_id, ts, station_name, name, phone, email, notify, alert_message)
            VALUES (p_card, p_ts, v_station_name, c.name, c.phone, c.email, c.notify, v_message);
        END IF;
    END IF;

    INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
    VALUES (p_card, p_ts, p_station, 2, CASE WHEN v_accept = 1 THEN p_amount ELSE 0 END, v_accept);
    RETURN ROW(v_accept = 1, v_message)::decision;
END
$$;
COMMENT ON FUNCTION recharge_card(bigint, integer, integer, timestamptz) IS 'Credits amount cents to an enabled card once: (true, Recharged: 20.00, Balance: 32.50) and a card_alert_export row; (false, Card Invalid), (false, Card Disabled), or refused with the reason of a risk rule that blocks it (recorded with accept -1 and a fraud row). MT004 NULL argument, MT003 amount not positive, MT001 unknown station, MT008 no risk rule covers it, MT013 not in a READ COMMITTED transaction';
REVOKE ALL ON FUNCTION recharge_card(bigint, integer, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION recharge_card(bigint, integer, integer, timestamptz)
    TO metro_app, metro_bridge;
