-- Revision 0008 (frozen): the hot path decides and records; derived data
-- follows exactly once through run_rollup() behind the commit horizon (no
-- history trigger, no metro.history_written); card_events and the per-second
-- history partitioned by UTC day, run_maintenance() with retention settings;
-- card_export_stats a table the bridge's pruning cannot empty;
-- station_departures derived by the rollup; validate_entries linear in the
-- batch; keys of per-card tables start with card_id; role metro_worker, the
-- worker lease and worker_lag().
--
-- Every event is kept (moved into daily partitions), the derived tables are
-- recomputed from their sources, and the rollup's cursors start after the
-- rows that exist. Run it with the writers stopped: a transaction that began
-- before it and writes card events after it would not be rolled up.
SET search_path = metro, pg_catalog;

-- Writers wait for the upgrade (and the upgrade for the writers in flight).
LOCK TABLE card_events, card_alert_export, train_events IN EXCLUSIVE MODE;

-- settings
ALTER TABLE settings
    ADD COLUMN event_retention interval NOT NULL DEFAULT '30 days' CHECK (event_retention >= interval '1 day'),
    ADD COLUMN history_retention interval NOT NULL DEFAULT '90 days' CHECK (history_retention >= interval '1 day'),
    ADD COLUMN dead_letter_retention interval NOT NULL DEFAULT '30 days'
        CHECK (dead_letter_retention >= interval '1 hour'),
    ADD COLUMN partitions_ahead integer NOT NULL DEFAULT 3 CHECK (partitions_ahead BETWEEN 1 AND 366);
COMMENT ON COLUMN settings.event_retention IS 'run_maintenance() drops a daily partition of card_events once all of it is older than this (default 30 days; at least 1 day)';
COMMENT ON COLUMN settings.history_retention IS 'run_maintenance() drops a daily partition of card_history_second and station_second_slots once all of it is older than this (default 90 days)';
COMMENT ON COLUMN settings.dead_letter_retention IS 'run_maintenance() deletes bridge_dead_letters rows received longer ago than this (default 30 days)';
COMMENT ON COLUMN settings.partitions_ahead IS 'run_maintenance() keeps daily partitions (UTC days) created from today through this many days ahead (default 3)';
-- An upgrade never deletes data by itself: the retention covers the oldest
-- event and history row (an operator shortens it once the worker runs).
UPDATE settings SET
    event_retention = greatest(event_retention,
        coalesce(date_trunc('day', now() - (SELECT min(ts) FROM card_events)) + interval '2 days', interval '0')),
    history_retention = greatest(history_retention,
        coalesce(date_trunc('day', now() - (SELECT min(ts) FROM card_events)) + interval '2 days', interval '0'));

-- The writing transaction's id, for the txid column of card_events and
-- train_events: the rollup (procedures/history.sql) reads those rows in
-- (txid, ...) order behind the commit horizon, as the bridge reads the
-- streams. Declared IMMUTABLE only so that it may be a stored generated
-- column (which a file or a caller can never supply, and the loader leaves
-- out): PostgreSQL evaluates a generated column's expression when each INSERT
-- or COPY starts executing, inside the writing transaction, which is the one
-- value wanted. Never use it anywhere else.
CREATE OR REPLACE FUNCTION writing_txid()
RETURNS xid8 LANGUAGE sql IMMUTABLE PARALLEL UNSAFE AS $$
    SELECT pg_current_xact_id()
$$;
COMMENT ON FUNCTION writing_txid() IS 'The writing transaction''s id (pg_current_xact_id()), as the stored generated txid column of card_events and train_events; declared IMMUTABLE only for that use';
REVOKE ALL ON FUNCTION writing_txid() FROM PUBLIC;

-- Out of the way: the views over the old history, the history trigger, the
-- old tables (card_events is moved below, the history recomputed).
DROP VIEW station_second_stats, swipes_per_second, acceptance_rate, busiest_stations,
    card_export_stats, station_wait_times, dashboard_seconds, dashboard_stations,
    dashboard_trains, dashboard_fraud_feed, dashboard_payments, dashboard_totals;
DROP TRIGGER card_events_history ON card_events;
DROP TRIGGER card_events_append_only ON card_events;
DROP TRIGGER card_events_truncate ON card_events;
DROP FUNCTION card_events_add_history();
CREATE TABLE card_events_before_0008 AS SELECT * FROM card_events;
CREATE TABLE card_events_sequence_before_0008 AS
    SELECT s.last_value, s.is_called FROM card_events_event_id_seq s;
DROP TABLE card_events, card_history_second, station_second_slots;

-- card_events, partitioned
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
COMMENT ON COLUMN card_events.station_id IS 'Where the swipe happened; checked against stations by a row trigger (a foreign key would take a share lock on the station row in every swipe)';
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

-- the derived tables
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

-- network: the rollup reads train events by their writing transaction
ALTER TABLE train_events ADD COLUMN txid xid8 NOT NULL GENERATED ALWAYS AS (writing_txid()) STORED;
COMMENT ON COLUMN train_events.txid IS 'Writing transaction (generated): the rollup reads departures in txid order behind the commit horizon';
COMMENT ON TABLE station_departures IS 'Wait-time statistics, one row per departure: the entries that waited for it; written by the rollup (run_rollup()) from train_events and station_second_slots';
CREATE INDEX train_events_txid ON train_events (txid);

-- streams: keys start with card_id
ALTER TABLE fraud DROP CONSTRAINT fraud_pkey, ADD PRIMARY KEY (card_id, position);
ALTER TABLE card_alert_export DROP CONSTRAINT card_alert_export_pkey, ADD PRIMARY KEY (card_id, position);
ALTER TABLE trips DROP CONSTRAINT trips_pkey, DROP CONSTRAINT trips_trip_id_key,
    ADD PRIMARY KEY (card_id, position), ADD UNIQUE (card_id, trip_id);

-- the worker
-- roles
-- Roles are cluster-wide, so creating one is conditional.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'metro_worker') THEN
        CREATE ROLE metro_worker NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA metro TO metro_worker;

-- tables
CREATE TABLE worker_cursors (
    source text PRIMARY KEY CHECK (source IN ('card_events', 'card_alert_export', 'train_events')),
    txid xid8 NOT NULL DEFAULT '0',
    position bigint NOT NULL DEFAULT 0 CHECK (position >= 0),
    rolled_up bigint NOT NULL DEFAULT 0 CHECK (rolled_up >= 0),
    rolled_up_at timestamptz
);
COMMENT ON TABLE worker_cursors IS 'The rollup''s cursor per source table, moved in the same transaction as the derived rows it wrote: every source row at or before (txid, position) is counted once';
COMMENT ON COLUMN worker_cursors.source IS 'Source table: card_events (per-second history, station counters), card_alert_export (card_export_stats), train_events (station_departures)';
COMMENT ON COLUMN worker_cursors.txid IS 'Writing transaction of the last source row rolled up (rows are read in (txid, position) order, below the commit horizon)';
COMMENT ON COLUMN worker_cursors.position IS 'event_id (card_events) or stream position (card_alert_export) of the last row rolled up; 0 for train_events, read whole transactions at a time';
COMMENT ON COLUMN worker_cursors.rolled_up IS 'Source rows rolled up since the schema was created';
COMMENT ON COLUMN worker_cursors.rolled_up_at IS 'When the cursor last moved';
INSERT INTO worker_cursors (source) VALUES ('card_events'), ('card_alert_export'), ('train_events');

CREATE TABLE worker_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    holder text,
    since timestamptz,
    lease_until timestamptz,
    heartbeat_at timestamptz,
    last_maintenance_at timestamptz,
    last_maintenance text,
    last_error text,
    last_error_at timestamptz
);
COMMENT ON TABLE worker_state IS 'The worker lease (holder until lease_until, renewed by heartbeats) and what the worker last did, for metro worker --status';
COMMENT ON COLUMN worker_state.singleton IS 'Always true: the table holds exactly one row';
COMMENT ON COLUMN worker_state.holder IS 'host:pid of the worker holding the lease (or that last held it)';
COMMENT ON COLUMN worker_state.since IS 'When the holder took the lease';
COMMENT ON COLUMN worker_state.lease_until IS 'The lease is the holder''s until then; another worker may take it afterwards';
COMMENT ON COLUMN worker_state.heartbeat_at IS 'Last renewal by the holder';
COMMENT ON COLUMN worker_state.last_maintenance_at IS 'When run_maintenance() last finished (whoever called it: the worker or pg_cron)';
COMMENT ON COLUMN worker_state.last_maintenance IS 'What that run did, e.g. created 2, dropped 1, deleted 0';
COMMENT ON COLUMN worker_state.last_error IS 'Last error the worker reported';
COMMENT ON COLUMN worker_state.last_error_at IS 'When last_error happened';
INSERT INTO worker_state DEFAULT VALUES;

-- grants
GRANT SELECT ON worker_cursors, worker_state TO metro_reader;

-- views
-- views
CREATE VIEW station_second_stats AS
SELECT station_id, second_start, swipes, entries, accepted, rejected, fraud, revenue
FROM station_second_slots;
COMMENT ON VIEW station_second_stats IS 'Per station and second: swipes, entries and their outcomes, fares charged (cents); as current as the rollup (worker_lag())';

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
  AND sl.second_start <= now()
GROUP BY st.station_id, st.name
ORDER BY swipes DESC, st.station_id;
COMMENT ON VIEW busiest_stations IS 'Stations by card events in the last minute ([now - 1 minute, now]: a swipe replayed with a future ts counts once its time has come), busiest first';

CREATE VIEW station_wait_times AS
SELECT st.station_id, st.name, count(*)::integer AS departures, sum(d.riders)::integer AS riders,
       round(sum(d.wait_seconds) / nullif(sum(d.riders), 0), 1) AS average_wait_seconds
FROM station_departures d
JOIN stations st USING (station_id)
GROUP BY st.station_id, st.name;
COMMENT ON VIEW station_wait_times IS 'Average wait per station: seconds between a rider''s entry and the next departure';

-- The dashboard's reads (metro dashboard and its /metrics)
-- The dashboard's reads (`metro dashboard`, its /metrics): views for
-- metro_reader over the per-second history, the streams and the bridge's
-- tables. Every view reads through an index in a time window that ends at
-- now(), so a swipe replayed with a future ts is never counted before its
-- time, and the work per read is bounded by the window, not by the history:
-- the per-station windows are one index range per station (station_id,
-- second_start), never a scan of card_events or of the whole history.
-- "The last minute" is the 60 complete seconds before the current one:
-- second_start in [date_trunc('second', now()) - 1 minute,
-- date_trunc('second', now())). The current second is left out because it
-- may hold swipes whose ts is later than now().


-- Network-wide counts per second, the 300 complete seconds before now; a
-- second without swipes is a row of zeros, so the chart has no holes.
CREATE VIEW dashboard_seconds AS
WITH recent AS (
    SELECT sl.second_start, sl.swipes, sl.entries, sl.accepted, sl.rejected, sl.fraud, sl.revenue
    FROM stations st
    CROSS JOIN LATERAL (
        SELECT s.second_start, s.swipes, s.entries, s.accepted, s.rejected, s.fraud, s.revenue
        FROM station_second_slots s
        WHERE s.station_id = st.station_id
          AND s.second_start >= date_trunc('second', now()) - interval '5 minutes'
          AND s.second_start < date_trunc('second', now())
    ) sl
)
SELECT g.second_start,
       coalesce(sum(r.swipes), 0)::integer AS swipes,
       coalesce(sum(r.entries), 0)::integer AS entries,
       coalesce(sum(r.accepted), 0)::integer AS accepted,
       coalesce(sum(r.rejected), 0)::integer AS rejected,
       coalesce(sum(r.fraud), 0)::integer AS fraud,
       coalesce(sum(r.revenue), 0)::bigint AS revenue
FROM generate_series(date_trunc('second', now()) - interval '5 minutes',
                     date_trunc('second', now()) - interval '1 second',
                     interval '1 second') AS g(second_start)
LEFT JOIN recent r USING (second_start)
GROUP BY g.second_start;
COMMENT ON VIEW dashboard_seconds IS 'Card events, entries by outcome and fares charged (cents) per second, network-wide, for each of the 300 complete seconds before now (zeros when nothing happened)';

-- Per station: its load in the last minute and its average wait for a train
-- over the departures of the last 15 minutes (trains run every few minutes,
-- so a shorter window is often empty).
CREATE VIEW dashboard_stations AS
SELECT st.station_id, st.name,
       coalesce(m.swipes, 0)::integer AS swipes,
       coalesce(m.entries, 0)::integer AS entries,
       coalesce(m.accepted, 0)::integer AS accepted,
       coalesce(m.rejected, 0)::integer AS rejected,
       coalesce(m.fraud, 0)::integer AS fraud,
       coalesce(m.revenue, 0)::bigint AS revenue,
       w.departures::integer AS departures,
       w.riders::integer AS riders,
       round(w.wait_seconds / nullif(w.riders, 0), 1) AS average_wait_seconds
FROM stations st
CROSS JOIN LATERAL (
    SELECT sum(s.swipes) AS swipes, sum(s.entries) AS entries, sum(s.accepted) AS accepted,
           sum(s.rejected) AS rejected, sum(s.fraud) AS fraud, sum(s.revenue) AS revenue
    FROM station_second_slots s
    WHERE s.station_id = st.station_id
      AND s.second_start >= date_trunc('second', now()) - interval '1 minute'
      AND s.second_start < date_trunc('second', now())
) m
CROSS JOIN LATERAL (
    SELECT count(*) AS departures, sum(d.riders) AS riders, sum(d.wait_seconds) AS wait_seconds
    FROM station_departures d
    WHERE d.station_id = st.station_id
      AND d.ts >= now() - interval '15 minutes' AND d.ts <= now()
) w;
COMMENT ON VIEW dashboard_stations IS 'Per station: card events, entries by outcome and fares (cents) in the last minute (the 60 complete seconds before now); departures, riders and average wait for a train (seconds) over the departures of the last 15 minutes';

-- Where each train last was: its latest arrival or departure at or before now.
CREATE VIEW dashboard_trains AS
SELECT t.train_id, t.name, e.station_id, st.name AS station_name, e.activity_type, e.ts
FROM trains t
CROSS JOIN LATERAL (
    SELECT te.station_id, te.activity_type, te.ts
    FROM train_events te
    WHERE te.train_id = t.train_id AND te.ts <= now()
    ORDER BY te.ts DESC
    LIMIT 1
) e
JOIN stations st ON st.station_id = e.station_id;
COMMENT ON VIEW dashboard_trains IS 'Per train that has run: its latest arrival (0) or departure (1) at or before now, and where';

-- The latest fraud rows whose swipe is not in the future: the last 20
-- committed, read backwards through the stream's (txid, position) index.
CREATE VIEW dashboard_fraud_feed AS
SELECT f.position, f.trans_id, f.card_id, f.ts, f.station_id, st.name AS station_name,
       f.activity_code, f.amount
FROM (SELECT * FROM fraud WHERE ts <= now() ORDER BY txid DESC, position DESC LIMIT 20) f
LEFT JOIN stations st USING (station_id)
ORDER BY f.position DESC;
COMMENT ON VIEW dashboard_fraud_feed IS 'The 20 latest fraud stream rows whose ts is not later than now, newest first';

-- Payments decided in the last minute (decided_at in [now - 1 minute, now]).
CREATE VIEW dashboard_payments AS
SELECT count(*)::integer AS decided,
       (count(*) FILTER (WHERE NOT blocked))::integer AS approved,
       (count(*) FILTER (WHERE blocked))::integer AS blocked
FROM risk_decisions
WHERE decided_at >= now() - interval '1 minute' AND decided_at <= now();
COMMENT ON VIEW dashboard_payments IS 'Payments decided in the last minute (decided_at in [now - 1 minute, now]): approved and blocked';

-- Totals since the data began, for Prometheus counters (metro dashboard's
-- /metrics), complete seconds only. These read the whole retained history and every payment
-- decision: one scrape every few seconds, not on the page's refresh.
CREATE VIEW dashboard_totals AS
SELECT h.swipes, h.entries, h.accepted, h.rejected, h.fraud, h.revenue,
       p.approved, p.blocked
FROM (SELECT coalesce(sum(swipes), 0)::bigint AS swipes,
             coalesce(sum(entries), 0)::bigint AS entries,
             coalesce(sum(accepted), 0)::bigint AS accepted,
             coalesce(sum(rejected), 0)::bigint AS rejected,
             coalesce(sum(fraud), 0)::bigint AS fraud,
             coalesce(sum(revenue), 0)::bigint AS revenue
      FROM station_second_slots
      WHERE second_start < date_trunc('second', now())) h
CROSS JOIN (SELECT (count(*) FILTER (WHERE NOT blocked))::bigint AS approved,
                   (count(*) FILTER (WHERE blocked))::bigint AS blocked
            FROM risk_decisions
            WHERE decided_at <= now()) p;
COMMENT ON VIEW dashboard_totals IS 'Totals up to now: card events, entries by outcome and fares (cents) from the retained per-second history; payments approved and blocked';

-- grants
GRANT SELECT ON station_second_stats, swipes_per_second, acceptance_rate, busiest_stations,
    station_wait_times TO metro_reader;
GRANT SELECT ON dashboard_seconds, dashboard_stations, dashboard_trains, dashboard_fraud_feed,
    dashboard_payments, dashboard_totals TO metro_reader;

-- functions
-- functions

-- Checks the station of a new card event, in place of a foreign key (see
-- card_events.station_id).
CREATE OR REPLACE FUNCTION card_events_check_station()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    PERFORM FROM stations s WHERE s.station_id = NEW.station_id;
    IF NOT FOUND THEN
        PERFORM raise_unknown_station(NEW.station_id);
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION card_events_check_station() IS 'Trigger: refuses a card event at an unknown station (MT001)';

-- Events are facts: changing or deleting one would make the history lie.
CREATE OR REPLACE FUNCTION card_events_refuse_change()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'card_events is append-only: % refused', TG_OP
        USING ERRCODE = 'MT006',
              HINT = 'Record a new event instead; TRUNCATE clears the events and their history together; run_maintenance() drops days past settings.event_retention.';
END
$$;
COMMENT ON FUNCTION card_events_refuse_change() IS 'Trigger: card_events is append-only, UPDATE and DELETE are refused (MT006)';

-- TRUNCATE card_events empties the history derived from it.
CREATE OR REPLACE FUNCTION card_events_clear_history()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    TRUNCATE card_history_second, station_second_slots;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION card_events_clear_history() IS 'Trigger: TRUNCATE card_events empties the history derived from it';

-- TRUNCATE card_alert_export empties the counts derived from it.
CREATE OR REPLACE FUNCTION card_alert_export_clear_stats()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    TRUNCATE card_export_stats;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION card_alert_export_clear_stats() IS 'Trigger: TRUNCATE card_alert_export empties card_export_stats';

-- A delivered alert may be pruned by the bridge only once the rollup has
-- counted it: a row after the rollup's cursor is kept (the DELETE skips it)
-- and pruned by a later round.
CREATE OR REPLACE FUNCTION card_alert_export_keep_uncounted()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM worker_cursors c
               WHERE c.source = 'card_alert_export' AND (c.txid, c.position) < (OLD.txid, OLD.position)) THEN
        RETURN NULL;
    END IF;
    RETURN OLD;
END
$$;
COMMENT ON FUNCTION card_alert_export_keep_uncounted() IS 'Trigger: a card_alert_export row the rollup has not counted yet is not deleted';

-- One round of the rollup: at most max_rows rows of each source, committed
-- before the commit horizon, after the source's cursor, in (txid, position)
-- order. Returns per source the rows rolled up and whether the round was
-- full (more may be waiting). Concurrent callers queue on the cursors' row
-- locks and each sees the cursors the one before moved, so two workers, or
-- a worker and pg_cron, never count a row twice.
CREATE OR REPLACE FUNCTION run_rollup(max_rows integer DEFAULT 10000)
RETURNS TABLE (source text, rolled_up bigint, full_round boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    horizon xid8;
    cur record;
    n bigint;
    last_txid xid8;
    last_position bigint;
    dep_stations integer[] := '{}';
    dep_ts timestamptz[] := '{}';
    more_stations integer[];
    more_ts timestamptz[];
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'run_rollup: max_rows must be a positive number of rows, got %',
            coalesce(max_rows::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'SELECT * FROM run_rollup(10000) rolls up at most 10,000 rows of each source.';
    END IF;
    -- One rollup at a time; the horizon is taken once the cursors are ours.
    PERFORM FROM worker_cursors c ORDER BY c.source FOR UPDATE;
    horizon := pg_snapshot_xmin(pg_current_snapshot());

    -- card_events: per-second history and station counters.
    SELECT * INTO cur FROM worker_cursors c WHERE c.source = 'card_events';
    WITH batch AS MATERIALIZED (
        SELECT e.event_id, e.txid, e.card_id, date_trunc('second', e.ts) AS second_start,
               e.station_id, e.activity_code, e.amount, e.accept
        FROM card_events e
        WHERE (e.txid, e.event_id) > (cur.txid, cur.position) AND e.txid < horizon
        ORDER BY e.txid, e.event_id
        LIMIT max_rows
    ), card_seconds AS (
        INSERT INTO card_history_second AS h (card_id, second_start, swipes)
        SELECT b.card_id, b.second_start, count(*) FROM batch b
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (card_id, second_start) DO UPDATE SET swipes = h.swipes + excluded.swipes
    ), station_seconds AS (
        INSERT INTO station_second_slots AS s
            (station_id, second_start, swipes, entries, accepted, rejected, fraud, revenue)
        SELECT b.station_id, b.second_start, count(*),
               count(*) FILTER (WHERE b.activity_code = 1),
               count(*) FILTER (WHERE b.activity_code = 1 AND b.accept = 1),
               count(*) FILTER (WHERE b.activity_code = 1 AND b.accept = 0),
               count(*) FILTER (WHERE b.activity_code = 1 AND b.accept = -1),
               coalesce(sum(b.amount) FILTER (WHERE b.activity_code = 1 AND b.accept = 1), 0)
        FROM batch b
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (station_id, second_start) DO UPDATE SET
            swipes = s.swipes + excluded.swipes,
            entries = s.entries + excluded.entries,
            accepted = s.accepted + excluded.accepted,
            rejected = s.rejected + excluded.rejected,
            fraud = s.fraud + excluded.fraud,
            revenue = s.revenue + excluded.revenue
    ), boarded AS (
        -- An accepted entry waits for the first departure at or after its second.
        SELECT DISTINCT d.station_id, d.ts
        FROM (SELECT DISTINCT b.station_id, b.second_start FROM batch b
              WHERE b.activity_code = 1 AND b.accept = 1) x
        CROSS JOIN LATERAL (
            SELECT te.station_id, te.ts FROM train_events te
            WHERE te.station_id = x.station_id AND te.activity_type = 1 AND te.ts >= x.second_start
            ORDER BY te.ts LIMIT 1) d
    ), last_row AS (
        SELECT b.txid, b.event_id FROM batch b ORDER BY b.txid DESC, b.event_id DESC LIMIT 1
    )
    SELECT (SELECT count(*) FROM batch), l.txid, l.event_id,
           coalesce((SELECT array_agg(bo.station_id ORDER BY bo.station_id, bo.ts) FROM boarded bo), '{}'),
           coalesce((SELECT array_agg(bo.ts ORDER BY bo.station_id, bo.ts) FROM boarded bo), '{}')
    INTO n, last_txid, last_position, dep_stations, dep_ts
    FROM (SELECT 1) one LEFT JOIN last_row l ON true;
    IF n > 0 THEN
        UPDATE worker_cursors c
        SET txid = last_txid, position = last_position, rolled_up = c.rolled_up + n,
            rolled_up_at = now()
        WHERE c.source = 'card_events';
    END IF;
    source := 'card_events'; rolled_up := n; full_round := n = max_rows;
    RETURN NEXT;

    -- card_alert_export: alerts per card and station.
    SELECT * INTO cur FROM worker_cursors c WHERE c.source = 'card_alert_export';
    WITH batch AS MATERIALIZED (
        SELECT a.position, a.txid, a.card_id, a.station_name
        FROM card_alert_export a
        WHERE (a.txid, a.position) > (cur.txid, cur.position) AND a.txid < horizon
        ORDER BY a.txid, a.position
        LIMIT max_rows
    ), counted AS (
        INSERT INTO card_export_stats AS x (card_id, station_name, alerts)
        SELECT b.card_id, b.station_name, count(*) FROM batch b
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (card_id, station_name) DO UPDATE SET alerts = x.alerts + excluded.alerts
    ), last_row AS (
        SELECT b.txid, b.position FROM batch b ORDER BY b.txid DESC, b.position DESC LIMIT 1
    )
    SELECT (SELECT count(*) FROM batch), l.txid, l.position
    INTO n, last_txid, last_position
    FROM (SELECT 1) one LEFT JOIN last_row l ON true;
    IF n > 0 THEN
        UPDATE worker_cursors c
        SET txid = last_txid, position = last_position, rolled_up = c.rolled_up + n,
            rolled_up_at = now()
        WHERE c.source = 'card_alert_export';
    END IF;
    source := 'card_alert_export'; rolled_up := n; full_round := n = max_rows;
    RETURN NEXT;

    -- train_events: whole transactions at a time (up to the one holding the
    -- max_rows-th row). A new departure is computed, and so is the next
    -- departure at its station, whose waiting window it shortens.
    SELECT * INTO cur FROM worker_cursors c WHERE c.source = 'train_events';
    SELECT max(t.txid) INTO last_txid
    FROM (SELECT te.txid FROM train_events te
          WHERE te.txid > cur.txid AND te.txid < horizon
          ORDER BY te.txid LIMIT max_rows) t;
    n := 0;
    IF last_txid IS NOT NULL THEN
        WITH departed AS (
            SELECT te.station_id, te.ts FROM train_events te
            WHERE te.txid > cur.txid AND te.txid <= last_txid AND te.activity_type = 1
        ), affected AS (
            SELECT d.station_id, d.ts FROM departed d
            UNION
            SELECT nx.station_id, nx.ts FROM departed d
            CROSS JOIN LATERAL (
                SELECT te.station_id, te.ts FROM train_events te
                WHERE te.station_id = d.station_id AND te.activity_type = 1 AND te.ts > d.ts
                ORDER BY te.ts LIMIT 1) nx
        )
        SELECT (SELECT count(*) FROM train_events te WHERE te.txid > cur.txid AND te.txid <= last_txid),
               coalesce(array_agg(a.station_id), '{}'), coalesce(array_agg(a.ts), '{}')
        INTO n, more_stations, more_ts
        FROM affected a;
        dep_stations := dep_stations || more_stations;
        dep_ts := dep_ts || more_ts;
        UPDATE worker_cursors c
        SET txid = last_txid, rolled_up = c.rolled_up + n, rolled_up_at = now()
        WHERE c.source = 'train_events';
    END IF;

    -- The departures touched above, recomputed from the station counters:
    -- the accepted entries since the previous departure from the station (at
    -- most settings.max_wait back), one-second buckets, a bucket belonging to
    -- the first departure at or after its start.
    IF cardinality(dep_stations) > 0 THEN
        INSERT INTO station_departures AS sd (station_id, train_id, ts, riders, wait_seconds)
        SELECT te.station_id, te.train_id, te.ts, coalesce(w.riders, 0), coalesce(w.wait_seconds, 0)
        FROM (SELECT DISTINCT a.station_id, a.ts FROM unnest(dep_stations, dep_ts) a(station_id, ts)) a
        JOIN train_events te ON te.station_id = a.station_id AND te.ts = a.ts AND te.activity_type = 1
        CROSS JOIN settings s
        CROSS JOIN LATERAL (
            SELECT greatest(max(p.ts), te.ts - s.max_wait) AS since FROM train_events p
            WHERE p.station_id = te.station_id AND p.activity_type = 1 AND p.ts < te.ts) prev
        CROSS JOIN LATERAL (
            SELECT sum(sl.accepted)::integer AS riders,
                   sum(sl.accepted * extract(epoch FROM te.ts - sl.second_start)) AS wait_seconds
            FROM station_second_slots sl
            WHERE sl.station_id = te.station_id
              AND sl.second_start > date_trunc('second', prev.since) AND sl.second_start <= te.ts) w
        ORDER BY 1, 3, 2
        ON CONFLICT (station_id, ts, train_id) DO UPDATE
            SET riders = excluded.riders, wait_seconds = excluded.wait_seconds;
    END IF;
    source := 'train_events'; rolled_up := n; full_round := n >= max_rows;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION run_rollup(integer) IS 'One round of the rollup: at most max_rows committed rows of each source (card_events, card_alert_export, train_events) after its cursor and behind the commit horizon, added once to card_history_second, station_second_slots, card_export_stats and station_departures, the cursor moved in the same transaction; (source, rolled_up, full_round) per source. 22023 max_rows not positive';
REVOKE ALL ON FUNCTION run_rollup(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION run_rollup(integer) TO metro_worker;

-- How far derived data lags behind its sources: per source, the rows rolled
-- up so far and when the cursor last moved, the committed rows not rolled up
-- yet and the event time of the oldest of them. Cost grows with the lag, not
-- with the table.
CREATE OR REPLACE FUNCTION worker_lag()
RETURNS TABLE (source text, rolled_up bigint, rolled_up_at timestamptz, pending bigint,
               oldest_pending timestamptz)
-- SECURITY DEFINER: metro_reader sees how far the rollup is, never a source row.
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT * FROM worker_cursors wc ORDER BY wc.source LOOP
        source := c.source;
        rolled_up := c.rolled_up;
        rolled_up_at := c.rolled_up_at;
        IF c.source = 'card_events' THEN
            SELECT count(*), min(e.ts) INTO pending, oldest_pending FROM card_events e
            WHERE (e.txid, e.event_id) > (c.txid, c.position);
        ELSIF c.source = 'card_alert_export' THEN
            SELECT count(*), min(a.ts) INTO pending, oldest_pending FROM card_alert_export a
            WHERE (a.txid, a.position) > (c.txid, c.position);
        ELSE
            SELECT count(*), min(te.ts) INTO pending, oldest_pending FROM train_events te
            WHERE te.txid > c.txid;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION worker_lag() IS 'Lag of derived data per source: (source, rolled_up, rolled_up_at, pending, oldest_pending): rows rolled up, when the cursor last moved, committed rows not rolled up yet and the event time of the oldest of them';
REVOKE ALL ON FUNCTION worker_lag() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION worker_lag() TO metro_reader, metro_worker;


-- functions

-- The partitioned tables, the column they are partitioned by and their retention.
CREATE OR REPLACE FUNCTION partitioned_tables()
RETURNS TABLE (table_name text, time_column text, retention interval)
LANGUAGE sql STABLE SET search_path = metro, pg_temp AS $$
    SELECT t.table_name, t.time_column, t.retention
    FROM settings s
    CROSS JOIN LATERAL (VALUES ('card_events', 'ts', s.event_retention),
                               ('card_history_second', 'second_start', s.history_retention),
                               ('station_second_slots', 'second_start', s.history_retention)
                       ) t(table_name, time_column, retention)
$$;
COMMENT ON FUNCTION partitioned_tables() IS 'The tables partitioned by UTC day, their time column and their retention (settings.event_retention, history_retention)';

-- Creates the daily partitions of from_day through to_day (UTC days) that do
-- not exist, for every partitioned table. A day that already has rows in the
-- table's default partition keeps them there (reported as kept_in_default):
-- those rows leave by their retention.
CREATE OR REPLACE FUNCTION create_partitions(from_day date, to_day date)
RETURNS TABLE (action text, table_name text, partition_name text, rows bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp SET TimeZone = 'UTC' AS $$
DECLARE
    t record;
    d date;
    found_rows boolean;
BEGIN
    IF from_day IS NULL THEN PERFORM raise_null_argument('create_partitions', 'from_day'); END IF;
    IF to_day IS NULL THEN PERFORM raise_null_argument('create_partitions', 'to_day'); END IF;
    IF to_day < from_day OR to_day - from_day > 3660
       OR from_day < date '2000-01-01' OR to_day >= date '2200-01-01' THEN
        RAISE EXCEPTION 'create_partitions: days % to % are not a range of at most 10 years within 2000-01-01 and 2200-01-01',
            from_day, to_day
            USING ERRCODE = '22023', HINT = 'Pass the first and the last UTC day to create, e.g. create_partitions(''2026-01-01'', ''2026-01-31'').';
    END IF;
    FOR t IN SELECT * FROM partitioned_tables() p ORDER BY p.table_name LOOP
        FOR d IN SELECT g::date FROM generate_series(from_day, to_day, interval '1 day') g LOOP
            partition_name := format('%s_p%s', t.table_name, to_char(d, 'YYYYMMDD'));
            CONTINUE WHEN to_regclass(format('metro.%I', partition_name)) IS NOT NULL;
            table_name := t.table_name;
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= $1 AND %I < $2)',
                           t.table_name || '_default', t.time_column, t.time_column)
                INTO found_rows USING d::timestamptz, (d + 1)::timestamptz;
            IF found_rows THEN
                action := 'kept_in_default';
                partition_name := t.table_name || '_default';
                rows := NULL;
            ELSE
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               partition_name, t.table_name, d::timestamptz, (d + 1)::timestamptz);
                EXECUTE format('COMMENT ON TABLE %I IS %L', partition_name,
                               format('%s of %s (UTC); dropped by run_maintenance() past its retention', t.table_name, d));
                action := 'created';
                rows := 0;
            END IF;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION create_partitions(date, date) IS 'Creates the missing daily partitions of from_day through to_day (UTC) for card_events, card_history_second and station_second_slots: (action created or kept_in_default, table_name, partition_name, rows); for a load or replay of past dates. MT004 NULL argument, 22023 not a range of at most 10 years in [2000-01-01, 2200-01-01)';
REVOKE ALL ON FUNCTION create_partitions(date, date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION create_partitions(date, date) TO metro_worker;

-- Creates the partitions of today through settings.partitions_ahead days
-- ahead, drops the partitions whose whole day is older than the table's
-- retention (a partition locked by a long transaction is left for the next
-- run, reported as busy, rather than stalling the writers queued behind the
-- drop), deletes the rows of the default partitions past retention and the
-- dead letters past settings.dead_letter_retention. Records what it did in
-- worker_state.
CREATE OR REPLACE FUNCTION run_maintenance()
RETURNS TABLE (action text, table_name text, partition_name text, rows bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp SET TimeZone = 'UTC'
    SET lock_timeout = '2s' AS $$
DECLARE
    s settings%ROWTYPE;
    t record;
    p record;
    today date := (now() AT TIME ZONE 'UTC')::date;
    cutoff timestamptz;
    n bigint;
    done text[] := '{}';
BEGIN
    SELECT * INTO s FROM settings;
    FOR action, table_name, partition_name, rows IN
        SELECT * FROM create_partitions(today, today + s.partitions_ahead) LOOP
        done := done || action;
        RETURN NEXT;
    END LOOP;

    FOR t IN SELECT * FROM partitioned_tables() pt ORDER BY pt.table_name LOOP
        cutoff := now() - t.retention;
        table_name := t.table_name;
        FOR p IN
            SELECT c.relname, to_date(substring(c.relname FROM '_p([0-9]{8})$'), 'YYYYMMDD') AS day
            FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = format('metro.%I', t.table_name)::regclass
              AND c.relname ~ ('^' || t.table_name || '_p[0-9]{8}$')
            ORDER BY c.relname
        LOOP
            CONTINUE WHEN (p.day + 1)::timestamptz > cutoff;
            partition_name := p.relname;
            rows := NULL;
            BEGIN
                EXECUTE format('DROP TABLE %I', p.relname);
                action := 'dropped';
            EXCEPTION WHEN lock_not_available THEN
                action := 'busy';
            END;
            done := done || action;
            RETURN NEXT;
        END LOOP;
        EXECUTE format('DELETE FROM %I WHERE %I < $1', t.table_name || '_default', t.time_column)
            USING cutoff;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            action := 'deleted'; partition_name := t.table_name || '_default'; rows := n;
            done := done || action;
            RETURN NEXT;
        END IF;
    END LOOP;

    DELETE FROM bridge_dead_letters d WHERE d.received_at < now() - s.dead_letter_retention;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        action := 'deleted'; table_name := 'bridge_dead_letters'; partition_name := NULL; rows := n;
        done := done || action;
        RETURN NEXT;
    END IF;

    UPDATE worker_state SET last_maintenance_at = clock_timestamp(),
        last_maintenance = format('created %s, dropped %s, deleted from %s, busy %s',
            cardinality(array_positions(done, 'created')), cardinality(array_positions(done, 'dropped')),
            cardinality(array_positions(done, 'deleted')), cardinality(array_positions(done, 'busy')));
END
$$;
COMMENT ON FUNCTION run_maintenance() IS 'Creates the daily partitions of today through settings.partitions_ahead days ahead, drops those past event_retention (card_events) or history_retention (card_history_second, station_second_slots), deletes default-partition rows past retention and bridge_dead_letters past dead_letter_retention: one row (action created, kept_in_default, dropped, busy or deleted, table_name, partition_name, rows: rows deleted, 0 for a new partition, NULL when not counted) per thing done';
REVOKE ALL ON FUNCTION run_maintenance() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION run_maintenance() TO metro_worker;

-- functions

-- Checks a holder name and a lease duration.
CREATE OR REPLACE FUNCTION worker_check_lease_arguments(function_name text, holder text, lease interval)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    IF holder IS NULL THEN PERFORM raise_null_argument(function_name, 'holder'); END IF;
    IF lease IS NULL THEN PERFORM raise_null_argument(function_name, 'lease'); END IF;
    IF btrim(holder) = '' OR length(holder) > 200 THEN
        RAISE EXCEPTION '%: holder must be 1 to 200 characters, not blank, got "%"', function_name, holder
            USING ERRCODE = '22023', HINT = 'The worker passes host:pid.';
    END IF;
    IF lease < interval '1 second' OR lease > interval '1 hour' THEN
        RAISE EXCEPTION '%: lease must be between 1 second and 1 hour, got %', function_name, lease
            USING ERRCODE = '22023', HINT = 'The worker renews a 15 s lease every 3 s.';
    END IF;
END
$$;
COMMENT ON FUNCTION worker_check_lease_arguments(text, text, interval) IS 'Raises MT004 for a NULL holder or lease, 22023 for a blank or too long holder or a lease outside [1 s, 1 h]';

-- Takes or renews the lease for holder until now() + lease when it is free,
-- expired or already holder's. Returns whether holder holds it, and the
-- holder and expiry as they now are.
CREATE OR REPLACE FUNCTION worker_take_lease(holder text, lease interval DEFAULT '15 seconds')
RETURNS TABLE (held boolean, lease_holder text, lease_until timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_holder ALIAS FOR $1;
    p_lease ALIAS FOR $2;
BEGIN
    PERFORM worker_check_lease_arguments('worker_take_lease', p_holder, p_lease);
    UPDATE worker_state w
    SET holder = p_holder,
        since = CASE WHEN w.holder = p_holder AND w.lease_until >= now() THEN w.since ELSE now() END,
        lease_until = now() + p_lease,
        heartbeat_at = now()
    WHERE w.holder IS NULL OR w.holder = p_holder OR w.lease_until IS NULL OR w.lease_until < now();
    held := FOUND;
    SELECT w.holder, w.lease_until INTO lease_holder, lease_until FROM worker_state w;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION worker_take_lease(text, interval) IS 'Takes or renews the worker lease for holder (host:pid) until now() + lease, when it is free, expired or holder''s: (held, lease_holder, lease_until). MT004 NULL argument, 22023 blank holder or lease outside [1 s, 1 h]';
REVOKE ALL ON FUNCTION worker_take_lease(text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION worker_take_lease(text, interval) TO metro_worker;

-- Gives the lease up at once (a clean stop), so a waiting worker takes over
-- without waiting for it to expire. Returns whether holder held it.
CREATE OR REPLACE FUNCTION worker_release_lease(holder text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_holder ALIAS FOR $1;
BEGIN
    PERFORM worker_check_lease_arguments('worker_release_lease', p_holder, interval '1 second');
    UPDATE worker_state w SET lease_until = now()
    WHERE w.holder = p_holder AND w.lease_until > now();
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION worker_release_lease(text) IS 'Gives up the worker lease held by holder (a clean stop): returns whether it was held. MT004 NULL holder';
REVOKE ALL ON FUNCTION worker_release_lease(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION worker_release_lease(text) TO metro_worker;

-- Records the worker's last error, for metro worker --status.
CREATE OR REPLACE FUNCTION worker_report_error(message text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
BEGIN
    IF message IS NULL THEN PERFORM raise_null_argument('worker_report_error', 'message'); END IF;
    UPDATE worker_state SET last_error = left(message, 1000), last_error_at = now();
END
$$;
COMMENT ON FUNCTION worker_report_error(text) IS 'Records the worker''s last error (cut at 1,000 characters) and its time. MT004 NULL message';
REVOKE ALL ON FUNCTION worker_report_error(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION worker_report_error(text) TO metro_worker;

-- functions

-- Which rule fires for an entry of card_id at ts: 0 none,
-- 1 the card already has a gate swipe (entry or exit, whatever its outcome)
--   in the same second; purchases (recharges) do not count,
-- 3 fraud_entry_limit or more entries in [ts - fraud_window, ts),
-- 2 fraud_station_limit or more distinct stations among those entries.
-- Both read card_events' primary key (card_id, ts, ...): rule 1 the card's events of one second,
-- rules 2 and 3 at most fraud_entry_limit entries, so the cost is bounded by
-- the thresholds, not by the card's history. A plain SQL function returning
-- a set, so that PostgreSQL inlines it into the caller's query: validate_entry
-- runs it without a nested executor, validate_entries runs it set-wise (each
-- round sees the events of the rounds before). It names its tables in full
-- because an inlined function cannot carry a SET search_path clause.
CREATE OR REPLACE FUNCTION fraud_rule(card_id bigint, ts timestamptz)
RETURNS TABLE (rule smallint) LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM metro.card_events g
                             WHERE g.card_id = $1
                               AND g.ts >= date_trunc('second', $2)
                               AND g.ts < date_trunc('second', $2) + interval '1 second'
                               AND g.activity_code IN (1, -1))
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
COMMENT ON FUNCTION fraud_rule(bigint, timestamptz) IS 'Which fraud rule an entry of the card at ts breaks: 0 none, 1 a gate swipe (entry or exit) in the same second, 2 too many stations, 3 too many entries in the window; inlined into its callers';

-- Would an entry of card_id at station_id at ts be refused as fraud?
-- Read-only: records nothing.
CREATE OR REPLACE FUNCTION is_fraud(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS boolean LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = metro, pg_temp
-- Generic plans, as validate_entry's: planning the rules over the partitions
-- on every call cost more than the rules.
SET plan_cache_mode = force_generic_plan AS $$
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
COMMENT ON FUNCTION is_fraud(bigint, integer, timestamptz) IS 'Would an entry of card_id at station_id at ts be refused as fraud? Reads only. MT004 NULL argument, MT001 unknown station';
REVOKE ALL ON FUNCTION is_fraud(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION is_fraud(bigint, integer, timestamptz) TO metro_app;

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
COMMENT ON FUNCTION entry_outcome(boolean, smallint, integer, timestamptz, integer, boolean, timestamptz) IS 'The outcome of an entry swipe (accept, amount charged, message, alert): the one place the gate messages are decided; inlined into validate_entry and validate_entries';

-- Decides an entry swipe and records it whatever the outcome, with a fraud
-- row for fraud and a card_alert_export row for an insufficient balance when
-- the card wants alerts.
CREATE OR REPLACE FUNCTION validate_entry(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS decision LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp
-- Generic plans, pruned to the ts's partitions when they run: with card_events
-- partitioned, PostgreSQL would otherwise plan the rules afresh on every call
-- (measured: half the swipes per second at 8 clients).
SET plan_cache_mode = force_generic_plan AS $$
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
COMMENT ON FUNCTION validate_entry(bigint, integer, timestamptz) IS 'Decides an entry swipe: (accepted, message) as Card Invalid, Card Disabled, Fraudulent transaction, Remaining Balance: 12.50, Card has insufficient balance: 1.00, Card Expires: <ts>, Card Expired; records it in card_events whatever the outcome, with a fraud or card_alert_export row when due. MT004 NULL argument, MT001 unknown station';
REVOKE ALL ON FUNCTION validate_entry(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION validate_entry(bigint, integer, timestamptz) TO metro_app;

-- Decides a batch of entry swipes in one call, each swipe getting exactly the
-- result it would get from validate_entry called alone, in input order. Every
-- known card of the batch is locked first, in card order, so concurrent
-- batches cannot deadlock (an unknown card has no row to lock and nothing to
-- share: it is refused whatever its past, and the batch writes no derived
-- row). Swipes are then decided set-wise in rounds: round k holds each card's
-- k-th swipe, so a card swiped twice sees its first swipe (balance,
-- same-second rule) as it would alone. The swipes are sorted into rounds once
-- and each round reads only its own slice, so the work grows linearly with
-- the batch whatever the repetition of cards. ts NULL means now() for every
-- swipe.
CREATE OR REPLACE FUNCTION validate_entries(card_ids bigint[], station_ids integer[],
                                            ts timestamptz[] DEFAULT NULL)
RETURNS TABLE (ordinal integer, accepted boolean, message text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp
-- Generic plans: a round is one statement, and planning it afresh for every
-- round (PostgreSQL's choice for its cost estimates) cost ten times the round.
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_missing integer;
    v_size integer := cardinality(card_ids);
    -- The swipes sorted by (round, card): round k is the slice
    -- v_ends[k - 1] + 1 .. v_ends[k].
    s_ordinal integer[];
    s_card bigint[];
    s_station integer[];
    s_ts timestamptz[];
    v_ends integer[];
    v_first integer := 1;
    -- One round's results, then every swipe's, by ordinal.
    r_ordinal integer[];
    r_accepted boolean[];
    r_message text[];
    v_accepted boolean[];
    v_messages text[];
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
    IF v_size = 0 THEN
        RETURN;
    END IF;

    PERFORM FROM cards c WHERE c.card_id = ANY (card_ids) ORDER BY c.card_id FOR NO KEY UPDATE;

    WITH numbered AS (
        SELECT x.n::integer AS n, x.card_id, x.station_id, coalesce(x.ts, now()) AS ts,
               row_number() OVER (PARTITION BY x.card_id ORDER BY x.n) AS k
        FROM unnest(card_ids, station_ids, ts) WITH ORDINALITY x(card_id, station_id, ts, n)
    )
    SELECT array_agg(u.n ORDER BY u.k, u.card_id, u.n), array_agg(u.card_id ORDER BY u.k, u.card_id, u.n),
           array_agg(u.station_id ORDER BY u.k, u.card_id, u.n), array_agg(u.ts ORDER BY u.k, u.card_id, u.n),
           (SELECT array_agg(e.last_index ORDER BY e.k)
            FROM (SELECT r.k, (sum(count(*)) OVER (ORDER BY r.k))::integer AS last_index
                  FROM numbered r GROUP BY r.k) e)
    INTO s_ordinal, s_card, s_station, s_ts, v_ends
    FROM numbered u;
    v_accepted := array_fill(NULL::boolean, ARRAY[v_size]);
    v_messages := array_fill(NULL::text, ARRAY[v_size]);

    FOR v_round IN 1..cardinality(v_ends) LOOP
        WITH swipes AS (
            SELECT s_ordinal[i] AS ordinal, s_card[i] AS card_id, s_station[i] AS station_id,
                   s_ts[i] AS ts
            FROM generate_series(v_first, v_ends[v_round]) i
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
        )
        SELECT array_agg(d.ordinal), array_agg(d.accept = 1), array_agg(d.message)
        INTO r_ordinal, r_accepted, r_message
        FROM decided d;
        FOR j IN 1..cardinality(r_ordinal) LOOP
            v_accepted[r_ordinal[j]] := r_accepted[j];
            v_messages[r_ordinal[j]] := r_message[j];
        END LOOP;
        v_first := v_ends[v_round] + 1;
    END LOOP;

    RETURN QUERY SELECT r.ordinal::integer, r.accepted, r.message
                 FROM unnest(v_accepted, v_messages) WITH ORDINALITY r(accepted, message, ordinal)
                 ORDER BY r.ordinal;
END
$$;
COMMENT ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) IS 'Decides a batch of entry swipes set-wise: (ordinal, accepted, message) per swipe, in input order, each exactly what validate_entry gives it alone; ts NULL or a NULL element means now(); time linear in the batch size. 22023 arrays of different lengths, MT004 NULL element, MT001 unknown station';
REVOKE ALL ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) TO metro_app;

-- Records an exit swipe. When the card's latest accepted entry or exit before
-- it is an entry (refused entries let nobody in), the trip is closed and a
-- trips row written. Exits of a known card are never refused: riders must be
-- able to leave.
CREATE OR REPLACE FUNCTION process_exit(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS decision LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
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
COMMENT ON FUNCTION process_exit(bigint, integer, timestamptz) IS 'Records an exit swipe: (true, Exit recorded) and a trips row when it closes an accepted entry, (true, Exit recorded without an open entry), (false, Card Invalid). MT004 NULL argument, MT001 unknown station';
REVOKE ALL ON FUNCTION process_exit(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION process_exit(bigint, integer, timestamptz) TO metro_app;

-- functions

-- Records an arrival (0) or departure (1). The rollup (run_rollup()) turns a
-- departure into a station_departures row: the accepted entries at that
-- station since the previous departure (at most settings.max_wait back).
CREATE OR REPLACE FUNCTION record_train_event(train_id integer, station_id integer, activity_type integer, ts timestamptz DEFAULT now())
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_train ALIAS FOR $1;
    p_station ALIAS FOR $2;
    p_activity ALIAS FOR $3;
    p_ts ALIAS FOR $4;
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

    INSERT INTO train_events (train_id, station_id, activity_type, ts)
    VALUES (p_train, p_station, p_activity, p_ts);
END
$$;
COMMENT ON FUNCTION record_train_event(integer, integer, integer, timestamptz) IS 'Records a train arrival (0) or departure (1); the rollup turns a departure into a station_departures row with the riders that waited for it. MT004 NULL argument, MT005 activity_type not 0 or 1, MT002 unknown train, MT001 unknown station';
REVOKE ALL ON FUNCTION record_train_event(integer, integer, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION record_train_event(integer, integer, integer, timestamptz)
    TO metro_app, metro_bridge;

-- data: every event moved into the partition of its day
SELECT create_partitions(d, d)
FROM (SELECT DISTINCT (e.ts AT TIME ZONE 'UTC')::date AS d FROM card_events_before_0008 e) days
ORDER BY d;
INSERT INTO card_events (event_id, card_id, ts, station_id, activity_code, amount, accept)
OVERRIDING SYSTEM VALUE
SELECT e.event_id, e.card_id, e.ts, e.station_id, e.activity_code, e.amount, e.accept
FROM card_events_before_0008 e ORDER BY e.event_id;
SELECT setval(pg_get_serial_sequence('card_events', 'event_id'), s.last_value, s.is_called)
FROM card_events_sequence_before_0008 s;
DROP TABLE card_events_before_0008, card_events_sequence_before_0008;

-- derived data recomputed from its sources
INSERT INTO card_history_second (card_id, second_start, swipes)
SELECT e.card_id, date_trunc('second', e.ts), count(*) FROM card_events e GROUP BY 1, 2;
INSERT INTO station_second_slots (station_id, second_start, swipes, entries, accepted, rejected, fraud, revenue)
SELECT e.station_id, date_trunc('second', e.ts), count(*),
       count(*) FILTER (WHERE e.activity_code = 1),
       count(*) FILTER (WHERE e.activity_code = 1 AND e.accept = 1),
       count(*) FILTER (WHERE e.activity_code = 1 AND e.accept = 0),
       count(*) FILTER (WHERE e.activity_code = 1 AND e.accept = -1),
       coalesce(sum(e.amount) FILTER (WHERE e.activity_code = 1 AND e.accept = 1), 0)
FROM card_events e GROUP BY 1, 2;
INSERT INTO card_export_stats (card_id, station_name, alerts)
SELECT a.card_id, a.station_name, count(*) FROM card_alert_export a GROUP BY 1, 2;
INSERT INTO station_departures AS sd (station_id, train_id, ts, riders, wait_seconds)
SELECT te.station_id, te.train_id, te.ts, coalesce(w.riders, 0), coalesce(w.wait_seconds, 0)
FROM train_events te
CROSS JOIN settings s
CROSS JOIN LATERAL (
    SELECT greatest(max(p.ts), te.ts - s.max_wait) AS since FROM train_events p
    WHERE p.station_id = te.station_id AND p.activity_type = 1 AND p.ts < te.ts) prev
CROSS JOIN LATERAL (
    SELECT sum(sl.accepted)::integer AS riders,
           sum(sl.accepted * extract(epoch FROM te.ts - sl.second_start)) AS wait_seconds
    FROM station_second_slots sl
    WHERE sl.station_id = te.station_id
      AND sl.second_start > date_trunc('second', prev.since) AND sl.second_start <= te.ts) w
WHERE te.activity_type = 1
ORDER BY 1, 3, 2
ON CONFLICT (station_id, ts, train_id) DO UPDATE
    SET riders = excluded.riders, wait_seconds = excluded.wait_seconds;

-- the rollup starts after the rows that exist
UPDATE worker_cursors c SET txid = pg_current_xact_id(),
    position = coalesce((SELECT max(e.event_id) FROM card_events e), 0)
WHERE c.source = 'card_events';
UPDATE worker_cursors c SET txid = a.txid, position = a.position
FROM (SELECT x.txid, x.position FROM card_alert_export x ORDER BY x.txid DESC, x.position DESC LIMIT 1) a
WHERE c.source = 'card_alert_export';
UPDATE worker_cursors c SET txid = pg_current_xact_id() WHERE c.source = 'train_events';

-- triggers
CREATE TRIGGER card_events_station BEFORE INSERT ON card_events
    FOR EACH ROW EXECUTE FUNCTION card_events_check_station();
CREATE TRIGGER card_events_append_only BEFORE UPDATE OR DELETE ON card_events
    FOR EACH STATEMENT EXECUTE FUNCTION card_events_refuse_change();
CREATE TRIGGER card_events_truncate AFTER TRUNCATE ON card_events
    FOR EACH STATEMENT EXECUTE FUNCTION card_events_clear_history();
CREATE TRIGGER card_alert_export_keep_uncounted BEFORE DELETE ON card_alert_export
    FOR EACH ROW EXECUTE FUNCTION card_alert_export_keep_uncounted();
CREATE TRIGGER card_alert_export_truncate AFTER TRUNCATE ON card_alert_export
    FOR EACH STATEMENT EXECUTE FUNCTION card_alert_export_clear_stats();
