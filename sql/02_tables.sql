-- Reference data (stations, trains, cards) and the event tables.
SET search_path = metro, pg_catalog;

-- tables
CREATE TABLE stations (
    station_id integer PRIMARY KEY CHECK (station_id > 0),
    name text NOT NULL CHECK (name <> ''),
    fare cents NOT NULL DEFAULT 250,
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
    card_id bigint PRIMARY KEY,
    enabled boolean NOT NULL DEFAULT true,
    card_type card_type_code NOT NULL DEFAULT 0,
    balance cents NOT NULL DEFAULT 0,
    expires timestamptz,
    name text,
    phone text,
    email text,
    notify notify_channel NOT NULL DEFAULT 0,
    CHECK (card_type = 0 OR expires IS NOT NULL)
) WITH (fillfactor = 90);  -- room on each page for HOT balance updates
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
    station_id integer NOT NULL,
    activity_code card_activity NOT NULL,
    amount cents NOT NULL DEFAULT 0,
    accept card_outcome NOT NULL
);
COMMENT ON TABLE card_events IS 'Every swipe and purchase, whatever its outcome; append-only (UPDATE and DELETE are refused)';
COMMENT ON COLUMN card_events.event_id IS 'Insertion order';
COMMENT ON COLUMN card_events.card_id IS 'Card swiped; not a foreign key, because unknown cards are recorded too';
COMMENT ON COLUMN card_events.ts IS 'When the swipe happened';
COMMENT ON COLUMN card_events.station_id IS 'Where the swipe happened; checked against stations by the history trigger (a foreign key would take a share lock on the station row in every swipe)';
COMMENT ON COLUMN card_events.activity_code IS '1 entry, -1 exit, 2 purchase (recharge)';
COMMENT ON COLUMN card_events.amount IS 'Cents moved: the fare charged on an accepted entry, the credit of a purchase, otherwise 0';
COMMENT ON COLUMN card_events.accept IS '1 accepted, 0 rejected, -1 refused as fraud';
-- Serves the fraud rules (entries of one card in a bounded time range) and
-- process_exit (the card's last entry or exit) without touching the heap.
CREATE INDEX card_events_card_ts ON card_events (card_id, ts) INCLUDE (activity_code, accept, station_id);

CREATE TABLE train_events (
    train_id integer NOT NULL REFERENCES trains,
    station_id integer NOT NULL REFERENCES stations,
    activity_type train_activity NOT NULL,
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
