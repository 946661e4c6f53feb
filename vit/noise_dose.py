"""The noise-dose study: the mean-field prediction of the clamp/subtract variance ratio tested on
the ViT, dose by dose (``cffdyn vit noise-dose``).

The prediction (recorded before any run: ``recorded/sim/prediction``, :mod:`sim.predict`): in the
one-unit model the ratio VR = Var_clamp / Var_subtract of the stationary seed-to-seed variance is
a function of the within-pair noise sigma_n, below 1 at low noise for tanh and relu alike, rising
with sigma_n, crossing 1 near sigma_n = 0.53 for tanh (m = 0.3) and not at all for relu inside its
valid range.  The ViT is not one unit (its MLP is GELU, between the two curves), so both curves are
tested and where they disagree a dose discriminates between them but cannot refute the theory.

The study (:data:`vit.study_config.NOISE_DOSE`, run by :func:`vit.study.run_study`): loss_mode
{clamp, subtract} x ``view_noise`` doses x matched seeds, seed design ``sgd`` (initialisation and
split fixed: the seed variance is SGD noise: batch order and the views' noise).  Each run records
per layer and epoch the effective within-pair noise ``sigma_n_eff`` of its pooled features
(:func:`vit.diagnostics.view_pair_noise`), the nearest-class-mean probe accuracy, the mean
positive-pair similarity and the CAR.

The analysis (:func:`analyse`; the rule was fixed in the commit that recorded the prediction):

* quantities: test accuracy (the head's), placed at the last layer's sigma_n_eff (the layer the
  head reads); per layer l the probe test accuracy, the mean positive-pair similarity and the
  CAR, placed at layer l's sigma_n_eff.  Each at the selected epoch (``sel``) and averaged over
  the last :data:`LAST_K` epochs (``last``).  A dose's sigma_n_eff is the mean over all its runs
  (both arms; the per-arm means and the SD over runs are reported).
* per dose and quantity: the clamp/subtract variance ratio of the matched seeds with the paired
  bootstrap 95% interval (seeds resampled, :func:`vit.stats.paired_bootstrap_ci`), Pitman-Morgan
  and the paired permutation p-values (:mod:`vit.stats`; the permutation on each arm's residuals,
  since the arms' means differ); means and SDs per arm.
* verdict per dose and curve (tanh, relu at the record's margin), :func:`verdict`: where the
  prediction is valid with a sign, the interval entirely on the predicted side of 1 confirms,
  entirely on the other side refutes, otherwise inconclusive; outside validity, or with a
  prediction interval that straddles 1, untestable there.
* trend: the least-squares slope of log VR (test accuracy, ``sel``) against sigma_n_eff over the
  doses, with a paired bootstrap over seeds (one seed draw for every cell); both curves predict a
  positive slope; an interval below 0 refutes.
* sensitivity (added after the rule was fixed, not a verdict of its own): sigma_n_eff is measured
  on learned features and differs between the arms; the verdicts are also given with each
  quantity placed at the untrained network's sigma_n_eff (:func:`init_noise`), the noise as the
  input brings it.

Files: ``OUT/study.json`` and ``OUT/runs`` (the study), ``OUT/noise_dose.json`` (schema
:data:`SCHEMA`: the per-run table, the analysis, the prediction's hash), ``OUT/noise_dose.png``
and ``.pdf`` (:func:`draw_noise_dose`).  ``--record`` keeps them in ``recorded/vit/noise_dose``
(:mod:`cffdyn.recorded`), which the paper build reads.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cffdyn.errors import UserError
from cffdyn.io import HASH_KEY, atomic_savefig, read_json
from cffdyn.recorded import RECORDED_ROOT, load_record, provenance, record_dir, write_record
from sim.prediction_record import predicted_at, validate_prediction
from vit import stats
from vit.study_config import NOISE_DOSE

__all__ = ["SCHEMA", "SCHEMA_VERSION", "KIND", "LAST_K", "ACTIVATIONS", "PREDICTION_DIR", "load_prediction_record",
           "check_design", "run_table", "init_noise", "VERDICT_KINDS", "verdict_kind",
           "predicted_interval", "verdict", "analyse", "draw_noise_dose", "record_noise_dose",
           "find_noise_dose_record", "format_noise_dose", "NotRecorded", "paper_result", "NOISE_DOSE"]

SCHEMA = "cffdyn.vit.noise_dose"
SCHEMA_VERSION = 1
KIND = "vit.noise_dose"
#: epochs averaged for the ``last`` window
LAST_K = 3
#: the curves the ViT is tested against (its GELU lies between them)
ACTIVATIONS = ("tanh", "relu")
#: the recorded prediction (``cffdyn sim predict --record``)
PREDICTION_DIR = RECORDED_ROOT / "sim" / "prediction"
#: per-layer quantities: name in the table -> key in an epoch's layer record
LAYER_KEYS = {"probe": "ncm_test_acc", "pos_sim": "pos_sim", "car": "car", "sigma": "sigma_n_eff"}


def load_prediction_record(path: str | Path | None = None) -> tuple[dict, str]:
    """The prediction (its payload) and its content hash, from a recorded folder
    (``recorded/sim/prediction``, the default) or a ``prediction.json`` file; one line if missing,
    edited or of another schema."""
    p = Path(path) if path is not None else PREDICTION_DIR
    if p.is_dir():
        rec = load_record(p, kind="sim.prediction", rerun="run `cffdyn sim predict --record`")
        pred = rec["payload"]
        validate_prediction(pred, str(p))
    else:
        from sim.prediction_record import load_prediction
        pred = load_prediction(p)          # validated, and refused if edited
    return pred, str(pred.get(HASH_KEY) or "")


def check_design(cfg: Mapping[str, Any]) -> tuple[list[float], list[int]]:
    """The doses and seeds of a study config dict fit for the paired noise-dose analysis;
    otherwise UserError naming what does not fit."""
    factors = {f: list(lv) for f, lv in cfg["factors"]}
    if set(factors) != {"loss_mode", "view_noise"}:
        raise UserError(f"the noise-dose analysis needs the factors loss_mode x view_noise, the study has "
                        f"{', '.join(factors)}", "run `cffdyn vit noise-dose` (preset noise-dose)")
    if sorted(factors["loss_mode"]) != ["clamp", "subtract"]:
        raise UserError(f"loss_mode levels {factors['loss_mode']}: the ratio needs exactly clamp and subtract",
                        "use --factor loss_mode=clamp,subtract")
    doses = sorted(float(v) for v in factors["view_noise"])
    if len(doses) < 3:
        raise UserError(f"{len(doses)} view_noise doses: a trend across doses needs at least 3", "give 3 or more")
    if cfg.get("independent_seeds"):
        raise UserError("the study has independent seeds per cell, which cannot be paired",
                        "rerun it with matched seeds (drop --independent-seeds)")
    if int(cfg["n_seeds"]) < 3:
        raise UserError(f"{cfg['n_seeds']} seeds per cell: the paired tests need at least 3", "use --seeds 3 or more")
    seeds = list(range(int(cfg["seed0"]), int(cfg["seed0"]) + int(cfg["n_seeds"])))
    return doses, seeds


def _finite(x: Any) -> float:
    if not (isinstance(x, (int, float)) and math.isfinite(x)):
        raise UserError(f"a recorded run holds the non-finite value {x!r}", "rerun the study (the run is broken)")
    return float(x)


def run_table(study: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per run of a complete study: its cell, seed, test accuracy and per layer the
    :data:`LAYER_KEYS` quantities at the selected epoch and averaged over the last LAST_K epochs
    (read from each run's ``result.json``, hash-checked)."""
    if study.get("status") != "complete":
        raise UserError(f"the study is {study.get('status')!r}, not complete", "rerun the same command to finish it")
    rows = []
    for r in study["runs"]:
        res = read_json(Path(r["run_dir"]) / "result.json", expect=dict)
        hist = res["history"]
        layers = []
        for l, sel in enumerate(res["per_layer"]):
            tail = [h["layers"][l] for h in hist[-LAST_K:]]
            layers.append({"sel": {k: _finite(sel[key]) for k, key in LAYER_KEYS.items()},
                           "last": {k: _finite(sum(t[key] for t in tail) / len(tail)) for k, key in LAYER_KEYS.items()}})
        rows.append({"loss_mode": r["cell"]["loss_mode"], "view_noise": float(r["cell"]["view_noise"]),
                     "seed": int(r["seed"]), "test_acc": _finite(res["test_acc"]), "best_epoch": res["best_epoch"],
                     "layers": layers})
    return rows


def init_noise(study_cfg: Mapping[str, Any]) -> dict[str, list[float | None]]:
    """Per dose (key ``f"{dose:g}"``) and layer the sigma_n_eff of the untrained network (seed0's
    initialisation, which seed design ``sgd`` shares across seeds and arms), measured with the
    same views as every epoch's: the noise as the input brings it, before learning changes the
    features (a sensitivity placement beside the pre-registered one)."""
    from vit.config import data_key, load_run_dataset
    from vit.study_config import StudyConfig
    from vit.train import prepare_method

    cfg = StudyConfig.from_dict(study_cfg)
    doses, _ = check_design(study_cfg)
    cache: dict[tuple, Any] = {}
    out = {}
    for d in doses:
        rc = cfg.run_config(tuple("clamp" if f == "loss_mode" else d for f in cfg.factor_names), cfg.seed0)
        if data_key(rc) not in cache:
            cache[data_key(rc)] = load_run_dataset(rc)
        est = prepare_method([rc], [cache[data_key(rc)]]).pair_noise()
        out[f"{d:g}"] = [row[0] for row in est["sigma_n_eff"]]
    return out


#: the kind of a verdict (:func:`verdict_kind`) -> its verdict word
VERDICT_KINDS = {"confirmed": "confirmed", "refuted": "refuted", "inconclusive": "inconclusive",
                 "no interval": "inconclusive", "no direction": "untestable", "outside validity": "untestable"}


def verdict_kind(predicted_interval: Sequence[float] | None, ci: Sequence[float] | None) -> str:
    """The kind of one verdict (a key of :data:`VERDICT_KINDS`) from its numbers alone: the
    predicted VR interval ``[lo, hi]`` (None where the prediction is not valid; the record's
    ``predicted_interval``) and the measured paired 95% interval ``ci`` (None for degenerate data).

    :func:`verdict` decides by this function, so a recorded verdict's kind is this function of the
    numbers recorded beside it: a reader (the paper) never has to parse the verdict's ``why``."""
    if predicted_interval is None:
        return "outside validity"
    plo, phi = predicted_interval
    if plo <= 1.0 <= phi:
        return "no direction"
    if ci is None:
        return "no interval"
    lo, hi = ci
    below = phi < 1.0                 # the predicted side of 1
    if (below and hi < 1.0) or (not below and lo > 1.0):
        return "confirmed"
    if (below and lo > 1.0) or (not below and hi < 1.0):
        return "refuted"
    return "inconclusive"


def predicted_interval(pred: Mapping[str, Any]) -> list[float] | None:
    """The predicted VR interval of one prediction (:func:`sim.prediction_record.predicted_at`),
    None where it is not valid: what the record keeps beside each verdict."""
    return [math.exp(x) for x in pred["log_vr_interval"]] if pred.get("valid") else None


def verdict(pred: Mapping[str, Any], ci: Sequence[float] | None) -> tuple[str, str]:
    """(verdict, why) of one measured VR interval against one prediction (module doc), decided by
    :func:`verdict_kind`; ``why`` says it in words with the numbers."""
    pi = predicted_interval(pred)
    kind = verdict_kind(pi, ci)
    if kind == "outside validity":
        reason = str(pred.get("reason", "outside the prediction's validity"))
        return "untestable", reason.split(" (")[0]   # the first clause; the model's diagnosis is in the record
    if kind == "no direction":
        return "untestable", f"the predicted interval [{pi[0]:.3g}, {pi[1]:.3g}] contains VR = 1 (no direction)"
    if kind == "no interval":
        return "inconclusive", "no interval for the measured ratio (degenerate data)"
    lo, hi = ci
    side = "below" if pi[1] < 1.0 else "above"
    head = f"predicted VR {pred['vr']:.3g} ({side} 1); measured interval [{lo:.3g}, {hi:.3g}] "
    return VERDICT_KINDS[kind], head + {"confirmed": f"entirely {side} 1",
                                        "refuted": "entirely on the other side of 1",
                                        "inconclusive": "contains 1"}[kind]


def _values(table, dose, mode, seeds, get) -> list[float]:
    by_seed = {r["seed"]: r for r in table if r["view_noise"] == dose and r["loss_mode"] == mode}
    missing = [s for s in seeds if s not in by_seed]
    if missing:
        raise UserError(f"view_noise {dose:g}, {mode}: no run for seed(s) {missing}", "rerun the study to finish it")
    return [get(by_seed[s]) for s in seeds]


def _compare(clamp: list[float], sub: list[float], *, n_boot: int, seed: int) -> dict[str, Any]:
    """The paired comparison of one quantity at one dose (module doc); degenerate data in words."""
    c, s = np.asarray(clamp, float), np.asarray(sub, float)
    vc, vs = float(c.var(ddof=1)), float(s.var(ddof=1))
    out: dict[str, Any] = {"mean_clamp": float(c.mean()), "sd_clamp": math.sqrt(vc), "mean_subtract": float(s.mean()),
                           "sd_subtract": math.sqrt(vs), "var_clamp": vc, "var_subtract": vs, "n_pairs": len(c),
                           "vr": None, "ci": None, "pm_p": None, "perm_p": None, "pair_corr": None, "note": None}
    if vc == 0 or vs == 0:
        out["note"] = (f"{'both arms' if vc == vs == 0 else 'the clamp arm' if vc == 0 else 'the subtract arm'} "
                       f"constant over the seeds: no variance ratio")
        return out
    out["vr"] = vc / vs
    lo, hi, dropped = stats.paired_bootstrap_ci([clamp], [sub], n_resamples=n_boot, seed=seed)
    out["ci"] = [lo, hi]
    pm = stats.pitman_morgan([clamp], [sub])
    out["pm_p"], out["pair_corr"] = pm["pm_p"], pm["pair_corr"]
    # the permutation swaps the arms within each seed pair, exchangeable only if the arms' values have one
    # distribution; the arms' means differ (e.g. the CAR by 20 points), so the swap is made on each arm's
    # residuals (its values minus its mean): a test of the variances, not of the means
    out["perm_p"] = stats.paired_permutation_p([list(c - c.mean())], [list(s - s.mean())], n_resamples=n_boot,
                                               seed=seed)[1]
    if dropped:
        out["note"] = f"{dropped} bootstrap resamples with a 0/0 ratio dropped"
    return out


def _trend(table, doses, seeds, sigmas, *, n_boot: int, seed: int) -> dict[str, Any]:
    """Slope of log VR(test accuracy, sel) on sigma_n_eff over doses, paired bootstrap over seeds."""
    C = np.array([_values(table, d, "clamp", seeds, lambda r: r["test_acc"]) for d in doses])      # (D, n)
    S = np.array([_values(table, d, "subtract", seeds, lambda r: r["test_acc"]) for d in doses])
    x = np.asarray(sigmas, float)

    def slope(idx: np.ndarray) -> float | None:
        c, s = C[:, idx], S[:, idx]
        vc, vs = c.var(axis=1, ddof=1), s.var(axis=1, ddof=1)
        if np.any(vc <= 0) or np.any(vs <= 0):
            return None
        y = np.log(vc / vs)
        return float(np.polyfit(x, y, 1)[0])

    n = len(seeds)
    est = slope(np.arange(n))
    rng = np.random.default_rng(seed)
    draws = [slope(rng.integers(0, n, n)) for _ in range(n_boot)]
    ok = np.array([d for d in draws if d is not None])
    out: dict[str, Any] = {"slope": est, "ci": None, "dropped": n_boot - len(ok), "x": "sigma_n_eff of the last layer",
                           "y": "log VR of test accuracy (selected epoch)", "predicted": "slope > 0 (tanh and relu)"}
    if est is None or len(ok) < 0.9 * n_boot:
        out["verdict"], out["why"] = "inconclusive", "a dose with zero variance in an arm: no slope"
        return out
    lo, hi = (float(v) for v in np.percentile(ok, [2.5, 97.5]))
    out["ci"] = [lo, hi]
    out["p_one_sided"] = float(np.mean(ok <= 0))
    if lo > 0:
        out["verdict"], out["why"] = "confirmed", f"95% interval [{lo:.3g}, {hi:.3g}] above 0"
    elif hi < 0:
        out["verdict"], out["why"] = "refuted", f"95% interval [{lo:.3g}, {hi:.3g}] below 0"
    else:
        out["verdict"], out["why"] = "inconclusive", f"95% interval [{lo:.3g}, {hi:.3g}] contains 0"
    return out


def _verdicts(prediction: Mapping[str, Any], sn: float, ci) -> dict[str, dict[str, Any]]:
    out = {}
    for act in ACTIVATIONS:
        pred = predicted_at(prediction, act, sn)
        v, why = verdict(pred, ci)
        out[act] = {"verdict": v, "why": why, "predicted_vr": pred.get("vr"),
                    "predicted_interval": predicted_interval(pred)}
    return out


def _quantities(n_layers: int) -> list[tuple[str, int | None, str]]:
    """(name, layer or None, key) of every analysed quantity."""
    out: list[tuple[str, int | None, str]] = [("test_acc", None, "test_acc")]
    for l in range(n_layers):
        out += [(f"probe_l{l}", l, "probe"), (f"pos_sim_l{l}", l, "pos_sim"), (f"car_l{l}", l, "car")]
    return out


def analyse(table: list[dict[str, Any]], study_cfg: Mapping[str, Any], prediction: Mapping[str, Any], *,
            n_boot: int = 9999, seed: int = 0, sigma_init: Mapping[str, Sequence[float | None]] | None = None
            ) -> dict[str, Any]:
    """Doses, measured sigma_n_eff, per-quantity paired comparisons, verdicts and the trend
    (module doc), JSON-able.  ``sigma_init`` (:func:`init_noise`): also the verdicts with each
    quantity placed at the untrained network's sigma_n_eff (``verdicts_at_init``)."""
    doses, seeds = check_design(study_cfg)
    n_layers = len(table[0]["layers"])
    last = n_layers - 1
    levels = []
    for d in doses:
        runs = [r for r in table if r["view_noise"] == d]
        sig: dict[str, list[dict[str, Any]]] = {}
        for w in ("sel", "last"):
            sig[w] = []
            for l in range(n_layers):
                v = np.array([r["layers"][l][w]["sigma"] for r in runs])
                per = {m: float(np.mean([r["layers"][l][w]["sigma"] for r in runs if r["loss_mode"] == m]))
                       for m in ("clamp", "subtract")}
                sig[w].append({"mean": float(v.mean()), "sd": float(v.std(ddof=1)), "by_arm": per})
        qs = {}
        for w in ("sel", "last"):
            for name, l, key in _quantities(n_layers):
                if name == "test_acc" and w == "last":
                    continue           # the head reads the selected epoch only
                get = (lambda r: r["test_acc"]) if l is None else (lambda r, l=l, key=key: r["layers"][l][w][key])
                cmp_ = _compare(_values(table, d, "clamp", seeds, get), _values(table, d, "subtract", seeds, get),
                                n_boot=n_boot, seed=seed)
                at_layer = last if l is None else l
                sn = sig[w][at_layer]["mean"]
                cmp_["sigma_n_eff"], cmp_["placed_at_layer"] = sn, at_layer
                cmp_["verdicts"] = _verdicts(prediction, sn, cmp_["ci"])
                s_init = (sigma_init or {}).get(f"{d:g}")
                if s_init is not None and s_init[at_layer] is not None:
                    cmp_["sigma_n_eff_init"] = s_init[at_layer]
                    cmp_["verdicts_at_init"] = _verdicts(prediction, s_init[at_layer], cmp_["ci"])
                qs[f"{name}@{w}"] = cmp_
        levels.append({"view_noise": d, "sigma_n_eff": sig, "quantities": qs,
                       "sigma_n_eff_init": (sigma_init or {}).get(f"{d:g}"),
                       "car_layer0_clamp": qs["car_l0@sel"]["mean_clamp"]})
    trend = _trend(table, doses, seeds, [lv["sigma_n_eff"]["sel"][last]["mean"] for lv in levels], n_boot=n_boot,
                   seed=seed)
    head = []
    for lv in levels:
        vs = {a: lv["quantities"]["test_acc@sel"]["verdicts"][a]["verdict"] for a in ACTIVATIONS}
        shared = all(v == "refuted" for v in vs.values())
        head.append({"view_noise": lv["view_noise"], "verdicts": vs, "shared_prediction_refuted": shared})
    return {"doses": doses, "seeds": seeds, "n_layers": n_layers, "levels": levels, "trend": trend,
            "headline": head, "rule": __doc__.split("The analysis")[1].split("Files:")[0].strip(),
            "n_boot": n_boot, "stats_seed": seed}


def format_noise_dose(an: Mapping[str, Any]) -> str:
    """The per-dose table (test accuracy and layer-0 probe), verdicts and trend, as text."""
    lines = [f"{'dose':>5} {'sn_eff L0':>9} {'sn_eff Lk':>9}  {'quantity':<14} {'VR':>6} {'95% CI':>15} {'PM p':>6} "
             f"{'perm p':>6}  {'clamp mean±SD':>14} {'subtr mean±SD':>14}  tanh / relu"]
    for lv in an["levels"]:
        s0, sk = lv["sigma_n_eff"]["sel"][0]["mean"], lv["sigma_n_eff"]["sel"][-1]["mean"]
        for q in ("test_acc@sel", "probe_l0@sel", f"probe_l{an['n_layers'] - 1}@sel", "pos_sim_l0@sel", "car_l0@sel"):
            c = lv["quantities"][q]
            vr = f"{c['vr']:.3g}" if c["vr"] is not None else "n/a"
            ci = f"[{c['ci'][0]:.3g}, {c['ci'][1]:.3g}]" if c["ci"] else (c["note"] or "n/a")
            p = lambda x: f"{x:.3f}" if x is not None else "n/a"  # noqa: E731
            sc = 100 if q.startswith(("test", "probe", "car")) else 1
            lines.append(f"{lv['view_noise']:>5g} {s0:>9.3f} {sk:>9.3f}  {q:<14} {vr:>6} {ci:>15} {p(c['pm_p']):>6} "
                         f"{p(c['perm_p']):>6}  {sc * c['mean_clamp']:>7.2f}±{sc * c['sd_clamp']:<6.2f} "
                         f"{sc * c['mean_subtract']:>7.2f}±{sc * c['sd_subtract']:<6.2f}  "
                         f"{c['verdicts']['tanh']['verdict']} / {c['verdicts']['relu']['verdict']}")
    t = an["trend"]
    ci = f"[{t['ci'][0]:.3g}, {t['ci'][1]:.3g}]" if t["ci"] else "n/a"
    lines.append(f"trend: slope of log VR(test acc) on sigma_n_eff {t['slope'] if t['slope'] is None else round(t['slope'], 3)}"
                 f", 95% CI {ci}: {t['verdict']} (predicted > 0)")
    return "\n".join(lines)


#: printed width of the figure (the manuscript's text width, inches) and its smallest font (pt)
FIG_WIDTH_IN = 8.5 - 2 * 2.5 / 2.54
FIG_FONT_PT = 7.0


def draw_noise_dose(an: Mapping[str, Any], prediction: Mapping[str, Any], path: str | Path) -> None:
    """The study's figure, drawn once at its printed size (the manuscript includes it as is):
    (a) the predicted map (tanh and relu at the record's margin, valid points, with the model-
    spread band) and the measured test-accuracy VR per dose at the last layer's sigma_n_eff
    (paired 95% intervals; horizontal bars from one arm's mean sigma_n_eff to the other's);
    (b) the same for each layer's probe accuracy at that layer's sigma_n_eff; (c) the measured
    sigma_n_eff per layer and arm against the dose (dotted: the untrained network); (d) test
    accuracy per arm against the dose (mean ± SD over seeds).  Writes ``path`` (.png) and .pdf."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rc = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
          "legend.fontsize": 7, "mathtext.fontset": "cm", "pdf.fonttype": 42}
    with plt.rc_context(rc):
        fig, axs = plt.subplots(2, 2, figsize=(FIG_WIDTH_IN, 5.2), layout="constrained")
        _draw(fig, axs, an, prediction)
        p = Path(path)
        atomic_savefig(fig, p.with_suffix(".png"), dpi=200)
        atomic_savefig(fig, p.with_suffix(".pdf"))
        plt.close(fig)


def _draw(fig, axs, an, prediction) -> None:
    colors = {"tanh": "C0", "relu": "C3"}
    (a, b), (c, dax) = axs
    for ax in (a, b):
        for act in ACTIVATIONS:
            rows = sorted((p for p in prediction["predictions"] if p["activation"] == act and p["valid"]),
                          key=lambda p: p["sigma_n"])
            if not rows:
                continue
            x = [p["sigma_n"] for p in rows]
            ax.plot(x, [p["vr"] for p in rows], "-", color=colors[act], lw=1.2,
                    label=f"predicted, {act} ($m$ = {rows[0]['margin']:g})")
            ax.fill_between(x, [math.exp(p["log_vr_interval"][0]) for p in rows],
                            [math.exp(p["log_vr_interval"][1]) for p in rows], color=colors[act], alpha=0.15, lw=0)
        ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel(r"measured within-pair noise $\sigma_{n,\mathrm{eff}}$")
    a.set_ylabel("variance ratio clamp / subtract")
    L = an["n_layers"]
    series = [(a, "test_acc@sel", L - 1, "k", "o", "ViT test accuracy")]
    series += [(b, f"probe_l{l}@sel", l, f"C{l + 1}", "os^D"[l % 4], f"layer-{l} probe") for l in range(L)]
    for ax, q, layer, col, mk, lab in series:
        xs, ys, lo, hi, xe = [], [], [], [], []
        for lv in an["levels"]:
            cq = lv["quantities"][q]
            if cq["vr"] is None or cq["ci"] is None:
                continue
            sg = lv["sigma_n_eff"]["sel"][layer]
            arms = list(sg["by_arm"].values())
            xs.append(sg["mean"])
            xe.append((sg["mean"] - min(arms), max(arms) - sg["mean"]))
            ys.append(cq["vr"])
            lo.append(cq["vr"] - cq["ci"][0])
            hi.append(cq["ci"][1] - cq["vr"])
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], xerr=np.array(xe).T, fmt=mk, color=col, ms=4, capsize=2, lw=0.9,
                        label=lab)
        ax.legend(loc="best", fontsize=7)
    a.set_title("(a) test accuracy, at the last layer's noise")
    b.set_title("(b) per-layer probe, at each layer's noise")
    d = an["doses"]
    for l in range(L):
        for arm, ls, mk in (("clamp", "-", "o"), ("subtract", "--", "s")):
            c.plot(d, [lv["sigma_n_eff"]["sel"][l]["by_arm"][arm] for lv in an["levels"]], ls, marker=mk,
                   color=f"C{l + 1}", ms=3.5, lw=1, label=f"layer {l}, {arm}")
        if all(lv.get("sigma_n_eff_init") for lv in an["levels"]):
            c.plot(d, [lv["sigma_n_eff_init"][l] for lv in an["levels"]], ":", marker="x", color=f"C{l + 1}",
                   ms=3.5, lw=1, label=f"layer {l}, untrained")
    cross = (prediction.get("crossings", {}).get("tanh") or {}).get("sigma_n_cross")
    if cross:
        c.axhline(cross, color=colors["tanh"], lw=0.8, ls="-.", label=f"tanh crossing {cross:.2f}")
    c.set_xlabel("view noise (pixel SDs)")
    c.set_ylabel(r"$\sigma_{n,\mathrm{eff}}$, mean over seeds")
    c.set_title("(c) measured noise against the dose")
    c.legend(fontsize=7, ncol=2)
    for arm, ls, mk in (("clamp", "-", "o"), ("subtract", "--", "s")):
        m = [100 * lv["quantities"]["test_acc@sel"][f"mean_{arm}"] for lv in an["levels"]]
        sd = [100 * lv["quantities"]["test_acc@sel"][f"sd_{arm}"] for lv in an["levels"]]
        dax.errorbar(d, m, yerr=sd, fmt=ls, marker=mk, color="k", ms=3.5, capsize=2, lw=1, label=arm)
    dax.set_xlabel("view noise (pixel SDs)")
    dax.set_ylabel("test accuracy (%)")
    dax.set_title(f"(d) test accuracy, mean ± SD over {len(an['seeds'])} seeds")
    dax.legend(fontsize=7)
    from matplotlib.text import Text
    small = [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
             and t.get_fontsize() < FIG_FONT_PT - 1e-9]
    if small:
        raise ValueError(f"noise-dose figure: fonts below {FIG_FONT_PT:g} pt: {small[:3]}")


def record_noise_dose(out_dir: str | Path, *, command: str, wall_s: float | None, load_start,
                      root: str | Path | None = None, directory: str | Path | None = None,
                      study_commit: str | None = None) -> Path:
    """Keep ``out_dir``'s noise-dose result (noise_dose.json with the per-run table and the
    analysis, its figures) in ``recorded/vit/noise_dose`` with provenance."""
    out = Path(out_dir)
    nd = read_json(out / "noise_dose.json", expect=dict)
    study = read_json(out / "study.json", expect=dict)
    import torch  # noqa: F401  (provenance names the torch version)
    prov = provenance(command, wall_s=wall_s, load_start=load_start, device=study["runs"][0].get("device"))
    prov["study_timing"] = study.get("timing")
    prov["study_commit"] = study_commit or prov["commit"]
    target = Path(directory) if directory is not None else record_dir("vit", "noise_dose", root)
    return write_record(target, kind=KIND, config=nd["study_config"],
                        payload={k: v for k, v in nd.items() if k != HASH_KEY},
                        prov=prov, files={"noise_dose.png": out / "noise_dose.png",
                                          "noise_dose.pdf": out / "noise_dose.pdf"})


def find_noise_dose_record(study_cfg: Mapping[str, Any], prediction_sha: str,
                           root: str | Path | None = None) -> dict[str, Any] | None:
    """The recorded noise-dose result for ``study_cfg`` (None if nothing is recorded); one line
    if it is edited, stale (another config) or was analysed against another prediction."""
    d = record_dir("vit", "noise_dose", root)
    if not (d / "record.json").is_file():
        return None
    rec = load_record(d, kind=KIND, config=study_cfg, rerun="rerun `cffdyn vit noise-dose --record`")
    if rec["payload"].get("prediction_sha256") != prediction_sha:
        raise UserError(f"{d / 'record.json'} was analysed against another prediction record",
                        "rerun `cffdyn vit noise-dose --record` (the runs are reused)")
    return rec


class NotRecorded(LookupError):
    """Nothing is recorded for the noise-dose config asked for (the paper leaves the section out)."""


def paper_result(cfg, out_dir: str | Path) -> dict[str, Any]:
    """For the paper build (:mod:`paper.sources`, a ``recorded`` study): the recorded result of
    ``cfg`` -- never the 30-minute study itself -- written to ``out_dir/noise_dose.json`` (the
    record's payload with its provenance and folder, and the prediction's crossings) with the
    study's figures copied beside it.  :class:`NotRecorded` when nothing is recorded; an edited
    or stale record is refused in one line (:func:`find_noise_dose_record`)."""
    import json

    from cffdyn.io import atomic_write_bytes, atomic_write_json

    pred, sha = load_prediction_record()
    cfg_dict = json.loads(json.dumps(cfg.to_dict()))
    rec = find_noise_dose_record(cfg_dict, sha)
    if rec is None:
        raise NotRecorded(f"no recorded noise-dose result in {record_dir('vit', 'noise_dose')} (run `cffdyn vit "
                          f"noise-dose --record`, about 30 minutes on one core)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = record_dir("vit", "noise_dose")
    for name in ("noise_dose.png", "noise_dose.pdf"):
        atomic_write_bytes(out / name, (d / name).read_bytes())
    data = {**rec["payload"], "recorded": {"dir": str(d.relative_to(RECORDED_ROOT.parent)),
                                           "provenance": rec["provenance"]},
            "prediction_summary": {"crossings": pred["crossings"], "refuted_if": pred["refuted_if"],
                                   "validity_range": pred["validity_range"], "N": pred["N"]}}
    atomic_write_json(out / "noise_dose.json", data)
    return data
