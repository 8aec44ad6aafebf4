-- The gates' streams: append-only outbox tables written in the same
-- transaction as the decision. position orders rows; txid lets a reader wait
-- until every transaction that could still commit a lower position has
-- finished (rows read only below pg_snapshot_xmin(pg_current_snapshot())).
-- register_stream() gives each its topic, key and time column, its bridge
-- cursor, (txid, position) index, NOTIFY trigger and grants. Their keys
-- start with card_id, so that they can be distributed with the card they
-- belong to (docs/scale-out.md); position and trip_id come from identities
-- and are unique by themselves.
SET search_path = metro, pg_catalog;

-- tables
CREATE TABLE fraud (
    position bigint GENERATED ALWAYS AS IDENTITY,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    trans_id text NOT NULL,
    card_id bigint NOT NULL,
    ts timestamptz NOT NULL,
    station_id integer NOT NULL,
    activity_code card_activity NOT NULL,
    amount cents NOT NULL,
    PRIMARY KEY (card_id, position)
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
    position bigint GENERATED ALWAYS AS IDENTITY,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    card_id bigint NOT NULL,
    ts timestamptz NOT NULL,
    station_name text NOT NULL,
    name text,
    phone text,
    email text,
    notify notify_channel NOT NULL,
    alert_message text NOT NULL,
    PRIMARY KEY (card_id, position)
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
    position bigint GENERATED ALWAYS AS IDENTITY,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    trip_id bigint GENERATED ALWAYS AS IDENTITY (START WITH 1),
    card_id bigint NOT NULL,
    entry_station integer NOT NULL,
    entry_ts timestamptz NOT NULL,
    exit_station integer NOT NULL,
    exit_ts timestamptz NOT NULL,
    CHECK (exit_ts >= entry_ts),
    PRIMARY KEY (card_id, position),
    UNIQUE (card_id, trip_id)
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

-- streams
SELECT register_stream('fraud', 'FRAUD', 'trans_id', 'ts');
SELECT register_stream('card_alert_export', 'CARD_ALERT_EXPORT', 'card_id', 'ts');
SELECT register_stream('trips', 'TRIPS', 'trip_id', 'exit_ts');
