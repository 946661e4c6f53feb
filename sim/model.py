"""One-layer nonlinear contrastive model (Meng & Wang reconstruction, notes A.4): its
activations, the law of its data and its parameters (:class:`MFConfig`).

Model (notes A.4).  Features ``xi_k = sqrt(N) e_k`` (k < d), sample ``x = sum_k c_k e_k + a``
with ``a`` standard normal off the feature coordinates, two views ``x_l = x + sn n_l`` with
``corr(n_1, n_2) = rho``, pre-activations ``h_l = w.x_l / sqrt(N)``, positive-pair score
``y_1 y_2`` with ``y_l = sigma(h_l)``.
Margin variants of the positive-pair score: ``"subtract"`` uses ``-(y1 y2 - m)`` (gradient
identical to the plain score), ``"clamp"`` uses ``-min(y1 y2 + m, 1)`` whose per-sample gradient
is multiplied by ``1[y1 y2 < 1 - m]``; the clamp activation rate (CAR) is
``Pr[y1 y2 >= 1 - m]`` and is recorded for both.

Its online SGD (three engines exact in law) is :mod:`sim.sgd`, its mean-field ODE (the
N -> inf limit) :mod:`sim.ode`; both read the model from :class:`MFConfig`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
from numba import njit

__all__ = ["Activation", "TANH", "RELU", "IDENTITY", "ACTIVATIONS", "get_activation", "Law", "LAW_CODES",
           "MFConfig", "Mode", "gh_nodes", "trap_nodes", "check_status"]


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


def check_status(status: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(status)
    if bad.size:
        raise FloatingPointError(f"{what}: {bad.size} trajectory(ies) left the unit ball or went "
                                 f"non-finite (first index {bad[0]}); reduce dt/tau or check the state")
