"""METRO_KAFKA_CONFIG: the properties file every Kafka client of metro takes TLS and SASL
from, mapped to kafka-python's arguments in one place, and its mistakes in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kafka_fixtures import PROJECT_ROOT

from metro import kafka_settings
from metro.kafka_settings import KafkaConfigError, client_settings, parse_properties

PLAIN_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
              'username="metro" password="s3cret";')
KNOWN = ("security.protocol, sasl.mechanism, sasl.username, sasl.password, sasl.jaas.config, "
         "ssl.ca.location, ssl.certificate.location, ssl.key.location, ssl.key.password, "
         "topic.partitions, topic.replication.factor")


@pytest.fixture
def properties(tmp_path, monkeypatch):
    """Write a properties file and point METRO_KAFKA_CONFIG at it; its path."""
    path = tmp_path / "client.properties"

    def write(text: str) -> Path:
        path.write_text(text)
        monkeypatch.setenv("METRO_KAFKA_CONFIG", str(path))
        return path

    return write


def error_of(text: str, properties) -> str:
    path = properties(text)
    with pytest.raises(KafkaConfigError) as raised:
        client_settings()
    message = str(raised.value)
    prefix = f"{path} (METRO_KAFKA_CONFIG)"
    assert message.startswith(prefix), message
    return message.removeprefix(prefix)


def test_without_a_file_clients_speak_plaintext(monkeypatch):
    monkeypatch.delenv("METRO_KAFKA_CONFIG", raising=False)
    assert client_settings() == {"security_protocol": "PLAINTEXT"}


def test_every_key_maps_to_kafka_python(properties, tmp_path):
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("-----BEGIN-----\n")
    path = properties(f"""# a client of a secured cluster
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.username=metro
sasl.password=s3cret
ssl.ca.location={tmp_path}/ca.pem
ssl.certificate.location=client.pem
ssl.key.location={tmp_path}/client.key
ssl.key.password=keypass
topic.partitions=6
topic.replication.factor=3
""")
    assert client_settings() == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "metro", "sasl_plain_password": "s3cret",
        "ssl_cafile": str(tmp_path / "ca.pem"), "ssl_certfile": str(tmp_path / "client.pem"),
        "ssl_keyfile": str(tmp_path / "client.key"), "ssl_password": "keypass"}
    chosen = kafka_settings.settings()
    assert (chosen.topic_partitions, chosen.topic_replication_factor) == (6, 3)
    assert chosen.source == path
    assert "s3cret" not in repr(chosen) and "keypass" not in repr(chosen)


def test_tls_alone_and_sasl_plaintext(properties, tmp_path):
    (tmp_path / "ca.pem").write_text("-----BEGIN-----\n")
    properties(f"security.protocol=ssl\nssl.ca.location={tmp_path}/ca.pem\n")
    assert client_settings() == {"security_protocol": "SSL",
                                 "ssl_cafile": str(tmp_path / "ca.pem")}
    # sasl.mechanism defaults to PLAIN.
    properties("security.protocol=SASL_PLAINTEXT\nsasl.username=metro\nsasl.password=pw\n")
    assert client_settings() == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                                 "sasl_plain_username": "metro", "sasl_plain_password": "pw"}


@pytest.mark.parametrize(("mechanism", "jaas"), [
    ("PLAIN", PLAIN_JAAS),
    ("SCRAM-SHA-256", 'org.apache.kafka.common.security.scram.ScramLoginModule required '
                      'username="metro" password="s3cret";'),
    # Unquoted values, no final semicolon, the line continued with a backslash.
    ("SCRAM-SHA-512", 'org.apache.kafka.common.security.scram.ScramLoginModule required \\\n'
                      '    username=metro password=s3cret'),
])
def test_jaas_config_as_kafka_users_write_it(properties, mechanism, jaas):
    properties(f"security.protocol=SASL_SSL\nsasl.mechanism={mechanism}\n"
               f"sasl.jaas.config={jaas}\n")
    assert client_settings() == {"security_protocol": "SASL_SSL", "sasl_mechanism": mechanism,
                                 "sasl_plain_username": "metro", "sasl_plain_password": "s3cret"}


def test_jaas_quoted_password_with_escapes(properties):
    properties("security.protocol=SASL_PLAINTEXT\nsasl.jaas.config=org.apache.kafka.common."
               'security.plain.PlainLoginModule required username="me" password="a\\\\"b;c";\n')
    assert client_settings()["sasl_plain_password"] == 'a"b;c'


def test_java_properties_syntax():
    text = ("! comment\n  # comment\n\nsecurity.protocol : SASL_SSL\nsasl.username metro\n"
            "sasl.password=p\\u00e4ss\\=word\\\\\n"
            "sasl.jaas.config=first \\\n   second\n")
    assert parse_properties(text) == [
        (4, "security.protocol", "SASL_SSL"), (5, "sasl.username", "metro"),
        (6, "sasl.password", "päss=word\\"), (7, "sasl.jaas.config", "first second")]


def test_unknown_key_names_key_file_and_line(properties):
    assert error_of("security.protocol=SASL_SSL\nsasl.usename=metro\n", properties) == (
        f", line 2: unknown key 'sasl.usename' (metro reads {KNOWN})")


def test_bootstrap_servers_are_not_read_from_the_file(properties):
    assert error_of("bootstrap.servers=kafka:9092\n", properties) == (
        ", line 1: bootstrap.servers is not read from this file: give the servers with --kafka"
        " or METRO_KAFKA")


def test_missing_file(monkeypatch, tmp_path):
    monkeypatch.setenv("METRO_KAFKA_CONFIG", str(tmp_path / "nope.properties"))
    with pytest.raises(KafkaConfigError) as raised:
        client_settings()
    assert str(raised.value) == (f"METRO_KAFKA_CONFIG names {tmp_path / 'nope.properties'}, "
                                 "which does not exist")


@pytest.mark.parametrize(("text", "message"), [
    ("security.protocol=TLS\n",
     ", line 1: security.protocol must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, "
     "not 'TLS'"),
    ("security.protocol=SASL_SSL\nsasl.mechanism=GSSAPI\nsasl.username=u\nsasl.password=p\n",
     ", line 2: sasl.mechanism must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, not 'GSSAPI'"),
    ("topic.partitions=0\n",
     ", line 1: topic.partitions must be a whole number of at least 1, not '0'"),
    ("topic.replication.factor=three\n",
     ", line 1: topic.replication.factor must be a whole number of at least 1, not 'three'"),
    ("security.protocol=\n", ", line 1: security.protocol has no value"),
    ("security.protocol=SASL_SSL\nsasl.username=metro\n",
     ": security.protocol SASL_SSL needs sasl.password (or sasl.jaas.config)"),
    ("sasl.username=metro\nsasl.password=pw\n",
     ", line 1: sasl.username is set but security.protocol is PLAINTEXT; SASL needs "
     "SASL_PLAINTEXT or SASL_SSL"),
    ("security.protocol=SASL_PLAINTEXT\nsasl.username=u\nsasl.password=p\n"
     "ssl.ca.location=/ca.pem\n",
     ", line 4: ssl.ca.location is set but security.protocol is SASL_PLAINTEXT; TLS needs SSL "
     "or SASL_SSL"),
    ("security.protocol=SSL\nssl.ca.location=/nowhere/ca.pem\n",
     ", line 2: ssl.ca.location: no such file /nowhere/ca.pem"),
    (f"security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-256\nsasl.jaas.config={PLAIN_JAAS}\n",
     ", line 3: sasl.jaas.config uses PlainLoginModule, which does not log in with "
     "sasl.mechanism SCRAM-SHA-256"),
    (f"security.protocol=SASL_SSL\nsasl.username=metro\nsasl.jaas.config={PLAIN_JAAS}\n",
     ", line 3: give sasl.jaas.config or sasl.username and sasl.password, not both "
     "(sasl.username is set too)"),
    ("security.protocol=SASL_SSL\nsasl.jaas.config=org.apache.kafka.common.security.oauthbearer."
     "OAuthBearerLoginModule required;\n",
     ", line 2: sasl.jaas.config: metro logs in with PlainLoginModule or ScramLoginModule only, "
     "not OAuthBearerLoginModule"),
    ("security.protocol=SASL_SSL\nsasl.jaas.config=org.apache.kafka.common.security.plain."
     'PlainLoginModule required username="metro";\n',
     ", line 2: sasl.jaas.config has no password"),
])
def test_bad_values_are_one_line_naming_the_key(properties, text, message):
    assert error_of(text, properties) == message


def test_no_error_repeats_a_password(properties):
    broken = ("security.protocol=SASL_SSL\nsasl.jaas.config=org.apache.kafka.common.security."
              'plain.PlainLoginModule required username="metro" password="s3cret-pw\n')
    message = error_of(broken, properties)
    assert message.startswith(", line 2: sasl.jaas.config must read: ")
    assert "s3cret-pw" not in message


def run(module: str, *args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "METRO_KAFKA_CONFIG": str(config)}
    env.pop("METRO_KAFKA", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_commands_exit_2_with_one_line(tmp_path):
    config = tmp_path / "kafka.properties"
    config.write_text("security.protocol=SASL_SSL\nsasl.user=metro\n")
    line = (f"{config} (METRO_KAFKA_CONFIG), line 2: unknown key 'sasl.user' "
            f"(metro reads {KNOWN})\n")
    # Nothing needs to listen there: the file is read before any connection.
    topics = run("metro.app.cli", "topics", "list", "--kafka", "127.0.0.1:9", config=config)
    assert (topics.returncode, topics.stdout, topics.stderr) == (2, "", f"metro: {line}")
    payments = run("metro.producers.cli", "payments", "--duration", "1", "--via", "kafka",
                   "--kafka", "127.0.0.1:9", config=config)
    assert payments.returncode == 2
    assert payments.stderr.splitlines()[-1:] == [f"producers: {line.strip()}"]
    assert "Traceback" not in payments.stderr
