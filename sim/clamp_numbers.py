"""The numbers the clamp study (:mod:`sim.clamp_study`) exports for the manuscript: specs over
``clamp.json``, and the binomial tests of its misses (:func:`derived`, computed at build time from
the recorded summary)."""
from __future__ import annotations

from typing import Any

from cffdyn.exports import NumberSpec, macro_name

__all__ = ["number_specs", "derived", "derived_specs"]


def _clamp_arm_specs(tag: str, path: str) -> list[NumberSpec]:
    """Prediction and measurement of one arm (N Var scaled by 1e3)."""
    c = "clamp"
    return [NumberSpec(f"{tag}Pred", c, f"{path}.prediction.N_var", ".3g", 1e3, desc="predicted 1e3 N Var(Q)"),
            NumberSpec(f"{tag}Meas", c, f"{path}.measured.N_var.est", ".3g", 1e3, desc="measured 1e3 N Var(Q)"),
            NumberSpec(f"{tag}Lo", c, f"{path}.measured.N_var.ci95[0]", ".3g", 1e3),
            NumberSpec(f"{tag}Hi", c, f"{path}.measured.N_var.ci95[1]", ".3g", 1e3),
            NumberSpec(f"{tag}Lam", c, f"{path}.prediction.lambda", ".3f", desc="exact slope lambda at Q*"),
            NumberSpec(f"{tag}Q", c, f"{path}.prediction.Q_star", ".4f"),
            NumberSpec(f"{tag}Car", c, f"{path}.prediction.car_star", ".1f", 100.0)]


def number_specs(data: dict) -> list[NumberSpec]:
    c = "clamp"
    out = [NumberSpec("ClampTrials", c, "config.trials", "d"),
           NumberSpec("ClampN", c, "config.N", "d"),
           NumberSpec("ClampTau", c, "config.model.tau", "g"),
           NumberSpec("ClampMTwo", c, "config.model.m2[0]", "g"),
           NumberSpec("ClampWindow", c, "config.window", "g"),
           NumberSpec("ClampBurn", c, "config.burn_corr", "g"),
           NumberSpec("ClampBatchCorr", c, "config.batch_corr", "g"),
           NumberSpec("ClampOjaTau", c, "config.oja_tau", "g"),
           NumberSpec("ClampCells", c, "rows[*].margin", "d", reduce="count"),
           NumberSpec("ClampArmsIn", c, "summary.arms_in_ci", "d"),
           NumberSpec("ClampArmsChecked", c, "summary.arms_checked", "d"),
           NumberSpec("ClampRatiosIn", c, "summary.ratios_in_ci", "d"),
           NumberSpec("ClampRatiosChecked", c, "summary.ratios_checked", "d"),
           NumberSpec("ClampFullyClamped", c, "summary.fully_clamped_cells", "d"),
           NumberSpec("ClampScalingIn", c, "summary.scaling_in_ci", "d"),
           NumberSpec("ClampScalingChecked", c, "summary.scaling_checked", "d"),
           NumberSpec("ClampMaxZ", c, "summary.max_abs_z", ".1f"),
           NumberSpec("ClampLoad", c, "machine.load_avg[0]", ".1f")]
    for i, r in enumerate(data["rows"]):
        t = macro_name("ClampRow", i)
        p = f"rows[{i}]"
        out += [NumberSpec(f"{t}M", c, f"{p}.margin", "g"), NumberSpec(f"{t}Sn", c, f"{p}.sn", "g"),
                NumberSpec(f"{t}B", c, f"{p}.batch", "d")]
        if r.get("ratio") is not None:
            out += _clamp_arm_specs(t, f"{p}.clamp")
            out += [NumberSpec(f"{t}RPred", c, f"{p}.ratio_pred", ".3f", desc="predicted ratio clamp/subtract"),
                    NumberSpec(f"{t}R", c, f"{p}.ratio.est", ".3f", desc="measured ratio clamp/subtract"),
                    NumberSpec(f"{t}RLo", c, f"{p}.ratio.ci95[0]", ".3f"),
                    NumberSpec(f"{t}RHi", c, f"{p}.ratio.ci95[1]", ".3f")]
        elif r["clamp"]["measured"].get("final_Q_mean") is not None:
            out += [NumberSpec(f"{t}FcQ", c, f"{p}.clamp.measured.final_Q_mean", ".4f"),
                    NumberSpec(f"{t}FcCar", c, f"{p}.clamp.measured.final_car", ".1f", 100.0),
                    NumberSpec(f"{t}FcT", c, f"{p}.clamp.measured.t_end", "g")]
    # named cells for the text: noise-free smallest margin (both batch sizes) and, at the largest
    # noise and smallest batch, the smallest, middle and largest margins
    cf = data["config"]
    ms = sorted(cf["margins"])
    named = {"ClampClean": (ms[0], min(cf["sns"]), min(cf["batches"])),
             "ClampCleanB": (ms[0], min(cf["sns"]), max(cf["batches"])),
             "ClampNoisyLo": (ms[0], max(cf["sns"]), min(cf["batches"])),
             "ClampNoisyMid": (ms[len(ms) // 2], max(cf["sns"]), min(cf["batches"])),
             "ClampNoisyHi": (ms[-1], max(cf["sns"]), min(cf["batches"]))}
    for t, (m, sn, B) in named.items():
        p = f"rows[margin={m},sn={sn},batch={B}]"
        out += [NumberSpec(f"{t}M", c, f"{p}.margin", "g"), NumberSpec(f"{t}Sn", c, f"{p}.sn", "g"),
                NumberSpec(f"{t}B", c, f"{p}.batch", "d")]
        row = [r for r in data["rows"] if (r["margin"], r["sn"], r["batch"]) == (m, sn, B)]
        if row and row[0].get("ratio") is not None:
            out += [NumberSpec(f"{t}Lam", c, f"{p}.clamp.prediction.lambda", ".3f"),
                    NumberSpec(f"{t}RPred", c, f"{p}.ratio_pred", ".3f"),
                    NumberSpec(f"{t}R", c, f"{p}.ratio.est", ".3f"),
                    NumberSpec(f"{t}RLo", c, f"{p}.ratio.ci95[0]", ".3f"),
                    NumberSpec(f"{t}RHi", c, f"{p}.ratio.ci95[1]", ".3f")]
    for j, a in enumerate(data.get("subtract") or []):
        out += _clamp_arm_specs(macro_name("ClampSub", j), f"subtract[{j}]")
        out += [NumberSpec(macro_name("ClampSub", j, "Sn"), c, f"subtract[{j}].sn", "g"),
                NumberSpec(macro_name("ClampSub", j, "B"), c, f"subtract[{j}].batch", "d")]
    if data.get("oja"):
        out += _clamp_arm_specs("ClampOja", "oja")
    for k, sc in enumerate(data.get("scaling") or []):
        t = macro_name("ClampScale", k)
        out += [NumberSpec(f"{t}N", c, f"scaling[{k}].N", "d"), NumberSpec(f"{t}M", c, f"scaling[{k}].margin", "g"),
                NumberSpec(f"{t}Sn", c, f"scaling[{k}].sn", "g"), NumberSpec(f"{t}B", c, f"scaling[{k}].batch", "d"),
                NumberSpec(f"{t}Pred", c, f"scaling[{k}].pred", ".3g", 1e3),
                NumberSpec(f"{t}Meas", c, f"scaling[{k}].measured.est", ".3g", 1e3),
                NumberSpec(f"{t}Lo", c, f"scaling[{k}].measured.ci95[0]", ".3g", 1e3),
                NumberSpec(f"{t}Hi", c, f"scaling[{k}].measured.ci95[1]", ".3g", 1e3)]
    return out


def derived(data: dict) -> dict[str, Any] | None:
    """One-sided binomial tests of the arms and ratios whose 95% interval misses the prediction
    (``derived.json`` entry ``clamp``), or None when the study checked no arm."""
    from scipy import stats
    sm = data.get("summary") or {}
    if not sm.get("arms_checked"):
        return None
    # a 95% interval misses the truth 5% of the time: more misses than that is evidence against the theory
    rec: dict[str, Any] = {"source": "clamp summary (arms_in_ci, arms_checked, ratios_in_ci, ratios_checked)",
                           "test": "one-sided binomial test of the misses, expected rate 0.05"}
    for tag in ("arms", "ratios"):
        n, k = sm.get(f"{tag}_checked"), sm.get(f"{tag}_in_ci")
        rec[f"{tag}_binom_p"] = (float(stats.binomtest(n - k, n, 0.05, alternative="greater").pvalue)
                                 if n else None)
    return rec


def derived_specs(der: dict) -> list[NumberSpec]:
    """Macros of :func:`derived` (``der``: its record)."""
    return [NumberSpec(macro_name("clamp", tag, "binom", "p"), "derived", f"clamp.{tag}_binom_p", "p",
                       desc=f"one-sided binomial p of the {tag} outside their 95% intervals")
            for tag in ("arms", "ratios") if der.get(f"{tag}_binom_p") is not None]
