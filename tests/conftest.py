"""Shared fixtures and markers. `make test` runs every test (none is ever skipped); `make check`
runs the fast tier (no marker below).

- opentad: runs upstream OpenTAD code from $OPENTAD_ROOT (`make test-opentad`: these, minus slurm)
- slurm: needs the live local SLURM cluster (tests/slurm/up.sh, started once per session)
- e2e: a whole workflow (Snakemake, every rule) on the demo backend
- browser: headless Chromium
"""

import atexit
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import local_slurm
import opentad_site
import pytest

MARKERS = {
    "opentad": "runs or reads upstream OpenTAD code ($OPENTAD_ROOT)",
    "slurm": "needs the live local SLURM cluster",
    "e2e": "runs a whole workflow through Snakemake",
    "browser": "drives headless Chromium",
}


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    if not hasattr(config, "workerinput") and importlib.util.find_spec("yapf"):
        # mmengine imports yapf, which caches its grammar in ~/.cache/YAPF on first import and
        # renames the pickle into place before flushing it: two xdist workers importing it at
        # once on a fresh venv can read it empty (EOFError; google/yapf#1204). Import it here,
        # in the controller, before any worker or subprocess starts.
        import yapf  # noqa: F401


# `make test` runs on two pytest-xdist workers. A module is one unit of work (its module and
# session fixtures, such as the demo study, are built once); the live SLURM cluster is one too:
# every test on it lives in tests/test_slurm_*.py, and those modules share one worker. The
# heaviest tiers are collected first, so the quick tests fill the gaps at the end.
SLURM_MODULES = "tests/test_slurm_"
_FIRST = ("slurm", "e2e", "opentad", "browser")


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            module = nodeid.split("::", 1)[0]
            return "slurm" if module.startswith(SLURM_MODULES) else module

    return ByModule(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    rank = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        on_slurm = item.get_closest_marker("slurm") or "slurm_cluster" in item.fixturenames
        if on_slurm and not module.startswith(SLURM_MODULES):
            raise pytest.UsageError(
                f"{item.nodeid}: tests on the live SLURM cluster belong in "
                f"{SLURM_MODULES}*.py (they share one xdist worker)"
            )
        tier = min([i for i, m in enumerate(_FIRST) if item.get_closest_marker(m)] or [len(_FIRST)])
        rank[module] = min(rank.get(module, tier), tier)
    items.sort(key=lambda item: rank[item.nodeid.split("::", 1)[0]])


def pytest_collection_finish(session):
    """A session without the live cluster (make check, make test-opentad): every snakemake it
    spawns imports the SLURM plugin, whose `scontrol show config` waits 10 s for a controller
    that is not there. Point SLURM's client at a config whose controller refuses at once
    (MessageTimeout=1: no retries); the plugin then falls back as it does after its timeout."""
    if any(item.get_closest_marker("slurm") for item in session.items):
        return  # the live cluster's own config stays
    folder = tempfile.mkdtemp(prefix="tadsweep-no-slurm-")
    atexit.register(shutil.rmtree, folder, True)
    conf = Path(folder, "slurm.conf")
    conf.write_text("ClusterName=offline\nSlurmctldHost=localhost\nMessageTimeout=1\n")
    os.environ["SLURM_CONF"] = str(conf)


slurm_cluster = local_slurm.slurm_cluster


@pytest.fixture(scope="session")
def opentad_root():
    return opentad_site.opentad_root()


@pytest.fixture(scope="session")
def tiny_site(opentad_root, tmp_path_factory):
    """A tiny THUMOS-14 site (videos, annotations, class map, pretrained weights), made once."""
    return opentad_site.make_site(tmp_path_factory.mktemp("site"), opentad_root)
