"""What a file loads into, read from the catalog: a table's loadable columns and key, or a function.

Nothing is hard-coded per table: the CSV columns map to the table's columns
in table order, leaving out the ones a file cannot supply (GENERATED ALWAYS
identities and generated columns), so new tables load without code changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from metro.schema import SCHEMA

from .errors import LoadError


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


def find_table(conn: psycopg.Connection, name: str) -> Table:
    schema, bare = _split(name)
    row = conn.execute(
        """SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relname = %s""", (schema, bare)).fetchone()
    if row is None:
        raise LoadError(f"unknown table {schema}.{bare} (name the target with --table)")
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


def find_function(conn: psycopg.Connection, name: str) -> Function:
    schema, bare = _split(name)
    rows = conn.execute(
        """SELECT array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t),
                  p.pronargs - p.pronargdefaults
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = %s AND p.proname = %s AND p.prokind = 'f'""",
        (schema, bare)).fetchall()
    if not rows:
        raise LoadError(f"unknown function {schema}.{bare}")
    if len(rows) > 1:
        raise LoadError(f"function {schema}.{bare} is overloaded; --procedure needs a single one")
    arg_types, required = rows[0]
    return Function(schema, bare, tuple(arg_types), required)
