"""Beyond linear noise: the stationary density of the one-dimensional diffusion of Q, and the
validity figures of every prediction.

At finite N the overlap is the diffusion ``dQ = f(Q) dt + sqrt(g2(Q)) dW`` with the drift
``f = E Y`` and ``g2 = Var Y / (B N)`` of :mod:`sim.fluctuations` (t = steps / N).  Its
zero-flux stationary density on the basin ``(lo, hi)`` of the stable fixed point Q* is

    p(Q) ∝ exp(Phi(Q)) / Var Y(Q),    Phi(Q) = 2 B N ∫_{Q*}^{Q} f(q) / Var Y(q) dq,

which gives N Var(Q) and the mean shift without linearising.  Linearising f about Q* and
freezing Var Y at Q* gives back the Ornstein-Uhlenbeck value ``Var Y / (2 B |lambda|)``: the
linear-noise value is this density's small-noise limit (N -> inf).  Q = 0 is a reflecting end
(the law of c is symmetric, so Q and -Q are the same state and SGD is read as |Q|), Q = 1 is
the sphere's end; an unstable fixed point between them is an escape edge.

The density is built from f and Var Y at Chebyshev-Lobatto points of the window
``Q* +- window_sd`` SD (clipped to the basin), interpolated by Chebyshev series (both are
smooth in Q: the quadrature's pieces are fixed in h-space), and integrated on a fine grid.
The odd-indexed points are left out for a second, coarser estimate: their difference is the
reported ``fp_change``.

Validity figures (each prediction carries all of them):

``ou_fp_rel_diff``         N Var(Q) of the linear-noise value over the diffusion's, minus 1;
``edge_sigmas``            distance from Q* to the nearest end of its basin in units of the
                           diffusion's SD of Q (``escape_edge_sigmas``: to an unstable fixed
                           point only, where the state can leave);
``active_per_corr_time``   active (unclamped) samples per correlation time,
                           ``N B (1 - CAR) / |lambda|``: the number of kicks that make one
                           relaxation; the variance of Q is made by about half as many kicks
                           per squared SD.  Too few, and the motion is a sequence of rare jumps,
                           not a diffusion; a correlation time beyond the horizon, and the
                           stationary state is never reached: either way the state is
                           **quasi-frozen**, its own outcome (:class:`ValidityRule`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.fluctuations import StationaryPoint, increment_moments
from sim.model import MFConfig

__all__ = ["ValidityRule", "VALIDITY", "fp_stationary", "frozen_reason", "validity"]


@dataclass(frozen=True)
class ValidityRule:
    """Where a prediction is valid.  Quasi-frozen: fewer than ``min_active`` active samples per
    correlation time (the motion is a few jumps, not a diffusion) or a correlation time beyond
    ``horizon`` time units (t = steps / N; the stationary state is not reached within the
    horizon, so the seed-to-seed spread is set by the start, not by the noise).  Escapes: an
    unstable fixed point within ``min_edge_sigmas`` SD of Q*.  Unresolved: the diffusion
    density changed by more than ``max_fp_change`` (relative, N Var) between two resolutions.
    The linear-noise value may stand for the diffusion's where they differ by at most
    ``max_ou_rel_diff``."""
    min_active: float = 100.0
    horizon: float = 100.0
    min_edge_sigmas: float = 4.0
    max_fp_change: float = 1e-3
    max_ou_rel_diff: float = 0.05


VALIDITY = ValidityRule()


def _cheb_lobatto(lo: float, hi: float, n: int) -> np.ndarray:
    k = np.arange(n)
    return 0.5 * (lo + hi) - 0.5 * (hi - lo) * np.cos(np.pi * k / (n - 1))


def _moments_of(Q: np.ndarray, f: np.ndarray, v: np.ndarray, lo: float, hi: float, BN: float, q_star: float,
                n_fine: int) -> tuple[float, float, float, float]:
    """Mean, variance and the density's values at both ends (relative to its maximum) from
    f and Var Y sampled at Chebyshev-Lobatto points of [lo, hi]."""
    C = np.polynomial.chebyshev.Chebyshev
    deg = Q.size - 1
    r = C.fit(Q, f / v, deg, domain=[lo, hi])
    lv = C.fit(Q, np.log(v), deg, domain=[lo, hi])
    phi = r.integ(lbnd=q_star)
    x = np.linspace(lo, hi, n_fine)
    lp = 2.0 * BN * phi(x) - lv(x)
    p = np.exp(lp - lp.max())
    Z = np.trapezoid(p, x)
    mean = float(np.trapezoid(x * p, x) / Z)
    var = float(np.trapezoid((x - mean) ** 2 * p, x) / Z)
    return mean, var, float(p[0]), float(p[-1])


def fp_stationary(cfg: MFConfig, sp: StationaryPoint, N: int, *, n_points: int = 33, window_sd: float = 14.0,
                  n_fine: int = 8001) -> dict:
    """N Var(Q), the mean and its shift N (mean - Q*) of the stationary diffusion density at
    dimension ``N`` (see the module docstring), with its convergence figure ``fp_change`` and
    the density at the window's ends (``end_density``, relative to the peak)."""
    if n_points < 9 or n_points % 2 == 0:
        raise ValueError(f"n_points={n_points} must be odd and >= 9 (the even-indexed subset is the check)")
    n = sp.quad.order if sp.quad is not None else 0
    sd = math.sqrt(sp.n_var / N)
    top = 1.0 - (1e-12 if cfg.sn > 0 else 1e-9)  # Q = 1 with sn = 0: the h-law is degenerate
    lo = max(sp.basin[0], sp.Q - window_sd * sd, 0.0)
    hi = min(sp.basin[1], sp.Q + window_sd * sd, top)
    Q = _cheb_lobatto(lo, hi, n_points)
    mom = [increment_moments(cfg, float(q), n=n) for q in Q]
    f = np.array([m["drift"] for m in mom])
    v = np.array([m["varY"] for m in mom])
    if not np.all(v > 0):
        raise ValueError(f"Var Y vanishes inside [{lo:.6g}, {hi:.6g}]: the diffusion is degenerate there")
    BN = cfg.batch * float(N)
    mean, var, p_lo, p_hi = _moments_of(Q, f, v, lo, hi, BN, sp.Q, n_fine)
    mean2, var2, _, _ = _moments_of(Q[::2], f[::2], v[::2], lo, hi, BN, sp.Q, n_fine)
    return {"N": int(N), "N_var": N * var, "mean_Q": mean, "N_shift": N * (mean - sp.Q),
            "fp_change": abs(var2 / var - 1.0), "window": [lo, hi], "end_density": [p_lo, p_hi],
            "n_points": n_points}


def frozen_reason(corr_time: float, car: float, batch: int, N: int, rule: ValidityRule = VALIDITY) -> str | None:
    """Why a stationary point is quasi-frozen at dimension N (None if it is not): the rule of
    :class:`ValidityRule`, the one place it is applied."""
    active = N * batch * (1.0 - car) * corr_time
    reasons = []
    if active < rule.min_active:
        reasons.append(f"{active:.3g} active samples per correlation time < {rule.min_active:g}: rare jumps, "
                       "not a diffusion")
    if corr_time > rule.horizon:
        reasons.append(f"correlation time {corr_time:.3g} > horizon {rule.horizon:g} with "
                       f"{N * batch * (1.0 - car):.3g} active samples per unit time: the stationary state is not "
                       "reached")
    return "; ".join(reasons) if reasons else None


def validity(sp: StationaryPoint, fp: dict, N: int, rule: ValidityRule = VALIDITY) -> dict:
    """The validity figures of a prediction at ``N`` (module docstring) and its verdict:
    ``outcome`` is ``interior`` (a diffusion, FP value valid), ``quasi_frozen`` or
    ``escapes`` (an escape edge within ``rule.min_edge_sigmas`` SD); ``ou_valid`` says whether
    the linear-noise value may be quoted in place of the diffusion's."""
    sd = math.sqrt(fp["N_var"] / N)
    lo, hi = sp.basin
    ends = {"lower": sp.Q - lo, "upper": hi - sp.Q}
    escape = {k: d for k, d in ends.items() if (k == "lower" and lo > 0.0) or (k == "upper" and hi < 1.0)}
    active = N * sp.batch * (1.0 - sp.car) * sp.corr_time
    rel = sp.n_var / fp["N_var"] - 1.0
    out = {"N": int(N), "ou_fp_rel_diff": rel, "edge_sigmas": min(ends.values()) / sd,
           "nearest_edge": min(ends, key=ends.get),
           "escape_edge_sigmas": (min(escape.values()) / sd) if escape else None,
           "active_per_corr_time": active, "active_per_unit_time": N * sp.batch * (1.0 - sp.car),
           "corr_time": sp.corr_time, "fp_change": fp["fp_change"], "rule": rule.__dict__.copy()}
    reasons = []
    frozen = frozen_reason(sp.corr_time, sp.car, sp.batch, N, rule)
    if frozen:
        outcome = "quasi_frozen"
        reasons.append(frozen)
    elif escape and min(escape.values()) / sd < rule.min_edge_sigmas:
        outcome = "escapes"
        reasons.append(f"an unstable fixed point {min(escape.values()) / sd:.3g} SD from Q* "
                       f"(< {rule.min_edge_sigmas:g}): the state leaves its basin")
    elif fp["fp_change"] > rule.max_fp_change:
        outcome = "unresolved"
        reasons.append(f"the diffusion density changed by {fp['fp_change']:.2g} between two resolutions")
    else:
        outcome = "interior"
    out["outcome"] = outcome
    out["valid"] = outcome == "interior"
    out["ou_valid"] = out["valid"] and abs(rel) <= rule.max_ou_rel_diff
    out["reason"] = "; ".join(reasons) if reasons else ("valid" + ("" if out["ou_valid"] else
                                                                   f" (diffusion value; linear noise off by "
                                                                   f"{100 * rel:+.1f}%)"))
    return out
