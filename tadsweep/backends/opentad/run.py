"""Run OpenTAD's tools/train.py and tools/test.py (commit 3dd7b03) under torchrun for one run.
WORK/.opentad/gpu{N}_id0 -> .. (train.py appends gpu{WORLD_SIZE}_id{id} to the work dir) puts
log.json and checkpoint/ in WORK whatever N is, so a resume on another GPU count finds them."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from tadsweep import readers
from tadsweep.atomic import atomic_write_bytes, write_json
from tadsweep.backends.opentad import stop
from tadsweep.backends.opentad.fingerprint import check_opentad_build
from tadsweep.backends.opentad.render import load_config
from tadsweep.errors import InputError, StepFailed
from tadsweep.plan.axes import training_keys
from tadsweep.plan.rundir import checkpoints, final_checkpoint

EXP_ID = 0
ATTEMPTS = ".opentad/attempts.json"


def launch_prefix(gpus: int) -> list[str]:
    exe = shutil.which("torchrun")
    torchrun = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    rdzv = ["--rdzv_backend=c10d", "--rdzv_endpoint=localhost:0"]
    return [*torchrun, "--nnodes=1", f"--nproc_per_node={gpus}", *rdzv]


def _check_root(root: Path, tool: str) -> None:
    if not (root / "tools" / tool).is_file():
        raise InputError(f"{root}: not an OpenTAD checkout (no tools/{tool})")
    check_opentad_build(root)  # in the image: the checkout is what its extensions were built from


def job_cpus() -> int:
    """CPUs this job was given: its affinity mask, capped by SLURM_CPUS_PER_TASK and Snakemake's
    thread count (OMP_NUM_THREADS) where set."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    for var in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            n = min(n, int(value))
    return max(n, 1)


MAX_WORKERS = 8  # each holds its prefetched samples (768 frames: ~0.25 GB each) in host memory


def loader_threads(cpus: int, gpus: int) -> tuple[int, int]:
    """(DataLoader workers, decord threads per worker) of each training process, from its share
    of the CPUs: one for the training loop, the rest workers; past MAX_WORKERS, decord threads."""
    spare = max(cpus // max(gpus, 1) - 1, 1)
    workers = min(spare, MAX_WORKERS)
    return workers, max(spare // workers, 1)


def write_launch_config(
    path: Path, config: Path, work_dir: Path, cfg, gpus: int, cpus=None, imports=()
) -> None:
    """The launch config: the run's config as _base_, plus work_dir, evaluation batches the
    processes split evenly, loader threads for the job's CPUs, and `imports` in custom_imports.
    A file, not --cfg-options: mmengine's DictAction splits on commas, which run ids contain."""
    cpus = job_cpus() if cpus is None else cpus
    workers, threads = loader_threads(cpus, gpus)
    plain = cfg.to_dict()
    solver = {split: dict(num_workers=workers) for split in ("train", "val", "test")}
    for split in ("val", "test"):
        if split in cfg.solver:
            solver[split]["batch_size"] = gpus * max(1, int(cfg.solver[split].batch_size) // gpus)
    # a list is replaced whole when configs merge: each pipeline with a DecordInit step is
    # written out again, only its num_threads changed
    dataset = {}
    for split, block in plain.get("dataset", {}).items():
        pipeline = block.get("pipeline") if isinstance(block, dict) else None
        steps = [d for d in pipeline or [] if isinstance(d, dict)]
        decord = [d for d in steps if d.get("type") == "mmaction.DecordInit"]
        for d in decord:
            d["num_threads"] = threads
        if decord:
            dataset[split] = dict(pipeline=pipeline)
    text = (
        "# Written by tadsweep.backends.opentad for one launch; the run's settings are in _base_.\n"
        f"# {workers} DataLoader workers, {threads} decord thread(s) each: {gpus} GPU(s), "
        f"{cpus} CPUs\n"
        f"_base_ = [{str(config)!r}]\n"
        f"work_dir = {str(work_dir)!r}\n"
        f"solver = {solver!r}\n"
    )
    if dataset:
        text += f"dataset = {dataset!r}\n"
    if imports:  # a list is replaced whole: the config's own imports first
        own = list(plain.get("custom_imports", {}).get("imports", []))
        text += f"custom_imports = {dict(imports=own + list(imports))!r}\n"
    atomic_write_bytes(path, text.encode())


def checkpoint_ok(path: Path) -> bool:
    """torch.save writes a zip; a save cut short by a kill has no readable central directory."""
    try:
        with zipfile.ZipFile(path) as z:
            return len(z.namelist()) > 0
    except (OSError, zipfile.BadZipFile):
        return False


def latest_checkpoint(ckpt_dir: Path) -> tuple[int, Path] | None:
    for epoch, path in sorted(checkpoints(ckpt_dir).items(), reverse=True):
        if checkpoint_ok(path):
            return epoch, path
        print(f"tadsweep: skipping unreadable checkpoint {path}", file=sys.stderr)
    return None


def _run(cmd: list[str], root: Path, stop_at_epoch: dict | None = None) -> int:
    """Run cmd in the checkout, $OPENTAD_ROOT naming it; SIGTERM/SIGINT end this process (128 +
    the signal) unless cmd completed. A training (`stop_at_epoch`: the stop module's environment)
    is asked through the stop file to stop at its epoch's end; other signals go on at once."""
    print("tadsweep: " + " ".join(cmd), file=sys.stderr, flush=True)
    env = dict(os.environ, OPENTAD_ROOT=str(root), **(stop_at_epoch or {}))
    stop_file, block_term = None, None
    if stop_at_epoch:
        stop_file = Path(stop_at_epoch[stop.WORK_ENV]) / stop.STOP_FILE
        stop_file.unlink(missing_ok=True)
        # Under SLURM every process of the step gets SIGTERM. Blocked from here on (a mask is
        # inherited through fork and exec, and no handler undoes it), it stays pending: torchrun
        # cannot act on it (it would kill its workers 30 s later), the DataLoader workers cannot
        # die of it (torch ends them at once, failing the epoch), and the training processes read
        # it at the epoch's end (stop.requested).
        block_term = lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # noqa: E731
    child = subprocess.Popen(cmd, cwd=root, env=env, preexec_fn=block_term)
    received = []

    def on_signal(signum, _frame):
        received.append(signum)
        if signum == signal.SIGTERM and stop_file is not None:
            stop_file.touch()
        elif child.poll() is None:
            child.send_signal(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        rc = child.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if received and rc != 0:
        raise SystemExit(128 + received[0])
    return rc


def _attempts(work: Path) -> list[dict]:
    """Every launch of train.py for this work dir (seconds None: killed before it could record)."""
    path = work / ATTEMPTS
    return json.loads(path.read_text()) if path.exists() else []


def _record_attempt(work: Path, attempt: dict) -> None:
    attempts = [a for a in _attempts(work) if a.get("id") != attempt["id"]] + [attempt]
    write_json(attempts, work / ATTEMPTS)


def train(params_path, config, opentad_root, work_dir, done, gpus=1) -> dict:
    """Train (or resume) until epoch_{epochs-1}.pth exists, then write `done` (train.json)."""
    params = readers.read_json(params_path)
    root, config, work = (Path(p).resolve() for p in (opentad_root, config, work_dir))
    _check_root(root, "train.py")
    if gpus < 1:
        raise InputError("--gpus must be >= 1")
    # before the ranks: mmengine imports yapf, which writes its grammar cache (per job:
    # containers/job.env) on first import, racily (google/yapf#1204); here it is one process
    cfg = load_config(config, root)
    epochs = int(cfg.workflow.end_epoch)
    if epochs != int(params["schedule"]["epochs"]):
        raise InputError(f"{config}: workflow.end_epoch {epochs} != params schedule.epochs")
    batch = int(cfg.solver.train.batch_size)
    if batch % gpus:
        raise InputError(f"{config}: global batch size {batch} is not divisible by {gpus} GPUs")
    final = epochs - 1

    meta = work / ".opentad"
    meta.mkdir(parents=True, exist_ok=True)
    # what must not change under a resumed run (a work dir trained with others is refused)
    keep = json.dumps({k: params.get(k) for k in training_keys()}, sort_keys=True)
    key_file, key = meta / "training_key", hashlib.sha256(keep.encode()).hexdigest()
    if key_file.exists() and key_file.read_text().strip() != key:
        raise InputError(
            f"{work}: holds checkpoints of different training parameters; move it away to retrain"
        )
    key_file.write_text(key + "\n")
    link = meta / f"gpu{gpus}_id{EXP_ID}"
    if not link.is_symlink():
        link.symlink_to("..", target_is_directory=True)
    ckpt_dir = work / "checkpoint"
    if beyond := [e for e in checkpoints(ckpt_dir) if e > final]:
        raise InputError(f"{ckpt_dir}: has epoch_{max(beyond)}.pth beyond the final epoch {final}")

    final_ckpt = ckpt_dir / f"epoch_{final}.pth"
    resumed_from = None
    if not checkpoint_ok(final_ckpt):
        latest = latest_checkpoint(ckpt_dir)
        launch = meta / "launch_train.py"
        write_launch_config(launch, config, meta, cfg, gpus, imports=(stop.__name__,))
        cmd = [*launch_prefix(gpus), "tools/train.py", str(launch)]
        cmd += ["--seed", str(int(params["seed"])), "--id", str(EXP_ID)]
        if latest is not None:
            resumed_from = latest[0]
            cmd += ["--resume", str(latest[1])]
        attempt = dict(id=time.time_ns(), gpus=gpus, resumed_from=resumed_from, seconds=None)
        _record_attempt(work, attempt)
        start = time.monotonic()
        try:
            rc = _run(cmd, root, {stop.WORK_ENV: str(work), stop.FINAL_ENV: str(final)})
        finally:
            attempt["seconds"] = round(time.monotonic() - start, 3)
            _record_attempt(work, attempt)
        if rc != 0:
            raise StepFailed(f"OpenTAD training exited with status {rc} (log: {work}/log.json)")
        if not checkpoint_ok(final_ckpt):
            raise StepFailed(f"OpenTAD training ended without {final_ckpt}")
    attempts = _attempts(work)
    if resumed_from is None and attempts:  # already complete: report the last launch
        resumed_from = attempts[-1].get("resumed_from")
    summary = {
        "epochs": epochs,
        "final_epoch": final,
        "seconds": round(sum(a["seconds"] or 0.0 for a in attempts), 3),
        "resumed_from": resumed_from,
        "gpus": gpus,
        "gpu_seconds": round(sum((a["seconds"] or 0.0) * a["gpus"] for a in attempts), 3),
        "attempts": len(attempts),
    }
    write_json(summary, done)
    return summary


def detect(params_path, config, opentad_root, work_dir, out, gpus=1) -> Path:
    """Pre-NMS candidates of the final checkpoint in the train work dir:
    test.py's result_detection.json (in WORK/detect) converted to `out` (candidates.npz)."""
    from tadsweep.detections import formats

    params = readers.read_json(params_path)
    root, config, work = (Path(p).resolve() for p in (opentad_root, config, work_dir))
    _check_root(root, "test.py")
    checkpoint = final_checkpoint(params_path, work).resolve()
    if not checkpoint_ok(checkpoint):
        raise InputError(f"{checkpoint}: missing or unreadable checkpoint")
    test_dir = work / "detect"
    test_dir.mkdir(parents=True, exist_ok=True)
    for stale in test_dir.glob(f"gpu*_id{EXP_ID}/result_detection.json"):
        stale.unlink()
    cfg = load_config(config, root)
    launch = test_dir / "launch_test.py"
    write_launch_config(launch, config, test_dir, cfg, gpus)
    cmd = [*launch_prefix(gpus), "tools/test.py", str(launch)]
    cmd += ["--checkpoint", str(checkpoint), "--seed", str(int(params["seed"]))]
    cmd += ["--id", str(EXP_ID), "--not_eval", "--cfg-options"]
    cmd += ["post_processing.nms=None", "post_processing.save_dict=True"]
    rc = _run(cmd, root)
    if rc != 0:
        raise StepFailed(
            f"OpenTAD test exited with status {rc} (log: {test_dir}/gpu*_id0/log.json)"
        )
    # test.py names its folder after torch.cuda.device_count(), not the world size
    found = sorted(test_dir.glob(f"gpu*_id{EXP_ID}/result_detection.json"), key=os.path.getmtime)
    if not found:
        raise StepFailed(f"OpenTAD test wrote no result_detection.json under {test_dir}")
    formats.dump(formats.load_detections(found[-1]), out)
    return Path(out)
