"""Batched, on-device image augmentation (no per-sample CPU transforms).

All functions take a float batch ``x`` (N, C, H, W) in [0, 1] on any device and a
``torch.Generator`` on the same device, and draw every random number from that generator, so a
run's augmentation stream is fixed by its seed and independent of everything else.

``crop_flip``  random crop with zero padding ``pad`` (torchvision RandomCrop(size, padding=pad)
               semantics: the padded image is cropped back at a uniform offset in
               [0, 2·pad]²) followed by a horizontal flip with probability 1/2.  The crop is
               one advanced-indexing gather over (N, H, W) index grids.
``randaug``    RandAugment-like: ``n_ops`` rounds; in each round every sample independently
               picks one of ``RANDAUG_OPS`` (identity, brightness, contrast, solarize,
               posterize, autocontrast, invert-blend, translate) at a fixed magnitude; all ops
               are evaluated on the whole batch and selected per sample with ``torch.where``;
               then ``crop_flip``.
``none``       identity.
"""
from __future__ import annotations

import torch

__all__ = ["AUGMENTS", "RANDAUG_OPS", "augment", "crop_flip", "random_crop", "hflip", "randaug",
           "default_pad"]

AUGMENTS: tuple[str, ...] = ("crop_flip", "none", "randaug")
RANDAUG_OPS: tuple[str, ...] = ("identity", "brightness", "contrast", "solarize", "posterize",
                                "autocontrast", "invert_blend", "translate")


def default_pad(size: int) -> int:
    """Crop padding used for an image side ``size``: size // 8 (4 for 32, 3 for 28, 1 for 8)."""
    return max(1, size // 8)


def _rand(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device)


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back to (H, W) at per-sample uniform offsets."""
    if pad <= 0:
        return x
    n, c, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]   # (N, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]   # (N, W)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def hflip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    flip = _rand(x.shape[0], gen, x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int | None = None) -> torch.Tensor:
    pad = default_pad(x.shape[-1]) if pad is None else pad
    return hflip(random_crop(x, pad, gen), gen)


def _all_ops(x: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
    n = x.shape[0]
    sign = torch.where(_rand(n, gen, x.device) < 0.5, -1.0, 1.0).to(x.dtype)[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    shift = max(1, x.shape[-1] // 8)
    return [
        x,                                                        # identity
        (x * (1.0 + 0.4 * sign)).clamp(0, 1),                     # brightness ±40%
        ((x - mean) * (1.0 + 0.4 * sign) + mean).clamp(0, 1),     # contrast ±40%
        torch.where(x > 0.7, 1.0 - x, x),                         # solarize above 0.7
        torch.floor(x * 8.0) / 8.0,                               # posterize to 3 bits
        (x - lo) / (hi - lo).clamp(min=1e-3),                     # autocontrast
        0.7 * x + 0.3 * (1.0 - x),                                # partial inversion
        torch.roll(x, shifts=(shift, shift), dims=(2, 3)),        # translate (cyclic)
    ]


def randaug(x: torch.Tensor, gen: torch.Generator, n_ops: int = 2) -> torch.Tensor:
    for _ in range(n_ops):
        ops = torch.stack(_all_ops(x, gen))                       # (K, N, C, H, W)
        pick = torch.randint(0, len(RANDAUG_OPS), (x.shape[0],), generator=gen, device=x.device)
        x = ops[pick, torch.arange(x.shape[0], device=x.device)]
    return crop_flip(x, gen)


def augment(x: torch.Tensor, gen: torch.Generator, kind: str) -> torch.Tensor:
    """Apply augmentation ``kind`` (one of ``AUGMENTS``) to a [0, 1] float batch."""
    if kind == "crop_flip":
        return crop_flip(x, gen)
    if kind == "none":
        return x
    if kind == "randaug":
        return randaug(x, gen)
    raise ValueError(f"unknown augmentation {kind!r}; choose from {', '.join(AUGMENTS)}")
