"""The published ContrastiveFF stage-1 loop, ported operation for operation, for the benchmark.

What the reference runs per epoch (``main_CFF.one_epoch_stage1`` on the train and then the valid
loader; ``utils.set_loaders``; ``models/vit.py``; ``losses.SupMCon``), and what this port keeps:

* **Data**: uint8 CHW images in a map-style dataset whose item is two independently augmented
  views (torchvision v2 ``RandomCrop(size, padding)`` with zero fill, ``RandomHorizontalFlip``,
  ``ToDtype(float32, scale=True)``, ``Normalize``); ``DataLoader(batch_size, shuffle=True,
  pin_memory=True, num_workers=4)``, no persistent workers, no ``drop_last``; the valid split uses
  the training transform too.  torchvision is not a dependency here, so the four transforms are
  written with torch ops of the same arithmetic and the same random draws per view (offsets
  uniform in ``[0, 2 pad]``, a flip with probability 1/2, from torch's RNG in the worker).
* **Model**: layer 0 = ``Linear(C p², E)`` -> ReLU -> + a ``randn`` position embedding -> block;
  later layers one block each; a block is pre-LN ``nn.MultiheadAttention`` called as
  ``attn(x, x, x)`` (so it also returns the head-averaged attention weights, the reference's
  default), a GELU MLP of width 2E, and two ``Dropout(0)`` modules.  PyTorch default init.
* **Loss**: SupMCon's sequence of tensor operations: the label mask tiled 2x2 and its diagonal
  removed with ``scatter``, the clamp ``min(s + m, 1)`` on positives by ``torch.where``, division
  by τ, the row max subtracted, the masked log-sum-exp, the mean over positives with the
  reference's guard for anchors without one, the mean over both views.
* **Loop**: per batch the two views patchified and copied to the device one after the other,
  per layer two separate forwards of the detached inputs, the loss, ``zero_grad``, backward,
  AdamW step (PyTorch defaults but the learning rate), and ``loss.item() * len(targets)`` per
  layer; the valid pass the same without backward under ``torch.set_grad_enabled(False)``.

Departures (all for running here): the device is a parameter (the reference hard-codes
``'cuda'``); ``pin_memory`` is only asked for on CUDA (PyTorch ignores it with a warning
otherwise); 1-channel images are allowed (the reference's first layer assumes 3 channels).
:func:`port_supmcon_loss` equals :func:`vit.losses.supcon_loss` (``mode="clamp"``) to float
rounding (``tests/test_vit_bench.py``).
"""
from __future__ import annotations

import time
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["REFERENCE_WORKERS", "PortBlock", "PortViT", "port_patches", "port_supmcon_loss", "PortViews",
           "PortLoop"]

#: the reference's DataLoader workers (fixed, whatever the machine has)
REFERENCE_WORKERS = 4


def port_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/p)(W/p), C p²): the reference's patching (channel-major patch rows)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return x.flatten(1, 2).flatten(2, 4)


class PortBlock(nn.Module):
    """The reference's encoder block (pre-LN, attention with weights returned, GELU MLP 2E, Dropout(0))."""

    def __init__(self, dim: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop1 = nn.Dropout(0.0)
        self.drop2 = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        h, _ = self.attn(h, h, h)          # need_weights left at its default, as the reference calls it
        resid = x + h
        h = self.drop2(self.fc2(self.drop1(self.act(self.fc1(self.norm2(resid))))))
        return h + resid


class _PortPosition(nn.Module):
    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn((1, tokens, dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pos_embed


class PortViT(nn.Module):
    """The reference's ViT[E H L] encoder on patch tokens (its classifier head is not timed)."""

    def __init__(self, channels: int, patch: int, tokens: int, dim: int, heads: int, layers: int) -> None:
        super().__init__()
        self.patch = patch
        first = nn.Sequential(nn.Linear(channels * patch * patch, dim), nn.ReLU(), _PortPosition(tokens, dim),
                              PortBlock(dim, 2 * dim, heads))
        self.layers = nn.ModuleList([first] + [PortBlock(dim, 2 * dim, heads) for _ in range(1, layers)])


def port_supmcon_loss(features: Sequence[torch.Tensor], labels: torch.Tensor, margin: float,
                      temperature: float) -> torch.Tensor:
    """The reference's marginal SupCon loss of two views ``features = [f1, f2]`` (each (n, E)),
    in its order of operations (module doc)."""
    device = features[0].device
    n, views = features[0].shape[0], len(features)
    labels = labels.contiguous().view(-1, 1)
    same = torch.eq(labels, labels.T).float().to(device).repeat(views, views)
    z = F.normalize(torch.cat(list(features), dim=0))
    not_self = torch.scatter(torch.ones_like(same), 1, torch.arange(n * views, device=device).view(-1, 1), 0)
    pos = same * not_self
    sim = torch.matmul(z, z.T)
    sim = torch.where(pos == 1, torch.clamp(sim + margin, max=1), sim)
    sim = torch.div(sim, temperature)
    row_max, _ = torch.max(sim, dim=1, keepdim=True)
    logits = sim - row_max.detach()
    log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(1, keepdim=True))
    n_pos = pos.sum(1)
    n_pos = torch.where(n_pos < 1e-6, 1, n_pos)
    mean_log_prob_pos = (pos * log_prob).sum(1) / n_pos
    return (-mean_log_prob_pos).view(views, n).mean()


class PortViews(torch.utils.data.Dataset):
    """uint8 (N, C, H, W) images -> ((view, view), label): crop with zero padding, flip, scale to
    [0, 1], normalise; every view its own draws from torch's RNG (as torchvision's v2 transforms)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                 pad: int) -> None:
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"PortViews needs uint8 (N, C, H, W) images, got {x.dtype} {tuple(x.shape)}")
        self.x, self.y, self.pad = x, y, pad
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def _view(self, img: torch.Tensor) -> torch.Tensor:
        c, h, w = img.shape
        p = self.pad
        padded = F.pad(img, (p, p, p, p))                       # zero fill, uint8
        top = int(torch.randint(0, 2 * p + 1, (1,)).item())
        left = int(torch.randint(0, 2 * p + 1, (1,)).item())
        out = padded[:, top:top + h, left:left + w]
        if torch.rand(1).item() < 0.5:
            out = out.flip(-1)
        return (out.to(torch.float32) / 255.0 - self.mean) / self.std

    def __getitem__(self, i: int):
        img = self.x[i]
        return (self._view(img), self._view(img)), self.y[i]


class PortLoop:
    """The reference's stage-1 epoch (train pass, then valid pass) on ``device``."""

    def __init__(self, *, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                 mean: Sequence[float], std: Sequence[float], pad: int, patch: int, dim: int, heads: int,
                 layers: int, batch_size: int, lr: float, margins: Sequence[float], temperature: float,
                 device: torch.device, workers: int = REFERENCE_WORKERS, seed: int = 0) -> None:
        c, h, w = x_train.shape[1:]
        torch.manual_seed(seed)
        self.model = PortViT(c, patch, (h // patch) * (w // patch), dim, heads, layers).to(device)
        self.opts = [torch.optim.AdamW(layer.parameters(), lr=lr) for layer in self.model.layers]
        self.margins, self.tau, self.device = list(margins), temperature, device
        pin = device.type == "cuda"
        self.loaders = {phase: torch.utils.data.DataLoader(PortViews(x, y, mean, std, pad), batch_size=batch_size,
                                                           shuffle=True, pin_memory=pin, num_workers=workers)
                        for phase, x, y in (("train", x_train, y_train), ("valid", x_val, y_val))}

    def _pass(self, phase: str) -> torch.Tensor:
        train = phase == "train"
        L = len(self.model.layers)
        losses, n = torch.zeros(L), 0
        self.model.train(train)
        with torch.set_grad_enabled(train):
            for (v1, v2), targets in self.loaders[phase]:
                x1 = port_patches(v1.to(self.device), self.model.patch)
                x2 = port_patches(v2.to(self.device), self.model.patch)
                targets = targets.to(self.device)
                n += len(targets)
                for l, layer in enumerate(self.model.layers):
                    x1 = layer(x1.detach())
                    x2 = layer(x2.detach())
                    loss = port_supmcon_loss([x1.mean(1), x2.mean(1)], targets, self.margins[l], self.tau)
                    if train:
                        self.opts[l].zero_grad()
                        loss.backward()
                        self.opts[l].step()
                    losses[l] += loss.item() * len(targets)
        return losses / max(n, 1)

    def epoch(self) -> dict[str, float]:
        """One stage-1 epoch; the wall seconds of its train and valid passes and the last layer's losses."""
        t0 = time.perf_counter()
        tr = self._pass("train")
        t1 = time.perf_counter()
        va = self._pass("valid")
        return {"train_s": t1 - t0, "valid_s": time.perf_counter() - t1, "train_loss": float(tr[-1]),
                "valid_loss": float(va[-1])}
