-- Payment risk control: the rule match shared by payments and recharges,
-- evaluate_transaction, and the decisions stream's wake-up trigger.
--
-- Error codes added here (also in README "Errors"):
--   MT007 invalid transaction_id (empty, or longer than 200 characters)
--   MT008 no risk rule covers the transaction (risk_rules lacks a catch-all)
SET search_path = metro, pg_catalog;

-- functions

-- The first rule, in rule_order, whose amount range holds amount (currency
-- units) and whose minimum level the account's tag reaches; an account
-- without a tag is level 1. Raises MT008 when no rule matches. Private.
CREATE OR REPLACE FUNCTION match_risk_rule(account_id bigint, amount numeric,
    OUT risk_level smallint, OUT blocked boolean, OUT rule text, OUT message text)
LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    p_account ALIAS FOR $1;
    p_amount ALIAS FOR $2;
BEGIN
    risk_level := coalesce((SELECT t.risk_level FROM risk_tags t WHERE t.account_id = p_account), 1);
    SELECT r.action = 'block', r.rule, r.reason INTO blocked, rule, message
    FROM risk_rules r
    WHERE r.amount_range @> p_amount AND r.min_risk_level <= match_risk_rule.risk_level
    ORDER BY r.rule_order
    LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No risk rule covers amount % for account % (risk level %)',
            p_amount, p_account, match_risk_rule.risk_level
            USING ERRCODE = 'MT008',
                  HINT = 'Keep a last rule with amount_range ''(,)'' and min_risk_level 1 in metro.risk_rules.';
    END IF;
END
$$;

-- Decides a payment with the risk rules and records the decision once:
-- a transaction_id seen before gets its recorded decision back and nothing
-- is written. A new decision is also written to the transaction_decisions
-- stream. Bad arguments raise MT003/MT004/MT007 and write nothing.
CREATE OR REPLACE FUNCTION evaluate_transaction(transaction_id text, account_id bigint, amount numeric,
                                                ts timestamptz DEFAULT now())
RETURNS risk_verdict LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
DECLARE
    p_transaction ALIAS FOR $1;
    p_account ALIAS FOR $2;
    p_amount ALIAS FOR $3;
    p_ts ALIAS FOR $4;
    v risk_verdict;
    m record;
BEGIN
    IF p_transaction IS NULL THEN PERFORM raise_null_argument('evaluate_transaction', 'transaction_id'); END IF;
    IF p_account IS NULL THEN PERFORM raise_null_argument('evaluate_transaction', 'account_id'); END IF;
    IF p_amount IS NULL THEN PERFORM raise_null_argument('evaluate_transaction', 'amount'); END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('evaluate_transaction', 'ts'); END IF;
    IF btrim(p_transaction) = '' OR length(p_transaction) > 200 THEN
        RAISE EXCEPTION 'Invalid transaction_id: %', quote_literal(left(p_transaction, 40))
            USING ERRCODE = 'MT007',
                  HINT = 'A transaction_id is 1 to 200 characters, not only spaces.';
    END IF;
    IF p_amount <= 0 OR p_amount <> round(p_amount, 2) OR p_amount >= 1e12 THEN
        RAISE EXCEPTION 'Transaction amount must be positive, below 1,000,000,000,000, with at most two decimals: %', p_amount
            USING ERRCODE = 'MT003', HINT = 'Amounts are currency units with cents: 5000.01.';
    END IF;

    SELECT d.blocked, d.rule, d.message INTO v
    FROM risk_decisions d WHERE d.transaction_id = p_transaction;
    IF FOUND THEN
        RETURN v;
    END IF;

    SELECT * INTO m FROM match_risk_rule(p_account, p_amount);
    INSERT INTO risk_decisions (transaction_id, account_id, amount, ts, risk_level, blocked, rule, message)
    VALUES (p_transaction, p_account, p_amount, p_ts, m.risk_level, m.blocked, m.rule, m.message)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        -- The same transaction_id was decided by a call that committed meanwhile.
        SELECT d.blocked, d.rule, d.message INTO v
        FROM risk_decisions d WHERE d.transaction_id = p_transaction;
        RETURN v;
    END IF;
    INSERT INTO transaction_decisions (transaction_id, account_id, amount, ts, risk_level, blocked, rule, message)
    VALUES (p_transaction, p_account, p_amount, p_ts, m.risk_level, m.blocked, m.rule, m.message);
    RETURN ROW(m.blocked, m.rule, m.message)::risk_verdict;
END
$$;
REVOKE ALL ON FUNCTION evaluate_transaction(text, bigint, numeric, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evaluate_transaction(text, bigint, numeric, timestamptz)
    TO metro_app, metro_bridge;

-- triggers
DROP TRIGGER IF EXISTS transaction_decisions_notify_bridge ON transaction_decisions;
CREATE TRIGGER transaction_decisions_notify_bridge AFTER INSERT ON transaction_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION notify_bridge();

-- grants
REVOKE ALL ON FUNCTION match_risk_rule(bigint, numeric) FROM PUBLIC;
