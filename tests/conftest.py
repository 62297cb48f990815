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


slurm_cluster = local_slurm.slurm_cluster


@pytest.fixture(scope="session")
def opentad_root():
    return opentad_site.opentad_root()


@pytest.fixture(scope="session")
def tiny_site(opentad_root, tmp_path_factory):
    """A tiny THUMOS-14 site (videos, annotations, class map, pretrained weights), made once."""
    return opentad_site.make_site(tmp_path_factory.mktemp("site"), opentad_root)
