"""Shared fixtures. Markers (all run by `make test`; none is ever skipped):
opentad -- runs upstream OpenTAD code from $OPENTAD_ROOT;
slurm -- needs the live local SLURM cluster (`make test-opentad`: opentad and not slurm)."""

import opentad_site
import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "opentad: runs upstream OpenTAD code ($OPENTAD_ROOT)")
    config.addinivalue_line("markers", "slurm: needs the live local SLURM cluster")


@pytest.fixture(scope="session")
def opentad_root():
    return opentad_site.opentad_root()


@pytest.fixture(scope="session")
def tiny_site(opentad_root, tmp_path_factory):
    """A tiny THUMOS-14 site (videos, annotations, class map, pretrained weights), made once."""
    return opentad_site.make_site(tmp_path_factory.mktemp("site"), opentad_root)
