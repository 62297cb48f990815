"""The report's one bootstrap: every interval it states (over seeds, runs, or seeds and test
videos) is a percentile interval from :func:`interval`, each sample resampled by itself from a
fresh ``default_rng(seed)``, so a number does not depend on what else was computed."""

import math

import numpy as np

DEFAULT_N_BOOT = 10_000
LEVEL = 0.95


def interval(statistic, sizes, n_resamples: int, seed: int = 0, level: float = LEVEL, batch=None):
    """Percentile interval of ``statistic(*draws)``: draws[i] holds one row of indices into sample
    i (of ``sizes[i]`` items) per resample, and the statistic one value per row. Rows come in
    batches (``batch`` resamples: bounded memory), each batch drawing every sample in turn."""
    rng = np.random.default_rng(seed)
    batch = batch or n_resamples
    values = [
        statistic(*(rng.integers(0, n, (min(batch, n_resamples - start), n)) for n in sizes))
        for start in range(0, n_resamples, batch)
    ]
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.concatenate(values), [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def mean_interval(values, n_resamples: int = DEFAULT_N_BOOT, seed: int = 0, level: float = LEVEL):
    """Interval of the mean of the finite values; (nan, nan) with fewer than 2 of them."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return (math.nan, math.nan)
    return interval(lambda i: x[i].mean(axis=1), [x.size], n_resamples, seed, level)
