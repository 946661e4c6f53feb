"""``cffdyn theory`` (also ``python -m theory``): the symbolic gradient checks.

Sub-commands
------------
verify  every symbolic identity (CFF Eq. 18, A.5-A.7 at τ = 1 and general τ; Steier's
        Prop. 4.1; saturated-pair zero; shifted-logit equivalence) with its residual and
        PASS/FAIL, the mutation controls (deliberately wrong references that must give a
        non-zero residual), then the autograd cross-check of ``vit.losses.supcon_loss`` (with
        and without the 1e-4 floor, worst cases against a 100-digit mpmath reference); exits 1
        on any failure.  ``--json PATH`` writes the result as JSON, ``--out DIR`` writes
        ``DIR/verify.json`` and ``DIR/verify.png`` (what ``cffdyn paper build`` reads).
show    the side-by-side table of the paper's gradient formulas, the derived ones and the
        residual for every case, loss form and τ, with a notation legend
        (``--format md|latex``, ``--out FILE``).
bench   times every phase of ``verify`` and compares the vectorised evaluation of the derived
        formulas with a per-case evaluation (ratio printed).

Every output path is checked before any work starts; bad options end in one line (exit 2).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Sequence

from cffdyn.errors import HelpFormatter, UserError, make_parser, nonneg_int, positive_float, positive_int

__all__ = ["main"]


def _parser(prog: str | None) -> argparse.ArgumentParser:
    from theory.verify import QUICK

    p = make_parser(
        prog=prog,
        description="Symbolic derivation of the CFF margin-loss gradients (sympy) and their "
                    "cross-check against torch autograd of vit.losses.supcon_loss.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{verify,show,bench}")
    v = sub.add_parser("verify", formatter_class=HelpFormatter,
                       help="check every identity and the autograd agreement; non-zero exit on failure",
                       description="Print one line per symbolic identity (name, residual, PASS/FAIL), one "
                                   "per mutation control (must be flagged non-zero) and the autograd "
                                   "summary (cases, max relative error with and without its floor, "
                                   "mpmath reference of the worst cases). Residuals come from the "
                                   "package's indexed-sum normal form, not sympy simplify.")
    v.add_argument("--cases", type=positive_int, default=QUICK.cases,
                   help="number of random autograd cases, >= 1 (batch size, views, labels, dim, mode, m, tau)")
    v.add_argument("--seed", type=nonneg_int, default=QUICK.seed,
                   help="seed of the random cases, >= 0 (default: %(default)s)")
    v.add_argument("--tol", type=positive_float, default=QUICK.tol_rel,
                   help="pass threshold on the maximum (floored) relative gradient error, float64")
    v.add_argument("--json", metavar="PATH", default=None,
                   help="also write the result as JSON to PATH (atomic write); none if omitted")
    v.add_argument("--plot", metavar="PATH", default=None,
                   help="also write a histogram of the per-case errors (PNG) to PATH; none if omitted")
    v.add_argument("--out", metavar="DIR", default=None,
                   help="also write DIR/verify.json and DIR/verify.png, the files 'cffdyn paper build' "
                        "reads from RESULTS/theory/SCALE (quick: the default cases; full: --cases 100000); "
                        "none if omitted")
    s = sub.add_parser("show", formatter_class=HelpFormatter,
                       help="write the side-by-side table: paper formula, derived formula, residual",
                       description="For each gradient case of CFF Appendix A.1 (Eq. 18, A.5-A.7), each loss "
                                   "form (clamp, subtract, none) and tau = 1 / general tau: the paper's formula, "
                                   "the one derived by sympy from the loss, and the residual (the package's "
                                   "indexed-sum normal form), with a legend of every symbol.")
    s.add_argument("--format", choices=("md", "latex"), default="md",
                   help="Markdown (GitHub/pandoc math) or a LaTeX fragment (needs amsmath)")
    s.add_argument("--out", metavar="FILE", default=None,
                   help="write the table to FILE (atomic write) instead of standard output")
    b = sub.add_parser("bench", formatter_class=HelpFormatter, help="time the verification phases",
                       description="Time every phase of 'verify' (goal: < 30 s in total on 2 cores) "
                                   "and compare the vectorised evaluation of the derived formulas "
                                   "with a per-case evaluation, side by side in one run.")
    b.add_argument("--cases", type=positive_int, default=QUICK.cases, help="number of random autograd cases")
    b.add_argument("--seed", type=nonneg_int, default=QUICK.seed,
                   help="seed of the random cases, >= 0 (default: %(default)s)")
    b.add_argument("--loop-cases", type=positive_int, default=600,
                   help="cases evaluated one at a time for the vectorised-vs-loop ratio")
    return p


#: memory the autograd check holds per random case (its inputs and per-case errors), measured as
#: the growth of the peak RSS from 2,000 to 8,000 cases (~15 KB/case), rounded up
BYTES_PER_CASE = 16_000


def check_cases_fit(cases: int, option: str = "--cases") -> None:
    """Refuse, before any work, a case count whose estimated memory exceeds half the machine's RAM."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return
    need = cases * BYTES_PER_CASE
    if need > ram // 2:
        fit = max(1, (ram // 2) // BYTES_PER_CASE)
        raise UserError(f"{option} {cases} needs about {need / 2**30:.3g} GiB of memory (~{BYTES_PER_CASE // 1000} KB "
                        f"per case), more than half of this machine's {ram / 2**30:.3g} GiB",
                        f"use {option} <= {fit} (the paper's full check is 100000)")


def _check_plot_path(path: str) -> None:
    from cffdyn.io import ensure_writable_file

    ensure_writable_file(path, "--plot")
    if Path(path).suffix.lower() != ".png":
        raise UserError(f"--plot {path} does not end in .png", "give --plot a .png file path")


def _cmd_verify(args: argparse.Namespace) -> int:
    from cffdyn.io import atomic_write_json, ensure_writable_file, output_dir
    from theory.verify import VerifyConfig, format_report, plot_errors, verify

    # every output is checked before the (tens of seconds of) work
    if args.json is not None:
        ensure_writable_file(args.json, "--json")
    if args.plot is not None:
        _check_plot_path(args.plot)
    check_cases_fit(args.cases)
    cfg = VerifyConfig(cases=args.cases, seed=args.seed, tol_rel=args.tol)
    want_cases = args.plot is not None or args.out is not None
    with contextlib.ExitStack() as stack:
        if args.out is not None:   # one writer per directory; a failed run leaves no empty --out
            stack.enter_context(output_dir(args.out, "--out"))
        result = verify(cfg, per_case=want_cases)
        per_case = result["autograd"].pop("per_case_rel_err", None)
        print(format_report(result))
        if args.plot is not None and per_case is not None:
            plot_errors(per_case, cfg, args.plot)
        if args.json is not None:
            atomic_write_json(args.json, result)
        if args.out is not None and per_case is not None:
            out = Path(args.out)
            plot_errors(per_case, cfg, out / "verify.png")
            atomic_write_json(out / "verify.json", result)
            print(f"wrote {out / 'verify.json'} and {out / 'verify.png'}")
    return 0 if result["passed"] else 1


def _cmd_show(args: argparse.Namespace) -> int:
    from cffdyn.io import atomic_write_text, ensure_writable_file
    from theory.show import render

    if args.out is not None:
        ensure_writable_file(args.out, "--out")
    text = render(args.format)
    if args.out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    return 0


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = _parser(prog).parse_args(argv)
    if args.cmd == "verify":
        return _cmd_verify(args)
    if args.cmd == "show":
        return _cmd_show(args)
    from theory.bench import run_bench
    # the bench builds the same case arrays as verify (and loops over --loop-cases of them):
    # the same memory bound, before any work
    check_cases_fit(args.cases)
    check_cases_fit(args.loop_cases, "--loop-cases")
    run_bench(args.cases, args.seed, args.loop_cases)
    return 0


if __name__ == "__main__":  # pragma: no cover
    from cffdyn.errors import guarded
    sys.exit(guarded(lambda a: main(a), None, "cffdyn theory"))
