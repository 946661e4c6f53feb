"""The derived gradients in the legend's notation: LaTeX for ``theory show`` and the paper.

:func:`latex` prints sympy in the notation of ``theory show``'s legend (``s_{C,j}``, ``f_{C,j,e}``,
``Z_i``); :func:`display_form` and :func:`layout` bring a derived gradient (:mod:`theory.symbolic`)
to the displayed form; :func:`gradient_cases` / :func:`gradient_cases_latex` are the four cases of
CFF A.1 as the manuscript prints them.  Nothing here proves anything: the identities are
:mod:`theory.symbolic`'s.
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp
from sympy import Indexed, Sum
from sympy.printing.latex import LatexPrinter

from theory.symbolic import SYMS, collapse_sims, derive, paper_denominator, sum_rule

__all__ = ["Z_DISPLAY", "latex", "display_form", "layout", "GRADIENT_CASE_NAMES", "gradient_cases",
           "gradient_cases_latex"]

#: the softmax denominator as one symbol in displayed formulas (defined in theory.show.LEGEND)
Z_DISPLAY = sp.Symbol("Z_i", positive=True)
_Z = Z_DISPLAY


class _NotationPrinter(LatexPrinter):
    """sympy's LaTeX with the legend's notation: ``s_C[j] -> s_{C,j}``, ``f_C[j, e] -> f_{C,j,e}``."""

    def __init__(self) -> None:
        super().__init__({"fold_short_frac": False, "mul_symbol": None})

    def _print_Indexed(self, expr: Indexed) -> str:
        letter, _, sub = str(expr.base.label).partition("_")
        idx = ",".join(self._print(i) for i in expr.indices)
        return f"{letter}_{{{sub},{idx}}}" if sub else f"{letter}_{{{idx}}}"

    def _print_Symbol(self, expr: sp.Symbol, style: str = "plain") -> str:
        return "Z_i" if expr == _Z else super()._print_Symbol(expr)

    def _print_exp(self, expr: sp.Expr, exp: str | None = None) -> str:
        # e^{(m + s)/tau} instead of a stacked fraction in the exponent
        arg = expr.args[0]
        num, den = sp.fraction(sp.together(arg))
        if den == 1:
            body = self._print(arg)
        elif num.is_Add:
            body = f"({self._print(num)})/{self._print(den)}"
        else:
            body = f"{self._print(num)}/{self._print(den)}"
        return f"e^{{{body}}}"


def latex(expr: sp.Expr) -> str:
    """An expression in the legend's notation."""
    return _NotationPrinter().doprint(expr)


def _display_denominator(mode: str, tau: sp.Expr) -> sp.Expr:
    S = SYMS
    if mode == "clamp":
        return paper_denominator("sim", tau)
    return sum(Sum(sp.exp(b[S.l] / tau), (S.l, 1, size)) for b, size in ((S.sR, S.r), (S.sC, S.c), (S.sN, S.n)))


def display_form(expr: sp.Expr, mode: str, tau: sp.Expr) -> sp.Expr:
    """Similarities collapsed, constant sums evaluated, empty R for no clamp, Z_i substituted."""
    S = SYMS

    def tidy(e: sp.Expr) -> sp.Expr:
        e = collapse_sims(e)
        if mode != "clamp":
            e = e.xreplace({S.r: 0})
        e = e.replace(lambda x: isinstance(x, Sum) and x.limits[0][2] == 0 and x.limits[0][1] == 1,
                      lambda x: sp.Integer(0))
        return e.replace(lambda x: isinstance(x, Sum) and not x.function.has(x.limits[0][0]), sum_rule)

    e = tidy(expr)
    Zd = tidy(_display_denominator(mode, tau))
    for cand, rep in ((Zd, _Z), (sp.expand(tau * Zd), tau * _Z)):   # sympy may distribute τ into Z
        e = e.xreplace({cand: rep})
        e = e.subs(cand, rep)
    return e


def _split_sums(e: sp.Expr) -> sp.Expr:
    """``Σ_j (a_j + b_j) -> Σ_j a_j + Σ_j b_j`` and factors free of ``j`` pulled out (display)."""
    def split(sm: Sum) -> sp.Expr:
        (v, lo, hi), = sm.limits
        out = sp.Integer(0)
        for term in sp.Add.make_args(sp.expand_mul(sm.function)):
            ind, dep = term.as_independent(v, as_Add=False)
            out += ind * (hi - lo + 1) if dep == 1 else ind * Sum(dep, (v, lo, hi))
        return out
    return e.replace(lambda x: isinstance(x, Sum) and len(x.limits) == 1, split)


def layout(e: sp.Expr, tau: sp.Expr) -> str:
    """One display layout for both columns: ``(1/τ) (… + (…)/Z_i)``, sums split, terms expanded."""
    e = sp.expand(_split_sums(e), power_exp=False)
    e = sp.Add(*[sp.factor_terms(t) for t in sp.Add.make_args(e)])   # 1/(cτ + rτ) -> 1/(τ(c + r))
    if e == 0 or tau == 1:
        return latex(_collect_Z(e))
    inner = sp.Add(*[sp.factor_terms(t * tau) for t in sp.Add.make_args(e)])
    outside = inner.replace(lambda x: isinstance(x, sp.exp), lambda x: sp.Integer(1))
    if outside.has(tau):            # τ does not factor out as an overall 1/τ: print as it is
        return latex(_collect_Z(e))
    body = latex(_collect_Z(inner))
    return rf"\frac{{1}}{{\tau}}\left({body}\right)" if inner.is_Add else rf"\frac{{1}}{{\tau}}\,{body}"


def _collect_Z(e: sp.Expr) -> sp.Expr:
    """Terms over ``Z_i`` gathered into one fraction, after the others."""
    if not e.is_Add:
        return e
    over = [t for t in e.args if t.has(_Z)]
    rest = [t for t in e.args if not t.has(_Z)]
    if len(over) < 2:
        return e
    num = sp.Add(*[t * _Z for t in over])
    return sp.Add(*rest) + sp.Mul(num, sp.Pow(_Z, -1, evaluate=False), evaluate=False)



# --------------------------------------------------------------------------- presentation
#: plain-text names of the four cases of CFF A.1 (no TeX: they become paragraph titles)
GRADIENT_CASE_NAMES = {"anchor": "k is the anchor (Eq. 18)",
                       "R": "k is a saturated positive, clamp active (Eq. A.5)",
                       "C": "k is an unsaturated positive, clamp inactive (Eq. A.6)",
                       "N": "k is a negative (Eq. A.7)"}


@lru_cache(maxsize=4)
def gradient_cases(tau: sp.Expr | None = None) -> dict[str, sp.Expr]:
    """The derived clamp-mode gradients (component ``e``) for the four cases of CFF A.1.

    Similarities inside are shown as ``s_X[j]`` (the indexed sums over ``d`` are collapsed).
    """
    out: dict[str, sp.Expr] = {}
    for wrt, name in GRADIENT_CASE_NAMES.items():
        out[name] = collapse_sims(derive("rep", "clamp", wrt, tau))
    return out


def gradient_cases_latex(tau: sp.Expr | None = None) -> dict[str, str]:
    """LaTeX of :func:`gradient_cases` (for the paper), in the notation of ``theory show``:
    ``s_{C,j}``, ``f_{C,j,e}``, ``f_{a,e}`` (the anchor), ``Z_i`` (the softmax denominator),
    ``r, c, n`` (the sizes of R(i), R^c(i), N(i)); the manuscript's text defines them."""
    t = SYMS.tau if tau is None else tau
    return {name: layout(display_form(expr, "clamp", t), t) for name, expr in gradient_cases(tau).items()}
