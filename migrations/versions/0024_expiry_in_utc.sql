-- Revision 0024 (frozen): the expiry message in UTC.
-- - entry_outcome prints an unlimited card's expiry in UTC ("Card Expires:
--   2030-01-01 00:00:00+00"; VoltDB's timestamps are UTC) whatever the
--   caller's TimeZone: no session setting changes the message of a swipe.
-- Only a function changes: the upgrade takes no lock on a table.
SET search_path = metro, pg_catalog;

-- functions
-- The outcome of an entry swipe, the single place where the messages are
-- decided (validate_entry and validate_entries both use it): unknown card
-- (enabled is NULL), disabled card, fraud (no charge), unlimited card valid or
-- expired, pay-per-ride charged when balance > fare, otherwise refused with an
-- Insufficient Balance alert. accept: 1 accepted, 0 rejected, -1 fraud.
CREATE OR REPLACE FUNCTION entry_outcome(enabled boolean, card_type smallint, balance integer,
                                         expires timestamptz, fare integer, fraud boolean,
                                         ts timestamptz)
RETURNS entry_result
-- One row expression, so that PostgreSQL inlines it: validate_entry assigns
-- it as a PL/pgSQL expression (no query), validate_entries joins it per swipe.
LANGUAGE sql STABLE AS $$
    SELECT ROW(CASE WHEN enabled IS NULL OR NOT enabled THEN 0
                WHEN fraud THEN -1
                WHEN card_type = 1 THEN (expires > ts)::integer
                ELSE (balance > fare)::integer END::smallint,
           CASE WHEN enabled AND NOT fraud AND card_type = 0 AND balance > fare THEN fare
                ELSE 0 END,
           CASE WHEN enabled IS NULL THEN 'Card Invalid'
                WHEN NOT enabled THEN 'Card Disabled'
                WHEN fraud THEN 'Fraudulent transaction'
                -- In UTC whatever the caller's TimeZone (VoltDB's timestamps are UTC).
                WHEN card_type = 1 AND expires > ts
                    THEN 'Card Expires: '
                         || to_char(expires AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS"+00"')
                WHEN card_type = 1 THEN 'Card Expired'
                WHEN balance > fare THEN 'Remaining Balance: ' || cents_text(balance - fare)
                ELSE 'Card has insufficient balance: ' || cents_text(balance) END,
           CASE WHEN enabled AND NOT fraud AND card_type = 0 AND balance <= fare
                THEN 'Insufficient Balance' END)::metro.entry_result
$$;
COMMENT ON FUNCTION entry_outcome(boolean, smallint, integer, timestamptz, integer, boolean, timestamptz) IS 'The outcome of an entry swipe (accept, amount charged, message, alert): the one place the gate messages are decided, the expiry in UTC whatever the caller''s TimeZone; inlined into validate_entry and validate_entries';
REVOKE ALL ON FUNCTION entry_outcome(boolean, smallint, integer, timestamptz, integer, boolean, timestamptz) FROM PUBLIC;
