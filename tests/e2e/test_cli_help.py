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
        "metro bench: error: unknown benchmark(s): foo; valid names: validate_entry, worker_lag, "
        "history_size, maintenance, loader, bridge, producers, risk, dashboard"]


def test_a_command_that_starts_the_embedded_server_says_so(tmp_path):
    home = tmp_path / "home"
    try:
        first = run_metro("psql", "-X", "-A", "-t", "-c", "SELECT 1", home=home)
        assert (first.returncode, first.stdout) == (0, "1\n")
        assert first.stderr == (f"starting the embedded PostgreSQL (data {home}/pgdata;"
                                " `metro db stop` stops it)\n")
        again = run_metro("psql", "-X", "-A", "-t", "-c", "SELECT 1", home=home)
        assert (again.stdout, again.stderr) == ("1\n", "")
    finally:
        run_metro("db", "stop", home=home)


def test_a_port_out_of_range_is_refused_before_anything_starts(tmp_path):
    """The broker's port used to reach bind() and end in a traceback."""
    home = tmp_path / "home"
    for args, said in ((("kafka", "start", "--port", "99999"),
                        "metro kafka: error: argument --port: not a TCP port up to 65534:"
                        " '99999'"),
                       (("kafka", "start", "--port", "65535"),  # the controller takes port + 1
                        "metro kafka: error: argument --port: not a TCP port up to 65534:"
                        " '65535'"),
                       (("dashboard", "--port", "0"),
                        "metro dashboard: error: argument --port: not a TCP port: '0'")):
        result = run_metro(*args, home=home)
        assert (result.returncode, result.stderr.splitlines()[-1]) == (2, said)
    assert not home.exists()
