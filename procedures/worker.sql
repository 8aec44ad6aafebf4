-- The worker lease: one `metro worker` works, the others wait. The lease is
-- the row of worker_state (holder until lease_until), changed only by these
-- functions, which only metro_worker (and the schema's owner) may call: no
-- other role can take it, unlike an advisory lock any session may hold. A
-- holder renews it by heartbeats; a worker that dies (even kill -9) loses it
-- when lease_until passes. The lease saves work, it does not guard exactness:
-- run_rollup() is exact whoever calls it.
SET search_path = metro, pg_catalog;

-- functions

-- Checks a holder name and a lease duration.
CREATE OR REPLACE FUNCTION worker_check_lease_arguments(function_name text, holder text, lease interval)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    IF holder IS NULL THEN PERFORM raise_null_argument(function_name, 'holder'); END IF;
    IF lease IS NULL THEN PERFORM raise_null_argument(function_name, 'lease'); END IF;
    IF btrim(holder) = '' OR length(holder) > 200 THEN
        RAISE EXCEPTION '%: holder must be 1 to 200 characters, not blank, got "%"', function_name, holder
            USING ERRCODE = '22023', HINT = 'The worker passes host:pid:tag.';
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
COMMENT ON FUNCTION worker_take_lease(text, interval) IS 'Takes or renews the worker lease for holder (host:pid:tag) until now() + lease, when it is free, expired or holder''s: (held, lease_holder, lease_until). MT004 NULL argument, 22023 blank holder or lease outside [1 s, 1 h]';
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

-- The schema's revision, for the services: they run only against the revision
-- whose functions they call (an older schema would refuse their calls, and a
-- bridge would set every inbound message aside as a dead letter). alembic
-- creates its version table after the tree is applied, so the read is
-- PL/pgSQL's, planned at the first call.
CREATE OR REPLACE FUNCTION schema_revision()
RETURNS text LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = metro, pg_temp AS $$
BEGIN
    RETURN (SELECT v.version_num FROM alembic_version v);
END
$$;
COMMENT ON FUNCTION schema_revision() IS 'The revision the metro schema is at (alembic_version), for the bridge and the worker';
REVOKE ALL ON FUNCTION schema_revision() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION schema_revision() TO metro_bridge, metro_worker;
