"""``cffdyn sim predict``: the clamp/subtract variance-ratio map in the within-pair noise, stated
before any ViT run, as a machine-readable record (:mod:`sim.prediction_record`) and a figure.

For every activation, margin m and noise sigma_n of the grid, the clamped and the subtracted
one-unit models (:mod:`sim.fluctuations`) give their stationary point, the linear-noise N Var(Q)
(the N -> inf limit) and the exact diffusion's N Var(Q) at the record's N (:mod:`sim.diffusion`),
each with its validity figures.  VR = N Var(clamp) / N Var(subtract), from the diffusion values;
a cell outside validity (quasi-frozen, escaping, collapsed or fully clamped) has no VR and is
drawn as such, never as a valid point.  The subtract arm does not depend on m (its gradient is
the plain score's): one per (activation, sigma_n).

Crossing of VR = 1: per (activation, margin) and per noise limit (diffusion at N, linear noise),
by linear interpolation of log VR between the two valid grid points that bracket the sign
change.  The quoted uncertainty of the crossing and of log VR is the spread over the margins of
the grid and between N and N -> inf: a model spread (which effective margin and size a ViT layer
has is not known), not a statistical interval; the theory itself is deterministic.

Power (paired design, matched seeds): the seeds per arm at which the Pitman-Morgan test
(:mod:`cffdyn.power`, two-sided, level alpha, assumed correlation of paired runs) detects the
predicted VR with the given power, one pair of partner cells (clamp vs subtract at one noise
level).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cffdyn.errors import UserError
from cffdyn.io import Progress, atomic_write_json, to_jsonable
from sim.diffusion import VALIDITY, ValidityRule, fp_stationary, validity
from sim.fluctuations import NoInteriorFixedPoint, stationary_point
from sim.model import MFConfig
from sim.prediction_record import SCHEMA, SCHEMA_VERSION, noise_ratio
from sim.report import finish, pyplot, reuse_recorded, save_fig

__all__ = ["PREDICTION_KIND", "record_prediction", "PredictConfig", "PREDICT_QUICK", "PREDICT_FULL", "SN_MAX", "THEORY_ACTIVATIONS", "cell_prediction",
           "check_predict_config", "run_predict", "draw_prediction", "power_table"]

#: the noise range of the theory as checked against SGD (sim validate) and a margin of safety above
SN_MAX = 2.0
#: activations whose clamp region and kinks the boundary-resolving quadrature handles
THEORY_ACTIVATIONS = ("tanh", "relu", "identity")


@dataclass(frozen=True)
class PredictConfig:
    """The map: the one-unit ``model`` (tau, m2, rho, B, law; its sn, mode, margin and
    activation are set per cell) for each activation x margin x noise level; the diffusion
    values at dimension ``N``; the headline margin ``record_margin`` (one of ``margins``) whose
    curve the record's predictions state; ``q0`` the start of the flow; ``validity`` the rule;
    power at ``power`` and level ``alpha`` with correlation ``power_corr`` of paired runs."""
    model: MFConfig = MFConfig(tau=1.0, m2=(3.0,))
    activations: tuple[str, ...] = ("tanh", "relu")
    margins: tuple[float, ...] = (0.1, 0.3, 0.5)
    sns: tuple[float, ...] = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
    record_margin: float = 0.3
    N: int = 2000
    q0: float = 0.5
    validity: ValidityRule = field(default_factory=lambda: VALIDITY)
    power: float = 0.8
    alpha: float = 0.05
    power_corr: float = 0.5


PREDICT_FULL = PredictConfig()
PREDICT_QUICK = PredictConfig(margins=(0.1, 0.3), sns=(0.0, 0.35, 0.7, 1.0, 1.3))


def check_predict_config(cfg: PredictConfig) -> None:
    """Bad input the theory does not cover: one line, before any work."""
    bad = [a for a in cfg.activations if a not in THEORY_ACTIVATIONS]
    if bad or not cfg.activations:
        raise UserError(f"activation(s) {bad or '(none)'} outside the theory",
                        f"choose from {', '.join(THEORY_ACTIVATIONS)}")
    if not cfg.sns or any(not (math.isfinite(s) and 0.0 <= s <= SN_MAX) for s in cfg.sns):
        raise UserError(f"noise levels {cfg.sns} must lie in [0, {SN_MAX:g}] (the range the theory covers)",
                        "use --sns between 0 and 2, e.g. 0 0.35 0.7 1.0 1.3")
    if not cfg.margins or any(not (math.isfinite(m) and 0.0 < m < 1.0) for m in cfg.margins):
        raise UserError(f"margins {cfg.margins} must lie in (0, 1): at m = 0 clamp and subtract are the same "
                        "model (VR = 1), at m >= 1 every pair is clamped", "use margins such as 0.1 0.3 0.5")
    if cfg.record_margin not in cfg.margins:
        raise UserError(f"record margin {cfg.record_margin} is not one of the margins {cfg.margins}",
                        "add it to --margins or choose another --record-margin")
    if cfg.N < 100:
        raise UserError(f"N={cfg.N} is below 100: the diffusion theory is an expansion in 1/N", "use N >= 100")
    if cfg.model.d != 1 or not cfg.model.normalize:
        raise UserError("the fluctuation theory covers one feature (d = 1) with normalisation",
                        "use a model with one second moment m2 and normalize=True")
    if not 0.0 < cfg.q0 < 1.0:
        raise UserError(f"q0={cfg.q0} must lie in (0, 1)", "use --q0 0.5")


def cell_prediction(mf: MFConfig, N: int, *, q0: float = 0.5, rule: ValidityRule = VALIDITY) -> dict:
    """One model's prediction at dimension N: ``outcome`` (interior, quasi_frozen, escapes,
    unresolved, fully_clamped, collapse, boundary, marginal), the linear-noise ``N_var_ou``,
    the diffusion's ``N_var`` (the prediction) and mean shift, and the validity figures.  A cell
    without a stable interior point has no numbers, only its outcome and reason."""
    try:
        sp = stationary_point(mf, q0)
    except NoInteriorFixedPoint as exc:
        return {"outcome": exc.outcome, "valid": False, "reason": str(exc)}
    fp = fp_stationary(mf, sp, N)
    val = validity(sp, fp, N, rule)
    out = sp.as_dict()
    out.update({"N": int(N), "N_var_ou": sp.n_var, "N_var": fp["N_var"], "mean_Q": fp["mean_Q"],
                "N_shift": fp["N_shift"], "fp": fp, "validity": val, "outcome": val["outcome"],
                "valid": val["valid"], "reason": val["reason"]})
    return out


def _mf(cfg: PredictConfig, act: str, mode: str, m: float, sn: float) -> MFConfig:
    return cfg.model.replace(activation=act, mode=mode, margin=m if mode == "clamp" else 0.0, sn=sn)


def _crossing(sns: list[float], lv: list[float | None]) -> list[float]:
    """sigma_n where log VR changes sign between two valid neighbouring grid points (linear)."""
    out = []
    for i in range(len(sns) - 1):
        a, b = lv[i], lv[i + 1]
        if a is None or b is None:
            continue
        if a == 0.0:
            out.append(sns[i])
        elif a * b < 0:
            out.append(sns[i] + (sns[i + 1] - sns[i]) * a / (a - b))
    return out


def power_table(vrs: list[tuple[float, float | None]], *, power: float, alpha: float, corr: float) -> list[dict]:
    """Seeds per arm for the paired Pitman-Morgan test (``cffdyn.power.seeds_for_power_paired``,
    one pair of partner cells) at each (sigma_n, VR); None where 2000 seeds are not enough."""
    from cffdyn.power import seeds_for_power_paired

    rows = []
    for sn, vr in vrs:
        if vr is None:
            rows.append({"sigma_n": sn, "vr": None, "seeds_per_arm": None, "note": "no valid prediction"})
            continue
        n = seeds_for_power_paired(vr, corr, 1, power=power, alpha=alpha) if abs(math.log(vr)) > 1e-9 else None
        rows.append({"sigma_n": sn, "vr": vr, "seeds_per_arm": n,
                     "note": "" if n is not None else "more than 2000 seeds per arm (VR too close to 1)"})
    return rows


ONE_UNIT_LIMITS = [
    "The model is one unit with one feature: a ViT layer has many units sharing a normalisation and "
    "features that compete; the map predicts the direction and rough size of the clamp's effect on the "
    "stationary spread of one unit's alignment, not the test accuracy's variance.",
    "Seed-to-seed variance in a ViT includes the transient from initialisation and the data order over a "
    "finite training run; the map is for the stationary spread (states whose correlation time exceeds the "
    "horizon are marked quasi-frozen and predict nothing).",
    "The margin acts per layer through the clamp activation rate; which model margin a layer's CAR "
    "corresponds to is not predicted (the interval spans the margins of the grid for that reason).",
    "The effective sigma_n of a layer is defined by the identity Var(h1-h2)/(2 Var h) = sigma_n^2/(1+sigma_n^2) "
    "(independent views, unit signal variance); augmentations that are not additive Gaussian noise, and "
    "layers below the measured one, are outside the model.",
    "Depth, attention, the learning-rate schedule and the optimiser (AdamW, not plain SGD on the sphere) are "
    "not in the model.",
]


def run_predict(cfg: PredictConfig, out_dir, *, reuse: bool = True, progress: bool = True,
                command: str = "") -> dict:
    """Compute the map, write ``predict.json`` (every cell), ``prediction.json`` (the record) and
    ``predict.pdf`` / ``predict.png`` (:func:`draw_prediction`); returns the study dict."""
    from cffdyn.machine import machine_info

    out_dir = Path(out_dir)
    check_predict_config(cfg)
    if (old := reuse_recorded(out_dir, "predict", cfg, reuse, outputs=("prediction.json",))) is not None:
        return old
    t0 = time.perf_counter()
    keys = [(a, "subtract", 0.0, sn) for a in cfg.activations for sn in cfg.sns]
    keys += [(a, "clamp", m, sn) for a in cfg.activations for m in cfg.margins for sn in cfg.sns]
    prog = Progress(len(keys), "predict", enabled=progress)
    cells: dict[tuple, dict] = {}
    for i, k in enumerate(keys):
        cells[k] = cell_prediction(_mf(cfg, *k), cfg.N, q0=cfg.q0, rule=cfg.validity)
        prog.update(i + 1, f"{k[0]} {k[1]} m={k[2]} sn={k[3]}: {cells[k]['outcome']}")
    if not any(c["valid"] for k, c in cells.items() if k[1] == "clamp"):
        raise UserError("every clamped cell of the grid is outside validity (" +
                        ", ".join(sorted({c["outcome"] for k, c in cells.items() if k[1] == "clamp"})) + ")",
                        "add noise levels between 0.3 and 1.3 or margins between 0.1 and 0.5")
    curves = []
    for a in cfg.activations:
        for m in cfg.margins:
            pts = []
            for sn in cfg.sns:
                cl, sb = cells[(a, "clamp", m, sn)], cells[(a, "subtract", 0.0, sn)]
                p: dict[str, Any] = {"sigma_n": sn, "clamp_outcome": cl["outcome"], "subtract_outcome": sb["outcome"],
                                     "valid": bool(cl["valid"] and sb["valid"]),
                                     "car": cl.get("car_star"), "Q_clamp": cl.get("Q_star"),
                                     "Q_subtract": sb.get("Q_star"),
                                     "noise_ratio": noise_ratio(sn, cfg.model.rho, cl.get("Q_star") or 0.0,
                                                                cfg.model.m2[0])}
                if "N_var" in cl and "N_var" in sb:
                    p["vr"] = cl["N_var"] / sb["N_var"]
                    p["vr_ou"] = cl["N_var_ou"] / sb["N_var_ou"]
                    p["log_vr"] = math.log(p["vr"])
                    p["log_vr_ou"] = math.log(p["vr_ou"])
                    p["ou_valid"] = bool(cl["validity"]["ou_valid"] and sb["validity"]["ou_valid"])
                else:
                    p["vr"] = p["vr_ou"] = p["log_vr"] = p["log_vr_ou"] = None
                    p["ou_valid"] = False
                p["reason"] = "valid" if p["valid"] else "; ".join(
                    f"{mode}: {c['outcome']} ({c['reason']})" for mode, c in (("clamp", cl), ("subtract", sb))
                    if not c["valid"])
                pts.append(p)
            lv = [p["log_vr"] if p["valid"] else None for p in pts]
            lvo = [p["log_vr_ou"] if p["valid"] else None for p in pts]
            curves.append({"activation": a, "margin": m, "N": cfg.N, "points": pts,
                           "crossings": _crossing(list(cfg.sns), lv), "crossings_ou": _crossing(list(cfg.sns), lvo)})
    rec = _record(cfg, curves, command)
    res = {"cells": [{"activation": k[0], "mode": k[1], "margin": k[2], "sigma_n": k[3], **v} for k, v in cells.items()],
           "curves": curves, "crossings": rec["crossings"], "predictions": rec["predictions"],
           "power": rec["power"], "validity_range": rec["validity_range"], "machine": machine_info()}
    atomic_write_json(out_dir / "prediction.json", rec)
    draw_prediction(to_jsonable(res), out_dir / "predict.png")
    return finish(out_dir, "predict", cfg, res, None, t0)


def _record(cfg: PredictConfig, curves: list[dict], command: str) -> dict:
    from cffdyn.machine import machine_info

    crossings = {}
    for a in cfg.activations:
        cs = [c for c in curves if c["activation"] == a]
        head = next(c for c in cs if c["margin"] == cfg.record_margin)
        spread = [x for c in cs for x in (*c["crossings"], *c["crossings_ou"])]
        crossings[a] = {"margin": cfg.record_margin,
                        "sigma_n_cross": head["crossings"][0] if head["crossings"] else None,
                        "all_crossings": head["crossings"],
                        "interval": [min(spread), max(spread)] if spread else None,
                        "per_margin": {str(c["margin"]): {"diffusion": c["crossings"], "linear_noise": c["crossings_ou"]}
                                       for c in cs},
                        "spans": "margins " + ", ".join(f"{m:g}" for m in cfg.margins) +
                                 f"; diffusion at N = {cfg.N} and linear noise (N -> inf)",
                        "note": None if head["crossings"] else "no sign change of log VR between valid grid points"}
    preds, vr_head = [], {}
    for a in cfg.activations:
        cs = [c for c in curves if c["activation"] == a]
        head = next(c for c in cs if c["margin"] == cfg.record_margin)
        for j, sn in enumerate(cfg.sns):
            hp = head["points"][j]
            vals = [v for c in cs for v in (c["points"][j]["log_vr"], c["points"][j]["log_vr_ou"])
                    if c["points"][j]["valid"] and v is not None]
            valid = bool(hp["valid"])
            lo, hi = (min(vals), max(vals)) if valid else (None, None)
            sign = (1 if lo > 0 else (-1 if hi < 0 else 0)) if valid else None
            preds.append({"activation": a, "sigma_n": sn, "margin": cfg.record_margin, "valid": valid,
                          "outcome": "valid" if valid else hp["reason"], "sign": sign,
                          "log_vr": hp["log_vr"] if valid else None, "log_vr_interval": [lo, hi] if valid else None,
                          "vr": hp["vr"] if valid else None, "car": hp["car"], "seeds_per_arm": None})
            vr_head[(a, sn)] = hp["vr"] if valid else None
    power = []
    for a in cfg.activations:
        rows = power_table([(sn, vr_head[(a, sn)]) for sn in cfg.sns], power=cfg.power, alpha=cfg.alpha,
                           corr=cfg.power_corr)
        for r in rows:
            r["activation"] = a
        power += rows
    for p in preds:
        p["seeds_per_arm"] = next(r["seeds_per_arm"] for r in power
                                  if r["activation"] == p["activation"] and r["sigma_n"] == p["sigma_n"])
    vrange = {}
    for a in cfg.activations:
        ok = [p["sigma_n"] for p in preds if p["activation"] == a and p["valid"]]
        vrange[a] = {"sigma_n_valid": ok, "sigma_n_min": min(ok) if ok else None, "sigma_n_max": max(ok) if ok else None}
    m = cfg.model
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "what": ("VR = Var_clamp / Var_subtract of the stationary seed-to-seed variance of the one-unit model's "
                 "overlap Q (sim.fluctuations + sim.diffusion), against the within-pair noise sigma_n; "
                 f"headline margin {cfg.record_margin:g}; diffusion values at N = {cfg.N}"),
        "model": to_jsonable(m), "N": cfg.N,
        "sigma_n_measure": {
            "identity": "Var(h1 - h2) / (2 Var h) = sigma_n^2 (1 - rho) / (1 + (m2 - 1) Q^2 + sigma_n^2) on positive "
                        "pairs; = sigma_n^2 / (1 + sigma_n^2) for rho = 0 and unit signal variance",
            "estimator": "sigma_n = sqrt(r / (1 - r)), r = Var(h1 - h2) / (2 Var h) over a layer's pre-activations "
                         "on the two views (sim.prediction_record.sigma_n_from_preacts)",
            "model_rho": m.rho, "model_m2": m.m2[0]},
        "curves": [{"activation": c["activation"], "margin": c["margin"],
                    "points": [{k: p[k] for k in ("sigma_n", "valid", "vr", "vr_ou", "log_vr", "car", "reason")}
                               for p in c["points"]]} for c in curves],
        "crossings": crossings,
        "predictions": preds,
        "refuted_if": ("At an estimated sigma_n where the prediction is valid and its log VR interval lies on one "
                       "side of 0 (sign +1: the clamp raises the variance, -1: it lowers it), a ViT study's paired "
                       "95% interval of log VR (clamp / subtract, matched seeds) lying entirely on the other side "
                       "of 0 refutes the prediction; a sign 0 (interval straddling 0) predicts no direction and "
                       "cannot be refuted there.  Across noise doses: log VR must change sign near sigma_n_cross "
                       "(within its interval), rising with sigma_n."),
        "validity_range": {"by_activation": vrange, "rule": to_jsonable(cfg.validity),
                           "sigma_n_max_theory": SN_MAX},
        "power": power,
        "power_assumptions": {"test": "Pitman-Morgan, paired (cffdyn.power.seeds_for_power_paired), two-sided",
                              "alpha": cfg.alpha, "power": cfg.power, "corr_paired_runs": cfg.power_corr,
                              "partner_cell_pairs": 1, "ratio": "the headline margin's predicted VR"},
        "one_unit_limits": ONE_UNIT_LIMITS,
        "provenance": {"command": command, "machine": machine_info(), "config": to_jsonable(cfg)},
    }


def draw_prediction(res: dict, path) -> None:
    """The map: VR against sigma_n per activation (panels), one curve per margin (diffusion at N,
    solid; linear noise, dotted), cells outside validity shaded and marked, never joined; the
    crossing of 1 and its interval.  Writes ``path`` as PNG and PDF (vector), 6.5 in wide,
    fonts 8 pt."""
    plt = pyplot()
    acts = list(dict.fromkeys(c["activation"] for c in res["curves"]))
    with plt.rc_context({"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
                         "xtick.labelsize": 7, "ytick.labelsize": 7, "pdf.fonttype": 42}):
        fig, axes = plt.subplots(1, len(acts), figsize=(6.5, 2.9), sharey=True, squeeze=False)
        for ax, a in zip(axes[0], acts):
            cs = [c for c in res["curves"] if c["activation"] == a]
            sns = [p["sigma_n"] for p in cs[0]["points"]]
            step = 0.5 * min(np.diff(sns)) if len(sns) > 1 else 0.05
            shaded = set()
            for j, c in enumerate(cs):
                col = f"C{j}"
                pts = c["points"]
                seg_x, seg_y = [], []
                for p in pts + [None]:
                    if p is not None and p["valid"]:
                        seg_x.append(p["sigma_n"])
                        seg_y.append(p["vr"])
                        continue
                    if seg_x:  # a run of valid points: joined
                        ax.plot(seg_x, seg_y, "-o", color=col, ms=3, lw=1.2)
                    seg_x, seg_y = [], []
                    if p is not None:
                        if p["sigma_n"] not in shaded:
                            ax.axvspan(p["sigma_n"] - step, p["sigma_n"] + step, color="0.85", lw=0, zorder=0)
                            shaded.add(p["sigma_n"])
                        if p["vr"] is not None:
                            ax.plot(p["sigma_n"], p["vr"], "x", color=col, ms=5)
                ou = [(p["sigma_n"], p["vr_ou"]) for p in pts if p["valid"]]
                if ou:
                    ax.plot(*zip(*ou), ":", color=col, lw=0.9)
                ax.plot([], [], "-o", color=col, ms=3, label=f"$m = {c['margin']:g}$")
            cr = res["crossings"].get(a) or {}
            if cr.get("interval"):
                ax.axvspan(*cr["interval"], color="C9", alpha=0.25, lw=0, zorder=0)
            if cr.get("sigma_n_cross") is not None:
                ax.axvline(cr["sigma_n_cross"], color="k", lw=0.8, ls="--")
            ax.axhline(1.0, color="k", lw=0.6)
            ax.set_yscale("log")
            ax.set_xlabel(r"within-pair noise $\sigma_n$")
            ax.set_title(f"{a}, diffusion at $N = {cs[0]['N']}$")
        axes[0][0].set_ylabel(r"$\mathrm{VR} = \mathrm{Var}_\mathrm{clamp} / \mathrm{Var}_\mathrm{subtract}$")
        h = axes[0][-1]
        h.plot([], [], "k:", lw=0.9, label="linear noise ($N \\to \\infty$)")
        h.fill_between([], [], color="0.85", label="outside validity")
        h.fill_between([], [], color="C9", alpha=0.25, label="crossing of 1 (spread)")
        h.legend(loc="best", frameon=False)
        fig.tight_layout()
        save_fig(fig, Path(path), formats=("png", "pdf"), dpi=200)


#: the kind of the recorded prediction (:mod:`cffdyn.recorded`) and its folder under recorded/
PREDICTION_KIND = "sim.prediction"


def record_prediction(out_dir, *, command: str, wall_s: float | None = None, load_start=None,
                      root=None) -> Path:
    """Keep ``out_dir``'s prediction (``prediction.json`` and the map's figures) in the
    repository's ``recorded/sim/prediction/`` with its provenance; the payload is the prediction
    record itself (:mod:`sim.prediction_record`), the config its ``provenance.config``."""
    from cffdyn.recorded import provenance, record_dir, write_record
    from sim.prediction_record import load_prediction

    out = Path(out_dir)
    rec = load_prediction(out / "prediction.json")       # refuses an edited file (its content hash)
    d = record_dir("sim", "prediction", root)
    return write_record(d, kind=PREDICTION_KIND, config=rec["provenance"]["config"], payload=rec,
                        prov=provenance(command, wall_s=wall_s, load_start=load_start),
                        files={"predict.png": out / "predict.png", "predict.pdf": out / "predict.pdf"})
