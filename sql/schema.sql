-- metro schema: namespace, shared types and domains, operator settings.
-- The install order of sql/ and procedures/ is metro.schema.TREE.

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
CREATE TYPE entry_result AS (accept smallint, amount integer, message text, alert text);
COMMENT ON TYPE entry_result IS 'Outcome of an entry swipe (entry_outcome()): accept 1 accepted, 0 rejected, -1 fraud; amount charged in cents; the gate message; the alert to send, if any';

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
    max_wait interval NOT NULL DEFAULT '30 minutes' CHECK (max_wait > interval '0'),
    event_retention interval NOT NULL DEFAULT '30 days' CHECK (event_retention >= interval '1 day'),
    history_retention interval NOT NULL DEFAULT '90 days' CHECK (history_retention >= interval '1 day'),
    dead_letter_retention interval NOT NULL DEFAULT '30 days'
        CHECK (dead_letter_retention >= interval '1 hour'),
    partitions_ahead integer NOT NULL DEFAULT 3 CHECK (partitions_ahead BETWEEN 1 AND 366),
    max_clock_skew interval NOT NULL DEFAULT '10 minutes' CHECK (max_clock_skew >= interval '0'),
    decision_retention interval NOT NULL DEFAULT '30 days'
        CHECK (decision_retention >= interval '1 day')
);
COMMENT ON TABLE settings IS 'Operator-tunable thresholds, one row; an UPDATE takes effect on the next call';
COMMENT ON COLUMN settings.singleton IS 'Always true: the table holds exactly one row';
COMMENT ON COLUMN settings.fraud_window IS 'How far back the fraud rules look: entries in [ts - fraud_window, ts) count';
COMMENT ON COLUMN settings.fraud_station_limit IS 'Fraud when the card entered at this many distinct stations within the window';
COMMENT ON COLUMN settings.fraud_entry_limit IS 'Fraud when the card has this many entries within the window';
COMMENT ON COLUMN settings.max_wait IS 'Entries older than this before a departure are not counted as waiting for it';
COMMENT ON COLUMN settings.event_retention IS 'run_maintenance() drops a daily partition of card_events once all of it is older than this (default 30 days; at least 1 day)';
COMMENT ON COLUMN settings.history_retention IS 'run_maintenance() drops a daily partition of card_history_second and station_second_slots once all of it is older than this, and deletes older train_events and station_departures rows (default 90 days)';
COMMENT ON COLUMN settings.dead_letter_retention IS 'run_maintenance() deletes the bridge''s dead letters (bridge_dead_letters, bridge_outbound_dead_letters) set aside longer ago than this (default 30 days)';
COMMENT ON COLUMN settings.partitions_ahead IS 'run_maintenance() keeps daily partitions (UTC days) created from today through this many days ahead (default 3)';
COMMENT ON COLUMN settings.decision_retention IS 'run_maintenance() deletes risk_decisions rows decided longer ago than this (default 30 days; at least 1 day): a transaction_id is answered with its recorded decision for this long, and decided afresh if it comes again later';
COMMENT ON COLUMN settings.max_clock_skew IS 'How far from now() a metro_app caller may pass ts (turnstiles that store and forward); metro_replay members may pass any valid ts';
INSERT INTO settings DEFAULT VALUES;
