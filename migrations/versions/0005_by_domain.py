"""The schema by domain, one owner per fact, each rule once: the streams registry
(metro.streams, register_stream), the error codes (metro.error_codes), the risk
rule and the payment checks as single inlined functions, COMMENT ON FUNCTION
everywhere.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

Applies 0005_by_domain.sql, frozen (see 0001). It brings a 0004 database to the
tree of sql/ and procedures/ as this revision left it, whichever checkout
installed the 0004 database: with the original tables of 0001 (integer columns
with table CHECKs) or with the later ones (domains). All views, triggers and
functions of schema metro are dropped and created again; the tables keep their
rows (bridge cursors included) and those whose column types become domains are
rewritten once.
"""

from pathlib import Path

from metro.schema import run_revision_sql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_revision_sql(Path(__file__).with_suffix(".sql"))


def downgrade() -> None:
    raise NotImplementedError(
        "0005 has no downgrade: the functions of 0004 would have to be restored from "
        "0001..0004's SQL files")
