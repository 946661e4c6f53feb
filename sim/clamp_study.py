"""``cffdyn sim clamp``: the clamp's seed-to-seed variance, predicted and measured.

Prediction (:mod:`sim.fluctuations`): for every cell (margin m, noise sn, batch B) of the
clamped and the subtracted model, the stable fixed point Q*, the exact slope lambda and the
linear-noise N Var(Q) = Var Y / (2 B |lambda|); their ratio clamp / subtract.  A clamped cell
without a stable interior fixed point is reported as ``fully_clamped`` (Q -> 1, every sample
clamped, updates stop): it has no stationary variance to predict or to measure.

Measurement (:mod:`sim.stationary`): SGD (exact-in-law engine) from Q*, N Var(Q) over a
stationary window with batch-means 95% intervals, pooled over trials; the ratio's interval by
the delta method on the log scale (independent runs).  The subtract arm does not depend on m
(its gradient is the plain score's), so it is measured once per (sn, B) and shared by the
margins of that row.  Plus an Oja row (identity activation, no noise, no margin), N Var at
several N for a few cells (the prediction is N-independent), and the bridge to the ViT: the
predicted ratio as a function of the stationary clamp activation rate, with ViT study points
(variance ratio clamp/subtract vs mean layer-0 CAR of the clamp runs) overlaid.

Figures: ``clamp.png`` (:func:`fig_clamp`, also the paper's: N Var predicted vs measured, the
ratio against the margin, the bridge with the pooled ViT ratio) and ``clamp_scaling.png``
(:func:`fig_clamp_scaling`: N Var against N for the scaling cells).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cffdyn.errors import UserError
from cffdyn.figures import TEXT_WIDTH_IN, figure, styled
from cffdyn.io import Progress, read_json, to_jsonable
from cffdyn.variance_ratio import reported_ratio
from sim.diffusion import frozen_reason
from sim.fluctuations import fluctuation_variance
from sim.model import MFConfig
from sim.sgd import SGDConfig, run_sgd
from sim.predict import SN_MAX
from sim.report import finish, reuse_recorded, save_fig
from sim.stationary import WindowSpec, measure_nvar, ratio_ci

__all__ = ["ClampConfig", "CLAMP_QUICK", "CLAMP_FULL", "run_clamp", "check_clamp_config", "vit_points",
           "fig_clamp", "fig_clamp_scaling"]


@dataclass(frozen=True)
class ClampConfig:
    """The one-unit ``model`` (tanh, Rademacher c, one feature, its tau); grid margins x sns x batches;
    SGD at N with ``trials`` trials per arm over a window of ``window`` time units after a
    burn-in of ``burn_corr`` correlation times, batch-means batches of ``batch_corr``
    correlation times (at least ``min_batch`` time units); ``n_scaling``: N values at which the
    ``scaling_cells`` are remeasured; Oja row with identity activation at ``oja_tau``;
    ``bridge_margins``: margins of the predicted ratio-vs-CAR curves; the fully clamped cells
    are shown by ``fc_trials`` trials from ``q0`` over ``fc_t_end``."""
    model: MFConfig = MFConfig(tau=1.0, m2=(3.0,))
    margins: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)
    sns: tuple[float, ...] = (0.0, 0.7)
    batches: tuple[int, ...] = (1, 4)
    oja: bool = True
    oja_tau: float = 0.25
    N: int = 2000
    trials: int = 64
    window: float = 100.0
    burn_corr: float = 5.0
    batch_corr: float = 10.0
    min_batch: float = 5.0
    rec_dt: float = 0.25
    n_scaling: tuple[int, ...] = (500, 2000, 8000)
    scaling_cells: tuple[tuple[str, float, float, int], ...] = (("clamp", 0.3, 0.7, 1), ("subtract", 0.0, 0.7, 1),
                                                                ("oja", 0.0, 0.0, 1))
    bridge_margins: tuple[float, ...] = (0.02, 0.05, 0.07, 0.085, 0.1, 0.12, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6)
    q0: float = 0.5
    fc_trials: int = 16
    fc_t_end: float = 20.0
    seed: int = 0


CLAMP_FULL = ClampConfig()
CLAMP_QUICK = ClampConfig(N=500, trials=16, window=40.0, n_scaling=(250, 500, 1000),
                          bridge_margins=(0.05, 0.1, 0.2, 0.3, 0.5), fc_trials=4, fc_t_end=10.0)


def _mf(cfg: ClampConfig, mode: str, m: float, sn: float, B: int) -> MFConfig:
    if mode == "oja":
        return MFConfig(tau=cfg.oja_tau, m2=cfg.model.m2, activation="identity")
    return cfg.model.replace(sn=sn, batch=B, mode=mode, margin=m)


def _window(cfg: ClampConfig, corr_time: float) -> WindowSpec:
    return WindowSpec(burn=cfg.burn_corr * corr_time, window=cfg.window,
                      batch_len=max(cfg.batch_corr * corr_time, cfg.min_batch), rec_dt=cfg.rec_dt)


def check_clamp_config(cfg: ClampConfig) -> None:
    """Bad input that needs no prediction: one line, before any work."""
    if cfg.N < 100 or any(n < 100 for n in cfg.n_scaling):
        raise UserError(f"N={min([cfg.N, *cfg.n_scaling])} is below 100: the O(1/N) linear-noise theory "
                        "is not meant for it", "use N >= 100 (default 2000)")
    if cfg.trials < 2:
        raise UserError(f"trials={cfg.trials}: at least 2 trials are needed for an error bar", "use --trials >= 2")
    if not (cfg.margins and cfg.sns and cfg.batches):
        raise UserError("empty grid of margins, noise levels or batch sizes", "give at least one value of each")
    if any(not 0 <= m < 1 for m in cfg.margins):
        raise UserError(f"margins {cfg.margins} must lie in [0, 1)", "use margins such as 0.1 0.3 0.5")
    # the range 'sim predict' covers (an unbounded sn = 1e300 overflowed sn**2 in the quadrature)
    if any(not (math.isfinite(s) and 0.0 <= s <= SN_MAX) for s in cfg.sns):
        raise UserError(f"noise levels {cfg.sns} must lie in [0, {SN_MAX:g}] (the range the theory covers)",
                        "use --sns between 0 and 2, e.g. 0 0.7")


def _predict_all(cfg: ClampConfig, progress: bool) -> dict:
    """Every prediction the study needs (seconds), before any SGD: raises UserError when the
    window is too short for a cell, or no clamped cell has a stationary state."""
    keys = [("subtract", 0.0, sn, B) for sn in cfg.sns for B in cfg.batches]
    keys += [("clamp", m, sn, B) for sn in cfg.sns for B in cfg.batches for m in cfg.margins]
    if cfg.oja:
        keys.append(("oja", 0.0, 0.0, 1))
    prog = Progress(len(keys), "clamp: predictions", enabled=progress)
    pred = {}
    for i, k in enumerate(keys):
        pred[k] = _predict(cfg, k, cfg.N)
        prog.update(i + 1, f"{k[0]} m={k[1]} sn={k[2]} B={k[3]}: {pred[k]['outcome']}")
    outcomes = {p["outcome"] for k, p in pred.items() if k[0] == "clamp"}
    if "interior" not in outcomes:
        why = {"fully_clamped": "runs to Q = 1 and stops (every sample clamped)",
               "collapse": "runs to Q = 0 (no alignment with the feature)",
               "quasi_frozen": "is quasi-frozen (too few active samples or too long a correlation time)"}
        raise UserError("no clamped cell of the grid has a stationary state to measure: the clamped flow " +
                        "; or ".join(why.get(o, o) for o in sorted(outcomes)),
                        ("add noise (--sns 0.7) or smaller margins (--margins 0.1)" if "collapse" not in outcomes
                         else "use less noise (--sns 0.7) or smaller margins (--margins 0.1)"))
    short = [(k, p["corr_time"]) for k, p in pred.items() if p["outcome"] == "interior"
             and cfg.window < 10 * p["corr_time"]]
    if short:
        (k, tc), = short[:1]
        raise UserError(f"window {cfg.window:g} is shorter than 10 correlation times of {k[0]} m={k[1]} sn={k[2]} "
                        f"B={k[3]} (1/|lambda| = {tc:.3g})", f"use --window >= {10 * tc:.3g}")
    return pred


def _predict(cfg: ClampConfig, key, N: int) -> dict:
    """The linear-noise prediction of one arm; an interior point that is quasi-frozen at N
    (:func:`sim.diffusion.frozen_reason`) becomes that outcome, its numbers kept under
    ``linear_noise``; no CAR where the margin is 0 (the clamp rate of a score without a margin
    is not a quantity of the model)."""
    p = fluctuation_variance(_mf(cfg, *key), q0=cfg.q0)
    if p["outcome"] == "interior":
        why = frozen_reason(p["corr_time"], p["car_star"], key[3], N)
        if why:
            p = {"outcome": "quasi_frozen", "reason": why, "linear_noise": p}
    if key[1] == 0.0 and "car_star" in p:
        p["car_star"] = None
    return p


def _arm(cfg: ClampConfig, key, pred: dict, N: int, seed: int) -> dict:
    mf = _mf(cfg, *key)
    out = {"mode": key[0], "margin": key[1], "sn": key[2], "batch": key[3], "N": N, "prediction": pred}
    if pred["outcome"] != "interior":
        r = run_sgd(mf, SGDConfig(N=N, trials=cfg.fc_trials, t_end=cfg.fc_t_end, n_records=20, seed=seed),
                    [cfg.q0])
        out["measured"] = {"outcome": pred["outcome"], "trials": cfg.fc_trials, "t_end": cfg.fc_t_end,
                           "final_Q_mean": float(np.mean(np.abs(r.Q[:, -1, 0]))),
                           "final_Q_min": float(np.min(np.abs(r.Q[:, -1, 0]))),
                           "final_car": float(np.nanmean(r.car[:, -1])) if key[1] > 0 else None}
        out["in_ci"] = None
        return out
    meas = measure_nvar(mf, pred["Q_star"], N, cfg.trials, _window(cfg, pred["corr_time"]), seed)
    if key[1] == 0.0:
        meas["car"] = None
    lo, hi = meas["N_var"]["ci95"]
    out["measured"] = meas
    out["in_ci"] = bool(lo <= pred["N_var"] <= hi)
    out["z"] = (meas["N_var"]["est"] - pred["N_var"]) / meas["N_var"]["se"]
    return out


def vit_points(paths: Sequence[str | Path], warn=print) -> list[dict]:
    """ViT points (variance ratio clamp/subtract vs mean layer-0 CAR of the clamp runs) from
    study JSONs of :mod:`vit.study`: the ratio the study reports for ``loss_mode`` (pooled over
    the other factor; :func:`cffdyn.variance_ratio.reported_ratio`, as in the replication table),
    and one point per level of the other factors computed
    from ``runs``.  A file without the needed fields is skipped with a one-line message."""
    pts = []
    for p in paths:
        p = Path(p)
        try:
            d = read_json(p)
        except (OSError, ValueError) as exc:
            warn(f"--vit {p}: skipped ({exc})")
            continue
        try:
            pts += _vit_file_points(p, d, warn)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:   # valid JSON of another shape
            warn(f"--vit {p}: skipped (not a study record of 'cffdyn vit study': {type(exc).__name__}: {exc})")
    return pts


def _vit_file_points(p: Path, d: Any, warn) -> list[dict]:
    """The points of one study record ``d`` read from ``p`` (see :func:`vit_points`)."""
    pts: list[dict] = []
    if not isinstance(d, dict):
        raise TypeError(f"a {type(d).__name__}, not an object")
    runs = [r for r in d.get("runs") or [] if isinstance(r, dict) and "cell" in r]
    clamp_runs = [r for r in runs if r["cell"].get("loss_mode") == "clamp"]
    cars = [r["car_layer0"] for r in clamp_runs if r.get("car_layer0") is not None]
    comp = [c for c in ((d.get("analysis") or {}).get("comparisons") or [])
            if c.get("factor") == "loss_mode" and {c.get("level_a"), c.get("level_b")} == {"clamp", "subtract"}]
    if not cars or not comp:
        warn(f"--vit {p}: skipped (needs runs with loss_mode=clamp and car_layer0, and analysis.comparisons "
             "for loss_mode clamp vs subtract)")
        return pts
    rep = reported_ratio(comp[0])
    if comp[0]["level_a"] == "subtract":
        rep = rep.inverted()
    pts.append({"file": str(p), "kind": "pooled", "ratio": rep.ratio, "ci95": list(rep.ci95), "test": rep.test,
                "car": float(np.mean(cars)), "n_runs": len(runs)})
    others = sorted({tuple(sorted((k, v) for k, v in r["cell"].items() if k != "loss_mode")) for r in runs})
    for o in others:
        sel = lambda mode: [r for r in runs if r["cell"].get("loss_mode") == mode  # noqa: E731
                            and tuple(sorted((k, v) for k, v in r["cell"].items() if k != "loss_mode")) == o]
        a, b = [r["metric"] for r in sel("clamp")], [r["metric"] for r in sel("subtract")]
        car = [r["car_layer0"] for r in sel("clamp") if r.get("car_layer0") is not None]
        if len(a) >= 2 and len(b) >= 2 and car and np.var(b, ddof=1) > 0:
            pts.append({"file": str(p), "kind": "cell", "levels": dict(o),
                        "ratio": float(np.var(a, ddof=1) / np.var(b, ddof=1)), "ci95": [None, None],
                        "car": float(np.mean(car)), "n_runs": len(a) + len(b)})
    return pts


def run_clamp(cfg: ClampConfig, out_dir, *, reuse: bool = True, progress: bool = True,
              vit: Sequence[str | Path] = (), warn=print) -> dict:
    from cffdyn.machine import machine_info

    out_dir = Path(out_dir)
    check_clamp_config(cfg)
    vit_pts = vit_points(vit, warn=warn) if vit else []
    if not vit and (old := reuse_recorded(out_dir, "clamp", cfg, reuse)) is not None:
        return old
    t0 = time.perf_counter()
    pred = _predict_all(cfg, progress)
    # measurements: one seed per arm, distinct across arms and N
    arms_needed = [k for k in pred if pred[k]["outcome"] == "interior" or k[0] == "clamp"]
    prog = Progress(len(arms_needed) + len(cfg.n_scaling) * len(cfg.scaling_cells), "clamp: SGD", enabled=progress)
    arms: dict[tuple, dict] = {}
    for i, k in enumerate(arms_needed):
        arms[k] = _arm(cfg, k, pred[k], cfg.N, cfg.seed + 1000 * i)
        a = arms[k]
        msg = (f"N Var pred {pred[k]['N_var']:.4g} meas {a['measured']['N_var']['est']:.4g}"
               if a["in_ci"] is not None else pred[k]["outcome"])
        prog.update(i + 1, f"{k[0]} m={k[1]} sn={k[2]} B={k[3]}: {msg}")
    rows = []
    for sn in cfg.sns:
        for B in cfg.batches:
            sub = arms.get(("subtract", 0.0, sn, B))
            for m in cfg.margins:
                cl = arms[("clamp", m, sn, B)]
                row: dict[str, Any] = {"margin": m, "sn": sn, "batch": B, "outcome": cl["prediction"]["outcome"],
                                       "clamp": cl, "subtract": sub}
                if cl["in_ci"] is not None and sub is not None:
                    row["ratio_pred"] = cl["prediction"]["N_var"] / sub["prediction"]["N_var"]
                    row["ratio"] = ratio_ci(cl["measured"]["N_var"], sub["measured"]["N_var"])
                    lo, hi = row["ratio"]["ci95"]
                    row["ratio_in_ci"] = bool(lo <= row["ratio_pred"] <= hi)
                else:
                    row["ratio_pred"], row["ratio"], row["ratio_in_ci"] = None, None, None
                rows.append(row)
    oja = arms.get(("oja", 0.0, 0.0, 1))
    scaling = []
    j = len(arms_needed)
    for mode, m, sn, B in cfg.scaling_cells:
        k = (mode, m if mode == "clamp" else 0.0, sn, B)
        if k not in pred or pred[k]["outcome"] != "interior":
            continue
        for N in cfg.n_scaling:
            j += 1
            a = arms[k] if (N == cfg.N and k in arms) else _arm(cfg, k, pred[k], N, cfg.seed + 7919 * j)
            scaling.append({"mode": mode, "margin": k[1], "sn": sn, "batch": B, "N": N,
                            "pred": pred[k]["N_var"], "measured": a["measured"]["N_var"], "in_ci": a["in_ci"],
                            "N_bias": a["measured"]["N_bias"]})
            prog.update(j, f"scaling {mode} N={N}")
    bridge = _bridge(cfg, pred)
    checked = [a for a in arms.values() if a["in_ci"] is not None]
    ratios = [r for r in rows if r["ratio_in_ci"] is not None]
    summary = {"arms_checked": len(checked), "arms_in_ci": sum(a["in_ci"] for a in checked),
               "ratios_checked": len(ratios), "ratios_in_ci": sum(r["ratio_in_ci"] for r in ratios),
               "fully_clamped_cells": sum(r["outcome"] == "fully_clamped" for r in rows),
               "collapse_cells": sum(r["outcome"] == "collapse" for r in rows),
               "quasi_frozen_cells": sum(r["outcome"] == "quasi_frozen" for r in rows),
               "scaling_checked": len(scaling), "scaling_in_ci": sum(s["in_ci"] for s in scaling),
               "max_abs_z": max(abs(a["z"]) for a in checked) if checked else None}
    res = {"rows": rows, "subtract": [a for k, a in arms.items() if k[0] == "subtract"], "oja": oja,
           "scaling": scaling, "bridge": bridge, "vit_points": vit_pts, "summary": summary,
           "machine": machine_info()}
    rec = to_jsonable({"config": cfg, **res})
    if scaling:
        save_fig(fig_clamp_scaling(rec), out_dir / "clamp_scaling.png")
    fig = fig_clamp(rec)
    return finish(out_dir, "clamp", cfg, res, fig, t0)


def _bridge(cfg: ClampConfig, pred: dict) -> list[dict]:
    """Predicted ratio clamp/subtract vs the stationary CAR along the margin, per (sn, B)."""
    curves = []
    for sn in cfg.sns:
        for B in cfg.batches:
            sub = pred.get(("subtract", 0.0, sn, B))
            if not sub or sub["outcome"] != "interior":
                continue
            pts = []
            for m in sorted(set(cfg.bridge_margins) | set(cfg.margins)):
                p = pred.get(("clamp", m, sn, B)) or _predict(cfg, ("clamp", m, sn, B), cfg.N)
                if p["outcome"] == "interior":
                    pts.append({"margin": m, "car": p["car_star"], "ratio_pred": p["N_var"] / sub["N_var"],
                                "Q_star": p["Q_star"]})
                else:  # quasi-frozen, fully clamped or collapsed: no point on the curve
                    pts.append({"margin": m, "outcome": p["outcome"], "reason": p.get("reason")})
            curves.append({"sn": sn, "batch": B, "points": pts})
    return curves


def _clip_interval(ax, x: float, y: float, lo: float | None, hi: float | None, ylim: tuple[float, float],
                   **kw) -> None:
    """An interval drawn inside ``ylim``; an end beyond it is cut at the axis, marked by an arrow and
    its value written beside it, so one wide interval does not flatten every other curve."""
    bot, top = ylim
    lo_c = None if lo is None else max(lo, bot)
    hi_c = None if hi is None else min(hi, top)
    yerr = None if lo is None or hi is None else [[y - lo_c], [hi_c - y]]
    ax.errorbar(x, y, yerr=yerr, **kw)
    for end, cut, mk, va in ((hi, top, "^", "top"), (lo, bot, "v", "bottom")):
        if end is not None and ((mk == "^" and end > cut) or (mk == "v" and end < cut)):
            ax.plot([x], [cut], mk, color="k", ms=5, clip_on=False)
            ax.annotate(f"95% CI to {end:.3g}", (x, cut), xytext=(-4, -3 if mk == "^" else 3),
                        textcoords="offset points", ha="right", va=va, fontsize=7)


def _positive(y) -> bool:
    return isinstance(y, (int, float)) and not isinstance(y, bool) and math.isfinite(y) and y > 0


@styled
def fig_clamp(d: dict, vit_pts: Sequence[dict] | None = None, *, width_in: float = TEXT_WIDTH_IN,
              height_in: float = 5.4):
    """Predicted vs measured N Var(Q) (every arm), the ratio clamp/subtract against the margin
    (measured with 95% CI, predicted as crosses and lines, so a single-point series still
    shows its prediction), and the bridge: predicted ratio vs stationary CAR, with the ViT
    study's pooled ratio vs layer-0 CAR (log axis, clipped to the theory's range: an interval
    beyond it is cut and its end written beside it), from a clamp result.  ``vit_pts``: the
    ViT points (:func:`vit_points`) to overlay; default the result's own (``--vit``)."""
    c = d["config"]
    fig, axs = figure(width_in, height_in, nrows=2, ncols=2)
    ax = [axs[0, 0], axs[0, 1], axs[1, 0]]
    axs[1, 1].axis("off")
    arms = [r["clamp"] for r in d["rows"] if r["clamp"].get("in_ci") is not None] + list(d.get("subtract") or [])
    if d.get("oja"):
        arms.append(d["oja"])
    for a in arms:
        v = a["measured"]["N_var"]
        mk = {"clamp": "o", "subtract": "s", "oja": "D"}[a["mode"]]
        colr = "k" if a["mode"] == "oja" else ("C0" if a["batch"] == 1 else "C1")
        ax[0].errorbar(a["prediction"]["N_var"], v["est"], yerr=[[v["est"] - v["ci95"][0]], [v["ci95"][1] - v["est"]]],
                       fmt=mk, color=colr, mfc="white" if a["sn"] == 0 else colr, ms=4, capsize=2)
    if arms:
        xs = [a["prediction"]["N_var"] for a in arms]
        ax[0].plot([min(xs) / 1.5, max(xs) * 1.5], [min(xs) / 1.5, max(xs) * 1.5], "k:", lw=0.8, label="equality")
    for lab, mk, colr in (("clamp", "o", "k"), ("subtract", "s", "k"), ("Oja (identity)", "D", "k"),
                          ("$B$ = 1", "_", "C0"), ("$B$ = 4", "_", "C1")):
        ax[0].plot([], [], ls="", marker=mk, color=colr, label=lab)
    ax[0].set(xscale="log", yscale="log", xlabel=r"predicted $N\,\mathrm{Var}(Q)$",
              ylabel=r"measured $N\,\mathrm{Var}(Q)$, 95% CI",
              title=f"(a) $N$ = {c['N']}, {c['trials']} seeds per arm\n(open: $\\sigma_n$ = 0)")
    ax[0].legend(loc="upper left")
    keys = list(dict.fromkeys((r["sn"], r["batch"]) for r in d["rows"]))
    for i, (sn, B) in enumerate(keys):
        col = f"C{i}"
        sel = [r for r in d["rows"] if (r["sn"], r["batch"]) == (sn, B)]
        ok = [r for r in sel if r.get("ratio") is not None]
        for r in ok:
            e, (lo, hi) = r["ratio"]["est"], r["ratio"]["ci95"]
            ax[1].errorbar(r["margin"] + 0.004 * (i - 1.5), e, yerr=[[e - lo], [hi - e]], fmt="o", color=col, ms=3,
                           capsize=2)
        if ok:
            ax[1].plot([r["margin"] for r in ok], [r["ratio_pred"] for r in ok], "x-", color=col, ms=5, lw=0.8,
                       label=f"$\\sigma_n$ = {sn:g}, $B$ = {B}")
        fc = [r["margin"] for r in sel if r["outcome"] == "fully_clamped"]
        if fc:
            ax[1].plot(fc, [1.0] * len(fc), "|", color=col, ms=10, mew=1.5)
    ax[1].axhline(1, color="k", lw=0.5)
    ax[1].plot([], [], "ko", ms=3, label="measured, 95% CI")
    ax[1].plot([], [], "kx", label="predicted")
    ax[1].plot([], [], "k|", ms=8, mew=1.5, label="fully clamped")
    ax[1].set(xlabel="margin $m$", ylabel=r"$N\,\mathrm{Var}(Q)$ clamp / subtract", title="(b) variance ratio")
    theory_y = []
    for cv in d.get("bridge") or []:
        runs, cur = [], []
        for x in cv["points"]:  # valid runs of margins are joined, never across a margin without a point
            if "car" in x:
                cur.append(x)
            elif cur:
                runs.append(cur)
                cur = []
        runs += [cur] if cur else []
        line = None
        for p in runs:
            ys = [x["ratio_pred"] for x in p]
            theory_y += [y for y in ys if _positive(y)]
            line, = ax[2].plot([100 * x["car"] for x in p], ys, "-o", ms=3,
                               **({"color": line.get_color()} if line is not None else
                                  {"label": f"one-layer theory $\\sigma_n$ = {cv['sn']:g}, $B$ = {cv['batch']}"}))
    vit_pts = [v for v in ((d.get("vit_points") or []) if vit_pts is None else vit_pts)
               if v["kind"] == "pooled" and v["ratio"] is not None]
    ys = theory_y + [v["ratio"] for v in vit_pts if v["ratio"] > 0] + [1.0]
    ylim = (min(ys) / 1.6, max(ys) * 1.6)
    ax[2].set_yscale("log")
    ax[2].set_ylim(*ylim)
    for v in vit_pts:
        lo, hi = v["ci95"]
        _clip_interval(ax[2], 100 * v["car"], v["ratio"], lo, hi, ylim, fmt="k*", ms=8, capsize=2,
                       label="ViT study: its reported ratio at its layer-0 CAR")
    ax[2].axhline(1, color="k", lw=0.5)
    ax[2].set(xlabel="stationary clamp activation rate (%)", ylabel="variance ratio clamp / subtract (log)",
              title="(c) bridge to the ViT: prediction against CAR")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    ax[2].yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))   # plain 0.5, 1, 2, 5: not 6 x 10^0
    ax[2].yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax[2].yaxis.set_minor_formatter(NullFormatter())
    # the legends of (b) and (c) in the free fourth panel: they cover no data
    h1, l1 = ax[1].get_legend_handles_labels()
    h2, l2 = ax[2].get_legend_handles_labels()
    leg = axs[1, 1].legend(h1, l1, loc="upper center", title="panel (b)", ncols=2, borderaxespad=0)
    axs[1, 1].add_artist(leg)
    axs[1, 1].legend(h2, l2, loc="lower center", title="panel (c)", ncols=1, borderaxespad=0)
    fig.suptitle(f"one feature, tanh, $m_2$ = {c['model']['m2'][0]:g}, $\\tau$ = {c['model']['tau']:g}, Rademacher $c$")
    return fig


@styled
def fig_clamp_scaling(d: dict, *, width_in: float = 0.75 * TEXT_WIDTH_IN, height_in: float = 3.2):
    """N Var(Q) measured at several N (95% CI) against the N-independent prediction (lines), for
    the clamp result's ``scaling`` cells (the study's own figure; the paper tabulates them)."""
    fig, ax = figure(width_in, height_in)
    sc = d["scaling"]
    for mode, m, sn, B in dict.fromkeys((s["mode"], s["margin"], s["sn"], s["batch"]) for s in sc):
        sel = [s for s in sc if (s["mode"], s["margin"], s["sn"], s["batch"]) == (mode, m, sn, B)]
        Ns = np.array([s["N"] for s in sel], float)
        est = np.array([s["measured"]["est"] for s in sel])
        ci = np.array([s["measured"]["ci95"] for s in sel], float)
        ln = ax.errorbar(Ns, est, yerr=[est - ci[:, 0], ci[:, 1] - est], fmt="o", capsize=2,
                         label=("Oja (identity)" if mode == "oja" else
                                f"{mode}, $m$ = {m:g}, $\\sigma_n$ = {sn:g}, $B$ = {B}"))
        ax.plot([Ns.min() / 1.3, Ns.max() * 1.3], [sel[0]["pred"]] * 2, "-", color=ln[0].get_color(), lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="dimension $N$",
           ylabel=r"$N\,\mathrm{Var}(Q)$, 95% CI (lines: prediction)")
    ax.legend(loc="best")
    c = d["config"]
    fig.suptitle(f"one feature, tanh, $m_2$ = {c['model']['m2'][0]:g}, $\\tau$ = {c['model']['tau']:g}; Oja: identity, "
                 f"$\\tau$ = {c['oja_tau']}")
    return fig


def summary_lines(res: dict) -> list[str]:
    """A short human summary (the CLI prints it instead of the JSON)."""
    s = res["summary"]
    out = [f"N Var(Q) inside the measured 95% CI: {s['arms_in_ci']}/{s['arms_checked']} arms; ratio clamp/subtract "
           f"inside its CI: {s['ratios_in_ci']}/{s['ratios_checked']} cells; fully clamped cells: "
           f"{s['fully_clamped_cells']}, collapsed: {s.get('collapse_cells', 0)}, quasi-frozen: "
           f"{s.get('quasi_frozen_cells', 0)}; N-scaling cells in CI: {s['scaling_in_ci']}/{s['scaling_checked']}"]
    for r in res["rows"]:
        if r["ratio"] is not None:
            lo, hi = r["ratio"]["ci95"]
            out.append(f"  m={r['margin']} sn={r['sn']} B={r['batch']}: ratio pred {r['ratio_pred']:.3f}, measured "
                       f"{r['ratio']['est']:.3f} [{lo:.3f}, {hi:.3f}] {'in' if r['ratio_in_ci'] else 'OUT'}")
        else:
            out.append(f"  m={r['margin']} sn={r['sn']} B={r['batch']}: {r['outcome']} (Q -> "
                       f"{r['clamp']['measured'].get('final_Q_mean', float('nan')):.4f}, CAR "
                       f"{r['clamp']['measured'].get('final_car', float('nan')):.3f})")
    return out
