"""Statistics of a multi-seed factorial study: does a factor change the seed-to-seed variance?

Everything is built on ``scipy.stats``; nothing here trains.  The design follows Steier (2026):
a factorial of factors (e.g. ``loss_mode`` x ``method``) with ``n`` seeds per cell; for one
factor with levels ``a`` and ``b`` the cells of level ``a`` (one per level combination of the
other factors) are compared with those of level ``b``.

Quantities (for a factor, level ``a`` against level ``b``; ``k_a`` cells of ``n_i`` values each)
-----------------------------------------------------------------------------------------------
pooled variance   ``s²_a = Σ_i (n_i - 1) s²_i / Σ_i (n_i - 1)`` over the cells of level ``a``
                  (within-cell variances, so mean differences caused by the other factors do
                  not count as variance), with ``df_a = Σ_i (n_i - 1)``.
variance ratio    ``R = s²_a / s²_b``.
F-test            two-sided, ``p = 2 min(F.cdf(R), F.sf(R))`` with ``F(df_a, df_b)``.
Levene / B-F      ``scipy.stats.levene`` on within-cell residuals grouped by level:
                  Levene with ``center='mean'`` on ``x - cell mean``, Brown–Forsythe with
                  ``center='median'`` on ``x - cell median`` (the cell, not the level, is the
                  centring unit, for the same reason as above).
bootstrap CI      ``scipy.stats.bootstrap`` with every cell as its own sample, i.e. resampling
                  stratified by cell, of the statistic ``R``; percentile interval by default.
permutation p     ``scipy.stats.permutation_test`` (independent samples, two-sided) of
                  ``log R`` computed from within-cell-mean-centred values, which are
                  exchangeable between levels under H0 in a balanced design.
Welch t-test      ``scipy.stats.ttest_ind(equal_var=False)`` of the raw values of level ``a``
                  against level ``b`` (mean difference, averaged over the other factors).
power             of the two-sided level-``alpha`` F-test when the true ratio is ``ρ``: the
                  observed ``R ~ ρ F(df_a, df_b)``, so
                  ``power = F.sf(f_hi / ρ) + F.cdf(f_lo / ρ)`` with ``f_lo, f_hi`` the
                  ``alpha/2`` and ``1 - alpha/2`` quantiles of ``F(df_a, df_b)``; reported at the
                  observed ratio and at an assumed ratio (default 5.90, Steier's CIFAR-10
                  figure), with the seeds per cell needed for 80% power at the design's
                  number of cells.

Data format: ``factors`` is a sequence of factor names; ``data`` maps a tuple of levels (one per
factor, in factor order) to the sequence of per-seed values of that cell.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats as sps

__all__ = ["STEIER_RATIO", "CellSummary", "describe_cells", "pooled_variance", "variance_ratio",
           "f_test_p", "f_test_power", "seeds_for_power", "bootstrap_ratio_ci",
           "permutation_ratio_p", "levene_tests", "welch_test", "compare_levels",
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


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha={alpha!r} must be in (0, 1)")
    return a


def f_test_p(ratio: float, df1: int, df2: int) -> float:
    """Two-sided p-value of the variance-ratio F-test: ``2 min(cdf, sf)`` of ``F(df1, df2)``."""
    if df1 < 1 or df2 < 1:
        raise ValueError(f"F-test needs df >= 1, got ({df1}, {df2})")
    if not ratio >= 0:
        raise ValueError(f"variance ratio {ratio!r} must be >= 0")
    if math.isinf(ratio):
        return 0.0
    return float(min(1.0, 2.0 * min(sps.f.cdf(ratio, df1, df2), sps.f.sf(ratio, df1, df2))))


def f_test_power(ratio: float, df1: int, df2: int, alpha: float = 0.05) -> float:
    """Power of the two-sided level-``alpha`` F-test when the true variance ratio is ``ratio``."""
    alpha = _check_alpha(alpha)
    if df1 < 1 or df2 < 1:
        raise ValueError(f"F-test needs df >= 1, got ({df1}, {df2})")
    if not (ratio > 0 and math.isfinite(ratio)):
        raise ValueError(f"true variance ratio {ratio!r} must be finite and > 0")
    lo = sps.f.ppf(alpha / 2, df1, df2)
    hi = sps.f.isf(alpha / 2, df1, df2)
    return float(sps.f.sf(hi / ratio, df1, df2) + sps.f.cdf(lo / ratio, df1, df2))


def seeds_for_power(ratio: float, cells_a: int, cells_b: int, *, power: float = 0.8, alpha: float = 0.05,
                    n_max: int = 10_000) -> int | None:
    """Smallest seeds per cell ``n`` with ``f_test_power(ratio, cells_a(n-1), cells_b(n-1)) >= power``.

    None when even ``n_max`` is not enough (e.g. a ratio of exactly 1)."""
    if cells_a < 1 or cells_b < 1:
        raise ValueError(f"need >= 1 cell per level, got ({cells_a}, {cells_b})")
    if not 0 < power < 1:
        raise ValueError(f"power={power!r} must be in (0, 1)")

    def ok(n: int) -> bool:
        return f_test_power(ratio, cells_a * (n - 1), cells_b * (n - 1), alpha) >= power

    if not ok(n_max):
        return None
    lo, hi = 2, n_max            # power increases with n: bisection on the first n that is ok
    if ok(lo):
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


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


def compare_levels(cells_a: Sequence[Sequence[float]], cells_b: Sequence[Sequence[float]], *,
                   alpha: float = 0.05, n_boot: int = 9999, n_perm: int = 9999, seed: int = 0,
                   assumed_ratio: float = STEIER_RATIO, target_power: float = 0.8,
                   boot_method: str = "percentile") -> dict[str, Any]:
    """All statistics of level a against level b (see module doc); JSON-able dict."""
    import warnings
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # constant cells (e.g. identical accuracies of tiny models) make some statistics 0/0:
        # they come out NaN (JSON null, printed n/a) instead of warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return _compare_levels(cells_a, cells_b, alpha=alpha, n_boot=n_boot, n_perm=n_perm, seed=seed,
                               assumed_ratio=assumed_ratio, target_power=target_power, boot_method=boot_method)


def _compare_levels(cells_a, cells_b, *, alpha, n_boot, n_perm, seed, assumed_ratio, target_power,
                    boot_method) -> dict[str, Any]:
    ca, cb = _cells(cells_a, "level a"), _cells(cells_b, "level b")
    va, dfa = pooled_variance(ca)
    vb, dfb = pooled_variance(cb)
    ratio = variance_ratio(ca, cb)
    out: dict[str, Any] = {"cells_a": len(ca), "cells_b": len(cb), "n_a": int(sum(c.size for c in ca)),
                           "n_b": int(sum(c.size for c in cb)), "pooled_var_a": va, "pooled_var_b": vb,
                           "df_a": dfa, "df_b": dfb, "ratio": ratio,
                           "f_p": f_test_p(ratio, dfa, dfb) if not math.isnan(ratio) else float("nan")}
    out.update(levene_tests(ca, cb))
    out["perm_log_ratio"], out["perm_p"] = permutation_ratio_p(ca, cb, n_resamples=n_perm, seed=seed)
    out["boot_ci"] = list(bootstrap_ratio_ci(ca, cb, n_resamples=n_boot, seed=seed + 1, method=boot_method))
    out["boot_confidence"] = 0.95
    out.update(welch_test(ca, cb))
    n_cell = int(round((out["n_a"] + out["n_b"]) / (len(ca) + len(cb))))
    power: dict[str, Any] = {"alpha": alpha, "target": target_power, "seeds_per_cell": n_cell}
    for tag, rho in (("observed", ratio), ("assumed", assumed_ratio)):
        if rho > 0 and math.isfinite(rho):
            power[f"{tag}_ratio"] = rho
            power[f"power_{tag}"] = f_test_power(rho, dfa, dfb, alpha)
            power[f"seeds_for_target_{tag}"] = seeds_for_power(rho, len(ca), len(cb), power=target_power, alpha=alpha)
        else:
            power[f"{tag}_ratio"], power[f"power_{tag}"], power[f"seeds_for_target_{tag}"] = rho, None, None
    out["power"] = power
    return out


def factorial_analysis(factors: Sequence[str], data: Mapping[tuple, Sequence[float]], *,
                       metric: str = "test_acc", alpha: float = 0.05, n_boot: int = 9999,
                       n_perm: int = 9999, seed: int = 0, assumed_ratio: float = STEIER_RATIO,
                       target_power: float = 0.8) -> dict[str, Any]:
    """Cell summaries and, for every factor, every pair of its levels in level order (a 2-level
    factor gives one comparison, ratio ``level0 / level1``), the other factors' level
    combinations entering as separate cells of the pooled variance.  Comparisons with a cell
    of fewer than 2 values (a partial study) are left out."""
    factors = list(factors)
    if not factors:
        raise ValueError("factorial_analysis: no factors")
    for key in data:
        if not isinstance(key, tuple) or len(key) != len(factors):
            raise ValueError(f"cell key {key!r} must be a tuple of {len(factors)} levels ({factors})")
    cells = describe_cells(data)
    out: dict[str, Any] = {"metric": metric, "factors": factors,
                           "cells": [{"levels": dict(zip(factors, c.levels)), "n": c.n, "mean": c.mean,
                                      "sd": c.sd, "values": [float(v) for v in data[c.levels]]} for c in cells],
                           "comparisons": []}
    for fi, fname in enumerate(factors):
        levels: list[Any] = []
        for key in data:
            if key[fi] not in levels:
                levels.append(key[fi])
        for i in range(len(levels)):
            for j in range(i + 1, len(levels)):
                ca = [data[k] for k in data if k[fi] == levels[i]]
                cb = [data[k] for k in data if k[fi] == levels[j]]
                if any(len(c) < 2 for c in ca + cb):
                    continue  # variance needs >= 2 seeds per cell (partial study)
                cmp = compare_levels(ca, cb, alpha=alpha, n_boot=n_boot, n_perm=n_perm, seed=seed,
                                     assumed_ratio=assumed_ratio, target_power=target_power)
                out["comparisons"].append({"factor": fname, "level_a": levels[i], "level_b": levels[j], **cmp})
    return out


def _p(p: float | None) -> str:
    if p is None or not isinstance(p, float) or math.isnan(p):
        return "  n/a"
    return f"{p:.3f}" if p >= 0.001 else "<.001"


def format_table(analysis: Mapping[str, Any], scale: float = 100.0, unit: str = "%") -> str:
    """Steier-style text table of :func:`factorial_analysis` output (values times ``scale``)."""
    w = max([len(" ".join(f"{k}={v}" for k, v in c["levels"].items())) for c in analysis["cells"]] + [4])
    lines = [f"metric: {analysis['metric']} (x{scale:g}, {unit})",
             f"{'cell':<{w}}  {'n':>3}  {'mean':>8}  {'SD':>7}  {'var':>9}"]
    for c in analysis["cells"]:
        name = " ".join(f"{k}={v}" for k, v in c["levels"].items())
        sd = c["sd"]
        sd_s = f"{sd * scale:7.3f}" if sd == sd else "    n/a"
        var_s = f"{(sd * scale) ** 2:9.4f}" if sd == sd else "      n/a"
        lines.append(f"{name:<{w}}  {c['n']:>3}  {c['mean'] * scale:8.3f}  {sd_s}  {var_s}")
    for cmp in analysis["comparisons"]:
        pw = cmp["power"]
        lo, hi = cmp["boot_ci"]
        lines += [
            "",
            f"{cmp['factor']}: {cmp['level_a']} vs {cmp['level_b']} "
            f"(pooled over {cmp['cells_a']} + {cmp['cells_b']} cells of the other factors)",
            f"  pooled var {cmp['level_a']} {cmp['pooled_var_a'] * scale ** 2:.4f} (df {cmp['df_a']}), "
            f"{cmp['level_b']} {cmp['pooled_var_b'] * scale ** 2:.4f} (df {cmp['df_b']})",
            f"  variance ratio {cmp['ratio']:.2f}x  bootstrap 95% CI [{lo:.2f}, {hi:.2f}]",
            f"  p: F {_p(cmp['f_p'])}  Levene {_p(cmp['levene_p'])}  Brown-Forsythe {_p(cmp['bf_p'])}  "
            f"permutation {_p(cmp['perm_p'])}",
            f"  means {cmp['mean_a'] * scale:.3f} vs {cmp['mean_b'] * scale:.3f} (diff {cmp['mean_diff'] * scale:+.3f}), "
            f"Welch t={cmp['welch_t']:.2f} p {_p(cmp['welch_p'])}",
        ]
        for tag in ("observed", "assumed"):
            pv, ns = pw[f"power_{tag}"], pw[f"seeds_for_target_{tag}"]
            if pv is None:
                lines.append(f"  F-test power at {tag} ratio: n/a")
            else:
                lines.append(f"  F-test power (alpha {pw['alpha']}) at {tag} ratio {pw[f'{tag}_ratio']:.2f}x with "
                             f"{pw['seeds_per_cell']} seeds/cell: {pv:.2f}; seeds/cell for {pw['target']:.0%}: "
                             f"{ns if ns is not None else '>10000'}")
    if not analysis["comparisons"]:
        lines.append("(no comparison: every cell needs >= 2 seeds)")
    return "\n".join(lines)
