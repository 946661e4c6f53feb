"""vit.stats against independent closed forms, direct numpy computations and simulation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from vit import factorial as F
from vit import stats as S


def _cells(rng, sds, n):
    return [rng.normal(rng.uniform(-1, 1), sd, n) for sd in sds]


def test_pooled_variance_matches_direct_sum_of_squares():
    rng = np.random.default_rng(0)
    cells = [rng.normal(size=n) * (k + 1) + 10 * k for k, n in enumerate((3, 5, 8))]
    v, df = S.pooled_variance(cells)
    # independent form: weighted mean of the ddof=1 variances, weights n_i - 1
    w = np.array([c.size - 1 for c in cells], float)
    s2 = np.array([np.var(c, ddof=1) for c in cells])
    assert df == 13
    assert v == pytest.approx(float((w * s2).sum() / w.sum()), rel=1e-13)
    # shifting a cell's mean does not change the pooled within-cell variance
    v2, _ = S.pooled_variance([cells[0] + 100.0, cells[1], cells[2] - 7.0])
    assert v2 == pytest.approx(v, rel=1e-12)


def test_single_cell_ratio_is_the_f_statistic_and_p_matches_two_sided_f():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 2, 9), rng.normal(0, 1, 6)
    r = S.variance_ratio([a], [b])
    f = np.var(a, ddof=1) / np.var(b, ddof=1)
    assert r == pytest.approx(f, rel=1e-13)
    # two-sided p from the F cdf, computed the other way round (1/F with swapped df)
    p_direct = 2 * min(sps.f.sf(f, 8, 5), sps.f.sf(1 / f, 5, 8))
    assert S.f_test_p(r, 8, 5) == pytest.approx(p_direct, rel=1e-10)
    assert S.f_test_p(1.0 / r, 5, 8) == pytest.approx(S.f_test_p(r, 8, 5), rel=1e-10)


def test_power_formula_matches_monte_carlo():
    rng = np.random.default_rng(2)
    rho, n, k, alpha = 4.0, 5, 2, 0.05
    reps = 20000
    # level a cells have variance rho, level b variance 1; two cells per level
    xa = rng.normal(0, math.sqrt(rho), (reps, k, n))
    xb = rng.normal(0, 1, (reps, k, n))
    va = np.var(xa, axis=2, ddof=1).mean(axis=1)   # equal n: pooled = mean of cell variances
    vb = np.var(xb, axis=2, ddof=1).mean(axis=1)
    df = k * (n - 1)
    lo, hi = sps.f.ppf(alpha / 2, df, df), sps.f.ppf(1 - alpha / 2, df, df)
    rej = np.mean((va / vb > hi) | (va / vb < lo))
    pw = S.f_test_power(rho, df, df, alpha)
    se = math.sqrt(pw * (1 - pw) / reps)
    assert abs(rej - pw) < 4 * se
    # under H0 the power is the level
    assert S.f_test_power(1.0, df, df, alpha) == pytest.approx(alpha, abs=1e-12)


def test_seeds_for_power_is_the_smallest_sufficient_n():
    n = S.seeds_for_power(S.STEIER_RATIO, 1, 1, power=0.8)
    assert n is not None and n > 2
    assert S.f_test_power(S.STEIER_RATIO, n - 1, n - 1) >= 0.8
    assert S.f_test_power(S.STEIER_RATIO, n - 2, n - 2) < 0.8
    assert S.seeds_for_power(1.0, 2, 2, n_max=200) is None
    # symmetric in the direction of the ratio for a balanced design
    assert S.seeds_for_power(1 / 3.0, 2, 2) == S.seeds_for_power(3.0, 2, 2)


def test_levene_and_brown_forsythe_equal_anova_on_absolute_residuals():
    rng = np.random.default_rng(3)
    ca, cb = _cells(rng, (2, 2), 7), _cells(rng, (1, 1), 7)
    res = S.levene_tests(ca, cb)
    # Levene = one-way ANOVA of |x - cell centre| (minus the level's centre of those residuals)
    for key, f in (("levene", np.mean), ("bf", np.median)):
        ra = np.concatenate([c - f(c) for c in ca])
        rb = np.concatenate([c - f(c) for c in cb])
        da, db = np.abs(ra - f(ra)), np.abs(rb - f(rb))
        fs, p = sps.f_oneway(da, db)
        assert res[f"{key}_W"] == pytest.approx(float(fs), rel=1e-10)
        assert res[f"{key}_p"] == pytest.approx(float(p), rel=1e-10)


def test_welch_matches_formula():
    rng = np.random.default_rng(4)
    ca, cb = _cells(rng, (1, 2), 6), _cells(rng, (1, 1), 5)
    res = S.welch_test(ca, cb)
    a, b = np.concatenate(ca), np.concatenate(cb)
    va, vb = np.var(a, ddof=1) / a.size, np.var(b, ddof=1) / b.size
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    assert res["welch_t"] == pytest.approx(t, rel=1e-12)
    assert res["welch_df"] == pytest.approx(df, rel=1e-12)
    assert res["welch_p"] == pytest.approx(2 * sps.t.sf(abs(t), df), rel=1e-9)


def test_permutation_statistic_is_log_ratio_and_exact_p_by_enumeration():
    from itertools import combinations
    rng = np.random.default_rng(5)
    ca, cb = [rng.normal(0, 3, 3)], [rng.normal(0, 1, 4)]
    stat, p = S.permutation_ratio_p(ca, cb, n_resamples=100000)
    assert stat == pytest.approx(math.log(S.variance_ratio(ca, cb)), rel=1e-12)
    # independent enumeration of all C(7,3) splits of the centred values
    r = np.concatenate([ca[0] - ca[0].mean(), cb[0] - cb[0].mean()])
    obs = math.log((np.sum(r[:3] ** 2) / 2) / (np.sum(r[3:] ** 2) / 3))
    vals = []
    for idx in combinations(range(7), 3):
        m = np.zeros(7, bool)
        m[list(idx)] = True
        vals.append(math.log((np.sum(r[m] ** 2) / 2) / (np.sum(r[~m] ** 2) / 3)))
    vals = np.array(vals)
    eps = 1e-12 * max(1.0, abs(obs))
    p_direct = min(1.0, 2 * min(np.mean(vals <= obs + eps), np.mean(vals >= obs - eps)))
    assert p == pytest.approx(p_direct, rel=1e-12)


def test_bootstrap_ci_covers_the_true_ratio_in_simulation():
    rng = np.random.default_rng(6)
    rho, hits, reps = 4.0, 0, 40
    for k in range(reps):
        ca = _cells(rng, (2.0, 2.0), 25)
        cb = _cells(rng, (1.0, 1.0), 25)
        lo, hi = S.bootstrap_ratio_ci(ca, cb, n_resamples=999, seed=k)
        assert lo < S.variance_ratio(ca, cb) < hi
        hits += lo <= rho <= hi
    # nominal 95%; the percentile interval of a variance ratio undercovers somewhat at n=25
    assert hits / reps >= 0.8


def test_bootstrap_ci_is_stratified_by_cell():
    # two cells with very different means but equal spread: a resample that mixed cells would
    # see the mean gap as variance and blow the ratio up
    rng = np.random.default_rng(7)
    ca = [rng.normal(0, 1, 10), rng.normal(1000, 1, 10)]
    cb = [rng.normal(0, 1, 10), rng.normal(-50, 1, 10)]
    lo, hi = S.bootstrap_ratio_ci(ca, cb, n_resamples=999, seed=0)
    assert 0.05 < lo < hi < 20


def test_factorial_analysis_pools_over_other_factor_and_formats():
    rng = np.random.default_rng(8)
    data = {("clamp", "cff2"): rng.normal(0.8, 0.02, 5), ("clamp", "cff1"): rng.normal(0.7, 0.02, 5),
            ("subtract", "cff2"): rng.normal(0.8, 0.01, 5), ("subtract", "cff1"): rng.normal(0.7, 0.01, 5)}
    a = F.factorial_analysis(["loss_mode", "method"], data, n_boot=499, n_perm=499)
    assert [c["factor"] for c in a["comparisons"]] == ["loss_mode", "method"]
    lm = a["comparisons"][0]
    direct = (np.var(data[("clamp", "cff2")], ddof=1) + np.var(data[("clamp", "cff1")], ddof=1)) / \
             (np.var(data[("subtract", "cff2")], ddof=1) + np.var(data[("subtract", "cff1")], ddof=1))
    assert lm["ratio"] == pytest.approx(direct, rel=1e-12)
    assert lm["df_a"] == lm["df_b"] == 8
    assert lm["power"]["power_assumed"] == pytest.approx(S.f_test_power(S.STEIER_RATIO, 8, 8))
    # Steier's statistic: all 10 runs of a level as one sample, df 9
    va = np.var(np.concatenate([data[("clamp", "cff2")], data[("clamp", "cff1")]]), ddof=1)
    vb = np.var(np.concatenate([data[("subtract", "cff2")], data[("subtract", "cff1")]]), ddof=1)
    assert lm["steier"]["ratio"] == pytest.approx(va / vb, rel=1e-12)
    assert (lm["steier"]["df_a"], lm["steier"]["df_b"]) == (9, 9)
    assert lm["paired"]["pm_df"] == 2 * 4 - 1
    txt = F.format_table(a)
    assert "Pitman-Morgan" in txt and "Steier's pooled F" in txt and "loss_mode clamp, method cff2" in txt
    assert "nan" not in txt.lower()


def test_steier_p_value_is_the_two_sided_f_with_df_13_13():
    # Steier (2026): VR 5.90, p = 0.003 for 2 cells x 7 seeds per level
    assert S.f_test_p(5.90, 13, 13) == pytest.approx(0.003, abs=5e-4)
    assert S.f_test_p(5.90, 12, 12) > 0.004      # the within-cell df give a different p


def test_pitman_morgan_equals_test_of_zero_correlation_of_sums_and_differences():
    rng = np.random.default_rng(11)
    x = rng.normal(0, 2, 9)
    y = 0.5 * x + rng.normal(0, 1, 9)
    pm = S.pitman_morgan([x], [y])
    r, p = sps.pearsonr(x + y, x - y)
    assert pm["pm_r"] == pytest.approx(r, rel=1e-12)
    assert pm["pm_p"] == pytest.approx(p, rel=1e-10)
    assert pm["pm_df"] == 7
    # the classical closed form of the statistic in variances and covariance
    sx2, sy2, sxy = np.var(x, ddof=1), np.var(y, ddof=1), np.cov(x, y)[0, 1]
    t = (sx2 - sy2) * math.sqrt(7) / (2 * math.sqrt(sx2 * sy2 - sxy ** 2))
    assert pm["pm_t"] == pytest.approx(t, rel=1e-10)
    # two cells: centring per cell = removing the cell means before the correlation
    x2, y2 = rng.normal(5, 1, 9), rng.normal(-3, 1, 9)
    pm2 = S.pitman_morgan([x, x2], [y, y2])
    ra = np.concatenate([x - x.mean(), x2 - x2.mean()])
    rb = np.concatenate([y - y.mean(), y2 - y2.mean()])
    s, d = ra + rb, ra - rb
    assert pm2["pm_r"] == pytest.approx(np.sum(s * d) / math.sqrt(np.sum(s * s) * np.sum(d * d)), rel=1e-12)
    assert pm2["pm_df"] == 2 * 8 - 1


def _null_sims(rng, reps, k, n, shared):
    """Matched design under H0: a seed effect shared by all cells (share ``shared`` of the
    variance) plus independent noise; level a and b have equal variance."""
    u = rng.normal(size=(reps, 1, n)) * math.sqrt(shared)
    xa = u + rng.normal(size=(reps, k, n)) * math.sqrt(1 - shared) + rng.normal(size=(1, k, 1))
    xb = u + rng.normal(size=(reps, k, n)) * math.sqrt(1 - shared)
    return xa, xb


def test_paired_null_rejection_rate_is_alpha_while_independent_f_is_conservative():
    rng = np.random.default_rng(12)
    reps, k, n, alpha = 6000, 2, 7, 0.05
    xa, xb = _null_sims(rng, reps, k, n, shared=0.5)
    r, t, df = S.pitman_morgan_arrays(xa, xb)
    p = 2 * sps.t.sf(np.abs(t), df)
    rate = np.mean(p < alpha)
    se = math.sqrt(alpha * (1 - alpha) / reps)
    assert abs(rate - alpha) < 4 * se
    # the within-cell F-test treats the levels as independent: it rejects too rarely here
    va = np.var(xa, axis=2, ddof=1).mean(axis=1)
    vb = np.var(xb, axis=2, ddof=1).mean(axis=1)
    pf = np.array([S.f_test_p(v, k * (n - 1), k * (n - 1)) for v in va / vb])
    assert np.mean(pf < alpha) < alpha - 4 * se


def test_paired_permutation_is_exact_by_enumeration_of_swaps():
    from itertools import product
    rng = np.random.default_rng(13)
    ca = [rng.normal(0, 2, 4), rng.normal(1, 2, 4)]
    cb = [rng.normal(0, 1, 4), rng.normal(1, 1, 4)]
    stat, p = S.paired_permutation_p(ca, cb, n_resamples=100000)
    xa, xb = np.stack(ca), np.stack(cb)

    def lr(a, b):
        return math.log(np.sum((a - a.mean(1, keepdims=True)) ** 2) / np.sum((b - b.mean(1, keepdims=True)) ** 2))
    obs = lr(xa, xb)
    assert stat == pytest.approx(obs, rel=1e-12)
    vals = []
    for sw in product((False, True), repeat=8):
        m = np.array(sw).reshape(2, 4)
        vals.append(lr(np.where(m, xb, xa), np.where(m, xa, xb)))
    vals = np.array(vals)
    eps = 1e-12 * max(1.0, abs(obs))
    p_direct = min(1.0, 2 * min(np.mean(vals <= obs + eps), np.mean(vals >= obs - eps)))
    assert p == pytest.approx(p_direct, rel=1e-12)


def test_paired_bootstrap_resamples_seeds_jointly():
    # a seed effect shared across cells, large against the noise: a joint seed resample keeps
    # the two levels' variances tied, so the CI of a true ratio of 1 stays narrow and covers 1
    rng = np.random.default_rng(14)
    u = rng.normal(0, 10, 12)
    ca = [u + rng.normal(0, 1, 12), u + 3 + rng.normal(0, 1, 12)]
    cb = [u + rng.normal(0, 1, 12), u - 2 + rng.normal(0, 1, 12)]
    lo, hi, dropped = S.paired_bootstrap_ci(ca, cb, n_resamples=1999, seed=0)
    assert lo < 1 < hi and hi / lo < 1.5 and dropped == 0
    ilo, ihi = S.bootstrap_ratio_ci(ca, cb, n_resamples=1999, seed=0)
    assert ihi / ilo > 2 * hi / lo     # resampling cells independently loses the pairing


def test_pitman_morgan_power_matches_monte_carlo():
    rng = np.random.default_rng(15)
    ratio, corr, k, n, reps = 4.0, 0.5, 2, 6, 20000
    cov = np.array([[ratio, corr * math.sqrt(ratio)], [corr * math.sqrt(ratio), 1.0]])
    z = rng.multivariate_normal([0, 0], cov, size=(reps, k, n))
    r, t, df = S.pitman_morgan_arrays(z[..., 0], z[..., 1])
    rate = np.mean(2 * sps.t.sf(np.abs(t), df) < 0.05)
    pw = S.pitman_morgan_power(ratio, corr, df)
    assert abs(rate - pw) < 4 * math.sqrt(pw * (1 - pw) / reps)
    assert S.pitman_morgan_power(1.0, 0.3, df) == pytest.approx(0.05, abs=1e-6)
    n80 = S.seeds_for_power_paired(ratio, corr, k)
    assert S.pitman_morgan_power(ratio, corr, k * (n80 - 1) - 1) >= 0.8
    assert S.pitman_morgan_power(ratio, corr, k * (n80 - 2) - 1) < 0.8


def test_two_seeds_per_cell_say_so_in_words_and_print_no_nan():
    rng = np.random.default_rng(16)
    data = {(a, b): rng.normal(0.7, 0.01, 2) for a in ("clamp", "subtract") for b in ("cff2", "cff1")}
    an = F.factorial_analysis(["loss_mode", "method"], data, n_boot=199, n_perm=199)
    c = an["comparisons"][0]
    for key in ("levene", "pitman_morgan", "perm_paired", "boot_paired", "boot_independent"):
        assert "needs at least 3 seeds per cell, has 2" in c["notes"][key]
    assert c["levene_p"] is None and c["boot_ci"] is None and c["paired"]["pm_p"] is None
    txt = F.format_table(an)
    assert "nan" not in txt.lower() and "< 0.001" not in txt and "needs at least 3 seeds" in txt
    # constant cells: degenerate, said in words
    const = {k: [0.5, 0.5, 0.5] for k in data}
    an = F.factorial_analysis(["loss_mode", "method"], const, n_boot=199, n_perm=199)
    txt = F.format_table(an)
    assert "nan" not in txt.lower() and "zero" in txt


def test_bad_input_raises():
    with pytest.raises(ValueError, match="at least 2"):
        S.pooled_variance([[1.0]])
    with pytest.raises(ValueError, match="non-finite"):
        S.pooled_variance([[1.0, float("nan")]])
    with pytest.raises(ValueError, match="alpha"):
        S.f_test_power(2.0, 3, 3, alpha=1.5)
    with pytest.raises(ValueError, match="tuple"):
        F.factorial_analysis(["a", "b"], {("x",): [1.0, 2.0]})
    with pytest.raises(ValueError, match="same number of seeds"):
        S.pitman_morgan([[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0, 4.0]])


def test_seeds_for_power_paired_at_extreme_ratios():
    """A ratio far from 1 needs few seeds; the search finds the smallest n with power >= 0.8 (it
    once returned None there: the power integral at n = 2000 underflows)."""
    from vit.stats import pitman_morgan_power, seeds_for_power_paired
    for vr in (0.0037, 0.016, 300.0):
        n = seeds_for_power_paired(vr, 0.5, 1)
        assert n is not None and n <= 6
        assert pitman_morgan_power(vr, 0.5, n - 2) >= 0.8
        assert n == 3 or pitman_morgan_power(vr, 0.5, n - 3) < 0.8
    assert seeds_for_power_paired(1.0001, 0.5, 1) is None
