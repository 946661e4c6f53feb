"""The PDF's layout check: no box overfull by more than :data:`TOLERANCE_PT` and no float after
the References.

Read from the files pdflatex leaves in the output directory: ``manuscript.log`` (TeX's own
``Overfull \\hbox (12.3pt too wide)`` / ``Overfull \\vbox (86.6pt too high)`` lines of the last
pass) and ``manuscript.aux`` (the page of every figure and table label, and of the label
``references`` that ``manuscript.tex`` sets right before the bibliography, after a
``\\clearpage`` that flushes every float).
"""
from __future__ import annotations

import re
from pathlib import Path

__all__ = ["TOLERANCE_PT", "REFERENCES_LABEL", "overfull_boxes", "label_pages", "floats_after_references",
           "problems", "check"]

#: the largest overfull box the check lets pass (pt)
TOLERANCE_PT = 1.0
REFERENCES_LABEL = "references"
_OVERFULL = re.compile(r"^Overfull \\([hv])box \((\d+(?:\.\d+)?)pt too (?:wide|high)\)(.*)$", re.M)
_LABEL = re.compile(r"^\\newlabel\{([^}]*)\}\{\{([^}]*)\}\{(\d+)\}", re.M)


def overfull_boxes(log: str, tol_pt: float = TOLERANCE_PT) -> list[str]:
    """Every overfull box of the log above ``tol_pt``, as ``"hbox 16.7 pt in paragraph at lines 286--2"``."""
    return [f"{kind}box {float(pt):.1f} pt{where.rstrip()}" for kind, pt, where in _OVERFULL.findall(log)
            if float(pt) > tol_pt]


def label_pages(aux: str) -> dict[str, int]:
    """label -> page, from the ``\\newlabel`` lines of an aux file (with or without hyperref)."""
    return {name: int(page) for name, _num, page in _LABEL.findall(aux)}


def floats_after_references(aux: str) -> list[str]:
    """The figure and table labels on or after the page where the References begin."""
    pages = label_pages(aux)
    if REFERENCES_LABEL not in pages:
        return [f"no \\label{{{REFERENCES_LABEL}}} before the bibliography"]
    ref = pages[REFERENCES_LABEL]
    return [f"{k} on page {p} (References begin on page {ref})" for k, p in sorted(pages.items())
            if k.startswith(("fig:", "tab:")) and p >= ref]


def problems(log: str, aux: str, tol_pt: float = TOLERANCE_PT) -> list[str]:
    return ([f"overfull {b}" for b in overfull_boxes(log, tol_pt)]
            + [f"float after the References: {f}" for f in floats_after_references(aux)])


def check(out: Path, tol_pt: float = TOLERANCE_PT) -> list[str]:
    """The layout problems of ``out/manuscript.pdf`` (from its log and aux)."""
    out = Path(out)
    log = (out / "manuscript.log").read_text(encoding="latin-1")
    aux = (out / "manuscript.aux").read_text(encoding="latin-1")
    return problems(log, aux, tol_pt)
