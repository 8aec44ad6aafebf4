-- Train movements; the wait-time statistics they produce are derived by the
-- rollup (procedures/history.sql).
SET search_path = metro, pg_catalog;

-- functions

-- Records an arrival (0) or departure (1). The rollup (run_rollup()) turns a
-- departure into a station_departures row: the accepted entries at that
-- station since the previous departure (at most settings.max_wait back).
-- A train moves once at an instant: the same event sent again (a producer's
-- retry) is recorded once, and one naming another station is refused.
CREATE OR REPLACE FUNCTION record_train_event(train_id integer, station_id integer, activity_type integer, ts timestamptz DEFAULT now())
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_train ALIAS FOR $1;
    p_station ALIAS FOR $2;
    p_activity ALIAS FOR $3;
    p_ts ALIAS FOR $4;
    v_recorded integer;
BEGIN
    IF p_train IS NULL THEN PERFORM raise_null_argument('record_train_event', 'train_id'); END IF;
    IF p_station IS NULL THEN PERFORM raise_null_argument('record_train_event', 'station_id'); END IF;
    IF p_activity IS NULL THEN PERFORM raise_null_argument('record_train_event', 'activity_type'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('record_train_event', 'ts'); END IF;
    PERFORM checked_ts('record_train_event', 'ts', p_ts);
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
    VALUES (p_train, p_station, p_activity, p_ts)
    ON CONFLICT ON CONSTRAINT train_events_pkey DO NOTHING;
    IF NOT FOUND THEN
        SELECT e.station_id INTO v_recorded FROM train_events e
        WHERE e.train_id = p_train AND e.ts = p_ts AND e.activity_type = p_activity;
        IF v_recorded <> p_station THEN
            RAISE EXCEPTION 'Train % already has its % at % recorded at station %, not %',
                p_train, CASE p_activity WHEN 0 THEN 'arrival' ELSE 'departure' END,
                p_ts, v_recorded, p_station
                USING ERRCODE = 'MT015',
                      HINT = 'A train arrives or departs once at an instant; check the event''s station and ts.';
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION record_train_event(integer, integer, integer, timestamptz) IS 'Records a train arrival (0) or departure (1), once: the same event again records nothing; the rollup turns a departure into a station_departures row with the riders that waited for it. MT004 NULL argument, MT005 activity_type not 0 or 1, MT002 unknown train, MT001 unknown station, MT015 the train already has that arrival or departure at that ts at another station';
REVOKE ALL ON FUNCTION record_train_event(integer, integer, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION record_train_event(integer, integer, integer, timestamptz)
    TO metro_app, metro_bridge;
