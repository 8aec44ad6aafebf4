-- Revision 0017 (frozen): maintenance keeps what the rollup has not read,
-- runs one call at a time, and deletes row by row in bounded batches.
-- run_maintenance() dropped a day of card_events, or deleted old rows of its
-- default partition, whether or not the rollup had counted them: a worker
-- stopped or held back by a long transaction lost those swipes from the
-- totals and the history for good. rollup_unread() gives the rows not read
-- yet, and maintenance keeps them (a day so held is reported not_rolled_up).
-- Two callers of create_partitions() at once (two installs) could both try
-- to create a day: they now queue on the settings row. And the default
-- partitions' rows, the dead letters, the train events and the departures
-- past retention went in one DELETE each, whatever their number (only the
-- payment decisions went 100,000 a call): a month replayed into a default
-- partition made a DELETE of millions of rows that held back the commit
-- horizon, and the bridge and the rollup with it. Every row-by-row delete now
-- goes through delete_expired(), within a budget of 100,000 rows a call
-- shared by all tables, and says 'more' when the budget ran out; for pg_cron,
-- run_maintenance_until_done() calls again while more is due.
SET search_path = metro, pg_catalog;

-- functions
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
-- not exist, for every partitioned table, one caller at a time. A day that already has rows in the
-- table's default partition keeps them there (reported as kept_in_default):
-- those rows leave by their retention.
CREATE OR REPLACE FUNCTION create_partitions(from_day date, to_day date)
RETURNS TABLE (action text, table_name text, partition_name text, rows bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp SET TimeZone = 'UTC' AS $$
DECLARE
    t record;
    d date;
    found_rows boolean;
BEGIN
    IF from_day IS NULL THEN PERFORM raise_null_argument('create_partitions', 'from_day'); END IF;
    IF to_day IS NULL THEN PERFORM raise_null_argument('create_partitions', 'to_day'); END IF;
    IF to_day < from_day OR to_day - from_day > 3660
       OR from_day < date '2000-01-01' OR to_day >= date '2200-01-01' THEN
        RAISE EXCEPTION 'create_partitions: days % to % are not a range of at most 10 years within 2000-01-01 and 2200-01-01',
            from_day, to_day
            USING ERRCODE = '22023', HINT = 'Pass the first and the last UTC day to create, e.g. create_partitions(''2026-01-01'', ''2026-01-31'').';
    END IF;
    -- One caller at a time (two installs, a worker and pg_cron): the second
    -- waits, then finds the partitions made. The settings row, because only
    -- the schema's owner may lock it (an advisory lock, any role could hold).
    PERFORM FROM settings FOR NO KEY UPDATE;
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
COMMENT ON FUNCTION create_partitions(date, date) IS 'Creates the missing daily partitions of from_day through to_day (UTC) for card_events, card_history_second and station_second_slots: (action created or kept_in_default, table_name, partition_name, rows); for a load or replay of past dates. MT004 NULL argument, 22023 not a range of at most 10 years in [2000-01-01, 2200-01-01)';
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
-- that a stopped worker loses no swipe from the totals). Then deletes, row by row, what is past retention elsewhere: the
-- default partitions' rows, the bridge's dead letters
-- (settings.dead_letter_retention), the train events and departures
-- (settings.history_retention) and the payment decisions
-- (settings.decision_retention). Those deletes share a budget of
-- delete_budget rows a call: a DELETE holds back the commit horizon (the
-- bridge and the rollup wait) while it runs, and a replay of past dates or a
-- busy payment network leaves millions of rows due at once; 'more' says
-- another call is due. Rows the rollup has not read stay. One call at a
-- time (create_partitions). Records what it did in worker_state.
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

-- Decides payments i = 1..n (transaction_ids[i], account_ids[i], amounts[i],
-- ts[i]) and returns one row per input position, in input order: what
-- evaluate_transaction would return for it, called one by one. A
-- transaction_id decided before gets its recorded decision and writes nothing;
-- a transaction_id repeated within the batch is decided by its first
-- occurrence and the later ones get that decision. ts NULL, or a NULL element,
-- means now(). Arrays of different lengths raise 22023. When any payment would
-- be refused (MT003, MT004, MT007, MT008, MT009, MT010, MT011), the batch is decided by
-- evaluate_transaction one payment at a time, so the caller gets exactly the
-- error of the first refused payment, and the whole call writes nothing.
CREATE OR REPLACE FUNCTION evaluate_transactions(transaction_ids text[], account_ids text[],
                                                 amounts numeric[], ts timestamptz[] DEFAULT NULL)
RETURNS TABLE (ordinal integer, blocked boolean, rule text, message text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    v_refused boolean;
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
    SELECT EXISTS (SELECT FROM refused) INTO v_refused;

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
    -- calls committed meanwhile (the ON CONFLICT DO NOTHING above). Such a call
    -- may have decided one of these transaction_ids for another account or
    -- amount: the first such payment is refused (MT011) as evaluate_transaction
    -- refuses it, and nothing is written, rather than answered with another
    -- payment's decision.
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
    RETURN QUERY
        SELECT u.n::integer, d.blocked, d.rule, d.message
        FROM unnest(transaction_ids) WITH ORDINALITY u(transaction_id, n)
        JOIN risk_decisions d ON d.transaction_id = u.transaction_id
        ORDER BY u.n;
END
$$;
COMMENT ON FUNCTION evaluate_transactions(text[], text[], numeric[], timestamptz[]) IS 'Decides a batch of payments set-wise: (ordinal, blocked, rule, message) per input position, exactly what evaluate_transaction called in input order gives; ts NULL or a NULL element means now(). 22023 arrays of different lengths; a refused payment raises the error a one-by-one caller gets first, and nothing is written';
