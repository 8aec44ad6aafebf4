"""Imports run down only: benchmarks -> applications -> services -> core, and no service
uses another (the core, metro/ with its migrations, is one layer).

Read from the source (every import statement, module-level or not), so an import that
runs the wrong way fails here the day it is written."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYER = {"bench": 4, "app": 3, "bridge": 2, "loader": 2, "producers": 2, "worker": 2,
         "metro": 1, "migrations": 1}
CORE = 1


def package_of(module: str) -> str:
    """metro.bridge.runner -> bridge; metro.config -> metro."""
    parts = module.split(".")
    if parts[0] != "metro":
        return ""
    return parts[1] if len(parts) > 1 and parts[1] in LAYER else "metro"


def imports(path: Path, package: str) -> list[str]:
    """Absolute names of the metro modules a file imports."""
    here = ["metro"] + ([] if package == "metro" else [package])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                found.append(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.append(node.module)
    return [name for name in found if name.split(".")[0] == "metro"]


def files() -> list[tuple[str, Path]]:
    out = [("metro", path) for path in (ROOT / "metro").glob("*.py")]
    for package in LAYER:
        if package != "metro" and (ROOT / package).is_dir():
            out += [(package, path) for path in (ROOT / package).rglob("*.py")]
    return out


def test_imports_run_down_only():
    wrong = []
    for package, path in files():
        for name in imports(path, package):
            target = package_of(name)
            if target == package or LAYER[target] == LAYER[package] == CORE:
                continue
            if LAYER[target] >= LAYER[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name} ({package} -> {target})")
    assert wrong == []


def test_the_check_sees_an_import_that_runs_up(tmp_path):
    sample = tmp_path / "bad.py"
    sample.write_text("from ..app import demo\nfrom metro.bridge import runner\n")
    assert imports(sample, "loader") == ["metro.app", "metro.bridge"]
    assert [package_of(name) for name in imports(sample, "loader")] == ["app", "bridge"]


def test_only_the_configuration_module_reads_the_environment():
    readers = []
    for _, path in files():
        if path == ROOT / "metro" / "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
                    and isinstance(node.value, ast.Name) and node.value.id == "os"):
                readers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    # Passing the environment on to a child process is not reading it.
    allowed = {"bench/bench_bridge.py", "bench/bench_loader.py", "bench/bench_risk.py",
               "bench/pgbench.py", "bench/bench_dashboard.py", "bench/bench_worker_lag.py"}
    assert [r for r in readers if r.split(":")[0] not in allowed] == []
