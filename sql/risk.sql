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
    -- Only ids a payment can carry (evaluate_transaction refuses the others
    -- with MT014): a padded id would tag an account no payment names.
    account_id text PRIMARY KEY
        CONSTRAINT risk_tags_account_id_valid CHECK (NOT invalid_payment_id(account_id)),
    risk_level risk_level NOT NULL
);
COMMENT ON TABLE risk_tags IS 'Risk tag per account; CSV account_id,risk_level; an account without a row counts as level 1';
COMMENT ON COLUMN risk_tags.account_id IS 'Payment account, as the payment system names it (account123); for recharges the card number as text (42)';
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
    account_id text NOT NULL,
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

-- The dashboard counts the payments of the last minute through this index.
CREATE INDEX risk_decisions_decided_at ON risk_decisions (decided_at) INCLUDE (blocked);

CREATE TABLE transaction_decisions (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    transaction_id text NOT NULL,
    account_id text NOT NULL,
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

-- streams
SELECT register_stream('transaction_decisions', 'transaction_decisions', 'transaction_id', 'ts');

-- Lifetime counters of the decisions, added to by the rollup from the
-- transaction_decisions stream. /metrics exports them as counters: counted from
-- risk_decisions, which keeps every decision, each scrape read a row per
-- payment ever decided.
CREATE TABLE payment_totals (
    blocked boolean PRIMARY KEY,
    payments bigint NOT NULL CHECK (payments >= 0)
);
COMMENT ON TABLE payment_totals IS 'Payments decided, by decision, counted by the rollup from transaction_decisions; kept when the bridge prunes delivered stream rows, emptied with transaction_decisions by TRUNCATE';
COMMENT ON COLUMN payment_totals.blocked IS 'The decision: blocked (true) or approved (false)';
COMMENT ON COLUMN payment_totals.payments IS 'Decisions of that kind rolled up';

-- grants
GRANT SELECT ON risk_rules TO metro_reader;
