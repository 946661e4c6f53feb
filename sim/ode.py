"""Mean-field ODE of the one-layer contrastive model (:mod:`sim.model`): the N -> inf limit of
its online SGD (:mod:`sim.sgd`), with the learnability threshold and the Oja limit.

Mean-field ODE (notes, boxed equation), state ``Q`` (normalised) or ``(m, r)``
(no normalisation, notes "Variant without normalization")::

    dQ_k/dt = tau E[D_k - Q_k A] - tau^2/(2B) Q_k E[B]
    dm_k/dt = tau E[D_k] - tau beta m_k,     dr/dt = 2 tau E[A] + tau^2/B E[B] - 2 tau beta r

The mini-batch divides the squared-gradient (Ito) term by ``B`` because ``|mean_b g_b|^2/N``
-> ``E[B]/B`` (cross terms between independent samples vanish as N -> inf) while ``w.g/N`` is
unchanged.  Expectations: the feature projections ``nu_lk`` enter ``D_k`` linearly, and
``E[nu_lk | eps_1, eps_2] = (m_k / r) eps_l`` exactly (Gaussian conditioning), so the Gaussian
part reduces to ``(e, eps_1, eps_2)`` - one dimension when ``sn = 0``, two when ``|rho| = 1``,
three otherwise - integrated by tensor Gauss-Hermite quadrature (or Monte Carlo points); the
hidden variables ``c`` by their exact discrete law (Rademacher, sparse three-point), tensor
Gauss-Hermite (Gaussian) or Monte Carlo samples (``Law.empirical``).  Clamped variant: every
per-sample term multiplied by ``1[y1 y2 < 1 - m]``.

All quadrature data are packed into one float64 parameter vector, so the single compiled
right-hand side :func:`make_rhs` serves :func:`sim.integrate.make_rk4_batch`,
:func:`sim.integrate.rk4` and :func:`sim.integrate.solve_ivp_reference` alike.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numba import njit

from sim.model import Activation, MFConfig, check_status, get_activation, gh_nodes, trap_nodes

__all__ = ["pack_params", "make_rhs", "rhs_numpy", "expectations", "integrate_ode", "integrate_ode_batch",
           "learnability", "jacobian_fd", "oja_rhs", "oja_stationary", "oja_jacobian_sympy",
           "P_TAU", "P_SN", "P_RHO", "P_INV_B", "P_MARGIN", "P_CLAMP", "P_NORMALIZE", "P_BETA", "P_D", "P_NC",
           "P_NG", "P_TABLE"]


# --------------------------------------------------------------------------- parameter packing
#: slots of the packed parameter vector's header (:func:`pack_params`): each model parameter's
#: one name below the config
(P_TAU, P_SN, P_RHO, P_INV_B, P_MARGIN, P_CLAMP, P_NORMALIZE, P_BETA, P_D, P_NC, P_NG, P_TABLE) = range(12)
_H = 12  # header length of the packed parameter vector




def pack_params(cfg: MFConfig, *, n_gh: int = 0, n_gh_noise: int = 0, n_gh_c: int = 12, mc: int = 0,
                mc_seed: int = 0, table: int = 0) -> np.ndarray:
    """Pack ``cfg`` and its quadrature into the float64 vector read by :func:`make_rhs`.

    ``n_gh``: Gauss-Hermite order per Gaussian dimension (e, eps_1, eps_2); 0 = automatic
    0 = automatic (128 GH nodes in e, 96 with two noise dimensions: tanh needs ~128 nodes for
    1e-9 accuracy because of its complex poles; with the clamp indicator, whose discontinuity
    makes any rule first order, a trapezoid rule with 3000 (1-D) / 160 nodes); ``n_gh_noise``: order in each noise
    dimension (0 = 40 for |rho| = 1, else 20; 32 with the clamp or sn > 1);
    ``n_gh_c``: order per feature for a Gaussian hidden-variable law; ``mc > 0`` replaces the
    Gaussian-part quadrature by ``mc`` Monte Carlo points (seed ``mc_seed``).
    ``table > 0`` (noise-free, normalised, no clamp only: the fast path for phase portraits):
    the e-integrals ``E_e[F(mu + s e)]`` of ``F = s s'``, ``s s' h`` and ``(s s')^2`` are
    tabulated once (GH, ``n_gh`` nodes) on a ``table x 129`` grid of (mu, s) and the RHS
    interpolates bilinearly (error ~1e-6, checked against the direct quadrature in the tests).
    """
    if cfg.reg == "l1":
        raise ValueError("the mean-field ODE does not close with the L1 regulariser (notes A.4); "
                         "use the SGD simulator")
    d = cfg.d
    # hidden variables: tensor product over features
    x1, w1 = cfg.law.nodes_1d(n_gh_c)
    grids = np.meshgrid(*([x1] * d), indexing="ij")
    wgrid = np.meshgrid(*([w1] * d), indexing="ij")
    c_nodes = np.stack([g.ravel() for g in grids], axis=1) * np.sqrt(np.asarray(cfg.m2))[None, :]
    c_w = np.prod(np.stack([g.ravel() for g in wgrid], axis=1), axis=1)
    # Gaussian part (e, g1, g2) with eps1 = sn g1, eps2 = sn (rho g1 + sqrt(1-rho^2) g2)
    if mc > 0:
        rng = np.random.default_rng(mc_seed)
        g = rng.standard_normal((mc, 3))
        if cfg.sn == 0:
            g[:, 1:] = 0.0
        gw = np.full(mc, 1.0 / mc)
    else:
        ndim = 1 if cfg.sn == 0 else (2 if abs(cfg.rho) == 1.0 else 3)
        clamp = cfg.mode == "clamp"
        if clamp:  # trapezoid on [-9, 9]: no overflow at large orders, O(h) at the jump
            xe, we = trap_nodes(n_gh if n_gh > 0 else (3000 if ndim == 1 else 160))
        else:
            xe, we = gh_nodes(n_gh if n_gh > 0 else (128 if ndim <= 2 else 96))
        xn, wn = gh_nodes(n_gh_noise if n_gh_noise > 0 else
                          (40 if ndim == 2 else (32 if clamp or cfg.sn > 1.0 else 20)))
        mesh = np.meshgrid(xe, *([xn] * (ndim - 1)), indexing="ij")
        wmesh = np.meshgrid(we, *([wn] * (ndim - 1)), indexing="ij")
        g = np.zeros((mesh[0].size, 3))
        for j in range(ndim):
            g[:, j] = mesh[j].ravel()
        gw = np.prod(np.stack([m.ravel() for m in wmesh], axis=1), axis=1)
    head = np.empty(_H)
    head[P_TAU], head[P_SN], head[P_RHO], head[P_INV_B] = cfg.tau, cfg.sn, cfg.rho, 1.0 / cfg.batch
    head[P_MARGIN], head[P_CLAMP] = cfg.margin, 1.0 if cfg.mode == "clamp" else 0.0
    head[P_NORMALIZE], head[P_BETA] = 1.0 if cfg.normalize else 0.0, cfg.beta if cfg.reg == "l2" else 0.0
    head[P_D], head[P_NC], head[P_NG], head[P_TABLE] = d, c_w.size, gw.size, 1.0 if table else 0.0
    parts = [head, c_nodes.ravel(), c_w, g.ravel(), gw]
    if table:
        if cfg.sn != 0 or cfg.mode == "clamp" or not cfg.normalize or mc:
            raise ValueError("table=... needs sn = 0, no clamp, the normalised model and GH quadrature")
        if table < 16:
            raise ValueError("table must be >= 16 grid points in mu")
        mumax = float(np.max(np.sqrt(np.sum(c_nodes ** 2, axis=1)))) * 1.0001 + 1e-12
        mus = np.linspace(-mumax, mumax, int(table))
        ss = np.linspace(0.0, 1.0, 129)
        F = _expect_kernel(cfg.act, tab=True)(mus, ss, g[:, 0].copy(), gw)
        parts += [np.array([mus.size, ss.size, mumax]), F.ravel()]
    return np.concatenate(parts).astype(np.float64)


# --------------------------------------------------------------------------- expectations / RHS
_RHS_CACHE: dict[str, tuple[Callable, Callable, Callable, Callable]] = {}


def _make_kernels(act: Activation) -> tuple[Callable, Callable]:
    sig, dsig = act.sig, act.dsig

    @njit(cache=False)
    def expect(m, r, P):
        """(E[D_k] (d,), E[A], E[B], CAR, E[D_k^2-ish] unused) at state (m, r)."""
        sn = P[P_SN]
        rho = P[P_RHO]
        margin = P[P_MARGIN]
        clamp = P[P_CLAMP] > 0.5
        d = int(P[P_D])
        nc = int(P[P_NC])
        ng = int(P[P_NG])
        o_c = _H
        o_cw = o_c + nc * d
        o_g = o_cw + nc
        o_gw = o_g + ng * 3
        mm = 0.0
        for k in range(d):
            mm += m[k] * m[k]
        s = math.sqrt(max(r - mm, 0.0))
        sr = math.sqrt(max(r, 0.0))
        rc = math.sqrt(max(1.0 - rho * rho, 0.0))
        inv_r = 1.0 / r if r > 0 else 0.0
        ED = np.zeros(d)
        EA = 0.0
        EB = 0.0
        car = 0.0
        thr = 1.0 - margin
        same = sn == 0.0
        for i in range(nc):
            wc = P[o_cw + i]
            mc = 0.0
            for k in range(d):
                mc += m[k] * P[o_c + i * d + k]
            for j in range(ng):
                w = wc * P[o_gw + j]
                e = P[o_g + 3 * j]
                g1 = P[o_g + 3 * j + 1]
                g2 = P[o_g + 3 * j + 2]
                eps1 = sn * sr * g1
                eps2 = sn * sr * (rho * g1 + rc * g2)
                base = mc + s * e
                h1 = base + eps1
                h2 = base + eps2
                S1 = sig(h1)
                D1 = dsig(h1)
                if same:
                    S2 = S1
                    D2 = D1
                else:
                    S2 = sig(h2)
                    D2 = dsig(h2)
                y12 = S1 * S2
                if y12 >= thr:
                    car += w
                    if clamp:
                        continue
                a1 = D1 * S2
                a2 = S1 * D2
                for k in range(d):
                    ck = P[o_c + i * d + k]
                    ED[k] += w * (a1 * (ck + m[k] * inv_r * eps1) + a2 * (ck + m[k] * inv_r * eps2))
                EA += w * (a1 * h1 + a2 * h2)
                EB += w * ((1.0 + sn * sn) * (a1 * a1 + a2 * a2) + 2.0 * (1.0 + rho * sn * sn) * a1 * a2)
        return ED, EA, EB, car

    @njit(cache=False)
    def tabulate(mus, ss, xe, we):
        F = np.zeros((mus.size, ss.size, 3))  # interleaved: one cache line per lookup
        for i in range(mus.size):
            for j in range(ss.size):
                f1 = 0.0
                f2 = 0.0
                f3 = 0.0
                for q in range(xe.size):
                    h = mus[i] + ss[j] * xe[q]
                    a = sig(h) * dsig(h)
                    f1 += we[q] * a
                    f2 += we[q] * a * h
                    f3 += we[q] * a * a
                F[i, j, 0] = f1
                F[i, j, 1] = f2
                F[i, j, 2] = f3
        return F

    @njit(cache=False)
    def rhs_tab_into(y, P, out):
        """Noise-free normalised RHS from the (mu, s) table (see pack_params(table=...)),
        written into ``out`` without temporary arrays (the phase-portrait fast path)."""
        tau = P[P_TAU]
        invb = P[P_INV_B]
        d = int(P[P_D])
        nc = int(P[P_NC])
        ng = int(P[P_NG])
        o_c = _H
        o_cw = o_c + nc * d
        o_t = o_cw + nc + 4 * ng
        nmu = int(P[o_t])
        ns = int(P[o_t + 1])
        mumax = P[o_t + 2]
        o_f = o_t + 3
        st = 3 * ns
        mm = 0.0
        for k in range(d):
            mm += y[k] * y[k]
            out[k] = 0.0
        s = math.sqrt(max(1.0 - mm, 0.0))
        v = s * (ns - 1)
        j0 = min(int(v), ns - 2)
        fv = v - j0
        EA = 0.0
        EB = 0.0
        for i in range(nc):
            mu = 0.0
            for k in range(d):
                mu += y[k] * P[o_c + i * d + k]
            u = (mu + mumax) / (2.0 * mumax) * (nmu - 1)
            i0 = min(max(int(u), 0), nmu - 2)
            fu = u - i0
            b = o_f + (i0 * ns + j0) * 3
            w00 = (1 - fu) * (1 - fv)
            w01 = (1 - fu) * fv
            w10 = fu * (1 - fv)
            w11 = fu * fv
            f1 = w00 * P[b] + w01 * P[b + 3] + w10 * P[b + st] + w11 * P[b + st + 3]
            f2 = w00 * P[b + 1] + w01 * P[b + 4] + w10 * P[b + st + 1] + w11 * P[b + st + 4]
            f3 = w00 * P[b + 2] + w01 * P[b + 5] + w10 * P[b + st + 2] + w11 * P[b + st + 5]
            wc = P[o_cw + i]
            for k in range(d):
                out[k] += wc * 2.0 * P[o_c + i * d + k] * f1
            EA += wc * 2.0 * f2
            EB += wc * 4.0 * f3
        for k in range(d):
            out[k] = tau * (out[k] - y[k] * EA) - 0.5 * tau * tau * invb * y[k] * EB

    @njit(cache=False)
    def rhs(y, P):
        tau = P[P_TAU]
        invb = P[P_INV_B]
        d = int(P[P_D])
        out = np.empty(y.size)
        if P[P_NORMALIZE] > 0.5:  # normalised: y = Q
            qq = 0.0
            for k in range(d):
                qq += y[k] * y[k]
            if not (qq <= 1.0 + 1e-9):
                out[:] = np.nan  # left the unit ball: the integrator stops and reports
                return out
            if P[P_TABLE] > 0.5:
                rhs_tab_into(y, P, out)
                return out
            ED, EA, EB, car = expect(y, 1.0, P)
            for k in range(d):
                out[k] = tau * (ED[k] - y[k] * EA) - 0.5 * tau * tau * invb * y[k] * EB
        else:  # free norm: y = (m, r)
            r = y[d]
            mm = 0.0
            for k in range(d):
                mm += y[k] * y[k]
            if not (r > 0.0 and mm <= r * (1.0 + 1e-9)):
                out[:] = np.nan
                return out
            ED, EA, EB, car = expect(y[:d], r, P)
            beta = P[P_BETA]
            for k in range(d):
                out[k] = tau * ED[k] - tau * beta * y[k]
            out[d] = 2.0 * tau * EA + tau * tau * invb * EB - 2.0 * tau * beta * r
        return out

    @njit(cache=False)
    def rhs_into(y, P, out):
        """``rhs`` writing into ``out`` (for sim.integrate.make_rk4_batch_into)."""
        if P[P_TABLE] > 0.5 and P[P_NORMALIZE] > 0.5:
            qq = 0.0
            for k in range(y.size):
                qq += y[k] * y[k]
            if not (qq <= 1.0 + 1e-9):
                out[:] = np.nan
                return
            rhs_tab_into(y, P, out)
        else:
            out[:] = rhs(y, P)

    return expect, rhs, tabulate, rhs_into


def _ode_kernels(act: str | Activation) -> tuple[Callable, Callable, Callable, Callable]:
    """(expect, rhs, tabulate, rhs_into) compiled for ``act`` (cached)."""
    a = get_activation(act)
    if a.kernel_key not in _RHS_CACHE:
        _RHS_CACHE[a.kernel_key] = _make_kernels(a)
    return _RHS_CACHE[a.kernel_key]


def make_rhs(act: str | Activation = "tanh") -> Callable:
    """The compiled right-hand side ``rhs(y, P)`` for activation ``act`` (cached)."""
    return _ode_kernels(act)[1]


def _expect_kernel(act, tab: bool = False) -> Callable:
    return _ode_kernels(act)[2 if tab else 0]


def expectations(cfg: MFConfig, Q: np.ndarray, r: float = 1.0, **quad) -> dict:
    """E[D_k], E[A], E[B] and the clamp activation rate at overlap ``Q`` (or (m, r))."""
    P = pack_params(cfg, **quad)
    ED, EA, EB, car = _expect_kernel(cfg.act)(np.asarray(Q, float), float(r), P)
    return {"ED": ED, "EA": float(EA), "EB": float(EB), "car": float(car)}


def rhs_numpy(cfg: MFConfig, **quad) -> Callable[[np.ndarray], np.ndarray]:
    """``f(y) -> dy/dt`` for scipy (root finding, Jacobians); raises on leaving the ball."""
    P = pack_params(cfg, **quad)
    rhs = make_rhs(cfg.act)

    def f(y):
        out = rhs(np.asarray(y, dtype=np.float64), P)
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(f"state {np.asarray(y)} left the admissible set (|Q| <= 1)")
        return out
    return f


def integrate_ode_batch(cfg: MFConfig, Y0: np.ndarray, *, t_end: float, dt: float,
                        record_every: int = 1, strict: bool = True, **quad):
    """Integrate many initial conditions with :func:`sim.integrate.make_rk4_batch` (or its
    allocation-free twin for the tabulated fast path, ``table=...``).  ``params=`` passes a
    vector from :func:`pack_params` directly (reuse a tabulation across calls).

    Returns ``(t, traj (K, R, n), status (K,))``; with ``strict`` a non-zero status raises.
    """
    from sim.integrate import make_rk4_batch, make_rk4_batch_into, time_grid

    Y0 = cfg.validate_state(np.atleast_2d(np.asarray(Y0, float)))
    P = quad.pop("params", None)
    if P is None:
        P = pack_params(cfg, **quad)
    if P[P_TABLE] > 0.5:  # tabulated fast path: allocation-free integrator
        run = make_rk4_batch_into(_ode_kernels(cfg.act)[3])
    else:
        run = make_rk4_batch(make_rhs(cfg.act))
    n_steps = int(round(t_end / dt))
    n_steps -= n_steps % record_every
    traj, status = run(np.ascontiguousarray(Y0), P, float(dt), n_steps, int(record_every))
    if strict:
        check_status(status, "integrate_ode_batch")
    return time_grid(n_steps * dt, dt, record_every), traj, status


def integrate_ode(cfg: MFConfig, y0, *, t_end: float, dt: float, record_every: int = 1,
                  method: str = "rk4", **quad):
    """One trajectory: ``method="rk4"`` (sim.integrate.rk4) or a scipy method name
    (sim.integrate.solve_ivp_reference, e.g. "DOP853").  Returns ``(t, Y)``."""
    from sim.integrate import rk4, solve_ivp_reference, time_grid

    y0 = cfg.validate_state(np.asarray(y0, float))
    P = pack_params(cfg, **quad)
    rhs = make_rhs(cfg.act)
    if method == "rk4":
        return rk4(rhs, y0, P, t_end=t_end, dt=dt, record_every=record_every)
    t = time_grid(t_end, dt, record_every)

    def f(y, p):
        out = rhs(y, p)
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(f"state {y} left the unit ball during solve_ivp")
        return out
    return t, solve_ivp_reference(f, y0, P, t, method=method)


# --------------------------------------------------------------------------- theory helpers
def learnability(act: str | Activation) -> dict:
    """kappa = E[(s s')'(e)] = E[e s(e) s'(e)] (Stein) and v = E[s'(e)^2 s(e)^2], e ~ N(0,1),
    by adaptive quadrature; a feature is learnable at Q = 0 iff (m2 - 1) kappa > tau v."""
    from scipy.integrate import quad

    a = get_activation(act)
    phi = lambda e: math.exp(-0.5 * e * e) / math.sqrt(2 * math.pi)  # noqa: E731
    pts = [0.0]
    kap = quad(lambda e: e * a.sig(e) * a.dsig(e) * phi(e), -12, 12, points=pts, limit=200, epsabs=1e-13)[0]
    v = quad(lambda e: (a.sig(e) * a.dsig(e)) ** 2 * phi(e), -12, 12, points=pts, limit=200, epsabs=1e-13)[0]
    return {"kappa": kap, "v": v, "tau_crit_per_unit": kap / v}


def oja_rhs(Q, tau, m2):
    """Oja limit (identity, sn = 0, B = 1, d = 1): 2 tau Q w (1 - Q^2) - 2 tau^2 Q (1 + w Q^2)."""
    w = m2 - 1.0
    return 2 * tau * Q * w * (1 - Q ** 2) - 2 * tau ** 2 * Q * (1 + w * Q ** 2)


def oja_stationary(tau, m2) -> float:
    """Q_inf^2 = (2 w - tau') / (w (2 + tau')), tau' = 2 tau; 0 beyond the transition tau' >= 2 w."""
    w, tp = m2 - 1.0, 2.0 * tau
    return float(np.sqrt(max((2 * w - tp) / (w * (2 + tp)), 0.0))) if w > 0 else 0.0


def oja_jacobian_sympy():
    """Symbolic d(Qdot)/dQ of the Oja limit and its lambdified form ``f(Q, tau, m2)``."""
    import sympy as sp

    Q, tau, m2 = sp.symbols("Q tau m2", real=True)
    J = sp.diff(oja_rhs(Q, tau, m2), Q)
    return sp.simplify(J), sp.lambdify((Q, tau, m2), J, "numpy")


def jacobian_fd(f: Callable, y: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite-difference Jacobian of ``f`` at ``y``."""
    y = np.asarray(y, float)
    J = np.empty((y.size, y.size))
    for j in range(y.size):
        e = np.zeros_like(y)
        e[j] = h
        J[:, j] = (f(y + e) - f(y - e)) / (2 * h)
    return J
