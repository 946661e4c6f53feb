"""``cffdyn vit bench``: the reference CFF training step as the reference runs it, vs ours.

Rows (one CFF two-forward training step over all layers, ``cff2``, clamp margins):

``reference``  the public ContrastiveFF loop as it runs: a ViT of ``nn.MultiheadAttention``
               blocks with PyTorch's default initialisation (:class:`RefViT`, written here to the
               reference's structure), per-sample CPU augmentation (random crop with zero padding,
               horizontal flip, normalisation; two views) in a ``torch.utils.data.DataLoader``
               with 4 workers (capped at the CPU count) and pinned memory (on CUDA), the batch
               copied to the device, then per layer two separate forwards (one per view), the loss
               in fp32, backward, AdamW, and ``loss.item()`` (one host sync per layer).
``ours S=1``   :class:`vit.cff.CFF` 's training step (``train_step``: on-device batched
               augmentation, both views in one forward, diagnostics on the device, fused/foreach
               AdamW, CUDA-graph replay on CUDA) for one seed, at every precision the device
               supports (CPU: fp32, and bf16 where the CPU has it; CUDA: fp32, tf32, bf16).
``ours S=k``   the same step for k seeds in one pass (default 7), each precision.

``--epoch`` (:func:`run_epoch_bench`): whole stage-1 epochs (train pass, then valid pass) of the
published loop ported operation for operation (:mod:`vit.reference_port`: its 4 DataLoader
workers whatever the machine has, its attention returning weights, its loss's operations, no
persistent workers) against ours (``train_epoch`` + ``evaluate``, S = 1, fp32) on the same
images, at one torch thread and at all of them, rounds interleaved (per round: each thread
setting, each row).  The step rows above time a model of the reference loop; this times the
loop as published, its per-epoch costs (worker start-up, the valid pass) included.

Timing: one untimed warm-up round, then ``rounds`` rounds; each round runs ``steps`` steps of
every row in turn (A B C A B C ...), so a load change on a shared machine hits every row.  Per
row: median and spread (min, max) of the per-round ms per step.  ``ops_per_step``: kernel
launches per step from ``torch.profiler`` on CUDA (runtime launch calls, a graph replay counting
once), dispatched ``aten::`` ops per step (nested ones included) on CPU.  Projections:
``epoch_s_50k`` = one 50,000-image epoch of one seed (ms per seed-step × 50,000 / batch),
``protocol_hours`` = 2×2 cells × 7 seeds × 600 epochs of that.  Every result carries
:func:`cffdyn.machine.machine_info` (load average before and after).
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from cffdyn.errors import UserError
from cffdyn.io import atomic_write_json
from cffdyn.machine import machine_info
from vit.augment import default_pad
from vit.data import Dataset, load_dataset
from vit.losses import supcon_loss
from vit.models import patchify
from vit.config import TrainConfig, input_normalisation
from vit.device import DeviceData, resolve_device, supported_precisions, sync, use_precision
from vit.train import build_method, check_memory

__all__ = ["RefViT", "run_bench", "format_bench", "synthetic_dataset", "bench_configs", "PROTOCOL_RUNS",
           "parse_threads", "run_epoch_bench", "format_epoch_bench"]

#: the Steier protocol the projection is for: 2×2 cells × 7 seeds × 600 epochs on 50,000 images
PROTOCOL_RUNS = {"cells": 4, "seeds": 7, "epochs": 600, "images": 50_000}


def synthetic_dataset(n: int, shape: tuple[int, int, int], num_classes: int = 10, seed: int = 0) -> Dataset:
    """Random uint8 images with random labels (for timing only)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return Dataset(name="synthetic", x_train=x, y_train=y, x_val=x[:64], y_val=y[:64], x_test=x[:64],
                   y_test=y[:64], num_classes=num_classes, mean=(0.5,) * shape[0], std=(0.29,) * shape[0])


# ============================================================================ the reference loop
class _RefBlock(nn.Module):
    """Pre-LN encoder block built like the reference's: nn.MultiheadAttention, GELU MLP (ratio 2)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.norm1(x)
        x = x + self.attn(a, a, a, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class _RefPos(nn.Module):
    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, tokens, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pos


class RefViT(nn.Module):
    """The reference's ViT structure with PyTorch default init: layer 0 = Linear(patch) -> ReLU ->
    + position embedding -> block; later layers one block each.  Input: patch tokens."""

    def __init__(self, patch_dim: int, tokens: int, dim: int, heads: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(patch_dim, dim), nn.ReLU(), _RefPos(tokens, dim),
                                                   _RefBlock(dim, heads))]
                                    + [_RefBlock(dim, heads) for _ in range(layers - 1)])


class _TwoViews(torch.utils.data.Dataset):
    """Per-sample CPU augmentation, as torchvision transforms in DataLoader workers would do it."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean, std, pad: int, seed: int) -> None:
        self.x, self.y = x.numpy(), y
        self.mean = np.asarray(mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(std, dtype=np.float32)[:, None, None]
        self.pad, self.seed = pad, seed

    def __len__(self) -> int:
        return len(self.x)

    def _view(self, img: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        c, h, w = img.shape
        p = self.pad
        padded = np.zeros((c, h + 2 * p, w + 2 * p), dtype=np.float32)
        padded[:, p:p + h, p:p + w] = img.astype(np.float32) / 255.0
        dy, dx = rng.integers(0, 2 * p + 1, size=2)
        out = padded[:, dy:dy + h, dx:dx + w]
        if rng.random() < 0.5:
            out = out[:, :, ::-1]
        return torch.from_numpy(np.ascontiguousarray((out - self.mean) / self.std))

    def __getitem__(self, i: int):
        rng = np.random.default_rng()
        img = self.x[i]
        return (self._view(img, rng), self._view(img, rng)), self.y[i]


class _ReferenceLoop:
    """One reference training step per call (next batch from the loader included)."""

    def __init__(self, cfg: TrainConfig, ds: Dataset, device: torch.device, workers: int) -> None:
        c, h, w = ds.image_shape
        torch.manual_seed(0)
        self.model = RefViT(c * cfg.patch ** 2, (h // cfg.patch) * (w // cfg.patch), cfg.embed_dim, cfg.heads,
                            cfg.layers).to(device)
        self.opts = [torch.optim.AdamW(l.parameters(), lr=cfg.lr) for l in self.model.layers]
        self.margins, self.cfg, self.device = cfg.margins(), cfg, device
        self.loader = torch.utils.data.DataLoader(
            _TwoViews(ds.x_train, ds.y_train, ds.mean, ds.std, default_pad(w), 0), batch_size=cfg.batch_size,
            shuffle=True, drop_last=True, num_workers=workers, pin_memory=device.type == "cuda",
            persistent_workers=workers > 0)
        self.it = iter(self.loader)

    def _next(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def step(self) -> float:
        (v1, v2), y = self._next()
        p = self.cfg.patch
        x1, x2 = patchify(v1.to(self.device), p), patchify(v2.to(self.device), p)
        y = y.to(self.device)
        value = 0.0
        for l, layer in enumerate(self.model.layers):
            x1 = layer(x1.detach())
            x2 = layer(x2.detach())
            loss = supcon_loss([x1.mean(1), x2.mean(1)], y, margin=self.margins[l], temperature=self.cfg.tau,
                               mode="clamp", check_finite=False)
            self.opts[l].zero_grad()
            loss.backward()
            self.opts[l].step()
            value = loss.item()                       # the reference's per-layer host sync
        return value


# ============================================================================ ours
class _OursLoop:
    """Our engine's training step for S seeds at one precision."""

    def __init__(self, cfg: TrainConfig, ds: Dataset, device: torch.device, n_seeds: int) -> None:
        cfgs = [cfg.replace(seed=s) for s in range(n_seeds)]
        self.m = build_method(cfgs, [DeviceData.for_config(ds, cfg, device) for _ in cfgs])
        self.epoch = 0
        self._new_epoch()

    def _new_epoch(self) -> None:
        self.gens = self.m.epoch_gens(self.epoch)
        self.orders = self.m.batch_orders(self.gens)
        self.orders = [[b for b in o if b.shape[0] == self.m.cfg.batch_size] for o in self.orders]
        self.k = 0
        self.buf = self.m.new_epoch_stats()
        self.epoch += 1

    def step(self) -> None:
        if self.k >= len(self.orders[0]):
            self._new_epoch()
        self.m.train_step(self.orders, self.gens, self.k, self.buf)
        self.k += 1


def bench_configs(device: torch.device) -> TrainConfig:
    """GPU: ViT[128 4 5], patch 4, 32×32, batch 512; CPU (2 cores):
    ViT[64 4 4], patch 7, Fashion-MNIST 28×28, batch 128."""
    if device.type == "cuda":
        return TrainConfig(dataset="cifar10", subset=None, embed_dim=128, heads=4, layers=5, patch=4,
                           batch_size=512, device="cuda", epochs=1)
    return TrainConfig(dataset="fashion_mnist", subset=None, embed_dim=64, heads=4, layers=4, patch=7,
                       batch_size=128, device="cpu", epochs=1)


def _count_ops(fn: Callable[[], Any], device: torch.device) -> int:
    """Kernel launches (CUDA) or dispatched aten ops (CPU) of one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        sync(device)
    names = [e.name for e in prof.events()]
    if device.type == "cuda":
        return sum(1 for n in names if n in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC",
                                             "cudaGraphLaunch", "cuLaunchKernelEx"))
    return sum(1 for n in names if n.startswith("aten::"))


def _header(dev: torch.device, cfg: TrainConfig) -> dict[str, Any]:
    """What every bench result names first: the device, the model, the method and the batch."""
    return {"device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
            "model": f"ViT[{cfg.embed_dim} {cfg.heads} {cfg.layers}] patch {cfg.patch}", "method": "cff2 clamp",
            "batch_size": cfg.batch_size}


def run_bench(*, device: str = "auto", rounds: int = 5, steps: int = 3, seeds: int = 7, workers: int | None = None,
              data_root: str | None = None, json_path: Path | None = None,
              cfg: TrainConfig | None = None, n_images: int | None = None) -> dict[str, Any]:
    """Time the rows (module doc) interleaved; return (and with ``json_path`` write) the result."""
    if seeds < 1:
        raise ValueError(f"--seeds={seeds} must be >= 1")
    if rounds < 1 or steps < 1:
        raise ValueError("--rounds and --steps must be >= 1")
    if rounds * steps > 100 * 5 * 3:   # each row times rounds x steps steps; the defaults are 5 x 3
        raise UserError(f"--rounds {rounds} x --steps {steps} = {rounds * steps} timed steps per row, more than 100x "
                        "the defaults' 15", "keep --rounds x --steps <= 1500")
    dev = resolve_device(device)
    cfg = cfg or bench_configs(dev)
    cores = os.cpu_count() or 1
    workers = min(4, cores) if workers is None else workers
    if workers < 0:
        raise ValueError(f"--workers={workers} must be >= 0")
    n = n_images or max(4 * cfg.batch_size, 2048)
    if dev.type == "cuda" and data_root is None:
        ds = synthetic_dataset(n, (3, 32, 32))
        data_name = "synthetic uint8 32x32 (random labels)"
    else:
        name = "cifar10" if dev.type == "cuda" else cfg.dataset
        full = load_dataset(name, data_root, seed=0)
        ds = Dataset(name=full.name, x_train=full.x_train[:n], y_train=full.y_train[:n], x_val=full.x_val[:64],
                     y_val=full.y_val[:64], x_test=full.x_test[:64], y_test=full.y_test[:64],
                     num_classes=full.num_classes, mean=full.mean, std=full.std)
        data_name = f"{full.name} ({n} training images)"
    cfg = cfg.replace(dataset=ds.name if ds.name != "synthetic" else cfg.dataset)
    # the S-seed row's step must fit before anything is built
    check_memory(cfg, seeds, int(ds.x_train.shape[0]), int(ds.x_train.shape[1]), dev, "reduce --seeds")
    info_before = machine_info(str(dev))
    rows: list[dict[str, Any]] = []
    loops: list[tuple[dict[str, Any], Callable[[], Any]]] = []
    ref = _ReferenceLoop(cfg, ds, dev, workers)
    loops.append(({"impl": "reference", "precision": "fp32", "seeds": 1}, ref.step))
    for p in supported_precisions(dev):
        for s in ((1, seeds) if seeds > 1 else (1,)):
            o = _OursLoop(cfg.replace(precision=p), ds, dev, s)
            loops.append(({"impl": "ours", "precision": p, "seeds": s}, o.step))
    times: list[list[float]] = [[] for _ in loops]
    for r in range(rounds + 1):                       # round 0: warm-up (capture, allocator, workers)
        for k, (meta, fn) in enumerate(loops):
            use_precision(meta["precision"], dev)        # each row at its own matmul mode
            sync(dev)
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            sync(dev)
            if r > 0:
                times[k].append((time.perf_counter() - t0) / steps * 1e3)
    ops = [_count_ops(fn, dev) for _, fn in loops]
    ref_seed_ms = statistics.median(times[0])
    steps_50k = PROTOCOL_RUNS["images"] / cfg.batch_size
    for (meta, _), ts, op in zip(loops, times, ops):
        med = statistics.median(ts)
        per_seed = med / meta["seeds"]
        epoch_s = per_seed * steps_50k / 1e3
        rows.append({**meta, "ms_per_step": med, "ms_per_step_min": min(ts), "ms_per_step_max": max(ts),
                     "ms_per_seed_step": per_seed, "ops_per_step": op, "epoch_s_50k": epoch_s,
                     "protocol_hours": epoch_s * PROTOCOL_RUNS["cells"] * PROTOCOL_RUNS["seeds"]
                     * PROTOCOL_RUNS["epochs"] / 3600.0,
                     "speedup_vs_reference": ref_seed_ms / per_seed, "round_ms": ts})
    del ref
    res = {**_header(dev, cfg), "data": data_name, "rounds": rounds, "steps_per_round": steps,
           "reference_loop": (f"two forwards per layer, .item() per layer, nn.MultiheadAttention blocks with default "
                              f"init, per-sample CPU augmentation in a DataLoader with {workers} workers"
                              + (f" (fewer than the reference's 4: {cores} CPUs)" if workers < 4 else "")
                              + (", pinned memory" if dev.type == "cuda" else ", no pinned memory (CPU)")
                              + ", fp32"),
           "ops_per_step_means": "kernel launches (torch.profiler)" if dev.type == "cuda"
           else "dispatched aten ops, nested included (torch.profiler)",
           "protocol": PROTOCOL_RUNS, "rows": rows, "machine_before": info_before,
           "machine": machine_info(str(dev))}
    if json_path is not None:
        atomic_write_json(json_path, res)
    return res


def format_bench(res: dict[str, Any]) -> str:
    mb, ma = res["machine_before"], res["machine"]
    lines = [f"vit bench on {res['device']}: {res['model']}, {res['method']}, batch {res['batch_size']}, "
             f"data {res['data']}; {res['rounds']} interleaved rounds x {res['steps_per_round']} steps after one "
             f"warm-up round; median [min, max] per row",
             f"baseline = the reference loop as the reference runs it: {res['reference_loop']}",
             f"machine: {ma.get('cpus')} CPUs {ma.get('cpu')}, torch {ma.get('torch')} ({ma.get('torch_threads')} "
             f"threads); load average before {mb.get('load_avg')}, after {ma.get('load_avg')}",
             f"ops/step = {res['ops_per_step_means']}; projections: one 50k-image epoch per seed, and the "
             f"protocol (2x2 cells x 7 seeds x 600 epochs x 50k images)",
             f"{'impl':<10}{'prec':<6}{'S':>3} {'ms/step':>10} {'[min, max]':>20} {'ms/seed-step':>13} "
             f"{'ops/step':>9} {'epoch_s_50k':>12} {'protocol_h':>11} {'speed-up':>9}"]
    for r in res["rows"]:
        lines.append(f"{r['impl']:<10}{r['precision']:<6}{r['seeds']:>3} {r['ms_per_step']:10.1f} "
                     f"{'[' + format(r['ms_per_step_min'], '.1f') + ', ' + format(r['ms_per_step_max'], '.1f') + ']':>20} "
                     f"{r['ms_per_seed_step']:13.1f} {r['ops_per_step']:9d} {r['epoch_s_50k']:12.1f} "
                     f"{r['protocol_hours']:11.1f} {r['speedup_vs_reference']:8.2f}x")
    return "\n".join(lines)


# ============================================================================ whole epochs vs the published loop
def parse_threads(text: str) -> list[int]:
    """``"1,all"`` -> [1, os.cpu_count()]: the torch thread counts of the epoch bench."""
    cores = os.cpu_count() or 1
    out = []
    for part in text.split(","):
        part = part.strip()
        n = cores if part == "all" else int(part) if part.isdigit() else 0
        if not 1 <= n <= cores:
            raise ValueError(f"--threads {text!r}: each entry must be 'all' or an integer from 1 to {cores} "
                             f"(this machine's CPUs)")
        out.append(n)
    return list(dict.fromkeys(out))


def _epoch_dataset(cfg: TrainConfig, data_root: str | None, n_train: int, n_val: int, dev: torch.device) -> Dataset:
    if dev.type == "cuda" and data_root is None:
        full = synthetic_dataset(n_train + n_val, (3, 32, 32))
    else:
        full = load_dataset("cifar10" if dev.type == "cuda" else cfg.dataset, data_root, seed=0)
    if full.x_train.shape[0] < n_train + n_val:
        raise UserError(f"--n-train {n_train} + --n-val {n_val} images: the dataset has {full.x_train.shape[0]}",
                        "give smaller sizes")
    # the reference's valid split is taken from the training images (it uses their transform too)
    return Dataset(name=full.name, x_train=full.x_train[:n_train], y_train=full.y_train[:n_train],
                   x_val=full.x_train[n_train:n_train + n_val], y_val=full.y_train[n_train:n_train + n_val],
                   x_test=full.x_test[:64], y_test=full.y_test[:64], num_classes=full.num_classes, mean=full.mean,
                   std=full.std)


def run_epoch_bench(*, device: str = "auto", rounds: int = 3, threads: Sequence[int] | None = None,
                    n_train: int = 2048, n_val: int = 256, workers: int | None = None, data_root: str | None = None,
                    cfg: TrainConfig | None = None, json_path: Path | None = None) -> dict[str, Any]:
    """Seconds per stage-1 epoch of the published loop (ported) and of ours, interleaved (module doc)."""
    from vit.reference_port import REFERENCE_WORKERS, PortLoop
    from vit.train import prepare_method

    if rounds < 1 or rounds > 100:
        raise UserError(f"--rounds {rounds}: the epoch bench takes 1 to 100 rounds", "give --rounds 3 (the default)")
    if not (1 <= n_train <= 100_000 and 1 <= n_val <= 100_000):
        raise UserError(f"--n-train {n_train}, --n-val {n_val}: each must be 1 to 100,000 images", "give smaller sizes")
    dev = resolve_device(device)
    cfg = (cfg or bench_configs(dev)).replace(precision="fp32", augment="crop_flip")
    threads = list(threads) if threads else parse_threads("1,all")
    workers = REFERENCE_WORKERS if workers is None else workers
    if workers < 0:
        raise ValueError(f"--workers={workers} must be >= 0")
    ds = _epoch_dataset(cfg, data_root, n_train, n_val, dev)
    cfg = cfg.replace(dataset=ds.name if ds.name != "synthetic" else cfg.dataset, subset=None)
    check_memory(cfg, 1, n_train, int(ds.x_train.shape[1]), dev)
    norm = input_normalisation(cfg, ds)
    side = int(ds.x_train.shape[-1])
    pad = cfg.crop_pad if cfg.crop_pad is not None else default_pad(side)
    saved_threads = torch.get_num_threads()
    info_before = machine_info(str(dev))
    port = PortLoop(x_train=ds.x_train, y_train=ds.y_train, x_val=ds.x_val, y_val=ds.y_val, mean=norm["mean"],
                    std=norm["std"], pad=pad, patch=cfg.patch, dim=cfg.embed_dim, heads=cfg.heads, layers=cfg.layers,
                    batch_size=cfg.batch_size, lr=cfg.lr, margins=cfg.margins(), temperature=cfg.tau, device=dev,
                    workers=workers)
    ours = prepare_method([cfg], [ds])
    epoch_no = [0]

    def ours_epoch() -> dict[str, float]:
        t0 = time.perf_counter()
        ours.train_epoch(epoch_no[0])
        sync(dev)
        t1 = time.perf_counter()
        ours.evaluate(epoch_no[0])       # validation loss and CAR, NCM probe, within-pair noise
        sync(dev)
        epoch_no[0] += 1
        return {"train_s": t1 - t0, "valid_s": time.perf_counter() - t1}

    rows = [("reference (published loop, ported)", port.epoch), ("ours", ours_epoch)]
    times: dict[tuple[str, int], list[float]] = {(name, t): [] for name, _ in rows for t in threads}
    parts: dict[tuple[str, int], list[dict[str, float]]] = {k: [] for k in times}
    import warnings
    try:
        with warnings.catch_warnings():
            # the reference's 4 workers on a machine with fewer CPUs: as published, said in the output
            warnings.filterwarnings("ignore", message="This DataLoader will create")
            for r in range(rounds + 1):                 # round 0: warm-up (allocator, first worker start)
                for t in threads:
                    torch.set_num_threads(t)
                    for name, fn in rows:
                        use_precision("fp32", dev)
                        sync(dev)
                        t0 = time.perf_counter()
                        part = fn()
                        sync(dev)
                        if r > 0:
                            times[(name, t)].append(time.perf_counter() - t0)
                            parts[(name, t)].append(part)
    finally:
        torch.set_num_threads(saved_threads)
    out_rows = []
    for t in threads:
        ref_ts, our_ts = times[(rows[0][0], t)], times[(rows[1][0], t)]
        per_round = [a / b for a, b in zip(ref_ts, our_ts)]
        for name, _ in rows:
            ts = times[(name, t)]
            out_rows.append({"impl": name, "threads": t, "epoch_s": statistics.median(ts), "epoch_s_min": min(ts),
                             "epoch_s_max": max(ts), "round_s": ts,
                             "train_s": statistics.median(p["train_s"] for p in parts[(name, t)]),
                             "valid_s": statistics.median(p["valid_s"] for p in parts[(name, t)])})
        out_rows[-1].update(ratio_reference_over_ours=statistics.median(ref_ts) / statistics.median(our_ts),
                            ratio_per_round_min=min(per_round), ratio_per_round_max=max(per_round))
    res = {**_header(dev, cfg), "data": f"{ds.name}: {n_train} training + {n_val} valid images",
           "rounds": rounds, "threads": threads, "reference_workers": workers,
           "reference_loop": ("the published one_epoch_stage1 (train pass, then valid pass with the training "
                              "transform), ported operation for operation (vit.reference_port): per-sample "
                              f"augmentation in a DataLoader with {workers} workers started every epoch"
                              + (f" (on {os.cpu_count()} CPUs)" if workers > (os.cpu_count() or 1) else "")
                              + ", two forwards "
                              "per layer, attention returning its weights, .item() per layer, fp32"),
           "ours": "vit.cff.CFF train_epoch + evaluate (on-device augmentation, both views in one forward), S = 1, fp32",
           "rows": out_rows, "machine_before": info_before, "machine": machine_info(str(dev))}
    if json_path is not None:
        atomic_write_json(json_path, res)
    return res


def format_epoch_bench(res: dict[str, Any]) -> str:
    mb, ma = res["machine_before"], res["machine"]
    lines = [f"vit bench --epoch on {res['device']}: {res['model']}, {res['method']}, batch {res['batch_size']}, "
             f"{res['data']}; {res['rounds']} interleaved rounds after one warm-up round; median [min, max] s/epoch",
             f"reference = {res['reference_loop']}",
             f"ours = {res['ours']}",
             f"machine: {ma.get('cpus')} CPUs {ma.get('cpu')}, torch {ma.get('torch')}; load average before "
             f"{mb.get('load_avg')}, after {ma.get('load_avg')}",
             f"{'impl':<38}{'threads':>8} {'s/epoch':>9} {'[min, max]':>18} {'train':>7} {'valid':>7} "
             f"{'reference/ours':>15} {'per round':>16}"]
    for r in res["rows"]:
        ratio = ""
        if "ratio_reference_over_ours" in r:
            spread = f"[{r['ratio_per_round_min']:.2f}, {r['ratio_per_round_max']:.2f}]"
            ratio = f"{r['ratio_reference_over_ours']:14.2f}x {spread:>16}"
        lines.append(f"{r['impl']:<38}{r['threads']:>8} {r['epoch_s']:9.2f} "
                     f"{'[' + format(r['epoch_s_min'], '.2f') + ', ' + format(r['epoch_s_max'], '.2f') + ']':>18} "
                     f"{r['train_s']:7.2f} {r['valid_s']:7.2f} " + ratio)
    return "\n".join(lines)
