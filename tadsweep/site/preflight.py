"""The preflight: one short job per GPU partition, in the image, before any training
(docs/cluster.md, "The preflight"): site paths readable, the stack imports, the checkout matches the
image's build, and one forward and backward pass of the rendered model. Stops at the first failure.

python -m tadsweep.site.preflight check --opentad-root R --config CONFIG.py --paths PATHS.json
                                        --gpus N --out PREFLIGHT.json
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tadsweep import cli, readers
from tadsweep.atomic import write_json
from tadsweep.errors import InputError, StepFailed
from tadsweep.site.gpu_check import input_geometry, synthetic_batch

# (module, what it is): imported in this order, so the first failure names the deepest cause
IMPORTS = (
    ("torch", "PyTorch"),
    ("mmengine", "mmengine"),
    ("mmaction", "mmaction2"),
    ("peft", "peft"),
    ("nms_1d_cpu", "OpenTAD's compiled NMS extension"),
    ("opentad.datasets", "OpenTAD's datasets"),
    ("opentad.models", "OpenTAD's models"),
    ("tadsweep.backends.opentad.lora", "the LoRA plugin"),
)


class PreflightFailed(StepFailed):
    """One check failed: the message says which and why, in one line."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".strip(": ")


def check_imports(root: Path) -> dict[str, str]:
    """Import the stack; the versions found, or PreflightFailed naming the module."""
    sys.path[:0] = [p for p in (str(root),) if p not in sys.path]  # tools/train.py does the same
    found = {}
    for module, what in IMPORTS:
        try:
            mod = importlib.import_module(module)
        except Exception as exc:  # an import fails in many ways (missing .so, ABI, syntax)
            raise PreflightFailed(
                f"{what} ({module}) does not import: {_first_line(exc)}"
            ) from None
        found[module] = getattr(mod, "__version__", "ok")
    return found


def check_paths(paths_json: str) -> list[str]:
    """Every site path of check_paths' record readable here (inside the container: its binds)."""
    checked = []
    for key, path in sorted(readers.read_json(paths_json).items()):
        p = Path(path)
        if not (os.access(p, os.R_OK) and (not p.is_dir() or os.access(p, os.X_OK))):
            raise PreflightFailed(
                f"paths.{key}: {path} is not readable in the job (a missing bind? "
                "APPTAINER_BIND, containers/README.md)"
            )
        checked.append(key)
    return checked


def forward_backward(config: str, root: Path, gpus: int) -> dict:
    """In the torchrun worker: GPUs visible, then one forward and backward pass of the model."""
    import torch
    from mmengine.config import Config

    from tadsweep.backends.opentad.render import opentad_root_env

    visible = torch.cuda.device_count()
    if visible < gpus:
        raise PreflightFailed(
            f"torch sees {visible} GPU(s), the job asked for {gpus} (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}; is --nv in apptainer-args?)"
        )
    sys.path[:0] = [str(root)]
    import opentad.datasets  # noqa: F401  registers the transforms the model's forward uses
    from opentad.models import build_detector

    with opentad_root_env(root):
        cfg = Config.fromfile(config)
    t0 = time.monotonic()
    torch.manual_seed(0)  # the same weights and batch each time: a failure reproduces
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():  # as tools/train.py (a no-op under the tests' CPU shim)
        torch.cuda.set_device(rank)
    model = build_detector(cfg.model).to(rank if torch.cuda.is_available() else "cpu")
    model.train()
    device = next(model.parameters()).device
    geom = dict(input_geometry(cfg), batch=1)  # one clip of the config's own input size
    batch = {k: _to(v, device) for k, v in synthetic_batch(geom, 0, pin=False).items()}
    loss = model(**batch, return_loss=True)["cost"]
    if not torch.isfinite(loss):
        raise PreflightFailed(f"the forward pass gave a loss of {loss.item()}")
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    moved = sum(1 for g in grads if g is not None and torch.isfinite(g).all() and g.any())
    if not moved:
        raise PreflightFailed("the backward pass reached no trainable parameter")
    return dict(
        device=str(device),
        gpus_visible=visible,
        loss=float(loss),
        trainable_with_gradient=moved,
        trainable=len(grads),
        forward_backward_seconds=round(time.monotonic() - t0, 2),
    )


def _to(value, device):
    if hasattr(value, "to"):
        return value.to(device)
    if isinstance(value, list):
        return [_to(v, device) for v in value]
    return value


def run_checks(args) -> dict:
    """In the torchrun worker: every check, in order (see the module's docstring)."""
    from tadsweep.backends.opentad.fingerprint import check_opentad_build

    record = {"paths": check_paths(args.paths)}  # first: cheap, needs no import
    record["imports"] = check_imports(args.opentad_root)
    check_opentad_build(args.opentad_root)
    record["opentad_build"] = os.environ.get("TADSWEEP_OPENTAD_BUILD") or "no build record"
    record["model"] = forward_backward(args.config, args.opentad_root, args.gpus)
    return record


def check(args) -> dict:
    """Launch the checks in one torchrun worker, as the trainings launch theirs (one process
    sees every GPU of the job); the record written as the rule's output."""
    from tadsweep.backends.opentad.run import launch_prefix

    t0 = time.monotonic()
    result = Path(f"{args.out}.worker.json")
    cmd = [*launch_prefix(1), "-m", "tadsweep.site.preflight", "worker"]
    cmd += ["--opentad-root", str(args.opentad_root), "--config", args.config]
    cmd += ["--paths", args.paths, "--gpus", str(args.gpus), "--result", str(result)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
    try:
        record = json.loads(result.read_text())
    except (OSError, json.JSONDecodeError):  # torchrun itself did not start (torch broken)
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise PreflightFailed(f"the torchrun worker failed ({proc.returncode}): {last}") from None
    finally:
        result.unlink(missing_ok=True)
    if "error" in record:
        raise PreflightFailed(record["error"])
    record["seconds"] = round(time.monotonic() - t0, 2)
    return record


def failure_line(log: str) -> str | None:
    """The preflight's one `error:` line from its log (for the workflow's onerror), if any."""
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except OSError:
        return None
    errors = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")]
    return errors[-1] if errors else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tadsweep.site.preflight")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("check", "worker"):
        p = sub.add_parser(name)
        p.add_argument("--opentad-root", type=Path, required=True)
        p.add_argument("--config", required=True)
        p.add_argument("--paths", required=True)
        p.add_argument("--gpus", type=int, default=1)
        p.add_argument("--out" if name == "check" else "--result", required=True)
    args = parser.parse_args(argv)
    if args.command == "worker":
        try:
            out = run_checks(args)
        except (PreflightFailed, InputError) as exc:  # InputError: a failed check, not a bad arg
            out = {"error": str(exc)}
        except Exception as exc:  # upstream fails in many ways; the parent reports one line
            out = {"error": f"the model's forward/backward failed: {_first_line(exc)}"}
        write_json(out, args.result)
        return 0
    cli.check_outputs([args.config, args.paths], [args.out])
    record = check(args)
    write_json(record, args.out)
    print(f"preflight passed in {record['seconds']} s: {json.dumps(record['model'])}")
    return 0


if __name__ == "__main__":
    cli.run(main)
