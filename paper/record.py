"""What a build ran, where, and under which load: ``build_info.json``, the ``\\Build...`` macros,
the generated Limitations and the abstract's scale phrase.

The Limitations section is generated here from the build's own record (scale, studies run or
reused, seeds per cell, devices of the runs, CPU count and load), so it cannot claim "3 seeds
per cell" or "no GPU run" when the build did something else.
"""
from __future__ import annotations

from typing import Any

from cffdyn.exports import NumberSpec, finite as _finite
from paper.phrases import vit_data_phrase
from paper.tex import tex_escape
from vit.study_numbers import loss_mode_comparison

__all__ = ["MEANFIELD_STUDIES", "build_info", "build_specs", "scale_phrase", "limitations_tex"]

MEANFIELD_STUDIES = ("convergence", "hfunc", "phase", "noise", "clamp")


def _devices(results: dict) -> dict[str, int]:
    """Device -> number of runs, over the studies that record one (the ViT runs); the symbolic and
    mean-field studies are CPU code (numpy, numba, sympy)."""
    devs: dict[str, int] = {}
    for r in results.get("vit_study", {}).get("runs", []):
        dev = str(r.get("device") or "unknown")
        devs[dev] = devs.get(dev, 0) + 1
    return devs


def build_info(scale: str, reuse_only: bool, machine: dict, studies: dict, unavailable: dict,
               results: dict) -> dict[str, Any]:
    """What this build ran, where and under which load (``build_info.json``; the ``Build*`` macros)."""
    timed = [v for v in studies.values() if v.get("status") in ("run", "reused")]
    ran = [k for k, v in studies.items() if v.get("status") == "run"]
    loads_end = [v["load_avg_end"][0] for v in timed if v.get("load_avg_end")]
    loads_start = [v["load_avg_start"][0] for v in timed if v.get("load_avg_start")]
    devs = _devices(results)
    return {"scale": scale, "reuse_only": reuse_only, "machine": machine, "cpus": machine.get("cpus"),
            "studies": studies, "studies_run": ran, "n_studies": len(timed), "n_studies_run": len(ran),
            "studies_seconds": sum(v.get("seconds", 0.0) for v in timed),
            "load_avg_studies": {"min": min(loads_start + loads_end) if loads_start + loads_end else None,
                                 "max": max(loads_start + loads_end) if loads_start + loads_end else None},
            "vit_devices": devs, "gpu_runs": sum(n for d, n in devs.items() if d.startswith("cuda")),
            "unavailable": unavailable}


def build_specs(info: dict) -> list[NumberSpec]:
    """Macros of this build's own record (``build_info.json``)."""
    b = "build"
    return [NumberSpec("BuildCpus", b, "cpus", "d", desc="CPU cores of the build machine"),
            NumberSpec("BuildStudies", b, "n_studies", "d"),
            NumberSpec("BuildStudiesRun", b, "n_studies_run", "d", desc="studies run (not reused) in this build"),
            NumberSpec("BuildStudiesSeconds", b, "studies_seconds", ".0f", desc="wall time of the study stages"),
            NumberSpec("BuildLoadMin", b, "load_avg_studies.min", ".2f", desc="lowest 1-min load at a study's start/end"),
            NumberSpec("BuildLoadMax", b, "load_avg_studies.max", ".2f", desc="highest 1-min load at a study's start/end"),
            NumberSpec("BuildGpuRuns", b, "gpu_runs", "d", desc="ViT runs on a CUDA device")]


def scale_phrase(info: dict) -> str:
    """How the ViT study was run, for the abstract: "at CPU scale" unless runs used a GPU."""
    devs = info["vit_devices"]
    if info["gpu_runs"]:
        return "on a GPU (" + tex_escape(", ".join(sorted(d for d in devs if d.startswith("cuda")))) + ")"
    return f"at CPU scale (\\texttt{{-{{}}-{info['scale']}}} presets)"


def limitations_tex(results: dict, info: dict) -> str:
    """The Limitations section's items, generated from what this build ran (not typed)."""
    items = []
    if any(k in results for k in MEANFIELD_STUDIES):
        items.append(
            r"The one-layer mean-field model is a reconstruction: the equations of \citet{meng2024} could not be "
            r"retrieved, so the data model, the normalised online SGD, the augmentation-noise law and the ODE were "
            r"rebuilt in the standard scaling-limit template and checked against simulated SGD. Every parameter the "
            r"source does not give is a documented choice (listed in Section~\ref{sec:meanfield}); the clamp "
            r"extension is ours.")
    m = info["machine"]
    scale = info["scale"]
    cpu = tex_escape(m.get("cpu") or "unknown CPU")
    reused = info["n_studies"] - info["n_studies_run"]
    lmin, lmax = info["load_avg_studies"]["min"], info["load_avg_studies"]["max"]
    if not info["n_studies_run"]:
        # nothing ran: the stages only read JSONs, so their time and this machine's load say nothing
        where = (f"This build used the \\texttt{{-{{}}-{scale}}} presets and reused all \\BuildStudies{{}} studies from "
                 "results recorded earlier; their timings, devices and loads are those of the earlier runs, as each "
                 f"study records them. It was assembled on \\BuildCpus{{}} CPU cores ({cpu}).")
    else:
        load = (r"a 1-minute load average of \BuildLoadMin{}" if lmin is not None and lmax is not None
                and f"{lmin:.2f}" == f"{lmax:.2f}" else
                r"a 1-minute load average between \BuildLoadMin{} and \BuildLoadMax{}")
        where = (f"This build used the \\texttt{{-{{}}-{scale}}} presets. "
                 f"Of its \\BuildStudies{{}} studies, \\BuildStudiesRun{{}} ran in this build"
                 + (f" and {reused} were reused from results recorded earlier (their timings are those of "
                    "the earlier run, under the load of that time)"
                    if reused else "")
                 + f"; the study stages took \\BuildStudiesSeconds\\,s on \\BuildCpus{{}} CPU cores ({cpu}), "
                 + f"with {load} at the start and end of the study stages (other processes may share the machine; "
                   "every timing in this document is subject to it).")
    devs = info["vit_devices"]
    if info["gpu_runs"]:
        gpu = tex_escape(", ".join(f"{d} ({n} runs)" for d, n in sorted(devs.items())))
        where += f" The ViT runs used {gpu}: \\BuildGpuRuns{{}} runs on a GPU."
    else:
        where += (" No run of this build used a GPU"
                  + (f" (ViT runs: {tex_escape(', '.join(sorted(devs)))})" if devs else "")
                  + ", so every GPU-scale figure is unmeasured here"
                  + (r"; the GPU-scale configurations (\texttt{-{}-full}) are defined but were not run." if scale == "quick"
                     else "; the \\texttt{-{}-full} presets ran on a CPU."))
    items.append(where)
    if "vit_study" in results:
        d = results["vit_study"]
        b = d["config"]["base"]
        lmc = loss_mode_comparison(d)
        text = (f"The ViT study uses {vit_data_phrase(results)}, ViT[\\VitEmbedDim{{}} \\VitHeads{{}} \\VitLayers] "
                r"and \VitEpochs{} epochs (CFF: \SrcCffEpochs{} on CIFAR-10 with ViT[128 4 5]) with \VitSeeds{} "
                r"seeds per cell")
        pw = (lmc or {}).get("power", {}) or {}
        if _finite(pw.get("power_assumed")):
            if pw["power_assumed"] < 0.8:
                text += (r"; its F-test has power \PowerAssumedLossMode{} to detect a variance ratio of "
                         r"\AssumedRatioLossMode$\times$, so it can neither confirm nor refute an effect of Steier's "
                         r"size (\SeedsForPowerLossMode{} seeds per cell would give 80\%).")
            else:
                text += (r"; its F-test has power \PowerAssumedLossMode{} (at least 80\%) to detect a ratio of "
                         r"\AssumedRatioLossMode$\times$.")
        else:
            text += "; no power calculation was recorded."
        if b.get("dataset") != "cifar10":
            text += " Steier's headline effect is on CIFAR-10; this build trained on other data."
        items.append(text)
    if "eigen_spread" in results or "eigen_settings" in results:
        items.append(r"The eigenmode toy is linear and uses the notebook's sizes \citep{halvagal2023}; the "
                     r"across-seed variance there is of the eigenvalues of a toy network, not of a test accuracy.")
    items.append(r"Source numbers come from the papers' abstracts or summaries where the full text was not available "
                 r"\citep{steier2026,meng2024}; only \citet{aghagolzadeh2025} was read in full.")
    if info["unavailable"]:
        items.append("Left out of this build: " + "; ".join(
            f"\\texttt{{{tex_escape(k)}}} ({tex_escape(v)})" for k, v in sorted(info["unavailable"].items())) + ".")
    return "% generated by paper/record.py:limitations_tex from build_info.json: do not edit\n" + "\n".join(
        [r"\begin{itemize}", *(f"\\item {t}" for t in items), r"\end{itemize}"]) + "\n"
