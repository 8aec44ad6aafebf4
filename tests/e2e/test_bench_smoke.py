"""Every benchmark at a tiny size (`--smoke`: about a second per run, a few thousand cards),
so a broken benchmark is found the day it breaks. Correctness only: each benchmark checks
its own counts and exits non-zero when they are wrong; no timing is asserted here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from commands import METRO
from psycopg import sql

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# name, whether it needs the session's Kafka broker
BENCHMARKS = [("validate_entry", False), ("worker_lag", False), ("history_size", False),
              ("maintenance", False), ("loader", False), ("producers", False), ("bridge", True),
              ("risk", True), ("dashboard", False)]


# benchmark -> (its baseline's summary row, the rows given as a ratio to it)
BASELINES = {
    "loader": ("raw COPY (psql \\copy), clean file",
               ("loader, clean file", "loader, 1% bad file",
                "loader, 1% bad, PostgreSQL < 17 path file")),
    "bridge": ("raw kafka-python producer, the same messages",
               ("bridge forwarding outbox -> Kafka",)),
}


def bench_env(server_dsn: str, **extra: str) -> dict[str, str]:
    """The environment of a benchmark process against the test server."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.update(METRO_DATABASE_URL=server_dsn, **extra)
    return env


def left_behind(server_dsn: str, name: str) -> int:
    """How many databases `name` there are (0 or 1); drops it, so no test leaves one."""
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        found = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                             (name,)).fetchone()
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
    assert found is not None
    return int(found[0])


def stopped_after(command: list[str], env: dict[str, str], printed: str) -> int:
    """Starts command, sends it SIGTERM once it has printed a line starting with `printed`,
    and returns its exit code."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env,
                          cwd=PROJECT_ROOT) as process:
        assert process.stdout is not None
        assert any(line.startswith(printed) for line in iter(process.stdout.readline, ""))
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=60)


def run_smoke(name: str, server_dsn: str, results: Path,
              kafka: str | None = None) -> subprocess.CompletedProcess[str]:
    env = bench_env(server_dsn, METRO_BENCH_RESULTS=str(results))
    env.pop("METRO_KAFKA", None)
    if kafka is not None:
        env["METRO_KAFKA"] = kafka
    return subprocess.run([sys.executable, "-m", f"metro.bench.bench_{name}", "--smoke"],
                          capture_output=True, text=True, env=env, cwd=PROJECT_ROOT,
                          timeout=180, check=False)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "needs_kafka"), BENCHMARKS,
                         ids=[name for name, _ in BENCHMARKS])
def test_benchmark_runs_and_checks_itself(request, server_dsn, tmp_path, name, needs_kafka):
    kafka = request.getfixturevalue("risk_topics") if needs_kafka else None
    result = run_smoke(name, server_dsn, tmp_path, kafka)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "benchmark check failed" not in result.stderr
    written = json.loads((tmp_path / f"{name}.json").read_text())
    assert written["benchmark"] == name and written["smoke"] is True
    assert written["summary"], "no summary row"
    if name == "validate_entry":
        # The open loop offers half of what the same round's closed loop achieved.
        closed = written["runs"]["validate_entry@2"][0]["tps"]
        assert written["runs"]["open@0.5"][0]["offered_rate"] == max(1, round(0.5 * closed))
        assert written["setups"]["open@0.5"]["share_of_capacity"] == 0.5
        # card_events has the partitions of the default 30-day retention: 30 past days,
        # today, 3 days ahead and the default partition.
        assert written["card_events_partitions"] == 35
        assert written["setups"]["validate_entry@2"]["partitions"] == 35
        # Each open loop names what the server did beside it (nothing, most often), the
        # day-under-way one included.
        opened = {key: value for key, value in written["runs"].items() if key.startswith("open")}
        assert set(opened) == {"open@0.5", "open-day@0.5", "open-fewer@0.5",
                               "open-durable@0.5"}
        assert all(isinstance(r["background"], list) for value in opened.values()
                   for r in value)
        assert written["setups"]["open-day@0.5"]["share_of_capacity"] == 0.5
    if name in BASELINES:
        # A baseline measured in the same run, and each figure's ratio to it.
        baseline, compared = BASELINES[name]
        rows = {row["workload"]: row for row in written["summary"]}
        for workload in compared:
            assert rows[workload]["baseline_ratio"] == pytest.approx(
                rows[workload]["throughput"] / rows[baseline]["throughput"]), workload
    # Its scratch database is gone: some hold gigabytes.
    assert left_behind(server_dsn, f"metro_bench_{name}_smoke") == 0
    for row in written["summary"]:
        # Every figure states its own setup and how many runs it is the median of.
        assert row["setup"], row
        assert row["runs"] >= 1 and row["min"] <= row["throughput"] <= row["max"], row


def test_a_failed_check_exits_non_zero():
    result = subprocess.run(
        [sys.executable, "-c", "from metro.bench.common import check; check(1 == 2, 'one is two')"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "benchmark check failed: one is two"


def test_percentiles_count_lost_transactions_as_the_slowest():
    from metro.bench.common import percentile, spread
    from metro.bench.pgbench import percentile_with_lost

    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 0.5) == 50.0 and percentile(samples, 0.99) == 99.0
    assert percentile_with_lost(samples, 0, 0.99) == 99.0
    assert percentile_with_lost(samples, 1, 0.99) == 100.0   # rank 100 of 101
    assert percentile_with_lost(samples, 2, 0.99) == float("inf")   # rank 101 of 102
    assert percentile_with_lost(samples, 100, 0.5) == 100.0
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0,
                                       "runs": [3.0, 1.0, 2.0]}


def test_every_other_round_runs_validate_entry_before_the_naive_function():
    from metro.bench.bench_validate_entry import in_round_order

    keys = ["durable@1", "naive@1", "validate_entry@1", "durable@8", "naive@8",
            "validate_entry@8", "floor@8", "open@0.5"]
    setups = [(key, key, "", 1, None, None, 1.0) for key in keys]
    assert [s[0] for s in in_round_order(setups, 0)] == keys
    assert [s[0] for s in in_round_order(setups, 2)] == keys
    assert [s[0] for s in in_round_order(setups, 1)] == [
        "durable@1", "validate_entry@1", "naive@1", "durable@8", "validate_entry@8",
        "naive@8", "floor@8", "open@0.5"]


def test_an_open_loop_warm_up_is_left_out_by_scheduled_start():
    from metro.bench.pgbench import after_warmup, logged_line

    # client, transaction, latency µs (from the scheduled start), script, end s, end µs
    lines = ["0 1 12000 0 1000 12000",      # scheduled at 1000.000: warm-up
             "1 1 skipped 0 1000 900000",   # at its turn 100 ms late: scheduled 1000.800
             "0 2 400000 0 1001 500000",    # ended late, scheduled at 1001.100: measured
             "1 2 failed 0 1001 200000",    # measured
             "0 3 2500 0 1001 2500"]        # scheduled at 1001.000: measured
    logged = [logged_line(line, 100.0) for line in lines]
    assert logged[0] == (1000.0, 12.0) and logged[1] == (1000.8, "skipped")
    assert after_warmup(logged, 1.0) == [400.0, "failed", 2.5]
    assert after_warmup(logged, 0.0) == [12.0, "skipped", 400.0, "failed", 2.5]


def test_an_open_loop_run_counts_what_was_offered_after_its_warm_up():
    from metro.bench.pgbench import logged_line, tally

    # Two clients given three transactions each: six offered, two of them (one
    # completed, one skipped) in the first second's warm-up, one never started.
    lines = ["0 1 12000 0 1000 12000", "1 1 skipped 0 1000 900000",
             "0 2 400000 0 1001 500000", "1 2 failed 0 1001 200000",
             "0 3 2500 0 1001 2500"]
    counts = tally([logged_line(line, 100.0) for line in lines], 1.0, offered=6)
    assert (counts.latencies, counts.skipped, counts.failed) == ([2.5, 400.0], 0, 1)
    assert (counts.warmup_transactions, counts.offered, counts.scheduled) == (2, 4, 3)
    assert counts.not_started == 1
    # Closed loop: what was offered is what was scheduled; nothing left unstarted.
    closed = tally([logged_line(line, None) for line in lines[:1] + lines[2:]], 0.0,
                   offered=None)
    assert (closed.offered, closed.scheduled, closed.not_started) == (4, 4, 0)


def test_a_run_names_the_checkpoints_and_autovacuums_that_fell_within_it(db):
    """A slow tail is often a checkpoint or an autovacuum (its ANALYZE makes every
    connection plan again): each run lists those that happened while it ran."""
    from metro.bench import pgbench

    checkpoints = pgbench.run(db, "checkpoints", "CHECKPOINT;\n", clients=1, seconds=1)
    done = [work for work in checkpoints.background if work == "checkpoint"]
    # One per CHECKPOINT run (and any the server timed itself meanwhile).
    assert 1 <= checkpoints.transactions <= len(done)
    # Autovacuum of the database's tables may fall in too, named by table.
    assert all(work.startswith(("autovacuum ", "autoanalyze "))
               for work in checkpoints.background if work != "checkpoint")
    named = pgbench.Run(name="x", clients=1, offered_rate=None, seconds=1, transactions=1,
                        failed=0, tps=1, p50_ms=1, p95_ms=1, p99_ms=1, max_ms=1,
                        background=("autoanalyze metro.card_events_p20261201", "checkpoint",
                                    "checkpoint"))
    assert named.background_text() == "autoanalyze card_events_p20261201, checkpoint x2"
    assert pgbench.Run(name="x", clients=1, offered_rate=None, seconds=1, transactions=1,
                       failed=0, tps=1, p50_ms=1, p95_ms=1, p99_ms=1,
                       max_ms=1).background_text() == "none"


@pytest.mark.slow
@pytest.mark.parametrize(("keep", "left"), [("1", 1), ("", 0)], ids=["kept", "dropped"])
def test_a_scratch_database_is_dropped_at_exit_unless_kept(server_dsn, keep, left):
    env = bench_env(server_dsn, METRO_BENCH_KEEP=keep)
    probe = ("from metro.bench.common import scratch_database, check\n"
             "scratch_database('metro_bench_probe', smoke=True)\n"
             "check(False, 'a failed check exits too')\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=env, cwd=PROJECT_ROOT, timeout=120, check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    assert left_behind(server_dsn, "metro_bench_probe_smoke") == left


@pytest.mark.slow
def test_a_scratch_database_is_dropped_when_its_run_is_stopped(server_dsn):
    env = bench_env(server_dsn, METRO_BENCH_KEEP="")
    probe = ("import time\n"
             "from metro.bench.common import scratch_database\n"
             "scratch_database('metro_bench_stopped', smoke=True)\n"
             "print('ready', flush=True)\n"
             "time.sleep(120)\n")
    assert stopped_after([sys.executable, "-c", probe], env, "ready") == 128 + signal.SIGTERM
    assert left_behind(server_dsn, "metro_bench_stopped_smoke") == 0


@pytest.mark.slow
@pytest.mark.parametrize("command", [[sys.executable, "-m", "metro.bench"], [*METRO, "bench"]],
                         ids=["python -m metro.bench", "metro bench"])
def test_the_runner_passes_sigterm_on_and_the_benchmark_drops_its_database(server_dsn,
                                                                           tmp_path, command):
    env = bench_env(server_dsn, METRO_BENCH_KEEP="", METRO_BENCH_RESULTS=str(tmp_path))
    # The benchmark prints "loading ..." once its scratch database is made.
    assert stopped_after([*command, "--smoke", "--only", "validate_entry"], env,
                         "loading 2,000 cards") == 128 + signal.SIGTERM
    assert left_behind(server_dsn, "metro_bench_validate_entry_smoke") == 0


@pytest.mark.slow
def test_each_validate_entry_run_starts_with_nothing_left_for_autovacuum(server_dsn):
    # Autovacuum on a partition during a run makes every connection replan its swipes.
    env = bench_env(server_dsn, METRO_BENCH_KEEP="")
    probe = ("import time, psycopg\n"
             "from metro.bench.common import scratch_database\n"
             "from metro.bench.bench_validate_entry import prepare, fresh_history, install_naive\n"
             "dsn = scratch_database('metro_bench_fresh', smoke=True)\n"
             "print(prepare(dsn, 100))\n"
             "install_naive(dsn)\n"
             "fresh_history(dsn, 50)\n"
             "time.sleep(1)  # what the closed connection still had to report\n"
             "with psycopg.connect(dsn) as conn:\n"
             "    print(conn.execute(\"SELECT count(*) FILTER (WHERE n_mod_since_analyze > 0),\"\n"
             "                       \" count(*) FILTER (WHERE n_live_tup > 0),\"\n"
             "                       \" (SELECT count(DISTINCT tableoid)\"\n"
             "                       \"  FROM metro.card_events)\"\n"
             "                       \" FROM pg_stat_user_tables\"\n"
             "                       \" WHERE relname LIKE 'card_events_%'\").fetchone())\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=env, cwd=PROJECT_ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    partitions, counts = result.stdout.strip().splitlines()[-2:]
    # 35 partitions; every one holding the history cards' rows (ten or eleven, by the hour
    # of the day) analyzed after the rows went in: none left with changes to analyze.
    left_to_analyze, with_rows, holding = (int(n) for n in counts.strip("()").split(", "))
    assert (partitions, left_to_analyze) == ("35", 0)
    assert with_rows == holding and holding in (10, 11)
    assert left_behind(server_dsn, "metro_bench_fresh_smoke") == 0


@pytest.mark.parametrize("loads", ["1.5", "0", "half", ""])
def test_open_loop_loads_outside_the_capacity_are_refused_before_anything_runs(loads):
    result = subprocess.run([sys.executable, "-m", "metro.bench.bench_validate_entry",
                             "--loads", loads], capture_output=True, text=True,
                            cwd=PROJECT_ROOT, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(
        "argument --loads: shares of the closed-loop capacity, each above 0 and at most 1,"
        f" such as 0.5,0.9: got {loads!r}")
    assert "loading" not in result.stdout


def test_the_naive_function_and_validate_entry_must_decide_the_same_mix():
    from metro.bench.bench_validate_entry import check_same_mix
    from metro.bench.common import CheckFailed

    def mix(fraud: float, swipes: int) -> dict[str, float]:
        return {"accepted": 1 - fraud, "refused": 0.0, "fraud": fraud, "swipes": swipes}

    check_same_mix("validate_entry@2", mix(0.0, 40), mix(0.05, 40))  # chance, at 40
    check_same_mix("validate_entry@8", mix(0.006, 75_000), mix(0.012, 75_000))
    with pytest.raises(CheckFailed) as failed:
        check_same_mix("validate_entry@8", mix(0.006, 75_000), mix(0.02, 75_000))
    assert str(failed.value) == (
        "benchmark check failed: validate_entry@8: the naive function and validate_entry"
        " decided different mixes (share naive, share validate_entry, of 75,000 and 75,000"
        " swipes): {'accepted': (0.994, 0.98), 'fraud': (0.006, 0.02)}")
