"""The manuscript's noise-dose section (``sections/05b_noise_dose.tex``): numbers, table, the
generated verdict text, the figure and the finding, all read from the recorded result that
``cffdyn vit noise-dose --record`` wrote (:func:`vit.noise_dose.paper_result` puts it into the
build's results).  The figure is the study's own (:func:`vit.noise_dose.draw_noise_dose`, drawn at
its printed size), copied, never redrawn here.

Importing this module registers its makers in :mod:`paper.content` and :mod:`paper.findings`
(the build imports it).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from paper import content, findings
from paper.content import tex_escape
from paper.numbers import NumberSpec, macro_name

__all__ = ["STUDY", "QUANTITIES", "number_specs", "tab_noise_dose", "verdict_text", "fig_noise_dose",
           "noise_dose_findings"]

STUDY = "noise_dose"
#: the rows of the table: (key in the analysis, label)
QUANTITIES = (("test_acc@sel", "test accuracy"), ("probe_l0@sel", "layer-0 probe"), ("probe_l1@sel", "layer-1 probe"),
              ("pos_sim_l0@sel", r"layer-0 $\bar s_+$"), ("car_l0@sel", "layer-0 CAR"))
_PCT = ("test_acc", "probe", "car")


def _rows(data: dict) -> list[tuple[int, str, str]]:
    qs = data["analysis"]["levels"][0]["quantities"]
    return [(i, q, lab) for i in range(len(data["analysis"]["levels"])) for q, lab in QUANTITIES if q in qs]


def _tag(i: int, q: str) -> str:
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
    t = data.get("timing") or {}
    if t.get("wall_s") is not None:
        add("NdWallMin", "timing.wall_s", ".1f", 1 / 60, d="study wall time (min)")
    if t.get("load_avg_start"):
        add("NdLoadStart", "timing.load_avg_start[0]", ".1f", d="1-min load at the start")
    if (t.get("machine") or {}).get("load_avg"):
        add("NdLoadEnd", "timing.machine.load_avg[0]", ".1f", d="1-min load at the end")
    for i, lv in enumerate(data["analysis"]["levels"]):
        p = f"analysis.levels[{i}]"
        add(macro_name("Nd", i, "dose"), p + ".view_noise", "g", d="view noise (pixel SDs)")
        for l in range(data["analysis"]["n_layers"]):
            add(macro_name("Nd", i, "sig", l), f"{p}.sigma_n_eff.sel[{l}].mean", ".2f", d=f"sigma_n_eff layer {l}")
            for arm in ("clamp", "subtract"):
                add(macro_name("Nd", i, "sig", l, arm), f"{p}.sigma_n_eff.sel[{l}].by_arm.{arm}", ".2f")
            if lv.get("sigma_n_eff_init"):
                add(macro_name("Nd", i, "sig", l, "init"), f"{p}.sigma_n_eff_init[{l}]", ".2f")
    for i, q, _ in _rows(data):
        c = data["analysis"]["levels"][i]["quantities"][q]
        p = f"analysis.levels[{i}].quantities.{q}"
        tg = _tag(i, q)
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


def _cell_vr(tg: str, c: dict) -> str:
    if c["vr"] is None:
        return r"\multicolumn{4}{l}{" + tex_escape(c.get("note") or "no ratio") + "}"
    return f"\\{tg}Vr & [\\{tg}Lo, \\{tg}Hi] & \\{tg}Pm & \\{tg}Perm"


def tab_noise_dose(results: dict) -> str:
    """Per dose and quantity: the measured sigma_n_eff it is placed at, the clamp/subtract
    variance ratio with its paired interval and p-values, the arms' means and SDs, and the
    verdict against each curve; every number a macro."""
    d = results[STUDY]
    lines, last = [], None
    for i, q, lab in _rows(d):
        c = d["analysis"]["levels"][i]["quantities"][q]
        tg = _tag(i, q)
        if last is not None and i != last:
            lines.append(r"\addlinespace")
        last = i
        dose = f"\\{macro_name('Nd', i, 'dose')}" if q == QUANTITIES[0][0] else ""
        sig = f"\\{tg}Sig" if c["vr"] is not None else "--"
        v = c["verdicts"]
        lines.append(f"{dose} & {lab} & {sig} & {_cell_vr(tg, c)} & \\{tg}MeanClamp{{}} $\\pm$ \\{tg}SdClamp & "
                     f"\\{tg}MeanSubtract{{}} $\\pm$ \\{tg}SdSubtract & {v['tanh']['verdict']} & "
                     f"{v['relu']['verdict']} \\\\")
    return "\n".join([
        r"\begin{table}[tbp]", r"\centering\scriptsize", r"\setlength{\tabcolsep}{3pt}",
        r"\caption{The noise-dose study: per view-noise dose (pixel SDs) and quantity, the measured within-pair "
        r"noise $\sigma_{n,\mathrm{eff}}$ it is placed at (test accuracy: the last layer's; a layer's quantities: "
        r"that layer's; mean over all runs of the dose), the clamp/subtract variance ratio VR over \NdSeeds{} "
        r"matched seeds with its paired bootstrap 95\% interval (\NdBoot{} resamples of the seeds), the "
        r"Pitman--Morgan and paired-permutation p-values, the mean $\pm$ SD of each arm (accuracies and CAR in "
        r"\%), and the verdict against the tanh and the relu prediction (rule in the text).}",
        r"\label{tab:noisedose}", r"\begin{tabular}{llcccccccll}", r"\toprule",
        r"dose & quantity & $\sigma_{n,\mathrm{eff}}$ & VR & 95\% CI & $p_{\mathrm{PM}}$ & $p_{\mathrm{perm}}$ & "
        r"clamp & subtract & tanh & relu \\",
        r"\midrule", *lines, r"\bottomrule", r"\end{tabular}", r"\end{table}"])


def verdict_text(results: dict) -> str:
    """Generated sentences: the verdicts per dose for the test accuracy, the trend, the shared
    prediction, where and when the study ran, and its departures."""
    d = results[STUDY]
    an = d["analysis"]
    parts = []
    for i, lv in enumerate(an["levels"]):
        c = lv["quantities"]["test_acc@sel"]
        tg = _tag(i, "test_acc@sel")
        v = c["verdicts"]
        dose = f"\\{macro_name('Nd', i, 'dose')}"
        if c["vr"] is None:
            parts.append(f"At dose {dose} no ratio can be formed ({tex_escape(c.get('note') or '')}).")
            continue
        parts.append(f"At dose {dose} ($\\sigma_{{n,\\mathrm{{eff}}}} = \\{tg}Sig$) the test-accuracy ratio is "
                     f"\\{tg}Vr{{}} [\\{tg}Lo, \\{tg}Hi]: against tanh {tex_escape(v['tanh']['verdict'])} "
                     f"({tex_escape(v['tanh']['why'])}); against relu {tex_escape(v['relu']['verdict'])} "
                     f"({tex_escape(v['relu']['why'])}).")
    tr = an["trend"]
    ci = r" (95\% interval [\NdTrendLo, \NdTrendHi])" if tr.get("ci") else ""
    parts.append(f"Across the doses the slope of $\\log \\mathrm{{VR}}$ of the test accuracy on "
                 f"$\\sigma_{{n,\\mathrm{{eff}}}}$ is \\NdTrend{ci}, predicted positive by both curves: "
                 f"{tex_escape(tr['verdict'])}.")
    refuted = [h["view_noise"] for h in an["headline"] if h["shared_prediction_refuted"]]
    parts.append("The prediction the two curves share is refuted at no dose." if not refuted else
                 "The prediction the two curves share is refuted at dose(s) "
                 + ", ".join(f"{x:g}" for x in refuted) + ".")
    prov = (d.get("recorded") or {}).get("provenance") or {}
    mach = prov.get("machine") or {}
    dev = (prov.get("device") or {})
    where = (f"{dev.get('gpu')} (driver {dev.get('driver', 'n/a')})" if dev.get("cuda")
             else f"{mach.get('cpus', '?')} CPU cores ({mach.get('cpu', 'CPU')})")
    commit = str(prov.get("commit") or "unknown")[:10] + (" with uncommitted changes" if prov.get("dirty") else "")
    ran = str(prov.get("study_commit") or prov.get("commit") or "unknown")[:10]
    at = f"trained at commit {ran} and analysed at {commit}" if ran != commit[:10] else f"at commit {commit}"
    parts.append(f"The study ran once, on {tex_escape(where)} with torch {tex_escape(str(prov.get('torch')))}, "
                 f"{tex_escape(at)}, recorded {tex_escape(str(prov.get('recorded_utc')))}; it is read "
                 f"from \\texttt{{{tex_escape((d.get('recorded') or {}).get('dir', 'recorded/vit/noise_dose'))}}} "
                 f"(content-hashed; a changed config or an edited record is refused).")
    dep = d.get("departures") or []
    if dep:
        parts.append("Departures from the reference protocol in every run: "
                     + ", ".join(f"\\texttt{{{tex_escape(x)}}}" for x in dep) + ".")
    return "\n".join(parts)


def fig_noise_dose(results: dict, paths: dict, out: Path) -> Path:
    """The study's own figure (drawn at its printed size by the study), copied."""
    src = paths[STUDY].parent
    out.mkdir(parents=True, exist_ok=True)
    for ext in ("pdf", "png"):
        f = src / f"noise_dose.{ext}"
        if not f.is_file():
            raise ValueError(f"figure noise_dose: the study's {f} is missing")
        shutil.copyfile(f, out / f"noise_dose.{ext}")
    return out / "noise_dose.pdf"


def noise_dose_findings(results: dict, der: dict) -> list[findings.Finding]:
    an = results[STUDY]["analysis"]
    verd = [lv["quantities"]["test_acc@sel"]["verdicts"] for lv in an["levels"]]
    tested = [v for vs in verd for v in vs.values() if v["verdict"] in ("confirmed", "refuted")]
    refuted = any(h["shared_prediction_refuted"] for h in an["headline"]) or an["trend"]["verdict"] == "refuted"
    confirmed = [v for v in tested if v["verdict"] == "confirmed"]
    clause = (r"the mean-field map of the clamp/subtract variance ratio in the within-pair noise holds on a ViT "
              r"whose noise is dosed (\NdSeeds{} matched seeds per cell, Section~\ref{sec:noisedose})")
    if refuted:
        status = "refuted"
    elif confirmed:
        status = "confirmed"
    else:
        status = "not tested"
    n_c = sum(1 for vs in verd for v in vs.values() if v["verdict"] == "confirmed")
    n_i = sum(1 for vs in verd for v in vs.values() if v["verdict"] == "inconclusive")
    n_u = sum(1 for vs in verd for v in vs.values() if v["verdict"] == "untestable")
    n_r = sum(1 for vs in verd for v in vs.values() if v["verdict"] == "refuted")
    sentence = (f"On the noise-dose ViT study the test-accuracy verdicts over doses and the two curves are "
                f"{n_c} confirmed, {n_r} refuted, {n_i} inconclusive and {n_u} untestable, and the trend across "
                f"doses is {tex_escape(an['trend']['verdict'])} (slope \\NdTrend).")
    return [findings.Finding(status, clause, sentence, "sec:noisedose")]


content.NUMBER_SPECS[STUDY] = number_specs
content.TABLES["noise_dose"] = ((STUDY,), tab_noise_dose)
content.TABLES["noise_dose_verdicts"] = ((STUDY,), verdict_text)
content.FIGURES["noise_dose"] = ((STUDY,), fig_noise_dose)
findings.FINDINGS.append(((STUDY,), noise_dose_findings))
