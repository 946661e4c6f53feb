"""The manuscript's noise-dose section (``sections/05b_noise_dose.tex``): table, the generated
verdict text, the figure and the findings, all read from the recorded result that
``cffdyn vit noise-dose --record`` wrote (:func:`vit.noise_dose.paper_result` puts it into the
build's results).  The figure is the study's own (:func:`vit.noise_dose.draw_noise_dose`, drawn at
its printed size), copied, never redrawn here.  Its numbers are the study's
(:mod:`vit.noise_dose_numbers`); :mod:`paper.assemble` lists these makers.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from cffdyn.exports import macro_name
from paper import findings
from paper.tex import tex_escape
from vit.noise_dose_numbers import STUDY, label, rows, tag

__all__ = ["tab_noise_dose", "verdict_text", "fig_noise_dose", "noise_dose_findings"]


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
    for i, q, lab in rows(d):
        c = d["analysis"]["levels"][i]["quantities"][q]
        tg = tag(i, q)
        if last is not None and i != last:
            lines.append(r"\addlinespace")
        last = i
        dose = f"\\{macro_name('Nd', i, 'dose')}" if q == "test_acc@sel" else ""
        sig = f"\\{tg}Sig" if c["vr"] is not None else "--"
        v = c["verdicts"]
        lines.append(f"{dose} & {lab} & {sig} & {_cell_vr(tg, c)} & \\{tg}MeanClamp{{}} $\\pm$ \\{tg}SdClamp & "
                     f"\\{tg}MeanSubtract{{}} $\\pm$ \\{tg}SdSubtract & {v['tanh']['verdict']} & "
                     f"{v['relu']['verdict']} \\\\")
    return "\n".join([
        r"\begin{table}[tbp]", r"\centering\scriptsize", r"\setlength{\tabcolsep}{2pt}",
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
        tg = tag(i, "test_acc@sel")
        v = c["verdicts"]
        dose = f"\\{macro_name('Nd', i, 'dose')}{{}}"
        if c["vr"] is None:
            parts.append(f"At dose {dose} no ratio can be formed ({tex_escape(c.get('note') or '')}).")
            continue
        parts.append(f"At dose {dose} ($\\sigma_{{n,\\mathrm{{eff}}}} = \\{tg}Sig$) the test-accuracy ratio is "
                     f"\\{tg}Vr{{}} [\\{tg}Lo, \\{tg}Hi]: "
                     + "; ".join(_short(a, v[a], c["ci"]) for a in ("tanh", "relu")) + ".")
    tr = an["trend"]
    ci = r" (95\% interval [\NdTrendLo, \NdTrendHi])" if tr.get("ci") else ""
    parts.append(f"Across the doses the slope of $\\log \\mathrm{{VR}}$ of the test accuracy on "
                 f"$\\sigma_{{n,\\mathrm{{eff}}}}$ is \\NdTrend{{}}{ci}, predicted positive by both curves: "
                 f"{tex_escape(tr['verdict'])}.")
    refuted = [h["view_noise"] for h in an["headline"] if h["shared_prediction_refuted"]]
    parts.append("The prediction the two curves share is refuted at no dose." if not refuted else
                 "The prediction the two curves share is refuted at dose(s) "
                 + ", ".join(f"{x:g}" for x in refuted) + ".")
    ops = _order_parameter_verdicts(an)
    counts = {k: sum(1 for o in ops for v in o["verdicts"].values() if v == k)
              for k in ("confirmed", "refuted", "inconclusive", "untestable")}
    parts.append("For the per-layer order parameters (probe accuracy, mean positive-pair similarity, CAR; "
                 "Table~\\ref{tab:noisedose}) the verdicts over doses and curves are "
                 + ", ".join(f"{n} {k}" for k, n in counts.items()) + "."
                 + "".join(f" The {tex_escape(o['label'])} at dose {o['dose']:g} is {o['what']} "
                           f"(VR {o['vr']:.3g} [{o['ci'][0]:.3g}, {o['ci'][1]:.3g}])." for o in ops if o["what"]))
    sens = [(lv["view_noise"], lv["quantities"]["test_acc@sel"]) for lv in an["levels"]]
    if all("verdicts_at_init" in q for _, q in sens):
        moved = []
        for x, q in sens:
            ch = [f"{a} {q['verdicts'][a]['verdict']} $\\to$ {q['verdicts_at_init'][a]['verdict']}"
                  for a in ("tanh", "relu") if q["verdicts"][a]["verdict"] != q["verdicts_at_init"][a]["verdict"]]
            if ch:
                moved.append(f"dose {x:g}, untrained $\\sigma_{{n,\\mathrm{{eff}}}} = {q['sigma_n_eff_init']:.2f}$: "
                             + ", ".join(ch))
        parts.append("Placing each dose at the untrained network's noise instead, a sensitivity check fixed after "
                     "the rule, changes " + ("no test-accuracy verdict." if not moved else
                                              "the test-accuracy verdicts at " + "; ".join(moved) +
                                              ": where the noise is measured decides these verdicts."))
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
        brk = lambda x: tex_escape(x).replace(r"\_", r"\_\allowbreak{}").replace(":", r":\allowbreak{}")  # noqa: E731
        parts.append("Departures from the reference protocol (each run has its dose's view noise): "
                     + ", ".join(f"\\texttt{{{brk(x)}}}" for x in dep) + ".")
    return "\n".join(parts)


#: a verdict kind the text names in words (:func:`vit.noise_dose.verdict_kind`); the others print the
#: verdict word with the predicted ratio
_KIND_WORDS = {"no direction": "untestable (no predicted direction)",
               "outside validity": "untestable (outside the theory's valid range)",
               "no interval": "inconclusive (no interval for the measured ratio)"}


def _short(act: str, v: dict, ci: list | None) -> str:
    """One curve's verdict in a few words (the table and the record hold the full reasons), by its
    kind: a function of the recorded intervals, never of the verdict's wording."""
    from vit.noise_dose import VERDICT_KINDS, verdict_kind
    kind = verdict_kind(v["predicted_interval"], ci)
    if VERDICT_KINDS[kind] != v["verdict"]:
        raise ValueError(f"noise-dose record: the {act} verdict {v['verdict']!r} is not that of its intervals "
                         f"({kind!r})")
    if kind in _KIND_WORDS:
        return f"{act} {_KIND_WORDS[kind]}"
    return f"{act} {v['verdict']} (predicted {v['predicted_vr']:.2g})"


def _order_parameter_verdicts(an: dict) -> list[dict]:
    """Every order-parameter comparison at the selected epoch with its verdicts; ``what`` names
    a decided outcome (refuted by both curves / by one, confirmed) for the text, else ''."""
    out = []
    for lv in an["levels"]:
        for q, c in lv["quantities"].items():
            if q == "test_acc@sel" or not q.endswith("@sel"):
                continue
            v = {a: c["verdicts"][a]["verdict"] for a in c["verdicts"]}
            ref = [a for a, x in v.items() if x == "refuted"]
            conf = [a for a, x in v.items() if x == "confirmed"]
            what = ("refuted by both curves" if len(ref) == len(v) else f"refuted by the {ref[0]} curve" if ref
                    else "confirmed by both curves" if len(conf) == len(v) else
                    f"confirmed by the {conf[0]} curve" if conf else "")
            out.append({"dose": lv["view_noise"], "label": label(q, tex=False),
                        "verdicts": v, "what": what, "vr": c["vr"], "ci": c["ci"]})
    return out


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
    """Two findings: the direction per dose (test accuracy at the pre-registered placement) and
    the trend across doses."""
    an = results[STUDY]["analysis"]
    verd = [v["verdict"] for lv in an["levels"] for v in lv["quantities"]["test_acc@sel"]["verdicts"].values()]
    n = {k: verd.count(k) for k in ("confirmed", "refuted", "inconclusive", "untestable")}
    shared_ref = any(h["shared_prediction_refuted"] for h in an["headline"])
    status = "refuted" if shared_ref else "confirmed" if n["confirmed"] and not n["refuted"] else "not tested"
    doses = an["levels"]
    decided = {k: [i for i, lv in enumerate(doses)
                   if any(v["verdict"] == k for v in lv["quantities"]["test_acc@sel"]["verdicts"].values())]
               for k in ("confirmed", "refuted")}
    seeds = r"\NdSeeds{} matched seeds"

    def at(i: int) -> str:
        tg = tag(i, "test_acc@sel")
        return (f"view noise \\{macro_name('Nd', i, 'dose')}{{}} pixel SDs: VR \\{tg}Vr, "
                f"95\\% CI [\\{tg}Lo, \\{tg}Hi]")

    claim = "the clamp changes a noise-dosed ViT's test-accuracy variance in the predicted direction"
    if status == "confirmed":
        clause = (f"{claim} at {len(decided['confirmed'])} of {len(doses)} doses, against it at none ("
                  + "; ".join(at(i) for i in decided["confirmed"]) + f"; {seeds})")
    elif status == "refuted":
        ref = [i for i, h in enumerate(an["headline"]) if h["shared_prediction_refuted"]]
        clause = f"{claim} (both curves refuted at " + "; at ".join(at(i) for i in ref) + f"; {seeds})"
    else:
        clause = (f"{claim} (no dose decides: " + ", ".join(f"{n[k]} {k}" for k in n if n[k])
                  + f" verdicts over the doses and the two curves; {seeds})")
    sentence = (f"On the noise-dose ViT study the test-accuracy verdicts over the doses and the two curves are "
                f"{n['confirmed']} confirmed, {n['refuted']} refuted, {n['inconclusive']} inconclusive and "
                f"{n['untestable']} untestable (that section also gives the order parameters and where the "
                f"verdicts depend on how the noise is measured)."
                + "".join(f" The test-accuracy ratio {what} at " + "; at ".join(at(i) for i in decided[k]) + "."
                          for k, what in (("confirmed", "confirms a curve"), ("refuted", "refutes a curve"))
                          if decided[k]))
    tr = an["trend"]
    tstat = {"confirmed": "confirmed", "refuted": "refuted"}.get(tr["verdict"], "not tested")
    ci = r", 95\% interval [\NdTrendLo, \NdTrendHi]" if tr.get("ci") else ""
    tclause = r"the ratio rises with the noise (slope \NdTrend" + ci + ")"
    tsentence = (f"The predicted rise of the variance ratio with the noise across doses is "
                 f"{'not resolved' if tstat == 'not tested' else tstat} at \\NdSeeds{{}} seeds per cell "
                 f"(slope \\NdTrend{ci}).")
    return [findings.Finding(status, clause, sentence, "sec:noisedose"),
            findings.Finding(tstat, tclause, tsentence, "sec:noisedose")]
