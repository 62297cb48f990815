"""A GPU-hour budget and staged seeds (tadsweep.plan.budget): the plan's bounds and refusal, the
gate's decisions, selection that never lets an arm left on one seed win, the report's lines, and
one small study through Snakemake with both (its dry-run complete, its gate pruning jobs)."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tadsweep.errors import ConfigError, InputError
from tadsweep.plan import budget, select, summary
from tadsweep.plan.config import load_study
from tadsweep.report import ledger

ROOT = Path(__file__).resolve().parent.parent
REAL = yaml.safe_load((ROOT / "config.yaml").read_text())
DEMO = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())


def small(staging=None, gpu_hours=None, arms=("v1", "A", "B"), seeds=(1, 2)) -> dict:
    """The demo study cut to one phase of LoRA arms, 4 epochs, 1 minute per epoch (so the
    estimate dwarfs what a demo run spends: decisions never hang on the machine's speed)."""
    cfg = copy.deepcopy(DEMO)
    cfg["study"].update(name="budget", seeds=list(seeds))
    cfg["model"]["eval_window"] = 2
    cfg["variants"]["schedule"] = {
        "v1": {"lr": 2.0e-3, "warmup_epoch": 1, "epochs": 4, "cosine_epochs": 6}
    }
    cfg["phases"] = {"p1": {"base": "baseline", "grid": {"lora": list(arms)}}}
    cfg["postprocess"]["grid"] = {"sigma": [0.5, 0.7]}
    cfg["ensemble"] = {"enabled": False}
    cfg["resources"]["minutes_per_epoch"] = 1.0
    cfg["demo"].update(videos_train=16, videos_val=10)
    cfg["claims"] = []
    if staging is not None:
        cfg["staging"] = staging
    if gpu_hours is not None:
        cfg["budget"] = {"gpu_hours": gpu_hours}
    return cfg


def test_plan_shows_the_real_study_up_to_and_at_least():
    cfg, _ = load_study(copy.deepcopy(REAL))
    assert all(budget.staged(cfg, p) for p in cfg["phase_order"])  # 3 seeds: on by default
    text = summary.plan_summary(cfg)
    # 11 arms x 3 seeds at most; every first seed, and the baseline's and control's 3, at least
    assert "up to 33 trainings" in text and "at least 15 (" in text
    assert "gate p1: up to 15 trainings, at least 9" in text
    off = copy.deepcopy(REAL)
    off["staging"] = {"enabled": False}
    cfg, _ = load_study(off)
    assert budget.gated_phases(cfg) == [] and "up to" not in summary.plan_summary(cfg)


def test_budget_below_the_guaranteed_part_is_refused_in_one_line():
    cfg, _ = load_study(small(gpu_hours=10.0))
    lo = sum(b["min_h"] for b in budget.bounds(cfg).values())
    # staging off with 2 seeds: the budget still gates the arms' second seeds
    assert budget.gated_phases(cfg) == ["p1"] and not budget.staged(cfg, "p1")
    assert lo == pytest.approx(4 / 60 * (2 + 1.2 + 1.1))  # v1 twice (baseline), A and B once
    with pytest.raises(ConfigError) as info:
        load_study(small(gpu_hours=round(lo - 0.01, 3)), source="study.yaml")
    msg = str(info.value)
    assert msg.startswith("study.yaml: budget.gpu_hours: 0.277 is below the study's guaranteed")
    assert "4 trainings" in msg and "\n" not in msg
    text = summary.plan_summary(load_study(small(gpu_hours=0.3))[0])
    assert "budget: 0.3 GPU-h; guaranteed 0.29, at most 0.44: gates decide the rest" in text


def scores(rows) -> pd.DataFrame:
    variants = {"lora": "v1", "schedule": "v1", "augment": "default", "structure": "all"}
    return pd.DataFrame(
        [
            {
                "phase": "p1",
                "config_id": f"p1/{arm}",
                "run_id": f"p1/{arm}/seed=1",
                "seed": 1,
                "score": score,
                "score_a": score,  # half a: what decisions see when cross-fitting (default)
                "variants": dict(variants, lora=lora),
            }
            for arm, lora, score in rows
        ]
    )


def test_gate_prunes_by_margin_admits_best_first_within_budget():
    cfg, _ = load_study(small({"enabled": True}, arms=("v1", "A", "B", "off"), seeds=(1, 2, 3)))
    assert budget.protected(cfg, "p1", {"lora": "off"}) == "control"
    first = scores(
        [
            ("base", "v1", 0.30),
            ("lora=A", "A", 0.35),
            ("lora=B", "B", 0.34),
            ("lora=off", "off", 0.2),
        ]
    )
    gate = budget.decide(cfg, "p1", first.iloc[:3], [], {})  # the control's first seed failed
    by = {a["config_id"]: a for a in gate["arms"]}
    assert by["p1/base"]["decision"] == "train" and by["p1/base"]["runs"] == []  # never gated
    assert by["p1/lora=off"]["decision"] == "train"  # the control: all seeds, whatever it scores
    assert by["p1/lora=A"]["decision"] == by["p1/lora=B"]["decision"] == "train"
    # 2 points (default margin): B at 34 is within 35 - 2; with margin 0.5 it is pruned
    cfg["staging"]["margin"] = 0.5
    gate = budget.decide(cfg, "p1", first, [], {})
    by = {a["config_id"]: a for a in gate["arms"]}
    assert by["p1/lora=B"]["decision"] == "pruned"
    assert by["p1/lora=B"]["reason"].startswith("single seed 34.00, more than 0.5 points below")
    assert gate["skipped_runs"] == ["p1/lora=B/seed=2", "p1/lora=B/seed=3"]
    # a budget that fits the guaranteed part and one arm's rest: the best first seed goes first
    cfg["staging"]["margin"] = 10.0
    lo = sum(b["min_h"] for b in budget.bounds(cfg).values())
    cfg["budget"]["gpu_hours"] = lo + 2 * 4 / 60 * 1.2 + 0.001  # A's two remaining seeds
    gate = budget.decide(cfg, "p1", first, [], {})
    by = {a["config_id"]: a for a in gate["arms"]}
    assert (by["p1/lora=A"]["decision"], by["p1/lora=B"]["decision"]) == ("train", "skipped")
    assert by["p1/lora=B"]["reason"].startswith("budget: ")
    assert gate["committed_gpu_hours"] <= cfg["budget"]["gpu_hours"]
    assert gate["incomplete"] == ["p1/lora=B"]
    # a run that spent more than its estimate counts as what it spent: now nothing fits
    gate = budget.decide(cfg, "p1", first, [], {"p1/base/seed=1": 1.0})
    assert [a["decision"] for a in gate["arms"]].count("skipped") == 2


def write_run(tmp, config_id, seed, score):
    run_id = f"{config_id}/seed={seed}"
    d = tmp / run_id
    d.mkdir(parents=True)
    variants = {"lora": config_id.split("=")[-1], "schedule": "v1"}
    params = {"phase": "p1", "config_id": config_id, "run_id": run_id, "seed": seed}
    (d / "params.json").write_text(json.dumps({**params, "variants": variants}))
    pd.DataFrame([{"setting": "default", "average_mAP": score}]).to_csv(
        d / "sweep.tsv", sep="\t", index=False
    )
    return str(d / "params.json"), str(d / "sweep.tsv")


def test_select_never_lets_an_arm_left_on_one_seed_win(tmp_path):
    runs = [("p1/base", 1, 0.30), ("p1/base", 2, 0.31), ("p1/lora=A", 1, 0.40)]
    files = [write_run(tmp_path, *r) for r in runs]
    gate = tmp_path / "gate.json"
    gate.write_text(json.dumps({"skipped_runs": [], "incomplete": ["p1/lora=A"], "arms": []}))
    args = ["--phase", "p1", "--params", *[f[0] for f in files]]
    args += ["--sweeps", *[f[1] for f in files], "--metric", "average_mAP", "--aggregate", "mean"]
    for extra, expected in (([], "p1/lora=A"), (["--gate", str(gate)], "p1/base")):
        out = [f"--winner={tmp_path}/w.json", f"--ranking={tmp_path}/r.tsv"]
        assert select.main(args + extra + out) == 0
        assert json.loads((tmp_path / "w.json").read_text())["config_id"] == expected
    gate.write_text('{"skipped_runs": []}')  # not what a gate writes: one line, what to do
    with pytest.raises(InputError, match=r"gate\.json: not a gate\.json \(needs skipped_runs, "):
        select.main(args + ["--gate", str(gate)] + out)


def test_report_lines_label_pruned_and_skipped_arms():
    gate = {
        "phase": "p2",
        "arms": [
            {"config_id": "p2/a", "decision": "train", "runs": [], "first_seed_score": 50.0},
            {"config_id": "p2/b", "decision": "pruned", "runs": ["x"], "reason": "single seed 41"},
            {"config_id": "p2/c", "decision": "skipped", "runs": ["y", "z"], "reason": "budget: 9",
             "first_seed_score": 49.5},
        ],
    }  # fmt: skip
    gate["incomplete"] = ["p2/b", "p2/c"]
    assert budget.report_lines([gate])[0][0] == "Pruned arm (p2)"
    note = budget.report_lines([gate], best="p2/c")[0]
    assert note[1].startswith("p2/c is an arm its gate left on one seed: it cannot win phase p2")
    assert budget.report_lines([gate], best="p2/a") == [
        ("Pruned arm (p2)", "p2/b: single seed 41"),
        ("Skipped (p2)", "p2/c: 2 training(s) not run (single seed 49.50); budget: 9"),
    ]


def snakemake(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the jobs' python
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile",
           str(config), "--directory", str(workdir), *args]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.e2e
def test_staged_study_under_a_budget_trains_only_what_its_gate_admits(tmp_path):
    """Three arms, two seeds, staged with margin 0 and a budget just above the guaranteed part:
    the baseline trains both seeds, A and B their first; of A and B, the one below the best first
    seed is pruned and any other skipped by the budget -- 4 trainings of the grid's 6."""
    cfg = small({"enabled": True, "margin": 0.0})
    lo = sum(b["min_h"] for b in budget.bounds(load_study(copy.deepcopy(cfg))[0]).values())
    cfg["budget"] = {"gpu_hours": round(lo + 0.01, 3)}
    config = tmp_path / "budget.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    study = work / "results" / "budget"
    targets = [f"results/budget/{t}" for t in ("stats/headline.html", "phases/p1/winner.json")]
    res = snakemake(work, config, "-n", *targets)
    assert res.returncode == 0, res.stderr[-3000:]
    # the dry-run is complete: every training the grid may need, and the gate
    jobs = dict(
        line.split()[:2] for line in res.stdout.splitlines() if line.startswith(("train ", "gate "))
    )
    assert jobs == {"train": "6", "gate": "1"}
    assert "up to 6 trainings (0.44 GPU-h), at least 4 (0.29 GPU-h)" in res.stderr + res.stdout
    res = snakemake(work, config, "--cores", "2", *targets)
    assert res.returncode == 0, res.stderr[-4000:]
    trained = sorted(
        str(p.parent.relative_to(study / "runs")) for p in study.glob("runs/**/train.json")
    )
    gate = json.loads((study / "phases/p1/gate.json").read_text())
    by = {a["config_id"]: a for a in gate["arms"]}
    assert [by[c]["decision"] for c in ("p1/lora=A", "p1/lora=B")].count("pruned") >= 1
    assert {by[c]["decision"] for c in ("p1/lora=A", "p1/lora=B")} <= {"pruned", "skipped"}
    assert sorted(gate["skipped_runs"]) == ["p1/lora=A/seed=2", "p1/lora=B/seed=2"]
    assert trained == ["p1/base/seed=1", "p1/base/seed=2", "p1/lora=A/seed=1", "p1/lora=B/seed=1"]
    # the winner has all its seeds; the study stayed within its budget
    winner = json.loads((study / "phases/p1/winner.json").read_text())
    assert winner["config_id"] == "p1/base" and len(winner["seed_scores"]) == 2
    assert gate["committed_gpu_hours"] <= cfg["budget"]["gpu_hours"]
    spent = ledger.study_ledger(study, trained, cfg)["gpu_hours_actual"].sum()
    assert spent <= cfg["budget"]["gpu_hours"]
    assert len(pd.read_csv(study / "summary.tsv", sep="\t")["run_id"].unique()) == 4
    # the first screen says what was not trained, and why
    rst = (study / "stats/headline.rst").read_text()
    for config_id, arm in by.items():
        if arm["decision"] == "pruned":
            assert f"**Pruned arm (p1)**: {config_id}: single seed" in rst.replace("\\", "")
        elif arm["decision"] == "skipped":
            assert f"**Skipped (p1)**: {config_id}: 1 training(s) not run" in rst.replace("\\", "")
