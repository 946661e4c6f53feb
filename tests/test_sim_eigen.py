"""Tests of sim.eigen (predictors, losses, toy updates, per-mode dynamics) and sim.eigen_studies.

Independent references: torch autograd of the losses (vs the closed-form gradients of the notes),
scipy's fractional matrix power (vs the closed-form predictor), Monte-Carlo averages (vs the exact
expectation), the check values printed in notes B.4 (0.105 -> 0.1295 / 0.4631 at t = 100),
scipy's solve_ivp (vs the rk4 per-mode ODE) and the continuous matrix gradient flow.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch

from sim import eigen as E
from sim import eigen_studies as ES
from sim.integrate import rk4, solve_ivp_reference

F64 = torch.float64


# ------------------------------------------------------------------ settings / predictors
def test_setting_names_are_the_notebooks():
    assert set(E.SETTING_NAMES) == {f"{l}_{s}" for l in ("euc", "cos")
                                    for s in ("simsiam", "simsiam_nopred", "simsiam_nosg", "isoloss")}
    with pytest.raises(ValueError):
        E.Setting("euc", predictor=False, iso=True)
    with pytest.raises(ValueError):
        E.Setting("l1")
    with pytest.raises(ValueError):
        E.get_setting("nope")


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 1.7])
def test_toy_predictor_is_matrix_power(alpha):
    W = np.random.default_rng(0).standard_normal((5, 7))
    ref = np.real(scipy.linalg.fractional_matrix_power(W @ W.T, alpha))
    np.testing.assert_allclose(E.toy_predictor(W, alpha), ref, rtol=1e-9, atol=1e-11)
    # batched == per item
    Ws = np.random.default_rng(1).standard_normal((3, 4, 6))
    np.testing.assert_allclose(E.toy_predictor(Ws, alpha)[1], E.toy_predictor(Ws[1], alpha), atol=1e-13)


def test_directpred_predictor():
    rng = np.random.default_rng(3)
    Z1, Z2 = (torch.tensor(rng.standard_normal((64, 5)), dtype=F64) for _ in range(2))
    dp = E.DirectPredPredictor(5, tau=0.0, alpha=1.0, normalize=False)
    WP, _ = dp.update(Z1)
    torch.testing.assert_close(WP, Z1.T @ Z1 / 64, rtol=1e-12, atol=1e-12)
    # running average
    dp = E.DirectPredPredictor(5, tau=0.7, alpha=1.0, normalize=False)
    dp.update(Z1)
    WP, WPs = dp.update(Z2)
    C = 0.7 * (0.3 * Z1.T @ Z1 / 64) + 0.3 * Z2.T @ Z2 / 64
    torch.testing.assert_close(WP, C, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(WPs @ WPs, WP, rtol=1e-10, atol=1e-12)
    # alpha = 2 with normalisation: (C / s_max + eps I)^2 (notes B.2)
    dp = E.DirectPredPredictor(5, tau=0.0, alpha=2.0, normalize=True, eps_iso=0.1)
    WP, _ = dp.update(Z1)
    C = Z1.T @ Z1 / 64
    A = C / torch.linalg.eigvalsh(C).max() + 0.1 * torch.eye(5, dtype=F64)
    torch.testing.assert_close(WP, A @ A, rtol=1e-10, atol=1e-12)
    # the toy's closed form is the large-batch limit of the correlation of z = W x
    W = rng.standard_normal((4, 6)) * 0.5
    X = torch.tensor(rng.standard_normal((400_000, 6)), dtype=F64)
    dp = E.DirectPredPredictor(4, tau=0.0, alpha=1.0, normalize=False)
    WP, _ = dp.update(X @ torch.tensor(W.T))
    np.testing.assert_allclose(WP.numpy(), E.toy_predictor(W, 1.0), atol=0.02)
    with pytest.raises(ValueError):
        dp.update(torch.zeros(3, 5, dtype=F64))
    with pytest.raises(ValueError):
        E.DirectPredPredictor(4, tau=1.0)


# ------------------------------------------------------------------ losses and gradients
def _torch_loss(setting, z1, z2, WP):
    if setting.loss == "euc":
        if setting.iso:
            return E.iso_euc_loss(z1, z1 @ WP, z2)
        p = z1 @ WP if setting.predictor else z1
        return E.euc_loss(p, z2, stop_grad=setting.stop_grad)
    if setting.iso:
        return E.iso_cos_loss(z1, z1 @ WP, z2, WP)
    p = z1 @ WP if setting.predictor else z1
    return E.cos_loss(p, z2, stop_grad=setting.stop_grad)


@pytest.mark.parametrize("name", E.SETTING_NAMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_gradients_match_autograd(name, seed):
    s = E.get_setting(name)
    rng = np.random.default_rng(seed)
    B, M = 9, 4
    z1n, z2n = rng.standard_normal((B, M)), rng.standard_normal((B, M))
    WPn = E.toy_predictor(rng.standard_normal((M, 6)), 1.0 + 0.5 * seed)
    z1 = torch.tensor(z1n, requires_grad=True)
    z2 = torch.tensor(z2n, requires_grad=True)
    loss = _torch_loss(s, z1, z2, torch.tensor(WPn))
    loss.backward()
    g1, g2 = E.loss_grads(s, z1n, z2n, WPn)
    np.testing.assert_allclose(z1.grad.numpy(), g1 / B, rtol=1e-11, atol=1e-13)
    if s.stop_grad:
        assert g2 is None and (z2.grad is None or np.all(z2.grad.numpy() == 0))
    else:
        np.testing.assert_allclose(z2.grad.numpy(), g2 / B, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("loss", ["euc", "cos"])
def test_isoloss_gradient_is_byol_gradient_without_wp(loss):
    rng = np.random.default_rng(7)
    z1, z2 = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    WP = E.toy_predictor(rng.standard_normal((3, 5)), 1.0)
    g_std, _ = E.loss_grads(E.Setting(loss), z1, z2, WP)
    g_iso, _ = E.loss_grads(E.Setting(loss, iso=True), z1, z2, WP)
    np.testing.assert_allclose(g_std, g_iso @ WP, rtol=1e-12, atol=1e-14)
    assert not np.allclose(g_std, g_iso)


@pytest.mark.parametrize("activation", ["linear", "relu"])
@pytest.mark.parametrize("name", E.SETTING_NAMES)
def test_sampled_update_is_minus_half_eta_autograd(name, activation):
    s = E.get_setting(name)
    cfg = E.ToyConfig(in_dim=6, out_dim=4, eta=0.03, sigma=0.3, activation=activation, n_samples=50, eps=0.0)
    rng = np.random.default_rng(11)
    W = rng.standard_normal((1, 4, 6)) * 0.5
    X1, X2 = E.sample_views(rng, (1, 80, 6), cfg.sigma)
    # cosine losses are undefined where a ReLU representation is exactly zero: drop those samples
    keep = ((X1[0] @ W[0].T > 0).any(1) & (X2[0] @ W[0].T > 0).any(1))
    X1, X2 = X1[:, keep], X2[:, keep]
    dW = E.sampled_update(s, W, X1, X2, cfg)[0]
    Wt = torch.tensor(W[0], requires_grad=True)
    f = torch.relu if activation == "relu" else (lambda h: h)
    z1, z2 = f(torch.tensor(X1[0]) @ Wt.T), f(torch.tensor(X2[0]) @ Wt.T)
    WP = torch.tensor(E.toy_predictor(W[0], cfg.alpha))
    _torch_loss(s, z1, z2, WP).backward()
    np.testing.assert_allclose(dW, -0.5 * cfg.eta * Wt.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["euc_simsiam", "euc_isoloss", "euc_simsiam_nopred", "euc_simsiam_nosg"])
def test_exact_expectation_matches_monte_carlo(name):
    s = E.get_setting(name)
    cfg = E.ToyConfig(in_dim=6, out_dim=4, eta=1e-2, sigma=0.5, n_samples=20_000)
    rng = np.random.default_rng(5)
    W = rng.standard_normal((1, 4, 6)) * 0.4
    K = 30
    draws = np.stack([E.sampled_update(s, W, *E.sample_views(rng, (1, cfg.n_samples, 6), cfg.sigma), cfg)[0]
                      for _ in range(K)])
    exact = E.expected_update_euc(s, W, cfg)[0]
    se = draws.std(axis=0, ddof=1) / np.sqrt(K)
    z = np.abs(draws.mean(axis=0) - exact) / se
    assert z.max() < 5.0, z.max()
    # the sigma^2 terms matter at this sigma: dropping them would be detected
    cfg0 = E.ToyConfig(in_dim=6, out_dim=4, eta=1e-2, sigma=0.0)
    if name != "euc_simsiam_nopred":
        assert (np.abs(draws.mean(axis=0) - E.expected_update_euc(s, W, cfg0)[0]) / se).max() > 5.0


# ------------------------------------------------------------------ per-mode dynamics
NOTES = dict(in_dim=15, out_dim=10, eta=1e-2, sigma=0.1, alpha=1.0, n_samples=0)


@pytest.mark.parametrize("name", ["euc_simsiam", "euc_isoloss", "euc_simsiam_nopred", "euc_simsiam_nosg"])
def test_iteration_matches_per_mode_map(name):
    """The per-mode map is exact: expected-gradient matrix iteration == per-mode map to 1e-4 at t=100,300,1000."""
    s = E.get_setting(name)
    cfg = E.ToyConfig(**NOTES)
    W0 = E.init_weights(cfg, [2])
    steps, mu = E.simulate_toy(s, W0, cfg, 1000)
    _, mm = E.per_mode_map(s, mu[0, 0], cfg.eta, cfg.sigma, cfg.alpha, 1000)
    for t in (100, 300, 1000):
        assert np.abs(mu[0, t] - mm[t]).max() < 1e-4
        np.testing.assert_allclose(mu[0, t], mm[t], rtol=1e-10, atol=1e-12)


def test_notes_check_values():
    cfg = E.ToyConfig(**NOTES)
    W0 = E.init_weights(cfg, [2])
    assert round(E.eigvals_desc(W0)[0].min(), 3) == 0.105
    _, mu_b = E.simulate_toy(E.get_setting("euc_simsiam"), W0, cfg, 100)
    _, mu_i = E.simulate_toy(E.get_setting("euc_isoloss"), W0, cfg, 100)
    assert round(mu_b[0, -1].min(), 4) == 0.1295
    assert round(mu_i[0, -1].min(), 4) == 0.4631


@pytest.mark.parametrize("name", ["euc_simsiam", "euc_isoloss"])
def test_gradient_flow_matches_per_mode_ode(name):
    s = E.get_setting(name)
    cfg = E.ToyConfig(**NOTES)
    W0 = E.init_weights(cfg, [2])[0]
    mu0 = E.eigvals_desc(W0)
    t, mu_ode = E.integrate_per_mode(s, mu0, cfg.eta, cfg.sigma, cfg.alpha, 300.0, dt=0.25, record_every=4)
    _, Wf = rk4(lambda W, p: E.expected_update_euc(s, W, cfg), W0, np.zeros(0), t_end=300.0, dt=0.25, record_every=4)
    for k in (100, 300):
        assert np.abs(E.eigvals_desc(Wf[k]) - mu_ode[k]).max() < 1e-8
    ref = solve_ivp_reference(E.per_mode_rhs(s), mu0, np.array([cfg.eta, cfg.sigma, cfg.alpha]), t)
    assert np.abs(ref - mu_ode).max() < 1e-8
    # fixed point (1 + sigma^2)^(-1/alpha)
    _, late = E.integrate_per_mode(s, mu0, cfg.eta, cfg.sigma, cfg.alpha, 5000.0, dt=1.0, record_every=5000)
    np.testing.assert_allclose(late[-1], (1 + cfg.sigma ** 2) ** (-1 / cfg.alpha), rtol=1e-6)


def test_discrete_vs_continuous_gap_is_first_order_in_eta():
    s = E.get_setting("euc_isoloss")
    mu0 = np.array([0.1, 0.5, 2.0])
    gaps = []
    for eta, n in ((2e-2, 100), (1e-2, 200), (5e-3, 400)):
        _, mm = E.per_mode_map(s, mu0, eta, 0.1, 1.0, n)
        _, mo = E.integrate_per_mode(s, mu0, eta, 0.1, 1.0, float(n), dt=n / 400, record_every=400)
        gaps.append(np.abs(mm[-1] - mo[-1]).max())
    assert 1.8 < gaps[0] / gaps[1] < 2.2 and 1.8 < gaps[1] / gaps[2] < 2.2, gaps


def test_isoloss_small_mode_growth_rate_is_2eta_for_every_mode():
    s_iso, s_byol = E.get_setting("euc_isoloss"), E.get_setting("euc_simsiam")
    mu = np.array([1e-6, 1e-5])
    rhs = E.per_mode_rhs(s_iso)(mu, np.array([1e-2, 0.1, 1.0]))
    np.testing.assert_allclose(rhs / mu, 2e-2, rtol=1e-4)
    rhs_b = E.per_mode_rhs(s_byol)(mu, np.array([1e-2, 0.1, 1.0]))
    np.testing.assert_allclose(rhs_b / mu, 2e-2 * mu, rtol=1e-4)  # algebraic: 2 eta mu^(1+alpha)


# ------------------------------------------------------------------ study helpers
def test_time_to_fraction_exponential_relaxation():
    steps = np.arange(0, 10001)
    k = np.array([0.01, 0.003])
    lm = np.log(1.0) + (np.log([0.1, 5.0]) - np.log(1.0)) * np.exp(-np.outer(steps, k))
    ttf = ES.time_to_fraction(steps, np.exp(lm), frac=0.9, tail=0.001, min_log_distance=0.1)
    np.testing.assert_allclose(ttf, np.ceil(np.log(10) / k), atol=1.0)
    ttf2 = ES.time_to_fraction(steps, np.exp(lm) * np.array([1.0, 0.0]) + np.array([0.0, 1.0]),
                               frac=0.9, tail=0.01, min_log_distance=0.1)
    assert np.isnan(ttf2[1])  # a mode that does not move is excluded


def test_classify_outcome():
    kw = dict(collapse_tol=1e-3, iso_tol=0.5, diverge_tol=1e3)
    mu0 = np.array([2.0, 1.0, 0.1])
    assert ES.classify_outcome(mu0, np.array([1.0, 0.99, 0.98]), **kw) == "isotropic"
    assert ES.classify_outcome(mu0, np.array([1e-5, 1e-6, 1e-7]), **kw) == "collapse"
    assert ES.classify_outcome(mu0, np.array([1.0, 1.0, 1e-6]), **kw) == "dimensional collapse"
    assert ES.classify_outcome(mu0, np.array([1.0, 0.3, 0.1]), **kw) == "anisotropic"
    assert ES.classify_outcome(mu0, np.array([1e4, 1.0, 1.0]), **kw) == "diverged"


def test_bad_configs_raise():
    with pytest.raises(ValueError):
        E.ToyConfig(eta=0.0)
    with pytest.raises(ValueError):
        E.ToyConfig(activation="tanh")
    with pytest.raises(ValueError):
        ES.SettingsConfig(activation="relu", exact_euc=True)
    with pytest.raises(ValueError):
        ES.SpreadConfig(seeds=(0,))
    with pytest.raises(ValueError):
        ES.SpreadConfig(horizon=10_000, n_steps=100)
    with pytest.raises(ValueError):
        E.expected_update_euc(E.get_setting("cos_simsiam"), np.zeros((1, 2, 3)), E.ToyConfig())


# ------------------------------------------------------------------ studies (tiny) and CLI
TINY_SETTINGS = ES.SettingsConfig(in_dim=6, out_dim=4, n_steps=150, n_steps_nopred=300, n_samples=200,
                                  n_samples_nopred=100, exact_euc=True, record_every=10, record_every_nopred=50)
TINY_SPREAD = ES.SpreadConfig(seeds=(0, 1, 2), in_dim=6, out_dim=4, n_steps=1500, n_steps_cos=800, horizon=150, n_samples_euc=0,
                              n_samples_cos=200, check_steps=(10, 50))


def test_run_eigen_settings_writes_reuses_and_resumes(tmp_path):
    res = ES.run_eigen_settings(TINY_SETTINGS, tmp_path, progress=False)
    assert set(res["outcomes"]) == set(E.SETTING_NAMES)
    assert (tmp_path / "eigen_settings.png").stat().st_size > 0
    assert res["outcomes"]["euc_isoloss"] in ("isotropic", "anisotropic")
    assert "exact" in res["sampling"]["euc_simsiam"] and "samples" in res["sampling"]["cos_simsiam"]
    again = ES.run_eigen_settings(TINY_SETTINGS, tmp_path, progress=False)
    assert again["seconds"] == res["seconds"]  # reused, not recomputed
    # resume: delete the final JSON; the parts file supplies every setting
    (tmp_path / "eigen_settings.json").unlink()
    res2 = ES.run_eigen_settings(TINY_SETTINGS, tmp_path, progress=False)
    assert res2["settings"]["cos_simsiam"]["seconds"] == res["settings"]["cos_simsiam"]["seconds"]
    assert json.loads((tmp_path / "eigen_settings.json").read_text())["config"]["n_steps"] == 150


def test_eigen_reuse_refuses_a_result_of_another_schema(tmp_path):
    """Same config, file written by code with another schema (or none): recomputed, not reused."""
    from cffdyn.io import atomic_write_json
    from sim.report import SCHEMA
    res = ES.run_eigen_settings(TINY_SETTINGS, tmp_path, progress=False)
    assert res["schema"] == SCHEMA and ES._reuse(tmp_path / "eigen_settings.json", TINY_SETTINGS) is not None
    stale = {k: v for k, v in res.items() if k != "schema"}
    atomic_write_json(tmp_path / "eigen_settings.json", stale)
    assert ES._reuse(tmp_path / "eigen_settings.json", TINY_SETTINGS) is None
    (tmp_path / "eigen_settings.parts.jsonl").write_text("")       # force a recomputation
    again = ES.run_eigen_settings(TINY_SETTINGS, tmp_path, progress=False)
    assert again["schema"] == SCHEMA and again["seconds"] != res["seconds"]


def test_run_eigen_spread_isoloss_narrows_the_spread(tmp_path):
    res = ES.run_eigen_spread(TINY_SPREAD, tmp_path, progress=False)
    L = res["losses"]
    assert L["euc_isoloss"]["ratio_slowest_fastest_median"] < L["euc_simsiam"]["ratio_slowest_fastest_median"]
    assert L["euc_isoloss"]["mean_var_across_seeds_at_horizon"] < L["euc_simsiam"]["mean_var_across_seeds_at_horizon"]
    for row in res["ode_check"]["euc_simsiam"]["rows"]:
        assert row["max_abs_iteration_minus_map"] < 1e-10 and row["max_abs_gradflow_minus_ode"] < 1e-8
    assert (tmp_path / "eigen_spread.png").stat().st_size > 0


def test_cli(tmp_path, capsys):
    from sim.eigen_cli import apply_overrides, main
    with pytest.raises(SystemExit) as e:
        main(["settings", "--help"])
    assert e.value.code == 0
    assert "--preset" in capsys.readouterr().out
    cfg = apply_overrides(ES.SPREAD_QUICK, ["seeds=0,1", "n_steps=400", "horizon=100"])
    assert cfg.seeds == (0, 1) and cfg.n_steps == 400
    with pytest.raises(ValueError):
        apply_overrides(ES.SPREAD_QUICK, ["nope=1"])
    from cffdyn.errors import UserError
    with pytest.raises(UserError, match="--set"):  # one line via cffdyn.errors.guarded, before any study
        main(["spread", "--set", "seeds=0", "--out", str(tmp_path)])
    sets = [f"{f}={getattr(TINY_SETTINGS, f)}" for f in ("in_dim", "out_dim", "n_steps", "n_steps_nopred",
                                                          "n_samples", "n_samples_nopred", "record_every",
                                                          "record_every_nopred")]
    assert main(["settings", "--quiet", "--out", str(tmp_path)] + sum((["--set", s] for s in sets), [])) == 0
    assert "euc_isoloss=" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["euc_simsiam", "euc_isoloss"])
def test_fresh_sample_iteration_tracks_per_mode_map(name):
    """Notebook-style iteration (50,000 fresh samples per step) vs the per-mode map at t = 100.

    Measured max |difference| ~1.5e-4 (sampling noise accumulated over 100 steps); bound 1e-3.
    """
    s = E.get_setting(name)
    cfg = E.ToyConfig(**{**NOTES, "n_samples": 50_000})
    W0 = E.init_weights(cfg, [2])
    _, mu = E.simulate_toy(s, W0, cfg, 100, seed=2)
    _, mm = E.per_mode_map(s, mu[0, 0], cfg.eta, cfg.sigma, cfg.alpha, 100)
    assert np.abs(mu[0, -1] - mm[-1]).max() < 1e-3


# ------------------------------------------------------------------ n_steps, --set, records (no silent wrong result)
@pytest.mark.parametrize("n_steps,every", [(15, 10), (7, 10), (20, 10), (1, 3)])
def test_simulate_toy_runs_exactly_n_steps_and_records_the_last(n_steps, every):
    s = E.get_setting("euc_simsiam")
    cfg = E.ToyConfig(in_dim=6, out_dim=4, n_samples=0)
    W0 = E.init_weights(cfg, [0])
    steps, mu = E.simulate_toy(s, W0, cfg, n_steps, record_every=every)
    ref_steps, ref = E.simulate_toy(s, W0, cfg, n_steps, record_every=1)   # every step recorded
    assert steps[0] == 0 and steps[-1] == n_steps and len(steps) == mu.shape[1]
    np.testing.assert_array_equal(ref_steps[steps], steps)
    np.testing.assert_allclose(mu, ref[:, steps], rtol=0, atol=0)          # the same states, none skipped
    m_steps, m = E.per_mode_map(s, mu[0, 0], cfg.eta, cfg.sigma, cfg.alpha, n_steps, record_every=every)
    np.testing.assert_array_equal(m_steps, steps)


def test_settings_study_classifies_the_trained_state_when_n_steps_is_short(tmp_path):
    cfg = ES.SettingsConfig(in_dim=6, out_dim=4, n_steps=15, n_steps_nopred=15, n_samples=50, n_samples_nopred=50,
                            exact_euc=True, record_every=10, record_every_nopred=200)
    res = ES.run_eigen_settings(cfg, tmp_path, progress=False)
    s = E.get_setting("euc_simsiam")
    tc, n, _ = cfg.toy(s)
    _, ref = E.simulate_toy(s, E.init_weights(tc, [cfg.seed]), tc, 15, record_every=1, seed=cfg.seed)
    for name, r in res["settings"].items():
        assert r["n_steps"] == 15 and r["steps"][-1] == 15          # what ran is what is recorded
        assert r["eigenvalues"][-1] != r["eigenvalues"][0]           # the outcome is of a trained state
    np.testing.assert_allclose(res["settings"]["euc_simsiam"]["eigenvalues"][-1], ref[0, -1], rtol=1e-12)
    assert res["outcomes"]["euc_simsiam"] == ES.classify_outcome(
        ref[0, 0], ref[0, -1], collapse_tol=cfg.collapse_tol, iso_tol=cfg.iso_tol, diverge_tol=cfg.diverge_tol)


@pytest.mark.parametrize("pair", ["eta=-1", "in_dim=0", "sigma=-0.5", "seed=-1", "collapse_tol=-1", "iso_tol=2",
                                  "eta_fast=0", "alpha=0", "diverge_tol=0"])
def test_eigen_set_values_are_checked_when_parsed(tmp_path, capsys, pair):
    from cffdyn.errors import guarded
    from sim.eigen_cli import main
    out = tmp_path / "never"
    rc = guarded(lambda a: main(["settings", "--set", pair, "--out", str(out)]), None, "cffdyn sim eigen")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and pair.split("=")[0] in err
    assert not out.exists()                                          # refused before anything was made


@pytest.mark.parametrize("pair", ["seeds=0,-1", "eta_cos=-1", "check_steps=0", "n_samples_euc=-1"])
def test_eigen_spread_set_values_are_checked(pair):
    from sim.eigen_cli import apply_overrides
    with pytest.raises(ValueError, match=pair.split("=")[0]):
        apply_overrides(ES.SPREAD_QUICK, [pair])


def test_eigen_set_help_lists_every_key(capsys):
    import dataclasses
    from sim.eigen_cli import main
    for cmd, cfg in (("settings", ES.SETTINGS_QUICK), ("spread", ES.SPREAD_QUICK)):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert all(f"{f.name} (" in text for f in dataclasses.fields(cfg))


def test_edited_eigen_records_are_recomputed(tmp_path, capsys):
    res = ES.run_eigen_settings(TINY_SETTINGS, tmp_path, progress=False)
    j = tmp_path / "eigen_settings.json"
    j.write_text(j.read_text().replace(f'"{res["outcomes"]["euc_simsiam"]}"', '"isotropic-FAKE"', 1))
    again = ES.run_eigen_settings(TINY_SETTINGS, tmp_path, progress=False)
    assert "changed after it was written" in capsys.readouterr().err
    assert again["outcomes"] == res["outcomes"] and "isotropic-FAKE" not in j.read_text()
    # an edited part (a fabricated outcome) is recomputed, not resumed from
    parts = tmp_path / "eigen_settings.parts.jsonl"
    j.unlink()
    lines = parts.read_text().splitlines()
    rec = json.loads(lines[0])
    rec["outcome"] = "isotropic-FAKE"
    parts.write_text("\n".join([json.dumps(rec)] + lines[1:]) + "\n")
    third = ES.run_eigen_settings(TINY_SETTINGS, tmp_path, progress=False)
    assert third["outcomes"] == res["outcomes"]
