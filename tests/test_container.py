"""The OpenTAD image without building it: `make container-check` (uv locks the whole stack again
for CPython 3.10 / manylinux_2_35 x86_64 and the result must equal the committed lock), the rules
the .def must keep, OpenTAD's requirements covered, the job-start check of the bound OpenTAD
checkout, and the environment a job gets under `apptainer exec --cleanenv` (through the apptainer
double). The locks need network access to PyPI, as `make test` does."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tadsweep.backends.opentad import fingerprint
from tadsweep.errors import InputError
from tadsweep.site import apptainer, container

# The stack is checked against upstream's requirements in $OPENTAD_ROOT (and PyPI).
pytestmark = pytest.mark.opentad
REPO = Path(__file__).resolve().parents[1]
DOUBLE = REPO / "tests" / "doubles" / "bin" / "apptainer"


def run_cli(*args: str, module: str = "tadsweep.site.container") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", module, *args]
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


def check_fails(copy: Path, opentad_root: Path) -> str:
    """The check's one error line, run as `make container-check` runs it."""
    res = run_cli("check", "--containers", str(copy), "--opentad-root", str(opentad_root))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    return lines[0]


# --- the real check -----------------------------------------------------------------------------


def test_container_check_passes_on_the_shipped_files(opentad_root):
    res = run_cli("check", "--opentad-root", str(opentad_root))
    assert res.returncode == 0, res.stderr
    assert "opentad.lock.txt is uv's lock for CPython 3.10" in res.stdout
    assert "covering OpenTAD's 11 requirements" in res.stdout
    lock = (REPO / "containers" / "opentad.lock.txt").read_text().splitlines()
    # pip drops the --no-binary names given before a `--only-binary :all:` line: it comes first
    options = [ln for ln in lock if ln.startswith("--")]
    assert options == ["--only-binary :all:"] + [f"--no-binary {n}" for n in
                                                 ("fvcore", "iopath", "pytorchvideo")]  # fmt: skip
    # the image installs these from their own indexes; the stand-ins are not locked
    assert not [ln for ln in lock if re.match(r"(torch|torchvision|mmcv\S*|nvidia-\S+)==", ln)]


@pytest.mark.parametrize(
    "old, new, culprit",
    [
        # transformers 4.46.3 requires tokenizers<0.21
        ("tokenizers==0.20.3", "tokenizers==0.21.0", "tokenizers"),
        # opentad.in against the .def's torch 2.0.1
        ("peft==0.13.2\n", "peft==0.13.2\ntorch==2.1.0\n", "torch"),
    ],
)
def test_a_conflicting_pin_fails_with_one_line(copy, opentad_root, old, new, culprit):
    edit(copy / "opentad.in", old, new)
    line = check_fails(copy, opentad_root)
    assert line.startswith(f"error: {copy / 'opentad.in'}: uv cannot lock the stack: "), line
    assert "unsatisfiable" in line and culprit in line


def test_an_input_changed_since_the_lock_fails_as_out_of_date(copy, opentad_root):
    edit(copy / "opentad.in", "einops==0.8.0", "einops==0.7.0")
    line = check_fails(copy, opentad_root)
    assert line.startswith(f"error: {copy / 'opentad.lock.txt'}: differs from uv's lock"), line
    assert "'-einops==0.8.0'" in line and line.endswith("run `make container-lock`")


def test_a_lock_missing_a_dependency_fails(copy, opentad_root):
    # tomli: needed by yapf on Python < 3.11 only, so uv must evaluate markers for the image's 3.10
    lock = copy / "opentad.lock.txt"
    lock.write_text(re.sub(r"^tomli==.*\n(?:    .*\n)*", "", lock.read_text(), flags=re.M))
    assert "tomli==" not in lock.read_text()
    line = check_fails(copy, opentad_root)
    assert "differs from uv's lock" in line and "'+tomli==" in line, line


def test_a_lock_hash_that_is_not_the_index_files_fails(copy, opentad_root):
    lock = copy / "opentad.lock.txt"
    text = lock.read_text()
    first = re.search(r"^einops==0\.8\.0 \\\n    --hash=sha256:(\w+)", text, re.M).group(1)
    lock.write_text(text.replace(first, "0" * 64))
    line = check_fails(copy, opentad_root)
    assert "differs from uv's lock" in line and f"--hash=sha256:{'0' * 64}" in line, line


def test_a_cuda_wheel_the_overrides_miss_fails_naming_them(copy, opentad_root):
    edit(copy / "opentad.overrides.txt", 'nvidia-nccl-cu11; sys_platform == "never"\n', "")
    with pytest.raises(InputError) as err:
        container.relock(copy)
    assert str(err.value).startswith(f"{copy / 'opentad.overrides.txt'}: torch 2.0.1 from PyPI")
    assert "nvidia-nccl-cu11" in str(err.value)


# --- OpenTAD's requirements (no network) --------------------------------------------------------


def test_upstream_requirements_must_be_in_the_lock(copy, opentad_root, tmp_path):
    assert container.check_upstream(opentad_root, copy) == 11
    root = tmp_path / "OpenTAD"
    root.mkdir()
    (root / "requirements.txt").write_text("numpy==1.24.4\n")
    with pytest.raises(InputError, match=r"requirements.txt: numpy==1.24.4, but .* numpy==1.23.5"):
        container.check_upstream(root, copy)
    (root / "requirements.txt").write_text("lmdb\n")
    with pytest.raises(InputError, match=r"requirements.txt: lmdb is not in .*opentad.lock.txt"):
        container.check_upstream(root, copy)


def test_upstream_extensions_must_be_built_by_the_definition(copy, opentad_root):
    edit(copy / "opentad.def", "        opentad/models/roi_heads/roi_extractors/boundary_pooling\n",
         "")  # fmt: skip
    edit(copy / "opentad.def", "roi_extractors/align1d \\", "roi_extractors/align1d")
    with pytest.raises(InputError, match="opentad.def: %post: does not build .*boundary_pooling"):
        container.check_upstream(opentad_root, copy)


def test_the_build_tools_step_takes_whole_entries_from_the_lock(tmp_path):
    # step 1 of %post picks pip, setuptools and wheel out of the lock, each with its hash lines
    step = re.search(r"^\s*(awk .*) > /tmp/build-tools\.txt$",
                     (REPO / "containers" / "opentad.def").read_text(), re.M).group(1)  # fmt: skip
    env = {**os.environ, "LOCK": str(REPO / "containers" / "opentad.lock.txt")}
    res = subprocess.run(["bash", "-c", step], capture_output=True, text=True, env=env, check=True)
    entries = re.split(r"(?<!\\)\n", res.stdout.strip())
    assert [e.split(" ")[0] for e in entries] == ["pip==23.3.2", "setuptools==69.0.3",
                                                  "wheel==0.42.0"]  # fmt: skip
    assert all(re.search(r"\\\n    --hash=sha256:[0-9a-f]{64}$", e) for e in entries), entries


# --- the definition file ------------------------------------------------------------------------


def test_the_definition_file_parses_into_its_pins():
    pins = container.def_pins(REPO / "containers" / "opentad.def")
    assert pins == {"torch": "2.0.1", "torchvision": "0.15.2", "cuda": "cu118", "mmcv": "2.0.1"}


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("    export PIP_NO_CACHE_DIR=1\n",
         "    export PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cu118\n",
         "%post: sets a pip index for every pip call"),
        ("opentad.commit {{ OPENTAD_COMMIT }}", "opentad.commit 3dd7b032d7a074bec9665001e4e7f9d1",
         "%labels: opentad.commit must be the template"),
        ("--no-deps --no-index --only-binary :all:", "--no-deps --no-index",
         "%post: mmcv must be binary-only"),
        ("    export PYTHONNOUSERSITE=1\n", "    export OPENTAD_ROOT=/opt/OpenTAD\n",
         "%environment: sets OPENTAD_ROOT"),
        ("    python3.10 -m pip check\n    python3.10 - <<", "    python3.10 - <<",
         "%test: does not run pip check"),
        ("torch2.0/index.html", "torch2.1/index.html",
         "--find-links https://download.openmmlab.com/mmcv/dist/cu118/torch2.0/index.html"),
        ("torch==2.0.1+cu118", "torch==2.0.1+cu117", "%post: torch and torchvision must be"),
        ("-ubuntu22.04", "-ubuntu24.04", "%header: the lock targets Ubuntu 22.04"),
    ],
)  # fmt: skip
def test_a_definition_breaking_a_rule_fails_naming_file_and_section(copy, old, new, message):
    edit(copy / "opentad.def", old, new)
    with pytest.raises(InputError) as err:
        container.def_pins(copy / "opentad.def")
    assert str(err.value).startswith(f"{copy / 'opentad.def'}: ") and message in str(err.value)


# --- the job-start check: the bound checkout is what the image's extensions were built from -----


def test_job_start_check_compares_the_checkout_with_the_build_record(tmp_path, opentad_root):
    record = tmp_path / "opentad-build.json"
    res = run_cli(str(opentad_root), "--commit", "3dd7b03" + "0" * 33,
                  module="tadsweep.backends.opentad.fingerprint")  # fmt: skip
    assert res.returncode == 0, res.stderr
    record.write_text(res.stdout)
    assert json.loads(res.stdout)["extensions"] == [
        "opentad/models/utils/post_processing/nms",
        "opentad/models/roi_heads/roi_extractors/align1d",
        "opentad/models/roi_heads/roi_extractors/boundary_pooling",
    ]
    fingerprint.check_opentad_build(opentad_root, str(record))  # the same code: passes
    fingerprint.check_opentad_build(opentad_root, "")  # outside the image: nothing to compare
    other = tmp_path / "OpenTAD"
    shutil.copytree(opentad_root, other)
    os.chmod(other / "opentad/models/utils/post_processing/nms", 0o755)
    nms = other / "opentad/models/utils/post_processing/nms/nms_cpu.cpp"
    os.chmod(nms, 0o644)
    nms.write_text(nms.read_text() + "\n// changed\n")
    with pytest.raises(InputError) as err:
        fingerprint.check_opentad_build(other, str(record))
    assert str(err.value).startswith(f"{other}: OpenTAD's extension sources differ")


def test_the_job_start_check_imports_nothing_of_the_lock_tooling():
    # it runs in every training job, in the image (Python 3.10, no uv, no packaging)
    code = "import sys, tadsweep.backends.opentad.fingerprint; print(' '.join(sys.modules))"
    cmd = [sys.executable, "-S", "-c", code]  # -S: no site, whose .pth files import modules
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    loaded = set(res.stdout.split())
    assert "tadsweep.backends.opentad.fingerprint" in loaded, res.stderr
    assert "tadsweep.site.container" not in loaded
    # stdlib only (no uv, packaging or numpy)
    assert {m.split(".")[0] for m in loaded} - {*sys.stdlib_module_names, "__main__"} == {
        "tadsweep"
    }


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
        "TADSWEEP_MAX_DETECTIONS_MB": "1024",  # a raised cap reaches detect (tadsweep.readers)
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
                "NCCL_SOCKET_IFNAME", "OMP_NUM_THREADS", "TADSWEEP_MAX_DETECTIONS_MB",
                "TMPDIR"):  # fmt: skip
        assert got[key] == host[key], key
    assert "LEAKY_HOST_SETTING" not in got and "APPTAINER_ENV_FILE" not in got
    assert got["HOME"] == str(tmp_path) and got["LANG"] == "C"
    job = tmp_path / "tadsweep-job-77"
    for key in ("MPLCONFIGDIR", "TORCH_HOME", "HF_HOME", "XDG_CACHE_HOME", "CUDA_CACHE_PATH"):
        assert got[key].startswith(f"{job}/"), key
    # no GPUs named by SLURM: left unset, never empty (which would hide every GPU)
    host.pop("CUDA_VISIBLE_DEVICES")
    assert "CUDA_VISIBLE_DEVICES" not in inside(host)
