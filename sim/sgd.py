"""Online SGD of the one-layer contrastive model (notes A.4), three engines exact in law.

The model and its data law are :mod:`sim.model`'s (:class:`~sim.model.MFConfig`).  One SGD step
(mini-batch of ``B`` samples averaged)::

    w <- w + tau/sqrt(N) * mean_b[ g1 x_1 + g2 x_2 ] - tau/N * phi(w),   g1 = s'(h1) s(h2), ...
    w <- sqrt(N) w / |w|                    (skipped in the no-normalisation variant)

with ``phi`` = 0, ``beta w`` (L2) or ``beta sign(w)`` (L1); under the clamp a pair with
``y1 y2 >= 1 - m`` contributes no gradient.  Time ``t = steps / N``.

Engines
-------
``"full"``     the algorithm above with O(N) work and 3 B N normals per step.
``"semi"``     the same Markov chain *in law* with O(N) work but only N - d normals per step
               (+ O(B d) scalars): w is kept in full (element-wise regularisers such as L1 stay
               exact); the background parts of x, n1, n2 enter through their projections on
               w_bg (scalars) and one isotropic Gaussian vector orthogonal to w_bg of
               per-coordinate variance V (below).
``"reduced"``  the same chain in law with O(d) work per step.  The data are isotropic off the
               feature coordinates and the update lies in span(w, x), so the state is
               ``(w_f, R = |w_background|^2)``: per sample one draws the background projections
               along ``w`` (normals) and the squared norm of the orthogonal part of the update,
               ``V chi^2_{N-d-1}`` with ``V = (g1+g2)^2 + sn^2 (g1^2 + g2^2 + 2 rho g1 g2)``.
               Exact for every N; not available with L1, which breaks rotation invariance.

Every trial ``i`` of the full and reduced engines draws from numba's generator seeded with
``SeedSequence(seed).spawn(K)[i]`` inside the ``prange`` loop; the semi engine's trial ``i`` from
``default_rng(SeedSequence(seed).spawn(K)[i])``.  Results do not depend on the thread count.

The kernels take the model as one :class:`KernelParams` (built by :func:`kernel_params` from the
config: the one place a config field becomes a kernel argument); the three engines share the
pair rule, the two-view draw, the starting point and the recording.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple

import math

import numba
import numpy as np
from numba import njit, prange

from sim.model import LAW_CODES, Activation, MFConfig, check_status

__all__ = ["SGDConfig", "SGDResult", "KernelParams", "kernel_params", "run_sgd", "trial_seeds"]

# the hidden-variable law's codes, as compile-time constants of the samplers
_RADEMACHER = LAW_CODES["rademacher"]
_GAUSSIAN = LAW_CODES["gaussian"]
_SPARSE = LAW_CODES["sparse"]


def trial_seeds(seed: int, K: int) -> np.ndarray:
    """Per-trial seeds from ``SeedSequence(seed).spawn(K)`` (independent streams)."""
    ss = np.random.SeedSequence(int(seed)).spawn(int(K))
    return np.array([s.generate_state(1, dtype=np.uint32)[0] for s in ss], dtype=np.int64)


@dataclass(frozen=True)
class SGDConfig:
    """Microscopic run: dimension N, trials K, horizon t_end (in units of N steps), number of
    records, engine ("full" O(N)/step, 3BN normals; "semi" exact-in-law O(N)/step, N normals;
    "reduced" exact-in-law O(d)/step), seed."""
    N: int = 2000
    trials: int = 8
    t_end: float = 10.0
    n_records: int = 50
    engine: Literal["full", "semi", "reduced"] = "reduced"
    seed: int = 0

    def __post_init__(self):
        if int(self.N) != self.N or self.N < 2:
            raise ValueError(f"N={self.N!r} must be an integer >= 2")
        if self.trials < 1:
            raise ValueError("trials must be >= 1")
        if not (np.isfinite(self.t_end) and self.t_end > 0):
            raise ValueError("t_end must be finite and > 0")
        if self.n_records < 1:
            raise ValueError("n_records must be >= 1")
        if self.engine not in ("full", "semi", "reduced"):
            raise ValueError(f"engine={self.engine!r}: choose full, semi or reduced")

    @property
    def rec_every(self) -> int:
        """SGD steps between two records."""
        return max(1, int(round(self.t_end * self.N / self.n_records)))


@dataclass
class SGDResult:
    t: np.ndarray          # (R,)
    Q: np.ndarray          # (K, R, d) cosine similarities
    r: np.ndarray          # (K, R) |w|^2/N
    car: np.ndarray        # (K, R) clamp activation rate over each record interval (car[:,0] = nan)
    status: np.ndarray     # (K,) 0 ok, 1 non-finite


class KernelParams(NamedTuple):
    """The model as the SGD kernels read it (a numba-typed tuple)."""
    sqm2: np.ndarray   # sqrt of the second moments, (d,)
    tau: float
    sn: float
    rho: float
    batch: int
    margin: float
    clamp: bool
    normalize: bool
    beta: float        # 0 without a regulariser
    l1: bool
    law: int           # LAW_CODES
    law_p: float       # Pr[c != 0] of the sparse law
    law_table: np.ndarray  # unit-variance samples of the empirical law


def kernel_params(cfg: MFConfig) -> KernelParams:
    kind, p, table = cfg.law.sgd_code()
    return KernelParams(sqm2=np.sqrt(np.asarray(cfg.m2)), tau=float(cfg.tau), sn=float(cfg.sn),
                        rho=float(cfg.rho), batch=int(cfg.batch), margin=float(cfg.margin),
                        clamp=cfg.mode == "clamp", normalize=bool(cfg.normalize),
                        beta=float(cfg.beta) if cfg.reg != "none" else 0.0, l1=cfg.reg == "l1",
                        law=int(kind), law_p=float(p), law_table=table)


# --------------------------------------------------------------------------- shared kernel parts
@njit(cache=True)
def _sample_c(kind, p, table):
    """One unit-variance hidden variable (numba's legacy stream)."""
    if kind == _RADEMACHER:
        return 1.0 if np.random.random() < 0.5 else -1.0
    if kind == _GAUSSIAN:
        return np.random.standard_normal()
    if kind == _SPARSE:
        u = np.random.random()
        if u >= p:
            return 0.0
        a = math.sqrt(1.0 / p)
        return a if u < 0.5 * p else -a
    return table[np.random.randint(0, table.size)]


@njit(cache=True)
def _sample_c_rng(rng, kind, p, table):
    """:func:`_sample_c` on a numpy Generator."""
    if kind == _RADEMACHER:
        return 1.0 if rng.random() < 0.5 else -1.0
    if kind == _GAUSSIAN:
        return rng.standard_normal()
    if kind == _SPARSE:
        u = rng.random()
        if u >= p:
            return 0.0
        a = math.sqrt(1.0 / p)
        return a if u < 0.5 * p else -a
    return table[rng.integers(0, table.size)]


@njit(cache=True)
def _two_views(x, sn, rho, rc):
    """The two views ``x + sn n_l`` of one coordinate, ``corr(n_1, n_2) = rho`` (legacy stream)."""
    if sn > 0.0:
        z1 = np.random.standard_normal()
        z2 = rho * z1 + rc * np.random.standard_normal() if rc > 0 else rho * z1
        return x + sn * z1, x + sn * z2
    return x, x


@njit(cache=True)
def _two_views_rng(rng, x, sn, rho, rc):
    """:func:`_two_views` on a numpy Generator."""
    if sn > 0.0:
        z1 = rng.standard_normal()
        z2 = rho * z1 + rc * rng.standard_normal() if rc > 0 else rho * z1
        return x + sn * z1, x + sn * z2
    return x, x


@njit(cache=True)
def _place_start(w, q0, d, N, normalize):
    """Rescale ``w`` (filled with normals) to the start ``q0``: feature part ``q0 sqrt(N)``,
    background a random direction of norm^2 ``N (r0 - |q0|^2)``.  Returns (r0, background norm^2)."""
    bg = 0.0
    for j in range(d, N):
        bg += w[j] * w[j]
    q2 = 0.0
    for k in range(d):
        q2 += q0[k] * q0[k]
    r0 = 1.0 if normalize else q0[d]
    scb = math.sqrt(max(N * (r0 - q2), 0.0) / bg)
    R = 0.0
    for j in range(d, N):
        w[j] *= scb
        R += w[j] * w[j]
    sqN = math.sqrt(N)
    for k in range(d):
        w[k] = q0[k] * sqN
    return r0, R


@njit(cache=True)
def _record(Q, r, car, j, w, s, nrm2, N, ncar, n_pairs):
    """Record ``j``: overlaps of the weights ``s w``, |w|^2/N and the clamp activation rate."""
    for k in range(Q.shape[1]):
        Q[j, k] = s * w[k] / math.sqrt(nrm2)
    r[j] = nrm2 / N
    car[j] = ncar / n_pairs


@njit(cache=True)
def _record_start(Q, r, q0, r0, rr):
    """Record 0: the start's overlaps ``q0 / sqrt(r0)`` and |w|^2/N = ``rr``."""
    for k in range(Q.shape[1]):
        Q[0, k] = q0[k] / math.sqrt(r0)
    r[0] = rr


@njit(cache=True)
def _outputs(K, n_rec, d):
    """Records of K trials (NaN until written: a lost trial stays NaN from its loss on) and their status."""
    return (np.full((K, n_rec + 1, d), np.nan), np.full((K, n_rec + 1), np.nan), np.full((K, n_rec + 1), np.nan),
            np.zeros(K, dtype=np.int8))


@njit(cache=True)
def _step_constants(P, N):
    """(sqrt N, sqrt(1 - rho^2), clamp threshold 1 - m, learning rate per pair tau / sqrt(N) / B,
    decay per step tau beta / N)."""
    sqN = math.sqrt(N)
    return sqN, math.sqrt(max(1.0 - P.rho * P.rho, 0.0)), 1.0 - P.margin, P.tau / sqN / P.batch, P.tau * P.beta / N


def _make_engines(act: Activation) -> tuple[Callable, Callable, Callable]:
    sig, dsig = act.sig, act.dsig

    @njit(inline="always")
    def pair_grad(h1, h2, thr, clamp):
        """One pair's gradient factors (g1, g2) and whether its clamp is active (S1 S2 >= 1 - m).
        Under the clamp an active pair's gradient is cut: (0, 0).  Every engine uses this rule."""
        S1 = sig(h1)
        S2 = sig(h2)
        active = S1 * S2 >= thr
        if active and clamp:
            return 0.0, 0.0, True
        return dsig(h1) * S2, S1 * dsig(h2), active

    @njit(inline="always")
    def add_pair(uf, x1, x2, p1, p2, h1, h2, thr, clamp, sn, rho):
        """Add a pair's update to the feature directions ``uf`` (in place); return its part along
        the background direction (g1 p1 + g2 p2), its background variance and whether its clamp
        is active (a clamped pair's factors are 0: it adds nothing)."""
        g1, g2, active = pair_grad(h1, h2, thr, clamp)
        for k in range(uf.size):
            uf[k] += g1 * x1[k] + g2 * x2[k]
        return g1 * p1 + g2 * p2, (g1 + g2) ** 2 + sn * sn * (g1 * g1 + g2 * g2 + 2.0 * rho * g1 * g2), active

    @njit(parallel=True, cache=False)
    def reduced(seeds, Q0, N, P, rec_every, n_rec):
        K = seeds.size
        d = P.sqm2.size
        sn, rho, B = P.sn, P.rho, P.batch
        Qout, rout, cout, status = _outputs(K, n_rec, d)
        sqN, rc, thr, lr, dec = _step_constants(P, N)
        dof = N - d - 1.0
        decay = 1.0 - dec
        for i in prange(K):
            np.random.seed(seeds[i])
            wf = np.empty(d)
            for k in range(d):
                wf[k] = Q0[i, k] * sqN
            R = N - np.sum(wf * wf) if P.normalize else N * Q0[i, d] - np.sum(wf * wf)
            c = np.empty(d)
            x1 = np.empty(d)
            x2 = np.empty(d)
            uf = np.empty(d)
            _record_start(Qout[i], rout[i], Q0[i], 1.0 if P.normalize else Q0[i, d], (np.sum(wf * wf) + R) / N)
            ncar = 0
            for step in range(1, rec_every * n_rec + 1):
                sR = math.sqrt(max(R, 0.0))
                uf[:] = 0.0
                upar = 0.0
                V = 0.0
                for b in range(B):
                    for k in range(d):
                        c[k] = P.sqm2[k] * _sample_c(P.law, P.law_p, P.law_table)
                    apar = np.random.standard_normal()
                    for k in range(d):
                        x1[k], x2[k] = _two_views(c[k], sn, rho, rc)
                    p1, p2 = _two_views(apar, sn, rho, rc)
                    h1 = sR * p1
                    h2 = sR * p2
                    for k in range(d):
                        h1 += wf[k] * x1[k]
                        h2 += wf[k] * x2[k]
                    h1 /= sqN
                    h2 /= sqN
                    du, dv, active = add_pair(uf, x1, x2, p1, p2, h1, h2, thr, P.clamp, sn, rho)
                    ncar += active
                    upar += du
                    V += dv
                for k in range(d):
                    wf[k] = decay * wf[k] + lr * uf[k]
                par = decay * sR + lr * upar
                perp2 = 0.0
                if V > 0.0:
                    perp2 = V * np.random.chisquare(dof)
                R = par * par + lr * lr * perp2
                nrm2 = np.sum(wf * wf) + R
                if not (np.isfinite(nrm2) and nrm2 > 0.0):
                    status[i] = 1
                    break
                if P.normalize:
                    sc = math.sqrt(N / nrm2)
                    for k in range(d):
                        wf[k] *= sc
                    R *= sc * sc
                    nrm2 = N
                if step % rec_every == 0:
                    _record(Qout[i], rout[i], cout[i], step // rec_every, wf, 1.0, nrm2, N, ncar, rec_every * B)
                    ncar = 0
        return Qout, rout, cout, status

    @njit(parallel=True, cache=False)
    def full(seeds, Q0, N, P, rec_every, n_rec):
        K = seeds.size
        d = P.sqm2.size
        sn, rho, B = P.sn, P.rho, P.batch
        Qout, rout, cout, status = _outputs(K, n_rec, d)
        sqN, rc, thr, lr, dec = _step_constants(P, N)
        for i in prange(K):
            np.random.seed(seeds[i])
            w = np.empty(N)
            for j in range(N):
                w[j] = np.random.standard_normal()
            r0, _ = _place_start(w, Q0[i], d, N, P.normalize)
            x1 = np.empty((B, N))
            x2 = np.empty((B, N))
            g1s = np.zeros(B)
            g2s = np.zeros(B)
            _record_start(Qout[i], rout[i], Q0[i], r0, r0)
            ncar = 0
            for step in range(1, rec_every * n_rec + 1):
                for b in range(B):
                    h1 = 0.0
                    h2 = 0.0
                    for j in range(N):
                        if j < d:
                            xj = P.sqm2[j] * _sample_c(P.law, P.law_p, P.law_table)
                        else:
                            xj = np.random.standard_normal()
                        a1, a2 = _two_views(xj, sn, rho, rc)
                        x1[b, j] = a1
                        x2[b, j] = a2
                        h1 += w[j] * a1
                        h2 += w[j] * a2
                    h1 /= sqN
                    h2 /= sqN
                    g1s[b], g2s[b], active = pair_grad(h1, h2, thr, P.clamp)
                    if active:
                        ncar += 1
                nrm2 = 0.0
                for j in range(N):
                    u = 0.0
                    for b in range(B):
                        u += g1s[b] * x1[b, j] + g2s[b] * x2[b, j]
                    wj = w[j] + lr * u
                    if P.l1:
                        wj -= dec * (1.0 if w[j] > 0 else (-1.0 if w[j] < 0 else 0.0))
                    else:
                        wj -= dec * w[j]
                    w[j] = wj
                    nrm2 += wj * wj
                if not (np.isfinite(nrm2) and nrm2 > 0.0):
                    status[i] = 1
                    break
                if P.normalize:
                    sc = math.sqrt(N / nrm2)
                    for j in range(N):
                        w[j] *= sc
                    nrm2 = N
                if step % rec_every == 0:
                    _record(Qout[i], rout[i], cout[i], step // rec_every, w, 1.0, nrm2, N, ncar, rec_every * B)
                    ncar = 0
        return Qout, rout, cout, status

    @njit(nogil=True, cache=False)
    def semi(rng, q0, N, P, rec_every, n_rec):
        """Exact in law, O(N) per step with N - d normals (+ O(B d) scalars) instead of the full
        engine's 3 B N: the background parts of x, n1, n2 enter only through their projections
        on u = w_bg / |w_bg| (scalars) and, orthogonal to u, through one isotropic Gaussian
        vector of variance V = sum_b (g1+g2)^2 + sn^2 (g1^2 + g2^2 + 2 rho g1 g2) per coordinate.
        w itself is kept in full, so element-wise regularisers (L1) stay exact.  One trial per
        call, drawing from a numpy Generator (PCG64 + ziggurat, several times faster than the
        legacy np.random stream in numba): the normals are the cost of a step."""
        d = P.sqm2.size
        sn, rho, B = P.sn, P.rho, P.batch
        Qout = np.full((n_rec + 1, d), np.nan)
        rout = np.full(n_rec + 1, np.nan)
        cout = np.full(n_rec + 1, np.nan)
        status = 0
        sqN, rc, thr, lr, dec = _step_constants(P, N)
        w = np.empty(N)
        for j in range(N):
            w[j] = rng.standard_normal()
        r0, R = _place_start(w, q0, d, N, P.normalize)
        zeta = np.zeros(N)
        x1 = np.empty(d)
        x2 = np.empty(d)
        uf = np.empty(d)
        _record_start(Qout, rout, q0, r0, r0)
        ncar = 0
        s = 1.0  # the true weights are s * w: normalisation rescales s, not w (one pass less per step)
        for step in range(1, rec_every * n_rec + 1):
            sR = math.sqrt(max(R, 0.0))
            uf[:] = 0.0
            upar = 0.0
            V = 0.0
            for b in range(B):
                apar = rng.standard_normal()
                h1 = 0.0
                h2 = 0.0
                for k in range(d):
                    ck = P.sqm2[k] * _sample_c_rng(rng, P.law, P.law_p, P.law_table)
                    x1[k], x2[k] = _two_views_rng(rng, ck, sn, rho, rc)
                    h1 += s * w[k] * x1[k]
                    h2 += s * w[k] * x2[k]
                p1, p2 = _two_views_rng(rng, apar, sn, rho, rc)
                h1 = (h1 + sR * p1) / sqN
                h2 = (h2 + sR * p2) / sqN
                du, dv, active = add_pair(uf, x1, x2, p1, p2, h1, h2, thr, P.clamp, sn, rho)
                ncar += active
                upar += du
                V += dv
            # background: w_bg + lr (upar u + sqrt(V) (zeta - (zeta.u) u)), zeta ~ N(0, I)
            a_u = 0.0
            sV = math.sqrt(V)
            if V > 0.0:
                zw = 0.0
                for j in range(d, N):
                    z = rng.standard_normal()
                    zeta[j] = z
                    zw += z * w[j]
                zw *= s
                a_u = (upar - sV * zw / sR) / sR if sR > 0.0 else 0.0
            elif sR > 0.0:
                a_u = upar / sR
            nrm2 = 0.0
            inv_s = 1.0 / s
            for k in range(d):
                tk = s * w[k]
                wk = tk + lr * uf[k]
                if P.l1:
                    wk -= dec * (1.0 if tk > 0 else (-1.0 if tk < 0 else 0.0))
                else:
                    wk -= dec * tk
                w[k] = wk * inv_s
                nrm2 += wk * wk
            R = 0.0
            f = 1.0 + lr * a_u
            cz = lr * sV * inv_s
            dl1 = dec * inv_s
            if V == 0.0:
                cz = 0.0  # zeta holds finite stale values (zero-initialised): no branch per element
            if P.l1:
                for j in range(d, N):  # in stored units: true update divided by s
                    wj = f * w[j] + cz * zeta[j] - dl1 * (1.0 if w[j] > 0 else (-1.0 if w[j] < 0 else 0.0))
                    w[j] = wj
                    R += wj * wj
            else:
                fd = f - dec
                for j in range(d, N):
                    wj = fd * w[j] + cz * zeta[j]
                    w[j] = wj
                    R += wj * wj
            R *= s * s
            nrm2 += R
            if not (np.isfinite(nrm2) and nrm2 > 0.0):
                status = 1
                break
            if P.normalize:
                sc = math.sqrt(N / nrm2)
                s *= sc
                R *= sc * sc
                nrm2 = N
                if not (1e-30 < s < 1e30):  # fold the scale back before it under/overflows
                    for j in range(N):
                        w[j] *= s
                    s = 1.0
            if step % rec_every == 0:
                _record(Qout, rout, cout, step // rec_every, w, s, nrm2, N, ncar, rec_every * B)
                ncar = 0
        return Qout, rout, cout, status

    return reduced, full, semi


_ENGINES: dict[str, tuple[Callable, Callable, Callable]] = {}


def _engines(act: Activation) -> tuple[Callable, Callable, Callable]:
    if act.kernel_key not in _ENGINES:
        _ENGINES[act.kernel_key] = _make_engines(act)
    return _ENGINES[act.kernel_key]


def _run_semi(kernel: Callable, sgd: SGDConfig, Y0: np.ndarray, P: KernelParams):
    """Trials of the semi engine in ``numba.get_num_threads()`` Python threads (the kernel
    releases the GIL)."""
    K = Y0.shape[0]
    ss = np.random.SeedSequence(int(sgd.seed)).spawn(K)

    def one(i):
        return kernel(np.random.default_rng(ss[i]), Y0[i], int(sgd.N), P, sgd.rec_every, sgd.n_records)
    nt = max(1, min(numba.get_num_threads(), K))
    if nt == 1:
        outs = [one(i) for i in range(K)]
    else:
        with ThreadPoolExecutor(max_workers=nt) as ex:
            outs = list(ex.map(one, range(K)))
    return (np.stack([o[0] for o in outs]), np.stack([o[1] for o in outs]), np.stack([o[2] for o in outs]),
            np.array([o[3] for o in outs], dtype=np.int8))


def run_sgd(cfg: MFConfig, sgd: SGDConfig, y0, *, strict: bool = True) -> SGDResult:
    """Run ``sgd.trials`` independent online-SGD trials from state ``y0`` (shape (n,) shared
    or (K, n) per trial; ``Q`` normalised, ``(m, r)`` free-norm).  Deterministic in
    ``sgd.seed`` whatever the thread count.  With ``strict`` a trajectory that goes non-finite
    raises ``FloatingPointError``; otherwise its records from then on are NaN and ``status`` is 1."""
    if sgd.N < cfg.d + 2:
        raise ValueError(f"N={sgd.N} must exceed the number of features d={cfg.d} (N >= d + 2)")
    if sgd.engine == "reduced" and cfg.reg == "l1":
        raise ValueError("the reduced engine needs a rotation-invariant regulariser (none/l2); "
                         "use engine='full' with reg='l1'")
    y0 = cfg.validate_state(np.asarray(y0, float))
    K = sgd.trials
    Y0 = np.ascontiguousarray(np.broadcast_to(y0, (K, y0.shape[-1])), dtype=np.float64)
    P = kernel_params(cfg)
    reduced, full, semi = _engines(cfg.act)
    if sgd.engine == "reduced":
        Q, r, car, st = reduced(trial_seeds(sgd.seed, K), Y0, float(sgd.N), P, sgd.rec_every, sgd.n_records)
    elif sgd.engine == "full":
        Q, r, car, st = full(trial_seeds(sgd.seed, K), Y0, int(sgd.N), P, sgd.rec_every, sgd.n_records)
    else:
        Q, r, car, st = _run_semi(semi, sgd, Y0, P)
    if strict:
        check_status(st, "run_sgd")
    t = np.arange(sgd.n_records + 1) * sgd.rec_every / sgd.N
    return SGDResult(t=t, Q=Q, r=r, car=car, status=st)
