"""Ready to scale out by card: every unique key of a table holding a card_id (cards, their
events and history, the alerts per card, the streams a decision writes) includes card_id, so
each can be distributed by card (docs/scale-out.md)."""

PER_CARD_KEYS = """
    SELECT c.relname, i.relname, array_agg(a.attname ORDER BY k.ord)
    FROM pg_index x
    JOIN pg_class c ON c.oid = x.indrelid
    JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    CROSS JOIN LATERAL unnest(x.indkey[0:x.indnkeyatts - 1]) WITH ORDINALITY k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
    WHERE n.nspname = 'metro' AND x.indisunique AND c.relispartition IS NOT TRUE
      AND EXISTS (SELECT 1 FROM pg_attribute ca WHERE ca.attrelid = c.oid
                  AND ca.attname = 'card_id' AND NOT ca.attisdropped)
    GROUP BY c.relname, i.relname
    ORDER BY 1, 2"""


def test_every_unique_key_of_a_per_card_table_includes_card_id(conn):
    keys = conn.execute(PER_CARD_KEYS).fetchall()
    assert {table for table, _, _ in keys} == {
        "cards", "card_events", "card_history_second", "card_export_stats", "fraud",
        "card_alert_export", "trips"}
    assert [(table, index) for table, index, columns in keys if "card_id" not in columns] == []
    # Partitions inherit their parent's keys; checked on every one.
    assert conn.execute("""
        SELECT count(*) FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'metro' AND c.relispartition AND x.indisunique
          AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                          AND a.attname = 'card_id' AND a.attnum = ANY (x.indkey))
          AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                      AND a.attname = 'card_id')""").fetchone() == (0,)
