"""How metro's Kafka clients connect: TLS and SASL from the file METRO_KAFKA_CONFIG names.

The bootstrap servers come from --kafka or METRO_KAFKA (metro.config.kafka_servers);
everything else a client needs to reach a secured cluster comes from one Java-style
properties file, written as Kafka users write their client.properties:

    security.protocol=SASL_SSL
    sasl.mechanism=SCRAM-SHA-512
    sasl.username=metro
    sasl.password=secret
    ssl.ca.location=/etc/metro/kafka-ca.pem

`client_settings()` maps the file to kafka-python's arguments; every client metro
creates gets them through `new_client()`, which also turns a refused login into
one line naming the mechanism and the user (kafka-python only reports that it
could not bootstrap). Any problem with the file is a KafkaConfigError: one line
naming the file, the line and the key, never a password.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from metro import config
from metro.errors import MetroError

T = TypeVar("T")

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# The JAAS login module each mechanism is written with in sasl.jaas.config.
LOGIN_MODULES = {
    "org.apache.kafka.common.security.plain.PlainLoginModule": ("PLAIN",),
    "org.apache.kafka.common.security.scram.ScramLoginModule": ("SCRAM-SHA-256",
                                                                "SCRAM-SHA-512"),
}
KEYS = ("security.protocol", "sasl.mechanism", "sasl.username", "sasl.password",
        "sasl.jaas.config", "ssl.ca.location", "ssl.certificate.location",
        "ssl.key.location", "ssl.key.password", "topic.partitions",
        "topic.replication.factor")
# Values never repeated in a message.
SECRET_KEYS = ("sasl.password", "sasl.jaas.config", "ssl.key.password")
# Keys Kafka users often carry over from other tools, with where metro takes them from.
ELSEWHERE = {"bootstrap.servers": "give the servers with --kafka or METRO_KAFKA"}
FILE_KEYS = ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location")
# How long the diagnosis of a failed connection may try to log in.
PROBE_TIMEOUT_MS = 5000


class KafkaConfigError(MetroError):
    """METRO_KAFKA_CONFIG names a file metro cannot use."""


class AuthenticationFailed(MetroError):
    """The broker refused metro's SASL login."""


@dataclass(frozen=True)
class KafkaSettings:
    """The file's settings; defaults when there is no file."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = None
    ssl_ca: Path | None = None
    ssl_certificate: Path | None = None
    ssl_key: Path | None = None
    ssl_key_password: str | None = None
    topic_partitions: int | None = None
    topic_replication_factor: int | None = None
    source: Path | None = None

    def __repr__(self) -> str:  # no secret in a log line or a traceback
        return (f"KafkaSettings(security_protocol={self.security_protocol!r}, "
                f"sasl_mechanism={self.sasl_mechanism!r}, username={self.username!r}, "
                f"source={str(self.source) if self.source else None!r})")

    @property
    def sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def kafka_python(self) -> dict[str, Any]:
        """kafka-python 3 arguments (security_protocol, sasl_*, ssl_*)."""
        args: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl:
            args.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                        sasl_plain_password=self.password)
        if self.tls:
            for name, value in (("ssl_cafile", self.ssl_ca),
                                ("ssl_certfile", self.ssl_certificate),
                                ("ssl_keyfile", self.ssl_key)):
                if value is not None:
                    args[name] = str(value)
            if self.ssl_key_password is not None:
                args["ssl_password"] = self.ssl_key_password
        return args


# --- the properties format (java.util.Properties) ------------------------------------

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each logical line: comments and blank lines dropped,
    a line ending in an odd number of backslashes continued on the next."""
    result: list[tuple[int, str]] = []
    pending: str | None = None
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip(" \t\f")
        if pending is None:
            if not line or line[0] in "#!":
                continue
            start, pending = number, ""
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:
            pending += line[:-1]
            continue
        result.append((start, pending + line))
        pending = None
    if pending is not None:
        result.append((start, pending))
    return result


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2:i + 6]):
            out.append(chr(int(text[i + 2:i + 6], 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


def parse_properties(text: str) -> list[tuple[int, str, str]]:
    """(line number, key, value) of each entry, in file order, as java.util.Properties reads
    them: key and value separated by '=', ':' or white space, backslash escapes."""
    entries = []
    for number, line in _logical_lines(text):
        i = 0
        while i < len(line) and line[i] not in "=: \t\f":
            i += 2 if line[i] == "\\" else 1
        key = line[:i]
        rest = line[i:].lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        entries.append((number, _unescape(key), _unescape(rest)))
    return entries


# --- reading and checking --------------------------------------------------------------

_JAAS = re.compile(r"^\s*(?P<module>[\w.$]+)\s+(?P<flag>\w+)(?P<options>.*?);?\s*$", re.S)
_JAAS_OPTION = re.compile(r'\s*(?P<name>[\w.-]+)\s*=\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"'
                          r"|(?P<bare>[^\s;\"]+))", re.S)


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, message: str, line: int | None = None) -> KafkaConfigError:
        where = f", line {line}" if line is not None else ""
        return KafkaConfigError(f"{self.path} (METRO_KAFKA_CONFIG){where}: {message}")


def _jaas(reader: _Reader, line: int, text: str) -> tuple[tuple[str, ...], str, str]:
    """The mechanisms a sasl.jaas.config allows, and its username and password."""
    form = ('sasl.jaas.config must read: org.apache.kafka.common.security.plain.'
            'PlainLoginModule (or ...scram.ScramLoginModule) required username="..." '
            'password="...";')
    match = _JAAS.match(text)
    if match is None:
        raise reader.error(form, line)
    module = match["module"]
    if module not in LOGIN_MODULES:
        short = module.rsplit(".", 1)[-1]
        raise reader.error(f"sasl.jaas.config: metro logs in with PlainLoginModule or "
                           f"ScramLoginModule only, not {short}", line)
    if match["flag"] != "required":
        raise reader.error(form, line)
    options: dict[str, str] = {}
    rest = match["options"]
    position = 0
    while rest[position:].strip():
        option = _JAAS_OPTION.match(rest, position)
        if option is None:
            raise reader.error(form, line)
        quoted = option["quoted"]
        options[option["name"]] = (re.sub(r"\\(.)", r"\1", quoted) if quoted is not None
                                   else option["bare"])
        position = option.end()
    missing = [name for name in ("username", "password") if not options.get(name)]
    if missing:
        raise reader.error(f"sasl.jaas.config has no {' and no '.join(missing)}", line)
    return LOGIN_MODULES[module], options["username"], options["password"]


def _choice(reader: _Reader, line: int, key: str, value: str, choices: tuple[str, ...]) -> str:
    if value.upper() not in choices:
        raise reader.error(f"{key} must be one of {', '.join(choices)}, not {value!r}", line)
    return value.upper()


def _positive(reader: _Reader, line: int, key: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise reader.error(f"{key} must be a whole number of at least 1, not {value!r}", line)
    return int(value)


def _file(reader: _Reader, line: int, key: str, value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = reader.path.parent / path      # relative to the properties file, as Kafka does not
    if not path.is_file():
        raise reader.error(f"{key}: no such file {path}", line)
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise reader.error(f"{key}: cannot read {path}: {error.strerror}", line) from None
    return path


def read(path: Path) -> KafkaSettings:
    """The settings of a properties file, or KafkaConfigError."""
    reader = _Reader(path)
    if not path.exists():
        raise KafkaConfigError(f"METRO_KAFKA_CONFIG names {path}, which does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise reader.error("not UTF-8 text") from None
    except OSError as error:
        raise KafkaConfigError(f"METRO_KAFKA_CONFIG names {path}, which cannot be read: "
                               f"{error.strerror}") from None

    values: dict[str, tuple[int, str]] = {}
    for number, key, given in parse_properties(text):
        if key in ELSEWHERE:
            raise reader.error(f"{key} is not read from this file: {ELSEWHERE[key]}", number)
        if key not in KEYS:
            raise reader.error(f"unknown key {key!r} (metro reads {', '.join(KEYS)})", number)
        if not given.strip():
            raise reader.error(f"{key} has no value", number)
        values[key] = (number, given.strip())    # the last one wins, as in Kafka

    def get(key: str) -> tuple[int, str | None]:
        return values.get(key, (0, None))

    fields: dict[str, Any] = {"source": path}
    line, value = get("security.protocol")
    protocol = "PLAINTEXT" if value is None else _choice(reader, line, "security.protocol",
                                                          value, PROTOCOLS)
    fields["security_protocol"] = protocol
    sasl = protocol.startswith("SASL_")
    tls = protocol in ("SSL", "SASL_SSL")

    for key in values:
        if key.startswith("sasl.") and not sasl:
            raise reader.error(f"{key} is set but security.protocol is {protocol}; SASL needs "
                               "SASL_PLAINTEXT or SASL_SSL", values[key][0])
        if key.startswith("ssl.") and not tls:
            raise reader.error(f"{key} is set but security.protocol is {protocol}; TLS needs "
                               "SSL or SASL_SSL", values[key][0])

    if sasl:
        line, value = get("sasl.mechanism")
        mechanism = "PLAIN" if value is None else _choice(reader, line, "sasl.mechanism",
                                                          value, MECHANISMS)
        jaas_line, jaas = get("sasl.jaas.config")
        if jaas is not None:
            also = [key for key in ("sasl.username", "sasl.password") if key in values]
            if also:
                raise reader.error(f"give sasl.jaas.config or sasl.username and "
                                   f"sasl.password, not both ({also[0]} is set too)", jaas_line)
            allowed, username, password = _jaas(reader, jaas_line, jaas)
            if mechanism not in allowed:
                module = "PlainLoginModule" if allowed == ("PLAIN",) else "ScramLoginModule"
                raise reader.error(f"sasl.jaas.config uses {module}, which does not log in "
                                   f"with sasl.mechanism {mechanism}", jaas_line)
        else:
            missing = [key for key in ("sasl.username", "sasl.password") if key not in values]
            if missing:
                raise reader.error(f"security.protocol {protocol} needs {' and '.join(missing)}"
                                   " (or sasl.jaas.config)")
            username, password = values["sasl.username"][1], values["sasl.password"][1]
        fields.update(sasl_mechanism=mechanism, username=username, password=password)

    for key, name in zip(FILE_KEYS, ("ssl_ca", "ssl_certificate", "ssl_key"), strict=True):
        line, value = get(key)
        if value is not None:
            fields[name] = _file(reader, line, key, value)
    if "ssl.key.password" in values:
        if "ssl.key.location" not in values and "ssl.certificate.location" not in values:
            raise reader.error("ssl.key.password is set but there is no ssl.key.location",
                               values["ssl.key.password"][0])
        fields["ssl_key_password"] = values["ssl.key.password"][1]
    if "ssl.key.location" in values and "ssl.certificate.location" not in values:
        raise reader.error("ssl.key.location is set but ssl.certificate.location is not",
                           values["ssl.key.location"][0])
    for key, name in (("topic.partitions", "topic_partitions"),
                      ("topic.replication.factor", "topic_replication_factor")):
        line, value = get(key)
        if value is not None:
            fields[name] = _positive(reader, line, key, value)
    return KafkaSettings(**fields)


def settings() -> KafkaSettings:
    """The settings of METRO_KAFKA_CONFIG; the defaults (PLAINTEXT) when it is not set."""
    path = config.kafka_config_file()
    return KafkaSettings() if path is None else read(path)


def client_settings(chosen: KafkaSettings | None = None) -> dict[str, Any]:
    """kafka-python arguments for every metro client: METRO_KAFKA_CONFIG's TLS and SASL."""
    return (chosen or settings()).kafka_python()


# --- making clients ----------------------------------------------------------------------

def new_client(factory: Callable[..., T], bootstrap: str, **options: Any) -> T:
    """factory(bootstrap_servers=bootstrap, **client_settings(), **options).

    kafka-python reports a refused SASL login only as a failed bootstrap, after its
    bootstrap timeout; so with SASL the login is tried first, once, and a refused one
    raises AuthenticationFailed at once.
    """
    chosen = settings()
    if chosen.sasl:
        check_login(bootstrap, chosen)
    return factory(bootstrap_servers=bootstrap, **chosen.kafka_python(), **options)


def login_failure(bootstrap: str, chosen: KafkaSettings, reason: str) -> AuthenticationFailed:
    where = f" (check {chosen.source})" if chosen.source else ""
    return AuthenticationFailed(
        f"Kafka at {bootstrap}: authentication failed for user {chosen.username!r} "
        f"with SASL {chosen.sasl_mechanism}: {reason}{where}")


def check_login(bootstrap: str, chosen: KafkaSettings) -> None:
    """Log in to the first bootstrap server that answers; AuthenticationFailed when the
    broker refuses the credentials or the mechanism, nothing otherwise (an unreachable
    broker included: the caller reports that)."""
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            continue
        try:
            refusal = _login(host.strip("[]"), int(port), chosen)
        except (OSError, ssl.SSLError, ValueError, LookupError, TypeError, AttributeError):
            continue  # not answering, or a kafka-python without these protocol classes
        if refusal is not None:
            raise login_failure(bootstrap, chosen, refusal)
        return


def _login(host: str, port: int, chosen: KafkaSettings) -> str | None:
    """One SASL handshake and authentication: the broker's reason when it refuses, else None.

    Blocking and on its own socket: kafka-python's clients see the broker close the
    connection after a refusal and cannot always tell it from an outage.
    """
    from kafka.errors import for_code
    from kafka.net.sasl import get_sasl_mechanism
    from kafka.protocol.parser import KafkaProtocol
    from kafka.protocol.sasl import SaslAuthenticateRequest, SaslHandshakeRequest

    timeout = PROBE_TIMEOUT_MS / 1000
    raw = socket.create_connection((host, port), timeout=timeout)
    sock: socket.socket = raw
    try:
        if chosen.tls:
            context = ssl.create_default_context(
                cafile=str(chosen.ssl_ca) if chosen.ssl_ca else None)
            if chosen.ssl_certificate:
                context.load_cert_chain(str(chosen.ssl_certificate),
                                        str(chosen.ssl_key) if chosen.ssl_key else None,
                                        chosen.ssl_key_password)
            sock = context.wrap_socket(raw, server_hostname=host)
        protocol = KafkaProtocol(client_id="metro-login-check")

        def exchange(request: Any) -> Any:
            protocol.send_request(request)
            sock.sendall(protocol.send_bytes())
            while True:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("the broker closed the connection")
                responses = protocol.receive_bytes(data)
                if responses:
                    return responses[0][1]

        handshake = exchange(SaslHandshakeRequest(version=1, mechanism=chosen.sasl_mechanism))
        if chosen.sasl_mechanism not in handshake.mechanisms:
            offered = ", ".join(handshake.mechanisms) or "none"
            return f"the broker does not offer this mechanism (it offers {offered})"
        # (security_protocol only decides whether the mechanism warns about a clear-text
        # login; the client made next warns once, this check need not add its own.)
        mechanism = get_sasl_mechanism(chosen.sasl_mechanism)(
            host=host, **{**chosen.kafka_python(), "security_protocol": "SASL_SSL"})
        while not mechanism.is_done():
            reply = exchange(SaslAuthenticateRequest(version=1, auth_bytes=mechanism.auth_bytes()))
            if reply.error_code:
                reason = (reply.error_message or for_code(reply.error_code).__name__).strip()
                return reason.removeprefix("Authentication failed: ")
            mechanism.receive(reply.auth_bytes)
        return None if mechanism.is_authenticated() else "the broker's answer did not verify"
    finally:
        sock.close()
