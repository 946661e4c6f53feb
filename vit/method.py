"""What every training method shares: the seed-stacked method object, its per-epoch statistics,
its margin loss with diagnostics, its optimiser.

A method object (:class:`Method`; the CFF engine in :mod:`vit.cff`, the baselines in
:mod:`vit.baselines`) holds S seeds' configs and on-device data, its models and optimisers, and
answers the run loop (:mod:`vit.train`): ``train_epoch(epoch)`` -> one record per seed,
``evaluate(epoch)`` -> per seed a dict with the selection ``metric`` (``minimize`` says which
way is better), ``finish()`` -> per seed the final accuracies; ``state``/``load_state`` for the
checkpoint and ``model_state``/``load_model_state`` for model selection.  Baselines are S = 1.

:class:`EpochStats` is the one accumulator of an epoch's training statistics: per seed and
layer the weighted sums of the per-step rows (loss, CAR, gradient norm, mean positive and negative
similarity) with their weights, the first step with a non-finite loss, and (CFF) per-class sums
of every layer's features for the nearest-class-mean classifier (a probe of each layer).  The epoch's loss, CAR and
similarities are means over samples: each step weighted by its batch size, as the reference
weights its logged loss (``loss.item() * len(targets)``, divided by the images seen), so the last,
partial batch counts by its size; the gradient norm, one number per optimiser step, is the plain
mean over steps (``PER_SAMPLE``).  Everything stays on the device until the one
host read at the end of the epoch; the tensors are updated in place, so a captured CUDA graph
can write into them.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from cffdyn.errors import UserError

from vit.config import TrainConfig, derive_seed
from vit.device import DeviceData, generator, loss_dtype
from vit.losses import supcon_loss
from vit.models import seed_slice

__all__ = ["N_STATS", "RunDiverged", "NonFiniteLoss", "LIKELY_CAUSE", "likely_cause", "EpochStats", "Method", "margin_loss", "seed_grad_norm", "adamw"]

N_STATS = 5  # loss, car, grad_norm, pos_sim, neg_sim
#: per statistic: True = an epoch mean over samples (steps weighted by batch size), False = over steps
PER_SAMPLE: tuple[bool, ...] = (True, True, False, True, True)


class RunDiverged(UserError, RuntimeError):
    """A run's loss or metric became NaN/inf: one line (layer, epoch, step, likely cause), exit 2
    through :func:`cffdyn.errors.guarded`; a study catches it and records the run as failed
    with ``str(exc)`` as the reason (:mod:`vit.study_tasks`).  ``position``: the index, in a
    seed-stacked pass, of the seed that diverged (0 in a one-seed pass), so the study knows
    which of the stacked runs failed."""

    def __init__(self, problem: str, fix: str | None = None, *, position: int = 0) -> None:
        super().__init__(problem, fix)
        self.position = position


class NonFiniteLoss(RunDiverged):
    """A layer's loss became NaN/inf; the message names seed, layer, epoch and step."""


LIKELY_CAUSE = "likely cause: the learning rate (--lr) too large or the temperature (--tau) too small"


def likely_cause(cfg: TrainConfig) -> str:
    """:data:`LIKELY_CAUSE`, naming the view noise too when the run adds some."""
    return LIKELY_CAUSE + (f", or the view noise (--view-noise {cfg.view_noise:g}) too large" if cfg.view_noise > 0 else "")


class EpochStats:
    """One epoch's statistics of S seeds x L layers on the device (module doc).

    ``sums`` (S, L, N_STATS) the weighted sums and ``weights`` (S, L, N_STATS) their weights
    (batch sizes, or step counts for the per-step statistics; ``PER_SAMPLE``), ``bad`` (S, L) the
    first non-finite step (-1: none), and with ``classes=(C, E)`` the per-layer class feature sums
    ``csum`` (S, L, C, E) and counts ``ccnt`` (S, L, C)."""

    def __init__(self, S: int, L: int, device: torch.device, dtype: torch.dtype | None = None,
                 classes: tuple[int, int] | None = None) -> None:
        self.sums = torch.zeros(S, L, N_STATS, dtype=dtype, device=device)
        self.weights = torch.zeros_like(self.sums)
        # made here, not in add(): a captured CUDA graph may not copy from the host
        self._per_sample = torch.tensor(PER_SAMPLE, dtype=self.sums.dtype, device=device)
        self.bad = torch.full((S, L), -1, dtype=torch.long, device=device)
        self.csum = self.ccnt = None
        if classes is not None:
            self.csum = torch.zeros(S, L, *classes, dtype=dtype, device=device)
            self.ccnt = torch.zeros(S, L, classes[0], dtype=dtype, device=device)

    def add(self, layer: int, row: torch.Tensor, n: int) -> None:
        """Add one step's rows (S, N_STATS) of ``layer`` on a batch of ``n`` samples per seed (a
        Python int: inside a captured graph it is the static batch size)."""
        if int(n) < 1:
            raise ValueError(f"EpochStats.add: a step of {n} samples")
        w = self._per_sample * (int(n) - 1) + 1          # n for per-sample statistics, 1 per step otherwise
        self.sums[:, layer] += row.to(self.sums.dtype) * w
        self.weights[:, layer] += w

    def mark(self, layer: int, loss: torch.Tensor, step: int | torch.Tensor) -> None:
        """Record ``step`` for each seed whose ``layer`` loss (S,) is non-finite for the first time
        (``step`` an int, or a 0-dim long device tensor inside a captured graph)."""
        col = self.bad[:, layer]
        hit = (~torch.isfinite(loss.detach())) & (col < 0)
        at = step if isinstance(step, torch.Tensor) else torch.full_like(col, step)
        self.bad[:, layer] = torch.where(hit, at, col)

    def add_classes(self, layer: int, y: torch.Tensor, feats: torch.Tensor) -> None:
        """Add ``layer``'s features (S, N, E) of labels (S, N) to its class sums."""
        S, c = y.shape[0], self.csum.shape[2]
        off = (torch.arange(S, device=y.device) * c)[:, None]
        idx = (y + off).reshape(-1)
        csum, ccnt = self.csum[:, layer], self.ccnt[:, layer]        # views: index_add_ writes through
        flat_sum = torch.zeros(S * c, csum.shape[-1], dtype=csum.dtype, device=csum.device)
        flat_sum.index_add_(0, idx, feats.to(csum.dtype).reshape(S * y.shape[1], -1))
        flat_cnt = torch.zeros(S * c, dtype=ccnt.dtype, device=ccnt.device)
        flat_cnt.index_add_(0, idx, torch.ones_like(y, dtype=ccnt.dtype).reshape(-1))
        csum += flat_sum.view(S, c, -1)
        ccnt += flat_cnt.view(S, c)

    def class_means(self) -> torch.Tensor:
        """Per seed, layer and class the mean feature (S, L, C, E)."""
        return (self.csum / self.ccnt.clamp(min=1)[..., None]).float()

    def reset(self) -> None:
        """Zero in place (the tensors a captured graph writes into stay the same tensors)."""
        for t in (self.sums, self.weights, self.bad, self.csum, self.ccnt):
            if t is not None:
                t.fill_(-1) if t.dtype == torch.long else t.zero_()

    def merge(self, other: "EpochStats") -> None:
        """Add ``other`` (the same epoch's steps recorded elsewhere, e.g. by a graph replay)."""
        self.sums += other.sums
        self.weights += other.weights
        self.bad = torch.where(self.bad < 0, other.bad,
                               torch.where(other.bad < 0, self.bad, torch.minimum(self.bad, other.bad)))
        if self.csum is not None:
            self.csum += other.csum
            self.ccnt += other.ccnt

    def check(self, epoch: int, cfgs: Sequence[TrainConfig]) -> None:
        """Raise :class:`NonFiniteLoss` for the first (seed, layer) with a non-finite loss (host read)."""
        for s, row in enumerate(self.bad.cpu().tolist()):
            for l, step in enumerate(row):
                if step >= 0:
                    seed = f"seed {cfgs[s].seed}, " if len(cfgs) > 1 else ""
                    raise NonFiniteLoss(f"non-finite loss at {seed}layer {l}, epoch {epoch}, step {step} "
                                        f"(method {cfgs[0].method}, lr {cfgs[0].lr:g}, tau {cfgs[0].tau:g}); "
                                        f"{likely_cause(cfgs[0])}; the last good checkpoint is kept", position=s)

    def records(self, margins: Sequence[float]) -> list[list[dict[str, Any]]]:
        """Per seed, per layer the epoch means (one host read): loss, CAR and similarities weighted
        by batch size, the gradient norm over steps (``PER_SAMPLE``); 0 where no step was added."""
        vals = (self.sums.double() / self.weights.double().clamp(min=1)).cpu().tolist()
        return [[{"layer": l, "margin": margins[l], "loss": v[0], "car": v[1], "grad_norm": v[2],
                  "pos_sim": v[3], "neg_sim": v[4]} for l, v in enumerate(vs)] for vs in vals]


def margin_loss(feat: torch.Tensor, y: torch.Tensor, margin: float, cfg: TrainConfig) -> tuple[torch.Tensor, Any]:
    """The SupCon margin loss of pooled features (S, N, E) or (N, E) with its diagnostics, as the
    config sets it (mode, temperature, and the protocol's averaging: the reference averages over all
    anchors, ``loss.view(count, n).mean()``; ours over the anchors that have a positive)."""
    return supcon_loss(loss_dtype(feat), y, margin=margin, temperature=cfg.tau, mode=cfg.loss_mode,
                       check_finite=False, diagnostics=True, average="all" if cfg.reference else "positive")


def seed_grad_norm(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-seed L2 norm of the gradients of stacked parameters (S,) (on the device)."""
    grads = [p.grad.detach().flatten(1).to(torch.float64 if p.dtype == torch.float64 else torch.float32)
             for p in params if p.grad is not None]
    # each seed reduced on its own (1, n) rows: the one-seed reduction order, whatever the stack size
    return torch.cat([torch.stack([g[s:s + 1].pow(2).sum(1) for g in grads]).sum(0).sqrt()
                      for s in range(grads[0].shape[0])])


def adamw(params, lr: float, wd: float, device: torch.device, capturable: bool = False) -> torch.optim.AdamW:
    """AdamW over stacked parameters (elementwise, so S independent optimisers): one fused kernel
    on CUDA, foreach on CPU."""
    if device.type == "cuda":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=(0.9, 0.999), fused=True,
                                 capturable=capturable)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=(0.9, 0.999), foreach=True)


class Method:
    """Shared state of every method: S seeds' configs and data, models, optimisers, selection
    direction (module doc)."""

    minimize = True
    #: names of the per-epoch selection ``metric`` and of the epoch's ``val_acc`` in progress lines
    #: (both differ per method: a CFF epoch's ``val_acc`` is the nearest-class-mean accuracy, not
    #: the stage-2 head's ``val acc`` of the summary); None: ``val_acc`` is the metric itself
    metric_name = "val_metric"
    epoch_acc_name: str | None = "val_acc"
    modules: dict[str, nn.Module]
    optimizers: list[torch.optim.Optimizer]

    def __init__(self, cfgs: Sequence[TrainConfig], datas: Sequence[DeviceData]) -> None:
        self.cfgs, self.datas = list(cfgs), list(datas)
        self.cfg, self.data = self.cfgs[0], self.datas[0]
        self.S = len(self.cfgs)
        self.seeds = [c.resolved_seeds() for c in self.cfgs]
        self.device = self.data.device
        self.margins = self.cfg.margins()
        self.num_classes = self.data.ds.num_classes

    def one_seed(self) -> None:
        """Refuse S > 1 (the baselines train one seed per pass)."""
        if self.S != 1:
            raise ValueError(f"method {self.cfg.method!r} trains one seed per pass (S=1); got S={self.S}")

    # ---- checkpoint plumbing (stacked: every seed at once)
    def state(self) -> dict[str, Any]:
        return {"modules": {k: m.state_dict() for k, m in self.modules.items()},
                "optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state(self, st: dict[str, Any]) -> None:
        for k, m in self.modules.items():
            m.load_state_dict(st["modules"][k])
        for o, s in zip(self.optimizers, st["optimizers"]):
            o.load_state_dict(s)

    def model_state(self, s: int = 0) -> dict[str, Any]:
        """Seed ``s``'s model weights (stacked tensors sliced to S = 1)."""
        if self.S == 1:
            return {k: {n: t.detach().clone() for n, t in m.state_dict().items()} for k, m in self.modules.items()}
        return {k: seed_slice(m.state_dict(), s) for k, m in self.modules.items()}

    @torch.no_grad()
    def load_model_state(self, st: dict[str, Any], s: int = 0) -> None:
        """Put a :meth:`model_state` into seed slot ``s``."""
        for k, m in self.modules.items():
            if self.S == 1:
                m.load_state_dict(st[k])
            else:
                for n, t in m.state_dict().items():
                    t[s:s + 1].copy_(st[k][n])

    def epoch_gens(self, epoch: int) -> list[tuple[torch.Generator, torch.Generator]]:
        """(order, augmentation) generators of every seed for ``epoch``."""
        return [(generator(self.device, derive_seed(sd["order"], f"epoch{epoch}")),
                 generator(self.device, derive_seed(sd["aug"], f"epoch{epoch}"))) for sd in self.seeds]

    def one_seed_epoch(self, epoch: int, L: int) -> tuple[torch.Generator, list[torch.Tensor], EpochStats]:
        """The augmentation generator, batch indices and statistics of one seed's epoch (S = 1)."""
        g_order, g_aug = self.epoch_gens(epoch)[0]
        return g_aug, self.data.epoch_order(g_order, self.cfg.batch_size), self.new_stats(L)

    def new_stats(self, L: int, dtype: torch.dtype | None = None,
                  classes: tuple[int, int] | None = None) -> EpochStats:
        return EpochStats(self.S, L, self.device, dtype, classes)
