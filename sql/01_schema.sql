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
