"""evaluate_transactions: a batch of payments gets exactly what evaluate_transaction gives
called one by one in input order (decisions, rows recorded, the error of the first refused
payment), and the bridge applies a poll of transaction_topic with it."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from factories import at
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, TopicPartition
from kafka_fixtures import payment, skip_inbound_backlog, wait_until

from metro.bridge.inbound import apply_records

BATCH = ("SELECT * FROM evaluate_transactions(%s::text[], %s::text[], %s::numeric[],"
         " %s::timestamptz[])")
SINGLE = "SELECT * FROM evaluate_transaction(%s, %s, %s, coalesce(%s, now()))"
COLUMNS = "transaction_id, account_id, amount, ts, risk_level, blocked, rule, message"
PASS = (False, "default_pass", "Approved")
ELEVATED = (True, "elevated_risk_above_5000",
            "Blocked: amount above 5,000.00 up to 10,000.00 from a medium- or high-risk account")
HIGH = (True, "high_risk_above_10000", "Blocked: amount above 10,000.00 from a high-risk account")


def state(conn: psycopg.Connection) -> list[list[tuple]]:
    """What the calls recorded: every decision (decided_at aside) and the stream in order."""
    return [conn.execute(f"SELECT {COLUMNS} FROM risk_decisions ORDER BY transaction_id"
                         ).fetchall(),
            conn.execute(f"SELECT {COLUMNS} FROM transaction_decisions ORDER BY position"
                         ).fetchall()]


def reset(conn: psycopg.Connection, decided_before: list[tuple]) -> None:
    conn.execute("TRUNCATE risk_decisions, transaction_decisions, risk_tags")
    conn.execute("INSERT INTO risk_tags VALUES ('2', 2), ('3', 3), ('account4', 1)")
    for args in decided_before:
        try:
            conn.execute(SINGLE, args)
        except psycopg.Error as error:
            if error.sqlstate != "MT011":  # an id reused with other details: refused
                raise


def consistent(payments: list[tuple], before: list[tuple] = ()) -> list[tuple]:
    """payments with each repeated transaction_id carrying the account and amount of its
    first occurrence (in before, then in payments), so none is refused as reused (MT011)."""
    first: dict[str, tuple] = {}
    result = []
    for transaction_id, account, amount, ts in [*before, *payments]:
        account, amount = first.setdefault(transaction_id, (account, amount))
        result.append((transaction_id, account, amount, ts))
    return result[len(before):]


def refusal(error: psycopg.Error) -> bool:
    """The project's own refusals (MTxxx, 22023): anything else is a failure of the test."""
    return error.sqlstate is not None and (error.sqlstate.startswith("MT")
                                           or error.sqlstate == "22023")


def one_by_one(conn: psycopg.Connection, payments: list[tuple]) -> list[tuple] | tuple:
    """The decisions of evaluate_transaction called in order in one transaction, or the
    (sqlstate, message) of the first refusal, which leaves nothing written."""
    try:
        with conn.transaction():
            return [tuple(conn.execute(SINGLE, p).fetchone()) for p in payments]
    except psycopg.Error as error:
        if not refusal(error):
            raise
        return error.sqlstate, error.diag.message_primary


def batch(conn: psycopg.Connection, payments: list[tuple]) -> list[tuple] | tuple:
    """The decisions of evaluate_transactions, or the (sqlstate, message) it raised."""
    try:
        rows = conn.execute(BATCH, tuple(map(list, zip(*payments, strict=True)))
                            if payments else ([], [], [], [])).fetchall()
    except psycopg.Error as error:
        if not refusal(error):
            raise
        return error.sqlstate, error.diag.message_primary
    assert [r[0] for r in rows] == list(range(1, len(payments) + 1))
    return [tuple(r[1:]) for r in rows]


AMOUNTS = ["0.01", "5000.00", "5000.01", "10000.00", "10000.01", "25000"]
TRANSACTION_IDS = st.sampled_from(["p-1", "p-2", "p-3", "p-4", "p-5"])
ACCOUNTS = st.sampled_from(["account1", "2", "3", "account4"])
TIMES = st.integers(0, 5).map(lambda n: at(n))
payments = st.tuples(
    TRANSACTION_IDS,
    ACCOUNTS,
    st.one_of(st.sampled_from(AMOUNTS), st.sampled_from(["0", "-1", "0.001", "1e12"])
              ).map(Decimal),
    TIMES)
# Payments every rule set below decides: valid amounts, any account, repeated ids.
valid_payments = st.tuples(TRANSACTION_IDS, ACCOUNTS,
                           st.one_of(st.sampled_from(AMOUNTS).map(Decimal),
                                     st.decimals("0.01", "30000", places=2)),
                           TIMES)
# Rule sets that still cover every amount (the catch-all stays): the elevated rule's range.
ELEVATED_RANGES = ["(5000,10000]", "(8000,10000]", "[5000,10000)", "(0,25000]"]


def set_catch_all(conn: psycopg.Connection, amount_range: str | None) -> None:
    """The last rule as shipped ('(,)'), narrowed, or removed (None: MT008 beyond the others)."""
    with conn.transaction():
        conn.execute("DELETE FROM risk_rules WHERE rule = 'default_pass'")
        if amount_range is not None:
            conn.execute("INSERT INTO risk_rules VALUES ('default_pass', 30, %s, 1, 'pass',"
                         " 'Approved')", (amount_range,))


def test_batch_equals_single_calls(conn):
    valid = payments.filter(lambda p: 0 < p[2] < 1e12 and p[2] == round(p[2], 2))

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(payments, max_size=12), st.lists(valid, max_size=3),
           st.sampled_from(["(,)", "(,5000]", None]))
    def check(batch_payments, decided_before, catch_all):
        set_catch_all(conn, "(,)")
        reset(conn, decided_before)
        set_catch_all(conn, catch_all)
        alone, after_alone = one_by_one(conn, batch_payments), state(conn)
        set_catch_all(conn, "(,)")
        reset(conn, decided_before)
        set_catch_all(conn, catch_all)
        assert batch(conn, batch_payments) == alone
        assert state(conn) == after_alone

    try:
        check()
    finally:
        set_catch_all(conn, "(,)")


def test_valid_batches_equal_single_calls(conn):
    """Batches that no rule refuses, so every example compares every decision and every
    row written, not only a first error."""
    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(valid_payments, min_size=2, max_size=12),
           st.lists(valid_payments, max_size=3), st.sampled_from(ELEVATED_RANGES))
    def check(batch_payments, decided_before, elevated):
        decided_before = consistent(decided_before)
        batch_payments = consistent(batch_payments, decided_before)
        conn.execute("UPDATE risk_rules SET amount_range = %s"
                     " WHERE rule = 'elevated_risk_above_5000'", (elevated,))
        reset(conn, decided_before)
        alone, after_alone = one_by_one(conn, batch_payments), state(conn)
        assert isinstance(alone, list) and len(alone) == len(batch_payments), alone
        reset(conn, decided_before)
        assert batch(conn, batch_payments) == alone
        assert state(conn) == after_alone

    try:
        check()
    finally:
        conn.execute("UPDATE risk_rules SET amount_range = '(5000,10000]'"
                     " WHERE rule = 'elevated_risk_above_5000'")


def function_calls(conn: psycopg.Connection) -> dict[str, int]:
    """Completed calls of the payment functions counted by track_functions (a call that
    ends in an error is not counted)."""
    return dict(conn.execute(
        "SELECT funcname, calls FROM pg_stat_user_functions WHERE schemaname = 'metro'"
        " AND funcname IN ('evaluate_transaction', 'evaluate_transactions') AND calls > 0"
    ).fetchall())


def test_duplicates_and_transactions_decided_before(conn):
    conn.execute("INSERT INTO risk_tags VALUES ('2', 2), ('3', 3)")
    assert batch(conn, [("old", "3", Decimal("20000"), at())]) == [HIGH]
    rows = batch(conn, [
        ("a", "2", Decimal("6000"), at(1)),
        ("old", "3", Decimal("20000.00"), at(2)),  # decided before: its decision, nothing written
        ("b", "1", Decimal("6000"), at(3)),
        ("a", "2", Decimal("6000.0"), at(4)),      # the first "a" decided it
        ("c", "3", Decimal("10000.01"), at(5)),
    ])
    assert rows == [ELEVATED, HIGH, PASS, ELEVATED, HIGH]
    recorded = [("old", "3", Decimal("20000.00"), at(), 3, *HIGH),
                ("a", "2", Decimal("6000.00"), at(1), 2, *ELEVATED),
                ("b", "1", Decimal("6000.00"), at(3), 1, *PASS),
                ("c", "3", Decimal("10000.01"), at(5), 3, *HIGH)]
    assert state(conn) == [sorted(recorded), recorded]
    # The same ids with another account or amount: refused, within the batch or against
    # the recorded decision, and nothing written.
    for reused in ([("d", "1", Decimal("5"), at(6)), ("d", "1", Decimal("6"), at(6))],
                   [("e", "1", Decimal("5"), at(6)), ("old", "4", Decimal("20000"), at(6))]):
        assert batch(conn, reused) == one_by_one(conn, reused) == (
            "MT011", f"transaction_id '{reused[1][0]}' was already used for another payment:"
                     f" account {reused[1][1]} and amount {reused[1][2]} differ from the"
                     " recorded ones")
        assert state(conn) == [sorted(recorded), recorded]


def test_ts_null_means_now(conn):
    with conn.transaction():
        rows = conn.execute("SELECT * FROM evaluate_transactions('{n-1,n-2}', '{1,1}',"
                            " '{1,2}', ARRAY[NULL, %s]::timestamptz[])", (at(),)).fetchall()
        default = conn.execute("SELECT * FROM evaluate_transactions('{n-3}', '{1}', '{3}')"
                               ).fetchall()
        now = conn.execute("SELECT now()").fetchone()[0]
    assert rows == [(1, *PASS), (2, *PASS)] and default == [(1, *PASS)]
    assert conn.execute("SELECT transaction_id, ts FROM risk_decisions ORDER BY 1").fetchall() \
        == [("n-1", now), ("n-2", at()), ("n-3", now)]


def test_empty_batch(conn):
    assert batch(conn, []) == []
    assert state(conn) == [[], []]


LENGTHS = "evaluate_transactions: transaction_ids, account_ids, amounts and ts must have the" \
          " same length"
AMOUNT = "Transaction amount must be positive, below 1,000,000,000,000, with at most two" \
         " decimals"


@pytest.mark.parametrize(("args", "sqlstate", "message"), [
    ((["a", "b"], [1], [1, 2], None), "22023", f"{LENGTHS}, got 2, 1, 2 and <NULL>"),
    ((["a"], [1], [1], [at(), at()]), "22023", f"{LENGTHS}, got 1, 1, 1 and 2"),
    ((None, [1], [1], None), "MT004", "evaluate_transactions: transaction_ids must not be NULL"),
    ((["a"], [1], None, None), "MT004", "evaluate_transactions: amounts must not be NULL"),
    ((["a", "b"], [1, None], [1, 2], None), "MT004",
     "evaluate_transaction: account_id must not be NULL"),
    ((["a", "b", " "], [1, 1, 1], ["1", "0.001", "3"], None), "MT003", f"{AMOUNT}: 0.001"),
    ((["a", " ", "c"], [1, 1, 1], [1, 2, -3], None), "MT007", "Invalid transaction_id: ' '"),
    ((["a", "x" * 201], [1, 1], [1, 2], None), "MT007", f"Invalid transaction_id: '{'x' * 40}'"),
])
def test_bad_batches_say_why_and_write_nothing(conn, args, sqlstate, message):
    conn.execute("SELECT evaluate_transaction('old', '1', 1, %s)", (at(),))
    before = state(conn)
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(BATCH, args)
    assert (raised.value.sqlstate, raised.value.diag.message_primary) == (sqlstate, message)
    assert state(conn) == before


def test_no_rule_for_a_new_payment_refuses_the_batch(conn):
    conn.execute("SELECT evaluate_transaction('old', '1', 20000, %s)", (at(),))
    conn.execute("UPDATE risk_rules SET amount_range = '(,10000]' WHERE rule = 'default_pass'")
    before = state(conn)
    # "old" was decided before, so its amount needs no rule now.
    assert batch(conn, [("old", "1", Decimal(20000), at()), ("a", "1", Decimal(1), at())]) \
        == [PASS, PASS]
    assert batch(conn, [("b", "1", Decimal(1), at()), ("c", "1", Decimal(20000), at())]) == (
        "MT008", "No risk rule covers amount 20000 for account 1 (risk level 1)")
    assert state(conn)[0] == [("a", "1", Decimal("1.00"), at(), 1, *PASS), *before[0]]


def test_the_bridge_may_call_it_and_the_app_too(conn):
    for role in ("metro_bridge", "metro_app"):
        conn.execute(f"SET ROLE {role}")
        assert conn.execute("SELECT * FROM evaluate_transactions(%s, '{1}', '{1}')",
                            ([role],)).fetchall() == [(1, *PASS)]
        conn.execute("RESET ROLE")
    conn.execute("SET ROLE metro_reader")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM evaluate_transactions('{r}', '{1}', '{1}')")


def deliver(bootstrap: str, tp: TopicPartition, first: int, count: int) -> list:
    """What Kafka hands a consumer that (re)starts at offset first."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        consumer.assign([tp])
        consumer.seek(tp, first)
        records: list = []
        wait_until(lambda: records.extend(consumer.poll(timeout_ms=500).get(tp, []))
                   or len(records) >= count, 20, f"{count} records")
        return records[:count]
    finally:
        consumer.close()


@pytest.mark.usefixtures("risk_topics")
@pytest.mark.parametrize("refused", [False, True], ids=["set-wise", "one-by-one"])
def test_the_bridge_applies_a_poll_once_and_dead_letters_bad_payments(db, conn, kafka,
                                                                     kafka_producer, refused):
    conn.execute("INSERT INTO risk_tags VALUES (2, 2)")
    skip_inbound_backlog(db, kafka)
    values = [payment("k-1", 2, "6000.00"), b"not a payment", payment("k-2", 1, "6000.00"),
              payment("k-1", 2, "6000.00"), payment("k-3", 1, "0.001" if refused else "7.00")]
    sent = [kafka_producer.send("transaction_topic", value, partition=1) for value in values]
    offsets = [future.get(timeout=10).offset for future in sent]
    tp = TopicPartition("transaction_topic", 1)
    with psycopg.connect(db, autocommit=True) as applier:
        # Count the calls of PL/pgSQL functions made by this session: they prove which path
        # applied the poll.
        applier.execute("SET track_functions = 'pl'")
        records = deliver(kafka, tp, offsets[0], len(values))
        result = apply_records(applier, tp.topic, tp.partition, records)
        assert (result.applied, result.dead_lettered, result.skipped) == (
            (3, 2, 0) if refused else (4, 1, 0))
        applier.execute("SELECT pg_stat_force_next_flush()")
        calls = function_calls(conn)
        again = apply_records(applier, tp.topic, tp.partition, records)
        assert (again.applied, again.dead_lettered, again.skipped) == (0, 0, 5)
        applier.execute("SELECT pg_stat_force_next_flush()")
    if refused:
        # The batch call was refused (not counted): inside it, evaluate_transaction decided
        # k-1, k-2 and k-1 again before k-3's refusal (3 calls), then the bridge applied the
        # poll message by message: k-1, k-2, k-1 (3 calls) and k-3 refused (not counted).
        assert calls == {"evaluate_transaction": 6}
    else:
        # One set-wise call decided the whole poll; no payment was decided alone.
        assert calls == {"evaluate_transactions": 1}
    assert function_calls(conn) == calls  # nothing applied the second time
    dead = [(offsets[1], "expected 3 or 4 comma-separated fields (transaction_id,account_id,"
                         "amount,ts), got 1")]
    if refused:
        dead.append((offsets[4], f"MT003 {AMOUNT}: 0.001"))
    assert conn.execute("SELECT kafka_offset, reason FROM bridge_dead_letters"
                        " ORDER BY kafka_offset").fetchall() == dead
    decided = [("k-1", "2", Decimal("6000.00"), at(), 2, *ELEVATED),
               ("k-2", "1", Decimal("6000.00"), at(), 1, *PASS)]
    if not refused:
        decided.append(("k-3", "1", Decimal("7.00"), at(), 1, *PASS))
    assert state(conn) == [decided, decided]
    assert conn.execute("SELECT next_offset, applied, dead_lettered FROM bridge_inbound_offsets"
                        " WHERE topic = 'transaction_topic' AND kafka_partition = 1"
                        ).fetchone() == (offsets[-1] + 1, result.applied, result.dead_lettered)
