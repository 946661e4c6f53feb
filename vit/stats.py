"""Statistics of a multi-seed factorial study: does a factor change the seed-to-seed variance?

Everything is built on ``scipy.stats``; nothing here trains.  The design follows Steier (2026):
a factorial of factors (e.g. ``loss_mode`` x ``method``) with ``n`` seeds per cell; for one
factor with levels ``a`` and ``b`` the cells of level ``a`` (one per level combination of the
other factors) are compared with their partner cells of level ``b``.

How the runs were drawn decides which tests are right, so they are reported side by side:

* **Matched seeds** (the default study: every cell runs seeds 0..n-1, and a seed fixes init,
  data order and augmentation): the runs of a seed are correlated across cells, the groups are
  NOT independent, and the independent-sample tests are conservative (with half the variance
  shared by a seed they reject about half as often as their level).  The paired analysis:

  Pitman–Morgan     ``Var x = Var y  <=>  corr(x + y, x - y) = 0`` on the seed pairs (values
                    centred within each cell), t-test of that correlation with
                    ``df = k(n-1) - 1`` for k partner-cell pairs of n seeds.
  paired permutation ``scipy.stats.permutation_test(permutation_type='samples')``: the two
                    levels' labels are swapped within each matched pair (same seed, same other
                    levels); statistic the log pooled within-cell variance ratio.
  paired bootstrap  ``scipy.stats.bootstrap(paired=True)``: seeds are resampled, the same seed
                    draw for every cell; percentile CI of the pooled within-cell ratio.
  paired t-test     ``scipy.stats.ttest_rel`` of the means.
  power             of Pitman–Morgan at an assumed ratio and an assumed correlation of paired
                    runs (default 0.5: half the variance shared by the seed), computed exactly
                    from the distribution of a sample correlation (Hotelling's density), and
                    at the observed correlation; with the seeds per cell needed for 80%.

* **Both designs**:

  Steier's pooled F  the variance of ALL runs of a level (the other factors ignored, their
                    mean differences counted as variance), two-sided F with df ``(kn-1, kn-1)``
                    — (13, 13) for 2 x 7, which reproduces Steier's p = 0.003 at 5.90x.
  within-cell F     pooled within-cell variance ``s²_a = Σ (n_i-1) s²_i / Σ (n_i-1)``, ratio
                    ``R = s²_a / s²_b``, two-sided F with df ``Σ (n_i-1)``: ``p = 2 min(F.cdf(R),
                    F.sf(R))``.
  Levene / B-F      ``scipy.stats.levene`` on within-cell residuals grouped by level (mean-
                    centred / median-centred).
  permutation       ``scipy.stats.permutation_test`` (independent) of ``log R`` on within-cell
                    residuals permuted between levels.
  bootstrap         ``scipy.stats.bootstrap`` stratified by cell (each cell resampled alone).
  Welch t-test      means of level a against level b.
  power             of the within-cell and of Steier's F at the observed and an assumed ratio
                    (5.90, Steier's CIFAR-10 figure): ``R ~ ρ F``, so ``power = F.sf(f_hi/ρ) +
                    F.cdf(f_lo/ρ)``; seeds per cell for 80%.

  With independent seeds per cell (``matched=False``) these are the right tests and the paired
  ones do not apply.

:mod:`vit.factorial` runs them for every factor of a study, side by side, with each test's
minimum seeds per cell.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats as sps

from cffdyn.power import (corr_sd_of_ratio, f_test_power, pitman_morgan_power, seeds_for_power,
                          seeds_for_power_paired)

__all__ = ["STEIER_RATIO", "CellSummary", "as_cells", "describe_cells", "pooled_variance", "variance_ratio",
           "f_test_p", "f_test_power", "seeds_for_power", "bootstrap_ratio_ci",
           "permutation_ratio_p", "levene_tests", "welch_test", "pitman_morgan", "pitman_morgan_arrays",
           "paired_permutation_p", "paired_bootstrap_ci", "paired_t_test", "corr_sd_of_ratio",
           "pitman_morgan_power", "seeds_for_power_paired", "steier_pooled_f"]

#: Steier (2026), CIFAR-10: pooled test-accuracy variance ratio clamp / subtraction.
STEIER_RATIO = 5.90


@dataclass(frozen=True)
class CellSummary:
    """Mean, sample SD (ddof=1) and variance of one cell's per-seed values."""

    levels: tuple[Any, ...]
    n: int
    mean: float
    sd: float
    var: float


def _arr(values: Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D sequence of values, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: contains non-finite values")
    return a


def as_cells(cells: Sequence[Sequence[float]], what: str, min_n: int = 2) -> list[np.ndarray]:
    out = [_arr(c, f"{what} cell {i}") for i, c in enumerate(cells)]
    if not out:
        raise ValueError(f"{what}: no cells")
    for i, c in enumerate(out):
        if c.size < min_n:
            raise ValueError(f"{what} cell {i}: needs at least {min_n} values (seeds), has {c.size}")
    return out


def describe_cells(data: Mapping[tuple, Sequence[float]]) -> list[CellSummary]:
    """Per-cell n, mean, SD (ddof=1; NaN for a single value) in the mapping's order."""
    out = []
    for key, vals in data.items():
        a = _arr(vals, f"cell {key}")
        if a.size == 0:
            raise ValueError(f"cell {key}: no values")
        var = float(np.var(a, ddof=1)) if a.size > 1 else float("nan")
        out.append(CellSummary(tuple(key), int(a.size), float(a.mean()), math.sqrt(var) if a.size > 1 else float("nan"), var))
    return out


def pooled_variance(cells: Sequence[Sequence[float]]) -> tuple[float, int]:
    """Pooled within-cell variance ``Σ (n_i-1) s²_i / Σ (n_i-1)`` and its df ``Σ (n_i-1)``."""
    cs = as_cells(cells, "pooled_variance")
    ss = sum(float(np.sum((c - c.mean()) ** 2)) for c in cs)
    df = sum(c.size - 1 for c in cs)
    return ss / df, df


def variance_ratio(cells_a: Sequence[Sequence[float]], cells_b: Sequence[Sequence[float]]) -> float:
    """``pooled_variance(cells_a) / pooled_variance(cells_b)`` (inf if the denominator is 0)."""
    va, _ = pooled_variance(cells_a)
    vb, _ = pooled_variance(cells_b)
    if vb == 0.0:
        return float("inf") if va > 0 else float("nan")
    return va / vb


def f_test_p(ratio: float, df1: int, df2: int) -> float:
    """Two-sided p-value of the variance-ratio F-test: ``2 min(cdf, sf)`` of ``F(df1, df2)``."""
    if df1 < 1 or df2 < 1:
        raise ValueError(f"F-test needs df >= 1, got ({df1}, {df2})")
    if not ratio >= 0:
        raise ValueError(f"variance ratio {ratio!r} must be >= 0")
    if math.isinf(ratio):
        return 0.0
    return float(min(1.0, 2.0 * min(sps.f.cdf(ratio, df1, df2), sps.f.sf(ratio, df1, df2))))


def _pooled_ratio_stat(k_a: int):
    """Vectorised statistic for scipy: samples 0..k_a-1 are level a, the rest level b."""

    def stat(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        def pooled(group):
            ss = sum(np.sum((s - s.mean(axis=axis, keepdims=True)) ** 2, axis=axis) for s in group)
            df = sum(s.shape[axis] - 1 for s in group)
            return ss / df
        va, vb = pooled(samples[:k_a]), pooled(samples[k_a:])
        with np.errstate(divide="ignore", invalid="ignore"):
            return va / vb
    return stat


def bootstrap_ratio_ci(cells_a: Sequence[Sequence[float]], cells_b: Sequence[Sequence[float]], *,
                       n_resamples: int = 9999, confidence: float = 0.95, seed: int = 0,
                       method: str = "percentile") -> tuple[float, float]:
    """Bootstrap CI of the pooled variance ratio, resampling within every cell (stratified).

    Resamples whose denominator is degenerate (all values of every level-``b`` cell equal) give
    ``inf``; ``0/0`` ones (both levels degenerate) are dropped from the percentile interval."""
    ca, cb = as_cells(cells_a, "bootstrap level a"), as_cells(cells_b, "bootstrap level b")
    if method not in ("percentile", "basic", "BCa"):
        raise ValueError(f"bootstrap method {method!r} is not one of percentile, basic, BCa")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} must be in (0, 1)")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        res = sps.bootstrap(tuple(ca + cb), _pooled_ratio_stat(len(ca)), n_resamples=int(n_resamples),
                            confidence_level=confidence, method=method, vectorized=True, paired=False,
                            rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if method == "percentile" and (math.isnan(lo) or math.isnan(hi)):
        # 0/0 resamples (every cell of both levels constant: frequent with 2-3 seeds per cell)
        # carry no information about the ratio; take the percentiles of the others
        dist = res.bootstrap_distribution
        a = (1 - confidence) / 2
        lo, hi = (float(v) for v in np.nanpercentile(dist, [100 * a, 100 * (1 - a)]))
    return lo, hi


def _centred(cells: list[np.ndarray], center: str) -> np.ndarray:
    f = np.mean if center == "mean" else np.median
    return np.concatenate([c - f(c) for c in cells])


def permutation_ratio_p(cells_a: Sequence[Sequence[float]], cells_b: Sequence[Sequence[float]], *,
                        n_resamples: int = 9999, seed: int = 0) -> tuple[float, float]:
    """Two-sided permutation p-value of ``log R`` on within-cell-mean-centred values.

    Residuals of level a and b are permuted between the levels (sizes fixed); the statistic is
    ``log(Σr_a²/df_a) - log(Σr_b²/df_b)`` with the design's df, so at the identity permutation it
    is exactly ``log`` of the pooled variance ratio.  Exact when the number of distinct
    permutations is at most ``n_resamples``.  Returns (statistic, p)."""
    ca, cb = as_cells(cells_a, "permutation level a"), as_cells(cells_b, "permutation level b")
    ra, rb = _centred(ca, "mean"), _centred(cb, "mean")
    df_a = sum(c.size - 1 for c in ca)
    df_b = sum(c.size - 1 for c in cb)

    def stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(np.sum(x ** 2, axis=axis) / df_a) - np.log(np.sum(y ** 2, axis=axis) / df_b)

    res = sps.permutation_test((ra, rb), stat, permutation_type="independent", vectorized=True,
                               n_resamples=int(n_resamples), alternative="two-sided",
                               rng=np.random.default_rng(seed))
    return float(res.statistic), float(res.pvalue)


def levene_tests(cells_a: Sequence[Sequence[float]], cells_b: Sequence[Sequence[float]]) -> dict[str, float]:
    """Levene (center='mean', on x - cell mean) and Brown–Forsythe (center='median', on
    x - cell median) of level a against level b."""
    ca, cb = as_cells(cells_a, "levene level a"), as_cells(cells_b, "levene level b")
    lw, lp = sps.levene(_centred(ca, "mean"), _centred(cb, "mean"), center="mean")
    bw, bp = sps.levene(_centred(ca, "median"), _centred(cb, "median"), center="median")
    return {"levene_W": float(lw), "levene_p": float(lp), "bf_W": float(bw), "bf_p": float(bp)}


def welch_test(cells_a: Sequence[Sequence[float]], cells_b: Sequence[Sequence[float]]) -> dict[str, float]:
    """Welch's t-test of all values of level a against all values of level b."""
    a = np.concatenate(as_cells(cells_a, "welch level a", 1))
    b = np.concatenate(as_cells(cells_b, "welch level b", 1))
    r = sps.ttest_ind(a, b, equal_var=False)
    return {"mean_a": float(a.mean()), "mean_b": float(b.mean()), "mean_diff": float(a.mean() - b.mean()),
            "welch_t": float(r.statistic), "welch_df": float(r.df), "welch_p": float(r.pvalue)}


# ============================================================================ paired (matched seeds)
def _pairs(cells_a: Sequence[Sequence[float]], cells_b: Sequence[Sequence[float]],
           what: str, min_n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Partner cells as two (k, n) arrays: row j of ``a`` and ``b`` are cells that differ only in
    the compared factor, column s the same seed in both."""
    ca, cb = as_cells(cells_a, f"{what} level a", min_n), as_cells(cells_b, f"{what} level b", min_n)
    if len(ca) != len(cb):
        raise ValueError(f"{what}: {len(ca)} cells of level a but {len(cb)} of level b (partners must match)")
    n = {c.size for c in ca + cb}
    if len(n) != 1:
        raise ValueError(f"{what}: matched seeds need the same number of seeds in every cell, got {sorted(n)}")
    return np.stack(ca), np.stack(cb)


def pitman_morgan_arrays(xa: np.ndarray, xb: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Vectorised Pitman–Morgan core on arrays (..., k, n): returns ``(r, t, df)``.

    Values are centred within each cell (last axis); ``r`` is the correlation of the sums and
    differences of the paired residuals pooled over the k cells, ``Σ(x+y)(x-y) / sqrt(Σ(x+y)²
    Σ(x-y)²) = (Sxx - Syy) / sqrt((Sxx + Syy)² - 4 Sxy²)``, and
    ``t = r sqrt(df / (1 - r²))`` with ``df = k (n - 1) - 1``."""
    ra = xa - xa.mean(axis=-1, keepdims=True)
    rb = xb - xb.mean(axis=-1, keepdims=True)
    sxx = np.sum(ra * ra, axis=(-2, -1))
    syy = np.sum(rb * rb, axis=(-2, -1))
    sxy = np.sum(ra * rb, axis=(-2, -1))
    k, n = xa.shape[-2], xa.shape[-1]
    df = k * (n - 1) - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (sxx - syy) / np.sqrt((sxx + syy) ** 2 - 4.0 * sxy ** 2)
        t = r * np.sqrt(df / (1.0 - r * r))
    return r, t, df


def pitman_morgan(cells_a: Sequence[Sequence[float]], cells_b: Sequence[Sequence[float]]) -> dict[str, float]:
    """Pitman–Morgan test of equal variances for paired values (matched seeds).

    ``Var(x) = Var(y)`` is equivalent to ``corr(x + y, x - y) = 0``; the test is the t-test of
    zero correlation of those sums and differences (``df = k(n-1) - 1`` for k partner cells of n
    seeds, after centring every cell).  Also returns the correlation of the paired residuals
    (how much seed variance the two levels share) and the paired variance ratio."""
    xa, xb = _pairs(cells_a, cells_b, "Pitman-Morgan")
    r, t, df = pitman_morgan_arrays(xa, xb)
    r, t = float(r), float(t)
    ra = xa - xa.mean(axis=-1, keepdims=True)
    rb = xb - xb.mean(axis=-1, keepdims=True)
    den = math.sqrt(float(np.sum(ra * ra)) * float(np.sum(rb * rb)))
    corr = float(np.sum(ra * rb)) / den if den > 0 else float("nan")
    p = float(2.0 * sps.t.sf(abs(t), df)) if math.isfinite(t) else float("nan")
    return {"pm_r": r, "pm_t": t, "pm_df": int(df), "pm_p": p, "pair_corr": corr,
            "n_pairs": int(xa.size), "ratio": float(np.sum(ra * ra) / np.sum(rb * rb)) if np.sum(rb * rb) > 0
            else float("nan")}


def _paired_log_ratio(k: int, n: int):
    """Statistic for scipy (flattened (k·n) partner cells): log of the pooled within-cell
    variance ratio, every cell re-centred (a swap moves values between cells of the pair)."""

    def stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        x = np.moveaxis(x, axis, -1)
        y = np.moveaxis(y, axis, -1)
        x = x.reshape(x.shape[:-1] + (k, n))
        y = y.reshape(y.shape[:-1] + (k, n))
        sa = np.sum((x - x.mean(-1, keepdims=True)) ** 2, axis=(-2, -1))
        sb = np.sum((y - y.mean(-1, keepdims=True)) ** 2, axis=(-2, -1))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(sa / sb)
    return stat


def paired_permutation_p(cells_a: Sequence[Sequence[float]], cells_b: Sequence[Sequence[float]], *,
                         n_resamples: int = 9999, seed: int = 0) -> tuple[float, float]:
    """Two-sided permutation p of the log pooled variance ratio, swapping the two levels' labels
    within each matched pair (same seed, same levels of the other factors).

    Exchangeable under H0 that the pair's two runs come from the same distribution; exact
    (all ``2^(k n)`` swaps) when that is at most ``n_resamples``.  Returns (statistic, p)."""
    xa, xb = _pairs(cells_a, cells_b, "paired permutation")
    k, n = xa.shape
    res = sps.permutation_test((xa.ravel(), xb.ravel()), _paired_log_ratio(k, n), permutation_type="samples",
                               vectorized=True, n_resamples=int(n_resamples), alternative="two-sided",
                               rng=np.random.default_rng(seed))
    return float(res.statistic), float(res.pvalue)


def paired_bootstrap_ci(cells_a: Sequence[Sequence[float]], cells_b: Sequence[Sequence[float]], *,
                        n_resamples: int = 9999, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, int]:
    """Percentile bootstrap CI of the pooled within-cell variance ratio resampling SEEDS: one
    draw of seed indices is applied to every cell (``scipy.stats.bootstrap(paired=True)``), so
    the seed's shared contribution stays matched across cells.  Resamples with a 0/0 ratio
    (every cell constant: all draws the same seed) are dropped; returns (low, high, n_dropped)."""
    xa, xb = _pairs(cells_a, cells_b, "paired bootstrap")
    k = xa.shape[0]
    import warnings
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sps.bootstrap(tuple(xa) + tuple(xb), _pooled_ratio_stat(k), n_resamples=int(n_resamples),
                            confidence_level=confidence, method="percentile", vectorized=True, paired=True,
                            rng=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    bad = int(np.sum(np.isnan(dist)))
    a = (1 - confidence) / 2
    lo, hi = (float(v) for v in np.nanpercentile(dist, [100 * a, 100 * (1 - a)]))
    return lo, hi, bad


def paired_t_test(cells_a: Sequence[Sequence[float]], cells_b: Sequence[Sequence[float]]) -> dict[str, float]:
    """``scipy.stats.ttest_rel`` of the matched pairs (mean difference level a - level b)."""
    xa, xb = _pairs(cells_a, cells_b, "paired t-test", 2)
    r = sps.ttest_rel(xa.ravel(), xb.ravel())
    return {"paired_t": float(r.statistic), "paired_t_df": int(r.df), "paired_t_p": float(r.pvalue)}


# ============================================================================ Steier's pooled F
def steier_pooled_f(cells_a: Sequence[Sequence[float]], cells_b: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Steier's statistic: the sample variance of ALL runs of a level (the other factors'
    cells pooled as one sample, their mean differences counted as variance), ratio a/b,
    two-sided F-test with df ``(N_a - 1, N_b - 1)`` (13, 13 for 2 cells x 7 seeds)."""
    a = np.concatenate(as_cells(cells_a, "Steier F level a", 1))
    b = np.concatenate(as_cells(cells_b, "Steier F level b", 1))
    if a.size < 2 or b.size < 2:
        raise ValueError("Steier's pooled F needs >= 2 runs per level")
    va, vb = float(np.var(a, ddof=1)), float(np.var(b, ddof=1))
    out = {"var_a": va, "var_b": vb, "df_a": int(a.size - 1), "df_b": int(b.size - 1), "ratio": None, "p": None}
    if vb > 0 and va > 0:
        out["ratio"] = va / vb
        out["p"] = f_test_p(va / vb, a.size - 1, b.size - 1)
    return out
