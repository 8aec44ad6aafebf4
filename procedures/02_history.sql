-- Incremental maintenance of the per-second history from card_events.
-- Statement-level triggers with transition tables: one aggregate upsert per
-- statement, so a single swipe and a COPY of a million events use the same
-- code, and the history always equals a recomputation from card_events.
SET search_path = metro, pg_catalog;

-- functions

-- Adds the inserted events to card_history_second and station_second_slots.
-- Rows are upserted in key order so that concurrent multi-row inserts lock
-- them in the same order and cannot deadlock.
CREATE OR REPLACE FUNCTION card_events_add_history()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    INSERT INTO card_history_second AS h (card_id, second_start, swipes)
    SELECT e.card_id, date_trunc('second', e.ts), count(*)
    FROM added_events e
    GROUP BY 1, 2
    ORDER BY 1, 2
    ON CONFLICT (card_id, second_start) DO UPDATE SET swipes = h.swipes + excluded.swipes;

    INSERT INTO station_second_slots AS s
        (station_id, second_start, slot, swipes, entries, accepted, rejected, fraud, revenue)
    SELECT e.station_id, date_trunc('second', e.ts), pg_backend_pid() % 16,
           count(*),
           count(*) FILTER (WHERE e.activity_code = 1),
           count(*) FILTER (WHERE e.activity_code = 1 AND e.accept = 1),
           count(*) FILTER (WHERE e.activity_code = 1 AND e.accept = 0),
           count(*) FILTER (WHERE e.activity_code = 1 AND e.accept = -1),
           coalesce(sum(e.amount) FILTER (WHERE e.activity_code = 1 AND e.accept = 1), 0)
    FROM added_events e
    GROUP BY 1, 2
    ORDER BY 1, 2
    ON CONFLICT (station_id, second_start, slot) DO UPDATE SET
        swipes = s.swipes + excluded.swipes,
        entries = s.entries + excluded.entries,
        accepted = s.accepted + excluded.accepted,
        rejected = s.rejected + excluded.rejected,
        fraud = s.fraud + excluded.fraud,
        revenue = s.revenue + excluded.revenue;
    RETURN NULL;
END
$$;

-- Events are facts: changing or deleting one would make the history lie.
CREATE OR REPLACE FUNCTION card_events_refuse_change()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'card_events is append-only: % refused', TG_OP
        USING ERRCODE = 'MT006',
              HINT = 'Record a new event instead; TRUNCATE clears the events and their history together.';
END
$$;

-- TRUNCATE card_events empties the history derived from it.
CREATE OR REPLACE FUNCTION card_events_clear_history()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    TRUNCATE card_history_second, station_second_slots;
    RETURN NULL;
END
$$;

-- triggers
CREATE TRIGGER card_events_history AFTER INSERT ON card_events
    REFERENCING NEW TABLE AS added_events
    FOR EACH STATEMENT EXECUTE FUNCTION card_events_add_history();
CREATE TRIGGER card_events_append_only BEFORE UPDATE OR DELETE ON card_events
    FOR EACH STATEMENT EXECUTE FUNCTION card_events_refuse_change();
CREATE TRIGGER card_events_truncate AFTER TRUNCATE ON card_events
    FOR EACH STATEMENT EXECUTE FUNCTION card_events_clear_history();
