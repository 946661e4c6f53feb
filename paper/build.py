"""``cffdyn paper build``: studies -> numbers, figures, tables -> manuscript (PDF and HTML).

Python API::

    from paper.build import BuildConfig, build
    summary = build(BuildConfig(scale="quick", results=Path("results"), out=Path("build/paper")))

Before any work, :func:`preflight` checks what the build will need at its end (the output
directory takes files; ``pdf="require"`` has pdflatex and bibtex; ``html="require"`` has pandoc),
so a missing tool is one line up front, not an error after a 14-minute build.

Stages (each printed with its wall time and the machine's load average; ``build.json`` records
:func:`cffdyn.machine.machine_info` at the start and the load average at the end of every stage):

1. **studies** — for every study in :data:`paper.sources.STUDIES`, run it with the preset of the
   scale (the study reuses a recorded JSON whose config matches) or, with ``reuse_only``, read
   the recorded JSON (a missing one is a :class:`paper.sources.MissingResultError`);
2. **gradients** — the derived gradient cases as LaTeX (``theory.notation.gradient_cases_latex``;
   section 02 defines their symbols);
3. **numbers** — every number of the text through :mod:`paper.numbers`
   (``generated/numbers.tex`` + ``numbers.json``): the studies' JSONs, the literature values of
   ``source_numbers.json`` and ``build_info.json`` (scale, machine, load, study times);
4. **figures** — matplotlib, PNG + PDF under ``figures/``;
5. **tables** — ``generated/tab_*.tex`` (cells are the number macros) and the generated
   Limitations (``generated/limitations.tex``, from what was run);
6. **manuscript** — ``paper/manuscript.tex`` with its ``sections/`` inlined (a section whose
   study is unavailable is replaced by a statement saying so, only with ``skip_unavailable``);
   every capitalised macro must be defined, or the build fails;
7. **pdf** — ``manuscript.pdf`` with latexmk (or pdflatex + bibtex), natbib references from
   ``paper/references.bib``;
8. **html** — ``manuscript.html`` with pandoc: one self-contained file (figures embedded as PNG,
   MathML, references by citeproc from the same ``references.bib``).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cffdyn.errors import UserError
from cffdyn.io import atomic_write_json, atomic_write_text, ensure_writable_dir, pid_alive
from cffdyn.machine import load_average, machine_info
from paper import assemble, findings, html, layout, record
from paper.tex import tex_escape
from paper.numbers import Number, evaluate, load_source_numbers, write_numbers, SOURCE_NUMBERS
from paper.sources import SCALES, STUDIES, MissingResultError, StudyUnavailable, obtain  # noqa: F401 (re-exported)

__all__ = ["BuildConfig", "build", "preflight", "RenderError", "PAPER_DIR", "REFERENCES", "flatten", "LATEX_CAPITALISED",
           "pandoc_args", "p_relations", "html_source"]

PAPER_DIR = Path(__file__).parent
REFERENCES = PAPER_DIR / "references.bib"
CSS = PAPER_DIR / "manuscript.css"
PDF_MODES = ("auto", "never", "require")
HTML_MODES = ("auto", "never", "require")
#: Debian packages that provide the tools (named in the one-line errors)
TEX_PACKAGES = "texlive-latex-base texlive-latex-recommended latexmk lmodern"
#: capitalised commands of LaTeX itself (everything else capitalised must be a generated macro)
LATEX_CAPITALISED = {"Delta", "Lambda", "Gamma", "Sigma", "Omega", "Phi", "Psi", "Pi", "Theta", "Xi", "LaTeX",
                     "TeX", "Leftrightarrow", "Rightarrow", "Pr", "Big", "Bigl", "Bigr", "S",
                     "DeclareUnicodeCharacter"}


@dataclass(frozen=True)
class BuildConfig:
    """scale: 'quick' | 'full'; results: results root; out: output dir; reuse_only: never run a study;
    skip_unavailable: a study whose code is missing is stated as such instead of failing;
    pdf / html: 'auto' (if the tool is installed) | 'never' | 'require'; studies: restrict to these names."""

    scale: str = "quick"
    results: Path = Path("results")
    out: Path = Path("build/paper")
    reuse_only: bool = False
    skip_unavailable: bool = False
    pdf: str = "auto"
    html: str = "auto"
    studies: tuple[str, ...] | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale={self.scale!r} must be one of {SCALES}")
        if self.pdf not in PDF_MODES:
            raise ValueError(f"pdf={self.pdf!r} must be one of {PDF_MODES}")
        if self.html not in HTML_MODES:
            raise ValueError(f"html={self.html!r} must be one of {HTML_MODES}")
        known = {s.name for s in STUDIES}
        for s in self.studies or ():
            if s not in known:
                raise ValueError(f"unknown study {s!r}; known: {', '.join(sorted(known))}")


# --------------------------------------------------------------------------- tools
def _pdf_tools() -> tuple[list[str], str | None]:
    """(missing tools, latexmk path or None): pdflatex and bibtex are needed, latexmk is used if present."""
    missing = [t for t in ("pdflatex", "bibtex") if shutil.which(t) is None]
    return missing, shutil.which("latexmk")


def preflight(cfg: BuildConfig) -> None:
    """Everything the build needs at its end, checked before any study runs (one-line UserError)."""
    ensure_writable_dir(cfg.out, "--out")
    if not cfg.reuse_only:
        ensure_writable_dir(cfg.results, "--results")
    if cfg.pdf == "require":
        missing, _ = _pdf_tools()
        if missing:
            raise UserError(f"--pdf require: {' and '.join(missing)} not installed",
                            f"install them (apt-get install {TEX_PACKAGES}; 'make run' does this as root) "
                            "or pass --pdf auto to build the HTML only")
    if cfg.html == "require" and shutil.which("pandoc") is None:
        raise UserError("--html require: pandoc is not installed",
                        "install it (apt-get install pandoc; 'make run' does this as root) or pass --html auto")
    if not REFERENCES.is_file():
        raise UserError(f"{REFERENCES} is missing", "reinstall cffdyn (the reference list ships with paper/)")


class _Stages:
    """Runs the stages; records time, machine (at start) and load average (at end) of each."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.records: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()

    def run(self, name: str, fn, *args, **kw):
        info = machine_info()  # this process's device (CPU); GPU runs record their own device
        if not self.quiet:
            print(f"[paper] {name} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            dt = time.perf_counter() - t
            end = load_average()
            self.records.append({"stage": name, "seconds": dt, "machine": info, "load_avg_end": end})
            if not self.quiet:
                la = "/".join(f"{x:.2f}" for x in info["load_avg"]) if info["load_avg"] else "n/a"
                print(f"[paper] {name}: {dt:.1f} s (total {time.perf_counter() - self.t0:.1f} s; "
                      f"load {la} at start, {info['cpus']} CPUs, {info['device']})", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- text
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
            text = path.read_text(encoding="utf-8")
            # a phrase file ends in "%\n" (no space in TeX); pandoc would read a space there
            return text[:-2] if text.endswith("%\n") else text
        raise ValueError(f"\\input{{{name}}}: only sections/ and generated/ may be input")
    return re.sub(r"\\input\{([^}]*)\}", repl, tex)


def p_relations(tex: str, numbers: list[Number]) -> str:
    """``p = \\PMacro`` -> ``p \\PMacro`` where the p-value is printed as ``< 0.001``.

    A p-value below the printed precision is a bound, not a value: the text says ``p < 0.001``,
    never ``p = <0.001``.  Table cells (no ``p =`` before them) keep the bare ``< 0.001``.
    """
    bounds = [n.spec.macro for n in numbers if n.spec.fmt == "p" and n.value.startswith("<")]
    if not bounds:
        return tex
    pat = re.compile(r"([ (~$]p)(?:\s|~)*=\s*(?:~|\\,|\\ )?\s*(\\(?:" + "|".join(map(re.escape, bounds)) + r"))(?![A-Za-z])")
    return pat.sub(r"\1 \2", tex)


def _check_macros(tex: str, defined: set[str]) -> None:
    body = re.sub(r"(?<!\\)%.*", "", tex)
    used = set(re.findall(r"\\([A-Z][A-Za-z]*)", body))
    undefined = sorted(used - defined - LATEX_CAPITALISED)
    if undefined:
        raise ValueError("manuscript uses macros that no result defined: " + ", ".join("\\" + u for u in undefined)
                         + " (a study or a JSON field is missing)")


def _case_title(name: str) -> str:
    """``'k in R^c(i), clamp inactive (Eq. A.6)'`` -> ``'$k \\in R^c(i)$, clamp inactive (Eq. A.6)'``."""
    parts = re.split(r"(k in [A-Z](?:\^c)?\(i\))", name)
    out = []
    for p in parts:
        m = re.fullmatch(r"k in ([A-Z])(\^c)?\(i\)", p)
        out.append(f"$k \\in {m.group(1)}{'^{c}' if m.group(2) else ''}(i)$" if m else tex_escape(p))
    return re.sub(r"^k anchor", r"$k = i$, the anchor", "".join(out))


def _gradients(out: Path) -> Path:
    from theory.notation import gradient_cases_latex
    cases = gradient_cases_latex()
    lines = ["% generated from theory.notation.gradient_cases_latex(): do not edit"]
    for name, expr in cases.items():
        lines += [f"\\paragraph{{{_case_title(name)}}}", "\\[", f"\\frac{{\\partial L_i}}{{\\partial f_{{k,e}}}} = {expr}",
                  "\\]"]
    return atomic_write_text(out / "generated" / "gradients.tex", "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- renderings
class RenderError(RuntimeError):
    """A rendering tool (latexmk, pdflatex, bibtex, pandoc) failed; the first line names its log."""


def _run_tool(cmd: list[str], cwd: Path, timeout: float, what: str, log: Path | None = None) -> None:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RenderError(f"{what} took longer than {timeout:.0f} s") from None
    if r.returncode != 0:
        out_lines = (r.stdout + r.stderr).splitlines()
        first = next((ln for ln in out_lines if ln.startswith("!")), out_lines[-1] if out_lines else "")
        tail = "\n".join(out_lines[-25:])
        raise RenderError(f"{what} failed: {first.strip()[:300]}" + (f" (see {log})" if log else "") + f"\n{tail}")


_PRIVATE = re.compile(r"^\.(latex|pandoc)\.(\d+)\.[A-Za-z0-9_]+$")
#: what a LaTeX run leaves that the build keeps (moved into ``out``; the rest goes with its directory)
_LATEX_KEPT = ("manuscript.log", "manuscript.blg", "manuscript.bbl", "manuscript.aux")


def _private_dir(out: Path, kind: str) -> Path:
    """A fresh directory of this process inside ``out`` where a rendering tool writes.

    The tools write their files by name (pdflatex ``manuscript.log``, pandoc ``-o``) and would
    follow a symbolic link planted at that name in ``out`` to a file outside it; in a directory
    just made by ``mkdtemp`` (mode 0700, an unguessable name) nothing can be planted.  Results are
    renamed into ``out`` (``os.replace`` replaces a link instead of writing through it), so a
    killed build leaves either the old file or the new one, never a half-written PDF.  Directories
    left by a killed build (its pid gone) are removed here."""
    for d in out.iterdir():
        m = _PRIVATE.match(d.name)
        if m and d.is_dir() and not d.is_symlink() and int(m.group(2)) != os.getpid() \
                and not pid_alive(int(m.group(2))):
            shutil.rmtree(d, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{kind}.{os.getpid()}.", dir=out))


def _latex_pdf(out: Path, timeout: float = 300.0) -> Path:
    """manuscript.tex -> manuscript.pdf: latexmk when installed, else pdflatex, bibtex, pdflatex x2.

    The tools run in a private copy of the inputs (:func:`_private_dir`); the PDF is renamed into
    ``out`` only when they finished, the log (and .blg, .bbl, .aux) also when they failed."""
    missing, latexmk = _pdf_tools()
    if missing:
        raise FileNotFoundError(f"{' and '.join(missing)} not installed")
    log = out / "manuscript.log"
    work = _private_dir(out, "latex")
    try:
        for name in ("manuscript.tex", "references.bib"):
            shutil.copyfile(out / name, work / name)
        for sub in ("generated", "figures"):
            if (out / sub).is_dir():
                shutil.copytree(out / sub, work / sub)
        pdflatex = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "manuscript.tex"]
        try:
            if latexmk:
                _run_tool([latexmk, "-pdf", "-g", "-interaction=nonstopmode", "-halt-on-error", "manuscript.tex"],
                          work, timeout, "latexmk", log)
            else:
                _run_tool(pdflatex, work, timeout, "pdflatex", log)
                _run_tool(["bibtex", "manuscript"], work, timeout, "bibtex", out / "manuscript.blg")
                for _ in range(2):  # references, then \ref
                    _run_tool(pdflatex, work, timeout, "pdflatex", log)
            if not (work / "manuscript.pdf").is_file():
                raise RenderError(f"{latexmk or 'pdflatex'} ended without writing manuscript.pdf (see {log})")
            bad = layout.check(work)   # overfull boxes > 1 pt, floats after the References
        finally:
            for name in _LATEX_KEPT:   # the log also after a failure: the error message names it
                if (work / name).is_file():
                    os.replace(work / name, out / name)
        os.replace(work / "manuscript.pdf", out / "manuscript.pdf")   # complete: into place in one rename
    finally:
        shutil.rmtree(work, ignore_errors=True)
    atomic_write_json(out / "layout.json", {"tolerance_pt": layout.TOLERANCE_PT, "problems": bad})
    if bad:
        raise RenderError(f"layout check: {len(bad)} problem(s) in manuscript.pdf, first: {bad[0]} "
                          f"(all in {out / 'layout.json'})")
    return out / "manuscript.pdf"


def pandoc_version(exe: str = "pandoc") -> tuple[int, ...]:
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    m = re.search(r"pandoc(?:\.exe)? (\d+(?:\.\d+)*)", r.stdout)
    return tuple(int(x) for x in m.group(1).split(".")) if m else (0,)


def pandoc_args(version: tuple[int, ...], bib: Path) -> list[str]:
    """LaTeX -> one self-contained HTML5 page: MathML (no script), citeproc references, numbered sections.

    ``--embed-resources --standalone`` exists from pandoc 2.19; older ones (Debian 12 has 2.17)
    spell it ``--self-contained``.
    """
    embed = ["--embed-resources", "--standalone"] if version >= (2, 19) else ["--self-contained"]
    return ["--from=latex", "--to=html5", *embed, "--mathml", "--number-sections", "--wrap=none", "--citeproc",
            f"--bibliography={bib}", f"--css={CSS}", "--metadata=link-citations:true",
            "--metadata=reference-section-title:References", "--metadata=lang:en"]


def html_source(full_tex: str, out: Path) -> str:
    """The flattened manuscript for pandoc: each figure's PDF replaced by its PNG (browsers show PNG),
    ``\\paragraph`` unnumbered as in LaTeX, the bibliography commands dropped (citeproc writes the
    list), ``>{\\raggedright\\arraybackslash}`` column prefixes dropped (pandoc 2.17 prepends them to
    each cell and loses the cell's first macro) and booktabs' ``\\addlinespace`` dropped (pandoc 2.17
    reads the next row's first macro as its argument: the noise-dose table lost its doses)."""
    def png(m: re.Match) -> str:
        path = m.group(3)
        cand = out / (path[:-4] + ".png") if path.endswith(".pdf") else None
        return f"{m.group(1)}{{{path[:-4] + '.png'}}}" if cand is not None and cand.is_file() else m.group(0)
    tex = re.sub(r"(\\includegraphics(\[[^\]]*\])?)\{([^}]*)\}", png, full_tex)
    tex = tex.replace(">{\\raggedright\\arraybackslash}", "").replace(">{\\cellfmt}", "")
    tex = re.sub(r"\\addlinespace(\[[^\]]*\])?", "", tex)
    tex = re.sub(r"\\paragraph\{", r"\\paragraph*{", tex)  # unnumbered, as in LaTeX (pandoc would number it 2.0.0.1)
    tex = html.number_floats(tex)   # the PDF's figure and table numbers (pandoc counts its own)
    return re.sub(r"\\bibliography(style)?\{[^}]*\}", "", tex)


def _pandoc_html(full_tex: str, out: Path, timeout: float = 300.0) -> Path:
    exe = shutil.which("pandoc")
    if exe is None:
        raise FileNotFoundError("pandoc is not installed")
    given, out = Path(out), Path(out).resolve()   # pandoc runs in ``out``: relative paths would not resolve
    work = _private_dir(out, "pandoc")   # its input and output, where no link can be planted
    try:
        src, tmp = work / "manuscript.html.tex", work / "manuscript.html"
        atomic_write_text(src, html_source(full_tex, out))
        _run_tool([exe, *pandoc_args(pandoc_version(exe), out / "references.bib"), f"--resource-path={out}",
                   "-o", str(tmp), str(src)], out, timeout, "pandoc")
        atomic_write_text(out / "manuscript.html", html.tidy_mathml(tmp.read_text(encoding="utf-8")))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return given / "manuscript.html"


# --------------------------------------------------------------------------- the build
def build(cfg: BuildConfig) -> dict[str, Any]:
    """Run the build (see the module doc); returns the summary also written to ``build.json``."""
    preflight(cfg)
    out = Path(cfg.out)
    st = _Stages(cfg.quiet)
    build_start = machine_info()
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
            if not (cfg.skip_unavailable or study.optional):
                raise
            unavailable[study.name] = str(exc)
            studies_log[study.name] = {"status": "unavailable", "reason": str(exc)}
            continue
        results[study.name] = r.data
        paths[study.name] = r.json_path
        rec = st.records[-1]
        studies_log[study.name] = {"status": "run" if r.ran else "reused", "json": str(r.json_path),
                                   "seconds": r.seconds, "load_avg_start": rec["machine"]["load_avg"],
                                   "load_avg_end": rec["load_avg_end"]}
    gen = out / "generated"
    info = record.build_info(cfg.scale, cfg.reuse_only, build_start, studies_log, unavailable, results)
    info_path = atomic_write_json(out / "build_info.json", info)
    if "verify" in results:
        st.run("gradients (sympy)", _gradients, out)

    der = assemble.derived(results)     # numbers no study records (paired intervals, ...): derived.json
    der_path = atomic_write_json(out / "derived.json", der)

    def numbers() -> list[Number]:
        src = load_source_numbers()
        nums = []
        for spec in assemble.number_specs(results, src, der) + record.build_specs(info):
            if spec.source == "source":
                nums.append(evaluate(spec, src, str(SOURCE_NUMBERS)))
            elif spec.source == "derived":
                nums.append(evaluate(spec, der, str(der_path)))
            elif spec.source == "build":
                nums.append(evaluate(spec, info, str(info_path)))
            else:
                nums.append(evaluate(spec, results[spec.source], str(paths[spec.source])))
        write_numbers(nums, out)
        return nums
    nums = st.run("numbers", numbers)

    def figures() -> list[str]:
        made = []
        for name, (needs, fn) in assemble.FIGURES.items():
            if all(n in results for n in needs):
                p = fn(results, paths, out / "figures")
                if p is None:
                    raise ValueError(f"figure {name}: its data could not be found")
                made.append(str(p))
        return made
    figs = st.run("figures", figures)

    def tables() -> list[Path]:
        made = assemble.write_tables(results, gen, der)
        fs = findings.findings(results, der, assemble.FINDINGS)
        made.append(atomic_write_text(gen / "abstract_findings.tex", findings.abstract_tex(fs) + "\n"))
        made.append(atomic_write_text(gen / "conclusion.tex", findings.conclusion_tex(fs)))
        made.append(atomic_write_text(gen / "limitations.tex", record.limitations_tex(results, info)))
        made.append(atomic_write_text(gen / "scale.tex", record.scale_phrase(info) + "%\n"))
        return made
    tabs = st.run("tables", tables)

    def manuscript() -> tuple[str, str]:
        src = (PAPER_DIR / "manuscript.tex").read_text(encoding="utf-8")
        avail = set(results)
        tex = p_relations(flatten(src, PAPER_DIR, out, avail, unavailable, inline_generated=False), nums)
        full = p_relations(flatten(src, PAPER_DIR, out, avail, unavailable, inline_generated=True), nums)
        _check_macros(full, {n.spec.macro for n in nums} | set(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}", full)))
        atomic_write_text(out / "manuscript.tex", tex)
        atomic_write_text(out / "references.bib", REFERENCES.read_text(encoding="utf-8"))
        return tex, full
    tex, full = st.run("manuscript", manuscript)

    notes: list[str] = []
    pdf_path = _rendering(st, cfg.pdf, "pdf (latexmk: pdflatex + bibtex)", lambda: _latex_pdf(out),
                          "PDF", "pdflatex/bibtex", notes)
    html_path = _rendering(st, cfg.html, "html (pandoc)", lambda: _pandoc_html(full, out), "HTML", "pandoc", notes)
    summary = {"config": {"scale": cfg.scale, "results": str(cfg.results), "out": str(out),
                          "reuse_only": cfg.reuse_only, "pdf": cfg.pdf, "html": cfg.html},
               "machine": build_start, "studies": studies_log, "unavailable": unavailable, "stages": st.records,
               "total_seconds": time.perf_counter() - st.t0, "load_avg_end": load_average(),
               "n_numbers": len(nums),
               "files": {"html": str(html_path) if html_path else None, "pdf": str(pdf_path) if pdf_path else None,
                         "tex": str(out / "manuscript.tex"), "numbers": str(out / "numbers.json"),
                         "build_info": str(info_path), "figures": figs, "tables": [str(t) for t in tabs]},
               "notes": notes}
    atomic_write_json(out / "build.json", summary)
    if not cfg.quiet:
        made = " and ".join(str(p) for p in (pdf_path, html_path) if p) or f"{out / 'manuscript.tex'} only"
        la = summary["load_avg_end"]
        print(f"[paper] wrote {made} in {summary['total_seconds']:.1f} s (load {la[0] if la else 'n/a'} at the end)"
              + "".join(f"; {n}" for n in notes), file=sys.stderr)
    return summary


def _rendering(st: _Stages, mode: str, stage: str, fn, what: str, tool: str, notes: list[str]) -> Path | None:
    """Run one rendering under its mode: 'never' skips, 'auto' notes a missing tool or a failure, 'require' raises."""
    if mode == "never":
        return None
    try:
        return st.run(stage, fn)
    except FileNotFoundError as exc:
        if mode == "require":  # preflight checked the tools; only a tool removed mid-build gets here
            raise UserError(f"{what}: {exc}", f"install {tool}") from None
        notes.append(f"no {what}: {exc}")
    except RenderError as exc:
        if mode == "require":
            raise
        notes.append(f"{what} failed: {str(exc)[:2000]}")
        print(f"[paper] warning: {what} failed: {exc}", file=sys.stderr)
    return None


__all__ += ["MissingResultError"]
