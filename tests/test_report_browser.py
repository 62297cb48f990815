"""A Snakemake report opens in a real browser and shows something.

A throwaway workflow in the test's tmp dir runs the real `tadsweep.report.stats`,
`tadsweep.report.headline` and `tadsweep.report.plots` CLIs, registers a figure and the headline
page with `report()`, uses the repo's report/workflow.rst and captions, and builds `report.html`
with `snakemake --report`. Headless Chromium then takes a screenshot and dumps the DOM after the
page's JavaScript ran.

Snakemake 9's report is a React app inlined into one HTML file: its content exists only after the
scripts run. `--virtual-time-budget=MS` makes headless Chromium advance a virtual clock until the
page is idle or the budget is spent before it screenshots or dumps the DOM, so the React render
(scheduled asynchronously by createRoot) has happened. tests/test_demo_study.py checks the
demo's own report the same way.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import reportdata as R
from browser import assert_not_blank, rendered_dom, screenshot

from tadsweep.report import plots

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]


SNAKEFILE = """
PY = {py!r}
REPO = {repo!r}
PLOTS = {plots!r}

report: REPO + "/report/workflow.rst"

rule all:
    input:
        expand("plots/{{name}}.png", name=PLOTS),
        "stats/headline.html",

rule stats:
    input:
        s="summary.tsv",
        e="ensemble.tsv",
    output:
        headline="stats/headline.json",
        tables=expand("stats/{{name}}.tsv", name=["configs", "vs_baseline", "claims", "inert"]),
    shell:
        "{{PY}} -m tadsweep.report.stats {{input.s}} --ensemble {{input.e}} --baseline p1/base"
        " --n-boot 500 --out-dir stats"

rule headline:
    input:
        headline="stats/headline.json",
        tables=rules.stats.output.tables,
    output:
        rst="stats/headline.rst",
        html=report(
            "stats/headline.html", caption=REPO + "/report/headline.rst", category="0 Summary"
        ),
    shell:
        "{{PY}} -m tadsweep.report.headline {{input.headline}} --rst {{output.rst}}"
        " --html {{output.html}} --tables {{input.tables}}"

rule plots:
    input:
        s="summary.tsv",
        e="ensemble.tsv",
        c="stats/configs.tsv",
        h="stats/headline.json",
    output:
        [
            report(
                f"plots/{{name}}.png",
                caption=f"{{REPO}}/report/{{name}}.rst",
                category="2 Figures",
                labels={{"figure": name}},
            )
            for name in PLOTS
        ],
    shell:
        "{{PY}} -m tadsweep.report.plots --summary {{input.s}} --configs {{input.c}}"
        " --headline {{input.h}} --ensemble {{input.e}} --no-per-run --out-dir plots"
"""


def build_report(tmp: Path) -> Path:
    wf = tmp / "wf"
    wf.mkdir()
    R.study_summary().to_csv(wf / "summary.tsv", sep="\t", index=False)
    R.ensemble_table().to_csv(wf / "ensemble.tsv", sep="\t", index=False)
    (wf / "config.yaml").write_text("study: {name: browsertest}\n")
    (wf / "Snakefile").write_text(
        SNAKEFILE.format(py=sys.executable, repo=str(REPO), plots=list(plots.PLOT_NAMES))
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    base = [sys.executable, "-m", "snakemake", "-s", "Snakefile", "--configfile", "config.yaml"]
    for extra in (["-c1"], ["--report", "report.html"]):
        proc = subprocess.run(
            base + extra, cwd=wf, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    return wf / "report.html"


def test_report_renders_in_headless_chromium(tmp_path):
    html = build_report(tmp_path)
    text = html.read_text()
    # every figure is embedded as a data URI (base64 of a PNG starts with iVBORw0KGgo)
    for name in plots.PLOT_NAMES:
        assert re.search(rf"data:image/png;[^,]*filename={name}\.png;base64,iVBORw0KGgo", text)

    dom = rendered_dom(html, tmp_path)
    # React's output (the script source only has `className: ...`): the app mounted, and the
    # landing page shows the workflow description with the generated headline included
    assert 'class="flex flex-row w-screen h-screen"' in dom
    landing = re.search(
        r'class="prose prose-sm max-w-lg"><div class="document">(.*?)</div>', dom, re.S
    )
    assert landing, "no workflow description on the first screen"
    first = landing.group(1)
    assert "browsertest" in first  # Jinja: snakemake.config in report/workflow.rst
    assert "Best configuration" in first and "p1/lora=A+schedule=v2" in first
    assert "+4.00 points" in first  # gain over the baseline, from headline.json
    assert "0 Summary" in dom and "2 Figures" in dom  # categories in the navigation

    img = screenshot(html, tmp_path / "report.png", tmp_path)
    assert img.shape[:2] == (1000, 1400)
    assert_not_blank(img)
    # The landing page centres the description vertically in a fixed-height box: text taller than
    # the window is cut off at the top and cannot be scrolled to. Keep report/workflow.rst short:
    # the strip above the description must still be empty.
    assert img[:20, 300:760].mean() > 0.98, "front page text is cut off at the top"


def test_captions_render_without_rst_problems():
    """Every caption through Jinja (as Snakemake renders it) and docutils, halting on warnings."""
    from docutils.core import publish_parts
    from jinja2 import Environment

    class Snakemake:
        config = {"study": {"name": "x"}}
        wildcards = {}

    env = Environment(trim_blocks=True, lstrip_blocks=True)
    names = {p.stem for p in (REPO / "report").glob("*.rst")}
    assert set(plots.PLOT_NAMES) | {"workflow", "run_curves", "headline", "stats_tables"} <= names
    for path in sorted((REPO / "report").glob("*.rst")):
        text = env.from_string(path.read_text()).render(
            snakemake=Snakemake, files=[], categories={}
        )
        publish_parts(text, writer="html", settings_overrides={"halt_level": 2})
