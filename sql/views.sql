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

-- grants
GRANT SELECT ON station_second_stats, swipes_per_second, acceptance_rate, busiest_stations,
    card_export_stats, station_wait_times TO metro_reader;
