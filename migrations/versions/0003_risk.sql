-- ---- sql/08_risk.sql at 0117b3f
-- Payment risk control: risk tags per account, rules as ordered rows, every
-- decision recorded once per transaction_id and streamed to Kafka
-- (transaction_decisions) like the other streams.
SET search_path = metro, pg_catalog;

-- types
CREATE DOMAIN risk_level AS smallint CHECK (VALUE IN (1, 2, 3));
COMMENT ON DOMAIN risk_level IS 'Risk tag of an account: 1 low, 2 medium, 3 high';
CREATE DOMAIN risk_action AS text CHECK (VALUE IN ('block', 'pass'));
COMMENT ON DOMAIN risk_action IS 'What a matching risk rule decides: block or pass';
-- Exact currency units with cents; evaluate_transaction refuses anything else
-- before a row is written, so the typmod never rounds.
CREATE DOMAIN payment_amount AS numeric(14, 2) CHECK (VALUE > 0);
COMMENT ON DOMAIN payment_amount IS 'A payment amount in currency units (5000.01), exact, positive';

CREATE TYPE risk_verdict AS (blocked boolean, rule text, message text);
COMMENT ON TYPE risk_verdict IS 'Result of evaluate_transaction: blocked or not, the rule that decided, its reason';

-- tables
CREATE TABLE risk_tags (
    account_id bigint PRIMARY KEY,
    risk_level risk_level NOT NULL
);
COMMENT ON TABLE risk_tags IS 'Risk tag per account; CSV account_id,risk_level; an account without a row counts as level 1';
COMMENT ON COLUMN risk_tags.account_id IS 'Payment account; for recharges the card number is the account';
COMMENT ON COLUMN risk_tags.risk_level IS '1 low, 2 medium, 3 high';

CREATE TABLE risk_rules (
    rule text PRIMARY KEY CHECK (rule <> ''),
    rule_order integer NOT NULL,
    amount_range numrange NOT NULL CHECK (NOT isempty(amount_range)),
    min_risk_level risk_level NOT NULL DEFAULT 1,
    action risk_action NOT NULL,
    reason text NOT NULL CHECK (reason <> ''),
    -- Deferrable, so one UPDATE (or transaction) can renumber rules.
    UNIQUE (rule_order) DEFERRABLE INITIALLY DEFERRED
);
COMMENT ON TABLE risk_rules IS 'Risk rules, tried in rule_order: the first whose amount range holds the amount and whose min_risk_level the account reaches decides; an UPDATE applies to the next decision';
COMMENT ON COLUMN risk_rules.rule IS 'Rule name, returned with every decision it makes';
COMMENT ON COLUMN risk_rules.rule_order IS 'Position in the evaluation order, lowest first';
COMMENT ON COLUMN risk_rules.amount_range IS 'Amounts in currency units the rule covers, with open or closed bounds: (5000,10000] is above 5,000 up to 10,000; (10000,) is above 10,000; (,) is any amount';
COMMENT ON COLUMN risk_rules.min_risk_level IS 'The rule applies to accounts at this risk level or higher';
COMMENT ON COLUMN risk_rules.action IS 'block or pass';
COMMENT ON COLUMN risk_rules.reason IS 'Message returned with the decision (and the refusal message of a blocked recharge)';
INSERT INTO risk_rules (rule, rule_order, amount_range, min_risk_level, action, reason) VALUES
    ('high_risk_above_10000', 10, '(10000,)', 3, 'block',
     'Blocked: amount above 10,000.00 from a high-risk account'),
    ('elevated_risk_above_5000', 20, '(5000,10000]', 2, 'block',
     'Blocked: amount above 5,000.00 up to 10,000.00 from a medium- or high-risk account'),
    ('default_pass', 30, '(,)', 1, 'pass', 'Approved');

CREATE TABLE risk_decisions (
    transaction_id text PRIMARY KEY,
    account_id bigint NOT NULL,
    amount payment_amount NOT NULL,
    ts timestamptz NOT NULL,
    risk_level risk_level NOT NULL,
    blocked boolean NOT NULL,
    rule text NOT NULL,
    message text NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE risk_decisions IS 'Every payment decision, once per transaction_id: a repeated transaction_id gets this decision back';
COMMENT ON COLUMN risk_decisions.transaction_id IS 'Transaction identifier given by the payment system';
COMMENT ON COLUMN risk_decisions.account_id IS 'Paying account';
COMMENT ON COLUMN risk_decisions.amount IS 'Amount in currency units';
COMMENT ON COLUMN risk_decisions.ts IS 'When the payment happened (the caller''s timestamp)';
COMMENT ON COLUMN risk_decisions.risk_level IS 'Risk level of the account when decided (1 when it had no tag)';
COMMENT ON COLUMN risk_decisions.blocked IS 'Whether the payment was blocked';
COMMENT ON COLUMN risk_decisions.rule IS 'Name of the rule that decided, as it was then';
COMMENT ON COLUMN risk_decisions.message IS 'Reason of that rule, as it was then';
COMMENT ON COLUMN risk_decisions.decided_at IS 'When the decision was made';

CREATE TABLE transaction_decisions (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    transaction_id text NOT NULL,
    account_id bigint NOT NULL,
    amount payment_amount NOT NULL,
    ts timestamptz NOT NULL,
    risk_level risk_level NOT NULL,
    blocked boolean NOT NULL,
    rule text NOT NULL,
    message text NOT NULL
);
COMMENT ON TABLE transaction_decisions IS 'Stream transaction_decisions: one row per decision made (not per repeated call); Kafka key transaction_id';
COMMENT ON COLUMN transaction_decisions.position IS 'Stream position, sent as a Kafka header so consumers can de-duplicate';
COMMENT ON COLUMN transaction_decisions.txid IS 'Writing transaction, for the reader''s commit horizon';
COMMENT ON COLUMN transaction_decisions.transaction_id IS 'Transaction identifier given by the payment system';
COMMENT ON COLUMN transaction_decisions.account_id IS 'Paying account';
COMMENT ON COLUMN transaction_decisions.amount IS 'Amount in currency units';
COMMENT ON COLUMN transaction_decisions.ts IS 'When the payment happened';
COMMENT ON COLUMN transaction_decisions.risk_level IS 'Risk level of the account when decided';
COMMENT ON COLUMN transaction_decisions.blocked IS 'Whether the payment was blocked';
COMMENT ON COLUMN transaction_decisions.rule IS 'Name of the rule that decided';
COMMENT ON COLUMN transaction_decisions.message IS 'Reason of that rule';
CREATE INDEX transaction_decisions_txid_position ON transaction_decisions (txid, position);

-- The bridge forwards the decisions like the other streams: one more cursor
-- row, and the stream table's key column recorded beside it so the bridge's
-- functions need no branch per stream.
ALTER TABLE bridge_cursors DROP CONSTRAINT bridge_cursors_stream_check;
ALTER TABLE bridge_cursors ADD CONSTRAINT bridge_cursors_stream_check
    CHECK (stream IN ('fraud', 'card_alert_export', 'trips', 'transaction_decisions'));
ALTER TABLE bridge_cursors ADD COLUMN key_column text;
COMMENT ON COLUMN bridge_cursors.key_column IS 'Column of the stream row sent as the Kafka key';
UPDATE bridge_cursors SET key_column = CASE stream WHEN 'fraud' THEN 'trans_id'
    WHEN 'card_alert_export' THEN 'card_id' WHEN 'trips' THEN 'trip_id' END;
INSERT INTO bridge_cursors (stream, topic, key_column)
VALUES ('transaction_decisions', 'transaction_decisions', 'transaction_id');
ALTER TABLE bridge_cursors ALTER COLUMN key_column SET NOT NULL;

-- grants
GRANT SELECT, DELETE ON transaction_decisions TO metro_bridge;
GRANT SELECT ON risk_rules TO metro_reader;

RESET search_path;

-- ---- procedures/08_risk.sql at 0117b3f
-- Payment risk control: the rule match shared by payments and recharges,
-- evaluate_transaction, and the bridge's stream functions made generic over
-- the streams registered in bridge_cursors (the decisions stream included).
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

-- The bridge's reads, for every stream in bridge_cursors: the next rows after
-- (after_txid, after_position) below the commit horizon, as in
-- procedures/07_bridge.sql. value is the stream row without position and
-- txid, columns in table order, timestamps in UTC; key is its key_column.
CREATE OR REPLACE FUNCTION bridge_batch(stream text, after_txid xid8, after_position bigint, max_rows integer)
RETURNS TABLE (row_txid xid8, row_position bigint, key text, value text)
LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp SET TimeZone = 'UTC' AS $$
DECLARE
    -- The same snapshot serves the horizon and the read below (STABLE).
    horizon xid8 := pg_snapshot_xmin(pg_current_snapshot());
    v_key text := bridge_stream_key(stream);
    v_columns text;
BEGIN
    SELECT string_agg(format('s.%I', a.attname), ', ' ORDER BY a.attnum) INTO v_columns
    FROM pg_attribute a
    WHERE a.attrelid = format('metro.%I', stream)::regclass AND a.attnum > 0
      AND NOT a.attisdropped AND a.attname NOT IN ('position', 'txid');
    RETURN QUERY EXECUTE format(
        'SELECT s.txid, s.position, s.%I::text, row_to_json(v)::text FROM %I s'
        ' CROSS JOIN LATERAL (SELECT %s) v'
        ' WHERE (s.txid, s.position) > ($1, $2) AND s.txid < $3'
        ' ORDER BY s.txid, s.position LIMIT $4', v_key, stream, v_columns)
        USING after_txid, after_position, horizon, max_rows;
END
$$;

-- Whether committed rows of a stream follow (after_txid, after_position),
-- readable yet or still held back by the commit horizon.
CREATE OR REPLACE FUNCTION bridge_has_rows(stream text, after_txid xid8, after_position bigint)
RETURNS boolean LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    found boolean;
BEGIN
    PERFORM bridge_stream_key(stream);
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE (txid, position) > ($1, $2))', stream)
        INTO found USING after_txid, after_position;
    RETURN found;
END
$$;

-- The Kafka key column of a registered stream; MT005 for any other name, so
-- only bridge_cursors' streams ever reach the dynamic SQL above.
CREATE OR REPLACE FUNCTION bridge_stream_key(stream text)
RETURNS text LANGUAGE plpgsql STABLE SET search_path = metro, pg_temp AS $$
DECLARE
    v_key text;
BEGIN
    SELECT c.key_column INTO v_key FROM bridge_cursors c WHERE c.stream = bridge_stream_key.stream;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Unknown stream: %', stream
            USING ERRCODE = 'MT005',
                  HINT = 'Streams are the rows of metro.bridge_cursors: fraud, card_alert_export, trips, transaction_decisions.';
    END IF;
    RETURN v_key;
END
$$;

-- triggers
DROP TRIGGER IF EXISTS transaction_decisions_notify_bridge ON transaction_decisions;
CREATE TRIGGER transaction_decisions_notify_bridge AFTER INSERT ON transaction_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION notify_bridge();

-- grants
REVOKE ALL ON FUNCTION match_risk_rule(bigint, numeric), bridge_stream_key(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bridge_stream_key(text) TO metro_bridge;

RESET search_path;

-- ---- procedures/05_recharge.sql at 0117b3f
-- Recharges at ticket machines.
SET search_path = metro, pg_catalog;

-- functions

-- Credits amount cents to an enabled card exactly once, records the purchase
-- and writes a card_alert_export row. Unknown and disabled cards are refused
-- (and recorded); a non-positive amount is an error and writes nothing.
-- The payment risk rules apply with the card as the account and the amount
-- in currency units: a blocked recharge credits nothing, is refused with the
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
        SELECT * INTO v_risk FROM match_risk_rule(p_card, p_amount::numeric / 100);
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
REVOKE ALL ON FUNCTION recharge_card(bigint, integer, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION recharge_card(bigint, integer, integer, timestamptz) TO metro_app;

RESET search_path;

