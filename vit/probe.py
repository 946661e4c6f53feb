"""Raw-pixel linear probe: the floor a learned encoder has to beat.

The probe trains the CFF stage-2 head on the flattened, normalised pixels instead of the
encoder's last-layer token mean, through the same function as the CFF heads
(:func:`vit.head.fit_heads`), so head, protocol ('reference' or 'cffdyn', with its augmentation
and its selection rule), seeds and images (the run's own train/validation/test split) are the
same: the only difference from the CFF head is the input.
"""
from __future__ import annotations

from typing import Any

from vit.data import Dataset
from vit.diagnostics import topk_accuracy
from vit.config import TrainConfig
from vit.device import DeviceData, resolve_device
from vit.head import fit_heads

__all__ = ["raw_pixel_probe"]


def raw_pixel_probe(cfg: TrainConfig, dataset: Dataset) -> dict[str, Any]:
    """Train the stage-2 head on raw pixels of ``dataset`` with ``cfg``'s head protocol and seeds.

    Returns ``{"val_acc", "test_acc", "best_epoch", "selection", "protocol", "input_dim"}``."""
    if cfg.head_epochs < 1:
        raise ValueError("raw_pixel_probe: head_epochs must be >= 1")
    data = DeviceData.for_config(dataset, cfg, resolve_device(cfg.device))
    in_dim = data.x["train"][0].numel()
    (head,), (info,) = fit_heads([cfg], [data], lambda v: v.flatten(2), in_dim)
    out: dict[str, Any] = {}
    for split in ("val", "test"):
        x = data.clean(data.x[split]).flatten(1)
        out[f"{split}_acc"] = float(topk_accuracy(head(x).detach(), data.y[split], 1))
    return {**out, "best_epoch": info["best_epoch"], "selection": info["selection"], "protocol": cfg.protocol,
            "input_dim": int(in_dim)}
