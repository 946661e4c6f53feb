"""Cross-check of the derived gradients against torch autograd of ``vit.losses.supcon_loss``.

For every random case (batch size, views, label layout, dimension, mode, ``m``, ``τ``) the
full-batch gradient with respect to the *raw* (un-normalised) features is assembled from the
lambdified symbolic formulas of :mod:`theory.symbolic` and compared with
``torch.autograd`` through ``supcon_loss(..., normalize=True)``.

Assembly (float64 numpy, vectorised over all cases of one mode, rows zero-padded):

1. ``z = x / |x|``, ``S = z zᵀ``; sets per anchor i: R (positives with ``s + m > 1``, clamp mode
   only), C (the other positives), N (negatives); anchors without a positive get weight 0.
2. ``Z_i = Σ_j z_X(s_ij)`` with the denominator summands read off the symbolic loss.
3. ``A[i, j]`` = coefficient of ``f_j`` in the derived anchor gradient (Eq. 18) and
   ``B[i, k]`` = coefficient of ``f_i`` in the derived gradient w.r.t. a non-anchor row k
   (Eq. A.5-A.7), each selected by the set of j (k).
4. ``∂L/∂z_k = Σ_j w_k A[k, j] z_j + Σ_i w_i B[i, k] z_i`` with ``w_i = 1/#anchors`` for
   anchors with a positive (the loss is the mean over them), else 0.
5. Through the L2 normalisation: ``∂L/∂x_k = (I - z_k z_kᵀ) ∂L/∂z_k / |x_k|``.

Relative error of a case (max over all entries, then max over cases)::

    rel = max|g_sym - g_auto| / max(max|g_auto|, FLOOR * G_term),   G_term = max_k 1/(τ |x_k|)

``G_term`` is the size of one term of the gradient (every per-pair coefficient is a softmax
probability or ``1/|P|`` divided by τ, and the normalisation Jacobian has norm ``1/|x_k|``).
Where the true gradient cancels far below one term - e.g. two positives with ``s = 1 - 10⁻⁸``
and ``m = 0`` give a gradient ~10⁻⁸ of a term - *both* implementations have an absolute error
of ~1e-16·G_term, so a plain relative error would measure the conditioning of the case, not
the formulas.  ``FLOOR = 1e-4``: such cases are compared relative to 10⁻⁴ of a term.  The
un-floored figure (``max|Δ| / max(max|g_auto|, 1e-300)``) and the absolute error in units of
``G_term`` are reported alongside, and the ``N_WORST`` cases with the largest un-floored error
are recomputed by an independent ``mpmath`` implementation at 100 significant digits
(:func:`mp_reference_gradient`): both float64 results (derived formulas and autograd) are
compared with it, which shows whether a large un-floored figure is a formula error (one side
far off) or the conditioning of the case (both within ~1e-16 of a term).  A case whose autograd gradient is exactly zero (no anchor
with a positive) must give an exactly zero symbolic gradient (the floor is then still > 0,
so any non-zero symbolic value shows up).  The loss value is compared the same way with the
term scale ``1/τ``.

Near the clamp boundary: in a share of cases some positive pairs are built with
``s = 1 - m ± δ``, ``δ = 10^U(-8, -2)``; every case has ``|s + m - 1| >= 1e-9`` on all of its
positive pairs (resampled otherwise), so both sides of the boundary are exercised and the
boundary itself (a convention: torch passes gradient 1, sympy 1/2) is never hit.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from theory.numeric import numeric_coefficients
from vit.losses import LOSS_MODES, supcon_loss

__all__ = ["Case", "make_cases", "symbolic_gradients", "autograd_gradients", "check_autograd",
           "mp_reference_gradient", "BOUNDARY_GAP", "FLOOR", "MP_DPS"]

BOUNDARY_GAP = 1e-9      # every positive pair keeps |s + m - 1| >= this
FLOOR = 1e-4             # cancelled gradients are compared relative to FLOOR * (one term)
N_WORST = 20             # worst un-floored cases re-evaluated against the mpmath reference
MP_DPS = 100             # significant digits of the mpmath reference
_TINY = 1e-300


@dataclass(frozen=True)
class Case:
    """One random test batch: raw features (V·B, D), labels (B,), views, mode, m, τ."""

    x: np.ndarray
    labels: np.ndarray
    n_views: int
    mode: str
    margin: float
    tau: float
    as_list: bool        # pass the views to supcon_loss as a list instead of one tensor


def _positive_mask(labels: np.ndarray, n_views: int) -> np.ndarray:
    lab = np.tile(labels, n_views)
    same = lab[:, None] == lab[None, :]
    np.fill_diagonal(same, False)
    return same


def _one_case(rng: np.random.Generator, mode: str) -> Case:
    while True:
        n_views = int(rng.choice([1, 2, 3], p=[0.3, 0.55, 0.15]))
        B = int(rng.integers(1, 9))
        D = int(rng.integers(2, 17))
        K = int(rng.integers(1, B + 1))
        labels = rng.integers(0, K, size=B)
        n = n_views * B
        m = float(rng.uniform(0.0, 2.0))
        tau = float(np.exp(rng.uniform(np.log(0.05), np.log(1.0))))
        x = rng.normal(size=(n, D)) * 10.0 ** rng.uniform(-1, 1, size=(n, 1))
        pos = _positive_mask(labels, n_views)
        if rng.random() < 0.7:           # place some positive pairs next to the clamp boundary
            frozen: set[int] = set()
            for jrow in rng.permutation(n):
                partners = [i for i in np.flatnonzero(pos[jrow]) if i != jrow]
                if jrow in frozen or not partners or rng.random() < 0.4:
                    continue
                i = int(rng.choice(partners))
                zi = x[i] / np.linalg.norm(x[i])
                w = rng.normal(size=D)
                w -= (w @ zi) * zi
                w /= np.linalg.norm(w)
                delta = 10.0 ** rng.uniform(-8, -2)
                target = 1.0 - m + (delta if rng.random() < 0.5 else -delta)
                if not -1.0 <= target <= 1.0:
                    target = 1.0 - m - np.sign(target - (1.0 - m)) * delta
                cos = float(np.clip(target, -1.0, 1.0))
                x[jrow] = np.linalg.norm(x[jrow]) * (cos * zi + np.sqrt(max(0.0, 1 - cos * cos)) * w)
                frozen.update((i, int(jrow)))
        z = x / np.linalg.norm(x, axis=1, keepdims=True)
        s = z @ z.T
        if pos.any() and np.min(np.abs(s[pos] + m - 1.0)) < BOUNDARY_GAP:
            continue
        return Case(x, labels, n_views, mode, m, tau, bool(rng.random() < 0.3) and n_views > 1)


def make_cases(n_cases: int, seed: int) -> list[Case]:
    """``n_cases`` random cases, the modes in turn (none, clamp, subtract, none, ...)."""
    if n_cases < 0:
        raise ValueError(f"n_cases={n_cases} must be >= 0")
    rng = np.random.default_rng(seed)
    return [_one_case(rng, LOSS_MODES[i % len(LOSS_MODES)]) for i in range(n_cases)]


def symbolic_gradients(cases: list[Case], dtype: type = np.float64
                       ) -> tuple[list[np.ndarray], np.ndarray, dict]:
    """Gradients w.r.t. the raw features and loss values from the lambdified derivation.

    All cases must share one mode; they are padded to a common (rows, dim) and evaluated at once.
    ``dtype=np.longdouble`` evaluates the same formulas in extended precision.  Returns (per-case gradients, loss values, counters).
    """
    if not cases:
        return [], np.zeros(0), {"R": 0, "C": 0, "N": 0, "no_positive_anchors": 0}
    modes = {c.mode for c in cases}
    if len(modes) != 1:
        raise ValueError(f"symbolic_gradients needs cases of one mode, got {sorted(modes)}")
    nc = numeric_coefficients(modes.pop())
    K = len(cases)
    nmax = max(c.x.shape[0] for c in cases)
    dmax = max(c.x.shape[1] for c in cases)
    X = np.zeros((K, nmax, dmax), dtype=dtype)
    valid = np.zeros((K, nmax), bool)
    lab = np.full((K, nmax), -1, np.int64)
    for q, c in enumerate(cases):
        n, d = c.x.shape
        X[q, :n, :d] = c.x.astype(dtype)
        valid[q, :n] = True
        lab[q, :n] = np.tile(c.labels, c.n_views)
    m = np.array([c.margin for c in cases], dtype=dtype)[:, None, None]
    tau = np.array([c.tau for c in cases], dtype=dtype)[:, None, None]
    norm = np.sqrt(np.sum(X * X, axis=2, keepdims=True))
    z = np.where(valid[..., None], X / np.where(valid[..., None], norm, 1.0), 0.0)
    S = z @ z.transpose(0, 2, 1)
    pair = valid[:, :, None] & valid[:, None, :] & ~np.eye(nmax, dtype=bool)[None]
    same = lab[:, :, None] == lab[:, None, :]
    pos = pair & same
    neg = pair & ~same
    if cases[0].mode == "clamp":
        R = pos & (S + m > 1.0)
    else:
        R = np.zeros_like(pos)
    C = pos & ~R
    sets = {"R": R, "C": C, "N": neg}
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        Z = sum(np.where(M, np.broadcast_to(nc.z_term[X_](S, m, tau), S.shape), 0.0).sum(-1)
                for X_, M in sets.items())[..., None]
        P = pos.sum(-1)[..., None].astype(dtype)
        has = P[..., 0] > 0
        Ps, Zs = np.maximum(P, 1.0), np.where(has[..., None], Z, 1.0)
        A = np.zeros_like(S)
        Bm = np.zeros_like(S)
        for X_, M in sets.items():
            A = A + np.where(M, np.broadcast_to(nc.anchor[X_](S, m, tau, Ps, Zs), S.shape), 0.0)
            Bm = Bm + np.where(M, np.broadcast_to(nc.other[X_](S, m, tau, Ps, Zs), S.shape), 0.0)
        lp = np.where(pos, np.broadcast_to(nc.loss_pos(S, m, tau, Ps, Zs), S.shape), 0.0).sum(-1)
    n_anchor = has.sum(-1)
    w = np.where(has, 1 / np.maximum(n_anchor, 1).astype(dtype)[:, None], 0)
    Gz = (w[..., None] * A) @ z + (w[..., None] * Bm).transpose(0, 2, 1) @ z
    Gx = (Gz - z * np.sum(z * Gz, axis=2, keepdims=True)) / np.where(valid[..., None], norm, 1.0)
    loss = np.sum(w * np.where(has, lp, 0.0), axis=1)
    grads = [Gx[q, :c.x.shape[0], :c.x.shape[1]] for q, c in enumerate(cases)]
    counts = {"R": int(R.sum()), "C": int(C.sum()), "N": int(neg.sum()),
              "no_positive_anchors": int((valid & ~has).sum())}
    return grads, loss, counts


def autograd_gradients(case: Case) -> tuple[np.ndarray, float]:
    """Gradient w.r.t. the raw features and loss value by torch autograd of ``supcon_loss``."""
    x = torch.tensor(case.x, dtype=torch.float64, requires_grad=True)
    labels = torch.as_tensor(case.labels)
    feats = list(x.chunk(case.n_views, dim=0)) if case.as_list else x
    loss = supcon_loss(feats, labels, margin=case.margin, temperature=case.tau, mode=case.mode,
                       normalize=True)
    loss.backward()
    return x.grad.numpy(), float(loss.detach())


def mp_reference_gradient(case: Case, dps: int = MP_DPS) -> list[list]:
    """The exact gradient at the case's (exactly representable) float64 inputs, to ``dps`` digits.

    An independent implementation with ``mpmath``: the loss of CFF Eq. 14-15 (and its ``none``
    and ``subtract`` variants, whose gradients coincide) differentiated by hand through the
    paper's formulas, per anchor ``i`` and pair ``j``::

        dL_i/ds_ij = (e^{q_ij/τ} / Z_i - [j ∈ P(i)] / |P(i)|) / τ   (0 for a saturated positive)

    accumulated into ``∂L/∂z`` (``s_ij = z_i·z_j``), averaged over the anchors with a positive,
    and taken through the L2 normalisation.  No lambdified sympy and no float64 enter it.
    Returns the gradient as nested lists of ``mpmath.mpf`` (rows x dims).
    """
    import mpmath

    with mpmath.workdps(dps):
        X = [[mpmath.mpf(float(v)) for v in row] for row in case.x]
        n, D = len(X), len(X[0])
        norms = [mpmath.sqrt(mpmath.fsum(v * v for v in row)) for row in X]
        z = [[v / nr for v in row] for row, nr in zip(X, norms)]
        lab = np.tile(case.labels, case.n_views)
        sim = [[mpmath.fsum(a * b for a, b in zip(z[i], z[j])) for j in range(n)] for i in range(n)]
        m, tau = mpmath.mpf(case.margin), mpmath.mpf(case.tau)
        clamp = case.mode == "clamp"
        G = [[mpmath.mpf(0)] * D for _ in range(n)]
        anchors = [i for i in range(n) if any(lab[j] == lab[i] for j in range(n) if j != i)]
        for i in anchors:
            P = [j for j in range(n) if j != i and lab[j] == lab[i]]
            N = [j for j in range(n) if lab[j] != lab[i]]
            q = {j: (min(sim[i][j] + m, mpmath.mpf(1)) if clamp else sim[i][j]) for j in P}
            q.update({j: sim[i][j] for j in N})
            Z = mpmath.fsum(mpmath.exp(q[j] / tau) for j in P + N)
            for j in P + N:
                if clamp and j in P and sim[i][j] + m > 1:
                    continue                      # saturated positive: dQ/ds = 0
                g = (mpmath.exp(q[j] / tau) / Z - (mpmath.mpf(1) / len(P) if j in P else 0)) / tau
                g /= len(anchors)
                for d in range(D):
                    G[i][d] += g * z[j][d]
                    G[j][d] += g * z[i][d]
        out = []
        for k in range(n):
            dot = mpmath.fsum(a * b for a, b in zip(z[k], G[k]))
            out.append([(G[k][d] - z[k][d] * dot) / norms[k] for d in range(D)])
        return out


def _mp_worst(worst: list[tuple[float, Case, np.ndarray]], dps: int = MP_DPS) -> dict:
    """Compare the float64 results of the worst (un-floored) cases with the mpmath reference.

    If the un-floored discrepancy is the conditioning of the case (cancellation far below one
    gradient term) and not a formula error, BOTH float64 results are about equally close to the
    ``dps``-digit value, in absolute terms ~1e-16 of a term.  Reported: the largest absolute
    error of each (in gradient units and in units of one term ``G_term``) and relative to
    ``max|g_ref|``; how far the gradient cancels (``max|g_ref| / G_term``, largest over the
    cases); and per case its mode, margin, τ and the distance ``|s + m - 1|`` of its closest
    positive pair to the clamp boundary.
    """
    import mpmath

    if not worst:
        return {"cases": 0, "dps": dps}
    rows = []
    for plain, case, g64 in worst:
        ref = mp_reference_gradient(case, dps)
        ga, _ = autograd_gradients(case)
        with mpmath.workdps(dps):
            scale = max(abs(v) for row in ref for v in row)
            e_sym = max(abs(mpmath.mpf(float(g64[k, d])) - ref[k][d]) for k in range(len(ref))
                        for d in range(len(ref[0])))
            e_auto = max(abs(mpmath.mpf(float(ga[k, d])) - ref[k][d]) for k in range(len(ref))
                         for d in range(len(ref[0])))
        g_term = float(np.max(1.0 / (case.tau * np.linalg.norm(case.x, axis=1))))
        pos = _positive_mask(case.labels, case.n_views)
        gap = None
        if pos.any():
            zz = case.x / np.linalg.norm(case.x, axis=1, keepdims=True)
            gap = float(np.min(np.abs((zz @ zz.T)[pos] + case.margin - 1.0)))
        rows.append({"mode": case.mode, "margin": case.margin, "tau": case.tau,
                     "unfloored_rel_err_vs_each_other": plain,
                     "max_abs_grad_over_term": float(scale) / g_term,
                     "closest_positive_pair_to_boundary": gap,
                     "symbolic_abs_err": float(e_sym), "autograd_abs_err": float(e_auto),
                     "symbolic_abs_err_over_term": float(e_sym) / g_term,
                     "autograd_abs_err_over_term": float(e_auto) / g_term,
                     "symbolic_rel_err": float(e_sym / scale) if scale else 0.0,
                     "autograd_rel_err": float(e_auto / scale) if scale else 0.0})
    top = rows[0]
    return {"cases": len(rows), "dps": dps, "modes": sorted({r["mode"] for r in rows}),
            "max_unfloored_rel_err_vs_each_other": top["unfloored_rel_err_vs_each_other"],
            "symbolic_float64_max_abs_err": max(r["symbolic_abs_err"] for r in rows),
            "autograd_float64_max_abs_err": max(r["autograd_abs_err"] for r in rows),
            "symbolic_float64_max_abs_err_over_term": max(r["symbolic_abs_err_over_term"] for r in rows),
            "autograd_float64_max_abs_err_over_term": max(r["autograd_abs_err_over_term"] for r in rows),
            "symbolic_float64_rel_err": max(r["symbolic_rel_err"] for r in rows),
            "autograd_float64_rel_err": max(r["autograd_rel_err"] for r in rows),
            "max_grad_over_term": max(r["max_abs_grad_over_term"] for r in rows),
            "cases_with_a_positive_pair_within_1e-7_of_boundary": sum(
                r["closest_positive_pair_to_boundary"] is not None and r["closest_positive_pair_to_boundary"] < 1e-7
                for r in rows),
            "worst_case": top,
            "per_case": rows,
            "reference": f"mpmath, {dps} significant digits, independent implementation of the "
                         "paper's gradient formulas at the exact float64 inputs"}


def check_autograd(n_cases: int, seed: int, *, per_case: bool = False) -> dict:
    """Run the cross-check; returns the summary (max relative errors, counters, timings).

    With ``per_case=True`` the result also holds ``"per_case_rel_err": {mode: [..]}`` (for plots).
    """
    t0 = time.perf_counter()
    cases = make_cases(n_cases, seed)
    t_gen = time.perf_counter() - t0
    per_mode: dict[str, dict] = {}
    counts_all = {"R": 0, "C": 0, "N": 0, "no_positive_anchors": 0}
    t_sym = t_auto = 0.0
    near = floored = 0
    per_case_err: dict[str, list[float]] = {}
    worst_cases: list[tuple[float, Case, np.ndarray]] = []
    for mode in LOSS_MODES:
        sub = [c for c in cases if c.mode == mode]
        ts = time.perf_counter()
        g_sym, l_sym, counts = symbolic_gradients(sub)
        t_sym += time.perf_counter() - ts
        for key in counts_all:
            counts_all[key] += counts[key]
        err = {"rel": 0.0, "plain": 0.0, "term": 0.0, "loss": 0.0}
        rels = per_case_err.setdefault(mode, [])
        plains: list[float] = []
        ta = time.perf_counter()
        for c, gs, ls in zip(sub, g_sym, l_sym):
            ga, la = autograd_gradients(c)
            g_term = float(np.max(1.0 / (c.tau * np.linalg.norm(c.x, axis=1))))
            diff = float(np.max(np.abs(gs - ga)))
            gmax = float(np.max(np.abs(ga)))
            floored += gmax < FLOOR * g_term
            rels.append(diff / max(gmax, FLOOR * g_term))
            plains.append(diff / max(gmax, _TINY))
            err["rel"] = max(err["rel"], rels[-1])
            err["plain"] = max(err["plain"], diff / max(gmax, _TINY))
            err["term"] = max(err["term"], diff / g_term)
            err["loss"] = max(err["loss"], abs(ls - la) / max(abs(la), FLOOR / c.tau))
        t_auto += time.perf_counter() - ta
        for q in np.argsort(plains)[::-1][:N_WORST]:
            worst_cases.append((plains[q], sub[q], g_sym[q]))
        for c in sub:
            pos = _positive_mask(c.labels, c.n_views)
            if pos.any():
                z = c.x / np.linalg.norm(c.x, axis=1, keepdims=True)
                near += int(np.sum(np.abs((z @ z.T)[pos] + c.margin - 1.0) < 1e-2))
        per_mode[mode] = {"cases": len(sub), "max_rel_err": err["rel"],
                          "max_rel_err_unfloored": err["plain"],
                          "max_abs_err_over_term": err["term"], "max_rel_err_loss": err["loss"]}
    tx = time.perf_counter()
    ext = _mp_worst(sorted(worst_cases, key=lambda t: -t[0])[:N_WORST])
    t_ext = time.perf_counter() - tx
    worst = {key: max(v[key] for v in per_mode.values()) for key in
             ("max_rel_err", "max_rel_err_unfloored", "max_abs_err_over_term", "max_rel_err_loss")}
    out = {
        "cases": n_cases,
        "seed": seed,
        **worst,
        "per_mode": per_mode,
        "pairs": {"clamp_active_R": counts_all["R"], "unsaturated_positive_C": counts_all["C"],
                  "negative_N": counts_all["N"],
                  "positive_within_1e-2_of_boundary": near},
        "anchors_without_positive": counts_all["no_positive_anchors"],
        "cases_below_floor": int(floored),
        "worst_unfloored_vs_mpmath": ext,
        "boundary_gap": BOUNDARY_GAP,
        "floor": FLOOR,
        "rel_err_definition": "max|g_sym - g_autograd| / max(max|g_autograd|, FLOOR * max_k 1/(tau |x_k|)) "
                              "per case, max over cases; gradients w.r.t. raw (un-normalised) features",
        "seconds": {"generate": t_gen, "symbolic_numeric": t_sym, "autograd": t_auto,
                    "mpmath_reference": t_ext},
    }
    if per_case:
        out["per_case_rel_err"] = per_case_err
    return out
