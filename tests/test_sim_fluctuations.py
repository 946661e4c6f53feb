"""Tests of sim.fluctuations: the boundary-resolving drift against the ODE right-hand side and
against an independent adaptive quadrature, the exact slope lambda against a finite difference
of that quadrature (the reference slopes re-derived here), the Oja-limit closed form derived
with sympy, the OU prediction against SGD, and the fully clamped outcome."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from sim import fluctuations as F
from sim.model import MFConfig
from sim.ode import rhs_numpy
from sim.sgd import SGDConfig, run_sgd

PHI = lambda e: math.exp(-0.5 * e * e) / math.sqrt(2 * math.pi)  # noqa: E731


def quad_drift_clamp_sn0(Q, tau, m2, margin, B):
    """Independent drift of the clamped tanh model at sn = 0: for each c = +-sqrt(m2) an adaptive
    quadrature over the interval of e where the clamp is inactive, |Q c + s e| < atanh(sqrt(1-m))."""
    s = math.sqrt(1 - Q * Q)
    hs = math.atanh(math.sqrt(1 - margin))
    tot = 0.0
    for c in (math.sqrt(m2), -math.sqrt(m2)):
        def g(e):
            h = Q * c + s * e
            a = math.tanh(h) * (1 - math.tanh(h) ** 2)
            return (tau * (2 * a * c - 2 * Q * a * h) - tau ** 2 / (2 * B) * Q * 4 * a * a) * PHI(e)
        lo, hi = (-hs - Q * c) / s, (hs - Q * c) / s
        tot += 0.5 * quad(g, max(lo, -40), min(hi, 40), epsabs=1e-14, epsrel=1e-13, limit=200)[0]
    return tot


@pytest.mark.parametrize("sn,rho,B,mode", [(0.0, 0.0, 1, "none"), (0.7, 0.0, 1, "subtract"),
                                           (0.7, -0.5, 4, "none"), (0.5, 1.0, 2, "none")])
def test_drift_equals_ode_rhs_without_clamp(sn, rho, B, mode):
    cfg = MFConfig(tau=1.0, m2=(3.0,), sn=sn, rho=rho, batch=B, mode=mode, margin=0.3)
    f = rhs_numpy(cfg, n_gh=128, n_gh_noise=40)  # the ODE's default order is good to ~4e-8 here
    for Q in (0.2, 0.6, 0.95):
        assert abs(F.drift(cfg, Q) - f(np.array([Q]))[0]) < 1e-8


@pytest.mark.parametrize("margin,B", [(0.1, 1), (0.1, 4), (0.3, 1)])
def test_clamp_drift_and_slope_against_adaptive_quadrature(margin, B):
    cfg = MFConfig(tau=1.0, m2=(3.0,), mode="clamp", margin=margin, batch=B)
    for Q in (0.5, 0.9):
        ref = quad_drift_clamp_sn0(Q, 1.0, 3.0, margin, B)
        assert abs(F.drift(cfg, Q) - ref) < 1e-10
        # finite difference (Richardson) of the exact quadrature; the boundary moves smoothly
        d1, d2 = 1e-3, 2e-3
        fd = lambda h: (quad_drift_clamp_sn0(Q + h, 1.0, 3.0, margin, B)  # noqa: E731
                        - quad_drift_clamp_sn0(Q - h, 1.0, 3.0, margin, B)) / (2 * h)
        lam_fd = (4 * fd(d1) - fd(d2)) / 3
        assert abs(F.drift_slope(cfg, Q) - lam_fd) < 1e-6


def test_slopes_at_the_clamped_fixed_point():
    """tanh, m2 = 3, tau = 1, sn = 0, m = 0.1: lambda at the stable fixed point, B = 1 and B = 4,
    re-derived by the adaptive quadrature (brentq on it, Richardson finite difference) and held
    to the reference slopes -1.384 and -2.524 computed independently the same way."""
    from scipy.optimize import brentq
    for B, issue in ((1, -1.384), (4, -2.524)):
        g = lambda q: quad_drift_clamp_sn0(q, 1.0, 3.0, 0.1, B)  # noqa: E731
        qs = brentq(g, 0.9, 0.9999, xtol=1e-13)
        cd = lambda h: (g(qs + h) - g(qs - h)) / (2 * h)  # noqa: E731
        lam_ref = (4 * cd(5e-5) - cd(1e-4)) / 3
        sp = F.stationary_point(MFConfig(tau=1.0, m2=(3.0,), mode="clamp", margin=0.1, batch=B))
        assert abs(sp.Q - qs) < 1e-9
        assert abs(sp.lam - lam_ref) < 1e-5
        assert abs(sp.lam - issue) < 5e-3
    # a fixed-node central difference misses the boundary term (it gives -1.240, the slope is -1.384)
    sp = F.stationary_point(MFConfig(tau=1.0, m2=(3.0,), mode="clamp", margin=0.1))
    f = rhs_numpy(MFConfig(tau=1.0, m2=(3.0,), mode="clamp", margin=0.1))
    naive = (f(np.array([sp.Q + 1e-6]))[0] - f(np.array([sp.Q - 1e-6]))[0]) / 2e-6
    assert abs(naive - sp.lam) > 0.05


def test_clamp_with_noise_drift_matches_ode_and_slope_matches_rebuilt_nodes():
    cfg = MFConfig(tau=1.0, m2=(3.0,), sn=0.7, mode="clamp", margin=0.5)
    f = rhs_numpy(cfg, n_gh=400, n_gh_noise=40)  # trapezoid in e: first order at the jump
    Q = 0.9
    assert abs(F.drift(cfg, Q) - f(np.array([Q]))[0]) < 2e-3
    # independent of the fixed-node device: nodes rebuilt at each Q, Richardson difference
    fd = lambda h: (F.drift(cfg, Q + h) - F.drift(cfg, Q - h)) / (2 * h)  # noqa: E731
    assert abs(F.drift_slope(cfg, Q) - (4 * fd(1e-3) - fd(2e-3)) / 3) < 1e-6
    sp = F.stationary_point(cfg)
    assert abs(sp.lam - (-0.80)) < 0.03  # the independent estimate: about -0.80


def oja_closed_form(tau, m2):
    """Q*, lambda and Var Y for identity, sn = 0, B = 1 derived with sympy from the per-step
    increment Y = 2 tau h c - 2 tau Q h^2 - 2 tau^2 Q h^2, h = Q c + s e, c = +-sqrt(m2)."""
    import sympy as sp
    Q, e, c = sp.symbols("Q e c", real=True)
    s = sp.sqrt(1 - Q ** 2)
    h = Q * c + s * e
    Y = 2 * tau * h * c - 2 * tau * Q * h ** 2 - 2 * tau ** 2 * Q * h ** 2

    def E(expr):
        p = sp.Poly(sp.expand(expr), e)  # Gaussian moments of e, then c^2 = m2, c^4 = m2^2
        out = sum(coef * (sp.factorial2(k - 1) if k % 2 == 0 else 0) for (k,), coef in p.terms())
        out = sp.expand(out)
        return sp.expand(out.subs(c ** 4, m2 ** 2).subs(c ** 3, 0).subs(c ** 2, m2).subs(c, 0))
    f = E(Y)
    qs = math.sqrt((2 * (m2 - 1) - 2 * tau) / ((m2 - 1) * (2 + 2 * tau)))
    lam = float(sp.diff(f, Q).subs(Q, qs))
    varY = float((E(Y ** 2) - f ** 2).subs(Q, qs))
    return qs, lam, varY, float(f.subs(Q, qs))


def test_oja_limit_closed_form_and_sgd():
    tau, m2 = 0.25, 3.0
    qs, lam, varY, f0 = oja_closed_form(tau, m2)
    assert abs(f0) < 1e-12
    cfg = MFConfig(tau=tau, m2=(m2,), activation="identity")
    sp = F.stationary_point(cfg)
    assert abs(sp.Q - qs) < 1e-10 and abs(sp.lam - lam) < 1e-8 and abs(sp.var_step - varY) < 1e-10
    # SGD (exact-in-law engine) from Q*: N Var(Q) over a stationary window, pooled over trials
    N, K, burn, T = 1000, 24, 3.0, 40.0
    r = run_sgd(cfg, SGDConfig(N=N, trials=K, t_end=burn + T, n_records=int((burn + T) * 4), seed=5), [qs])
    q = r.Q[:, r.t > burn, 0]
    v = N * np.mean((q - q.mean()) ** 2, axis=1)
    se = v.std(ddof=1) / math.sqrt(K)
    assert abs(v.mean() - sp.n_var) < 3.3 * se
    # the diffusion without the squared-gradient term's fluctuation is far off: the term is needed
    old = _var_without_bsq(cfg, qs) / (2 * abs(lam))
    assert abs(v.mean() - old) > 5 * se


def _var_without_bsq(cfg, Q):
    nd = F.build_nodes(cfg, Q)
    tau = cfg.tau
    s2 = 1 - Q * Q
    dens = np.exp(-0.5 * (nd.h1 - Q * nd.c) ** 2 / s2) / math.sqrt(2 * math.pi * s2)
    a = nd.h1
    Y = tau * (2 * a * nd.c - 2 * Q * a * nd.h1)
    W = nd.w * dens
    return float(np.sum(W * Y * Y) - np.sum(W * Y) ** 2)


def test_fully_clamped_regime_is_its_own_outcome():
    cfg = MFConfig(tau=1.0, m2=(3.0,), mode="clamp", margin=0.3)
    out = F.fluctuation_variance(cfg, N=1000)
    assert out["outcome"] == "fully_clamped" and "N_var" not in out and "reason" in out
    with pytest.raises(F.NoInteriorFixedPoint) as exc:
        F.stationary_point(cfg)
    assert exc.value.outcome == "fully_clamped"
    ok = F.fluctuation_variance(cfg.replace(mode="subtract"), N=1000)
    assert ok["outcome"] == "interior" and math.isfinite(ok["var"]) and ok["var"] > 0


def test_find_fixed_points_clamp_eigenvalue_is_the_exact_slope():
    cfg = MFConfig(tau=1.0, m2=(3.0,), mode="clamp", margin=0.1)
    fps = [p for p in F.find_fixed_points(cfg, n_starts=7, tol=1e-6) if p["stability"] == "stable"]
    sp = F.stationary_point(cfg)
    assert fps and any(abs(p["eigenvalues"][0].real - F.drift_slope(cfg, float(p["Q"][0]))) < 1e-12
                       and abs(p["Q"][0] - sp.Q) < 1e-3 for p in fps)
    with pytest.raises(ValueError, match="d = 1"):
        F.find_fixed_points(MFConfig(tau=1.0, m2=(3.0, 2.0), mode="clamp", margin=0.1))
