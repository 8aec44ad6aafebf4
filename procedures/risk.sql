-- Payment risk control: which payments are refused, which rule decides a
-- payment (shared by payments and recharges), evaluate_transaction and its
-- set-wise form evaluate_transactions. Each rule is written once, as a plain
-- SQL function that PostgreSQL inlines into the single and the batch path.
SET search_path = metro, pg_catalog;

-- functions

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

-- The rule deciding a payment of amount (currency units) from account_id:
-- the first, in rule_order, whose amount range holds the amount and whose
-- minimum level the account's tag reaches (no tag: level 1). One row; rule
-- NULL when no rule matches (the callers raise MT008). Inlined, so it names
-- its tables in full.
CREATE OR REPLACE FUNCTION risk_rule(account_id text, amount numeric)
RETURNS TABLE (risk_level smallint, blocked boolean, rule text, message text)
LANGUAGE sql STABLE AS $$
    SELECT m.risk_level, r.blocked, r.rule, r.message
    FROM (SELECT coalesce((SELECT t.risk_level FROM metro.risk_tags t WHERE t.account_id = $1),
                          1)::smallint AS risk_level) m
    LEFT JOIN LATERAL (SELECT k.action = 'block' AS blocked, k.rule, k.reason AS message
                       FROM metro.risk_rules k
                       WHERE k.amount_range @> $2 AND k.min_risk_level <= m.risk_level
                       ORDER BY k.rule_order
                       LIMIT 1) r ON true
$$;
COMMENT ON FUNCTION risk_rule(text, numeric) IS 'The risk rule deciding a payment: the account''s level (1 without a tag), blocked, rule and message of the first matching rule in rule_order (rule NULL when none matches); inlined into evaluate_transaction(s) and recharge_card';

-- Raises MT008: no rule of risk_rules covers the payment.
CREATE OR REPLACE FUNCTION raise_no_risk_rule(account_id text, amount numeric, risk_level smallint)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'No risk rule covers amount % for account % (risk level %)',
        amount, account_id, risk_level
        USING ERRCODE = 'MT008',
              HINT = 'Keep a last rule with amount_range ''(,)'' and min_risk_level 1 in metro.risk_rules.';
END
$$;
COMMENT ON FUNCTION raise_no_risk_rule(text, numeric, smallint) IS 'Raises MT008 naming the amount, the account and its risk level';

-- Raises MT011: transaction_id was decided before for another account or
-- amount. The message names what this call passed, not what was recorded
-- (another payment's details are not the caller's to learn).
CREATE OR REPLACE FUNCTION raise_transaction_id_reused(transaction_id text, account_id text, amount numeric)
RETURNS void LANGUAGE plpgsql SET search_path = metro, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'transaction_id % was already used for another payment: account % and amount % differ from the recorded ones',
        quote_literal(left(transaction_id, 40)), account_id, amount
        USING ERRCODE = 'MT011',
              HINT = 'A transaction_id names one payment: repeat it only with the same account_id and amount (to get the recorded decision back), and give a new payment a new transaction_id.';
END
$$;
COMMENT ON FUNCTION raise_transaction_id_reused(text, text, numeric) IS 'Raises MT011 naming the transaction_id and the account and amount passed';

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

-- grants
REVOKE ALL ON FUNCTION payment_refusal(text, text, numeric),
    risk_rule(text, numeric),
    raise_no_risk_rule(text, numeric, smallint), raise_transaction_id_reused(text, text, numeric)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION evaluate_transactions(text[], text[], numeric[], timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evaluate_transactions(text[], text[], numeric[], timestamptz[])
    TO metro_app, metro_bridge;
