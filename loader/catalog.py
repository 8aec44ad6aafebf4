"""What a file loads into, read from the catalog: a table's loadable columns and key, or a function.

Only metro's public surface is a target: the tables a user loads (TABLES)
and the functions a row may be given to (FUNCTIONS), all in schema metro.
Everything else in the schema is kept by metro itself (streams, derived
statistics, recorded decisions, the bridge's bookkeeping) or is a helper the
public functions call; the settings row is changed with UPDATE (one row that
always exists: neither a file of rows nor --truncate fits it). Other schemas
are never targets, whatever the connecting role may write there.

Beyond that, nothing is hard-coded per table: the CSV columns map to the
table's columns in table order, leaving out the ones a file cannot supply
(GENERATED ALWAYS identities and generated columns); a new public table
loads once its name is added to TABLES.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import psycopg
from psycopg import sql

from metro.schema import SCHEMA

from .errors import LoadError

TABLES = ("stations", "trains", "cards", "card_events", "train_events", "risk_tags",
          "risk_rules")
# The record of every swipe: the schema refuses UPDATE and DELETE, so --truncate is
# refused too (a TRUNCATE in SQL says it is meant).
APPEND_ONLY = "card_events"
FUNCTIONS = ("validate_entry", "process_exit", "recharge_card", "record_train_event",
             "evaluate_transaction")


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]  # SQL type of each column
    key: tuple[str, ...]  # primary key columns, empty when there is none
    referenced: bool  # other tables have foreign keys to it

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def emptying(self) -> sql.Composed:
        """The statement that empties the table for --truncate. TRUNCATE is refused on a
        table that other tables reference, even when they are empty: DELETE then checks
        the references row by row, so rows still in use stop the load."""
        verb = sql.SQL("DELETE FROM" if self.referenced else "TRUNCATE")
        return sql.SQL("{} {}").format(verb, self.identifier)


@dataclass(frozen=True)
class Function:
    schema: str
    name: str
    arg_types: tuple[str, ...]
    required: int  # arguments without a default

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def _split(name: str) -> tuple[str, str]:
    """schema.name or name (looked up in the metro schema)."""
    schema, dot, bare = name.rpartition(".")
    return (schema, bare) if dot else (SCHEMA, name)


def _suggestion(name: str, choices: tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(name.lower(), choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _public(conn: psycopg.Connection, kind: str, name: str, option: str | None,
            choices: tuple[str, ...]) -> tuple[str, str]:
    """The (schema, name) of a public metro table or function, or a LoadError saying
    what is wrong with name and what exists. option: how the user named it (None: the
    file's stem named a table)."""
    schema, bare = _split(name)
    what = f"loader loads into {', '.join(choices)}" if kind == "table" else \
        f"--procedure calls {', '.join(choices)}"
    if schema != SCHEMA:
        named = "" if option else " (the file's stem; name the target with --table)"
        raise LoadError(f"{schema}.{bare} is outside schema {SCHEMA}{named}: {what}")
    if bare in choices:
        return schema, bare
    if kind == "table":
        query = """SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relname = %s"""
    else:
        query = """SELECT FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE n.nspname = %s AND p.proname = %s"""
    if conn.execute(query, (schema, bare)).fetchone() is not None:
        kept = "kept by metro itself" if kind == "table" else "internal to metro"
        raise LoadError(f"{schema}.{bare} is {kept}: {what}")
    close = _suggestion(bare, choices)
    if option is None:
        hint = f"did you mean --table {close}?" if close else "name the target with --table"
        raise LoadError(f"unknown {kind} {schema}.{bare} ({hint})")
    raise LoadError(f"unknown {kind} {schema}.{bare} given with {option}: "
                    + (f"did you mean {close}?" if close else what))


def _missing(schema: str, bare: str, kind: str) -> LoadError:
    return LoadError(f"{kind} {schema}.{bare} is missing from this database: "
                     f"install the schema with `metro install`")


def find_table(conn: psycopg.Connection, name: str, option: str | None = None) -> Table:
    """A public metro table; option is the command-line option that named it, if any."""
    schema, bare = _public(conn, "table", name, option, TABLES)
    row = conn.execute(
        """SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relname = %s""", (schema, bare)).fetchone()
    if row is None:
        raise _missing(schema, bare, "table")
    oid, relkind = row
    if relkind not in ("r", "p"):
        raise LoadError(f"{schema}.{bare} is not a table")
    columns = conn.execute(
        """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
           WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped
             AND attidentity <> 'a' AND attgenerated = ''
           ORDER BY attnum""", (oid,)).fetchall()
    key = conn.execute(
        """SELECT a.attname FROM pg_index i
           CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
           WHERE i.indrelid = %s AND i.indisprimary
           ORDER BY k.position""", (oid,)).fetchall()
    referenced = conn.execute(
        """SELECT EXISTS (SELECT FROM pg_constraint
                          WHERE contype = 'f' AND confrelid = %s AND conrelid <> confrelid)""",
        (oid,)).fetchone()
    return Table(schema, bare, tuple(c for c, _ in columns), tuple(t for _, t in columns),
                 tuple(k for (k,) in key),
                 bool(referenced and referenced[0]))


def find_function(conn: psycopg.Connection, name: str, option: str = "--procedure") -> Function:
    """A public metro function."""
    schema, bare = _public(conn, "function", name, option, FUNCTIONS)
    rows = conn.execute(
        """SELECT array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t),
                  p.pronargs - p.pronargdefaults
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = %s AND p.proname = %s AND p.prokind = 'f'""",
        (schema, bare)).fetchall()
    if not rows:
        raise _missing(schema, bare, "function")
    if len(rows) > 1:
        raise LoadError(f"function {schema}.{bare} is overloaded; --procedure needs a single one")
    arg_types, required = rows[0]
    return Function(schema, bare, tuple(arg_types), required)
