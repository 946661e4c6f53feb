"""Training of one run: CFF (two-/one-forward), BP+CE, FF and Improved-FFCL baselines.

Python API (used by the studies)::

    from vit.train import TrainConfig, QUICK, train_run
    res = train_run(QUICK.replace(seed=3, loss_mode="subtract"), Path("results/vit/run3"))
    res["test_acc"], res["per_layer"][0]["car"]

:class:`TrainConfig` is a frozen dataclass; ``QUICK`` is the CPU quick preset
(ViT[64 4 4], patch 7 on a 3000-image Fashion-MNIST pool = 2700 train + 300 val, 8 epochs, head lr 5e-3);
``FULL_CIFAR10`` is the CFF protocol (ViT[128 4 5], patch 4, 600 + 50 epochs).

Methods (``TrainConfig.method``)
--------------------------------
``cff2``  CFF two-forward (CFF Alg. 1): two augmented views per sample; for each layer the two
          views go through the layer as ONE forward of 2B rows (the layers act per sample, so
          this is the same math as two forwards), the SupCon margin loss of
          :mod:`vit.losses` on the token mean, one backward, one AdamW step; the layer's output
          is detached and fed to the next layer.
``cff1``  CFF one-forward: one view per step (positives are the other same-label samples).
``bp``    BP+CE: the same encoder (patch embedding included) + head trained end to end.
``ff``    Forward-Forward on the ViT with a label token: a fixed random Gaussian embedding per
          class (rows distinct with probability 1, unlike a single set element) appended as an
          extra token after the position embedding; goodness ``G = mean(pool(f)²)``; loss
          ``softplus(θ - G_pos) + softplus(G_neg - θ)`` with a uniformly drawn wrong label;
          the next layer gets ``f/‖f‖`` (per token), detached; prediction = argmax over classes
          of the goodness summed over layers (C forwards).
``ffcl``  Improved FFCL: two MLPs in-64-64-classes; per hidden layer the cosine-embedding loss
          ``1 - cos(h_A, h_B)`` between corresponding layers (both models updated, inputs
          detached); BCE-with-logits on one-hot targets at the output; Adam lr 1e-4.  Test
          accuracy is model A's.

Protocol
--------
* Per-layer AdamW (lr, wd, betas (0.9, 0.999)), constant LR; margins ``margin_schedule(m0,
  m_last, L)``; τ.
* Stage-1 model selection on the validation split: CFF keeps the epoch with the lowest
  last-layer validation loss (views: clean image and one fixed-seed augmented view); BP the
  lowest validation cross-entropy; FF the lowest last-layer validation FF loss; FFCL the highest
  validation accuracy.
* Stage 2 (CFF): frozen encoder, LayerNorm + Linear head on the token mean of the last layer,
  AdamW ``head_lr``, cross-entropy, ``head_epochs`` epochs on features computed once from the
  un-augmented training images (precomputing is the speed choice: the encoder is frozen); the
  head epoch with the best validation accuracy is kept.
* Per-epoch diagnostics, accumulated on the device and read once per epoch: per-layer training
  loss, CAR (``SupConStats.clamp_rate``), gradient norm of the layer's parameters, mean
  positive/negative cosine similarity; validation loss and CAR per layer; a nearest-class-mean
  accuracy (class means of the last layer's pooled training outputs of that epoch) on
  validation and on the first ``PER_EPOCH_TEST_N`` test images as a cheap per-epoch accuracy
  (never used for selection; the final ``test_acc`` uses the whole test set and the head); the Fisher criterion per layer on
  validation features with ``fisher=True``.  BP/FF/FFCL log the same SupCon statistics of their
  pooled layer outputs (computed without gradient) so CAR is comparable across methods.
* Seeds: ``seed`` derives ``seed_init``, ``seed_order``, ``seed_aug`` (SHA-256 of seed and tag)
  and is ``seed_split`` itself (the reference seeds its split by the trial number); any of them
  can be fixed to remove that source of variance.  Each epoch draws its order and augmentation
  from generators seeded by (source seed, epoch), so a resumed run repeats the same stream.

Files (with ``out_dir``): ``log.jsonl`` (one line per epoch), ``ckpt.pt`` (model, optimisers,
history, best state; written atomically after every epoch), ``result.json`` (atomic; a run
whose ``result.json`` has the same config is returned as is).  A non-finite loss stops the run
with :class:`NonFiniteLoss` naming layer, epoch and step; the last good checkpoint stays.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from cffdyn.io import Progress, append_jsonl, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from vit.augment import AUGMENTS, augment
from vit.data import DATASETS, Dataset, load_dataset, normalize
from vit.diagnostics import fisher_criterion, grad_norm, topk_accuracy
from vit.losses import LOSS_MODES, check_margin, margin_schedule, supcon_loss
from vit.models import MODELS, FFCLNet, Head, build_encoder, pool

__all__ = ["TrainConfig", "QUICK", "QUICK_DIGITS", "FULL_CIFAR10", "METHODS", "NonFiniteLoss",
           "RunInterrupted", "train_run", "derive_seed", "resolve_device", "DeviceData"]

METHODS: tuple[str, ...] = ("cff2", "cff1", "bp", "ff", "ffcl")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
FFCL_LR = 1e-4
FFCL_HIDDEN = (64, 64)
N_STATS = 5  # loss, car, grad_norm, pos_sim, neg_sim
PER_EPOCH_TEST_N = 2048  # CFF per-epoch NCM test accuracy uses the first 2048 test images (cost)


@dataclass(frozen=True)
class TrainConfig:
    """One training run.  Hyper-parameter defaults are the reference's (lr 0.004, wd 0.01, τ 0.15,
    margins 0.4 -> 0.1, batch 512, head lr 5e-4); model/data/epoch defaults are small (CPU).
    ``QUICK`` (below) is the CPU preset the studies and the CLI start from."""

    dataset: str = "fashion_mnist"      # one of vit.data.DATASETS
    data_root: str | None = None        # directory with the dataset files (None: dataset default)
    subset: int | None = 3000           # training pool size before the 90/10 train/val split (None: all)
    image_size: int | None = None       # digits only: 8 (native) or 16
    model: str = "vit"                  # 'vit' | 'mlp' (ignored by ffcl)
    embed_dim: int = 64
    heads: int = 4
    layers: int = 4
    patch: int = 7
    method: str = "cff2"                # 'cff2' | 'cff1' | 'bp' | 'ff' | 'ffcl'
    loss_mode: str = "clamp"            # 'clamp' | 'subtract' | 'none'
    m0: float = 0.4                     # margin of layer 0
    m_last: float = 0.1                 # margin of the last layer
    tau: float = 0.15
    epochs: int = 4                     # stage-1 epochs (all epochs for bp/ff/ffcl)
    head_epochs: int = 50               # stage-2 epochs (CFF only; cheap: features are precomputed)
    batch_size: int = 512
    lr: float = 0.004
    wd: float = 0.01
    head_lr: float = 5e-4              # reference value; QUICK uses 5e-3
    ff_threshold: float = 1.0           # FF goodness threshold θ
    seed: int = 0
    seed_init: int | None = None        # None: derived from seed
    seed_split: int | None = None       # None: = seed
    seed_order: int | None = None
    seed_aug: int | None = None
    augment: str = "crop_flip"          # 'crop_flip' | 'none' | 'randaug'
    device: str = "auto"                # 'auto' | 'cpu' | 'cuda'
    amp: bool = True                    # bf16 autocast (GPU only; ignored on CPU)
    compile: bool = False               # torch.compile each layer (GPU)
    fisher: bool = False                # Fisher criterion per layer and epoch (validation)
    topk: int = 1                       # also report top-k accuracy for this k

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"TrainConfig: {msg}")
        if self.dataset not in DATASETS:
            bad(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        if self.model not in MODELS:
            bad(f"unknown model {self.model!r}; choose from {', '.join(MODELS)}")
        if self.method not in METHODS:
            bad(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.loss_mode not in LOSS_MODES:
            bad(f"unknown loss_mode {self.loss_mode!r}; choose from {', '.join(LOSS_MODES)}")
        if self.augment not in AUGMENTS:
            bad(f"unknown augment {self.augment!r}; choose from {', '.join(AUGMENTS)}")
        if self.device not in DEVICES:
            bad(f"unknown device {self.device!r}; choose from {', '.join(DEVICES)}")
        for name in ("m0", "m_last"):
            try:
                check_margin(getattr(self, name))
            except ValueError as exc:
                bad(f"{name}: {exc}")
        for name in ("embed_dim", "heads", "layers", "patch", "batch_size", "topk"):
            if int(getattr(self, name)) < 1:
                bad(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("epochs", "head_epochs"):
            if int(getattr(self, name)) < 0:
                bad(f"{name}={getattr(self, name)} must be >= 0")
        if self.epochs < 1:
            bad("epochs must be >= 1")
        if self.batch_size < 2:
            bad("batch_size must be >= 2 (the contrastive loss needs pairs)")
        if self.embed_dim % self.heads:
            bad(f"embed_dim={self.embed_dim} is not divisible by heads={self.heads}")
        for name in ("tau", "lr", "head_lr"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v <= 0:
                bad(f"{name}={v} must be finite and > 0")
        if not math.isfinite(self.wd) or self.wd < 0:
            bad(f"wd={self.wd} must be finite and >= 0")
        if self.subset is not None and self.subset < 20:
            bad(f"subset={self.subset} is too small (>= 20 images)")
        if self.image_size is not None and self.dataset != "digits":
            bad("image_size is only supported for the digits dataset")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {sorted(unknown)}")
        return cls(**d)

    @property
    def n_layers(self) -> int:
        return len(FFCL_HIDDEN) + 1 if self.method == "ffcl" else self.layers

    def margins(self) -> list[float]:
        return margin_schedule(self.m0, self.m_last, self.n_layers)

    def resolved_seeds(self) -> dict[str, int]:
        """The four seeds actually used (explicit ones, else derived from ``seed``)."""
        return {
            "init": self.seed_init if self.seed_init is not None else derive_seed(self.seed, "init"),
            "split": self.seed_split if self.seed_split is not None else int(self.seed),
            "order": self.seed_order if self.seed_order is not None else derive_seed(self.seed, "order"),
            "aug": self.seed_aug if self.seed_aug is not None else derive_seed(self.seed, "aug"),
        }


#: CPU quick preset: ViT[64 4 4], patch 7 (16 tokens) on 2700 + 300 Fashion-MNIST images, 8 epochs;
#: head_lr 5e-3 (10x the reference) because a 2700-image head sees only 6 steps per epoch.
QUICK = TrainConfig(epochs=8, head_lr=5e-3)
#: the same on sklearn digits (8x8, patch 2 -> 16 tokens), whole pool (1438 images).
QUICK_DIGITS = QUICK.replace(dataset="digits", subset=None, patch=2)
#: CFF protocol on CIFAR-10 (needs --data-root and a GPU): ViT[128 4 5], patch 4, 600 + 50 epochs.
FULL_CIFAR10 = TrainConfig(dataset="cifar10", subset=None, embed_dim=128, heads=4, layers=5, patch=4,
                           epochs=600, head_epochs=50)


class NonFiniteLoss(RuntimeError):
    """A layer's loss became NaN/inf; the message names layer, epoch and step."""


class RunInterrupted(RuntimeError):
    """Raised by ``train_run(stop_after_epoch=k)`` after epoch k is checkpointed (simulated kill)."""


def derive_seed(seed: int, tag: str) -> int:
    """Deterministic 63-bit seed from (seed, tag), stable across processes and platforms."""
    h = hashlib.sha256(f"cffdyn:{int(seed)}:{tag}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but no CUDA device is available")
    return torch.device(name)


def _gen(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed) % (2 ** 63))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DeviceData:
    """A :class:`Dataset` as uint8 tensors on the device + the batch pipeline."""

    def __init__(self, ds: Dataset, device: torch.device, augment_kind: str) -> None:
        self.ds = ds
        self.device = device
        self.kind = augment_kind
        self.x = {s: getattr(ds, f"x_{s}").to(device) for s in ("train", "val", "test")}
        self.y = {s: getattr(ds, f"y_{s}").to(device) for s in ("train", "val", "test")}

    def clean(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.ds.mean, self.ds.std)

    def views(self, x: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
        """``n`` independently augmented, normalised views, view-major (n·B, C, H, W)."""
        x01 = x.float() / 255.0
        v = torch.cat([augment(x01, gen, self.kind) for _ in range(n)]) if n > 1 else augment(x01, gen, self.kind)
        return normalize(v * 255.0, self.ds.mean, self.ds.std)

    def batches(self, split: str, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        xs, ys = self.x[split], self.y[split]
        return [(xs[i:i + batch_size], ys[i:i + batch_size]) for i in range(0, xs.shape[0], batch_size)]

    def epoch_order(self, gen: torch.Generator, batch_size: int) -> list[torch.Tensor]:
        perm = torch.randperm(self.x["train"].shape[0], generator=gen, device=self.device)
        return [b for b in perm.split(batch_size) if b.shape[0] >= 2]


def _autocast(cfg: TrainConfig, device: torch.device):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=bool(cfg.amp and device.type == "cuda"))


def _probe(feat: torch.Tensor, y: torch.Tensor, margin: float, cfg: TrainConfig) -> tuple[torch.Tensor, Any]:
    return supcon_loss(feat.float(), y, margin=margin, temperature=cfg.tau, mode=cfg.loss_mode,
                       check_finite=False, diagnostics=True)


def _mark_bad(bad: torch.Tensor, layer: int, loss: torch.Tensor, step: int) -> None:
    """Record the first step at which layer's loss is non-finite (on the device, no sync)."""
    hit = (~torch.isfinite(loss.detach())) & (bad[layer] < 0)
    bad[layer] = torch.where(hit, torch.full_like(bad[layer], step), bad[layer])


# ============================================================================ methods
class _Method:
    """Shared state of every method: models, optimisers, selection direction."""

    minimize = True
    modules: dict[str, nn.Module]
    optimizers: list[torch.optim.Optimizer]

    def __init__(self, cfg: TrainConfig, data: DeviceData, seeds: dict[str, int]) -> None:
        self.cfg, self.data, self.seeds, self.device = cfg, data, seeds, data.device
        self.margins = cfg.margins()
        self.num_classes = data.ds.num_classes

    # ---- checkpoint plumbing
    def state(self) -> dict[str, Any]:
        return {"modules": {k: m.state_dict() for k, m in self.modules.items()},
                "optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state(self, st: dict[str, Any]) -> None:
        for k, m in self.modules.items():
            m.load_state_dict(st["modules"][k])
        for o, s in zip(self.optimizers, st["optimizers"]):
            o.load_state_dict(s)

    def model_state(self) -> dict[str, Any]:
        return {k: {n: t.detach().clone() for n, t in m.state_dict().items()} for k, m in self.modules.items()}

    def load_model_state(self, st: dict[str, Any]) -> None:
        for k, m in self.modules.items():
            m.load_state_dict(st[k])

    def _epoch_gens(self, epoch: int) -> tuple[torch.Generator, torch.Generator]:
        return (_gen(self.device, derive_seed(self.seeds["order"], f"epoch{epoch}")),
                _gen(self.device, derive_seed(self.seeds["aug"], f"epoch{epoch}")))

    def _layer_records(self, acc: torch.Tensor, n_steps: int) -> list[dict[str, Any]]:
        vals = (acc / max(n_steps, 1)).double().cpu().tolist()
        return [{"layer": l, "margin": self.margins[l], "loss": v[0], "car": v[1], "grad_norm": v[2],
                 "pos_sim": v[3], "neg_sim": v[4]} for l, v in enumerate(vals)]

    def _check_bad(self, bad: torch.Tensor, epoch: int) -> None:
        b = bad.cpu().tolist()
        for l, s in enumerate(b):
            if s >= 0:
                raise NonFiniteLoss(f"non-finite loss at layer {l}, epoch {epoch}, step {s} "
                                    f"(method {self.cfg.method}); the last good checkpoint is kept")


class _CFF(_Method):
    """CFF (two-forward or one-forward) + stage-2 head."""

    def __init__(self, cfg: TrainConfig, data: DeviceData, seeds: dict[str, int]) -> None:
        super().__init__(cfg, data, seeds)
        torch.manual_seed(seeds["init"])
        self.encoder = build_encoder(cfg.model, data.ds.image_shape, embed_dim=cfg.embed_dim, heads=cfg.heads,
                                     layers=cfg.layers, patch=cfg.patch).to(self.device)
        self.modules = {"encoder": self.encoder}
        self.optimizers = [torch.optim.AdamW(l.parameters(), lr=cfg.lr, weight_decay=cfg.wd, betas=(0.9, 0.999))
                           for l in self.encoder.layers]
        self.fwd = [torch.compile(l) if cfg.compile else l for l in self.encoder.layers]
        self.n_views = 2 if cfg.method == "cff2" else 1

    def layer_step(self, l: int, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One local step of layer ``l``: forward, loss, backward, AdamW.  Returns
        (detached output, stats row (5,), loss)."""
        cfg = self.cfg
        with _autocast(cfg, self.device):
            out = self.fwd[l](h)
        loss, st = supcon_loss(pool(out).float(), y, margin=self.margins[l], temperature=cfg.tau,
                               mode=cfg.loss_mode, check_finite=False, diagnostics=True)
        opt = self.optimizers[l]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = grad_norm(self.encoder.layers[l].parameters()).to(loss.device)
        opt.step()
        row = torch.stack([loss.detach(), st.clamp_rate, gn, st.mean_pos_sim, st.mean_neg_sim]).float()
        return out.detach(), row, loss

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        g_order, g_aug = self._epoch_gens(epoch)
        L = len(self.encoder.layers)
        acc = torch.zeros(L, N_STATS, device=self.device)
        bad = torch.full((L,), -1, dtype=torch.long, device=self.device)
        e = self.encoder.embed_dim
        csum = torch.zeros(self.num_classes, e, device=self.device)
        ccnt = torch.zeros(self.num_classes, device=self.device)
        self.encoder.train()
        batches = self.data.epoch_order(g_order, self.cfg.batch_size)
        for step, idx in enumerate(batches):
            y = self.data.y["train"][idx]
            h = self.data.views(self.data.x["train"][idx], g_aug, self.n_views)
            for l in range(L):
                h, row, loss = self.layer_step(l, h, y)
                acc[l] += row
                _mark_bad(bad, l, loss, step)
            yy = y.repeat(self.n_views)
            csum.index_add_(0, yy, pool(h).float())
            ccnt.index_add_(0, yy, torch.ones_like(yy, dtype=torch.float32))
        self._check_bad(bad, epoch)
        self.class_means = csum / ccnt.clamp(min=1)[:, None]
        return {"layers": self._layer_records(acc, len(batches))}

    @torch.no_grad()
    def _layer_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        h = x
        with _autocast(self.cfg, self.device):
            for l in range(len(self.encoder.layers)):
                h = self.fwd[l](h)
                outs.append(pool(h).float())
        return outs

    @torch.no_grad()
    def pooled(self, split: str) -> list[torch.Tensor]:
        """Per-layer pooled features of the clean images of ``split`` (list of (N, E))."""
        self.encoder.eval()
        parts = [self._layer_features(self.data.clean(xb)) for xb, _ in self.data.batches(split, 2 * self.cfg.batch_size)]
        return [torch.cat([p[l] for p in parts]) for l in range(len(self.encoder.layers))]

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict[str, Any]:
        """Validation loss/CAR per layer (views: clean + fixed-seed augmented), NCM accuracy."""
        self.encoder.eval()
        g = _gen(self.device, derive_seed(self.seeds["aug"], "val"))
        L = len(self.encoder.layers)
        acc = torch.zeros(L, 2, device=self.device)
        n = 0
        clean_last = []
        for xb, yb in self.data.batches("val", self.cfg.batch_size):
            if xb.shape[0] < 2:
                continue
            x = torch.cat([self.data.clean(xb), self.data.views(xb, g, 1)])
            feats = self._layer_features(x)
            for l, f in enumerate(feats):
                loss, st = _probe(f, yb, self.margins[l], self.cfg)
                acc[l] += torch.stack([loss, st.clamp_rate]).float()
            clean_last.append(feats[-1][: xb.shape[0]])
            n += 1
        vals = (acc / max(n, 1)).cpu().tolist()
        out: dict[str, Any] = {"val_loss": [v[0] for v in vals], "val_car": [v[1] for v in vals]}
        out["val_acc"] = self._ncm(torch.cat(clean_last), self.data.y["val"][: sum(c.shape[0] for c in clean_last)])
        n_t = min(PER_EPOCH_TEST_N, self.data.x["test"].shape[0])
        test_last = self._layer_features(self.data.clean(self.data.x["test"][:n_t]))[-1]
        out["test_acc"] = self._ncm(test_last, self.data.y["test"][:n_t])
        out["test_n"] = n_t
        if self.cfg.fisher:
            yv = self.data.y["val"]
            out["fisher"] = [fisher_criterion(f, yv, self.num_classes) for f in self.pooled("val")]
        out["metric"] = out["val_loss"][-1]
        return out

    def _ncm(self, feats: torch.Tensor, y: torch.Tensor) -> float:
        f = F.normalize(feats, dim=1)
        mu = F.normalize(self.class_means, dim=1)
        return float(((f @ mu.T).argmax(1) == y).float().mean())

    def finish(self) -> dict[str, Any]:
        """Stage 2: LayerNorm + Linear head on frozen last-layer token means."""
        cfg = self.cfg
        ftr, fva, fte = (self.pooled(s)[-1] for s in ("train", "val", "test"))
        ytr, yva, yte = self.data.y["train"], self.data.y["val"], self.data.y["test"]
        torch.manual_seed(derive_seed(self.seeds["init"], "head"))
        head = Head(ftr.shape[1], self.num_classes).to(self.device)
        opt = torch.optim.AdamW(head.parameters(), lr=cfg.head_lr, weight_decay=cfg.wd)
        g = _gen(self.device, derive_seed(self.seeds["order"], "head"))
        best = (-1.0, -1, {k: v.clone() for k, v in head.state_dict().items()})
        curve = []
        for ep in range(cfg.head_epochs):
            perm = torch.randperm(ftr.shape[0], generator=g, device=self.device)
            for idx in perm.split(cfg.batch_size):
                loss = F.cross_entropy(head(ftr[idx]), ytr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                va = float(topk_accuracy(head(fva), yva, 1))
            curve.append(va)
            if va > best[0]:
                best = (va, ep, {k: v.clone() for k, v in head.state_dict().items()})
        head.load_state_dict(best[2])
        with torch.no_grad():
            sv, st = head(fva), head(fte)
            res = {"val_acc": float(topk_accuracy(sv, yva, 1)), "test_acc": float(topk_accuracy(st, yte, 1)),
                   "val_topk_acc": float(topk_accuracy(sv, yva, cfg.topk)),
                   "test_topk_acc": float(topk_accuracy(st, yte, cfg.topk)),
                   "head": {"best_epoch": best[1], "val_acc_curve": curve}}
        if cfg.fisher:
            res["fisher_val"] = [fisher_criterion(f, yva, self.num_classes) for f in self.pooled("val")]
        return res


class _BP(_Method):
    """BP+CE end to end: encoder (patch embedding included) + LayerNorm/Linear head."""

    def __init__(self, cfg: TrainConfig, data: DeviceData, seeds: dict[str, int]) -> None:
        super().__init__(cfg, data, seeds)
        torch.manual_seed(seeds["init"])
        self.encoder = build_encoder(cfg.model, data.ds.image_shape, embed_dim=cfg.embed_dim, heads=cfg.heads,
                                     layers=cfg.layers, patch=cfg.patch).to(self.device)
        self.head = Head(cfg.embed_dim, self.num_classes).to(self.device)
        self.modules = {"encoder": self.encoder, "head": self.head}
        self.optimizers = [torch.optim.AdamW(list(self.encoder.parameters()) + list(self.head.parameters()),
                                             lr=cfg.lr, weight_decay=cfg.wd, betas=(0.9, 0.999))]
        self.net = torch.compile(self._net) if cfg.compile else self._net

    def _net(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outs = []
        h = x
        for layer in self.encoder.layers:
            h = layer(h)
            outs.append(pool(h))
        return self.head(outs[-1]), outs

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        g_order, g_aug = self._epoch_gens(epoch)
        L = len(self.encoder.layers)
        acc = torch.zeros(L, N_STATS, device=self.device)
        bad = torch.full((L,), -1, dtype=torch.long, device=self.device)
        self.encoder.train()
        batches = self.data.epoch_order(g_order, self.cfg.batch_size)
        opt = self.optimizers[0]
        ce_sum = torch.zeros((), device=self.device)
        for step, idx in enumerate(batches):
            y = self.data.y["train"][idx]
            x = self.data.views(self.data.x["train"][idx], g_aug, 1)
            with _autocast(self.cfg, self.device):
                logits, outs = self.net(x)
            loss = F.cross_entropy(logits.float(), y)
            ce_sum += loss.detach()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                for l, f in enumerate(outs):
                    pl, st = _probe(f.detach(), y, self.margins[l], self.cfg)
                    gn = grad_norm(self.encoder.layers[l].parameters()).to(loss.device)
                    acc[l] += torch.stack([pl, st.clamp_rate, gn, st.mean_pos_sim, st.mean_neg_sim]).float()
            _mark_bad(bad, L - 1, loss, step)
            opt.step()
        self._check_bad(bad, epoch)
        # per-layer "loss" is the SupCon loss of the pooled outputs (a probe; BP trains on CE)
        return {"layers": self._layer_records(acc, len(batches)), "train_ce": float(ce_sum / max(len(batches), 1))}

    @torch.no_grad()
    def _scores(self, split: str) -> torch.Tensor:
        self.encoder.eval()
        with _autocast(self.cfg, self.device):
            return torch.cat([self.net(self.data.clean(xb))[0].float()
                              for xb, _ in self.data.batches(split, 2 * self.cfg.batch_size)])

    def evaluate(self, epoch: int) -> dict[str, Any]:
        sv, st = self._scores("val"), self._scores("test")
        yv, yt = self.data.y["val"], self.data.y["test"]
        return {"val_ce": float(F.cross_entropy(sv, yv)), "val_acc": float(topk_accuracy(sv, yv)),
                "test_acc": float(topk_accuracy(st, yt)), "metric": float(F.cross_entropy(sv, yv))}

    def finish(self) -> dict[str, Any]:
        sv, st = self._scores("val"), self._scores("test")
        yv, yt, k = self.data.y["val"], self.data.y["test"], self.cfg.topk
        return {"val_acc": float(topk_accuracy(sv, yv)), "test_acc": float(topk_accuracy(st, yt)),
                "val_topk_acc": float(topk_accuracy(sv, yv, k)), "test_topk_acc": float(topk_accuracy(st, yt, k))}


class _FF(_Method):
    """Forward-Forward on the ViT with a fixed random label token (see module doc)."""

    def __init__(self, cfg: TrainConfig, data: DeviceData, seeds: dict[str, int]) -> None:
        super().__init__(cfg, data, seeds)
        if cfg.model != "vit":
            raise ValueError("method 'ff' is implemented for model 'vit' (label token)")
        torch.manual_seed(seeds["init"])
        self.encoder = build_encoder("vit", data.ds.image_shape, embed_dim=cfg.embed_dim, heads=cfg.heads,
                                     layers=cfg.layers, patch=cfg.patch).to(self.device)
        g = torch.Generator().manual_seed(derive_seed(seeds["init"], "label_token"))
        self.label_emb = torch.randn(self.num_classes, cfg.embed_dim, generator=g).to(self.device)
        self.modules = {"encoder": self.encoder}
        self.optimizers = [torch.optim.AdamW(l.parameters(), lr=cfg.lr, weight_decay=cfg.wd, betas=(0.9, 0.999))
                           for l in self.encoder.layers]

    def _layer(self, l: int, h: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        if l == 0:
            return self.encoder.layers[0](h, self.label_emb[lab][:, None, :])
        return self.encoder.layers[l](h)

    @staticmethod
    def goodness(out: torch.Tensor) -> torch.Tensor:
        return pool(out).float().pow(2).mean(dim=1)

    def _ff_loss(self, out: torch.Tensor, b: int) -> torch.Tensor:
        g = self.goodness(out)
        th = self.cfg.ff_threshold
        return F.softplus(th - g[:b]).mean() + F.softplus(g[b:] - th).mean()

    def _wrong(self, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        off = torch.randint(1, self.num_classes, y.shape, generator=gen, device=y.device)
        return (y + off) % self.num_classes

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        g_order, g_aug = self._epoch_gens(epoch)
        L = len(self.encoder.layers)
        acc = torch.zeros(L, N_STATS, device=self.device)
        bad = torch.full((L,), -1, dtype=torch.long, device=self.device)
        self.encoder.train()
        batches = self.data.epoch_order(g_order, self.cfg.batch_size)
        for step, idx in enumerate(batches):
            y = self.data.y["train"][idx]
            b = y.shape[0]
            x = self.data.views(self.data.x["train"][idx], g_aug, 1)
            h = torch.cat([x, x])
            lab = torch.cat([y, self._wrong(y, g_aug)])
            for l in range(L):
                with _autocast(self.cfg, self.device):
                    out = self._layer(l, h, lab)
                loss = self._ff_loss(out, b)
                opt = self.optimizers[l]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                gn = grad_norm(self.encoder.layers[l].parameters()).to(loss.device)
                opt.step()
                with torch.no_grad():
                    _, st = _probe(pool(out[:b]).detach(), y, self.margins[l], self.cfg)
                    acc[l] += torch.stack([loss.detach(), st.clamp_rate, gn, st.mean_pos_sim, st.mean_neg_sim]).float()
                _mark_bad(bad, l, loss, step)
                h = F.normalize(out.detach().float(), dim=-1)
        self._check_bad(bad, epoch)
        return {"layers": self._layer_records(acc, len(batches))}

    @torch.no_grad()
    def _scores(self, split: str) -> torch.Tensor:
        """Goodness summed over layers for every candidate label: (N, C)."""
        self.encoder.eval()
        out = []
        for xb, _ in self.data.batches(split, self.cfg.batch_size):
            x = self.data.clean(xb)
            cols = []
            for c in range(self.num_classes):
                lab = torch.full((x.shape[0],), c, dtype=torch.long, device=self.device)
                h, tot = x, torch.zeros(x.shape[0], device=self.device)
                for l in range(len(self.encoder.layers)):
                    with _autocast(self.cfg, self.device):
                        o = self._layer(l, h, lab)
                    tot = tot + self.goodness(o)
                    h = F.normalize(o.float(), dim=-1)
                cols.append(tot)
            out.append(torch.stack(cols, dim=1))
        return torch.cat(out)

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict[str, Any]:
        self.encoder.eval()
        g = _gen(self.device, derive_seed(self.seeds["aug"], "val"))
        tot, n = torch.zeros((), device=self.device), 0
        for xb, yb in self.data.batches("val", self.cfg.batch_size):
            x = self.data.clean(xb)
            h = torch.cat([x, x])
            lab = torch.cat([yb, self._wrong(yb, g)])
            for l in range(len(self.encoder.layers)):
                with _autocast(self.cfg, self.device):
                    o = self._layer(l, h, lab)
                h = F.normalize(o.float(), dim=-1)
            tot += self._ff_loss(o, xb.shape[0])
            n += 1
        sv = self._scores("val")
        return {"val_ff_loss": float(tot / max(n, 1)), "val_acc": float(topk_accuracy(sv, self.data.y["val"])),
                "metric": float(tot / max(n, 1))}

    def finish(self) -> dict[str, Any]:
        sv, st = self._scores("val"), self._scores("test")
        yv, yt, k = self.data.y["val"], self.data.y["test"], self.cfg.topk
        return {"val_acc": float(topk_accuracy(sv, yv)), "test_acc": float(topk_accuracy(st, yt)),
                "val_topk_acc": float(topk_accuracy(sv, yv, k)), "test_topk_acc": float(topk_accuracy(st, yt, k))}


class _FFCL(_Method):
    """Improved FFCL: two MLPs, per-layer cosine-embedding loss, BCE at the output, Adam 1e-4."""

    minimize = False

    def __init__(self, cfg: TrainConfig, data: DeviceData, seeds: dict[str, int]) -> None:
        super().__init__(cfg, data, seeds)
        c, h, w = data.ds.image_shape
        torch.manual_seed(seeds["init"])
        self.a = FFCLNet(c * h * w, self.num_classes, FFCL_HIDDEN).to(self.device)
        torch.manual_seed(derive_seed(seeds["init"], "ffcl_b"))
        self.b = FFCLNet(c * h * w, self.num_classes, FFCL_HIDDEN).to(self.device)
        self.modules = {"a": self.a, "b": self.b}
        self.optimizers = [torch.optim.Adam(self.a.parameters(), lr=FFCL_LR),
                           torch.optim.Adam(self.b.parameters(), lr=FFCL_LR)]

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        g_order, g_aug = self._epoch_gens(epoch)
        L = len(self.a.layers)
        acc = torch.zeros(L, N_STATS, device=self.device)
        bad = torch.full((L,), -1, dtype=torch.long, device=self.device)
        batches = self.data.epoch_order(g_order, self.cfg.batch_size)
        for step, idx in enumerate(batches):
            y = self.data.y["train"][idx]
            x = self.data.views(self.data.x["train"][idx], g_aug, 1).flatten(1)
            ha, hb = x, x
            losses, outs = [], []
            for l in range(L):
                oa, ob = self.a.layers[l](ha), self.b.layers[l](hb)
                if l < L - 1:
                    loss = (1.0 - F.cosine_similarity(oa, ob, dim=1, eps=1e-8)).mean()
                else:
                    t = F.one_hot(y, self.num_classes).float()
                    loss = (F.binary_cross_entropy_with_logits(oa, t) + F.binary_cross_entropy_with_logits(ob, t))
                losses.append(loss)
                outs.append(oa.detach())
                ha, hb = oa.detach(), ob.detach()
            for o in self.optimizers:
                o.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()   # graphs are disjoint per layer: local updates
            with torch.no_grad():
                for l in range(L):
                    params = list(self.a.layers[l].parameters()) + list(self.b.layers[l].parameters())
                    _, st = _probe(outs[l], y, self.margins[l], self.cfg)
                    acc[l] += torch.stack([losses[l].detach(), st.clamp_rate, grad_norm(params).to(x.device),
                                           st.mean_pos_sim, st.mean_neg_sim]).float()
                    _mark_bad(bad, l, losses[l], step)
            for o in self.optimizers:
                o.step()
        self._check_bad(bad, epoch)
        return {"layers": self._layer_records(acc, len(batches))}

    @torch.no_grad()
    def _scores(self, split: str, net: nn.Module) -> torch.Tensor:
        return torch.cat([net(self.data.clean(xb)) for xb, _ in self.data.batches(split, 2 * self.cfg.batch_size)])

    def evaluate(self, epoch: int) -> dict[str, Any]:
        va = float(topk_accuracy(self._scores("val", self.a), self.data.y["val"]))
        return {"val_acc": va, "test_acc": float(topk_accuracy(self._scores("test", self.a), self.data.y["test"])),
                "metric": va}

    def finish(self) -> dict[str, Any]:
        yv, yt, k = self.data.y["val"], self.data.y["test"], self.cfg.topk
        sv, st = self._scores("val", self.a), self._scores("test", self.a)
        return {"val_acc": float(topk_accuracy(sv, yv)), "test_acc": float(topk_accuracy(st, yt)),
                "val_topk_acc": float(topk_accuracy(sv, yv, k)), "test_topk_acc": float(topk_accuracy(st, yt, k)),
                "test_acc_model_b": float(topk_accuracy(self._scores("test", self.b), yt))}


_METHOD_CLASSES = {"cff2": _CFF, "cff1": _CFF, "bp": _BP, "ff": _FF, "ffcl": _FFCL}


# ============================================================================ the run
def _save_ckpt(path: Path, payload: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def _is_better(metric: float, best: float | None, minimize: bool) -> bool:
    if not math.isfinite(metric):
        return False
    if best is None:
        return True
    return metric < best if minimize else metric > best


def build_method(cfg: TrainConfig, data: DeviceData, seeds: dict[str, int] | None = None) -> _Method:
    """The method object of ``cfg`` (models + optimisers on ``data.device``); used by bench/batched code."""
    return _METHOD_CLASSES[cfg.method](cfg, data, seeds or cfg.resolved_seeds())



def finish_epoch(method: "_Method", epoch: int, rec: dict[str, Any], t0: float, t_train: float,
                 history: list, best: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate after a training epoch, merge the per-layer validation metrics into the epoch
    record, append it to ``history`` and update ``best``; returns ``(record, best)``.
    Shared by :func:`train_run` and the layer pipeline (``vit.pipeline``)."""
    ev = method.evaluate(epoch)
    t_eval = time.perf_counter() - t0 - t_train
    for k in ("val_loss", "val_car", "fisher"):
        if k in ev:
            for r, v in zip(rec["layers"], ev.pop(k)):
                r[k] = v
    rec = {"epoch": epoch, "time_s": t_train, "eval_time_s": t_eval, **rec, **ev}
    history.append(rec)
    if _is_better(ev["metric"], best["metric"], method.minimize):
        best = {"epoch": epoch, "metric": ev["metric"], "state": method.model_state()}
    return rec, best


def ckpt_payload(method: "_Method", cfg_dict: dict, epoch: int, history: list,
                 best: dict[str, Any]) -> dict[str, Any]:
    """The per-epoch checkpoint that :func:`train_run` resumes from (one format for all writers)."""
    payload = {"config": cfg_dict, "epoch": epoch, "state": method.state(), "history": history, "best": best}
    if hasattr(method, "class_means"):
        payload["class_means"] = method.class_means
    return payload

def train_run(cfg: TrainConfig, out_dir: str | Path | None = None, *, progress: bool = True,
              stop_after_epoch: int | None = None, dataset: Dataset | None = None) -> dict[str, Any]:
    """Train one run and return its JSON-able result (see module doc).

    Args:
        cfg: the run configuration.
        out_dir: where ``log.jsonl``, ``ckpt.pt``, ``result.json`` go (None: nothing written).
            An existing ``result.json`` with the same config is returned without training; a
            checkpoint with the same config is resumed.
        progress: progress lines on stderr.
        stop_after_epoch: raise :class:`RunInterrupted` right after this epoch is checkpointed
            (simulates a kill; for tests).
        dataset: an already loaded :class:`Dataset` (must match ``cfg``'s dataset/subset/split
            seed; lets studies load once).
    """
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    out = Path(out_dir) if out_dir is not None else None
    cfg_dict = cfg.to_dict()
    if out is not None:
        res_path = out / "result.json"
        if res_path.is_file():
            prev = read_json(res_path)
            if prev.get("config") == cfg_dict:
                return prev
            raise ValueError(f"{res_path} holds a run with a different config; use another out_dir")
    device = resolve_device(cfg.device)
    seeds = cfg.resolved_seeds()
    if dataset is None:
        dataset = load_dataset(cfg.dataset, cfg.data_root, subset=cfg.subset, seed=seeds["split"],
                               image_size=cfg.image_size)
    elif dataset.name != cfg.dataset:
        raise ValueError(f"dataset {dataset.name!r} passed for a config on {cfg.dataset!r}")
    data = DeviceData(dataset, device, cfg.augment)
    method = build_method(cfg, data, seeds)

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": -1, "metric": None, "state": method.model_state()}
    start = 0
    ckpt_path = out / "ckpt.pt" if out is not None else None
    if ckpt_path is not None and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ck.get("config") != cfg_dict:
            raise ValueError(f"{ckpt_path} belongs to a different config; use another out_dir")
        method.load_state(ck["state"])
        history, best, start = ck["history"], ck["best"], int(ck["epoch"]) + 1
        if hasattr(method, "encoder") and "class_means" in ck:
            method.class_means = ck["class_means"].to(device)
    if out is not None:  # the log mirrors the checkpointed history (a killed run may have torn it)
        atomic_write_text(out / "log.jsonl", "".join(json.dumps(h) + "\n" for h in history))

    prog = Progress(cfg.epochs, f"{cfg.method}/{cfg.loss_mode} {cfg.dataset} seed {cfg.seed}", enabled=progress)
    prog.update(start)
    for epoch in range(start, cfg.epochs):
        _sync(device)
        t0 = time.perf_counter()
        rec = method.train_epoch(epoch)
        _sync(device)
        t_train = time.perf_counter() - t0
        rec, best = finish_epoch(method, epoch, rec, t0, t_train, history, best)
        if ckpt_path is not None:
            _save_ckpt(ckpt_path, ckpt_payload(method, cfg_dict, epoch, history, best))
            append_jsonl(out / "log.jsonl", [rec])
        prog.update(epoch + 1, f"val {rec['metric']:.4f} acc {rec.get('val_acc', float('nan')):.3f}")
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch + 1 < cfg.epochs:
            raise RunInterrupted(f"stopped after epoch {epoch} (stop_after_epoch)")

    method.load_model_state(best["state"])
    sel = history[best["epoch"]] if best["epoch"] >= 0 else history[-1]
    if best["epoch"] < 0:  # every epoch non-selectable (non-finite metric): keep the last weights
        best["epoch"] = len(history) - 1
    t_fin = time.perf_counter()
    fin = method.finish()
    times = [h["time_s"] for h in history]
    result = {
        "config": cfg_dict,
        "seeds": seeds,
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "dataset": dataset.summary(),
        "val_acc": fin.pop("val_acc"),
        "test_acc": fin.pop("test_acc"),
        "topk": cfg.topk,
        "best_epoch": best["epoch"],
        "per_layer": sel["layers"],
        "epoch_time_s": sum(times) / len(times),
        "stage1_time_s": sum(times),
        "finish_time_s": time.perf_counter() - t_fin,
        **fin,
        "history": history,
        "torch": torch.__version__,
    }
    if out is not None:
        atomic_write_json(out / "result.json", result)
    return result
