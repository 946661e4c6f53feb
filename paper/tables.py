"""The manuscript's generated tables (``generated/tab_<name>.tex``): LaTeX ``table`` environments
whose cells are the numbers' macros, so every entry is in ``numbers.json`` too."""
from __future__ import annotations

from typing import Callable

from cffdyn.exports import macro_name
from paper.noise_dose import tab_noise_dose, verdict_text
from paper.phrases import vit_probe_spread_phrase
from paper.tex import tex_escape
from sim.eigen_numbers import SPREAD_LOSSES, setting_label
from vit.study_numbers import cell, comparisons, vit_cells

__all__ = ["identity_name", "tab_identities", "tab_vit", "tab_vit_tests", "tab_eigen", "tab_clamp",
           "tab_clamp_scaling", "TABLES"]


def identity_name(name: str) -> str:
    """An identity's recorded name as text with its math typeset (``tau=1`` -> ``$\\tau = 1$``)."""
    import re
    parts = re.split(r"(general tau|tau=1|d/ds min\(s\+m,1\)|s\+m ?[<>=] ?1(?:[-+]delta)?|s_R->1|s_C->s_C\+m|"
                     r"dL/d[sf]_[RCN]\[k\]|L_sub - L_none - m|dL_sub - dL_none|L_i|\|P\||\|N\||m=0)", name)
    math = {"general tau": r"general $\tau$", "tau=1": r"$\tau = 1$", "d/ds min(s+m,1)": r"$\partial_s \min(s+m, 1)$",
            "s_R->1": r"$s_R \to 1$", "s_C->s_C+m": r"$s_C \to s_C + m$", "L_sub - L_none - m": r"$L_{\mathrm{sub}} - "
            r"L_{\mathrm{none}} - m$", "dL_sub - dL_none": r"$dL_{\mathrm{sub}} - dL_{\mathrm{none}}$", "L_i": "$L_i$",
            "|P|": "$|P|$", "|N|": "$|N|$", "m=0": "$m = 0$"}
    out = []
    for p in parts:
        if p in math:
            out.append(math[p])
        elif re.fullmatch(r"s\+m ?([<>=]) ?1([-+]delta)?", p or ""):
            m = re.fullmatch(r"s\+m ?([<>=]) ?1([-+]delta)?", p)
            out.append(f"$s + m {m.group(1)} 1" + (f" {m.group(2)[0]} \\delta$" if m.group(2) else "$"))
        elif re.fullmatch(r"dL/d[sf]_[RCN]\[k\]", p or ""):
            out.append(f"$\\partial L/\\partial {p[4]}_{{{p[6]},k}}$")
        else:
            out.append(tex_escape(p))
    return "".join(out)


def tab_identities(results: dict) -> str:
    d = results["verify"]
    rows = [f"{k} & {identity_name(i['name'])} & \\texttt{{{tex_escape(i['residual'])}}} & "
            f"{'yes' if i['passed'] else 'NO'} \\\\" for k, i in enumerate(d["identities"], 1)]
    return "\n".join([
        r"\begin{table}[tbp]", r"\centering\scriptsize",
        r"\caption{Symbolic identities checked by \texttt{theory verify}: each residual is derived $-$ "
        r"reference brought to the package's own indexed-sum normal form (canonical summation indices, one "
        r"sum per term, constant factors pulled out, common denominator, expanded numerator; not sympy's "
        r"\texttt{simplify}) and must be exactly 0 (n = \NIdentities{} identities; test: exact symbolic "
        r"equality). The normal form can miss a true identity but cannot cancel a false one: "
        r"\NMutationsFlagged{} of \NMutations{} deliberately wrong references (sign flips, a dropped "
        r"$1/|P(i)|$, $e^{(s+m)/\tau} \to e^{s/\tau}$, a misplaced $\tau$, a non-neutral "
        r"subtraction) leave a non-zero residual.}", r"\label{tab:identities}",
        r"\begin{tabular}{r>{\cellfmt}p{0.72\textwidth}cc}", r"\toprule", r"\# & identity & residual & passed \\",
        r"\midrule",
        *rows, r"\bottomrule", r"\end{tabular}", r"\end{table}"])


def _why(cmp: dict, key: str) -> str:
    """The sentence of a test that was not computed, shortened for a table cell."""
    note = (cmp.get("notes") or {}).get(key, "not computed")
    return tex_escape(note.split(" (")[0].replace("not computed: ", ""))


def tab_vit(results: dict) -> str:
    d = results["vit_study"]
    cells = vit_cells(d)
    probe = bool(d.get("probe"))
    rows = []
    for c in cells:
        raw = cell(d, c["levels"])
        sd = f"\\VitSd{c['tag']}" if raw.get("sd") is not None else "(1 run)"
        row = f"{tex_escape(c['label'])} & \\VitN{c['tag']} & \\VitMean{c['tag']} & {sd} & \\VitCar{c['tag']}"
        if probe:
            row += f" & \\VitMinusProbe{c['tag']}" if "minus_probe_mean" in raw else " & n/a"
        rows.append(row + r" \\")
    head_cols = "lcccc" + ("c" if probe else "")
    head = r"cell & n & mean (\%) & SD (points) & layer-0 CAR (\%)" + (r" & CFF $-$ probe (points)" if probe else "")
    probe_txt = (r" The raw-pixel linear probe (the same LayerNorm+Linear head and protocol on the flattened pixels of "
                 r"the same images) reaches \VitProbeAcc\% on the test set " + vit_probe_spread_phrase(results)
                 + r"; the last column is each cell's accuracy minus the probe's, averaged over matched seeds.") \
        if probe else ""
    return "\n".join([
        r"\begin{table}[tbp]", r"\centering\footnotesize",
        r"\caption{ViT factorial study: test accuracy per cell (n seeds, mean and SD in percentage points, "
        r"layer-0 clamp activation rate averaged over the cell)." + probe_txt + r" The tests of the loss mode and "
        r"the method are in Table~\ref{tab:vittests}.}",
        r"\label{tab:vit}",
        r"\begin{tabular}{" + head_cols + "}", r"\toprule", head + r" \\", r"\midrule",
        *rows, r"\bottomrule", r"\end{tabular}", r"\end{table}"])


def tab_vit_tests(results: dict) -> str:
    """Per factor, every test of the variance ratio and of the means, side by side."""
    d = results["vit_study"]
    test_rows = []
    for c in comparisons(d):
        t, raw = c["tag"], c["raw"]
        st = raw["steier"]
        if test_rows:
            test_rows.append(r"\addlinespace")   # the factors' blocks apart
        test_rows.append(r"\multicolumn{3}{l}{\textit{" + tex_escape(c["factor"]) + ": " + tex_escape(c["a"]) + " vs "
                         + tex_escape(c["b"]) + f" (ratio {tex_escape(c['a'])}/{tex_escape(c['b'])}; "
                         + ("matched seeds" if raw.get("paired") is not None else "independent seeds") + r")}} \\")

        def line(name: str, stat: str, p: str) -> None:
            test_rows.append(f"{name} & {stat} & {p} \\\\")
        pr = raw.get("paired")
        if pr is not None:
            line("paired: Pitman--Morgan", f"r(paired runs) \\PairCorr{t}" if pr["pm_p"] is not None
                 else _why(raw, "pitman_morgan"), f"\\PPM{t}" if pr["pm_p"] is not None else "")
            line("paired: permutation within seeds", "" if pr["perm_p"] is not None else _why(raw, "perm_paired"),
                 f"\\PPermPaired{t}" if pr["perm_p"] is not None else "")
            line(r"paired: bootstrap over seeds, 95\% CI",
                 f"[\\VRloPaired{t}, \\VRhiPaired{t}]" if pr.get("boot_ci") else _why(raw, "boot_paired"), "")
            if pr.get("paired_t_p") is not None:
                line("paired: t-test of the means", f"$\\Delta$ \\MeanDiff{t}\\,points", f"\\PPairedT{t}")
        line("Steier's pooled F (all runs of a level)",
             f"\\VRSteier{t}$\\times$, df \\DfSteier{t}" if st["p"] is not None else _why(raw, "steier_f"),
             f"\\PSteier{t}" if st["p"] is not None else "")
        line("within-cell pooled F", f"\\VR{t}$\\times$, df \\DfWithin{t}" if raw["f_p"] is not None
             else _why(raw, "within_f"), f"\\PFTest{t}" if raw["f_p"] is not None else "")
        line("Levene / Brown--Forsythe (independent)", "" if raw["levene_p"] is not None else _why(raw, "levene"),
             f"\\PLevene{t}{{}} / \\PBf{t}" if raw["levene_p"] is not None else "")
        line("permutation between levels (independent)", "" if raw["perm_p"] is not None
             else _why(raw, "perm_independent"), f"\\PPerm{t}" if raw["perm_p"] is not None else "")
        line(r"bootstrap within cells, 95\% CI (independent)", f"[\\VRlo{t}, \\VRhi{t}]" if raw["boot_ci"]
             else _why(raw, "boot_independent"), "")
        line("means: Welch t (independent)", f"$\\Delta$ \\MeanDiff{t}\\,points", f"\\PWelch{t}")
    return "\n".join([
        r"\begin{table}[tbp]", r"\centering\footnotesize",
        r"\caption{ViT factorial study, per factor: every test of the variance ratio and of the means, side by "
        r"side. With matched seeds (the same seeds in every cell) the paired tests, listed first, are the ones that "
        r"fit the design; the tests marked independent treat the levels as independent samples and are "
        r"conservative when a seed's variance is shared. Steier's statistic pools all runs of a level "
        r"(df $kn-1$); the within-cell F removes each cell's mean (df $k(n-1)$). A test that needs more seeds says "
        r"so.}",
        r"\label{tab:vittests}",
        r"\begin{tabular}{>{\cellfmt}p{0.40\textwidth}>{\cellfmt}p{0.34\textwidth}l}",
        r"\toprule", r"test & statistic & p \\", r"\midrule",
        *test_rows, r"\bottomrule", r"\end{tabular}", r"\end{table}"])


def tab_eigen(results: dict) -> str:
    d = results["eigen_spread"]
    rows = []
    for name in SPREAD_LOSSES:
        if name in d["losses"]:
            t = macro_name(name)
            rows.append(f"{tex_escape(setting_label(name))} & \\EigEta{t} & \\EigSpread{t} & $\\EigVarNorm{t}$ \\\\")
    return "\n".join([
        r"\begin{table}[tbp]", r"\centering\footnotesize",
        r"\caption{Eigenmode convergence: median over \EigSeeds{} seeds of W$_0$ of the ratio slowest/fastest "
        r"time-to-\EigFrac\% across the \EigModes{} modes, and the mean across-seed variance of the normalised "
        r"eigenvalues at step \EigHorizon{} (n = \EigSeeds{} seeds; descriptive, no test).}",
        r"\label{tab:eigen}", r"\begin{tabular}{lccc}", r"\toprule",
        r"loss & learning rate & spread (slowest/fastest) & across-seed variance \\", r"\midrule",
        *rows, r"\bottomrule", r"\end{tabular}", r"\end{table}"])


def _verdict(ok) -> str:
    return "--" if ok is None else ("in" if ok else r"\textbf{out}")


def tab_clamp(results: dict) -> str:
    """Predicted vs measured N Var(Q) and ratio for every cell; every number is a macro."""
    d = results["clamp"]
    lines = []
    for i, r in enumerate(d["rows"]):
        t = macro_name("ClampRow", i)
        head = f"clamp & \\{t}M & \\{t}Sn & \\{t}B"
        if r.get("ratio") is not None:
            lines.append(f"{head} & \\{t}Pred & \\{t}Meas{{}} [\\{t}Lo, \\{t}Hi] & {_verdict(r['clamp']['in_ci'])} "
                         f"& \\{t}RPred & \\{t}R{{}} [\\{t}RLo, \\{t}RHi] & {_verdict(r['ratio_in_ci'])} \\\\")
        elif r["clamp"]["measured"].get("final_Q_mean") is not None:
            lines.append(f"{head} & \\multicolumn{{6}}{{l}}{{fully clamped: no stationary state; SGD $Q \\to$ "
                         f"\\{t}FcQ, CAR \\{t}FcCar\\% at $t = \\{t}FcT$}} \\\\")
    for j, a in enumerate(d.get("subtract") or []):
        t = macro_name("ClampSub", j)
        lines.append(f"subtract & any & \\{t}Sn & \\{t}B & \\{t}Pred & \\{t}Meas{{}} [\\{t}Lo, \\{t}Hi] & "
                     f"{_verdict(a['in_ci'])} & \\multicolumn{{3}}{{l}}{{(denominator of the ratios)}} \\\\")
    if d.get("oja"):
        lines.append(f"Oja (identity) & -- & -- & -- & \\ClampOjaPred & \\ClampOjaMeas{{}} [\\ClampOjaLo, \\ClampOjaHi] & "
                     f"{_verdict(d['oja']['in_ci'])} & \\multicolumn{{3}}{{l}}{{($\\tau = \\ClampOjaTau$)}} \\\\")
    return "\n".join([
        r"\begin{table}[tbp]", r"\centering\scriptsize", r"\setlength{\tabcolsep}{3.5pt}",
        r"\caption{Seed-to-seed variance of the overlap in the one-layer model: linear-noise prediction against "
        r"online SGD ($N = \ClampN$, \ClampTrials{} trials (seeds) per arm, stationary window of \ClampWindow{} time "
        r"units after \ClampBurn{} correlation times; 95\% batch-means intervals, batches of \ClampBatchCorr{} "
        r"correlation times). $10^3\,N\,\mathrm{Var}(Q)$; ratio = clamp / subtract with a delta-method 95\% "
        r"interval. ``in'': the prediction lies inside the measured interval.}",
        r"\label{tab:clamp}", r"\begin{tabular}{lccccccccc}", r"\toprule",
        r"arm & $m$ & $\sigma_n$ & $B$ & pred. & measured [95\% CI] & & ratio pred. & ratio measured [95\% CI] & \\",
        r"\midrule", *lines, r"\bottomrule", r"\end{tabular}", r"\end{table}"])


def tab_clamp_scaling(results: dict) -> str:
    d = results["clamp"]
    lines = []
    for k, sc in enumerate(d.get("scaling") or []):
        t = macro_name("ClampScale", k)
        name = "Oja (identity)" if sc["mode"] == "oja" else (
            f"{sc['mode']}, " + (f"$m$ = \\{t}M, " if sc["mode"] == "clamp" else "any $m$, ")
            + f"$\\sigma_n$ = \\{t}Sn, $B$ = \\{t}B")
        lines.append(f"{name} & \\{t}N & \\{t}Pred & \\{t}Meas{{}} [\\{t}Lo, \\{t}Hi] & {_verdict(sc['in_ci'])} \\\\")
    return "\n".join([
        r"\begin{table}[tbp]", r"\centering\footnotesize",
        r"\caption{$10^3\,N\,\mathrm{Var}(Q)$ at several N (\ClampTrials{} trials (seeds) per entry, same protocol "
        r"as Table~\ref{tab:clamp}): the linear-noise prediction does not depend on N.}",
        r"\label{tab:clampscaling}", r"\begin{tabular}{lcccc}", r"\toprule",
        r"cell & $N$ & predicted & measured [95\% CI] & \\", r"\midrule", *lines, r"\bottomrule",
        r"\end{tabular}", r"\end{table}"])


#: table name -> (studies needed, maker)
TABLES: dict[str, tuple[tuple[str, ...], Callable[[dict], str]]] = {
    "identities": (("verify",), tab_identities),
    "vit": (("vit_study",), tab_vit),
    "vit_tests": (("vit_study",), tab_vit_tests),
    "eigen": (("eigen_spread",), tab_eigen),
    "clamp": (("clamp",), tab_clamp),
    "clamp_scaling": (("clamp",), tab_clamp_scaling),
    "noise_dose": (("noise_dose",), tab_noise_dose),
    "noise_dose_verdicts": (("noise_dose",), verdict_text),
}
