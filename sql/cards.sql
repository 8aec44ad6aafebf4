-- Cards and every swipe and purchase made with them. card_events is
-- append-only and partitioned by day; its per-second history
-- (sql/history.sql) is kept by the rollup of procedures/history.sql.
SET search_path = metro, pg_catalog;

-- types
-- Card holder details are copied into every alert row sent to Kafka: bounded
-- here, so no card can make a message Kafka refuses. Domains, not table
-- CHECKs: a balance UPDATE does not re-check them.
CREATE DOMAIN card_name AS text
    CONSTRAINT card_name_at_most_200_characters CHECK (length(VALUE) <= 200);
COMMENT ON DOMAIN card_name IS 'Card holder name, at most 200 characters';
CREATE DOMAIN card_phone AS text
    CONSTRAINT card_phone_at_most_40_characters CHECK (length(VALUE) <= 40);
COMMENT ON DOMAIN card_phone IS 'Card holder phone, at most 40 characters';
CREATE DOMAIN card_email AS text
    CONSTRAINT card_email_at_most_320_characters CHECK (length(VALUE) <= 320);
COMMENT ON DOMAIN card_email IS 'Card holder e-mail, at most 320 characters';

-- tables
CREATE TABLE cards (
    card_id bigint PRIMARY KEY CHECK (card_id >= 0),
    enabled boolean NOT NULL DEFAULT true,
    card_type card_type_code NOT NULL DEFAULT 0,
    balance cents NOT NULL DEFAULT 0,
    expires timestamptz,
    name card_name,
    phone card_phone,
    email card_email,
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
    event_id bigint GENERATED ALWAYS AS IDENTITY,
    card_id bigint NOT NULL,
    ts timestamptz NOT NULL,
    station_id integer NOT NULL,
    activity_code card_activity NOT NULL,
    amount cents NOT NULL DEFAULT 0,
    accept card_outcome NOT NULL,
    txid xid8 NOT NULL GENERATED ALWAYS AS (writing_txid()) STORED,
    -- Serves the fraud rules (entries of one card in a bounded time range) and
    -- process_exit (the card's last entry or exit) without touching the heap;
    -- card_id first, so the key stays unique per card when card_events is
    -- distributed by card (docs/scale-out.md).
    PRIMARY KEY (card_id, ts, event_id) INCLUDE (activity_code, accept, station_id)
) PARTITION BY RANGE (ts);
COMMENT ON TABLE card_events IS 'Every swipe and purchase, whatever its outcome; append-only (UPDATE and DELETE are refused); partitioned by UTC day of ts (run_maintenance())';
COMMENT ON COLUMN card_events.event_id IS 'Insertion order';
COMMENT ON COLUMN card_events.card_id IS 'Card swiped; not a foreign key, because unknown cards are recorded too';
COMMENT ON COLUMN card_events.ts IS 'When the swipe happened';
COMMENT ON COLUMN card_events.station_id IS 'Where the swipe happened; checked against stations by a statement trigger (a foreign key would take a share lock on the station row in every swipe)';
COMMENT ON COLUMN card_events.activity_code IS '1 entry, -1 exit, 2 purchase (recharge)';
COMMENT ON COLUMN card_events.amount IS 'Cents moved: the fare charged on an accepted entry, the credit of a purchase, otherwise 0';
COMMENT ON COLUMN card_events.accept IS '1 accepted, 0 rejected, -1 refused as fraud';
COMMENT ON COLUMN card_events.txid IS 'Writing transaction (generated): the rollup reads events in (txid, event_id) order behind the commit horizon';
-- The rollup's read: events after its cursor, in (txid, event_id) order.
CREATE INDEX card_events_txid ON card_events (txid, event_id);

-- Rows whose UTC day has no partition of its own (a replay or a load of
-- dates run_maintenance() has not created, or far ahead) land here; they are
-- kept until event_retention and then deleted by run_maintenance().
CREATE TABLE card_events_default PARTITION OF card_events DEFAULT;
COMMENT ON TABLE card_events_default IS 'card_events of days without a partition of their own; run_maintenance() deletes its rows past event_retention';
-- Finds a day's rows in the default partition (run_maintenance(), create_partitions()).
CREATE INDEX card_events_default_ts ON card_events_default (ts);
