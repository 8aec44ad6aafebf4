-- Revision 0022 (frozen): a swipe's station is checked once.
-- - validate_entry, validate_entries, process_exit and recharge_card refuse an
--   unknown station before they record a swipe; card_events' statement
--   trigger then checked it a second time, a query over the statement's rows
--   that cost a fifth of the least a swipe does (lock, charge, record). The
--   trigger's function now returns at once where the schema's owner writes
--   for another session user (the schema's SECURITY DEFINER functions); every
--   direct INSERT and COPY, the owner's too, is checked as before. Only the
--   function changes: the upgrade takes no lock on card_events.
SET search_path = metro, pg_catalog;

-- functions
-- Checks the stations of the card events a statement inserted, in place of a
-- foreign key (see card_events.station_id): one anti-join per statement, so
-- that a batch (validate_entries, COPY) pays one check rather than a trigger
-- call per row (measured: 12% more swipes/s for validate_entries at 250 per
-- call, the same for single swipes). AFTER the statement, so the error undoes
-- every row of it; the lowest unknown station is named. A statement on the
-- parent table only: inserting into a day's partition directly, which only
-- the schema's owner may do, is not checked. Nor are the rows the schema's
-- functions write for another session user (the owner, who may create in
-- schema metro, writing for someone else): validate_entry(ies), process_exit
-- and recharge_card refuse an unknown station before they record a swipe, and
-- checking it a second time was a fifth of the least a swipe costs. A direct
-- INSERT or COPY, the owner's too, is checked.
CREATE OR REPLACE FUNCTION card_events_check_station()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
DECLARE
    v_unknown integer;
BEGIN
    IF session_user <> current_user AND has_schema_privilege('metro', 'CREATE') THEN
        RETURN NULL;
    END IF;
    SELECT min(n.station_id) INTO v_unknown FROM new_events n
    WHERE NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = n.station_id);
    IF v_unknown IS NOT NULL THEN
        PERFORM raise_unknown_station(v_unknown);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION card_events_check_station() IS 'Statement trigger: refuses the card events of a statement when one has an unknown station (MT001, naming the lowest); leaves out the rows the schema''s functions write for another session user, which refuse an unknown station themselves';
