"""The semi-reduced SGD engine against the full one (the reference): equal in distribution
(means and variances of Q(t) within their sampling error), with the clamp, noise and a
mini-batch, and with the L1 regulariser that the O(1) reduced engine cannot do; plus the
bench's output on a tiny configuration."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import f as f_dist
from scipy.stats import norm

from sim.model import MFConfig
from sim.sgd import SGDConfig, run_sgd


@pytest.mark.parametrize("cfg", [
    MFConfig(tau=1.0, m2=(3.0,), sn=0.7, rho=-0.3, batch=2, mode="clamp", margin=0.3),
    MFConfig(tau=0.5, m2=(3.0, 2.0), sn=0.5, reg="l1", beta=0.5),
])
def test_semi_engine_equal_in_distribution_to_full(cfg):
    K, N = 160, 150
    y0 = [0.3] * cfg.d
    a = run_sgd(cfg, SGDConfig(N=N, trials=K, t_end=2.0, n_records=4, engine="full", seed=11), y0).Q[:, 1:, 0]
    b = run_sgd(cfg, SGDConfig(N=N, trials=K, t_end=2.0, n_records=4, engine="semi", seed=12), y0).Q[:, 1:, 0]
    n_tests = 2 * a.shape[1]
    alpha = 0.002 / n_tests  # Bonferroni over records, means and variances: a false alarm is rare
    z = (a.mean(0) - b.mean(0)) / np.sqrt(a.var(0, ddof=1) / K + b.var(0, ddof=1) / K)
    assert np.all(2 * norm.sf(np.abs(z)) > alpha), z
    F = a.var(0, ddof=1) / b.var(0, ddof=1)
    p = 2 * np.minimum(f_dist.cdf(F, K - 1, K - 1), f_dist.sf(F, K - 1, K - 1))
    assert np.all(p > alpha), F
    # and the semi engine is not a copy of the full one's stream
    assert not np.allclose(a.mean(0), b.mean(0), atol=1e-12)


def test_semi_engine_deterministic_and_checks():
    cfg = MFConfig(tau=0.5, m2=(3.0,), sn=0.5)
    sg = SGDConfig(N=120, trials=3, t_end=0.5, n_records=2, engine="semi", seed=4)
    assert np.array_equal(run_sgd(cfg, sg, [0.2]).Q, run_sgd(cfg, sg, [0.2]).Q)
    with pytest.raises(ValueError, match="engine"):
        SGDConfig(engine="fast")
    r = run_sgd(cfg, sg, [0.2])
    assert np.allclose(r.r[:, 1:], 1.0) and np.all(np.abs(r.Q) <= 1)


@pytest.mark.slow
def test_bench_tiny_reports_ratios_and_load():
    from sim import bench as SB
    cfg = SB.BenchConfig(N=300, steps=40, sn=0.5, rounds=2, par_trials=2, n_traj=20, n_steps=10, table=64)
    lines = []
    res = SB.run_bench(cfg, echo=lines.append)
    for k in ("full_over_numpy", "semi_over_numpy", "semi_normals_fraction", "full_normals_fraction",
              "full_speedup_2_threads", "semi_speedup_2_threads"):
        assert math.isfinite(res[k]) and res[k] > 0
    assert res["seconds_1_thread"]["semi"]["n"] == 2 and res["thread_count_independent"] is True
    assert "load_avg" in res["machine_before"] and "load average" in lines[-1] and "device:" in lines[-1]
    assert any("compilation excluded" in ln for ln in lines)  # the choice is said
    assert res["normals_per_step"]["semi"] < res["normals_per_step"]["full"] / 2.5


@pytest.mark.parametrize("engine", ["full", "semi", "reduced"])
@pytest.mark.parametrize("normalize", [True, False])
def test_every_engine_flags_a_trajectory_that_overflows(engine, normalize):
    """tau = 1e300 overflows |w|^2 in the first step: the trial is lost (status 1, records NaN
    from then on), never a NaN record with status 0, and strict mode raises."""
    cfg = MFConfig(tau=1e300, m2=(3.0,), activation="identity", normalize=normalize)
    y0 = [0.3] if normalize else [0.3, 1.0]
    sg = SGDConfig(N=50, trials=2, t_end=1.0, n_records=2, engine=engine)
    r = run_sgd(cfg, sg, y0, strict=False)
    assert np.all(r.status == 1)
    assert np.all(np.isfinite(r.Q[:, 0])) and np.all(np.isnan(r.Q[:, 1:])) and np.all(np.isnan(r.r[:, 1:]))
    with pytest.raises(FloatingPointError, match="run_sgd"):
        run_sgd(cfg, sg, y0)
