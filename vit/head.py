"""Stage 2: the one head protocol of this package, :func:`fit_heads`.

The CFF heads (on the frozen encoder's last-layer token mean, :meth:`vit.cff.CFF.finish`) and the
raw-pixel probe (on the flattened pixels, :mod:`vit.probe`) both train here, so the two differ
only in their input.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from vit.config import TrainConfig, derive_seed
from vit.device import DeviceData, generator
from vit.diagnostics import topk_accuracy
from vit.method import RunDiverged
from vit.models import Head

__all__ = ["fit_heads"]


def fit_heads(cfgs: Sequence[TrainConfig], datas: Sequence[DeviceData],
              encode: Callable[[torch.Tensor], torch.Tensor], in_dim: int, *,
              clean: tuple[torch.Tensor, torch.Tensor] | None = None,
              dtype: torch.dtype = torch.float32) -> tuple[list[Head], list[dict[str, Any]]]:
    """Per seed a LayerNorm + Linear head (:class:`Head`),
    AdamW(``head_lr``, ``wd``), ``head_epochs`` epochs of ``batch_size`` mini-batches in an order
    drawn from the seed's order seed, on features ``encode(v)`` of normalised images
    v (S, b, C, H, W) -> (S, b, in_dim).

    'reference' (the ContrastiveFF code): features of augmented view 0, drawn afresh for every
    batch; the epoch with the lowest validation cross-entropy on augmented view 0 is kept.
    'cffdyn': features of the clean images computed once (``clean`` = (train, val), each
    (S, N, in_dim), when the caller has them); the epoch with the best validation accuracy is kept.

    Returns the heads with their kept state loaded, and per seed ``{"best_epoch", "selection",
    "val_curve"}``."""
    cfg, S = cfgs[0], len(cfgs)
    ref = cfg.reference
    device = datas[0].device
    seeds = [c.resolved_seeds() for c in cfgs]
    heads, opts, gens, gaugs = [], [], [], []
    for sd in seeds:
        torch.manual_seed(derive_seed(sd["init"], "head"))
        h = Head(in_dim, datas[0].ds.num_classes).to(device, dtype)
        heads.append(h)
        opts.append(torch.optim.AdamW(h.parameters(), lr=cfg.head_lr, weight_decay=cfg.wd))
        gens.append(generator(device, derive_seed(sd["order"], "head")))
        gaugs.append(generator(device, derive_seed(sd["aug"], "head")))
    xtr, ytr = torch.stack([d.x["train"] for d in datas]), torch.stack([d.y["train"] for d in datas])
    xva, yva = torch.stack([d.x["val"] for d in datas]), torch.stack([d.y["val"] for d in datas])
    bs = cfg.batch_size

    @torch.no_grad()
    def features(x: torch.Tensor, augmented: bool) -> torch.Tensor:
        if augmented:
            v = torch.stack([d.views(x[s], gaugs[s], 1) for s, d in enumerate(datas)])
        else:
            v = torch.stack([d.clean(x[s]) for s, d in enumerate(datas)])
        return encode(v)

    if not ref:
        if clean is None:
            clean = tuple(torch.cat([features(x[:, i:i + 2 * bs], False) for i in range(0, x.shape[1], 2 * bs)], 1)
                          for x in (xtr, xva))
        ftr, fva = clean
    best = [(math.inf if ref else -1.0, -1, {k: v.clone() for k, v in h.state_dict().items()}) for h in heads]
    curves: list[list[float]] = [[] for _ in range(S)]
    n = xtr.shape[1]
    # the first step (per seed) whose head loss is non-finite, -1: none; flagged on the device,
    # read once per epoch with the validation metric (a NaN head scores the class-0 share)
    bad = torch.full((S,), -1, dtype=torch.long, device=device)
    for ep in range(cfg.head_epochs):
        perms = [torch.randperm(n, generator=g, device=device) for g in gens]
        for step, i in enumerate(range(0, n, bs)):
            idx = [p[i:i + bs] for p in perms]
            if ref:
                fb = features(torch.stack([xtr[s][idx[s]] for s in range(S)]), True)
            for s in range(S):
                f = fb[s] if ref else ftr[s][idx[s]]
                loss = F.cross_entropy(heads[s](f), ytr[s][idx[s]])
                bad[s] = torch.where((bad[s] < 0) & ~torch.isfinite(loss.detach()), step, bad[s])
                opts[s].zero_grad(set_to_none=True)
                loss.backward()
                opts[s].step()
        for s, step in enumerate(bad.cpu().tolist()):
            if step < 0 and not all(bool(torch.isfinite(p).all()) for p in heads[s].parameters()):
                step = "last"   # a finite loss whose update overflowed the weights
            if step != -1:
                seed = f"seed {cfgs[s].seed}, " if S > 1 else ""
                raise RunDiverged(f"non-finite stage-2 head loss at {seed}head epoch {ep}, step {step} (head lr "
                                  f"{cfg.head_lr:g})", "likely cause: the head learning rate (--head-lr) too large; "
                                  "rerun with a smaller --head-lr", position=s)
        with torch.no_grad():
            if ref:
                ce = torch.zeros(S, dtype=torch.float64, device=device)
                for i in range(0, xva.shape[1], bs):
                    fb = features(xva[:, i:i + bs], True)
                    for s in range(S):
                        ce[s] += F.cross_entropy(heads[s](fb[s]), yva[s][i:i + bs], reduction="sum").double()
                vals = (ce / xva.shape[1]).cpu().tolist()
            else:
                vals = [float(topk_accuracy(heads[s](fva[s]), yva[s], 1)) for s in range(S)]
        for s in range(S):
            curves[s].append(vals[s])
            if (vals[s] < best[s][0]) if ref else (vals[s] > best[s][0]):
                best[s] = (vals[s], ep, {k: v.clone() for k, v in heads[s].state_dict().items()})
    for s in range(S):
        heads[s].load_state_dict(best[s][2])
    info = [{"best_epoch": best[s][1], "selection": "val_ce_aug_view0" if ref else "val_acc_clean",
             "val_curve": curves[s]} for s in range(S)]
    return heads, info
