"""Power of the variance-ratio tests, and the seeds a test needs: shared by the ViT study
(:mod:`vit.stats`) and the simulation's pre-registered prediction (:mod:`sim.predict`), which
sizes the ViT arm before it runs.  Everything is exact (scipy distributions and quadrature):

* the two-sided F-test of a variance ratio with df ``(df1, df2)``: ``R ~ ρ F``, so
  ``power = F.sf(f_hi/ρ) + F.cdf(f_lo/ρ)`` (:func:`f_test_power`, :func:`seeds_for_power`);
* the paired Pitman–Morgan test of matched seeds: the sample correlation of sums and
  differences is that of ``df + 2`` bivariate normal pairs with correlation
  :func:`corr_sd_of_ratio`; its exact density (Hotelling) is integrated beyond the critical
  value (:func:`pitman_morgan_power`, :func:`seeds_for_power_paired`).
"""
from __future__ import annotations

import math

from scipy import stats as sps

__all__ = ["check_alpha", "f_test_power", "seeds_for_power", "corr_sd_of_ratio", "pitman_morgan_power",
           "seeds_for_power_paired"]


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float in (0, 1) (ValueError otherwise)."""
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha={alpha!r} must be in (0, 1)")
    return a


def _first_ok(ok, lo: int, hi: int) -> int:
    """The smallest n in (lo, hi] with ``ok(n)``, by bisection, given ``ok(hi)`` and not ``ok(lo)``
    (power rises with the seeds, so ``ok`` is monotone)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def f_test_power(ratio: float, df1: int, df2: int, alpha: float = 0.05) -> float:
    """Power of the two-sided level-``alpha`` F-test when the true variance ratio is ``ratio``."""
    alpha = check_alpha(alpha)
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
    return 2 if ok(2) else _first_ok(ok, 2, n_max)


def corr_sd_of_ratio(ratio: float, corr: float) -> float:
    """Population correlation of ``x + y`` and ``x - y`` when ``Var x / Var y = ratio`` and
    ``corr(x, y) = corr``: ``(ratio - 1) / sqrt((ratio + 1)² - 4 corr² ratio)``."""
    if not (ratio > 0 and math.isfinite(ratio)):
        raise ValueError(f"variance ratio {ratio!r} must be finite and > 0")
    if not -1 < corr < 1:
        raise ValueError(f"correlation {corr!r} must be in (-1, 1)")
    return (ratio - 1.0) / math.sqrt((ratio + 1.0) ** 2 - 4.0 * corr * corr * ratio)


def _r_density(r: float, rho: float, n: int) -> float:
    """Exact density of the sample correlation of n bivariate normal pairs with correlation
    rho (Hotelling 1953; hypergeometric form)."""
    from scipy.special import gammaln, hyp2f1
    lg = math.log(n - 2) + gammaln(n - 1) - 0.5 * math.log(2 * math.pi) - gammaln(n - 0.5)
    return float(math.exp(lg + 0.5 * (n - 1) * math.log1p(-rho * rho) + 0.5 * (n - 4) * math.log1p(-r * r)
                          - (n - 1.5) * math.log1p(-rho * r)) * hyp2f1(0.5, 0.5, n - 0.5, 0.5 * (1 + rho * r)))


def pitman_morgan_power(ratio: float, corr: float, df: int, alpha: float = 0.05) -> float:
    """Power of the two-sided level-``alpha`` Pitman–Morgan test with ``df`` (= k(n-1) - 1)
    when the true variance ratio is ``ratio`` and the paired values correlate with ``corr``:
    the probability that the sample correlation of sums and differences (distributed as that of
    ``df + 2`` bivariate normal pairs with correlation :func:`corr_sd_of_ratio`) falls beyond
    the critical value; integrated exactly (Hotelling's density), not by Fisher's z."""
    alpha = check_alpha(alpha)
    if df < 1:
        raise ValueError(f"Pitman-Morgan needs df >= 1, got {df}")
    from scipy.integrate import quad
    rho = corr_sd_of_ratio(ratio, corr)
    tc = sps.t.isf(alpha / 2, df)
    rc = tc / math.sqrt(df + tc * tc)
    n = df + 2
    if n < 3:
        raise ValueError("Pitman-Morgan power needs df >= 1")
    up = quad(_r_density, rc, 1.0, args=(rho, n), limit=200)[0]
    lo = quad(_r_density, -1.0, -rc, args=(rho, n), limit=200)[0]
    return float(min(1.0, max(0.0, up + lo)))


def seeds_for_power_paired(ratio: float, corr: float, cells: int, *, power: float = 0.8, alpha: float = 0.05,
                           n_max: int = 2000) -> int | None:
    """Smallest seeds per cell n with Pitman–Morgan power >= ``power`` for ``cells`` matched
    partner-cell pairs (df = cells (n-1) - 1); None if ``n_max`` is not enough."""
    if cells < 1:
        raise ValueError(f"need >= 1 pair of partner cells, got {cells}")
    if not 0 < power < 1:
        raise ValueError(f"power={power!r} must be in (0, 1)")

    def ok(n: int) -> bool:
        df = cells * (n - 1) - 1
        return df >= 1 and pitman_morgan_power(ratio, corr, df, alpha) >= power

    # power rises with n: double n until it suffices, then bisect.  Searching upwards matters at
    # extreme ratios, where a few seeds suffice and the integral at n_max underflows to power 0.
    lo, hi = 1, 2
    while not ok(hi):
        if hi >= n_max:
            return None
        lo, hi = hi, min(2 * hi, n_max)
    return 2 if hi == 2 else _first_ok(ok, lo, hi)
