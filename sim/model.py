"""One-layer nonlinear contrastive model (Meng & Wang reconstruction, notes A.4): data law,
mean-field ODE right-hand side, learnability threshold, fixed points.

Model (notes A.4).  Features ``xi_k = sqrt(N) e_k`` (k < d), sample ``x = sum_k c_k e_k + a``
with ``a`` standard normal off the feature coordinates, two views ``x_l = x + sn n_l`` with
``corr(n_1, n_2) = rho``, pre-activations ``h_l = w.x_l / sqrt(N)``, positive-pair score
``y_1 y_2`` with ``y_l = sigma(h_l)``.
Margin variants of the positive-pair score: ``"subtract"`` uses ``-(y1 y2 - m)`` (gradient
identical to the plain score), ``"clamp"`` uses ``-min(y1 y2 + m, 1)`` whose per-sample gradient
is multiplied by ``1[y1 y2 < 1 - m]``; the clamp activation rate (CAR) is
``Pr[y1 y2 >= 1 - m]`` and is recorded for both.

Its online SGD (three engines exact in law) is :mod:`sim.sgd`; the ODE below is its N -> inf limit.

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
from numba import njit

__all__ = ["Activation", "TANH", "RELU", "IDENTITY", "ACTIVATIONS", "get_activation", "Law",
           "MFConfig", "pack_params", "make_rhs", "rhs_numpy", "expectations",
           "integrate_ode", "integrate_ode_batch", "learnability", "jacobian_fd", "oja_rhs",
           "oja_stationary", "oja_jacobian_sympy", "check_status", "LAW_CODES"]


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

    @property
    def kernel_key(self) -> str:
        """Key of the kernels compiled for this activation (name and the two functions)."""
        return f"{self.name}:{id(self.sig)}:{id(self.dsig)}"


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
#: the law's code in the numba samplers (:func:`Law.sgd_code`)
LAW_CODES = {"rademacher": 0, "gaussian": 1, "sparse": 2, "empirical": 3}


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
        if self.kind not in LAW_CODES:
            raise ValueError(f"unknown law {self.kind!r}; choose from {sorted(LAW_CODES)}")
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
        return LAW_CODES[self.kind], 1.0 / self.kurtosis if self.kind == "sparse" else 1.0, table


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
#: slots of the packed parameter vector's header (:func:`pack_params`): each model parameter's
#: one name below the config
(P_TAU, P_SN, P_RHO, P_INV_B, P_MARGIN, P_CLAMP, P_NORMALIZE, P_BETA, P_D, P_NC, P_NG, P_TABLE) = range(12)
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
    head = np.empty(_H)
    head[P_TAU], head[P_SN], head[P_RHO], head[P_INV_B] = cfg.tau, cfg.sn, cfg.rho, 1.0 / cfg.batch
    head[P_MARGIN], head[P_CLAMP] = cfg.margin, 1.0 if cfg.mode == "clamp" else 0.0
    head[P_NORMALIZE], head[P_BETA] = 1.0 if cfg.normalize else 0.0, cfg.beta if cfg.reg == "l2" else 0.0
    head[P_D], head[P_NC], head[P_NG], head[P_TABLE] = d, c_w.size, gw.size, 1.0 if table else 0.0
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
        sn = P[P_SN]
        rho = P[P_RHO]
        margin = P[P_MARGIN]
        clamp = P[P_CLAMP] > 0.5
        d = int(P[P_D])
        nc = int(P[P_NC])
        ng = int(P[P_NG])
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
        tau = P[P_TAU]
        invb = P[P_INV_B]
        d = int(P[P_D])
        nc = int(P[P_NC])
        ng = int(P[P_NG])
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
        tau = P[P_TAU]
        invb = P[P_INV_B]
        d = int(P[P_D])
        out = np.empty(y.size)
        if P[P_NORMALIZE] > 0.5:  # normalised: y = Q
            qq = 0.0
            for k in range(d):
                qq += y[k] * y[k]
            if not (qq <= 1.0 + 1e-9):
                out[:] = np.nan  # left the unit ball: the integrator stops and reports
                return out
            if P[P_TABLE] > 0.5:
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
            beta = P[P_BETA]
            for k in range(d):
                out[k] = tau * ED[k] - tau * beta * y[k]
            out[d] = 2.0 * tau * EA + tau * tau * invb * EB - 2.0 * tau * beta * r
        return out

    @njit(cache=False)
    def rhs_into(y, P, out):
        """``rhs`` writing into ``out`` (for sim.integrate.make_rk4_batch_into)."""
        if P[P_TABLE] > 0.5 and P[P_NORMALIZE] > 0.5:
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


def _ode_kernels(act: str | Activation) -> tuple[Callable, Callable, Callable, Callable]:
    """(expect, rhs, tabulate, rhs_into) compiled for ``act`` (cached)."""
    a = get_activation(act)
    if a.kernel_key not in _RHS_CACHE:
        _RHS_CACHE[a.kernel_key] = _make_kernels(a)
    return _RHS_CACHE[a.kernel_key]


def make_rhs(act: str | Activation = "tanh") -> Callable:
    """The compiled right-hand side ``rhs(y, P)`` for activation ``act`` (cached)."""
    return _ode_kernels(act)[1]


def _expect_kernel(act, tab: bool = False) -> Callable:
    return _ode_kernels(act)[2 if tab else 0]


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


def check_status(status: np.ndarray, what: str) -> None:
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
    if P[P_TABLE] > 0.5:  # tabulated fast path: allocation-free integrator
        run = make_rk4_batch_into(_ode_kernels(cfg.act)[3])
    else:
        run = make_rk4_batch(make_rhs(cfg.act))
    n_steps = int(round(t_end / dt))
    n_steps -= n_steps % record_every
    traj, status = run(np.ascontiguousarray(Y0), P, float(dt), n_steps, int(record_every))
    if strict:
        check_status(status, "integrate_ode_batch")
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
