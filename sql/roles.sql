-- Roles: metro_app may only call the public functions, metro_reader reads the
-- views, metro_bridge reads and prunes the streams and calls the bridge's
-- functions. Each object is granted beside its definition. Roles are
-- cluster-wide, so creating them is conditional.
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

-- grants
GRANT USAGE ON SCHEMA metro TO metro_app, metro_reader, metro_bridge;
