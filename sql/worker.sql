-- The worker's state: the rollup's cursors (how far derived data follows its
-- sources) and the lease that lets one `metro worker` run at a time. Both are
-- changed only through the SECURITY DEFINER functions of
-- procedures/history.sql and procedures/worker.sql; metro_worker may call
-- those and nothing else.
SET search_path = metro, pg_catalog;

-- roles
-- Roles are cluster-wide, so creating one is conditional.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'metro_worker') THEN
        CREATE ROLE metro_worker NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA metro TO metro_worker;

-- tables
CREATE TABLE worker_cursors (
    source text PRIMARY KEY
        CHECK (source IN ('card_events', 'card_alert_export', 'train_events', 'transaction_decisions')),
    txid xid8 NOT NULL DEFAULT '0',
    position bigint NOT NULL DEFAULT 0 CHECK (position >= 0),
    rolled_up bigint NOT NULL DEFAULT 0 CHECK (rolled_up >= 0),
    rolled_up_at timestamptz
);
COMMENT ON TABLE worker_cursors IS 'The rollup''s cursor per source table, moved in the same transaction as the derived rows it wrote: every source row at or before (txid, position) is counted once';
COMMENT ON COLUMN worker_cursors.source IS 'Source table: card_events (per-second history, station counters), card_alert_export (card_export_stats), train_events (station_departures), transaction_decisions (payment_totals)';
COMMENT ON COLUMN worker_cursors.txid IS 'Writing transaction of the last source row rolled up (rows are read in (txid, position) order, below the commit horizon)';
COMMENT ON COLUMN worker_cursors.position IS 'event_id (card_events) or stream position (card_alert_export, transaction_decisions) of the last row rolled up; 0 for train_events, read whole transactions at a time';
COMMENT ON COLUMN worker_cursors.rolled_up IS 'Source rows rolled up since the schema was created';
COMMENT ON COLUMN worker_cursors.rolled_up_at IS 'When the cursor last moved';
INSERT INTO worker_cursors (source)
VALUES ('card_events'), ('card_alert_export'), ('train_events'), ('transaction_decisions');

CREATE TABLE worker_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    holder text,
    since timestamptz,
    lease_until timestamptz,
    heartbeat_at timestamptz,
    last_maintenance_at timestamptz,
    last_maintenance text,
    last_error text,
    last_error_at timestamptz
);
COMMENT ON TABLE worker_state IS 'The worker lease (holder until lease_until, renewed by heartbeats) and what the worker last did, for metro worker --status';
COMMENT ON COLUMN worker_state.singleton IS 'Always true: the table holds exactly one row';
COMMENT ON COLUMN worker_state.holder IS 'host:pid:tag of the worker holding the lease (or that last held it), the tag random per worker process';
COMMENT ON COLUMN worker_state.since IS 'When the holder took the lease';
COMMENT ON COLUMN worker_state.lease_until IS 'The lease is the holder''s until then; another worker may take it afterwards';
COMMENT ON COLUMN worker_state.heartbeat_at IS 'Last renewal by the holder';
COMMENT ON COLUMN worker_state.last_maintenance_at IS 'When run_maintenance() last finished (whoever called it: the worker or pg_cron)';
COMMENT ON COLUMN worker_state.last_maintenance IS 'What that run did, e.g. created 2, dropped 1, deleted 0';
COMMENT ON COLUMN worker_state.last_error IS 'Last error the worker reported';
COMMENT ON COLUMN worker_state.last_error_at IS 'When last_error happened';
INSERT INTO worker_state DEFAULT VALUES;

-- grants
GRANT SELECT ON worker_cursors, worker_state TO metro_reader;
