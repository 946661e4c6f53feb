"""Eigenmode learning dynamics of non-contrastive SSL with a closed-form linear predictor (IsoLoss).

Source: Halvagal, Laborieux & Zenke, *Implicit variance regularization in non-contrastive SSL*
(arXiv 2212.04858), as summarised in ``shared/notes/meanfield-and-eigenmodes.md`` section B.

This module holds the model pieces; the studies (``run_eigen_settings``, ``run_eigen_settings_relu``,
``run_eigen_spread``) live in :mod:`sim.eigen_studies` and the CLI in :mod:`sim.eigen_cli`.

Conventions
-----------
* Representations are **rows**: ``Z = X @ W.T`` with ``X`` of shape ``(n, N)``, ``W`` ``(M, N)``;
  predictions are ``P = Z @ W_P.T`` (``W_P`` symmetric, so ``P = Z @ W_P``).
* Closed-form predictors (no gradient ever flows through ``W_P``):

  - :func:`toy_predictor` — the toy notebook's ``W_P = U diag(|d|^alpha) U^T`` with
    ``W W^T = U diag(d) U^T`` (= ``(W W^T)^alpha``, the closed form of ``E[z z^T]^alpha`` for
    ``z = W x``, ``x ~ N(0, I)``);
  - :class:`DirectPredPredictor` — the DirectPred running correlation
    ``C <- tau C + (1 - tau) Z^T Z / B`` with optional normalisation ``s <- max(s,0)/max s + eps``
    and ``lambda = s^alpha``.
* The four losses (torch, batch-averaged): :func:`euc_loss`, :func:`cos_loss`,
  :func:`iso_euc_loss`, :func:`iso_cos_loss`.  Their closed-form per-sample gradients with
  respect to the online representation ``z1`` (and the target ``z2`` when stop-gradient is off)
  are :func:`loss_grads`; the IsoLoss gradient is the BYOL/SimSiam gradient without the
  ``W_P^T`` factor.  The toy simulator uses :func:`loss_grads` (tested against autograd of the
  torch losses), so the losses are defined once.
* The eight toy settings (:data:`SETTINGS`) are the notebook's ``next_W`` rules:
  ``{euc, cos} x {simsiam, simsiam_nopred, simsiam_nosg, isoloss}``.  One step is
  ``W <- W - (eta/2) * mean_i[(g1_i * f'(h1_i)) x1_i^T + (g2_i * f'(h2_i)) x2_i^T]`` where ``g``
  are the gradients of the torch losses (which carry a factor 2, hence ``eta/2``; this is
  exactly the notebook's update).  Views are ``x + sigma * eps`` for both branches.
* Linear toy, Euclidean settings: the expectation over samples is exact
  (:func:`expected_update_euc`), the singular vectors of ``W`` stay fixed, and the eigenvalues
  ``mu_m`` of ``W W^T`` follow the decoupled map :func:`per_mode_map`
  ``mu <- mu (1 - eta r(mu))^2`` and, in continuous time (time in units of steps),
  the ODE :func:`per_mode_rhs` ``dmu/dt = -2 eta mu r(mu)`` with
  ``r = lambda (lambda (1+sigma^2) - 1)`` (BYOL-L2), ``lambda (1+sigma^2) - 1`` (IsoLoss),
  ``sigma^2`` (no predictor), ``(1+sigma^2)(lambda^2+1) - 2 lambda`` (no stop-grad),
  ``lambda = mu^alpha``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

__all__ = [
    "Setting", "SETTINGS", "SETTING_NAMES", "get_setting",
    "toy_predictor", "DirectPredPredictor",
    "euc_loss", "cos_loss", "iso_euc_loss", "iso_cos_loss", "loss_grads",
    "ToyConfig", "init_weights", "sample_views", "toy_step", "sampled_update", "expected_update_euc", "simulate_toy",
    "record_steps",
    "rate_factor", "per_mode_map", "per_mode_rhs", "integrate_per_mode", "eigvals_desc",
]


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One toy setting: loss family, predictor on/off, stop-gradient on/off, IsoLoss on/off."""

    loss: Literal["euc", "cos"]
    predictor: bool = True
    stop_grad: bool = True
    iso: bool = False

    def __post_init__(self) -> None:
        if self.loss not in ("euc", "cos"):
            raise ValueError(f"loss={self.loss!r} must be 'euc' or 'cos'")
        if self.iso and not (self.predictor and self.stop_grad):
            raise ValueError("IsoLoss needs the predictor and the stop-gradient")

    @property
    def name(self) -> str:
        if self.iso:
            return f"{self.loss}_isoloss"
        suffix = "" if (self.predictor and self.stop_grad) else ("_nopred" if not self.predictor else "_nosg")
        if not self.predictor and not self.stop_grad:
            suffix = "_nopred_nosg"
        return f"{self.loss}_simsiam{suffix}"


SETTINGS: tuple[Setting, ...] = tuple(
    s for loss in ("euc", "cos") for s in (
        Setting(loss), Setting(loss, predictor=False), Setting(loss, stop_grad=False),
        Setting(loss, iso=True)))
SETTING_NAMES: tuple[str, ...] = tuple(s.name for s in SETTINGS)


def get_setting(name: str) -> Setting:
    for s in SETTINGS:
        if s.name == name:
            return s
    raise ValueError(f"unknown setting {name!r}; choose from {', '.join(SETTING_NAMES)}")


# --------------------------------------------------------------------------------------------
# closed-form predictors
# --------------------------------------------------------------------------------------------
def toy_predictor(W: np.ndarray, alpha: float) -> np.ndarray:
    """``W_P = U diag(|d|^alpha) U^T`` for ``W W^T = U diag(d) U^T``; ``W`` is ``(..., M, N)``."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim < 2:
        raise ValueError(f"W must have shape (..., M, N), got {W.shape}")
    if not np.isfinite(alpha):
        raise ValueError(f"alpha={alpha!r} must be finite")
    with np.errstate(over="ignore", invalid="ignore"):   # an overflow is reported just below
        C = W @ np.swapaxes(W, -1, -2)
    if not np.all(np.isfinite(C)):
        # a diverging W can stay finite while W W^T overflows; eigh would fail with LinAlgError
        raise FloatingPointError("W W^T is not finite (W diverged)")
    d, U = np.linalg.eigh(C)
    lam = np.abs(d) ** alpha
    return (U * lam[..., None, :]) @ np.swapaxes(U, -1, -2)


class DirectPredPredictor:
    """DirectPred running-correlation predictor (``solo/methods/directpred.py``), in torch.

    ``update(Z)`` folds a (detached) batch ``Z`` of shape ``(B, M)`` into
    ``C <- tau C + (1 - tau) Z^T Z / B`` and returns ``(W_P, W_P_sqrt)`` with
    ``W_P = U diag(lambda) U^T``, ``lambda = s^alpha`` (after ``s <- max(s,0)/max s + eps_iso`` when
    ``normalize``) and ``W_P_sqrt = U diag(lambda^(1/2)) U^T`` (used by the IsoLoss code).
    """

    def __init__(self, dim: int, *, tau: float = 0.998, alpha: float = 0.5, normalize: bool = True,
                 eps_iso: float = 0.0, dtype: torch.dtype = torch.float64) -> None:
        if dim < 1:
            raise ValueError(f"dim={dim} must be >= 1")
        if not 0.0 <= tau < 1.0:
            raise ValueError(f"tau={tau} must be in [0, 1)")
        if eps_iso < 0:
            raise ValueError(f"eps_iso={eps_iso} must be >= 0")
        self.tau, self.alpha, self.normalize, self.eps_iso = tau, alpha, normalize, eps_iso
        self.C = torch.zeros(dim, dim, dtype=dtype)

    def update(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        Z = Z.detach().to(self.C.dtype)
        if Z.ndim != 2 or Z.shape[1] != self.C.shape[0]:
            raise ValueError(f"Z must have shape (B, {self.C.shape[0]}), got {tuple(Z.shape)}")
        self.C = self.tau * self.C + (1.0 - self.tau) * (Z.T @ Z) / Z.shape[0]
        return self.predictor()

    def predictor(self) -> tuple[torch.Tensor, torch.Tensor]:
        s, U = torch.linalg.eigh(self.C)
        if self.normalize:
            s = s.clamp(min=0.0)
            smax = s.max()
            if not smax > 0:
                raise ValueError("DirectPred normalisation needs a correlation with a positive eigenvalue")
            s = s / smax + self.eps_iso
        lam = s.abs() ** self.alpha
        return (U * lam) @ U.T, (U * lam.sqrt()) @ U.T


# --------------------------------------------------------------------------------------------
# the four losses (torch) and their closed-form gradients (numpy)
# --------------------------------------------------------------------------------------------
def _norm(x, eps):
    return torch.linalg.vector_norm(x, dim=-1) + eps


def euc_loss(p: torch.Tensor, z_target: torch.Tensor, *, stop_grad: bool = True) -> torch.Tensor:
    """BYOL-L2: ``mean_i ||p_i - SG(z'_i)||^2`` (``stop_grad=False`` lets the gradient reach ``z'``)."""
    zt = z_target.detach() if stop_grad else z_target
    return ((p - zt) ** 2).sum(-1).mean()


def cos_loss(p: torch.Tensor, z_target: torch.Tensor, *, stop_grad: bool = True,
             eps: float = 0.0) -> torch.Tensor:
    """BYOL: ``mean_i 2 - 2 p_i . SG(z'_i) / (||p_i|| ||z'_i||)``."""
    zt = z_target.detach() if stop_grad else z_target
    return (2.0 - 2.0 * (p * zt).sum(-1) / (_norm(p, eps) * _norm(zt, eps))).mean()


def iso_euc_loss(z: torch.Tensor, p: torch.Tensor, z_target: torch.Tensor) -> torch.Tensor:
    """IsoLoss (Euclidean): ``mean_i ||z_i - SG(z'_i + z_i - p_i)||^2``; gradient ``2(p - z')``."""
    return ((z - (z_target + z - p).detach()) ** 2).sum(-1).mean()


def iso_cos_loss(z: torch.Tensor, p: torch.Tensor, z_target: torch.Tensor, W_P: torch.Tensor, *,
                 eps: float = 0.0) -> torch.Tensor:
    """IsoLoss (cosine): ``-2 [z.SG(z')/SG(|p||z'|) - 1/2 SG(p.z'/(|p|^3 |z'|)) z^T W_P z]``, batch mean.

    Only its gradient is meaningful: the BYOL cosine gradient without the ``W_P^T`` factor.
    """
    zt = z_target.detach()
    pn, zn = _norm(p, eps).detach(), _norm(zt, eps)
    coef = ((p * zt).sum(-1) / (pn ** 3 * zn)).detach()
    quad = ((z @ W_P.detach()) * z).sum(-1)
    return (-2.0 * ((z * zt).sum(-1) / (pn * zn) - 0.5 * coef * quad)).mean()


def loss_grads(setting: Setting, z1: np.ndarray, z2: np.ndarray, W_P: np.ndarray | None, *,
               eps: float = 0.0) -> tuple[np.ndarray, np.ndarray | None]:
    """Closed-form per-sample gradients ``(dL_i/dz1_i, dL_i/dz2_i)`` of the setting's loss.

    ``z1, z2`` are ``(..., n, M)``; ``W_P`` is ``(..., M, M)`` symmetric (ignored, i.e. the
    identity, when ``setting.predictor`` is False).  The second gradient is ``None`` under
    stop-gradient.  With ``p = z1 W_P``, ``a = |p|``, ``b = |z2|``, ``c = p.z2``:
    euc ``2 (p - z2) W_P`` [iso: ``2 (p - z2)``], target ``-2 (p - z2)``;
    cos ``-2 B W_P`` [iso: ``-2 B``] with ``B = z2/(ab) - c p/(a^3 b)``, target
    ``-2 [p/(ab) - c z2/(a b^3)]``.
    """
    pred = setting.predictor
    p = z1 @ W_P if pred else z1
    if setting.loss == "euc":
        err = p - z2
        g1 = 2.0 * err if (setting.iso or not pred) else 2.0 * err @ W_P
        g2 = None if setting.stop_grad else -2.0 * err
        return g1, g2
    a = np.linalg.norm(p, axis=-1, keepdims=True) + eps
    b = np.linalg.norm(z2, axis=-1, keepdims=True) + eps
    c = np.sum(p * z2, axis=-1, keepdims=True)
    bracket = z2 / (a * b) - c * p / (a ** 3 * b)
    g1 = -2.0 * bracket if (setting.iso or not pred) else -2.0 * bracket @ W_P
    g2 = None if setting.stop_grad else -2.0 * (p / (a * b) - c * z2 / (a * b ** 3))
    return g1, g2


# --------------------------------------------------------------------------------------------
# the toy network
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToyConfig:
    """Toy-network parameters (notebook defaults for the eigenvalue panels, Fig. 2 bottom)."""

    in_dim: int = 15
    out_dim: int = 10
    eta: float = 1e-2
    sigma: float = 0.1
    alpha: float = 1.0
    activation: Literal["linear", "relu"] = "linear"
    n_samples: int = 50_000          # fresh samples per step; 0 = exact expectation (linear euc only)
    weight_decay: float = 0.0
    eps: float = 1e-8                # added to the norms of the cosine losses
    init_scale: float = 0.25         # W0 ~ N(0, 1) * init_scale

    def __post_init__(self) -> None:
        if self.in_dim < 1 or self.out_dim < 1:
            raise ValueError(f"in_dim={self.in_dim}, out_dim={self.out_dim} must be >= 1")
        if not (self.eta > 0 and np.isfinite(self.eta)):
            raise ValueError(f"eta={self.eta} must be finite and > 0")
        if self.sigma < 0:
            raise ValueError(f"sigma={self.sigma} must be >= 0")
        if self.activation not in ("linear", "relu"):
            raise ValueError(f"activation={self.activation!r} must be 'linear' or 'relu'")
        if self.n_samples < 0:
            raise ValueError(f"n_samples={self.n_samples} must be >= 0 (0 = exact expectation)")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay} must be >= 0")


def init_weights(cfg: ToyConfig, seeds: list[int] | tuple[int, ...]) -> np.ndarray:
    """``W0 ~ N(0,1) * init_scale`` of shape ``(len(seeds), out_dim, in_dim)``, one ``default_rng(seed)`` each."""
    return np.stack([np.random.default_rng(s).standard_normal((cfg.out_dim, cfg.in_dim)) * cfg.init_scale
                     for s in seeds])


def sample_views(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Two noisy views ``x + sigma eps1``, ``x + sigma eps2`` of Gaussian inputs ``x ~ N(0, I)``."""
    x = rng.standard_normal(shape)
    return x + sigma * rng.standard_normal(shape), x + sigma * rng.standard_normal(shape)


def expected_update_euc(setting: Setting, W: np.ndarray, cfg: ToyConfig) -> np.ndarray:
    """Exact ``E[dW]`` of one step for the linear toy and a Euclidean setting.

    With ``E1 = W_P W (1+sigma^2) - W`` and ``E2 = W_P W - W (1+sigma^2)``:
    ``dW = -eta [W_P E1 | E1] + eta E2 (no stop-grad)``, ``W_P = I`` without a predictor.
    """
    if setting.loss != "euc" or cfg.activation != "linear":
        raise ValueError("the exact expectation exists only for the linear toy with a Euclidean loss")
    s2 = 1.0 + cfg.sigma ** 2
    WP = toy_predictor(W, cfg.alpha) if setting.predictor else np.broadcast_to(np.eye(W.shape[-2]), W.shape[:-2] + (W.shape[-2],) * 2)
    E1 = WP @ W * s2 - W
    dW = -cfg.eta * (E1 if (setting.iso or not setting.predictor) else WP @ E1)
    if not setting.stop_grad:
        dW = dW + cfg.eta * (WP @ W - W * s2)
    return dW - cfg.eta * cfg.weight_decay * W


def toy_step(setting: Setting, W: np.ndarray, cfg: ToyConfig, rng: np.random.Generator) -> np.ndarray:
    """One update of ``W`` (shape ``(S, M, N)``, S independent seeds); returns the new ``W``.

    ``cfg.n_samples == 0`` uses :func:`expected_update_euc`; otherwise ``cfg.n_samples`` fresh
    samples per seed and :func:`sampled_update`.
    """
    if cfg.n_samples == 0:
        return W + expected_update_euc(setting, W, cfg)
    X1, X2 = sample_views(rng, (W.shape[0], cfg.n_samples, W.shape[-1]), cfg.sigma)
    return W + sampled_update(setting, W, X1, X2, cfg)


def sampled_update(setting: Setting, W: np.ndarray, X1: np.ndarray, X2: np.ndarray, cfg: ToyConfig) -> np.ndarray:
    """``dW = -(eta/2) mean_i [(g1_i f'(h1_i)) x1_i^T + (g2_i f'(h2_i)) x2_i^T] - eta wd W`` on given views.

    ``X1, X2`` are ``(S, n, N)``; equals ``-(eta/2) grad_W`` of the batch-mean torch loss.
    """
    n = X1.shape[-2]
    Wt = np.swapaxes(W, -1, -2)
    H1, H2 = X1 @ Wt, X2 @ Wt
    relu = cfg.activation == "relu"
    Z1 = np.maximum(H1, 0.0) if relu else H1
    Z2 = np.maximum(H2, 0.0) if relu else H2
    WP = toy_predictor(W, cfg.alpha) if setting.predictor else None
    g1, g2 = loss_grads(setting, Z1, Z2, WP, eps=cfg.eps)
    if relu:
        g1 = g1 * (H1 > 0)
    grad = np.swapaxes(g1, -1, -2) @ X1
    if g2 is not None:
        if relu:
            g2 = g2 * (H2 > 0)
        grad = grad + np.swapaxes(g2, -1, -2) @ X2
    return -(0.5 * cfg.eta / n) * grad - cfg.eta * cfg.weight_decay * W


def eigvals_desc(W: np.ndarray) -> np.ndarray:
    """Eigenvalues of ``W W^T``, descending, shape ``(..., M)``."""
    return np.linalg.eigvalsh(W @ np.swapaxes(W, -1, -2))[..., ::-1]


def simulate_toy(setting: Setting, W0: np.ndarray, cfg: ToyConfig, n_steps: int, *, record_every: int = 1,
                 seed: int = 0, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``n_steps`` updates from ``W0`` ``(S, M, N)``; returns ``(steps, mu)`` with ``mu``
    ``(S, R, M)`` the descending eigenvalues of ``W W^T`` at ``steps``.

    Raises ``FloatingPointError`` if ``W`` goes non-finite.
    """
    if n_steps < 1 or record_every < 1:
        raise ValueError(f"n_steps={n_steps} and record_every={record_every} must be >= 1")
    W = np.array(W0, dtype=np.float64)
    if W.ndim == 2:
        W = W[None]
    rng = np.random.default_rng([seed, 0x5EED])
    steps = record_steps(n_steps, record_every)
    mu = np.empty((W.shape[0], steps.size, W.shape[-2]))
    mu[:, 0] = eigvals_desc(W)
    r = 1
    for k in range(1, n_steps + 1):
        with np.errstate(over="ignore", invalid="ignore"):   # a diverging W is reported just below
            W = toy_step(setting, W, cfg, rng)
        # every step, not only at records: the next step's predictor (eigh of W W^T) fails on a
        # non-finite W with LinAlgError before a record step would see it
        if not np.all(np.isfinite(W)):
            raise FloatingPointError(f"{setting.name}: W became non-finite by step {k}")
        if k == steps[r]:
            mu[:, r] = eigvals_desc(W)
            r += 1
            if progress is not None:
                progress(k)
    return steps, mu


def record_steps(n_steps: int, record_every: int) -> np.ndarray:
    """Steps at which a run of ``n_steps`` is recorded: 0, every ``record_every``-th, and always
    the final step ``n_steps`` (also when it is not a multiple, or smaller than ``record_every``)."""
    steps = np.arange(0, n_steps + 1, record_every)
    return steps if steps[-1] == n_steps else np.append(steps, n_steps)


# --------------------------------------------------------------------------------------------
# per-mode eigenvalue dynamics (linear toy, Euclidean settings)
# --------------------------------------------------------------------------------------------
_CODES = {"euc_simsiam": 0, "euc_isoloss": 1, "euc_simsiam_nopred": 2, "euc_simsiam_nosg": 3}


def rate_factor(setting: Setting, mu: np.ndarray, sigma: float, alpha: float) -> np.ndarray:
    """``r(mu)`` of the per-mode dynamics (see the module docstring)."""
    if setting.name not in _CODES:
        raise ValueError(f"per-mode dynamics are exact only for {sorted(_CODES)}, not {setting.name!r}")
    s2 = 1.0 + sigma ** 2
    lam = np.abs(mu) ** alpha
    if setting.name == "euc_simsiam":
        return lam * (lam * s2 - 1.0)
    if setting.name == "euc_isoloss":
        return lam * s2 - 1.0
    if setting.name == "euc_simsiam_nopred":
        return np.full_like(np.asarray(mu, dtype=np.float64), sigma ** 2)
    return lam * (lam * s2 - 1.0) - (lam - s2)


def per_mode_map(setting: Setting, mu0: np.ndarray, eta: float, sigma: float, alpha: float,
                 n_steps: int, record_every: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Iterate ``mu <- mu (1 - eta r(mu))^2`` (the exact image of the expected-gradient step)."""
    mu = np.array(mu0, dtype=np.float64)
    steps = record_steps(n_steps, record_every)
    out = np.empty((steps.size,) + mu.shape)
    out[0] = mu
    r = 1
    for k in range(1, n_steps + 1):
        mu = mu * (1.0 - eta * rate_factor(setting, mu, sigma, alpha)) ** 2
        if k == steps[r]:
            out[r] = mu
            r += 1
    return steps, out


def per_mode_rhs(setting: Setting):
    """Right-hand side ``rhs(mu, params=[eta, sigma, alpha])`` of ``dmu/dt = -2 eta mu r(mu)``."""
    def rhs(mu: np.ndarray, params: np.ndarray) -> np.ndarray:
        eta, sigma, alpha = params
        return -2.0 * eta * mu * rate_factor(setting, mu, sigma, alpha)
    return rhs


def integrate_per_mode(setting: Setting, mu0: np.ndarray, eta: float, sigma: float, alpha: float,
                       t_end: float, *, dt: float = 0.25, record_every: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Integrate the per-mode eigenvalue ODE with :func:`sim.integrate.rk4` (time in steps)."""
    from sim.integrate import rk4
    return rk4(per_mode_rhs(setting), np.asarray(mu0, dtype=np.float64), np.array([eta, sigma, alpha]),
               t_end=t_end, dt=dt, record_every=record_every)
