-- Roles, each granted exactly what it needs (beside each object's definition):
-- metro_app calls the public decision functions; metro_reader reads the views
-- (and bridge_lag()); metro_bridge reads the streams and its own state, and
-- writes only through the bridge's SECURITY DEFINER functions (lease, ack,
-- prune, outbound dead letters), except its inbound bookkeeping
-- (bridge_inbound_offsets, bridge_dead_letters), which it inserts and updates.
-- metro_replay grants no object: its members may pass any valid ts (from
-- 2000-01-01 to 2200-01-01) to the functions they can call, where a metro_app
-- caller must stay within settings.max_clock_skew of now(). The bridge is one
-- of them: it applies inbound messages with the producer's timestamps, also
-- after an outage. Roles are cluster-wide, so creating them is conditional.
SET search_path = metro, pg_catalog;

-- roles
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['metro_app', 'metro_reader', 'metro_bridge', 'metro_replay'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            -- Roles are shared by the cluster: commented once, when created.
            EXECUTE format('COMMENT ON ROLE %I IS %L', r, CASE r
                WHEN 'metro_app' THEN 'metro: calls the decision functions; ts within settings.max_clock_skew of now()'
                WHEN 'metro_reader' THEN 'metro: reads the views and bridge_lag()'
                WHEN 'metro_bridge' THEN 'metro: the bridge: reads the streams, holds the lease, acknowledges through its functions; applies inbound topics'
                ELSE 'metro: may pass any ts in [2000-01-01, 2200-01-01) to the functions its other roles can call (simulations, backfills)' END);
        END IF;
    END LOOP;
END
$$;

-- grants
GRANT USAGE ON SCHEMA metro TO metro_app, metro_reader, metro_bridge;
GRANT metro_replay TO metro_bridge;
