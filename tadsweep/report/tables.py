"""summary.tsv, ensemble.tsv and configs.tsv as the report reads them: columns checked, types
normalised, one-line InputErrors."""

from pathlib import Path

import pandas as pd

from tadsweep import readers
from tadsweep.detections.evaluate import half_columns, tiou_columns
from tadsweep.errors import InputError
from tadsweep.plan.axes import AXES as AXIS_REGISTRY

AXES = tuple(AXIS_REGISTRY)  # the study's axes (tadsweep/plan/axes)
METRIC = "average_mAP"


def read_table(path, what: str, **kwargs) -> pd.DataFrame:
    """A TSV tadsweep wrote (readers.read_tsv); pandas' errors become one-line InputErrors."""
    try:
        return readers.read_tsv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: cannot read {what}: {exc}".replace("\n", " ")) from None


def read_summary(path: str | Path) -> pd.DataFrame:
    return check_summary(read_table(path, "summary table"), str(path))


def check_summary(df: pd.DataFrame, source: str = "summary") -> pd.DataFrame:
    """Columns the report needs, types normalised; a one-line InputError otherwise."""
    need = ["run_id", "config_id", "seed", "status", "setting", "is_default_setting", METRIC]
    if missing := [c for c in need if c not in df.columns]:
        raise InputError(f"{source}: missing column(s) {', '.join(missing)}")
    df = df.copy()
    if df["is_default_setting"].dtype != bool:  # from TSV: bool, 0/1 or text, by the column
        text = df["is_default_setting"].astype(str).str.strip().str.lower()
        df["is_default_setting"] = text.isin({"true", "1", "yes", "1.0"})
    df["status"] = df["status"].astype(str)
    for col in [METRIC, "gpu_hours", *tiou_columns(df.columns), *half_columns(df.columns)]:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    big = df[METRIC] > 1.0 + 1e-9
    if big.any():  # the contract says fractions; percent here would inflate every gain 100-fold
        row = df[big].iloc[0]
        raise InputError(
            f"{source}: run {row['run_id']} setting {row['setting']}: {METRIC} "
            f"{row[METRIC]} > 1 (expected a fraction)"
        )
    for col in [f"v_{axis}" for axis in AXES]:
        df[col] = df[col].astype("string").fillna("") if col in df.columns else ""
    return df


def done_default(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run: the default post-processing setting."""
    return summary[(summary["status"] == "done") & summary["is_default_setting"]]


ENSEMBLE_COLUMNS = {"step", "members", METRIC, "best_single_average_mAP"}  # what the report reads


def read_ensemble(path: str | Path | None) -> pd.DataFrame | None:
    """ensemble.tsv (tadsweep.detections.ensemble); None, as no ensemble, when it is absent or
    not such a table."""
    if path is None or not Path(path).exists():
        return None
    try:
        df = readers.read_tsv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    return df if set(df.columns) >= ENSEMBLE_COLUMNS else None


def read_configs(path) -> pd.DataFrame:
    """configs.tsv (tadsweep.report.stats) with its variants as text, as the figures read it."""
    text = {"config_id": str, **{f"v_{a}": str for a in AXES}}
    df = read_table(path, "the configurations table", dtype=text)
    if missing := {"config_id", "n_seeds", "mean", "ci_low", "ci_high"} - set(df.columns):
        raise InputError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return df.fillna({c: "" for c in text if c in df})
