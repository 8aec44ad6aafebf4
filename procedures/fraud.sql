-- Fraud rules, checked against the card's earlier events before a swipe is
-- recorded. Thresholds come from settings, read on every call.
SET search_path = metro, pg_catalog;

-- functions

-- Which rule fires for an entry of card_id at ts: 0 none,
-- 1 the card already has a gate swipe (entry or exit, whatever its outcome)
--   in the same second; purchases (recharges) do not count,
-- 3 fraud_entry_limit or more entries in [ts - fraud_window, ts),
-- 2 fraud_station_limit or more distinct stations among those entries.
-- One backward range read of card_events' primary key (card_id, ts, ...):
-- the card's gate swipes of ts's second come first (rule 1 when there is
-- one), then, when there is none, its entries before that second, at most
-- fraud_entry_limit of them (rules 3 and 2), so the cost is bounded by the
-- thresholds, not by the card's history. A plain SQL function returning a
-- set, so that PostgreSQL inlines it into the caller's query: validate_entry
-- runs it without a nested executor, validate_entries runs it set-wise (each
-- round sees the events of the rounds before). It names its tables in full
-- because an inlined function cannot carry a SET search_path clause.
CREATE OR REPLACE FUNCTION fraud_rule(card_id bigint, ts timestamptz)
RETURNS TABLE (rule smallint) LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN max(r.ts) >= date_trunc('second', $2) THEN 1
                WHEN count(*) >= min(s.fraud_entry_limit) THEN 3
                WHEN count(DISTINCT r.station_id) >= min(s.fraud_station_limit) THEN 2
                ELSE 0 END::smallint
    FROM metro.settings s
    CROSS JOIN LATERAL (
        SELECT g.ts, g.station_id FROM metro.card_events g
        WHERE g.card_id = $1
          AND g.ts >= least($2 - s.fraud_window, date_trunc('second', $2))
          AND g.ts < date_trunc('second', $2) + interval '1 second'
          AND g.activity_code IN (1, -1)
          AND (g.activity_code = 1 OR g.ts >= date_trunc('second', $2))
        ORDER BY g.ts DESC
        LIMIT s.fraud_entry_limit
    ) r
$$;
COMMENT ON FUNCTION fraud_rule(bigint, timestamptz) IS 'Which fraud rule an entry of the card at ts breaks: 0 none, 1 a gate swipe (entry or exit) in the same second, 2 too many stations, 3 too many entries in the window; inlined into its callers';

-- Would an entry of card_id at station_id at ts be refused as fraud?
-- Read-only: records nothing.
CREATE OR REPLACE FUNCTION is_fraud(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS boolean LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = metro, pg_temp
-- Generic plans, as validate_entry's: planning the rules over the partitions
-- on every call cost more than the rules; and never a partition scan.
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
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
