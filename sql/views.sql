-- Dashboard views (VoltDB's metro dashboard queries), all read from the
-- materialized history or the streams, never from a scan of card_events;
-- they are as current as the rollup (worker_lag()).
SET search_path = metro, pg_catalog;

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

-- Over every departure kept: riders as bigint, since an integer overflowed (and the
-- view failed) once a station's riders passed 2,147,483,647.
CREATE VIEW station_wait_times AS
SELECT st.station_id, st.name, count(*)::integer AS departures, sum(d.riders)::bigint AS riders,
       round(sum(d.wait_seconds) / nullif(sum(d.riders), 0), 1) AS average_wait_seconds
FROM station_departures d
JOIN stations st USING (station_id)
GROUP BY st.station_id, st.name;
COMMENT ON VIEW station_wait_times IS 'Average wait per station over the departures kept (settings.history_retention): seconds between a rider''s entry and the next departure';

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
-- /metrics), from the rollup's lifetime counters as far as it has come: card
-- events per station (one row a station), payments per decision (two rows).
-- Neither is lowered when old history is dropped or delivered stream rows are
-- pruned. One scrape every few seconds, not on the page's refresh.
CREATE VIEW dashboard_totals AS
SELECT h.swipes, h.entries, h.accepted, h.rejected, h.fraud, h.revenue,
       p.approved, p.blocked
FROM (SELECT coalesce(sum(swipes), 0)::bigint AS swipes,
             coalesce(sum(entries), 0)::bigint AS entries,
             coalesce(sum(accepted), 0)::bigint AS accepted,
             coalesce(sum(rejected), 0)::bigint AS rejected,
             coalesce(sum(fraud), 0)::bigint AS fraud,
             coalesce(sum(revenue), 0)::bigint AS revenue
      FROM station_totals) h
CROSS JOIN (SELECT coalesce(sum(payments) FILTER (WHERE NOT blocked), 0)::bigint AS approved,
                   coalesce(sum(payments) FILTER (WHERE blocked), 0)::bigint AS blocked
            FROM payment_totals) p;
COMMENT ON VIEW dashboard_totals IS 'Totals rolled up so far: card events, entries by outcome and fares (cents) from station_totals, payments approved and blocked from payment_totals; neither falls when old rows are dropped or pruned';

-- grants
GRANT SELECT ON station_second_stats, swipes_per_second, acceptance_rate, busiest_stations,
    station_wait_times TO metro_reader;
GRANT SELECT ON dashboard_seconds, dashboard_stations, dashboard_trains, dashboard_fraud_feed,
    dashboard_payments, dashboard_totals TO metro_reader;
