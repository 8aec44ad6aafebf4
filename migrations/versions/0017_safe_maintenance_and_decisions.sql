-- Revision 0017 (frozen): maintenance that loses nothing, and decisions no
-- client can bend.
-- - run_maintenance() dropped a day of card_events, or deleted old rows of its
--   default partition, whether or not the rollup had read them: a worker
--   stopped, or held back by a long transaction, lost those swipes from the
--   totals for good. rollup_unread() names the rows not read yet, and they
--   stay (a day so kept is reported not_rolled_up).
-- - Two callers of create_partitions() at once (two installs) could both
--   create a day and one failed: they queue on the settings row now. It makes
--   only days rows are kept for (a worker's role made thousands ahead, each
--   locked by every swipe).
-- - The default partitions' rows, dead letters, train events and departures
--   past retention went in one DELETE each, whatever their number: every
--   row-by-row delete goes through delete_expired() within a budget of
--   100,000 rows a call, and 'more' asks for another call;
--   run_maintenance_until_done() repeats it for pg_cron.
-- - evaluate_transactions answered a payment whose transaction_id a
--   concurrent call had committed for another account or amount with that
--   payment's decision: it raises MT011 now, as evaluate_transaction does.
-- - An account_id of any length reached the decisions' stream (one of 190 MB
--   stopped the bridge): at most 200 characters, not blank (MT014).
-- - Under REPEATABLE READ or SERIALIZABLE the gates' rules read an old
--   snapshot and missed a concurrent swipe: the gates refuse them (MT013).
-- - The clock skew was measured against now(), the transaction's start: a
--   transaction held open recorded swipes out of the rules' sight. It is
--   measured against clock_timestamp(), and is_fraud checks ts as the gates do.
SET search_path = metro, pg_catalog;

-- data
INSERT INTO error_codes (sqlstate, name, meaning, row_level) VALUES
    ('MT013', 'read_committed_required', 'A gate function (validate_entry, validate_entries, process_exit) called in a REPEATABLE READ or SERIALIZABLE transaction, whose older snapshot would hide a concurrent swipe from the rules', false),
    ('MT014', 'invalid_account_id', 'A payment account_id that is empty, only whitespace, control or zero-width characters, or over 200 characters', true);

-- functions
-- The gates lock the card, then read its recent events: only under READ
-- COMMITTED does that read see a swipe of the card that a concurrent call
-- committed while this one waited for the lock. Under REPEATABLE READ or
-- SERIALIZABLE it reads the transaction's older snapshot (a same-second swipe
-- missed, an entry's trip closed twice), so the gates refuse them (MT013).
CREATE OR REPLACE FUNCTION raise_read_committed_required(function_name text)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION '%: needs READ COMMITTED isolation, called in a % transaction',
        function_name, upper(current_setting('transaction_isolation'))
        USING ERRCODE = 'MT013',
              HINT = 'Call it in a READ COMMITTED transaction, PostgreSQL''s default (check default_transaction_isolation).';
END
$$;
COMMENT ON FUNCTION raise_read_committed_required(text) IS 'Raises MT013 naming the gate function and the transaction''s isolation level';

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
-- (or ts, for a NULL array: now() for every element).
CREATE OR REPLACE FUNCTION checked_ts_array(function_name text, ts timestamptz[])
RETURNS void LANGUAGE plpgsql VOLATILE SET search_path = metro, pg_temp AS $$
DECLARE
    v_first integer := ts_array_refusal(ts);
BEGIN
    IF v_first IS NOT NULL THEN
        PERFORM checked_ts(function_name,
                           CASE WHEN ts IS NULL THEN 'ts' ELSE format('ts[%s]', v_first) END,
                           coalesce(ts[v_first], now()));
    END IF;
END
$$;
COMMENT ON FUNCTION checked_ts_array(text, timestamptz[]) IS 'checked_ts for the first refused element of a ts array (MT009 or MT010 naming ts[i], or ts for a NULL array)';

-- The rows of table_name the rollup has not read yet, as an SQL condition on
-- its columns (the cursor as literals, so that an index serves it); NULL when
-- the rollup reads no rows of the table that anything else deletes.
-- run_maintenance() drops or deletes nothing the condition holds for: a
-- stopped worker, or one held back by a long transaction, loses nothing.
CREATE OR REPLACE FUNCTION rollup_unread(table_name text)
RETURNS text LANGUAGE sql STABLE SET search_path = metro, pg_temp AS $$
    SELECT CASE c.source
               WHEN 'card_events' THEN format('(txid, event_id) > (%L::xid8, %s)', c.txid, c.position)
               -- Whole transactions at a time: its cursor's position is not used.
               WHEN 'train_events' THEN format('txid > %L::xid8', c.txid)
           END
    FROM worker_cursors c
    WHERE c.source = $1
$$;
COMMENT ON FUNCTION rollup_unread(text) IS 'The rows of card_events or train_events the rollup has not read yet, as an SQL condition (NULL for other tables): run_maintenance() keeps them';
REVOKE ALL ON FUNCTION rollup_unread(text) FROM PUBLIC;

-- Creates the daily partitions of from_day through to_day (UTC days) that do
-- not exist, for every partitioned table, one caller at a time, and only for
-- days rows are kept for (back to the longest retention, ahead to
-- settings.partitions_ahead). A day that already has rows in the table's
-- default partition keeps them there (reported as kept_in_default): those
-- rows leave by their retention.
CREATE OR REPLACE FUNCTION create_partitions(from_day date, to_day date)
RETURNS TABLE (action text, table_name text, partition_name text, rows bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp SET TimeZone = 'UTC' AS $$
DECLARE
    s settings%ROWTYPE;
    first_kept date;
    last_kept date;
    t record;
    d date;
    found_rows boolean;
BEGIN
    IF from_day IS NULL THEN PERFORM raise_null_argument('create_partitions', 'from_day'); END IF;
    IF to_day IS NULL THEN PERFORM raise_null_argument('create_partitions', 'to_day'); END IF;
    -- Infinite days first: date subtraction refuses them.
    IF NOT (isfinite(from_day) AND isfinite(to_day)) OR to_day < from_day
       OR to_day - from_day > 3660 OR from_day < date '2000-01-01' OR to_day >= date '2200-01-01' THEN
        RAISE EXCEPTION 'create_partitions: days % to % are not a range of at most 10 years within 2000-01-01 and 2200-01-01',
            from_day, to_day
            USING ERRCODE = '22023', HINT = 'Pass the first and the last UTC day to create, e.g. create_partitions(current_date - 7, current_date - 1).';
    END IF;
    -- One caller at a time (two installs, a worker and pg_cron): the second
    -- waits, then finds the partitions made. The settings row, because only
    -- the schema's owner may lock it (an advisory lock, any role could hold).
    SELECT * INTO s FROM settings FOR NO KEY UPDATE;
    -- Only days rows are kept for: every partition is locked by every swipe's
    -- rules, so a thousand days far ahead (never dropped) or long past would
    -- slow every swipe.
    first_kept := ((now() - greatest(s.event_retention, s.history_retention)) AT TIME ZONE 'UTC')::date;
    last_kept := (now() AT TIME ZONE 'UTC')::date + s.partitions_ahead;
    IF from_day < first_kept OR to_day > last_kept THEN
        RAISE EXCEPTION 'create_partitions: days % to % reach outside the days kept, % to %',
            from_day, to_day, first_kept, last_kept
            USING ERRCODE = '22023',
                  HINT = 'Days kept: back to the longest retention (settings.event_retention, history_retention), ahead to settings.partitions_ahead; run_maintenance() makes the days ahead as they come near.';
    END IF;
    FOR t IN SELECT * FROM partitioned_tables() p ORDER BY p.table_name LOOP
        FOR d IN SELECT g::date FROM generate_series(from_day, to_day, interval '1 day') g LOOP
            partition_name := format('%s_p%s', t.table_name, to_char(d, 'YYYYMMDD'));
            CONTINUE WHEN to_regclass(format('metro.%I', partition_name)) IS NOT NULL;
            table_name := t.table_name;
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= $1 AND %I < $2)',
                           t.table_name || '_default', t.time_column, t.time_column)
                INTO found_rows USING d::timestamptz, (d + 1)::timestamptz;
            IF found_rows THEN
                action := 'kept_in_default';
                partition_name := t.table_name || '_default';
                rows := NULL;
            ELSE
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               partition_name, t.table_name, d::timestamptz, (d + 1)::timestamptz);
                EXECUTE format('COMMENT ON TABLE %I IS %L', partition_name,
                               format('%s of %s (UTC); dropped by run_maintenance() past its retention', t.table_name, d));
                action := 'created';
                rows := 0;
            END IF;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION create_partitions(date, date) IS 'Creates the missing daily partitions of from_day through to_day (UTC) for card_events, card_history_second and station_second_slots: (action created or kept_in_default, table_name, partition_name, rows); for a load or replay of past dates. MT004 NULL argument, 22023 not a range of at most 10 years in [2000-01-01, 2200-01-01) or days outside those kept (back to the longest retention, ahead to settings.partitions_ahead)';
REVOKE ALL ON FUNCTION create_partitions(date, date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION create_partitions(date, date) TO metro_worker;

-- Deletes at most batch rows of table_name whose time_column is before cutoff
-- (and that meet also, an SQL condition of the caller's), whichever come
-- first, and returns how many. One bounded statement: a long DELETE holds
-- back the commit horizon, so the bridge and the rollup wait while it runs.
CREATE OR REPLACE FUNCTION delete_expired(table_name text, time_column text, cutoff timestamptz,
                                          batch integer, also text DEFAULT '')
RETURNS bigint LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('DELETE FROM %1$I WHERE ctid = ANY (ARRAY('
                   'SELECT ctid FROM %1$I WHERE %2$I < $1%3$s LIMIT $2))',
                   table_name, time_column, also)
        USING cutoff, batch;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION delete_expired(text, text, timestamptz, integer, text) IS 'Deletes at most batch rows of the table older than cutoff (and meeting the extra condition): run_maintenance()''s one way to delete by retention';
REVOKE ALL ON FUNCTION delete_expired(text, text, timestamptz, integer, text) FROM PUBLIC;

-- Creates the partitions of today through settings.partitions_ahead days
-- ahead and drops the partitions whose whole day is older than the table's
-- retention (a partition locked by a long transaction is left for the next
-- run, reported as busy, rather than stalling the writers queued behind the
-- drop; one holding rows the rollup has not read yet, as not_rolled_up, so
-- that a stopped worker loses no swipe from the totals). Then deletes, row
-- by row, what is past retention elsewhere: the default partitions' rows,
-- the bridge's dead letters (settings.dead_letter_retention), the train
-- events and departures (settings.history_retention) and the payment
-- decisions (settings.decision_retention). Those deletes share a budget of
-- 100,000 rows a call: a DELETE holds back the commit horizon (the bridge and
-- the rollup wait) while it runs, and a replay of past dates or a busy
-- payment network leaves millions of rows due at once; 'more' says another
-- call is due. Rows the rollup has not read stay. One call at a time
-- (create_partitions). Records what it did in worker_state.
CREATE OR REPLACE FUNCTION run_maintenance()
RETURNS TABLE (action text, table_name text, partition_name text, rows bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp SET TimeZone = 'UTC'
    SET lock_timeout = '2s' AS $$
DECLARE
    s settings%ROWTYPE;
    t record;
    p record;
    today date := (now() AT TIME ZONE 'UTC')::date;
    n bigint;
    unread text;
    not_read boolean;
    done text[] := '{}';
    deleted bigint := 0;
    -- 100,000 decisions took 0.2 to 0.5 s to delete (ad hoc, idle server).
    budget bigint := 100000;
BEGIN
    SELECT * INTO s FROM settings FOR NO KEY UPDATE;
    FOR action, table_name, partition_name, rows IN
        SELECT * FROM create_partitions(today, today + s.partitions_ahead) LOOP
        done := done || action;
        RETURN NEXT;
    END LOOP;

    FOR t IN SELECT * FROM partitioned_tables() pt ORDER BY pt.table_name LOOP
        table_name := t.table_name;
        unread := rollup_unread(t.table_name);
        FOR p IN
            SELECT c.relname, to_date(substring(c.relname FROM '_p([0-9]{8})$'), 'YYYYMMDD') AS day
            FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = format('metro.%I', t.table_name)::regclass
              AND c.relname ~ ('^' || t.table_name || '_p[0-9]{8}$')
            ORDER BY c.relname
        LOOP
            CONTINUE WHEN (p.day + 1)::timestamptz > now() - t.retention;
            partition_name := p.relname;
            rows := NULL;
            not_read := false;
            IF unread IS NOT NULL THEN
                EXECUTE format('SELECT EXISTS (SELECT FROM %I WHERE %s)', p.relname, unread)
                    INTO not_read;
            END IF;
            IF not_read THEN
                action := 'not_rolled_up';
            ELSE
                BEGIN
                    EXECUTE format('DROP TABLE %I', p.relname);
                    action := 'dropped';
                EXCEPTION WHEN lock_not_available THEN
                    action := 'busy';
                END;
            END IF;
            done := done || action;
            RETURN NEXT;
        END LOOP;
    END LOOP;

    -- What leaves row by row, by table name; a row the rollup has not read
    -- stays (a stopped worker loses no swipe and no departure).
    FOR t IN
        SELECT pt.table_name, pt.table_name || '_default' AS partition_name, pt.time_column,
               pt.retention
        FROM partitioned_tables() pt
        UNION ALL
        VALUES ('bridge_dead_letters', NULL, 'received_at', s.dead_letter_retention),
               ('bridge_outbound_dead_letters', NULL, 'at', s.dead_letter_retention),
               ('station_departures', NULL, 'ts', s.history_retention),
               ('train_events', NULL, 'ts', s.history_retention),
               ('risk_decisions', NULL, 'decided_at', s.decision_retention)
        ORDER BY 1
    LOOP
        n := delete_expired(coalesce(t.partition_name, t.table_name), t.time_column,
                            now() - t.retention, budget::integer,
                            coalesce(' AND NOT (' || rollup_unread(t.table_name) || ')', ''));
        table_name := t.table_name; partition_name := t.partition_name;
        IF n > 0 THEN
            action := 'deleted'; rows := n;
            done := done || action;
            deleted := deleted + n;
            RETURN NEXT;
        END IF;
        budget := budget - n;
        IF budget = 0 THEN
            action := 'more'; rows := NULL;
            RETURN NEXT;
            EXIT;
        END IF;
    END LOOP;

    UPDATE worker_state SET last_maintenance_at = clock_timestamp(),
        last_maintenance = format('created %s, dropped %s, deleted %s rows, busy %s, not rolled up %s',
            cardinality(array_positions(done, 'created')), cardinality(array_positions(done, 'dropped')),
            deleted, cardinality(array_positions(done, 'busy')),
            cardinality(array_positions(done, 'not_rolled_up')));
END
$$;
COMMENT ON FUNCTION run_maintenance() IS 'Creates the daily partitions of today through settings.partitions_ahead days ahead, drops those past event_retention (card_events) or history_retention (card_history_second, station_second_slots); then deletes, at most 100,000 rows a call in all, default-partition rows past retention, bridge_dead_letters and bridge_outbound_dead_letters past dead_letter_retention, risk_decisions past decision_retention, station_departures and train_events (once rolled up) past history_retention: rows the rollup has not read stay; one call at a time: one row (action created, kept_in_default, dropped, busy, not_rolled_up: a partition past retention with rows the rollup has not read, deleted or more: more rows are past retention, call again; table_name, partition_name, rows: rows deleted, 0 for a new partition, NULL when not counted) per thing done';
REVOKE ALL ON FUNCTION run_maintenance() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION run_maintenance() TO metro_worker;

-- For a scheduler without the worker (pg_cron): calls run_maintenance() until
-- nothing more is due, each call its own transaction. Run by CALL outside a
-- transaction block; a security invoker with no settings of its own, so that
-- it may commit between calls.
CREATE OR REPLACE PROCEDURE run_maintenance_until_done()
LANGUAGE plpgsql AS $$
DECLARE
    more boolean;
BEGIN
    LOOP
        SELECT bool_or(m.action = 'more') INTO more FROM metro.run_maintenance() m;
        COMMIT;
        EXIT WHEN NOT coalesce(more, false);
    END LOOP;
END
$$;
COMMENT ON PROCEDURE run_maintenance_until_done() IS 'Calls run_maintenance() until nothing more is due, committing after each call: for pg_cron (CALL metro.run_maintenance_until_done()); not inside a transaction block';
REVOKE ALL ON PROCEDURE run_maintenance_until_done() FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE run_maintenance_until_done() TO metro_worker;

-- Whether a payment's id (transaction_id, account_id) is unusable: empty,
-- made only of whitespace, control or zero-width (invisible formatting)
-- characters, or over 200 characters (its stream row goes to Kafka, whose
-- messages are bounded). Inlined.
CREATE OR REPLACE FUNCTION invalid_payment_id(id text)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT $1 ~ '^[\s\x01-\x1f\x7f-\x9f\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0]*$'
        OR length($1) > 200
$$;
COMMENT ON FUNCTION invalid_payment_id(text) IS 'Whether a payment transaction_id or account_id is empty, only whitespace, control or zero-width characters, or over 200 characters; inlined into payment_refusal';

-- Why evaluate_transaction refuses a payment's arguments, checked in this
-- order: (MT004, the NULL argument's name), (MT007, 'transaction_id') and
-- (MT014, 'account_id') for an invalid_payment_id, (MT003, 'amount') for an
-- amount that is not positive, has more than two decimals or is 10^12 or
-- more; one row (NULL, NULL) when they are fine. ts is not checked here: the
-- batch reads a NULL ts as now(). Inlined, so it names nothing unqualified
-- but the inlined invalid_payment_id.
CREATE OR REPLACE FUNCTION payment_refusal(transaction_id text, account_id text, amount numeric)
RETURNS TABLE (sqlstate text, argument text) LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN $1 IS NULL OR $2 IS NULL OR $3 IS NULL THEN 'MT004'
                WHEN metro.invalid_payment_id($1) THEN 'MT007'
                WHEN metro.invalid_payment_id($2) THEN 'MT014'
                WHEN $3 <= 0 OR $3 <> round($3, 2) OR $3 >= 1e12 THEN 'MT003' END,
           CASE WHEN $1 IS NULL THEN 'transaction_id'
                WHEN $2 IS NULL THEN 'account_id'
                WHEN $3 IS NULL THEN 'amount'
                WHEN metro.invalid_payment_id($1) THEN 'transaction_id'
                WHEN metro.invalid_payment_id($2) THEN 'account_id'
                WHEN $3 <= 0 OR $3 <> round($3, 2) OR $3 >= 1e12 THEN 'amount' END
$$;
COMMENT ON FUNCTION payment_refusal(text, text, numeric) IS 'Why a payment''s arguments are refused: (MT004, argument) NULL, (MT007, transaction_id) or (MT014, account_id) empty, only whitespace, control or zero-width characters, or too long, (MT003, amount) not positive, over two decimals or too large; (NULL, NULL) when fine. Inlined into evaluate_transaction and evaluate_transactions';

-- Decides a payment with the risk rules and records the decision once:
-- a transaction_id seen before gets its recorded decision back and nothing
-- is written. A new decision is also written to the transaction_decisions
-- stream. Bad arguments raise MT003/MT004/MT007 and write nothing.
CREATE OR REPLACE FUNCTION evaluate_transaction(transaction_id text, account_id text, amount numeric,
                                                ts timestamptz DEFAULT now())
RETURNS risk_verdict LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_transaction ALIAS FOR $1;
    p_account ALIAS FOR $2;
    p_amount ALIAS FOR $3;
    p_ts ALIAS FOR $4;
    v risk_verdict;
    refusal record;
    m record;
    d record;
BEGIN
    SELECT * INTO refusal FROM payment_refusal(p_transaction, p_account, p_amount);
    IF refusal.sqlstate = 'MT004' THEN
        PERFORM raise_null_argument('evaluate_transaction', refusal.argument);
    END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('evaluate_transaction', 'ts'); END IF;
    IF refusal.sqlstate = 'MT007' THEN
        RAISE EXCEPTION 'Invalid transaction_id: %', quote_literal(left(p_transaction, 40))
            USING ERRCODE = 'MT007',
                  HINT = 'A transaction_id is 1 to 200 characters, not only spaces, control or zero-width characters.';
    ELSIF refusal.sqlstate = 'MT014' THEN
        RAISE EXCEPTION 'Invalid account_id: %', quote_literal(left(p_account, 40))
            USING ERRCODE = 'MT014',
                  HINT = 'An account_id is 1 to 200 characters, not only spaces, control or zero-width characters.';
    ELSIF refusal.sqlstate = 'MT003' THEN
        RAISE EXCEPTION 'Transaction amount must be positive, below 1,000,000,000,000, with at most two decimals: %', p_amount
            USING ERRCODE = 'MT003', HINT = 'Amounts are currency units with cents: 5000.01.';
    END IF;

    PERFORM checked_ts('evaluate_transaction', 'ts', p_ts);

    SELECT r.blocked, r.rule, r.message, r.account_id, r.amount INTO d
    FROM risk_decisions r WHERE r.transaction_id = p_transaction;
    IF FOUND THEN
        IF d.account_id <> p_account OR d.amount <> p_amount THEN
            PERFORM raise_transaction_id_reused(p_transaction, p_account, p_amount);
        END IF;
        RETURN ROW(d.blocked, d.rule, d.message)::risk_verdict;
    END IF;

    SELECT * INTO m FROM risk_rule(p_account, p_amount);
    IF m.rule IS NULL THEN
        PERFORM raise_no_risk_rule(p_account, p_amount, m.risk_level);
    END IF;
    INSERT INTO risk_decisions (transaction_id, account_id, amount, ts, risk_level, blocked, rule, message)
    VALUES (p_transaction, p_account, p_amount, p_ts, m.risk_level, m.blocked, m.rule, m.message)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        -- The same transaction_id was decided by a call that committed meanwhile.
        SELECT r.blocked, r.rule, r.message, r.account_id, r.amount INTO d
        FROM risk_decisions r WHERE r.transaction_id = p_transaction;
        IF d.account_id <> p_account OR d.amount <> p_amount THEN
            PERFORM raise_transaction_id_reused(p_transaction, p_account, p_amount);
        END IF;
        RETURN ROW(d.blocked, d.rule, d.message)::risk_verdict;
    END IF;
    INSERT INTO transaction_decisions (transaction_id, account_id, amount, ts, risk_level, blocked, rule, message)
    VALUES (p_transaction, p_account, p_amount, p_ts, m.risk_level, m.blocked, m.rule, m.message);
    RETURN ROW(m.blocked, m.rule, m.message)::risk_verdict;
END
$$;
COMMENT ON FUNCTION evaluate_transaction(text, text, numeric, timestamptz) IS 'Decides a payment with the risk rules: (blocked, rule, message), recorded once per transaction_id in risk_decisions and the transaction_decisions stream; a transaction_id seen before with the same account and amount gets its recorded decision and writes nothing. MT004 NULL argument, MT007 invalid transaction_id, MT014 invalid account_id, MT003 invalid amount, MT009/MT010 ts refused, MT011 transaction_id reused for another account or amount, MT008 no rule covers it';
REVOKE ALL ON FUNCTION evaluate_transaction(text, text, numeric, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evaluate_transaction(text, text, numeric, timestamptz)
    TO metro_app, metro_bridge;

-- Decides payments i = 1..n (transaction_ids[i], account_ids[i], amounts[i],
-- ts[i]) and returns one row per input position, in input order: what
-- evaluate_transaction would return for it, called one by one. A
-- transaction_id decided before gets its recorded decision and writes nothing;
-- a transaction_id repeated within the batch is decided by its first
-- occurrence and the later ones get that decision. ts NULL, or a NULL element,
-- means now(). Arrays of different lengths raise 22023. When any payment would
-- be refused (MT003, MT004, MT007, MT008, MT009, MT010, MT011, MT014), the batch is decided by
-- evaluate_transaction one payment at a time, so the caller gets exactly the
-- error of the first refused payment, and the whole call writes nothing.
CREATE OR REPLACE FUNCTION evaluate_transactions(transaction_ids text[], account_ids text[],
                                                 amounts numeric[], ts timestamptz[] DEFAULT NULL)
RETURNS TABLE (ordinal integer, blocked boolean, rule text, message text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    v_refused boolean;
    v_skipped boolean;
    v_payment record;
    v risk_verdict;
BEGIN
    IF transaction_ids IS NULL THEN PERFORM raise_null_argument('evaluate_transactions', 'transaction_ids'); END IF;
    IF account_ids IS NULL THEN PERFORM raise_null_argument('evaluate_transactions', 'account_ids'); END IF;
    IF amounts IS NULL THEN PERFORM raise_null_argument('evaluate_transactions', 'amounts'); END IF;
    IF cardinality(account_ids) <> cardinality(transaction_ids)
       OR cardinality(amounts) <> cardinality(transaction_ids)
       OR (ts IS NOT NULL AND cardinality(ts) <> cardinality(transaction_ids)) THEN
        RAISE EXCEPTION 'evaluate_transactions: transaction_ids, account_ids, amounts and ts must have the same length, got %, %, % and %',
            cardinality(transaction_ids), cardinality(account_ids), cardinality(amounts), cardinality(ts)
            USING ERRCODE = '22023';
    END IF;

    WITH payments AS (
        SELECT u.n, u.transaction_id, u.account_id, u.amount, coalesce(u.ts, now()) AS ts
        FROM unnest(transaction_ids, account_ids, amounts, ts)
             WITH ORDINALITY u(transaction_id, account_id, amount, ts, n)
    ), fresh AS MATERIALIZED (
        -- First occurrences of the transaction_ids not decided before, with
        -- the rule that decides them (NULL rule: none matches, MT008).
        SELECT f.*, r.risk_level, r.blocked, r.rule, r.message
        FROM (SELECT DISTINCT ON (p.transaction_id) p.*
              FROM payments p
              WHERE NOT EXISTS (SELECT FROM risk_decisions d WHERE d.transaction_id = p.transaction_id)
              ORDER BY p.transaction_id, p.n) f
        CROSS JOIN LATERAL risk_rule(f.account_id, f.amount) r
    ), refused AS (
        SELECT FROM payments p CROSS JOIN LATERAL payment_refusal(p.transaction_id, p.account_id, p.amount) x
        WHERE x.sqlstate IS NOT NULL
        UNION ALL
        SELECT FROM fresh f WHERE f.rule IS NULL
        UNION ALL
        -- A ts the caller may not pass (MT009, MT010).
        SELECT WHERE ts_array_refusal(ts) IS NOT NULL
        UNION ALL
        -- A transaction_id reused with another account or amount (MT011):
        -- against the recorded decision, or within the batch.
        SELECT FROM payments p JOIN risk_decisions d ON d.transaction_id = p.transaction_id
        WHERE d.account_id <> p.account_id OR d.amount <> p.amount
        UNION ALL
        SELECT FROM (SELECT p.account_id, p.amount,
                            first_value(p.account_id) OVER w AS first_account,
                            first_value(p.amount) OVER w AS first_amount
                     FROM payments p
                     WINDOW w AS (PARTITION BY p.transaction_id ORDER BY p.n)) x
        WHERE x.account_id IS DISTINCT FROM x.first_account
           OR x.amount IS DISTINCT FROM x.first_amount
    ), decided AS (
        INSERT INTO risk_decisions AS d (transaction_id, account_id, amount, ts, risk_level, blocked, rule, message)
        SELECT f.transaction_id, f.account_id, f.amount, f.ts, f.risk_level, f.blocked, f.rule, f.message
        FROM fresh f
        WHERE NOT EXISTS (SELECT FROM refused)
        ORDER BY f.n
        ON CONFLICT DO NOTHING
        RETURNING d.transaction_id
    ), streamed AS (
        INSERT INTO transaction_decisions (transaction_id, account_id, amount, ts, risk_level, blocked, rule, message)
        SELECT f.transaction_id, f.account_id, f.amount, f.ts, f.risk_level, f.blocked, f.rule, f.message
        FROM decided d JOIN fresh f ON f.transaction_id = d.transaction_id
        ORDER BY f.n
    )
    SELECT EXISTS (SELECT FROM refused),
           (SELECT count(*) FROM fresh) > (SELECT count(*) FROM decided)
    INTO v_refused, v_skipped;

    IF v_refused THEN
        FOR v_payment IN SELECT u.n, u.transaction_id, u.account_id, u.amount, coalesce(u.ts, now()) AS ts
                 FROM unnest(transaction_ids, account_ids, amounts, ts)
                      WITH ORDINALITY u(transaction_id, account_id, amount, ts, n)
                 ORDER BY u.n LOOP
            v := evaluate_transaction(v_payment.transaction_id, v_payment.account_id, v_payment.amount, v_payment.ts);
            ordinal := v_payment.n;
            blocked := v.blocked;
            rule := v.rule;
            message := v.message;
            RETURN NEXT;
        END LOOP;
        RETURN;
    END IF;
    -- New statements: they see this call's decisions and those that concurrent
    -- calls committed meanwhile. When the ON CONFLICT DO NOTHING above skipped
    -- a new transaction_id, such a call decided it first, perhaps for another
    -- account or amount: the first such payment is refused (MT011) as
    -- evaluate_transaction refuses it, and nothing is written, rather than
    -- answered with another payment's decision.
    IF v_skipped THEN
        SELECT u.transaction_id, u.account_id, u.amount INTO v_payment
        FROM unnest(transaction_ids, account_ids, amounts)
             WITH ORDINALITY u(transaction_id, account_id, amount, n)
        JOIN risk_decisions d ON d.transaction_id = u.transaction_id
        WHERE d.account_id <> u.account_id OR d.amount <> u.amount
        ORDER BY u.n
        LIMIT 1;
        IF FOUND THEN
            PERFORM raise_transaction_id_reused(v_payment.transaction_id, v_payment.account_id,
                                                v_payment.amount);
        END IF;
    END IF;
    RETURN QUERY
        SELECT u.n::integer, d.blocked, d.rule, d.message
        FROM unnest(transaction_ids) WITH ORDINALITY u(transaction_id, n)
        JOIN risk_decisions d ON d.transaction_id = u.transaction_id
        ORDER BY u.n;
END
$$;
COMMENT ON FUNCTION evaluate_transactions(text[], text[], numeric[], timestamptz[]) IS 'Decides a batch of payments set-wise: (ordinal, blocked, rule, message) per input position, exactly what evaluate_transaction called in input order gives; ts NULL or a NULL element means now(). 22023 arrays of different lengths; a refused payment raises the error a one-by-one caller gets first, and nothing is written';

-- Would an entry of card_id at station_id at ts be refused as fraud?
-- Read-only: records nothing.
CREATE OR REPLACE FUNCTION is_fraud(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS boolean LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = metro, pg_temp
-- Generic plans, as validate_entry's: planning the rules over the partitions
-- on every call cost more than the rules; and never a partition scan.
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
    IF $1 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'card_id'); END IF;
    IF $2 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'station_id'); END IF;
    IF $3 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'ts'); END IF;
    -- As the gates: a caller may not look further back (or ahead) than it may swipe.
    IF NOT fresh_default_ts($3) THEN PERFORM checked_ts('is_fraud', 'ts', $3); END IF;
    IF NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = $2) THEN
        PERFORM raise_unknown_station($2);
    END IF;
    RETURN (SELECT f.rule
            FROM settings t
            CROSS JOIN LATERAL fraud_rule($1, $3, t.fraud_window, t.fraud_entry_limit,
                                          t.fraud_station_limit) f) <> 0;
END
$$;
COMMENT ON FUNCTION is_fraud(bigint, integer, timestamptz) IS 'Would an entry of card_id at station_id at ts be refused as fraud? Reads only. MT004 NULL argument, MT009/MT010 ts refused as by validate_entry, MT001 unknown station';
REVOKE ALL ON FUNCTION is_fraud(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION is_fraud(bigint, integer, timestamptz) TO metro_app;

-- Decides an entry swipe and records it whatever the outcome, with a fraud
-- row for fraud and a card_alert_export row for an insufficient balance when
-- the card wants alerts.
CREATE OR REPLACE FUNCTION validate_entry(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS decision LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp
-- Generic plans, pruned to the ts's partitions when they run: with card_events
-- partitioned, PostgreSQL would otherwise plan the rules afresh on every call
-- (measured: half the swipes per second at 8 clients).
SET plan_cache_mode = force_generic_plan
-- A generic plan lives as long as the session: planned while today's
-- partition was freshly analyzed and empty, the rules would scan the whole
-- partition on every swipe all day (measured: 670-1,070 µs a swipe instead
-- of 80 after 20,000 swipes in one session).
SET enable_seqscan = off AS $$
DECLARE
    p_card ALIAS FOR $1;
    p_station ALIAS FOR $2;
    p_ts ALIAS FOR $3;
    v_fare integer;
    v_station_name text;
    v_window interval;
    v_entry_limit integer;
    v_station_limit integer;
    v_rule smallint;
    c cards%ROWTYPE;
    o entry_result;
BEGIN
    IF p_card IS NULL THEN PERFORM raise_null_argument('validate_entry', 'card_id'); END IF;
    IF p_station IS NULL THEN PERFORM raise_null_argument('validate_entry', 'station_id'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('validate_entry', 'ts'); END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM raise_read_committed_required('validate_entry');
    END IF;
    -- A gate that leaves ts out (now() of a fresh transaction) needs no check.
    IF NOT fresh_default_ts(p_ts) THEN PERFORM checked_ts('validate_entry', 'ts', p_ts); END IF;

    -- The card is locked before its events are read, so a concurrent swipe of
    -- the same card is seen by the rules. One query reads the station and the
    -- rules' thresholds, the next the card's recent events; the outcome is an
    -- expression, not a query.
    SELECT * INTO c FROM cards WHERE cards.card_id = p_card FOR NO KEY UPDATE;
    SELECT s.fare, s.name, t.fraud_window, t.fraud_entry_limit, t.fraud_station_limit
    INTO v_fare, v_station_name, v_window, v_entry_limit, v_station_limit
    FROM stations s CROSS JOIN settings t
    WHERE s.station_id = p_station;
    IF NOT FOUND THEN PERFORM raise_unknown_station(p_station); END IF;
    v_rule := (SELECT f.rule FROM fraud_rule(p_card, p_ts, v_window, v_entry_limit,
                                             v_station_limit) f);
    -- Assigned alone: with the rules' query among its arguments, entry_outcome
    -- would no longer be inlined.
    o := entry_outcome(c.enabled, c.card_type, c.balance, c.expires, v_fare, v_rule <> 0, p_ts);

    IF o.accept = -1 THEN
        INSERT INTO fraud (trans_id, card_id, ts, station_id, activity_code, amount)
        VALUES (fraud_trans_id(p_card, p_ts), p_card, p_ts, p_station, 1, v_fare);
    ELSIF o.amount > 0 THEN
        UPDATE cards SET balance = c.balance - o.amount WHERE cards.card_id = p_card;
    ELSIF o.alert IS NOT NULL AND c.notify <> 0 THEN
        INSERT INTO card_alert_export (card_id, ts, station_name, name, phone, email, notify, alert_message)
        VALUES (p_card, p_ts, v_station_name, c.name, c.phone, c.email, c.notify, o.alert);
    END IF;
    INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
    VALUES (p_card, p_ts, p_station, 1, o.amount, o.accept);
    RETURN ROW(o.accept = 1, o.message)::decision;
END
$$;
COMMENT ON FUNCTION validate_entry(bigint, integer, timestamptz) IS 'Decides an entry swipe: (accepted, message) as Card Invalid, Card Disabled, Fraudulent transaction, Remaining Balance: 12.50, Card has insufficient balance: 1.00, Card Expires: <ts>, Card Expired; records it in card_events whatever the outcome, with a fraud or card_alert_export row when due. MT004 NULL argument, MT001 unknown station, MT013 not in a READ COMMITTED transaction';
REVOKE ALL ON FUNCTION validate_entry(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION validate_entry(bigint, integer, timestamptz) TO metro_app;

-- Decides a batch of entry swipes in one call, each swipe getting exactly the
-- result it would get from validate_entry called alone, in input order. Every
-- known card of the batch is locked first, in card order, so concurrent
-- batches cannot deadlock (an unknown card has no row to lock and nothing to
-- share: it is refused whatever its past, and the batch writes no derived
-- row). Swipes are then decided set-wise in rounds: round k holds each card's
-- k-th swipe, so a card swiped twice sees its first swipe (balance,
-- same-second rule) as it would alone. The swipes are sorted into rounds once
-- and each round reads only its own slice, so the work grows linearly with
-- the batch whatever the repetition of cards. ts NULL means now() for every
-- swipe.
CREATE OR REPLACE FUNCTION validate_entries(card_ids bigint[], station_ids integer[],
                                            ts timestamptz[] DEFAULT NULL)
RETURNS TABLE (ordinal integer, accepted boolean, message text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp
-- Generic plans: a round is one statement, and planning it afresh for every
-- round (PostgreSQL's choice for its cost estimates) cost ten times the round.
SET plan_cache_mode = force_generic_plan
-- As validate_entry's: never a plan that scans a partition analyzed empty.
SET enable_seqscan = off AS $$
DECLARE
    v_missing integer;
    v_size integer := cardinality(card_ids);
    -- The swipes sorted by (round, card): round k is the slice
    -- v_ends[k - 1] + 1 .. v_ends[k].
    s_ordinal integer[];
    s_card bigint[];
    s_station integer[];
    s_ts timestamptz[];
    v_ends integer[];
    v_first integer := 1;
    -- One round's results, then every swipe's, by ordinal.
    r_ordinal integer[];
    r_accepted boolean[];
    r_message text[];
    v_accepted boolean[];
    v_messages text[];
BEGIN
    IF card_ids IS NULL THEN PERFORM raise_null_argument('validate_entries', 'card_ids'); END IF;
    IF station_ids IS NULL THEN PERFORM raise_null_argument('validate_entries', 'station_ids'); END IF;
    PERFORM checked_ts_array('validate_entries', ts);
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM raise_read_committed_required('validate_entries');
    END IF;
    IF cardinality(station_ids) <> cardinality(card_ids)
       OR (ts IS NOT NULL AND cardinality(ts) <> cardinality(card_ids)) THEN
        RAISE EXCEPTION 'validate_entries: card_ids, station_ids and ts must have the same length, got %, % and %',
            cardinality(card_ids), cardinality(station_ids), cardinality(ts)
            USING ERRCODE = '22023';
    END IF;
    SELECT min(u.n) INTO v_missing
    FROM unnest(card_ids, station_ids) WITH ORDINALITY u(card_id, station_id, n)
    WHERE u.card_id IS NULL OR u.station_id IS NULL;
    IF v_missing IS NOT NULL THEN
        PERFORM raise_null_argument('validate_entries',
            format('card_ids[%s] or station_ids[%s]', v_missing, v_missing));
    END IF;
    SELECT min(u.station_id) INTO v_missing
    FROM unnest(station_ids) u(station_id)
    WHERE NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = u.station_id);
    IF v_missing IS NOT NULL THEN PERFORM raise_unknown_station(v_missing); END IF;
    IF v_size = 0 THEN
        RETURN;
    END IF;

    PERFORM FROM cards c WHERE c.card_id = ANY (card_ids) ORDER BY c.card_id FOR NO KEY UPDATE;

    WITH numbered AS (
        SELECT x.n::integer AS n, x.card_id, x.station_id, coalesce(x.ts, now()) AS ts,
               row_number() OVER (PARTITION BY x.card_id ORDER BY x.n) AS k
        FROM unnest(card_ids, station_ids, ts) WITH ORDINALITY x(card_id, station_id, ts, n)
    )
    SELECT array_agg(u.n ORDER BY u.k, u.card_id, u.n), array_agg(u.card_id ORDER BY u.k, u.card_id, u.n),
           array_agg(u.station_id ORDER BY u.k, u.card_id, u.n), array_agg(u.ts ORDER BY u.k, u.card_id, u.n),
           (SELECT array_agg(e.last_index ORDER BY e.k)
            FROM (SELECT r.k, (sum(count(*)) OVER (ORDER BY r.k))::integer AS last_index
                  FROM numbered r GROUP BY r.k) e)
    INTO s_ordinal, s_card, s_station, s_ts, v_ends
    FROM numbered u;
    v_accepted := array_fill(NULL::boolean, ARRAY[v_size]);
    v_messages := array_fill(NULL::text, ARRAY[v_size]);

    FOR v_round IN 1..cardinality(v_ends) LOOP
        WITH swipes AS (
            SELECT s_ordinal[i] AS ordinal, s_card[i] AS card_id, s_station[i] AS station_id,
                   s_ts[i] AS ts
            FROM generate_series(v_first, v_ends[v_round]) i
        ), decided AS MATERIALIZED (
            SELECT w.*, st.fare, st.name AS station_name, c.name, c.phone, c.email, c.notify,
                   c.balance, o.accept, o.amount, o.message, o.alert
            FROM swipes w
            JOIN stations st ON st.station_id = w.station_id
            LEFT JOIN cards c ON c.card_id = w.card_id
            CROSS JOIN settings t
            CROSS JOIN LATERAL fraud_rule(w.card_id, w.ts, t.fraud_window, t.fraud_entry_limit,
                                          t.fraud_station_limit) f
            CROSS JOIN LATERAL entry_outcome(c.enabled, c.card_type, c.balance, c.expires,
                                             st.fare, f.rule <> 0, w.ts) o
        ), charged AS (
            UPDATE cards SET balance = d.balance - d.amount
            FROM decided d WHERE d.amount > 0 AND cards.card_id = d.card_id
        ), frauds AS (
            INSERT INTO fraud (trans_id, card_id, ts, station_id, activity_code, amount)
            SELECT fraud_trans_id(d.card_id, d.ts), d.card_id, d.ts, d.station_id, 1, d.fare
            FROM decided d WHERE d.accept = -1 ORDER BY d.card_id
        ), alerts AS (
            INSERT INTO card_alert_export (card_id, ts, station_name, name, phone, email, notify, alert_message)
            SELECT d.card_id, d.ts, d.station_name, d.name, d.phone, d.email, d.notify, d.alert
            FROM decided d WHERE d.alert IS NOT NULL AND d.notify <> 0 ORDER BY d.card_id
        ), recorded AS (
            INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
            SELECT d.card_id, d.ts, d.station_id, 1, d.amount, d.accept
            FROM decided d ORDER BY d.card_id
        )
        SELECT array_agg(d.ordinal), array_agg(d.accept = 1), array_agg(d.message)
        INTO r_ordinal, r_accepted, r_message
        FROM decided d;
        FOR j IN 1..cardinality(r_ordinal) LOOP
            v_accepted[r_ordinal[j]] := r_accepted[j];
            v_messages[r_ordinal[j]] := r_message[j];
        END LOOP;
        v_first := v_ends[v_round] + 1;
    END LOOP;

    RETURN QUERY SELECT r.ordinal::integer, r.accepted, r.message
                 FROM unnest(v_accepted, v_messages) WITH ORDINALITY r(accepted, message, ordinal)
                 ORDER BY r.ordinal;
END
$$;
COMMENT ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) IS 'Decides a batch of entry swipes set-wise: (ordinal, accepted, message) per swipe, in input order, each exactly what validate_entry gives it alone; ts NULL or a NULL element means now(); time linear in the batch size. 22023 arrays of different lengths, MT004 NULL element, MT001 unknown station, MT013 not in a READ COMMITTED transaction';
REVOKE ALL ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION validate_entries(bigint[], integer[], timestamptz[]) TO metro_app;

-- Records an exit swipe. When the card's latest accepted entry or exit before
-- it is an entry (refused entries let nobody in), the trip is closed and a
-- trips row written. Exits of a known card are never refused: riders must be
-- able to leave.
CREATE OR REPLACE FUNCTION process_exit(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS decision LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp
-- As validate_entry's: generic plans that never scan a partition analyzed empty.
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    p_card ALIAS FOR $1;
    p_station ALIAS FOR $2;
    p_ts ALIAS FOR $3;
    v_last record;
    v_accept smallint := 1;
    v_message text;
BEGIN
    IF p_card IS NULL THEN PERFORM raise_null_argument('process_exit', 'card_id'); END IF;
    IF p_station IS NULL THEN PERFORM raise_null_argument('process_exit', 'station_id'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('process_exit', 'ts'); END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM raise_read_committed_required('process_exit');
    END IF;
    IF NOT fresh_default_ts(p_ts) THEN PERFORM checked_ts('process_exit', 'ts', p_ts); END IF;
    IF NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = p_station) THEN
        PERFORM raise_unknown_station(p_station);
    END IF;

    PERFORM FROM cards WHERE cards.card_id = p_card FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        v_accept := 0;
        v_message := 'Card Invalid';
    ELSE
        SELECT e.activity_code, e.accept, e.station_id, e.ts INTO v_last
        FROM card_events e
        WHERE e.card_id = p_card AND e.ts <= p_ts
          AND (e.activity_code = -1 OR (e.activity_code = 1 AND e.accept = 1))
        ORDER BY e.ts DESC
        LIMIT 1;
        -- One trip per accepted entry whatever order exits arrive in: an
        -- exit recorded after that entry (a later one that came first) closed it.
        IF FOUND AND v_last.activity_code = 1 AND NOT EXISTS (
               SELECT FROM card_events x
               WHERE x.card_id = p_card AND x.ts >= v_last.ts AND x.activity_code = -1
                 AND x.ts < coalesce((SELECT min(e.ts) FROM card_events e
                                      WHERE e.card_id = p_card AND e.ts > v_last.ts
                                        AND e.activity_code = 1 AND e.accept = 1),
                                     'infinity')) THEN
            INSERT INTO trips (card_id, entry_station, entry_ts, exit_station, exit_ts)
            VALUES (p_card, v_last.station_id, v_last.ts, p_station, p_ts);
            v_message := 'Exit recorded';
        ELSE
            v_message := 'Exit recorded without an open entry';
        END IF;
    END IF;

    INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
    VALUES (p_card, p_ts, p_station, -1, 0, v_accept);
    RETURN ROW(v_accept = 1, v_message)::decision;
END
$$;
COMMENT ON FUNCTION process_exit(bigint, integer, timestamptz) IS 'Records an exit swipe: (true, Exit recorded) and a trips row when it closes an accepted entry, (true, Exit recorded without an open entry), (false, Card Invalid). MT004 NULL argument, MT001 unknown station, MT013 not in a READ COMMITTED transaction';
REVOKE ALL ON FUNCTION process_exit(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION process_exit(bigint, integer, timestamptz) TO metro_app;

-- grants
-- As procedures/privileges.sql: no function of schema metro is PUBLIC's.
REVOKE ALL ON ALL ROUTINES IN SCHEMA metro FROM PUBLIC;
