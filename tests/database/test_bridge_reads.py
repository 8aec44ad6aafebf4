"""The bridge's reads of a stream go through its indexes, whatever the stream's own key:
a batch reads about its own rows, never the whole outbox (which grows until pruned)."""

import psycopg


def tuples_read(conn: psycopg.Connection, table: str) -> int:
    """Rows of table read so far by scans of the table and of its indexes."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return conn.execute(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) + coalesce(idx_tup_read, 0)"
        " FROM pg_stat_user_tables t LEFT JOIN (SELECT relid, sum(idx_tup_read) AS idx_tup_read"
        " FROM pg_stat_user_indexes GROUP BY relid) i USING (relid)"
        " WHERE t.relid = %s::regclass", (f"metro.{table}",)).fetchone()[0]


def test_a_batch_reads_about_its_own_rows(conn):
    conn.execute("INSERT INTO metro.fraud (trans_id, card_id, ts, station_id, activity_code,"
                 " amount) SELECT n || '_1', n, now(), 1, 1, 250"
                 " FROM generate_series(1, 20000) n")
    conn.execute("ANALYZE metro.fraud")
    before = tuples_read(conn, "fraud")
    rows = conn.execute("SELECT row_position, key FROM metro.bridge_batch('fraud', '0', 0, 100)"
                        ).fetchall()
    assert [key for _, key in rows] == [f"{n}_1" for n in range(1, 101)]
    # The batch, the same keys' earlier rows and the rows' values: a few hundred, not 20,000.
    assert tuples_read(conn, "fraud") - before < 1000
