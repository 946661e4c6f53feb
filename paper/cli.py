"""``cffdyn paper``: rebuild the manuscript from the studies (see :mod:`paper.build`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main"]


def _parser(prog: str | None) -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog=prog, formatter_class=fmt,
                                description="Rebuild the manuscript: run (or reuse) the studies it needs, render "
                                            "figures (PNG + PDF), tables and the text (HTML always; PDF with pdflatex).")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", formatter_class=fmt, help="run/reuse the studies and write the manuscript",
                       description="Run (or reuse, when already recorded with the same config) every study the "
                                   "manuscript needs, then write numbers, figures, tables, manuscript.html and, "
                                   "when pdflatex is installed, manuscript.pdf.  Stages and their times are printed "
                                   "on stderr; build.json records them.")
    g = b.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="scale", action="store_const", const="quick",
                   help="CPU quick presets of every study (the default; minutes on 2 cores)")
    g.add_argument("--full", dest="scale", action="store_const", const="full",
                   help="GPU-scale (FULL) presets; reuses results recorded on a GPU under --results")
    b.set_defaults(scale="quick")
    b.add_argument("--results", type=Path, default=Path("results"),
                   help="results root; study S writes to RESULTS/<part>/<S>/<scale>/")
    b.add_argument("--out", type=Path, default=Path("build/paper"), help="output directory of the manuscript")
    b.add_argument("--reuse-only", action="store_true",
                   help="never run a study: only read recorded results (a missing one is an error)")
    b.add_argument("--skip-unavailable", action="store_true",
                   help="a study whose code is not importable is stated as missing instead of failing the build")
    b.add_argument("--pdf", choices=("auto", "never", "require"), default="auto",
                   help="PDF via pdflatex: auto = if installed, never, or require (fail without it)")
    b.add_argument("--only", action="append", default=None, metavar="STUDY",
                   help="restrict to these studies (repeatable); the others' sections are stated as left out")
    b.add_argument("--quiet", action="store_true", help="no stage lines on stderr")
    s = sub.add_parser("studies", formatter_class=fmt, help="list the studies the manuscript draws on",
                       description="List every study with its function, presets and result path.")
    s.add_argument("--results", type=Path, default=Path("results"), help="results root")
    return p


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = _parser(prog).parse_args(argv)
    from paper.sources import STUDIES, MissingResultError, StudyUnavailable, result_dir
    if args.cmd == "studies":
        for st in STUDIES:
            print(f"{st.name:<16} {'|'.join(st.modules)}.{st.func}  presets {dict(st.presets)}  "
                  f"-> {result_dir(st, args.results, 'quick') / st.json_name}")
        return 0
    from paper.build import BuildConfig, build
    try:
        cfg = BuildConfig(scale=args.scale, results=args.results, out=args.out, reuse_only=args.reuse_only,
                          skip_unavailable=args.skip_unavailable, pdf=args.pdf,
                          studies=tuple(args.only) if args.only else None, quiet=args.quiet)
        summary = build(cfg)
    except (MissingResultError, StudyUnavailable, ValueError) as exc:
        print(f"{prog or 'cffdyn paper'}: error: {exc}", file=sys.stderr)
        return 2
    print(summary["files"]["pdf"] or summary["files"]["html"])
    return 0
