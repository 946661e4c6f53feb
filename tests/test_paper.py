"""Tests of the paper build (fast): synthetic, schema-correct result JSONs written here -> manuscript.

The heavy studies are NOT run: the test writes small results in the studies' schemas into a
temporary results directory and builds with ``reuse_only``.  It then checks that every number
in the rendered HTML/TeX is the value of the JSON field it claims to come from, that the HTML
is one self-contained file, and that missing results fail with a clear message.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from cffdyn.io import atomic_write_json, read_json
from paper.build import BuildConfig, build
from paper.jsonpath import resolve, resolve_one
from paper.numbers import format_value, macro_name
from paper.render_html import math_to_html, render_html
from paper.sources import STUDIES, MissingResultError, get_study, result_dir

SCALE = "quick"


# --------------------------------------------------------------------------- synthetic results
def _verify(rng) -> dict:
    ids = [{"name": f"identity {k} (d/ds min(s+m,1))", "residual": "0", "passed": True} for k in range(5)]
    return {"config": {"cases": 321, "seed": 0, "tol_rel": 1e-10}, "passed": True, "identities": ids,
            "autograd": {"cases": 321, "max_rel_err": 3.7e-15, "tol_rel": 1e-10, "passed": True},
            "seconds": 12.34}


def _vit(rng, root: Path) -> dict:
    from vit.stats import factorial_analysis
    levels = {"loss_mode": ["clamp", "subtract"], "method": ["cff2", "cff1"]}
    seeds = [0, 1, 2, 3]
    sd = {"clamp": 0.03, "subtract": 0.01}
    runs, data = [], {}
    out = result_dir(get_study("vit_study"), root, SCALE)
    for s in seeds:
        for lm in levels["loss_mode"]:
            for me in levels["method"]:
                acc = float(0.7 + sd[lm] * rng.standard_normal())
                car = float(rng.uniform(0.5, 0.7))
                rd = out / "runs" / f"loss_mode-{lm}__method-{me}__seed{s}__abc"
                per_layer = [{"layer": l, "car": car / (l + 1), "grad_norm": 1.0 / (l + 1)} for l in range(3)]
                atomic_write_json(rd / "result.json", {"test_acc": acc, "per_layer": per_layer})
                runs.append({"cell": {"loss_mode": lm, "method": me}, "seed": s, "metric": acc, "test_acc": acc,
                             "val_acc": acc, "best_epoch": 1, "car_layer0": car, "grad_norm_layer0": 1.0,
                             "epoch_time_s": (2.0 if me == "cff2" else 1.0) + 0.1 * s, "device": "cpu",
                             "run_dir": str(rd), "trained_now": True, "wall_s": 1.0})
                data.setdefault((lm, me), []).append(acc)
    an = factorial_analysis(["loss_mode", "method"], data, n_boot=200, n_perm=200)
    for c in an["cells"]:
        v = [r["car_layer0"] for r in runs if r["cell"] == c["levels"]]
        c["car_layer0_mean"] = sum(v) / len(v)
    base = {"dataset": "fashion_mnist", "subset": 500, "embed_dim": 32, "heads": 2, "layers": 3, "patch": 7,
            "epochs": 2, "head_epochs": 5, "batch_size": 128, "m0": 0.4, "m_last": 0.1, "tau": 0.15, "lr": 0.004}
    return {"config": {"base": base, "factors": [[k, v] for k, v in levels.items()], "n_seeds": len(seeds),
                       "n_boot": 200, "n_perm": 200, "metric": "test_acc"},
            "design": {"factors": list(levels)}, "status": "complete", "runs": runs, "analysis": an, "table": "",
            "timing": {"wall_s": 1.0}}


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
    return {"study": "convergence", "config": {"tau": 0.5, "m2": 3.0, "q0": 0.1, "t_end": 10.0, "trials": 64,
                                               "n_boot": 100, "Ns": [500, 1000, 2000, 4000, 8000]},
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
    return {"config": {"activations": ["tanh", "relu"], "taus": [0.5, 1.0], "m2": 3.0, "sn": 0.0}, "Q": Q.tolist(),
            "curves": curves, "learnability": {"tanh": {"kappa": 0.18181, "v": 0.075049}, "relu": {"kappa": 0.5, "v": 0.5}}}


def _phase(rng) -> dict:
    sweep = [{"kurtosis": k, "share_feature1": 0.4 + 0.1 * i, "share_feature2": 0.5 - 0.1 * i, "share_none": 0.1,
              "eigs_at_0": [0.01, 0.02468]} for i, k in enumerate((1.0, 4.0))]
    return {"config": {"m2": [1.2, 1.1], "tau": 0.2, "sgd_N": 2000, "n_grid_m4": 41}, "n_ics": 2813, "n_ics_m4": 1245,
            "share_feature1": 0.555,
            "share_feature2": 0.444, "share_none": 0.001, "m4_sweep": sweep}


def _noise(rng) -> dict:
    sn2 = [0.0, 0.5, 1.0]
    curves = [{"tau": tau, "rho": rho, "Q": [0.98, 0.9 + 0.01 * rho, 0.83 - 0.03 * rho],
               "vs_notes": [{"sn2": s, "ode": q, "notes": q} for s, q in zip(sn2, [0.98, 0.9 + 0.01 * rho, 0.83 - 0.03 * rho])],
               "max_abs_diff_notes": 1e-4 * tau} for tau in (1.0, 2.0) for rho in (0.0, -1.0)]
    sgd = [{"rho": rho, "sn2": s, "mean": 0.8 - 0.01 * rho, "sd": 0.01, "trials": 5} for rho in (0.0, -1.0) for s in sn2]
    return {"config": {"sn2": sn2, "sgd_tau": 1.0, "sgd_N": 2000, "sgd_trials": 5}, "curves": curves, "sgd": sgd}


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
    return {"config": {"m2": 3.0, "tau": 1.0, "margins": [0.1, 0.2, 0.3, 0.5], "sns": [0.0, 0.7], "batches": [1, 4],
                       "N": 2000, "trials": 64, "window": 100.0, "burn_corr": 5.0, "batch_corr": 10.0, "oja_tau": 0.25},
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
    missing = {s.name for s in STUDIES} - set(makers)
    assert not missing, f"test has no synthetic result for studies {missing}: add one"
    out = {}
    for st in STUDIES:
        p = result_dir(st, root, SCALE) / st.json_name
        atomic_write_json(p, makers[st.name]())
        out[st.name] = p
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(out["phase"].with_suffix(".png"))   # the phase study's own portrait (copied into the paper)
    plt.close(fig)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    paths = write_results(root)
    out = tmp_path_factory.mktemp("paper")
    summary = build(BuildConfig(results=root, out=out, reuse_only=True, pdf="never", quiet=True))
    return root, out, paths, summary


def _html_text(html: str) -> str:
    import html as h
    text = h.unescape(re.sub(r"<[^>]+>", "", html)).replace("\xa0", " ")
    return re.sub(r"[ \t]+", " ", text)


# --------------------------------------------------------------------------- tests
def test_every_number_matches_its_json(built):
    root, out, paths, summary = built
    numbers = read_json(out / "numbers.json")
    assert len(numbers) == summary["n_numbers"] > 40
    tex_full = (out / "manuscript.tex").read_text()
    html = (out / "manuscript.html").read_text()
    gen = "".join(p.read_text() for p in (out / "generated").glob("*.tex") if p.name != "numbers.tex")
    text = _html_text(html)
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
        elif isinstance(raw, list):
            assert len(raw) == 1
            raw = raw[0]
        assert rec["raw"] == pytest.approx(raw, rel=1e-12), macro
        if rec["fmt"] in ("p", "sci"):
            assert rec["value"] == format_value(raw, rec["fmt"], rec["scale"])
        else:
            assert rec["value"] == format(raw * rec["scale"] if rec["fmt"] != "d" else int(round(raw * rec["scale"])),
                                          rec["fmt"]), macro
        # the macro is defined in numbers.tex with exactly this value
        assert f"\\newcommand{{\\{macro}}}{{{rec['value']}}}" in (out / "generated" / "numbers.tex").read_text()
        if macro in used and rec["fmt"] != "sci":
            assert rec["value"] in text, f"\\{macro} = {rec['value']} not in the HTML"
            n_checked += 1
    assert n_checked > 30


def test_headline_numbers_independent(built):
    """Values recomputed here from the synthetic runs (not via the build's code) appear in the text."""
    root, out, paths, summary = built
    text = _html_text((out / "manuscript.html").read_text())
    d = read_json(paths["vit_study"])
    cells = {}
    for r in d["runs"]:
        cells.setdefault((r["cell"]["loss_mode"], r["cell"]["method"]), []).append(r["test_acc"])

    def pooled(level):
        ss = sum(np.sum((np.array(v) - np.mean(v)) ** 2) for k, v in cells.items() if k[0] == level)
        df = sum(len(v) - 1 for k, v in cells.items() if k[0] == level)
        return ss / df
    vr = pooled("clamp") / pooled("subtract")
    assert f"pooled variance ratio clamp/subtract is {vr:.2f}×" in text
    car = np.mean([r["car_layer0"] for r in d["runs"] if r["cell"]["loss_mode"] == "clamp"])
    assert f"layer-0 CAR of the clamp runs is {100 * car:.1f}%" in text
    assert "Steier reports 60.7% for CIFAR-10" in text   # literature value from source_numbers.json
    assert "on a 500-image Fashion-MNIST pool (90/10" in text   # literature value from source_numbers.json
    m = np.mean(cells[("clamp", "cff2")])
    assert f"{100 * m:.2f}" in text
    assert "321 random batches" in text and "5 of 5 identities" in text
    assert "spread 1.5 (BYOL-L2) vs 3.8 (IsoLoss)" in text
    assert "fitted exponent is -0.512 (95% bootstrap interval -0.550 to -0.470" in text
    rp = 1.1 / 1.7  # synthetic clamp cell m = 0.1, sn = 0.7, B = 1: (1 + m) / (1 + sn)
    assert f"the ratio is predicted as {rp:.3f}" in text and f"measured ratios are {1.02 * rp:.3f} [" in text
    assert "prediction lies inside the measured 95% interval for 14 of 15 arms" in text
    assert "feature 1 wins from 55.5% and feature 2 from 44.4% of 2813 initial conditions" in text
    assert "1245 initial conditions" in text


def test_html_is_self_contained(built):
    _, out, _, summary = built
    html = (out / "manuscript.html").read_text()
    assert "<script" not in html and "<link" not in html and "@import" not in html
    srcs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    imgs = re.findall(r"<img[^>]*src=\"([^\"]*)\"", html)
    assert len(imgs) >= 4
    for s in srcs:
        assert s.startswith(("data:image/png;base64,", "#", "http")) , s
    for s in imgs:
        assert s.startswith("data:image/png;base64,")
    assert not [s for s in srcs if s.startswith("http") and "<a" not in html]
    # the figures are also written as PNG + PDF, and every figure has a caption with a seed count
    for name in ("vit_cells", "vit_layers", "eigen_spread", "eigen_settings", "mf_convergence", "mf_hfunc",
                 "mf_noise", "mf_clamp"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
        assert (out / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
    figcaps = re.findall(r"<figure[^>]*>.*?<figcaption>(.*?)</figcaption>", html, re.S)
    assert len(figcaps) == 9
    for cap in figcaps:
        assert re.search(r"seed|no seeds", cap), cap
    for cap in re.findall(r"<div class=\"table\"[^>]*><figcaption>(.*?)</figcaption>", html, re.S):
        assert re.search(r"\bn\b|n =|seeds", cap), cap


def test_sections_and_replication_table(built):
    _, out, _, _ = built
    text = _html_text((out / "manuscript.html").read_text())
    for title in ("The losses and their gradients", "mean-field model", "Eigenmode dynamics", "ViT validation",
                  "Replication table", "Limitations"):
        assert title in text
    assert "reconstruction" in text and "documented choice" in text
    tab = re.search(r'<div class="table" id="tab:replication">(.*?)</div>', (out / "manuscript.html").read_text(), re.S)
    assert tab and tab.group(1).count("<tr>") >= 5
    assert "5.90×" in _html_text(tab.group(1))


def test_missing_result_is_a_clear_error(tmp_path):
    paths = write_results(tmp_path / "res")
    paths["vit_study"].unlink()
    with pytest.raises(MissingResultError, match=r"vit_study.*study\.json.*--reuse-only"):
        build(BuildConfig(results=tmp_path / "res", out=tmp_path / "out", reuse_only=True, pdf="never", quiet=True))
    # an incomplete (interrupted) study is also refused
    d = _vit(np.random.default_rng(1), tmp_path / "res")
    d["status"] = "running"
    atomic_write_json(paths["vit_study"], d)
    with pytest.raises(MissingResultError, match="incomplete"):
        build(BuildConfig(results=tmp_path / "res", out=tmp_path / "out", reuse_only=True, pdf="never", quiet=True))
    # the CLI reports it on stderr with exit status 2
    from paper.cli import main
    assert main(["build", "--reuse-only", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "o"),
                 "--pdf", "never", "--quiet"]) == 2


def test_renamed_json_field_is_a_clear_error(tmp_path):
    paths = write_results(tmp_path / "res")
    d = read_json(paths["verify"])
    d["autograd"]["max_err_renamed"] = d["autograd"].pop("max_rel_err")
    atomic_write_json(paths["verify"], d)
    with pytest.raises(ValueError, match=r"AutogradMaxErr.*max_rel_err.*not found"):
        build(BuildConfig(results=tmp_path / "res", out=tmp_path / "out", reuse_only=True, pdf="never", quiet=True))


def test_bad_config():
    with pytest.raises(ValueError, match="scale"):
        BuildConfig(scale="huge")
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
    assert format_value(0.0004, "p") == "<0.001" and format_value(0.0123, "p") == "0.012"
    assert format_value(3.7e-15, "sci") == "3.7\\times10^{-15}"
    assert format_value(None, ".2f") == "n/a" and format_value(float("nan"), ".2f") == "n/a"
    assert format_value(0.5, ".1f", 100.0) == "50.0"
    assert macro_name("src", "steier_vr_cifar10") == "SrcSteierVrCifarTen"
    assert macro_name("cff2") == "CffTwo"
    with pytest.raises(ValueError):
        format_value("x", ".2f")


def test_render_subset():
    tex = r"""\documentclass{article}\newcommand{\Foo}{4.20}\title{T}\begin{document}\maketitle
\section{S}\label{sec:s} Value \Foo{} and $\tau^{2} \le \frac{a}{b+1}$, see Table~\ref{tab:x} and Section~\ref{sec:s}.
\begin{table}\caption{Cap n = 3}\label{tab:x}\begin{tabular}{lc}\toprule a & b \\ \midrule 1 \& 2 & \Foo \\ \bottomrule\end{tabular}\end{table}
\begin{itemize}\item one \emph{two}\item three\end{itemize}
\end{document}"""
    html = render_html(tex, Path("."))
    t = _html_text(html)
    assert "Value 4.20 and τ2 ≤ a/(b+1), see Table 1 and Section 1." in t
    assert "<th>a</th>" in html and "<td>4.20</td>" in html and "<td>1 &amp; 2</td>" in html
    assert "<li>" in html and "<em>two</em>" in html
    with pytest.raises(ValueError, match="outside the supported subset"):
        render_html(r"\begin{document}\weird{x}\end{document}", Path("."))
    with pytest.raises(ValueError, match="undefined label"):
        render_html(r"\begin{document}\ref{nope}\end{document}", Path("."))
    assert math_to_html(r"\mathbb{E}[x_k]") == "𝔼[x<sub>k</sub>]"


@pytest.mark.slow
def test_quick_build_end_to_end(tmp_path):
    """``cffdyn paper build --quick`` from scratch (runs every study; minutes)."""
    from paper.cli import main
    rc = main(["build", "--quick", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "paper")])
    assert rc == 0
    s = read_json(tmp_path / "paper" / "build.json")
    assert all(v["status"] == "run" for v in s["studies"].values())
    assert (tmp_path / "paper" / "manuscript.html").stat().st_size > 100_000
    if shutil.which("pdflatex"):
        assert (tmp_path / "paper" / "manuscript.pdf").read_bytes()[:4] == b"%PDF"
