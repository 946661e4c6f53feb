"""The supervised-contrastive loss family of CFF, defined once for the whole package.

Everything that needs a margin loss imports it from here: the symbolic checks in
``theory/``, the CFF trainers in ``vit/``, and the benchmarks.

Notation (CFF paper, Sec. 3.5).  ``z`` holds ``V·B`` L2-normalised rows (``V`` views of
``B`` samples, view-major: rows ``v·B .. v·B+B-1`` are view ``v``), ``s_ij = z_i·z_j``.
For anchor ``i``: ``P(i)`` are the other rows with the same label (its other views
included), ``N(i)`` the rows with another label, ``A(i) = P(i) ∪ N(i)`` (self excluded).

Modes
-----
``none``      plain SupCon ("out" form, CFF Eq. 3):
              ``L_i = -1/|P(i)| Σ_p log softmax_{a∈A(i)}(s_ia/τ)[p]``.
``clamp``     marginal loss of the reference implementation (CFF Eq. 14-15): every positive
              similarity, in the numerator and in the denominator, becomes
              ``Q(s) = min(s + m, 1)`` *before* dividing by τ; negatives keep ``s``.  Where
              ``s > 1 - m`` the clamp is active and the pair's gradient through ``s`` is cut.
              Convention on the boundary ``s + m = 1`` exactly: ``torch.clamp(max=1)``
              passes gradient 1 (sympy's ``Min`` would give 1/2); the theory checks test
              both sides of the boundary, never on it.
``subtract``  gradient-neutral reference (Steier 2026, Prop. 4.1): ``m`` is subtracted after
              the log-probability, ``L_i = -1/|P(i)| Σ_p (log_prob_ip - m)``.  Under the mean
              over positives this is ``L_i^none + m``, so the gradient equals ``none``.

Reduction (``average``): ``"positive"`` (ours) is the mean over anchors that have at least
one positive; anchors without a positive (a label that occurs once in a one-view batch)
contribute nothing and are counted in the diagnostics; a batch with no positive pair at all
returns an exact zero that is still connected to the graph (its gradient is zero, never NaN).
``"all"`` is the reference's: the mean over all V·B anchors, an anchor without a positive
counting as 0 (the two differ only when some anchor has no positive, i.e. in one-view
batches).

Seed axis: features may carry a leading seed dimension, (S, V·B, D) with labels (S, B); then
every seed's loss is computed independently in the same kernels and the loss and every
diagnostic have shape (S,).  This is how the seed-batched CFF engine calls it.

Precision: float64 inputs are computed in float64; float32, float16 and bfloat16 inputs in
float32 (bf16 resolves a cosine similarity near 1 only to about 0.004, far coarser than the
clamp boundary needs).  The returned loss has the computation dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

LossMode = Literal["none", "clamp", "subtract"]
LOSS_MODES: tuple[str, ...] = ("none", "clamp", "subtract")
AVERAGES: tuple[str, ...] = ("positive", "all")

__all__ = [
    "AVERAGES",
    "LOSS_MODES",
    "LossMode",
    "SupConStats",
    "check_margin",
    "margin_schedule",
    "stack_views",
    "supcon_loss",
]


@dataclass(frozen=True)
class SupConStats:
    """Diagnostics computed in the same pass as the loss (detached 0-d tensors, no host sync).

    clamp_rate: share of positive pairs with ``s > 1 - m`` (the clamp activation rate, CAR).
        Reported for every mode: for ``none``/``subtract`` it is the rate the clamp *would* have.
    mean_pos_sim: mean cosine similarity over positive pairs.
    mean_neg_sim: mean cosine similarity over negative pairs.
    n_no_positive: number of anchors without any positive (excluded from the loss).
    n_pos_pairs: number of ordered positive pairs.
    """

    clamp_rate: torch.Tensor
    mean_pos_sim: torch.Tensor
    mean_neg_sim: torch.Tensor
    n_no_positive: torch.Tensor
    n_pos_pairs: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        """Host copies of all fields (one sync); for logging at epoch boundaries."""
        vals = torch.stack([t.detach().double().cpu() for t in (
            self.clamp_rate, self.mean_pos_sim, self.mean_neg_sim,
            self.n_no_positive, self.n_pos_pairs)]).tolist()
        keys = ("clamp_rate", "mean_pos_sim", "mean_neg_sim", "n_no_positive", "n_pos_pairs")
        return dict(zip(keys, vals))


def check_margin(margin: float) -> float:
    """Return ``margin`` as float or raise ``ValueError`` if it is not finite and in [0, 2]."""
    m = float(margin)
    if not math.isfinite(m) or not 0.0 <= m <= 2.0:
        raise ValueError(f"margin m={margin!r} is outside [0, 2]")
    return m


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not math.isfinite(t) or t <= 0.0:
        raise ValueError(f"temperature tau={temperature!r} must be finite and > 0")
    return t


def margin_schedule(m0: float, m_last: float, n_layers: int) -> list[float]:
    """Per-layer margins, linear from ``m0`` (first layer) to ``m_last`` (last layer).

    The CFF reference uses ``linspace(0.4, 0.1, L)``; a single layer gets ``m0``.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers={n_layers} must be >= 1")
    check_margin(m0)
    check_margin(m_last)
    if n_layers == 1:
        return [float(m0)]
    step = (m_last - m0) / (n_layers - 1)
    return [float(m0 + step * k) for k in range(n_layers)]


def stack_views(features: torch.Tensor | Sequence[torch.Tensor], n_labels: int) -> tuple[torch.Tensor, int]:
    """Bring ``features`` to one (V·B, D) tensor; return it and V.  Raises ``ValueError``."""
    if isinstance(features, torch.Tensor):
        if features.dim() != 2:
            raise ValueError(f"features must have shape (V*B, D); got {tuple(features.shape)}")
        z = features
    else:
        views = list(features)
        if not views:
            raise ValueError("features: empty list of views")
        for k, v in enumerate(views):
            if not isinstance(v, torch.Tensor) or v.dim() != 2:
                raise ValueError(f"view {k} must be a 2-D tensor (B, D); got {getattr(v, 'shape', type(v))}")
            if v.shape != views[0].shape:
                raise ValueError(f"view {k} has shape {tuple(v.shape)}, view 0 has {tuple(views[0].shape)}")
        if views[0].shape[0] != n_labels:
            raise ValueError(
                f"label count mismatch: each view has {views[0].shape[0]} rows but there are {n_labels} labels")
        z = torch.cat(views, dim=0)
    if n_labels <= 0:
        raise ValueError("labels: empty label vector")
    if z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"features: empty tensor of shape {tuple(z.shape)}")
    if z.shape[0] % n_labels != 0:
        raise ValueError(
            f"label count mismatch: {z.shape[0]} feature rows is not a multiple of {n_labels} labels")
    return z, z.shape[0] // n_labels


def supcon_loss(
    features: torch.Tensor | Sequence[torch.Tensor],
    labels: torch.Tensor,
    *,
    margin: float = 0.0,
    temperature: float = 0.15,
    mode: LossMode = "none",
    normalize: bool = True,
    check_finite: bool = True,
    diagnostics: bool = False,
    average: str = "positive",
) -> torch.Tensor | tuple[torch.Tensor, SupConStats]:
    """Supervised contrastive loss with an optional positive-pair margin (see module doc).

    Args:
        features: (V·B, D) tensor, view-major, or a list of V tensors of shape (B, D).
        labels: (B,) integer class labels shared by all views.
        margin: m in [0, 2] (ignored by ``none`` except for the CAR diagnostic).
        temperature: τ > 0.
        mode: ``"none"``, ``"clamp"`` or ``"subtract"``.
        normalize: L2-normalise rows inside the loss (the reference does).  With ``False`` the
            rows must already be unit vectors for ``s`` to be a cosine similarity.
        check_finite: raise on non-finite features (one host sync; trainers that check the
            loss once per epoch pass ``False``).
        diagnostics: also return a :class:`SupConStats` computed in the same pass.
        average: ``"positive"`` (mean over anchors with a positive) or ``"all"`` (the
            reference: mean over all anchors).

    With features (S, V·B, D) and labels (S, B) the S losses are computed independently and
    the loss and the statistics have shape (S,).

    Returns:
        the scalar loss, or ``(loss, stats)`` with ``diagnostics=True``.
    """
    if mode not in LOSS_MODES:
        raise ValueError(f"mode={mode!r} is not one of {LOSS_MODES}")
    if average not in AVERAGES:
        raise ValueError(f"average={average!r} is not one of {AVERAGES}")
    m = check_margin(margin)
    tau = _check_temperature(temperature)
    if isinstance(features, torch.Tensor) and features.dim() == 3:   # seed axis
        if not isinstance(labels, torch.Tensor) or labels.dim() != 2 or labels.shape[0] != features.shape[0]:
            raise ValueError(f"seed-stacked features of shape {tuple(features.shape)} need labels (S, B); "
                             f"got {getattr(labels, 'shape', type(labels))}")
        if features.shape[1] % max(labels.shape[1], 1) or labels.shape[1] == 0 or features.shape[2] == 0:
            raise ValueError(f"label count mismatch: {features.shape[1]} feature rows per seed is not a "
                             f"multiple of {labels.shape[1]} labels")
        z, n_views = features, features.shape[1] // labels.shape[1]
    else:
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
            raise ValueError(f"labels must be a 1-D tensor (B,); got {getattr(labels, 'shape', type(labels))}")
        z, n_views = stack_views(features, labels.shape[0])
    if labels.device != z.device:
        raise ValueError(f"labels on {labels.device} but features on {z.device}")
    if check_finite and not bool(torch.isfinite(z).all()):
        raise ValueError("features contain non-finite values (NaN or inf)")

    work = torch.float64 if z.dtype == torch.float64 else torch.float32
    z = z.to(work)
    if normalize:
        z = torch.nn.functional.normalize(z, dim=-1, eps=1e-12)
    n = z.shape[-2]
    lab = labels.repeat(n_views) if labels.dim() == 1 else labels.repeat(1, n_views)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    same = lab.unsqueeze(-1) == lab.unsqueeze(-2)
    pos = same & ~eye
    neg = ~same

    sim = z @ z.transpose(-1, -2)
    if mode == "clamp":
        logits = torch.where(pos, torch.clamp(sim + m, max=1.0), sim) / tau
    else:
        logits = sim / tau
    logits = logits.masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=-1, keepdim=True)

    posf = pos.to(work)
    n_pos = posf.sum(-1)
    has_pos = n_pos > 0
    # masked_fill, not multiplication: the diagonal holds -inf and 0 * -inf would be NaN
    mean_log_prob_pos = log_prob.masked_fill(~pos, 0.0).sum(-1) / n_pos.clamp(min=1)
    per_anchor = -mean_log_prob_pos
    if mode == "subtract":
        per_anchor = per_anchor + m
    n_anchor = has_pos.to(work).sum(-1) if average == "positive" else torch.full_like(n_pos[..., 0], float(n))
    loss = torch.where(has_pos, per_anchor, torch.zeros_like(per_anchor)).sum(-1) / n_anchor.clamp(min=1)
    if not diagnostics:
        return loss

    with torch.no_grad():
        n_pairs = posf.sum((-2, -1))
        negf = neg.to(work)
        stats = SupConStats(
            clamp_rate=((sim > 1.0 - m) & pos).to(work).sum((-2, -1)) / n_pairs.clamp(min=1),
            mean_pos_sim=(sim * posf).sum((-2, -1)) / n_pairs.clamp(min=1),
            mean_neg_sim=(sim * negf).sum((-2, -1)) / negf.sum((-2, -1)).clamp(min=1),
            n_no_positive=(~has_pos).sum(-1),
            n_pos_pairs=pos.sum((-2, -1)),
        )
    return loss, stats
