"""A real single-node Apache Kafka broker (KRaft) for tests and local use.

`metro kafka start|stop|status` runs it.

The broker's jars (org.apache.kafka:kafka_2.13 and an SLF4J binding) come from
Maven Central through the machine's `mvn`, once: they are copied into a cache
directory (METRO_KAFKA_CACHE, default ~/.cache/metro) that every later start
reuses. The broker's configuration, log directory and output live under
METRO_HOME/kafka. It listens on 127.0.0.1 only, with a small heap.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from metro import config
from metro.errors import MetroError
from metro.service_cli import tcp_port

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
# Kafka 4.1 logs through the SLF4J 1.7 API; the simple binding writes to stderr.
SLF4J_VERSION = "1.7.36"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>metro</groupId>
  <artifactId>metro-kafka-broker</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>{slf4j}</version>
    </dependency>
  </dependencies>
</project>
"""

SERVER_PROPERTIES = """# Written by `metro kafka start` on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners={listener}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners={listener}://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name={listener}
listener.security.protocol.map={listener}:{listener},CONTROLLER:PLAINTEXT
log.dirs={log_dir}
num.partitions=1
auto.create.topics.enable={auto_create}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
background.threads=2
log.retention.hours=24
"""

# With users (`--sasl-user`, tests): the client listener asks for SASL PLAIN; the
# controller listener stays PLAINTEXT. The broker talks to itself as the first user.
SASL_PROPERTIES = """sasl.enabled.mechanisms=PLAIN
sasl.mechanism.inter.broker.protocol=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}
"""

# Kept simple so that neither the properties file nor the JAAS syntax needs escapes.
_SASL_USER = re.compile(r"^[A-Za-z0-9._-]+$")
_SASL_PASSWORD = re.compile(r'^[^"\\\s]+$')


def check_sasl_users(users: dict[str, str]) -> None:
    """Users and passwords the broker's JAAS line can carry as written; else KafkaUnavailable."""
    for user, password in users.items():
        if not _SASL_USER.match(user):
            raise KafkaUnavailable(f"SASL user name {user!r}: use letters, digits, '.', '_' "
                                   "and '-' only")
        if not _SASL_PASSWORD.match(password):
            raise KafkaUnavailable(f"the password of SASL user {user!r} must not be empty nor "
                                   "hold spaces, quotes or backslashes")


def sasl_jaas(users: dict[str, str]) -> str:
    """The PLAIN login module's line: the broker's own login (the first user) and every user."""
    admin, password = next(iter(users.items()))
    accounts = " ".join(f'user_{user}="{secret}"' for user, secret in users.items())
    return ("org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{admin}" password="{password}" {accounts};')


class KafkaUnavailable(MetroError):
    """The broker could not be fetched, started or reached."""


def cache_dir() -> Path:
    """Where fetched broker jars are kept between runs: METRO_KAFKA_CACHE or ~/.cache/metro."""
    return config.kafka_cache().resolve() / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}"


def fetch_jars(cache: Path | None = None) -> Path:
    """The directory of broker jars, fetched from Maven Central with mvn on first use."""
    target = cache or cache_dir()
    libs = target / "libs"
    complete = libs / ".complete"
    if complete.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaUnavailable("Maven (mvn) is needed once to fetch the Kafka broker from "
                               "Maven Central; install it (apt-get install maven)")
    target.mkdir(parents=True, exist_ok=True)
    (target / "pom.xml").write_text(POM.format(kafka=KAFKA_VERSION, scala=SCALA_VERSION,
                                               slf4j=SLF4J_VERSION))
    partial = target / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-B", "-q", "-f", str(target / "pom.xml"), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={partial}"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines()
                 if "ERROR" in line] or ["(no output)"]
        raise KafkaUnavailable(f"mvn could not fetch kafka_{SCALA_VERSION} {KAFKA_VERSION}: "
                               f"{_strip_ansi(lines[0])}")
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    complete.touch()
    return libs


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text).strip()


def java_executable() -> str:
    """Java 17 or newer, from JAVA_HOME or PATH."""
    home = config.java_home()
    java = str(home / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise KafkaUnavailable("Java 17 or newer is needed to run the Kafka broker; "
                               "install it (apt-get install openjdk-17-jre-headless)")
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', result.stderr)
    if match is None or int(match.group(1)) < 17:
        raise KafkaUnavailable(f"Java 17 or newer is needed to run Kafka {KAFKA_VERSION}; "
                               f"{java} reports: {result.stderr.splitlines()[0:1]}")
    return java


def free_port_pair() -> int:
    """A port p such that p and p + 1 are free on 127.0.0.1 (broker and controller)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port < 65000 and port_free(port + 1):
            return port
    raise KafkaUnavailable("no two consecutive free ports on 127.0.0.1")


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class KafkaBroker:
    """One broker: state under home/kafka, listening on 127.0.0.1:port (controller: port+1)."""

    home: Path
    port: int = config.DEFAULT_KAFKA_PORT
    heap: str = config.DEFAULT_KAFKA_HEAP
    # SASL PLAIN users (name -> password): the client listener is SASL_PLAINTEXT then.
    sasl_users: dict[str, str] | None = None
    # Whether a topic is made when a client first names it (tests also try clusters that
    # create topics only through their tools).
    auto_create_topics: bool = True
    # The broker outlives `metro kafka start`; a caller that keeps this object (the
    # tests) also keeps the child process handle, to collect its exit status.
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def state_dir(self) -> Path:
        return self.home / "kafka"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def output_file(self) -> Path:
        return self.state_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    @property
    def address_file(self) -> Path:
        """Read by metro's clients (metro.config) to find the broker while it runs."""
        return self.state_dir / "bootstrap"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        """The broker's process id when it runs from this state directory, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        # A recycled pid belongs to another program: trust it only if it runs our config.
        return pid if str(self.config_file).encode() in cmdline else None

    def running(self) -> bool:
        return self.pid() is not None

    @property
    def listener(self) -> str:
        """The security protocol of the client listener."""
        return "SASL_PLAINTEXT" if self.sasl_users else "PLAINTEXT"

    def server_properties(self) -> str:
        text = SERVER_PROPERTIES.format(listener=self.listener, port=self.port,
                                        controller_port=self.port + 1, log_dir=self.log_dir,
                                        auto_create=str(self.auto_create_topics).lower())
        if self.sasl_users:
            check_sasl_users(self.sasl_users)
            text += SASL_PROPERTIES.format(jaas=sasl_jaas(self.sasl_users))
        return text

    def client_settings(self) -> dict[str, object]:
        """kafka-python arguments for a client of this broker (as the first SASL user)."""
        if not self.sasl_users:
            return {}
        user, password = next(iter(self.sasl_users.items()))
        return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                "sasl_plain_username": user, "sasl_plain_password": password}

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Fetch, format on first use and start the broker; return once it accepts clients."""
        if self.running():
            self.wait_ready(timeout)
            return
        for port in (self.port, self.port + 1):
            if not port_free(port):
                raise KafkaUnavailable(
                    f"port {port} on 127.0.0.1 is in use; choose another broker port with "
                    "--port or METRO_KAFKA_PORT (the controller uses the next port)")
        libs = fetch_jars()
        java = java_executable()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.server_properties())
        classpath = f"{libs}/*"
        if not (self.log_dir / "meta.properties").exists():
            self._format(java, classpath)
        with open(self.output_file, "ab") as output:
            process = subprocess.Popen(
                [java, f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseSerialGC",
                 "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
                 "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
                 "-Dorg.slf4j.simpleLogger.showDateTime=true",
                 "-cp", classpath, "kafka.Kafka", str(self.config_file)],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True)
        self._process = process
        self.pid_file.write_text(f"{process.pid}\n")
        self.address_file.write_text(f"{self.bootstrap}\n")
        try:
            self.wait_ready(timeout, process)
        except KafkaUnavailable:
            self.stop()
            raise

    def _format(self, java: str, classpath: str) -> None:
        # A URL-safe base64 id may begin with "-": passed as --cluster-id=ID so that
        # kafka-storage cannot take it for an option.
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        result = subprocess.run(
            [java, "-Xmx128m", "-cp", classpath, "kafka.tools.StorageTool", "format",
             f"--cluster-id={cluster_id}", "-c", str(self.config_file)],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            raise KafkaUnavailable(f"formatting the KRaft log directory {self.log_dir} failed: "
                                   f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}")

    def wait_ready(self, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
        """Block until a client can fetch cluster metadata, the process dies or timeout passes."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + timeout
        while True:
            if process is not None and process.poll() is not None:
                raise KafkaUnavailable(f"the Kafka broker exited with code {process.returncode} "
                                       f"during start; see {self.output_file}")
            if not _accepts_connections(self.port):
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(f"the Kafka broker did not listen on {self.bootstrap} "
                                           f"within {timeout:.0f} s; see {self.output_file}")
                time.sleep(0.3)
                continue
            if not self.sasl_users and self._listens_with_sasl():
                return  # started with users this object does not know: listening must do
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap,
                                         request_timeout_ms=5000, **self.client_settings())
                try:
                    admin.describe_cluster()
                finally:
                    admin.close()
                return
            except (KafkaError, OSError):
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(f"the Kafka broker did not accept clients on "
                                           f"{self.bootstrap} within {timeout:.0f} s; "
                                           f"see {self.output_file}") from None
                time.sleep(0.5)

    def _listens_with_sasl(self) -> bool:
        try:
            return "sasl.enabled.mechanisms" in self.config_file.read_text()
        except OSError:
            return False

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after timeout); False when it was not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            self.address_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.pid() is not None and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                _reap(pid)
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        self.address_file.unlink(missing_ok=True)
        if self._process is not None:
            self._process.wait()
            self._process = None
        return True


def _accepts_connections(port: int) -> bool:
    # A plain TCP probe first: kafka-python leaks a socket per refused connection.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _reap(pid: int) -> None:
    """Collect the broker's exit status when this process started it (no zombie left)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def local_broker(port: int | None = None,
                 sasl_users: dict[str, str] | None = None) -> KafkaBroker:
    """The broker of `metro kafka`, under METRO_HOME: on the port it runs on when it
    runs, else on --port or METRO_KAFKA_PORT (with SASL PLAIN users, when given)."""
    home = config.metro_home()
    running = KafkaBroker(home, _recorded_port(), config.kafka_heap())
    if running.running():
        return running
    try:
        chosen = port if port is not None else config.kafka_port()
    except config.ConfigError as error:
        raise KafkaUnavailable(str(error)) from None
    return KafkaBroker(home, chosen, config.kafka_heap(), sasl_users or None)


def _sasl_user(text: str) -> tuple[str, str]:
    user, colon, password = text.partition(":")
    if not colon or not user or not password:
        raise argparse.ArgumentTypeError("give USER:PASSWORD")
    return user, password


def _recorded_port() -> int:
    """The port in the address the broker recorded when it started (0: none)."""
    _, _, port = config.local_kafka_bootstrap().rpartition(":")
    return int(port) if port.isdigit() else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    kafka = sub.add_parser("kafka", help="run the project's single-node Kafka broker (KRaft)")
    kafka.add_argument("action", choices=["start", "stop", "status"])
    kafka.add_argument("--port", type=tcp_port(65534), default=None,
                       help=f"broker port on 127.0.0.1 (default METRO_KAFKA_PORT or "
                            f"{config.DEFAULT_KAFKA_PORT}); the controller uses the next one")
    kafka.add_argument("--sasl-user", type=_sasl_user, action="append", metavar="USER:PASSWORD",
                       help="start: the client listener asks for SASL PLAIN (SASL_PLAINTEXT) "
                            "and admits this user; repeat for more users")
    kafka.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    broker = local_broker(args.port, dict(args.sasl_user or ()))
    if args.action == "start":
        if not (cache_dir() / "libs" / ".complete").exists():
            print(f"fetching Kafka {KAFKA_VERSION} from Maven Central with mvn (once) ...",
                  flush=True)
        broker.start()
        print(f"Kafka {KAFKA_VERSION} running: {broker.bootstrap} (data {broker.state_dir}); "
              f"use --kafka {broker.bootstrap} or METRO_KAFKA={broker.bootstrap}")
        if broker.sasl_users:
            print(f"clients log in with SASL PLAIN ({', '.join(broker.sasl_users)}): "
                  "security.protocol=SASL_PLAINTEXT in METRO_KAFKA_CONFIG")
    elif args.action == "stop":
        print("Kafka broker stopped" if broker.stop() else "Kafka broker was not running")
    elif not broker.running():
        print(f"stopped (data {broker.state_dir})")
        return 3
    else:
        print(f"running: {broker.bootstrap} (pid {broker.pid()}, data {broker.state_dir})")
    return 0
