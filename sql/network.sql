-- The line: stations, trains, train movements and the wait-time statistics
-- a departure produces (derived by the rollup, procedures/history.sql).
SET search_path = metro, pg_catalog;

-- tables
CREATE TABLE stations (
    station_id integer PRIMARY KEY CHECK (station_id >= 0),
    name text NOT NULL CHECK (name <> ''),
    fare cents NOT NULL DEFAULT 250,
    weight integer NOT NULL DEFAULT 1 CHECK (weight >= 0)
);
COMMENT ON TABLE stations IS 'Stations of the line; CSV id,name,fare,weight';
COMMENT ON COLUMN stations.station_id IS 'Station number, from 0 (VoltDB''s stations.csv starts with 0,Airport)';
COMMENT ON COLUMN stations.name IS 'Name shown in alerts and dashboards';
COMMENT ON COLUMN stations.fare IS 'Fare charged on entry, in cents';
COMMENT ON COLUMN stations.weight IS 'Relative share of riders who enter here (used by the simulators)';

CREATE TABLE trains (
    train_id integer PRIMARY KEY CHECK (train_id >= 0),
    name text NOT NULL CHECK (name <> '')
);
COMMENT ON TABLE trains IS 'Trains running on the line; CSV id,name';
COMMENT ON COLUMN trains.train_id IS 'Train number, from 0 (VoltDB''s TrainProducer numbers trains from 0)';
COMMENT ON COLUMN trains.name IS 'Train name';

CREATE TABLE train_events (
    train_id integer NOT NULL REFERENCES trains,
    station_id integer NOT NULL REFERENCES stations,
    activity_type train_activity NOT NULL,
    ts timestamptz NOT NULL,
    txid xid8 NOT NULL GENERATED ALWAYS AS (writing_txid()) STORED,
    PRIMARY KEY (train_id, ts, activity_type)
);
COMMENT ON TABLE train_events IS 'Train arrivals and departures; CSV train_id,station_id,activity_type,ts';
COMMENT ON COLUMN train_events.train_id IS 'Train';
COMMENT ON COLUMN train_events.station_id IS 'Station';
COMMENT ON COLUMN train_events.activity_type IS '0 arrival, 1 departure';
COMMENT ON COLUMN train_events.ts IS 'When it happened';
COMMENT ON COLUMN train_events.txid IS 'Writing transaction (generated): the rollup reads departures in txid order behind the commit horizon';
-- The rollup's read: train events after its cursor.
CREATE INDEX train_events_txid ON train_events (txid);
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
COMMENT ON TABLE station_departures IS 'Wait-time statistics, one row per departure: the entries that waited for it; written by the rollup (run_rollup()) from train_events and station_second_slots';
COMMENT ON COLUMN station_departures.station_id IS 'Station the train left';
COMMENT ON COLUMN station_departures.train_id IS 'Train that left';
COMMENT ON COLUMN station_departures.ts IS 'Departure time';
COMMENT ON COLUMN station_departures.riders IS 'Accepted entries since the previous departure from this station (at most settings.max_wait back)';
COMMENT ON COLUMN station_departures.wait_seconds IS 'Total seconds those riders waited, at one-second resolution';
