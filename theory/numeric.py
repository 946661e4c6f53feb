"""The derived gradients as numbers: lambdified per-pair coefficients for the autograd check.

:func:`numeric_coefficients` turns the gradients :mod:`theory.symbolic` derives into vectorised
numpy functions of ``(s, m, tau, |P|, Z)``, which :mod:`theory.autograd_check` compares with torch
autograd on ``vit.losses.supcon_loss``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import sympy as sp
from sympy import Indexed, Sum

from theory.symbolic import SYMS, collapse_sims, derive, loss_denominator, loss_pos_expr, settle, to_piecewise

__all__ = ["NumericCoefficients", "numeric_coefficients"]

@dataclass(frozen=True)
class NumericCoefficients:
    """Lambdified per-pair coefficients ``∂L_i/∂s_ik`` for one mode (numpy, vectorised).

    ``anchor[X](s, m, tau, P, Z)``: coefficient of ``f_k`` (k in set X) in the anchor gradient
    (read off the derived Eq. 18 expression).  ``other[X](...)``: coefficient of ``f_i`` in the
    gradient w.r.t. a non-anchor row k in X (the derived A.5-A.7 divided by ``f_i``).
    ``z_term[X](s, m, tau)``: the summand of the softmax denominator (from the loss itself,
    ``Min`` rewritten as ``Piecewise``).  ``loss_pos(s, m, tau, P, Z)``: the positive-pair
    term of ``L_i`` so that ``L_i = Σ_p loss_pos``.
    """

    mode: str
    anchor: dict[str, Callable]
    other: dict[str, Callable]
    z_term: dict[str, Callable]
    loss_pos: Callable
    exprs: dict[str, sp.Expr]


def _closed_form(expr: sp.Expr, Zsum: sp.Expr, sX: sp.Expr) -> sp.Expr:
    """Collapse similarity sums to ``s_X[.]``, the member's own similarity ``sX`` to ``s``,
    ``|P| = r + c`` to ``P`` and the softmax denominator (however sympy arranged it) to ``Z``.

    Every indexed sum of the denominator is replaced by a fresh symbol ``t_b``; the first one is
    eliminated through ``Z = Σ_b (terms)``.  Raises if anything indexed survives.
    """
    S = SYMS
    expr = collapse_sims(expr).xreplace({sX: S.s})
    sums = sorted(Zsum.atoms(Sum), key=sp.default_sort_key)
    ts = sp.symbols(f"t0:{len(sums)}", positive=True)
    expr = expr.xreplace(dict(zip(sums, ts)))
    if sums:
        z_in_t = Zsum.xreplace(dict(zip(sums, ts)))
        t0 = sp.solve(sp.Eq(z_in_t, S.Z), ts[0])[0]
        expr = expr.xreplace({ts[0]: t0})
    expr = sp.simplify(expr.xreplace({S.c: S.P - S.r}))
    if expr.has(Indexed) or expr.has(Sum) or any(expr.has(t) for t in ts) or expr.has(S.r):
        raise RuntimeError(f"coefficient is not closed-form in (s, m, tau, P, Z): {expr}")
    return expr


@lru_cache(maxsize=4)
def numeric_coefficients(mode: str) -> NumericCoefficients:
    """Lambdify the derived gradients of ``mode`` into vectorised numpy functions."""
    S = SYMS
    Zsum = loss_denominator("sim", mode, resolved=True)
    args = (S.s, S.m, S.tau, S.P, S.Z)
    sets = ("R", "C", "N")
    F = {"R": S.fR, "C": S.fC, "N": S.fN}
    sI = {"R": S.sR, "C": S.sC, "N": S.sN}
    anchor, other, exprs = {}, {}, {}
    g_anchor = collapse_sims(derive("rep", mode, "anchor"))
    for X in sets:
        # coefficient of f_X[k] in the anchor gradient: the derived expression is linear in it
        coef = settle(sp.diff(g_anchor, F[X][S.k, S.e]))
        exprs[f"anchor_{X}"] = coef = _closed_form(coef, Zsum, sI[X][S.k])
        anchor[X] = sp.lambdify(args, coef, modules="numpy")
        # coefficient of f_a in the gradient w.r.t. a non-anchor row k of set X (A.5-A.7)
        oc = _closed_form(derive("rep", mode, X) / S.a[S.e], Zsum, sI[X][S.k])
        exprs[f"other_{X}"] = oc
        other[X] = sp.lambdify(args, oc, modules="numpy")
    # denominator summands, read off the loss itself (Min -> Piecewise), one per set
    Zraw = loss_denominator("sim", mode, resolved=False)
    z_term = {}
    for summ in Zraw.atoms(Sum):
        base = [i.base for i in summ.function.atoms(Indexed)][0]
        X = {v: kk for kk, v in sI.items()}[base]
        e = to_piecewise(summ.function.xreplace({base[S.l]: S.s}))
        exprs[f"z_{X}"] = e
        z_term[X] = sp.lambdify((S.s, S.m, S.tau), e, modules="numpy")
    if set(z_term) != set(sets):
        raise RuntimeError(f"denominator terms for {sorted(z_term)} only")
    # loss value per positive pair (identity "value" in identities() proves Σ_p of it is L_i)
    lp = to_piecewise(loss_pos_expr(mode))
    exprs["loss_pos"] = lp
    loss_pos = sp.lambdify(args, lp, modules="numpy")
    return NumericCoefficients(mode, anchor, other, z_term, loss_pos, exprs)
