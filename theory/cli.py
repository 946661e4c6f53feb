"""``cffdyn theory`` (also ``python -m theory``): the symbolic gradient checks.

Sub-commands
------------
verify  every symbolic identity (CFF Eq. 18, A.5-A.7 at τ = 1 and general τ; Steier's
        Prop. 4.1; saturated-pair zero; shifted-logit equivalence) with its residual and
        PASS/FAIL, then the autograd cross-check of ``vit.losses.supcon_loss``; exits 1 on any
        failure; ``--json`` writes the same as JSON (atomically).
show    the derived gradient expressions of the four cases of CFF Appendix A.1 (``--latex``).
bench   times every phase of ``verify`` and compares the vectorised evaluation of the derived
        formulas with a per-case evaluation (ratio printed).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main"]


def _parser(prog: str | None) -> argparse.ArgumentParser:
    from theory.verify import QUICK

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=fmt,
        description="Symbolic derivation of the CFF margin-loss gradients (sympy) and their "
                    "cross-check against torch autograd of vit.losses.supcon_loss.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{verify,show,bench}")
    v = sub.add_parser("verify", formatter_class=fmt,
                       help="check every identity and the autograd agreement; non-zero exit on failure",
                       description="Print one line per symbolic identity (name, residual, PASS/FAIL) "
                                   "and the autograd summary (cases, max relative error).")
    v.add_argument("--cases", type=int, default=QUICK.cases,
                   help="number of random autograd cases (batch size, views, labels, dim, mode, m, tau)")
    v.add_argument("--seed", type=int, default=QUICK.seed, help="seed of the random cases")
    v.add_argument("--tol", type=float, default=QUICK.tol_rel,
                   help="pass threshold on the maximum relative gradient error (float64)")
    v.add_argument("--json", metavar="PATH", default=None,
                   help="also write the result as JSON to PATH (atomic write); none if omitted")
    v.add_argument("--plot", metavar="PATH", default=None,
                   help="also write a histogram of the per-case errors (PNG) to PATH; none if omitted")
    s = sub.add_parser("show", formatter_class=fmt, help="print the derived gradient expressions",
                       description="Print the derived clamp-mode gradients of the four cases of CFF "
                                   "Appendix A.1 and the lambdified per-pair coefficients.")
    s.add_argument("--latex", action="store_true", help="print LaTeX instead of sympy's plain text")
    s.add_argument("--tau-one", action="store_true",
                   help="set tau = 1 (the paper's Eq. 18, A.5-A.7) instead of a general tau")
    b = sub.add_parser("bench", formatter_class=fmt, help="time the verification phases",
                       description="Time every phase of 'verify' (goal: < 30 s in total on 2 cores) "
                                   "and compare the vectorised evaluation of the derived formulas "
                                   "with a per-case evaluation, side by side in one run.")
    b.add_argument("--cases", type=int, default=QUICK.cases, help="number of random autograd cases")
    b.add_argument("--seed", type=int, default=QUICK.seed, help="seed of the random cases")
    b.add_argument("--loop-cases", type=int, default=600,
                   help="cases evaluated one at a time for the vectorised-vs-loop ratio")
    return p


def _cmd_verify(args: argparse.Namespace) -> int:
    from cffdyn.io import atomic_write_json
    from theory.verify import VerifyConfig, format_report, plot_errors, verify

    cfg = VerifyConfig(cases=args.cases, seed=args.seed, tol_rel=args.tol)
    result = verify(cfg, per_case=args.plot is not None)
    per_case = result["autograd"].pop("per_case_rel_err", None)
    print(format_report(result))
    if args.plot is not None and per_case is not None:
        plot_errors(per_case, cfg, args.plot)
    if args.json is not None:
        atomic_write_json(args.json, result)
    return 0 if result["passed"] else 1


def _cmd_show(args: argparse.Namespace) -> int:
    import sympy as sp

    from theory.symbolic import gradient_cases, numeric_coefficients

    tau = sp.Integer(1) if args.tau_one else None
    for name, expr in gradient_cases(tau).items():
        print(f"# dL_i/df_k[e], {name}")
        print(sp.latex(expr) if args.latex else sp.sstr(expr))
        print()
    print("# per-pair coefficients dL_i/ds_ik (s: the pair's similarity, P = |P(i)|, Z: denominator)")
    for mode in ("none", "clamp", "subtract"):
        for key, expr in numeric_coefficients(mode).exprs.items():
            print(f"{mode:<8} {key:<9} {sp.latex(expr) if args.latex else sp.sstr(expr)}")
    return 0


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = _parser(prog).parse_args(argv)
    if getattr(args, "cases", 0) < 0:
        print("error: --cases must be >= 0", file=sys.stderr)
        return 2
    if args.cmd == "verify":
        return _cmd_verify(args)
    if args.cmd == "show":
        return _cmd_show(args)
    from theory.bench import run_bench
    run_bench(args.cases, args.seed, args.loop_cases)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
