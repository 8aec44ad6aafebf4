-- ---- sql/01_schema.sql at 8884bd7
-- metro schema: namespace, shared types, operator settings.
-- Files in sql/ are applied in name order, then procedures/; alembic's first
-- revision applies exactly this tree (see migrations/).

-- schema
CREATE SCHEMA IF NOT EXISTS metro;
COMMENT ON SCHEMA metro IS 'metro: card network fraud detection, decided by stored functions next to the data';

SET search_path = metro, pg_catalog;

-- Functions are private unless granted: metro_app gets EXECUTE on the public
-- entry points only (procedures/*.sql grant them one by one).
ALTER DEFAULT PRIVILEGES IN SCHEMA metro REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- types
CREATE TYPE decision AS (accepted boolean, message text);
COMMENT ON TYPE decision IS 'Result of validate_entry, process_exit and recharge_card: accepted or refused, and the message shown at the gate';

-- settings
CREATE TABLE settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    fraud_window interval NOT NULL DEFAULT '1 hour' CHECK (fraud_window > interval '0'),
    fraud_station_limit integer NOT NULL DEFAULT 5 CHECK (fraud_station_limit >= 1),
    fraud_entry_limit integer NOT NULL DEFAULT 10 CHECK (fraud_entry_limit >= 1),
    max_wait interval NOT NULL DEFAULT '30 minutes' CHECK (max_wait > interval '0')
);
COMMENT ON TABLE settings IS 'Operator-tunable thresholds, one row; an UPDATE takes effect on the next call';
COMMENT ON COLUMN settings.singleton IS 'Always true: the table holds exactly one row';
COMMENT ON COLUMN settings.fraud_window IS 'How far back the fraud rules look: entries in [ts - fraud_window, ts) count';
COMMENT ON COLUMN settings.fraud_station_limit IS 'Fraud when the card entered at this many distinct stations within the window';
COMMENT ON COLUMN settings.fraud_entry_limit IS 'Fraud when the card has this many entries within the window';
COMMENT ON COLUMN settings.max_wait IS 'Entries older than this before a departure are not counted as waiting for it';
INSERT INTO settings DEFAULT VALUES;

RESET search_path;

-- ---- sql/02_tables.sql at 8884bd7
-- Reference data (stations, trains, cards) and the event tables.
SET search_path = metro, pg_catalog;

-- tables
CREATE TABLE stations (
    station_id integer PRIMARY KEY CHECK (station_id > 0),
    name text NOT NULL CHECK (name <> ''),
    fare integer NOT NULL DEFAULT 250 CHECK (fare >= 0),
    weight integer NOT NULL DEFAULT 1 CHECK (weight >= 0)
);
COMMENT ON TABLE stations IS 'Stations of the line; CSV id,name,fare,weight';
COMMENT ON COLUMN stations.station_id IS 'Station number, positive';
COMMENT ON COLUMN stations.name IS 'Name shown in alerts and dashboards';
COMMENT ON COLUMN stations.fare IS 'Fare charged on entry, in cents';
COMMENT ON COLUMN stations.weight IS 'Relative share of riders who enter here (used by the simulators)';

CREATE TABLE trains (
    train_id integer PRIMARY KEY CHECK (train_id > 0),
    name text NOT NULL CHECK (name <> '')
);
COMMENT ON TABLE trains IS 'Trains running on the line; CSV id,name';
COMMENT ON COLUMN trains.train_id IS 'Train number, positive';
COMMENT ON COLUMN trains.name IS 'Train name';

CREATE TABLE cards (
    card_id bigint PRIMARY KEY CHECK (card_id >= 0),
    enabled boolean NOT NULL DEFAULT true,
    card_type smallint NOT NULL DEFAULT 0 CHECK (card_type IN (0, 1)),
    balance integer NOT NULL DEFAULT 0 CHECK (balance >= 0),
    expires timestamptz,
    name text,
    phone text,
    email text,
    notify smallint NOT NULL DEFAULT 0 CHECK (notify IN (0, 1, 2)),
    CHECK (card_type = 0 OR expires IS NOT NULL)
);
COMMENT ON TABLE cards IS 'Metro cards; CSV card_id,enabled(1/0),card_type,balance,expires,name,phone,email,notify';
COMMENT ON COLUMN cards.card_id IS 'Card number printed on the card';
COMMENT ON COLUMN cards.enabled IS 'A disabled card is refused at every gate';
COMMENT ON COLUMN cards.card_type IS '0 pay-per-ride (fare charged from balance), 1 unlimited (valid until expires)';
COMMENT ON COLUMN cards.balance IS 'Stored value in cents; never negative';
COMMENT ON COLUMN cards.expires IS 'End of validity of an unlimited card (required for card_type 1)';
COMMENT ON COLUMN cards.name IS 'Card holder name, for alerts';
COMMENT ON COLUMN cards.phone IS 'Card holder phone, for text alerts';
COMMENT ON COLUMN cards.email IS 'Card holder e-mail, for e-mail alerts';
COMMENT ON COLUMN cards.notify IS 'Alert channel: 0 none, 1 e-mail, 2 text';

CREATE TABLE card_events (
    event_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    card_id bigint NOT NULL,
    ts timestamptz NOT NULL,
    station_id integer NOT NULL REFERENCES stations,
    activity_code smallint NOT NULL CHECK (activity_code IN (1, -1, 2)),
    amount integer NOT NULL DEFAULT 0 CHECK (amount >= 0),
    accept smallint NOT NULL CHECK (accept IN (1, 0, -1))
);
COMMENT ON TABLE card_events IS 'Every swipe and purchase, whatever its outcome; append-only (UPDATE and DELETE are refused)';
COMMENT ON COLUMN card_events.event_id IS 'Insertion order';
COMMENT ON COLUMN card_events.card_id IS 'Card swiped; not a foreign key, because unknown cards are recorded too';
COMMENT ON COLUMN card_events.ts IS 'When the swipe happened';
COMMENT ON COLUMN card_events.station_id IS 'Where the swipe happened';
COMMENT ON COLUMN card_events.activity_code IS '1 entry, -1 exit, 2 purchase (recharge)';
COMMENT ON COLUMN card_events.amount IS 'Cents moved: the fare charged on an accepted entry, the credit of a purchase, otherwise 0';
COMMENT ON COLUMN card_events.accept IS '1 accepted, 0 rejected, -1 refused as fraud';
-- Serves the fraud rules (entries of one card in a bounded time range) and
-- process_exit (the card's last entry or exit) without touching the heap.
CREATE INDEX card_events_card_ts ON card_events (card_id, ts) INCLUDE (activity_code, accept, station_id);

CREATE TABLE train_events (
    train_id integer NOT NULL REFERENCES trains,
    station_id integer NOT NULL REFERENCES stations,
    activity_type smallint NOT NULL CHECK (activity_type IN (0, 1)),
    ts timestamptz NOT NULL,
    PRIMARY KEY (train_id, ts, activity_type)
);
COMMENT ON TABLE train_events IS 'Train arrivals and departures; CSV train_id,station_id,activity_type,ts';
COMMENT ON COLUMN train_events.train_id IS 'Train';
COMMENT ON COLUMN train_events.station_id IS 'Station';
COMMENT ON COLUMN train_events.activity_type IS '0 arrival, 1 departure';
COMMENT ON COLUMN train_events.ts IS 'When it happened';
-- Finds the previous departure from a station.
CREATE INDEX train_events_departures ON train_events (station_id, ts) WHERE activity_type = 1;

CREATE TABLE station_departures (
    station_id integer NOT NULL REFERENCES stations,
    train_id integer NOT NULL REFERENCES trains,
    ts timestamptz NOT NULL,
    riders integer NOT NULL CHECK (riders >= 0),
    wait_seconds numeric NOT NULL CHECK (wait_seconds >= 0),
    PRIMARY KEY (station_id, ts, train_id)
);
COMMENT ON TABLE station_departures IS 'Wait-time statistics, one row per departure: the entries that waited for it';
COMMENT ON COLUMN station_departures.station_id IS 'Station the train left';
COMMENT ON COLUMN station_departures.train_id IS 'Train that left';
COMMENT ON COLUMN station_departures.ts IS 'Departure time';
COMMENT ON COLUMN station_departures.riders IS 'Accepted entries since the previous departure from this station (at most settings.max_wait back)';
COMMENT ON COLUMN station_departures.wait_seconds IS 'Total seconds those riders waited, at one-second resolution';

RESET search_path;

-- ---- sql/03_history.sql at 8884bd7
-- Materialized per-second history. Maintained incrementally by the
-- card_events triggers (procedures/history.sql) in the same transaction as
-- every write; never refreshed.
SET search_path = metro, pg_catalog;

-- tables
CREATE TABLE card_history_second (
    card_id bigint NOT NULL,
    second_start timestamptz NOT NULL,
    swipes integer NOT NULL CHECK (swipes > 0),
    PRIMARY KEY (card_id, second_start)
);
COMMENT ON TABLE card_history_second IS 'Card events per card and second (VoltDB CARD_HISTORY_SECOND); fraud rule 1 reads it';
COMMENT ON COLUMN card_history_second.card_id IS 'Card';
COMMENT ON COLUMN card_history_second.second_start IS 'date_trunc(''second'', ts) of the events';
COMMENT ON COLUMN card_history_second.swipes IS 'Card events (entries, exits, purchases) of the card in that second';

-- Station counters are striped over slots (the writing backend's pid modulo
-- 16) so that concurrent swipes at one busy station do not queue on a single
-- row lock until commit; the station_second_stats view adds the slots up.
CREATE TABLE station_second_slots (
    station_id integer NOT NULL,
    second_start timestamptz NOT NULL,
    slot smallint NOT NULL CHECK (slot BETWEEN 0 AND 15),
    swipes integer NOT NULL CHECK (swipes > 0),
    entries integer NOT NULL CHECK (entries >= 0),
    accepted integer NOT NULL CHECK (accepted >= 0),
    rejected integer NOT NULL CHECK (rejected >= 0),
    fraud integer NOT NULL CHECK (fraud >= 0),
    revenue bigint NOT NULL CHECK (revenue >= 0),
    PRIMARY KEY (station_id, second_start, slot),
    CHECK (entries = accepted + rejected + fraud AND entries <= swipes)
);
COMMENT ON TABLE station_second_slots IS 'Per station and second counters, striped over slots; read them through station_second_stats';
COMMENT ON COLUMN station_second_slots.station_id IS 'Station';
COMMENT ON COLUMN station_second_slots.second_start IS 'date_trunc(''second'', ts) of the events';
COMMENT ON COLUMN station_second_slots.slot IS 'Stripe written by one backend (pid modulo 16)';
COMMENT ON COLUMN station_second_slots.swipes IS 'All card events at the station';
COMMENT ON COLUMN station_second_slots.entries IS 'Entry swipes, whatever their outcome';
COMMENT ON COLUMN station_second_slots.accepted IS 'Accepted entries';
COMMENT ON COLUMN station_second_slots.rejected IS 'Rejected entries';
COMMENT ON COLUMN station_second_slots.fraud IS 'Entries refused as fraud';
COMMENT ON COLUMN station_second_slots.revenue IS 'Fares charged on accepted entries, in cents';

RESET search_path;

-- ---- sql/04_streams.sql at 8884bd7
-- Streams: append-only outbox tables written in the same transaction as the
-- decision. position orders rows; txid lets a reader wait until every
-- transaction that could still commit a lower position has finished
-- (rows read only below pg_snapshot_xmin(pg_current_snapshot())).
SET search_path = metro, pg_catalog;

-- tables
CREATE TABLE fraud (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    trans_id text NOT NULL,
    card_id bigint NOT NULL,
    ts timestamptz NOT NULL,
    station_id integer NOT NULL,
    activity_code smallint NOT NULL CHECK (activity_code IN (1, -1, 2)),
    amount integer NOT NULL CHECK (amount >= 0)
);
COMMENT ON TABLE fraud IS 'Stream FRAUD: one row per swipe refused as fraud; Kafka key trans_id';
COMMENT ON COLUMN fraud.position IS 'Stream position, sent as a Kafka header so consumers can de-duplicate';
COMMENT ON COLUMN fraud.txid IS 'Writing transaction, for the reader''s commit horizon';
COMMENT ON COLUMN fraud.trans_id IS '<card_id>_<epoch microseconds of ts>';
COMMENT ON COLUMN fraud.card_id IS 'Card';
COMMENT ON COLUMN fraud.ts IS 'When the swipe happened';
COMMENT ON COLUMN fraud.station_id IS 'Where the swipe happened';
COMMENT ON COLUMN fraud.activity_code IS 'Activity of the refused swipe (1 entry)';
COMMENT ON COLUMN fraud.amount IS 'Fare that would have been charged, in cents (nothing was charged)';

CREATE TABLE card_alert_export (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    card_id bigint NOT NULL,
    ts timestamptz NOT NULL,
    station_name text NOT NULL,
    name text,
    phone text,
    email text,
    notify smallint NOT NULL CHECK (notify IN (0, 1, 2)),
    alert_message text NOT NULL
);
COMMENT ON TABLE card_alert_export IS 'Stream CARD_ALERT_EXPORT: alerts to send to card holders; Kafka key card_id';
COMMENT ON COLUMN card_alert_export.position IS 'Stream position, sent as a Kafka header so consumers can de-duplicate';
COMMENT ON COLUMN card_alert_export.txid IS 'Writing transaction, for the reader''s commit horizon';
COMMENT ON COLUMN card_alert_export.card_id IS 'Card';
COMMENT ON COLUMN card_alert_export.ts IS 'When the event happened';
COMMENT ON COLUMN card_alert_export.station_name IS 'Station where it happened';
COMMENT ON COLUMN card_alert_export.name IS 'Card holder name';
COMMENT ON COLUMN card_alert_export.phone IS 'Card holder phone';
COMMENT ON COLUMN card_alert_export.email IS 'Card holder e-mail';
COMMENT ON COLUMN card_alert_export.notify IS 'Channel: 0 none, 1 e-mail, 2 text';
COMMENT ON COLUMN card_alert_export.alert_message IS 'Alert text, e.g. Insufficient Balance';

CREATE TABLE trips (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    trip_id bigint GENERATED ALWAYS AS IDENTITY (START WITH 1) UNIQUE,
    card_id bigint NOT NULL,
    entry_station integer NOT NULL,
    entry_ts timestamptz NOT NULL,
    exit_station integer NOT NULL,
    exit_ts timestamptz NOT NULL,
    CHECK (exit_ts >= entry_ts)
);
COMMENT ON TABLE trips IS 'Stream TRIPS: one row per exit that closes an accepted entry; Kafka key trip_id';
COMMENT ON COLUMN trips.position IS 'Stream position, sent as a Kafka header so consumers can de-duplicate';
COMMENT ON COLUMN trips.txid IS 'Writing transaction, for the reader''s commit horizon';
COMMENT ON COLUMN trips.trip_id IS 'Trip number';
COMMENT ON COLUMN trips.card_id IS 'Card';
COMMENT ON COLUMN trips.entry_station IS 'Station of the accepted entry';
COMMENT ON COLUMN trips.entry_ts IS 'Time of the accepted entry';
COMMENT ON COLUMN trips.exit_station IS 'Station of the exit';
COMMENT ON COLUMN trips.exit_ts IS 'Time of the exit';

RESET search_path;

-- ---- sql/05_views.sql at 8884bd7
-- Dashboard views (VoltDB's metro dashboard queries), all read from the
-- materialized history or the streams, never from a scan of card_events.
SET search_path = metro, pg_catalog;

-- views
CREATE VIEW station_second_stats AS
SELECT station_id, second_start,
       sum(swipes)::integer AS swipes, sum(entries)::integer AS entries,
       sum(accepted)::integer AS accepted, sum(rejected)::integer AS rejected,
       sum(fraud)::integer AS fraud, sum(revenue)::bigint AS revenue
FROM station_second_slots
GROUP BY station_id, second_start;
COMMENT ON VIEW station_second_stats IS 'Per station and second: swipes, entries and their outcomes, fares charged (cents)';

CREATE VIEW swipes_per_second AS
SELECT second_start, sum(swipes)::integer AS swipes, sum(entries)::integer AS entries
FROM station_second_slots
GROUP BY second_start;
COMMENT ON VIEW swipes_per_second IS 'Card events and entries per second, network-wide; filter on second_start';

CREATE VIEW acceptance_rate AS
SELECT second_start, sum(entries)::integer AS entries, sum(accepted)::integer AS accepted,
       round(sum(accepted)::numeric / nullif(sum(entries), 0), 4) AS rate
FROM station_second_slots
GROUP BY second_start;
COMMENT ON VIEW acceptance_rate IS 'Share of entry swipes accepted, per second';

CREATE VIEW busiest_stations AS
SELECT st.station_id, st.name, sum(sl.swipes)::integer AS swipes, sum(sl.entries)::integer AS entries
FROM station_second_slots sl
JOIN stations st USING (station_id)
WHERE sl.second_start >= date_trunc('second', now()) - interval '1 minute'
GROUP BY st.station_id, st.name
ORDER BY swipes DESC, st.station_id;
COMMENT ON VIEW busiest_stations IS 'Stations by card events in the last minute, busiest first';

CREATE VIEW card_export_stats AS
SELECT card_id, station_name, count(*)::integer AS alerts
FROM card_alert_export
GROUP BY card_id, station_name;
COMMENT ON VIEW card_export_stats IS 'Alerts exported per card and station';

CREATE VIEW station_wait_times AS
SELECT st.station_id, st.name, count(*)::integer AS departures, sum(d.riders)::integer AS riders,
       round(sum(d.wait_seconds) / nullif(sum(d.riders), 0), 1) AS average_wait_seconds
FROM station_departures d
JOIN stations st USING (station_id)
GROUP BY st.station_id, st.name;
COMMENT ON VIEW station_wait_times IS 'Average wait per station: seconds between a rider''s entry and the next departure';

RESET search_path;

-- ---- sql/06_roles.sql at 8884bd7
-- Roles: metro_app may only call the functions (granted beside each function
-- in procedures/), metro_reader reads the views, metro_bridge reads the
-- streams. Roles are cluster-wide, so creating them is conditional.
SET search_path = metro, pg_catalog;

-- roles
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['metro_app', 'metro_reader', 'metro_bridge'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;

GRANT USAGE ON SCHEMA metro TO metro_app, metro_reader, metro_bridge;
GRANT SELECT ON station_second_stats, swipes_per_second, acceptance_rate, busiest_stations,
    card_export_stats, station_wait_times TO metro_reader;
GRANT SELECT ON fraud, card_alert_export, trips TO metro_bridge;

RESET search_path;

-- ---- procedures/01_support.sql at 8884bd7
-- Shared helpers: argument errors and money formatting. Private (no grants).
--
-- Error codes (also in README "Errors"):
--   MT001 unknown station      MT002 unknown train
--   MT003 invalid amount       MT004 NULL argument
--   MT005 coded value outside its set   MT006 card_events changed
SET search_path = metro, pg_catalog;

-- functions

-- Raises MT004 for a NULL argument of a public function.
CREATE OR REPLACE FUNCTION raise_null_argument(function_name text, argument text)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION '%: % must not be NULL', function_name, argument
        USING ERRCODE = 'MT004', HINT = 'Pass a value for every argument; only ts has a default (now()).';
END
$$;

-- Raises MT001 for a station that is not in stations.
CREATE OR REPLACE FUNCTION raise_unknown_station(station_id integer)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'Unknown station: %', station_id
        USING ERRCODE = 'MT001', DETAIL = format('No row in metro.stations has station_id %s.', station_id),
              HINT = 'Load the stations first: loader data/stations.csv';
END
$$;

-- Amounts are printed as units.cents: 1250 -> 12.50, 5 -> 0.05.
CREATE OR REPLACE FUNCTION cents_text(cents bigint)
RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN cents < 0 THEN '-' ELSE '' END
           || (abs(cents) / 100)::text || '.' || lpad((abs(cents) % 100)::text, 2, '0')
$$;

-- Kafka key of a fraud row: <card_id>_<epoch microseconds>.
CREATE OR REPLACE FUNCTION fraud_trans_id(card_id bigint, ts timestamptz)
RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT card_id::text || '_' || (extract(epoch FROM ts) * 1000000)::bigint::text
$$;

RESET search_path;

-- ---- procedures/02_history.sql at 8884bd7
-- Incremental maintenance of the per-second history from card_events.
-- Statement-level triggers with transition tables: one aggregate upsert per
-- statement, so a single swipe and a COPY of a million events use the same
-- code, and the history always equals a recomputation from card_events.
SET search_path = metro, pg_catalog;

-- functions

-- Adds the inserted events to card_history_second and station_second_slots.
-- Rows are upserted in key order so that concurrent multi-row inserts lock
-- them in the same order and cannot deadlock.
CREATE OR REPLACE FUNCTION card_events_add_history()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    INSERT INTO card_history_second AS h (card_id, second_start, swipes)
    SELECT e.card_id, date_trunc('second', e.ts), count(*)
    FROM added_events e
    GROUP BY 1, 2
    ORDER BY 1, 2
    ON CONFLICT (card_id, second_start) DO UPDATE SET swipes = h.swipes + excluded.swipes;

    INSERT INTO station_second_slots AS s
        (station_id, second_start, slot, swipes, entries, accepted, rejected, fraud, revenue)
    SELECT e.station_id, date_trunc('second', e.ts), pg_backend_pid() % 16,
           count(*),
           count(*) FILTER (WHERE e.activity_code = 1),
           count(*) FILTER (WHERE e.activity_code = 1 AND e.accept = 1),
           count(*) FILTER (WHERE e.activity_code = 1 AND e.accept = 0),
           count(*) FILTER (WHERE e.activity_code = 1 AND e.accept = -1),
           coalesce(sum(e.amount) FILTER (WHERE e.activity_code = 1 AND e.accept = 1), 0)
    FROM added_events e
    GROUP BY 1, 2
    ORDER BY 1, 2
    ON CONFLICT (station_id, second_start, slot) DO UPDATE SET
        swipes = s.swipes + excluded.swipes,
        entries = s.entries + excluded.entries,
        accepted = s.accepted + excluded.accepted,
        rejected = s.rejected + excluded.rejected,
        fraud = s.fraud + excluded.fraud,
        revenue = s.revenue + excluded.revenue;
    RETURN NULL;
END
$$;

-- Events are facts: changing or deleting one would make the history lie.
CREATE OR REPLACE FUNCTION card_events_refuse_change()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'card_events is append-only: % refused', TG_OP
        USING ERRCODE = 'MT006',
              HINT = 'Record a new event instead; TRUNCATE clears the events and their history together.';
END
$$;

-- TRUNCATE card_events empties the history derived from it.
CREATE OR REPLACE FUNCTION card_events_clear_history()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    TRUNCATE card_history_second, station_second_slots;
    RETURN NULL;
END
$$;

-- triggers
CREATE TRIGGER card_events_history AFTER INSERT ON card_events
    REFERENCING NEW TABLE AS added_events
    FOR EACH STATEMENT EXECUTE FUNCTION card_events_add_history();
CREATE TRIGGER card_events_append_only BEFORE UPDATE OR DELETE ON card_events
    FOR EACH STATEMENT EXECUTE FUNCTION card_events_refuse_change();
CREATE TRIGGER card_events_truncate AFTER TRUNCATE ON card_events
    FOR EACH STATEMENT EXECUTE FUNCTION card_events_clear_history();

RESET search_path;

-- ---- procedures/03_fraud.sql at 8884bd7
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

RESET search_path;

-- ---- procedures/04_gates.sql at 8884bd7
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

RESET search_path;

-- ---- procedures/05_recharge.sql at 8884bd7
-- Recharges at ticket machines.
SET search_path = metro, pg_catalog;

-- functions

-- Credits amount cents to an enabled card exactly once, records the purchase
-- and writes a card_alert_export row. Unknown and disabled cards are refused
-- (and recorded); a non-positive amount is an error and writes nothing.
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
BEGIN
    IF p_card IS NULL THEN PERFORM raise_null_argument('recharge_card', 'card_id'); END IF;
    IF p_amount IS NULL THEN PERFORM raise_null_argument('recharge_card', 'amount'); END IF;
    IF p_station IS NULL THEN PERFORM raise_null_argument('recharge_card', 'station_id'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('recharge_card', 'ts'); END IF;
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
        UPDATE cards SET balance = c.balance + p_amount WHERE cards.card_id = p_card
        RETURNING balance INTO v_balance;
        v_accept := 1;
        v_message := 'Recharged: ' || cents_text(p_amount) || ', Balance: ' || cents_text(v_balance);
        INSERT INTO card_alert_export (card_id, ts, station_name, name, phone, email, notify, alert_message)
        VALUES (p_card, p_ts, v_station_name, c.name, c.phone, c.email, c.notify, v_message);
    END IF;

    INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
    VALUES (p_card, p_ts, p_station, 2, CASE WHEN v_accept = 1 THEN p_amount ELSE 0 END, v_accept);
    RETURN ROW(v_accept = 1, v_message)::decision;
END
$$;
REVOKE ALL ON FUNCTION recharge_card(bigint, integer, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION recharge_card(bigint, integer, integer, timestamptz) TO metro_app;

RESET search_path;

-- ---- procedures/06_trains.sql at 8884bd7
-- Train movements and the wait-time statistics they produce.
SET search_path = metro, pg_catalog;

-- functions

-- Records an arrival (0) or departure (1). A departure turns the accepted
-- entries at that station since the previous departure (at most
-- settings.max_wait back) into a station_departures row.
CREATE OR REPLACE FUNCTION record_train_event(train_id integer, station_id integer, activity_type integer, ts timestamptz DEFAULT now())
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_train ALIAS FOR $1;
    p_station ALIAS FOR $2;
    p_activity ALIAS FOR $3;
    p_ts ALIAS FOR $4;
    v_since timestamptz;
    v_riders integer;
    v_wait numeric;
BEGIN
    IF p_train IS NULL THEN PERFORM raise_null_argument('record_train_event', 'train_id'); END IF;
    IF p_station IS NULL THEN PERFORM raise_null_argument('record_train_event', 'station_id'); END IF;
    IF p_activity IS NULL THEN PERFORM raise_null_argument('record_train_event', 'activity_type'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('record_train_event', 'ts'); END IF;
    IF p_activity NOT IN (0, 1) THEN
        RAISE EXCEPTION 'record_train_event: activity_type must be 0 (arrival) or 1 (departure), got %', p_activity
            USING ERRCODE = 'MT005';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM trains t WHERE t.train_id = p_train) THEN
        RAISE EXCEPTION 'Unknown train: %', p_train
            USING ERRCODE = 'MT002', DETAIL = format('No row in metro.trains has train_id %s.', p_train),
                  HINT = 'Load the trains first: loader data/trains.csv';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = p_station) THEN
        PERFORM raise_unknown_station(p_station);
    END IF;

    IF p_activity = 1 THEN
        SELECT greatest(max(te.ts), p_ts - (SELECT max_wait FROM settings)) INTO v_since
        FROM train_events te
        WHERE te.station_id = p_station AND te.activity_type = 1 AND te.ts < p_ts;
        -- One-second buckets: a bucket belongs to the first departure at or
        -- after its start, so consecutive departures never count it twice.
        SELECT coalesce(sum(sl.accepted), 0),
               coalesce(sum(sl.accepted * extract(epoch FROM p_ts - sl.second_start)), 0)
        INTO v_riders, v_wait
        FROM station_second_slots sl
        WHERE sl.station_id = p_station
          AND sl.second_start > date_trunc('second', v_since)
          AND sl.second_start <= p_ts;
        INSERT INTO station_departures (station_id, train_id, ts, riders, wait_seconds)
        VALUES (p_station, p_train, p_ts, v_riders, v_wait);
    END IF;
    INSERT INTO train_events (train_id, station_id, activity_type, ts)
    VALUES (p_train, p_station, p_activity, p_ts);
END
$$;
REVOKE ALL ON FUNCTION record_train_event(integer, integer, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION record_train_event(integer, integer, integer, timestamptz) TO metro_app;

RESET search_path;

