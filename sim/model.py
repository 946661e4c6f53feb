"""One-layer nonlinear contrastive model (Meng & Wang reconstruction, notes A.4): data law,
online SGD (numba), mean-field ODE right-hand side, learnability threshold, fixed points.

Model (notes A.4).  Features ``xi_k = sqrt(N) e_k`` (k < d), sample ``x = sum_k c_k e_k + a``
with ``a`` standard normal off the feature coordinates, two views ``x_l = x + sn n_l`` with
``corr(n_1, n_2) = rho``, pre-activations ``h_l = w.x_l / sqrt(N)``, positive-pair score
``y_1 y_2`` with ``y_l = sigma(h_l)``.  Online SGD step (mini-batch of ``B`` samples averaged)::

    w <- w + tau/sqrt(N) * mean_b[ g1 x_1 + g2 x_2 ] - tau/N * phi(w),   g1 = s'(h1) s(h2), ...
    w <- sqrt(N) w / |w|                    (skipped in the no-normalisation variant)

with ``phi`` = 0, ``beta w`` (L2) or ``beta sign(w)`` (L1).  Time ``t = steps / N``.
Margin variants of the positive-pair score: ``"subtract"`` uses ``-(y1 y2 - m)`` (gradient
identical to the plain score), ``"clamp"`` uses ``-min(y1 y2 + m, 1)`` whose per-sample gradient
is multiplied by ``1[y1 y2 < 1 - m]``; the clamp activation rate (CAR) is
``Pr[y1 y2 >= 1 - m]`` and is recorded for both.

Two exact SGD engines
---------------------
``engine="full"``     the algorithm above with O(N) work and O(N) normals per step (numba).
``engine="semi"``     the same Markov chain *in law* with O(N) work but only N - d normals per
                      step (+ O(B d) scalars): w is kept in full (element-wise regularisers
                      such as L1 stay exact); the background parts of x, n1, n2 enter through
                      their projections on w_bg (scalars) and one isotropic Gaussian vector
                      orthogonal to w_bg of per-coordinate variance V (below).
``engine="reduced"``  the same Markov chain *in law* with O(d) work per step.  The data are
                      isotropic off the feature coordinates and the update lies in span(w, x),
                      so the state is ``(w_f, R = |w_background|^2)``: per sample one draws the
                      background projections along ``w`` (normals) and the squared norm of
                      the orthogonal part of the update, ``V chi^2_{N-d-1}`` with
                      ``V = (g1+g2)^2 + sn^2 (g1^2 + g2^2 + 2 rho g1 g2)``.  Exact for every
                      N (not an approximation); not available with the L1 regulariser, which
                      breaks rotation invariance.  Tests check it against the full engine.

Every trial ``i`` draws from numba's generator seeded with
``SeedSequence(seed).spawn(K)[i]`` inside the ``prange`` loop, so results do not depend on the
number of threads.

Mean-field ODE (notes, boxed equation), state ``Q`` (normalised) or ``(m, r)``
(no normalisation, notes "Variant without normalization")::

    dQ_k/dt = tau E[D_k - Q_k A] - tau^2/(2B) Q_k E[B]
    dm_k/dt = tau E[D_k] - tau beta m_k,     dr/dt = 2 tau E[A] + tau^2/B E[B] - 2 tau beta r

The mini-batch divides the squared-gradient (Ito) term by ``B`` because ``|mean_b g_b|^2/N``
-> ``E[B]/B`` (cross terms between independent samples vanish as N -> inf) while ``w.g/N`` is
unchanged.  Expectations: the feature projections ``nu_lk`` enter ``D_k`` linearly, and
``E[nu_lk | eps_1, eps_2] = (m_k / r) eps_l`` exactly (Gaussian conditioning), so the Gaussian
part reduces to ``(e, eps_1, eps_2)`` - one dimension when ``sn = 0``, two when ``|rho| = 1``,
three otherwise - integrated by tensor Gauss-Hermite quadrature (or Monte Carlo points); the
hidden variables ``c`` by their exact discrete law (Rademacher, sparse three-point), tensor
Gauss-Hermite (Gaussian) or Monte Carlo samples (``Law.empirical``).  Clamped variant: every
per-sample term multiplied by ``1[y1 y2 < 1 - m]``.

All quadrature data are packed into one float64 parameter vector, so the single compiled
right-hand side :func:`make_rhs` serves :func:`sim.integrate.make_rk4_batch`,
:func:`sim.integrate.rk4` and :func:`sim.integrate.solve_ivp_reference` alike.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
from numba import njit, prange

__all__ = ["Activation", "TANH", "RELU", "IDENTITY", "ACTIVATIONS", "get_activation", "Law",
           "MFConfig", "SGDConfig", "pack_params", "make_rhs", "rhs_numpy", "expectations",
           "integrate_ode", "integrate_ode_batch", "run_sgd", "SGDResult", "learnability",
           "jacobian_fd", "oja_rhs", "oja_stationary", "oja_jacobian_sympy",
           "trial_seeds"]


# --------------------------------------------------------------------------- activations
@njit(cache=True)
def _tanh(h):
    return math.tanh(h)


@njit(cache=True)
def _dtanh(h):
    t = math.tanh(h)
    return 1.0 - t * t


@njit(cache=True)
def _relu(h):
    return h if h > 0.0 else 0.0


@njit(cache=True)
def _drelu(h):
    return 1.0 if h > 0.0 else 0.0


@njit(cache=True)
def _ident(h):
    return h


@njit(cache=True)
def _dident(h):
    return 1.0


@dataclass(frozen=True)
class Activation:
    """An activation ``sigma`` and its derivative as scalar ``numba.njit`` functions.

    User activations: ``Activation("softsign", njit(lambda h: h/(1+abs(h))), njit(...))``.
    ``odd`` (sigma(-h) = -sigma(h)) is informational (used to fold symmetric fixed points).
    """
    name: str
    sig: Callable = field(repr=False, compare=False)
    dsig: Callable = field(repr=False, compare=False)
    odd: bool = False


TANH = Activation("tanh", _tanh, _dtanh, odd=True)
RELU = Activation("relu", _relu, _drelu, odd=False)
IDENTITY = Activation("identity", _ident, _dident, odd=True)
ACTIVATIONS = {a.name: a for a in (TANH, RELU, IDENTITY)}


def get_activation(act: str | Activation) -> Activation:
    if isinstance(act, Activation):
        return act
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose from {sorted(ACTIVATIONS)} or pass an Activation")
    return ACTIVATIONS[act]


# --------------------------------------------------------------------------- hidden-variable law
_LAW_KINDS = {"rademacher": 0, "gaussian": 1, "sparse": 2, "empirical": 3}


@dataclass(frozen=True)
class Law:
    """Law of the hidden variables ``c_k`` (independent across features, mean 0, <c_k^2> = m2[k]).

    * ``rademacher``: ``c = +-sqrt(m2)`` (m4 = m2^2, the smallest possible);
    * ``gaussian``: ``N(0, m2)`` (m4 = 3 m2^2);
    * ``sparse``: ``c in {-a, 0, a}`` with ``Pr[c != 0] = p``, ``a = sqrt(m2/p)``, so
      ``m4 = m2^2 / p`` >= m2^2: varies m4 at fixed m2 (``kurtosis = m4/m2^2 = 1/p``);
    * ``empirical``: user samples ``samples`` (shape (M,) of a unit-variance law, rescaled per
      feature by sqrt(m2)); SGD resamples them, the ODE uses them as Monte Carlo points.
    """
    kind: Literal["rademacher", "gaussian", "sparse", "empirical"] = "rademacher"
    kurtosis: float = 1.0
    samples: tuple[float, ...] = ()

    def __post_init__(self):
        if self.kind not in _LAW_KINDS:
            raise ValueError(f"unknown law {self.kind!r}; choose from {sorted(_LAW_KINDS)}")
        if self.kind == "sparse" and not (self.kurtosis >= 1.0 and np.isfinite(self.kurtosis)):
            raise ValueError(f"sparse law needs kurtosis = m4/m2^2 >= 1, got {self.kurtosis}")
        if self.kind == "empirical":
            s = np.asarray(self.samples, float)
            if s.size < 2 or not np.all(np.isfinite(s)):
                raise ValueError("empirical law needs >= 2 finite samples")

    @property
    def m4_ratio(self) -> float:
        """m4 / m2^2 of the law."""
        if self.kind == "rademacher":
            return 1.0
        if self.kind == "gaussian":
            return 3.0
        if self.kind == "sparse":
            return float(self.kurtosis)
        s = self._unit_samples()
        return float(np.mean(s ** 4))

    def _unit_samples(self) -> np.ndarray:
        s = np.asarray(self.samples, float)
        s = s - s.mean()
        return s / np.sqrt(np.mean(s ** 2))

    def nodes_1d(self, n_gh: int) -> tuple[np.ndarray, np.ndarray]:
        """Nodes and weights of the unit-variance law (exact, GH or MC)."""
        if self.kind == "rademacher":
            return np.array([-1.0, 1.0]), np.array([0.5, 0.5])
        if self.kind == "gaussian":
            return gh_nodes(n_gh)
        if self.kind == "sparse":
            p = 1.0 / self.kurtosis
            a = math.sqrt(1.0 / p)
            if p >= 1.0:
                return np.array([-1.0, 1.0]), np.array([0.5, 0.5])
            return np.array([-a, 0.0, a]), np.array([p / 2, 1 - p, p / 2])
        s = self._unit_samples()
        return s, np.full(s.size, 1.0 / s.size)

    def sgd_code(self) -> tuple[int, float, np.ndarray]:
        """(kind code, sparse p, sample table) for the numba sampler."""
        table = self._unit_samples() if self.kind == "empirical" else np.zeros(1)
        return _LAW_KINDS[self.kind], 1.0 / self.kurtosis if self.kind == "sparse" else 1.0, table


def trap_nodes(n: int, L: float = 9.0) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoid nodes/weights for E over N(0, 1) on [-L, L] (weights sum to 1); spectrally
    accurate for smooth integrands, first order at a jump (used with the clamp indicator)."""
    if n < 3:
        raise ValueError("quadrature order must be >= 3")
    x = np.linspace(-L, L, n)
    w = np.exp(-0.5 * x * x)
    return x, w / w.sum()


def gh_nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite nodes/weights for E over N(0, 1) (weights sum to 1)."""
    if n < 1:
        raise ValueError("quadrature order must be >= 1")
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / w.sum()


# --------------------------------------------------------------------------- configuration
Mode = Literal["none", "clamp", "subtract"]


@dataclass(frozen=True)
class MFConfig:
    """Parameters shared by the SGD simulator and the mean-field ODE.

    tau: learning rate (> 0); m2: second moments per feature (> 0; d = len(m2)); sn: noise
    strength sigma_n (>= 0); rho: noise correlation in [-1, 1]; batch: mini-batch size B;
    mode/margin: margin variant of the positive score ("none", "clamp", "subtract"), m >= 0;
    normalize: spherical normalisation (True) or the free-norm variant with L2 weight decay
    ``beta``; reg: element-wise regulariser phi ("none", "l2", "l1") with strength beta (SGD;
    the ODE closes only for none/l2); law: hidden-variable law; activation: name or Activation.
    """
    tau: float = 0.5
    m2: tuple[float, ...] = (3.0,)
    sn: float = 0.0
    rho: float = 0.0
    batch: int = 1
    mode: Mode = "none"
    margin: float = 0.0
    normalize: bool = True
    reg: Literal["none", "l2", "l1"] = "none"
    beta: float = 0.0
    law: Law = Law()
    activation: str = "tanh"

    def __post_init__(self):
        if not (np.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"tau={self.tau!r} must be finite and > 0")
        m2 = tuple(float(v) for v in np.atleast_1d(self.m2))
        object.__setattr__(self, "m2", m2)
        if len(m2) < 1 or not all(np.isfinite(v) and v > 0 for v in m2):
            raise ValueError(f"m2={m2!r}: every second moment must be finite and > 0")
        if not (np.isfinite(self.sn) and self.sn >= 0):
            raise ValueError(f"sn={self.sn!r} must be finite and >= 0")
        if not (np.isfinite(self.rho) and -1.0 <= self.rho <= 1.0):
            raise ValueError(f"rho={self.rho!r} must lie in [-1, 1]")
        if int(self.batch) != self.batch or self.batch < 1:
            raise ValueError(f"batch={self.batch!r} must be an integer >= 1")
        if self.mode not in ("none", "clamp", "subtract"):
            raise ValueError(f"mode={self.mode!r}: choose none, clamp or subtract")
        if not (np.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin={self.margin!r} must be finite and >= 0")
        if self.reg not in ("none", "l2", "l1"):
            raise ValueError(f"reg={self.reg!r}: choose none, l2 or l1")
        if not (np.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta={self.beta!r} must be finite and >= 0")
        if not self.normalize and self.reg == "none" and self.beta == 0:
            pass  # allowed (the norm then drifts freely)
        if isinstance(self.law, dict):
            object.__setattr__(self, "law", Law(**self.law))
        if not isinstance(self.activation, Activation):
            get_activation(self.activation)

    @property
    def d(self) -> int:
        return len(self.m2)

    @property
    def act(self) -> Activation:
        return get_activation(self.activation)

    def replace(self, **kw) -> "MFConfig":
        return dataclasses.replace(self, **kw)

    def validate_state(self, y: np.ndarray) -> np.ndarray:
        """Check an initial state: finite, right length, inside the unit ball (normalised)."""
        y = np.asarray(y, dtype=np.float64)
        n = self.d if self.normalize else self.d + 1
        if y.shape[-1] != n:
            raise ValueError(f"state has length {y.shape[-1]}, expected {n}")
        if not np.all(np.isfinite(y)):
            raise ValueError("state contains non-finite values")
        if self.normalize and np.any(np.sum(y ** 2, axis=-1) > 1.0 + 1e-12):
            raise ValueError("normalised state must satisfy sum_k Q_k^2 <= 1")
        if not self.normalize and np.any(y[..., -1] < np.sum(y[..., :-1] ** 2, axis=-1) - 1e-12):
            raise ValueError("free-norm state (m, r) must satisfy r >= |m|^2")
        return y


# --------------------------------------------------------------------------- parameter packing
_H = 12  # header length of the packed parameter vector




def pack_params(cfg: MFConfig, *, n_gh: int = 0, n_gh_noise: int = 0, n_gh_c: int = 12, mc: int = 0,
                mc_seed: int = 0, table: int = 0) -> np.ndarray:
    """Pack ``cfg`` and its quadrature into the float64 vector read by :func:`make_rhs`.

    ``n_gh``: Gauss-Hermite order per Gaussian dimension (e, eps_1, eps_2); 0 = automatic
    0 = automatic (128 GH nodes in e, 96 with two noise dimensions: tanh needs ~128 nodes for
    1e-9 accuracy because of its complex poles; with the clamp indicator, whose discontinuity
    makes any rule first order, a trapezoid rule with 3000 (1-D) / 160 nodes); ``n_gh_noise``: order in each noise
    dimension (0 = 40 for |rho| = 1, else 20; 32 with the clamp or sn > 1);
    ``n_gh_c``: order per feature for a Gaussian hidden-variable law; ``mc > 0`` replaces the
    Gaussian-part quadrature by ``mc`` Monte Carlo points (seed ``mc_seed``).
    ``table > 0`` (noise-free, normalised, no clamp only: the fast path for phase portraits):
    the e-integrals ``E_e[F(mu + s e)]`` of ``F = s s'``, ``s s' h`` and ``(s s')^2`` are
    tabulated once (GH, ``n_gh`` nodes) on a ``table x 129`` grid of (mu, s) and the RHS
    interpolates bilinearly (error ~1e-6, checked against the direct quadrature in the tests).
    """
    if cfg.reg == "l1":
        raise ValueError("the mean-field ODE does not close with the L1 regulariser (notes A.4); "
                         "use the SGD simulator")
    d = cfg.d
    # hidden variables: tensor product over features
    x1, w1 = cfg.law.nodes_1d(n_gh_c)
    grids = np.meshgrid(*([x1] * d), indexing="ij")
    wgrid = np.meshgrid(*([w1] * d), indexing="ij")
    c_nodes = np.stack([g.ravel() for g in grids], axis=1) * np.sqrt(np.asarray(cfg.m2))[None, :]
    c_w = np.prod(np.stack([g.ravel() for g in wgrid], axis=1), axis=1)
    # Gaussian part (e, g1, g2) with eps1 = sn g1, eps2 = sn (rho g1 + sqrt(1-rho^2) g2)
    if mc > 0:
        rng = np.random.default_rng(mc_seed)
        g = rng.standard_normal((mc, 3))
        if cfg.sn == 0:
            g[:, 1:] = 0.0
        gw = np.full(mc, 1.0 / mc)
    else:
        ndim = 1 if cfg.sn == 0 else (2 if abs(cfg.rho) == 1.0 else 3)
        clamp = cfg.mode == "clamp"
        if clamp:  # trapezoid on [-9, 9]: no overflow at large orders, O(h) at the jump
            xe, we = trap_nodes(n_gh if n_gh > 0 else (3000 if ndim == 1 else 160))
        else:
            xe, we = gh_nodes(n_gh if n_gh > 0 else (128 if ndim <= 2 else 96))
        xn, wn = gh_nodes(n_gh_noise if n_gh_noise > 0 else
                          (40 if ndim == 2 else (32 if clamp or cfg.sn > 1.0 else 20)))
        mesh = np.meshgrid(xe, *([xn] * (ndim - 1)), indexing="ij")
        wmesh = np.meshgrid(we, *([wn] * (ndim - 1)), indexing="ij")
        g = np.zeros((mesh[0].size, 3))
        for j in range(ndim):
            g[:, j] = mesh[j].ravel()
        gw = np.prod(np.stack([m.ravel() for m in wmesh], axis=1), axis=1)
    head = np.array([cfg.tau, cfg.sn, cfg.rho, 1.0 / cfg.batch, cfg.margin,
                     1.0 if cfg.mode == "clamp" else 0.0, 1.0 if cfg.normalize else 0.0,
                     cfg.beta if cfg.reg == "l2" else 0.0, d, c_w.size, gw.size, 1.0 if table else 0.0])
    parts = [head, c_nodes.ravel(), c_w, g.ravel(), gw]
    if table:
        if cfg.sn != 0 or cfg.mode == "clamp" or not cfg.normalize or mc:
            raise ValueError("table=... needs sn = 0, no clamp, the normalised model and GH quadrature")
        if table < 16:
            raise ValueError("table must be >= 16 grid points in mu")
        mumax = float(np.max(np.sqrt(np.sum(c_nodes ** 2, axis=1)))) * 1.0001 + 1e-12
        mus = np.linspace(-mumax, mumax, int(table))
        ss = np.linspace(0.0, 1.0, 129)
        F = _expect_kernel(cfg.act, tab=True)(mus, ss, g[:, 0].copy(), gw)
        parts += [np.array([mus.size, ss.size, mumax]), F.ravel()]
    return np.concatenate(parts).astype(np.float64)


# --------------------------------------------------------------------------- expectations / RHS
_RHS_CACHE: dict[str, tuple[Callable, Callable, Callable, Callable]] = {}


def _make_kernels(act: Activation) -> tuple[Callable, Callable]:
    sig, dsig = act.sig, act.dsig

    @njit(cache=False)
    def expect(m, r, P):
        """(E[D_k] (d,), E[A], E[B], CAR, E[D_k^2-ish] unused) at state (m, r)."""
        sn = P[1]
        rho = P[2]
        margin = P[4]
        clamp = P[5] > 0.5
        d = int(P[8])
        nc = int(P[9])
        ng = int(P[10])
        o_c = _H
        o_cw = o_c + nc * d
        o_g = o_cw + nc
        o_gw = o_g + ng * 3
        mm = 0.0
        for k in range(d):
            mm += m[k] * m[k]
        s = math.sqrt(max(r - mm, 0.0))
        sr = math.sqrt(max(r, 0.0))
        rc = math.sqrt(max(1.0 - rho * rho, 0.0))
        inv_r = 1.0 / r if r > 0 else 0.0
        ED = np.zeros(d)
        EA = 0.0
        EB = 0.0
        car = 0.0
        thr = 1.0 - margin
        same = sn == 0.0
        for i in range(nc):
            wc = P[o_cw + i]
            mc = 0.0
            for k in range(d):
                mc += m[k] * P[o_c + i * d + k]
            for j in range(ng):
                w = wc * P[o_gw + j]
                e = P[o_g + 3 * j]
                g1 = P[o_g + 3 * j + 1]
                g2 = P[o_g + 3 * j + 2]
                eps1 = sn * sr * g1
                eps2 = sn * sr * (rho * g1 + rc * g2)
                base = mc + s * e
                h1 = base + eps1
                h2 = base + eps2
                S1 = sig(h1)
                D1 = dsig(h1)
                if same:
                    S2 = S1
                    D2 = D1
                else:
                    S2 = sig(h2)
                    D2 = dsig(h2)
                y12 = S1 * S2
                if y12 >= thr:
                    car += w
                    if clamp:
                        continue
                a1 = D1 * S2
                a2 = S1 * D2
                for k in range(d):
                    ck = P[o_c + i * d + k]
                    ED[k] += w * (a1 * (ck + m[k] * inv_r * eps1) + a2 * (ck + m[k] * inv_r * eps2))
                EA += w * (a1 * h1 + a2 * h2)
                EB += w * ((1.0 + sn * sn) * (a1 * a1 + a2 * a2) + 2.0 * (1.0 + rho * sn * sn) * a1 * a2)
        return ED, EA, EB, car

    @njit(cache=False)
    def tabulate(mus, ss, xe, we):
        F = np.zeros((mus.size, ss.size, 3))  # interleaved: one cache line per lookup
        for i in range(mus.size):
            for j in range(ss.size):
                f1 = 0.0
                f2 = 0.0
                f3 = 0.0
                for q in range(xe.size):
                    h = mus[i] + ss[j] * xe[q]
                    a = sig(h) * dsig(h)
                    f1 += we[q] * a
                    f2 += we[q] * a * h
                    f3 += we[q] * a * a
                F[i, j, 0] = f1
                F[i, j, 1] = f2
                F[i, j, 2] = f3
        return F

    @njit(cache=False)
    def rhs_tab_into(y, P, out):
        """Noise-free normalised RHS from the (mu, s) table (see pack_params(table=...)),
        written into ``out`` without temporary arrays (the phase-portrait fast path)."""
        tau = P[0]
        invb = P[3]
        d = int(P[8])
        nc = int(P[9])
        ng = int(P[10])
        o_c = _H
        o_cw = o_c + nc * d
        o_t = o_cw + nc + 4 * ng
        nmu = int(P[o_t])
        ns = int(P[o_t + 1])
        mumax = P[o_t + 2]
        o_f = o_t + 3
        st = 3 * ns
        mm = 0.0
        for k in range(d):
            mm += y[k] * y[k]
            out[k] = 0.0
        s = math.sqrt(max(1.0 - mm, 0.0))
        v = s * (ns - 1)
        j0 = min(int(v), ns - 2)
        fv = v - j0
        EA = 0.0
        EB = 0.0
        for i in range(nc):
            mu = 0.0
            for k in range(d):
                mu += y[k] * P[o_c + i * d + k]
            u = (mu + mumax) / (2.0 * mumax) * (nmu - 1)
            i0 = min(max(int(u), 0), nmu - 2)
            fu = u - i0
            b = o_f + (i0 * ns + j0) * 3
            w00 = (1 - fu) * (1 - fv)
            w01 = (1 - fu) * fv
            w10 = fu * (1 - fv)
            w11 = fu * fv
            f1 = w00 * P[b] + w01 * P[b + 3] + w10 * P[b + st] + w11 * P[b + st + 3]
            f2 = w00 * P[b + 1] + w01 * P[b + 4] + w10 * P[b + st + 1] + w11 * P[b + st + 4]
            f3 = w00 * P[b + 2] + w01 * P[b + 5] + w10 * P[b + st + 2] + w11 * P[b + st + 5]
            wc = P[o_cw + i]
            for k in range(d):
                out[k] += wc * 2.0 * P[o_c + i * d + k] * f1
            EA += wc * 2.0 * f2
            EB += wc * 4.0 * f3
        for k in range(d):
            out[k] = tau * (out[k] - y[k] * EA) - 0.5 * tau * tau * invb * y[k] * EB

    @njit(cache=False)
    def rhs(y, P):
        tau = P[0]
        invb = P[3]
        d = int(P[8])
        out = np.empty(y.size)
        if P[6] > 0.5:  # normalised: y = Q
            qq = 0.0
            for k in range(d):
                qq += y[k] * y[k]
            if not (qq <= 1.0 + 1e-9):
                out[:] = np.nan  # left the unit ball: the integrator stops and reports
                return out
            if P[11] > 0.5:
                rhs_tab_into(y, P, out)
                return out
            ED, EA, EB, car = expect(y, 1.0, P)
            for k in range(d):
                out[k] = tau * (ED[k] - y[k] * EA) - 0.5 * tau * tau * invb * y[k] * EB
        else:  # free norm: y = (m, r)
            r = y[d]
            mm = 0.0
            for k in range(d):
                mm += y[k] * y[k]
            if not (r > 0.0 and mm <= r * (1.0 + 1e-9)):
                out[:] = np.nan
                return out
            ED, EA, EB, car = expect(y[:d], r, P)
            beta = P[7]
            for k in range(d):
                out[k] = tau * ED[k] - tau * beta * y[k]
            out[d] = 2.0 * tau * EA + tau * tau * invb * EB - 2.0 * tau * beta * r
        return out

    @njit(cache=False)
    def rhs_into(y, P, out):
        """``rhs`` writing into ``out`` (for sim.integrate.make_rk4_batch_into)."""
        if P[11] > 0.5 and P[6] > 0.5:
            qq = 0.0
            for k in range(y.size):
                qq += y[k] * y[k]
            if not (qq <= 1.0 + 1e-9):
                out[:] = np.nan
                return
            rhs_tab_into(y, P, out)
        else:
            out[:] = rhs(y, P)

    return expect, rhs, tabulate, rhs_into


def make_rhs(act: str | Activation = "tanh") -> Callable:
    """The compiled right-hand side ``rhs(y, P)`` for activation ``act`` (cached)."""
    a = get_activation(act)
    key = f"{a.name}:{id(a.sig)}:{id(a.dsig)}"
    if key not in _RHS_CACHE:
        _RHS_CACHE[key] = _make_kernels(a)
    return _RHS_CACHE[key][1]


def _expect_kernel(act, tab: bool = False) -> Callable:
    make_rhs(act)
    a = get_activation(act)
    return _RHS_CACHE[f"{a.name}:{id(a.sig)}:{id(a.dsig)}"][2 if tab else 0]


def expectations(cfg: MFConfig, Q: np.ndarray, r: float = 1.0, **quad) -> dict:
    """E[D_k], E[A], E[B] and the clamp activation rate at overlap ``Q`` (or (m, r))."""
    P = pack_params(cfg, **quad)
    ED, EA, EB, car = _expect_kernel(cfg.act)(np.asarray(Q, float), float(r), P)
    return {"ED": ED, "EA": float(EA), "EB": float(EB), "car": float(car)}


def rhs_numpy(cfg: MFConfig, **quad) -> Callable[[np.ndarray], np.ndarray]:
    """``f(y) -> dy/dt`` for scipy (root finding, Jacobians); raises on leaving the ball."""
    P = pack_params(cfg, **quad)
    rhs = make_rhs(cfg.act)

    def f(y):
        out = rhs(np.asarray(y, dtype=np.float64), P)
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(f"state {np.asarray(y)} left the admissible set (|Q| <= 1)")
        return out
    return f


def _check_status(status: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(status)
    if bad.size:
        raise FloatingPointError(f"{what}: {bad.size} trajectory(ies) left the unit ball or went "
                                 f"non-finite (first index {bad[0]}); reduce dt/tau or check the state")


def integrate_ode_batch(cfg: MFConfig, Y0: np.ndarray, *, t_end: float, dt: float,
                        record_every: int = 1, strict: bool = True, **quad):
    """Integrate many initial conditions with :func:`sim.integrate.make_rk4_batch` (or its
    allocation-free twin for the tabulated fast path, ``table=...``).  ``params=`` passes a
    vector from :func:`pack_params` directly (reuse a tabulation across calls).

    Returns ``(t, traj (K, R, n), status (K,))``; with ``strict`` a non-zero status raises.
    """
    from sim.integrate import make_rk4_batch, make_rk4_batch_into, time_grid

    Y0 = cfg.validate_state(np.atleast_2d(np.asarray(Y0, float)))
    P = quad.pop("params", None)
    if P is None:
        P = pack_params(cfg, **quad)
    if P[11] > 0.5:  # tabulated fast path: allocation-free integrator
        make_rhs(cfg.act)
        a = cfg.act
        run = make_rk4_batch_into(_RHS_CACHE[f"{a.name}:{id(a.sig)}:{id(a.dsig)}"][3])
    else:
        run = make_rk4_batch(make_rhs(cfg.act))
    n_steps = int(round(t_end / dt))
    n_steps -= n_steps % record_every
    traj, status = run(np.ascontiguousarray(Y0), P, float(dt), n_steps, int(record_every))
    if strict:
        _check_status(status, "integrate_ode_batch")
    return time_grid(n_steps * dt, dt, record_every), traj, status


def integrate_ode(cfg: MFConfig, y0, *, t_end: float, dt: float, record_every: int = 1,
                  method: str = "rk4", **quad):
    """One trajectory: ``method="rk4"`` (sim.integrate.rk4) or a scipy method name
    (sim.integrate.solve_ivp_reference, e.g. "DOP853").  Returns ``(t, Y)``."""
    from sim.integrate import rk4, solve_ivp_reference, time_grid

    y0 = cfg.validate_state(np.asarray(y0, float))
    P = pack_params(cfg, **quad)
    rhs = make_rhs(cfg.act)
    if method == "rk4":
        return rk4(rhs, y0, P, t_end=t_end, dt=dt, record_every=record_every)
    t = time_grid(t_end, dt, record_every)

    def f(y, p):
        out = rhs(y, p)
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(f"state {y} left the unit ball during solve_ivp")
        return out
    return t, solve_ivp_reference(f, y0, P, t, method=method)


# --------------------------------------------------------------------------- theory helpers
def learnability(act: str | Activation) -> dict:
    """kappa = E[(s s')'(e)] = E[e s(e) s'(e)] (Stein) and v = E[s'(e)^2 s(e)^2], e ~ N(0,1),
    by adaptive quadrature; a feature is learnable at Q = 0 iff (m2 - 1) kappa > tau v."""
    from scipy.integrate import quad

    a = get_activation(act)
    phi = lambda e: math.exp(-0.5 * e * e) / math.sqrt(2 * math.pi)  # noqa: E731
    pts = [0.0]
    kap = quad(lambda e: e * a.sig(e) * a.dsig(e) * phi(e), -12, 12, points=pts, limit=200, epsabs=1e-13)[0]
    v = quad(lambda e: (a.sig(e) * a.dsig(e)) ** 2 * phi(e), -12, 12, points=pts, limit=200, epsabs=1e-13)[0]
    return {"kappa": kap, "v": v, "tau_crit_per_unit": kap / v}


def oja_rhs(Q, tau, m2):
    """Oja limit (identity, sn = 0, B = 1, d = 1): 2 tau Q w (1 - Q^2) - 2 tau^2 Q (1 + w Q^2)."""
    w = m2 - 1.0
    return 2 * tau * Q * w * (1 - Q ** 2) - 2 * tau ** 2 * Q * (1 + w * Q ** 2)


def oja_stationary(tau, m2) -> float:
    """Q_inf^2 = (2 w - tau') / (w (2 + tau')), tau' = 2 tau; 0 beyond the transition tau' >= 2 w."""
    w, tp = m2 - 1.0, 2.0 * tau
    return float(np.sqrt(max((2 * w - tp) / (w * (2 + tp)), 0.0))) if w > 0 else 0.0


def oja_jacobian_sympy():
    """Symbolic d(Qdot)/dQ of the Oja limit and its lambdified form ``f(Q, tau, m2)``."""
    import sympy as sp

    Q, tau, m2 = sp.symbols("Q tau m2", real=True)
    J = sp.diff(oja_rhs(Q, tau, m2), Q)
    return sp.simplify(J), sp.lambdify((Q, tau, m2), J, "numpy")


def jacobian_fd(f: Callable, y: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite-difference Jacobian of ``f`` at ``y``."""
    y = np.asarray(y, float)
    J = np.empty((y.size, y.size))
    for j in range(y.size):
        e = np.zeros_like(y)
        e[j] = h
        J[:, j] = (f(y + e) - f(y - e)) / (2 * h)
    return J


# --------------------------------------------------------------------------- SGD
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


@dataclass
class SGDResult:
    t: np.ndarray          # (R,)
    Q: np.ndarray          # (K, R, d) cosine similarities
    r: np.ndarray          # (K, R) |w|^2/N
    car: np.ndarray        # (K, R) clamp activation rate over each record interval (car[:,0] = nan)
    status: np.ndarray     # (K,) 0 ok, 1 non-finite / left the sphere


@njit(cache=True)
def _sample_c_rng(rng, kind, p, table):
    """:func:`_sample_c` on a numpy Generator."""
    if kind == 0:
        return 1.0 if rng.random() < 0.5 else -1.0
    if kind == 1:
        return rng.standard_normal()
    if kind == 2:
        u = rng.random()
        if u >= p:
            return 0.0
        a = math.sqrt(1.0 / p)
        return a if u < 0.5 * p else -a
    return table[rng.integers(0, table.size)]


@njit(cache=True)
def _sample_c(kind, p, table):
    if kind == 0:
        return 1.0 if np.random.random() < 0.5 else -1.0
    if kind == 1:
        return np.random.standard_normal()
    if kind == 2:
        u = np.random.random()
        if u >= p:
            return 0.0
        a = math.sqrt(1.0 / p)
        return a if u < 0.5 * p else -a
    return table[np.random.randint(0, table.size)]


def _make_sgd(act: Activation):
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
    def accumulate(uf, x1, x2, p1, p2, g1, g2, sn, rho):
        """Add a pair's update to the feature directions ``uf`` (in place); return its parts
        along the background direction (g1 p1 + g2 p2) and its background variance."""
        for k in range(uf.size):
            uf[k] += g1 * x1[k] + g2 * x2[k]
        return g1 * p1 + g2 * p2, (g1 + g2) ** 2 + sn * sn * (g1 * g1 + g2 * g2 + 2.0 * rho * g1 * g2)

    @njit(parallel=True, cache=False)
    def reduced(seeds, Q0, N, sqm2, tau, sn, rho, B, margin, clamp, normalize, beta,
                law_kind, law_p, table, rec_every, n_rec):
        K = seeds.size
        d = sqm2.size
        Qout = np.full((K, n_rec + 1, d), np.nan)
        rout = np.full((K, n_rec + 1), np.nan)
        cout = np.full((K, n_rec + 1), np.nan)
        status = np.zeros(K, dtype=np.int8)
        sqN = math.sqrt(N)
        rc = math.sqrt(max(1.0 - rho * rho, 0.0))
        dof = N - d - 1.0
        decay = 1.0 - tau * beta / N
        thr = 1.0 - margin
        for i in prange(K):
            np.random.seed(seeds[i])
            wf = np.empty(d)
            for k in range(d):
                wf[k] = Q0[i, k] * sqN
            R = N - np.sum(wf * wf) if normalize else N * Q0[i, d] - np.sum(wf * wf)
            c = np.empty(d)
            x1 = np.empty(d)
            x2 = np.empty(d)
            uf = np.empty(d)
            for k in range(d):
                Qout[i, 0, k] = Q0[i, k] if normalize else Q0[i, k] / math.sqrt(Q0[i, d])
            rout[i, 0] = (np.sum(wf * wf) + R) / N
            ncar = 0
            for step in range(1, rec_every * n_rec + 1):
                sR = math.sqrt(max(R, 0.0))
                uf[:] = 0.0
                upar = 0.0
                V = 0.0
                for b in range(B):
                    for k in range(d):
                        c[k] = sqm2[k] * _sample_c(law_kind, law_p, table)
                    apar = np.random.standard_normal()
                    if sn > 0.0:
                        for k in range(d):
                            z1 = np.random.standard_normal()
                            z2 = rho * z1 + rc * np.random.standard_normal() if rc > 0 else rho * z1
                            x1[k] = c[k] + sn * z1
                            x2[k] = c[k] + sn * z2
                        z1 = np.random.standard_normal()
                        z2 = rho * z1 + rc * np.random.standard_normal() if rc > 0 else rho * z1
                        p1 = apar + sn * z1
                        p2 = apar + sn * z2
                    else:
                        for k in range(d):
                            x1[k] = c[k]
                            x2[k] = c[k]
                        p1 = apar
                        p2 = apar
                    h1 = sR * p1
                    h2 = sR * p2
                    for k in range(d):
                        h1 += wf[k] * x1[k]
                        h2 += wf[k] * x2[k]
                    h1 /= sqN
                    h2 /= sqN
                    g1, g2, active = pair_grad(h1, h2, thr, clamp)
                    if active:
                        ncar += 1
                        if clamp:
                            continue
                    du, dv = accumulate(uf, x1, x2, p1, p2, g1, g2, sn, rho)
                    upar += du
                    V += dv
                lr = tau / sqN / B
                for k in range(d):
                    wf[k] = decay * wf[k] + lr * uf[k]
                par = decay * sR + lr * upar
                perp2 = 0.0
                if V > 0.0:
                    perp2 = V * np.random.chisquare(dof)
                R = par * par + lr * lr * perp2
                nrm2 = np.sum(wf * wf) + R
                if normalize:
                    sc = math.sqrt(N / nrm2)
                    for k in range(d):
                        wf[k] *= sc
                    R *= sc * sc
                    nrm2 = N
                if not (np.isfinite(nrm2) and nrm2 > 0.0):
                    status[i] = 1
                    break
                if step % rec_every == 0:
                    j = step // rec_every
                    for k in range(d):
                        Qout[i, j, k] = wf[k] / math.sqrt(nrm2)
                    rout[i, j] = nrm2 / N
                    cout[i, j] = ncar / (rec_every * B)
                    ncar = 0
        return Qout, rout, cout, status

    @njit(parallel=True, cache=False)
    def full(seeds, Q0, N, sqm2, tau, sn, rho, B, margin, clamp, normalize, beta, l1,
             law_kind, law_p, table, rec_every, n_rec):
        K = seeds.size
        d = sqm2.size
        Qout = np.full((K, n_rec + 1, d), np.nan)
        rout = np.full((K, n_rec + 1), np.nan)
        cout = np.full((K, n_rec + 1), np.nan)
        status = np.zeros(K, dtype=np.int8)
        sqN = math.sqrt(N)
        rc = math.sqrt(max(1.0 - rho * rho, 0.0))
        thr = 1.0 - margin
        for i in prange(K):
            np.random.seed(seeds[i])
            # initial w: feature part from Q0, background a random direction of the right norm
            w = np.empty(N)
            for j in range(N):
                w[j] = np.random.standard_normal()
            bg = 0.0
            for j in range(d, N):
                bg += w[j] * w[j]
            q2 = 0.0
            for k in range(d):
                q2 += Q0[i, k] * Q0[i, k]
            rr = 1.0 if normalize else Q0[i, d]
            scb = math.sqrt(max(N * (rr - q2), 0.0) / bg)
            for j in range(d, N):
                w[j] *= scb
            for k in range(d):
                w[k] = Q0[i, k] * sqN
            x1 = np.empty((B, N))
            x2 = np.empty((B, N))
            g1s = np.zeros(B)
            g2s = np.zeros(B)
            for k in range(d):
                Qout[i, 0, k] = Q0[i, k] / math.sqrt(rr)
            rout[i, 0] = rr
            ncar = 0
            for step in range(1, rec_every * n_rec + 1):
                for b in range(B):
                    h1 = 0.0
                    h2 = 0.0
                    for j in range(N):
                        if j < d:
                            xj = sqm2[j] * _sample_c(law_kind, law_p, table)
                        else:
                            xj = np.random.standard_normal()
                        if sn > 0.0:
                            z1 = np.random.standard_normal()
                            z2 = rho * z1 + rc * np.random.standard_normal() if rc > 0 else rho * z1
                            a1 = xj + sn * z1
                            a2 = xj + sn * z2
                        else:
                            a1 = xj
                            a2 = xj
                        x1[b, j] = a1
                        x2[b, j] = a2
                        h1 += w[j] * a1
                        h2 += w[j] * a2
                    h1 /= sqN
                    h2 /= sqN
                    g1s[b], g2s[b], active = pair_grad(h1, h2, thr, clamp)
                    if active:
                        ncar += 1
                lr = tau / sqN / B
                nrm2 = 0.0
                for j in range(N):
                    u = 0.0
                    for b in range(B):
                        u += g1s[b] * x1[b, j] + g2s[b] * x2[b, j]
                    wj = w[j] + lr * u
                    if l1:
                        wj -= tau * beta / N * (1.0 if w[j] > 0 else (-1.0 if w[j] < 0 else 0.0))
                    else:
                        wj -= tau * beta / N * w[j]
                    w[j] = wj
                    nrm2 += wj * wj
                if not (np.isfinite(nrm2) and nrm2 > 0.0):
                    status[i] = 1
                    break
                if normalize:
                    sc = math.sqrt(N / nrm2)
                    for j in range(N):
                        w[j] *= sc
                    nrm2 = N
                if step % rec_every == 0:
                    jr = step // rec_every
                    for k in range(d):
                        Qout[i, jr, k] = w[k] / math.sqrt(nrm2)
                    rout[i, jr] = nrm2 / N
                    cout[i, jr] = ncar / (rec_every * B)
                    ncar = 0
        return Qout, rout, cout, status

    @njit(nogil=True, cache=False)
    def semi(rng, q0, N, sqm2, tau, sn, rho, B, margin, clamp, normalize, beta, l1,
             law_kind, law_p, table, rec_every, n_rec):
        """Exact in law, O(N) per step with N - d normals (+ O(B d) scalars) instead of the full
        engine's 3 B N: the background parts of x, n1, n2 enter only through their projections
        on u = w_bg / |w_bg| (scalars) and, orthogonal to u, through one isotropic Gaussian
        vector of variance V = sum_b (g1+g2)^2 + sn^2 (g1^2 + g2^2 + 2 rho g1 g2) per coordinate.
        w itself is kept in full, so element-wise regularisers (L1) stay exact.  One trial per
        call, drawing from a numpy Generator (PCG64 + ziggurat, several times faster than the
        legacy np.random stream in numba): the normals are the cost of a step."""
        d = sqm2.size
        Qout = np.full((n_rec + 1, d), np.nan)
        rout = np.full(n_rec + 1, np.nan)
        cout = np.full(n_rec + 1, np.nan)
        status = 0
        sqN = math.sqrt(N)
        rc = math.sqrt(max(1.0 - rho * rho, 0.0))
        thr = 1.0 - margin
        w = np.empty(N)
        for j in range(N):
            w[j] = rng.standard_normal()
        bg = 0.0
        for j in range(d, N):
            bg += w[j] * w[j]
        q2 = 0.0
        for k in range(d):
            q2 += q0[k] * q0[k]
        rr = 1.0 if normalize else q0[d]
        scb = math.sqrt(max(N * (rr - q2), 0.0) / bg)
        R = 0.0
        for j in range(d, N):
            w[j] *= scb
            R += w[j] * w[j]
        for k in range(d):
            w[k] = q0[k] * sqN
        zeta = np.zeros(N)
        x1 = np.empty(d)
        x2 = np.empty(d)
        uf = np.empty(d)
        for k in range(d):
            Qout[0, k] = q0[k] / math.sqrt(rr)
        rout[0] = rr
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
                    ck = sqm2[k] * _sample_c_rng(rng, law_kind, law_p, table)
                    if sn > 0.0:
                        z1 = rng.standard_normal()
                        z2 = rho * z1 + rc * rng.standard_normal() if rc > 0 else rho * z1
                        x1[k] = ck + sn * z1
                        x2[k] = ck + sn * z2
                    else:
                        x1[k] = ck
                        x2[k] = ck
                    h1 += s * w[k] * x1[k]
                    h2 += s * w[k] * x2[k]
                if sn > 0.0:
                    z1 = rng.standard_normal()
                    z2 = rho * z1 + rc * rng.standard_normal() if rc > 0 else rho * z1
                    p1 = apar + sn * z1
                    p2 = apar + sn * z2
                else:
                    p1 = apar
                    p2 = apar
                h1 = (h1 + sR * p1) / sqN
                h2 = (h2 + sR * p2) / sqN
                g1, g2, active = pair_grad(h1, h2, thr, clamp)
                if active:
                    ncar += 1
                    if clamp:
                        continue
                du, dv = accumulate(uf, x1, x2, p1, p2, g1, g2, sn, rho)
                upar += du
                V += dv
            lr = tau / sqN / B
            dec = tau * beta / N
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
                if l1:
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
            if l1:
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
            if normalize:
                sc = math.sqrt(N / nrm2)
                s *= sc
                R *= sc * sc
                nrm2 = N
                if not (1e-30 < s < 1e30):  # fold the scale back before it under/overflows
                    for j in range(N):
                        w[j] *= s
                    s = 1.0
            if step % rec_every == 0:
                jr = step // rec_every
                for k in range(d):
                    Qout[jr, k] = s * w[k] / math.sqrt(nrm2)
                rout[jr] = nrm2 / N
                cout[jr] = ncar / (rec_every * B)
                ncar = 0
        return Qout, rout, cout, status

    return reduced, full, semi


_SGD_CACHE: dict[str, tuple[Callable, Callable, Callable]] = {}


def _sgd_kernels(act: Activation):
    key = f"{act.name}:{id(act.sig)}:{id(act.dsig)}"
    if key not in _SGD_CACHE:
        _SGD_CACHE[key] = _make_sgd(act)
    return _SGD_CACHE[key]


def _run_semi(kernel, sgd: SGDConfig, Y0, sqm2, common, l1, kind, p, table, rec_every):
    """Trials of the semi-reduced engine in ``numba.get_num_threads()`` Python threads (the
    kernel releases the GIL); trial i draws from ``default_rng(SeedSequence(seed).spawn(K)[i])``,
    so results do not depend on the number of threads."""
    import numba
    from concurrent.futures import ThreadPoolExecutor

    K = Y0.shape[0]
    ss = np.random.SeedSequence(int(sgd.seed)).spawn(K)

    def one(i):
        return kernel(np.random.default_rng(ss[i]), Y0[i], int(sgd.N), sqm2, *common, l1, kind, p, table,
                      rec_every, sgd.n_records)
    nt = max(1, min(numba.get_num_threads(), K))
    if nt == 1:
        outs = [one(i) for i in range(K)]
    else:
        with ThreadPoolExecutor(max_workers=nt) as ex:
            outs = list(ex.map(one, range(K)))
    Q = np.stack([o[0] for o in outs])
    r = np.stack([o[1] for o in outs])
    car = np.stack([o[2] for o in outs])
    st = np.array([o[3] for o in outs], dtype=np.int8)
    return Q, r, car, st


def run_sgd(cfg: MFConfig, sgd: SGDConfig, y0, *, strict: bool = True) -> SGDResult:
    """Run ``sgd.trials`` independent online-SGD trials from state ``y0`` (shape (n,) shared
    or (K, n) per trial; ``Q`` normalised, ``(m, r)`` free-norm).  Deterministic in
    ``sgd.seed`` whatever the thread count.  With ``strict`` a trajectory that goes non-finite
    raises ``FloatingPointError``; otherwise its records are NaN and ``status`` is 1."""
    if sgd.N < cfg.d + 2:
        raise ValueError(f"N={sgd.N} must exceed the number of features d={cfg.d} (N >= d + 2)")
    if sgd.engine == "reduced" and cfg.reg == "l1":
        raise ValueError("the reduced engine needs a rotation-invariant regulariser (none/l2); "
                         "use engine='full' with reg='l1'")
    y0 = cfg.validate_state(np.asarray(y0, float))
    K = sgd.trials
    Y0 = np.ascontiguousarray(np.broadcast_to(y0, (K, y0.shape[-1])), dtype=np.float64)
    rec_every = max(1, int(round(sgd.t_end * sgd.N / sgd.n_records)))
    kind, p, table = cfg.law.sgd_code()
    reduced, full, semi = _sgd_kernels(cfg.act)
    seeds = trial_seeds(sgd.seed, K)
    sqm2 = np.sqrt(np.asarray(cfg.m2))
    beta = cfg.beta if cfg.reg != "none" else 0.0
    common = (float(cfg.tau), float(cfg.sn), float(cfg.rho), int(cfg.batch), float(cfg.margin),
              cfg.mode == "clamp", bool(cfg.normalize), float(beta))
    if sgd.engine == "reduced":
        Q, r, car, st = reduced(seeds, Y0, float(sgd.N), sqm2, *common, kind, p, table,
                                rec_every, sgd.n_records)
    elif sgd.engine == "full":
        Q, r, car, st = full(seeds, Y0, int(sgd.N), sqm2, *common, cfg.reg == "l1", kind, p, table,
                             rec_every, sgd.n_records)
    else:
        Q, r, car, st = _run_semi(semi, sgd, Y0, sqm2, common, cfg.reg == "l1", kind, p, table, rec_every)
    if strict:
        _check_status(st, "run_sgd")
    t = np.arange(sgd.n_records + 1) * rec_every / sgd.N
    return SGDResult(t=t, Q=Q, r=r, car=car, status=st)
