"""Layer diagnostics that are not part of the loss itself.

* :func:`fisher_criterion` — ``Tr(S_W⁻¹ S_B)`` of pooled features (CFF Eq. 19-22):
  ``S_W = Σ_c S_c`` with ``S_c = (1/N_c) Σ_{i∈c} (f_i - m_c)(f_i - m_c)ᵀ`` and
  ``S_B = (1/N) Σ_c N_c (m_c - m)(m_c - m)ᵀ``.  ``S_W`` is regularised with a ridge
  ``ρ·tr(S_W)/D·I`` (``ρ = 1e-3`` by default) so that rank-deficient features (fewer samples per
  class than dimensions, dead ReLU units) give a finite number; the trace is computed in
  float64 with a Cholesky solve.
* :func:`grad_norm` — L2 norm of all gradients of a parameter list, as a tensor (no sync).
* :func:`topk_accuracy` — share of rows whose label is among the k largest scores.
"""
from __future__ import annotations

from typing import Iterable

import torch

__all__ = ["fisher_criterion", "grad_norm", "topk_accuracy", "FISHER_RIDGE"]

FISHER_RIDGE = 1e-3


def fisher_criterion(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None,
                     ridge: float = FISHER_RIDGE) -> float:
    """Multi-class Fisher criterion ``Tr(S_W⁻¹ S_B)`` of (N, D) features (classes present only)."""
    if features.dim() != 2 or labels.dim() != 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"features (N, D) and labels (N,) expected; got {tuple(features.shape)}, "
                         f"{tuple(labels.shape)}")
    if ridge < 0:
        raise ValueError(f"ridge={ridge} must be >= 0")
    f = features.detach().double()
    y = labels.detach().to(f.device)
    n, d = f.shape
    k = int(num_classes) if num_classes is not None else int(y.max()) + 1
    counts = torch.bincount(y, minlength=k).double()
    sums = torch.zeros(k, d, dtype=f.dtype, device=f.device).index_add_(0, y, f)
    present = counts > 0
    means = sums[present] / counts[present, None]
    m = f.mean(0)
    centred = f - (sums / counts.clamp(min=1)[:, None])[y]
    w = (1.0 / counts.clamp(min=1))[y]                         # 1/N_c per sample
    s_w = (centred * w[:, None]).T @ centred
    dm = means - m
    s_b = (dm * counts[present, None]).T @ dm / n
    s_w = s_w + ridge * (torch.trace(s_w) / d).clamp(min=1e-12) * torch.eye(d, dtype=f.dtype, device=f.device)
    chol = torch.linalg.cholesky(s_w)
    return float(torch.trace(torch.cholesky_solve(s_b, chol)))


def grad_norm(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """Global L2 norm of the gradients of ``params`` (0-d tensor on their device)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Share of rows whose label is among the ``k`` highest scores (0-d tensor)."""
    k = min(int(k), scores.shape[1])
    hit = (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return hit.float().mean()
