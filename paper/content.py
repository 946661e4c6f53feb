"""What the manuscript takes from each study: numbers (macros), tables and figures.

Everything here is a pure function of the loaded result JSONs (plus, for the ViT per-layer
figure, the per-run ``result.json`` files that ``study.json`` points to), so the test can
build the manuscript from small synthetic results.  Number specs are listed per study in
:data:`NUMBER_SPECS`; :func:`number_specs` adds the literature values of
``paper/source_numbers.json``.  Tables are LaTeX ``table`` environments whose cells are the
macros (so every table entry is in ``numbers.json`` too); figures are written as PNG + PDF.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from cffdyn.figures import TEXT_WIDTH_IN, figure, save_figure, styled
from cffdyn.io import atomic_write_text, read_json
from paper.numbers import NumberSpec, load_source_numbers, macro_name
from paper.verdicts import (Verdict, finite as _finite, verdict_direction, verdict_null, verdict_ordering,
                             verdict_value, VERDICT_RULE)

__all__ = ["study_timing_specs", "NUMBER_SPECS", "number_specs", "source_specs", "FIGURES", "TABLES", "REPLICATION_ROWS",
           "tex_escape", "vit_cells", "vit_run_results", "RepRow", "tab_replication", "vit_data_phrase", "loss_mode_comparison",
           "replication_rows", "epoch_time_ratios", "value_range", "derived"]


def tex_escape(s: str) -> str:
    """Plain text -> LaTeX text: specials escaped, and ``--`` kept as two hyphens (LaTeX and pandoc
    would print an en dash: ``(--only)`` must not read ``(–only)``)."""
    rep = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
           "{": r"\{", "}": r"\}", "~": r"\~{}", "^": r"\^{}", "<": r"\textless{}", ">": r"\textgreater{}"}
    text = str(s)
    return "".join("-{}" if c == "-" and text[k + 1:k + 2] == "-" else rep.get(c, c) for k, c in enumerate(text))


# --------------------------------------------------------------------------- ViT helpers
def vit_cells(data: dict) -> list[dict[str, Any]]:
    """The study's cells as ``{levels, tag}``; ``tag`` is a macro-safe name (``ClampCffTwo``)."""
    out = []
    for c in data["analysis"]["cells"]:
        lv = c["levels"]
        out.append({"levels": lv, "tag": macro_name(*lv.values()),
                    "sel": ",".join(f"levels.{k}={v}" for k, v in lv.items()),
                    "label": ", ".join(f"{v}" for v in lv.values())})
    return out


def _comparisons(data: dict) -> list[dict[str, Any]]:
    return [{"factor": c["factor"], "a": c["level_a"], "b": c["level_b"],
             "tag": macro_name(c["factor"]), "raw": c,
             "sel": f"factor={c['factor']},level_a={c['level_a']},level_b={c['level_b']}"}
            for c in data["analysis"]["comparisons"]]


def _cell(data: dict, levels: dict) -> dict[str, Any]:
    return next(c for c in data["analysis"]["cells"] if c["levels"] == levels)


def study_timing_specs(prefix: str, source: str, data: dict) -> list[NumberSpec]:
    """``<prefix>WallMin``, ``<prefix>LoadStart``, ``<prefix>LoadEnd`` from a study record's
    ``timing`` (the ViT study layout: wall, load at the first task's start, machine at the end),
    each only where recorded."""
    t = data.get("timing") or {}
    out = []
    if t.get("wall_s") is not None:
        out.append(NumberSpec(f"{prefix}WallMin", source, "timing.wall_s", ".1f", 1 / 60, None, "study wall time (min)"))
    if t.get("load_avg_start"):
        out.append(NumberSpec(f"{prefix}LoadStart", source, "timing.load_avg_start[0]", ".1f", 1.0, None,
                              "1-min load average at the start"))
    if (t.get("machine") or {}).get("load_avg"):
        out.append(NumberSpec(f"{prefix}LoadEnd", source, "timing.machine.load_avg[0]", ".1f", 1.0, None,
                              "1-min load average at the end"))
    return out


def _vit_specs(data: dict) -> list[NumberSpec]:
    s: list[NumberSpec] = []
    add = lambda m, p, fmt=".2f", scale=1.0, red=None, d="": s.append(NumberSpec(m, "vit_study", p, fmt, scale, red, d))
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
        if data.get("probe") and "minus_probe_mean" in _cell(data, c["levels"]):
            add(f"VitMinusProbe{c['tag']}", f"analysis.cells[{c['sel']}].minus_probe_mean", "+.2f", 100.0,
                d=f"CFF minus raw-pixel probe (points), {c['label']}")
    if data.get("probe"):
        add("VitProbeAcc", "probe.test_acc_mean", ".2f", 100.0, d="raw-pixel linear probe test accuracy (%)")
        add("VitProbeN", "probe.runs[*].seed", "d", red="count", d="probe seeds")
        if data["probe"].get("test_acc_sd") is not None:
            add("VitProbeSd", "probe.test_acc_sd", ".2f", 100.0, d="SD of the probe (points)")
    s += study_timing_specs("Vit", "vit_study", data)
    for c in _comparisons(data):
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
        add(f"MeanDiff{t}", p + ".mean_diff", "+.2f", 100.0, d="difference of means (points)")
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
            red="mean", d=f"mean stage-1 epoch time (s), {meth}")
    add("VitCarClamp", "runs[cell.loss_mode=clamp].car_layer0", ".1f", 100.0, red="mean",
        d="layer-0 CAR (%) averaged over all clamp runs")
    add("VitCarClampSd", "runs[cell.loss_mode=clamp].car_layer0", ".1f", 100.0, red="sd",
        d="SD over the clamp runs of the layer-0 CAR (points)")
    for meth in [lv for f, lvs in data["config"]["factors"] if f == "method" for lv in lvs]:
        add(macro_name("vit", "epoch", "time", "sd", meth), f"runs[cell.method={meth}].epoch_time_s", ".2f",
            red="sd", d=f"SD over runs of the stage-1 epoch time (s), {meth}")
    return s


def _derived_specs(der: dict) -> list[NumberSpec]:
    """Macros of :func:`derived` (source ``derived``: ``derived.json`` of the build)."""
    s: list[NumberSpec] = []
    v = der.get("vit_study") or {}
    for key, rec in v.items():
        if key.startswith("mean_diff_") and rec.get("ci95"):
            t = macro_name(key[len("mean_diff_"):])
            s += [NumberSpec(f"MeanDiffLo{t}", "derived", f"vit_study.{key}.ci95[0]", "+.2f",
                             desc="paired mean difference, 95% t interval, low (points)"),
                  NumberSpec(f"MeanDiffHi{t}", "derived", f"vit_study.{key}.ci95[1]", "+.2f",
                             desc="paired mean difference, 95% t interval, high (points)")]
    cb = der.get("clamp") or {}
    for tag in ("arms", "ratios"):
        if cb.get(f"{tag}_binom_p") is not None:
            s.append(NumberSpec(macro_name("clamp", tag, "binom", "p"), "derived", f"clamp.{tag}_binom_p", "p",
                                desc=f"one-sided binomial p of the {tag} outside their 95% intervals"))
    er = v.get("epoch_ratio") or {}
    if er.get("n"):
        s += [NumberSpec("VitEpochRatio", "derived", "vit_study.epoch_ratio.mean", ".2f",
                         desc="mean cff2/cff1 epoch-time ratio over seed pairs"),
              NumberSpec("VitEpochRatioSd", "derived", "vit_study.epoch_ratio.sd", ".2f"),
              NumberSpec("VitEpochRatioN", "derived", "vit_study.epoch_ratio.n", "d")]
    return s


def _verify_specs(data: dict) -> list[NumberSpec]:
    v = "verify"
    mp = "autograd.worst_unfloored_vs_mpmath."
    return [NumberSpec("NIdentities", v, "identities[*].name", "d", reduce="count"),
            NumberSpec("NIdentitiesPassed", v, "identities[passed=True].name", "d", reduce="count"),
            NumberSpec("NMutations", v, "mutations[*].name", "d", reduce="count",
                       desc="mutation controls (deliberately wrong references)"),
            NumberSpec("NMutationsFlagged", v, "mutations[flagged=True].name", "d", reduce="count",
                       desc="mutation controls with a non-zero residual"),
            NumberSpec("AutogradCases", v, "autograd.cases", "d"),
            NumberSpec("AutogradMaxErr", v, "autograd.max_rel_err", "sci",
                       desc="max relative gradient error, denominator floored at FLOOR of one gradient term"),
            NumberSpec("AutogradFloor", v, "autograd.floor", "sci", desc="the floor, in gradient terms"),
            NumberSpec("AutogradBelowFloor", v, "autograd.cases_below_floor", "d",
                       desc="cases whose largest gradient entry is below the floor"),
            NumberSpec("AutogradMaxErrUnfloored", v, "autograd.max_rel_err_unfloored", "sci",
                       desc="max relative gradient error without the floor"),
            NumberSpec("AutogradAbsErrTerm", v, "autograd.max_abs_err_over_term", "sci",
                       desc="max absolute gradient error in units of one gradient term"),
            NumberSpec("AutogradTol", v, "autograd.tol_rel", "sci"),
            NumberSpec("MpCases", v, mp + "cases", "d", desc="worst un-floored cases re-computed with mpmath"),
            NumberSpec("MpDigits", v, mp + "dps", "d", desc="significant digits of the mpmath reference"),
            NumberSpec("MpErrDerived", v, mp + "symbolic_float64_max_abs_err_over_term", "sci",
                       desc="|derived float64 - mpmath| in gradient terms, worst cases"),
            NumberSpec("MpErrAutograd", v, mp + "autograd_float64_max_abs_err_over_term", "sci",
                       desc="|autograd float64 - mpmath| in gradient terms, worst cases"),
            NumberSpec("MpGradOverTerm", v, mp + "max_grad_over_term", "sci",
                       desc="largest max|gradient| of the worst cases, in gradient terms (their cancellation)"),
            NumberSpec("MpNearBoundary", v, mp + "cases_with_a_positive_pair_within_1e-7_of_boundary", "d",
                       desc="worst cases with a positive pair within 1e-7 of the clamp boundary"),
            NumberSpec("MpWorstGap", v, mp + "worst_case.closest_positive_pair_to_boundary", "sci",
                       desc="distance |s + m - 1| of the closest positive pair in the single worst case"),
            NumberSpec("VerifySeconds", v, "seconds", ".1f"),
            NumberSpec("VerifyLoad", v, "machine.load_avg[0]", ".1f", desc="1-minute load average at the start"),
            NumberSpec("VerifyCpus", v, "machine.cpus", "d", desc="CPUs of the machine that ran verify")]


SPREAD_ORDER = ("euc_simsiam", "euc_isoloss", "cos_simsiam", "cos_isoloss")


def setting_label(name: str) -> str:
    """Readable name of an eigenmode setting code (``euc_simsiam_nopred`` -> "Euclidean
    SimSiam, no predictor")."""
    parts = name.split("_")
    loss = {"euc": "Euclidean", "cos": "cosine"}.get(parts[0], parts[0])
    if len(parts) > 1 and parts[1] == "isoloss":
        return f"{loss} IsoLoss"
    extra = {"nopred": "no predictor", "nosg": "no stop-gradient"}
    tail = [extra.get(p, p) for p in parts[2:]]
    return f"{loss} SimSiam" + (", " + ", ".join(tail) if tail else "")


def _spread_specs(data: dict) -> list[NumberSpec]:
    out = [NumberSpec("EigSeeds", "eigen_spread", "n_seeds", "d"),
           NumberSpec("EigHorizon", "eigen_spread", "config.horizon", "d"),
           NumberSpec("EigFrac", "eigen_spread", "config.frac", ".0f", 100.0),
           NumberSpec("EigModes", "eigen_spread", "config.out_dim", "d"),
           NumberSpec("EigInDim", "eigen_spread", "config.in_dim", "d"),
           NumberSpec("EigSigma", "eigen_spread", "config.sigma", "g"),
           NumberSpec("EigMapErr", "eigen_spread", "ode_check.euc_isoloss.rows[*].max_abs_iteration_minus_map",
                      "sci", reduce="max", desc="max |matrix iteration - per-mode map| (IsoLoss)"),
           NumberSpec("EigMapErrEuc", "eigen_spread", "ode_check.euc_simsiam.rows[*].max_abs_iteration_minus_map",
                      "sci", reduce="max")]
    for name in SPREAD_ORDER:
        if name not in data.get("losses", {}):
            continue
        t = macro_name(name)
        p = f"losses.{name}"
        out += [NumberSpec(f"EigSpread{t}", "eigen_spread", p + ".ratio_slowest_fastest_median", ".1f",
                           desc=f"median over seeds of slowest/fastest time-to-90%, {name}"),
                NumberSpec(f"EigVarNorm{t}", "eigen_spread", p + ".mean_var_normalized_across_seeds_at_horizon",
                           "sci", desc=f"mean across-seed variance of normalised eigenvalues at the horizon, {name}"),
                NumberSpec(f"EigEta{t}", "eigen_spread", p + ".eta", "g")]
    return out


def _settings_specs(data: dict) -> list[NumberSpec]:
    out = [NumberSpec("SetSteps", "eigen_settings", "config.n_steps", "d"),
           NumberSpec("SetStepsNopred", "eigen_settings", "config.n_steps_nopred", "d")]
    for name in data.get("settings", {}):
        t = macro_name(name)
        out.append(NumberSpec(f"SetMinMax{t}", "eigen_settings", f"settings.{name}.min_over_max_end", ".2f",
                              desc=f"min/max eigenvalue at the end, {name}"))
    return out


NUMBER_SPECS: dict[str, Callable[[dict], list[NumberSpec]]] = {
    "verify": _verify_specs, "vit_study": _vit_specs, "eigen_spread": _spread_specs,
    "eigen_settings": _settings_specs,
}


def source_specs(src: dict) -> list[NumberSpec]:
    """Macros ``\\Src...`` for the literature values (formatted with the decimals they were reported with)."""
    out = []
    for key, entry in src.items():
        if key.startswith("_"):
            continue
        v = entry["value"]
        fmt = entry.get("fmt") or ("d" if isinstance(v, int) else
                                   f".{max(len(repr(float(v)).split('.')[1].rstrip('0')), 1)}f")
        out.append(NumberSpec(macro_name("src", key), "source", f"{key}.value", fmt, desc=entry["where"]))
    return out


def number_specs(results: dict[str, dict], src: dict, der: dict | None = None) -> list[NumberSpec]:
    specs = source_specs(src) + _derived_specs(der or {})
    for name, fn in NUMBER_SPECS.items():
        if name in results:
            specs += fn(results[name])
    return specs


# --------------------------------------------------------------------------- figures
# Figures are drawn at their printed size (cffdyn.figures); a study's own figures are drawn by the
# study's function (the same one the study's CLI saves as its PNG), and only saved here.
def _figure(width_frac: float, height_in: float, **kw):
    """A figure drawn at its printed size: ``width_frac`` of the text width."""
    return figure(TEXT_WIDTH_IN * width_frac, height_in, **kw)


def _save(fig, out: Path, name: str, width_frac: float = 1.0) -> Path:
    """PNG (for the HTML) and PDF (vector, for the PDF) at the figure's own size, which is its printed
    size ``width_frac`` of the text width (no tight crop: a crop would rescale the fonts)."""
    return save_figure(fig, out, name, printed_width_in=TEXT_WIDTH_IN * width_frac)


def vit_run_results(data: dict, study_json: Path) -> list[tuple[dict, dict]]:
    """``(run record, run result.json)`` for every run whose result file can be found."""
    out = []
    for r in data["runs"]:
        # the study's own runs/ (under --results) first; a recorded relative run_dir is relative to
        # the study's working directory, so it is never looked up in the current one
        rd = Path(r["run_dir"])
        cands = [study_json.parent / "runs" / rd.name] + ([rd] if rd.is_absolute() else [])
        for c in cands:
            if (c / "result.json").is_file():
                out.append((r, read_json(c / "result.json")))
                break
    return out


def fig_vit_cells(results: dict, paths: dict, out: Path) -> Path:
    from vit.study import fig_study
    return _save(fig_study(results["vit_study"]), out, "vit_cells")


@styled
def fig_vit_layers(results: dict, paths: dict, out: Path) -> Path | None:
    d = results["vit_study"]
    runs = vit_run_results(d, paths["vit_study"])
    if not runs:
        return None
    fig, axes = _figure(1.0, 2.7, ncols=2)
    for i, c in enumerate(vit_cells(d)):
        per = [res["per_layer"] for r, res in runs if r["cell"] == c["levels"] and res.get("per_layer")]
        if not per:
            continue
        L = min(len(p) for p in per)
        for ax, key, sc in ((axes[0], "car", 100.0), (axes[1], "grad_norm", 1.0)):
            v = np.array([[sc * (p[l].get(key) if p[l].get(key) is not None else np.nan) for l in range(L)] for p in per])
            m = np.nanmean(v, axis=0)
            sd = np.nanstd(v, axis=0, ddof=1) if len(per) > 1 else np.zeros(L)
            ax.errorbar(np.arange(L) + 0.05 * i, m, yerr=sd, marker="o", capsize=3, color=f"C{i}",
                        label=f"{c['label']} (n = {len(per)})")
    axes[0].set_ylabel("clamp activation rate (%)")
    axes[1].set_ylabel("gradient norm of the layer (a.u.)")
    from matplotlib.ticker import MaxNLocator
    for ax in axes:
        ax.set_xlabel("layer (0 = patch embedding + first block)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # layers are integers: no 0.5 ticks
        ax.legend(loc="best")
    fig.suptitle("per layer at the selected epoch (training batches), mean ± SD over seeds")
    return _save(fig, out, "vit_layers")


@styled
def fig_eigen_spread(results: dict, paths: dict, out: Path) -> Path:
    d = results["eigen_spread"]
    fig, axes = _figure(1.0, 3.0, ncols=2)
    handles = []
    for i, name in enumerate(n for n in SPREAD_ORDER if n in d["losses"]):
        r = d["losses"][name]
        mu0 = np.asarray(r["mu0"], float).ravel()
        ttf = np.asarray([np.nan if x is None else x for x in np.asarray(r["time_to_frac"], dtype=object).ravel()],
                         float)
        h = axes[0].scatter(mu0, ttf, s=8, color=f"C{i}", label=f"{setting_label(name)} ($\\eta$ = {r['eta']:g})")
        handles.append(h)
        tr = r["mean_trajectory_seed0"]
        mu = np.asarray(tr["eigenvalues"], float)
        for m in range(mu.shape[1]):
            axes[1].plot(tr["steps"], mu[:, m], color=f"C{i}", lw=0.8)
    cfg = d["config"]
    axes[0].set(xscale="log", yscale="log", xlabel=r"initial eigenvalue $\mu_0$ of $WW^\top$",
                ylabel=f"time to {100 * cfg['frac']:.0f}% of the way (steps)",
                title=f"{d['n_seeds']} seeds of $W_0$ (one point per mode)")
    axes[1].set(yscale="log", xlabel="training step", ylabel=r"eigenvalue of $WW^\top$",
                title="eigenvalue trajectories, seed 0")
    fig.legend(handles=handles, loc="outside lower center", ncols=2)
    fig.suptitle(f"linear toy, $M$ = {cfg['out_dim']}, $N$ = {cfg['in_dim']}, $\\sigma$ = {cfg['sigma']}, "
                 f"$\\alpha$ = {cfg['alpha']}")
    return _save(fig, out, "eigen_spread")


@styled
def fig_eigen_settings(results: dict, paths: dict, out: Path) -> Path:
    """Eigenvalue trajectories; values below FLOOR (collapsed modes, exact zeros) are drawn at
    FLOOR (dotted line) so the log axis can show them; the caption says so."""
    from matplotlib.ticker import MaxNLocator
    FLOOR = 1e-6
    d = results["eigen_settings"]
    names = list(d["settings"])
    ncol = 4
    nrow = math.ceil(len(names) / ncol)
    fig, axes = _figure(1.0, 1.9 * nrow + 0.4, nrows=nrow, ncols=ncol, squeeze=False, sharey=True)
    for ax, name in zip(axes.ravel(), names):
        s = d["settings"][name]
        mu = np.asarray(s["eigenvalues"], float)
        ax.plot(s["steps"], np.clip(mu, FLOOR, None), lw=0.8)
        ax.axhline(FLOOR, color="0.5", lw=0.6, ls=":")
        ax.set_yscale("log")
        ax.set_title(f"{setting_label(name)}:\n{s['outcome']}", fontsize=7)
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
    for ax in axes[:, 0]:
        ax.set_ylabel(r"eigenvalues of $WW^\top$")
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    cfg = d["config"]
    fig.suptitle(f"{cfg['activation']} toy, $M$ = {cfg['out_dim']} modes (one line each), $N$ = {cfg['in_dim']}, "
                 f"1 seed ($W_0$ seed {cfg['seed']}); values below {FLOOR:g} drawn at {FLOOR:g} (dotted)")
    return _save(fig, out, "eigen_settings")


#: figure name -> (studies needed, maker)
FIGURES: dict[str, tuple[tuple[str, ...], Callable]] = {
    "vit_cells": (("vit_study",), fig_vit_cells),
    "vit_layers": (("vit_study",), fig_vit_layers),
    "eigen_spread": (("eigen_spread",), fig_eigen_spread),
    "eigen_settings": (("eigen_settings",), fig_eigen_settings),
}


# --------------------------------------------------------------------------- tables
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
        raw = _cell(d, c["levels"])
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
    for c in _comparisons(d):
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
    for name in SPREAD_ORDER:
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


#: table name -> (studies needed, maker)
TABLES: dict[str, tuple[tuple[str, ...], Callable[[dict], str]]] = {
    "identities": (("verify",), tab_identities),
    "vit": (("vit_study",), tab_vit),
    "vit_tests": (("vit_study",), tab_vit_tests),
    "eigen": (("eigen_spread",), tab_eigen),
}


# --------------------------------------------------------------------------- replication
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
        if "method" in cell and _finite(r.get("epoch_time_s")):
            key = (r["seed"],) + tuple(sorted((k, str(v)) for k, v in cell.items() if k != "method"))
            by.setdefault(key, {})[cell["method"]] = r["epoch_time_s"]
    return [v["cff2"] / v["cff1"] for v in by.values() if "cff1" in v and "cff2" in v and v["cff1"] > 0]


def _vit_loads(d: dict) -> list[float]:
    loads = [r["machine"]["load_avg"][0] for r in d["runs"]
             if isinstance(r.get("machine"), dict) and r["machine"].get("load_avg")]
    t = d.get("timing") or {}
    for la in (t.get("load_avg_start"), (t.get("machine") or {}).get("load_avg")):
        if isinstance(la, list) and la and _finite(la[0]):
            loads.append(la[0])
    return loads


def value_range(lo: float, hi: float, fmt: str = ".1f") -> str:
    """``between a and b``, or ``a`` when both print the same (never "between 8.77 and 8.77")."""
    a, b = format(lo, fmt), format(hi, fmt)
    return a if a == b else f"{a}--{b}"


def _vit_timing_context(d: dict) -> str:
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


def _paired_by_seed(d: dict, factor: str, a: str, b: str, key: str) -> list[tuple[float, float]]:
    """(value at level a, value at level b) of runs matched by seed and the other factors' levels."""
    by: dict[tuple, dict[str, float]] = {}
    for r in d["runs"]:
        cell = r["cell"]
        if cell.get(factor) in (a, b) and _finite(r.get(key)):
            k = (r["seed"],) + tuple(sorted((f, str(v)) for f, v in cell.items() if f != factor))
            by.setdefault(k, {})[cell[factor]] = float(r[key])
    return [(v[a], v[b]) for v in by.values() if a in v and b in v]


def _mean_sd(xs: list[float]) -> dict[str, Any]:
    n = len(xs)
    return {"mean": float(np.mean(xs)) if n else None, "sd": float(np.std(xs, ddof=1)) if n > 1 else None, "n": n,
            "values": [float(x) for x in xs]}


def derived(results: dict) -> dict[str, Any]:
    """Numbers the text needs that no study records, computed here from the recorded runs
    (``derived.json``; each entry names its inputs): the 95% interval of the paired mean difference
    (t distribution over the matched seed pairs), the cff2/cff1 epoch-time ratio over seed pairs."""
    from scipy import stats
    out: dict[str, Any] = {}
    d = results.get("vit_study")
    if d:
        v: dict[str, Any] = {"source": "vit_study runs[*] (test_acc, epoch_time_s), paired by seed"}
        for c in _comparisons(d):
            pairs = _paired_by_seed(d, c["factor"], c["a"], c["b"], "test_acc")
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
        out["vit_study"] = v
    c = results.get("clamp")
    if c and (c.get("summary") or {}).get("arms_checked"):
        sm = c["summary"]
        # a 95% interval misses the truth 5% of the time: more misses than that is evidence against the theory
        rec: dict[str, Any] = {"source": "clamp summary (arms_in_ci, arms_checked, ratios_in_ci, ratios_checked)",
                               "test": "one-sided binomial test of the misses, expected rate 0.05"}
        for tag in ("arms", "ratios"):
            n, k = sm.get(f"{tag}_checked"), sm.get(f"{tag}_in_ci")
            rec[f"{tag}_binom_p"] = (float(stats.binomtest(n - k, n, 0.05, alternative="greater").pvalue)
                                     if n else None)
        out["clamp"] = rec
    return out


def _rep_vit(results: dict) -> list[RepRow]:
    d = results["vit_study"]
    b = d["config"]["base"]
    src = load_source_numbers()
    ds = b["dataset"]
    lmc = loss_mode_comparison(d)
    pool = r" (\VitSubset-image pool)" if b.get("subset") else ""
    proto = (f"{tex_escape(_DATASET_NAMES.get(ds, ds))}{pool}, ViT[\\VitEmbedDim{{}} \\VitHeads{{}} "
             f"\\VitLayers{{}}], patch \\VitPatch, \\VitEpochs{{}}+\\VitHeadEpochs{{}} epochs, \\VitSeeds{{}} seeds/cell")
    cff_model = (b.get("embed_dim"), b.get("heads"), b.get("layers")) == (128, 4, 5)
    cff_schedule = b.get("epochs") == src["cff_epochs"]["value"] and not b.get("subset")
    rows: list[RepRow] = []
    if lmc is not None:
        # with matched seeds the paired tests fit the design (Section 5): the variance verdict rests
        # on the Pitman-Morgan test of the within-cell ratio, the mean verdict on the paired t-test;
        # without pairing, on Steier's pooled F and on Welch's t
        pr = lmc.get("paired")
        st = lmc.get("steier") or {}
        if pr is not None and _finite(pr.get("pm_p")) and _finite(lmc.get("ratio")):
            vr, vr_p = lmc["ratio"], pr["pm_p"]
            vr_test = r"Pitman--Morgan test on the matched seed pairs, p = \PPMLossMode"
            vr_key = r"\VRLossMode$\times$, paired Pitman--Morgan p~=~\PPMLossMode"   # ~: no break in the abstract
            ours_vr = (r"\VRLossMode$\times$ (within-cell; Pitman--Morgan p = \PPMLossMode; Steier's pooled "
                       r"\VRSteierLossMode$\times$, F p = \PSteierLossMode)")
        else:
            vr, vr_p = st.get("ratio"), st.get("p")
            vr_test = r"Steier's pooled F-test, p = \PSteierLossMode"
            vr_key = r"\VRSteierLossMode$\times$, F p~=~\PSteierLossMode"
            ours_vr = r"\VRSteierLossMode$\times$ (Steier's pooled F p = \PSteierLossMode)"
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
        not_cifar = f"our data are {_DATASET_NAMES.get(ds, ds)}, not CIFAR-10"
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
                                     why_not=f"our data are {_DATASET_NAMES.get(ds, ds)}, not Fashion-MNIST",
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
            r"over \VitEpochRatioN{} seed pairs; " + _vit_timing_context(d) + ")",
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


REPLICATION_ROWS: dict[str, Callable[[dict], list[RepRow]]] = {
    "vit_study": _rep_vit, "eigen_spread": _rep_eigen,
}


def replication_rows(results: dict) -> list[RepRow]:
    """Every replication row of this build, in table order."""
    rows: list[RepRow] = []
    for name, fn in REPLICATION_ROWS.items():
        if name in results or (fn is _rep_mf and "noise" in results):
            rows += fn(results)
    for r in rows:
        if not isinstance(r, RepRow) or not isinstance(r.verdict, Verdict):
            raise ValueError(f"replication row {r[0]!r} is not a content.RepRow with a Verdict")
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


_DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "mnist": "MNIST",
                  "digits": "sklearn digits", "svhn": "SVHN"}


def vit_data_phrase(results: dict) -> str:
    """The ViT study's data, as text (numbers through macros)."""
    b = results["vit_study"]["config"]["base"]
    name = tex_escape(_DATASET_NAMES.get(b["dataset"], b["dataset"]))
    return f"a \\VitSubset-image {name} pool" if b.get("subset") else f"the full {name} training set"


_SEED_SOURCES = (("seed_init", "the initialisation"), ("seed_split", "the train/validation split"),
                 ("seed_order", "the data order"), ("seed_aug", "the augmentation"))


def vit_seed_phrase(results: dict) -> str:
    """What a seed of the ViT study varies and what the config holds fixed, as text (from the
    recorded base config: the ``seed_*`` fields that are set are fixed for every seed)."""
    b = results["vit_study"]["config"]["base"]
    varied = [what for f, what in _SEED_SOURCES if b.get(f) is None]
    fixed = [what for f, what in _SEED_SOURCES if b.get(f) is not None]
    if b.get("subset"):
        subset_fixed = b.get("seed_subset") is not None or b.get("seed_split") is not None
        (fixed if subset_fixed else varied).insert(0, "the image subset")
    join = lambda xs: xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]  # noqa: E731
    out = f"A seed fixes {join(varied)} of a run" if varied else "No part of a run varies with its seed"
    if fixed:
        out += f"; {join(fixed)} {'is' if len(fixed) == 1 else 'are'} the same for every seed"
        if "the image subset" in fixed:
            out += ", so the seed-to-seed variance contains no data-subset variance"
    return out + "."


def vit_augment_phrase(results: dict) -> str:
    """The ViT study's augmentation (kind and crop padding, from the recorded base config)."""
    from vit.augment import REFERENCE_PADDING, crop_padding
    from vit.data import image_side

    b = results["vit_study"]["config"]["base"]
    kind, ds = b.get("augment", "crop_flip"), b.get("dataset", "")
    if kind == "none":
        return "The two views are the clean image (no augmentation)."
    pad = b.get("crop_pad")
    pad = crop_padding(ds, image_side(ds, b.get("image_size"))) if pad is None else int(pad)
    ref = REFERENCE_PADDING.get(ds)
    whose = (f"the ContrastiveFF code pads {ref}" if ref is not None and ref != pad
             else "as in the ContrastiveFF code" if ref is not None
             else f"our choice: the ContrastiveFF code defines no padding for {tex_escape(_DATASET_NAMES.get(ds, ds))}")
    ra = "RandAugment(3, 14), then " if kind == "randaug" else ""
    return f"Each view is {ra}a random crop with zero padding {pad} ({whose}) and a horizontal flip with probability 1/2."


def vit_departures_phrase(results: dict) -> str:
    """The protocol of the ViT study's runs and every departure from the ContrastiveFF code that
    their ``result.json`` names (:func:`vit.train.departures`), as text."""
    runs = results["vit_study"].get("runs") or []
    protos = sorted({r["protocol"] for r in runs if r.get("protocol")})
    if not protos:
        return "The runs' protocol was not recorded (a study written before protocols were recorded)."
    deps = sorted({d for r in runs for d in (r.get("departures") or [])})
    name = " and ".join(r"\texttt{" + tex_escape(p) + "}" for p in protos)
    if not deps:
        return f"The runs use protocol {name}, with no departure from the ContrastiveFF code."
    listed = ", ".join(r"\texttt{" + tex_escape(d).replace(r"\_", r"\_\allowbreak{}").replace(":", r":\allowbreak{}") + "}"
                       for d in deps)
    return (f"The runs use protocol {name}; their departures from the ContrastiveFF code, as each run's "
            f"\\texttt{{result.json}} names them, are {listed}.")


def vit_probe_spread_phrase(results: dict) -> str:
    """The probe's spread over its seeds, beside its mean."""
    pr = results["vit_study"].get("probe") or {}
    if pr.get("test_acc_sd") is not None:
        return r"(SD \VitProbeSd{} points over \VitProbeN{} seeds)"
    return r"(\VitProbeN{} seed, so no spread)"


def vit_mean_diff_phrase(results: dict, der: dict) -> str:
    """The difference of the loss modes' mean accuracies with its interval and the test that fits
    the design: the paired t-test when the seeds are matched, else Welch's."""
    lmc = loss_mode_comparison(results["vit_study"])
    if lmc is None:
        return "The study has no loss-mode comparison."
    rec = (der.get("vit_study") or {}).get("mean_diff_loss_mode") or {}
    ci = r" (95\% CI [\MeanDiffLoLossMode, \MeanDiffHiLossMode] over the matched seed pairs)" if rec.get("ci95") else ""
    if (lmc.get("paired") or {}).get("paired_t_p") is not None:
        return (r"The mean accuracies of the two loss modes differ by \MeanDiffLossMode\,points" + ci
                + r"; the paired t-test, the test that fits the matched design, gives p = \PPairedTLossMode{} "
                  r"(Welch's test, which ignores the pairing, gives p = \PWelchLossMode).")
    return r"The mean accuracies of the two loss modes differ by \MeanDiffLossMode\,points (Welch p = \PWelchLossMode)."


def phase_eig_phrase(results: dict) -> str:
    """The leading eigenvalue at Q = 0 across the kurtosis sweep: one value when both print alike."""
    from paper.numbers import format_value
    sw = results["phase"].get("m4_sweep") or []
    lo, hi = (format_value(sw[i]["eigs_at_0"][-1], ".5f") for i in (0, -1))
    if lo == hi:
        return (r"the leading eigenvalue of the linearisation at $Q = 0$ is \PhaseEigKurtLo{} at both ends of the "
                r"sweep (the same to five decimals)")
    return (r"the leading eigenvalue of the linearisation at $Q = 0$ moves only from \PhaseEigKurtLo{} to "
            r"\PhaseEigKurtHi")


def write_tables(results: dict, gen_dir: Path, der: dict | None = None) -> list[Path]:
    out = []
    der = derived(results) if der is None else der
    if "phase" in results:
        out.append(atomic_write_text(gen_dir / "phase_eig.tex", phase_eig_phrase(results) + "%\n"))
    if "vit_study" in results:
        out.append(atomic_write_text(gen_dir / "vit_probe_spread.tex", vit_probe_spread_phrase(results) + "%\n"))
        out.append(atomic_write_text(gen_dir / "vit_mean_diff.tex", vit_mean_diff_phrase(results, der) + "%\n"))
        out.append(atomic_write_text(gen_dir / "vit_data.tex", vit_data_phrase(results) + "%\n"))
        out.append(atomic_write_text(gen_dir / "vit_seeds.tex", vit_seed_phrase(results) + "%\n"))
        out.append(atomic_write_text(gen_dir / "vit_departures.tex", vit_departures_phrase(results) + "%\n"))
        out.append(atomic_write_text(gen_dir / "vit_augment.tex", vit_augment_phrase(results) + "%\n"))
    for name, (needs, fn) in TABLES.items():
        if all(n in results for n in needs):
            out.append(atomic_write_text(gen_dir / f"tab_{name}.tex", fn(results) + "\n"))
    out.append(atomic_write_text(gen_dir / "tab_replication.tex", tab_replication(results) + "\n"))
    out.append(atomic_write_text(gen_dir / "verdict_rule.tex", VERDICT_RULE + "%\n"))
    return out


# --------------------------------------------------------------------------- mean-field (sim.studies)
def _mf_specs_convergence(data: dict) -> list[NumberSpec]:
    c = "convergence"
    out = [NumberSpec("ConvExponent", c, "exponent", ".3f", desc="fitted exponent of the fluctuation (RMS_t SD_t) vs N"),
           NumberSpec("ConvExponentLo", c, "exponent_ci95[0]", ".3f", desc="bootstrap 95% CI, lower"),
           NumberSpec("ConvExponentHi", c, "exponent_ci95[1]", ".3f", desc="bootstrap 95% CI, upper"),
           NumberSpec("ConvBoot", c, "config.n_boot", "d"),
           NumberSpec("ConvTrials", c, "config.trials", "d"),
           NumberSpec("ConvTau", c, "config.tau", "g"),
           NumberSpec("ConvMTwo", c, "config.m2", "g"),
           NumberSpec("ConvQZero", c, "config.q0", "g"),
           NumberSpec("ConvTEnd", c, "config.t_end", "g"),
           NumberSpec("ConvTEscape", c, "t_escape", ".1f"),
           NumberSpec("ConvNcount", c, "rows[*].N", "d", reduce="count"),
           NumberSpec("ConvNmin", c, "rows[*].N", "d", reduce="min"),
           NumberSpec("ConvNmax", c, "rows[*].N", "d", reduce="max"),
           NumberSpec("ConvFlucNmin", c, "rows[0].fluct", ".4f"),
           NumberSpec("ConvFlucNmax", c, "rows[-1].fluct", ".4f"),
           NumberSpec("ConvMaxZ", c, "rows[*].max_abs_z", ".1f", reduce="max",
                      desc="largest |mean - ODE| / SE over record times and N"),
           NumberSpec("ConvRkErr", c, "rk4_vs_solve_ivp_max", "sci"),
           NumberSpec("ConvFullZ", c, "full_vs_reduced.max_z", ".2f"),
           NumberSpec("ConvFullTrials", c, "full_vs_reduced.full_trials", "d")]
    for tag, i in (("Nmin", 0), ("Nmax", -1)):
        for when, w in (("end", "End"), ("escape", "Esc")):
            out += [NumberSpec(f"ConvNBias{w}{tag}", c, f"rows[{i}].bias.{when}.N_bias", ".2f",
                               desc=f"N x (mean - ODE) at the {when} time"),
                    NumberSpec(f"ConvNBiasSe{w}{tag}", c, f"rows[{i}].bias.{when}.N_se", ".2f")]
    return out


def _mf_specs_hfunc(data: dict) -> list[NumberSpec]:
    h = "hfunc"
    out = [NumberSpec("HKappaTanh", h, "learnability.tanh.kappa", ".4f"),
           NumberSpec("HVTanh", h, "learnability.tanh.v", ".5f")]
    tau0 = data["config"]["taus"][0]
    out += [NumberSpec("HSlopeTanh", h, f"curves[activation=tanh,tau={tau0}].slope_at_0", ".5f"),
            NumberSpec("HSlopeLinTanh", h, f"curves[activation=tanh,tau={tau0}].slope_at_0_linearised", ".5f"),
            NumberSpec("HTauZero", h, "config.taus[0]", "g")]
    return out


def _mf_specs_phase(data: dict) -> list[NumberSpec]:
    p = "phase"
    return [NumberSpec("PhaseShareOne", p, "share_feature1", ".1f", 100.0),
            NumberSpec("PhaseShareTwo", p, "share_feature2", ".1f", 100.0),
            NumberSpec("PhaseNics", p, "n_ics", "d"),
            NumberSpec("PhaseNicsMFour", p, "n_ics_m4", "d", desc="initial conditions of the m4 sweep"),
            NumberSpec("PhaseGridMFour", p, "config.n_grid_m4", "d"),
            NumberSpec("PhaseTau", p, "config.tau", "g"),
            NumberSpec("PhaseMTwoA", p, "config.m2[0]", "g"),
            NumberSpec("PhaseMTwoB", p, "config.m2[1]", "g"),
            NumberSpec("PhaseKurtLo", p, "m4_sweep[0].kurtosis", "g"),
            NumberSpec("PhaseKurtHi", p, "m4_sweep[-1].kurtosis", "g"),
            NumberSpec("PhaseShareKurtLo", p, "m4_sweep[0].share_feature1", ".1f", 100.0),
            NumberSpec("PhaseShareKurtHi", p, "m4_sweep[-1].share_feature1", ".1f", 100.0),
            NumberSpec("PhaseEigKurtLo", p, "m4_sweep[0].eigs_at_0[-1]", ".5f"),
            NumberSpec("PhaseEigKurtHi", p, "m4_sweep[-1].eigs_at_0[-1]", ".5f"),
            NumberSpec("PhaseSgdN", p, "config.sgd_N", "d")]


def _mf_specs_noise(data: dict) -> list[NumberSpec]:
    n = "noise"
    out = [NumberSpec("NoiseMaxDiffNotes", n, "curves[*].max_abs_diff_notes", "sci", reduce="max"),
           NumberSpec("NoiseSgdTrials", n, "config.sgd_trials", "d"),
           NumberSpec("NoiseSgdN", n, "config.sgd_N", "d")]
    for rho, tag in ((0.0, "Indep"), (-1.0, "Anti")):
        out.append(NumberSpec(f"NoiseQ{tag}", n, f"curves[tau=1.0,rho={rho}].vs_notes[sn2=1.0].ode", ".4f",
                              desc=f"stationary Q*, tau=1, sigma_n^2=1, rho={rho}"))
        out.append(NumberSpec(f"NoiseSgd{tag}", n, f"sgd[rho={rho},sn2=1.0].mean", ".4f"))
        out.append(NumberSpec(f"NoiseSgdSd{tag}", n, f"sgd[rho={rho},sn2=1.0].sd", ".4f"))
    out.append(NumberSpec("NoiseQZero", n, "curves[tau=1.0,rho=0.0].vs_notes[sn2=0.0].ode", ".4f"))
    return out


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


def _mf_specs_clamp(data: dict) -> list[NumberSpec]:
    c = "clamp"
    out = [NumberSpec("ClampTrials", c, "config.trials", "d"),
           NumberSpec("ClampN", c, "config.N", "d"),
           NumberSpec("ClampTau", c, "config.tau", "g"),
           NumberSpec("ClampMTwo", c, "config.m2", "g"),
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


TABLES.update({"clamp": (("clamp",), tab_clamp), "clamp_scaling": (("clamp",), tab_clamp_scaling)})


NUMBER_SPECS.update({"convergence": _mf_specs_convergence, "hfunc": _mf_specs_hfunc, "phase": _mf_specs_phase,
                     "noise": _mf_specs_noise, "clamp": _mf_specs_clamp})


def fig_mf_convergence(results: dict, paths: dict, out: Path) -> Path:
    from sim.studies import fig_convergence
    return _save(fig_convergence(results["convergence"]), out, "mf_convergence")


def fig_mf_noise(results: dict, paths: dict, out: Path) -> Path:
    from sim.studies import fig_noise
    return _save(fig_noise(results["noise"]), out, "mf_noise", width_frac=0.75)


def fig_mf_clamp(results: dict, paths: dict, out: Path) -> Path:
    """The clamp study's figure, with the ViT study's pooled ratio vs layer-0 CAR in panel (c)
    when that study is in the build."""
    from sim.clamp_study import fig_clamp, vit_points
    vit_pts = vit_points([paths["vit_study"]], warn=lambda m: None) if results.get("vit_study") else []
    return _save(fig_clamp(results["clamp"], vit_pts), out, "mf_clamp")


def fig_mf_hfunc(results: dict, paths: dict, out: Path) -> Path:
    from sim.studies import fig_hfunc
    return _save(fig_hfunc(results["hfunc"]), out, "mf_hfunc")


def fig_mf_phase(results: dict, paths: dict, out: Path) -> Path:
    from sim.studies import fig_phase
    try:
        fig = fig_phase(results["phase"])
    except ValueError as exc:      # a phase.json recorded before the grid of winners was stored
        raise ValueError(f"figure mf_phase: {exc}") from None
    return _save(fig, out, "mf_phase")


FIGURES.update({"mf_convergence": (("convergence",), fig_mf_convergence), "mf_hfunc": (("hfunc",), fig_mf_hfunc),
                "mf_phase": (("phase",), fig_mf_phase), "mf_noise": (("noise",), fig_mf_noise),
                "mf_clamp": (("clamp",), fig_mf_clamp)})


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
    from paper.jsonpath import resolve_one
    try:
        anti = resolve_one(d, "curves[tau=1.0,rho=-1.0].vs_notes[sn2=1.0].ode")
        ind = resolve_one(d, "curves[tau=1.0,rho=0.0].vs_notes[sn2=1.0].ode")
    except ValueError:
        return verdict_ordering(None)
    return verdict_ordering(anti > ind if _finite(anti) and _finite(ind) else None,
                            test="stationary $Q^*$ of the deterministic ODE")


REPLICATION_ROWS.update({"phase": _rep_mf})
