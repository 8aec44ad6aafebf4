"""Hardening: no client can bend a decision, stall delivery or crash a tool.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Applies 0009_hardening.sql, frozen (see 0001):
- time: settings.max_clock_skew, role metro_replay, checked_ts() in every
  writing function (MT009 invalid ts, MT010 outside the clock skew for a
  caller not in metro_replay); process_exit closes each accepted entry once;
- the bridge lease is a row of bridge_state only metro_bridge's functions
  write (MT012 for a bridge that lost it), bridge_horizon() for --status;
- bridge_outbound_dead_letters; card name, phone and e-mail bounded;
- metro_bridge writes through its functions; no function executable by PUBLIC;
- payments: MT011 for a transaction_id reused with another account or amount,
  MT007 for ids of only invisible characters.
- in commit order per key: bridge_batch in position order, with the earlier rows
  of the batch's keys sent ahead; a (key, position) index on every stream.
The functions of gates.sql, recharge.sql and trains.sql are patched in place,
so what an earlier revision put in their bodies stays.
"""

from pathlib import Path

from metro.schema import refuse_downgrade, run_revision_sql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    refuse_downgrade(revision)
