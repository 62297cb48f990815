"""Folders import downward only -- the layers of pyproject.toml's import-linter contract (site,
report, backends, plan, detections, then the top-level modules) -- and no module imports itself
through others. Imports inside functions count: grimp and import-linter read them all."""

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent


def cycles(graph) -> list[tuple[str, str]]:
    """Every import that closes a cycle: a module importing one that imports it back, directly
    or through others."""
    return sorted(
        (a, b)
        for a in graph.modules
        for b in graph.find_modules_directly_imported_by(a)
        if graph.chain_exists(importer=b, imported=a)
    )


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("tadsweep", cache_dir=None)
    assert len(graph.modules) > 50  # the whole package was read
    assert cycles(graph) == []


def test_a_cycle_is_found_however_long():
    graph = grimp.ImportGraph()
    for importer, imported in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]:
        graph.add_import(importer=importer, imported=imported)
    assert cycles(graph) == [("a", "b"), ("b", "c"), ("c", "a")]


def test_folders_import_downward_only():
    lint = Path(sys.executable).parent / "lint-imports"
    res = subprocess.run([str(lint), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "1 kept, 0 broken" in res.stdout
