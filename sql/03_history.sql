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
