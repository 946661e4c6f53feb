"""Beyond linear noise: the stationary density of the one-dimensional diffusion of Q, and the
validity figures of every prediction.

At finite N the overlap is the diffusion ``dQ = f(Q) dt + sqrt(g2(Q)) dW`` with the drift
``f = E Y`` and ``g2 = Var Y / (B N)`` of :mod:`sim.fluctuations` (t = steps / N).  Its
zero-flux stationary density on the basin ``(lo, hi)`` of the stable fixed point Q* is

    p(Q) ∝ exp(Phi(Q)) / Var Y(Q),    Phi(Q) = 2 B N ∫_{Q*}^{Q} f(q) / Var Y(q) dq,

which gives N Var(Q) and the mean shift without linearising.  The density keeps an O(1) term
in its exponent (the 1 / Var Y), so f and Var Y are the step's moments AT N, with their 1/N
terms (``drift_c1``, ``varY_c1`` of :mod:`sim.fluctuations`): with the N -> inf moments the
density is off by as much as the 1 / Var Y it keeps (relu, sigma_n = 0.7, N = 2000: N Var 4.43
instead of 4.14, mean Q 0.289 instead of SGD's 0.295).  Linearising f about Q* and
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
``finite_n_var_rel``       the 1/N term of Var Y at Q* relative to Var Y (the expansion in 1/N
                           needs it small; ``finite_n_shift_sd``: the 1/N drift's shift of Q*
                           in SDs of Q);
``sq_dev_tau``, ``kurtosis``  the integrated autocorrelation time of (Q - mean)^2 and the
                           density's kurtosis: a time average of N (Q - mean)^2 over K trials of
                           T time units has relative SE ``sqrt((kurtosis - 1) 2 sq_dev_tau / (K T))``,
                           which sizes the SGD window (:mod:`sim.validate`; a skewed density with
                           a shelf makes both far larger than the linear 1 / (2 |lambda|) and 3);
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

__all__ = ["ValidityRule", "VALIDITY", "fp_stationary", "expected_rel_se", "window_for_rel_se", "frozen_reason",
           "relaxation", "validity"]


@dataclass(frozen=True)
class ValidityRule:
    """Where a prediction is valid.  Quasi-frozen: fewer than ``min_active`` active samples per
    correlation time (the motion is a few jumps, not a diffusion) or a correlation time beyond
    ``horizon`` time units (t = steps / N; the stationary state is not reached within the
    horizon, so the seed-to-seed spread is set by the start, not by the noise).  Escapes: an
    unstable fixed point within ``min_edge_sigmas`` SD of Q*.  Unresolved: the diffusion
    density changed by more than ``max_fp_change`` (relative, N Var) between two resolutions, or
    the 1/N term of Var Y at Q* exceeds ``max_finite_n_rel`` of Var Y (the expansion in 1/N fails).
    The linear-noise value may stand for the diffusion's where they differ by at most
    ``max_ou_rel_diff``."""
    min_active: float = 100.0
    horizon: float = 100.0
    min_edge_sigmas: float = 4.0
    max_fp_change: float = 1e-3
    max_ou_rel_diff: float = 0.05
    max_finite_n_rel: float = 0.2


VALIDITY = ValidityRule()


def _cheb_lobatto(lo: float, hi: float, n: int) -> np.ndarray:
    k = np.arange(n)
    return 0.5 * (lo + hi) - 0.5 * (hi - lo) * np.cos(np.pi * k / (n - 1))


def _moments_of(Q: np.ndarray, f: np.ndarray, v: np.ndarray, lo: float, hi: float, BN: float, q_star: float,
                n_fine: int) -> dict:
    """Mean, variance, kurtosis and the density's values at both ends (relative to its maximum)
    from f and Var Y sampled at Chebyshev-Lobatto points of [lo, hi], and the density on the
    fine grid (``x``, log density ``lp``, diffusion coefficient ``D`` per unit time)."""
    C = np.polynomial.chebyshev.Chebyshev
    deg = Q.size - 1
    r = C.fit(Q, f / v, deg, domain=[lo, hi])
    lv = C.fit(Q, np.log(v), deg, domain=[lo, hi])
    phi = r.integ(lbnd=q_star)
    x = np.linspace(lo, hi, n_fine)
    lp = 2.0 * BN * phi(x) - lv(x)
    lp -= lp.max()
    p = np.exp(lp)
    Z = np.trapezoid(p, x)
    mean = float(np.trapezoid(x * p, x) / Z)
    var = float(np.trapezoid((x - mean) ** 2 * p, x) / Z)
    kurt = float(np.trapezoid((x - mean) ** 4 * p, x) / Z) / var ** 2
    return {"mean": mean, "var": var, "kurtosis": kurt, "p_lo": float(p[0]), "p_hi": float(p[-1]),
            "x": x, "lp": lp, "D": np.exp(lv(x)) / (2.0 * BN)}


def relaxation(x: np.ndarray, lp: np.ndarray, D: np.ndarray, n_grid: int = 400) -> dict:
    """The slowest relaxation time of the diffusion and the integrated autocorrelation times of
    Q and of (Q - mean)^2 in its stationary state, from the generator discretised on ``n_grid``
    points of the density's window (log density ``lp``, diffusion coefficient ``D``): the rates
    ``D / h^2 * exp((lp_j - lp_i) / 2)`` between neighbours satisfy detailed balance with the
    density exactly, so the symmetrised generator is tridiagonal with off-diagonal D / h^2 and
    reflecting ends.  tau_int(g) = sum_k <g, psi_k>^2 / (|mu_k| Var g) over its eigenpairs."""
    idx = np.unique(np.linspace(0, x.size - 1, n_grid).round().astype(int))
    q, l, d = x[idx], lp[idx], D[idx]
    keep = l > l.max() - 700.0  # exp underflows beyond: no mass, no motion
    q, l, d = q[keep], l[keep], d[keep]
    h = q[1] - q[0]
    pi = np.exp(l - l.max())
    pi /= pi.sum()
    dm = 0.5 * (d[1:] + d[:-1]) / h ** 2
    up = dm * np.exp(0.5 * (l[1:] - l[:-1]))
    dn = dm * np.exp(0.5 * (l[:-1] - l[1:]))
    diag = np.zeros(q.size)
    diag[:-1] -= up
    diag[1:] -= dn
    w, U = np.linalg.eigh(np.diag(diag) + np.diag(dm, 1) + np.diag(dm, -1))
    s = np.sqrt(pi)
    mu = float(np.sum(pi * q))
    moving = w < -1e-12 * abs(w).max()

    def tau_int(g):
        g = g - np.sum(pi * g)
        c2 = (U.T @ (g * s)) ** 2
        return float(np.sum(c2[moving] / -w[moving]) / np.sum(pi * g * g))
    return {"relax_time": float(-1.0 / w[moving].max()), "q_tau": tau_int(q), "sq_dev_tau": tau_int((q - mu) ** 2)}


def fp_stationary(cfg: MFConfig, sp: StationaryPoint, N: int, *, n_points: int = 49, window_sd: float = 14.0,
                  n_fine: int = 8001) -> dict:
    """N Var(Q), the mean and its shift N (mean - Q*) of the stationary diffusion density at
    dimension ``N`` with the step's moments at N (see the module docstring), with its
    convergence figure ``fp_change``, the density at the window's ends (``end_density``,
    relative to the peak), ``N_var_leading`` (the same density with the N -> inf moments), the
    1/N terms at Q* and the density's kurtosis and time scales (:func:`relaxation`)."""
    if n_points < 9 or n_points % 2 == 0:
        raise ValueError(f"n_points={n_points} must be odd and >= 9 (the even-indexed subset is the check)")
    n = sp.quad.order if sp.quad is not None else 0
    sd = math.sqrt(sp.n_var / N)
    top = 1.0 - (1e-12 if cfg.sn > 0 else 1e-9)  # Q = 1 with sn = 0: the h-law is degenerate
    lo = max(sp.basin[0], sp.Q - window_sd * sd, 0.0)
    hi = min(sp.basin[1], sp.Q + window_sd * sd, top)
    Q = _cheb_lobatto(lo, hi, n_points)
    mom = [increment_moments(cfg, float(q), n=n) for q in Q]
    f0 = np.array([m["drift"] for m in mom])
    v0 = np.array([m["varY"] for m in mom])
    f = f0 + np.array([m["drift_c1"] for m in mom]) / N
    v = v0 + np.array([m["varY_c1"] for m in mom]) / N
    if not (np.all(v0 > 0) and np.all(v > 0)):
        raise ValueError(f"Var Y vanishes inside [{lo:.6g}, {hi:.6g}] at N={N}: the diffusion is degenerate there")
    BN = cfg.batch * float(N)
    m = _moments_of(Q, f, v, lo, hi, BN, sp.Q, n_fine)
    m2 = _moments_of(Q[::2], f[::2], v[::2], lo, hi, BN, sp.Q, n_fine)
    lead = _moments_of(Q, f0, v0, lo, hi, BN, sp.Q, n_fine)
    at = increment_moments(cfg, sp.Q, n=n)
    rel = relaxation(m["x"], m["lp"], m["D"])
    return {"N": int(N), "N_var": N * m["var"], "mean_Q": m["mean"], "N_shift": N * (m["mean"] - sp.Q),
            "N_var_leading": N * lead["var"], "mean_Q_leading": lead["mean"],
            "fp_change": abs(m2["var"] / m["var"] - 1.0), "window": [lo, hi], "end_density": [m["p_lo"], m["p_hi"]],
            "n_points": n_points, "kurtosis": m["kurtosis"], **rel,
            "finite_n": {"drift_c1": at["drift_c1"], "varY_c1": at["varY_c1"],
                         "var_rel": at["varY_c1"] / (N * sp.var_step),
                         "shift_sd": at["drift_c1"] / (N * abs(sp.lam)) / sd}}


def _se2_times_window(fp: dict, trials: int) -> float:
    # (relative SE)^2 x window of a time average of N (Q - mean)^2 over `trials` trials (module doc)
    return max(fp["kurtosis"] - 1.0, 0.0) * 2.0 * fp["sq_dev_tau"] / trials


def expected_rel_se(fp: dict, trials: int, window: float) -> float:
    """Relative SE of N Var(Q) measured as the time average of N (Q - mean)^2 over ``trials``
    independent stationary trials of ``window`` time units, if the diffusion is right."""
    return math.sqrt(_se2_times_window(fp, trials) / window)


def window_for_rel_se(fp: dict, trials: int, rel_se: float) -> float:
    """The window (time units) at which :func:`expected_rel_se` is ``rel_se``."""
    return _se2_times_window(fp, trials) / rel_se ** 2


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
           "corr_time": sp.corr_time, "fp_change": fp["fp_change"],
           "finite_n_var_rel": fp["finite_n"]["var_rel"], "finite_n_shift_sd": fp["finite_n"]["shift_sd"],
           "kurtosis": fp["kurtosis"], "sq_dev_tau": fp["sq_dev_tau"], "relax_time": fp["relax_time"],
           "rule": rule.__dict__.copy()}
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
    elif abs(fp["finite_n"]["var_rel"]) > rule.max_finite_n_rel:
        outcome = "unresolved"
        reasons.append(f"the 1/N term of the step variance is {100 * fp['finite_n']['var_rel']:+.0f}% of it at Q* "
                       f"(> {100 * rule.max_finite_n_rel:g}%): the expansion in 1/N fails")
    else:
        outcome = "interior"
    out["outcome"] = outcome
    out["valid"] = outcome == "interior"
    out["ou_valid"] = out["valid"] and abs(rel) <= rule.max_ou_rel_diff
    out["reason"] = "; ".join(reasons) if reasons else ("valid" + ("" if out["ou_valid"] else
                                                                   f" (diffusion value; linear noise off by "
                                                                   f"{100 * rel:+.1f}%)"))
    return out
