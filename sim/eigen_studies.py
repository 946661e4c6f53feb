"""Eigenmode studies of the non-contrastive toy (IsoLoss paper, notes section B).

Python API (each writes ``<out_dir>/<name>.json`` atomically + ``<name>.png`` and reuses an
intact JSON of the same schema whose recorded ``config`` equals the requested one and whose
figure exists: :func:`cffdyn.records.reusable_record`):

* ``run_eigen_settings(cfg: SettingsConfig, out_dir) -> dict`` — eigenvalue trajectories of
  ``W W^T`` for all eight settings (euc/cos x simsiam / no predictor / no stop-grad / IsoLoss) of
  the **linear** toy (Fig. 2 bottom) and the collapse / isotropy outcome of each.  Presets
  ``SETTINGS_QUICK``, ``SETTINGS_FULL``.
* ``run_eigen_settings_relu(cfg, out_dir) -> dict`` — the same for the ReLU toy (Fig. 6); presets
  ``SETTINGS_RELU_QUICK``, ``SETTINGS_RELU_FULL``.
* ``run_eigen_spread(cfg: SpreadConfig, out_dir) -> dict`` — the convergence-rate spread across
  modes (time-to-90% per mode; ratio slowest/fastest) for the four losses, the across-seed
  variance of the eigenvalues at a fixed horizon (several seeds of ``W0``), and the exact check
  of the per-mode eigenvalue map/ODE against the expected-gradient matrix iteration.  Presets
  ``SPREAD_QUICK``, ``SPREAD_FULL``.

QUICK presets use exact expectations for the linear Euclidean settings (``n_samples = 0``) and
fewer fresh samples per step elsewhere; every JSON records this under ``"sampling"``.
``run_eigen_settings`` resumes: finished settings are kept in ``<name>.parts.jsonl`` keyed by
the config.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cffdyn.errors import UserError
from cffdyn.io import (HASH_KEY, Progress, append_jsonl, atomic_write_json, content_hash, read_jsonl,
                       record_status, to_jsonable)
from cffdyn.figures import TEXT_WIDTH_IN, figure, save_figure, styled
from cffdyn.records import record_header, reusable_record, study_timing
from sim.eigen_numbers import SPREAD_LOSSES, setting_label
from sim.report import SCHEMA
from sim.eigen import (SETTINGS, Setting, ToyConfig, eigvals_desc, expected_update_euc, get_setting,
                       init_weights, integrate_per_mode, per_mode_map, simulate_toy)

__all__ = ["SettingsConfig", "SpreadConfig", "SETTINGS_QUICK", "SETTINGS_FULL", "SETTINGS_RELU_QUICK",
           "SETTINGS_RELU_FULL", "SPREAD_QUICK", "SPREAD_FULL", "run_eigen_settings",
           "run_eigen_settings_relu", "run_eigen_spread", "classify_outcome", "time_to_fraction",
           "ode_check", "fig_spread", "fig_settings"]


def _cfg_key(cfg) -> str:
    # the schema is part of the key: parts recorded by code with another layout are not resumed from
    blob = json.dumps({"schema": SCHEMA, "config": to_jsonable(cfg)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _reuse(path: Path, cfg) -> dict | None:
    """The recorded result at ``path`` when it is an intact record of ``cfg`` under
    :data:`sim.report.SCHEMA` with its figure beside it; otherwise None (recompute; an edited or
    unhashed record is said on stderr): :func:`cffdyn.records.reusable_record`."""
    return reusable_record(path, cfg, schema=SCHEMA, outputs=[path.with_suffix(".png")])


def _intact_parts(path: Path, key: str) -> dict[str, dict]:
    """Finished settings recorded in ``path`` under ``key``; a line that is not an intact
    record of ours (edited, hand-written, another layout) is recomputed."""
    if not path.exists():
        return {}
    return {r["setting"]: r for r in read_jsonl(path)
            if isinstance(r, dict) and r.get("key") == key and record_status(r) == "ok" and "setting" in r}


def _check_common(cfg, *, etas: tuple[str, ...]) -> None:
    """The toy's own ranges, checked when a study config is made (a ``--set`` value is refused
    when it is parsed, not when the study reaches it)."""
    for f in ("in_dim", "out_dim"):
        if getattr(cfg, f) < 1:
            raise ValueError(f"{f}={getattr(cfg, f)} must be >= 1")
    for f in (*etas, "alpha"):
        if not getattr(cfg, f) > 0:
            raise ValueError(f"{f}={getattr(cfg, f)} must be > 0")
    if cfg.sigma < 0:
        raise ValueError(f"sigma={cfg.sigma} must be >= 0")


# --------------------------------------------------------------------------------------------
# eight settings
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SettingsConfig:
    """Eight-setting eigenvalue study (notebook Fig. 2 bottom / Fig. 6 parameters by default)."""

    activation: str = "linear"
    in_dim: int = 15
    out_dim: int = 10
    sigma: float = 0.1
    alpha: float = 1.0
    eta: float = 1e-2                 # euc_simsiam, euc_simsiam_nosg, euc_isoloss
    eta_fast: float = 0.1             # euc_simsiam_nopred and every cos_* setting (notebook)
    n_steps: int = 1500
    n_steps_nopred: int = 100_000
    n_samples: int = 50_000           # fresh samples per step
    n_samples_nopred: int = 50_000
    exact_euc: bool = False           # linear toy: exact expectation for the Euclidean settings
    record_every: int = 5
    record_every_nopred: int = 200
    seed: int = 2                     # W0 = N(0,1)/4 from default_rng(seed)
    collapse_tol: float = 1e-3        # max mu < tol*max mu0: collapse; min/max < tol: dimensional collapse
    iso_tol: float = 0.8              # min/max >= iso_tol: isotropic (else anisotropic: not converged)
    diverge_tol: float = 1e3          # max mu > tol: diverged

    def __post_init__(self) -> None:
        if self.activation not in ("linear", "relu"):
            raise ValueError(f"activation={self.activation!r} must be 'linear' or 'relu'")
        _check_common(self, etas=("eta", "eta_fast"))
        for f in ("collapse_tol", "diverge_tol"):
            if not getattr(self, f) > 0:
                raise ValueError(f"{f}={getattr(self, f)} must be > 0")
        if not 0 < self.iso_tol <= 1:
            raise ValueError(f"iso_tol={self.iso_tol} must be in (0, 1]")
        if self.seed < 0:
            raise ValueError(f"seed={self.seed} must be >= 0")
        for f in ("n_steps", "n_steps_nopred", "record_every", "record_every_nopred"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f}={getattr(self, f)} must be >= 1")
        if self.n_samples < 1 or self.n_samples_nopred < 1:
            raise ValueError("n_samples and n_samples_nopred must be >= 1")
        if self.exact_euc and self.activation != "linear":
            raise ValueError("exact_euc needs activation='linear' (no closed-form expectation with ReLU)")

    def toy(self, s: Setting) -> tuple[ToyConfig, int, int]:
        nopred = not s.predictor
        eta = self.eta_fast if (s.loss == "cos" or nopred) else self.eta
        exact = self.exact_euc and s.loss == "euc"
        n = 0 if exact else (self.n_samples_nopred if nopred else self.n_samples)
        tc = ToyConfig(in_dim=self.in_dim, out_dim=self.out_dim, eta=eta, sigma=self.sigma, alpha=self.alpha,
                       activation=self.activation, n_samples=n)
        return tc, (self.n_steps_nopred if nopred else self.n_steps), \
            (self.record_every_nopred if nopred else self.record_every)


SETTINGS_FULL = SettingsConfig(n_samples_nopred=5000)     # notebook, except 5,000 samples/step for the 1e5-step nopred runs
SETTINGS_QUICK = SettingsConfig(n_samples=1000, n_samples_nopred=200, n_steps_nopred=10_000, exact_euc=True,
                                record_every=10, record_every_nopred=200)
SETTINGS_RELU_FULL = SettingsConfig(activation="relu", n_samples_nopred=5000)
SETTINGS_RELU_QUICK = SettingsConfig(activation="relu", n_samples=500, n_samples_nopred=200,
                                     n_steps_nopred=10_000, record_every=10, record_every_nopred=200)


def classify_outcome(mu0: np.ndarray, mu_end: np.ndarray, *, collapse_tol: float, iso_tol: float,
                     diverge_tol: float) -> str:
    """'diverged' | 'collapse' | 'dimensional collapse' | 'isotropic' | 'anisotropic' from eigenvalues."""
    mu0, mu_end = np.asarray(mu0, float), np.asarray(mu_end, float)
    if not np.all(np.isfinite(mu_end)) or mu_end.max() > diverge_tol:
        return "diverged"
    top = max(mu_end.max(), 0.0)
    if top < collapse_tol * mu0.max():
        return "collapse"
    ratio = max(mu_end.min(), 0.0) / top
    if ratio < collapse_tol:
        return "dimensional collapse"
    return "isotropic" if ratio >= iso_tol else "anisotropic"


def _run_settings(cfg: SettingsConfig, out_dir, name: str, *, progress: bool = True) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / f"{name}.json"
    old = _reuse(jpath, cfg)
    if old is not None:
        return old
    key = _cfg_key(cfg)
    parts_path = out / f"{name}.parts.jsonl"
    done = _intact_parts(parts_path, key)
    W0 = init_weights(ToyConfig(in_dim=cfg.in_dim, out_dim=cfg.out_dim), [cfg.seed])
    t_start = time.perf_counter()
    for s in SETTINGS:
        if s.name in done:
            continue
        tc, n_steps, rec = cfg.toy(s)
        prog = Progress(n_steps, f"{name}:{s.name}", enabled=progress)
        t0 = time.perf_counter()
        try:
            steps, mu = simulate_toy(s, W0, tc, n_steps, record_every=rec, seed=cfg.seed, progress=prog.update)
            mu = mu[0]
            err = None
        except FloatingPointError as e:  # diverging settings are an outcome, not a crash
            steps, mu, err = np.arange(1), eigvals_desc(W0), str(e)
        outcome = "diverged" if err else classify_outcome(mu[0], mu[-1], collapse_tol=cfg.collapse_tol,
                                                          iso_tol=cfg.iso_tol, diverge_tol=cfg.diverge_tol)
        rec_ = {"key": key, "setting": s.name, "eta": tc.eta, "n_steps": n_steps,
                "sampling": "exact expectation" if tc.n_samples == 0 else f"{tc.n_samples} fresh samples/step",
                "steps": steps, "eigenvalues": mu, "outcome": outcome, "error": err,
                "min_over_max_start": float(mu[0].min() / mu[0].max()),
                "min_over_max_end": float(mu[-1].min() / mu[-1].max()) if mu[-1].max() > 0 else None,
                "trace_end": float(mu[-1].sum()), "seconds": time.perf_counter() - t0}
        rec_ = to_jsonable(rec_)
        rec_[HASH_KEY] = content_hash(rec_)
        append_jsonl(parts_path, [rec_])
        done[s.name] = rec_
    res = {**record_header(SCHEMA, cfg), "name": name, "seed": cfg.seed, "n_inits": 1,
           "sampling": {k: done[k]["sampling"] for k in SETTING_ORDER},
           "settings": {k: {kk: v for kk, v in done[k].items() if kk not in ("key", HASH_KEY)} for k in SETTING_ORDER},
           "outcomes": {k: done[k]["outcome"] for k in SETTING_ORDER},
           **study_timing(t_start)}
    save_figure(fig_settings(to_jsonable(res)), out, name, formats=("png",), dpi=110)
    atomic_write_json(jpath, res)
    return res


SETTING_ORDER = tuple(s.name for s in SETTINGS)


def run_eigen_settings(cfg: SettingsConfig = SETTINGS_QUICK, out_dir="results/sim/eigen", *,
                       progress: bool = True) -> dict:
    """Eight-setting eigenvalue trajectories and outcomes, linear toy (``eigen_settings.json/.png``)."""
    if cfg.activation != "linear":
        raise ValueError("run_eigen_settings is the linear toy; use run_eigen_settings_relu")
    return _run_settings(cfg, out_dir, "eigen_settings", progress=progress)


def run_eigen_settings_relu(cfg: SettingsConfig = SETTINGS_RELU_QUICK, out_dir="results/sim/eigen", *,
                            progress: bool = True) -> dict:
    """Eight-setting eigenvalue trajectories and outcomes, ReLU toy (``eigen_settings_relu.json/.png``)."""
    if cfg.activation != "relu":
        raise ValueError("run_eigen_settings_relu needs activation='relu'")
    return _run_settings(cfg, out_dir, "eigen_settings_relu", progress=progress)


# --------------------------------------------------------------------------------------------
# convergence spread and seed variance
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpreadConfig:
    """Convergence-rate spread across modes and across-seed variance at a fixed horizon."""

    losses: tuple[str, ...] = SPREAD_LOSSES
    seeds: tuple[int, ...] = tuple(range(8))
    in_dim: int = 15
    out_dim: int = 10
    sigma: float = 0.1
    alpha: float = 1.0
    eta_euc: float = 1e-2
    eta_cos: float = 0.1
    n_steps: int = 3000               # Euclidean losses; long enough for every mode to converge (time-to-90%)
    n_steps_cos: int = 3000           # cosine losses (eta_cos is 10x larger; they converge sooner)
    horizon: int = 300                # fixed horizon of the across-seed variance
    n_samples_euc: int = 50_000       # 0 = exact expectation (linear toy)
    n_samples_cos: int = 50_000
    frac: float = 0.9                 # time-to-frac of the way (in log mu) to the final value
    min_log_distance: float = 0.25    # modes starting closer than this (|log mu0 - log mu_end|) are excluded
    tail: float = 0.1                 # final value = mean over the last `tail` fraction of the run
    check_seed: int = 2
    check_steps: tuple[int, ...] = (100, 300, 1000)

    def __post_init__(self) -> None:
        _check_common(self, etas=("eta_euc", "eta_cos"))
        if any(sd < 0 for sd in (*self.seeds, self.check_seed)):
            raise ValueError(f"seeds={self.seeds} and check_seed={self.check_seed} must be >= 0")
        if self.n_samples_euc < 0:
            raise ValueError(f"n_samples_euc={self.n_samples_euc} must be >= 0 (0 = exact expectation)")
        if self.min_log_distance < 0:
            raise ValueError(f"min_log_distance={self.min_log_distance} must be >= 0")
        if not self.check_steps or min(self.check_steps) < 1:
            raise ValueError(f"check_steps={self.check_steps} must be steps >= 1")
        if not self.losses:
            raise ValueError("losses is empty")
        for l in self.losses:
            if get_setting(l).name not in SPREAD_LOSSES:
                raise ValueError(f"loss {l!r} not in {SPREAD_LOSSES}")
        if len(self.seeds) < 2:
            raise ValueError("need at least 2 seeds for an across-seed variance")
        if not 0 < self.horizon <= min(self.n_steps, self.n_steps_cos):
            raise ValueError(f"horizon={self.horizon} must be in (0, min(n_steps, n_steps_cos)]")
        if not 0 < self.frac < 1 or not 0 < self.tail < 1:
            raise ValueError("frac and tail must be in (0, 1)")
        if self.n_samples_cos < 1:
            raise ValueError("n_samples_cos must be >= 1 (no closed-form expectation for the cosine loss)")
        if max(self.check_steps) > 100_000:
            raise ValueError("check_steps too large")


SPREAD_FULL = SpreadConfig()
SPREAD_QUICK = SpreadConfig(n_samples_euc=0, n_samples_cos=300, n_steps=2000, n_steps_cos=1200)


def time_to_fraction(steps: np.ndarray, mu: np.ndarray, *, frac: float, tail: float,
                     min_log_distance: float) -> np.ndarray:
    """Per mode (last axis), the first step at which ``|log mu - log mu_end| <= (1-frac) |log mu0 - log mu_end|``.

    ``mu_end`` is the mean of ``log mu`` over the last ``tail`` of the records.  NaN for modes
    with ``|log mu0 - log mu_end| < min_log_distance`` or that never get there.
    """
    lm = np.log(np.clip(mu, 1e-300, None))
    n_tail = max(1, int(round(tail * lm.shape[0])))
    end = lm[-n_tail:].mean(axis=0)
    d0 = np.abs(lm[0] - end)
    d = np.abs(lm - end)
    ok = d <= (1 - frac) * d0
    first = np.where(ok.any(axis=0), steps[np.argmax(ok, axis=0)].astype(float), np.nan)
    first[d0 < min_log_distance] = np.nan
    return first


def ode_check(cfg: SpreadConfig) -> dict:
    """Expected-gradient matrix iteration vs the per-mode map and vs the per-mode ODE (rk4)."""
    from sim.integrate import rk4
    out = {}
    T = max(cfg.check_steps)
    for name in ("euc_simsiam", "euc_isoloss"):
        s = get_setting(name)
        tc = ToyConfig(in_dim=cfg.in_dim, out_dim=cfg.out_dim, eta=cfg.eta_euc, sigma=cfg.sigma, alpha=cfg.alpha,
                       n_samples=0)
        W0 = init_weights(tc, [cfg.check_seed])
        steps, mu_it = simulate_toy(s, W0, tc, T)
        mu0 = mu_it[0, 0]
        _, mu_map = per_mode_map(s, mu0, tc.eta, tc.sigma, tc.alpha, T)
        t_ode, mu_ode = integrate_per_mode(s, mu0, tc.eta, tc.sigma, tc.alpha, float(T), dt=0.25, record_every=4)
        # continuous-time matrix gradient flow dW/dt = E[dW] (one unit of time = one step)
        _, W_flow = rk4(lambda W, p: expected_update_euc(s, W, tc), W0[0], np.zeros(0), t_end=float(T), dt=0.25,
                        record_every=4)
        rows = []
        for t in cfg.check_steps:
            rows.append({"t": t, "min_eig_iteration": float(mu_it[0, t].min()),
                         "max_abs_iteration_minus_map": float(np.abs(mu_it[0, t] - mu_map[t]).max()),
                         "max_abs_iteration_minus_ode": float(np.abs(mu_it[0, t] - mu_ode[t]).max()),
                         "max_abs_gradflow_minus_ode": float(np.abs(eigvals_desc(W_flow[t]) - mu_ode[t]).max())})
        out[name] = {"mu0_min": float(mu0.min()), "rows": rows}
    return out


def run_eigen_spread(cfg: SpreadConfig = SPREAD_QUICK, out_dir="results/sim/eigen", *, progress: bool = True) -> dict:
    """Time-to-90% spread across modes, across-seed variance, ODE check (``eigen_spread.json/.png``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / "eigen_spread.json"
    old = _reuse(jpath, cfg)
    if old is not None:
        return old
    t_start = time.perf_counter()
    res: dict = {**record_header(SCHEMA, cfg), "name": "eigen_spread", "n_seeds": len(cfg.seeds), "sampling": {},
                 "losses": {}}
    for name in cfg.losses:
        s = get_setting(name)
        euc = s.loss == "euc"
        tc = ToyConfig(in_dim=cfg.in_dim, out_dim=cfg.out_dim, eta=cfg.eta_euc if euc else cfg.eta_cos,
                       sigma=cfg.sigma, alpha=cfg.alpha, n_samples=cfg.n_samples_euc if euc else cfg.n_samples_cos)
        res["sampling"][name] = "exact expectation" if tc.n_samples == 0 else f"{tc.n_samples} fresh samples/step"
        W0 = init_weights(tc, list(cfg.seeds))
        n_steps = cfg.n_steps if euc else cfg.n_steps_cos
        prog = Progress(n_steps, f"eigen_spread:{name}", enabled=progress)
        t0 = time.perf_counter()
        try:
            steps, mu = simulate_toy(s, W0, tc, n_steps, seed=cfg.seeds[0], progress=prog.update)
        except FloatingPointError as exc:   # the spread of a diverged run is not defined: one line, no record
            raise UserError(f"eigen spread: {exc} (eta={tc.eta:g})",
                            f"use a smaller {'eta_euc' if euc else 'eta_cos'} (--set), or the preset's") from None
        ttf = np.stack([time_to_fraction(steps, mu[k], frac=cfg.frac, tail=cfg.tail,
                                         min_log_distance=cfg.min_log_distance) for k in range(mu.shape[0])])
        ratios = np.array([np.nanmax(r) / np.nanmin(r) if np.sum(np.isfinite(r)) >= 2 else np.nan for r in ttf])
        at_h = mu[:, cfg.horizon]
        res["losses"][name] = {
            "eta": tc.eta, "n_steps": n_steps,
            "time_to_frac": ttf, "mu0": mu[:, 0],
            "ratio_slowest_fastest": ratios,
            "ratio_slowest_fastest_median": float(np.nanmedian(ratios)),
            "n_modes_excluded": int(np.isnan(ttf).sum()),
            "eig_at_horizon": at_h,
            "var_across_seeds_at_horizon": at_h.var(axis=0, ddof=1),
            "mean_var_across_seeds_at_horizon": float(at_h.var(axis=0, ddof=1).mean()),
            "mean_var_log_across_seeds_at_horizon": float(np.log(at_h).var(axis=0, ddof=1).mean()),
            "mean_var_normalized_across_seeds_at_horizon":
                float((at_h / at_h.mean(axis=1, keepdims=True)).var(axis=0, ddof=1).mean()),
            "mean_var_across_seeds_end": float(mu[:, -1].var(axis=0, ddof=1).mean()),
            "min_over_max_end": (mu[:, -1].min(1) / mu[:, -1].max(1)),
            "mean_trajectory_seed0": {"steps": steps[::10], "eigenvalues": mu[0, ::10]},
            "seconds": time.perf_counter() - t0,
        }
    res["ode_check"] = ode_check(cfg)
    res.update(study_timing(t_start))
    save_figure(fig_spread(to_jsonable(res)), out, "eigen_spread", formats=("png",), dpi=110)
    atomic_write_json(jpath, res)
    return to_jsonable(res)


@styled
def fig_spread(d: dict):
    """Per-mode time to the fraction against the initial eigenvalue, and the seed-0 trajectories, one
    colour per loss; drawn at its printed size (the text width)."""
    fig, axes = figure(TEXT_WIDTH_IN, 3.0, ncols=2)
    handles = []
    for i, name in enumerate(n for n in SPREAD_LOSSES if n in d["losses"]):
        r = d["losses"][name]
        mu0 = np.asarray(r["mu0"], float).ravel()
        ttf = np.asarray([np.nan if x is None else x for x in np.asarray(r["time_to_frac"], dtype=object).ravel()],
                         float)
        h = axes[0].scatter(mu0, ttf, s=8, color=f"C{i}", label=f"{setting_label(name)} ($\\eta$ = {r['eta']:g})")
        handles.append(h)
        tr = r["mean_trajectory_seed0"]
        mu = np.asarray(tr["eigenvalues"], float)
        for m in range(mu.shape[1]):
            axes[1].plot(tr["steps"], mu[:, m], color=f"C{i}", lw=0.8)
    cfg = d["config"]
    axes[0].set(xscale="log", yscale="log", xlabel=r"initial eigenvalue $\mu_0$ of $WW^\top$",
                ylabel=f"time to {100 * cfg['frac']:.0f}% of the way (steps)",
                title=f"{d['n_seeds']} seeds of $W_0$ (one point per mode)")
    axes[1].set(yscale="log", xlabel="training step", ylabel=r"eigenvalue of $WW^\top$",
                title="eigenvalue trajectories, seed 0")
    fig.legend(handles=handles, loc="outside lower center", ncols=2)
    fig.suptitle(f"linear toy, $M$ = {cfg['out_dim']}, $N$ = {cfg['in_dim']}, $\\sigma$ = {cfg['sigma']}, "
                 f"$\\alpha$ = {cfg['alpha']}")
    return fig


@styled
def fig_settings(d: dict):
    """Eigenvalue trajectories; values below FLOOR (collapsed modes, exact zeros) are drawn at
    FLOOR (dotted line) so the log axis can show them; the caption says so."""
    from matplotlib.ticker import MaxNLocator
    FLOOR = 1e-6
    names = list(d["settings"])
    ncol = 4
    nrow = math.ceil(len(names) / ncol)
    fig, axes = figure(TEXT_WIDTH_IN, 1.9 * nrow + 0.4, nrows=nrow, ncols=ncol, squeeze=False, sharey=True)
    for ax, name in zip(axes.ravel(), names):
        s = d["settings"][name]
        mu = np.asarray(s["eigenvalues"], float)
        ax.plot(s["steps"], np.clip(mu, FLOOR, None), lw=0.8)
        ax.axhline(FLOOR, color="0.5", lw=0.6, ls=":")
        ax.set_yscale("log")
        ax.set_title(f"{setting_label(name)}:\n{s['outcome']}", fontsize=7)
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
    for ax in axes[:, 0]:
        ax.set_ylabel(r"eigenvalues of $WW^\top$")
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    cfg = d["config"]
    fig.suptitle(f"{cfg['activation']} toy, $M$ = {cfg['out_dim']} modes (one line each), $N$ = {cfg['in_dim']}, "
                 f"1 seed ($W_0$ seed {cfg['seed']}); values below {FLOOR:g} drawn at {FLOOR:g} (dotted)")
    return fig
