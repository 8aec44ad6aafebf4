"""`producers payments`: amounts around the rules' boundaries, decided by evaluate_transaction."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from decimal import Decimal

from metro.producers.cli import main
from metro.producers.payments import Payments


def test_amounts_are_exact_and_hit_every_boundary():
    payments = Payments(rate=1000, accounts=10, start_ts=datetime(2026, 11, 2, tzinfo=UTC),
                        horizon=10, rng=random.Random(1))
    amounts = [payments.amount() for _ in range(5000)]
    assert all(isinstance(a, Decimal) and a == a.quantize(Decimal("0.01")) and a > 0
               for a in amounts)
    for boundary in ("5000.00", "5000.01", "10000.00", "10000.01"):
        assert Decimal(boundary) in amounts
    assert min(amounts) < 5000 < max(amounts) and max(amounts) > 10000


def test_payments_direct_are_decided_once_each(conn, db, monkeypatch, capsys, tmp_path):
    conn.execute("INSERT INTO risk_tags SELECT n, 1 + n % 3 FROM generate_series(1, 50) n")
    monkeypatch.setenv("METRO_DATABASE_URL", db)
    stats = tmp_path / "payments.json"
    assert main(["payments", "--rate", "200", "--duration", "1", "--accounts", "50",
                 "--seed", "7", "--stats-file", str(stats)]) == 0
    summary = json.loads(stats.read_text())
    outcomes = summary["by_call"]["payment"]
    assert outcomes["errors"] == 0 and summary["calls"] == 200
    recorded = conn.execute("SELECT count(*), count(*) FILTER (WHERE blocked),"
                            " count(DISTINCT transaction_id) FROM risk_decisions").fetchone()
    assert recorded == (200, outcomes["rejected"], 200)
    assert outcomes["rejected"] > 0 and outcomes["accepted"] > 0
    assert summary["messages"]["Approved"] == outcomes["accepted"]
    assert ("payments: 200 payments/s over accounts 1..50; for 1 s; pipeline mode over 4"
            " connections" in capsys.readouterr().out)
