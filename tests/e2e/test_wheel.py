"""The wheel: built from the repository, installed (not editable) into a fresh virtual
environment, it holds one importable name, metro, with its SQL, migrations and sample
data, and `metro install` works from any directory."""

import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(out), str(PROJECT_ROOT)],
                   check=True, capture_output=True, cwd=out)
    (built,) = out.glob("metro-*.whl")
    return built


def test_wheel_installs_one_top_level_name_with_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.startswith("metro-")}
    assert top_level == {"metro"}
    for expected in ("metro/sql/", "metro/procedures/", "metro/migrations/env.py",
                     "metro/migrations/versions/", "metro/data/stations.csv",
                     "metro/bridge/runner.py", "metro/app/cli.py", "metro/py.typed"):
        assert any(name.startswith(expected) for name in names), expected
    assert not any(name.startswith("metro/tests") for name in names)


def test_installed_wheel_installs_the_schema_from_another_directory(wheel, tmp_path, empty_db):
    venv = tmp_path / "venv"
    # The fresh environment borrows the test environment's dependencies (already
    # installed) but not its editable metro: only the wheel provides metro.
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    dependencies = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site) / "dependencies.pth").write_text("\n".join(dependencies) + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    located = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import metro.schema; print(metro.schema.__file__)"],
                             check=True, capture_output=True, text=True, cwd=tmp_path)
    assert located.stdout.startswith(site), located.stdout

    dsn = empty_db("wheel")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([str(venv / "bin" / "metro"), "install"], capture_output=True,
                            text=True, cwd=elsewhere,
                            env={"METRO_DATABASE_URL": dsn, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("metro schema installed at revision ")
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO metro.stations (station_id, name, fare) VALUES (1, 'A', 250)")
        assert conn.execute("SELECT * FROM metro.validate_entry(1, 1)").fetchone() == (
            False, "Card Invalid")
