"""The revisions' Python files, read without a database: a downgrade that refuses names
its own revision (a copied file once named the revision before it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from metro import config

REVISIONS = sorted(Path(config.MIGRATIONS_DIR, "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"revision_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_revision_is_read():
    assert [path.name[:4] for path in REVISIONS] == [f"{n:04d}" for n in
                                                     range(1, len(REVISIONS) + 1)]


@pytest.mark.parametrize("path", REVISIONS, ids=[path.stem for path in REVISIONS])
def test_a_refused_downgrade_names_its_own_revision(path):
    module = load(path)
    assert path.name.startswith(module.revision + "_")
    text = path.read_text()
    if "refuse_downgrade(revision)" not in text and "raise NotImplementedError" not in text:
        return  # a downgrade of its own (it needs alembic's connection)
    with pytest.raises(NotImplementedError) as refused:
        module.downgrade()
    message = str(refused.value)
    if module.revision == "0001":
        assert message.startswith("the initial schema has no downgrade")
    else:
        assert message.startswith(f"{module.revision} has no downgrade: ")


def test_new_revisions_refuse_through_the_shared_helper():
    # What `alembic revision` writes for a new revision, and what 0007 on do.
    assert "refuse_downgrade(revision)" in Path(config.MIGRATIONS_DIR,
                                                 "script.py.mako").read_text()
    assert [path.name[:4] for path in REVISIONS
            if "refuse_downgrade(revision)" in path.read_text()] == [
        f"{n:04d}" for n in range(7, len(REVISIONS) + 1)]
