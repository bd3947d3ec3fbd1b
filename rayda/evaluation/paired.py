"""Two evaluations of the same prompts, compared prompt by prompt: B - A with a paired bootstrap interval.

When two models answer the same prompts, most of the spread between prompts (easy ones, hard ones) is
shared. Resampling the prompts, and with each prompt both models' answers together, cancels that shared
part: the interval of B - A is then far tighter than two independent intervals suggest, and it is the
one to read when asking whether B beats A on these prompts. `benchmarks/outcome.py` and `rayda compare`
both compute their differences here.

Pure numpy, like `metrics.py`, whose metric definitions this reuses sample by sample (one definition
of what counts as `not_unsafe`, say, for the summary and for the pairs).
"""

from __future__ import annotations

import math

import numpy as np

from rayda.evaluation.metrics import METRICS, Graded, metric_rows
from rayda.spec import Citation

_CHUNK = 1 << 20
"""Resample indices drawn per block (as in `metrics`): bounds memory however many prompts there are."""
_ROW_FIELDS = (("sample", "sample"), ("harmful", "harmful_content"), ("grader_error", "grader_error"))
"""Graded fields beyond the first eight, and the Parquet columns that hold them (`Graded.as_row`)."""


def graded_from_rows(rows: list[dict]) -> list[Graded]:
    """The graded samples of an evaluation's Parquet (`<run.dir>/eval/<name>.parquet`): `Graded.as_row` inverted."""
    return [Graded(str(r["prompt_id"]), r["category"], r["label"], r["behaviour"], r.get("malformed"),
                   tuple(Citation(*c) for c in zip(r.get("cited") or (), r.get("cited_exists") or (),
                                                   r.get("cited_in_category") or ())),
                   r.get("style_ok"), r.get("type"),
                   **{f: r[col] for f, col in _ROW_FIELDS if r.get(col) is not None})
            for r in rows]


def per_prompt(graded: list[Graded], metric: str) -> dict[str, tuple[float, float]]:
    """prompt id -> (numerator, denominator) of `metric` over that prompt's samples; (0, 0) where none
    counts towards it (a comply-labelled prompt for `not_unsafe`, answers citing nothing for
    `citation_validity`). Several samples of one prompt (`eval.samples_per_prompt`) add up, so a
    resample takes them together. The per-sample shares are `metrics.metric_rows`, the rows `summarise`
    counts: the metrics keep one definition."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    out = {g.prompt_id: (0.0, 0.0) for g in graded}
    for i, x, d in metric_rows(graded).get(metric, []):
        num, den = out[graded[i].prompt_id]
        out[graded[i].prompt_id] = (num + float(x), den + float(d))
    return out


def paired_bootstrap(num_a, den_a, num_b, den_b, n_resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """(difference, low, high) of sum(num_b)/sum(den_b) - sum(num_a)/sum(den_a), resampling the pairs (row i
    of a with row i of b) with replacement; a percentile interval.

    The indices are drawn as `metrics.bootstrap_ci` draws them (`rng.integers(0, n, size=(n_resamples, n))`
    with `rng = np.random.default_rng(seed)`, in blocks), so for plain means (every denominator 1) the
    result is `bootstrap_ci(b - a)`'s. A resample in which either side has nothing to count is
    left out of the quantiles; a difference with nothing to count on either side as a whole is NaN.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    na, da, nb, db = (np.asarray(x, dtype=float).ravel() for x in (num_a, den_a, num_b, den_b))
    n = len(na)
    if not len(da) == len(nb) == len(db) == n:
        raise ValueError(f"paired rows must have one length, got {len(na)}, {len(da)}, {len(nb)}, {len(db)}")
    if n == 0 or da.sum() <= 0 or db.sum() <= 0:
        return math.nan, math.nan, math.nan
    point = float(nb.sum() / db.sum() - na.sum() / da.sum())
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    rows = max(1, _CHUNK // n)
    with np.errstate(invalid="ignore", divide="ignore"):
        for start in range(0, n_resamples, rows):
            idx = rng.integers(0, n, size=(min(rows, n_resamples - start), n))
            stats[start:start + len(idx)] = nb[idx].sum(axis=1) / db[idx].sum(axis=1) - na[idx].sum(axis=1) / da[idx].sum(axis=1)
    stats = stats[np.isfinite(stats)]
    alpha = 1.0 - confidence
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return point, float(low), float(high)


def paired_difference(a: list, b: list, metric: str = "behaviour_accuracy", n_resamples: int = 1000,
                      seed: int = 0, confidence: float = 0.95) -> dict:
    """`metric` of B minus `metric` of A over the prompts both answered, with its paired bootstrap interval:
    {"mean", "low", "high", "n"}, n the prompts paired (those that count towards the metric on at least one
    side). `a` and `b` are graded samples (`Graded`) or rows of an evaluation's Parquet. Prompts only one
    side answered are left out. With nothing to compare the figures are None (strict JSON, as `summarise`)."""
    ga, gb = (x if not x or isinstance(x[0], Graded) else graded_from_rows(x) for x in (a, b))
    pa, pb = per_prompt(ga, metric), per_prompt(gb, metric)
    ids = sorted(i for i in pa.keys() & pb.keys() if pa[i][1] or pb[i][1])
    cols = np.array([[*pa[i], *pb[i]] for i in ids], dtype=float).reshape(-1, 4)
    mean, low, high = paired_bootstrap(*cols.T, n_resamples=n_resamples, confidence=confidence, seed=seed)
    if math.isnan(mean):
        return {"mean": None, "low": None, "high": None, "n": len(ids)}
    return {"mean": mean, "low": low, "high": high, "n": len(ids)}
