"""The whole theory verification: symbolic identities + autograd cross-check, as one study.

Python API (for the paper build)::

    from theory.verify import QUICK, FULL, VerifyConfig, run_verify
    result = run_verify(QUICK, "results/theory")   # -> dict, writes verify.json + verify.png

``run_verify`` reuses ``<out_dir>/verify.json`` when it is an intact record of this schema whose
``config`` equals the requested one and ``verify.png`` exists (:func:`cffdyn.records.reusable_record`);
otherwise it recomputes and writes the JSON atomically (``cffdyn.io``) and a histogram of the
per-case relative errors (``verify.png``).

Result schema::

    {"schema": 3, "config": {...}, "passed": bool, "residual_method": str,
     "identities": [{"name": str, "residual": str, "passed": bool}, ...],
     "mutations": [{"name": str, "residual": str, "flagged": bool}, ...],
     "autograd": {"cases": int, "max_rel_err": float, "floor": float, "tol_rel": float,
                  "passed": bool, "max_rel_err_unfloored": float, "max_abs_err_over_term": float,
                  "worst_unfloored_vs_mpmath": {...}, ...},
     "seconds": float, "seconds_by_phase": {...}, "versions": {...},
     "machine": {...cffdyn.machine.machine_info("cpu"), "load_avg_after": [...]}}

``residual`` is ``derived - reference`` brought to the package's own indexed-sum normal form
(:func:`theory.symbolic.canonical_residual`: canonical ``Dummy`` summation indices, one ``Sum`` per term,
constant factors pulled out, common denominator, expanded numerator), NOT sympy's
``simplify``; an identity passes when that normal form is exactly 0.  The normal form is
conservative: it may fail to cancel a true identity, never cancels a false one, and the
``mutations`` (deliberately wrong references) must all stay non-zero (``flagged``), which
shows it.  ``max_rel_err`` uses a floor of ``FLOOR`` (1e-4) of one gradient term, defined in
:mod:`theory.autograd_check`; ``max_rel_err_unfloored`` is the same without the floor, and the
worst un-floored cases are compared with a 100-digit mpmath reference.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from cffdyn.io import atomic_savefig, atomic_write_json, ensure_writable_dir
from cffdyn.records import record_header, reusable_record, study_timing

__all__ = ["VerifyConfig", "QUICK", "FULL", "verify", "run_verify", "format_report", "RESIDUAL_METHOD"]

#: version of the result layout; a recorded verify.json of another version is recomputed
SCHEMA = 3

RESIDUAL_METHOD = ("derived - reference in the package's own indexed-sum normal form "
                   "(theory.symbolic.canonical_residual: canonical Dummy indices, one Sum per term, constant "
                   "factors pulled out, common denominator, expanded numerator), not sympy simplify")


@dataclass(frozen=True)
class VerifyConfig:
    """cases: random autograd cases; seed: their RNG seed; tol_rel: pass threshold on max_rel_err."""

    cases: int = 10_000
    seed: int = 0
    tol_rel: float = 1e-10

    def __post_init__(self) -> None:
        if self.cases < 1:
            raise ValueError(f"cases={self.cases} must be >= 1 (a check of nothing cannot pass)")
        if not (math.isfinite(self.tol_rel) and self.tol_rel > 0):
            raise ValueError(f"tol_rel={self.tol_rel} must be a finite number > 0")


QUICK = VerifyConfig()
FULL = VerifyConfig(cases=100_000)


def verify(cfg: VerifyConfig = QUICK, *, per_case: bool = False) -> dict:
    """Run every identity and the autograd cross-check; returns the result dict (no files)."""
    import mpmath
    import sympy
    import torch

    from theory.autograd_check import check_autograd
    from theory.numeric import numeric_coefficients
    from theory.symbolic import identities, mutations

    from cffdyn.machine import machine_info

    machine = machine_info("cpu")      # timings mean little without the load they ran under
    t0 = time.perf_counter()
    ids = [{"name": name, "residual": str(res), "passed": bool(res == 0)} for name, res in identities()]
    t_sym = time.perf_counter() - t0
    tm = time.perf_counter()
    muts = [{"name": name, "residual": _short(res), "flagged": bool(res != 0)} for name, res in mutations()]
    t_mut = time.perf_counter() - tm
    t1 = time.perf_counter()
    for mode in ("none", "clamp", "subtract"):
        numeric_coefficients(mode)
    t_lam = time.perf_counter() - t1
    auto = check_autograd(cfg.cases, cfg.seed, per_case=per_case)
    auto["tol_rel"] = cfg.tol_rel
    auto["passed"] = bool(auto["max_rel_err"] <= cfg.tol_rel)
    timing = study_timing(t0, machine)
    return {
        **record_header(SCHEMA, cfg),
        "passed": bool(all(i["passed"] for i in ids) and all(m["flagged"] for m in muts) and auto["passed"]),
        "residual_method": RESIDUAL_METHOD,
        "identities": ids,
        "mutations": muts,
        "autograd": auto,
        "seconds": timing["seconds"],
        "seconds_by_phase": {"identities": t_sym, "mutations": t_mut, "lambdify": t_lam, **auto["seconds"]},
        "versions": {"sympy": sympy.__version__, "torch": torch.__version__, "mpmath": mpmath.__version__},
        "machine": timing["machine"],
    }


def _short(expr, limit: int = 200) -> str:
    """A residual as text, cut to ``limit`` characters (the mutated ones are long and non-zero)."""
    text = str(expr)
    return text if len(text) <= limit else text[:limit] + " ..."


def format_report(result: dict) -> str:
    """One line per identity and mutation control, then the autograd summary (``theory verify``)."""
    lines = []
    for i in result["identities"]:
        lines.append(f"{'PASS' if i['passed'] else 'FAIL'}  residual={i['residual']:<6} {i['name']}")
    for m in result.get("mutations", []):
        lines.append(f"{'PASS' if m['flagged'] else 'FAIL'}  mutation flagged (residual "
                     f"{'non-zero' if m['flagged'] else '0 - NOT caught'}): {m['name']}")
    a = result["autograd"]
    floor = a.get("floor")
    lines.append(
        f"{'PASS' if a['passed'] else 'FAIL'}  autograd: cases={a['cases']} max_rel_err={a['max_rel_err']:.3e} "
        f"(relative to max|g|, floored at {floor:g} of one gradient term 1/(tau|x|); tol {a['tol_rel']:.0e})")
    lines.append(
        f"      without the floor: max_rel_err_unfloored={a['max_rel_err_unfloored']:.3e}; "
        f"abs error/term {a['max_abs_err_over_term']:.3e}; loss {a['max_rel_err_loss']:.3e}; "
        f"{a.get('cases_below_floor', 0)} cases have max|g| below the floor")
    ext = a.get("worst_unfloored_vs_mpmath", {})
    if ext.get("cases"):
        lines.append(
            f"      worst {ext['cases']} un-floored cases vs mpmath ({ext['dps']} digits): |float64 - ref| "
            f"derived formulas {ext['symbolic_float64_max_abs_err']:.2e} "
            f"({ext['symbolic_float64_max_abs_err_over_term']:.1e} of a term), autograd "
            f"{ext['autograd_float64_max_abs_err']:.2e} ({ext['autograd_float64_max_abs_err_over_term']:.1e} "
            f"of a term); their gradients cancel to <= {ext['max_grad_over_term']:.1e} of a term: "
            f"cancellation in the case, not a formula error")
    n_ok = sum(i["passed"] for i in result["identities"])
    muts = result.get("mutations", [])
    n_flag = sum(m["flagged"] for m in muts)
    lines.append(f"{'PASS' if result['passed'] else 'FAIL'}  {n_ok}/{len(result['identities'])} identities "
                 f"exactly 0, {n_flag}/{len(muts)} mutations flagged non-zero (residuals from the "
                 f"package's indexed-sum normal form, not sympy simplify), autograd "
                 f"{'ok' if a['passed'] else 'FAILED'}; {result['seconds']:.1f} s"
                 + (f" (load average {result['machine']['load_avg'][0]:.2f} on {result['machine']['cpus']} CPUs)"
                    if result.get("machine", {}).get("load_avg") else ""))
    return "\n".join(lines)


def plot_errors(per_case: dict[str, list[float]], cfg: VerifyConfig, path: str | Path) -> Path:
    """Histogram of log10(per-case relative error) per loss mode."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.linspace(-18, -8, 41)
    for mode, errs in per_case.items():
        e = np.log10(np.maximum(np.asarray(errs, float), 1e-18))
        ax.hist(e, bins=bins, histtype="step", label=f"{mode} ({len(errs)} cases)")
    ax.axvline(np.log10(cfg.tol_rel), color="k", ls="--", label=f"tolerance {cfg.tol_rel:.0e}")
    ax.set_xlabel("log10 relative error of the full-batch gradient (symbolic vs autograd)")
    ax.set_ylabel("cases")
    ax.set_title(f"theory verify: {cfg.cases} random cases, seed {cfg.seed} (exact 0 shown at -18)",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic_savefig(fig, path, dpi=120, close=True)   # whole or not at all, never through a symlink


def run_verify(cfg: VerifyConfig = QUICK, out_dir: str | Path = "results/theory", *,
               force: bool = False) -> dict:
    """Run (or reuse) the verification; writes ``<out_dir>/verify.json`` and ``verify.png``."""
    out = Path(out_dir)
    jpath, ppath = out / "verify.json", out / "verify.png"
    if not force and (old := reusable_record(jpath, cfg, schema=SCHEMA, outputs=[ppath], keys=["passed"])) is not None:
        return old
    ensure_writable_dir(out, "out_dir")       # before the work, not after it
    result = verify(cfg, per_case=True)
    per_case = result["autograd"].pop("per_case_rel_err")
    plot_errors(per_case, cfg, ppath)
    atomic_write_json(jpath, result)
    return result
