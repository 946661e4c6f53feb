"""The whole theory verification: symbolic identities + autograd cross-check, as one study.

Python API (for the paper build)::

    from theory.verify import QUICK, FULL, VerifyConfig, run_verify
    result = run_verify(QUICK, "results/theory")   # -> dict, writes verify.json + verify.png

``run_verify`` reuses ``<out_dir>/verify.json`` when its recorded ``config`` equals the requested
one (and it passed); otherwise it recomputes and writes the JSON atomically (``cffdyn.io``) and a
histogram of the per-case relative errors (``verify.png``).

Result schema::

    {"config": {...}, "passed": bool,
     "identities": [{"name": str, "residual": str, "passed": bool}, ...],
     "autograd": {"cases": int, "max_rel_err": float, "tol_rel": float, "passed": bool, ...},
     "seconds": float, "seconds_by_phase": {...}, "versions": {...}}

``residual`` is ``str(simplify(derived - reference))``; an identity passes when it is exactly 0.
``max_rel_err`` is defined in :mod:`theory.autograd_check`.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cffdyn.io import atomic_write_json, read_json

__all__ = ["VerifyConfig", "QUICK", "FULL", "verify", "run_verify", "format_report"]


@dataclass(frozen=True)
class VerifyConfig:
    """cases: random autograd cases; seed: their RNG seed; tol_rel: pass threshold on max_rel_err."""

    cases: int = 10_000
    seed: int = 0
    tol_rel: float = 1e-10

    def __post_init__(self) -> None:
        if self.cases < 0:
            raise ValueError(f"cases={self.cases} must be >= 0")
        if not self.tol_rel > 0:
            raise ValueError(f"tol_rel={self.tol_rel} must be > 0")


QUICK = VerifyConfig()
FULL = VerifyConfig(cases=100_000)


def verify(cfg: VerifyConfig = QUICK, *, per_case: bool = False) -> dict:
    """Run every identity and the autograd cross-check; returns the result dict (no files)."""
    import sympy
    import torch

    from theory.autograd_check import check_autograd
    from theory.symbolic import identities, numeric_coefficients

    t0 = time.perf_counter()
    ids = [{"name": name, "residual": str(res), "passed": bool(res == 0)} for name, res in identities()]
    t_sym = time.perf_counter() - t0
    t1 = time.perf_counter()
    for mode in ("none", "clamp", "subtract"):
        numeric_coefficients(mode)
    t_lam = time.perf_counter() - t1
    auto = check_autograd(cfg.cases, cfg.seed, per_case=per_case)
    auto["tol_rel"] = cfg.tol_rel
    auto["passed"] = bool(auto["max_rel_err"] <= cfg.tol_rel)
    seconds = time.perf_counter() - t0
    return {
        "config": asdict(cfg),
        "passed": bool(all(i["passed"] for i in ids) and auto["passed"]),
        "identities": ids,
        "autograd": auto,
        "seconds": seconds,
        "seconds_by_phase": {"identities": t_sym, "lambdify": t_lam, **auto["seconds"]},
        "versions": {"sympy": sympy.__version__, "torch": torch.__version__},
    }


def format_report(result: dict) -> str:
    """One line per identity, then the autograd summary (what ``theory verify`` prints)."""
    lines = []
    for i in result["identities"]:
        lines.append(f"{'PASS' if i['passed'] else 'FAIL'}  residual={i['residual']:<6} {i['name']}")
    a = result["autograd"]
    lines.append(
        f"{'PASS' if a['passed'] else 'FAIL'}  autograd: cases={a['cases']} "
        f"max_rel_err={a['max_rel_err']:.3e} (tol {a['tol_rel']:.0e}; unfloored "
        f"{a['max_rel_err_unfloored']:.3e}, abs/term {a['max_abs_err_over_term']:.3e}, "
        f"loss {a['max_rel_err_loss']:.3e})")
    ext = a.get("worst_unfloored_vs_extended_precision", {})
    if ext.get("cases"):
        lines.append(f"      worst {ext['cases']} un-floored cases vs extended precision: symbolic float64 "
                     f"{ext['symbolic_float64_vs_extended']:.2e}, autograd float64 "
                     f"{ext['autograd_float64_vs_extended']:.2e} (ill-conditioned cancellation)")
    n_ok = sum(i["passed"] for i in result["identities"])
    lines.append(f"{'PASS' if result['passed'] else 'FAIL'}  {n_ok}/{len(result['identities'])} identities, "
                 f"autograd {'ok' if a['passed'] else 'FAILED'}; {result['seconds']:.1f} s")
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def run_verify(cfg: VerifyConfig = QUICK, out_dir: str | Path = "results/theory", *,
               force: bool = False) -> dict:
    """Run (or reuse) the verification; writes ``<out_dir>/verify.json`` and ``verify.png``."""
    out = Path(out_dir)
    jpath, ppath = out / "verify.json", out / "verify.png"
    if not force and jpath.exists() and ppath.exists():
        try:
            old = read_json(jpath)
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict) and old.get("config") == asdict(cfg) and "passed" in old:
            return old
    result = verify(cfg, per_case=True)
    per_case = result["autograd"].pop("per_case_rel_err")
    plot_errors(per_case, cfg, ppath)
    atomic_write_json(jpath, result)
    return result
