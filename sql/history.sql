-- Materialized per-second history. Maintained incrementally by the
-- card_events triggers (procedures/history.sql) in the same transaction as
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
COMMENT ON TABLE card_history_second IS 'Card events per card and second (VoltDB CARD_HISTORY_SECOND)';
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
