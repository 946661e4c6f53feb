"""The numbers the ViT factorial study (:mod:`vit.study`) exports for the manuscript: specs over
``study.json`` (:func:`number_specs`), and the numbers computed at build time from its recorded
runs (:func:`derived`: the paired mean difference's interval, the cff2/cff1 epoch-time ratio;
:func:`derived_specs`).  Also the readers of the record the manuscript's text uses
(:func:`vit_cells`, :func:`comparisons`, :func:`loss_mode_comparison`, :func:`epoch_time_ratios`)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from cffdyn.exports import NumberSpec, finite, macro_name, study_timing_specs

__all__ = ["vit_cells", "comparisons", "cell", "loss_mode_comparison", "epoch_time_ratios", "paired_by_seed",
           "number_specs", "derived", "derived_specs"]


def vit_cells(data: dict) -> list[dict[str, Any]]:
    """The study's cells as ``{levels, tag}``; ``tag`` is a macro-safe name (``ClampCffTwo``)."""
    out = []
    for c in data["analysis"]["cells"]:
        lv = c["levels"]
        out.append({"levels": lv, "tag": macro_name(*lv.values()),
                    "sel": ",".join(f"levels.{k}={v}" for k, v in lv.items()),
                    "label": ", ".join(f"{v}" for v in lv.values())})
    return out


def comparisons(data: dict) -> list[dict[str, Any]]:
    return [{"factor": c["factor"], "a": c["level_a"], "b": c["level_b"],
             "tag": macro_name(c["factor"]), "raw": c,
             "sel": f"factor={c['factor']},level_a={c['level_a']},level_b={c['level_b']}"}
            for c in data["analysis"]["comparisons"]]


def cell(data: dict, levels: dict) -> dict[str, Any]:
    return next(c for c in data["analysis"]["cells"] if c["levels"] == levels)


def loss_mode_comparison(d: dict) -> dict | None:
    for c in d["analysis"]["comparisons"]:
        if c["factor"] == "loss_mode":
            return c
    return None


def epoch_time_ratios(d: dict) -> list[float]:
    """cff2/cff1 epoch time of runs paired by seed and loss mode (same machine, same study)."""
    by: dict[tuple, dict[str, float]] = {}
    for r in d["runs"]:
        cell = r["cell"]
        if "method" in cell and finite(r.get("epoch_time_s")):
            key = (r["seed"],) + tuple(sorted((k, str(v)) for k, v in cell.items() if k != "method"))
            by.setdefault(key, {})[cell["method"]] = r["epoch_time_s"]
    return [v["cff2"] / v["cff1"] for v in by.values() if "cff1" in v and "cff2" in v and v["cff1"] > 0]


def paired_by_seed(d: dict, factor: str, a: str, b: str, key: str) -> list[tuple[float, float]]:
    """(value at level a, value at level b) of runs matched by seed and the other factors' levels."""
    by: dict[tuple, dict[str, float]] = {}
    for r in d["runs"]:
        cell = r["cell"]
        if cell.get(factor) in (a, b) and finite(r.get(key)):
            k = (r["seed"],) + tuple(sorted((f, str(v)) for f, v in cell.items() if f != factor))
            by.setdefault(k, {})[cell[factor]] = float(r[key])
    return [(v[a], v[b]) for v in by.values() if a in v and b in v]


def _mean_sd(xs: list[float]) -> dict[str, Any]:
    n = len(xs)
    return {"mean": float(np.mean(xs)) if n else None, "sd": float(np.std(xs, ddof=1)) if n > 1 else None, "n": n,
            "values": [float(x) for x in xs]}


def number_specs(data: dict) -> list[NumberSpec]:
    s: list[NumberSpec] = []
    def add(m, p, fmt=".2f", scale=1.0, red=None, d="", unit="", unc=()):
        s.append(NumberSpec(m, "vit_study", p, fmt, scale, red, d, unit=unit, uncertainty=unc))
    b = "config.base."
    add("VitSeeds", "config.n_seeds", "d", d="seeds per cell")
    add("VitRuns", "runs[*].seed", "d", red="count", d="number of runs")
    for f in ("epochs", "head_epochs", "subset", "embed_dim", "heads", "layers", "patch", "batch_size"):
        add(macro_name("vit", f), b + f, "d", d=f"base config {f}")
    for f, fmt in (("m0", ".2f"), ("m_last", ".2f"), ("tau", ".2f"), ("lr", "g")):
        add(macro_name("vit", f), b + f, fmt, d=f"base config {f}")
    add("VitBoot", "config.n_boot", "d")
    add("VitPerm", "config.n_perm", "d")
    for c in vit_cells(data):
        p = f"analysis.cells[{c['sel']}]"
        add(f"VitMean{c['tag']}", p + ".mean", ".2f", 100.0, d=f"mean test accuracy (%), {c['label']}")
        add(f"VitSd{c['tag']}", p + ".sd", ".2f", 100.0, d=f"SD of test accuracy (points), {c['label']}")
        add(f"VitN{c['tag']}", p + ".n", "d", d=f"seeds, {c['label']}")
        add(f"VitCar{c['tag']}", p + ".car_layer0_mean", ".1f", 100.0, d=f"layer-0 CAR (%), {c['label']}")
    for c in vit_cells(data):
        if data.get("probe") and "minus_probe_mean" in cell(data, c["levels"]):
            add(f"VitMinusProbe{c['tag']}", f"analysis.cells[{c['sel']}].minus_probe_mean", "+.2f", 100.0,
                d=f"CFF minus raw-pixel probe (points), {c['label']}")
    if data.get("probe"):
        add("VitProbeAcc", "probe.test_acc_mean", ".2f", 100.0, d="raw-pixel linear probe test accuracy (%)",
            unit=r"\%", unc=("VitProbeSd", "VitProbeN"))
        add("VitProbeN", "probe.runs[*].seed", "d", red="count", d="probe seeds")
        if data["probe"].get("test_acc_sd") is not None:
            add("VitProbeSd", "probe.test_acc_sd", ".2f", 100.0, d="SD of the probe (points)")
    s += study_timing_specs("Vit", "vit_study", data)
    for c in comparisons(data):
        p = f"analysis.comparisons[{c['sel']}]"
        t = c["tag"]
        add(f"VR{t}", p + ".ratio", ".2f", d=f"within-cell variance ratio {c['a']}/{c['b']}")
        ci = c["raw"]["boot_ci"]      # None (not computed: too few seeds) is written n/a
        add(f"VRlo{t}", p + (".boot_ci[0]" if ci else ".boot_ci"), ".2f", d="bootstrap 95% CI low")
        add(f"VRhi{t}", p + (".boot_ci[1]" if ci else ".boot_ci"), ".2f", d="bootstrap 95% CI high")
        for k, m in (("f_p", "PFTest"), ("levene_p", "PLevene"), ("bf_p", "PBf"), ("perm_p", "PPerm"),
                     ("welch_p", "PWelch")):
            add(m + t, p + "." + k, "p", d=f"{k}, {c['factor']}")
        add(f"VRSteier{t}", p + ".steier.ratio", ".2f", d="Steier's pooled variance ratio (all runs of a level)")
        add(f"PSteier{t}", p + ".steier.p", "p", d="Steier's pooled F-test p")
        add(f"DfSteier{t}", p + ".steier.df_a", "d", d="df of Steier's pooled F")
        add(f"DfWithin{t}", p + ".df_a", "d", d="df of the within-cell F")
        add(f"MeanDiff{t}", p + ".mean_diff", "+.2f", 100.0, d="difference of means (points)", unit=r"\,points",
            unc=(f"MeanDiffLo{t}", f"PPairedT{t}", f"PWelch{t}"))
        add(f"NA{t}", p + ".n_a", "d")
        add(f"NB{t}", p + ".n_b", "d")
        add(f"PowerAssumed{t}", p + ".power.power_assumed", ".2f", d="within-cell F-test power at the assumed ratio")
        add(f"SeedsForPower{t}", p + ".power.seeds_for_target_assumed", "d", d="seeds/cell for the target power")
        add(f"AssumedRatio{t}", p + ".power.assumed_ratio", ".2f")
        if c["raw"].get("paired") is not None:
            q = p + ".paired"
            add(f"PPM{t}", q + ".pm_p", "p", d="Pitman-Morgan p (matched seeds)")
            add(f"PPermPaired{t}", q + ".perm_p", "p", d="paired permutation p")
            add(f"PPairedT{t}", q + ".paired_t_p", "p", d="paired t-test p of the means")
            add(f"PairCorr{t}", q + ".pair_corr", "+.2f", d="correlation of the two runs of a seed pair")
            if c["raw"]["paired"].get("boot_ci"):
                add(f"VRloPaired{t}", q + ".boot_ci[0]", ".2f", d="seed-bootstrap CI low")
                add(f"VRhiPaired{t}", q + ".boot_ci[1]", ".2f", d="seed-bootstrap CI high")
            pp = p + ".power.paired"
            add(f"PowerPaired{t}", pp + ".power_assumed_ratio_assumed_corr", ".2f",
                d="Pitman-Morgan power at the assumed ratio and correlation")
            add(f"SeedsForPowerPaired{t}", pp + ".seeds_for_target_assumed_corr", "d",
                d="seeds/cell for 80% paired power")
            add(f"AssumedCorr{t}", pp + ".assumed_corr", ".2f", d="assumed correlation of paired runs")
    for meth in [lv for f, lvs in data["config"]["factors"] if f == "method" for lv in lvs]:
        add(macro_name("vit", "epoch", "time", meth), f"runs[cell.method={meth}].epoch_time_s", ".2f",
            red="mean", d=f"mean stage-1 epoch time (s), {meth}", unit=r"\,s",
            unc=(macro_name("vit", "epoch", "time", "sd", meth),))
    add("VitCarClamp", "runs[cell.loss_mode=clamp].car_layer0", ".1f", 100.0, red="mean",
        d="layer-0 CAR (%) averaged over all clamp runs", unit=r"\%", unc=("VitCarClampSd",))
    add("VitCarClampSd", "runs[cell.loss_mode=clamp].car_layer0", ".1f", 100.0, red="sd",
        d="SD over the clamp runs of the layer-0 CAR (points)")
    for meth in [lv for f, lvs in data["config"]["factors"] if f == "method" for lv in lvs]:
        add(macro_name("vit", "epoch", "time", "sd", meth), f"runs[cell.method={meth}].epoch_time_s", ".2f",
            red="sd", d=f"SD over runs of the stage-1 epoch time (s), {meth}")
    return s


def derived(d: dict) -> dict[str, Any]:
    """Numbers the text needs that the study does not record, computed from its runs (``derived.json``
    entry ``vit_study``; each entry names its inputs): per comparison the 95% interval of the paired
    mean difference (t distribution over the matched seed pairs), and the cff2/cff1 epoch-time ratio
    over seed pairs."""
    from scipy import stats
    v: dict[str, Any] = {"source": "vit_study runs[*] (test_acc, epoch_time_s), paired by seed"}
    for c in comparisons(d):
        pairs = paired_by_seed(d, c["factor"], c["a"], c["b"], "test_acc")
        diff = [100 * (x - y) for x, y in pairs]
        ci = None
        if len(diff) > 1 and np.std(diff, ddof=1) > 0:
            se = float(np.std(diff, ddof=1) / math.sqrt(len(diff)))
            q = float(stats.t.ppf(0.975, len(diff) - 1))
            ci = [float(np.mean(diff)) - q * se, float(np.mean(diff)) + q * se]
        v[f"mean_diff_{c['factor']}"] = {**_mean_sd(diff), "ci95": ci,
                                         "what": f"paired difference {c['a']} - {c['b']} (points)"}
    ratios = epoch_time_ratios(d)
    v["epoch_ratio"] = {**_mean_sd(ratios), "what": "cff2/cff1 epoch time over seed pairs"}
    return v


def derived_specs(v: dict) -> list[NumberSpec]:
    """Macros of :func:`derived` (``v``: its record; source ``derived``)."""
    s: list[NumberSpec] = []
    for key, rec in v.items():
        if key.startswith("mean_diff_") and rec.get("ci95"):
            t = macro_name(key[len("mean_diff_"):])
            s += [NumberSpec(f"MeanDiffLo{t}", "derived", f"vit_study.{key}.ci95[0]", "+.2f",
                             desc="paired mean difference, 95% t interval, low (points)"),
                  NumberSpec(f"MeanDiffHi{t}", "derived", f"vit_study.{key}.ci95[1]", "+.2f",
                             desc="paired mean difference, 95% t interval, high (points)")]
    er = v.get("epoch_ratio") or {}
    if er.get("n"):
        s += [NumberSpec("VitEpochRatio", "derived", "vit_study.epoch_ratio.mean", ".2f",
                         desc="mean cff2/cff1 epoch-time ratio over seed pairs"),
              NumberSpec("VitEpochRatioSd", "derived", "vit_study.epoch_ratio.sd", ".2f"),
              NumberSpec("VitEpochRatioN", "derived", "vit_study.epoch_ratio.n", "d")]
    return s
