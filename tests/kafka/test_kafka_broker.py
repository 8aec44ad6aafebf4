"""`metro kafka start|stop|status`: the project's own KRaft broker, with clear errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from kafka_fixtures import PROJECT_ROOT

from metro.app.kafka_broker import KAFKA_VERSION, free_port_pair


def metro_kafka(home: Path, *args: str,
                port: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "METRO_HOME": str(home)}
    if port is not None:
        env["METRO_KAFKA_PORT"] = port
    return subprocess.run([sys.executable, "-m", "metro.app.cli", "kafka", *args], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_start_status_stop(tmp_path, kafka_broker):
    port = free_port_pair()
    state = tmp_path / "kafka"
    assert metro_kafka(tmp_path, "status", port=str(port)).stdout == f"stopped (data {state})\n"
    started = metro_kafka(tmp_path, "start", port=str(port))
    try:
        assert started.returncode == 0, started.stderr
        address = f"127.0.0.1:{port}"
        assert started.stdout == (f"Kafka {KAFKA_VERSION} running: {address} (data {state});"
                                  f" use --kafka {address} or METRO_KAFKA={address}\n")
        status = metro_kafka(tmp_path, "status", port=str(port))
        pid = int((state / "broker.pid").read_text())
        assert status.stdout == f"running: 127.0.0.1:{port} (pid {pid}, data {state})\n"
        # Starting a running broker is a no-op.
        assert metro_kafka(tmp_path, "start", port=str(port)).returncode == 0
        assert int((state / "broker.pid").read_text()) == pid
        # Another METRO_KAFKA_PORT does not hide the broker that runs: it is reported and
        # used where it listens.
        other = str(free_port_pair())
        assert metro_kafka(tmp_path, "status", port=other).stdout == status.stdout
        assert metro_kafka(tmp_path, "start", port=other).stdout == started.stdout
        assert (state / "bootstrap").read_text() == f"{address}\n"
    finally:
        stopped = metro_kafka(tmp_path, "stop", port=str(port))
    assert stopped.stdout == "Kafka broker stopped\n"
    assert not (state / "bootstrap").exists()
    assert metro_kafka(tmp_path, "status", port=str(port)).returncode == 3
    assert metro_kafka(tmp_path, "stop", port=str(port)).stdout == "Kafka broker was not running\n"


def test_a_port_in_use_is_named(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = metro_kafka(tmp_path, "start", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr == (f"metro: port {port} on 127.0.0.1 is in use; choose another broker "
                             "port with --port or METRO_KAFKA_PORT (the controller uses the next "
                             "port)\n")
    assert not (tmp_path / "kafka" / "broker.pid").exists()


def test_a_bad_port_setting_is_named(tmp_path):
    result = metro_kafka(tmp_path, "status", port="ninety")
    assert result.returncode == 2
    assert result.stderr == "metro: METRO_KAFKA_PORT must be a TCP port number, got 'ninety'\n"
