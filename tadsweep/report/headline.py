"""The report's first screen: headline.json (tadsweep.report.stats) as an rst snippet, which
report/workflow.rst includes (Snakemake 9's landing page renders only that description), and as
a standalone HTML page with the statistics tables, registered in the "Summary" category."""

import argparse
import html
import math
import re
from pathlib import Path

import pandas as pd

from tadsweep import cli, readers
from tadsweep.atomic import atomic_path
from tadsweep.errors import InputError
from tadsweep.plan import budget


def _num(x, fmt: str = "{:.2f}") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return fmt.format(x)


def _signed(x) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def _ci(ci, sign: str = "+") -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "no interval"
    return f"95% CI {ci[0]:{sign}.2f} to {ci[1]:{sign}.2f}"


def _video(v: dict | None) -> str:
    """A gain's interval over seeds and videos (tadsweep.report.video_bootstrap), if any."""
    if not v:
        return ""
    return f"; over {v['over']} ({v['n_resamples']} resamples): {_ci(v['ci'])}"


def lines(head: dict):
    """(label, text) pairs, the same for rst and HTML."""
    best, base = head.get("best"), head.get("baseline")
    if best:
        text = (
            f"{best['config_id']}: {_num(best['mean'])} average mAP over {best['n_seeds']} seed(s)"
        )
        if best.get("std") is not None:
            text += f" (SD {_num(best['std'])})"
        yield "Best configuration", text
        gain = best.get("gain")
        if gain and base:
            yield (
                "Gain over baseline",
                f"{_signed(gain['diff'])} points vs {base['config_id']} "
                f"({_num(base['mean'])}), paired over {gain['n_pairs']} seed(s), "
                f"{_ci(gain['ci'])}{_video(gain.get('video_ci'))}",
            )
        elif base is None:
            yield "Gain over baseline", "baseline has no finished run"
    else:
        yield "Best configuration", "no finished run yet"
    yield from reported_lines(head.get("reported") or {})
    yield from diagnosis_lines(head.get("doctor"))
    yield from crossfit_lines(head.get("crossfit"))
    ens = head.get("ensemble")
    if ens and ens.get("n_members") == 1:  # greedy selection kept the best single run alone
        yield (
            "Ensemble",
            f"no ensemble beat the best single run on {ens['chosen_on']} ({ens['members']}: "
            f"{_num(ens['average_mAP'])} average mAP on all videos)",
        )
    elif ens:
        yield (
            "Ensemble",
            f"{_num(ens['average_mAP'])} average mAP on all videos (members chosen on "
            f"{ens.get('chosen_on', 'all videos')}), {_signed(ens['gain'])} points over "
            f"the best single run ({_num(ens['best_single_average_mAP'])})"
            + _video(ens.get("video_ci")),
        )
    else:
        yield "Ensemble", "not run"
    if pp := head.get("postprocess"):
        yield (
            "Post-processing",
            f"{pp.get('described') or pp['setting']}: {_signed(pp['diff'])} points over the "
            f"default, paired over {pp['n_runs']} run(s), {_ci(pp['ci'])}"
            + _video(pp.get("video_ci")),
        )
    runs, failed = head.get("runs", {}), head.get("failed_runs", [])
    yield (
        "Runs",
        f"{runs.get('done', 0)} done, {runs.get('failed', 0)} failed, "
        f"{runs.get('pending', 0)} pending; {_num(head.get('gpu_hours'), '{:.1f}')} GPU-hours",
    )
    if head.get("spend"):  # the ledger: spent / planned / budget
        yield "GPU-hours", head["spend"]["line"]
    if failed:
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        yield "Failed runs", ", ".join(failed[:5]) + more
    # what staged seeds / the budget skipped, and whether the best mean rests on one seed
    yield from budget.report_lines(head.get("gates", []), (best or {}).get("config_id"))
    if claims := head.get("claims", []):
        yield (
            "Seed-plan claims",
            "; ".join(
                f"{c['claim']}: {c['verdict']} ({_signed(c.get('diff'))}"
                f"{_video(c.get('video_ci'))})"
                for c in claims
            ),
        )
    if head.get("inert"):
        yield "Inert settings", f"{len(head['inert'])} named in the Statistics tables"


def reported_lines(reported: dict):
    """The baseline and control arm against the figures reported outside the study."""
    for role, label in (("baseline", "Baseline check"), ("control", "Control arm")):
        if not (rec := reported.get(role)):
            continue
        figure = f"{_num(rec['reported'])} reported ({rec['source']})"
        if rec.get("config_id") is None:
            yield label, f"{figure}; no finished run of this arm yet"
            continue
        text = (
            f"{rec['config_id']}: {_num(rec.get('mean'))} over {rec.get('n_seeds')} seed(s) "
            f"({_ci(rec.get('ci'), '')}) vs {figure}: {_signed(rec.get('diff'))}, "
            f"{rec.get('verdict')}"
        )
        for key, v in (rec.get("per_tiou") or {}).items():
            text += f"; {key} {_num(v.get('study'))} vs {_num(v.get('reported'))}"
        if gap := rec.get("minus_baseline"):
            text += f"; minus the baseline {_signed(gap['diff'])} ({_ci(gap['ci'])}"
            text += f"{_video(gap.get('video_ci'))})"
        yield label, text


FIRST_SCREEN = 8  # diagnosis findings listed on the first screen; the HTML page has them all


def diagnosis_lines(findings: list[dict] | None):
    """The baseline doctor's errors and warnings: what is found, its expected effect, the source."""
    if findings is None:
        return
    shown = [f for f in findings if f["severity"] != "info"]
    count = {s: sum(f["severity"] == s for f in findings) for s in ("error", "warning", "info")}
    yield (
        "Baseline diagnosis",
        f"{count['error']} error(s), {count['warning']} warning(s), {count['info']} note(s) "
        "from the doctor: setup faults explain gaps of many points, the seed plan's knobs 1-5",
    )
    for f in shown[:FIRST_SCREEN]:
        source = f" [{f['source']}]" if f.get("source") else ""
        yield (
            f"Diagnosis ({f['severity']})",
            f"{f['subject']}: {f['found']}, expected {f['expected']}: {f['why']}{source}",
        )
    if len(shown) > FIRST_SCREEN:
        yield "Diagnosis", f"{len(shown) - FIRST_SCREEN} more in doctor/findings.json"


def crossfit_lines(cf: dict | None):
    """Honest (cross-fitted) beside optimistic figures, and which one decisions used."""
    if not cf:
        return
    used = cf["decisions"]
    yield (
        "Selection",
        f"decisions on {used} of the test videos"
        + (" (cross-fitted)" if used != "all videos" else " (selection.crossfit: false)")
        + "; honest = chosen on one half, scored on the other, swapped and averaged; "
        "optimistic = chosen and scored on all videos; the gains' intervals over videos "
        "are for the all-videos gains stated on their lines",
    )
    if best := cf.get("best_config"):
        yield (
            "Best configuration, honest vs optimistic",
            f"{_num(best['honest'])} vs {_num(best['optimistic'])} average mAP "
            f"(half a chose {best['chosen_on_a']['config_id']}, half b "
            f"{best['chosen_on_b']['config_id']}, all videos "
            f"{best['chosen_on_all']['config_id']})",
        )
    if pp := cf.get("postprocess"):
        yield (
            "Post-processing, honest vs optimistic",
            f"{_signed(pp['honest'])} vs {_signed(pp['optimistic'])} points over the default "
            f"(half a chose {pp['chosen_on_a']['described']}; all videos "
            f"{pp['chosen_on_all']['described']})",
        )
    if ens := cf.get("ensemble"):
        yield (
            "Ensemble, honest vs optimistic",
            f"{_num(ens['honest'])} vs {_num(ens['optimistic'])} average mAP (members "
            f"chosen on half a: {', '.join(ens['chosen_on_a']['members'])})",
        )


def _rst_escape(text: str) -> str:
    # Run ids carry "=", "," and "/", harmless in rst; backslashes, asterisks, backquotes and
    # underscores after a word could start markup.
    return re.sub(r"([\\*`_|])", r"\\\1", text)


def render_rst(head: dict) -> str:
    out = [f"**Headline** ({_rst_escape(head.get('metric', 'average-mAP points'))})", ""]
    out += [f"- **{label}**: {_rst_escape(text)}" for label, text in lines(head)]
    return "\n".join(out) + "\n"


# The statistics tables shown under the headline (Snakemake's report offers TSV files only as
# downloads; an HTML page is displayed).
TABLES = (
    ("claims", "Seed-plan claims"),
    ("vs_baseline", "Each configuration minus the baseline (paired by seed)"),
    ("configs", "Configurations (mean, SD and 95% bootstrap interval over seeds)"),
    ("inert", "Inert settings"),
)
STYLE = (
    "body{font-family:sans-serif;margin:2em}li{margin:.4em 0}"
    "table{border-collapse:collapse;font-size:85%;margin-bottom:2em}"
    "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}"
)


def render_html(head: dict, tables: dict[str, pd.DataFrame] | None = None) -> str:
    items = "\n".join(
        f"<li><b>{html.escape(label)}</b>: {html.escape(text)}</li>" for label, text in lines(head)
    )
    title = html.escape(f"tadsweep {head.get('study') or ''}".strip() + ": headline")
    metric = html.escape(head.get("metric", ""))
    parts = [f"<h1>{title}</h1><p>{metric}</p><ul>\n{items}\n</ul>"]
    if head.get("doctor"):
        cols = ["severity", "subject", "found", "expected", "why", "source"]
        parts.append("<h2>Baseline diagnosis</h2>")
        parts.append(pd.DataFrame(head["doctor"], columns=cols).to_html(index=False))
    for key, caption in TABLES:
        df = (tables or {}).get(key)
        if df is not None and not df.empty:
            parts.append(f"<h2>{html.escape(caption)}</h2>")
            parts.append(df.to_html(index=False, na_rep="", float_format="{:.2f}".format))
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def read_tables(files) -> dict[str, pd.DataFrame]:
    """The statistics tables the rule hands over, by name (configs.tsv -> "configs")."""
    known = {key for key, _ in TABLES}
    out = {}
    for path in map(Path, files):
        if path.stem not in known:
            raise InputError(f"{path}: not one of the statistics tables ({', '.join(known)})")
        try:
            df = readers.read_tsv(path)
        except pd.errors.EmptyDataError:
            continue
        except pd.errors.ParserError as exc:
            raise InputError(f"{path}: not a table: {exc}") from None
        for col in ("n_seeds", "n_pairs", "n_candidates"):  # counts, not 3.00
            if col in df:
                df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
        out[path.stem] = df
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tadsweep.report.headline",
        description="Render headline.json (from tadsweep.report.stats) as rst and/or HTML.",
    )
    add = ap.add_argument
    add("headline", help="headline.json")
    add("--rst", help="rst snippet to include in report/workflow.rst")
    add("--html", help="standalone HTML page")
    add("--tables", nargs="*", default=[], help="tables of tadsweep.report.stats")
    add("--gates", nargs="*", default=[], help="phases' gate.json (tadsweep.plan.budget)")
    add("--doctor", help="the baseline doctor's findings.json")
    args = ap.parse_args(argv)
    cli.check_outputs([args.headline, args.tables, args.gates, args.doctor], [args.rst, args.html])
    head = readers.read_json(args.headline)
    head["doctor"] = readers.read_json(args.doctor) if args.doctor else None
    head["gates"] = [budget.read_gate(g) for g in args.gates]
    tables = read_tables(args.tables)
    for path, text in ((args.rst, render_rst(head)), (args.html, render_html(head, tables))):
        if path:
            with atomic_path(path) as tmp:
                tmp.write_text(text)
    return 0


if __name__ == "__main__":
    cli.run(main)
