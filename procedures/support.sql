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
        USING ERRCODE = 'MT004', HINT = 'Pass a value for every argument; one left out takes its default (ts: now()).';
END
$$;
COMMENT ON FUNCTION raise_null_argument(text, text) IS 'Raises MT004 naming the function and its NULL argument';

-- Whether a payment's id (transaction_id, account_id) is unusable: empty,
-- over 200 characters (its stream row goes to Kafka, whose messages are
-- bounded), or starting or ending with whitespace, a control or a zero-width
-- (invisible formatting: Unicode's default-ignorable code points, blank and
-- format characters) character, which an id made only of them does too.
-- A padded id would be another account, one whose risk tag (risk_tags, which
-- holds only ids this accepts) no payment finds. Inlined.
CREATE OR REPLACE FUNCTION invalid_payment_id(id text)
-- The pattern is an escape string (E''): its body is parsed in the caller's
-- session each time it is inlined, and a plain string would be read as an
-- escape string under standard_conforming_strings = off (every payment then
-- failed on a lone byte, 22021).
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT $1 = '' OR length($1) > 200
        OR (left($1, 1) || right($1, 1)) ~ E'[\\s\\x01-\\x1f\\x7f-\\x9f\\u00a0\\u00ad\\u034f\\u061c\\u115f\\u1160\\u1680\\u17b4\\u17b5\\u180b-\\u180f\\u2000-\\u200f\\u2028-\\u202f\\u205f-\\u206f\\u2800\\u3000\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0\\ufff0-\\ufffb\\U00013430-\\U0001343f\\U0001bca0-\\U0001bca3\\U0001d173-\\U0001d17a\\U000e0000-\\U000e0fff]'
$$;
COMMENT ON FUNCTION invalid_payment_id(text) IS 'Whether a payment transaction_id or account_id is empty, over 200 characters, or starts or ends with whitespace, a control or a zero-width character; inlined into payment_refusal and risk_tags'' CHECK';

-- Raises MT001 for a station that is not in stations.
CREATE OR REPLACE FUNCTION raise_unknown_station(station_id integer)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'Unknown station: %', station_id
        USING ERRCODE = 'MT001', DETAIL = format('No row in metro.stations has station_id %s.', station_id),
              HINT = 'Load the stations first: loader stations.csv (with --header when the file has one).';
END
$$;
COMMENT ON FUNCTION raise_unknown_station(integer) IS 'Raises MT001 naming the station';

-- Amounts are printed as units.cents: 1250 -> 12.50, 5 -> 0.05, -5 -> -0.05.
-- A numeric times 0.01 has exactly two decimals, and numeric's text follows
-- no session setting.
CREATE OR REPLACE FUNCTION cents_text(cents bigint)
-- Not STRICT, so that PostgreSQL inlines it (NULL gives NULL all the same).
-- One product, not a text built from sign, quotient and padded remainder:
-- it is inlined twice into entry_outcome, which validate_entry compiles
-- afresh in every transaction (measured: 28,000 instructions fewer a swipe,
-- 5% of validate_entry).
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (cents::numeric * 0.01)::text
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

-- PostgreSQL adds an interval's days and months in the session's time zone:
-- ts - '1 day' is 23 or 25 hours before ts across a clock change, more with a
-- zone a caller makes up, so a caller's TimeZone would move the fraud window,
-- the clock-skew bounds and the wait statistics. Held as hours and seconds
-- ('1 day' is kept as 24:00:00, a month as 720 hours, as PostgreSQL compares
-- intervals), they have one length in every zone.
CREATE OR REPLACE FUNCTION settings_fixed_intervals()
RETURNS trigger LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    NEW.fraud_window := make_interval(secs => extract(epoch FROM NEW.fraud_window));
    NEW.max_clock_skew := make_interval(secs => extract(epoch FROM NEW.max_clock_skew));
    NEW.max_wait := make_interval(secs => extract(epoch FROM NEW.max_wait));
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION settings_fixed_intervals() IS 'Trigger: keeps settings.fraud_window, max_clock_skew and max_wait in hours and seconds (1 day as 24:00:00), so that no session time zone changes their length';

-- triggers
CREATE TRIGGER settings_keep_row BEFORE DELETE OR TRUNCATE ON settings
    FOR EACH STATEMENT EXECUTE FUNCTION settings_keep_row();
CREATE TRIGGER settings_fixed_intervals BEFORE INSERT OR UPDATE ON settings
    FOR EACH ROW EXECUTE FUNCTION settings_fixed_intervals();

-- The gates lock the card, then read its recent events: only under READ
-- COMMITTED does that read see a swipe of the card that a concurrent call
-- committed while this one waited for the lock. Under REPEATABLE READ or
-- SERIALIZABLE it reads the transaction's older snapshot (a same-second swipe
-- missed, an entry's trip closed twice), so the gates refuse them (MT013).
-- So do recharge_card and the payment decisions: from a snapshot taken before
-- an operator raised a risk tag, a caller would have a payment approved (and
-- kept as the answer to every retry) that the new tag blocks.
CREATE OR REPLACE FUNCTION raise_read_committed_required(function_name text)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION '%: needs READ COMMITTED isolation, called in a % transaction',
        function_name, upper(current_setting('transaction_isolation'))
        USING ERRCODE = 'MT013',
              HINT = 'Call it in a READ COMMITTED transaction, PostgreSQL''s default (check default_transaction_isolation).';
END
$$;
COMMENT ON FUNCTION raise_read_committed_required(text) IS 'Raises MT013 naming the deciding function and the transaction''s isolation level';

-- Time. A caller passes ts to replay its own clock. Whoever calls, ts must be
-- finite and in [2000-01-01, 2200-01-01) UTC (MT009). A metro_app caller may
-- pass a ts only within settings.max_clock_skew of now() (turnstiles that
-- store and forward); members of metro_replay may pass any valid ts
-- (simulations, backfills, the bridge applying inbound topics), and so may the
-- schema's owner and superusers (loader, producers, tests). The functions are
-- SECURITY DEFINER, so the caller is session_user, the role that logged in
-- (or that SET SESSION AUTHORIZATION chose): SET ROLE cannot widen it.

-- Whether the session's login role may pass any valid ts.
CREATE OR REPLACE FUNCTION replay_caller()
RETURNS boolean LANGUAGE sql STABLE SET search_path = metro, pg_temp AS $$
    SELECT pg_has_role(session_user, 'metro_replay', 'MEMBER')
        OR pg_has_role(session_user, n.nspowner, 'MEMBER')
    FROM pg_namespace n WHERE n.nspname = 'metro'
$$;
COMMENT ON FUNCTION replay_caller() IS 'Whether session_user may pass any valid ts: a member of metro_replay, of the schema''s owner, or a superuser';

-- Whether ts is the default, now(), of a transaction begun less than a
-- second ago: the one ts taken without a read of settings. now() is when the
-- transaction began, so in one held open it is an old time, checked as any
-- other (the clock skew is measured against clock_timestamp()). Inlined.
CREATE OR REPLACE FUNCTION fresh_default_ts(ts timestamptz)
RETURNS boolean LANGUAGE sql VOLATILE AS $$
    SELECT $1 = now() AND now() >= clock_timestamp() - interval '1 second'
$$;
COMMENT ON FUNCTION fresh_default_ts(timestamptz) IS 'Whether ts is now() of a transaction begun less than a second ago (taken unchecked); inlined into the functions that take a ts';

-- Refuses, before anything is written, a ts the caller may not pass: MT009
-- for an infinite ts or one outside [2000-01-01, 2200-01-01) UTC, MT010 for a
-- ts further than settings.max_clock_skew from the server's clock
-- (clock_timestamp()) from a caller that is not replay_caller(): the
-- default now() too, once the transaction has been open longer than the
-- skew. NULL passes (the callers raise MT004 for it). A fresh_default_ts costs
-- no read of settings.
CREATE OR REPLACE FUNCTION checked_ts(function_name text, argument text, ts timestamptz)
RETURNS void LANGUAGE plpgsql VOLATILE SET search_path = metro, pg_temp AS $$
DECLARE
    v_skew interval;
    v_clock timestamptz := clock_timestamp();
BEGIN
    IF ts IS NULL OR fresh_default_ts(ts) THEN
        RETURN;
    END IF;
    IF isfinite(ts) AND ts >= timestamptz '2000-01-01 00:00:00+00'
       AND ts < timestamptz '2200-01-01 00:00:00+00' THEN
        SELECT s.max_clock_skew INTO v_skew FROM settings s;
        IF ts BETWEEN v_clock - v_skew AND v_clock + v_skew OR replay_caller() THEN
            RETURN;
        END IF;
        IF ts = now() THEN
            RAISE EXCEPTION '%: % is now(), the start of a transaction open for %, more than % ago',
                function_name, argument, date_trunc('second', v_clock - ts), v_skew
                USING ERRCODE = 'MT010',
                      DETAIL = format('Role %s may pass a ts only within settings.max_clock_skew of the server''s clock; it is not a member of metro_replay.', session_user),
                      HINT = 'Call it in a short transaction of its own: now() is the time the transaction began.';
        END IF;
        RAISE EXCEPTION '%: % % is more than % away from the server''s clock (%)',
            function_name, argument, ts, v_skew, v_clock
            USING ERRCODE = 'MT010',
                  DETAIL = format('Role %s may pass a ts only within settings.max_clock_skew of the server''s clock; it is not a member of metro_replay.', session_user),
                  HINT = 'Omit ts to use now(), fix the client''s clock, or run simulations and backfills as a member of metro_replay.';
    END IF;
    RAISE EXCEPTION '%: % must be a finite time from 2000-01-01 up to 2200-01-01 UTC, got %',
        function_name, argument, ts
        USING ERRCODE = 'MT009',
              HINT = 'Pass the time the event happened (timestamptz, e.g. 2026-11-02 08:00:00+00), or omit ts to use now().';
END
$$;
COMMENT ON FUNCTION checked_ts(text, text, timestamptz) IS 'Refuses a ts the caller may not pass: MT009 infinite or outside [2000-01-01, 2200-01-01), MT010 further than settings.max_clock_skew from the server''s clock (clock_timestamp()) for a caller not in metro_replay, the default now() of a transaction open longer than that too; NULL passes';

-- The ordinal of the first element of a batch's ts array that checked_ts
-- would refuse, NULL when none. A NULL element, or a NULL array (element 1),
-- means now(). One set-wise statement for the common case of a batch within
-- the skew.
CREATE OR REPLACE FUNCTION ts_array_refusal(ts timestamptz[])
RETURNS integer LANGUAGE plpgsql VOLATILE SET search_path = metro, pg_temp AS $$
DECLARE
    v_skew interval := (SELECT s.max_clock_skew FROM settings s);
    v_clock timestamptz := clock_timestamp();
    v_first integer;
BEGIN
    SELECT min(u.n) INTO v_first
    FROM unnest(coalesce(ts, ARRAY[NULL::timestamptz])) WITH ORDINALITY u(t, n)
    CROSS JOIN LATERAL (SELECT coalesce(u.t, now()) AS t) e
    WHERE NOT (fresh_default_ts(e.t)
               OR (isfinite(e.t) AND e.t >= timestamptz '2000-01-01 00:00:00+00'
                   AND e.t < timestamptz '2200-01-01 00:00:00+00'
                   AND e.t BETWEEN v_clock - v_skew AND v_clock + v_skew));
    IF v_first IS NULL OR NOT replay_caller() THEN
        RETURN v_first;
    END IF;
    SELECT min(u.n) INTO v_first FROM unnest(ts) WITH ORDINALITY u(t, n)
    WHERE NOT (isfinite(u.t) AND u.t >= timestamptz '2000-01-01 00:00:00+00'
               AND u.t < timestamptz '2200-01-01 00:00:00+00');
    RETURN v_first;
END
$$;
COMMENT ON FUNCTION ts_array_refusal(timestamptz[]) IS 'Ordinal of the first element of a ts array that checked_ts refuses (NULL: none; a NULL element, or a NULL array as element 1, is now())';

-- checked_ts for the first refused element of a batch's ts array, named ts[i]
-- (or ts, for a NULL array: now() for every element). i is the element's
-- ordinal, as the batch functions read their arrays (unnest): the element is
-- found by it, never by subscript, because a caller's array may start at
-- another index or have two dimensions ('[0:0]={...}', '{{...}}'), where
-- ts[i] would be NULL, read as now(), and let any ts through.
CREATE OR REPLACE FUNCTION checked_ts_array(function_name text, ts timestamptz[])
RETURNS void LANGUAGE plpgsql VOLATILE SET search_path = metro, pg_temp AS $$
DECLARE
    v_first integer := ts_array_refusal(ts);
BEGIN
    IF v_first IS NOT NULL THEN
        PERFORM checked_ts(function_name,
                           CASE WHEN ts IS NULL THEN 'ts' ELSE format('ts[%s]', v_first) END,
                           coalesce((SELECT u.t FROM unnest(ts) WITH ORDINALITY u(t, n)
                                     WHERE u.n = v_first), now()));
    END IF;
END
$$;
COMMENT ON FUNCTION checked_ts_array(text, timestamptz[]) IS 'checked_ts for the first refused element of a ts array (MT009 or MT010 naming ts[i], or ts for a NULL array)';

-- How many pending rows the lag functions read for a count_limit: one more than
-- it, which tells whether there are more; NULL (or the largest bigint) reads them
-- all. A count_limit below 1 is refused.
CREATE OR REPLACE FUNCTION lag_rows_to_read(function_name text, count_limit bigint,
                                            counted text)
RETURNS bigint LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    IF count_limit < 1 THEN
        RAISE EXCEPTION '%: count_limit must be a positive number of rows or NULL (count them all), got %',
            function_name, count_limit
            USING ERRCODE = '22023',
                  HINT = format('SELECT * FROM %s(100000) counts at most 100,001 pending rows per %s.',
                                function_name, counted);
    END IF;
    RETURN CASE WHEN count_limit < 9223372036854775807 THEN count_limit + 1 END;
END
$$;
COMMENT ON FUNCTION lag_rows_to_read(text, bigint, text) IS 'Rows worker_lag and bridge_lag read for a count_limit: count_limit + 1, NULL (all) for NULL or the largest bigint; 22023 for a count_limit below 1, naming the function';

-- grants: every function above is private to the schema's owner.
REVOKE ALL ON FUNCTION invalid_payment_id(text), raise_null_argument(text, text),
    raise_unknown_station(integer),
    cents_text(bigint), fraud_trans_id(bigint, timestamptz), settings_keep_row(),
    settings_fixed_intervals(),
    replay_caller(), checked_ts(text, text, timestamptz), ts_array_refusal(timestamptz[]),
    checked_ts_array(text, timestamptz[]), lag_rows_to_read(text, bigint, text)
    FROM PUBLIC;
