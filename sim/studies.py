"""The five one-layer-model studies (the speed benchmark is :mod:`sim.bench`).

Python API (the paper build calls these)::

    from sim import studies as S
    res = S.run_convergence(S.CONVERGENCE_QUICK, "results/sim")   # -> dict; convergence.json/.png
    S.run_hfunc(S.HFUNC_QUICK, out);  S.run_phase(S.PHASE_QUICK, out)
    S.run_noise(S.NOISE_QUICK, out);  S.run_clamp(S.CLAMP_QUICK, out)

Each ``run_<name>(cfg, out_dir)`` writes ``<out_dir>/<name>.json`` (atomically) and
``<name>.png`` and returns the JSON dict; an existing JSON whose recorded ``config`` equals the
requested one is returned unchanged (``reuse=False`` forces a rerun).  Each config is a frozen
dataclass with a ``*_QUICK`` (CPU, seconds) and ``*_FULL`` preset.  The PNG is drawn by
``fig_<name>(result)`` from the JSON dict alone, at the manuscript's printed size
(:mod:`cffdyn.figures`); the paper build calls the same function for its PDF and PNG.

convergence  ODE vs SGD mean +- SD for N in {1e3, 1e4, 1e5} (Fig. 2a analogue); fits the
             exponent of the RMS (over trials) maximum deviation |Q_i(t) - Q_ode(t)| vs N
             (expected -1/2); checks RK4 against solve_ivp and the reduced SGD engine against
             the full one at N = 1e3.
hfunc        h(Q) = Qdot/tau with fixed points and stability (Fig. 2b); learnability constants
             kappa, v vs the notes' table and the ODE's slope at Q = 0 vs 2[(m2-1)kappa - tau v].
phase        two-feature phase portrait (Fig. 3 analogue): streamlines, fixed points, attraction
             regions (RK4 batch over a grid of initial conditions), SGD trajectories; share of
             initial conditions won by feature 1 vs m4/m2^2 at fixed m2 (claim ii), and the
             eigenvalues at Q = 0 for each m4 (unchanged: only m2 enters).  The JSON holds
             what the portrait draws: the grid of winners (one string per row), the
             streamline field and the SGD paths (4 significant digits).
noise        stationary Q* vs sigma_n^2 for several rho and tau (Fig. 4 analogue), SGD points,
             comparison with the notes' table.
clamp        (sim.clamp_study) N Var(Q) and the clamp/subtract variance ratio predicted by the
             linear-noise theory of sim.fluctuations and measured by SGD over stationary
             windows with batch-means 95% intervals; the bridge to the ViT (ratio vs CAR).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cffdyn.io import Progress, to_jsonable
from cffdyn.figures import TEXT_WIDTH_IN, figure, pyplot, styled
from sim.report import finish, reuse_recorded
from sim.clamp_study import CLAMP_FULL, CLAMP_QUICK, ClampConfig, run_clamp
from sim.fluctuations import find_fixed_points, ode_stationary_point
from sim.model import Law, MFConfig
from sim.ode import integrate_ode, integrate_ode_batch, jacobian_fd, learnability, rhs_numpy
from sim.sgd import SGDConfig, run_sgd

__all__ = ["ConvergenceConfig", "HFuncConfig", "PhaseConfig", "NoiseConfig", "ClampConfig",
           "CONVERGENCE_QUICK", "CONVERGENCE_FULL", "HFUNC_QUICK", "HFUNC_FULL",
           "PHASE_QUICK", "PHASE_FULL", "NOISE_QUICK", "NOISE_FULL", "CLAMP_QUICK", "CLAMP_FULL",
           "run_convergence", "run_hfunc", "run_phase", "run_noise", "run_clamp", "NOTES_LEARNABILITY", "NOTES_NOISE_TABLE", "STUDIES", "fig_convergence", "fig_hfunc",
           "fig_phase", "fig_noise", "winner_grid"]

# Values quoted in the notes (A.4), used only for side-by-side comparison in the reports.
NOTES_LEARNABILITY = {"tanh": (0.1818, 0.07505), "relu": (0.5, 0.5), "identity": (1.0, 1.0)}
NOTES_NOISE_TABLE = {  # (tau, rho) -> {sigma_n^2: Q*}; None = recovery fixed point absent
    (1.0, 0.0): {0: 0.9798, 0.25: 0.9516, 0.5: 0.9188, 1.0: 0.8330, 1.5: 0.6800, 2.0: None},
    (1.0, -1.0): {0: 0.9798, 0.25: 0.9554, 0.5: 0.9231, 1.0: 0.8621, 1.5: 0.8027, 2.0: 0.7406},
    (2.0, 0.0): {0: 0.9437, 0.25: 0.8739, 0.5: 0.7820, 1.0: None},
    (2.0, -1.0): {0: 0.9437, 0.25: 0.8782, 0.5: 0.8048, 1.0: 0.6379},
    (3.0, 0.0): {0: 0.8794, 0.25: 0.7457, 0.5: None, 1.0: None},
    (3.0, -1.0): {0: 0.8794, 0.25: 0.7635, 0.5: 0.5882, 1.0: None},
}


def _recorded(cfg, res: dict) -> dict:
    """A study's result as its JSON will hold it (config included, arrays as lists, non-finite
    values as null): what the figure functions draw, here and in the paper build."""
    return to_jsonable({"config": cfg, **res})


# =========================================================================== 1. convergence
@dataclass(frozen=True)
class ConvergenceConfig:
    """ODE vs SGD of the one-unit ``model`` (tanh, Rademacher c, one feature) from Q0; SGD
    (reduced engine) for each N in Ns with ``trials`` trials; full engine cross-check at
    N = Ns[0]; ``n_boot`` bootstrap resamples (over trials, within each N) for the exponents' CIs."""
    model: MFConfig = MFConfig(tau=0.5, m2=(3.0,))
    q0: float = 0.1
    t_end: float = 10.0
    n_records: int = 50
    Ns: tuple[int, ...] = (500, 1000, 2000, 4000, 8000)
    trials: int = 64
    full_check_trials: int = 8
    dt: float = 0.005
    n_boot: int = 1000
    seed: int = 0


CONVERGENCE_QUICK = ConvergenceConfig()
CONVERGENCE_FULL = ConvergenceConfig(trials=128, full_check_trials=32, Ns=(1000, 3000, 10000, 30000, 100000))


def fit_exponent(Ns, devs) -> tuple[float, float]:
    """Least-squares slope of log(dev) vs log(N) and its regression standard error (nan with
    two points).  The study reports a bootstrap CI instead (:func:`bootstrap_slope`)."""
    x, y = np.log(np.asarray(Ns, float)), np.log(np.asarray(devs, float))
    A = np.vstack([x, np.ones_like(x)]).T
    coef, res, *_ = np.linalg.lstsq(A, y, rcond=None)
    if x.size > 2:
        s2 = float(np.sum((y - A @ coef) ** 2)) / (x.size - 2)
        se = math.sqrt(s2 / np.sum((x - x.mean()) ** 2))
    else:
        se = float("nan")
    return float(coef[0]), se


def _fluct(q: np.ndarray) -> float:
    """RMS over record times (t > 0) of the across-trial SD of Q(t)."""
    return float(np.sqrt(np.mean(q[:, 1:].var(axis=0, ddof=1))))


def bootstrap_slope(Ns, samples: list[np.ndarray], stat, n_boot: int, seed: int) -> tuple[float, list[float]]:
    """Slope of log stat(trials_N) vs log N and its percentile 95% CI, resampling trials
    (rows of each ``samples[i]``) with replacement independently for every N."""
    rng = np.random.default_rng(seed)
    est, _ = fit_exponent(Ns, [stat(x) for x in samples])
    boots = []
    for _ in range(n_boot):
        vals = [stat(x[rng.integers(0, x.shape[0], x.shape[0])]) for x in samples]
        if all(v > 0 for v in vals):
            boots.append(fit_exponent(Ns, vals)[0])
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (float("nan"), float("nan"))
    return est, [float(lo), float(hi)]


def run_convergence(cfg: ConvergenceConfig, out_dir, *, reuse: bool = True, progress: bool = True) -> dict:
    """ODE vs SGD, with the fluctuation (across-trial SD, expected N^-1/2 by the CLT whatever
    the drift) and the bias (mean - ODE, expected O(1/N) if the ODE is the right limit)
    reported separately; the bias at the escape time (ODE Q halfway) and at t_end with its SE."""
    from scipy.stats import t as student_t

    out_dir = Path(out_dir)
    if (old := reuse_recorded(out_dir, "convergence", cfg, reuse)) is not None:
        return old
    if len(cfg.Ns) < 2 or cfg.trials < 2:
        raise ValueError("convergence needs >= 2 values of N and >= 2 trials")
    t0 = time.perf_counter()
    mf = cfg.model
    t_fine, Y = integrate_ode(mf, [cfg.q0], t_end=cfg.t_end, dt=cfg.dt)
    _, Yref = integrate_ode(mf, [cfg.q0], t_end=cfg.t_end, dt=cfg.dt, method="DOP853")
    t_ode = np.linspace(0.0, cfg.t_end, cfg.n_records + 1)
    q_ode = np.interp(t_ode, t_fine, Y[:, 0])
    half = 0.5 * (q_ode[0] + q_ode[-1])
    i_half = int(np.argmin(np.abs(q_ode - half)))  # the escape from q0: most jitter-sensitive
    prog = Progress(len(cfg.Ns) + 1, "convergence", enabled=progress)
    rows, Qs = [], []
    for i, N in enumerate(cfg.Ns):
        ts = time.perf_counter()
        r = run_sgd(mf, SGDConfig(N=N, trials=cfg.trials, t_end=cfg.t_end, n_records=cfg.n_records,
                                  engine="reduced", seed=cfg.seed + i), [cfg.q0])
        q = r.Q[:, :, 0]
        Qs.append(q)
        q_ref = np.interp(r.t, t_fine, Y[:, 0])
        mean, sd = q.mean(0), q.std(0, ddof=1)
        se = sd / math.sqrt(cfg.trials)
        tq = float(student_t.ppf(0.975, cfg.trials - 1))
        bias = {}
        for tag, j in (("escape", i_half), ("end", cfg.n_records)):
            b = float(mean[j] - q_ref[j])
            bias[tag] = {"t": float(r.t[j]), "bias": b, "se": float(se[j]), "z": b / float(se[j]),
                         "N_bias": N * b, "N_se": N * float(se[j]),
                         "ci95": [b - tq * float(se[j]), b + tq * float(se[j])]}
        rows.append({"N": N, "t": r.t, "mean": mean, "sd": sd, "bias_t": mean - q_ref, "se_t": se,
                     "fluct": _fluct(q), "bias": bias,
                     "max_abs_z": float(np.max(np.abs((mean - q_ref)[1:] / se[1:]))),
                     "rms_max_dev": float(np.sqrt(np.mean(np.max(np.abs(q - q_ref[None, :]), axis=1) ** 2))),
                     "seconds": time.perf_counter() - ts})
        prog.update(i + 1, f"N={N}")
    Ns = list(cfg.Ns)
    slope, ci = bootstrap_slope(Ns, Qs, _fluct, cfg.n_boot, cfg.seed + 99)
    bias_end = [abs(r_["bias"]["end"]["bias"]) for r_ in rows]
    resolved = all(abs(r_["bias"]["end"]["z"]) > 2 for r_ in rows)
    if resolved:
        q_end = [q[:, -1] - q_ode[-1] for q in Qs]
        b_slope, b_ci = bootstrap_slope(Ns, [x[:, None] for x in q_end], lambda x: abs(float(x.mean())),
                                        cfg.n_boot, cfg.seed + 98)
        bias_exp = {"est": b_slope, "ci95": b_ci, "resolved": True}
    else:
        bias_exp = {"est": fit_exponent(Ns, [max(b, 1e-300) for b in bias_end])[0], "ci95": None, "resolved": False,
                    "note": "the bias at t_end is within 2 SE of zero at some N: its exponent is not resolved"}
    N0 = cfg.Ns[0]
    rf = run_sgd(mf, SGDConfig(N=N0, trials=cfg.full_check_trials, t_end=cfg.t_end, n_records=cfg.n_records,
                               engine="full", seed=cfg.seed + 1000), [cfg.q0])
    rr = run_sgd(mf, SGDConfig(N=N0, trials=cfg.trials, t_end=cfg.t_end, n_records=cfg.n_records,
                               engine="reduced", seed=cfg.seed + 2000), [cfg.q0])
    qf, qr = rf.Q[:, :, 0], rr.Q[:, :, 0]
    se_diff = np.sqrt(qf.var(0, ddof=1) / qf.shape[0] + qr.var(0, ddof=1) / qr.shape[0]) + 1e-12
    z = np.abs(qf.mean(0) - qr.mean(0)) / se_diff
    prog.update(len(cfg.Ns) + 1, "full-engine check")
    fl = np.array([r_["fluct"] for r_ in rows])
    res = {"t": t_ode, "q_ode": q_ode, "rk4_vs_solve_ivp_max": float(np.max(np.abs(Y - Yref))),
           "rows": rows, "exponent": slope, "exponent_ci95": ci, "exponent_se": fit_exponent(Ns, fl)[1],
           "bias_exponent": bias_exp, "t_escape": float(t_ode[i_half]),
           "full_vs_reduced": {"N": N0, "max_abs_mean_diff": float(np.max(np.abs(qf.mean(0) - qr.mean(0)))),
                               "max_z": float(np.max(z)), "full_trials": int(qf.shape[0]),
                               "reduced_trials": int(qr.shape[0])}}
    fig = fig_convergence(_recorded(cfg, res))
    return finish(out_dir, "convergence", cfg, res, fig, t0)


@styled
def fig_convergence(d: dict, *, width_in: float = TEXT_WIDTH_IN, height_in: float = 2.9):
    """ODE vs SGD mean +- SD over time, the fluctuation against N with its N^-1/2 reference, and
    N x bias at the escape and end times (95% CI) from a convergence result."""
    fig, ax = figure(width_in, height_in, ncols=3)
    t = np.asarray(d["t"], float)
    ax[0].plot(t, d["q_ode"], "k-", lw=1.5, label="mean-field ODE (RK4)")
    for j, r in enumerate(d["rows"]):
        ax[0].errorbar(np.asarray(r.get("t", t), float) + 0.04 * j, r["mean"], yerr=r["sd"], fmt="o", ms=2,
                       capsize=1, lw=0.6, label=f"SGD $N$ = {r['N']:g}")
    ax[0].set(xlabel="time $t$ = steps / $N$", ylabel="overlap $Q(t)$ (cosine)",
              title=f"mean ± SD over {d['config']['trials']} trials")
    Ns = np.array([r["N"] for r in d["rows"]], float)
    fl = np.array([r["fluct"] for r in d["rows"]])
    ax[1].loglog(Ns, fl, "o-", label="RMS over $t$ of the SD")
    ax[1].loglog(Ns, fl[0] * (Ns / Ns[0]) ** -0.5, "k:", label="$N^{-1/2}$ reference")
    lo, hi = d["exponent_ci95"]
    ax[1].set(xlabel="dimension $N$", ylabel="fluctuation (cosine units)",
              title=f"exponent {d['exponent']:.3f}\n95% CI [{lo:.3f}, {hi:.3f}]".replace("-", "\u2212"))
    for tag, mk, dx in (("escape", "o", 1.0), ("end", "s", 1.05)):
        nb = np.array([r["bias"][tag]["N_bias"] for r in d["rows"]])
        ns = np.array([r["bias"][tag]["N_se"] for r in d["rows"]])
        ax[2].errorbar(Ns * dx, nb, yerr=1.96 * ns, fmt=mk, capsize=2,
                       label=f"$t$ = {d['rows'][0]['bias'][tag]['t']:.1f} ({'escape' if tag == 'escape' else 'end'})")
    ax[2].axhline(0, color="k", lw=0.6)
    ax[2].set(xscale="log", xlabel="dimension $N$", ylabel=r"$N \times$ (mean $Q$ $-$ ODE), 95% CI",
              title="bias: bounded $N \\times$ bias\nmeans $O(1/N)$")
    from matplotlib.ticker import NullLocator
    for a in ax[1:]:  # the N values themselves as ticks: minor log labels collided
        a.set_xticks(Ns)
        a.set_xticklabels([f"{int(n)}" for n in Ns], rotation=45)
        a.xaxis.set_minor_locator(NullLocator())
    ax[0].legend(loc="best", fontsize=7, handlelength=1.2)
    for a in ax[1:]:
        a.legend(loc="best")
    c = d["config"]
    fig.suptitle(f"one feature, tanh, $m_2$ = {c['model']['m2'][0]:g}, $\\tau$ = {c['model']['tau']:g}, Rademacher $c$")
    return fig


# =========================================================================== 2. hfunc
@dataclass(frozen=True)
class HFuncConfig:
    """h(Q) = Qdot/tau on a grid of Q for each activation and tau of the one-feature ``model``
    (its activation and tau are those of the sweep)."""
    activations: tuple[str, ...] = ("tanh", "relu", "identity")
    taus: tuple[float, ...] = (0.5, 1.0, 1.5)
    model: MFConfig = MFConfig(m2=(3.0,))
    n_grid: int = 201
    n_starts: int = 15


HFUNC_QUICK = HFuncConfig()
HFUNC_FULL = HFuncConfig(taus=(0.25, 0.5, 1.0, 1.5, 2.5), n_grid=801, n_starts=41)


def run_hfunc(cfg: HFuncConfig, out_dir, *, reuse: bool = True, progress: bool = True) -> dict:
    out_dir = Path(out_dir)
    if (old := reuse_recorded(out_dir, "hfunc", cfg, reuse)) is not None:
        return old
    t0 = time.perf_counter()
    Qg = np.linspace(-0.995, 0.995, cfg.n_grid)
    curves, learn = [], {}
    for act in cfg.activations:
        L = learnability(act)
        notes = NOTES_LEARNABILITY.get(act)
        learn[act] = {**L, "notes_kappa_v": notes}
        for tau in cfg.taus:
            mf = cfg.model.replace(tau=tau, activation=act)
            f = rhs_numpy(mf, n_gh=200 if act == "relu" else 0)
            h = np.array([f(np.array([q]))[0] for q in Qg]) / tau
            fps = find_fixed_points(mf, n_starts=cfg.n_starts, n_gh=200 if act == "relu" else 0)
            slope0 = float(jacobian_fd(f, np.zeros(1))[0, 0])
            pred0 = 2 * tau * ((mf.m2[0] - 1) * L["kappa"] - tau * L["v"]) if mf.sn == 0 else None
            curves.append({"activation": act, "tau": tau, "h": h,
                           "fixed_points": [{"Q": float(p["Q"][0]), "eigenvalue": float(p["eigenvalues"][0].real),
                                             "stability": p["stability"]} for p in fps],
                           "slope_at_0": slope0, "slope_at_0_linearised": pred0})
    res = {"Q": Qg, "curves": curves, "learnability": learn}
    fig = fig_hfunc(_recorded(cfg, res))
    return finish(out_dir, "hfunc", cfg, res, fig, t0)


@styled
def fig_hfunc(d: dict, *, width_in: float = TEXT_WIDTH_IN, height_in: float = 2.5):
    """h(Q) = Qdot/tau per activation (one panel each), one curve per tau, with the fixed points
    (filled: stable) from an hfunc result."""
    acts = d["config"]["activations"]
    fig, axes = figure(width_in, height_in, ncols=len(acts), squeeze=False)
    for k, (ax, act) in enumerate(zip(axes[0], acts)):
        for cv in [c for c in d["curves"] if c["activation"] == act]:
            ln, = ax.plot(d["Q"], cv["h"], label=f"$\\tau$ = {cv['tau']:g}")
            for fp in cv["fixed_points"]:
                ax.plot(fp["Q"], 0, "o", ms=3.5, color=ln.get_color(),
                        mfc=ln.get_color() if fp["stability"] == "stable" else "white")
        ax.axhline(0, color="k", lw=0.6)
        ax.set(xlabel="overlap $Q$ (cosine)", title=act)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if k == 0:  # one y-label: the panels share its meaning
            ax.set_ylabel(r"$h(Q) = \dot Q/\tau$")
        ax.legend(loc="best")
    fig.suptitle(f"single feature, $m_2$ = {d['config']['model']['m2'][0]:g}, $\\sigma_n$ = {d['config']['model']['sn']:g}; filled: stable "
                 "fixed point (deterministic ODE, no seeds)")
    return fig


# =========================================================================== 3. phase
@dataclass(frozen=True)
class PhaseConfig:
    """Two-feature phase portrait (tanh, sn = 0): RK4 batch over an n_grid x n_grid grid of
    initial conditions in the unit disk, t_end/dt steps, with the tabulated fast path
    (``table`` mu-points, bilinear; error ~1e-6); m4 sweep with the sparse law
    (kurtosis = m4/m2^2) on a coarser grid; a few SGD trajectories (reduced engine).
    Fixed points and streamlines use the direct quadrature."""
    model: MFConfig = MFConfig(tau=0.2, m2=(1.2, 1.1))
    t_end: float = 1500.0
    dt: float = 0.75
    n_grid: int = 41
    table: int = 2001
    kurtoses: tuple[float, ...] = (1.0, 2.0, 4.0)
    n_grid_m4: int = 25
    sgd_N: int = 2000
    sgd_starts: tuple[tuple[float, float], ...] = ((0.05, 0.06), (0.3, 0.5), (-0.4, 0.2), (0.6, -0.3))
    seed: int = 0


PHASE_QUICK = PhaseConfig(n_grid=61, n_grid_m4=41, kurtoses=(1.0, 1.5, 2.0, 3.0, 4.0))
PHASE_FULL = PhaseConfig(n_grid=101, kurtoses=(1.0, 1.5, 2.0, 3.0, 4.0, 6.0), n_grid_m4=61,
                         sgd_N=10000)


#: the grid of initial conditions spans [-_DISK, _DISK]^2 and keeps the points inside that radius
_DISK = 0.98
#: characters of the stored grid of winners (``winners.rows``): none, feature 1, feature 2, outside
_WIN_CHARS = "012."


def _disk_mask(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The grid's coordinates g (n values) and the (n, n) mask of its points inside the disk
    (``[i, j]``: Q1 = g[i], Q2 = g[j])."""
    g = np.linspace(-_DISK, _DISK, n)
    X, Y = np.meshgrid(g, g, indexing="ij")
    pts = np.stack([X.ravel(), Y.ravel()], axis=1)
    return g, (np.sum(pts ** 2, axis=1) < _DISK ** 2).reshape(n, n)


def _disk_grid(n: int) -> np.ndarray:
    """The initial conditions: the grid's points inside the disk, row by row."""
    g, inside = _disk_mask(n)
    X, Y = np.meshgrid(g, g, indexing="ij")
    return np.stack([X.ravel(), Y.ravel()], axis=1)[inside.ravel()]


def _winner_rows(n: int, win: np.ndarray) -> list[str]:
    """The winners of the grid of :func:`_disk_grid` as ``n`` strings of ``n`` characters of
    :data:`_WIN_CHARS` (row i: Q1 = g[i]; column j: Q2 = g[j]; ``.`` outside the disk): the
    portrait's background in a few kB of JSON."""
    _, inside = _disk_mask(n)
    grid = np.full((n, n), 3)
    grid[inside] = win       # _disk_grid's points are the mask's, in the same (row-major) order
    return ["".join(_WIN_CHARS[v] for v in row) for row in grid]


def winner_grid(d: dict) -> tuple[np.ndarray, np.ma.MaskedArray]:
    """``(g, W)`` of a phase result: the grid coordinates and the winners (0 none, 1 feature 1,
    2 feature 2) as an (n, n) array ``W[i, j]`` at (Q1, Q2) = (g[i], g[j]), masked outside the
    disk.  ValueError in one line when the result holds no grid (recorded by older code)."""
    wd = d.get("winners") or {}
    rows, chars = wd.get("rows"), wd.get("chars", _WIN_CHARS)
    if not rows:
        raise ValueError("the phase result holds no grid of winners (recorded before it was stored): "
                         "rerun the phase study ('cffdyn sim phase') to record it")
    n = len(rows)
    if any(len(r) != n or set(r) - set(chars) for r in rows):
        raise ValueError(f"the phase result's grid of winners is not {n} rows of {n} characters of {chars!r}")
    W = np.array([[chars.index(c) for c in r] for r in rows])
    ext = float(wd.get("extent", _DISK))
    return np.linspace(-ext, ext, n), np.ma.masked_equal(W, 3)


def _sig(a, digits: int = 4) -> list:
    """``a`` (nested, NaN allowed) rounded to ``digits`` significant digits: the streamlines and
    paths only draw, so their JSON need not carry 17 digits."""
    return np.vectorize(lambda x: float(f"{x:.{digits}g}") if math.isfinite(x) else math.nan)(
        np.asarray(a, float)).tolist()


def _winner(final: np.ndarray) -> np.ndarray:
    a1, a2 = np.abs(final[:, 0]), np.abs(final[:, 1])
    w = np.where(a1 > a2, 1, 2)
    w[np.maximum(a1, a2) < 0.05] = 0
    return w


def run_phase(cfg: PhaseConfig, out_dir, *, reuse: bool = True, progress: bool = True) -> dict:
    out_dir = Path(out_dir)
    if (old := reuse_recorded(out_dir, "phase", cfg, reuse)) is not None:
        return old
    t0 = time.perf_counter()
    prog = Progress(3 + len(cfg.kurtoses), "phase", enabled=progress)
    mf = cfg.model
    n_steps = int(round(cfg.t_end / cfg.dt))
    ics = _disk_grid(cfg.n_grid)
    ts = time.perf_counter()
    t, traj, _ = integrate_ode_batch(mf, ics, t_end=cfg.t_end, dt=cfg.dt, record_every=n_steps // 100,
                                     table=cfg.table)
    t_batch = time.perf_counter() - ts
    win = _winner(traj[:, -1])
    prog.update(1, f"{len(ics)} trajectories in {t_batch:.1f}s")
    fps = find_fixed_points(mf, n_starts=9)
    prog.update(2, "fixed points")
    # streamlines
    g = np.linspace(-1, 1, 41)
    U = np.full((g.size, g.size), np.nan)
    V = np.full_like(U, np.nan)
    f = rhs_numpy(mf)
    for i, y in enumerate(g):
        for j, x in enumerate(g):
            if x * x + y * y < 0.999:
                U[i, j], V[i, j] = f(np.array([x, y]))
    sgd = run_sgd(mf, SGDConfig(N=cfg.sgd_N, trials=len(cfg.sgd_starts), t_end=cfg.t_end, n_records=300,
                                engine="reduced", seed=cfg.seed), np.array(cfg.sgd_starts))
    prog.update(3, "SGD")
    sweep = []
    ics_m4 = _disk_grid(cfg.n_grid_m4)
    for i, kurt in enumerate(cfg.kurtoses):
        mk = mf.replace(law=Law("sparse", kurtosis=kurt))
        _, tr, _ = integrate_ode_batch(mk, ics_m4, t_end=cfg.t_end, dt=cfg.dt, record_every=n_steps,
                                       table=cfg.table)
        w = _winner(tr[:, -1])
        J0 = jacobian_fd(rhs_numpy(mk), np.zeros(2))
        sweep.append({"kurtosis": kurt, "share_feature1": float(np.mean(w == 1)),
                      "share_feature2": float(np.mean(w == 2)), "share_none": float(np.mean(w == 0)),
                      "eigs_at_0": np.sort(np.linalg.eigvals(J0).real)})
        prog.update(4 + i, f"m4/m2^2={kurt}")
    res = {"n_ics": len(ics), "n_ics_m4": len(ics_m4), "share_feature1": float(np.mean(win == 1)), "share_feature2": float(np.mean(win == 2)),
           "share_none": float(np.mean(win == 0)), "batch_seconds": t_batch, "n_steps": n_steps,
           "fixed_points": [{"Q": p["Q"], "stability": p["stability"], "eigenvalues": p["eigenvalues"].real}
                            for p in fps],
           "m4_sweep": sweep, "sgd_final": sgd.Q[:, -1], "sgd_starts": cfg.sgd_starts,
           # what the portrait draws: the grid of winners, the streamline field, the SGD paths
           "winners": {"n_grid": cfg.n_grid, "extent": _DISK, "chars": _WIN_CHARS,
                       "rows": _winner_rows(cfg.n_grid, win)},
           "streamlines": {"x": g, "U": _sig(U), "V": _sig(V)},
           "sgd_paths": _sig(sgd.Q[:, :, :2])}
    fig = fig_phase(_recorded(cfg, res))
    return finish(out_dir, "phase", cfg, res, fig, t0)


#: background of the portrait: no feature, feature 1, feature 2 wins
_PHASE_COLOURS = ("#dddddd", "#a6dba0", "#f4a582")


@styled
def fig_phase(d: dict, *, width_in: float = TEXT_WIDTH_IN, height_in: float = 3.3):
    """(a) The phase portrait of a phase result: which feature each initial condition of the grid
    converges to (background), streamlines, fixed points (black stable, grey saddle, white
    unstable) and the SGD paths; (b) the share of initial conditions won by each feature against
    m4/m2^2.  Vector throughout (the background is a mesh of cells, not an image)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, Patch

    g, W = winner_grid(d)
    c = d["config"]
    m = c["model"]
    fig, ax = figure(width_in, height_in, ncols=2)
    h = (g[1] - g[0]) / 2 if len(g) > 1 else 1.0   # each cell centred on its initial condition
    edges = np.concatenate([g - h, [g[-1] + h]])
    ax[0].pcolormesh(edges, edges, W.T, cmap=ListedColormap(_PHASE_COLOURS), vmin=-0.5, vmax=2.5,
                     shading="flat", linewidth=0, edgecolors="none")
    st = d.get("streamlines")
    if st:
        nan = lambda a: np.array([[np.nan if v is None else v for v in row] for row in a], float)  # noqa: E731
        ax[0].streamplot(np.asarray(st["x"], float), np.asarray(st["x"], float), nan(st["U"]), nan(st["V"]),
                         color="0.3", density=1.0, linewidth=0.5, arrowsize=0.6)
    for k, path in enumerate(d.get("sgd_paths") or []):
        q = np.asarray(path, float)
        ax[0].plot(q[:, 0], q[:, 1], "-", color="tab:blue", lw=1.0)
    fill = {"stable": "k", "saddle": "0.6"}
    for p in d["fixed_points"]:
        ax[0].plot(p["Q"][0], p["Q"][1], "o", ms=5, color="k", mfc=fill.get(p["stability"], "white"), zorder=5)
    ax[0].add_patch(Circle((0, 0), 1, fill=False, color="k", lw=0.8))
    ax[0].set(xlim=(-1.02, 1.02), ylim=(-1.02, 1.02), aspect="equal",
              xlabel=f"$Q_1$ (feature 1, $m_2$ = {m['m2'][0]:g})", ylabel=f"$Q_2$ (feature 2, $m_2$ = {m['m2'][1]:g})",
              title=f"(a) tanh, $\\tau$ = {m['tau']:g}, {d['n_ics']} initial conditions")
    ks = [s["kurtosis"] for s in d["m4_sweep"]]
    ax[1].plot(ks, [100 * s["share_feature1"] for s in d["m4_sweep"]], "o-", color="#1b7837",
               label="feature 1 wins")
    ax[1].plot(ks, [100 * s["share_feature2"] for s in d["m4_sweep"]], "s-", color="#b2182b",
               label="feature 2 wins")
    ax[1].set(xlabel=r"$m_4/m_2^2$ of $c$ (sparse three-point law; 1: Rademacher)",
              ylabel=f"share of {d['n_ics_m4']} initial conditions (%)",
              title=f"(b) attraction shares at fixed $m_2$ = ({m['m2'][0]:g}, {m['m2'][1]:g})")
    ax[1].legend(loc="best")
    handles = [Patch(color=_PHASE_COLOURS[1], label="feature 1 wins"),
               Patch(color=_PHASE_COLOURS[2], label="feature 2 wins"),
               Patch(color=_PHASE_COLOURS[0], label="neither ($|Q| < 0.05$)"),
               Line2D([], [], color="tab:blue", lw=1.0, label=f"SGD, $N$ = {c['sgd_N']}, 1 seed each"),
               Line2D([], [], ls="", marker="o", color="k", label="stable fixed point"),
               Line2D([], [], ls="", marker="o", color="k", mfc="0.6", label="saddle"),
               Line2D([], [], ls="", marker="o", color="k", mfc="white", label="unstable")]
    fig.legend(handles=handles, loc="outside lower center", ncols=4)   # below the panels: covers no data
    return fig


# =========================================================================== 4. noise
@dataclass(frozen=True)
class NoiseConfig:
    """Stationary Q* vs sigma_n^2 of the one-feature ``model`` (tanh, Rademacher c) for each
    (tau, rho) of the sweep; SGD points at tau = sgd_tau for rho in sgd_rhos (reduced engine,
    N, trials, from q0 for t_end).  The sweep sets the model's tau, sigma_n and rho."""
    model: MFConfig = MFConfig(m2=(3.0,))
    taus: tuple[float, ...] = (1.0, 2.0, 3.0)
    rhos: tuple[float, ...] = (0.0, -0.5, -1.0)
    sn2: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)
    sgd_tau: float = 1.0
    sgd_rhos: tuple[float, ...] = (0.0, -1.0)
    sgd_sn2: tuple[float, ...] = (0.25, 0.5, 1.0)
    sgd_N: int = 2000
    sgd_trials: int = 6
    sgd_t_end: float = 10.0
    seed: int = 0


NOISE_QUICK = NoiseConfig()
NOISE_FULL = NoiseConfig(rhos=(0.0, -0.25, -0.5, -0.75, -1.0), sn2=tuple(np.round(np.arange(0, 2.01, 0.125), 4)),
                         sgd_sn2=(0.25, 0.5, 1.0, 1.5), sgd_N=10000, sgd_trials=16)


def run_noise(cfg: NoiseConfig, out_dir, *, reuse: bool = True, progress: bool = True) -> dict:
    out_dir = Path(out_dir)
    if (old := reuse_recorded(out_dir, "noise", cfg, reuse)) is not None:
        return old
    t0 = time.perf_counter()
    prog = Progress(len(cfg.taus) * len(cfg.rhos) + 1, "noise", enabled=progress)
    curves = []
    for tau in cfg.taus:
        for rho in cfg.rhos:
            qs = [ode_stationary_point(cfg.model.replace(tau=tau, sn=math.sqrt(s2), rho=rho)) for s2 in cfg.sn2]
            notes = NOTES_NOISE_TABLE.get((tau, rho), {})
            comp = [{"sn2": s2, "ode": q, "notes": notes[s2]} for s2, q in zip(cfg.sn2, qs) if s2 in notes]
            diffs = [abs(c["ode"] - c["notes"]) for c in comp if c["ode"] is not None and c["notes"] is not None]
            agree_absent = all((c["ode"] is None) == (c["notes"] is None) for c in comp)
            curves.append({"tau": tau, "rho": rho, "Q": qs, "vs_notes": comp,
                           "max_abs_diff_notes": max(diffs) if diffs else None,
                           "absence_agrees_with_notes": agree_absent})
            prog.update(len(curves), f"tau={tau} rho={rho}")
    sgd_pts = []
    for i, rho in enumerate(cfg.sgd_rhos):
        for j, s2 in enumerate(cfg.sgd_sn2):
            mf = cfg.model.replace(tau=cfg.sgd_tau, sn=math.sqrt(s2), rho=rho)
            r = run_sgd(mf, SGDConfig(N=cfg.sgd_N, trials=cfg.sgd_trials, t_end=cfg.sgd_t_end, n_records=40,
                                      engine="reduced", seed=cfg.seed + 100 * i + j), [0.5])
            tail = np.abs(r.Q[:, -8:, 0]).mean(1)
            sgd_pts.append({"rho": rho, "sn2": s2, "mean": float(tail.mean()), "sd": float(tail.std(ddof=1)),
                            "trials": cfg.sgd_trials})
    prog.update(len(curves) + 1, "SGD")
    res = {"curves": curves, "sgd": sgd_pts}
    fig = fig_noise(_recorded(cfg, res))
    return finish(out_dir, "noise", cfg, res, fig, t0)


@styled
def fig_noise(d: dict, *, width_in: float = 0.75 * TEXT_WIDTH_IN, height_in: float = 3.6):
    """Stationary Q* against sigma_n^2 of a noise result: ODE lines per (tau, rho) (missing: the
    recovery fixed point is absent) and the SGD points (mean +- SD)."""
    plt = pyplot()
    fig, ax = figure(width_in, height_in)
    sn2 = d["config"]["sn2"]
    rhos = sorted({cv["rho"] for cv in d["curves"]})
    cmap = plt.cm.viridis  # rho = 0 must stay visible (a diverging map draws it near-white)
    col = {r: cmap(0.85 * i / max(len(rhos) - 1, 1)) for i, r in enumerate(rhos)}
    for cv in d["curves"]:
        ls = {1.0: "-", 2.0: "--", 3.0: ":"}.get(cv["tau"], "-.")
        ax.plot(sn2, [np.nan if q is None else q for q in cv["Q"]], ls, marker=".", color=col[cv["rho"]], lw=1.2,
                label=f"ODE $\\tau$ = {cv['tau']:g}, $\\rho$ = {cv['rho']:g}".replace("-", "\u2212"))
    for p in d["sgd"]:
        ax.errorbar(p["sn2"], p["mean"], yerr=p["sd"], fmt="kx" if p["rho"] == 0 else "k^", capsize=2, ms=4)
    c = d["config"]
    ax.plot([], [], "kx", label=f"SGD $\\rho$ = 0, $\\tau$ = {c['sgd_tau']:g} ($N$ = {c['sgd_N']}, mean ± SD)")
    ax.plot([], [], "k^", label="SGD $\\rho$ = \u22121")
    ax.set(xlabel=r"augmentation noise strength $\sigma_n^2$", ylabel="stationary overlap $Q^*$ (cosine)")
    fig.legend(loc="outside lower center", ncols=2)  # below the axes: covers no curve
    return fig


STUDIES: dict[str, tuple[Callable, Any, Any]] = {
    "convergence": (run_convergence, CONVERGENCE_QUICK, CONVERGENCE_FULL),
    "hfunc": (run_hfunc, HFUNC_QUICK, HFUNC_FULL),
    "phase": (run_phase, PHASE_QUICK, PHASE_FULL),
    "noise": (run_noise, NOISE_QUICK, NOISE_FULL),
    "clamp": (run_clamp, CLAMP_QUICK, CLAMP_FULL),
}


def replace(cfg, **kw):
    """``dataclasses.replace`` that ignores ``None`` values (CLI overrides)."""
    kw = {k: v for k, v in kw.items() if v is not None and k in {f.name for f in dataclasses.fields(cfg)}}
    return dataclasses.replace(cfg, **kw)
