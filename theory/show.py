"""``theory show``: the paper's gradient formulas, the derived ones and the residual, side by side.

For every gradient case of CFF Appendix A.1 (k the anchor: Eq. 18; k a saturated positive:
A.5; k an unsaturated positive: A.6; k a negative: A.7), every loss form (``clamp``,
``subtract``, ``none``) and ``τ = 1`` (the paper's setting) and general ``τ``:

* the paper's formula (:func:`theory.symbolic.paper_gradient`; verbatim at ``τ = 1``, its
  natural extension for general ``τ``; for ``none``/``subtract`` the paper's formulas with
  ``m = 0`` and no saturated positive),
* the gradient sympy derives from the per-anchor loss (:func:`theory.symbolic.derive`),
* the residual ``derived - paper`` in the package's own indexed-sum normal form
  (:func:`theory.symbolic.canonical_residual`, not sympy ``simplify``).

Display only: similarities ``Σ_d f_{a,d} f_{X,j,d}`` are written ``s_{X,j}``, sums of a constant
are evaluated (``Σ_{l=1}^{r} e^{1/τ} = r e^{1/τ}``), the softmax denominator is written ``Z_i``
(defined in the legend), and for ``none``/``subtract`` (no clamp, so the split of the positives
is immaterial) the formulas are shown with ``R(i)`` empty, i.e. ``r = 0``.  The residuals are
computed on the full expressions, with general ``r`` and ``c``.

``render("md")`` gives a Markdown table (GitHub / pandoc math); ``render("latex")`` a LaTeX
fragment (``amsmath``): a summary table and, per case, the two formulas aligned one above the
other (they are too wide to stand side by side on a page).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp
from theory.notation import display_form, latex, layout
from theory.symbolic import SYMS, canonical_residual, derive, paper_gradient

__all__ = ["Row", "rows", "render", "latex", "LEGEND", "FORMATS"]

FORMATS = ("md", "latex")

#: per loss form: (set of k, k in LaTeX, words, paper equation)
_CASES = {
    "clamp": (("anchor", "k = i", "the anchor", "Eq. 18"),
              ("R", r"k \in R(i)", "saturated positive (clamp active)", "Eq. A.5"),
              ("C", r"k \in R^c(i)", "unsaturated positive", "Eq. A.6"),
              ("N", r"k \in N(i)", "negative", "Eq. A.7")),
    "nomargin": (("anchor", "k = i", "the anchor", "Eq. 18 with m = 0"),
                 ("C", r"k \in P(i)", "positive", "Eq. A.6 with m = 0"),
                 ("N", r"k \in N(i)", "negative", "Eq. A.7")),
}

#: (symbol in LaTeX, meaning); every symbol the formulas use
LEGEND: tuple[tuple[str, str], ...] = (
    (r"i", r"the anchor: the row of the batch whose per-anchor loss $L_i$ is differentiated"),
    (r"f_a,\ f_{a,e}", r"the anchor's L2-normalised representation ($a$ for anchor, i.e. $f_i$) and its component $e$"),
    (r"k", r"the row the gradient is taken with respect to; $\partial L_i/\partial f_{k,e}$ is shown"),
    (r"e,\ D", r"a component index of a representation, and the dimension ($e, d = 1, \dots, D$)"),
    (r"P(i),\ N(i)", r"positives (other rows with the anchor's label, its other view included) and negatives (rows with another label)"),
    (r"R(i),\ R^c(i)", r"the positives with $s + m > 1$ (clamp active, saturated) and the others ($P(i) = R(i) \cup R^c(i)$)"),
    (r"r,\ c,\ n", r"$r = \lvert R(i)\rvert$, $c = \lvert R^c(i)\rvert$, $n = \lvert N(i)\rvert$; so $\lvert P(i)\rvert = r + c$"),
    (r"f_{R,j},\ f_{C,j},\ f_{N,j}", r"the $j$-th member of $R(i)$, $R^c(i)$, $N(i)$; $f_{C,j,e}$ is its component $e$"),
    (r"s_{R,j},\ s_{C,j},\ s_{N,j}", r"their cosine similarities with the anchor, $s_{X,j} = f_a \cdot f_{X,j} = \sum_{d=1}^{D} f_{a,d} f_{X,j,d}$"),
    (r"m", r"the margin, $0 \le m \le 2$; $Q(s) = \min(s + m, 1)$ replaces a positive's similarity in the clamp loss (CFF Eq. 15)"),
    (r"\tau", r"the temperature; the paper's formulas are stated at $\tau = 1$"),
    (r"j,\ l", r"summation indices over the members of a set"),
    (r"Z_i", r"the softmax denominator of $L_i$: clamp: $Z_i = r e^{1/\tau} + \sum_{l=1}^{c} e^{(s_{C,l} + m)/\tau} + \sum_{l=1}^{n} e^{s_{N,l}/\tau}$; "
             r"none and subtract (shown with $R(i)$ empty): $Z_i = \sum_{l=1}^{c} e^{s_{C,l}/\tau} + \sum_{l=1}^{n} e^{s_{N,l}/\tau}$"),
    (r"\text{residual}", r"derived $-$ paper in the package's indexed-sum normal form (canonical summation indices, one sum per "
                         r"term, constant factors pulled out, common denominator, expanded numerator; not sympy's simplify); "
                         r"0 means the two are identical"),
)


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    mode: str
    tau: str            # "1" or "general"
    case: str           # k, LaTeX (math mode)
    words: str          # what k is, in words
    equation: str       # which paper equation
    paper: str          # LaTeX
    derived: str        # LaTeX
    residual: str       # LaTeX ("0" when the identity holds)
    exact: bool


@lru_cache(maxsize=1)
def rows() -> tuple[Row, ...]:
    """Every (loss form, τ, case) row; residuals from the normal form (takes ~10-20 s)."""
    out = []
    for mode in ("clamp", "subtract", "none"):
        for tname, tau in (("1", sp.Integer(1)), ("general", None)):
            t = SYMS.tau if tau is None else tau
            for wrt, kmath, words, eq in _CASES["clamp" if mode == "clamp" else "nomargin"]:
                d = derive("rep", mode, wrt, tau)
                p = paper_gradient("rep", mode, wrt, tau)
                res = canonical_residual(d - p)
                out.append(Row(mode, tname, kmath, words, eq, layout(display_form(p, mode, t), t),
                               layout(display_form(d, mode, t), t), latex(res), bool(res == 0)))
    return tuple(out)


_INTRO = ("Gradients $\\partial L_i/\\partial f_{k,e}$ of the per-anchor loss (CFF Appendix A.1) with respect to "
          "component $e$ of the normalised representation $f_k$: the paper's formula (CFF Eq. 18, A.5-A.7, "
          "stated at $\\tau = 1$; the general-$\\tau$ rows are their extension with every similarity divided "
          "by $\\tau$ and an overall $1/\\tau$; for the no-margin loss ('none') and the subtraction variant "
          "('subtract') the paper's formulas with $m = 0$ and no saturated positive), the formula sympy "
          "derives from the loss (theory/symbolic.py), and the residual derived $-$ paper in the package's "
          "own indexed-sum normal form (not sympy's simplify). 'subtract' has the same gradients as 'none' "
          "(Steier's Proposition 4.1).")


def _md(rs: tuple[Row, ...]) -> str:
    lines = ["# CFF margin-loss gradients: paper vs derived", "", _INTRO, "",
             "| loss | $\\tau$ | case | paper | derived | residual |", "|---|---|---|---|---|---|"]
    for r in rs:
        tau = "$1$" if r.tau == "1" else "general"
        lines.append(f"| {r.mode} | {tau} | ${r.case}$, {r.words} ({r.equation}) | ${r.paper}$ | ${r.derived}$ | "
                     f"${r.residual}$ |")
    n_ok = sum(r.exact for r in rs)
    lines += ["", f"{n_ok} of {len(rs)} residuals are exactly 0.", "", "## Notation", "",
              "| symbol | meaning |", "|---|---|"]
    lines += [f"| ${s}$ | {m} |" for s, m in LEGEND]
    return "\n".join(lines) + "\n"


def _latex(rs: tuple[Row, ...]) -> str:
    lines = ["% cffdyn theory show --format latex: needs \\usepackage{amsmath}",
             "\\noindent " + _INTRO.replace("'none'", "`none'")
             .replace("'subtract'", "`subtract'"), "",
             "\\begin{center}\\small", "\\begin{tabular}{lllll}", "\\hline",
             "loss & $\\tau$ & case & equation & residual \\\\", "\\hline"]
    for r in rs:
        tau = "$1$" if r.tau == "1" else "general"
        lines.append(f"{r.mode} & {tau} & ${r.case}$, {r.words} & {r.equation} & ${r.residual}$ \\\\")
    lines += ["\\hline", "\\end{tabular}", "\\end{center}", ""]
    for r in rs:
        tau = "\\tau = 1" if r.tau == "1" else "\\text{general } \\tau"
        lines += [f"\\paragraph{{{r.mode}, ${tau}$, ${r.case}$, {r.words} ({r.equation}).}}", "\\begin{align*}",
                  f"\\text{{paper:}}\\quad & \\frac{{\\partial L_i}}{{\\partial f_{{k,e}}}} = {r.paper} \\\\",
                  f"\\text{{derived:}}\\quad & \\frac{{\\partial L_i}}{{\\partial f_{{k,e}}}} = {r.derived} \\\\",
                  f"\\text{{residual:}}\\quad & {r.residual}", "\\end{align*}"]
    lines += ["", "\\paragraph{Notation.}", "\\begin{description}"]
    lines += [f"\\item[${s}$] {m}" for s, m in LEGEND]
    lines += ["\\end{description}"]
    return "\n".join(lines) + "\n"


def render(fmt: str = "md") -> str:
    """The whole table with its legend, as Markdown (``"md"``) or a LaTeX fragment (``"latex"``)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} must be one of {FORMATS}")
    rs = rows()
    return _md(rs) if fmt == "md" else _latex(rs)
