"""The numbers the noise-dose study (:mod:`vit.noise_dose`) exports for the manuscript: specs over
the recorded ``noise_dose.json`` (:func:`number_specs`), and the rows and macro tags of its table
(:func:`rows`, :func:`tag`, :func:`label`), which the manuscript's noise-dose section renders."""
from __future__ import annotations

from cffdyn.exports import NumberSpec, macro_name, study_timing_specs

__all__ = ["STUDY", "QUANTITIES", "label", "rows", "tag", "number_specs"]

STUDY = "noise_dose"

#: the order parameters per layer, in the table's order: (key prefix, label with {l} for the layer)
QUANTITIES = (("probe", "layer-{l} probe"), ("pos_sim", r"layer-{l} $\bar s_+$"), ("car", "layer-{l} CAR"))
_PCT = ("test_acc", "probe", "car")


def label(q: str, tex: bool = True) -> str:
    """The printed name of an analysed quantity key (``test_acc@sel``, ``car_l1@sel`` ...)."""
    name = q.split("@")[0]
    if name == "test_acc":
        return "test accuracy"
    key, layer = name.rsplit("_l", 1)
    lab = dict(QUANTITIES)[key].format(l=layer)
    return lab if tex else lab.replace(r"$\bar s_+$", "mean positive-pair similarity")


def rows(data: dict) -> list[tuple[int, str, str]]:
    """``(dose index, quantity key, printed label)`` of every row of the table, in its order."""
    an = data["analysis"]
    qs = ["test_acc@sel"] + [f"{k}_l{l}@sel" for k, _ in QUANTITIES for l in range(an["n_layers"])]
    return [(i, q, label(q)) for i in range(len(an["levels"])) for q in qs if q in an["levels"][i]["quantities"]]


def tag(i: int, q: str) -> str:
    """The macro prefix of dose ``i``'s quantity ``q`` (``NdZeroTestAcc``)."""
    return macro_name("Nd", i, q.split("@")[0].replace("_", " "))


def number_specs(data: dict) -> list[NumberSpec]:
    s: list[NumberSpec] = []
    add = lambda m, p, fmt=".2f", scale=1.0, red=None, d="": s.append(NumberSpec(m, STUDY, p, fmt, scale, red, d))  # noqa: E731
    b = "study_config.base."
    add("NdSeeds", "study_config.n_seeds", "d", d="seeds per cell")
    add("NdRuns", "table[*].seed", "d", red="count", d="runs")
    for f in ("epochs", "subset", "embed_dim", "heads", "layers", "patch", "batch_size", "head_epochs"):
        add(macro_name("nd", f), b + f, "d", d=f"base config {f}")
    add("NdBoot", "analysis.n_boot", "d")
    add("NdCross", "prediction_summary.crossings.tanh.sigma_n_cross", ".2f", d="tanh crossing of VR = 1")
    add("NdCrossLo", "prediction_summary.crossings.tanh.interval[0]", ".2f")
    add("NdCrossHi", "prediction_summary.crossings.tanh.interval[1]", ".2f")
    add("NdPredN", "prediction_summary.N", "d", d="dimension of the diffusion values")
    tr = data["analysis"]["trend"]
    add("NdTrend", "analysis.trend.slope", ".2f", d="slope of log VR on sigma_n_eff")
    if tr.get("ci"):
        add("NdTrendLo", "analysis.trend.ci[0]", ".2f")
        add("NdTrendHi", "analysis.trend.ci[1]", ".2f")
    s += study_timing_specs("Nd", STUDY, data)
    for i, lv in enumerate(data["analysis"]["levels"]):
        p = f"analysis.levels[{i}]"
        add(macro_name("Nd", i, "dose"), p + ".view_noise", "g", d="view noise (pixel SDs)")
        for l in range(data["analysis"]["n_layers"]):
            add(macro_name("Nd", i, "sig", l), f"{p}.sigma_n_eff.sel[{l}].mean", ".2f", d=f"sigma_n_eff layer {l}")
            for arm in ("clamp", "subtract"):
                add(macro_name("Nd", i, "sig", l, arm), f"{p}.sigma_n_eff.sel[{l}].by_arm.{arm}", ".2f")
            if lv.get("sigma_n_eff_init"):
                add(macro_name("Nd", i, "sig", l, "init"), f"{p}.sigma_n_eff_init[{l}]", ".2f")
    for i, q, _ in rows(data):
        c = data["analysis"]["levels"][i]["quantities"][q]
        p = f"analysis.levels[{i}].quantities.{q}"
        tg = tag(i, q)
        sc = 100.0 if q.startswith(_PCT) else 1.0
        for k in ("mean_clamp", "sd_clamp", "mean_subtract", "sd_subtract"):
            add(tg + macro_name(k), f"{p}.{k}", ".2f" if sc == 100 else ".3f", sc)
        if c["vr"] is not None:
            add(tg + "Vr", p + ".vr", ".3g")
            add(tg + "Lo", p + ".ci[0]", ".3g")
            add(tg + "Hi", p + ".ci[1]", ".3g")
            add(tg + "Pm", p + ".pm_p", "p")
            add(tg + "Perm", p + ".perm_p", "p")
            add(tg + "Sig", p + ".sigma_n_eff", ".2f")
    return s
