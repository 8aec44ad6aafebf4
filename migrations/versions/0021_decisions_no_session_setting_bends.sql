-- Revision 0021 (frozen): decisions no session setting can bend.
-- - recharge_card, evaluate_transaction and evaluate_transactions ran in the
--   caller's transaction whatever its isolation: under REPEATABLE READ, from a
--   snapshot taken before an operator raised a risk tag, a payment was
--   approved (and that answer kept for every retry) that the tag blocks. They
--   need READ COMMITTED now, as the gates do (MT013).
-- - settings.fraud_window, max_clock_skew and max_wait were added to times in
--   the caller's time zone: a day or month part ('1 day') is 23 or 25 hours
--   across a clock change, more in a zone a caller makes up, so the caller's
--   TimeZone moved the fraud window. They are kept in hours and seconds now
--   (a trigger; '1 day' becomes 24:00:00).
-- - invalid_payment_id's pattern was a plain string, read as an escape string
--   under a caller's standard_conforming_strings = off: every payment failed
--   (22021). It is an escape string now.
-- - schema_revision() tells the bridge and the worker the schema's revision:
--   they refuse to run against another than the one they call (an older
--   schema refused their calls, and the bridge set every inbound payment
--   aside as a dead letter).
SET search_path = metro, pg_catalog;

-- functions
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

COMMENT ON FUNCTION raise_read_committed_required(text) IS 'Raises MT013 naming the deciding function and the transaction''s isolation level';

-- Credits amount cents to an enabled card exactly once, records the purchase
-- and writes a card_alert_export row. Unknown and disabled cards are refused
-- (and recorded); a non-positive amount is an error and writes nothing.
-- The payment risk rules apply with the card number as the account (its
-- text, 42 -> '42') and the amount in currency units: a blocked recharge credits nothing, is refused with the
-- rule's reason, recorded as refused (accept -1) and written to fraud.
CREATE OR REPLACE FUNCTION recharge_card(card_id bigint, amount integer, station_id integer, ts timestamptz DEFAULT now())
RETURNS decision LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_card ALIAS FOR $1;
    p_amount ALIAS FOR $2;
    p_station ALIAS FOR $3;
    p_ts ALIAS FOR $4;
    v_station_name text;
    c cards%ROWTYPE;
    v_balance integer;
    v_accept smallint := 0;
    v_message text;
    v_risk record;
BEGIN
    IF p_card IS NULL THEN PERFORM raise_null_argument('recharge_card', 'card_id'); END IF;
    IF p_amount IS NULL THEN PERFORM raise_null_argument('recharge_card', 'amount'); END IF;
    IF p_station IS NULL THEN PERFORM raise_null_argument('recharge_card', 'station_id'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('recharge_card', 'ts'); END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM raise_read_committed_required('recharge_card');
    END IF;
    PERFORM checked_ts('recharge_card', 'ts', p_ts);
    IF p_amount <= 0 THEN
        RAISE EXCEPTION 'Recharge amount must be a positive number of cents: %', p_amount
            USING ERRCODE = 'MT003', HINT = 'Amounts are integer cents: 2000 is 20.00.';
    END IF;
    SELECT s.name INTO v_station_name FROM stations s WHERE s.station_id = p_station;
    IF NOT FOUND THEN PERFORM raise_unknown_station(p_station); END IF;

    SELECT * INTO c FROM cards WHERE cards.card_id = p_card FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        v_message := 'Card Invalid';
    ELSIF NOT c.enabled THEN
        v_message := 'Card Disabled';
    ELSE
        SELECT * INTO v_risk FROM risk_rule(p_card::text, p_amount::numeric / 100);
        IF v_risk.rule IS NULL THEN
            PERFORM raise_no_risk_rule(p_card::text, p_amount::numeric / 100, v_risk.risk_level);
        END IF;
        IF v_risk.blocked THEN
            v_accept := -1;
            v_message := v_risk.message;
            INSERT INTO fraud (trans_id, card_id, ts, station_id, activity_code, amount)
            VALUES (fraud_trans_id(p_card, p_ts), p_card, p_ts, p_station, 2, p_amount);
        ELSE
            UPDATE cards SET balance = c.balance + p_amount WHERE cards.card_id = p_card
            RETURNING balance INTO v_balance;
            v_accept := 1;
            v_message := 'Recharged: ' || cents_text(p_amount) || ', Balance: ' || cents_text(v_balance);
            INSERT INTO card_alert_export (card_id, ts, station_name, name, phone, email, notify, alert_message)
            VALUES (p_card, p_ts, v_station_name, c.name, c.phone, c.email, c.notify, v_message);
        END IF;
    END IF;

    INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
    VALUES (p_card, p_ts, p_station, 2, CASE WHEN v_accept = 1 THEN p_amount ELSE 0 END, v_accept);
    RETURN ROW(v_accept = 1, v_message)::decision;
END
$$;
COMMENT ON FUNCTION recharge_card(bigint, integer, integer, timestamptz) IS 'Credits amount cents to an enabled card once: (true, Recharged: 20.00, Balance: 32.50) and a card_alert_export row; (false, Card Invalid), (false, Card Disabled), or refused with the reason of a risk rule that blocks it (recorded with accept -1 and a fraud row). MT004 NULL argument, MT003 amount not positive, MT001 unknown station, MT008 no risk rule covers it, MT013 not in a READ COMMITTED transaction';

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
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM raise_read_committed_required('evaluate_transaction');
    END IF;
    IF refusal.sqlstate = 'MT007' THEN
        RAISE EXCEPTION 'Invalid transaction_id: %', quote_literal(left(p_transaction, 40))
            USING ERRCODE = 'MT007',
                  HINT = 'A transaction_id is 1 to 200 characters, neither starting nor ending with a space, a control or a zero-width character.';
    ELSIF refusal.sqlstate = 'MT014' THEN
        RAISE EXCEPTION 'Invalid account_id: %', quote_literal(left(p_account, 40))
            USING ERRCODE = 'MT014',
                  HINT = 'An account_id is 1 to 200 characters, neither starting nor ending with a space, a control or a zero-width character.';
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
COMMENT ON FUNCTION evaluate_transaction(text, text, numeric, timestamptz) IS 'Decides a payment with the risk rules: (blocked, rule, message), recorded once per transaction_id in risk_decisions and the transaction_decisions stream; a transaction_id seen before with the same account and amount gets its recorded decision and writes nothing. MT004 NULL argument, MT007 invalid transaction_id, MT014 invalid account_id, MT003 invalid amount, MT009/MT010 ts refused, MT011 transaction_id reused for another account or amount, MT008 no rule covers it, MT013 not in a READ COMMITTED transaction';

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
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM raise_read_committed_required('evaluate_transactions');
    END IF;
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
COMMENT ON FUNCTION evaluate_transactions(text[], text[], numeric[], timestamptz[]) IS 'Decides a batch of payments set-wise: (ordinal, blocked, rule, message) per input position, exactly what evaluate_transaction called in input order gives; ts NULL or a NULL element means now(). 22023 arrays of different lengths, MT013 not in a READ COMMITTED transaction; a refused payment raises the error a one-by-one caller gets first, and nothing is written';

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

-- data
UPDATE error_codes SET meaning = 'A deciding function (validate_entry, validate_entries, process_exit, recharge_card, evaluate_transaction, evaluate_transactions) called in a REPEATABLE READ or SERIALIZABLE transaction, whose older snapshot would hide a concurrent swipe or a changed risk tag from its rules'
WHERE sqlstate = 'MT013';

-- triggers
-- Takes settings' SHARE ROW EXCLUSIVE lock, which the swipes' reads of
-- settings do not wait for; then the row is rewritten through it.
CREATE TRIGGER settings_fixed_intervals BEFORE INSERT OR UPDATE ON settings
    FOR EACH ROW EXECUTE FUNCTION settings_fixed_intervals();
UPDATE settings SET fraud_window = fraud_window;

-- grants
-- As procedures/privileges.sql: no function of schema metro is PUBLIC's.
REVOKE ALL ON ALL ROUTINES IN SCHEMA metro FROM PUBLIC;
