"""``cffdyn vit bench``: the reference CFF training step vs ours, timed side by side.

``reference`` re-implements the public reference's stage-1 step faithfully in its performance
traits: per-sample augmentation on the CPU (a Python loop over samples: random crop with zero
padding, horizontal flip, standardisation; two views), the batch copied to the device, then for
every layer two separate forwards (one per view), the loss on the concatenated token means in
fp32, backward, AdamW step, and ``loss.item()`` (one host sync per layer per step).

``ours`` is :class:`vit.train` 's CFF epoch: whole dataset on the device, batched on-device
augmentation, both views in one forward per layer, diagnostics accumulated as tensors with one
sync per epoch, bf16 autocast and ``torch.compile`` on GPU.  ``ours (one-forward)`` is ``cff1``.

All run the same model and loss (:func:`vit.losses.supcon_loss`) on the same images.  One
untimed warm-up epoch each (compilation), then the median of ``epochs`` timed epochs.  CPU
default: ViT[64 4 4], patch 7, Fashion-MNIST, 2048 images; GPU default: ViT[128 4 5], patch 4,
32x32 (CIFAR-10 with ``--data-root``, else synthetic uint8 images), batch 512, 10240 images.
"""
from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from cffdyn.io import atomic_write_json
from vit.augment import default_pad
from vit.data import Dataset, load_dataset
from vit.losses import supcon_loss
from vit.models import pool
from vit.train import DeviceData, TrainConfig, _sync, build_method, resolve_device

__all__ = ["run_bench", "reference_epoch", "synthetic_dataset"]


def synthetic_dataset(n: int, shape: tuple[int, int, int], num_classes: int = 10, seed: int = 0) -> Dataset:
    """Random uint8 images with random labels (for timing only)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return Dataset(name="synthetic", x_train=x, y_train=y, x_val=x[:64], y_val=y[:64], x_test=x[:64],
                   y_test=y[:64], num_classes=num_classes, mean=(0.5,) * shape[0], std=(0.29,) * shape[0])


def _ref_augment(img: np.ndarray, rng: random.Random, pad: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """One sample, as a torchvision transform pipeline would do it on the CPU."""
    c, h, w = img.shape
    padded = np.zeros((c, h + 2 * pad, w + 2 * pad), dtype=np.float32)
    padded[:, pad:pad + h, pad:pad + w] = img.astype(np.float32) / 255.0
    dy, dx = rng.randint(0, 2 * pad), rng.randint(0, 2 * pad)
    out = padded[:, dy:dy + h, dx:dx + w]
    if rng.random() < 0.5:
        out = out[:, :, ::-1]
    return (out - mean) / std


def reference_epoch(method, ds: Dataset, device: torch.device, batch_size: int, seed: int) -> float:
    """One reference-style stage-1 epoch over ``ds.x_train``; returns the mean last-layer loss."""
    cfg = method.cfg
    rng = random.Random(seed)
    x_np = ds.x_train.numpy()
    y_all = ds.y_train
    mean = np.asarray(ds.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(ds.std, dtype=np.float32)[:, None, None]
    pad = default_pad(ds.image_shape[-1])
    order = list(range(len(x_np)))
    rng.shuffle(order)
    layers, opts, margins = method.encoder.layers, method.optimizers, method.margins
    method.encoder.train()
    last = []
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        if len(idx) < 2:
            continue
        v1 = np.stack([_ref_augment(x_np[i], rng, pad, mean, std) for i in idx])
        v2 = np.stack([_ref_augment(x_np[i], rng, pad, mean, std) for i in idx])
        x1, x2 = torch.from_numpy(v1).to(device), torch.from_numpy(v2).to(device)
        y = y_all[idx].to(device)
        for l, layer in enumerate(layers):
            f1 = layer(x1)
            f2 = layer(x2)
            loss = supcon_loss(torch.cat([pool(f1), pool(f2)]), y, margin=margins[l], temperature=cfg.tau,
                               mode=cfg.loss_mode, check_finite=False)
            opts[l].zero_grad()
            loss.backward()
            opts[l].step()
            value = loss.item()                  # the reference's per-layer host sync
            x1, x2 = f1.detach(), f2.detach()
        last.append(value)
    return float(np.mean(last))


def run_bench(*, device: str = "auto", epochs: int = 2, subset: int | None = None, data_root: str | None = None,
              dataset: str | None = None, out: Path | None = None, stream=None) -> dict:
    """Time reference vs ours (two-forward) vs ours (one-forward); print and return the numbers."""
    import sys

    stream = stream or sys.stdout
    dev = resolve_device(device)
    gpu = dev.type == "cuda"
    if gpu:
        base = TrainConfig(dataset="cifar10", subset=None, embed_dim=128, heads=4, layers=5, patch=4,
                           batch_size=512, device="cuda", amp=True, compile=True)
        n = subset or 10240
    else:
        base = TrainConfig(dataset="fashion_mnist", subset=None, embed_dim=64, heads=4, layers=4, patch=7,
                           batch_size=512, device="cpu", amp=False, compile=False)
        n = subset or 2048
    name = dataset or ("cifar10" if (gpu and data_root) else ("synthetic" if gpu else "fashion_mnist"))
    if name == "synthetic":
        ds = synthetic_dataset(n, (3, 32, 32) if gpu else (1, 28, 28))
    else:
        full = load_dataset(name, data_root, seed=0)
        ds = Dataset(name=full.name, x_train=full.x_train[:n], y_train=full.y_train[:n], x_val=full.x_val,
                     y_val=full.y_val, x_test=full.x_test, y_test=full.y_test, num_classes=full.num_classes,
                     mean=full.mean, std=full.std)
        base = base.replace(dataset=name)
    data = DeviceData(ds, dev, "crop_flip")
    rows = []

    def timed(label: str, fn) -> None:
        fn(-1)  # warm-up (compilation, allocator)
        ts = []
        for e in range(epochs):
            _sync(dev)
            t0 = time.perf_counter()
            fn(e)
            _sync(dev)
            ts.append(time.perf_counter() - t0)
        rows.append({"impl": label, "epoch_s": statistics.median(ts), "all_s": ts})

    ref = build_method(base.replace(amp=False, compile=False), data)
    timed("reference (2 fwd/layer, .item(), fp32, CPU aug)",
          lambda e: reference_epoch(ref, ds, dev, base.batch_size, seed=e + 1))
    ours = build_method(base, data)
    timed("ours cff2 (1 concat fwd, device aug, 1 sync/epoch" + (", bf16, compile)" if gpu else ")"),
          lambda e: ours.train_epoch(e + 1))
    ours1 = build_method(base.replace(method="cff1"), data)
    timed("ours cff1 (one-forward)", lambda e: ours1.train_epoch(e + 1))
    t_ref = rows[0]["epoch_s"]
    print(f"device: {dev}{' (' + torch.cuda.get_device_name(dev) + ')' if gpu else ''}; model "
          f"ViT[{base.embed_dim} {base.heads} {base.layers}] patch {base.patch}; data {name} "
          f"{tuple(ds.image_shape)} x {ds.x_train.shape[0]} images; batch {base.batch_size}; "
          f"median of {epochs} epochs after 1 warm-up; torch threads {torch.get_num_threads()}", file=stream)
    print(f"{'implementation':<62} {'epoch [s]':>10} {'speed-up vs reference':>22}", file=stream)
    for r in rows:
        r["speedup"] = t_ref / r["epoch_s"]
        print(f"{r['impl']:<62} {r['epoch_s']:>10.3f} {r['speedup']:>21.2f}x", file=stream)
    result = {"device": str(dev), "dataset": name, "n_images": int(ds.x_train.shape[0]), "epochs": epochs,
              "config": base.to_dict(), "rows": rows}
    if out is not None:
        atomic_write_json(out, result)
    return result
