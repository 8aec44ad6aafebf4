-- Error codes: every SQLSTATE the metro functions raise on bad input, with
-- its meaning and whether it condemns only the row (or message) that caused
-- it. The functions raise the MT codes through the helpers in
-- procedures/support.sql; clients classify errors by reading this table.
SET search_path = metro, pg_catalog;

-- tables
CREATE TABLE error_codes (
    sqlstate text PRIMARY KEY CHECK (sqlstate ~ '^[0-9A-Z]{5}$'),
    name text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    meaning text NOT NULL CHECK (meaning <> ''),
    row_level boolean NOT NULL
);
COMMENT ON TABLE error_codes IS 'SQLSTATEs the metro functions raise on bad input: what each means and whether it rejects only the offending row or message';
COMMENT ON COLUMN error_codes.sqlstate IS 'Five-character SQLSTATE; MT... are metro''s own, the others PostgreSQL''s';
COMMENT ON COLUMN error_codes.name IS 'Short name, e.g. for an exception class';
COMMENT ON COLUMN error_codes.meaning IS 'When it is raised';
COMMENT ON COLUMN error_codes.row_level IS 'true: the input row or message is bad, reject it (dead-letter it) and go on; false: the call or the configuration is wrong and retrying other rows will not help';
INSERT INTO error_codes (sqlstate, name, meaning, row_level) VALUES
    ('MT001', 'unknown_station', 'Unknown station: no row of stations has the station_id', true),
    ('MT002', 'unknown_train', 'Unknown train: no row of trains has the train_id', true),
    ('MT003', 'invalid_amount', 'Recharge amount not a positive number of cents; payment amount not positive, with more than two decimals or too large', true),
    ('MT004', 'null_argument', 'An argument of a function is NULL (only ts has a default)', true),
    ('MT005', 'invalid_code', 'A coded value outside its set (train activity_type, stream name)', true),
    ('MT006', 'refused_change', 'A refused change: UPDATE or DELETE of card_events, removing the settings row', false),
    ('MT007', 'invalid_transaction_id', 'A payment transaction_id that is empty, over 200 characters, or starts or ends with whitespace, a control or a zero-width character', true),
    ('MT008', 'no_risk_rule', 'No row of risk_rules covers the payment: the rules lack a catch-all, fix them before retrying', false),
    ('MT009', 'invalid_timestamp', 'A ts that is infinite or outside [2000-01-01, 2200-01-01) UTC, from any caller', true),
    ('MT010', 'timestamp_outside_clock_skew', 'A ts further than settings.max_clock_skew from now() passed by a caller that is not a member of metro_replay', true),
    ('MT011', 'transaction_id_reused', 'A payment transaction_id already decided for another account or amount', true),
    ('MT012', 'bridge_lease_not_held', 'A bridge function that moves the outbound cursor called by a session that does not hold the bridge lease (another bridge took it over)', false),
    ('MT013', 'read_committed_required', 'A deciding function (validate_entry, validate_entries, process_exit, recharge_card, evaluate_transaction, evaluate_transactions) called in a REPEATABLE READ or SERIALIZABLE transaction, whose older snapshot would hide a concurrent swipe or a changed risk tag from its rules', false),
    ('MT014', 'invalid_account_id', 'A payment account_id that is empty, over 200 characters, or starts or ends with whitespace, a control or a zero-width character', true),
    ('MT015', 'train_event_conflict', 'A train arrival or departure at a ts the train already has recorded at another station', true),
    ('22023', 'invalid_parameter_value', 'Arrays of a batch function (validate_entries, evaluate_transactions) of different lengths', true),
    ('22P02', 'invalid_text_representation', 'A value that does not parse as its type (a number, a boolean)', true),
    ('22003', 'numeric_value_out_of_range', 'A number too large for its column or argument', true),
    ('22007', 'invalid_datetime_format', 'A timestamp that does not parse', true),
    ('22008', 'datetime_field_overflow', 'A timestamp field out of range', true),
    ('23502', 'not_null_violation', 'A NULL in a column that requires a value', true),
    ('23514', 'check_violation', 'A value outside its domain or a table CHECK (card type, notify, activity, negative amount, negative id)', true);

-- grants
GRANT SELECT ON error_codes TO metro_app, metro_reader, metro_bridge;
