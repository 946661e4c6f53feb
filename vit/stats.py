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

Small samples: each test has a minimum seeds per cell (:data:`MIN_SEEDS`); below it, or on
degenerate data (zero variance), the test gives ``None`` and a sentence in ``notes`` saying why,
never a NaN or a p-value of a degenerate statistic.

Data format: ``factors`` is a sequence of factor names; ``data`` maps a tuple of levels (one per
factor, in factor order) to the sequence of per-seed values of that cell; ``seeds`` (optional)
maps the same keys to the seeds of those values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats as sps

from cffdyn.power import (corr_sd_of_ratio, f_test_power, pitman_morgan_power, seeds_for_power,
                          seeds_for_power_paired)

__all__ = ["STEIER_RATIO", "format_p", "MIN_SEEDS", "CellSummary", "describe_cells", "pooled_variance", "variance_ratio",
           "f_test_p", "f_test_power", "seeds_for_power", "bootstrap_ratio_ci",
           "permutation_ratio_p", "levene_tests", "welch_test", "pitman_morgan", "pitman_morgan_arrays",
           "paired_permutation_p", "paired_bootstrap_ci", "paired_t_test", "corr_sd_of_ratio",
           "pitman_morgan_power", "seeds_for_power_paired", "steier_pooled_f", "compare_levels",
           "factorial_analysis", "format_table"]

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


def _cells(cells: Sequence[Sequence[float]], what: str, min_n: int = 2) -> list[np.ndarray]:
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
    cs = _cells(cells, "pooled_variance")
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
    ca, cb = _cells(cells_a, "bootstrap level a"), _cells(cells_b, "bootstrap level b")
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
    ca, cb = _cells(cells_a, "permutation level a"), _cells(cells_b, "permutation level b")
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
    ca, cb = _cells(cells_a, "levene level a"), _cells(cells_b, "levene level b")
    lw, lp = sps.levene(_centred(ca, "mean"), _centred(cb, "mean"), center="mean")
    bw, bp = sps.levene(_centred(ca, "median"), _centred(cb, "median"), center="median")
    return {"levene_W": float(lw), "levene_p": float(lp), "bf_W": float(bw), "bf_p": float(bp)}


def welch_test(cells_a: Sequence[Sequence[float]], cells_b: Sequence[Sequence[float]]) -> dict[str, float]:
    """Welch's t-test of all values of level a against all values of level b."""
    a = np.concatenate(_cells(cells_a, "welch level a", 1))
    b = np.concatenate(_cells(cells_b, "welch level b", 1))
    r = sps.ttest_ind(a, b, equal_var=False)
    return {"mean_a": float(a.mean()), "mean_b": float(b.mean()), "mean_diff": float(a.mean() - b.mean()),
            "welch_t": float(r.statistic), "welch_df": float(r.df), "welch_p": float(r.pvalue)}


# ============================================================================ paired (matched seeds)
def _pairs(cells_a: Sequence[Sequence[float]], cells_b: Sequence[Sequence[float]],
           what: str, min_n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Partner cells as two (k, n) arrays: row j of ``a`` and ``b`` are cells that differ only in
    the compared factor, column s the same seed in both."""
    ca, cb = _cells(cells_a, f"{what} level a", min_n), _cells(cells_b, f"{what} level b", min_n)
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
    a = np.concatenate(_cells(cells_a, "Steier F level a", 1))
    b = np.concatenate(_cells(cells_b, "Steier F level b", 1))
    if a.size < 2 or b.size < 2:
        raise ValueError("Steier's pooled F needs >= 2 runs per level")
    va, vb = float(np.var(a, ddof=1)), float(np.var(b, ddof=1))
    out = {"var_a": va, "var_b": vb, "df_a": int(a.size - 1), "df_b": int(b.size - 1), "ratio": None, "p": None}
    if vb > 0 and va > 0:
        out["ratio"] = va / vb
        out["p"] = f_test_p(va / vb, a.size - 1, b.size - 1)
    return out


# ============================================================================ one comparison
#: fewest seeds per cell each test needs; below, the test is reported as not computed, in words
MIN_SEEDS = {"within_f": 2, "steier_f": 2, "levene": 3, "perm_independent": 3, "boot_independent": 3,
             "pitman_morgan": 3, "perm_paired": 3, "boot_paired": 3, "paired_t": 2, "welch": 2}
_WHY_MIN = {
    "levene": "with 2 seeds the two absolute residuals of a cell are equal, so Levene/Brown-Forsythe are degenerate",
    "perm_independent": "too few distinct permutations of within-cell residuals",
    "boot_independent": "with 2 seeds half the within-cell resamples have zero variance",
    "pitman_morgan": "with 2 seeds the centred pairs of a cell are +-d/2 and leave no df for the correlation",
    "perm_paired": "too few distinct swaps",
    "boot_paired": "with 2 seeds half the seed resamples have zero variance",
}


def _need(key: str, n: int) -> str | None:
    m = MIN_SEEDS[key]
    if n >= m:
        return None
    why = _WHY_MIN.get(key)
    return f"not computed: needs at least {m} seeds per cell, has {n}" + (f" ({why})" if why else "")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def compare_levels(cells_a: Sequence[Sequence[float]], cells_b: Sequence[Sequence[float]], *,
                   matched: bool = True, alpha: float = 0.05, n_boot: int = 9999, n_perm: int = 9999,
                   seed: int = 0, assumed_ratio: float = STEIER_RATIO, assumed_corr: float = 0.5,
                   target_power: float = 0.8) -> dict[str, Any]:
    """All statistics of level a against level b, side by side (see module doc); JSON-able.

    ``cells_a[j]`` and ``cells_b[j]`` are partner cells (same levels of the other factors);
    ``matched``: the values of partner cells are aligned by seed (the same seeds in the same
    order), so the paired analysis applies.  A test that needs more seeds than the cells have,
    or whose data are degenerate, gives ``None`` and a sentence in ``notes[test]``."""
    import warnings
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return _compare_levels(cells_a, cells_b, matched=matched, alpha=alpha, n_boot=n_boot, n_perm=n_perm,
                               seed=seed, assumed_ratio=assumed_ratio, assumed_corr=assumed_corr,
                               target_power=target_power)


def _compare_levels(cells_a, cells_b, *, matched, alpha, n_boot, n_perm, seed, assumed_ratio, assumed_corr,
                    target_power) -> dict[str, Any]:
    ca, cb = _cells(cells_a, "level a", 1), _cells(cells_b, "level b", 1)
    n_min = min(c.size for c in ca + cb)
    notes: dict[str, str] = {}
    out: dict[str, Any] = {"design": "matched seeds" if matched else "independent seeds",
                           "cells_a": len(ca), "cells_b": len(cb), "n_a": int(sum(c.size for c in ca)),
                           "n_b": int(sum(c.size for c in cb)), "seeds_per_cell": int(n_min), "notes": notes}
    # ---- within-cell pooled F (the cells of a level pooled after removing each cell's mean)
    out.update({"pooled_var_a": None, "pooled_var_b": None, "df_a": None, "df_b": None, "ratio": None, "f_p": None})
    if (why := _need("within_f", n_min)) is None:
        va, dfa = pooled_variance(ca)
        vb, dfb = pooled_variance(cb)
        out.update(pooled_var_a=va, pooled_var_b=vb, df_a=dfa, df_b=dfb)
        if va > 0 and vb > 0:
            out["ratio"] = va / vb
            out["f_p"] = f_test_p(va / vb, dfa, dfb)
        else:
            notes["within_f"] = "not computed: a level has zero within-cell variance (all its seeds gave equal values)"
    else:
        notes["within_f"] = why
    # ---- Steier's pooled F (all runs of a level as one sample)
    st = steier_pooled_f(ca, cb)
    out["steier"] = st
    if st["p"] is None:
        notes["steier_f"] = "not computed: a level has zero variance over all its runs"
    # ---- independent-sample tests on within-cell residuals
    out.update({"levene_W": None, "levene_p": None, "bf_W": None, "bf_p": None, "perm_log_ratio": None,
                "perm_p": None, "boot_ci": None})
    if (why := _need("levene", n_min)) is None:
        lv = levene_tests(ca, cb)
        if all(_finite(v) for v in lv.values()):
            out.update(lv)
        else:
            notes["levene"] = "not computed: the absolute residuals are constant (degenerate data)"
    else:
        notes["levene"] = why
    if out["ratio"] is not None and (why := _need("perm_independent", n_min)) is None:
        out["perm_log_ratio"], out["perm_p"] = permutation_ratio_p(ca, cb, n_resamples=n_perm, seed=seed)
    else:
        notes["perm_independent"] = why or notes["within_f"]
    if out["ratio"] is not None and (why := _need("boot_independent", n_min)) is None:
        lo, hi = bootstrap_ratio_ci(ca, cb, n_resamples=n_boot, seed=seed + 1)
        if _finite(lo) and _finite(hi) and lo > 0:
            out["boot_ci"] = [lo, hi]
        else:
            notes["boot_independent"] = "not computed: resamples with zero variance make the interval unbounded"
    else:
        notes["boot_independent"] = why or notes["within_f"]
    out["boot_confidence"] = 0.95
    out.update(welch_test(ca, cb) if n_min >= 2 else {})
    # ---- paired analysis (matched seeds)
    paired: dict[str, Any] | None = None
    if matched:
        paired = {"pm_r": None, "pm_t": None, "pm_df": None, "pm_p": None, "pair_corr": None, "n_pairs": None,
                  "perm_log_ratio": None, "perm_p": None, "boot_ci": None, "boot_dropped": None,
                  "paired_t": None, "paired_t_df": None, "paired_t_p": None}
        if (why := _need("pitman_morgan", n_min)) is None:
            pm = pitman_morgan(ca, cb)
            pm.pop("ratio")
            if _finite(pm["pm_p"]) and _finite(pm["pair_corr"]):
                paired.update(pm)
            else:
                notes["pitman_morgan"] = "not computed: a level has zero within-cell variance"
        else:
            notes["pitman_morgan"] = why
        if out["ratio"] is not None and (why := _need("perm_paired", n_min)) is None:
            paired["perm_log_ratio"], paired["perm_p"] = paired_permutation_p(ca, cb, n_resamples=n_perm, seed=seed)
        else:
            notes["perm_paired"] = why or notes["within_f"]
        if out["ratio"] is not None and (why := _need("boot_paired", n_min)) is None:
            lo, hi, bad = paired_bootstrap_ci(ca, cb, n_resamples=n_boot, seed=seed + 2)
            if _finite(lo) and _finite(hi) and lo > 0:
                paired["boot_ci"], paired["boot_dropped"] = [lo, hi], bad
            else:
                notes["boot_paired"] = "not computed: resamples with zero variance make the interval unbounded"
        else:
            notes["boot_paired"] = why or notes["within_f"]
        if n_min >= 2:
            paired.update(paired_t_test(ca, cb))
    out["paired"] = paired
    # ---- power
    power: dict[str, Any] = {"alpha": alpha, "target": target_power, "seeds_per_cell": int(n_min),
                             "cells_per_level": len(ca)}
    for tag, rho in (("observed", out["ratio"]), ("assumed", assumed_ratio)):
        ok = rho is not None and rho > 0 and math.isfinite(rho) and out["df_a"] is not None
        power[f"{tag}_ratio"] = rho
        power[f"power_{tag}"] = f_test_power(rho, out["df_a"], out["df_b"], alpha) if ok else None
        power[f"seeds_for_target_{tag}"] = (seeds_for_power(rho, len(ca), len(cb), power=target_power, alpha=alpha)
                                            if ok else None)
    # Steier's pooled F: df k n - 1 (the within-cell power is the right one when cell means differ)
    n_lv = out["n_a"]
    power["steier_power_assumed"] = f_test_power(assumed_ratio, n_lv - 1, out["n_b"] - 1, alpha)
    if matched and len(ca) == len(cb):
        pp: dict[str, Any] = {"assumed_corr": assumed_corr, "observed_corr": paired["pair_corr"] if paired else None}
        for ctag, c in (("assumed_corr", assumed_corr), ("observed_corr", pp["observed_corr"])):
            okc = c is not None and _finite(c) and -1 < c < 1
            df = len(ca) * (n_min - 1) - 1
            pp[f"power_assumed_ratio_{ctag}"] = (pitman_morgan_power(assumed_ratio, c, df, alpha)
                                                 if okc and df >= 1 else None)
            pp[f"seeds_for_target_{ctag}"] = (seeds_for_power_paired(assumed_ratio, c, len(ca), power=target_power,
                                                                     alpha=alpha) if okc else None)
        power["paired"] = pp
    out["power"] = power
    return out


def factorial_analysis(factors: Sequence[str], data: Mapping[tuple, Sequence[float]], *,
                       seeds: Mapping[tuple, Sequence[int]] | None = None, matched: bool = True,
                       metric: str = "test_acc", alpha: float = 0.05, n_boot: int = 9999,
                       n_perm: int = 9999, seed: int = 0, assumed_ratio: float = STEIER_RATIO,
                       assumed_corr: float = 0.5, target_power: float = 0.8) -> dict[str, Any]:
    """Cell summaries and, for every factor, every pair of its levels in level order (a 2-level
    factor gives one comparison, ratio ``level0 / level1``).

    ``seeds`` (cell -> the seed of each value) with ``matched=True``: partner cells (equal levels
    of the other factors) are aligned on the seeds common to ALL cells of the comparison, so the
    paired analysis compares runs of the same seed; without ``seeds`` values are taken to be in
    seed order.  ``matched=False`` (independent seeds per cell): no paired analysis.
    A comparison with a cell of fewer than 2 values (a partial study) is left out."""
    factors = list(factors)
    if not factors:
        raise ValueError("factorial_analysis: no factors")
    for key in data:
        if not isinstance(key, tuple) or len(key) != len(factors):
            raise ValueError(f"cell key {key!r} must be a tuple of {len(factors)} levels ({factors})")
    cells = describe_cells(data)
    out: dict[str, Any] = {"metric": metric, "factors": factors,
                           "design": "matched seeds" if matched else "independent seeds",
                           "assumed_corr": assumed_corr,
                           "cells": [{"levels": dict(zip(factors, c.levels)), "n": c.n, "mean": c.mean,
                                      "sd": c.sd if c.n > 1 else None, "values": [float(v) for v in data[c.levels]],
                                      **({"seeds": [int(s) for s in seeds[c.levels]]} if seeds else {})}
                                     for c in cells],
                           "comparisons": []}
    for fi, fname in enumerate(factors):
        levels: list[Any] = []
        for key in data:
            if key[fi] not in levels:
                levels.append(key[fi])
        others = []
        for key in data:
            o = key[:fi] + key[fi + 1:]
            if o not in others:
                others.append(o)
        for i in range(len(levels)):
            for j in range(i + 1, len(levels)):
                ka = [o[:fi] + (levels[i],) + o[fi:] for o in others]
                kb = [o[:fi] + (levels[j],) + o[fi:] for o in others]
                keep = [(a, b) for a, b in zip(ka, kb) if a in data and b in data]
                if not keep or any(len(data[k]) < 2 for ab in keep for k in ab):
                    continue  # variance needs >= 2 seeds per cell (partial study)
                if matched and seeds is not None:
                    common = set.intersection(*(set(seeds[k]) for ab in keep for k in ab))
                    order = sorted(common)

                    def vals(k):
                        m = dict(zip(seeds[k], data[k]))
                        return [m[s] for s in order]
                    if len(order) < 2:
                        continue
                else:
                    def vals(k):
                        return list(data[k])
                ca = [vals(a) for a, _ in keep]
                cb = [vals(b) for _, b in keep]
                cmp = compare_levels(ca, cb, matched=matched, alpha=alpha, n_boot=n_boot, n_perm=n_perm, seed=seed,
                                     assumed_ratio=assumed_ratio, assumed_corr=assumed_corr, target_power=target_power)
                out["comparisons"].append({"factor": fname, "level_a": levels[i], "level_b": levels[j], **cmp})
    return out


# ============================================================================ text
def format_p(p: float | None) -> str:
    """A p-value as the study's reports print it: three decimals, ``< 0.001`` below, ``n/a`` without one."""
    if p is None or not isinstance(p, (int, float)) or not math.isfinite(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else "< 0.001"


def _ci(ci: Sequence[float] | None) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def _cell_name(levels: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in levels.items())


def format_table(analysis: Mapping[str, Any], scale: float = 100.0, unit: str = "%",
                 extra_cols: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """Steier-style text table of :func:`factorial_analysis` output (values times ``scale``).

    Every test is one line: its statistic and p, or the sentence saying why it was not
    computed.  ``extra_cols``: optional {column title: {cell name: text}} appended to the cell
    rows (e.g. the raw-pixel probe)."""
    names = [_cell_name(c["levels"]) for c in analysis["cells"]]
    w = max([len(n) for n in names] + [4])
    extra_cols = dict(extra_cols or {})
    head = f"{'cell':<{w}}  {'n':>3}  {'mean':>8}  {'SD':>7}" + "".join(f"  {t:>{max(len(t), 8)}}" for t in extra_cols)
    lines = [f"metric: {analysis['metric']} (x{scale:g}, {unit}); design: {analysis.get('design', 'matched seeds')}",
             head]
    for c, name in zip(analysis["cells"], names):
        sd = c.get("sd")
        sd_s = f"{sd * scale:7.3f}" if _finite(sd) else "  (1 run)"
        row = f"{name:<{w}}  {c['n']:>3}  {c['mean'] * scale:8.3f}  {sd_s}"
        for t, col in extra_cols.items():
            row += f"  {col.get(name, ''):>{max(len(t), 8)}}"
        lines.append(row)
    for cmp in analysis["comparisons"]:
        notes = cmp.get("notes", {})
        a, b = cmp["level_a"], cmp["level_b"]

        def say(key: str, text: str | None) -> str:
            return text if text is not None else notes.get(key, "not computed")
        pw = cmp["power"]
        st = cmp["steier"]
        lines += ["", f"{cmp['factor']}: {a} vs {b} ({cmp['cells_a']} + {cmp['cells_b']} cells, "
                      f"{cmp['seeds_per_cell']} seeds per cell; {cmp['design']}); variance ratio = {a}/{b}"]
        lines.append("  Steier's pooled F (all runs of a level, other factors ignored): " + say(
            "steier_f", None if st["p"] is None else
            f"ratio {st['ratio']:.2f}x, F({st['df_a']}, {st['df_b']}) p {format_p(st['p'])}"))
        lines.append("  within-cell pooled F (cell means removed): " + say(
            "within_f", None if cmp["f_p"] is None else
            f"ratio {cmp['ratio']:.2f}x, F({cmp['df_a']}, {cmp['df_b']}) p {format_p(cmp['f_p'])}"))
        pr = cmp.get("paired")
        if pr is not None:
            lines.append("  paired, Pitman-Morgan (matched seeds): " + say(
                "pitman_morgan", None if pr["pm_p"] is None else
                f"r(sum, diff) {pr['pm_r']:+.2f}, t({pr['pm_df']}) {pr['pm_t']:+.2f}, p {format_p(pr['pm_p'])}; "
                f"correlation of paired runs {pr['pair_corr']:+.2f}"))
            lines.append("  paired permutation (labels swapped within each seed pair): " + say(
                "perm_paired", None if pr["perm_p"] is None else f"p {format_p(pr['perm_p'])}"))
            lines.append("  paired bootstrap (seeds resampled, 95% CI of the ratio): " + say(
                "boot_paired", None if pr["boot_ci"] is None else _ci(pr["boot_ci"])))
        else:
            lines.append("  paired analysis: not applicable (independent seeds per cell)")
        indep = "" if pr is None else " [assume independent cells; conservative when seeds are shared]"
        lines.append(f"  Levene / Brown-Forsythe{indep}: " + say(
            "levene", None if cmp["levene_p"] is None else f"p {format_p(cmp['levene_p'])} / {format_p(cmp['bf_p'])}"))
        lines.append(f"  permutation of residuals between levels{indep}: " + say(
            "perm_independent", None if cmp["perm_p"] is None else f"p {format_p(cmp['perm_p'])}"))
        lines.append(f"  bootstrap within cells, 95% CI{indep}: " + say(
            "boot_independent", None if cmp["boot_ci"] is None else _ci(cmp["boot_ci"])))
        if "mean_a" in cmp:
            mline = (f"  means {cmp['mean_a'] * scale:.2f} vs {cmp['mean_b'] * scale:.2f} "
                     f"(difference {cmp['mean_diff'] * scale:+.2f}); Welch p {format_p(cmp['welch_p'])}")
            if pr is not None and pr.get("paired_t_p") is not None:
                mline += f", paired t p {format_p(pr['paired_t_p'])}"
            lines.append(mline)
        if pw.get("power_assumed") is not None:
            lines.append(f"  power at an assumed ratio {pw['assumed_ratio']:.2f}x (alpha {pw['alpha']}): within-cell F "
                         f"{pw['power_assumed']:.2f} ({_seeds(pw['seeds_for_target_assumed'])} seeds/cell for "
                         f"{pw['target']:.0%}); Steier's F {pw['steier_power_assumed']:.2f}")
        pp = pw.get("paired")
        if pp:
            for ctag, label in (("assumed_corr", "assumed"), ("observed_corr", "observed")):
                c = pp.get(ctag)
                val = pp.get(f"power_assumed_ratio_{ctag}")
                if c is None or not _finite(c):
                    lines.append(f"  paired power at the {label} correlation: not computed (no correlation estimate)")
                    continue
                lines.append(f"  paired (Pitman-Morgan) power at ratio {pw['assumed_ratio']:.2f}x and an {label} "
                             f"correlation of paired runs of {c:+.2f}: "
                             + (f"{val:.2f}" if val is not None else "not computed (too few seeds)")
                             + f"; {_seeds(pp.get(f'seeds_for_target_{ctag}'))} seeds/cell for {pw['target']:.0%}")
    if not analysis["comparisons"]:
        lines.append("(no comparison: every cell needs >= 2 seeds)")
    return "\n".join(lines)


def _seeds(n: int | None) -> str:
    return str(n) if n is not None else "more than 2000"
