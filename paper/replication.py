"""The replication table: each headline claim of the source papers beside ours, with the protocol,
its departures and the verdict (:mod:`paper.verdicts`).  Each row is also a sentence of the
Conclusion (:mod:`paper.findings`)."""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

from cffdyn.exports import finite as _finite
from cffdyn.variance_ratio import reported_ratio
from paper.jsonpath import resolve_one
from paper.numbers import load_source_numbers
from paper.tex import DATASET_NAMES, tex_escape, value_range
from paper.verdicts import Verdict, verdict_direction, verdict_null, verdict_ordering, verdict_value
from vit.study_numbers import epoch_time_ratios, loss_mode_comparison

__all__ = ["RepRow", "replication_rows", "tab_replication", "vit_timing_context", "REPLICATION_ROWS"]


class RepRow(NamedTuple):
    """One replication row: claim (table text), the source paper's value, ours, protocol and
    departures, the verdict; ``who`` (a citation) and ``that`` (the claim as a that-clause, LaTeX)
    make the row a sentence of the Conclusion (:mod:`paper.findings`); ``key``: our key number with
    its uncertainty and test, short; ``headline``: the claim the manuscript asks about (Steier's),
    stated in the abstract with its key number whenever ours could be set beside it (the other rows
    are counted there and stated in the Conclusion)."""

    claim: str
    source: str
    ours: str
    protocol: str
    verdict: Verdict
    who: str = ""
    that: str = ""
    key: str = ""
    headline: bool = False


def _vit_loads(d: dict) -> list[float]:
    loads = [r["machine"]["load_avg"][0] for r in d["runs"]
             if isinstance(r.get("machine"), dict) and r["machine"].get("load_avg")]
    t = d.get("timing") or {}
    for la in (t.get("load_avg_start"), (t.get("machine") or {}).get("load_avg")):
        if isinstance(la, list) and la and _finite(la[0]):
            loads.append(la[0])
    return loads


def vit_timing_context(d: dict) -> str:
    """Device and load next to the epoch times, from the study's own record: the runs' ``machine``
    or the study's ``timing.load_avg_start`` / ``timing.machine`` (load at its end), else a pointer
    to the build's record in the Limitations."""
    devs = sorted({str(r.get("device") or "unknown") for r in d["runs"]})
    loads = _vit_loads(d)
    where = ", ".join(tex_escape(x) for x in devs)
    if loads:
        return f"{where}; 1-min load {value_range(min(loads), max(loads))} during the study"
    return where + r"; load during the study: Section~\ref{sec:limitations}"


def _on_gpu(d: dict) -> bool:
    devs = {str(r.get("device") or "") for r in d["runs"]}
    return bool(devs) and all(x.startswith("cuda") for x in devs)


def _rep_vit(results: dict) -> list[RepRow]:
    d = results["vit_study"]
    b = d["config"]["base"]
    src = load_source_numbers()
    ds = b["dataset"]
    lmc = loss_mode_comparison(d)
    pool = r" (\VitSubset-image pool)" if b.get("subset") else ""
    proto = (f"{tex_escape(DATASET_NAMES.get(ds, ds))}{pool}, ViT[\\VitEmbedDim{{}} \\VitHeads{{}} "
             f"\\VitLayers{{}}], patch \\VitPatch, \\VitEpochs{{}}+\\VitHeadEpochs{{}} epochs, \\VitSeeds{{}} seeds/cell")
    cff_model = (b.get("embed_dim"), b.get("heads"), b.get("layers")) == (128, 4, 5)
    cff_schedule = b.get("epochs") == src["cff_epochs"]["value"] and not b.get("subset")
    rows: list[RepRow] = []
    if lmc is not None:
        # with matched seeds the paired tests fit the design (Section 5): the variance verdict rests
        # on the Pitman-Morgan test of the within-cell ratio, the mean verdict on the paired t-test;
        # without pairing, on Steier's pooled F and on Welch's t
        pr = lmc.get("paired")
        rep = reported_ratio(lmc)
        vr, vr_p = rep.ratio, rep.p
        if rep.test == "pitman_morgan":
            vr_test = r"Pitman--Morgan test on the matched seed pairs, p = \PPMLossMode"
            vr_key = r"\VRLossMode$\times$, paired Pitman--Morgan p~=~\PPMLossMode"   # ~: no break in the abstract
            ours_vr = (r"\VRLossMode$\times$ (within-cell; Pitman--Morgan p = \PPMLossMode; Steier's pooled "
                       r"\VRSteierLossMode$\times$, F p = \PSteierLossMode)")
        elif rep.test == "steier_f":
            vr_test = r"Steier's pooled F-test, p = \PSteierLossMode"
            vr_key = r"\VRSteierLossMode$\times$, F p~=~\PSteierLossMode"
            ours_vr = r"\VRSteierLossMode$\times$ (Steier's pooled F p = \PSteierLossMode)"
        else:   # a record without Steier's pooled test: its within-cell F
            vr_test = r"within-cell F-test, p = \PFTestLossMode"
            vr_key = r"\VRLossMode$\times$, F p~=~\PFTestLossMode"
            ours_vr = r"\VRLossMode$\times$ (within-cell F p = \PFTestLossMode)"
        log_vr = math.log(vr) if _finite(vr) and vr > 0 else None
        if pr is not None and _finite(pr.get("paired_t_p")):
            mean_p, mean_test = pr["paired_t_p"], r"paired t-test on the matched seed pairs, p = \PPairedTLossMode"
            mean_key = (r"$\Delta$~=~\MeanDiffLossMode\,points, 95\% CI [\MeanDiffLoLossMode, \MeanDiffHiLossMode], "
                        r"paired t p~=~\PPairedTLossMode")
            ours_mean = (r"$\Delta$ = \MeanDiffLossMode\,points, 95\% CI [\MeanDiffLoLossMode, \MeanDiffHiLossMode] "
                         r"(paired t p = \PPairedTLossMode; Welch p = \PWelchLossMode{} ignores the pairing)")
        else:
            mean_p, mean_test = lmc.get("welch_p"), r"Welch t-test, p = \PWelchLossMode"
            mean_key = r"$\Delta$~=~\MeanDiffLossMode\,points, Welch p~=~\PWelchLossMode"
            ours_mean = r"$\Delta$ = \MeanDiffLossMode\,points (Welch p = \PWelchLossMode)"
        not_cifar = f"our data are {DATASET_NAMES.get(ds, ds)}, not CIFAR-10"
        clamp_car = [100 * r["car_layer0"] for r in d["runs"]
                     if r["cell"].get("loss_mode") == "clamp" and _finite(r.get("car_layer0"))]
        rows += [
            RepRow("Steier: variance ratio clamp/subtract, CIFAR-10",
                   r"\SrcSteierVrCifarTen$\times$ (p = \SrcSteierPCifarTen, CI [\SrcSteierCiLoCifarTen, "
                   r"\SrcSteierCiHiCifarTen], n = \SrcSteierNPerCell/cell)",
                   ours_vr,
                   proto + ("; model size, epochs and seed count differ" if ds == "cifar10"
                            else "; dataset, model size, epochs and seed count all differ"),
                   verdict_direction(+1, log_vr, vr_p, comparable=ds == "cifar10", why_not=not_cifar, test=vr_test),
                   r"\citet{steier2026}",
                   r"the clamp raises the seed-to-seed variance of test accuracy on CIFAR-10 "
                   r"(ratio \SrcSteierVrCifarTen$\times$)", vr_key, headline=True),
            RepRow("Steier: variance ratio, Fashion-MNIST", r"\SrcSteierVrFmnist$\times$ (p = \SrcSteierPFmnist)",
                   ours_vr,
                   ("same dataset; " if ds == "fashion_mnist" else "different dataset; ") + proto
                   + "; Steier's model and epochs not reported in the abstract",
                   verdict_direction(-1, log_vr, vr_p, comparable=ds == "fashion_mnist",
                                     why_not=f"our data are {DATASET_NAMES.get(ds, ds)}, not Fashion-MNIST",
                                     test=vr_test),
                   r"\citet{steier2026}",
                   r"the clamp lowers the variance on Fashion-MNIST (ratio \SrcSteierVrFmnist$\times$)",
                   vr_key, headline=True),
            RepRow("Steier: the gradient-neutral margin leaves mean accuracy unchanged",
                   "no difference (CIFAR-10; stated as general)", ours_mean, proto,
                   verdict_null(mean_p, test=mean_test),
                   r"\citet{steier2026}",
                   r"the gradient-neutral subtraction leaves the mean test accuracy unchanged", mean_key, headline=True),
            RepRow("Steier: layer-0 clamp activation rate", r"\SrcSteierCarZeroCifarTen\% (CIFAR-10)",
                   r"\VitCarClamp\% $\pm$ \VitCarClampSd\% (mean $\pm$ SD over the clamp runs)",
                   proto + "; rate on training batches at the selected epoch",
                   verdict_value(src["steier_car0_cifar10"]["value"], clamp_car, comparable=ds == "cifar10",
                                 why_not=not_cifar),
                   r"\citet{steier2026}",
                   r"the clamp is active for \SrcSteierCarZeroCifarTen\% of the positive pairs of layer 0 on CIFAR-10",
                   r"\VitCarClamp\% $\pm$ \VitCarClampSd\% over the clamp runs"),
        ]
    meths = [lv for f, lvs in d["config"]["factors"] if f == "method" for lv in lvs]
    if {"cff1", "cff2"} <= set(meths):
        ratio_src = src["cff_epoch_s_two_forward"]["value"] / src["cff_epoch_s_one_forward"]["value"]
        gpu = _on_gpu(d)
        rows.append(RepRow(
            "CFF: time per epoch, one- vs two-forward (their ratio two/one)",
            r"\SrcCffEpochSOneForward\,s vs \SrcCffEpochSTwoForward\,s (their GPU)",
            r"\VitEpochTimeCffOne\,s $\pm$ \VitEpochTimeSdCffOne\,s vs \VitEpochTimeCffTwo\,s $\pm$ "
            r"\VitEpochTimeSdCffTwo\,s (mean $\pm$ SD over runs; ratio \VitEpochRatio{} $\pm$ \VitEpochRatioSd{} "
            r"over \VitEpochRatioN{} seed pairs; " + vit_timing_context(d) + ")",
            proto + "; timings depend on the device and its load, so neither the times nor their ratio "
                    "carry over from another machine",
            verdict_value(ratio_src, epoch_time_ratios(d), comparable=gpu,
                          why_not="their times are from a GPU, ours from a CPU under a different load",
                          test="our cff2/cff1 ratios over seed pairs, within 2 SD"),
            r"\citet{aghagolzadeh2025}",
            r"a two-forward epoch takes \SrcCffEpochSTwoForward\,s against \SrcCffEpochSOneForward\,s for one "
            r"forward pass", r"ratio \VitEpochRatio{} $\pm$ \VitEpochRatioSd{} over \VitEpochRatioN{} seed pairs"))
    if "clamp" in str(d["config"]["factors"]) and "cff2" in meths:
        cell = [100 * r["test_acc"] for r in d["runs"]
                if r["cell"].get("loss_mode") == "clamp" and r["cell"].get("method") == "cff2"]
        rows.append(RepRow(
            "CFF: CIFAR-10 ViT[128 4 5] accuracy, CFF+M", r"\SrcCffVitCifarTenCffm\%",
            r"\VitMeanClampCffTwo\% $\pm$ \VitSdClampCffTwo\% (clamp, cff2; mean $\pm$ SD over seeds)",
            proto + "; different dataset and a short schedule (\\SrcCffEpochs{} epochs in CFF): not comparable "
                    "in level, only the pipeline is exercised",
            verdict_value(src["cff_vit_cifar10_cffm"]["value"], cell,
                          comparable=ds == "cifar10" and cff_model and cff_schedule,
                          why_not="different dataset, model or schedule"),
            r"\citet{aghagolzadeh2025}",
            r"CFF with the margin reaches \SrcCffVitCifarTenCffm\% test accuracy with ViT[128 4 5] on CIFAR-10",
            r"\VitMeanClampCffTwo\% $\pm$ \VitSdClampCffTwo\%"))
    return rows


def _rep_eigen(results: dict) -> list[RepRow]:
    d = results["eigen_spread"]
    if not {"euc_simsiam", "euc_isoloss"} <= set(d["losses"]):
        return []
    spread = {k: d["losses"][k]["ratio_slowest_fastest_median"] for k in ("euc_simsiam", "euc_isoloss")}
    return [RepRow("IsoLoss: equalised convergence rates across eigenmodes",
                   "qualitative (abstract; Fig. 2 eigenvalue panels)",
                   r"spread \EigSpreadEucSimsiam{} (BYOL-L2) vs \EigSpreadEucIsoloss{} (IsoLoss)",
                   r"linear toy with the notebook's sizes (M = \EigModes, N = \EigInDim, $\sigma$ = \EigSigma); "
                   r"\EigSeeds{} seeds of W$_0$ drawn with numpy, not the notebook's torch draw",
                   verdict_ordering(spread["euc_isoloss"] < spread["euc_simsiam"]
                                    if all(_finite(v) for v in spread.values()) else None,
                                    test="median over seeds of the slowest/fastest convergence time (deterministic "
                                         "expected updates)"),
                   r"\citet{halvagal2023}",
                   r"IsoLoss equalises the convergence rates of the eigenmodes",
                   r"median slowest/fastest time \EigSpreadEucIsoloss{} for IsoLoss against \EigSpreadEucSimsiam{} "
                   r"for BYOL-L2, over \EigSeeds{} seeds")]


def replication_rows(results: dict) -> list[RepRow]:
    """Every replication row of this build, in table order."""
    rows: list[RepRow] = []
    for name, fn in REPLICATION_ROWS.items():
        if name in results or (fn is _rep_mf and "noise" in results):
            rows += fn(results)
    for r in rows:
        if not isinstance(r, RepRow) or not isinstance(r.verdict, Verdict):
            raise ValueError(f"replication row {r[0]!r} is not a replication.RepRow with a Verdict")
    return rows


def _verdict_cell(v: Verdict) -> str:
    return f"\\textbf{{{v.word}}}: {tex_escape(v.why)}" + (f" ({v.test})" if v.test else "")


def tab_replication(results: dict) -> str:
    rows = replication_rows(results)
    body = ([f"{r.claim} & {r.source} & {r.ours} & {r.protocol} & {_verdict_cell(r.verdict)} \\\\" for r in rows]
            or [r"\multicolumn{5}{c}{(no study available)} \\"])
    return "\n".join([
        r"\begin{table}[p]", r"\centering\scriptsize", r"\setlength{\tabcolsep}{3pt}",
        r"\caption{Replication: each headline number of the source papers (literature values, "
        r"\texttt{paper/source\_numbers.json}) beside ours under the protocol stated in the fourth column, "
        r"with every departure from the source protocol, and the verdict with the test it rests on (rule in "
        r"Section~\ref{sec:replication}); n is the number of seeds per cell"
        + (r" (ours: \VitSeeds)" if "vit_study" in results else "") + r".}",
        r"\label{tab:replication}",
        r"\begin{tabular}{" + "".join(f">{{\\cellfmt}}p{{{w}\\textwidth}}"
                                      for w in (0.14, 0.15, 0.20, 0.21, 0.22)) + "}",
        r"\toprule",
        r"claim & source paper & this build & protocol and departures & verdict (test) \\", r"\midrule",
        *body, r"\bottomrule", r"\end{tabular}", r"\end{table}"])


def _rep_mf(results: dict) -> list[RepRow]:
    rows = []
    if "phase" in results:
        rows.append(RepRow("Meng--Wang (ii): attraction regions depend on higher moments",
                     r"qualitative (abstract; Fig.~3 with $m_2$ = \SrcMwMTwoFigThreeA, \SrcMwMTwoFigThreeB)",
                     r"share won by feature 1: \PhaseShareKurtLo\% ($m_4/m_2^2$ = \PhaseKurtLo) vs "
                     r"\PhaseShareKurtHi\% (\PhaseKurtHi)",
                     r"reconstructed model; $\tau$ = \PhaseTau, grid of \PhaseNicsMFour{} initial conditions "
                     r"(deterministic ODE)",
                     _verdict_phase(results["phase"]), r"\citet{meng2024}",
                     r"the higher moments of the data move the regions of attraction of the features",
                     r"share won by feature 1 \PhaseShareKurtLo\% at $m_4/m_2^2 = \PhaseKurtLo$ against "
                     r"\PhaseShareKurtHi\% at \PhaseKurtHi, deterministic ODE"))
    if "noise" in results:
        rows.append(RepRow("Meng--Wang (iii): anticorrelated noise raises the stationary overlap",
                     "qualitative (abstract; Fig.~4)",
                     r"$Q^*$ = \NoiseQAnti{} ($\rho=-1$) vs \NoiseQIndep{} ($\rho=0$) at $\sigma_n^2 = 1$, $\tau = 1$",
                     r"reconstructed model, tanh, $m_2 = 3$, Rademacher $c$; SGD check with \NoiseSgdTrials{} trials",
                     _verdict_noise(results["noise"]), r"\citet{meng2024}",
                     r"anticorrelated augmentation noise raises the stationary overlap",
                     r"$Q^* = \NoiseQAnti$ at $\rho = -1$ against \NoiseQIndep{} at $\rho = 0$, deterministic ODE"))
    return rows


def _verdict_phase(d: dict) -> Verdict:
    """Higher moments move the attraction regions: the share won by feature 1 changes by more than
    one percentage point across the kurtosis sweep (deterministic ODE on a grid)."""
    sw = d.get("m4_sweep") or []
    if len(sw) < 2:
        return verdict_ordering(None)
    return verdict_ordering(abs(sw[-1]["share_feature1"] - sw[0]["share_feature1"]) > 0.01,
                            test="share of a grid of initial conditions won by feature 1, deterministic ODE")


def _verdict_noise(d: dict) -> Verdict:
    """Anticorrelated views raise Q*: Q*(rho = -1) > Q*(rho = 0) at sigma_n^2 = 1, tau = 1 (ODE)."""
    try:
        anti = resolve_one(d, "curves[tau=1.0,rho=-1.0].vs_notes[sn2=1.0].ode")
        ind = resolve_one(d, "curves[tau=1.0,rho=0.0].vs_notes[sn2=1.0].ode")
    except ValueError:
        return verdict_ordering(None)
    return verdict_ordering(anti > ind if _finite(anti) and _finite(ind) else None,
                            test="stationary $Q^*$ of the deterministic ODE")


#: study -> its rows, in table order (the mean-field rows come with the phase or the noise study)
REPLICATION_ROWS: dict[str, Callable[[dict], list[RepRow]]] = {
    "vit_study": _rep_vit, "eigen_spread": _rep_eigen, "phase": _rep_mf,
}
