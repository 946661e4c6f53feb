"""Raw-pixel linear probe: the floor a learned encoder has to beat.

The probe trains the CFF stage-2 head (:class:`vit.models.Head`: LayerNorm + Linear) on the
flattened, normalised pixels instead of the encoder's last-layer token mean, with the head
protocol of :mod:`vit.train` (``_CFF.finish``): AdamW ``head_lr`` and ``wd``, ``head_epochs``
epochs of mini-batches of ``batch_size`` in an order drawn from the run's order seed, features
computed once from the un-augmented training images, and the head epoch with the best
validation accuracy kept.  Same images (the run's own train/validation/test split), same head,
same protocol: the only difference from the CFF head is the input.

If the head protocol in ``vit.train`` changes (e.g. the reference protocol's head on augmented
view 0 with best-validation-cross-entropy selection), this probe must change with it; the
function names the protocol it used in its result (``protocol``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vit.data import Dataset, normalize
from vit.diagnostics import topk_accuracy
from vit.models import Head
from vit.train import TrainConfig, derive_seed, resolve_device

__all__ = ["raw_pixel_probe", "PROBE_PROTOCOL"]

#: the head protocol this probe mirrors (recorded with every probe result)
PROBE_PROTOCOL = ("LayerNorm+Linear head on clean precomputed features, AdamW(head_lr, wd), "
                  "head_epochs epochs, best validation accuracy kept")


def raw_pixel_probe(cfg: TrainConfig, dataset: Dataset) -> dict[str, Any]:
    """Train the stage-2 head on raw pixels of ``dataset`` with ``cfg``'s head settings and seeds.

    Returns ``{"val_acc", "test_acc", "best_epoch", "protocol", "input_dim"}``."""
    if cfg.head_epochs < 1:
        raise ValueError("raw_pixel_probe: head_epochs must be >= 1")
    device = resolve_device(cfg.device)
    seeds = cfg.resolved_seeds()

    def feats(x: torch.Tensor) -> torch.Tensor:
        return normalize(x.to(device), dataset.mean, dataset.std).flatten(1)

    ftr, fva, fte = feats(dataset.x_train), feats(dataset.x_val), feats(dataset.x_test)
    ytr, yva, yte = (t.to(device) for t in (dataset.y_train, dataset.y_val, dataset.y_test))
    # the same seed derivations as the CFF head, so probe and head see the same draws
    torch.manual_seed(derive_seed(seeds["init"], "head"))
    head = Head(ftr.shape[1], dataset.num_classes).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.head_lr, weight_decay=cfg.wd)
    g = torch.Generator(device=device).manual_seed(derive_seed(seeds["order"], "head") % (2 ** 63))
    best = (-1.0, -1, {k: v.clone() for k, v in head.state_dict().items()})
    for ep in range(cfg.head_epochs):
        perm = torch.randperm(ftr.shape[0], generator=g, device=device)
        for idx in perm.split(cfg.batch_size):
            loss = F.cross_entropy(head(ftr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            va = float(topk_accuracy(head(fva), yva, 1))
        if va > best[0]:
            best = (va, ep, {k: v.clone() for k, v in head.state_dict().items()})
    head.load_state_dict(best[2])
    with torch.no_grad():
        return {"val_acc": float(topk_accuracy(head(fva), yva, 1)),
                "test_acc": float(topk_accuracy(head(fte), yte, 1)),
                "best_epoch": best[1], "protocol": PROBE_PROTOCOL, "input_dim": int(ftr.shape[1])}
