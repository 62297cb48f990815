"""Shared fixtures and markers. `make test` runs every test (none is ever skipped); `make check`
runs the fast tier (no marker below).

- opentad: runs upstream OpenTAD code from $OPENTAD_ROOT (`make test-opentad`: these, minus slurm)
- slurm: needs the live local SLURM cluster (tests/slurm/up.sh, started once per session)
- e2e: a whole workflow (Snakemake, every rule) on the demo backend
- browser: headless Chromium
"""

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


# Heaviest tiers first on the two workers, so the quick tests fill the gaps at the end.
_FIRST = ("slurm", "e2e", "opentad", "browser")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns the groups into node ids
def pytest_collection_modifyitems(items):
    """`make test` runs on two pytest-xdist workers (--dist loadgroup --no-loadscope-reorder): a
    module stays on one worker (its module and session fixtures, e.g. the demo study, are built
    once), and every test on the live SLURM cluster shares one worker (one cluster)."""
    groups, rank = {}, {}
    for item in items:
        on_slurm = item.get_closest_marker("slurm") or "slurm_cluster" in item.fixturenames
        group = groups[item] = "slurm" if on_slurm else item.module.__name__
        tier = min([i for i, m in enumerate(_FIRST) if item.get_closest_marker(m)] or [len(_FIRST)])
        rank[group] = min(rank.get(group, tier), tier)
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: rank[groups[item]])


slurm_cluster = local_slurm.slurm_cluster


@pytest.fixture(scope="session")
def opentad_root():
    return opentad_site.opentad_root()


@pytest.fixture(scope="session")
def tiny_site(opentad_root, tmp_path_factory):
    """A tiny THUMOS-14 site (videos, annotations, class map, pretrained weights), made once."""
    return opentad_site.make_site(tmp_path_factory.mktemp("site"), opentad_root)
