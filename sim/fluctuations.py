"""Fixed points, their stability and the finite-N fluctuation theory of the one-layer model
(d = 1, normalised), with a quadrature that resolves the clamp boundary.

Per-step increment (derivation in paper/sections/03c_mf_clamp.tex).  One SGD step with a
mini-batch of B samples changes the overlap by ``Delta Q = X / N + O(N^-2)`` with

    X = (1/B) sum_b Y_b,    Y = tau (D - Q A) - tau^2 / (2 B) * Q * Bsq,

where ``D, A, Bsq`` are the per-sample scalars of the notes (Bsq is the notes' calligraphic B,
|gradient|^2 / N) and every one of them is multiplied by the clamp indicator
``k = 1[y1 y2 < 1 - m]`` in the clamped variant.  ALL three are O(1) random variables, so the
diffusion is ``Var X / N = Var Y / (B N)`` per unit time t = steps / N (the squared-gradient
term's fluctuation included).

The 1/N terms of the step (``drift_c1``, ``varY_c1`` of :func:`increment_moments`).  At finite
N the stationary density ``exp(2 B N int f / Var Y) / Var Y`` (:mod:`sim.diffusion`) keeps an
O(1) term in its exponent (the 1 / Var Y), and 1/N corrections to the drift and to Var Y enter
it at the same O(1): they must be kept with it.  They are not small in practice (relu at
sigma_n = 0.7: N E[N dQ] - N f = 8.6 at Q* = 0.30, a shift of Q* by +0.004 at N = 2000, and
B Var[N dQ] - Var Y = -170 / N, -3% at N = 1000).  Exactly, with the batch means
``Dbar, Abar, Vbar`` (V = Bsq per sample; the orthogonal part of |mean_b g_b x_b|^2 is
``tau^2 Vbar chi^2_{N-2} / B`` and P = (A - Q D) / sqrt(1 - Q^2) the part along w's background)
and ``E1 = 2 tau Abar + tau^2 Vbar / B``::

    N dQ = Y0 + T / sqrt(N) + Z1 / N + O(N^-3/2),       Y0 = tau Dbar - Q E1 / 2,
    T  = -Q tau^2 Vbar sqrt(2) zeta / (2 B),             zeta = (chi^2 - (N - 2)) / sqrt(2 (N - 2)),
    Z1 = -tau Dbar E1 / 2 + 3 Q E1^2 / 8 - Q tau^2 (Dbar^2 + Pbar^2 - 2 Vbar / B) / 2,

(the normalisation ``(1 + eps)^-1/2`` to second order), so ``drift_c1 = E Z1`` and
``varY_c1 = B (2 Cov(Y0, Z1) + E T^2)``; the remainder is O(N^-2) (checked against a numpy
Monte Carlo of the exact step in the tests).  The order-1/N^2 remainder is what is left out.

The drift is ``f(Q) = E Y`` (the ODE right-hand side of :mod:`sim.ode`), its slope
``lambda = f'(Q*)`` at a stable fixed point, and the linear-noise (Ornstein-Uhlenbeck)
approximation gives

    N Var(Q) = Var(Y) / (2 B |lambda|),     correlation time 1 / |lambda|.

The quadrature.  The Gaussian part is integrated in the pre-activations ``h = (h1, h2)``
themselves: given c they are Gaussian with mean ``Q c`` and covariance ``[[v, k], [k, v]]``,
``v = 1 - Q^2 + sn^2``, ``k = 1 - Q^2 + rho sn^2``, and neither the clamp region
``{sigma(h1) sigma(h2) >= 1 - m}`` nor the activation's kinks (relu: h1 = 0, h2 = 0) depend on
Q.  Gauss-Legendre pieces split exactly at the clamp boundary AND at every kink make each
piece's integrand analytic (spectral accuracy); the order per piece is chosen by doubling until
the moments stop changing (:func:`choose_order`, reported with every prediction).  Since the
nodes do not move with Q the derivative passes under the integral (Leibniz without a boundary
term; in variables that move with Q, such as the ODE code's (c, e, eps), it is exactly the
boundary term that a finite difference on fixed nodes misses).  It is evaluated by a 5-point
stencil in Q at FIXED nodes (truncation O(delta^4) ~ 1e-12).  The feature-noise projections nu
enter D linearly and are Gaussian given h:
``E[nu | h] = Q S_eps S_h^-1 (h - Q c)``, ``Cov[nu | h] = S_eps - Q^2 S_eps S_h^-1 S_eps``.

The linear-noise value is the small-noise limit of the stationary density of the full
one-dimensional diffusion (:mod:`sim.diffusion`), which is what a prediction at finite N uses.

Supported: d = 1, normalised, activations tanh / identity / relu (whose inverse on the
positive half-line is known), sn = 0 (any rho), sn > 0 with -1 < rho <= 1.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from sim.model import MFConfig
from sim.ode import jacobian_fd, rhs_numpy

__all__ = ["Nodes", "build_nodes", "increment_moments", "drift", "drift_slope", "QUAD_TOL", "QuadCheck",
           "choose_order", "StationaryPoint", "stable_root", "stationary_point", "ode_stationary_point", "fluctuation_variance",
           "find_fixed_points", "NoInteriorFixedPoint"]

_L = 9.0       # Gaussian window half-width in standard deviations (mass outside ~ 2e-19)
_N_1D = 48     # Gauss-Legendre nodes per piece (default order), one Gaussian dimension
_N_2D = 24     # ... per piece and dimension, two Gaussian dimensions
_GRADE, _N_GRADE = 2.0, 16   # graded mesh: 2 * 2^-k, k < 16, from each point where the clamp boundary diverges
_SPLIT = 8    # the +-9 SD window is also cut into this many equal pieces (Gaussian resolved at low order)
#: points where an activation (or its derivative) is not analytic: every piece is cut there too
_KINKS = {"relu": (0.0,)}


class NoInteriorFixedPoint(ValueError):
    """The flow from q0 has no stable fixed point inside (0, 1): ``outcome`` is
    ``"fully_clamped"`` (Q -> 1, every sample clamped, updates stop) or ``"collapse"`` (Q -> 0)."""

    def __init__(self, outcome: str, message: str):
        super().__init__(message)
        self.outcome = outcome


def _inv_pos(act: str, y: float) -> float:
    """sigma^-1(y) for y > 0, +inf where sigma never reaches y."""
    if act == "tanh":
        return math.atanh(y) if y < 1.0 else math.inf
    if act in ("identity", "relu"):
        return y
    raise ValueError(f"the boundary-resolving quadrature supports tanh, identity and relu, not {act!r}")


def _inv_pos_vec(act: str, y: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        if act == "tanh":
            return np.where(y < 1.0, np.arctanh(np.minimum(y, 1.0)), np.inf)
        return y.astype(float)


def _solve_h(act: str, y: np.ndarray) -> np.ndarray:
    """h with sigma(h) = y (nan where none): odd activations mirror, relu has no negative values."""
    out = np.full(y.shape, np.nan)
    pos = y > 0
    out[pos] = _inv_pos_vec(act, y[pos])
    if act in ("tanh", "identity"):
        neg = y < 0
        out[neg] = -_inv_pos_vec(act, -y[neg])
    out[~np.isfinite(out)] = np.nan
    return out


@functools.lru_cache(maxsize=8)
def _gl(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def _pieces(a: np.ndarray, b: np.ndarray, n: int):
    """Gauss-Legendre nodes on [a_i, b_i] (vectorised over i; empty pieces get zero weight)."""
    x, w = _gl(n)
    a = np.asarray(a, float)[..., None]
    b = np.maximum(np.asarray(b, float)[..., None], a)
    return 0.5 * (a + b) + 0.5 * (b - a) * x, 0.5 * (b - a) * w


@dataclass(frozen=True)
class Nodes:
    """Lebesgue-measure nodes in h-space for every hidden-variable value: c (M,), c weights
    folded into ``w`` (M,), h1, h2 (M,), keep (M,) = 1[y1 y2 < 1 - m]; ``dim`` 1 or 2."""
    c: np.ndarray
    w: np.ndarray
    h1: np.ndarray
    h2: np.ndarray
    keep: np.ndarray
    dim: int


def _sig(act: str) -> tuple[Callable, Callable]:
    if act == "tanh":
        return np.tanh, lambda h: 1.0 - np.tanh(h) ** 2
    if act == "identity":
        return (lambda h: h), (lambda h: np.ones_like(h))
    if act == "relu":
        return (lambda h: np.maximum(h, 0.0)), (lambda h: (h > 0).astype(float))
    raise ValueError(f"the boundary-resolving quadrature supports tanh, identity and relu, not {act!r}")


def _check(cfg: MFConfig) -> str:
    if cfg.d != 1 or not cfg.normalize:
        raise ValueError("the fluctuation theory is implemented for d = 1 with normalisation")
    if cfg.reg == "l1":
        raise ValueError("the mean-field theory does not close with the L1 regulariser")
    act = cfg.act.name
    _sig(act)
    if cfg.sn > 0 and cfg.rho == -1.0:
        raise ValueError("rho = -1 with sn > 0 (degenerate h-law) is not supported; use rho > -1")
    if not 0.0 <= cfg.margin < 1.0:
        raise ValueError(f"margin={cfg.margin} must lie in [0, 1) for the clamp region to be non-trivial")
    return act


def _one_d(cfg: MFConfig) -> bool:
    return cfg.sn == 0.0 or cfg.rho == 1.0


def build_nodes(cfg: MFConfig, Q: float, *, n: int = 0, n_gh_c: int = 40) -> Nodes:
    """Nodes for the Gaussian law of h given c at overlap ``Q``, split at the clamp boundary.
    The same nodes serve nearby Q (the window of +-9 SD has slack), which is what makes the
    derivative in :func:`drift_slope` exact up to the stencil's O(delta^4)."""
    act = _check(cfg)
    sig, _ = _sig(act)
    thr = 1.0 - cfg.margin
    cx, cw = cfg.law.nodes_1d(n_gh_c)
    cx = cx * math.sqrt(cfg.m2[0])
    s2 = max(1.0 - Q * Q, 0.0)
    v = s2 + cfg.sn ** 2
    if v <= 0:
        raise ValueError("Q = 1 with sn = 0: the h-law is degenerate")
    sd = math.sqrt(v)
    Cs, Ws, H1, H2, K = [], [], [], [], []
    if _one_d(cfg):
        n = n or _N_1D
        # clamp region sigma(h)^2 >= thr: breakpoints where |sigma(h)| = sqrt(thr)
        r = _inv_pos(act, math.sqrt(thr))
        bps = sorted(([-r, r] if act in ("tanh", "identity") else [r]) + list(_KINKS.get(act, ())))
        for c, wc in zip(cx, cw):
            lo, hi = Q * c - _L * sd, Q * c + _L * sd
            edges = sorted(set(np.linspace(lo, hi, _SPLIT + 1)) | {b for b in bps if lo < b < hi})
            a_, b_ = np.array(edges[:-1]), np.array(edges[1:])
            h, w = _pieces(a_, b_, n)
            h, w = h.ravel(), w.ravel()
            Cs.append(np.full(h.size, c)); Ws.append(wc * w); H1.append(h); H2.append(h)
            mid = sig(0.5 * (a_ + b_))
            K.append(np.repeat((mid * mid < thr).astype(float), n))
        dim = 1
    else:
        n = n or _N_2D
        kk = s2 + cfg.rho * cfg.sn ** 2
        v2 = v - kk * kk / v
        sd2 = math.sqrt(v2)
        r = _inv_pos(act, thr)  # |sigma(h1)| = thr: beyond it the inner clamp boundary exists
        kinks = tuple(_KINKS.get(act, ()))
        # where the inner boundary runs off to infinity (sigma(h1) -> +-thr for tanh, h1 -> 0 for
        # relu and identity) the h1-integrand is smooth but not analytic: a mesh graded
        # geometrically towards those points keeps the convergence spectral
        grade = _GRADE * np.exp2(-np.arange(_N_GRADE))
        if act == "tanh":
            graded = [*(r + grade), *(-r - grade)] if math.isfinite(r) else []
        else:
            graded = [*grade, *(-grade)] if act == "identity" else list(grade)
        bps = sorted(([-r, r] if act in ("tanh", "identity") else [r]) + list(kinks) + graded)
        for c, wc in zip(cx, cw):
            lo, hi = Q * c - _L * sd, Q * c + _L * sd
            edges = sorted(set(np.linspace(lo, hi, _SPLIT + 1)) | {b for b in bps if lo < b < hi})
            h1, w1 = _pieces(np.array(edges[:-1]), np.array(edges[1:]), n)
            h1, w1 = h1.ravel(), w1.ravel()
            mu2 = Q * c + kk / v * (h1 - Q * c)
            lo2, hi2 = mu2 - _L * sd2, mu2 + _L * sd2
            s1 = sig(h1)
            with np.errstate(divide="ignore", invalid="ignore"):
                b = _solve_h(act, np.where(s1 != 0, thr / np.where(s1 != 0, s1, 1.0), np.inf))
            b = np.where(np.isnan(b), hi2, np.clip(b, lo2, hi2))
            # inner edges: the clamp boundary and the activation's kinks in h2, sorted per row
            even = [lo2 + (hi2 - lo2) * (j / _SPLIT) for j in range(1, _SPLIT)]
            cuts = np.sort(np.stack([b, *even] + [np.clip(np.full_like(b, k), lo2, hi2) for k in kinks]), axis=0)
            edges2 = [lo2, *cuts, hi2]
            for a_, e_ in zip(edges2[:-1], edges2[1:]):
                h2, w2 = _pieces(a_, e_, n)
                mid = sig(0.5 * (a_ + np.maximum(e_, a_)))
                keep = (s1 * mid < thr).astype(float)
                M = h1.size
                Cs.append(np.full(M * n, c)); Ws.append((wc * w1[:, None] * w2).ravel())
                H1.append(np.repeat(h1, n)); H2.append(h2.ravel()); K.append(np.repeat(keep, n))
        dim = 2
    w = np.concatenate(Ws)
    sel = w > 0
    return Nodes(np.concatenate(Cs)[sel], w[sel], np.concatenate(H1)[sel], np.concatenate(H2)[sel],
                 np.concatenate(K)[sel], dim)


def increment_moments(cfg: MFConfig, Q: float, nodes: Nodes | None = None, *, n: int = 0) -> dict:
    """E Y, E Y^2, Var Y, the clamp activation rate and the 1/N terms ``drift_c1``, ``varY_c1``
    of the step's mean and variance at overlap Q (see the module docstring), with ``nodes`` from
    :func:`build_nodes` (built at Q with order ``n`` if omitted)."""
    act = _check(cfg)
    nd = nodes if nodes is not None else build_nodes(cfg, Q, n=n)
    sig, dsig = _sig(act)
    tau, sn, rho, B = cfg.tau, cfg.sn, cfg.rho, cfg.batch
    s2 = 1.0 - Q * Q
    v = s2 + sn * sn
    c, h1, h2 = nd.c, nd.h1, nd.h2
    z1 = h1 - Q * c
    if nd.dim == 1:
        dens = np.exp(-0.5 * z1 * z1 / v) / math.sqrt(2 * math.pi * v)
        M1 = M2 = Q * sn * sn / v * z1                       # E[nu | h]
        cnu = sn * sn - Q * Q * sn ** 4 / v                  # Var[nu | h] (nu1 = nu2)
        C11 = C22 = C12 = cnu
    else:
        kk = s2 + rho * sn * sn
        det = v * v - kk * kk
        z2 = h2 - Q * c
        dens = np.exp(-0.5 * (v * z1 * z1 - 2 * kk * z1 * z2 + v * z2 * z2) / det) / (2 * math.pi * math.sqrt(det))
        Se = sn * sn * np.array([[1.0, rho], [rho, 1.0]])
        Shi = np.array([[v, -kk], [-kk, v]]) / det
        G = Q * Se @ Shi                                     # E[nu | h] = G (h - Q c)
        M1 = G[0, 0] * z1 + G[0, 1] * z2
        M2 = G[1, 0] * z1 + G[1, 1] * z2
        Cn = Se - Q * Q * Se @ Shi @ Se
        C11, C22, C12 = Cn[0, 0], Cn[1, 1], Cn[0, 1]
    S1, S2, D1, D2 = sig(h1), sig(h2), dsig(h1), dsig(h2)
    kp = nd.keep if cfg.mode == "clamp" else 1.0
    a1, a2 = kp * D1 * S2, kp * S1 * D2
    Bsq = (1 + sn * sn) * (a1 * a1 + a2 * a2) + 2 * (1 + rho * sn * sn) * a1 * a2
    mY = tau * (a1 * (c + M1) + a2 * (c + M2) - Q * (a1 * h1 + a2 * h2)) - tau * tau / (2 * B) * Q * Bsq
    EY2 = mY * mY + tau * tau * (a1 * a1 * C11 + a2 * a2 * C22 + 2 * a1 * a2 * C12)
    W = nd.w * dens
    m1, m2 = float(np.sum(W * mY)), float(np.sum(W * EY2))
    out = {"drift": m1, "EY2": m2, "varY": m2 - m1 * m1, "car": float(np.sum(W * (1.0 - nd.keep))),
           "mass": float(np.sum(W))}
    # the finite-N step: the feature part D = a1 (c + nu1) + a2 (c + nu2) is Gaussian given h
    Dm = a1 * (c + M1) + a2 * (c + M2)
    Dv = a1 * a1 * C11 + a2 * a2 * C22 + 2 * a1 * a2 * C12
    out.update(_finite_n_terms(W, Dm, Dv, a1 * h1 + a2 * h2, Bsq, Q, tau, B, m1))
    return out


def _finite_n_terms(W: np.ndarray, Dm: np.ndarray, Dv: np.ndarray, A: np.ndarray, V: np.ndarray, Q: float,
                    tau: float, B: int, f: float) -> dict:
    """The 1/N terms of the step's mean and variance (module docstring): ``drift_c1`` with
    N E[N dQ] = f + drift_c1 / N and ``varY_c1`` with B Var[N dQ] = Var Y + varY_c1 / N.

    Per sample u = (D, A, V): D | h ~ N(Dm, Dv), A and V functions of h.  The step is a
    polynomial in the batch means u-bar: Y0 linear, Z1 quadratic, so E Z1 and Cov(Y0, Z1) need
    the per-sample moments of u up to order 3 and the iid-mean identities for E[ubar_i ubar_j]
    and E[ubar_i ubar_j ubar_k]."""
    s2 = 1.0 - Q * Q
    if s2 <= 0.0:
        return {"drift_c1": 0.0, "varY_c1": 0.0}
    Dm2 = Dm * Dm + Dv
    Dm3 = Dm * (Dm * Dm + 3 * Dv)
    pw = (np.ones_like(Dm), Dm, Dm2, Dm3)
    hv = (A, V)

    cache: dict[tuple[int, ...], float] = {}

    def mom(*idx):  # per-sample E[prod u_i], i in {0: D, 1: A, 2: V}; 19 distinct, each summed once
        key = tuple(sorted(idx))
        if key not in cache:
            g = pw[key.count(0)]
            for i in key:
                if i:
                    g = g * hv[i - 1]
            cache[key] = float(np.sum(W * g))
        return cache[key]
    b = float(B)
    mu = [mom(i) for i in range(3)]

    def m2(i, j):
        return mom(i, j) / b + (1 - 1 / b) * mu[i] * mu[j]

    def m3(i, j, k):
        return (mom(i, j, k) / b ** 2 + (1 / b) * (1 - 1 / b) * (mom(i, j) * mu[k] + mom(i, k) * mu[j]
                                                             + mom(j, k) * mu[i])
                + (1 - 1 / b) * (1 - 2 / b) * mu[i] * mu[j] * mu[k])
    # Y0 = l . ubar,  Z1 = ubar^T M ubar + L . ubar  (module docstring)
    l = np.array([tau, -tau * Q, -tau * tau * Q / (2 * b)])
    e1 = np.array([0.0, 2 * tau, tau * tau / b])               # E1 = e1 . ubar
    M = -0.5 * tau * np.outer([1.0, 0, 0], e1)                  # -tau D E1 / 2
    M += 3 * Q / 8 * np.outer(e1, e1)                           # 3 Q E1^2 / 8
    pq = np.array([-Q, 1.0, 0.0]) / math.sqrt(s2)               # P = (A - Q D) / s
    M -= 0.5 * Q * tau * tau * (np.outer([1.0, 0, 0], [1.0, 0, 0]) + np.outer(pq, pq))
    L = np.array([0.0, 0.0, Q * tau * tau / b])                 # - Q tau^2 (-2 V / B) / 2
    M = 0.5 * (M + M.T)
    ez1 = sum(M[i, j] * m2(i, j) for i in range(3) for j in range(3)) + float(L @ mu)
    ey0z1 = (sum(l[k] * M[i, j] * m3(i, j, k) for i in range(3) for j in range(3) for k in range(3))
             + sum(l[k] * L[i] * m2(i, k) for i in range(3) for k in range(3)))
    cov = ey0z1 - f * ez1
    # chi^2_{N-2} fluctuation of the orthogonal part of |step|^2
    chi = Q * Q * tau ** 4 * m2(2, 2) / (2 * b * b)
    return {"drift_c1": ez1, "varY_c1": b * (2 * cov + chi)}


def drift(cfg: MFConfig, Q: float, *, n: int = 0) -> float:
    """dQ/dt = E Y at overlap Q (the ODE right-hand side, boundary-resolving quadrature)."""
    return increment_moments(cfg, Q, n=n)["drift"]


def drift_slope(cfg: MFConfig, Q: float, delta: float = 1e-3, *, n: int = 0) -> float:
    """lambda = f'(Q): 5-point stencil in Q on FIXED h-space nodes, i.e. the derivative of the
    exact drift including the clamp-boundary term (see the module docstring)."""
    # the h-law varies with Q on the scale v = 1 - Q^2 + sn^2: keep delta well inside it
    delta = min(delta, 0.01 * (1.0 - Q * Q + cfg.sn ** 2))
    nd = build_nodes(cfg, Q, n=n)
    f = lambda q: increment_moments(cfg, q, nd)["drift"]  # noqa: E731
    return (f(Q - 2 * delta) - 8 * f(Q - delta) + 8 * f(Q + delta) - f(Q + 2 * delta)) / (12 * delta)


#: convergence criterion of the quadrature order: |change of E Y| and |relative change of Var Y|
#: between an order and its double
QUAD_TOL = (1e-8, 1e-7)


@dataclass(frozen=True)
class QuadCheck:
    """The Gauss-Legendre order per piece chosen by doubling until E Y and Var Y change by less
    than :data:`QUAD_TOL` (``converged``), with the last changes seen and the orders tried."""
    order: int
    drift_change: float
    var_change: float
    orders: tuple[int, ...]
    converged: bool

    def as_dict(self) -> dict:
        return {"order": self.order, "drift_change": self.drift_change, "var_change": self.var_change,
                "orders_tried": list(self.orders), "converged": self.converged}


def choose_order(cfg: MFConfig, Q: float, *, start: int = 0, max_order: int = 0) -> QuadCheck:
    """Smallest order (start, 2 start, ...) whose moments at ``Q`` agree with the next order's to
    :data:`QUAD_TOL`; the changes reported are that difference, the error estimate of the order
    returned (the convergence is spectral: the finer order's error is far smaller)."""
    one = _one_d(cfg)
    n = start or (8 if one else 6)
    top = max_order or (256 if one else 96)
    prev = increment_moments(cfg, Q, n=n)
    tried = [n]
    dd = dv = math.inf
    while 2 * n <= top:
        n *= 2
        cur = increment_moments(cfg, Q, n=n)
        tried.append(n)
        dd = abs(cur["drift"] - prev["drift"])
        dv = abs(cur["varY"] - prev["varY"]) / max(abs(cur["varY"]), 1e-300)
        if dd < QUAD_TOL[0] and dv < QUAD_TOL[1]:
            return QuadCheck(n // 2, dd, dv, tuple(tried), True)
        prev = cur
    return QuadCheck(n, dd, dv, tuple(tried), False)


@dataclass(frozen=True)
class StationaryPoint:
    """A stable interior fixed point Q* of the d = 1 flow and its linear-noise prediction;
    ``basin`` is the interval (lo, hi) of the flow's attraction to Q* (an unstable fixed point
    or the end of [0, 1]) and ``quad`` the quadrature order check."""
    Q: float
    lam: float            # f'(Q*) < 0
    var_step: float       # Var Y at Q*
    car: float            # clamp activation rate at Q*
    batch: int
    basin: tuple[float, float] = (0.0, 1.0)
    quad: QuadCheck | None = None

    @property
    def n_var(self) -> float:
        """N Var(Q) = Var Y / (2 B |lambda|)."""
        return self.var_step / (2 * self.batch * abs(self.lam))

    @property
    def corr_time(self) -> float:
        return 1.0 / abs(self.lam)

    def as_dict(self) -> dict:
        return {"outcome": "interior", "Q_star": self.Q, "lambda": self.lam, "var_step": self.var_step,
                "diffusion_N": self.var_step / self.batch, "N_var": self.n_var,
                "corr_time": self.corr_time, "car_star": self.car, "basin": list(self.basin),
                "quad": None if self.quad is None else self.quad.as_dict()}


def stable_root(g: Callable[[float], float], q0: float, grid: np.ndarray, *, xtol: float = 1e-14,
                g_scan: Callable[[float], float] | None = None, boundary_outcome: str = "boundary",
                boundary_reason: str = "") -> tuple[float, tuple[float, float]]:
    """THE stationary-point finder of the d = 1 flow ``dQ/dt = g(Q)`` on Q in (0, 1): the stable
    fixed point reached from ``q0`` and its basin.  The sign of ``g`` is scanned on ``grid``
    (increasing, inside (0, 1)) and each sign change refined by brentq: a scan, not a time
    integration, so critical slowing-down near a bifurcation cannot fake a fixed point (or its
    absence).  ``g_scan`` (a cheaper evaluation of the same drift) may do the scan: a bracket
    whose ends ``g`` does not confirm makes the scan rerun with ``g``.  Raises
    :class:`NoInteriorFixedPoint` with outcome ``boundary_outcome`` (the drift stays positive up
    to the top of the grid) or ``collapse`` (the flow from q0 goes to 0)."""
    from scipy.optimize import brentq

    vals = np.array([(g_scan or g)(q) for q in grid])
    if g_scan is not None:
        ends = {j for i in range(grid.size - 1) if (vals[i] > 0) != (vals[i + 1] > 0) for j in (i, i + 1)}
        if any((g(grid[j]) > 0) != (vals[j] > 0) for j in sorted(ends)):
            vals = np.array([g(q) for q in grid])
        else:
            for j in ends:
                vals[j] = g(grid[j])
    # strict signs: a flow that stops (drift exactly 0, every sample clamped) has no fixed point
    stable = [i for i in range(grid.size - 1) if vals[i] > 0 > vals[i + 1]]
    unstable = [i for i in range(grid.size - 1) if vals[i] < 0 < vals[i + 1]]

    def refine(i):
        return brentq(g, grid[i], grid[i + 1], xtol=xtol)
    roots = [refine(i) for i in stable]
    if g(q0) >= 0:
        cand = [r for r in roots if r >= q0]
        if not cand:
            raise NoInteriorFixedPoint(boundary_outcome, f"no stable interior fixed point above q0={q0}: the drift "
                                                         f"stays positive up to Q -> 1{boundary_reason}")
        q = cand[0]
    else:
        cand = [r for r in roots if r <= q0]
        if not cand:
            raise NoInteriorFixedPoint("collapse", f"no stable interior fixed point below q0={q0}: the flow "
                                                   "runs to Q = 0 (no alignment with the feature)")
        q = cand[-1]
    below = [refine(i) for i in unstable if grid[i + 1] <= q]
    above = [refine(i) for i in unstable if grid[i] >= q]
    return float(q), (max(below) if below else 0.0, min(above) if above else 1.0)


def _scan_grid(n_scan: int, q_max: float) -> np.ndarray:
    # geometric refinement towards Q = 1, where the fully clamped flow creeps
    return np.unique(np.concatenate([np.linspace(1e-3, 0.99, n_scan), 1.0 - np.geomspace(1e-2, 1.0 - q_max, 16)]))


def stationary_point(cfg: MFConfig, q0: float = 0.5, *, n_scan: int = 50,
                     q_max: float = 1.0 - 1e-6) -> StationaryPoint:
    """The stable fixed point of the d = 1 flow reached from ``q0`` in (0, 1) by
    :func:`stable_root` on the boundary-resolving drift, at the quadrature order chosen by
    :func:`choose_order` at q0 and re-checked at Q*.  Raises :class:`NoInteriorFixedPoint` with
    outcome ``fully_clamped`` (drift > 0 up to Q -> 1), ``collapse`` (the flow from q0 goes to 0)
    or ``marginal`` (zero slope)."""
    _check(cfg)
    qc = choose_order(cfg, q0)
    clamp = cfg.mode == "clamp"
    n = qc.order

    n_scan_order = qc.orders[0]

    def root(order):
        return stable_root(lambda x: drift(cfg, x, n=order), q0, _scan_grid(n_scan, q_max),
                           g_scan=lambda x: drift(cfg, x, n=min(order, n_scan_order)),
                           boundary_outcome="fully_clamped" if clamp else "boundary",
                           boundary_reason=" (every sample clamped, updates stop)" if clamp else "")
    for _ in range(3):
        q, basin = root(n)
        qs = choose_order(cfg, q, start=qc.orders[0])
        if qs.order <= n:
            qc = QuadCheck(n, max(qc.drift_change, qs.drift_change), max(qc.var_change, qs.var_change),
                           tuple(sorted(set(qc.orders) | set(qs.orders))), qc.converged and qs.converged)
            break
        n, qc = qs.order, qs
    else:
        q, basin = root(n)
    lam = drift_slope(cfg, q, n=n)
    if not lam < 0:
        raise NoInteriorFixedPoint("marginal", f"fixed point Q*={q:.6f} has slope {lam:.3g} >= 0")
    mom = increment_moments(cfg, q, n=n)
    return StationaryPoint(Q=float(q), lam=float(lam), var_step=mom["varY"], car=mom["car"], batch=cfg.batch,
                           basin=basin, quad=qc)


def fluctuation_variance(cfg: MFConfig, Q: float | None = None, N: int | None = None, *,
                         q0: float = 0.5) -> dict:
    """Linear-noise prediction at the stable fixed point (``Q`` given, or found from ``q0``):
    lambda, Var Y, N Var(Q), correlation time, CAR, and Var(Q) itself if ``N`` is given.
    A configuration without a stable interior fixed point returns ``{"outcome": ...}`` with
    the reason and no numbers (never None/inf/NaN)."""
    try:
        if Q is None:
            sp = stationary_point(cfg, q0)
        else:
            qc = choose_order(cfg, Q)
            lam = drift_slope(cfg, Q, n=qc.order)
            if not lam < 0:
                raise NoInteriorFixedPoint("marginal", f"Q={Q} has slope {lam:.3g} >= 0")
            mom = increment_moments(cfg, Q, n=qc.order)
            sp = StationaryPoint(Q=float(Q), lam=float(lam), var_step=mom["varY"], car=mom["car"],
                                 batch=cfg.batch, quad=qc)
    except NoInteriorFixedPoint as exc:
        return {"outcome": exc.outcome, "reason": str(exc)}
    out = sp.as_dict()
    if N is not None:
        out["var"] = sp.n_var / N
    return out


def ode_stationary_point(cfg: MFConfig, q0: float = 0.9, n_scan: int = 120) -> float | None:
    """The stable fixed point of the d = 1 mean-field ODE reached from ``q0 > 0`` (None where the
    flow goes to Q = 0 or has no stable interior point): :func:`stable_root` on the ODE's own
    right-hand side at its fixed quadrature (:func:`sim.ode.rhs_numpy`).  This is the ODE the
    notes' noise table was computed from, so the noise study compares with it here;
    :func:`stationary_point` is the same finder on the boundary-resolving drift with a checked
    quadrature order (what the fluctuation theory needs under the clamp)."""
    f = rhs_numpy(cfg)
    try:
        q, _ = stable_root(lambda q: float(f(np.array([q]))[0]), q0, np.linspace(1e-3, 0.999, n_scan), xtol=1e-13)
    except NoInteriorFixedPoint:
        return None
    return q


def find_fixed_points(cfg: MFConfig, *, n_starts: int = 9, tol: float = 1e-10, **quad) -> list[dict]:
    """Fixed points of the normalised ODE from a grid of starts (scipy.optimize.root, hybr),
    deduplicated, with Jacobian eigenvalues and stability label.  Without the clamp the
    Jacobian is a central difference of the (smooth) ODE right-hand side; with the clamp
    (d = 1 only) it is :func:`drift_slope`, which includes the clamp-boundary term that a
    finite difference on the fixed-node ODE quadrature misses."""
    from scipy.optimize import root

    if not cfg.normalize:
        raise ValueError("fixed points are computed for the normalised ODE only")
    if cfg.mode == "clamp" and cfg.d != 1:
        raise ValueError("under the clamp, fixed-point eigenvalues are computed for d = 1 only "
                         "(boundary-resolving quadrature, sim.fluctuations)")
    f = rhs_numpy(cfg, **quad)
    d = cfg.d
    axes = [np.linspace(-0.97, 0.97, n_starts)] * d
    starts = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
    starts = starts[np.sum(starts ** 2, axis=1) < 0.97 ** 2]
    axis_starts = [sgn * r * np.eye(d)[k] for k in range(d) for sgn in (-1, 1) for r in (0.5, 0.9, 0.98, 0.995)]
    starts = np.vstack([starts, np.array(axis_starts)])
    found: list[np.ndarray] = []

    def safe(y):
        if np.sum(y ** 2) > 1.0:
            return np.full(d, 1e3) * np.sign(y + 1e-300)
        return f(y)
    for y0 in starts:
        sol = root(safe, y0, method="hybr", tol=1e-13)
        y = sol.x
        if np.sum(y ** 2) > 1.0 or not np.all(np.isfinite(y)):
            continue
        if np.max(np.abs(f(y))) > tol:
            continue
        if any(np.max(np.abs(y - z)) < 1e-4 for z in found):
            continue
        found.append(y)
    out = []
    for y in sorted(found, key=lambda z: tuple(np.round(z, 8))):
        if cfg.mode == "clamp":
            ev = np.array([complex(drift_slope(cfg, float(y[0])))])
        else:
            ev = np.linalg.eigvals(jacobian_fd(f, y, 1e-6))
        re = ev.real
        kind = "stable" if np.all(re < 0) else ("unstable" if np.all(re > 0) else "saddle")
        out.append({"Q": y, "eigenvalues": ev, "stability": kind, "residual": float(np.max(np.abs(f(y))))})
    return out
