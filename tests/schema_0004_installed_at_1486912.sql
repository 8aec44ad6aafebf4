-- The schema at revision 0004 as a checkout of commit 1486912 installed it: the
-- tree of that commit, sql/ then procedures/ in name order (its revisions
-- re-applied those files, so every database installed or upgraded by that
-- checkout got exactly this). tests/test_migrations.py upgrades it to the head.

-- ---- sql/01_schema.sql at 1486912
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

-- Coded values and money are domains rather than table CHECKs: a domain's
-- check is compiled once per session, while PostgreSQL re-reads a table's
-- CHECK expressions on every INSERT or UPDATE, which the hot path pays on
-- every swipe.
CREATE DOMAIN cents AS integer CHECK (VALUE >= 0);
COMMENT ON DOMAIN cents IS 'An amount of money in cents, never negative (1250 is 12.50)';
CREATE DOMAIN card_type_code AS smallint CHECK (VALUE IN (0, 1));
COMMENT ON DOMAIN card_type_code IS '0 pay-per-ride, 1 unlimited';
CREATE DOMAIN notify_channel AS smallint CHECK (VALUE IN (0, 1, 2));
COMMENT ON DOMAIN notify_channel IS 'Alert channel: 0 none, 1 e-mail, 2 text';
CREATE DOMAIN card_activity AS smallint CHECK (VALUE IN (1, -1, 2));
COMMENT ON DOMAIN card_activity IS '1 entry, -1 exit, 2 purchase';
CREATE DOMAIN card_outcome AS smallint CHECK (VALUE IN (1, 0, -1));
COMMENT ON DOMAIN card_outcome IS '1 accepted, 0 rejected, -1 refused as fraud';
CREATE DOMAIN train_activity AS smallint CHECK (VALUE IN (0, 1));
COMMENT ON DOMAIN train_activity IS '0 arrival, 1 departure';

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

-- ---- sql/02_tables.sql at 1486912
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

RESET search_path;

-- ---- sql/03_history.sql at 1486912
-- Materialized per-second history. Maintained incrementally by the
-- card_events triggers (procedures/02_history.sql) in the same transaction as
-- every write; never refreshed. Only the trigger writes these tables, so they
-- carry no CHECKs (PostgreSQL re-reads every CHECK expression on each
-- statement, and these are written on every swipe); their invariants are
-- proven by tests/test_history.py against a recomputation from card_events.
SET search_path = metro, pg_catalog;

-- tables
CREATE TABLE card_history_second (
    card_id bigint NOT NULL,
    second_start timestamptz NOT NULL,
    swipes integer NOT NULL,
    PRIMARY KEY (card_id, second_start)
);
COMMENT ON TABLE card_history_second IS 'Card events per card and second (VoltDB CARD_HISTORY_SECOND); fraud rule 1 reads it';
COMMENT ON COLUMN card_history_second.card_id IS 'Card';
COMMENT ON COLUMN card_history_second.second_start IS 'date_trunc(''second'', ts) of the events';
COMMENT ON COLUMN card_history_second.swipes IS 'Card events (entries, exits, purchases) of the card in that second';

-- Station counters are striped over slots, one per writing backend (its pid,
-- unique among running backends), so that concurrent swipes at one busy
-- station never queue on a row lock held until commit, and concurrent batches
-- never lock the same counter row; the station_second_stats view adds the
-- slots up.
CREATE TABLE station_second_slots (
    station_id integer NOT NULL,
    second_start timestamptz NOT NULL,
    slot integer NOT NULL,
    swipes integer NOT NULL,
    entries integer NOT NULL,
    accepted integer NOT NULL,
    rejected integer NOT NULL,
    fraud integer NOT NULL,
    revenue bigint NOT NULL,
    PRIMARY KEY (station_id, second_start, slot)
);
COMMENT ON TABLE station_second_slots IS 'Per station and second counters, striped over slots; read them through station_second_stats';
COMMENT ON COLUMN station_second_slots.station_id IS 'Station';
COMMENT ON COLUMN station_second_slots.second_start IS 'date_trunc(''second'', ts) of the events';
COMMENT ON COLUMN station_second_slots.slot IS 'Stripe written by one backend (its pid)';
COMMENT ON COLUMN station_second_slots.swipes IS 'All card events at the station';
COMMENT ON COLUMN station_second_slots.entries IS 'Entry swipes, whatever their outcome';
COMMENT ON COLUMN station_second_slots.accepted IS 'Accepted entries';
COMMENT ON COLUMN station_second_slots.rejected IS 'Rejected entries';
COMMENT ON COLUMN station_second_slots.fraud IS 'Entries refused as fraud (entries = accepted + rejected + fraud)';
COMMENT ON COLUMN station_second_slots.revenue IS 'Fares charged on accepted entries, in cents';

RESET search_path;

-- ---- sql/04_streams.sql at 1486912
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
    activity_code card_activity NOT NULL,
    amount cents NOT NULL
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
    notify notify_channel NOT NULL,
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

-- ---- sql/05_views.sql at 1486912
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

-- ---- sql/06_roles.sql at 1486912
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

-- ---- sql/07_bridge.sql at 1486912
-- Bridge state: what Kafka has acknowledged per stream, who may send, what
-- came in from Kafka and what could not be applied. The stream tables stay the
-- truth; these tables only say how far the bridge got.
SET search_path = metro, pg_catalog;

-- tables
CREATE TABLE bridge_settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    notify boolean NOT NULL DEFAULT true
);
COMMENT ON TABLE bridge_settings IS 'Operator switches of the bridge, one row';
COMMENT ON COLUMN bridge_settings.singleton IS 'Always true: the table holds exactly one row';
COMMENT ON COLUMN bridge_settings.notify IS 'Stream writes send a NOTIFY metro_bridge wake-up; when false the bridge relies on its polling alone';
INSERT INTO bridge_settings DEFAULT VALUES;

CREATE TABLE bridge_cursors (
    stream text PRIMARY KEY CHECK (stream IN ('fraud', 'card_alert_export', 'trips')),
    topic text NOT NULL,
    key_column text NOT NULL,
    txid xid8 NOT NULL DEFAULT '0',
    position bigint NOT NULL DEFAULT 0 CHECK (position >= 0),
    delivered bigint NOT NULL DEFAULT 0 CHECK (delivered >= 0),
    acked_at timestamptz
);
COMMENT ON TABLE bridge_cursors IS 'Durable outbound cursor: every stream row at or before (txid, position) was acknowledged by Kafka';
COMMENT ON COLUMN bridge_cursors.stream IS 'Stream table in schema metro';
COMMENT ON COLUMN bridge_cursors.topic IS 'Kafka topic the stream is forwarded to';
COMMENT ON COLUMN bridge_cursors.key_column IS 'Column of the stream row sent as the Kafka key';
COMMENT ON COLUMN bridge_cursors.txid IS 'Writing transaction of the last acknowledged row (rows are read in (txid, position) order)';
COMMENT ON COLUMN bridge_cursors.position IS 'Stream position of the last acknowledged row';
COMMENT ON COLUMN bridge_cursors.delivered IS 'Rows acknowledged since the stream was created';
COMMENT ON COLUMN bridge_cursors.acked_at IS 'When Kafka last acknowledged a batch of this stream';
INSERT INTO bridge_cursors (stream, topic, key_column) VALUES
    ('fraud', 'FRAUD', 'trans_id'), ('card_alert_export', 'CARD_ALERT_EXPORT', 'card_id'),
    ('trips', 'TRIPS', 'trip_id');

CREATE TABLE bridge_acks (
    stream text NOT NULL REFERENCES bridge_cursors (stream),
    txid xid8 NOT NULL,
    position bigint NOT NULL,
    acked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, txid, position)
);
CREATE INDEX bridge_acks_stream_acked_at ON bridge_acks (stream, acked_at);
COMMENT ON TABLE bridge_acks IS 'Cursor history: when each acknowledged batch ended, so rows are pruned a retention period after delivery';
COMMENT ON COLUMN bridge_acks.stream IS 'Stream table in schema metro';
COMMENT ON COLUMN bridge_acks.txid IS 'Writing transaction of the last row of the batch';
COMMENT ON COLUMN bridge_acks.position IS 'Stream position of the last row of the batch';
COMMENT ON COLUMN bridge_acks.acked_at IS 'When Kafka acknowledged the batch';

CREATE TABLE bridge_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    holder text,
    since timestamptz,
    heartbeat_at timestamptz,
    last_error text,
    last_error_at timestamptz
);
COMMENT ON TABLE bridge_state IS 'The bridge holding the lease (a session advisory lock) and its last error, for metro bridge --status';
COMMENT ON COLUMN bridge_state.singleton IS 'Always true: the table holds exactly one row';
COMMENT ON COLUMN bridge_state.holder IS 'host:pid of the bridge that holds the lease (or last held it)';
COMMENT ON COLUMN bridge_state.since IS 'When the holder took the lease';
COMMENT ON COLUMN bridge_state.heartbeat_at IS 'Last sign of life of the holder';
COMMENT ON COLUMN bridge_state.last_error IS 'Last error the bridge reported (Kafka or PostgreSQL unavailable, ...)';
COMMENT ON COLUMN bridge_state.last_error_at IS 'When last_error happened';
INSERT INTO bridge_state DEFAULT VALUES;

CREATE TABLE bridge_inbound_offsets (
    topic text NOT NULL,
    kafka_partition integer NOT NULL CHECK (kafka_partition >= 0),
    next_offset bigint NOT NULL CHECK (next_offset >= 0),
    applied bigint NOT NULL DEFAULT 0 CHECK (applied >= 0),
    dead_lettered bigint NOT NULL DEFAULT 0 CHECK (dead_lettered >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition)
);
COMMENT ON TABLE bridge_inbound_offsets IS 'Inbound Kafka position, written in the same transaction as the function calls it covers';
COMMENT ON COLUMN bridge_inbound_offsets.topic IS 'Inbound topic (TRAINTOPIC, RECHARGE)';
COMMENT ON COLUMN bridge_inbound_offsets.kafka_partition IS 'Partition of the topic';
COMMENT ON COLUMN bridge_inbound_offsets.next_offset IS 'Offset of the next message to apply; earlier ones were applied or dead-lettered';
COMMENT ON COLUMN bridge_inbound_offsets.applied IS 'Messages applied through their function';
COMMENT ON COLUMN bridge_inbound_offsets.dead_lettered IS 'Messages sent to bridge_dead_letters';
COMMENT ON COLUMN bridge_inbound_offsets.updated_at IS 'When the offset last moved';

CREATE TABLE bridge_dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    key bytea,
    value bytea,
    reason text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, kafka_partition, kafka_offset)
);
COMMENT ON TABLE bridge_dead_letters IS 'Inbound messages that could not be parsed or that the function refused with an error; they never block their partition';
COMMENT ON COLUMN bridge_dead_letters.id IS 'Arrival order';
COMMENT ON COLUMN bridge_dead_letters.topic IS 'Topic of the message';
COMMENT ON COLUMN bridge_dead_letters.kafka_partition IS 'Partition of the message';
COMMENT ON COLUMN bridge_dead_letters.kafka_offset IS 'Offset of the message';
COMMENT ON COLUMN bridge_dead_letters.key IS 'Message key as received';
COMMENT ON COLUMN bridge_dead_letters.value IS 'Message value as received';
COMMENT ON COLUMN bridge_dead_letters.reason IS 'Why it was not applied: the parse error, or SQLSTATE and message of the function';
COMMENT ON COLUMN bridge_dead_letters.received_at IS 'When the bridge set it aside';

-- indexes: the bridge reads each stream in (txid, position) order
CREATE INDEX fraud_txid_position ON fraud (txid, position);
CREATE INDEX card_alert_export_txid_position ON card_alert_export (txid, position);
CREATE INDEX trips_txid_position ON trips (txid, position);

-- grants
GRANT SELECT, DELETE ON fraud, card_alert_export, trips TO metro_bridge;
GRANT SELECT ON bridge_settings TO metro_bridge;
GRANT SELECT, INSERT, UPDATE, DELETE ON bridge_cursors, bridge_acks, bridge_state,
    bridge_inbound_offsets, bridge_dead_letters TO metro_bridge;
GRANT SELECT ON bridge_cursors, bridge_state, bridge_inbound_offsets, bridge_dead_letters
    TO metro_reader;

RESET search_path;

-- ---- sql/08_risk.sql at 1486912
-- Payment risk control: risk tags per account, rules as ordered rows, every
-- decision recorded once per transaction_id and streamed to Kafka
-- (transaction_decisions) like the other streams.
SET search_path = metro, pg_catalog;

-- types
CREATE DOMAIN risk_level AS smallint CHECK (VALUE IN (1, 2, 3));
COMMENT ON DOMAIN risk_level IS 'Risk tag of an account: 1 low, 2 medium, 3 high';
CREATE DOMAIN risk_action AS text CHECK (VALUE IN ('block', 'pass'));
COMMENT ON DOMAIN risk_action IS 'What a matching risk rule decides: block or pass';
-- Exact currency units with cents; evaluate_transaction refuses anything else
-- before a row is written, so the typmod never rounds.
CREATE DOMAIN payment_amount AS numeric(14, 2) CHECK (VALUE > 0);
COMMENT ON DOMAIN payment_amount IS 'A payment amount in currency units (5000.01), exact, positive';

CREATE TYPE risk_verdict AS (blocked boolean, rule text, message text);
COMMENT ON TYPE risk_verdict IS 'Result of evaluate_transaction: blocked or not, the rule that decided, its reason';

-- tables
CREATE TABLE risk_tags (
    account_id bigint PRIMARY KEY,
    risk_level risk_level NOT NULL
);
COMMENT ON TABLE risk_tags IS 'Risk tag per account; CSV account_id,risk_level; an account without a row counts as level 1';
COMMENT ON COLUMN risk_tags.account_id IS 'Payment account; for recharges the card number is the account';
COMMENT ON COLUMN risk_tags.risk_level IS '1 low, 2 medium, 3 high';

CREATE TABLE risk_rules (
    rule text PRIMARY KEY CHECK (rule <> ''),
    rule_order integer NOT NULL,
    amount_range numrange NOT NULL CHECK (NOT isempty(amount_range)),
    min_risk_level risk_level NOT NULL DEFAULT 1,
    action risk_action NOT NULL,
    reason text NOT NULL CHECK (reason <> ''),
    -- Deferrable, so one UPDATE (or transaction) can renumber rules.
    UNIQUE (rule_order) DEFERRABLE INITIALLY DEFERRED
);
COMMENT ON TABLE risk_rules IS 'Risk rules, tried in rule_order: the first whose amount range holds the amount and whose min_risk_level the account reaches decides; an UPDATE applies to the next decision';
COMMENT ON COLUMN risk_rules.rule IS 'Rule name, returned with every decision it makes';
COMMENT ON COLUMN risk_rules.rule_order IS 'Position in the evaluation order, lowest first';
COMMENT ON COLUMN risk_rules.amount_range IS 'Amounts in currency units the rule covers, with open or closed bounds: (5000,10000] is above 5,000 up to 10,000; (10000,) is above 10,000; (,) is any amount';
COMMENT ON COLUMN risk_rules.min_risk_level IS 'The rule applies to accounts at this risk level or higher';
COMMENT ON COLUMN risk_rules.action IS 'block or pass';
COMMENT ON COLUMN risk_rules.reason IS 'Message returned with the decision (and the refusal message of a blocked recharge)';
INSERT INTO risk_rules (rule, rule_order, amount_range, min_risk_level, action, reason) VALUES
    ('high_risk_above_10000', 10, '(10000,)', 3, 'block',
     'Blocked: amount above 10,000.00 from a high-risk account'),
    ('elevated_risk_above_5000', 20, '(5000,10000]', 2, 'block',
     'Blocked: amount above 5,000.00 up to 10,000.00 from a medium- or high-risk account'),
    ('default_pass', 30, '(,)', 1, 'pass', 'Approved');

CREATE TABLE risk_decisions (
    transaction_id text PRIMARY KEY,
    account_id bigint NOT NULL,
    amount payment_amount NOT NULL,
    ts timestamptz NOT NULL,
    risk_level risk_level NOT NULL,
    blocked boolean NOT NULL,
    rule text NOT NULL,
    message text NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE risk_decisions IS 'Every payment decision, once per transaction_id: a repeated transaction_id gets this decision back';
COMMENT ON COLUMN risk_decisions.transaction_id IS 'Transaction identifier given by the payment system';
COMMENT ON COLUMN risk_decisions.account_id IS 'Paying account';
COMMENT ON COLUMN risk_decisions.amount IS 'Amount in currency units';
COMMENT ON COLUMN risk_decisions.ts IS 'When the payment happened (the caller''s timestamp)';
COMMENT ON COLUMN risk_decisions.risk_level IS 'Risk level of the account when decided (1 when it had no tag)';
COMMENT ON COLUMN risk_decisions.blocked IS 'Whether the payment was blocked';
COMMENT ON COLUMN risk_decisions.rule IS 'Name of the rule that decided, as it was then';
COMMENT ON COLUMN risk_decisions.message IS 'Reason of that rule, as it was then';
COMMENT ON COLUMN risk_decisions.decided_at IS 'When the decision was made';

CREATE TABLE transaction_decisions (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    transaction_id text NOT NULL,
    account_id bigint NOT NULL,
    amount payment_amount NOT NULL,
    ts timestamptz NOT NULL,
    risk_level risk_level NOT NULL,
    blocked boolean NOT NULL,
    rule text NOT NULL,
    message text NOT NULL
);
COMMENT ON TABLE transaction_decisions IS 'Stream transaction_decisions: one row per decision made (not per repeated call); Kafka key transaction_id';
COMMENT ON COLUMN transaction_decisions.position IS 'Stream position, sent as a Kafka header so consumers can de-duplicate';
COMMENT ON COLUMN transaction_decisions.txid IS 'Writing transaction, for the reader''s commit horizon';
COMMENT ON COLUMN transaction_decisions.transaction_id IS 'Transaction identifier given by the payment system';
COMMENT ON COLUMN transaction_decisions.account_id IS 'Paying account';
COMMENT ON COLUMN transaction_decisions.amount IS 'Amount in currency units';
COMMENT ON COLUMN transaction_decisions.ts IS 'When the payment happened';
COMMENT ON COLUMN transaction_decisions.risk_level IS 'Risk level of the account when decided';
COMMENT ON COLUMN transaction_decisions.blocked IS 'Whether the payment was blocked';
COMMENT ON COLUMN transaction_decisions.rule IS 'Name of the rule that decided';
COMMENT ON COLUMN transaction_decisions.message IS 'Reason of that rule';
CREATE INDEX transaction_decisions_txid_position ON transaction_decisions (txid, position);

-- The bridge forwards the decisions like the other streams: one more cursor row.
ALTER TABLE bridge_cursors DROP CONSTRAINT bridge_cursors_stream_check;
ALTER TABLE bridge_cursors ADD CONSTRAINT bridge_cursors_stream_check
    CHECK (stream IN ('fraud', 'card_alert_export', 'trips', 'transaction_decisions'));
INSERT INTO bridge_cursors (stream, topic, key_column)
VALUES ('transaction_decisions', 'transaction_decisions', 'transaction_id');

-- grants
GRANT SELECT, DELETE ON transaction_decisions TO metro_bridge;
GRANT SELECT ON risk_rules TO metro_reader;

RESET search_path;

-- ---- procedures/01_support.sql at 1486912
-- Shared helpers: argument errors and money formatting. Private (no grants).
--
-- Error codes (also in README "Errors"):
--   MT001 unknown station      MT002 unknown train
--   MT003 invalid amount       MT004 NULL argument
--   MT005 coded value outside its set   MT006 refused change (card_events,
--   the settings row)   MT007 invalid transaction_id   MT008 no risk rule applies
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

-- The fraud rules read the one settings row on every swipe: it may be
-- updated, never removed.
CREATE OR REPLACE FUNCTION settings_keep_row()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'settings keeps exactly one row: % refused', TG_OP
        USING ERRCODE = 'MT006', HINT = 'UPDATE metro.settings SET ... changes a threshold.';
END
$$;

-- triggers
CREATE TRIGGER settings_keep_row BEFORE DELETE OR TRUNCATE ON settings
    FOR EACH STATEMENT EXECUTE FUNCTION settings_keep_row();

RESET search_path;

-- ---- procedures/02_history.sql at 1486912
-- Incremental maintenance of the per-second history from card_events: a row
-- trigger, so every writer (the functions, COPY, plain INSERT) keeps the
-- history equal to a recomputation from card_events. A row trigger costs
-- the single-swipe path less than a statement trigger with a transition
-- table, which PostgreSQL has to materialize and plan around on every call.
SET search_path = metro, pg_catalog;

-- functions

-- Adds one event to card_history_second and to this backend's slot of
-- station_second_slots, after checking its station (in place of a foreign
-- key, see card_events.station_id).
CREATE OR REPLACE FUNCTION card_events_add_history()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
DECLARE
    v_second timestamptz := date_trunc('second', NEW.ts);
    v_entry boolean := NEW.activity_code = 1;
BEGIN
    PERFORM FROM stations s WHERE s.station_id = NEW.station_id;
    IF NOT FOUND THEN
        PERFORM raise_unknown_station(NEW.station_id);
    END IF;

    INSERT INTO card_history_second AS h (card_id, second_start, swipes)
    VALUES (NEW.card_id, v_second, 1)
    ON CONFLICT (card_id, second_start) DO UPDATE SET swipes = h.swipes + 1;

    INSERT INTO station_second_slots AS s
        (station_id, second_start, slot, swipes, entries, accepted, rejected, fraud, revenue)
    VALUES (NEW.station_id, v_second, pg_backend_pid(), 1, v_entry::integer,
            (v_entry AND NEW.accept = 1)::integer, (v_entry AND NEW.accept = 0)::integer,
            (v_entry AND NEW.accept = -1)::integer,
            CASE WHEN v_entry AND NEW.accept = 1 THEN NEW.amount ELSE 0 END)
    ON CONFLICT (station_id, second_start, slot) DO UPDATE SET
        swipes = s.swipes + 1,
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
-- validate_entries writes the history of its own events set-wise and sets
-- metro.history_written for the duration (transaction-local, undone with the
-- transaction); every other writer goes through the trigger.
CREATE TRIGGER card_events_history AFTER INSERT ON card_events
    FOR EACH ROW WHEN (current_setting('metro.history_written', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION card_events_add_history();
CREATE TRIGGER card_events_append_only BEFORE UPDATE OR DELETE ON card_events
    FOR EACH STATEMENT EXECUTE FUNCTION card_events_refuse_change();
CREATE TRIGGER card_events_truncate AFTER TRUNCATE ON card_events
    FOR EACH STATEMENT EXECUTE FUNCTION card_events_clear_history();

RESET search_path;

-- ---- procedures/03_fraud.sql at 1486912
-- Fraud rules, checked against the card's earlier events before a swipe is
-- recorded. Thresholds come from settings, read on every call.
SET search_path = metro, pg_catalog;

-- functions

-- Which rule fires for an entry of card_id at ts: 0 none,
-- 1 the card already has an event in the same second,
-- 3 fraud_entry_limit or more entries in [ts - fraud_window, ts),
-- 2 fraud_station_limit or more distinct stations among those entries.
-- The entry scan stops after fraud_entry_limit rows, so its cost is bounded
-- by the threshold, not by the card's history. A plain SQL function returning
-- a set, so that PostgreSQL inlines it into the caller's query: validate_entry
-- runs it without a nested executor, validate_entries runs it set-wise. It
-- names its tables in full because an inlined function cannot carry a SET
-- search_path clause.
CREATE OR REPLACE FUNCTION fraud_rule(card_id bigint, ts timestamptz)
RETURNS TABLE (rule smallint) LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM metro.card_history_second h
                             WHERE h.card_id = $1 AND h.second_start = date_trunc('second', $2))
                    THEN 1
                WHEN recent.entries >= s.fraud_entry_limit THEN 3
                WHEN recent.stations >= s.fraud_station_limit THEN 2
                ELSE 0 END::smallint
    FROM metro.settings s
    CROSS JOIN LATERAL (
        SELECT count(*) AS entries, count(DISTINCT e.station_id) AS stations
        FROM (SELECT e.station_id FROM metro.card_events e
              WHERE e.card_id = $1 AND e.activity_code = 1
                AND e.ts >= $2 - s.fraud_window AND e.ts < $2
              ORDER BY e.ts DESC
              LIMIT s.fraud_entry_limit) e
    ) recent
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
    RETURN (SELECT f.rule FROM fraud_rule($1, $3) f) <> 0;
END
$$;
REVOKE ALL ON FUNCTION is_fraud(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION is_fraud(bigint, integer, timestamptz) TO metro_app;

RESET search_path;

-- ---- procedures/04_gates.sql at 1486912
-- Gate decisions: entry and exit swipes. Each call is one transaction; the
-- card's row lock serializes all work on one card.
SET search_path = metro, pg_catalog;

-- functions

-- The outcome of an entry swipe, the single place where the messages are
-- decided (validate_entry and validate_entries both use it): unknown card
-- (enabled is NULL), disabled card, fraud (no charge), unlimited card valid or
-- expired, pay-per-ride charged when balance > fare, otherwise refused with an
-- Insufficient Balance alert. accept: 1 accepted, 0 rejected, -1 fraud.
CREATE OR REPLACE FUNCTION entry_outcome(enabled boolean, card_type smallint, balance integer,
                                         expires timestamptz, fare integer, fraud boolean,
                                         ts timestamptz)
RETURNS TABLE (accept smallint, amount integer, message text, alert text)
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN enabled IS NULL OR NOT enabled THEN 0
                WHEN fraud THEN -1
                WHEN card_type = 1 THEN (expires > ts)::integer
                ELSE (balance > fare)::integer END::smallint,
           CASE WHEN enabled AND NOT fraud AND card_type = 0 AND balance > fare THEN fare
                ELSE 0 END,
           CASE WHEN enabled IS NULL THEN 'Card Invalid'
                WHEN NOT enabled THEN 'Card Disabled'
                WHEN fraud THEN 'Fraudulent transaction'
                WHEN card_type = 1 AND expires > ts
                    THEN 'Card Expires: ' || to_char(expires, 'YYYY-MM-DD HH24:MI:SSOF')
                WHEN card_type = 1 THEN 'Card Expired'
                WHEN balance > fare THEN 'Remaining Balance: ' || cents_text(balance - fare)
                ELSE 'Card has insufficient balance: ' || cents_text(balance) END,
           CASE WHEN enabled AND NOT fraud AND card_type = 0 AND balance <= fare
                THEN 'Insufficient Balance' END
$$;

-- Decides an entry swipe and records it whatever the outcome, with a fraud
-- row for fraud and a card_alert_export row for an insufficient balance when
-- the card wants alerts.
CREATE OR REPLACE FUNCTION validate_entry(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS decision LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_card ALIAS FOR $1;
    p_station ALIAS FOR $2;
    p_ts ALIAS FOR $3;
    v_fare integer;
    v_station_name text;
    c cards%ROWTYPE;
    v_fraud boolean := false;
    o record;
BEGIN
    IF p_card IS NULL THEN PERFORM raise_null_argument('validate_entry', 'card_id'); END IF;
    IF p_station IS NULL THEN PERFORM raise_null_argument('validate_entry', 'station_id'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('validate_entry', 'ts'); END IF;
    SELECT s.fare, s.name INTO v_fare, v_station_name FROM stations s WHERE s.station_id = p_station;
    IF NOT FOUND THEN PERFORM raise_unknown_station(p_station); END IF;

    -- Simple statements: measured cheaper per swipe than one statement joining
    -- station, card, rules and outcome.
    SELECT * INTO c FROM cards WHERE cards.card_id = p_card FOR NO KEY UPDATE;
    IF c.enabled THEN
        SELECT f.rule <> 0 INTO STRICT v_fraud FROM fraud_rule(p_card, p_ts) f;
    END IF;
    SELECT * INTO o FROM entry_outcome(c.enabled, c.card_type, c.balance, c.expires, v_fare, v_fraud, p_ts);

    IF o.accept = -1 THEN
        INSERT INTO fraud (trans_id, card_id, ts, station_id, activity_code, amount)
        VALUES (fraud_trans_id(p_card, p_ts), p_card, p_ts, p_station, 1, v_fare);
    ELSIF o.amount > 0 THEN
        UPDATE cards SET balance = c.balance - o.amount WHERE cards.card_id = p_card;
    ELSIF o.alert IS NOT NULL AND c.notify <> 0 THEN
        INSERT INTO card_alert_export (card_id, ts, station_name, name, phone, email, notify, alert_message)
        VALUES (p_card, p_ts, v_station_name, c.name, c.phone, c.email, c.notify, o.alert);
    END IF;
    INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
    VALUES (p_card, p_ts, p_station, 1, o.amount, o.accept);
    RETURN ROW(o.accept = 1, o.message)::decision;
END
$$;
REVOKE ALL ON FUNCTION validate_entry(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION validate_entry(bigint, integer, timestamptz) TO metro_app;

-- Decides a batch of entry swipes in one call, each swipe getting exactly the
-- result it would get from validate_entry called alone, in input order. Every
-- card of the batch is locked first, in card order, so concurrent batches
-- cannot deadlock. Swipes are then decided set-wise in rounds: round k holds
-- each card's k-th swipe, so a card swiped twice sees its first swipe (balance,
-- same-second rule) as it would alone. The batch writes the per-second
-- history itself, one aggregate upsert per round, and tells the row trigger
-- on card_events to stand aside (metro.history_written). ts NULL means now()
-- for every swipe.
CREATE OR REPLACE FUNCTION validate_entries(card_ids bigint[], station_ids integer[],
                                            ts timestamptz[] DEFAULT NULL)
RETURNS TABLE (ordinal integer, accepted boolean, message text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    v_rounds integer;
    v_missing integer;
    v_ordinals integer[] := '{}';
    v_accepted boolean[] := '{}';
    v_messages text[] := '{}';
BEGIN
    IF card_ids IS NULL THEN PERFORM raise_null_argument('validate_entries', 'card_ids'); END IF;
    IF station_ids IS NULL THEN PERFORM raise_null_argument('validate_entries', 'station_ids'); END IF;
    IF cardinality(station_ids) <> cardinality(card_ids)
       OR (ts IS NOT NULL AND cardinality(ts) <> cardinality(card_ids)) THEN
        RAISE EXCEPTION 'validate_entries: card_ids, station_ids and ts must have the same length, got %, % and %',
            cardinality(card_ids), cardinality(station_ids), cardinality(ts)
            USING ERRCODE = '22023';
    END IF;
    SELECT min(u.n) INTO v_missing
    FROM unnest(card_ids, station_ids) WITH ORDINALITY u(card_id, station_id, n)
    WHERE u.card_id IS NULL OR u.station_id IS NULL;
    IF v_missing IS NOT NULL THEN
        PERFORM raise_null_argument('validate_entries',
            format('card_ids[%s] or station_ids[%s]', v_missing, v_missing));
    END IF;
    SELECT min(u.station_id) INTO v_missing
    FROM unnest(station_ids) u(station_id)
    WHERE NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = u.station_id);
    IF v_missing IS NOT NULL THEN PERFORM raise_unknown_station(v_missing); END IF;

    PERFORM FROM cards c WHERE c.card_id = ANY (card_ids) ORDER BY c.card_id FOR NO KEY UPDATE;
    SELECT max(per_card.n) INTO v_rounds
    FROM (SELECT count(*) AS n FROM unnest(card_ids) u(card_id) GROUP BY u.card_id) per_card;

    PERFORM set_config('metro.history_written', 'on', true);
    FOR v_round IN 1..coalesce(v_rounds, 0) LOOP
        WITH swipes AS (
            SELECT u.n::integer AS ordinal, u.card_id, u.station_id, coalesce(u.ts, now()) AS ts
            FROM (SELECT x.*, row_number() OVER (PARTITION BY x.card_id ORDER BY x.n) AS k
                  FROM unnest(card_ids, station_ids, ts) WITH ORDINALITY x(card_id, station_id, ts, n)) u
            WHERE u.k = v_round
        ), decided AS MATERIALIZED (
            SELECT w.*, st.fare, st.name AS station_name, c.name, c.phone, c.email, c.notify,
                   c.balance, o.accept, o.amount, o.message, o.alert
            FROM swipes w
            JOIN stations st ON st.station_id = w.station_id
            LEFT JOIN cards c ON c.card_id = w.card_id
            CROSS JOIN LATERAL fraud_rule(w.card_id, w.ts) f
            CROSS JOIN LATERAL entry_outcome(c.enabled, c.card_type, c.balance, c.expires,
                                             st.fare, f.rule <> 0, w.ts) o
        ), charged AS (
            UPDATE cards SET balance = d.balance - d.amount
            FROM decided d WHERE d.amount > 0 AND cards.card_id = d.card_id
        ), frauds AS (
            INSERT INTO fraud (trans_id, card_id, ts, station_id, activity_code, amount)
            SELECT fraud_trans_id(d.card_id, d.ts), d.card_id, d.ts, d.station_id, 1, d.fare
            FROM decided d WHERE d.accept = -1 ORDER BY d.card_id
        ), alerts AS (
            INSERT INTO card_alert_export (card_id, ts, station_name, name, phone, email, notify, alert_message)
            SELECT d.card_id, d.ts, d.station_name, d.name, d.phone, d.email, d.notify, d.alert
            FROM decided d WHERE d.alert IS NOT NULL AND d.notify <> 0 ORDER BY d.card_id
        ), recorded AS (
            INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
            SELECT d.card_id, d.ts, d.station_id, 1, d.amount, d.accept
            FROM decided d ORDER BY d.card_id
        ), card_seconds AS (
            -- One swipe per card in a round: one row per (card, second).
            INSERT INTO card_history_second AS h (card_id, second_start, swipes)
            SELECT d.card_id, date_trunc('second', d.ts), 1 FROM decided d ORDER BY d.card_id
            ON CONFLICT (card_id, second_start) DO UPDATE SET swipes = h.swipes + 1
        ), station_seconds AS (
            INSERT INTO station_second_slots AS s
                (station_id, second_start, slot, swipes, entries, accepted, rejected, fraud, revenue)
            SELECT d.station_id, date_trunc('second', d.ts), pg_backend_pid(), count(*), count(*),
                   count(*) FILTER (WHERE d.accept = 1), count(*) FILTER (WHERE d.accept = 0),
                   count(*) FILTER (WHERE d.accept = -1), sum(d.amount)
            FROM decided d GROUP BY 1, 2 ORDER BY 1, 2
            ON CONFLICT (station_id, second_start, slot) DO UPDATE SET
                swipes = s.swipes + excluded.swipes,
                entries = s.entries + excluded.entries,
                accepted = s.accepted + excluded.accepted,
                rejected = s.rejected + excluded.rejected,
                fraud = s.fraud + excluded.fraud,
                revenue = s.revenue + excluded.revenue
        )
        SELECT v_ordinals || array_agg(d.ordinal), v_accepted || array_agg(d.accept = 1),
               v_messages || array_agg(d.message)
        INTO v_ordinals, v_accepted, v_messages
        FROM decided d;
    END LOOP;
    PERFORM set_config('metro.history_written', 'off', true);

    RETURN QUERY SELECT r.ordinal, r.accepted, r.message
                 FROM unnest(v_ordinals, v_accepted, v_messages) r(ordinal, accepted, message)
                 ORDER BY r.ordinal;
END
$$;
REVOKE ALL ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) TO metro_app;

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

-- ---- procedures/05_recharge.sql at 1486912
-- Recharges at ticket machines.
SET search_path = metro, pg_catalog;

-- functions

-- Credits amount cents to an enabled card exactly once, records the purchase
-- and writes a card_alert_export row. Unknown and disabled cards are refused
-- (and recorded); a non-positive amount is an error and writes nothing.
-- The payment risk rules apply with the card as the account and the amount
-- in currency units: a blocked recharge credits nothing, is refused with the
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
        SELECT * INTO v_risk FROM match_risk_rule(p_card, p_amount::numeric / 100);
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
REVOKE ALL ON FUNCTION recharge_card(bigint, integer, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION recharge_card(bigint, integer, integer, timestamptz) TO metro_app;

RESET search_path;

-- ---- procedures/06_trains.sql at 1486912
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

-- ---- procedures/07_bridge.sql at 1486912
-- The bridge's side of the streams: the NOTIFY wake-up, reading past the
-- commit horizon, acknowledging, pruning and lag. The bridge (bridge/) calls
-- these as metro_bridge; Kafka never sees a row before every transaction that
-- could still commit an earlier row has finished.
SET search_path = metro, pg_catalog;

-- functions

-- Wakes the bridge when it sleeps. NOTIFY serializes committing transactions
-- on a cluster-wide lock, so a writer notifies only while the bridge is idle:
-- an idle bridge holds advisory lock (1836348002, 2) exclusively. A writer
-- that finds it free takes it shared until commit instead, so the bridge
-- cannot go idle before that writer's row is visible to its last look.
-- Statement-level, and PostgreSQL folds identical notifications of a
-- transaction: at most one per transaction. bridge_settings.notify = false
-- leaves the bridge to its polling alone.
CREATE OR REPLACE FUNCTION notify_bridge()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    IF (SELECT s.notify FROM bridge_settings s)
       AND NOT pg_try_advisory_xact_lock_shared(1836348002, 2) THEN
        PERFORM pg_notify('metro_bridge', TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END
$$;

-- The bridge's reads, for every stream in bridge_cursors: the next rows after
-- (after_txid, after_position) in (txid, position) order, only from
-- transactions below the snapshot's xmin: those have all ended, so no row can
-- later appear before the last one returned. value is the stream row without
-- position and txid, columns in table order, timestamps in UTC; key is its
-- key_column.
CREATE OR REPLACE FUNCTION bridge_batch(stream text, after_txid xid8, after_position bigint, max_rows integer)
RETURNS TABLE (row_txid xid8, row_position bigint, key text, value text)
LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp SET TimeZone = 'UTC' AS $$
DECLARE
    -- The same snapshot serves the horizon and the read below (STABLE).
    horizon xid8 := pg_snapshot_xmin(pg_current_snapshot());
    v_key text := bridge_stream_key(stream);
    v_columns text;
BEGIN
    SELECT string_agg(format('s.%I', a.attname), ', ' ORDER BY a.attnum) INTO v_columns
    FROM pg_attribute a
    WHERE a.attrelid = format('metro.%I', stream)::regclass AND a.attnum > 0
      AND NOT a.attisdropped AND a.attname NOT IN ('position', 'txid');
    RETURN QUERY EXECUTE format(
        'SELECT s.txid, s.position, s.%I::text, row_to_json(v)::text FROM %I s'
        ' CROSS JOIN LATERAL (SELECT %s) v'
        ' WHERE (s.txid, s.position) > ($1, $2) AND s.txid < $3'
        ' ORDER BY s.txid, s.position LIMIT $4', v_key, stream, v_columns)
        USING after_txid, after_position, horizon, max_rows;
END
$$;

-- Whether committed rows of a stream follow (after_txid, after_position),
-- readable yet or still held back by the commit horizon.
CREATE OR REPLACE FUNCTION bridge_has_rows(stream text, after_txid xid8, after_position bigint)
RETURNS boolean LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    found boolean;
BEGIN
    PERFORM bridge_stream_key(stream);
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE (txid, position) > ($1, $2))', stream)
        INTO found USING after_txid, after_position;
    RETURN found;
END
$$;

-- The Kafka key column of a registered stream; MT005 for any other name, so
-- only bridge_cursors' streams ever reach the dynamic SQL above.
CREATE OR REPLACE FUNCTION bridge_stream_key(stream text)
RETURNS text LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    v_key text;
BEGIN
    SELECT c.key_column INTO v_key FROM bridge_cursors c WHERE c.stream = bridge_stream_key.stream;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Unknown stream: %', stream
            USING ERRCODE = 'MT005',
                  HINT = 'Streams are the rows of metro.bridge_cursors.';
    END IF;
    RETURN v_key;
END
$$;

-- Records that Kafka acknowledged a stream up to (last_txid, last_position).
-- The cursor only moves forward; a stale bridge cannot move it back.
CREATE OR REPLACE FUNCTION bridge_ack(stream text, last_txid xid8, last_position bigint, rows_acked bigint)
RETURNS boolean LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
DECLARE
    p_stream ALIAS FOR $1;
BEGIN
    UPDATE bridge_cursors c
    SET txid = last_txid, position = last_position, delivered = c.delivered + rows_acked,
        acked_at = now()
    WHERE c.stream = p_stream AND (c.txid, c.position) < (last_txid, last_position);
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO bridge_acks (stream, txid, position) VALUES (p_stream, last_txid, last_position)
    ON CONFLICT DO NOTHING;
    RETURN true;
END
$$;

-- Deletes delivered rows acknowledged more than retention ago, at most
-- max_rows per stream per call, and the cursor history they no longer need.
CREATE OR REPLACE FUNCTION bridge_prune(retention interval, max_rows integer)
RETURNS TABLE (stream text, pruned bigint)
LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
DECLARE
    c record;
    mark record;
    n bigint;
BEGIN
    FOR c IN SELECT bc.stream FROM bridge_cursors bc ORDER BY bc.stream LOOP
        SELECT a.txid, a.position INTO mark FROM bridge_acks a
        WHERE a.stream = c.stream AND a.acked_at <= now() - retention
        ORDER BY a.txid DESC, a.position DESC LIMIT 1;
        n := 0;
        IF FOUND THEN
            -- Table names come from bridge_cursors' CHECK list, never from a caller.
            EXECUTE format('DELETE FROM %I WHERE position IN (SELECT position FROM %I'
                           ' WHERE (txid, position) <= ($1, $2) ORDER BY txid, position LIMIT $3)',
                           c.stream, c.stream)
                USING mark.txid, mark.position, max_rows;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n < max_rows THEN
                DELETE FROM bridge_acks a
                WHERE a.stream = c.stream AND (a.txid, a.position) < (mark.txid, mark.position);
            END IF;
        END IF;
        stream := c.stream;
        pruned := n;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Lag per stream: committed rows not yet acknowledged by Kafka and the event
-- time of the oldest of them (ts; exit_ts for trips).
CREATE OR REPLACE FUNCTION bridge_lag()
RETURNS TABLE (stream text, topic text, delivered bigint, acked_at timestamptz, pending bigint,
               oldest_pending timestamptz)
LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT * FROM bridge_cursors bc ORDER BY bc.stream LOOP
        stream := c.stream;
        topic := c.topic;
        delivered := c.delivered;
        acked_at := c.acked_at;
        EXECUTE format('SELECT count(*), min(%I) FROM %I WHERE (txid, position) > ($1, $2)',
                       CASE c.stream WHEN 'trips' THEN 'exit_ts' ELSE 'ts' END, c.stream)
            INTO pending, oldest_pending USING c.txid, c.position;
        RETURN NEXT;
    END LOOP;
END
$$;

-- triggers
DROP TRIGGER IF EXISTS fraud_notify_bridge ON fraud;
CREATE TRIGGER fraud_notify_bridge AFTER INSERT ON fraud
    FOR EACH STATEMENT EXECUTE FUNCTION notify_bridge();
DROP TRIGGER IF EXISTS card_alert_export_notify_bridge ON card_alert_export;
CREATE TRIGGER card_alert_export_notify_bridge AFTER INSERT ON card_alert_export
    FOR EACH STATEMENT EXECUTE FUNCTION notify_bridge();
DROP TRIGGER IF EXISTS trips_notify_bridge ON trips;
CREATE TRIGGER trips_notify_bridge AFTER INSERT ON trips
    FOR EACH STATEMENT EXECUTE FUNCTION notify_bridge();

-- grants
REVOKE ALL ON FUNCTION bridge_batch(text, xid8, bigint, integer),
    bridge_has_rows(text, xid8, bigint), bridge_stream_key(text),
    bridge_ack(text, xid8, bigint, bigint), bridge_prune(interval, integer), bridge_lag()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bridge_batch(text, xid8, bigint, integer),
    bridge_has_rows(text, xid8, bigint), bridge_stream_key(text),
    bridge_ack(text, xid8, bigint, bigint), bridge_prune(interval, integer), bridge_lag()
    TO metro_bridge;
GRANT EXECUTE ON FUNCTION bridge_lag() TO metro_reader;
-- Inbound topics feed these functions.
GRANT EXECUTE ON FUNCTION record_train_event(integer, integer, integer, timestamptz),
    recharge_card(bigint, integer, integer, timestamptz) TO metro_bridge;

RESET search_path;

-- ---- procedures/08_risk.sql at 1486912
-- Payment risk control: the rule match shared by payments and recharges,
-- evaluate_transaction, and the decisions stream's wake-up trigger.
--
-- Error codes added here (also in README "Errors"):
--   MT007 invalid transaction_id (empty, or longer than 200 characters)
--   MT008 no risk rule covers the transaction (risk_rules lacks a catch-all)
SET search_path = metro, pg_catalog;

-- functions

-- The first rule, in rule_order, whose amount range holds amount (currency
-- units) and whose minimum level the account's tag reaches; an account
-- without a tag is level 1. Raises MT008 when no rule matches. Private.
CREATE OR REPLACE FUNCTION match_risk_rule(account_id bigint, amount numeric,
    OUT risk_level smallint, OUT blocked boolean, OUT rule text, OUT message text)
LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    p_account ALIAS FOR $1;
    p_amount ALIAS FOR $2;
BEGIN
    risk_level := coalesce((SELECT t.risk_level FROM risk_tags t WHERE t.account_id = p_account), 1);
    SELECT r.action = 'block', r.rule, r.reason INTO blocked, rule, message
    FROM risk_rules r
    WHERE r.amount_range @> p_amount AND r.min_risk_level <= match_risk_rule.risk_level
    ORDER BY r.rule_order
    LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No risk rule covers amount % for account % (risk level %)',
            p_amount, p_account, match_risk_rule.risk_level
            USING ERRCODE = 'MT008',
                  HINT = 'Keep a last rule with amount_range ''(,)'' and min_risk_level 1 in metro.risk_rules.';
    END IF;
END
$$;

-- Decides a payment with the risk rules and records the decision once:
-- a transaction_id seen before gets its recorded decision back and nothing
-- is written. A new decision is also written to the transaction_decisions
-- stream. Bad arguments raise MT003/MT004/MT007 and write nothing.
CREATE OR REPLACE FUNCTION evaluate_transaction(transaction_id text, account_id bigint, amount numeric,
                                                ts timestamptz DEFAULT now())
RETURNS risk_verdict LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_transaction ALIAS FOR $1;
    p_account ALIAS FOR $2;
    p_amount ALIAS FOR $3;
    p_ts ALIAS FOR $4;
    v risk_verdict;
    m record;
BEGIN
    IF p_transaction IS NULL THEN PERFORM raise_null_argument('evaluate_transaction', 'transaction_id'); END IF;
    IF p_account IS NULL THEN PERFORM raise_null_argument('evaluate_transaction', 'account_id'); END IF;
    IF p_amount IS NULL THEN PERFORM raise_null_argument('evaluate_transaction', 'amount'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('evaluate_transaction', 'ts'); END IF;
    IF btrim(p_transaction) = '' OR length(p_transaction) > 200 THEN
        RAISE EXCEPTION 'Invalid transaction_id: %', quote_literal(left(p_transaction, 40))
            USING ERRCODE = 'MT007',
                  HINT = 'A transaction_id is 1 to 200 characters, not only spaces.';
    END IF;
    IF p_amount <= 0 OR p_amount <> round(p_amount, 2) OR p_amount >= 1e12 THEN
        RAISE EXCEPTION 'Transaction amount must be positive, below 1,000,000,000,000, with at most two decimals: %', p_amount
            USING ERRCODE = 'MT003', HINT = 'Amounts are currency units with cents: 5000.01.';
    END IF;

    SELECT d.blocked, d.rule, d.message INTO v
    FROM risk_decisions d WHERE d.transaction_id = p_transaction;
    IF FOUND THEN
        RETURN v;
    END IF;

    SELECT * INTO m FROM match_risk_rule(p_account, p_amount);
    INSERT INTO risk_decisions (transaction_id, account_id, amount, ts, risk_level, blocked, rule, message)
    VALUES (p_transaction, p_account, p_amount, p_ts, m.risk_level, m.blocked, m.rule, m.message)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        -- The same transaction_id was decided by a call that committed meanwhile.
        SELECT d.blocked, d.rule, d.message INTO v
        FROM risk_decisions d WHERE d.transaction_id = p_transaction;
        RETURN v;
    END IF;
    INSERT INTO transaction_decisions (transaction_id, account_id, amount, ts, risk_level, blocked, rule, message)
    VALUES (p_transaction, p_account, p_amount, p_ts, m.risk_level, m.blocked, m.rule, m.message);
    RETURN ROW(m.blocked, m.rule, m.message)::risk_verdict;
END
$$;
REVOKE ALL ON FUNCTION evaluate_transaction(text, bigint, numeric, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evaluate_transaction(text, bigint, numeric, timestamptz)
    TO metro_app, metro_bridge;

-- triggers
DROP TRIGGER IF EXISTS transaction_decisions_notify_bridge ON transaction_decisions;
CREATE TRIGGER transaction_decisions_notify_bridge AFTER INSERT ON transaction_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION notify_bridge();

-- grants
REVOKE ALL ON FUNCTION match_risk_rule(bigint, numeric) FROM PUBLIC;

RESET search_path;

-- ---- procedures/09_risk_batch.sql at 1486912
-- Payment risk control, set-wise: evaluate_transactions decides a batch of
-- payments in a few statements with exactly the results of evaluate_transaction
-- called on each payment in input order. The bridge feeds transaction_topic
-- through it, one call per partition and poll.
SET search_path = metro, pg_catalog;

-- functions

-- Decides payments i = 1..n (transaction_ids[i], account_ids[i], amounts[i],
-- ts[i]) and returns one row per input position, in input order: what
-- evaluate_transaction would return for it, called one by one. A
-- transaction_id decided before gets its recorded decision and writes nothing;
-- a transaction_id repeated within the batch is decided by its first
-- occurrence and the later ones get that decision. ts NULL, or a NULL element,
-- means now(). Arrays of different lengths raise 22023. When any payment would
-- be refused (MT003, MT004, MT007, MT008), the batch is decided by
-- evaluate_transaction one payment at a time, so the caller gets exactly the
-- error of the first refused payment, and the whole call writes nothing.
CREATE OR REPLACE FUNCTION evaluate_transactions(transaction_ids text[], account_ids bigint[],
                                                 amounts numeric[], ts timestamptz[] DEFAULT NULL)
RETURNS TABLE (ordinal integer, blocked boolean, rule text, message text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    v_refused boolean;
    v_payment record;
    v risk_verdict;
BEGIN
    IF transaction_ids IS NULL THEN PERFORM raise_null_argument('evaluate_transactions', 'transaction_ids'); END IF;
    IF account_ids IS NULL THEN PERFORM raise_null_argument('evaluate_transactions', 'account_ids'); END IF;
    IF amounts IS NULL THEN PERFORM raise_null_argument('evaluate_transactions', 'amounts'); END IF;
    IF cardinality(account_ids) <> cardinality(transaction_ids)
       OR cardinality(amounts) <> cardinality(transaction_ids)
       OR (ts IS NOT NULL AND cardinality(ts) <> cardinality(transaction_ids)) THEN
        RAISE EXCEPTION 'evaluate_transactions: transaction_ids, account_ids, amounts and ts must have the same length, got %, %, % and %',
            cardinality(transaction_ids), cardinality(account_ids), cardinality(amounts), cardinality(ts)
            USING ERRCODE = '22023';
    END IF;

    WITH payments AS (
        SELECT u.n, u.transaction_id, u.account_id, u.amount, coalesce(u.ts, now()) AS ts
        FROM unnest(transaction_ids, account_ids, amounts, ts)
             WITH ORDINALITY u(transaction_id, account_id, amount, ts, n)
    ), fresh AS MATERIALIZED (
        -- First occurrences of the transaction_ids not decided before, with the
        -- rule match of match_risk_rule (NULL rule: none matches, MT008).
        SELECT f.*, m.risk_level, r.blocked, r.rule, r.message
        FROM (SELECT DISTINCT ON (p.transaction_id) p.*
              FROM payments p
              WHERE NOT EXISTS (SELECT FROM risk_decisions d WHERE d.transaction_id = p.transaction_id)
              ORDER BY p.transaction_id, p.n) f
        CROSS JOIN LATERAL (SELECT coalesce((SELECT t.risk_level FROM risk_tags t
                                             WHERE t.account_id = f.account_id), 1) AS risk_level) m
        LEFT JOIN LATERAL (SELECT k.action = 'block' AS blocked, k.rule, k.reason AS message
                           FROM risk_rules k
                           WHERE k.amount_range @> f.amount AND k.min_risk_level <= m.risk_level
                           ORDER BY k.rule_order
                           LIMIT 1) r ON true
    ), refused AS (
        -- The payments evaluate_transaction refuses (keep in step with its checks).
        SELECT FROM payments p
        WHERE p.transaction_id IS NULL OR p.account_id IS NULL OR p.amount IS NULL
           OR btrim(p.transaction_id) = '' OR length(p.transaction_id) > 200
           OR p.amount <= 0 OR p.amount <> round(p.amount, 2) OR p.amount >= 1e12
        UNION ALL
        SELECT FROM fresh f WHERE f.rule IS NULL
    ), decided AS (
        INSERT INTO risk_decisions AS d (transaction_id, account_id, amount, ts, risk_level, blocked, rule, message)
        SELECT f.transaction_id, f.account_id, f.amount, f.ts, f.risk_level, f.blocked, f.rule, f.message
        FROM fresh f
        WHERE NOT EXISTS (SELECT FROM refused)
        ORDER BY f.n
        ON CONFLICT DO NOTHING
        RETURNING d.transaction_id
    ), streamed AS (
        INSERT INTO transaction_decisions (transaction_id, account_id, amount, ts, risk_level, blocked, rule, message)
        SELECT f.transaction_id, f.account_id, f.amount, f.ts, f.risk_level, f.blocked, f.rule, f.message
        FROM decided d JOIN fresh f ON f.transaction_id = d.transaction_id
        ORDER BY f.n
    )
    SELECT EXISTS (SELECT FROM refused) INTO v_refused;

    IF v_refused THEN
        FOR v_payment IN SELECT u.n, u.transaction_id, u.account_id, u.amount, coalesce(u.ts, now()) AS ts
                 FROM unnest(transaction_ids, account_ids, amounts, ts)
                      WITH ORDINALITY u(transaction_id, account_id, amount, ts, n)
                 ORDER BY u.n LOOP
            v := evaluate_transaction(v_payment.transaction_id, v_payment.account_id, v_payment.amount, v_payment.ts);
            ordinal := v_payment.n;
            blocked := v.blocked;
            rule := v.rule;
            message := v.message;
            RETURN NEXT;
        END LOOP;
        RETURN;
    END IF;
    -- A new statement: it sees this call's decisions and those that concurrent
    -- calls committed meanwhile (the ON CONFLICT DO NOTHING above).
    RETURN QUERY
        SELECT u.n::integer, d.blocked, d.rule, d.message
        FROM unnest(transaction_ids) WITH ORDINALITY u(transaction_id, n)
        JOIN risk_decisions d ON d.transaction_id = u.transaction_id
        ORDER BY u.n;
END
$$;

-- grants
REVOKE ALL ON FUNCTION evaluate_transactions(text[], bigint[], numeric[], timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evaluate_transactions(text[], bigint[], numeric[], timestamptz[])
    TO metro_app, metro_bridge;

RESET search_path;

