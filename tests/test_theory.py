"""Tests of theory/: the symbolic identities, their negative controls, the autograd cross-check,
the CLI (verify JSON schema, show, help) and run_verify's reuse of a recorded result."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import sympy as sp
import torch

from theory import symbolic as S
from theory.autograd_check import (BOUNDARY_GAP, check_autograd, make_cases, symbolic_gradients,
                                   _positive_mask)
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
    assert S._zero(derived_c - S.paper_gradient("rep", mode, "N")) != 0
    # a missing 1/tau
    assert S._zero(derived_c - S.SYMS.tau * S.paper_gradient("rep", mode, "C")) != 0
    # the anchor gradient is not the A.6 one
    assert S._zero(S.derive("rep", mode, "anchor") - S.paper_gradient("rep", mode, "C")) != 0


def test_clamp_differs_from_none_and_margin_matters():
    assert S._zero(S.derive("sim", "clamp", "C") - S.derive("sim", "none", "C")) != 0
    # the paper's A.6 with the margin dropped is not the clamp gradient
    wrong = S.paper_gradient("sim", "clamp", "C").xreplace({S.SYMS.m: 0})
    assert S._zero(S.derive("sim", "clamp", "C") - wrong) != 0


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


def test_gradient_cases_latex():
    tex = S.gradient_cases_latex()
    assert len(tex) == 4
    assert any(v == "0" for v in tex.values())                  # the saturated case (A.5)
    assert all(isinstance(v, str) and v for v in tex.values())


def test_numeric_coefficients_closed_form():
    nc = S.numeric_coefficients("clamp")
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
    good = S.numeric_coefficients("clamp")
    bad = dataclasses.replace(good, anchor={**good.anchor, "R": good.anchor["C"]},
                              other={**good.other, "R": good.other["C"]})
    import theory.autograd_check as ac
    monkeypatch.setattr(ac, "numeric_coefficients", lambda mode: bad if mode == "clamp" else
                        S.numeric_coefficients(mode))
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
    assert set(data) >= {"identities", "autograd", "seconds"}
    assert all(set(i) >= {"name", "residual", "passed"} for i in data["identities"])
    assert all(i["passed"] and i["residual"] == "0" for i in data["identities"])
    assert data["autograd"]["cases"] == 120 and data["autograd"]["max_rel_err"] <= 1e-10
    assert isinstance(data["seconds"], float) and data["passed"] is True
    assert text.count("PASS") == len(data["identities"]) + 2 and "FAIL" not in text


def test_cli_verify_fails_on_impossible_tolerance(capsys):
    assert main(["verify", "--cases", "30", "--tol", "1e-300"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_cli_show_and_help(capsys):
    assert main(["show", "--latex"]) == 0
    out = capsys.readouterr().out
    assert "Eq. A.6" in out and "\\frac" in out
    with pytest.raises(SystemExit) as exc:
        main(["verify", "--help"])
    assert exc.value.code == 0
    assert "--cases" in capsys.readouterr().out


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
        assert S._zero(sp.Sum(x[j, i0], (j, 1, n)) - sp.Sum(x[j, j], (j, 1, n))) != 0
        assert S._zero(sp.Sum(x[j, i0], (j, 1, n)) - sp.Sum(x[k, i0], (k, 1, n))) == 0     # a true one


def test_normal_form_handles_double_sums():
    x = sp.IndexedBase("x")
    i, j, k, l, n, r = sp.symbols("i j k l n r", integer=True)
    nested = sp.Sum(sp.Sum(x[i, j], (i, 1, n)), (j, 1, r))          # sympy flattens to two limits
    assert len(nested.limits) == 2
    assert S._zero(nested - sp.Sum(x[k, l], (k, 1, n), (l, 1, r))) == 0             # renamed dummies
    assert S._zero(nested - sp.Sum(x[k, l], (k, 1, r), (l, 1, n))) != 0             # other ranges
    assert S._zero(sp.Sum(1, (i, 1, n), (j, 1, r)) - n * r) == 0
    # an inner bound that depends on the outer index
    tri = sp.Sum(x[i], (i, 1, j), (j, 1, r))
    assert S._zero(tri - sp.Sum(x[k], (k, 1, l), (l, 1, r))) == 0
    assert S._zero(tri - sp.Sum(x[k], (k, 1, r), (l, 1, r))) != 0
    # factors free of the inner index are pulled out at the right depth
    assert S._zero(sp.Sum(x[j] * x[i], (i, 1, n), (j, 1, r))
                   - sp.Sum(x[k], (k, 1, n)) * sp.Sum(x[l], (l, 1, r))) == 0
    # the derivation's own sum rule terminates on double sums too
    out = S._sum_rule(sp.Sum(x[i] * sp.KroneckerDelta(i, k) * x[j], (i, 1, n), (j, 1, r)))
    assert S._zero(out - x[k] * sp.Sum(x[j], (j, 1, r))) == 0


def test_normal_form_rejects_too_deep_nesting():
    x = sp.IndexedBase("x")
    idx = sp.symbols(f"q0:{S.CANON_DEPTH + 1}", integer=True)
    deep = sp.Sum(x[idx], *[(q, 1, 2) for q in idx])
    with pytest.raises(S.NormalFormError, match="nested deeper"):
        S._zero(deep)
