"""Login roles the tests connect as, created on the server and dropped afterwards."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import psycopg
from psycopg import sql


@contextlib.contextmanager
def login_role(server_dsn: str, prefix: str, member_of: str | None = None) -> Iterator[str]:
    """A login role named <prefix>_<pid>, a member of member_of only (None: no grants);
    its sessions are ended and what it owns dropped with it."""
    name = f"{prefix}_{os.getpid()}"
    role = sql.Identifier(name)
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
        create = sql.SQL("CREATE ROLE {} LOGIN").format(role)
        if member_of:
            create += sql.SQL(" IN ROLE {}").format(sql.Identifier(member_of))
        admin.execute(create)
    try:
        yield name
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE usename = %s", (name,))
            admin.execute(sql.SQL("DROP OWNED BY {}").format(role))
            admin.execute(sql.SQL("DROP ROLE {}").format(role))
