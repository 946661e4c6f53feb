"""Layer diagnostics that are not part of the loss itself.

* :func:`fisher_criterion` — ``Tr(S_W⁻¹ S_B)`` of pooled features (CFF Eq. 19-22):
  ``S_W = Σ_c S_c`` with ``S_c = (1/N_c) Σ_{i∈c} (f_i - m_c)(f_i - m_c)ᵀ`` and
  ``S_B = (1/N) Σ_c N_c (m_c - m)(m_c - m)ᵀ``.  ``S_W`` is regularised with a ridge
  ``ρ·tr(S_W)/D·I`` (``ρ = 1e-3`` by default) so that rank-deficient features (fewer samples per
  class than dimensions, dead ReLU units) give a finite number; the trace is computed in
  float64 with a Cholesky solve.
* :func:`grad_norm` — L2 norm of all gradients of a parameter list, as a tensor (no sync).
* :func:`topk_accuracy` — share of rows whose label is among the k largest scores.
* :func:`view_pair_noise` — the effective within-pair noise of the mean-field model measured on
  a layer's pooled features of two views of the same images: ``r = Σ_e Var(f1 - f2) /
  (2 Σ_e Var f)`` (``Var f`` over both views' rows, ddof 1), which the model predicts as
  ``σn² / (1 + σn²)`` for independent views of unit signal variance
  (:func:`sim.prediction_record.noise_ratio`), so ``σn_eff = sqrt(r / (1 - r))``; standard
  errors by the delta method over images (the ratio of two means, then the square root).
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

__all__ = ["fisher_criterion", "grad_norm", "topk_accuracy", "view_pair_noise", "FISHER_RIDGE"]

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


def view_pair_noise(f1: torch.Tensor, f2: torch.Tensor) -> dict[str, list[float | None]]:
    """Per seed the within-pair noise of features ``f1``, ``f2`` (S, n, E) of two views of the
    same n images (module doc): ``noise_ratio`` r and ``sigma_n_eff`` with their standard errors
    (``*_se``).  Per image ``A_i = |d_i - mean d|²`` (d = f1 - f2) and ``B_i = |f1_i - mean f|² +
    |f2_i - mean f|²``; ``r = c mean A / mean B`` with ``c = (2n - 1) / (2 (n - 1))`` (the ddof-1
    variances), ``se(r) = c sqrt(Var(A - (mean A / mean B) B) / n) / mean B``,
    ``se(σ) = se(r) / (2 σ (1 - r)²)``.  ``sigma_n_eff`` is None where r >= 1 (the views are less
    alike than unrelated images: outside the model) or the features do not vary."""
    if f1.shape != f2.shape or f1.dim() != 3 or f1.shape[1] < 3:
        raise ValueError(f"two (S, n >= 3, E) feature tensors of one shape expected; got {tuple(f1.shape)}, "
                         f"{tuple(f2.shape)}")
    a64, b64 = f1.detach().double(), f2.detach().double()
    n = a64.shape[1]
    d = a64 - b64
    A = ((d - d.mean(1, keepdim=True)) ** 2).sum(-1)                            # (S, n)
    fbar = torch.cat([a64, b64], dim=1).mean(1, keepdim=True)
    B = ((a64 - fbar) ** 2).sum(-1) + ((b64 - fbar) ** 2).sum(-1)               # (S, n)
    c = (2 * n - 1) / (2 * (n - 1))
    out: dict[str, list[float | None]] = {"noise_ratio": [], "noise_ratio_se": [], "sigma_n_eff": [],
                                          "sigma_n_eff_se": []}
    for a_i, b_i in zip(A.cpu().tolist(), B.cpu().tolist()):
        ma, mb = sum(a_i) / n, sum(b_i) / n
        if not (mb > 0 and math.isfinite(ma) and math.isfinite(mb)):
            for k in out:
                out[k].append(None)
            continue
        q = ma / mb
        resid = [x - q * y for x, y in zip(a_i, b_i)]
        mr = sum(resid) / n
        var_r = sum((x - mr) ** 2 for x in resid) / (n - 1)
        r = c * q
        se_r = c * math.sqrt(var_r / n) / mb
        out["noise_ratio"].append(r)
        out["noise_ratio_se"].append(se_r)
        if r >= 1.0:
            out["sigma_n_eff"].append(None)
            out["sigma_n_eff_se"].append(None)
            continue
        sig = math.sqrt(r / (1.0 - r))
        out["sigma_n_eff"].append(sig)
        out["sigma_n_eff_se"].append(se_r / (2.0 * sig * (1.0 - r) ** 2) if sig > 0 else (0.0 if se_r == 0 else None))
    return out
