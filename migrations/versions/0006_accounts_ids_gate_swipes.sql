-- Revision 0006: payment accounts as text, ids from 0, fraud rule 1 counting
-- gate swipes only. Frozen: this file is never edited again.
SET search_path = metro, pg_catalog;

-- ---- payment accounts are text (the payment example sends "account123");
-- recharges use the card number's text. Existing integer ids keep their digits.
DROP FUNCTION evaluate_transactions(text[], bigint[], numeric[], timestamptz[]),
    evaluate_transaction(text, bigint, numeric, timestamptz), risk_rule(bigint, numeric),
    payment_refusal(text, bigint, numeric), raise_no_risk_rule(bigint, numeric, smallint);
ALTER TABLE risk_tags ALTER COLUMN account_id TYPE text USING account_id::text;
ALTER TABLE risk_decisions ALTER COLUMN account_id TYPE text USING account_id::text;
ALTER TABLE transaction_decisions ALTER COLUMN account_id TYPE text USING account_id::text;
COMMENT ON COLUMN risk_tags.account_id IS 'Payment account, as the payment system names it (account123); for recharges the card number as text (42)';

-- ---- ids from 0: VoltDB's stations.csv starts with 0,Airport and its
-- TrainProducer numbers trains from 0; negative ids stay refused.
ALTER TABLE stations DROP CONSTRAINT stations_station_id_check,
    ADD CONSTRAINT stations_station_id_check CHECK (station_id >= 0);
COMMENT ON COLUMN stations.station_id IS 'Station number, from 0 (VoltDB''s stations.csv starts with 0,Airport)';
ALTER TABLE trains DROP CONSTRAINT trains_train_id_check,
    ADD CONSTRAINT trains_train_id_check CHECK (train_id >= 0);
COMMENT ON COLUMN trains.train_id IS 'Train number, from 0 (VoltDB''s TrainProducer numbers trains from 0)';

-- ---- fraud rule 1 counts gate swipes only (entries and exits): a recharge in
-- the same second no longer makes the next entry fraudulent. The rule reads
-- card_events' (card_id, ts) index; card_history_second keeps counting every
-- event, as VoltDB's CARD_HISTORY_SECOND does.
COMMENT ON TABLE card_history_second IS 'Card events per card and second (VoltDB CARD_HISTORY_SECOND)';

-- ---- functions as the tree has them (fraud.sql, risk.sql, recharge.sql)
-- Fraud rules, checked against the card's earlier events before a swipe is
-- recorded. Thresholds come from settings, read on every call.
SET search_path = metro, pg_catalog;

-- functions

-- Which rule fires for an entry of card_id at ts: 0 none,
-- 1 the card already has a gate swipe (entry or exit, whatever its outcome)
--   in the same second; purchases (recharges) do not count,
-- 3 fraud_entry_limit or more entries in [ts - fraud_window, ts),
-- 2 fraud_station_limit or more distinct stations among those entries.
-- Both read card_events_card_ts: rule 1 the card's events of one second,
-- rules 2 and 3 at most fraud_entry_limit entries, so the cost is bounded by
-- the thresholds, not by the card's history. A plain SQL function returning
-- a set, so that PostgreSQL inlines it into the caller's query: validate_entry
-- runs it without a nested executor, validate_entries runs it set-wise (each
-- round sees the events of the rounds before). It names its tables in full
-- because an inlined function cannot carry a SET search_path clause.
CREATE OR REPLACE FUNCTION fraud_rule(card_id bigint, ts timestamptz)
RETURNS TABLE (rule smallint) LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM metro.card_events g
                             WHERE g.card_id = $1
                               AND g.ts >= date_trunc('second', $2)
                               AND g.ts < date_trunc('second', $2) + interval '1 second'
                               AND g.activity_code IN (1, -1))
                    THEN 1
                WHEN recent.entries >= s.fraud_entry_limit THEN 3
                WHEN recent.stations >= s.fraud_station_limit THEN 2
                ELSE 0 END::smallint
    FROM metro.settings s
    CROSS JOIN LATERAL (
        SELECT count(*) AS entries, count(DISTINCT e.station_id) AS stations
        FROM (SELECT e.station_id FROM metro.card_events e
              WHERE e.card_id = $1 AND e.activity_code = 1
                AND e.ts >= $2 - s.fraud_window AND e.ts < $2
              ORDER BY e.ts DESC
              LIMIT s.fraud_entry_limit) e
    ) recent
$$;
COMMENT ON FUNCTION fraud_rule(bigint, timestamptz) IS 'Which fraud rule an entry of the card at ts breaks: 0 none, 1 a gate swipe (entry or exit) in the same second, 2 too many stations, 3 too many entries in the window; inlined into its callers';

-- Would an entry of card_id at station_id at ts be refused as fraud?
-- Read-only: records nothing.
CREATE OR REPLACE FUNCTION is_fraud(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS boolean LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = metro, pg_temp AS $$
BEGIN
    IF $1 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'card_id'); END IF;
    IF $2 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'station_id'); END IF;
    IF $3 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'ts'); END IF;
    IF NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = $2) THEN
        PERFORM raise_unknown_station($2);
    END IF;
    RETURN (SELECT f.rule FROM fraud_rule($1, $3) f) <> 0;
END
$$;
COMMENT ON FUNCTION is_fraud(bigint, integer, timestamptz) IS 'Would an entry of card_id at station_id at ts be refused as fraud? Reads only. MT004 NULL argument, MT001 unknown station';
REVOKE ALL ON FUNCTION is_fraud(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION is_fraud(bigint, integer, timestamptz) TO metro_app;

RESET search_path;
SET search_path = metro, pg_catalog;

-- Payment risk control: which payments are refused, which rule decides a
-- payment (shared by payments and recharges), evaluate_transaction and its
-- set-wise form evaluate_transactions. Each rule is written once, as a plain
-- SQL function that PostgreSQL inlines into the single and the batch path.
SET search_path = metro, pg_catalog;

-- functions

-- Why evaluate_transaction refuses a payment's arguments, checked in this
-- order: (MT004, the NULL argument's name), (MT007, 'transaction_id') for an
-- empty, blank or too long transaction_id, (MT003, 'amount') for an amount
-- that is not positive, has more than two decimals or is 10^12 or more; one
-- row (NULL, NULL) when they are fine. ts is not checked here: the batch
-- reads a NULL ts as now(). Inlined, so it names nothing unqualified.
CREATE OR REPLACE FUNCTION payment_refusal(transaction_id text, account_id text, amount numeric)
RETURNS TABLE (sqlstate text, argument text) LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN $1 IS NULL OR $2 IS NULL OR $3 IS NULL THEN 'MT004'
                WHEN btrim($1) = '' OR length($1) > 200 THEN 'MT007'
                WHEN $3 <= 0 OR $3 <> round($3, 2) OR $3 >= 1e12 THEN 'MT003' END,
           CASE WHEN $1 IS NULL THEN 'transaction_id'
                WHEN $2 IS NULL THEN 'account_id'
                WHEN $3 IS NULL THEN 'amount'
                WHEN btrim($1) = '' OR length($1) > 200 THEN 'transaction_id'
                WHEN $3 <= 0 OR $3 <> round($3, 2) OR $3 >= 1e12 THEN 'amount' END
$$;
COMMENT ON FUNCTION payment_refusal(text, text, numeric) IS 'Why a payment''s arguments are refused: (MT004, argument) NULL, (MT007, transaction_id) empty or too long, (MT003, amount) not positive, over two decimals or too large; (NULL, NULL) when fine. Inlined into evaluate_transaction and evaluate_transactions';

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
BEGIN
    SELECT * INTO refusal FROM payment_refusal(p_transaction, p_account, p_amount);
    IF refusal.sqlstate = 'MT004' THEN
        PERFORM raise_null_argument('evaluate_transaction', refusal.argument);
    END IF;
    IF p_ts IS NULL THEN PERFORM raise_null_argument('evaluate_transaction', 'ts'); END IF;
    IF refusal.sqlstate = 'MT007' THEN
        RAISE EXCEPTION 'Invalid transaction_id: %', quote_literal(left(p_transaction, 40))
            USING ERRCODE = 'MT007',
                  HINT = 'A transaction_id is 1 to 200 characters, not only spaces.';
    ELSIF refusal.sqlstate = 'MT003' THEN
        RAISE EXCEPTION 'Transaction amount must be positive, below 1,000,000,000,000, with at most two decimals: %', p_amount
            USING ERRCODE = 'MT003', HINT = 'Amounts are currency units with cents: 5000.01.';
    END IF;

    SELECT d.blocked, d.rule, d.message INTO v
    FROM risk_decisions d WHERE d.transaction_id = p_transaction;
    IF FOUND THEN
        RETURN v;
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
        SELECT d.blocked, d.rule, d.message INTO v
        FROM risk_decisions d WHERE d.transaction_id = p_transaction;
        RETURN v;
    END IF;
    INSERT INTO transaction_decisions (transaction_id, account_id, amount, ts, risk_level, blocked, rule, message)
    VALUES (p_transaction, p_account, p_amount, p_ts, m.risk_level, m.blocked, m.rule, m.message);
    RETURN ROW(m.blocked, m.rule, m.message)::risk_verdict;
END
$$;
COMMENT ON FUNCTION evaluate_transaction(text, text, numeric, timestamptz) IS 'Decides a payment with the risk rules: (blocked, rule, message), recorded once per transaction_id in risk_decisions and the transaction_decisions stream; a transaction_id seen before gets its recorded decision and writes nothing. MT004 NULL argument, MT007 invalid transaction_id, MT003 invalid amount, MT008 no rule covers it';
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
-- be refused (MT003, MT004, MT007, MT008), the batch is decided by
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
    -- A new statement: it sees this call's decisions and those that concurrent
    -- calls committed meanwhile (the ON CONFLICT DO NOTHING above).
    RETURN QUERY
        SELECT u.n::integer, d.blocked, d.rule, d.message
        FROM unnest(transaction_ids) WITH ORDINALITY u(transaction_id, n)
        JOIN risk_decisions d ON d.transaction_id = u.transaction_id
        ORDER BY u.n;
END
$$;
COMMENT ON FUNCTION evaluate_transactions(text[], text[], numeric[], timestamptz[]) IS 'Decides a batch of payments set-wise: (ordinal, blocked, rule, message) per input position, exactly what evaluate_transaction called in input order gives; ts NULL or a NULL element means now(). 22023 arrays of different lengths; a refused payment raises the error a one-by-one caller gets first, and nothing is written';

-- grants
REVOKE ALL ON FUNCTION evaluate_transactions(text[], text[], numeric[], timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION evaluate_transactions(text[], text[], numeric[], timestamptz[])
    TO metro_app, metro_bridge;

RESET search_path;
SET search_path = metro, pg_catalog;

-- Recharges at ticket machines.
SET search_path = metro, pg_catalog;

-- functions

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
COMMENT ON FUNCTION recharge_card(bigint, integer, integer, timestamptz) IS 'Credits amount cents to an enabled card once: (true, Recharged: 20.00, Balance: 32.50) and a card_alert_export row; (false, Card Invalid), (false, Card Disabled), or refused with the reason of a risk rule that blocks it (recorded with accept -1 and a fraud row). MT004 NULL argument, MT003 amount not positive, MT001 unknown station, MT008 no risk rule covers it';
REVOKE ALL ON FUNCTION recharge_card(bigint, integer, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION recharge_card(bigint, integer, integer, timestamptz)
    TO metro_app, metro_bridge;

RESET search_path;
SET search_path = metro, pg_catalog;
