"""Payments through Kafka: transaction_topic into evaluate_transaction, one decision per
transaction on transaction_decisions also across bridge restarts, malformed payments
dead-lettered; and the producers' Kafka sink delivering trains, recharges and payments."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from factories import add_card, balance
from kafka_fixtures import payment, skip_inbound_backlog, wait_until

from metro.bridge.messages import InvalidMessage, Payment, call_for, parse_payment
from metro.producers.cli import main


def test_payment_values_accepted():
    ts = parse_payment(b"p-1,7,5000.01,2026-11-02T08:00:00Z").ts
    assert parse_payment(payment("p-1", 7, "5000.01")) == Payment(
        "p-1", "7", Decimal("5000.01"), ts)
    assert parse_payment(b'{"transaction_id": 12, "account_id": "7", "amount": "10000.00"}') == (
        Payment("12", "7", Decimal("10000.00"), None))
    assert parse_payment(b'{"transaction_id": "p", "account_id": 7, "amount": 1e4,'
                         b' "ts": 1793606400000000}') == Payment("p", "7", Decimal("1E+4"), ts)
    assert call_for("transaction_topic", b"p-2,7,0.10")[1] == ("p-2", "7", Decimal("0.10"), None)


@pytest.mark.parametrize(("value", "reason"), [
    (b'{"transaction_id": "p", "account_id": 7}', "JSON object lacks amount"),
    (b'{"transaction_id": "p", "account_id": 7, "amount": true}',
     "amount must be a decimal number, got True"),
    (b'{"transaction_id": "p", "account_id": 7, "amount": "5,000.00"}',
     "amount must be a decimal number, got '5,000.00'"),
    (b'{"transaction_id": "p", "account_id": 7, "amount": NaN}',
     "amount must be a decimal number, got nan"),
    (b'{"transaction_id": ["p"], "account_id": 7, "amount": 1}',
     "transaction_id must be a string or an integer, got ['p']"),
    (b'{"transaction_id": "p", "account_id": 7.5, "amount": 1}',
     "account_id must be a string or an integer, got 7.5"),
    (b'{"transaction_id": "p", "account_id": 7, "amount": 1, "timestamp": "today"}',
     "timestamp 'today' is neither ISO 8601 nor an epoch number"),
    (b"p,7",
     "expected 3 or 4 comma-separated fields (transaction_id,account_id,amount,ts), got 2"),
])
def test_payment_values_refused_say_why(value, reason):
    with pytest.raises(InvalidMessage) as error:
        parse_payment(value)
    assert str(error.value) == reason


def decisions_by_transaction(records) -> dict[str, list[dict]]:
    """Decision values per transaction_id, duplicates (same position header) dropped."""
    seen: set[bytes] = set()
    result: dict[str, list[dict]] = {}
    for record in records:
        position = dict(record.headers)["position"]
        if position in seen:
            continue
        seen.add(position)
        value = json.loads(record.value, parse_float=Decimal)
        assert record.key == value["transaction_id"].encode()
        result.setdefault(value["transaction_id"], []).append(value)
    return result


def test_payments_come_back_as_one_decision_each_across_restarts(db, conn, risk_topics,
                                                                kafka_producer, start_bridge,
                                                                topic_reader):
    conn.execute("INSERT INTO risk_tags VALUES (2, 2), (3, 3)")
    skip_inbound_backlog(db, risk_topics)
    reader = topic_reader("transaction_decisions")
    first = start_bridge(db)
    first.wait_for_output("consuming TRAINTOPIC, RECHARGE, transaction_topic")
    amounts = ("5000.00", "5000.01", "10000.00", "10000.01")
    batch = [(f"a-{account}-{amount}", account, amount) for account in (1, 2, 3)
             for amount in amounts]
    for transaction_id, account, amount in batch[:6]:
        kafka_producer.send("transaction_topic", payment(transaction_id, account, amount),
                            key=str(account).encode())
    kafka_producer.flush()
    reader.read(6)
    first.kill()  # mid-run, without a goodbye
    # Sent while no bridge runs, a retried payment among them.
    for transaction_id, account, amount in batch[4:]:
        kafka_producer.send("transaction_topic", payment(transaction_id, account, amount),
                            key=str(account).encode())
    kafka_producer.flush()
    second = start_bridge(db)
    reader.read(len(batch))
    wait_until(lambda: conn.execute("SELECT sum(applied) FROM metro.bridge_inbound_offsets"
                                    " WHERE topic = 'transaction_topic'").fetchone()[0] == 14,
               30, "fourteen payments applied")
    assert second.terminate() == 0
    third = start_bridge(db)  # nothing left to send: a clean restart adds nothing
    third.wait_for_output("holding the lease")
    assert third.terminate() == 0

    decided = decisions_by_transaction(reader.read_idle())
    assert sorted(decided) == sorted(t for t, _, _ in batch)
    assert all(len(values) == 1 for values in decided.values())
    blocked = {t for t, values in decided.items() if values[0]["blocked"]}
    assert blocked == {"a-2-5000.01", "a-2-10000.00", "a-3-5000.01", "a-3-10000.00",
                       "a-3-10000.01"}
    assert decided["a-3-10000.01"][0] == {
        "transaction_id": "a-3-10000.01", "account_id": "3", "amount": Decimal("10000.01"),
        "ts": "2026-11-02T08:00:00+00:00", "risk_level": 3, "blocked": True,
        "rule": "high_risk_above_10000",
        "message": "Blocked: amount above 10,000.00 from a high-risk account"}
    assert conn.execute("SELECT count(*) FROM risk_decisions").fetchone() == (12,)
    assert conn.execute("SELECT count(*) FROM transaction_decisions").fetchone() == (12,)


def test_malformed_payments_go_to_dead_letters_and_do_not_block(db, conn, risk_topics,
                                                               kafka_producer, start_bridge):
    skip_inbound_backlog(db, risk_topics)
    bridge = start_bridge(db)
    bridge.wait_for_output("consuming")
    values = [b'{"transaction_id": "m-1", "account_id": 1}',
              payment("m-2", 1, "0.001"),
              payment("", 1, "1.00"),
              b"not json at all",
              payment("m-3", 1, "1.00")]
    sent = [kafka_producer.send("transaction_topic", value, partition=0) for value in values]
    offsets = [future.get(timeout=10).offset for future in sent]
    wait_until(lambda: conn.execute("SELECT count(*) FROM risk_decisions").fetchone() == (1,),
               30, "the last payment to be decided")
    assert bridge.terminate() == 0
    dead = conn.execute("SELECT kafka_offset, reason FROM bridge_dead_letters"
                        " WHERE topic = 'transaction_topic' ORDER BY kafka_offset").fetchall()
    assert dead == [
        (offsets[0], "JSON object lacks amount"),
        (offsets[1], "MT003 Transaction amount must be positive, below 1,000,000,000,000, with"
                     " at most two decimals: 0.001"),
        (offsets[2], "JSON object lacks transaction_id"),
        (offsets[3], "expected 3 or 4 comma-separated fields (transaction_id,account_id,amount,"
                     "ts), got 1"),
    ]
    assert conn.execute("SELECT transaction_id FROM risk_decisions").fetchall() == [("m-3",)]


def test_producers_via_kafka_deliver_what_the_bridge_applies(db, conn, stations, risk_topics,
                                                           start_bridge, monkeypatch, capsys):
    for card in (1, 2, 3):
        add_card(conn, card, balance=0)
    skip_inbound_backlog(db, risk_topics)
    bridge = start_bridge(db)
    bridge.wait_for_output("consuming")
    monkeypatch.setenv("METRO_DATABASE_URL", db)
    via = ["--via", "kafka", "--kafka", risk_topics, "--display-interval", "10"]
    assert main(["trains", "--trains", "2", "--speedup", "600", "--duration", "2", *via]) == 0
    assert main(["recharges", "--rate", "20", "--duration", "2", "--format", "json",
                 "--seed", "3", *via]) == 0
    assert main(["payments", "--rate", "50", "--duration", "2", "--seed", "5", *via]) == 0
    out = capsys.readouterr().out
    assert "trains: 2 trains on 15 stations, speedup 600x; for 2 s; csv messages to Kafka" in out
    sent = [int(line.split()[1]) for line in out.splitlines()
            if line.startswith(("trains: ", "recharges: ", "payments: ")) and " calls in " in line]
    trains, recharges, payments = sent
    assert recharges == 40 and payments == 100 and trains > 0
    wait_until(lambda: conn.execute("SELECT sum(applied), sum(dead_lettered) FROM"
                                    " metro.bridge_inbound_offsets").fetchone() == (
                   trains + recharges + payments, 0), 60, "every message applied")
    assert bridge.terminate() == 0
    assert conn.execute("SELECT count(*) FROM train_events").fetchone() == (trains,)
    credited = conn.execute("SELECT count(*), sum(amount) FROM card_events WHERE accept = 1"
                            ).fetchone()
    assert credited[0] == recharges
    assert sum(balance(conn, card) for card in (1, 2, 3)) == credited[1]
    assert conn.execute("SELECT count(*) FROM risk_decisions").fetchone() == (payments,)
