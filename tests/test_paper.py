"""Tests of the paper build (fast): synthetic, schema-correct result JSONs written here -> manuscript.

The heavy studies are NOT run: the test writes small results in the studies' schemas into a
temporary results directory and builds with ``reuse_only``.  It then checks that every number
in the rendered HTML/TeX is the value of the JSON field it claims to come from, that the HTML
is one self-contained file, and that missing results fail with a clear message.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from cffdyn.io import atomic_write_json, read_json, to_jsonable
from paper.build import BuildConfig, build
from paper.jsonpath import resolve, resolve_one
from cffdyn.exports import macro_name
from paper.numbers import format_value
from paper.sources import STUDIES, MissingResultError, get_study, result_dir
from sim.model import MFConfig

SCALE = "quick"


# --------------------------------------------------------------------------- synthetic results
def _verify(rng) -> dict:
    ids = [{"name": f"identity {k} (d/ds min(s+m,1))", "residual": "0", "passed": True} for k in range(5)]
    muts = [{"name": f"mutation {k}", "residual": "x - y", "flagged": True} for k in range(3)]
    mp = {"cases": 20, "dps": 100, "symbolic_float64_max_abs_err_over_term": 4.0e-17,
          "autograd_float64_max_abs_err_over_term": 1.3e-16,
          "max_grad_over_term": 3.0e-8, "cases_with_a_positive_pair_within_1e-7_of_boundary": 15,
          "worst_case": {"closest_positive_pair_to_boundary": 2.0e-8}}
    return {"config": {"cases": 321, "seed": 0, "tol_rel": 1e-10}, "passed": True, "identities": ids,
            "mutations": muts,
            "autograd": {"cases": 321, "max_rel_err": 3.7e-15, "tol_rel": 1e-10, "passed": True, "floor": 1e-4,
                         "max_rel_err_unfloored": 2.5e-8, "max_abs_err_over_term": 3.8e-16,
                         "cases_below_floor": 17, "worst_unfloored_vs_mpmath": mp},
            "seconds": 12.34, "machine": {"load_avg": [1.5, 1.2, 1.0], "cpus": 2, "device": "cpu"}}


def _vit(rng, root: Path) -> dict:
    """A synthetic study.json in the schema of vit.study (same analysis code, no training)."""
    from vit.study import StudyConfig, analyse_runs
    from vit.train import TrainConfig
    cfg = StudyConfig(base=TrainConfig(dataset="fashion_mnist", subset=500, embed_dim=32, heads=2, layers=3, patch=7,
                                       epochs=2, head_epochs=5, batch_size=128, seed_split=0),
                      n_seeds=4, n_boot=200, n_perm=200)
    sd = {"clamp": 0.03, "subtract": 0.01}
    runs = []
    out = result_dir(get_study("vit_study"), root, SCALE)
    for s in cfg.seeds():
        for lm, me in cfg.cells():
            acc = float(0.7 + sd[lm] * rng.standard_normal())
            car = float(rng.uniform(0.5, 0.7))
            rd = out / "runs" / f"loss_mode-{lm}__method-{me}__seed{s}__abc"
            per_layer = [{"layer": l, "car": car / (l + 1), "grad_norm": 1.0 / (l + 1)} for l in range(3)]
            atomic_write_json(rd / "result.json", {"test_acc": acc, "per_layer": per_layer})
            runs.append({"cell": {"loss_mode": lm, "method": me}, "seed": s, "metric": acc, "test_acc": acc,
                         "val_acc": acc, "best_epoch": 1, "car_layer0": car, "grad_norm_layer0": 1.0,
                         "epoch_time_s": (2.0 if me == "cff2" else 1.0) + 0.1 * s, "device": "cpu",
                         "run_dir": str(rd), "trained_now": True, "wall_s": 1.0})
    probe = {"runs": [{"seed": s, "test_acc": float(0.65 + 0.005 * rng.standard_normal()), "val_acc": 0.65,
                       "protocol": "test"} for s in cfg.seeds()], "protocol": "test"}
    acc = [r["test_acc"] for r in probe["runs"]]
    probe["test_acc_mean"], probe["test_acc_sd"] = float(np.mean(acc)), float(np.std(acc, ddof=1))
    an, table = analyse_runs(cfg, runs, probe)
    return {"config": cfg.to_dict(), "design": {"factors": cfg.factor_names}, "status": "complete", "runs": runs,
            "probe": probe, "analysis": an, "table": table,
            "timing": {"wall_s": 61.0, "load_avg_start": [1.5, 1.2, 1.0],
                       "machine": {"load_avg": [2.0, 1.5, 1.1], "device": "cpu"}}}


LOSSES = ("euc_simsiam", "euc_isoloss", "cos_simsiam", "cos_isoloss")


def _spread(rng) -> dict:
    S, M = 3, 4
    losses = {}
    for k, name in enumerate(LOSSES):
        mu = np.exp(rng.standard_normal((20, M)))
        losses[name] = {"eta": 0.01 * (k + 1), "time_to_frac": rng.uniform(10, 100, (S, M)).tolist(),
                        "mu0": rng.uniform(0.01, 1, (S, M)).tolist(),
                        "ratio_slowest_fastest_median": 1.5 + 2.25 * k,
                        "mean_var_normalized_across_seeds_at_horizon": 10.0 ** (-k - 2) * 1.234,
                        "mean_trajectory_seed0": {"steps": list(range(0, 200, 10)), "eigenvalues": mu.tolist()}}
    rows = lambda e: {"rows": [{"t": 100, "max_abs_iteration_minus_map": e}, {"t": 300, "max_abs_iteration_minus_map": 2 * e}]}
    return {"config": {"horizon": 300, "frac": 0.9, "out_dim": M, "in_dim": 6, "sigma": 0.1, "alpha": 1.0},
            "name": "eigen_spread", "n_seeds": S, "losses": losses,
            "ode_check": {"euc_isoloss": rows(2.2e-16), "euc_simsiam": rows(4.4e-16)}}


def _settings(rng) -> dict:
    settings = {}
    for k, name in enumerate(("euc_simsiam", "euc_isoloss", "cos_simsiam")):
        settings[name] = {"steps": list(range(0, 50, 10)), "eigenvalues": np.exp(rng.standard_normal((5, 4))).tolist(),
                          "outcome": "isotropic", "min_over_max_end": 0.5 + 0.1 * k}
    return {"config": {"activation": "linear", "in_dim": 6, "out_dim": 4, "n_steps": 50, "n_steps_nopred": 500,
                       "seed": 2}, "settings": settings, "outcomes": {k: v["outcome"] for k, v in settings.items()}}


def _convergence(rng) -> dict:
    t = np.linspace(0, 10, 11)
    q = 0.1 + 0.08 * t
    rows = []
    for N in (500, 1000, 2000, 4000, 8000):
        bias = {tag: {"t": tt, "bias": -2.0 / N, "se": 0.3 / N ** 0.5, "z": -1.1, "N_bias": -2.0, "N_se": 0.3 * N ** 0.5,
                      "ci95": [-0.01, 0.01]} for tag, tt in (("escape", 4.0), ("end", 10.0))}
        rows.append({"N": N, "t": t.tolist(), "mean": (q + 0.01).tolist(), "sd": [0.01] * 11, "fluct": 0.9 / N ** 0.5,
                     "bias": bias, "max_abs_z": 2.3})
    from sim.studies import ConvergenceConfig
    cfg = ConvergenceConfig(model=MFConfig(tau=0.5, m2=(3.0,)), q0=0.1, t_end=10.0, trials=64, n_boot=100,
                            Ns=(500, 1000, 2000, 4000, 8000))
    return {"study": "convergence", "config": to_jsonable(cfg),
            "t": t.tolist(), "q_ode": q.tolist(), "rk4_vs_solve_ivp_max": 1.5e-9, "rows": rows, "exponent": -0.512,
            "exponent_ci95": [-0.55, -0.47], "exponent_se": 0.021, "t_escape": 4.0,
            "bias_exponent": {"est": -1.0, "ci95": None, "resolved": False},
            "full_vs_reduced": {"N": 1000, "max_z": 1.23, "full_trials": 4, "reduced_trials": 7}}


def _hfunc(rng) -> dict:
    Q = np.linspace(-0.9, 0.9, 7)
    curves = [{"activation": a, "tau": tau, "h": (Q * (1 - Q ** 2)).tolist(),
               "fixed_points": [{"Q": 0.0, "eigenvalue": 0.1, "stability": "unstable"},
                                {"Q": 0.9, "eigenvalue": -0.3, "stability": "stable"}],
               "slope_at_0": 0.12345 * tau, "slope_at_0_linearised": 0.12346 * tau}
              for a in ("tanh", "relu") for tau in (0.5, 1.0)]
    from sim.studies import HFuncConfig
    cfg = HFuncConfig(activations=("tanh", "relu"), taus=(0.5, 1.0), model=MFConfig(m2=(3.0,), sn=0.0))
    return {"config": to_jsonable(cfg), "Q": Q.tolist(),
            "curves": curves, "learnability": {"tanh": {"kappa": 0.18181, "v": 0.075049}, "relu": {"kappa": 0.5, "v": 0.5}}}


def _phase(rng) -> dict:
    sweep = [{"kurtosis": k, "share_feature1": 0.4 + 0.1 * i, "share_feature2": 0.5 - 0.1 * i, "share_none": 0.1,
              "eigs_at_0": [0.01, 0.02468]} for i, k in enumerate((1.0, 4.0))]
    g = np.linspace(-1, 1, 5)
    from sim.studies import PhaseConfig
    cfg = PhaseConfig(model=MFConfig(tau=0.2, m2=(1.2, 1.1)), sgd_N=2000, n_grid_m4=41)
    return {"config": to_jsonable(cfg), "n_ics": 2813, "n_ics_m4": 1245,
            "share_feature1": 0.555,
            "share_feature2": 0.444, "share_none": 0.001, "m4_sweep": sweep,
            "fixed_points": [{"Q": [0.0, 0.0], "stability": "unstable"}, {"Q": [0.9, 0.0], "stability": "stable"}],
            "winners": {"n_grid": 5, "extent": 0.98, "chars": "012.",
                        "rows": [".222.", "11222", "11022", "11122", ".111."]},
            "streamlines": {"x": g.tolist(), "U": [[-x for x in g] for _ in g], "V": [[-y] * 5 for y in g]},
            "sgd_paths": [[[0.05, 0.06], [0.5, 0.1], [0.9, 0.0]]]}


def _noise(rng) -> dict:
    sn2 = [0.0, 0.5, 1.0]
    curves = [{"tau": tau, "rho": rho, "Q": [0.98, 0.9 + 0.01 * rho, 0.83 - 0.03 * rho],
               "vs_notes": [{"sn2": s, "ode": q, "notes": q} for s, q in zip(sn2, [0.98, 0.9 + 0.01 * rho, 0.83 - 0.03 * rho])],
               "max_abs_diff_notes": 1e-4 * tau} for tau in (1.0, 2.0) for rho in (0.0, -1.0)]
    sgd = [{"rho": rho, "sn2": s, "mean": 0.8 - 0.01 * rho, "sd": 0.01, "trials": 5} for rho in (0.0, -1.0) for s in sn2]
    from sim.studies import NoiseConfig
    cfg = NoiseConfig(sn2=tuple(sn2), sgd_tau=1.0, sgd_N=2000, sgd_trials=5)
    return {"config": to_jsonable(cfg), "curves": curves, "sgd": sgd}


def _clamp_arm(mode, m, sn, B, nvar, interior=True) -> dict:
    if not interior:
        return {"mode": mode, "margin": m, "sn": sn, "batch": B, "in_ci": None,
                "prediction": {"outcome": "fully_clamped", "reason": "drift > 0 up to Q -> 1"},
                "measured": {"outcome": "fully_clamped", "final_Q_mean": 0.9991, "final_car": 0.97, "t_end": 20.0}}
    return {"mode": mode, "margin": m, "sn": sn, "batch": B, "in_ci": True, "z": 0.4,
            "prediction": {"outcome": "interior", "Q_star": 0.95, "lambda": -1.384, "N_var": nvar, "car_star": 0.25,
                           "corr_time": 0.72},
            "measured": {"N_var": {"est": nvar * 1.01, "se": nvar * 0.03, "ci95": [nvar * 0.95, nvar * 1.07]}}}


def _clamp(rng) -> dict:
    rows, subs = [], []
    for sn in (0.0, 0.7):
        for B in (1, 4):
            sub = _clamp_arm("subtract", 0.0, sn, B, 1e-3 * (1 + sn) / B)
            subs.append(sub)
            for m in (0.1, 0.2, 0.3, 0.5):
                inter = sn > 0 or m == 0.1
                cl = _clamp_arm("clamp", m, sn, B, 1e-3 * (1 + m) / B, inter)
                row = {"margin": m, "sn": sn, "batch": B, "outcome": "interior" if inter else "fully_clamped",
                       "clamp": cl, "subtract": sub, "ratio_pred": None, "ratio": None, "ratio_in_ci": None}
                if inter:
                    est = 1.02 * (1 + m) / (1 + sn)
                    row.update(ratio_pred=(1 + m) / (1 + sn), ratio={"est": est, "se_log": 0.04,
                                                                     "ci95": [0.9 * est, 1.1 * est]}, ratio_in_ci=True)
                rows.append(row)
    scaling = [{"mode": "clamp", "margin": 0.3, "sn": 0.7, "batch": 1, "N": N, "pred": 0.016, "in_ci": True,
                "measured": {"est": 0.0161, "se": 0.0005, "ci95": [0.015, 0.017]}} for N in (500, 2000, 8000)]
    bridge = [{"sn": 0.7, "batch": 1, "points": [{"margin": m, "car": 0.2 + m, "ratio_pred": 1 + m, "Q_star": 0.9}
                                                 for m in (0.1, 0.3)]}]
    from sim.clamp_study import ClampConfig
    cfg = ClampConfig(model=MFConfig(tau=1.0, m2=(3.0,)), margins=(0.1, 0.2, 0.3, 0.5), sns=(0.0, 0.7), batches=(1, 4),
                      N=2000, trials=64, window=100.0, burn_corr=5.0, batch_corr=10.0, oja_tau=0.25)
    return {"config": to_jsonable(cfg),
            "rows": rows, "subtract": subs, "oja": _clamp_arm("oja", 0.0, 0.0, 1, 0.05), "scaling": scaling,
            "bridge": bridge, "vit_points": [],
            "summary": {"arms_checked": 15, "arms_in_ci": 14, "ratios_checked": 10, "ratios_in_ci": 10,
                        "fully_clamped_cells": 6, "scaling_checked": 3, "scaling_in_ci": 3, "max_abs_z": 2.1},
            "machine": {"load_avg": [3.5, 3.0, 2.0]}}


def write_results(root: Path, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    makers = {"verify": lambda: _verify(rng), "vit_study": lambda: _vit(rng, root),
              "eigen_spread": lambda: _spread(rng), "eigen_settings": lambda: _settings(rng),
              "convergence": lambda: _convergence(rng), "hfunc": lambda: _hfunc(rng), "phase": lambda: _phase(rng),
              "noise": lambda: _noise(rng), "clamp": lambda: _clamp(rng)}
    # a recorded study (the noise-dose study) is read by the build from the repository's recorded/
    # through its producer's own reader, never synthesised here
    missing = {s.name for s in STUDIES if not s.recorded} - set(makers)
    assert not missing, f"test has no synthetic result for studies {missing}: add one"
    out = {}
    for st in STUDIES:
        if st.recorded:
            out[st.name] = result_dir(st, root, SCALE) / st.json_name
            continue
        p = result_dir(st, root, SCALE) / st.json_name
        atomic_write_json(p, makers[st.name]())
        out[st.name] = p
    return out


HAS_PANDOC = shutil.which("pandoc") is not None
HAS_TEX = shutil.which("pdflatex") is not None and shutil.which("bibtex") is not None
needs_pandoc = pytest.mark.skipif(not HAS_PANDOC, reason="pandoc not installed (HTML rendering)")
needs_tex = pytest.mark.skipif(not HAS_TEX, reason="pdflatex/bibtex not installed (PDF rendering)")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One build of the synthetic results; PDF and HTML where the tools are installed (CI has neither)."""
    root = tmp_path_factory.mktemp("results")
    paths = write_results(root)
    out = tmp_path_factory.mktemp("paper")
    summary = build(BuildConfig(results=root, out=out, reuse_only=True, pdf="auto", html="auto", quiet=True))
    return root, out, paths, summary


def _html_text(html: str) -> str:
    """Visible text of the HTML: tags, MathML's TeX annotations and the style sheet removed."""
    import html as h
    html = re.sub(r"<annotation[^>]*>.*?</annotation>|<style[^>]*>.*?</style>", "", html, flags=re.S)
    text = h.unescape(re.sub(r"<[^>]+>", "", html)).replace("\xa0", " ")
    return re.sub(r"\s+", " ", text)


def _html(out: Path) -> str:
    if not (out / "manuscript.html").is_file():
        pytest.skip("no HTML in this build (pandoc not installed)")
    return (out / "manuscript.html").read_text()


# --------------------------------------------------------------------------- tests
def test_every_number_matches_its_json(built):
    root, out, paths, summary = built
    numbers = read_json(out / "numbers.json")
    assert len(numbers) == summary["n_numbers"] > 40
    tex_full = (out / "manuscript.tex").read_text()
    gen = "".join(p.read_text() for p in (out / "generated").glob("*.tex") if p.name != "numbers.tex")
    text = _html_text((out / "manuscript.html").read_text()) if HAS_PANDOC else None
    used = set(re.findall(r"\\([A-Za-z]+)", tex_full + gen))
    n_checked = 0
    for macro, rec in numbers.items():
        data = read_json(rec["source_json"])
        raw = resolve(data, rec["json_path"])
        if rec["reduce"] == "count":
            raw = len(raw)
        elif rec["reduce"] == "mean":
            raw = float(np.mean(raw))
        elif rec["reduce"] == "max":
            raw = max(raw)
        elif rec["reduce"] == "min":
            raw = min(raw)
        elif rec["reduce"] == "sd":
            raw = float(np.std(raw, ddof=1))
        elif isinstance(raw, list):
            assert len(raw) == 1
            raw = raw[0]
        assert rec["raw"] == pytest.approx(raw, rel=1e-12), macro
        if rec["fmt"] in ("p", "sci"):
            assert rec["value"] == format_value(raw, rec["fmt"], rec["scale"])
        else:
            assert rec["value"] == format(raw * rec["scale"] if rec["fmt"] != "d" else int(round(raw * rec["scale"])),
                                          rec["fmt"]), macro
        # printed with a minus sign (U+2212), not a hyphen, and defined in numbers.tex with exactly that text
        printed = rec["value"] if rec["fmt"] == "sci" or not rec["value"].startswith("-") else "\u2212" + rec["value"][1:]
        assert rec["tex"] == printed, macro
        assert f"\\newcommand{{\\{macro}}}{{{printed}}}" in (out / "generated" / "numbers.tex").read_text()
        if text is not None and macro in used and rec["fmt"] != "sci":
            assert printed in text, f"\\{macro} = {printed} not in the HTML"
            n_checked += 1
    assert text is None or n_checked > 30


def test_build_record_has_machine_and_load(built):
    """Every stage's timing comes with the machine (load average, CPUs, device) it was measured on."""
    _, out, _, summary = built
    rec = read_json(out / "build.json")
    assert rec["stages"] and rec["machine"]["cpus"] >= 1
    for st in rec["stages"]:
        assert st["seconds"] >= 0 and st["machine"]["device"] and "load_avg" in st["machine"]
        assert "load_avg_end" in st
    for name, s in rec["studies"].items():
        assert s["status"] == "reused" and "load_avg_start" in s, name
    info = read_json(out / "build_info.json")
    assert info["n_studies"] == len(STUDIES) and info["n_studies_run"] == 0 and info["gpu_runs"] == 0
    assert info["vit_devices"] == {"cpu": 16}


def test_headline_numbers_independent(built):
    """Values recomputed here from the synthetic runs (not via the build's code) appear in the text."""
    root, out, paths, summary = built
    text = _html_text(_html(out))
    d = read_json(paths["vit_study"])
    cells = {}
    for r in d["runs"]:
        cells.setdefault((r["cell"]["loss_mode"], r["cell"]["method"]), []).append(r["test_acc"])

    def pooled(level):
        ss = sum(np.sum((np.array(v) - np.mean(v)) ** 2) for k, v in cells.items() if k[0] == level)
        df = sum(len(v) - 1 for k, v in cells.items() if k[0] == level)
        return ss / df
    vr = pooled("clamp") / pooled("subtract")
    assert f"mean first (ratio {vr:.2f}×" in text   # pandoc typesets the apostrophe of "cell's"
    # Steier's statistic: the sample variance of all 8 runs of a level, df 7
    allv = {lv: np.concatenate([v for k, v in cells.items() if k[0] == lv]) for lv in ("clamp", "subtract")}
    vrs = np.var(allv["clamp"], ddof=1) / np.var(allv["subtract"], ddof=1)
    assert f"ratio {vrs:.2f}×, two-sided F with 7 and 7 degrees of freedom" in text
    probe = np.mean([r["test_acc"] for r in d["probe"]["runs"]])
    assert f"it reaches {100 * probe:.2f}% test accuracy" in text
    car = np.mean([r["car_layer0"] for r in d["runs"] if r["cell"]["loss_mode"] == "clamp"])
    assert f"layer-0 CAR of the clamp runs is {100 * car:.1f}%" in text
    assert "Steier reports 60.7% for CIFAR-10" in text   # literature value from source_numbers.json
    assert "on a 500-image Fashion-MNIST pool (90/10" in text
    m = np.mean(cells[("clamp", "cff2")])
    assert f"{100 * m:.2f}" in text
    assert "321 random batches" in text and "5 of 5 identities" in text
    assert "3 of 3 deliberately wrong references" in text and "not sympy" in text
    assert "spread 1.5 (BYOL-L2) vs 3.8 (IsoLoss)" in text
    assert "fitted exponent is \u22120.512 (95% bootstrap interval \u22120.550 to \u22120.470" in text
    rp = 1.1 / 1.7  # synthetic clamp cell m = 0.1, sn = 0.7, B = 1: (1 + m) / (1 + sn)
    assert f"the ratio is predicted as {rp:.3f}" in text and f"measured ratios are {1.02 * rp:.3f} [" in text
    assert "prediction lies inside the measured 95% interval for 14 of 15 arms" in text
    assert "feature 1 wins from 55.5% and feature 2 from 44.4% of 2813 initial conditions" in text
    assert "1245 initial conditions" in text
    assert "with 4 seeds per cell" in text           # generated Limitations: the study's own seed count
    assert "No run of this build used a GPU (ViT runs: cpu)" in text
    assert "on a ViT, at CPU scale (--quick presets)." in text


def test_html_is_self_contained_with_math_and_references(built):
    _, out, _, summary = built
    html = _html(out)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    srcs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    imgs = re.findall(r"<img[^>]*src=\"([^\"]*)\"", html)
    assert len(imgs) >= 4
    for s in srcs:
        assert s.startswith(("data:image/png;base64,", "#", "http")), s[:80]
    for s in imgs:
        assert s.startswith("data:image/png;base64,")
    assert "<math" in html                                      # MathML, no script
    # the figures are also written as PNG + PDF, and every figure has a caption with a seed count
    for name in ("vit_cells", "vit_layers", "eigen_spread", "eigen_settings", "mf_convergence", "mf_hfunc",
                 "mf_noise", "mf_clamp"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
        assert (out / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
    figcaps = re.findall(r"<figure[^>]*>.*?<figcaption[^>]*>(.*?)</figcaption>", html, re.S)
    # nine synthetic studies' figures, and the noise-dose study's when its record is in recorded/
    assert len(figcaps) == 9 + (get_study("noise_dose").name in read_json(out / "build_info.json")["studies_available"]
                               if "studies_available" in read_json(out / "build_info.json") else
                               (out / "figures" / "noise_dose.pdf").is_file())
    for cap in figcaps:
        assert re.search(r"seed|no seeds", cap), cap
    tabcaps = re.findall(r"<table>\s*<caption>(.*?)</caption>", html, re.S)
    assert len(tabcaps) >= 4   # identities, eigen, vit (two tabulars), replication
    for cap in tabcaps:
        assert re.search(r"\bn\b|n =|seeds", cap), cap
    # citations resolved by citeproc against references.bib, and a reference list
    text = _html_text(html)
    refs = re.search(r'<div id="refs".*', html, re.S)
    assert refs, "no reference list"
    keys = set(re.findall(r"@\w+\{(\w+),", (out / "references.bib").read_text()))
    assert len(keys) == 6
    for k in keys:
        assert f'id="ref-{k}"' in html, k
    assert "Steier (2026)" in text and "???" not in text
    # glitches of the hand-written converter are gone
    assert "Itô term" in text and "It^o" not in text


@needs_tex
def test_pdf_with_references(built):
    _, out, _, summary = built
    pdf = out / "manuscript.pdf"
    assert summary["files"]["pdf"] == str(pdf) and pdf.read_bytes()[:4] == b"%PDF"
    log = (out / "manuscript.log").read_text(errors="replace")
    assert not re.search(r"Citation `[^']*' .*undefined|Reference `[^']*' .*undefined", log)
    bbl = (out / "manuscript.bbl").read_text()
    keys = set(re.findall(r"@\w+\{(\w+),", (out / "references.bib").read_text()))
    assert set(re.findall(r"\\bibitem\[[^\]]*\]\{(\w+)\}", bbl.replace("\n", ""))) == keys
    if shutil.which("pdftotext"):
        import subprocess
        txt = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
        assert "References" in txt and "Itô" in txt and "p = <" not in txt


def test_sections_and_replication_table(built):
    _, out, _, _ = built
    html = _html(out)
    text = _html_text(html)
    for title in ("The losses and their gradients", "mean-field model", "Eigenmode dynamics", "ViT validation",
                  "Replication table", "Limitations", "References"):
        assert title in text
    assert "reconstruction" in text and "documented choice" in text
    assert "Verdicts follow one rule" in text
    tab = re.search(r'<div id="tab:replication">(.*?)</div>', html, re.S)
    assert tab and tab.group(1).count("<tr") >= 6
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", tab.group(1), re.S)
    body = [_html_text(r) for r in rows[1:]]
    assert all(re.search(r"\b(agree|disagree|cannot compare)\b", r) for r in body), body
    assert "5.90×" in _html_text(tab.group(1))


def test_replication_verdicts_follow_the_numbers(built):
    """The verdicts, recomputed here with scipy from the synthetic runs (not with the build's tests)."""
    from scipy import stats
    from paper.replication import replication_rows
    _, _, paths, _ = built
    d = read_json(paths["vit_study"])
    rows = {r[0]: r[4] for r in replication_rows({"vit_study": d})}
    acc = {lm: [r["test_acc"] for r in d["runs"] if r["cell"]["loss_mode"] == lm] for lm in ("clamp", "subtract")}
    # matched seeds: the verdict on the means rests on the paired t-test (clamp vs subtract run of the same
    # seed and method), the test Section 5 names as fitting the design, not on Welch's
    pair = {(r["seed"], r["cell"]["method"], r["cell"]["loss_mode"]): r["test_acc"] for r in d["runs"]}
    keys = sorted({k[:2] for k in pair})
    paired = stats.ttest_rel([pair[k + ("clamp",)] for k in keys], [pair[k + ("subtract",)] for k in keys]).pvalue
    null = rows["Steier: the gradient-neutral margin leaves mean accuracy unchanged"]
    assert null.word == ("disagree" if paired < 0.05 else "agree")
    assert "paired t-test" in null.test
    # our data are Fashion-MNIST: the CIFAR-10 claims cannot be compared, whatever the numbers
    assert rows["Steier: variance ratio clamp/subtract, CIFAR-10"].word == "cannot compare"
    assert rows["Steier: layer-0 clamp activation rate"].word == "cannot compare"
    # a large mean difference (the +3.2 points, p = 0.001 kind) is a disagreement with "no difference"
    for r in d["runs"]:
        if r["cell"]["loss_mode"] == "subtract":
            r["test_acc"] -= 0.05
    from vit.factorial import factorial_analysis
    data = {}
    for r in d["runs"]:
        data.setdefault((r["cell"]["loss_mode"], r["cell"]["method"]), []).append(r["test_acc"])
    d["analysis"] = factorial_analysis(["loss_mode", "method"], data, n_boot=50, n_perm=50)
    rows = {r[0]: r[4] for r in replication_rows({"vit_study": d})}
    assert rows["Steier: the gradient-neutral margin leaves mean accuracy unchanged"].word == "disagree"


def test_verdict_rules():
    from paper.verdicts import Verdict, verdict_direction, verdict_null, verdict_ordering, verdict_value
    assert verdict_direction(+1, 0.7, 0.01).word == "agree"
    assert verdict_direction(-1, 0.7, 0.01).word == "disagree"
    assert verdict_direction(+1, 0.7, 0.2).word == "cannot compare"
    assert verdict_direction(+1, 0.7, 0.01, comparable=False, why_not="other data").why == "other data"
    assert verdict_direction(+1, None, 0.01).word == "cannot compare"
    assert verdict_null(0.001).word == "disagree" and verdict_null(0.3).word == "agree"
    assert verdict_value(2.0, [1.9, 2.1, 2.0]).word == "agree"            # mean 2, SD 0.1
    assert verdict_value(2.5, [1.9, 2.1, 2.0]).word == "disagree"         # 5 SD away
    assert verdict_value(2.0, [2.0]).word == "cannot compare"
    assert verdict_ordering(True).word == "agree" and verdict_ordering(False).word == "disagree"
    with pytest.raises(ValueError):
        Verdict("maybe", "")


def test_limitations_are_generated_from_the_build():
    from paper.record import build_info, limitations_tex
    d = _vit(np.random.default_rng(3), Path("/nonexistent-root"))
    for k, r in enumerate(d["runs"]):
        r["device"] = "cuda:0" if k % 2 else "cpu"
    machine = {"cpus": 16, "cpu": "Some CPU", "load_avg": [1.0, 1.0, 1.0], "device": "cpu"}
    studies = {"vit_study": {"status": "run", "seconds": 12.0, "load_avg_start": [1.0], "load_avg_end": [2.0]}}
    info = build_info("full", False, machine, studies, {"phase": "not requested (--only)"}, {"vit_study": d})
    assert info["gpu_runs"] == 8 and info["n_studies_run"] == 1
    tex = limitations_tex({"vit_study": d}, info)
    assert "\\texttt{-{}-full}" in tex and "cuda:0 (8 runs)" in tex and "No run of this build used a GPU" not in tex
    assert "reconstruction" not in tex                     # no mean-field study in this build
    assert "(not requested (-{}-only))" in tex              # "--" kept as two hyphens, not an en dash
    info_cpu = build_info("quick", True, machine, studies, {}, {"vit_study": _vit(np.random.default_rng(3),
                                                                                   Path("/nonexistent-root"))})
    assert "No run of this build used a GPU" in limitations_tex({"vit_study": d}, info_cpu)


def test_p_values_read_as_bounds():
    from paper.build import p_relations
    from cffdyn.exports import NumberSpec
    from paper.numbers import Number
    small = Number(NumberSpec("PSmall", "x", "a", "p"), 0.0004, format_value(0.0004, "p"), "x.json")
    big = Number(NumberSpec("PBig", "x", "a", "p"), 0.2, format_value(0.2, "p"), "x.json")
    assert small.value == "< 0.001" and big.value == "0.200"
    tex = r"(F p = \PSmall, Welch p = \PBig) & \PSmall \\ $p = \PSmall$ (p = \PSmallish) t p~=~\PSmall"
    got = p_relations(tex, [small, big])
    assert got == r"(F p \PSmall, Welch p = \PBig) & \PSmall \\ $p \PSmall$ (p = \PSmallish) t p \PSmall"


def test_gradient_case_titles_are_math():
    from paper.build import _case_title
    assert _case_title("k in R^c(i), clamp inactive (Eq. A.6)") == r"$k \in R^{c}(i)$, clamp inactive (Eq. A.6)"
    assert _case_title("k in N(i) (Eq. A.7)") == r"$k \in N(i)$ (Eq. A.7)"
    assert _case_title("k anchor (Eq. 18)").startswith("$k = i$, the anchor")


def test_html_source_and_pandoc_args(tmp_path):
    from paper.build import html_source, pandoc_args
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(b"png")
    tex = (r"\includegraphics[width=\linewidth]{figures/a.pdf} \includegraphics{figures/b.pdf} "
           r"\begin{tabular}{>{\raggedright\arraybackslash}p{2cm}} x \end{tabular} \bibliographystyle{plainnat}"
           r"\bibliography{references}")
    got = html_source(tex, tmp_path)
    assert r"\includegraphics[width=\linewidth]{figures/a.png}" in got and "{figures/b.pdf}" in got
    assert r"\begin{tabular}{p{2cm}}" in got and "bibliography" not in got
    assert html_source(r"\paragraph{T} x", tmp_path) == r"\paragraph*{T} x"
    assert html_source(r"x \\ \addlinespace \Da & y \\ \addlinespace[2pt] z", tmp_path) == r"x \\  \Da & y \\  z"
    old, new = pandoc_args((2, 17, 1, 1), Path("r.bib")), pandoc_args((3, 1), Path("r.bib"))
    assert "--self-contained" in old and "--embed-resources" not in old
    assert "--embed-resources" in new and "--standalone" in new and "--self-contained" not in new
    for a in (old, new):
        assert "--mathml" in a and "--citeproc" in a and "--bibliography=r.bib" in a


@needs_pandoc
def test_pandoc_keeps_double_hyphens_and_accents(tmp_path):
    import subprocess
    from paper.tex import tex_escape
    tex = r"\documentclass{article}\begin{document}" + tex_escape("(--only)") + r" the It\^o term\end{document}"
    html = subprocess.run(["pandoc", "-f", "latex", "-t", "html"], input=tex, capture_output=True, text=True).stdout
    assert "(--only)" in html and "Itô" in html


def _cli(argv):
    from cffdyn.errors import guarded
    from paper.cli import main
    return guarded(lambda a: main(a, prog="cffdyn paper"), argv, "cffdyn paper")


def test_bad_output_and_missing_tools_fail_before_any_study(tmp_path, monkeypatch, capsys):
    import paper.build as pb

    def no_study(*a, **k):
        raise AssertionError("a study ran before the check")
    monkeypatch.setattr(pb, "obtain", no_study)
    f = tmp_path / "afile"
    f.write_text("x")
    assert _cli(["build", "--results", str(tmp_path / "r"), "--out", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err and "is a file" in err
    real_which = shutil.which
    monkeypatch.setattr(pb.shutil, "which", lambda t: None if t in ("pdflatex", "latexmk") else real_which(t))
    assert _cli(["build", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o"), "--pdf", "require"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pdflatex" in err and "texlive-latex-base" in err
    monkeypatch.setattr(pb.shutil, "which", lambda t: None if t == "pandoc" else real_which(t))
    assert _cli(["build", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o"), "--html", "require"]) == 2
    assert "pandoc" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_is_one_line(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert _cli(["build", "--reuse-only", "--results", str(tmp_path), "--out", str(ro / "paper")]) == 2
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot be written" in err


def test_abbreviated_options_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _cli(["build", "--reuse", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--reuse" in err


def test_missing_result_is_a_clear_error(tmp_path, capsys):
    paths = write_results(tmp_path / "res")
    paths["vit_study"].unlink()
    with pytest.raises(MissingResultError, match=r"vit_study.*study\.json.*--reuse-only"):
        build(BuildConfig(results=tmp_path / "res", out=tmp_path / "out", reuse_only=True, pdf="never",
                          html="never", quiet=True))
    # an incomplete (interrupted) study is also refused
    d = _vit(np.random.default_rng(1), tmp_path / "res")
    d["status"] = "running"
    atomic_write_json(paths["vit_study"], d)
    with pytest.raises(MissingResultError, match="incomplete"):
        build(BuildConfig(results=tmp_path / "res", out=tmp_path / "out", reuse_only=True, pdf="never",
                          html="never", quiet=True))
    # the CLI reports it in one line on stderr with exit status 2
    assert _cli(["build", "--reuse-only", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "o"),
                 "--pdf", "never", "--html", "never", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "incomplete" in err


def test_a_study_whose_code_is_missing_is_unavailable_in_words(tmp_path, monkeypatch, capsys):
    """An entry whose study cannot be imported is StudyUnavailable (what --skip-unavailable
    states), never an ImportError traceback; 'cffdyn paper studies' names each study's function."""
    import dataclasses
    from paper import sources

    def gone():
        from sim import no_such_study  # noqa: F401
    eig = dataclasses.replace(get_study("eigen_spread"), load=gone)
    with pytest.raises(sources.StudyUnavailable, match=r"eigen_spread.*not available in this tree.*no_such_study"):
        sources.obtain(eig, tmp_path, "quick")
    monkeypatch.setattr(sources, "STUDIES", tuple(eig if s.name == "eigen_spread" else s for s in sources.STUDIES))
    assert _cli(["studies", "--results", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(sources.STUDIES)
    assert any("sim.studies.run_noise  presets quick|full" in ln for ln in lines)
    assert any(ln.startswith("eigen_spread") and "unavailable" in ln for ln in lines)


def test_renamed_json_field_is_a_clear_error(tmp_path):
    paths = write_results(tmp_path / "res")
    d = read_json(paths["verify"])
    d["autograd"]["max_err_renamed"] = d["autograd"].pop("max_rel_err")
    atomic_write_json(paths["verify"], d)
    with pytest.raises(ValueError, match=r"AutogradMaxErr.*max_rel_err.*not found"):
        build(BuildConfig(results=tmp_path / "res", out=tmp_path / "out", reuse_only=True, pdf="never",
                          html="never", quiet=True))


def test_bad_config():
    with pytest.raises(ValueError, match="scale"):
        BuildConfig(scale="huge")
    with pytest.raises(ValueError, match="html"):
        BuildConfig(html="sometimes")
    with pytest.raises(ValueError, match="unknown study"):
        BuildConfig(studies=("nope",))


def test_jsonpath():
    d = {"a": {"b": [{"k": "x", "v": 1}, {"k": "y", "v": 2}, {"k": "y", "v": 3}]}, "c": [[1, 2], [3, 4]]}
    assert resolve_one(d, "a.b[k=x].v") == 1
    assert resolve(d, "a.b[k=y].v") == [2, 3]
    assert resolve(d, "a.b[*].v") == [1, 2, 3]
    assert resolve(d, "a.b[-1].v") == 3
    assert resolve(d, "c[1][0]") == 3
    with pytest.raises(ValueError, match="exactly one"):
        resolve_one(d, "a.b[k=y].v")
    with pytest.raises(ValueError, match="no element matches"):
        resolve(d, "a.b[k=z].v")
    with pytest.raises(ValueError, match="key 'q' not found"):
        resolve(d, "a.q")
    with pytest.raises(ValueError, match="out of range"):
        resolve(d, "c[5]")


def test_format_and_macro_names():
    assert format_value(0.0004, "p") == "< 0.001" and format_value(0.0123, "p") == "0.012"
    assert format_value(3.7e-15, "sci") == "3.7\\times10^{-15}"
    assert format_value(None, ".2f") == "n/a" and format_value(float("nan"), ".2f") == "n/a"
    assert format_value(0.5, ".1f", 100.0) == "50.0"
    assert macro_name("src", "steier_vr_cifar10") == "SrcSteierVrCifarTen"
    assert macro_name("cff2") == "CffTwo"
    with pytest.raises(ValueError):
        format_value("x", ".2f")


def test_package_ships_the_paper_sources():
    """The manuscript's sources are package data (an installed cffdyn can build the paper)."""
    tomllib = pytest.importorskip("tomllib")
    cfg = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    data = cfg["tool"]["setuptools"]["package-data"]
    from paper.build import PAPER_DIR
    for f in ["manuscript.tex", "references.bib", "source_numbers.json",
              *(f"sections/{p.name}" for p in (PAPER_DIR / "sections").glob("*.tex"))]:
        assert (PAPER_DIR / f).is_file()
        assert any(Path(f).match(pat) for pats in data.values() for pat in pats), f


@pytest.mark.slow
def test_quick_build_end_to_end(tmp_path):
    """``cffdyn paper build --quick`` from scratch (runs every study; minutes)."""
    from paper.cli import main
    rc = main(["build", "--quick", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "paper")])
    assert rc == 0
    s = read_json(tmp_path / "paper" / "build.json")
    assert all(v["status"] == "run" for v in s["studies"].values())
    if HAS_PANDOC:
        assert (tmp_path / "paper" / "manuscript.html").stat().st_size > 100_000
    if HAS_TEX:
        assert (tmp_path / "paper" / "manuscript.pdf").read_bytes()[:4] == b"%PDF"


def test_epoch_times_carry_device_and_load():
    """The epoch-time row of the replication table states the device and the load of the study."""
    from paper.replication import vit_timing_context as _vit_timing_context
    from vit.study_numbers import epoch_time_ratios as _epoch_time_ratios
    runs = [{"device": "cpu", "seed": s, "cell": {"loss_mode": "clamp", "method": m}, "epoch_time_s": t}
            for s, (t1, t2) in enumerate([(1.0, 2.2), (1.5, 3.0)]) for m, t in (("cff1", t1), ("cff2", t2))]
    assert sorted(_epoch_time_ratios({"runs": runs})) == pytest.approx([2.0, 2.2])
    d = {"runs": runs, "timing": {"load_avg_start": [3.25, 1.0, 1.0], "machine": {"load_avg": [5.14, 2.0, 1.0]}}}
    assert _vit_timing_context(d) == "cpu; 1-min load 3.2--5.1 during the study"
    assert "sec:limitations" in _vit_timing_context({"runs": runs})


def test_vit_seed_phrase_follows_the_recorded_seed_fields():
    from paper.phrases import vit_seed_phrase

    def phrase(**base):
        return vit_seed_phrase({"vit_study": {"config": {"base": {"subset": 6000, **base}}}})

    p = phrase(seed_subset=0)
    assert p.startswith("A seed fixes the initialisation, the train/validation split, the data order and the "
                        "augmentation of a run; the image subset is the same for every seed")
    p = phrase(seed_split=0)        # a fixed split seed fixes the subset drawn with it
    assert "the image subset and the train/validation split are the same for every seed" in p
    assert "A seed fixes the image subset" in phrase()
    assert phrase(seed_init=1, seed_split=1, seed_order=1, seed_aug=1).startswith("No part of a run varies")


def test_vit_departures_phrase_names_every_recorded_departure_once():
    from paper.phrases import vit_departures_phrase

    runs = [{"protocol": "cffdyn", "departures": ["selection:clean_plus_fixed_augmented_view"]},
            {"protocol": "cffdyn", "departures": ["cff1:mean_over_anchors_with_positive",
                                                  "selection:clean_plus_fixed_augmented_view"]}]
    p = vit_departures_phrase({"vit_study": {"runs": runs}})
    assert p.count("selection:") == 1 and p.count("cff1:") == 1 and r"\texttt{cffdyn}" in p
    assert "no departure" in vit_departures_phrase({"vit_study": {"runs": [{"protocol": "reference",
                                                                                "departures": []}]}})
    assert "not recorded" in vit_departures_phrase({"vit_study": {"runs": [{"seed": 0}]}})


def test_html_rendering_works_with_a_relative_output_directory(tmp_path, monkeypatch):
    """`cffdyn paper build` defaults to the relative build/paper; pandoc runs inside it, so every
    path it is given must still name the file (a stand-in pandoc copies its input or fails)."""
    import stat

    import paper.build as pb
    fake = tmp_path / "bin" / "pandoc"
    fake.parent.mkdir()
    fake.write_text("#!/usr/bin/env python3\nimport sys\na = sys.argv[1:]\n"
                    "if a == ['--version']:\n    print('pandoc 3.1.2')\n    sys.exit(0)\n"
                    "open(a[a.index('-o') + 1], 'w').write(open(a[-1]).read())\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(pb.shutil, "which", lambda t: str(fake) if t == "pandoc" else None)
    monkeypatch.chdir(tmp_path)
    out = Path("build") / "paper"
    out.mkdir(parents=True)
    html = pb._pandoc_html("\\section{A}\nText.\n", out)
    assert html.is_file() and "Text." in html.read_text()
    assert not (out / "manuscript.html.tex").exists()


def test_vit_augment_phrase_states_the_padding_that_ran_and_whose_it_is():
    from paper.phrases import vit_augment_phrase

    def phrase(**base):
        return vit_augment_phrase({"vit_study": {"config": {"base": base}}})

    assert "zero padding 1 (our choice" in phrase(dataset="fashion_mnist", augment="crop_flip", crop_pad=1)
    assert "zero padding 3 (our choice" in phrase(dataset="fashion_mnist", augment="crop_flip", crop_pad=None)
    assert "zero padding 12 (as in the ContrastiveFF code)" in phrase(dataset="cifar10", augment="crop_flip")
    assert "padding 4 (the ContrastiveFF code pads 12)" in phrase(dataset="cifar10", augment="crop_flip", crop_pad=4)
    assert phrase(dataset="cifar10", augment="randaug").startswith("Each view is RandAugment(3, 14), then")
    assert "no augmentation" in phrase(dataset="digits", augment="none")


# --------------------------------------------------------------------------- a manuscript a referee reads
def _full_tex(out: Path) -> str:
    """manuscript.tex with its generated inputs inlined (what the PDF typesets)."""
    tex = (out / "manuscript.tex").read_text()
    return re.sub(r"\\input\{(generated/[^}]*)\}",
                  lambda m: (out / (m.group(1) if m.group(1).endswith(".tex") else m.group(1) + ".tex")).read_text(),
                  tex)


@needs_tex
def test_pdf_layout_has_no_overfull_box_and_no_float_after_the_references(built):
    """The layout check of the build, read again from pdflatex's own log and aux."""
    from paper import layout
    _, out, _, summary = built
    assert summary["files"]["pdf"], summary["notes"]
    assert layout.check(out) == [] and read_json(out / "layout.json")["problems"] == []
    pages = layout.label_pages((out / "manuscript.aux").read_text(encoding="latin-1"))
    floats = [k for k in pages if k.startswith(("fig:", "tab:"))]
    assert len(floats) >= 15 and max(pages[k] for k in floats) < pages["references"]


@needs_tex
def test_pdf_metadata_and_author(built):
    import subprocess
    _, out, _, _ = built
    if shutil.which("pdfinfo") is None:
        pytest.skip("pdfinfo (poppler-utils) not installed")
    info = subprocess.run(["pdfinfo", str(out / "manuscript.pdf")], capture_output=True, text=True).stdout
    for field in ("Title", "Author", "Subject", "Keywords"):
        line = next(ln for ln in info.splitlines() if ln.startswith(field + ":"))
        assert len(line.split(":", 1)[1].strip()) > 5, line
    assert "cffdyn" in next(ln for ln in info.splitlines() if ln.startswith("Author:"))


def test_generated_text_is_complete_sentences_with_units_and_uncertainty(built):
    """No generated sentence or table cell stops mid-sentence; every number the build has an
    uncertainty for carries it and its unit; no sentence about earlier versions of the text."""
    from paper.prose import fragments, rules, table_cells, unquantified
    _, out, _, _ = built
    gen = out / "generated"
    cells = [c for name in ("tab_replication", "tab_vit_tests", "tab_vit", "tab_clamp")
             for c in table_cells((gen / f"{name}.tex").read_text())]
    assert len(cells) > 40 and fragments(cells) == []
    phrases = [p.read_text() for p in gen.glob("*.tex") if not p.name.startswith(("tab_", "numbers", "gradients"))]
    sentences = [s for p in phrases for s in re.split(r"(?<=\.)\s+", p.strip().rstrip("%")) if s.strip()]
    assert fragments(sentences) == []
    full = _full_tex(out)
    checks = rules(json.loads((out / "numbers.json").read_text()))
    assert {"VitProbeAcc", "VitCarClamp", "VitEpochTimeCffOne", "VitEpochTimeCffTwo", "MeanDiffLossMode",
            "VitWallMin", "ConvExponent"} <= set(checks)
    assert unquantified(full, checks) == []
    assert not re.search(r"earlier version|previous version|was reported as", full, re.I)
    # no degenerate range or repeated value: "between 8.77 and 8.77", "0.00854 and 0.00854"
    text = _html_text(_html(out))
    for m in re.finditer(r"(\d+(?:\.\d+)?)\s*(?:and|to|--|–)\s*(\d+(?:\.\d+)?)", text):
        assert m.group(1) != m.group(2) or m.group(1).isdigit() and len(m.group(1)) < 3, m.group(0)
    assert not re.search(r"\d(points|s|min)\b", text)      # a space before every unit
    assert not re.search(r"(?<![\w.^{])-\d", text.replace("--", ""))   # minus signs, not hyphens


def test_abstract_states_the_findings_and_the_conclusion_exists(built):
    _, out, _, _ = built
    text = _html_text(_html(out))
    abstract = text[text.index("Abstract") + len("Abstract"):text.index("Introduction")]
    # a real abstract: within the word limit, every status the build has stated with its lead words, the
    # headline findings with their numbers and uncertainty, the rest counted
    from paper.findings import ABSTRACT_MAX_WORDS, abstract_words, findings
    from paper.assemble import FINDINGS, derived
    fs = findings(_results_of(built), derived(_results_of(built)), FINDINGS)
    assert 150 <= abstract_words(abstract) <= ABSTRACT_MAX_WORDS, abstract_words(abstract)
    lead = {"confirmed": "confirms that", "refuted": "refutes that", "not tested": "could not test that"}
    for status, words in lead.items():
        assert (words in abstract) == any(f.status == status and f.clause for f in fs), (status, abstract)
    n_rest = sum(1 for f in fs if not f.clause)
    assert f"The Conclusion states {n_rest} further finding" in abstract
    assert "paired t p" in abstract             # the verdict on the means names the test that fits the design
    assert "95% CI" in abstract and "paired Pitman–Morgan p" in abstract
    assert "Section" not in abstract and "??" not in abstract          # an abstract cites no section
    conclusion = text[text.rindex("Conclusion"):text.index("References", text.rindex("Conclusion"))]
    assert "Confirmed" in conclusion and "Not tested by this build" in conclusion
    # every replication verdict appears in the findings, and the timing row cannot be compared (other device)
    from paper.replication import replication_rows
    rows = {r.claim: r.verdict for r in replication_rows(_results_of(built))}
    assert rows["CFF: time per epoch, one- vs two-forward (their ratio two/one)"].word == "cannot compare"
    assert all(v.test for v in rows.values())


def _results_of(built) -> dict:
    _, _, paths, _ = built
    return {k: read_json(p) for k, p in paths.items()}


def test_html_noise_dose_table_names_every_dose(built):
    """Each dose heads its block of rows in the HTML as in the PDF (pandoc 2.17 read the row after
    booktabs' \\addlinespace as that command's argument and dropped the dose)."""
    _, out, _, _ = built
    html = _html(out)
    m = re.search(r'id="tab:noisedose"(.*?)</table>', html, re.S)
    if m is None:
        pytest.skip("no noise-dose record in this build")
    first = [_html_text(c).strip() for c in re.findall(r"<tr[^>]*>\s*<td[^>]*>(.*?)</td>", m.group(1), re.S)]
    doses = [float(x) for x in first if x]
    data = read_json(out / "numbers.json")
    want = [float(v["value"]) for k, v in data.items() if re.fullmatch(r"Nd[A-Z][a-z]+Dose", k)]
    assert doses == want and len(want) >= 3, (doses, want)


@needs_tex
def test_html_float_numbers_match_the_pdf(built):
    """Every figure and table of the HTML has the number LaTeX gave it, each caption appears once,
    and every link to a float shows that number."""
    from paper import layout
    _, out, _, _ = built
    html = _html(out)
    aux = (out / "manuscript.aux").read_text(encoding="latin-1")
    nums = {k: n for k, n in re.findall(r"\\newlabel\{((?:fig|tab):[^}]*)\}\{\{(\d+)\}", aux)}
    assert len(nums) >= 15 and layout.label_pages(aux)
    for lab, n in nums.items():
        kind = "Figure" if lab.startswith("fig:") else "Table"
        block = re.search(r'id="' + re.escape(lab) + r'"(.*?)</(?:figure|div)>', html, re.S)
        assert block, lab
        caps = re.findall(r"<(?:figcaption|caption)[^>]*>(.*?)</(?:figcaption|caption)>", block.group(1), re.S)
        assert len(caps) == 1 and _html_text(caps[0]).startswith(f"{kind} {n}: "), (lab, caps)
        for link in re.findall(r'<a href="#' + re.escape(lab) + r'"[^>]*>(.*?)</a>', html):
            assert _html_text(link) == n, (lab, link)
    assert 'lspace="0em"' in html


# ----------------------------------------------------------------------------- renderings: links, kills
_FAKE_LATEXMK = r'''#!/usr/bin/env python3
"""Stand-in latexmk: writes what pdflatex + bibtex leave, by name, in its working directory."""
import os, signal, sys
assert "\\documentclass" in open("manuscript.tex").read() and os.path.isdir("figures")
mode = os.environ.get("FAKE_LATEX", "ok")
open("manuscript.log", "w").write("This is a stand-in pdfTeX log\n")
if mode == "fail":
    open("manuscript.pdf", "wb").write(b"%PDF-1.5 half")
    print("! Undefined control sequence.")
    sys.exit(12)
open("manuscript.aux", "w").write("\\newlabel{references}{{}{9}}\n")
open("manuscript.bbl", "w").write("\\begin{thebibliography}{1}\\end{thebibliography}\n")
with open("manuscript.pdf", "wb") as f:
    f.write(b"%PDF-1.5\n")
    if mode == "kill":                      # the build is killed while the PDF is half-written
        f.flush()
        os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    f.write(b"1 0 obj << >> endobj\n%%EOF\n")
'''


@pytest.fixture
def fake_tex(tmp_path, monkeypatch):
    """PATH with a stand-in latexmk (and pdflatex/bibtex, which must exist) and an output directory
    holding what the manuscript stage writes."""
    import stat
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool, text in (("latexmk", _FAKE_LATEXMK), ("pdflatex", "#!/bin/sh\nexit 1\n"), ("bibtex", "#!/bin/sh\nexit 1\n"),
                       ("pandoc", "#!/usr/bin/env python3\nimport sys\na = sys.argv[1:]\n"
                                  "if a == ['--version']:\n    print('pandoc 3.1.2')\n    sys.exit(0)\n"
                                  "open(a[a.index('-o') + 1], 'w').write(open(a[-1]).read())\n")):
        (bin_ / tool).write_text(text)
        (bin_ / tool).chmod((bin_ / tool).stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "generated").mkdir()
    (out / "manuscript.tex").write_text("\\documentclass{article}\\begin{document}x\\end{document}\n")
    (out / "references.bib").write_text("@article{a, title={A}}\n")
    (out / "figures" / "f.pdf").write_bytes(b"%PDF-1.5 figure")
    return out


def test_renderings_never_write_through_a_link_planted_in_out(fake_tex, tmp_path):
    import paper.build as pb
    out = fake_tex
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    names = ("manuscript.log", "manuscript.aux", "manuscript.bbl", "manuscript.pdf", ".manuscript.html.tmp",
             "manuscript.html", "manuscript.html.tex")
    for name in names:
        (out / name).symlink_to(outside)
    pdf = pb._latex_pdf(out)
    html = pb._pandoc_html("\\section{A}\nText.\n", out)
    assert outside.read_text() == "precious\n"
    assert pdf.read_bytes().endswith(b"%%EOF\n") and "Text." in html.read_text()
    for name in ("manuscript.log", "manuscript.aux", "manuscript.bbl", "manuscript.pdf", "manuscript.html"):
        assert not (out / name).is_symlink() and (out / name).is_file(), name
    assert not [p.name for p in out.iterdir() if p.name.startswith((".latex.", ".pandoc."))]


def test_a_failed_or_killed_latex_run_never_leaves_a_half_written_pdf(fake_tex, monkeypatch):
    import subprocess
    import sys

    import paper.build as pb
    out = fake_tex
    # a build killed while latexmk writes the first PDF: no manuscript.pdf at all
    code = "import sys; from pathlib import Path; import paper.build as pb; pb._latex_pdf(Path(sys.argv[1]))"
    env = {**os.environ, "FAKE_LATEX": "kill", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    assert not (out / "manuscript.pdf").exists()
    left = [p for p in out.iterdir() if p.name.startswith(".latex.")]
    assert len(left) == 1 and (left[0] / "manuscript.pdf").read_bytes() == b"%PDF-1.5\n"   # the torn one, aside
    # the next build removes the killed one's directory and puts a complete PDF in place
    pdf = pb._latex_pdf(out)
    assert pdf.read_bytes().endswith(b"%%EOF\n") and not left[0].exists()
    # a failing run: one message naming the log, which is in out; the previous PDF stays whole
    good = pdf.read_bytes()
    monkeypatch.setenv("FAKE_LATEX", "fail")
    with pytest.raises(pb.RenderError, match=re.escape(str(out / "manuscript.log"))):
        pb._latex_pdf(out)
    assert (out / "manuscript.pdf").read_bytes() == good and (out / "manuscript.log").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".latex.")]
