"""The hot path decides and records; derived data follows exactly once; old data leaves by
partition.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

Applies 0008_rollup_partitions.sql, frozen (see 0001):
- no history trigger and no metro.history_written: run_rollup() keeps
  card_history_second, station_second_slots, card_export_stats (now a table
  the bridge's pruning cannot empty) and station_departures, exactly once,
  behind the commit horizon, its cursors in worker_cursors; worker_lag();
- card_events, card_history_second and station_second_slots partitioned by
  UTC day, every event moved into the partition of its day; run_maintenance(),
  create_partitions() and the settings event_retention, history_retention,
  dead_letter_retention, partitions_ahead;
- role metro_worker, the worker lease (worker_state, worker_take_lease()...);
- validate_entries linear in the batch size; the keys of per-card tables
  (card_events, the streams) start with card_id.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
