-- Fraud rules, checked against the card's earlier events before a swipe is
-- recorded. Thresholds come from settings, read on every call.
SET search_path = metro, pg_catalog;

-- functions

-- Which rule fires for an entry of card_id at ts, with the thresholds of
-- settings (fraud_window, fraud_entry_limit, fraud_station_limit): 0 none,
-- 1 the card already has a gate swipe (entry or exit, whatever its outcome)
--   in the same second; purchases (recharges) do not count,
-- 3 entry_limit or more entries in [ts - fraud_window, ts),
-- 2 station_limit or more distinct stations among those entries.
-- One backward range read of card_events' primary key (card_id, ts, ...):
-- the card's gate swipes of ts's second come first (rule 1 when there is
-- one), then, when there is none, its entries before that second, at most
-- entry_limit of them (rules 3 and 2), so the cost is bounded by the
-- thresholds, not by the card's history. A plain SQL function returning a
-- set, so that PostgreSQL inlines it into the caller's query: validate_entry
-- runs it without a nested executor, validate_entries runs it set-wise (each
-- round sees the events of the rounds before). The caller reads the settings
-- row and passes its thresholds: validate_entry reads them with the station,
-- and as parameters they bound the read when the plan starts, so the plan
-- opens only the partitions the window spans (with settings joined inside,
-- the partitions were chosen again on every execution: validate_entry made
-- 14% fewer swipes/s at 8 clients). It names its tables in full because an
-- inlined function cannot carry a SET search_path clause.
CREATE OR REPLACE FUNCTION fraud_rule(card_id bigint, ts timestamptz, fraud_window interval,
                                      entry_limit integer, station_limit integer)
RETURNS TABLE (rule smallint) LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN max(r.ts) >= date_trunc('second', $2) THEN 1
                WHEN count(*) >= $4 THEN 3
                WHEN count(DISTINCT r.station_id) >= $5 THEN 2
                ELSE 0 END::smallint
    FROM (
        SELECT g.ts, g.station_id FROM metro.card_events g
        WHERE g.card_id = $1
          AND g.ts >= least($2 - $3, date_trunc('second', $2))
          AND g.ts < date_trunc('second', $2) + interval '1 second'
          AND g.activity_code IN (1, -1)
          AND (g.activity_code = 1 OR g.ts >= date_trunc('second', $2))
        ORDER BY g.ts DESC
        LIMIT $4
    ) r
$$;
COMMENT ON FUNCTION fraud_rule(bigint, timestamptz, interval, integer, integer) IS 'Which fraud rule an entry of the card at ts breaks with the given thresholds (settings.fraud_window, fraud_entry_limit, fraud_station_limit): 0 none, 1 a gate swipe (entry or exit) in the same second, 2 too many stations, 3 too many entries in the window; inlined into its callers';
REVOKE ALL ON FUNCTION fraud_rule(bigint, timestamptz, interval, integer, integer) FROM PUBLIC;

-- Would an entry of card_id at station_id at ts be refused as fraud?
-- Read-only: records nothing.
CREATE OR REPLACE FUNCTION is_fraud(card_id bigint, station_id integer, ts timestamptz DEFAULT now())
RETURNS boolean LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = metro, pg_temp
-- Generic plans, as validate_entry's: planning the rules over the partitions
-- on every call cost more than the rules; never a partition scan; no JIT.
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
BEGIN
    IF $1 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'card_id'); END IF;
    IF $2 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'station_id'); END IF;
    IF $3 IS NULL THEN PERFORM raise_null_argument('is_fraud', 'ts'); END IF;
    -- As the gates: a caller may not look further back (or ahead) than it may swipe.
    IF NOT fresh_default_ts($3) THEN PERFORM checked_ts('is_fraud', 'ts', $3); END IF;
    IF NOT EXISTS (SELECT 1 FROM stations s WHERE s.station_id = $2) THEN
        PERFORM raise_unknown_station($2);
    END IF;
    RETURN (SELECT f.rule
            FROM settings t
            CROSS JOIN LATERAL fraud_rule($1, $3, t.fraud_window, t.fraud_entry_limit,
                                          t.fraud_station_limit) f) <> 0;
END
$$;
COMMENT ON FUNCTION is_fraud(bigint, integer, timestamptz) IS 'Would an entry of card_id at station_id at ts be refused as fraud? Reads only. MT004 NULL argument, MT009/MT010 ts refused as by validate_entry, MT001 unknown station';
REVOKE ALL ON FUNCTION is_fraud(bigint, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION is_fraud(bigint, integer, timestamptz) TO metro_app;
