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
