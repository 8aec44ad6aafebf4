-- Revision 0018 (frozen): payment ids without padding; hints that say what works.
-- - A payment's transaction_id or account_id could start or end with
--   whitespace or an invisible character. ' acct-hi' is another account than
--   'acct-hi': a padded account_id escaped the account's risk tag, and a
--   padded risk tag (spaces around a CSV field) tagged an account no payment
--   names. Both are refused now: MT007 and MT014 for a payment, a CHECK on
--   risk_tags. An upgrade over such tags stops and names them.
-- - raise_null_argument's hint said only ts has a default; raise_unknown_station's
--   named a loader command that refuses this project's own stations file (it
--   has a header).
SET search_path = metro, pg_catalog;

-- data
UPDATE error_codes SET meaning = 'A payment transaction_id that is empty, over 200 characters, or starts or ends with whitespace, a control or a zero-width character'
WHERE sqlstate = 'MT007';
UPDATE error_codes SET meaning = 'A payment account_id that is empty, over 200 characters, or starts or ends with whitespace, a control or a zero-width character'
WHERE sqlstate = 'MT014';

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
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT $1 = '' OR length($1) > 200
        OR (left($1, 1) || right($1, 1)) ~ '[\s\x01-\x1f\x7f-\x9f\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f\u2000-\u200f\u2028-\u202f\u205f-\u206f\u2800\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]'
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
COMMENT ON FUNCTION payment_refusal(text, text, numeric) IS 'Why a payment''s arguments are refused: (MT004, argument) NULL, (MT007, transaction_id) or (MT014, account_id) empty, over 200 characters, or starting or ending with whitespace, a control or a zero-width character, (MT003, amount) not positive, over two decimals or too large; (NULL, NULL) when fine. Inlined into evaluate_transaction and evaluate_transactions';

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
COMMENT ON FUNCTION evaluate_transaction(text, text, numeric, timestamptz) IS 'Decides a payment with the risk rules: (blocked, rule, message), recorded once per transaction_id in risk_decisions and the transaction_decisions stream; a transaction_id seen before with the same account and amount gets its recorded decision and writes nothing. MT004 NULL argument, MT007 invalid transaction_id, MT014 invalid account_id, MT003 invalid amount, MT009/MT010 ts refused, MT011 transaction_id reused for another account or amount, MT008 no rule covers it';
REVOKE ALL ON FUNCTION evaluate_transaction(text, text, numeric, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evaluate_transaction(text, text, numeric, timestamptz)
    TO metro_app, metro_bridge;

-- constraints
-- A risk tag no payment can name is refused from now on; one already there
-- stops the upgrade, named, rather than being changed or dropped unseen.
DO $$
DECLARE
    v_count bigint := 0;
    v_shown text := '';
    v_id text;
BEGIN
    FOR v_id IN SELECT account_id FROM risk_tags WHERE invalid_payment_id(account_id)
                ORDER BY account_id LOOP
        v_count := v_count + 1;
        CONTINUE WHEN v_count > 10;
        -- Quoted, its first 40 characters, anything but printable ASCII as \uXXXX
        -- (\UXXXXXXXX above U+FFFF): the padding is what the operator has to see.
        v_shown := v_shown || CASE WHEN v_count > 1 THEN ', ' ELSE '' END || '''' || (
            SELECT coalesce(string_agg(CASE WHEN c ~ '^[\x20-\x7e]$' THEN c
                                            WHEN ascii(c) > 65535
                                            THEN '\U' || lpad(to_hex(ascii(c)), 8, '0')
                                            ELSE '\u' || lpad(to_hex(ascii(c)), 4, '0') END,
                                       '' ORDER BY n), '')
            FROM regexp_split_to_table(left(v_id, 40), '') WITH ORDINALITY AS t(c, n)
            WHERE c <> '') || '''';
    END LOOP;
    IF v_count > 0 THEN
        RAISE EXCEPTION 'risk_tags holds % account_id(s) no payment can carry (empty, over 200 characters, or starting or ending with whitespace or an invisible character): %', v_count, v_shown
            USING ERRCODE = 'MT014',
                  HINT = 'Correct them (UPDATE metro.risk_tags SET account_id = ...) or delete them, then run metro install again.';
    END IF;
END
$$;
-- Adding the CHECK locks risk_tags, which every payment reads: a client
-- holding a payment's transaction open would keep the upgrade waiting, and
-- every payment behind it. It waits 3 s at most, then stops and says why.
DO $$
DECLARE
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    PERFORM set_config('lock_timeout', '3s', true);
    ALTER TABLE risk_tags ADD CONSTRAINT risk_tags_account_id_valid
        CHECK (NOT invalid_payment_id(account_id));
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
EXCEPTION WHEN lock_not_available THEN
    RAISE EXCEPTION 'risk_tags stayed locked for 3 s by another transaction (a payment client holding its transaction open?), so the upgrade stopped rather than hold every payment back'
        USING ERRCODE = '55P03',
              HINT = 'SELECT pid, xact_start, query FROM pg_stat_activity WHERE state LIKE ''idle in transaction%'' lists transactions held open; end it and run metro install again.';
END
$$;

-- grants
-- As procedures/privileges.sql: no function of schema metro is PUBLIC's.
REVOKE ALL ON ALL ROUTINES IN SCHEMA metro FROM PUBLIC;
