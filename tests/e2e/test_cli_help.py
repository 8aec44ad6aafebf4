"""Help and usage a newcomer reads: every command named as typed, choices listed."""

from commands import run_metro


def test_metro_psql_help_is_psql_s_own():
    result = run_metro("psql", "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("psql is the PostgreSQL interactive terminal.")


def test_metro_db_and_kafka_describe_their_actions():
    db = run_metro("db", "--help").stdout
    assert "status: running or not (exit 3 when stopped)" in " ".join(db.split())
    assert "{start,stop,status,url}" in db


def test_metro_bench_names_the_benchmarks_it_knows():
    result = run_metro("bench", "--only", "foo")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "usage: metro bench [-h] [--quick] [--smoke] [--only NAMES]",
        "metro bench: error: unknown benchmark(s): foo; valid names: validate_entry, "
        "history_size, loader, bridge, producers, risk, dashboard"]
