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
