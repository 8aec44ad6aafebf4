-- Shared helpers: argument errors and money formatting. Private (no grants).
-- Every SQLSTATE raised on bad input is a row of metro.error_codes
-- (sql/errors.sql), with its meaning.
SET search_path = metro, pg_catalog;

-- functions

-- Raises MT004 for a NULL argument of a public function.
CREATE OR REPLACE FUNCTION raise_null_argument(function_name text, argument text)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION '%: % must not be NULL', function_name, argument
        USING ERRCODE = 'MT004', HINT = 'Pass a value for every argument; only ts has a default (now()).';
END
$$;
COMMENT ON FUNCTION raise_null_argument(text, text) IS 'Raises MT004 naming the function and its NULL argument';

-- Raises MT001 for a station that is not in stations.
CREATE OR REPLACE FUNCTION raise_unknown_station(station_id integer)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'Unknown station: %', station_id
        USING ERRCODE = 'MT001', DETAIL = format('No row in metro.stations has station_id %s.', station_id),
              HINT = 'Load the stations first: loader data/stations.csv';
END
$$;
COMMENT ON FUNCTION raise_unknown_station(integer) IS 'Raises MT001 naming the station';

-- Amounts are printed as units.cents: 1250 -> 12.50, 5 -> 0.05.
CREATE OR REPLACE FUNCTION cents_text(cents bigint)
RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN cents < 0 THEN '-' ELSE '' END
           || (abs(cents) / 100)::text || '.' || lpad((abs(cents) % 100)::text, 2, '0')
$$;
COMMENT ON FUNCTION cents_text(bigint) IS 'Cents as units.cents text: 1250 -> 12.50';

-- Kafka key of a fraud row: <card_id>_<epoch microseconds>.
CREATE OR REPLACE FUNCTION fraud_trans_id(card_id bigint, ts timestamptz)
RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT card_id::text || '_' || (extract(epoch FROM ts) * 1000000)::bigint::text
$$;
COMMENT ON FUNCTION fraud_trans_id(bigint, timestamptz) IS 'Kafka key of a fraud row: <card_id>_<epoch microseconds of ts>';

-- The writing transaction's id, for the txid column of card_events and
-- train_events: the rollup (procedures/history.sql) reads those rows in
-- (txid, ...) order behind the commit horizon, as the bridge reads the
-- streams. Declared IMMUTABLE only so that it may be a stored generated
-- column (which a file or a caller can never supply, and the loader leaves
-- out): PostgreSQL evaluates a generated column's expression when each INSERT
-- or COPY starts executing, inside the writing transaction, which is the one
-- value wanted. Never use it anywhere else.
CREATE OR REPLACE FUNCTION writing_txid()
RETURNS xid8 LANGUAGE sql IMMUTABLE PARALLEL UNSAFE AS $$
    SELECT pg_current_xact_id()
$$;
COMMENT ON FUNCTION writing_txid() IS 'The writing transaction''s id (pg_current_xact_id()), as the stored generated txid column of card_events and train_events; declared IMMUTABLE only for that use';
REVOKE ALL ON FUNCTION writing_txid() FROM PUBLIC;

-- The fraud rules read the one settings row on every swipe: it may be
-- updated, never removed.
CREATE OR REPLACE FUNCTION settings_keep_row()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'settings keeps exactly one row: % refused', TG_OP
        USING ERRCODE = 'MT006', HINT = 'UPDATE metro.settings SET ... changes a threshold.';
END
$$;
COMMENT ON FUNCTION settings_keep_row() IS 'Trigger: refuses DELETE and TRUNCATE of settings (MT006)';

-- triggers
CREATE TRIGGER settings_keep_row BEFORE DELETE OR TRUNCATE ON settings
    FOR EACH STATEMENT EXECUTE FUNCTION settings_keep_row();
