"""Symbolic derivation of the CFF margin-loss gradients (CFF Sec. 3.5, Appendix A.1).

The per-anchor loss of ``vit.losses.supcon_loss`` is built with sympy for an arbitrary number
of positives and negatives: indexed sums ``Sum(..., (j, 1, r))`` over symbolic set sizes,
never a fixed batch.  For anchor ``i`` the positives are split into

* ``R`` (``r`` members, similarities ``s_R[j]``): clamp active, ``s + m > 1``;
* ``C`` (``c`` members, ``s_C[j]``): clamp inactive, ``s + m < 1`` (``R^c`` in the paper);
* ``N`` (``n`` members, ``s_N[j]``): negatives,

so ``|P| = r + c``.  At the level of representations every row is a vector with components
``d = 1..D``: the anchor ``a[d]``, positives ``fR[j, d]``, ``fC[j, d]`` and negatives ``fN[j, d]``,
and a similarity is the indexed sum ``Sum(a[d]*fC[j, d], (d, 1, D))``.

Derivation
----------
The loss is written with ``Min(s + m, 1)`` exactly as in CFF Eq. 15 and differentiated by
sympy (``Min`` gives ``Heaviside`` factors).  Which side of the clamp a pair is on is then
decided *on the open region*: every similarity of the set ``R`` is substituted by
``1 - m + δ`` and of ``C`` by ``1 - m - δ`` (``δ > 0``) inside each ``Min``/``Heaviside``, which
evaluates them to a definite branch.  Membership of the differentiated index in its summation
range (``1 <= k <= c``) is true by construction, so the ``Piecewise`` that sympy returns for a
``KroneckerDelta`` sum is replaced by its first branch.

Boundary convention: exactly at ``s + m = 1`` sympy's ``Heaviside(0) = 1/2`` would give the
clamp a derivative of 1/2, while ``torch.clamp(x, max=1)`` passes gradient 1 (it treats the
boundary as inactive).  Every check here is made on the open sets, strictly on either side.

The derived expressions are compared with CFF Eq. 18, A.5, A.6, A.7 (``τ = 1``, verbatim) and
with their natural extension to a general temperature (every similarity divided by ``τ``,
an overall ``1/τ``): the residual ``derived - paper`` is brought to a normal form (sums with
canonical dummies, one ``Sum`` per term, constant factors pulled out, common denominator,
expanded numerator) and must be exactly ``0``.  This normal form is conservative - it can fail
to cancel a true identity, never cancel a false one - and much faster than ``sp.simplify``
(which is slow on these indexed sums; sympy's ``Sum.doit`` is avoided too: it is slow here and
returned wrong closed forms for sums of ``Indexed`` terms in sympy 1.14).  Further identities: the
gradient neutrality of ``subtract`` (Steier 2026, Prop. 4.1) for symbolic ``|P|, |N|``, the
exact zero of a saturated pair, and the unsaturated gradient equal to the no-margin gradient
at shifted logits.

Public API: :func:`derive`, :func:`paper_gradient`, :func:`identities` (name -> residual
expression), :func:`mutations` (the controls that must not cancel), :func:`canonical_residual`.
The same gradients typeset are :mod:`theory.notation`'s, as numeric functions
:mod:`theory.numeric`'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp
from sympy import Heaviside, Indexed, IndexedBase, Min, Piecewise, Sum

from vit.losses import LOSS_MODES

__all__ = [
    "canonical_residual",
    "collapse_sims",
    "Syms",
    "SYMS",
    "derive",
    "gradient_of",
    "identities",
    "loss_denominator",
    "loss_pos_expr",
    "mutations",
    "NormalFormError",
    "paper_denominator",
    "paper_gradient",
    "per_anchor_loss_sim",
    "per_anchor_loss_rep",
    "settle",
    "sum_rule",
    "to_piecewise",
]


@dataclass(frozen=True)
class Syms:
    """All sympy symbols of the derivation (immutable; one shared instance ``SYMS``)."""

    tau: sp.Symbol
    m: sp.Symbol
    r: sp.Symbol
    c: sp.Symbol
    n: sp.Symbol
    D: sp.Symbol
    j: sp.Symbol      # index of the positive sums
    l: sp.Symbol      # index of the softmax-denominator sums (distinct: no nested re-use)
    k: sp.Symbol
    d: sp.Symbol
    e: sp.Symbol
    sR: IndexedBase
    sC: IndexedBase
    sN: IndexedBase
    a: IndexedBase
    fR: IndexedBase
    fC: IndexedBase
    fN: IndexedBase
    s: sp.Symbol      # scalar similarity of one pair (numeric coefficient functions)
    P: sp.Symbol      # |P(i)| as a number (numeric coefficient functions)
    Z: sp.Symbol      # the softmax denominator as a number (numeric coefficient functions)


def _make_syms() -> Syms:
    pos = dict(positive=True)
    return Syms(
        tau=sp.Symbol("tau", **pos), m=sp.Symbol("m", nonnegative=True),
        r=sp.Symbol("r", integer=True, nonnegative=True),
        c=sp.Symbol("c", integer=True, nonnegative=True),
        n=sp.Symbol("n", integer=True, nonnegative=True),
        D=sp.Symbol("D", integer=True, positive=True),
        j=sp.Symbol("j", integer=True), l=sp.Symbol("l", integer=True), k=sp.Symbol("k", integer=True),
        d=sp.Symbol("d", integer=True), e=sp.Symbol("e", integer=True),
        sR=IndexedBase("s_R", real=True), sC=IndexedBase("s_C", real=True),
        sN=IndexedBase("s_N", real=True),
        a=IndexedBase("f_a", real=True), fR=IndexedBase("f_R", real=True),
        fC=IndexedBase("f_C", real=True), fN=IndexedBase("f_N", real=True),
        s=sp.Symbol("s", real=True), P=sp.Symbol("P", positive=True), Z=sp.Symbol("Z", positive=True),
    )


SYMS = _make_syms()

# side of the clamp for each set: +1 active (s + m > 1), -1 inactive, 0 not a clamped pair
_SIDE = {"R": 1, "C": -1, "N": 0}
MODES = LOSS_MODES     # ("none", "clamp", "subtract"), defined once in vit.losses


# --------------------------------------------------------------------------- loss builders
def _sim(kind: str, base: str, idx: sp.Symbol, S: Syms = SYMS) -> sp.Expr:
    """Similarity of the anchor with member ``idx`` of set ``base`` ('R', 'C', 'N')."""
    if kind == "sim":
        return {"R": S.sR, "C": S.sC, "N": S.sN}[base][idx]
    F = {"R": S.fR, "C": S.fC, "N": S.fN}[base]
    return Sum(S.a[S.d] * F[idx, S.d], (S.d, 1, S.D))


def _loss(kind: str, mode: str, tau: sp.Expr, S: Syms = SYMS) -> sp.Expr:
    """Per-anchor loss ``L_i`` for ``mode`` (CFF Eq. 14/15/17; Steier's subtraction).

    Positives are the sets R and C (for ``none``/``subtract`` the split has no effect: the
    logits are ``s/τ`` on both), negatives the set N.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}")
    j, l, m = S.j, S.l, S.m

    def q(b: str, idx: sp.Symbol) -> sp.Expr:
        s = _sim(kind, b, idx, S)
        return Min(s + m, 1) if mode == "clamp" and b != "N" else s   # CFF Eq. 15

    size = {"R": S.r, "C": S.c, "N": S.n}
    Z = sum(Sum(sp.exp(q(b, l) / tau), (l, 1, size[b])) for b in ("R", "C", "N"))
    npos = S.r + S.c
    if mode == "subtract":
        # -(1/|P|) Σ_p (log_prob_ip - m), log_prob_ip = q_p/τ - log Z
        terms = sum(Sum(q(b, j) / tau - sp.log(Z) - m, (j, 1, size[b])) for b in ("R", "C"))
        return -terms / npos
    return -sum(Sum(q(b, j), (j, 1, size[b])) for b in ("R", "C")) / (tau * npos) + sp.log(Z)


def per_anchor_loss_sim(mode: str, tau: sp.Expr | None = None) -> sp.Expr:
    """``L_i`` as a function of the similarities ``s_R[j], s_C[j], s_N[j]``."""
    return _loss("sim", mode, SYMS.tau if tau is None else tau)


def per_anchor_loss_rep(mode: str, tau: sp.Expr | None = None) -> sp.Expr:
    """``L_i`` as a function of the representation components ``f_a[d], f_R[j,d], ...``."""
    return _loss("rep", mode, SYMS.tau if tau is None else tau)


# --------------------------------------------------------------------------- resolution
def _clamp_side(arg: sp.Expr) -> tuple[sp.Expr, int] | None:
    """The similarity object in ``arg`` that belongs to a clamped set, and its side (+1/-1)."""
    S = SYMS
    bases = {S.sR: "R", S.sC: "C", S.fR: "R", S.fC: "C"}
    found: list[tuple[sp.Expr, int]] = []
    for sm in arg.atoms(Sum):            # representation level: Sum(a[d]*f_X[j,d], (d,1,D))
        names = {bases[i.base] for i in sm.atoms(Indexed) if i.base in bases}
        if len(names) == 1:
            found.append((sm, _SIDE[names.pop()]))
    if not found:
        for ix in arg.atoms(Indexed):    # similarity level: s_R[j], s_C[j]
            if ix.base in bases:
                found.append((ix, _SIDE[bases[ix.base]]))
    if len(found) != 1:
        return None
    return found[0]


def _on_side(x: sp.Expr) -> sp.Expr:
    """Evaluate one ``Min``/``Heaviside`` on the open clamp region its similarity belongs to."""
    hit = _clamp_side(x)
    if hit is None:
        return x
    sim, side = hit
    delta = sp.Dummy("delta", positive=True)
    probe = x.xreplace({sim: 1 - SYMS.m + side * delta})
    if isinstance(x, Heaviside):
        val = sp.simplify(probe)
        if val not in (0, 1):
            raise RuntimeError(f"could not decide {x} on side {side}: {val}")
        return val
    # Min(s + m, 1): sympy evaluates the probe to the smaller branch on this side
    if isinstance(probe, Min):
        raise RuntimeError(f"could not decide {x} on side {side}")
    for orig in x.args:      # map the evaluated branch back to the original argument
        if sp.simplify(orig.xreplace({sim: 1 - SYMS.m + side * delta}) - probe) == 0:
            return orig
    raise RuntimeError(f"could not match the branch {probe} of {x}")


def _resolve_clamp(expr: sp.Expr) -> sp.Expr:
    return expr.replace(lambda x: isinstance(x, (Min, Heaviside)), _on_side)


def sum_rule(sm: Sum) -> sp.Expr:
    """Evaluate the only two kinds of sums differentiation creates, leave the rest alone.

    ``Sum(g * KroneckerDelta(v, x), (v, lo, hi)) -> g(x)`` (``x`` is the differentiated index,
    in range by construction) and ``Sum(g, (v, lo, hi)) -> (hi - lo + 1) * g`` when ``g`` does
    not depend on ``v``.  sympy's own ``Sum.doit`` is avoided: it is slow here (Gosper) and
    returns wrong closed forms for sums of ``Indexed`` terms.  A multiple sum
    ``Sum(f, inner, ..., outer)`` is evaluated limit by limit from the innermost one out; a
    summand that stays a ``Sum`` is kept as it is (never rebuilt and re-entered: sympy flattens
    ``Sum(Sum(f, a), b)`` back into ``Sum(f, a, b)``, which would recurse forever).
    """
    f = sm.function
    for lim in sm.limits:
        f = _sum_rule_one(f, lim)
    return f


def _sum_rule_one(function: sp.Expr, limit: tuple) -> sp.Expr:
    """One limit of :func:`sum_rule` (``limit = (v, lo, hi)``)."""
    v, lo, hi = limit
    out: list[sp.Expr] = []
    rest = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand_mul(function)):
        ind, dep = term.as_independent(v, as_Add=False)
        if dep == 1:
            out.append(ind * (hi - lo + 1))
            continue
        deltas = [f for f in sp.Mul.make_args(dep)
                  if isinstance(f, sp.KroneckerDelta) and v in f.args]
        if deltas:
            kd = deltas[0]
            x = kd.args[1] if kd.args[0] == v else kd.args[0]
            out.append(ind * (dep / kd).xreplace({v: x}))
        else:
            rest += term
    if rest != 0:
        out.append(Sum(rest, (v, lo, hi)))
    return sp.Add(*out)


def settle(expr: sp.Expr) -> sp.Expr:
    """Delta sums collapsed and every Min/Heaviside put on its open clamp side (fixed point)."""
    for _ in range(8):
        new = expr.replace(lambda x: isinstance(x, Sum) and x.has(sp.KroneckerDelta), sum_rule)
        new = _resolve_clamp(new)
        new = new.replace(lambda x: isinstance(x, Sum) and not x.function.has(x.limits[0][0]),
                          sum_rule)
        if new == expr:
            break
        expr = new
    return expr


@lru_cache(maxsize=64)
def derive(kind: str, mode: str, wrt: str, tau: sp.Expr | None = None) -> sp.Expr:
    """Gradient of ``L_i`` for ``mode`` with respect to one variable, on the open clamp regions.

    kind: ``"sim"`` (w.r.t. ``s_X[k]``) or ``"rep"`` (w.r.t. component ``e`` of a row).
    wrt: ``"anchor"`` (rep only), ``"R"``, ``"C"`` or ``"N"`` (member ``k`` of that set).
    """
    return gradient_of(_loss(kind, mode, SYMS.tau if tau is None else tau), kind, wrt)


def gradient_of(L: sp.Expr, kind: str, wrt: str) -> sp.Expr:
    """Gradient of a per-anchor loss expression ``L`` (built like :func:`per_anchor_loss_sim` /
    :func:`per_anchor_loss_rep`) w.r.t. member ``k`` of set ``wrt`` (or the anchor), settled on
    the open clamp regions.  :func:`derive` is this applied to the package's losses; the
    mutation controls apply it to deliberately wrong losses."""
    S = SYMS
    if kind == "sim":
        if wrt == "anchor":
            raise ValueError("the anchor has no similarity of its own; use kind='rep'")
        var = {"R": S.sR, "C": S.sC, "N": S.sN}[wrt][S.k]
    elif kind == "rep":
        var = S.a[S.e] if wrt == "anchor" else {"R": S.fR, "C": S.fC, "N": S.fN}[wrt][S.k, S.e]
    else:
        raise ValueError(f"kind={kind!r} must be 'sim' or 'rep'")
    return settle(sp.diff(L, var))


# --------------------------------------------------------------------------- the paper's formulas
def paper_gradient(kind: str, mode: str, wrt: str, tau: sp.Expr | None = None) -> sp.Expr:
    """CFF Eq. 18 / A.5 / A.6 / A.7 (at ``τ = 1`` verbatim), extended to general ``τ``.

    For ``none``/``subtract`` the paper's formulas with ``m = 0`` and no saturated set apply to
    every positive (R and C alike).  For ``kind="sim"`` the coefficient multiplying the other
    row in A.5-A.7 is returned (``∂L_i/∂s_ik``).
    """
    S = SYMS
    t = S.tau if tau is None else tau
    j, l = S.j, S.l
    clamp = mode == "clamp"
    m = S.m if clamp else 0
    size = {"R": S.r, "C": S.c, "N": S.n}
    F = {"R": S.fR, "C": S.fC, "N": S.fN}
    sim = {b: _sim(kind, b, l) for b in ("R", "C", "N")}
    if clamp:   # R: Q = 1, C: Q = s + m
        Z = paper_denominator(kind, t)
    else:
        Z = sum(Sum(sp.exp(sim[b] / t), (l, 1, size[b])) for b in ("R", "C", "N"))
    npos = S.r + S.c
    if wrt == "anchor":
        if kind != "rep":
            raise ValueError("anchor gradient exists at kind='rep' only")
        act = ("C",) if clamp else ("R", "C")      # the unsaturated positives Rᶜ
        first = -sum(Sum(F[b][j, S.e], (j, 1, size[b])) for b in act) / npos
        num = (sum(Sum(sp.exp((sim[b] + m) / t) * F[b][l, S.e], (l, 1, size[b])) for b in act)
               + Sum(sp.exp(sim["N"] / t) * F["N"][l, S.e], (l, 1, S.n)))
        return (first + num / Z) / t                                       # Eq. 18
    other = 1 if kind == "sim" else S.a[S.e]
    sk = _sim(kind, wrt, S.k)
    if wrt == "R" and clamp:
        return sp.Integer(0)                                               # Eq. A.5
    if wrt in ("R", "C"):
        return (-other / npos + sp.exp((sk + m) / t) * other / Z) / t     # Eq. A.6
    if wrt == "N":
        return sp.exp(sk / t) * other / Z / t                              # Eq. A.7
    raise ValueError(f"wrt={wrt!r} must be 'anchor', 'R', 'C' or 'N'")


# --------------------------------------------------------------------------- identities
#: canonical summation indices by nesting depth.  ``Dummy``, not ``Symbol("i0")``: a Dummy
#: equals no user symbol, so a free symbol that happens to be called ``i0`` can never be
#: captured by a renamed sum (which could cancel a false identity to 0).
CANON_DEPTH = 8
_CANON = tuple(sp.Dummy(f"i{t}", integer=True) for t in range(CANON_DEPTH))


class NormalFormError(ValueError):
    """An expression the indexed-sum normal form does not handle (e.g. sums nested too deep)."""


def _canon(expr: sp.Expr, depth: int = 0) -> sp.Expr:
    """Canonical form of indexed sums: dummies renamed by nesting depth, summands expanded
    into one ``Sum`` per term, factors free of the dummy pulled out (``Sum(1) -> count``).

    A multiple sum ``Sum(f, (i, ...), (j, ...))`` (also what sympy makes of a nested
    ``Sum(Sum(f, i), j)``) is handled limit by limit: the outermost index gets the canonical
    dummy of ``depth``, the next one ``depth + 1``, ...; bounds of inner limits may depend on
    outer indices.
    """
    if isinstance(expr, Sum):
        return _canon_sum(expr.function, list(expr.limits), depth)
    if not expr.args or isinstance(expr, (Indexed, IndexedBase)):
        return expr
    return expr.func(*[_canon(a, depth) for a in expr.args])


def _canon_sum(function: sp.Expr, limits: list[tuple], depth: int) -> sp.Expr:
    """``Sum(function, *limits)`` in canonical form (``limits[-1]`` is the outermost index)."""
    if not limits:
        return _canon(function, depth)
    if depth >= CANON_DEPTH:
        raise NormalFormError(f"sums nested deeper than {CANON_DEPTH} levels are not supported "
                              "by the indexed-sum normal form")
    (v, lo, hi) = limits[-1]
    nv = _CANON[depth]
    lo, hi = _canon(lo, depth), _canon(hi, depth)
    # the outer index first becomes a fresh Dummy (no capture), the summand (with any inner
    # limits) is brought to normal form one level deeper, then split into the factors free
    # of the index (pulled out, re-canonicalised at this depth) and the rest (summed over nv)
    w = sp.Dummy("w", integer=True)
    inner_limits = [tuple(x.xreplace({v: w}) for x in lim) for lim in limits[:-1]]
    body = _canon_sum(function.xreplace({v: w}), inner_limits, depth + 1)
    out = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand_mul(body)):
        ind, dep = term.as_independent(w, as_Add=False)
        ind = _canon(ind, depth)
        if dep == 1:
            out += ind * (hi - lo + 1)
        else:
            out += ind * Sum(_canon(dep.xreplace({w: nv}), depth + 1), (nv, lo, hi))
    return out


def canonical_residual(expr: sp.Expr) -> sp.Expr:
    """Residual in canonical form: canonical sums, common denominator, expanded numerator.

    Returns exactly ``0`` when the expanded numerator vanishes; otherwise the canonical
    residual (conservative: a residual this normal form cannot cancel is reported non-zero,
    never the other way round).
    """
    r = sp.together(_canon(expr))
    num = sp.expand(sp.numer(r))
    if num == 0:
        return sp.Integer(0)
    return num / sp.denom(r)


def _shift_positive_sims(expr: sp.Expr) -> sp.Expr:
    """Substitute the shifted logits of the clamp: ``s_R -> 1``, ``s_C -> s_C + m``."""
    S = SYMS
    return expr.replace(lambda x: isinstance(x, Indexed) and x.base in (S.sR, S.sC),
                        lambda x: sp.Integer(1) if x.base == S.sR else x + S.m)


@lru_cache(maxsize=1)
def identities() -> tuple[tuple[str, sp.Expr], ...]:
    """Every symbolic identity as ``(name, simplified residual)``; each must be exactly 0."""
    S = SYMS
    out: list[tuple[str, sp.Expr]] = []
    labels = {"anchor": "Eq. 18 (k the anchor)", "R": "Eq. A.5 (k a saturated positive, clamp active)",
              "C": "Eq. A.6 (k an unsaturated positive, clamp inactive)", "N": "Eq. A.7 (k a negative)"}
    for tau_name, tau in (("tau=1", sp.Integer(1)), ("general tau", None)):
        for wrt in ("anchor", "R", "C", "N"):
            for kind in ("rep", "sim"):
                if kind == "sim" and wrt == "anchor":
                    continue
                res = canonical_residual(derive(kind, "clamp", wrt, tau) - paper_gradient(kind, "clamp", wrt, tau))
                lvl = "representations" if kind == "rep" else "similarities"
                out.append((f"clamp {labels[wrt]} w.r.t. {lvl}, {tau_name}", res))
    for mode in ("none", "subtract"):
        for wrt, who in (("anchor", "k anchor"), ("C", "k positive"), ("N", "k negative")):
            res = canonical_residual(derive("rep", mode, wrt) - paper_gradient("rep", mode, wrt))
            out.append((f"{mode}: gradient ({who}) = paper formula with m=0, R empty, general tau", res))
    # Steier Prop. 4.1: L_sub - L_none = m, for symbolic |P| = r + c, |N| = n
    diff_loss = settle(per_anchor_loss_sim("subtract") - per_anchor_loss_sim("none"))
    out.append(("subtract: L_sub - L_none - m (symbolic |P|, |N|)", canonical_residual(diff_loss - S.m)))
    for kind, wrts in (("sim", ("R", "C", "N")), ("rep", ("anchor", "R", "C", "N"))):
        for wrt in wrts:
            res = canonical_residual(derive(kind, "subtract", wrt) - derive(kind, "none", wrt))
            out.append((f"subtract: gradient neutrality dL_sub - dL_none ({kind}, {wrt}) (Prop. 4.1)", res))
    # saturated pair: exactly zero; unsaturated: no-margin gradient at shifted logits
    out.append(("clamp: saturated pair dL/ds_R[k] (s+m>1) is exactly 0", canonical_residual(derive("sim", "clamp", "R"))))
    out.append(("clamp: saturated pair dL/df_R[k] (s+m>1) is exactly 0", canonical_residual(derive("rep", "clamp", "R"))))
    for wrt in ("C", "N"):
        shifted = _shift_positive_sims(derive("sim", "none", wrt))
        res = canonical_residual(derive("sim", "clamp", wrt) - shifted)
        out.append((f"clamp: dL/ds_{wrt}[k] = no-margin gradient at shifted logits "
                    "(s_R->1, s_C->s_C+m)", res))
    # the per-positive value terms used numerically sum to the symbolic per-anchor loss
    for mode in MODES:
        L = per_anchor_loss_sim(mode)
        Zs = loss_denominator("sim", mode, resolved=False)
        lp = loss_pos_expr(mode).xreplace({S.P: S.r + S.c, S.Z: Zs})
        total = sum(Sum(lp.xreplace({S.s: base[S.j]}), (S.j, 1, size))
                    for base, size in ((S.sR, S.r), (S.sC, S.c)))
        out.append((f"value ({mode}): sum over positives of the lambdified pair term = L_i",
                    canonical_residual(total - L)))
    # the clamp's one-sided derivatives, and sympy's boundary value (documented convention)
    x = sp.Symbol("x", real=True)
    dq = sp.diff(Min(x + S.m, 1), x)
    delta = sp.Symbol("delta", positive=True)
    out.append(("d/ds min(s+m,1) = 1 just below the boundary (s+m = 1-delta)",
                canonical_residual(dq.subs(x, 1 - S.m - delta) - 1)))
    out.append(("d/ds min(s+m,1) = 0 just above the boundary (s+m = 1+delta)",
                canonical_residual(dq.subs(x, 1 - S.m + delta))))
    out.append(("sympy convention: d/ds min(s+m,1) = Heaviside(0) = 1/2 on the boundary "
                "(torch.clamp passes 1; checks avoid the boundary)", canonical_residual(dq.subs(x, 1 - S.m) - sp.Rational(1, 2))))
    return tuple(out)


# --------------------------------------------------------------------------- mutation controls
def _first_term(expr: sp.Expr, pred) -> sp.Expr:
    terms = [t for t in sp.Add.make_args(expr) if pred(t)]
    if not terms:
        raise RuntimeError(f"mutation: no matching term in {expr}")
    return terms[0]


_TAU_MUTATIONS = ("A.6 with the margin outside", "A.7 with the overall 1/tau", "A.6 with tau on")


@lru_cache(maxsize=1)
def mutations() -> tuple[tuple[str, sp.Expr], ...]:
    """Negative controls: deliberately wrong references, each as ``(name, residual)``.

    Every residual must be NON-zero; a zero would mean the normal form cancels a false
    identity.  Mutated here: the paper's formulas (sign flips, a dropped ``1/|P|``,
    ``e^{(s+m)/τ} -> e^{s/τ}``, ``τ`` misplaced) and the subtraction loss (the margin put
    inside the softmax instead of after the log-probability, and ``m/τ`` for ``m``), which
    must break the neutrality identities.
    """
    S = SYMS
    out: list[tuple[str, sp.Expr]] = []
    t = S.tau
    npos = S.r + S.c
    sCk = _sim("rep", "C", S.k)
    for tau_name, tau in (("tau=1", sp.Integer(1)), ("general tau", None)):
        tt = t if tau is None else tau
        d_anchor = derive("rep", "clamp", "anchor", tau)
        d_C = derive("rep", "clamp", "C", tau)
        d_N = derive("rep", "clamp", "N", tau)
        p_anchor = paper_gradient("rep", "clamp", "anchor", tau)
        p_C = paper_gradient("rep", "clamp", "C", tau)
        p_N = paper_gradient("rep", "clamp", "N", tau)
        cases = [
            ("A.6 with its sign flipped", d_C, -p_C),
            ("A.7 with its sign flipped", d_N, -p_N),
            ("A.6 with the sign of the -1/|P| term flipped",
             d_C, p_C + 2 * S.a[S.e] / (npos * tt)),
            ("Eq. 18 with the sign of the -(1/|P|) sum f_C term flipped", d_anchor,
             p_anchor + 2 * _first_term(sp.expand(p_anchor), lambda x: x.has(S.fC) and not x.has(sp.exp))),
            ("A.6 with 1/|P| dropped", d_C, p_C.xreplace({npos: sp.Integer(1)})),
            ("Eq. 18 with 1/|P| dropped", d_anchor, p_anchor.xreplace({npos: sp.Integer(1)})),
            ("A.6 with e^{(s+m)/tau} -> e^{s/tau} in the numerator", d_C,
             (-S.a[S.e] / npos + sp.exp(sCk / tt) * S.a[S.e] / paper_denominator("rep", tt)) / tt),
            ("A.6 with the margin dropped everywhere (m -> 0)", d_C, p_C.xreplace({S.m: 0})),
            ("A.6 with the margin outside the temperature, e^{s/tau + m}", d_C,
             p_C.replace(sp.exp, lambda a: sp.exp(a.xreplace({S.m: 0}) + (S.m if a.has(S.m) else 0)))),
            ("A.7 with the overall 1/tau dropped", d_N, p_N * tt),
            ("A.6 with tau on the -1/|P| term only", d_C,
             (-S.a[S.e] / (npos * tt) + sp.exp((sCk + S.m) / tt) * S.a[S.e] / paper_denominator("rep", tt))),
        ]
        for name, derived, wrong in cases:
            if tau is not None and name.startswith(_TAU_MUTATIONS):
                continue        # at tau = 1 a misplaced tau is no mutation at all
            out.append((f"clamp: {name}, {tau_name}", canonical_residual(derived - wrong)))
    # neutrality: the margin moved inside the softmax (a real margin, not a constant shift)
    L_none = per_anchor_loss_sim("none")
    j, l = S.j, S.l
    Zin = (Sum(sp.exp((S.sR[l] - S.m) / t), (l, 1, S.r)) + Sum(sp.exp((S.sC[l] - S.m) / t), (l, 1, S.c))
           + Sum(sp.exp(S.sN[l] / t), (l, 1, S.n)))
    L_in = -sum(Sum((b[j] - S.m) / t - sp.log(Zin), (j, 1, size)) for b, size in ((S.sR, S.r), (S.sC, S.c))) / npos
    for wrt in ("C", "N"):
        out.append((f"subtract mutated (margin inside the softmax): dL_sub - dL_none ({wrt})",
                    canonical_residual(gradient_of(L_in, "sim", wrt) - derive("sim", "none", wrt))))
    L_tau = per_anchor_loss_sim("subtract").xreplace({S.m: S.m / t})
    out.append(("subtract mutated (m/tau subtracted): L_sub - L_none - m",
                canonical_residual(settle(L_tau - L_none) - S.m)))
    out.append(("subtract mutated (margin inside the softmax): L_sub - L_none - m",
                canonical_residual(settle(L_in - L_none) - S.m)))
    return tuple(out)


def paper_denominator(kind: str, t: sp.Expr) -> sp.Expr:
    """The clamp-mode softmax denominator as written in the paper (R: e^{1/τ}, C: e^{(s+m)/τ})."""
    S = SYMS
    l = S.l
    sim = {b: _sim(kind, b, l) for b in ("C", "N")}
    return (Sum(sp.exp(1 / t), (l, 1, S.r)) + Sum(sp.exp((sim["C"] + S.m) / t), (l, 1, S.c))
            + Sum(sp.exp(sim["N"] / t), (l, 1, S.n)))


# --------------------------------------------------------------------------- shared by the other forms
def collapse_sims(expr: sp.Expr) -> sp.Expr:
    S = SYMS
    base = {S.fR: S.sR, S.fC: S.sC, S.fN: S.sN}

    def repl(sm: Sum) -> sp.Expr:
        if len(sm.limits) == 1 and sm.limits[0][0] == S.d:
            ix = [i for i in sm.atoms(Indexed) if i.base in base]
            if len(ix) == 1:
                return base[ix[0].base][ix[0].indices[0]]
        return sm
    return expr.replace(lambda x: isinstance(x, Sum), repl)


def loss_pos_expr(mode: str) -> sp.Expr:
    """Loss term of one positive pair, ``-(log_prob)/|P|`` (``+ m/|P|`` for subtract).

    In the scalars ``s, m, tau, P, Z``; ``Σ_{p∈P(i)}`` of it is ``L_i`` (checked in
    :func:`identities`).
    """
    S = SYMS
    q = Min(S.s + S.m, 1) if mode == "clamp" else S.s
    lp = -(q / S.tau - sp.log(S.Z)) / S.P
    return lp + S.m / S.P if mode == "subtract" else lp


def loss_denominator(kind: str, mode: str, resolved: bool) -> sp.Expr:
    """The softmax denominator ``Z`` of the per-anchor loss (the argument of its one log)."""
    logs = list(_loss(kind, mode, SYMS.tau).atoms(sp.log))
    if len(logs) != 1:
        raise RuntimeError("expected exactly one log in the per-anchor loss")
    Zs = logs[0].args[0]
    return settle(Zs) if resolved else Zs


def to_piecewise(expr: sp.Expr) -> sp.Expr:
    """Rewrite ``Min``/``Max`` as ``Piecewise`` (``lambdify(..., modules='torch')`` fails on Min).

    ``Min(x + m, 1)`` becomes ``Piecewise((1, x + m >= 1), (x + m, True))`` (sympy's own
    ``rewrite``); the boundary itself is a measure-zero set the checks never sample.
    """
    return expr.replace(lambda x: isinstance(x, (Min, sp.Max)), lambda x: x.rewrite(Piecewise))
