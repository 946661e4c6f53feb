"""``cffdyn paper build``: studies -> numbers, figures, tables -> manuscript (HTML, and PDF).

Python API::

    from paper.build import BuildConfig, build
    summary = build(BuildConfig(scale="quick", results=Path("results"), out=Path("build/paper")))

Stages (each printed with its wall time):

1. **studies** — for every study in :data:`paper.sources.STUDIES`, run it with the preset of the
   scale (the study reuses a recorded JSON whose config matches) or, with ``reuse_only``, read
   the recorded JSON (a missing one is a :class:`paper.sources.MissingResultError`);
2. **gradients** — the derived gradient cases as LaTeX (``theory.symbolic.gradient_cases_latex``);
3. **numbers** — every number of the text through :mod:`paper.numbers`
   (``generated/numbers.tex`` + ``numbers.json``), literature values from ``source_numbers.json``;
4. **figures** — matplotlib, PNG + PDF under ``figures/``;
5. **tables** — ``generated/tab_*.tex`` (cells are the number macros);
6. **manuscript** — ``paper/manuscript.tex`` with its ``sections/`` inlined (a section whose
   study is unavailable is replaced by a statement saying so, only with ``skip_unavailable``);
   every capitalised macro must be defined, or the build fails;
7. **html** — ``manuscript.html``: one self-contained file (figures and display math embedded);
8. **pdf** — ``manuscript.pdf`` with pdflatex when it is installed (``pdf="auto"``).

``build.json`` in the output directory records the stages, their times, which studies were run
or reused (with their JSON paths) and the files written.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cffdyn.io import atomic_write_json, atomic_write_text
from paper import content
from paper.numbers import Number, evaluate, load_source_numbers, write_numbers, SOURCE_NUMBERS
from paper.render_html import render_html
from paper.sources import SCALES, STUDIES, MissingResultError, StudyUnavailable, obtain  # noqa: F401 (re-exported)

__all__ = ["BuildConfig", "build", "PAPER_DIR", "flatten", "LATEX_CAPITALISED"]

PAPER_DIR = Path(__file__).parent
PDF_MODES = ("auto", "never", "require")
#: capitalised commands of LaTeX itself (everything else capitalised must be a generated macro)
LATEX_CAPITALISED = {"Delta", "Lambda", "Gamma", "Sigma", "Omega", "Phi", "Psi", "Pi", "Theta", "Xi", "LaTeX",
                     "TeX", "Leftrightarrow", "Rightarrow", "Pr", "Big", "Bigl", "Bigr", "S"}


@dataclass(frozen=True)
class BuildConfig:
    """scale: 'quick' | 'full'; results: results root; out: output dir; reuse_only: never run a study;
    skip_unavailable: a study whose code is missing is stated as such instead of failing;
    pdf: 'auto' (pdflatex if installed) | 'never' | 'require'; studies: restrict to these names."""

    scale: str = "quick"
    results: Path = Path("results")
    out: Path = Path("build/paper")
    reuse_only: bool = False
    skip_unavailable: bool = False
    pdf: str = "auto"
    studies: tuple[str, ...] | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale={self.scale!r} must be one of {SCALES}")
        if self.pdf not in PDF_MODES:
            raise ValueError(f"pdf={self.pdf!r} must be one of {PDF_MODES}")
        known = {s.name for s in STUDIES}
        for s in self.studies or ():
            if s not in known:
                raise ValueError(f"unknown study {s!r}; known: {', '.join(sorted(known))}")


class _Stages:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.records: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()

    def run(self, name: str, fn, *args, **kw):
        if not self.quiet:
            print(f"[paper] {name} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            dt = time.perf_counter() - t
            self.records.append({"stage": name, "seconds": dt})
            if not self.quiet:
                print(f"[paper] {name}: {dt:.1f} s (total {time.perf_counter() - self.t0:.1f} s)",
                      file=sys.stderr, flush=True)


def _requires(text: str) -> list[str]:
    m = re.search(r"^%[ \t]*requires:[ \t]*(.*)$", text, re.M)
    return [s.strip() for s in m.group(1).split(",") if s.strip()] if m else []


def flatten(tex: str, paper_dir: Path, out_dir: Path, available: set[str], unavailable: dict[str, str], *,
            inline_generated: bool) -> str:
    """Inline ``\\input{sections/...}`` (from ``paper_dir``) and, if asked, ``\\input{generated/...}``
    (from ``out_dir``).  A section whose ``% requires:`` names an unavailable study becomes a
    statement naming the study and the reason."""
    def repl(m: re.Match) -> str:
        name = m.group(1)
        if not name.endswith(".tex"):
            name += ".tex"
        if name.startswith("sections/"):
            text = (paper_dir / name).read_text(encoding="utf-8")
            missing = [r for r in _requires(text) if r not in available]
            if missing:
                title = re.search(r"\\(sub)?section\{([^}]*)\}(\\label\{[^}]*\})?", text)
                head = (f"\\{title.group(1) or ''}section{{{title.group(2)}}}{title.group(3) or ''}" if title
                        else f"\\section{{{name}}}")
                reasons = "; ".join(f"{r}: {unavailable.get(r, 'not built')}" for r in missing)
                from paper.content import tex_escape
                return (f"{head}\n"
                        f"This build did not include the studies this section reports "
                        f"({tex_escape(reasons)}), so the section is left out.\n")
            return flatten(text, paper_dir, out_dir, available, unavailable, inline_generated=inline_generated)
        if name.startswith("generated/"):
            if not inline_generated:
                return m.group(0)
            path = out_dir / name
            if not path.is_file():
                raise ValueError(f"manuscript inputs {name}, which this build did not generate")
            return path.read_text(encoding="utf-8")
        raise ValueError(f"\\input{{{name}}}: only sections/ and generated/ may be input")
    return re.sub(r"\\input\{([^}]*)\}", repl, tex)


def _check_macros(tex: str, defined: set[str]) -> None:
    body = re.sub(r"(?<!\\)%.*", "", tex)
    used = set(re.findall(r"\\([A-Z][A-Za-z]*)", body))
    undefined = sorted(used - defined - LATEX_CAPITALISED)
    if undefined:
        raise ValueError("manuscript uses macros that no result defined: " + ", ".join("\\" + u for u in undefined)
                         + " (a study or a JSON field is missing)")


def _gradients(out: Path) -> Path:
    from theory.symbolic import gradient_cases_latex
    cases = gradient_cases_latex()
    from paper.content import tex_escape
    lines = ["% generated from theory.symbolic.gradient_cases_latex(): do not edit"]
    for name, expr in cases.items():
        lines += [f"\\paragraph{{{tex_escape(name)}}}", "\\[", f"\\frac{{\\partial L_i}}{{\\partial f_{{k,e}}}} = {expr}",
                  "\\]"]
    return atomic_write_text(out / "generated" / "gradients.tex", "\n".join(lines) + "\n")


def _pdflatex(out: Path, timeout: float = 240.0) -> Path:
    exe = shutil.which("pdflatex")
    if exe is None:
        raise FileNotFoundError("pdflatex is not installed")
    for _ in range(2):  # second pass resolves \ref
        r = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", "manuscript.tex"], cwd=out,
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            tail = "\n".join(r.stdout.splitlines()[-25:])
            raise RuntimeError(f"pdflatex failed (see {out / 'manuscript.log'}):\n{tail}")
    return out / "manuscript.pdf"


def build(cfg: BuildConfig) -> dict[str, Any]:
    """Run the build (see the module doc); returns the summary also written to ``build.json``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    st = _Stages(cfg.quiet)
    results: dict[str, dict] = {}
    paths: dict[str, Path] = {}
    studies_log: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    for study in STUDIES:
        if cfg.studies is not None and study.name not in cfg.studies:
            unavailable[study.name] = "not requested (--only)"
            continue
        try:
            r = st.run(f"study {study.name} ({'reuse' if cfg.reuse_only else 'run/reuse'}, {cfg.scale})",
                       obtain, study, Path(cfg.results), cfg.scale, reuse_only=cfg.reuse_only)
        except StudyUnavailable as exc:
            if not cfg.skip_unavailable:
                raise
            unavailable[study.name] = str(exc)
            studies_log[study.name] = {"status": "unavailable", "reason": str(exc)}
            continue
        results[study.name] = r.data
        paths[study.name] = r.json_path
        studies_log[study.name] = {"status": "run" if r.ran else "reused", "json": str(r.json_path),
                                   "seconds": r.seconds}
    gen = out / "generated"
    if "verify" in results:
        st.run("gradients (sympy)", _gradients, out)

    def numbers() -> list[Number]:
        src = load_source_numbers()
        nums = []
        for spec in content.number_specs(results, src):
            if spec.source == "source":
                nums.append(evaluate(spec, src, str(SOURCE_NUMBERS)))
            else:
                nums.append(evaluate(spec, results[spec.source], str(paths[spec.source])))
        write_numbers(nums, out)
        return nums
    nums = st.run("numbers", numbers)

    def figures() -> list[str]:
        made = []
        for name, (needs, fn) in content.FIGURES.items():
            if all(n in results for n in needs):
                p = fn(results, paths, out / "figures")
                if p is None:
                    raise ValueError(f"figure {name}: its data could not be found")
                made.append(str(p))
        return made
    figs = st.run("figures", figures)
    tabs = st.run("tables", content.write_tables, results, gen)

    def manuscript() -> tuple[str, str]:
        src = (PAPER_DIR / "manuscript.tex").read_text(encoding="utf-8")
        avail = set(results)
        tex = flatten(src, PAPER_DIR, out, avail, unavailable, inline_generated=False)
        full = flatten(src, PAPER_DIR, out, avail, unavailable, inline_generated=True)
        _check_macros(full, {n.spec.macro for n in nums} | set(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}", full)))
        atomic_write_text(out / "manuscript.tex", tex)
        return tex, full
    tex, full = st.run("manuscript", manuscript)
    html_path = out / "manuscript.html"
    st.run("html", lambda: atomic_write_text(html_path, render_html(full, out)))
    pdf_path, pdf_note = None, ""
    if cfg.pdf != "never":
        if shutil.which("pdflatex") is None:
            if cfg.pdf == "require":
                raise FileNotFoundError("--pdf require: pdflatex is not installed")
            pdf_note = "pdflatex not installed: HTML only"
        else:
            try:
                pdf_path = st.run("pdf (pdflatex x2)", _pdflatex, out)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                if cfg.pdf == "require":
                    raise
                pdf_note = f"pdflatex failed, HTML only: {str(exc)[:2000]}"
                print(f"[paper] warning: {pdf_note}", file=sys.stderr)
    summary = {"config": {"scale": cfg.scale, "results": str(cfg.results), "out": str(out),
                          "reuse_only": cfg.reuse_only, "pdf": cfg.pdf},
               "studies": studies_log, "unavailable": unavailable, "stages": st.records,
               "total_seconds": time.perf_counter() - st.t0, "n_numbers": len(nums),
               "files": {"html": str(html_path), "pdf": str(pdf_path) if pdf_path else None,
                         "tex": str(out / "manuscript.tex"), "numbers": str(out / "numbers.json"),
                         "figures": figs, "tables": [str(t) for t in tabs]},
               "pdf_note": pdf_note}
    atomic_write_json(out / "build.json", summary)
    if not cfg.quiet:
        print(f"[paper] wrote {html_path}" + (f" and {pdf_path}" if pdf_path else f" ({pdf_note})")
              + f" in {summary['total_seconds']:.1f} s", file=sys.stderr)
    return summary


__all__ += ["MissingResultError"]
