"""Tests of theory/: the symbolic identities, their negative controls, the autograd cross-check,
the CLI (verify JSON schema, show, help) and run_verify's reuse of a recorded result."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import sympy as sp
import torch

from theory import notation as N
from theory import numeric as NC
from theory import symbolic as S
from theory.autograd_check import (BOUNDARY_GAP, check_autograd, make_cases, symbolic_gradients,
                                   _positive_mask)
from cffdyn.errors import UserError
from theory.cli import main
from theory.verify import VerifyConfig, run_verify


def test_every_identity_is_exactly_zero():
    ids = S.identities()
    assert len(ids) >= 30
    bad = [(name, res) for name, res in ids if res != 0]
    assert not bad


@pytest.mark.parametrize("mode", ["clamp", "none"])
def test_identity_check_detects_wrong_formulas(mode):
    """Negative controls: the residual machinery does not return 0 for wrong references."""
    derived_c = S.derive("rep", mode, "C")
    # swapped case (A.6 vs A.7)
    assert S.canonical_residual(derived_c - S.paper_gradient("rep", mode, "N")) != 0
    # a missing 1/tau
    assert S.canonical_residual(derived_c - S.SYMS.tau * S.paper_gradient("rep", mode, "C")) != 0
    # the anchor gradient is not the A.6 one
    assert S.canonical_residual(S.derive("rep", mode, "anchor") - S.paper_gradient("rep", mode, "C")) != 0


def test_clamp_differs_from_none_and_margin_matters():
    assert S.canonical_residual(S.derive("sim", "clamp", "C") - S.derive("sim", "none", "C")) != 0
    # the paper's A.6 with the margin dropped is not the clamp gradient
    wrong = S.paper_gradient("sim", "clamp", "C").xreplace({S.SYMS.m: 0})
    assert S.canonical_residual(S.derive("sim", "clamp", "C") - wrong) != 0


def test_sympy_min_boundary_convention_vs_torch():
    x, m = sp.symbols("x m", real=True)
    dq = sp.diff(sp.Min(x + m, 1), x)
    assert dq.subs(x, 1 - m) == sp.Rational(1, 2)            # sympy: Heaviside(0) = 1/2
    s = torch.tensor(0.75, dtype=torch.float64, requires_grad=True)
    torch.clamp(s + 0.25, max=1.0).backward()
    assert s.grad.item() == 1.0                                 # torch: gradient 1 on the boundary


def test_to_piecewise_makes_min_lambdifiable_for_torch():
    x, m = sp.symbols("x m", real=True)
    expr = sp.exp(sp.Min(x + m, 1) / 2)
    with pytest.raises(TypeError):
        sp.lambdify((x, m), expr, modules="torch")(torch.tensor([0.1, 0.9]), torch.tensor(0.3))
    f = sp.lambdify((x, m), S.to_piecewise(expr), modules="torch")
    xs = torch.tensor([0.1, 0.69, 0.71, 0.9], dtype=torch.float64)
    got = f(xs, torch.tensor(0.3, dtype=torch.float64))
    assert torch.allclose(got, torch.exp(torch.clamp(xs + 0.3, max=1.0) / 2), rtol=1e-15)


def test_numeric_coefficients_closed_form():
    nc = NC.numeric_coefficients("clamp")
    s, m, tau, P, Z = 0.3, 0.4, 0.2, 3.0, 50.0
    assert nc.other["R"](s, m, tau, P, Z) == 0
    assert np.isclose(nc.other["C"](s, m, tau, P, Z), (-1 / P + np.exp((s + m) / tau) / Z) / tau, rtol=1e-14)
    assert np.isclose(nc.anchor["N"](s, m, tau, P, Z), np.exp(s / tau) / (Z * tau), rtol=1e-14)
    assert np.isclose(nc.z_term["C"](0.7, m, tau), np.exp(1 / tau), rtol=1e-14)   # clamped
    assert np.isclose(nc.z_term["C"](0.5, m, tau), np.exp(0.9 / tau), rtol=1e-14)


def test_case_generator_coverage():
    cases = make_cases(300, 11)
    assert {c.mode for c in cases} == {"none", "clamp", "subtract"}
    gaps, no_pos, near_above, near_below = [], 0, 0, 0
    for c in cases:
        pos = _positive_mask(c.labels, c.n_views)
        no_pos += int((~pos.any(1)).sum())
        if pos.any():
            z = c.x / np.linalg.norm(c.x, axis=1, keepdims=True)
            d = (z @ z.T)[pos] + c.margin - 1.0
            gaps.append(np.min(np.abs(d)))
            near_above += int(np.sum((d > 0) & (d < 1e-4)))
            near_below += int(np.sum((d < 0) & (d > -1e-4)))
    assert min(gaps) >= BOUNDARY_GAP
    assert no_pos > 0 and near_above > 0 and near_below > 0
    assert 0.05 <= min(c.tau for c in cases) and max(c.tau for c in cases) <= 1.0
    assert 0.0 <= min(c.margin for c in cases) and max(c.margin for c in cases) <= 2.0


def test_autograd_agreement_small():
    res = check_autograd(300, 7)
    assert res["cases"] == 300
    assert res["max_rel_err"] <= 1e-10
    assert res["max_rel_err_loss"] <= 1e-10
    assert res["pairs"]["clamp_active_R"] > 0 and res["anchors_without_positive"] > 0


def test_autograd_check_detects_an_ignored_clamp(monkeypatch):
    """Negative control: treating saturated pairs like unsaturated ones must fail the check."""
    good = NC.numeric_coefficients("clamp")
    bad = dataclasses.replace(good, anchor={**good.anchor, "R": good.anchor["C"]},
                              other={**good.other, "R": good.other["C"]})
    import theory.autograd_check as ac
    monkeypatch.setattr(ac, "numeric_coefficients", lambda mode: bad if mode == "clamp" else
                        NC.numeric_coefficients(mode))
    assert ac.check_autograd(150, 3)["per_mode"]["clamp"]["max_rel_err"] > 1e-3


def test_symbolic_gradients_rejects_mixed_modes():
    cases = make_cases(3, 0)
    with pytest.raises(ValueError, match="one mode"):
        symbolic_gradients(cases)


def test_cli_verify_json_schema(tmp_path, capsys):
    out = tmp_path / "v.json"
    rc = main(["verify", "--cases", "120", "--seed", "2", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data) >= {"identities", "mutations", "autograd", "seconds", "residual_method"}
    assert "normal form" in data["residual_method"] and "not sympy simplify" in data["residual_method"]
    assert all(set(i) >= {"name", "residual", "passed"} for i in data["identities"])
    assert all(i["passed"] and i["residual"] == "0" for i in data["identities"])
    assert data["mutations"] and all(m["flagged"] and m["residual"] != "0" for m in data["mutations"])
    a = data["autograd"]
    assert a["cases"] == 120 and a["max_rel_err"] <= 1e-10 and a["floor"] == 1e-4
    assert a["max_rel_err"] <= a["max_rel_err_unfloored"]          # the floor only ever lowers it
    mp = a["worst_unfloored_vs_mpmath"]
    assert mp["dps"] == 100 and mp["cases"] == 20
    assert mp["symbolic_float64_max_abs_err_over_term"] < 1e-14 and mp["autograd_float64_max_abs_err_over_term"] < 1e-14
    assert isinstance(data["seconds"], float) and data["passed"] is True
    assert data["machine"]["device"] == "cpu" and data["machine"]["cpus"] >= 1 and "load_avg_after" in data["machine"]
    n_pass = len(data["identities"]) + len(data["mutations"]) + 2
    assert text.count("PASS") == n_pass and "FAIL" not in text
    assert "floored at 0.0001 of one gradient term" in text and "without the floor" in text
    assert "mpmath (100 digits)" in text and "not sympy simplify" in text


def test_cli_verify_out_dir_is_what_the_paper_build_reads(tmp_path, capsys):
    """The --reuse-only advice names 'cffdyn theory verify ... --out DIR': that option exists."""
    from paper.sources import MissingResultError, get_study, obtain

    study = get_study("verify")
    with pytest.raises(MissingResultError, match=r"cffdyn theory verify \.\.\. --out") as exc:
        obtain(study, tmp_path / "res", "quick", reuse_only=True)
    out_dir = str(exc.value).split("--out ")[-1].split("'")[0]
    assert main(["verify", "--cases", "30", "--out", out_dir]) == 0
    res = obtain(study, tmp_path / "res", "quick", reuse_only=True)
    assert res.data["autograd"]["cases"] == 30 and res.png_path is not None


def _one_line(argv, capsys, monkeypatch):
    """Run the CLI as the console does; the verification itself must never start."""
    import theory.verify as tv
    from cffdyn.errors import guarded

    monkeypatch.setattr(tv, "verify", lambda *a, **k: pytest.fail("work started before the check"))
    try:
        rc = guarded(main, argv, "cffdyn theory")
    except SystemExit as exc:            # argparse errors exit from the parser itself
        rc = exc.code
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.mark.parametrize("argv, needle", [
    (["verify", "--tol", "nan"], "--tol"),
    (["verify", "--tol", "0"], "--tol"),
    (["verify", "--tol", "inf"], "--tol"),
    (["verify", "--cases", "0"], "--cases"),
    (["verify", "--cases", "-3"], "--cases"),
    (["verify", "--seed", "-1"], "--seed"),
    (["verify", "--case", "5"], "--case"),              # abbreviations are refused, not guessed
    (["verify", "--js", "x.json"], "--js"),
    (["show", "--format", "html"], "--format"),
    (["show", "--form", "md"], "--form"),
    (["bench", "--loop-cases", "0"], "--loop-cases"),
])
def test_cli_bad_options_are_one_line(argv, needle, capsys, monkeypatch):
    rc, err = _one_line(argv, capsys, monkeypatch)
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err and "Traceback" not in err


def test_cli_unwritable_outputs_fail_before_the_work(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    cases = [(["verify", "--json", str(tmp_path)], "--json"),                  # a directory
             (["verify", "--json", str(a_file / "v.json")], "--json"),         # under a file
             (["verify", "--out", str(a_file)], "--out"),
             (["verify", "--plot", str(tmp_path / "p.txt")], "--plot"),
             (["show", "--out", str(a_file / "t.md")], "--out")]
    import os
    if os.geteuid() != 0:                                                       # root writes anywhere
        cases += [(["verify", "--json", str(ro / "v.json")], "--json"), (["verify", "--out", str(ro / "d")], "--out")]
    try:
        for argv, needle in cases:
            rc, err = _one_line(argv, capsys, monkeypatch)
            assert rc == 2 and len(err.splitlines()) == 1 and needle in err, (argv, err)
    finally:
        ro.chmod(0o700)


def test_verify_config_refuses_nothing_and_nan():
    with pytest.raises(ValueError, match="cases"):
        VerifyConfig(cases=0)
    with pytest.raises(ValueError, match="tol_rel"):
        VerifyConfig(tol_rel=float("nan"))


def test_cli_verify_fails_on_impossible_tolerance(capsys):
    assert main(["verify", "--cases", "30", "--tol", "1e-300"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_show_table_markdown_and_latex(tmp_path, capsys):
    from theory.show import LEGEND, rows

    rs = rows()
    assert len(rs) == 20 and all(r.exact and r.residual == "0" for r in rs)
    assert {(r.mode, r.tau) for r in rs} == {(m, t) for m in ("clamp", "subtract", "none") for t in ("1", "general")}
    # the derived and the paper column are written in the same notation and layout
    assert all(r.paper == r.derived for r in rs)
    assert main(["show", "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert "| loss | $\\tau$ | case | paper | derived | residual |" in md and md.count("\n| clamp |") == 8
    assert "not sympy's simplify" in md
    # every symbol the formulas use is in the legend
    legend = " ".join(sym for sym, _ in LEGEND)
    for sym in ("f_a", "f_{C,j}", "s_{C,j}", "Z_i", "r,\\ c,\\ n", "P(i)", "N(i)", "R^c(i)", "\\tau", "m", "j,\\ l", "D"):
        assert sym in legend, sym
    for token in ("f_{C,", "s_{C,", "f_{a,e}", "Z_i", "s_{N,", "f_{N,"):
        assert token in md
    assert "{s_{C}}" not in md and "{f_{a}}_{e}" not in md     # no sympy Indexed notation left
    out = tmp_path / "t.tex"
    assert main(["show", "--format", "latex", "--out", str(out)]) == 0
    tex = out.read_text()
    assert "\\begin{align*}" in tex and "\\begin{description}" in tex and tex.count("residual:") == 20


@pytest.mark.skipif(__import__("shutil").which("pdflatex") is None, reason="pdflatex not installed")
def test_show_latex_compiles(tmp_path):
    import subprocess

    from theory.show import render

    (tmp_path / "t.tex").write_text(render("latex"))
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\\usepackage{amsmath}\n\\begin{document}\n"
                                      "\\input{t}\n\\end{document}\n")
    r = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["verify", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--cases" in text and "--out DIR" in text and text.count("(default:") == text.count("default:")


def test_paper_gradient_cases_use_the_legend_notation():
    tex = N.gradient_cases_latex()
    assert len(tex) == 4 and list(tex.values()).count("0") == 1                 # the saturated case (A.5)
    assert all("^" not in name and "\\" not in name for name in tex)          # plain-text titles
    joined = " ".join(tex.values())
    assert "Z_i" in joined and "f_{a,e}" in joined and "s_{C," in joined and "{f_{a}}" not in joined


def test_mp_reference_agrees_with_autograd():
    """The 100-digit reference is an independent implementation: it must agree with autograd
    (to float64 rounding) on ordinary cases of every mode, and see the clamp."""
    from theory.autograd_check import autograd_gradients, mp_reference_gradient

    cases = make_cases(9, 21)
    for c in cases:
        ref = np.array([[float(v) for v in row] for row in mp_reference_gradient(c, dps=40)])
        ga, _ = autograd_gradients(c)
        g_term = float(np.max(1.0 / (c.tau * np.linalg.norm(c.x, axis=1))))
        assert np.max(np.abs(ref - ga)) <= 1e-13 * g_term
    c = next(c for c in make_cases(60, 5) if c.mode == "clamp")
    # ignoring the clamp (margin as a plain shift) changes the reference
    shifted = dataclasses.replace(c, mode="none")
    ref_c = np.array([[float(v) for v in row] for row in mp_reference_gradient(c, dps=30)])
    ref_n = np.array([[float(v) for v in row] for row in mp_reference_gradient(shifted, dps=30)])
    assert np.max(np.abs(ref_c - ref_n)) > 1e-6


def test_run_verify_writes_and_reuses(tmp_path, monkeypatch):
    cfg = VerifyConfig(cases=60, seed=4)
    res = run_verify(cfg, tmp_path)
    assert res["passed"] and (tmp_path / "verify.json").exists() and (tmp_path / "verify.png").exists()
    import theory.verify as tv
    monkeypatch.setattr(tv, "verify", lambda *a, **k: pytest.fail("recomputed despite a recorded result"))
    again = run_verify(cfg, tmp_path)
    assert again["autograd"]["max_rel_err"] == res["autograd"]["max_rel_err"]
    with pytest.raises(ValueError):
        VerifyConfig(cases=-1)
    # a result recorded by an older version (other schema) is recomputed, not reused
    old = json.loads((tmp_path / "verify.json").read_text())
    old["schema"] = 1
    (tmp_path / "verify.json").write_text(json.dumps(old))
    calls = []
    monkeypatch.setattr(tv, "verify", lambda *a, **k: calls.append(1) or {**res, "autograd": {
        **res["autograd"], "per_case_rel_err": {"none": [1e-15]}}})
    run_verify(cfg, tmp_path)
    assert calls == [1] and json.loads((tmp_path / "verify.json").read_text())["schema"] == tv.SCHEMA
    # an out_dir that is a file is refused before any work
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(tv, "verify", lambda *a, **k: pytest.fail("work started"))
    from cffdyn.errors import UserError
    with pytest.raises(UserError, match="out_dir"):
        run_verify(VerifyConfig(cases=61, seed=4), tmp_path / "file")


# --------------------------------------------------------------------------- normal form
def test_mutation_controls_are_all_flagged_nonzero():
    """Sign flips, a dropped 1/|P|, e^{(s+m)/tau} -> e^{s/tau}, tau misplaced (general tau only:
    at tau = 1 they are no mutation), and a subtraction loss that breaks neutrality."""
    muts = S.mutations()
    names = " | ".join(n for n, _ in muts)
    for what in ("sign flipped", "1/|P| dropped", "e^{(s+m)/tau} -> e^{s/tau}", "outside the temperature",
                 "1/tau dropped", "tau on the", "dL_sub - dL_none", "L_sub - L_none - m"):
        assert what in names, what
    assert not [n for n, r in muts if r == 0]
    assert not [n for n, _ in muts if "tau=1" in n and ("temperature" in n or "1/tau" in n or "tau on" in n)]


def test_normal_form_ignores_free_symbols_named_like_its_indices():
    x = sp.IndexedBase("x")
    j, k, n = sp.symbols("j k n", integer=True)
    for i0 in (sp.Symbol("i0", integer=True), sp.Symbol("i0"), sp.Symbol("_i0", integer=True)):
        # sum_j x[j, i0] (i0 free) is not sum_j x[j, j]; a plain Symbol("i0") as canonical index
        # would capture the free i0 and cancel this to 0
        assert S.canonical_residual(sp.Sum(x[j, i0], (j, 1, n)) - sp.Sum(x[j, j], (j, 1, n))) != 0
        assert S.canonical_residual(sp.Sum(x[j, i0], (j, 1, n)) - sp.Sum(x[k, i0], (k, 1, n))) == 0     # a true one


def test_normal_form_handles_double_sums():
    x = sp.IndexedBase("x")
    i, j, k, l, n, r = sp.symbols("i j k l n r", integer=True)
    nested = sp.Sum(sp.Sum(x[i, j], (i, 1, n)), (j, 1, r))          # sympy flattens to two limits
    assert len(nested.limits) == 2
    assert S.canonical_residual(nested - sp.Sum(x[k, l], (k, 1, n), (l, 1, r))) == 0             # renamed dummies
    assert S.canonical_residual(nested - sp.Sum(x[k, l], (k, 1, r), (l, 1, n))) != 0             # other ranges
    assert S.canonical_residual(sp.Sum(1, (i, 1, n), (j, 1, r)) - n * r) == 0
    # an inner bound that depends on the outer index
    tri = sp.Sum(x[i], (i, 1, j), (j, 1, r))
    assert S.canonical_residual(tri - sp.Sum(x[k], (k, 1, l), (l, 1, r))) == 0
    assert S.canonical_residual(tri - sp.Sum(x[k], (k, 1, r), (l, 1, r))) != 0
    # factors free of the inner index are pulled out at the right depth
    assert S.canonical_residual(sp.Sum(x[j] * x[i], (i, 1, n), (j, 1, r))
                   - sp.Sum(x[k], (k, 1, n)) * sp.Sum(x[l], (l, 1, r))) == 0
    # the derivation's own sum rule terminates on double sums too
    out = S.sum_rule(sp.Sum(x[i] * sp.KroneckerDelta(i, k) * x[j], (i, 1, n), (j, 1, r)))
    assert S.canonical_residual(out - x[k] * sp.Sum(x[j], (j, 1, r))) == 0


def test_normal_form_rejects_too_deep_nesting():
    x = sp.IndexedBase("x")
    idx = sp.symbols(f"q0:{S.CANON_DEPTH + 1}", integer=True)
    deep = sp.Sum(x[idx], *[(q, 1, 2) for q in idx])
    with pytest.raises(S.NormalFormError, match="nested deeper"):
        S.canonical_residual(deep)


def test_verify_cases_beyond_memory_are_refused_before_work(tmp_path, monkeypatch, capsys):
    """--cases 100000000000: one line with the estimate, nothing made, nothing computed."""
    import theory.cli as tc
    import theory.verify as tv
    from cffdyn.errors import guarded
    monkeypatch.setattr(tv, "verify", lambda *a, **k: pytest.fail("verify ran"))
    out = tmp_path / "never"
    rc = guarded(lambda a: main(["verify", "--cases", "100000000000", "--out", str(out)]), None, "cffdyn theory")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "GiB" in err and "--cases <=" in err
    assert not out.exists()
    # the bound is the estimate: half the RAM over the bytes per case
    ram = __import__("os").sysconf("SC_PHYS_PAGES") * __import__("os").sysconf("SC_PAGE_SIZE")
    fit = (ram // 2) // tc.BYTES_PER_CASE
    tc.check_cases_fit(fit)
    with pytest.raises(UserError):
        tc.check_cases_fit(fit + 1)
    tc.check_cases_fit(100_000)            # the paper's full check fits on any machine that runs it


def test_run_verify_recomputes_an_edited_or_unhashed_result(tmp_path, monkeypatch):
    import theory.verify as tv
    from cffdyn.io import HASH_KEY
    cfg = VerifyConfig(cases=20, seed=1)
    res = run_verify(cfg, tmp_path)
    j = tmp_path / "verify.json"
    for damage in ("edit", "unhashed"):
        rec = json.loads(j.read_text())
        if damage == "edit":
            rec["autograd"]["max_rel_err"] = 0.0          # a fabricated perfect agreement, old hash kept
        else:
            rec.pop(HASH_KEY)                               # written by older code
        j.write_text(json.dumps(rec))
        calls = []
        monkeypatch.setattr(tv, "verify", lambda *a, _c=calls, **k: _c.append(1) or {
            **res, "autograd": {**res["autograd"], "per_case_rel_err": {"none": [1e-15]}}})
        run_verify(cfg, tmp_path)
        assert calls == [1], damage
        assert json.loads(j.read_text())["autograd"]["max_rel_err"] == res["autograd"]["max_rel_err"]
