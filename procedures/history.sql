-- Incremental maintenance of the per-second history from card_events: a row
-- trigger, so every writer (the functions, COPY, plain INSERT) keeps the
-- history equal to a recomputation from card_events. A row trigger costs
-- the single-swipe path less than a statement trigger with a transition
-- table, which PostgreSQL has to materialize and plan around on every call.
SET search_path = metro, pg_catalog;

-- functions

-- Adds one event to card_history_second and to this backend's slot of
-- station_second_slots, after checking its station (in place of a foreign
-- key, see card_events.station_id).
CREATE OR REPLACE FUNCTION card_events_add_history()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
DECLARE
    v_second timestamptz := date_trunc('second', NEW.ts);
    v_entry boolean := NEW.activity_code = 1;
BEGIN
    PERFORM FROM stations s WHERE s.station_id = NEW.station_id;
    IF NOT FOUND THEN
        PERFORM raise_unknown_station(NEW.station_id);
    END IF;

    INSERT INTO card_history_second AS h (card_id, second_start, swipes)
    VALUES (NEW.card_id, v_second, 1)
    ON CONFLICT (card_id, second_start) DO UPDATE SET swipes = h.swipes + 1;

    INSERT INTO station_second_slots AS s
        (station_id, second_start, slot, swipes, entries, accepted, rejected, fraud, revenue)
    VALUES (NEW.station_id, v_second, pg_backend_pid(), 1, v_entry::integer,
            (v_entry AND NEW.accept = 1)::integer, (v_entry AND NEW.accept = 0)::integer,
            (v_entry AND NEW.accept = -1)::integer,
            CASE WHEN v_entry AND NEW.accept = 1 THEN NEW.amount ELSE 0 END)
    ON CONFLICT (station_id, second_start, slot) DO UPDATE SET
        swipes = s.swipes + 1,
        entries = s.entries + excluded.entries,
        accepted = s.accepted + excluded.accepted,
        rejected = s.rejected + excluded.rejected,
        fraud = s.fraud + excluded.fraud,
        revenue = s.revenue + excluded.revenue;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION card_events_add_history() IS 'Trigger: adds a card event to card_history_second and station_second_slots after checking its station (MT001)';

-- Events are facts: changing or deleting one would make the history lie.
CREATE OR REPLACE FUNCTION card_events_refuse_change()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'card_events is append-only: % refused', TG_OP
        USING ERRCODE = 'MT006',
              HINT = 'Record a new event instead; TRUNCATE clears the events and their history together.';
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

-- triggers
-- validate_entries writes the history of its own events set-wise and sets
-- metro.history_written for the duration (transaction-local, undone with the
-- transaction); every other writer goes through the trigger.
CREATE TRIGGER card_events_history AFTER INSERT ON card_events
    FOR EACH ROW WHEN (current_setting('metro.history_written', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION card_events_add_history();
CREATE TRIGGER card_events_append_only BEFORE UPDATE OR DELETE ON card_events
    FOR EACH STATEMENT EXECUTE FUNCTION card_events_refuse_change();
CREATE TRIGGER card_events_truncate AFTER TRUNCATE ON card_events
    FOR EACH STATEMENT EXECUTE FUNCTION card_events_clear_history();
