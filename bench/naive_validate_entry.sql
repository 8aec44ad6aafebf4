-- A naive stored-function baseline for the validate_entry benchmark: VoltDB's
-- ValidateEntry ported statement by statement to one PL/pgSQL function, the way
-- a first port would be written, with none of metro's work on the hot path
-- (no domains instead of CHECKs, no inlined rules, no bounded scan, no striped
-- counters, no history trigger). Installed by bench/bench_validate_entry.py into
-- the benchmark's scratch database in its own schema `naive`, with tables of the
-- same shape as metro's, filled from metro's; never part of the product.

CREATE SCHEMA naive;

CREATE TABLE naive.stations (
    station_id integer PRIMARY KEY,
    name text NOT NULL,
    fare integer NOT NULL CHECK (fare >= 0),
    weight integer NOT NULL
);

CREATE TABLE naive.cards (
    card_id bigint PRIMARY KEY,
    enabled boolean NOT NULL,
    card_type smallint NOT NULL CHECK (card_type IN (0, 1)),
    balance integer NOT NULL CHECK (balance >= 0),
    expires timestamptz,
    name text,
    phone text,
    email text,
    notify smallint NOT NULL CHECK (notify IN (0, 1, 2))
);

CREATE TABLE naive.card_events (
    card_id bigint NOT NULL,
    ts timestamptz NOT NULL,
    station_id integer NOT NULL REFERENCES naive.stations,
    activity_code smallint NOT NULL CHECK (activity_code IN (-1, 1, 2)),
    amount integer NOT NULL CHECK (amount >= 0),
    accept smallint NOT NULL CHECK (accept IN (-1, 0, 1))
);
CREATE INDEX ON naive.card_events (card_id, ts);

CREATE TABLE naive.card_history_second (
    card_id bigint NOT NULL,
    second_start timestamptz NOT NULL,
    swipes integer NOT NULL,
    PRIMARY KEY (card_id, second_start)
);

CREATE TABLE naive.fraud (
    trans_id text NOT NULL,
    card_id bigint NOT NULL,
    ts timestamptz NOT NULL,
    station_id integer NOT NULL,
    activity_code smallint NOT NULL,
    amount integer NOT NULL
);

CREATE TABLE naive.card_alert_export (
    card_id bigint NOT NULL,
    ts timestamptz NOT NULL,
    station_name text,
    name text,
    phone text,
    email text,
    notify smallint,
    alert_message text
);

-- ValidateEntry: lock the card, read the station, read and upsert the card's
-- second, scan the card's events of the last hour, decide, charge, record.
CREATE FUNCTION naive.validate_entry(p_card bigint, p_station integer,
                                     p_ts timestamptz DEFAULT now(),
                                     OUT accepted boolean, OUT message text)
LANGUAGE plpgsql AS $$
DECLARE
    c naive.cards%ROWTYPE;
    v_fare integer;
    v_station_name text;
    v_same_second integer;
    v_entries integer := 0;
    v_stations integer := 0;
    v_seen integer[] := '{}';
    e record;
    v_fraud boolean;
    v_accept smallint;
    v_amount integer := 0;
BEGIN
    SELECT * INTO c FROM naive.cards WHERE card_id = p_card FOR UPDATE;
    SELECT fare, name INTO v_fare, v_station_name FROM naive.stations
    WHERE station_id = p_station;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Unknown station: %', p_station;
    END IF;

    SELECT swipes INTO v_same_second FROM naive.card_history_second
    WHERE card_id = p_card AND second_start = date_trunc('second', p_ts);
    INSERT INTO naive.card_history_second VALUES (p_card, date_trunc('second', p_ts), 1)
    ON CONFLICT (card_id, second_start)
    DO UPDATE SET swipes = naive.card_history_second.swipes + 1;

    FOR e IN SELECT activity_code, station_id FROM naive.card_events
             WHERE card_id = p_card AND ts >= p_ts - interval '1 hour' AND ts < p_ts
             ORDER BY ts LOOP
        IF e.activity_code = 1 THEN
            v_entries := v_entries + 1;
            IF NOT e.station_id = ANY (v_seen) THEN
                v_seen := v_seen || e.station_id;
                v_stations := v_stations + 1;
            END IF;
        END IF;
    END LOOP;
    v_fraud := v_same_second IS NOT NULL OR v_entries >= 10 OR v_stations >= 5;

    IF c.card_id IS NULL THEN
        accepted := false; message := 'Card Invalid'; v_accept := 0;
    ELSIF NOT c.enabled THEN
        accepted := false; message := 'Card Disabled'; v_accept := 0;
    ELSIF v_fraud THEN
        accepted := false; message := 'Fraudulent transaction'; v_accept := -1;
        INSERT INTO naive.fraud VALUES (p_card || '_' || (extract(epoch FROM p_ts) * 1000000)::bigint,
                                        p_card, p_ts, p_station, 1, v_fare);
    ELSIF c.card_type = 1 THEN
        IF c.expires > p_ts THEN
            accepted := true; v_accept := 1;
            message := 'Card Expires: ' || to_char(c.expires, 'YYYY-MM-DD HH24:MI:SSOF');
        ELSE
            accepted := false; message := 'Card Expired'; v_accept := 0;
        END IF;
    ELSIF c.balance > v_fare THEN
        UPDATE naive.cards SET balance = balance - v_fare WHERE card_id = p_card;
        accepted := true; v_accept := 1; v_amount := v_fare;
        message := 'Remaining Balance: ' || to_char((c.balance - v_fare) / 100.0, 'FM999999990.00');
    ELSE
        accepted := false; v_accept := 0;
        message := 'Card has insufficient balance: ' || to_char(c.balance / 100.0, 'FM999999990.00');
        IF c.notify <> 0 THEN
            INSERT INTO naive.card_alert_export VALUES (p_card, p_ts, v_station_name, c.name,
                                                        c.phone, c.email, c.notify,
                                                        'Insufficient Balance');
        END IF;
    END IF;

    INSERT INTO naive.card_events VALUES (p_card, p_ts, p_station, 1, v_amount, v_accept);
END
$$;
