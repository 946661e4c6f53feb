"""``cffdyn paper``: rebuild the manuscript from the studies (see :mod:`paper.build`)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from cffdyn.errors import HelpFormatter, UserError, make_parser

__all__ = ["main"]


def _parser(prog: str | None) -> argparse.ArgumentParser:
    p = make_parser(prog=prog, description="Rebuild the manuscript: run (or reuse) the studies it needs, render "
                                           "figures (PNG + PDF), tables and the text (PDF with latexmk/pdflatex + "
                                           "bibtex, HTML with pandoc).")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", formatter_class=HelpFormatter, help="run/reuse the studies and write the manuscript",
                       description="Run (or reuse, when already recorded with the same config) every study the "
                                   "manuscript needs, then write numbers, figures, tables, manuscript.pdf (when "
                                   "pdflatex and bibtex are installed) and manuscript.html (when pandoc is).  The "
                                   "output directory and the tools --pdf/--html require are checked before any "
                                   "study runs.  Stages, their times and the machine's load are printed on stderr; "
                                   "build.json records them.")
    g = b.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="scale", action="store_const", const="quick",
                   help="CPU quick presets of every study (the default; minutes on 2 cores)")
    g.add_argument("--full", dest="scale", action="store_const", const="full",
                   help="GPU-scale (FULL) presets instead of the default --quick; reuses results recorded on a "
                        "GPU under --results")
    b.set_defaults(scale="quick")
    b.add_argument("--results", type=Path, default=Path("results"),
                   help="results root; study S writes to RESULTS/<part>/<S>/<scale>/")
    b.add_argument("--out", type=Path, default=Path("build/paper"), help="output directory of the manuscript")
    b.add_argument("--reuse-only", action="store_true",
                   help="never run a study: only read recorded results (a missing one is an error)")
    b.add_argument("--skip-unavailable", action="store_true",
                   help="a study whose code is not importable is stated as missing instead of failing the build")
    b.add_argument("--pdf", choices=("auto", "never", "require"), default="auto",
                   help="PDF via latexmk/pdflatex + bibtex: auto = if installed, never, or require (checked first)")
    b.add_argument("--html", choices=("auto", "never", "require"), default="auto",
                   help="HTML via pandoc: auto = if installed, never, or require (checked first)")
    b.add_argument("--only", action="append", default=None, metavar="STUDY",
                   help="restrict to these studies (repeatable); the others' sections are stated as left out")
    b.add_argument("--quiet", action="store_true", help="no stage lines on stderr")
    s = sub.add_parser("studies", formatter_class=HelpFormatter, help="list the studies the manuscript draws on",
                       description="List every study with its function, presets and result path.")
    s.add_argument("--results", type=Path, default=Path("results"), help="results root")
    return p


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = _parser(prog).parse_args(argv)
    from paper.sources import STUDIES, MissingResultError, StudyUnavailable, load_study, result_dir
    if args.cmd == "studies":
        for st in STUDIES:
            try:
                fn, presets = load_study(st)
                where = f"{fn.__module__}.{fn.__name__}  presets {'|'.join(presets)}"
            except StudyUnavailable as exc:
                where = f"unavailable ({exc})"
            print(f"{st.name:<16} {where}  -> {result_dir(st, args.results, 'quick') / st.json_name}")
        return 0
    from paper.build import BuildConfig, RenderError, build
    try:
        cfg = BuildConfig(scale=args.scale, results=args.results, out=args.out, reuse_only=args.reuse_only,
                          skip_unavailable=args.skip_unavailable, pdf=args.pdf, html=args.html,
                          studies=tuple(args.only) if args.only else None, quiet=args.quiet)
        from cffdyn.io import output_dir
        with output_dir(cfg.out, "--out"):   # one build per output directory (a second one: one line, its pid)
            summary = build(cfg)
    except (MissingResultError, StudyUnavailable, ValueError, RenderError) as exc:
        # one line: a rendering tool's log tail stays in build/paper/manuscript.log, named in the message
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(first) from None
    files = summary["files"]
    print(files["pdf"] or files["html"] or files["tex"])
    return 0
