"""Where a study stands, from what is on disk and in the SLURM queue:
`python -m tadsweep.report.status results/<study>`.

Run states, first match wins: done (sweep.tsv); queued / running (a SLURM job of the run is
queued); failed (the newest sign of life is an error: a SLURM job log of the run, a rule log
`logs/<step>/<run_id>.log` whose step output is missing, or an error after work/log.json's last
training line while train.json is missing); detected; trained; running (local: log.json changed
within --stale-minutes and no squeue); stopped (a rerun resumes it); planned.

SLURM jobs are matched through what snakemake-executor-plugin-slurm 2.8.0 sets: the comment
`rule_<rule>_wildcards_<wildcard values joined by "_", "/" as "_">` and the log
`.snakemake/slurm_logs/rule_<rule>/<that string>/<jobid>.log` (array jobs: `<array>_<task>.log`,
matched by the run's paths inside: their comment names only the first task). "_" or the string's
end bounds the run on both sides, so seed=1 never matches seed=10.
"""

import argparse
import re
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from tadsweep import cli
from tadsweep.errors import InputError
from tadsweep.report import ledger

ERROR_LINE = re.compile(r"Traceback \(most recent call last\)| ERROR: ")
# Rule logs (results/<study>/logs/<step>/<run_id>.log hold a step's stdout and stderr): a failure
# leaves a traceback, our CLIs' one-line "error: ..." or the kernel's "Killed".
STEP_ERROR = re.compile(
    r"Traceback \(most recent call last\)|^error: |^\w*Error\b|Killed|CUDA out of memory"
)
# The output each step's success leaves (steps not listed count only while the run is not done).
STEP_OUTPUT = {
    "resolve": "params.json",
    "render": "config.py",
    "train": "train.json",
    "detect": "candidates.npz",
    "curves": "curves.tsv",
    "sweep": "sweep.tsv",
}
TRAIN_LINE = re.compile(r"\[Train\]: ")
ITER_LINE = re.compile(r"\[Train\]: \[(\d+)\]\[(\d+)/(\d+)\]\s+Loss=([-+0-9.eEnaif]+)")
# Phrases in a SLURM job log that mean the job failed (Snakemake's own and slurmstepd's).
SLURM_ERROR = re.compile(
    r"Error in rule|Traceback \(most recent call last\)|exited with non-zero exit code"
    r"|slurmstepd: error|DUE TO TIME LIMIT|CANCELLED|oom-kill|Out Of Memory|WorkflowError"
)
SLURM_SUCCESS = re.compile(r"\d+ of \d+ steps \(100%\) done")
QUEUE_FORMAT = "%i|%j|%T|%M|%k"  # job id, name (run UUID), state, elapsed, comment


@dataclass
class RunStatus:
    run_id: str
    state: str
    detail: str = ""
    epoch: int | None = None
    loss: float | None = None
    average_mAP: float | None = None  # default post-processing, final epoch (fraction)
    gpu_hours: float | None = None
    log: str = ""
    job: str = ""


def query_queue() -> list[dict] | None:
    """This user's SLURM jobs, or None when there is no usable squeue (not a SLURM machine)."""
    cmd = ["squeue", "--me", "-h", "-o", QUEUE_FORMAT]
    try:  # no squeue on PATH: an OSError
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_queue(proc.stdout) if proc.returncode == 0 else None


def parse_queue(text: str) -> list[dict]:
    keys = ("id", "name", "state", "elapsed", "comment")  # QUEUE_FORMAT's fields
    parts = (line.strip().split("|", 4) for line in text.splitlines())
    return [dict(zip(keys, p)) for p in parts if len(p) == 5]


def matches(run_id: str, wildcard_str: str) -> bool:
    key = re.escape(run_id.replace("/", "_"))  # the run as the plugin's wildcard string has it
    return re.search(rf"(?:^|_){key}(?:_|$)", wildcard_str) is not None


def rule_of_comment(comment: str) -> tuple[str, str]:
    """(rule, wildcard string) from `rule_<rule>_wildcards_<w>`; rule names may contain '_'."""
    m = re.match(r"^rule_(.+?)_wildcards_(.*)$", comment)
    return m.groups() if m else (comment.removeprefix("rule_"), "")


def slurm_logs(snakemake_dir: Path) -> list[tuple[str, str, Path]]:
    """(rule, wildcard string, path) of every SLURM job log Snakemake kept."""
    root = snakemake_dir / "slurm_logs"
    logs = [(p.parent.parent.name, p.parent.name, p) for p in sorted(root.glob("*/*/*.log"))]
    # Array jobs (--slurm-array-jobs) log to <rule>/<array id>_<task>.log, no wildcard folder:
    # an empty wildcard string tells run_status to look for the run inside the log instead.
    logs += [(p.parent.name, "", p) for p in sorted(root.glob("*/*_*.log"))]
    return [(d.removeprefix("rule_").removeprefix("group_"), wc, p) for d, wc, p in logs]


def _text(path: Path) -> str:
    """A log's text, "" when unreadable (the status reports, never stops)."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def log_mentions(path: Path, run_id: str) -> bool:
    """Snakemake prints each job's output paths and wildcards into its log."""
    text = _text(path)
    return f"/runs/{run_id}/" in text or f"run={run_id}\n" in text or f"run={run_id}," in text


def slurm_log_failed(path: Path) -> str | None:
    """The first error line of a failed job's log, else None (success or still running)."""
    text = _text(path)
    errors = (ln.strip()[:200] for ln in text.splitlines() if SLURM_ERROR.search(ln))
    return None if SLURM_SUCCESS.search(text) else next(errors, None)


def last_progress(log: Path) -> tuple[int | None, float | None]:
    """Last (epoch, loss) of a training log: tadsweep.report.curves when it parses, else the last
    iteration line (a log cut mid-write must still show progress)."""
    try:
        from tadsweep.report.curves import parse_log

        curves = parse_log(log)
        if len(curves):
            row = curves.iloc[-1]
            return int(row["epoch"]), float(row["loss"])
    except Exception:  # noqa: BLE001 -- status must report, never crash on a broken log
        pass
    epoch = loss = None
    for m in filter(None, map(ITER_LINE.search, _text(log).splitlines())):
        epoch, loss = int(m.group(1)), float(m.group(4))
    return epoch, loss


def _explain(lines: list[str], i: int) -> str:
    """The error line, or for a traceback its exception line (the last unindented line after it)."""
    line = lines[i].strip()
    if "Traceback (most recent call last)" in line:
        after = [ln.strip() for ln in lines[i + 1 :] if ln.strip() and not ln[:1].isspace()]
        line = after[-1] if after else line
    return line[:200]


def log_error(log: Path) -> str | None:
    """The last error line when it comes after the last training line (an error that a resume
    has since overtaken does not count)."""
    lines = _text(log).splitlines()
    last_train = max((i for i, ln in enumerate(lines) if TRAIN_LINE.search(ln)), default=-1)
    errors = [i for i, ln in enumerate(lines) if ERROR_LINE.search(ln)]
    return _explain(lines, errors[-1]) if errors and errors[-1] > last_train else None


def step_log_error(study_dir: Path, run_id: str, newest: float) -> tuple[Path, str] | None:
    """(log, "step <step>: <error line>") of the newest rule log of this run that shows an error,
    is at least as new as the run's newest output, and whose step's output is missing."""
    found = []
    logs = study_dir / "logs"
    for step_dir in sorted(p for p in logs.iterdir() if p.is_dir()) if logs.is_dir() else []:
        log = step_dir / f"{run_id}.log"
        if not log.is_file() or log.stat().st_mtime < newest:
            continue
        output = STEP_OUTPUT.get(step_dir.name)
        if output and (study_dir / "runs" / run_id / output).exists():
            continue
        lines = _text(log).splitlines()
        bad = [i for i, ln in enumerate(lines) if STEP_ERROR.search(ln)]
        if bad:
            detail = f"step {step_dir.name}: {_explain(lines, bad[0])}"
            found.append((log.stat().st_mtime, log, detail))
    newest_error = max(found, key=lambda f: f[0], default=None)
    return newest_error[1:] if newest_error else None


def default_map(sweep: Path) -> float | None:
    try:  # status reports, never crashes on a broken file (pandas' errors are ValueErrors)
        df = pd.read_csv(sweep, sep="\t")
        row = df[df["setting"].astype(str) == "default"]
        return float(row["average_mAP"].iloc[0]) if len(row) else None
    except (OSError, ValueError, TypeError, KeyError):  # KeyError: a column missing
        return None


def run_status(
    study_dir: Path,
    run_id: str,
    jobs: list[dict] | None,
    logs: list[tuple[str, str, Path]],
    now: float | None,
    stale_minutes: float,
) -> RunStatus:
    rdir = study_dir / "runs" / run_id
    work_log = rdir / "work" / "log.json"
    outputs = [rdir / n for n in ("train.json", "candidates.npz", "sweep.tsv")]
    train, cand, sweep = (p.exists() for p in outputs)
    st = RunStatus(run_id, "planned")  # gpu_hours: filled in from the ledger by study_status
    if sweep:
        st.state, st.average_mAP = "done", default_map(outputs[2])
        return st
    if work_log.exists():
        st.epoch, st.loss = last_progress(work_log)
    j = next((j for j in jobs or [] if matches(run_id, rule_of_comment(j["comment"])[1])), None)
    if j:
        queued = j["state"] in ("PENDING", "CONFIGURING", "REQUEUED", "SUSPENDED")
        st.state, st.job = "queued" if queued else "running", j["id"]
        rule = rule_of_comment(j["comment"])[0]
        st.detail = f"rule {rule}, job {j['id']} {j['state']} {j['elapsed']}"
        return st
    newest = max((p.stat().st_mtime for p in outputs if p.exists()), default=0.0)
    failure = None  # (log, detail)
    for rule, wc, path in reversed(logs):  # sorted paths: the latest job id last per rule
        mine_log = matches(run_id, wc) if wc else log_mentions(path, run_id)
        if mine_log and path.stat().st_mtime >= newest and (err := slurm_log_failed(path)):
            failure = path, f"rule {rule}: {err}"
            break
    failure = failure or step_log_error(study_dir, run_id, newest)
    if not failure and not train and work_log.exists() and (err := log_error(work_log)):
        failure = work_log, err
    if failure:
        st.state, st.log, st.detail = "failed", str(failure[0]), failure[1]
    elif cand:
        st.state, st.detail = "detected", "post-processing sweep pending"
    elif train:
        st.state, st.detail = "trained", "detection pending"
    elif work_log.exists():
        age = ((now or time.time()) - work_log.stat().st_mtime) / 60.0
        if jobs is None and age <= stale_minutes:
            st.state, st.detail = "running", f"local; log updated {age:.0f} min ago"
        else:
            st.state = "stopped"
            st.detail = f"no job; log idle {age:.0f} min; a rerun resumes from the last checkpoint"
        st.log = str(work_log)
    return st


def study_status(
    study_dir,
    snakemake_dir=None,
    jobs: list[dict] | None | str = "query",
    now: float | None = None,
    stale_minutes: float = 30.0,
) -> tuple[pd.DataFrame, dict]:
    """Per-run table and study totals. `jobs`: "query" asks squeue; None means no queue visible;
    a list (from parse_queue) is used as is (tests)."""
    study_dir = Path(study_dir)
    if snakemake_dir is None:
        # results/<study> sits two levels below the workflow's working directory.
        guess = study_dir.resolve().parent.parent / ".snakemake"
        snakemake_dir = guess if guess.is_dir() else Path(".snakemake")
    if jobs == "query":
        jobs = query_queue()
    cfg = ledger.read_study(study_dir)
    ids, plan = ledger.study_runs(study_dir)
    logs = slurm_logs(Path(snakemake_dir))
    rows = [asdict(run_status(study_dir, r, jobs, logs, now, stale_minutes)) for r in ids]
    table = pd.DataFrame(rows, columns=list(RunStatus.__dataclass_fields__))
    problems: list[str] = []
    spend = ledger.study_ledger(study_dir, ids, cfg, problems)  # every attempt, running ones too
    table["gpu_hours"] = spend["gpu_hours_actual"].where(spend["source"] != "none").to_numpy()
    table["attempts"] = spend["attempts"].to_numpy()
    info = {
        "study_dir": str(study_dir),
        "runs": len(table),
        "states": {k: int(v) for k, v in sorted(table["state"].value_counts().items())},
        "gpu_hours_spent": float(spend["gpu_hours_actual"].sum()),
        "attempts": int(spend["attempts"].sum()),
        "failed_attempts": int(spend["failed_attempts"].sum()),
        "budget": ledger.budget(cfg),
        "ledger_problems": problems,
        "estimate_warnings": ledger.estimate_warnings(cfg, study_dir) if cfg else [],
        "queue": "not visible (no squeue)" if jobs is None else f"{len(jobs)} job(s) of yours",
        "best": None,
    }
    if plan is not None and "est_gpu_hours" in plan:
        info["gpu_hours_planned"] = float(plan["est_gpu_hours"].sum())
        untrained = [r for r in ids if not (study_dir / "runs" / r / "train.json").exists()]
        left = plan[plan["run_id"].isin(untrained)]
        info["gpu_hours_planned_left"] = float(left["est_gpu_hours"].sum())
    info["phases"] = ledger.phase_table(spend, plan).to_dict("records")
    done = table.dropna(subset=["average_mAP"])
    if len(done):
        b = done.loc[done["average_mAP"].idxmax()]
        info["best"] = {"run_id": b["run_id"], "average_mAP": float(b["average_mAP"])}
    return table, info


def format_status(table: pd.DataFrame, info: dict) -> str:
    out = [f"study {info['study_dir']}: {info['runs']} run(s); queue: {info['queue']}"]
    states = ", ".join(f"{n} {s}" for s, n in info["states"].items()) or "none"
    out.append(f"states: {states}")
    for r in table.to_dict("records"):
        line = f"  {r['state']:<9} {r['run_id']}"
        if r["state"] == "done" and pd.notna(r["average_mAP"]):
            line += f"  average mAP {100 * r['average_mAP']:.2f}"
        if r["state"] in ("running", "stopped", "queued") and pd.notna(r["epoch"]):
            line += f"  epoch {int(r['epoch'])} loss {r['loss']:.4f}"
        if r["detail"]:
            line += f"  ({r['detail']})"
        if r["state"] == "failed" and r["log"]:
            line += f"\n            log: {r['log']}"
        out.append(line)
    if best := info["best"]:
        at = f"{best['run_id']} at {100 * best['average_mAP']:.2f} average mAP"
        out.append(f"best so far: {at} (final epoch, default post-processing)")
    else:
        out.append("best so far: none (no run post-processed yet)")
    line = ledger.spend_line(info["gpu_hours_spent"], info.get("gpu_hours_planned"), info["budget"])
    out.append(
        f"GPU-hours: {line}; spent counts every attempt of train and detect "
        f"({info['attempts']} attempts, {info['failed_attempts']} failed, stopped or lost)"
    )
    for ph in info["phases"]:
        planned = ph.get("gpu_hours_planned")
        planned = ledger.hours(planned) if pd.notna(planned) else "?"
        out.append(
            f"  {ph['phase']:<9} spent {ledger.hours(ph['gpu_hours_actual'])} of planned "
            f"{planned} ({ph['attempts']} attempts, {ph['failed_attempts']} not ok)"
        )
    if "gpu_hours_planned_left" in info:
        left = ledger.hours(info["gpu_hours_planned_left"])
        out.append(f"planned still to spend: {left} (estimate, runs not trained yet)")
    out += [f"warning: {w}" for w in info["estimate_warnings"] + info["ledger_problems"]]
    return "\n".join(out)


def _minutes(text: str) -> float:
    """--stale-minutes: more than 0, at most a week (a log quiet that long is not running)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 10080:
        raise argparse.ArgumentTypeError(f"must be > 0 and <= 10080 (a week), got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tadsweep.report.status",
        description="Every run's state, the best result so far and GPU-hours spent.",
    )
    ap.add_argument("study_dir", help="results/<study>")
    ap.add_argument("--snakemake-dir", help="the workflow's .snakemake (default: found)")
    ap.add_argument("--stale-minutes", type=_minutes, default=30.0, help="default 30")
    ap.add_argument("--no-queue", action="store_true", help="do not call squeue")
    ap.add_argument("--tsv", help="also write the per-run table here")
    args = ap.parse_args(argv)
    cli.check_outputs([], [args.tsv])
    if not Path(args.study_dir).is_dir():
        raise InputError(f"{args.study_dir}: no such study folder")
    table, info = study_status(
        args.study_dir,
        args.snakemake_dir,
        jobs=None if args.no_queue else "query",
        stale_minutes=args.stale_minutes,
    )
    print(format_status(table, info))
    if args.tsv:
        table.to_csv(args.tsv, sep="\t", index=False)
    return 0


if __name__ == "__main__":
    cli.run(main)
