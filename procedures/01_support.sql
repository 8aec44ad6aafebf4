-- Shared helpers: argument errors and money formatting. Private (no grants).
--
-- Error codes (also in README "Errors"):
--   MT001 unknown station      MT002 unknown train
--   MT003 invalid amount       MT004 NULL argument
--   MT005 coded value outside its set   MT006 refused change (card_events,
--   the settings row)   MT007 invalid transaction_id   MT008 no risk rule applies
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

-- Raises MT001 for a station that is not in stations.
CREATE OR REPLACE FUNCTION raise_unknown_station(station_id integer)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'Unknown station: %', station_id
        USING ERRCODE = 'MT001', DETAIL = format('No row in metro.stations has station_id %s.', station_id),
              HINT = 'Load the stations first: loader data/stations.csv';
END
$$;

-- Amounts are printed as units.cents: 1250 -> 12.50, 5 -> 0.05.
CREATE OR REPLACE FUNCTION cents_text(cents bigint)
RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN cents < 0 THEN '-' ELSE '' END
           || (abs(cents) / 100)::text || '.' || lpad((abs(cents) % 100)::text, 2, '0')
$$;

-- Kafka key of a fraud row: <card_id>_<epoch microseconds>.
CREATE OR REPLACE FUNCTION fraud_trans_id(card_id bigint, ts timestamptz)
RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT card_id::text || '_' || (extract(epoch FROM ts) * 1000000)::bigint::text
$$;

-- The fraud rules read the one settings row on every swipe: it may be
-- updated, never removed.
CREATE OR REPLACE FUNCTION settings_keep_row()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'settings keeps exactly one row: % refused', TG_OP
        USING ERRCODE = 'MT006', HINT = 'UPDATE metro.settings SET ... changes a threshold.';
END
$$;

-- triggers
CREATE TRIGGER settings_keep_row BEFORE DELETE OR TRUNCATE ON settings
    FOR EACH STATEMENT EXECUTE FUNCTION settings_keep_row();
