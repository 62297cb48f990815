"""The OpenTAD image without building it: `make container-check` (its whole Python stack resolved
against PyPI for CPython 3.10 / manylinux x86_64, the lock, pip check over the resolution), the
rules the .def must keep, the job-start check of the bound OpenTAD checkout, and the environment a
job gets under `apptainer exec --cleanenv` (through the apptainer double). The resolutions need
network access to PyPI, as `make test` does."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tadsweep.errors import InputError
from tadsweep.site import apptainer, container

# The stack is checked against upstream's requirements in $OPENTAD_ROOT (and PyPI).
pytestmark = pytest.mark.opentad
REPO = Path(__file__).resolve().parents[1]
DOUBLE = REPO / "tests" / "doubles" / "bin" / "apptainer"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tadsweep.site.container", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)


@pytest.fixture
def copy(tmp_path) -> Path:
    """A copy of containers/ to break on purpose."""
    dst = tmp_path / "containers"
    shutil.copytree(REPO / "containers", dst, ignore=shutil.ignore_patterns("*.sif"))
    return dst


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def restamp(containers: Path) -> None:
    """Give the lock the input digest of the edited files, as if relocked by hand."""
    defn, inputs = container._load(containers)
    lock = containers / container.LOCK_NAME
    text = re.sub(r"# input: sha256:\w+", f"# input: sha256:{container.input_digest(defn, inputs)}",
                  lock.read_text())  # fmt: skip
    lock.write_text(text)


# --- the real check -----------------------------------------------------------------------------


def test_container_check_passes_on_the_shipped_files(opentad_root):
    res = run_cli("check", "--opentad-root", str(opentad_root))
    assert res.returncode == 0, res.stderr
    assert "resolve with no conflict; pip check clean" in res.stdout
    assert "covering OpenTAD's 11 requirements" in res.stdout


def test_a_conflicting_pin_fails_with_one_line(copy, opentad_root):
    # transformers 4.46.3 requires tokenizers<0.21: pin 0.21.0 in the input and the lock alike
    edit(copy / "opentad.in", "tokenizers==0.20.3", "tokenizers==0.21.0")
    edit(copy / "opentad.lock.txt", "tokenizers==0.20.3", "tokenizers==0.21.0")
    restamp(copy)
    res = run_cli("check", "--containers", str(copy), "--opentad-root", str(opentad_root))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {copy / 'opentad.lock.txt'}: "), lines
    assert "does not resolve: conflict" in lines[0] and "tokenizers" in lines[0]


def test_an_input_changed_since_the_lock_fails_as_out_of_date(copy, opentad_root):
    edit(copy / "opentad.in", "einops==0.8.0", "einops==0.7.0")
    res = run_cli("check", "--containers", str(copy), "--opentad-root", str(opentad_root))
    assert res.returncode == 2
    assert "out of date with opentad.in / opentad.def: run `make container-lock`" in res.stderr


def test_a_lock_missing_a_dependency_fails(copy, opentad_root):
    # tomli: needed by yapf on Python < 3.11 only -- the case pip's own markers (evaluated for
    # the Python running pip, 3.11 here) would miss
    lock = copy / "opentad.lock.txt"
    lock.write_text("".join(ln for ln in lock.read_text().splitlines(True) if "tomli==" not in ln))
    res = run_cli("check", "--containers", str(copy), "--opentad-root", str(opentad_root))
    assert res.returncode == 2
    assert "out of date: yapf" in res.stderr and "tomli" in res.stderr, res.stderr


def test_a_lock_hash_that_is_not_the_index_files_fails(copy, opentad_root):
    lock = copy / "opentad.lock.txt"
    text = lock.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("einops=="))
    lock.write_text(text.replace(line, re.sub(r"sha256:\w+", "sha256:" + "0" * 64, line)))
    res = run_cli("check", "--containers", str(copy), "--opentad-root", str(opentad_root))
    assert res.returncode == 2 and "einops==0.8.0: hash is not einops-0.8.0-" in res.stderr


# --- pip check over metadata (no network) -------------------------------------------------------


def dist(name, version, *requires):
    return container.Dist(name, version, list(requires), "", f"{name}-{version}.whl")


def test_pip_check_over_the_resolution_finds_what_pip_check_would():
    env = container.marker_env(container.BASES["ubuntu22.04"])
    dists = {
        d.name: d
        for d in [
            dist("torchvision", "0.15.2", "torch (==2.0.1)", "pillow (!=8.3.*,>=5.3.0)"),
            dist("torch", "2.1.0"),
            dist("pillow", "8.3.1"),
            dist("yapf", "0.43.0", 'tomli>=2.0.1; python_version < "3.11"'),
            dist("extra-user", "1.0", "mmengine[all]"),
            dist("mmengine", "0.10.7", 'lmdb; extra == "all"', 'aim; sys_platform == "win32"'),
        ]
    }
    top = [Requirement(r) for r in ("torchvision==0.15.2", "yapf", "extra-user")]
    reached, problems, lacking = container.walk(dists, top, env)
    assert "torchvision==0.15.2 requires torch==2.0.1, but the stack has torch==2.1.0" in problems
    assert any("pillow!=8.3.*,>=5.3.0, but the stack has pillow==8.3.1" in p for p in problems)
    # markers evaluated for CPython 3.10 on Linux, extras followed where requested
    assert sorted(r.name for r in lacking) == ["lmdb", "tomli"]
    assert reached == {"torchvision", "torch", "pillow", "yapf", "extra-user", "mmengine"}


# --- the definition file ------------------------------------------------------------------------


def test_the_definition_file_parses_into_its_pins():
    d = container.parse_definition(REPO / "containers" / "opentad.def")
    assert (d.torch, d.torchvision, d.cuda, d.mmcv) == ("2.0.1", "0.15.2", "cu118", "2.0.1")
    assert d.base.python == "3.10" and d.base.glibc == (2, 35)
    assert d.lock_dest == "/opt/tadsweep/opentad.lock.txt"
    assert d.commit == "3dd7b032d7a074bec9665001e4e7f9d1b71405b5"
    assert "--require-hashes" in (REPO / "containers" / "opentad.lock.txt").read_text()


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("    export PIP_NO_CACHE_DIR=1\n",
         "    export PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cu118\n",
         "%post: sets PIP_EXTRA_INDEX_URL for every pip call"),
        ("opentad.commit {{ OPENTAD_COMMIT }}", "opentad.commit 3dd7b032d7a074bec9665001e4e7f9d1",
         "%labels: opentad.commit must be the template"),
        ("--no-deps --no-index --only-binary :all:", "--no-deps --no-index",
         "mmcv must be binary-only"),
        ("    export PYTHONNOUSERSITE=1\n", "    export OPENTAD_ROOT=/opt/OpenTAD\n",
         "%environment: sets OPENTAD_ROOT"),
        ("    python3.10 -m pip check\n    python3.10 - <<", "    python3.10 - <<",
         "%test: does not run pip check"),
        ("torch2.0/index.html", "torch2.1/index.html", "is not 'https://download.openmmlab.com"),
    ],
)  # fmt: skip
def test_a_definition_breaking_a_rule_fails_naming_file_and_section(copy, old, new, message):
    edit(copy / "opentad.def", old, new)
    with pytest.raises(container.ContainerError) as err:
        container.parse_definition(copy / "opentad.def")
    assert str(err.value).startswith(f"{copy / 'opentad.def'}: ") and message in str(err.value)


def test_upstream_extensions_must_be_built_by_the_definition(copy, opentad_root):
    edit(copy / "opentad.def", "        opentad/models/roi_heads/roi_extractors/boundary_pooling\n",
         "")  # fmt: skip
    edit(copy / "opentad.def", "roi_extractors/align1d \\", "roi_extractors/align1d")
    defn = container.parse_definition(copy / "opentad.def")
    with pytest.raises(container.ContainerError, match="does not build .*boundary_pooling"):
        container.upstream_requirements(opentad_root, defn)


# --- the job-start check: the bound checkout is what the image's extensions were built from -----


def test_job_start_check_compares_the_checkout_with_the_build_record(tmp_path, opentad_root):
    record = tmp_path / "opentad-build.json"
    res = run_cli("fingerprint", str(opentad_root), "--commit", "3dd7b03" + "0" * 33)
    assert res.returncode == 0, res.stderr
    record.write_text(res.stdout)
    assert json.loads(res.stdout)["extensions"] == [
        "opentad/models/utils/post_processing/nms",
        "opentad/models/roi_heads/roi_extractors/align1d",
        "opentad/models/roi_heads/roi_extractors/boundary_pooling",
    ]
    container.check_opentad_build(opentad_root, str(record))  # the same code: passes
    container.check_opentad_build(opentad_root, "")  # outside the image: nothing to compare
    other = tmp_path / "OpenTAD"
    shutil.copytree(opentad_root, other)
    os.chmod(other / "opentad/models/utils/post_processing/nms", 0o755)
    nms = other / "opentad/models/utils/post_processing/nms/nms_cpu.cpp"
    os.chmod(nms, 0o644)
    nms.write_text(nms.read_text() + "\n// changed\n")
    with pytest.raises(InputError) as err:
        container.check_opentad_build(other, str(record))
    assert str(err.value).startswith(f"{other}: OpenTAD's extension sources differ")


# --- the job's environment under --cleanenv -----------------------------------------------------


def test_job_environment_names_the_env_file_for_opentad_jobs(monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    cfg = {"study": {"backend": "opentad"}, "paths": {"opentad_root": "/o"}}
    monkeypatch.setattr(apptainer, "container_binds", lambda cfg: "/o:/o:ro")
    env = apptainer.job_environment(cfg, str(REPO))
    assert env["PYTHONPATH"] == str(REPO)
    assert env["APPTAINER_ENV_FILE"] == str(REPO / "containers" / "job.env")
    assert Path(env["APPTAINER_ENV_FILE"]).is_file()
    demo = apptainer.job_environment({"study": {"backend": "demo"}}, str(REPO))
    assert "APPTAINER_ENV_FILE" not in demo


def test_cleanenv_passes_only_what_jobs_need(tmp_path):
    image = tmp_path / "opentad.sif"
    image.write_text("image")
    host = {
        "PATH": os.environ["PATH"],
        "HOME": "/home/user",
        "PYTHONPATH": str(REPO),
        "CUDA_VISIBLE_DEVICES": "2,3",
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_NAME": "rule_train, run p1",
        "NCCL_SOCKET_IFNAME": "ib0",
        "OMP_NUM_THREADS": "8",
        "TMPDIR": str(tmp_path),
        "LEAKY_HOST_SETTING": "1",
        "MPLCONFIGDIR": "/home/user/.config/matplotlib",
        "APPTAINER_ENV_FILE": str(REPO / "containers" / "job.env"),
    }

    def inside(env) -> dict:
        cmd = [str(DOUBLE), "exec", "--home", str(tmp_path), "--nv", "--cleanenv", str(image)]
        res = subprocess.run([*cmd, "env", "-0"], env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        return dict(kv.split("=", 1) for kv in res.stdout.split("\0") if kv)

    got = inside(host)
    for key in ("PYTHONPATH", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_JOB_NAME",
                "NCCL_SOCKET_IFNAME", "OMP_NUM_THREADS", "TMPDIR"):  # fmt: skip
        assert got[key] == host[key], key
    assert "LEAKY_HOST_SETTING" not in got and "APPTAINER_ENV_FILE" not in got
    assert got["HOME"] == str(tmp_path) and got["LANG"] == "C"
    job = tmp_path / "tadsweep-job-77"
    for key in ("MPLCONFIGDIR", "TORCH_HOME", "HF_HOME", "XDG_CACHE_HOME", "CUDA_CACHE_PATH"):
        assert got[key].startswith(f"{job}/"), key
    # no GPUs named by SLURM: left unset, never empty (which would hide every GPU)
    host.pop("CUDA_VISIBLE_DEVICES")
    assert "CUDA_VISIBLE_DEVICES" not in inside(host)
