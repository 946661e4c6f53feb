"""Tests of the relu-resolving quadrature, the exact diffusion (sim.diffusion), the validity
figures, the prediction map and its record (sim.predict, sim.prediction_record)."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy.integrate import quad

from cffdyn.errors import UserError
from sim import fluctuations as F
from sim.diffusion import fp_stationary, validity
from sim.model import MFConfig
from sim.predict import PREDICT_QUICK, check_predict_config, power_table, run_predict
from sim.prediction_record import (SCHEMA, load_prediction, noise_ratio, predicted_at, sigma_n_from_preacts,
                                   validate_prediction)

PHI = lambda e: math.exp(-0.5 * e * e) / math.sqrt(2 * math.pi)  # noqa: E731


def relu_drift_sn0(Q, tau, m2, B):
    """Independent drift of the relu model at sn = 0 without margin: a = relu(h), Y = tau (2 a c -
    2 Q a h) - tau^2/(2B) Q 4 a^2, adaptive quadrature split at the kink h = 0."""
    s = math.sqrt(1 - Q * Q)
    tot = 0.0
    for c in (math.sqrt(m2), -math.sqrt(m2)):
        def g(e):
            h = Q * c + s * e
            a = max(h, 0.0)
            return (tau * (2 * a * c - 2 * Q * a * h) - tau ** 2 / (2 * B) * Q * 4 * a * a) * PHI(e)
        tot += 0.5 * quad(g, -40, 40, points=[-Q * c / s], epsabs=1e-14, epsrel=1e-13, limit=400)[0]
    return tot


@pytest.mark.parametrize("B", [1, 3])
def test_relu_drift_against_adaptive_quadrature(B):
    cfg = MFConfig(tau=1.0, m2=(3.0,), activation="relu", batch=B)
    for Q in (0.2, 0.5, 0.9):
        assert abs(F.drift(cfg, Q) - relu_drift_sn0(Q, 1.0, 3.0, B)) < 1e-10


def test_relu_subtract_drift_does_not_depend_on_the_margin():
    """The subtract arm's gradient is the plain score's: any margin must give the same drift
    (the unsplit kink made it depend on where the clamp boundary cut the pieces)."""
    vals = [F.increment_moments(MFConfig(tau=1.0, m2=(3.0,), sn=0.7, mode="subtract", margin=m, activation="relu"),
                                0.3047) for m in (0.05, 0.1, 0.3, 0.6)]
    assert max(v["drift"] for v in vals) - min(v["drift"] for v in vals) < 1e-12
    assert max(v["varY"] for v in vals) - min(v["varY"] for v in vals) < 1e-10


def test_order_check_is_reported_and_converged():
    cfg = MFConfig(tau=1.0, m2=(3.0,), sn=0.7, mode="clamp", margin=0.3, activation="relu")
    qc = F.choose_order(cfg, 0.5)
    assert qc.converged and qc.drift_change < F.QUAD_TOL[0] and qc.var_change < F.QUAD_TOL[1]
    fine = F.increment_moments(cfg, 0.5, n=4 * qc.order)
    assert abs(F.increment_moments(cfg, 0.5, n=qc.order)["drift"] - fine["drift"]) < 1e-7
    sp = F.stationary_point(cfg)
    assert sp.quad is not None and sp.as_dict()["quad"]["order"] == sp.quad.order


def test_diffusion_tends_to_linear_noise_at_large_N():
    """The OU value is the small-noise limit of the stationary density: N Var -> Var Y / (2B|lambda|)."""
    cfg = MFConfig(tau=1.0, m2=(3.0,), sn=0.7, mode="clamp", margin=0.3)
    sp = F.stationary_point(cfg)
    fp = fp_stationary(cfg, sp, 10 ** 7)
    assert abs(fp["N_var"] / sp.n_var - 1) < 2e-3
    small = fp_stationary(cfg, sp, 500)
    assert abs(small["N_var"] / sp.n_var - 1) > abs(fp["N_var"] / sp.n_var - 1)


def test_quasi_frozen_is_its_own_outcome():
    cfg = MFConfig(tau=1.0, m2=(3.0,), mode="clamp", margin=0.15)
    sp = F.stationary_point(cfg)
    v = validity(sp, fp_stationary(cfg, sp, 2000), 2000)
    assert v["outcome"] == "quasi_frozen" and not v["valid"] and v["corr_time"] > 100


def test_noise_ratio_identity_by_monte_carlo():
    """Var(h1 - h2) / (2 Var h) of the model's pre-activations, sampled directly."""
    rng = np.random.default_rng(0)
    n = 400_000
    for sn, rho, Q, m2 in ((0.7, 0.0, 0.6, 3.0), (1.3, -0.5, 0.3, 1.0), (0.5, 0.0, 0.8, 1.0)):
        c = rng.choice([-1.0, 1.0], n) * math.sqrt(m2)
        e = rng.standard_normal(n)
        z1 = rng.standard_normal(n)
        z2 = rho * z1 + math.sqrt(1 - rho * rho) * rng.standard_normal(n)
        base = Q * c + math.sqrt(1 - Q * Q) * e
        h1, h2 = base + sn * z1, base + sn * z2
        r = np.var(h1 - h2) / (2 * np.var(np.concatenate([h1, h2])))
        assert abs(r - noise_ratio(sn, rho, Q, m2)) < 0.01
        if rho == 0.0 and m2 == 1.0:
            assert abs(sigma_n_from_preacts(h1, h2) - sn) < 0.01


def test_bad_input_is_one_line():
    for over in ({"sns": (3.0,)}, {"activations": ("softplus",)}, {"margins": (0.0,)}, {"record_margin": 0.7},
                 {"N": 50}):
        with pytest.raises(UserError) as exc:
            check_predict_config(dataclasses.replace(PREDICT_QUICK, **over))
        assert "\n" not in str(exc.value)
    with pytest.raises(UserError):
        sigma_n_from_preacts(np.zeros(5, dtype=np.int64), np.zeros(5, dtype=np.int64))


def test_grid_entirely_outside_validity_is_refused(tmp_path):
    cfg = dataclasses.replace(PREDICT_QUICK, activations=("tanh",), margins=(0.3,), sns=(0.0,), record_margin=0.3)
    with pytest.raises(UserError, match="outside validity"):
        run_predict(cfg, tmp_path, progress=False)


def test_power_needs_more_seeds_closer_to_one():
    rows = power_table([(0.5, 0.3), (0.9, 1.25), (1.0, None)], power=0.8, alpha=0.05, corr=0.5)
    assert rows[0]["seeds_per_arm"] < rows[1]["seeds_per_arm"]
    assert rows[2]["seeds_per_arm"] is None and rows[2]["note"]


def test_record_round_trip_and_reader(tmp_path):
    cfg = dataclasses.replace(PREDICT_QUICK, activations=("tanh",), margins=(0.3,), sns=(0.35, 0.7, 1.0))
    run_predict(cfg, tmp_path, progress=False)
    rec = load_prediction(tmp_path / "prediction.json")
    assert rec["schema"] == SCHEMA
    cr = rec["crossings"]["tanh"]
    assert cr["sigma_n_cross"] is not None and 0.35 < cr["sigma_n_cross"] < 1.0
    lo, hi = cr["interval"]
    assert lo <= cr["sigma_n_cross"] <= hi
    p = predicted_at(rec, "tanh", 0.5)
    assert p["valid"] and p["sign"] in (-1, 0, 1) and p["log_vr_interval"][0] <= p["log_vr"] <= p["log_vr_interval"][1]
    assert not predicted_at(rec, "tanh", 1.5)["valid"]
    assert (tmp_path / "predict.pdf").exists() and (tmp_path / "predict.png").exists()
    with pytest.raises(UserError, match="does not exist"):
        load_prediction(tmp_path / "nope.json")
    from cffdyn.io import atomic_write_json
    atomic_write_json(tmp_path / "old.json", dict(rec, schema_version=0))   # an intact record of another schema
    with pytest.raises(UserError, match="schema"):
        load_prediction(tmp_path / "old.json")
    (tmp_path / "edited.json").write_text(json.dumps(dict(rec, schema_version=0)))   # the hash of the original
    with pytest.raises(UserError, match="changed after it was written"):
        load_prediction(tmp_path / "edited.json")
    with pytest.raises(UserError, match="missing"):
        validate_prediction({k: v for k, v in rec.items() if k != "power"})


def _exact_step_mc(cfg: MFConfig, Q: float, Ns: tuple[int, ...], M: int, seed: int) -> dict:
    """N dQ of one exact SGD step at overlap Q for each N in Ns, by numpy Monte Carlo written from
    the model's definition (not from the quadrature): B samples of the two views' feature part
    c + sn n_f and their part along w's background a + sn n_u, the orthogonal rest of the mean
    update as tau^2 Vbar chi^2_{N-2} / B; common random numbers across N (Wilson-Hilferty chi^2
    from one normal), so the differences between N have a small error."""
    rng = np.random.default_rng(seed)
    tau, sn, rho, B, thr = cfg.tau, cfg.sn, cfg.rho, cfg.batch, 1.0 - cfg.margin
    sig = {"relu": lambda h: np.maximum(h, 0.0), "tanh": np.tanh}[cfg.act.name]
    dsig = {"relu": lambda h: (h > 0) * 1.0, "tanh": lambda h: 1.0 - np.tanh(h) ** 2}[cfg.act.name]
    s = math.sqrt(1 - Q * Q)
    Gf = np.zeros(M)
    Gu = np.zeros(M)
    A = np.zeros(M)
    V = np.zeros(M)
    for _ in range(B):
        c = math.sqrt(cfg.m2[0]) * rng.choice([-1.0, 1.0], M)
        au = rng.standard_normal(M)
        n1f, n1u = rng.standard_normal((2, M))
        n2f = rho * n1f + math.sqrt(1 - rho * rho) * rng.standard_normal(M)
        n2u = rho * n1u + math.sqrt(1 - rho * rho) * rng.standard_normal(M)
        x1f, x2f, x1u, x2u = c + sn * n1f, c + sn * n2f, au + sn * n1u, au + sn * n2u
        h1, h2 = Q * x1f + s * x1u, Q * x2f + s * x2u
        S1, S2 = sig(h1), sig(h2)
        keep = ~((S1 * S2 >= thr) & (cfg.mode == "clamp"))
        g1, g2 = dsig(h1) * S2 * keep, S1 * dsig(h2) * keep
        Gf += (g1 * x1f + g2 * x2f) / B
        Gu += (g1 * x1u + g2 * x2u) / B
        V += ((g1 + g2) ** 2 + sn * sn * (g1 * g1 + g2 * g2 + 2 * rho * g1 * g2)) / B
    z = rng.standard_normal(M)
    out = {}
    for N in Ns:
        k = N - 2
        chi = k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3
        wf = math.sqrt(N) * Q + tau / math.sqrt(N) * Gf
        wu = math.sqrt(N) * s + tau / math.sqrt(N) * Gu
        out[N] = N * (wf / np.sqrt(wf * wf + wu * wu + tau * tau * V * chi / (B * N)) - Q)
    return out


@pytest.mark.parametrize("cfg,Q", [
    (MFConfig(tau=1.0, m2=(3.0,), activation="relu", mode="subtract", sn=0.7), 0.3),
    (MFConfig(tau=1.0, m2=(3.0,), activation="relu", mode="subtract", sn=0.7, batch=2), 0.55),
    (MFConfig(tau=2.0, m2=(3.0,), mode="clamp", margin=0.3, sn=0.7, rho=-0.5, batch=2), 0.5),
])
def test_finite_n_step_terms_against_monte_carlo_of_the_exact_step(cfg, Q):
    """drift_c1, varY_c1: N (E[N dQ]_N - E[N dQ]_inf) and N B (Var_N - Var_inf) of the exact step
    tend to them; at N = 20000 the O(1/N^2) remainder is ~1% of them."""
    N, big = 20000, 10 ** 9
    y = _exact_step_mc(cfg, Q, (N, big), 400_000, 1)
    m = F.increment_moments(cfg, Q)
    d = (y[N] - y[big]) * N
    mc_c1, mc_se = d.mean(), d.std() / math.sqrt(d.size)
    assert abs(mc_c1 - m["drift_c1"]) < 0.03 * abs(m["drift_c1"]) + 4 * mc_se
    dc = (y[N] - y[N].mean()) ** 2 - (y[big] - y[big].mean()) ** 2
    mc_v, mc_vse = cfg.batch * N * dc.mean(), cfg.batch * N * dc.std() / math.sqrt(dc.size)
    assert abs(mc_v - m["varY_c1"]) < 0.03 * abs(m["varY_c1"]) + 4 * mc_vse
    assert mc_vse < 0.1 * abs(m["varY_c1"])  # the check has power
    # the leading moments as well (independent of the quadrature)
    assert abs(y[big].mean() - m["drift"]) < 4 * y[big].std() / math.sqrt(d.size)
    assert abs(cfg.batch * y[big].var() / m["varY"] - 1) < 0.02


def test_relaxation_of_an_ornstein_uhlenbeck_density():
    """Linear drift -lam q, constant D: slowest relaxation 1/lam, tau_int(Q) = 1/lam,
    tau_int((Q - mean)^2) = 1/(2 lam) (its correlation is rho^2), kurtosis 3."""
    from sim.diffusion import relaxation
    lam, D = 0.8, 2e-3
    sd = math.sqrt(D / lam)
    x = np.linspace(-12 * sd, 12 * sd, 8001)
    r = relaxation(x, -0.5 * (x / sd) ** 2, np.full(x.size, D))
    assert abs(r["relax_time"] * lam - 1) < 1e-2
    assert abs(r["q_tau"] * lam - 1) < 1e-2
    assert abs(r["sq_dev_tau"] * 2 * lam - 1) < 1e-2
    fine = relaxation(x, -0.5 * (x / sd) ** 2, np.full(x.size, D), n_grid=1600)  # the grid converges
    assert abs(fine["sq_dev_tau"] * 2 * lam - 1) < abs(r["sq_dev_tau"] * 2 * lam - 1)


def test_diffusion_uses_the_step_moments_at_n():
    """The 1/N terms change the density at O(1) in its exponent: the mean moves by
    about drift_c1 / (N |lambda|) and N Var differs from the N -> inf moments' density."""
    cfg = MFConfig(tau=1.0, m2=(3.0,), activation="relu", mode="subtract", sn=0.7, batch=2)
    sp = F.stationary_point(cfg)
    fp = fp_stationary(cfg, sp, 2000)
    c1 = F.increment_moments(cfg, sp.Q)["drift_c1"]
    shift = fp["mean_Q"] - fp["mean_Q_leading"]
    assert abs(shift / (c1 / (2000 * abs(sp.lam))) - 1) < 0.15
    assert fp["N_var"] != fp["N_var_leading"] and fp["kurtosis"] > 2.5 and fp["sq_dev_tau"] > 0
