"""The embedded PostgreSQL admits only the owner of METRO_HOME: another local OS user is
refused, whatever it tries, and a data directory from an older release that trusted
every local user is closed on its next start."""

import os
import subprocess

import pytest

from metro.embedded import EmbeddedServer, bin_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="connecting as another OS user needs root")


def psql_as(user: str, server: EmbeddedServer) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir() / "psql"), "-X", "-A", "-t", "-d", server.conninfo(),
                           "-c", "SELECT current_user"],
                          user=user, capture_output=True, text=True, timeout=30, cwd="/")


@pytest.fixture
def server(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    embedded = EmbeddedServer(home)
    embedded.start()
    yield embedded
    embedded.stop()


def test_only_the_owner_connects(server):
    assert psql_as("root", server).stdout == "postgres\n"
    # The owner may log in as another role (a role that may only call the functions).
    subprocess.run([str(bin_dir() / "psql"), "-X", "-d", server.conninfo(), "-c",
                    "CREATE ROLE turnstile LOGIN"], check=True, capture_output=True)
    as_turnstile = subprocess.run(
        [str(bin_dir() / "psql"), "-X", "-A", "-t", "-d", server.conninfo() + " user=turnstile",
         "-c", "SELECT current_user"], capture_output=True, text=True, timeout=30)
    assert as_turnstile.stdout == "turnstile\n", as_turnstile.stderr
    refused = psql_as("nobody", server)
    assert refused.returncode == 2
    assert "Permission denied" in refused.stderr
    assert oct(server.socket_dir.stat().st_mode & 0o777) == "0o700"


def test_peer_authentication_even_when_the_socket_is_reachable(server):
    # Were the socket's directory opened to everyone, the server itself still refuses.
    server.socket_dir.chmod(0o755)
    (server.socket_dir / ".s.PGSQL.5432").chmod(0o777)
    refused = psql_as("nobody", server)
    assert refused.returncode == 2
    assert 'Peer authentication failed for user "postgres"' in refused.stderr


def test_an_old_trusting_data_directory_is_closed_on_start(server):
    server.stop()
    (server.pgdata / "pg_hba.conf").write_text("local all all trust\n")
    server.start()
    server.socket_dir.chmod(0o755)
    (server.socket_dir / ".s.PGSQL.5432").chmod(0o777)
    assert 'Peer authentication failed' in psql_as("nobody", server).stderr
