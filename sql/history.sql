-- Derived data: the per-second history of card_events and the alerts
-- exported per card. Only the rollup writes these tables (run_rollup(),
-- procedures/history.sql), exactly once per source row, behind the commit
-- horizon; never a trigger, never a refresh, never a session setting. So they
-- carry no CHECKs; their invariants are proven by tests/test_history.py
-- against a recomputation from their sources. The per-second tables are
-- partitioned by UTC day of second_start (run_maintenance() creates and drops
-- the partitions, procedures/maintenance.sql).
SET search_path = metro, pg_catalog;

-- tables
CREATE TABLE card_history_second (
    card_id bigint NOT NULL,
    second_start timestamptz NOT NULL,
    swipes integer NOT NULL,
    PRIMARY KEY (card_id, second_start)
) PARTITION BY RANGE (second_start);
COMMENT ON TABLE card_history_second IS 'Card events per card and second (VoltDB CARD_HISTORY_SECOND); written by the rollup, partitioned by UTC day';
COMMENT ON COLUMN card_history_second.card_id IS 'Card';
COMMENT ON COLUMN card_history_second.second_start IS 'date_trunc(''second'', ts) of the events';
COMMENT ON COLUMN card_history_second.swipes IS 'Card events (entries, exits, purchases) of the card in that second';
CREATE TABLE card_history_second_default PARTITION OF card_history_second DEFAULT;
COMMENT ON TABLE card_history_second_default IS 'card_history_second of days without a partition of their own; run_maintenance() deletes its rows past history_retention';
CREATE INDEX card_history_second_default_second ON card_history_second_default (second_start);

-- One row per station and second; the station_second_stats view reads it.
-- The rollup is its only writer, one transaction at a time, so the counters
-- need no striping.
CREATE TABLE station_second_slots (
    station_id integer NOT NULL,
    second_start timestamptz NOT NULL,
    swipes integer NOT NULL,
    entries integer NOT NULL,
    accepted integer NOT NULL,
    rejected integer NOT NULL,
    fraud integer NOT NULL,
    revenue bigint NOT NULL,
    PRIMARY KEY (station_id, second_start)
) PARTITION BY RANGE (second_start);
COMMENT ON TABLE station_second_slots IS 'Per station and second counters, written by the rollup, partitioned by UTC day; read them through station_second_stats';
COMMENT ON COLUMN station_second_slots.station_id IS 'Station';
COMMENT ON COLUMN station_second_slots.second_start IS 'date_trunc(''second'', ts) of the events';
COMMENT ON COLUMN station_second_slots.swipes IS 'All card events at the station';
COMMENT ON COLUMN station_second_slots.entries IS 'Entry swipes, whatever their outcome';
COMMENT ON COLUMN station_second_slots.accepted IS 'Accepted entries';
COMMENT ON COLUMN station_second_slots.rejected IS 'Rejected entries';
COMMENT ON COLUMN station_second_slots.fraud IS 'Entries refused as fraud (entries = accepted + rejected + fraud)';
COMMENT ON COLUMN station_second_slots.revenue IS 'Fares charged on accepted entries, in cents';
CREATE TABLE station_second_slots_default PARTITION OF station_second_slots DEFAULT;
COMMENT ON TABLE station_second_slots_default IS 'station_second_slots of days without a partition of their own; run_maintenance() deletes its rows past history_retention';
CREATE INDEX station_second_slots_default_second ON station_second_slots_default (second_start);

-- Lifetime counters per station, added to by the rollup in the transaction that
-- adds the per-second slots. /metrics exports them as counters: summed from the
-- retained slots they fell each time run_maintenance() dropped a day, and reading
-- them cost a scan of every retained second (630 ms for 6 million slots).
CREATE TABLE station_totals (
    station_id integer PRIMARY KEY,
    swipes bigint NOT NULL,
    entries bigint NOT NULL,
    accepted bigint NOT NULL,
    rejected bigint NOT NULL,
    fraud bigint NOT NULL,
    revenue bigint NOT NULL
);
COMMENT ON TABLE station_totals IS 'Per station counters of every card event rolled up, never lowered by retention; written by the rollup, emptied with card_events by TRUNCATE';
COMMENT ON COLUMN station_totals.station_id IS 'Station';
COMMENT ON COLUMN station_totals.swipes IS 'All card events at the station';
COMMENT ON COLUMN station_totals.entries IS 'Entry swipes, whatever their outcome';
COMMENT ON COLUMN station_totals.accepted IS 'Accepted entries';
COMMENT ON COLUMN station_totals.rejected IS 'Rejected entries';
COMMENT ON COLUMN station_totals.fraud IS 'Entries refused as fraud (entries = accepted + rejected + fraud)';
COMMENT ON COLUMN station_totals.revenue IS 'Fares charged on accepted entries, in cents';

-- Like VoltDB's view on the export stream: counted from card_alert_export by
-- the rollup, so the counts stay when the bridge prunes delivered rows.
CREATE TABLE card_export_stats (
    card_id bigint NOT NULL,
    station_name text NOT NULL,
    alerts integer NOT NULL,
    PRIMARY KEY (card_id, station_name)
);
COMMENT ON TABLE card_export_stats IS 'Alerts exported per card and station, counted by the rollup from card_alert_export; kept when the bridge prunes delivered stream rows';
COMMENT ON COLUMN card_export_stats.card_id IS 'Card';
COMMENT ON COLUMN card_export_stats.station_name IS 'Station named in the alerts';
COMMENT ON COLUMN card_export_stats.alerts IS 'card_alert_export rows of the card and station ever written';

-- grants
GRANT SELECT ON card_export_stats TO metro_reader;
