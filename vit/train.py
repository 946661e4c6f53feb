"""Training: one seed-batched engine for CFF (two-/one-forward) and the BP+CE, FF and
Improved-FFCL baselines, run by one epoch loop.

Python API (used by the studies)::

    from vit.train import TrainConfig, QUICK, train_run, train_runs
    res = train_run(QUICK.replace(seed=3, loss_mode="subtract"), Path("results/vit/run3"))
    res["test_acc"], res["per_layer"][0]["car"]
    many = train_runs([QUICK.replace(seed=s) for s in range(7)], out_dirs, ckpt=path)  # S = 7 in one pass

:class:`TrainConfig` is a frozen dataclass; ``QUICK`` is the CPU quick preset
(ViT[64 4 4], patch 7 on a 3000-image Fashion-MNIST pool = 2700 train + 300 val, 8 epochs, head lr 5e-3);
``FULL_CIFAR10`` is the CFF protocol (ViT[128 4 5], patch 4, 600 + 50 epochs, ``protocol="reference"``).

The seed axis
-------------
CFF training always carries a leading seed dimension S: :func:`train_runs` trains S configs that
differ only in their seeds in one pass, their weights stacked (S, ...) in the one model
definition of :mod:`vit.models`; :func:`train_run` is S = 1 through the same code.  Each seed
keeps its own initialisation (its own generator), split (its own :class:`DeviceData`), batch
order and augmentation stream (per-seed, per-epoch generators), and its own loss; the S losses
are summed before one backward (the seeds share no parameter, so each gets its own gradient)
and one AdamW over the stacked parameters steps them (AdamW is elementwise: S independent
optimisers).  Hence S separate runs and one S-seed run give the same numbers
(``tests/test_vit_batched.py``: float64 to 1e-9, fp32 to a tolerance).

The step (per layer): forward of both views as one batch of 2B rows (the layers act per sample,
so this is the math of two forwards), the margin loss of :mod:`vit.losses` on the token mean
with its diagnostics (CAR, mean positive/negative similarity) and the per-seed gradient norm,
all kept on the device (no host sync inside an epoch; one read per epoch), backward, AdamW
(``fused=True`` on CUDA, ``foreach`` on CPU).  On CUDA with ``cuda_graph=True`` the whole
step (all layers) is captured once as a CUDA graph and replayed for every full batch; the last,
partial batch of an epoch (``n_train % batch_size`` samples) runs the same step function
eagerly.  On CPU there is no capture and the same step function runs.

Methods (``TrainConfig.method``)
--------------------------------
``cff2``  CFF two-forward (CFF Alg. 1): two augmented views per sample.
``cff1``  CFF one-forward: one view per step (positives are the other same-label samples).
``bp``    BP+CE: the same encoder (S = 1; patch embedding included) + head trained end to end.
``ff``    Forward-Forward on the ViT with a label token (a fixed random Gaussian embedding per
          class appended as an extra token after the position embedding); goodness
          ``G = mean(pool(f)²)``; loss ``softplus(θ - G_pos) + softplus(G_neg - θ)`` with a
          uniformly drawn wrong label; the next layer gets ``f/‖f‖`` (per token), detached;
          prediction = argmax over classes of the goodness summed over layers.
``ffcl``  Improved FFCL: two MLPs in-64-64-classes; cosine-embedding loss per hidden layer, BCE
          at the output; Adam lr 1e-4.  Test accuracy is model A's.

Protocols (``TrainConfig.protocol``)
------------------------------------
``reference`` reproduces the public ContrastiveFF code (HEAD) where this module controls it:
          fp32, cff1's loss averaged
          over all anchors, stage-1 selection on the best last-layer validation contrastive loss
          with two fresh augmented views of the validation split each epoch, and the stage-2 head
          trained on augmented view 0 through the frozen encoder keeping the best validation
          cross-entropy (validation also on augmented view 0, as the reference's loader does);
          BP+CE at lr 5e-4 with its selection on the validation cross-entropy of one augmented
          view and no per-step SupCon probes; FF with threshold 2, goodness over the image tokens
          (label token excluded), one mean over the 2B softplus terms, per-sample normalisation
          between layers, prediction from the last layer's goodness and selection on the summed
          validation loss of layers 1..L-1 (one augmented view).  ``result.json["departures"]``
          is empty (a precision other than fp32 is listed), except FF's label token: the reference sets one element of a patch (classes
          can collide); ours is a Gaussian embedding per class, named
          ``ff:label_token_gaussian_embedding``.  Augmentation (crop padding, RandAugment)
          belongs to :mod:`vit.augment`.
``cffdyn`` our earlier choices; ``result.json["departures"]`` names each (:func:`departures`).
Initialisation is a setting of its own (``init``): ``reference`` (the ContrastiveFF code's, the
default under both protocols) or ``small`` (:mod:`vit.models`; listed as two ``init:``
departures under either protocol).

Stage 2 (CFF): :func:`fit_heads`, a LayerNorm + Linear head per seed on the frozen last layer's
token mean under the protocol's head rule; :mod:`vit.probe` trains the raw-pixel probe through
the same function, so the two differ only in their input.

Per-epoch diagnostics, read once per epoch: per-layer training loss, CAR, gradient norm, mean
positive/negative similarity; validation loss and CAR per layer; a nearest-class-mean accuracy
on validation and on the first ``PER_EPOCH_TEST_N`` test images (never used for selection); the
Fisher criterion per layer with ``fisher=True``.

Precision (``precision``): ``fp32`` (the reference; TF32 matmuls off), ``tf32`` (CUDA TF32
matmuls), ``bf16`` (bf16 autocast; the loss in fp32).  Recorded in every ``result.json`` and part
of the config (hence of every config hash).  ``tf32`` on a CPU and ``bf16`` on a CPU without
native bf16 are refused before training.

Files (with ``out_dir``): ``log.jsonl`` (one line per epoch), ``ckpt.pt`` (tensors and plain
containers only, loaded with ``weights_only=True``; written atomically after every epoch),
``result.json`` (atomic; a run whose ``result.json`` has the same config is returned as is).
A non-finite loss stops the run with :class:`NonFiniteLoss` naming seed, layer, epoch and step.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import math
import pickle
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from cffdyn.errors import CorruptFileError
from cffdyn.io import Progress, append_jsonl, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from vit.augment import AUGMENTS, REFERENCE_PADDING, augment
from vit.data import DATASETS, Dataset, load_dataset, normalize
from vit.diagnostics import fisher_criterion, grad_norm, topk_accuracy
from vit.losses import LOSS_MODES, check_margin, margin_schedule, supcon_loss
from vit.models import INITS, MODELS, FFCLNet, Head, build_encoder, pool, seed_slice

__all__ = ["TrainConfig", "QUICK", "QUICK_DIGITS", "FULL_CIFAR10", "METHODS", "PRECISIONS", "PROTOCOLS",
           "NonFiniteLoss", "RunInterrupted", "train_run", "train_runs", "derive_seed", "resolve_device",
           "DeviceData", "departures", "check_precision", "load_checkpoint", "build_method"]

METHODS: tuple[str, ...] = ("cff2", "cff1", "bp", "ff", "ffcl")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16")
PROTOCOLS: tuple[str, ...] = ("reference", "cffdyn")
FFCL_LR = 1e-4
FFCL_HIDDEN = (64, 64)
REFERENCE_BP_LR = 5e-4   # main_BP.py trains end to end with lr2 = 5e-4
N_STATS = 5  # loss, car, grad_norm, pos_sim, neg_sim
PER_EPOCH_TEST_N = 2048  # CFF per-epoch NCM test accuracy uses the first 2048 test images (cost)
_SEED_FIELDS = ("seed", "seed_init", "seed_split", "seed_subset", "seed_order", "seed_aug")


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
    head_epochs: int = 50               # stage-2 epochs (CFF only)
    batch_size: int = 512
    lr: float = 0.004                   # CFF/FF layer lr; BP uses 5e-4 under protocol 'reference'
    wd: float = 0.01
    head_lr: float = 5e-4              # reference value; QUICK uses 5e-3
    ff_threshold: float = 2.0           # FF goodness threshold θ (the reference's)
    seed: int = 0
    seed_init: int | None = None        # None: derived from seed
    seed_split: int | None = None       # None: = seed
    seed_subset: int | None = None      # None: = the split seed (subset and split drawn together)
    seed_order: int | None = None
    seed_aug: int | None = None
    augment: str = "crop_flip"          # 'crop_flip' | 'none' | 'randaug'
    crop_pad: int | None = None         # crop padding (None: the reference's per dataset, else side // 8)
    device: str = "auto"                # 'auto' | 'cpu' | 'cuda'
    precision: str = "fp32"             # 'fp32' | 'tf32' | 'bf16'
    protocol: str = "cffdyn"            # 'reference' | 'cffdyn'
    init: str = "reference"             # 'reference' | 'small' (vit.models.INITS; 'small' is a departure)
    cuda_graph: bool = True             # capture the training step as a CUDA graph (CUDA only)
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
        if self.precision not in PRECISIONS:
            bad(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        if self.protocol not in PROTOCOLS:
            bad(f"unknown protocol {self.protocol!r}; choose from {', '.join(PROTOCOLS)}")
        if self.crop_pad is not None and int(self.crop_pad) < 0:
            bad(f"crop_pad={self.crop_pad} must be >= 0 (or none for the dataset's padding)")
        if self.init not in INITS:
            bad(f"unknown init {self.init!r}; choose from {', '.join(INITS)}")
        for name in ("m0", "m_last"):
            try:
                check_margin(getattr(self, name))
            except ValueError as exc:
                bad(f"{name}: {exc}")
        for name in ("embed_dim", "heads", "layers", "patch", "topk", "epochs"):
            if int(getattr(self, name)) < 1:
                bad(f"{name}={getattr(self, name)} must be >= 1")
        if int(self.head_epochs) < 0:
            bad(f"head_epochs={self.head_epochs} must be >= 0")
        if self.batch_size < 2:
            bad(f"batch_size={self.batch_size} must be >= 2 (the contrastive loss needs pairs)")
        for name in _SEED_FIELDS:
            v = getattr(self, name)
            if v is not None and int(v) < 0:
                bad(f"{name}={v} must be >= 0")
        if self.embed_dim % self.heads:
            bad(f"embed_dim={self.embed_dim} is not divisible by heads={self.heads}")
        for name in ("tau", "lr", "head_lr"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v <= 0:
                bad(f"{name}={v} must be finite and > 0")
        if not math.isfinite(self.wd) or self.wd < 0:
            bad(f"wd={self.wd} must be finite and >= 0")
        if not math.isfinite(self.ff_threshold):
            bad(f"ff_threshold={self.ff_threshold} must be finite")
        if self.reference and self.method == "ff" and self.ff_threshold != 2.0:
            bad(f"ff_threshold={self.ff_threshold}: protocol=reference uses the reference's threshold 2; "
                f"use --ff-threshold 2 or --protocol cffdyn")
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

    @property
    def reference(self) -> bool:
        return self.protocol == "reference"

    def margins(self) -> list[float]:
        return margin_schedule(self.m0, self.m_last, self.n_layers)

    def method_lr(self) -> float:
        """The learning rate the method trains with (BP under 'reference': 5e-4, the reference's)."""
        return REFERENCE_BP_LR if (self.method == "bp" and self.reference) else self.lr

    def resolved_seeds(self) -> dict[str, int]:
        """The seeds actually used (explicit ones, else derived from ``seed``)."""
        return {
            "init": self.seed_init if self.seed_init is not None else derive_seed(self.seed, "init"),
            "split": self.seed_split if self.seed_split is not None else int(self.seed),
            "subset": (self.seed_subset if self.seed_subset is not None
                       else self.seed_split if self.seed_split is not None else int(self.seed)),
            "order": self.seed_order if self.seed_order is not None else derive_seed(self.seed, "order"),
            "aug": self.seed_aug if self.seed_aug is not None else derive_seed(self.seed, "aug"),
        }


def data_key(cfg: TrainConfig) -> tuple:
    """What fixes a run's images and split: runs with equal keys can share one loaded dataset."""
    sd = cfg.resolved_seeds()
    return (cfg.dataset, cfg.data_root, cfg.subset, sd["split"], sd["subset"], cfg.image_size)


def load_run_dataset(cfg: TrainConfig) -> Dataset:
    """The run's dataset: its subset (``seed_subset``) and train/validation split (``seed_split``)."""
    sd = cfg.resolved_seeds()
    return load_dataset(cfg.dataset, cfg.data_root, subset=cfg.subset, seed=sd["split"], image_size=cfg.image_size,
                        subset_seed=sd["subset"])


def departures(cfg: TrainConfig) -> list[str]:
    """Names of this config's departures from the reference protocol (empty under 'reference'
    for everything this module controls; augmentation details belong to ``vit.augment``)."""
    init = (["init:pos_embedding_std_0.02", "init:attention_projections_linear_default"]
            if cfg.init == "small" and cfg.method != "ffcl" else [])
    ref_pad = REFERENCE_PADDING.get(cfg.dataset)
    if cfg.crop_pad is not None and ref_pad is not None and cfg.crop_pad != ref_pad and cfg.augment != "none":
        init.append(f"augment:crop_pad_{cfg.crop_pad}_not_{ref_pad}")
    if cfg.reference:
        # the reference's FF label token sets one element of a patch, so classes can collide;
        # ours is a Gaussian embedding per class (a known defect not copied, named here)
        out = ["ff:label_token_gaussian_embedding"] if cfg.method == "ff" else []
        return init + out + ([f"precision:{cfg.precision}"] if cfg.precision != "fp32" else [])
    out = list(init)
    if cfg.method in ("cff2", "cff1"):
        out += ["selection:clean_plus_fixed_augmented_view", "head:clean_precomputed_features_best_val_acc"]
        if cfg.method == "cff1":
            out.append("cff1:mean_over_anchors_with_positive")
    if cfg.method == "bp":
        out += [f"bp:lr_{cfg.lr:g}_not_5e-4", "bp:per_step_supcon_probes", "selection:bp_clean_val_ce"]
    if cfg.method == "ff":
        out += ["ff:label_token_gaussian_embedding", "ff:goodness_includes_label_token",
                "ff:loss_sum_of_two_means", "ff:per_token_normalisation", "ff:score_sum_over_layers",
                "selection:ff_last_layer_clean_val_loss"]
        if cfg.ff_threshold != 2.0:
            out.append(f"ff:threshold_{cfg.ff_threshold:g}_not_2")
    if cfg.precision != "fp32":
        out.append(f"precision:{cfg.precision}")
    return out


#: CPU quick preset: ViT[64 4 4], patch 7 (16 tokens) on 2700 + 300 Fashion-MNIST images, 8 epochs;
#: head_lr 5e-3 (10x the reference) because a 2700-image head sees only 6 steps per epoch.
QUICK = TrainConfig(epochs=8, head_lr=5e-3)
#: the same on sklearn digits (8x8, patch 2 -> 16 tokens), whole pool (1438 images).
QUICK_DIGITS = QUICK.replace(dataset="digits", subset=None, patch=2)
#: CFF protocol on CIFAR-10 (needs --data-root and a GPU): ViT[128 4 5], patch 4, 600 + 50 epochs.
FULL_CIFAR10 = TrainConfig(dataset="cifar10", subset=None, embed_dim=128, heads=4, layers=5, patch=4,
                           epochs=600, head_epochs=50, protocol="reference")


class NonFiniteLoss(RuntimeError):
    """A layer's loss became NaN/inf; the message names seed, layer, epoch and step."""


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
        raise ValueError("device='cuda' requested but no CUDA device is available; use --device cpu")
    return torch.device(name)


def _cpu_has_bf16() -> bool:
    """Native bf16 arithmetic on this CPU (AVX512-BF16 or AMX-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot do (ValueError naming the setting and the fix)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if device.type == "cpu" and precision == "tf32":
        raise ValueError("precision=tf32 needs a CUDA device (TF32 is a GPU matmul mode); use --precision fp32")
    if device.type == "cpu" and precision == "bf16" and not _cpu_has_bf16():
        raise ValueError("precision=bf16: this CPU has no native bf16 (avx512_bf16/amx_bf16); use --precision fp32")
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision=bf16: this GPU does not support bf16; use --precision fp32 or tf32")


def _set_matmul_precision(precision: str, device: torch.device) -> None:
    # fp32 must mean IEEE fp32 matmuls (the reference); tf32 allows TF32 tensor cores on CUDA
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = precision == "tf32"


def _gen(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed) % (2 ** 63))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DeviceData:
    """A :class:`Dataset` as uint8 tensors on the device + the batch pipeline."""

    def __init__(self, ds: Dataset, device: torch.device, augment_kind: str, crop_pad: int | None = None) -> None:
        self.ds = ds
        self.device = device
        self.kind = augment_kind
        self.crop_pad = crop_pad
        self.x = {s: getattr(ds, f"x_{s}").to(device) for s in ("train", "val", "test")}
        self.y = {s: getattr(ds, f"y_{s}").to(device) for s in ("train", "val", "test")}

    @classmethod
    def for_config(cls, ds: Dataset, cfg: "TrainConfig", device: torch.device) -> "DeviceData":
        """The data of a run: ``cfg``'s augmentation and crop padding."""
        return cls(ds, device, cfg.augment, cfg.crop_pad)

    def clean(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.ds.mean, self.ds.std)

    def views(self, x: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
        """``n`` independently augmented, normalised views, view-major (n·B, C, H, W)."""
        x01 = x.float() / 255.0
        aug = lambda: augment(x01, gen, self.kind, dataset=self.ds.name, pad=self.crop_pad)  # noqa: E731
        v = torch.cat([aug() for _ in range(n)]) if n > 1 else aug()
        return normalize(v * 255.0, self.ds.mean, self.ds.std)

    def batches(self, split: str, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        xs, ys = self.x[split], self.y[split]
        return [(xs[i:i + batch_size], ys[i:i + batch_size]) for i in range(0, xs.shape[0], batch_size)]

    def epoch_order(self, gen: torch.Generator, batch_size: int) -> list[torch.Tensor]:
        perm = torch.randperm(self.x["train"].shape[0], generator=gen, device=self.device)
        return [b for b in perm.split(batch_size) if b.shape[0] >= 2]


def _autocast(cfg: TrainConfig, device: torch.device):
    # no weight-cast cache: a captured CUDA graph must not keep casts from its capture
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16",
                          cache_enabled=False)


def _loss_dtype(t: torch.Tensor) -> torch.Tensor:
    """Features for the loss: fp32 unless they are float64 (float64 runs stay float64)."""
    return t if t.dtype == torch.float64 else t.float()


def _probe(feat: torch.Tensor, y: torch.Tensor, margin: float, cfg: TrainConfig) -> tuple[torch.Tensor, Any]:
    return supcon_loss(_loss_dtype(feat), y, margin=margin, temperature=cfg.tau, mode=cfg.loss_mode,
                       check_finite=False, diagnostics=True, average=_average(cfg))


def _average(cfg: TrainConfig) -> str:
    # the reference averages over all anchors (loss.view(count, n).mean()); ours over anchors with a positive
    return "all" if cfg.reference else "positive"


def _mark_bad(bad: torch.Tensor, layer: int, loss: torch.Tensor, step: int) -> None:
    """Record the first step at which a seed's layer loss is non-finite (on the device, no sync).
    ``bad`` (S, L), ``loss`` (S,)."""
    hit = (~torch.isfinite(loss.detach())) & (bad[:, layer] < 0)
    bad[:, layer] = torch.where(hit, torch.full_like(bad[:, layer], step), bad[:, layer])


def _seed_grad_norm(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-seed L2 norm of the gradients of stacked parameters (S,) (on the device)."""
    sq = [p.grad.detach().flatten(1).to(torch.float64 if p.dtype == torch.float64 else torch.float32).pow(2).sum(1)
          for p in params if p.grad is not None]
    return torch.stack(sq).sum(0).sqrt()


def _adamw(params, lr: float, wd: float, device: torch.device, capturable: bool = False) -> torch.optim.AdamW:
    """AdamW over stacked parameters: one fused kernel on CUDA, foreach on CPU."""
    if device.type == "cuda":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=(0.9, 0.999), fused=True,
                                 capturable=capturable)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=(0.9, 0.999), foreach=True)


def _torch_load(path: Path, device: torch.device) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors naming the path and the fix."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptFileError(f"{path} holds objects other than tensors and plain containers, refused by "
                               f"torch.load(weights_only=True) ({first[:120]})",
                               "it was not written by cffdyn: delete it to restart the run") from None
    except (EOFError, RuntimeError, OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptFileError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {first[:120]})",
                               "delete it to restart the run from epoch 0") from None


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by this package (tensors and plain containers only)."""
    p = Path(path)
    ck = _torch_load(p, torch.device(device))
    if not isinstance(ck, dict) or "configs" not in ck or "epoch" not in ck:
        raise CorruptFileError(f"{p} is not a cffdyn checkpoint (no configs/epoch)", "delete it to restart the run")
    return ck


# ============================================================================ methods
class _Method:
    """Shared state of every method: S seeds' configs and data, models, optimisers, selection
    direction.  Baselines are S = 1."""

    minimize = True
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

    def _epoch_gens(self, epoch: int) -> list[tuple[torch.Generator, torch.Generator]]:
        """(order, augmentation) generators of every seed for ``epoch``."""
        return [(_gen(self.device, derive_seed(sd["order"], f"epoch{epoch}")),
                 _gen(self.device, derive_seed(sd["aug"], f"epoch{epoch}"))) for sd in self.seeds]

    def _layer_records(self, acc: torch.Tensor, n_steps: int) -> list[list[dict[str, Any]]]:
        """acc (S, L, N_STATS) summed over steps -> per seed, per layer records (one host read)."""
        vals = (acc / max(n_steps, 1)).double().cpu().tolist()
        return [[{"layer": l, "margin": self.margins[l], "loss": v[0], "car": v[1], "grad_norm": v[2],
                  "pos_sim": v[3], "neg_sim": v[4]} for l, v in enumerate(vs)] for vs in vals]

    def _check_bad(self, bad: torch.Tensor, epoch: int) -> None:
        for s, row in enumerate(bad.cpu().tolist()):
            for l, step in enumerate(row):
                if step >= 0:
                    seed = f"seed {self.cfgs[s].seed}, " if self.S > 1 else ""
                    raise NonFiniteLoss(f"non-finite loss at {seed}layer {l}, epoch {epoch}, step {step} "
                                        f"(method {self.cfg.method}); the last good checkpoint is kept")

    def _batch_orders(self, gens) -> list[list[torch.Tensor]]:
        orders = [d.epoch_order(g[0], self.cfg.batch_size) for d, g in zip(self.datas, gens)]
        if any(len(o) != len(orders[0]) or any(a.shape != b.shape for a, b in zip(o, orders[0])) for o in orders):
            raise ValueError("seeds have different batch layouts (training splits of different sizes)")
        return orders


class _CFF(_Method):
    """The CFF engine: S seeds (two-forward or one-forward), stacked weights, + stage-2 heads."""

    def __init__(self, cfgs: Sequence[TrainConfig], datas: Sequence[DeviceData]) -> None:
        super().__init__(cfgs, datas)
        cfg = self.cfg
        self.encoder = build_encoder(cfg.model, self.data.ds.image_shape, embed_dim=cfg.embed_dim, heads=cfg.heads,
                                     layers=cfg.layers, patch=cfg.patch, seeds=[sd["init"] for sd in self.seeds],
                                     init=cfg.init).to(self.device)
        self.modules = {"encoder": self.encoder}
        self.use_graph = bool(cfg.cuda_graph and self.device.type == "cuda")
        self.optimizers = [_adamw(l.parameters(), cfg.method_lr(), cfg.wd, self.device, capturable=self.use_graph)
                           for l in self.encoder.layers]
        self.n_views = 2 if cfg.method == "cff2" else 1
        self.class_means = torch.zeros(self.S, self.num_classes, cfg.embed_dim, device=self.device)
        self._graph: Any = None

    # ---------------------------------------------------------------- the step
    def layer_step(self, l: int, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One local step of layer ``l`` for every seed: forward (h (S, V·B, ...)), S margin
        losses with diagnostics, one backward, one stacked AdamW step.  Returns (detached
        output, stats (S, N_STATS): loss, CAR, grad norm, pos sim, neg sim; losses (S,))."""
        cfg = self.cfg
        with _autocast(cfg, self.device):
            out = self.encoder.layers[l](h)
        loss, st = supcon_loss(_loss_dtype(pool(out)), y, margin=self.margins[l], temperature=cfg.tau,
                               mode=cfg.loss_mode, check_finite=False, diagnostics=True, average=_average(cfg))
        opt = self.optimizers[l]
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()               # seeds share no parameter: each gets its own gradient
        gn = _seed_grad_norm(list(self.encoder.layers[l].parameters()))
        opt.step()
        ld = loss.detach()
        row = torch.stack([ld, st.clamp_rate, gn.to(ld.dtype), st.mean_pos_sim, st.mean_neg_sim], dim=1)
        return out.detach(), row, ld

    def _step(self, h: torch.Tensor, y: torch.Tensor, step: torch.Tensor, buf: dict[str, torch.Tensor]) -> None:
        """All layers for one batch; statistics, first-bad-step and class sums accumulate into
        ``buf`` on the device (the function a CUDA graph captures; ``step`` is a device tensor)."""
        S, L = self.S, len(self.encoder.layers)
        for l in range(L):
            h, row, loss = self.layer_step(l, h, y)
            buf["acc"][:, l] += row.to(buf["acc"].dtype)
            hit = (~torch.isfinite(loss)) & (buf["bad"][:, l] < 0)
            buf["bad"][:, l] = torch.where(hit, step, buf["bad"][:, l])
        yy = y.repeat(1, self.n_views)                                          # (S, V·B)
        f = pool(h)
        f = f.to(buf["csum"].dtype)
        c = self.num_classes
        off = (torch.arange(S, device=y.device) * c)[:, None]
        buf["csum"].view(S * c, -1).index_add_(0, (yy + off).reshape(-1), f.reshape(S * yy.shape[1], -1))
        buf["ccnt"].view(-1).index_add_(0, (yy + off).reshape(-1), torch.ones_like(yy, dtype=buf["ccnt"].dtype).reshape(-1))

    def _batch(self, orders, gens, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked (S, V·B, C, H, W) views and (S, B) labels: each seed its own indices and
        augmentation stream."""
        ys, hs = [], []
        for s, d in enumerate(self.datas):
            idx = orders[s][step]
            ys.append(d.y["train"][idx])
            hs.append(d.views(d.x["train"][idx], gens[s][1], self.n_views))
        if self.S == 1:
            return hs[0].unsqueeze(0).to(self._param_dtype()), ys[0].unsqueeze(0)
        return torch.stack(hs).to(self._param_dtype()), torch.stack(ys)

    def _param_dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype

    def _new_buf(self) -> dict[str, torch.Tensor]:
        dt = torch.float64 if self._param_dtype() == torch.float64 else torch.float32
        S, L, dev = self.S, len(self.encoder.layers), self.device
        return {"acc": torch.zeros(S, L, N_STATS, dtype=dt, device=dev),
                "bad": torch.full((S, L), -1, dtype=torch.long, device=dev),
                "csum": torch.zeros(S, self.num_classes, self.encoder.embed_dim, dtype=dt, device=dev),
                "ccnt": torch.zeros(S, self.num_classes, dtype=dt, device=dev)}

    def _graph_replay(self, h: torch.Tensor, y: torch.Tensor, step: int, buf: dict[str, torch.Tensor]) -> None:
        """CUDA: capture :meth:`_step` once for full batches (static shapes), replay afterwards.
        The warm-up on a side stream changes no weight: parameters and optimiser states are
        restored from copies before capture (capture itself records, it does not run)."""
        g = self._graph
        if g is None:
            static = {"h": h.clone(), "y": y.clone(), "step": torch.zeros((), dtype=torch.long, device=self.device)}
            keep = self._snapshot()
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            scratch = self._new_buf()
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._step(static["h"], static["y"], static["step"], scratch)
            torch.cuda.current_stream(self.device).wait_stream(side)
            self._restore(keep)
            graph = torch.cuda.CUDAGraph()
            for o in self.optimizers:
                o.zero_grad(set_to_none=True)
            gbuf = self._new_buf()
            with torch.cuda.graph(graph):
                self._step(static["h"], static["y"], static["step"], gbuf)
            g = self._graph = {"graph": graph, "static": static, "buf": gbuf}
        g["static"]["h"].copy_(h)
        g["static"]["y"].copy_(y)
        g["static"]["step"].fill_(step)
        g["graph"].replay()

    @torch.no_grad()
    def _snapshot(self) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
        return ([p.detach().clone() for p in self.encoder.parameters()],
                [copy.deepcopy(o.state_dict()) for o in self.optimizers])

    @torch.no_grad()
    def _restore(self, snap: tuple[list[torch.Tensor], list[dict[str, Any]]]) -> None:
        for p, t in zip(self.encoder.parameters(), snap[0]):
            p.copy_(t)
        for o, sd in zip(self.optimizers, snap[1]):
            o.load_state_dict(sd)
            for p in o.param_groups[0]["params"]:   # AdamW's own initial state, made before capture
                if not o.state[p]:
                    o.state[p].update(step=torch.zeros((), dtype=torch.float32, device=p.device),
                                      exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))

    def train_step(self, orders, gens, step: int, buf: dict[str, torch.Tensor]) -> None:
        """Training step ``step`` of an epoch: every seed's batch (own indices, own on-device
        augmentation), then all layers -- a CUDA-graph replay for full batches on CUDA, else
        (CPU, or the last partial batch) the same step function eagerly."""
        h, y = self._batch(orders, gens, step)
        if self.use_graph and y.shape[1] == self.cfg.batch_size:
            self._graph_replay(h, y, step, buf)
        else:
            self._step(h, y, torch.tensor(step, device=self.device), buf)

    def train_epoch(self, epoch: int) -> list[dict[str, Any]]:
        """One stage-1 epoch of every seed; returns per-seed ``{"layers": [...]}`` records and sets
        the per-seed class means (nearest-class-mean accuracy).  One host read at the end."""
        gens = self._epoch_gens(epoch)
        orders = self._batch_orders(gens)
        self.encoder.train()
        n_steps = len(orders[0])
        if self.use_graph and self._graph is not None:
            for t in self._graph["buf"].values():
                t.fill_(-1) if t.dtype == torch.long else t.zero_()
        buf = self._new_buf()
        for step in range(n_steps):
            self.train_step(orders, gens, step, buf)
        if self._graph is not None:
            gb = self._graph["buf"]
            buf["acc"] += gb["acc"]
            buf["bad"] = torch.where(buf["bad"] < 0, gb["bad"],
                                     torch.where(gb["bad"] < 0, buf["bad"], torch.minimum(buf["bad"], gb["bad"])))
            buf["csum"] += gb["csum"]
            buf["ccnt"] += gb["ccnt"]
        self._check_bad(buf["bad"], epoch)
        self.class_means = (buf["csum"] / buf["ccnt"].clamp(min=1)[..., None]).float()
        return [{"layers": r} for r in self._layer_records(buf["acc"], n_steps)]

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def _layer_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer token means (S, N, E) of stacked inputs x (S, N, C, H, W)."""
        outs = []
        h = x.to(self._param_dtype())
        with _autocast(self.cfg, self.device):
            for layer in self.encoder.layers:
                h = layer(h)
                outs.append(_loss_dtype(pool(h)))
        return outs

    def _stack_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([d.x[split] for d in self.datas]), torch.stack([d.y[split] for d in self.datas])

    @torch.no_grad()
    def pooled(self, split: str, last_only: bool = False) -> list[torch.Tensor]:
        """Per-layer pooled features (S, N, E) of the clean images of ``split``."""
        self.encoder.eval()
        xs, _ = self._stack_split(split)
        bs = 2 * self.cfg.batch_size
        parts = [self._layer_features(self.data.clean(xs[:, i:i + bs].flatten(0, 1)).view(
            self.S, -1, *xs.shape[2:])) for i in range(0, xs.shape[1], bs)]
        L = len(self.encoder.layers)
        return [torch.cat([p[l] for p in parts], dim=1) for l in range(L)]

    @torch.no_grad()
    def evaluate(self, epoch: int) -> list[dict[str, Any]]:
        """Per seed: validation loss/CAR per layer, NCM accuracies; ``metric`` = last-layer
        validation loss.  Views: 'reference' two fresh augmented views per epoch of a shuffled
        validation split (batch-size-weighted mean, as the reference's loader); 'cffdyn' the
        clean image and one fixed-seed augmented view."""
        self.encoder.eval()
        cfg, L, S = self.cfg, len(self.encoder.layers), self.S
        ref = cfg.reference
        tag = f"val{epoch}" if ref else "val"
        gens = [_gen(self.device, derive_seed(sd["aug"], tag)) for sd in self.seeds]
        xv, yv = self._stack_split("val")
        n_val = xv.shape[1]
        perms = [torch.randperm(n_val, generator=g, device=self.device) for g in gens] if ref else None
        acc = torch.zeros(S, L, 2, dtype=torch.float64, device=self.device)
        wsum = 0.0
        clean_last = []
        for i in range(0, n_val, cfg.batch_size):
            if ref:
                idx = [p[i:i + cfg.batch_size] for p in perms]
                xb = torch.stack([xv[s][idx[s]] for s in range(S)])
                yb = torch.stack([yv[s][idx[s]] for s in range(S)])
            else:
                xb, yb = xv[:, i:i + cfg.batch_size], yv[:, i:i + cfg.batch_size]
            b = xb.shape[1]
            if b < 2:
                continue
            if ref:
                x = torch.stack([d.views(xb[s], gens[s], 2) for s, d in enumerate(self.datas)])
            else:
                x = torch.stack([torch.cat([d.clean(xb[s]), d.views(xb[s], gens[s], 1)])
                                 for s, d in enumerate(self.datas)])
            feats = self._layer_features(x)
            w = float(b) if ref else 1.0
            for l, f in enumerate(feats):
                loss, st = _probe(f, yb, self.margins[l], cfg)
                acc[:, l] += torch.stack([loss, st.clamp_rate], dim=1).double() * w
            if not ref:
                clean_last.append(feats[-1][:, :b])
            wsum += w
        vals = (acc / max(wsum, 1.0)).cpu().tolist()
        if ref:
            last = self.pooled("val")[-1]
        else:
            last = torch.cat(clean_last, dim=1)
        n_t = min(PER_EPOCH_TEST_N, self.data.x["test"].shape[0])
        xt = torch.stack([d.clean(d.x["test"][:n_t]) for d in self.datas])
        test_last = self._layer_features(xt)[-1]
        out = []
        for s in range(S):
            o: dict[str, Any] = {"val_loss": [v[0] for v in vals[s]], "val_car": [v[1] for v in vals[s]]}
            o["val_acc"] = self._ncm(last[s], yv[s][: last.shape[1]], s)
            o["test_acc"] = self._ncm(test_last[s], self.datas[s].y["test"][:n_t], s)
            o["test_n"] = n_t
            o["metric"] = o["val_loss"][-1]
            out.append(o)
        if cfg.fisher:
            pv = self.pooled("val")
            for s in range(S):
                out[s]["fisher"] = [fisher_criterion(f[s], yv[s], self.num_classes) for f in pv]
        return out

    def _ncm(self, feats: torch.Tensor, y: torch.Tensor, s: int) -> float:
        f = F.normalize(feats.float(), dim=1)
        mu = F.normalize(self.class_means[s].float(), dim=1)
        return float(((f @ mu.T).argmax(1) == y).float().mean())

    # ---------------------------------------------------------------- stage 2
    def finish(self) -> list[dict[str, Any]]:
        """Stage 2 for every seed: :func:`fit_heads` on the frozen last layer's token mean, then
        validation and test accuracy on clean images."""
        cfg, S = self.cfg, self.S
        self.encoder.eval()
        pv = self.pooled("val")          # every layer: the head reads the last, Fisher all of them
        clean = None if cfg.reference else (self.pooled("train")[-1], pv[-1])
        heads, info = fit_heads(self.cfgs, self.datas, lambda v: self._layer_features(v)[-1], cfg.embed_dim,
                                clean=clean, dtype=self._param_dtype())
        fva_c, fte = pv[-1], self.pooled("test")[-1]
        out = []
        for s in range(S):
            yv, yt = self.datas[s].y["val"], self.datas[s].y["test"]
            with torch.no_grad():
                sv, st = heads[s](fva_c[s]), heads[s](fte[s])
                r = {"val_acc": float(topk_accuracy(sv, yv, 1)), "test_acc": float(topk_accuracy(st, yt, 1)),
                     "val_topk_acc": float(topk_accuracy(sv, yv, cfg.topk)),
                     "test_topk_acc": float(topk_accuracy(st, yt, cfg.topk)), "head": info[s]}
            if cfg.fisher:
                r["fisher_val"] = [fisher_criterion(f[s], yv, self.num_classes) for f in pv]
            out.append(r)
        return out


def fit_heads(cfgs: Sequence[TrainConfig], datas: Sequence[DeviceData],
              encode: Callable[[torch.Tensor], torch.Tensor], in_dim: int, *,
              clean: tuple[torch.Tensor, torch.Tensor] | None = None,
              dtype: torch.dtype = torch.float32) -> tuple[list[Head], list[dict[str, Any]]]:
    """Stage 2, the one head protocol of this package (the CFF heads and the raw-pixel probe of
    :mod:`vit.probe` both train here): per seed a LayerNorm + Linear head (:class:`Head`),
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
        gens.append(_gen(device, derive_seed(sd["order"], "head")))
        gaugs.append(_gen(device, derive_seed(sd["aug"], "head")))
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
    for ep in range(cfg.head_epochs):
        perms = [torch.randperm(n, generator=g, device=device) for g in gens]
        for i in range(0, n, bs):
            idx = [p[i:i + bs] for p in perms]
            if ref:
                fb = features(torch.stack([xtr[s][idx[s]] for s in range(S)]), True)
            for s in range(S):
                f = fb[s] if ref else ftr[s][idx[s]]
                loss = F.cross_entropy(heads[s](f), ytr[s][idx[s]])
                opts[s].zero_grad(set_to_none=True)
                loss.backward()
                opts[s].step()
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


class _BP(_Method):
    """BP+CE end to end: encoder (patch embedding included) + LayerNorm/Linear head."""

    def __init__(self, cfgs: Sequence[TrainConfig], datas: Sequence[DeviceData]) -> None:
        super().__init__(cfgs, datas)
        if self.S != 1:
            raise ValueError(f"method {self.cfg.method!r} trains one seed per pass (S=1); got S={self.S}")
        cfg, data, seeds = self.cfg, self.data, self.seeds[0]
        self.encoder = build_encoder(cfg.model, data.ds.image_shape, embed_dim=cfg.embed_dim, heads=cfg.heads,
                                     layers=cfg.layers, patch=cfg.patch, seeds=[seeds["init"]],
                                     init=cfg.init).to(self.device)
        torch.manual_seed(derive_seed(seeds["init"], "head"))
        self.head = Head(cfg.embed_dim, self.num_classes).to(self.device)
        self.modules = {"encoder": self.encoder, "head": self.head}
        self.optimizers = [_adamw(list(self.encoder.parameters()) + list(self.head.parameters()),
                                  cfg.method_lr(), cfg.wd, self.device)]
        self.net = self._net

    def _net(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outs = []
        h = x.unsqueeze(0)                       # the stacked encoder at S = 1
        for layer in self.encoder.layers:
            h = layer(h)
            outs.append(pool(h)[0])
        return self.head(outs[-1]), outs

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        g_order, g_aug = self._epoch_gens(epoch)[0]
        L = len(self.encoder.layers)
        acc = torch.zeros(1, L, N_STATS, device=self.device)
        bad = torch.full((1, L), -1, dtype=torch.long, device=self.device)
        self.encoder.train()
        batches = self.data.epoch_order(g_order, self.cfg.batch_size)
        opt = self.optimizers[0]
        probes = not self.cfg.reference          # the reference computes no per-step SupCon probes
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
            if probes:
                with torch.no_grad():
                    for l, f in enumerate(outs):
                        pl, st = _probe(f.detach(), y, self.margins[l], self.cfg)
                        gn = grad_norm(self.encoder.layers[l].parameters()).to(loss.device)
                        acc[0, l] += torch.stack([pl, st.clamp_rate, gn, st.mean_pos_sim, st.mean_neg_sim]).float()
            _mark_bad(bad, L - 1, loss.reshape(1), step)
            opt.step()
        self._check_bad(bad, epoch)
        # per-layer "loss" is the SupCon loss of the pooled outputs (a probe; BP trains on CE)
        layers = self._layer_records(acc, len(batches))[0] if probes else []
        return {"layers": layers, "train_ce": float(ce_sum / max(len(batches), 1))}

    @torch.no_grad()
    def _scores(self, split: str) -> torch.Tensor:
        self.encoder.eval()
        with _autocast(self.cfg, self.device):
            return torch.cat([self.net(self.data.clean(xb))[0].float()
                              for xb, _ in self.data.batches(split, 2 * self.cfg.batch_size)])

    def evaluate(self, epoch: int) -> dict[str, Any]:
        sv, st = self._scores("val"), self._scores("test")
        yv, yt = self.data.y["val"], self.data.y["test"]
        metric = float(F.cross_entropy(sv, yv))
        if self.cfg.reference:   # the reference selects on the CE of one augmented view of the validation split
            g = _gen(self.device, derive_seed(self.seeds[0]["aug"], f"val{epoch}"))
            self.encoder.eval()
            with torch.no_grad(), _autocast(self.cfg, self.device):
                sa = torch.cat([self.net(self.data.views(xb, g, 1))[0].float()
                                for xb, _ in self.data.batches("val", self.cfg.batch_size)])
            metric = float(F.cross_entropy(sa, yv))
        return {"val_ce": float(F.cross_entropy(sv, yv)), "val_acc": float(topk_accuracy(sv, yv)),
                "test_acc": float(topk_accuracy(st, yt)), "metric": metric}

    def finish(self) -> dict[str, Any]:
        sv, st = self._scores("val"), self._scores("test")
        yv, yt, k = self.data.y["val"], self.data.y["test"], self.cfg.topk
        return {"val_acc": float(topk_accuracy(sv, yv)), "test_acc": float(topk_accuracy(st, yt)),
                "val_topk_acc": float(topk_accuracy(sv, yv, k)), "test_topk_acc": float(topk_accuracy(st, yt, k))}


class _FF(_Method):
    """Forward-Forward on the ViT with a fixed random label token (see module doc)."""

    def __init__(self, cfgs: Sequence[TrainConfig], datas: Sequence[DeviceData]) -> None:
        super().__init__(cfgs, datas)
        if self.S != 1:
            raise ValueError(f"method {self.cfg.method!r} trains one seed per pass (S=1); got S={self.S}")
        cfg, data, seeds = self.cfg, self.data, self.seeds[0]
        if cfg.model != "vit":
            raise ValueError("method 'ff' is implemented for model 'vit' (label token)")
        self.encoder = build_encoder("vit", data.ds.image_shape, embed_dim=cfg.embed_dim, heads=cfg.heads,
                                     layers=cfg.layers, patch=cfg.patch, seeds=[seeds["init"]],
                                     init=cfg.init).to(self.device)
        g = torch.Generator().manual_seed(derive_seed(seeds["init"], "label_token"))
        self.label_emb = torch.randn(self.num_classes, cfg.embed_dim, generator=g).to(self.device)
        self.modules = {"encoder": self.encoder}
        self.optimizers = [_adamw(l.parameters(), cfg.method_lr(), cfg.wd, self.device) for l in self.encoder.layers]

    def _layer(self, l: int, h: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        """Layer ``l`` of the stacked encoder at S = 1 on unstacked rows."""
        if l == 0:
            return self.encoder.layers[0](h.unsqueeze(0), self.label_emb[lab][None, :, None, :])[0]
        return self.encoder.layers[l](h.unsqueeze(0))[0]

    def goodness(self, out: torch.Tensor) -> torch.Tensor:
        """Mean square of the token mean; out (N, T, E).  'reference': image tokens only (the
        label token excluded, as the reference's ``x[:, 1:]``); 'cffdyn': every token."""
        if self.cfg.reference and out.shape[1] > 1:
            out = out[:, :-1]                                  # our label token is the last token
        return out.mean(1).float().pow(2).mean(dim=1)

    def _ff_loss(self, out: torch.Tensor, b: int) -> torch.Tensor:
        g = self.goodness(out)
        th = self.cfg.ff_threshold
        if self.cfg.reference:   # the reference: one mean over the 2B softplus terms
            return F.softplus(torch.cat([th - g[:b], g[b:] - th])).mean()
        return F.softplus(th - g[:b]).mean() + F.softplus(g[b:] - th).mean()

    def _normalize(self, out: torch.Tensor) -> torch.Tensor:
        """Input of the next layer: 'reference' L2-normalises each sample over all its tokens and
        dims (``F.normalize(flatten(x, 1))``); 'cffdyn' each token."""
        out = out.float()
        if self.cfg.reference:
            return F.normalize(out.flatten(1), dim=1).view(out.shape)
        return F.normalize(out, dim=-1)

    def _wrong(self, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        off = torch.randint(1, self.num_classes, y.shape, generator=gen, device=y.device)
        return (y + off) % self.num_classes

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        g_order, g_aug = self._epoch_gens(epoch)[0]
        L = len(self.encoder.layers)
        acc = torch.zeros(1, L, N_STATS, device=self.device)
        bad = torch.full((1, L), -1, dtype=torch.long, device=self.device)
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
                    _, st = _probe(out[:b].mean(1).detach(), y, self.margins[l], self.cfg)
                    acc[0, l] += torch.stack([loss.detach(), st.clamp_rate, gn, st.mean_pos_sim, st.mean_neg_sim]).float()
                _mark_bad(bad, l, loss.reshape(1), step)
                h = self._normalize(out.detach())
        self._check_bad(bad, epoch)
        return {"layers": self._layer_records(acc, len(batches))[0]}

    @torch.no_grad()
    def _scores(self, split: str) -> torch.Tensor:
        """Per candidate label: goodness summed over layers ('cffdyn'), or the last layer's
        goodness ('reference': its score is overwritten layer by layer for l >= 1): (N, C)."""
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
                    if self.cfg.reference:
                        tot = self.goodness(o)
                    else:
                        tot = tot + self.goodness(o)
                    h = self._normalize(o)
                cols.append(tot)
            out.append(torch.stack(cols, dim=1))
        return torch.cat(out)

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict[str, Any]:
        """'cffdyn': last-layer FF loss on clean validation images with fixed wrong labels.
        'reference': the sample-weighted FF loss of every layer but the first, summed, on one
        augmented view with wrong labels drawn afresh each epoch (the reference's selection)."""
        self.encoder.eval()
        ref = self.cfg.reference
        g = _gen(self.device, derive_seed(self.seeds[0]["aug"], f"val{epoch}" if ref else "val"))
        L = len(self.encoder.layers)
        tot, n = torch.zeros(L, device=self.device), 0
        for xb, yb in self.data.batches("val", self.cfg.batch_size):
            x = self.data.views(xb, g, 1) if ref else self.data.clean(xb)
            h = torch.cat([x, x])
            lab = torch.cat([yb, self._wrong(yb, g)])
            w = xb.shape[0] if ref else 1
            for l in range(L):
                with _autocast(self.cfg, self.device):
                    o = self._layer(l, h, lab)
                tot[l] += self._ff_loss(o, xb.shape[0]) * w
                h = self._normalize(o)
            n += w
        per_layer = tot / max(n, 1)
        metric = float(per_layer[1:].sum()) if (ref and L > 1) else float(per_layer[-1])
        sv = self._scores("val")
        return {"val_ff_loss": float(per_layer[-1]), "val_acc": float(topk_accuracy(sv, self.data.y["val"])),
                "metric": metric}

    def finish(self) -> dict[str, Any]:
        sv, st = self._scores("val"), self._scores("test")
        yv, yt, k = self.data.y["val"], self.data.y["test"], self.cfg.topk
        return {"val_acc": float(topk_accuracy(sv, yv)), "test_acc": float(topk_accuracy(st, yt)),
                "val_topk_acc": float(topk_accuracy(sv, yv, k)), "test_topk_acc": float(topk_accuracy(st, yt, k))}


class _FFCL(_Method):
    """Improved FFCL: two MLPs, per-layer cosine-embedding loss, BCE at the output, Adam 1e-4."""

    minimize = False

    def __init__(self, cfgs: Sequence[TrainConfig], datas: Sequence[DeviceData]) -> None:
        super().__init__(cfgs, datas)
        if self.S != 1:
            raise ValueError(f"method {self.cfg.method!r} trains one seed per pass (S=1); got S={self.S}")
        cfg, data, seeds = self.cfg, self.data, self.seeds[0]
        c, h, w = data.ds.image_shape
        torch.manual_seed(seeds["init"])
        self.a = FFCLNet(c * h * w, self.num_classes, FFCL_HIDDEN).to(self.device)
        torch.manual_seed(derive_seed(seeds["init"], "ffcl_b"))
        self.b = FFCLNet(c * h * w, self.num_classes, FFCL_HIDDEN).to(self.device)
        self.modules = {"a": self.a, "b": self.b}
        self.optimizers = [torch.optim.Adam(self.a.parameters(), lr=FFCL_LR),
                           torch.optim.Adam(self.b.parameters(), lr=FFCL_LR)]

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        g_order, g_aug = self._epoch_gens(epoch)[0]
        L = len(self.a.layers)
        acc = torch.zeros(1, L, N_STATS, device=self.device)
        bad = torch.full((1, L), -1, dtype=torch.long, device=self.device)
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
                    acc[0, l] += torch.stack([losses[l].detach(), st.clamp_rate, grad_norm(params).to(x.device),
                                              st.mean_pos_sim, st.mean_neg_sim]).float()
                    _mark_bad(bad, l, losses[l].reshape(1), step)
            for o in self.optimizers:
                o.step()
        self._check_bad(bad, epoch)
        return {"layers": self._layer_records(acc, len(batches))[0]}

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


def _as_list(x: Any) -> list:
    return x if isinstance(x, list) else [x]


def check_seed_batch(cfgs: Sequence[TrainConfig]) -> None:
    """The configs of one pass: S >= 1, identical except for the seed fields, S > 1 only for CFF."""
    if len(cfgs) < 1:
        raise ValueError("seeds: S must be >= 1 (no config given)")
    if not all(isinstance(c, TrainConfig) for c in cfgs):
        raise ValueError("every config must be a TrainConfig")
    strip = [{k: v for k, v in c.to_dict().items() if k not in _SEED_FIELDS} for c in cfgs]
    if any(s != strip[0] for s in strip):
        raise ValueError("seed-batched runs must share every TrainConfig field except the seeds")
    if len(cfgs) > 1 and cfgs[0].method not in ("cff2", "cff1"):
        raise ValueError(f"seed-batched training (S={len(cfgs)}) is for methods cff2/cff1, not {cfgs[0].method!r}")


def build_method(cfg: TrainConfig | Sequence[TrainConfig], data: DeviceData | Sequence[DeviceData]) -> _Method:
    """The method object of one config (S = 1) or of S seed configs (CFF), models and optimisers
    on the data's device."""
    cfgs = [cfg] if isinstance(cfg, TrainConfig) else list(cfg)
    datas = [data] if isinstance(data, DeviceData) else list(data)
    check_seed_batch(cfgs)
    if len(datas) != len(cfgs):
        raise ValueError(f"need one DeviceData per config; got {len(cfgs)} configs, {len(datas)} datas")
    if len({d.device for d in datas}) != 1:
        raise ValueError("all DeviceData must be on the same device")
    check_precision(cfgs[0].precision, datas[0].device)
    _set_matmul_precision(cfgs[0].precision, datas[0].device)
    return _METHOD_CLASSES[cfgs[0].method](cfgs, datas)


def finish_epoch(method: _Method, epoch: int, recs: list[dict[str, Any]], t_train: float, t_eval0: float,
                 histories: list[list], bests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluate after a training epoch, merge the per-layer validation metrics into each seed's
    epoch record, append it to that seed's history and update its best state; returns the
    records.  Shared by :func:`train_runs` and the layer pipeline (``vit.pipeline``)."""
    evs = _as_list(method.evaluate(epoch))
    t_eval = time.perf_counter() - t_eval0
    out = []
    for s, (rec, ev) in enumerate(zip(recs, evs)):
        for k in ("val_loss", "val_car", "fisher"):
            if k in ev:
                for r, v in zip(rec["layers"], ev.pop(k)):
                    r[k] = v
        rec = {"epoch": epoch, "time_s": t_train / method.S, "eval_time_s": t_eval / method.S, **rec, **ev}
        histories[s].append(rec)
        if _is_better(ev["metric"], bests[s]["metric"], method.minimize):
            bests[s] = {"epoch": epoch, "metric": ev["metric"], "state": method.model_state(s)}
        out.append(rec)
    return out


def ckpt_payload(method: _Method, cfg_dicts: list[dict], epoch: int, histories: list, bests: list,
                 t_all: list[float]) -> dict[str, Any]:
    """The per-epoch checkpoint :func:`train_runs` resumes from (tensors and plain containers
    only, so ``torch.load(weights_only=True)`` reads it)."""
    payload = {"configs": cfg_dicts, "epoch": epoch, "state": method.state(), "histories": histories,
               "bests": bests, "t_all": t_all}
    if hasattr(method, "class_means"):
        payload["class_means"] = method.class_means
    return payload


def _device_name(device: torch.device) -> str:
    return str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")


def train_runs(cfgs: Sequence[TrainConfig], out_dirs: Sequence[str | Path] | None = None, *,
               ckpt: str | Path | None = None, progress: bool = True, stop_after_epoch: int | None = None,
               datasets: Sequence[Dataset] | None = None) -> list[dict[str, Any]]:
    """Train S runs that differ only in their seeds in one pass (S = 1 for baselines) and
    return one JSON-able result per seed (see module doc).

    Args:
        cfgs: the S configs.
        out_dirs: one directory per seed for ``log.jsonl`` and ``result.json`` (None: nothing
            written).  When every seed already has a ``result.json`` with its config, those are
            returned without training.
        ckpt: the checkpoint file of this pass (stacked weights, optimiser states, histories),
            written atomically after every epoch and resumed from when present.
        progress: progress lines on stderr.
        stop_after_epoch: raise :class:`RunInterrupted` right after this epoch is checkpointed.
        datasets: already loaded datasets, one per seed (matching each config's split seed).
    """
    cfgs = list(cfgs)
    check_seed_batch(cfgs)
    outs = [Path(o) for o in out_dirs] if out_dirs is not None else None
    if outs is not None and len(outs) != len(cfgs):
        raise ValueError(f"need one out_dir per config; got {len(outs)} for {len(cfgs)} configs")
    cfg_dicts = [c.to_dict() for c in cfgs]
    if outs is not None:
        prev = []
        for o, d in zip(outs, cfg_dicts):
            rp = o / "result.json"
            if rp.is_file():
                r = read_json(rp)
                if r.get("config") != d:
                    raise ValueError(f"{rp} holds a run with a different config; use another out_dir")
                prev.append(r)
        if len(prev) == len(cfgs):
            return prev
    cfg = cfgs[0]
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    seeds = [c.resolved_seeds() for c in cfgs]
    if datasets is None:
        datasets = [load_run_dataset(c) for c in cfgs]
    for ds in datasets:
        if ds.name != cfg.dataset:
            raise ValueError(f"dataset {ds.name!r} passed for a config on {cfg.dataset!r}")
    if cfg.topk > datasets[0].num_classes:
        raise ValueError(f"topk={cfg.topk} but {cfg.dataset} has {datasets[0].num_classes} classes (top-k would be "
                         f"1.0); use --topk <= {datasets[0].num_classes}")
    if (cfg.method in ("cff2", "cff1") and cfg.cuda_graph and device.type == "cuda"
            and cfg.batch_size > datasets[0].x_train.shape[0]):
        raise ValueError(f"batch_size={cfg.batch_size} exceeds the {datasets[0].x_train.shape[0]} training images, so "
                         f"no batch has the captured step's static shape; use a smaller --batch-size or "
                         f"--cuda-graph false")
    method = build_method(cfgs, [DeviceData.for_config(ds, c, device) for ds, c in zip(datasets, cfgs)])
    S = method.S

    histories: list[list[dict[str, Any]]] = [[] for _ in range(S)]
    bests: list[dict[str, Any]] = [{"epoch": -1, "metric": None, "state": method.model_state(s)} for s in range(S)]
    start, t_all = 0, []
    ck = Path(ckpt) if ckpt is not None else None
    if ck is not None and ck.is_file():
        st = load_checkpoint(ck, device)
        if st["configs"] != cfg_dicts:
            raise ValueError(f"{ck} belongs to a different config; use another out_dir (or delete it to restart)")
        method.load_state(st["state"])
        histories, bests, start, t_all = st["histories"], st["bests"], int(st["epoch"]) + 1, list(st["t_all"])
        if "class_means" in st:
            method.class_means = st["class_means"].to(device)
    if outs is not None:  # each log mirrors the checkpointed history (a killed run may have torn it)
        for o, hist in zip(outs, histories):
            atomic_write_text(o / "log.jsonl", "".join(json.dumps(h) + "\n" for h in hist))

    label = f"{cfg.method}/{cfg.loss_mode} {cfg.dataset} " + (f"seed {cfg.seed}" if S == 1 else f"{S} seeds")
    prog = Progress(cfg.epochs, label, enabled=progress)
    prog.update(start)
    for epoch in range(start, cfg.epochs):
        _sync(device)
        t0 = time.perf_counter()
        recs = _as_list(method.train_epoch(epoch))
        _sync(device)
        t_train = time.perf_counter() - t0
        t_all.append(t_train)
        recs = finish_epoch(method, epoch, recs, t_train, t0 + t_train, histories, bests)
        if ck is not None:
            _save_ckpt(ck, ckpt_payload(method, cfg_dicts, epoch, histories, bests, t_all))
        if outs is not None:
            for o, r in zip(outs, recs):
                append_jsonl(o / "log.jsonl", [r])
        r0 = recs[0]
        prog.update(epoch + 1, f"val {r0['metric']:.4f} acc {r0.get('val_acc', float('nan')):.3f}")
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch + 1 < cfg.epochs:
            raise RunInterrupted(f"stopped after epoch {epoch} (stop_after_epoch)")
    return _finish_runs(method, cfgs, cfg_dicts, seeds, datasets, device, histories, bests, t_all, outs)


def _finish_runs(method: _Method, cfgs, cfg_dicts, seeds, datasets, device, histories, bests, t_all,
                 outs) -> list[dict[str, Any]]:
    """Select each seed's best epoch, run stage 2 and write each ``result.json``."""
    S = method.S
    sel = []
    for s in range(S):
        if bests[s]["epoch"] < 0:   # every epoch non-selectable (non-finite metric): keep the last weights
            bests[s]["epoch"] = len(histories[s]) - 1
            sel.append(histories[s][-1])
        else:
            method.load_model_state(bests[s]["state"], s)
            sel.append(histories[s][bests[s]["epoch"]])
    t_fin = time.perf_counter()
    fins = _as_list(method.finish())
    t_fin = (time.perf_counter() - t_fin) / S
    results = []
    for s, (c, fin) in enumerate(zip(cfgs, fins)):
        times = [h["time_s"] for h in histories[s]]
        res = {
            "config": cfg_dicts[s],
            "seeds": seeds[s],
            "protocol": c.protocol,
            "precision": c.precision,
            "departures": departures(c),
            "device": _device_name(device),
            "dataset": datasets[s].summary(),
            "val_acc": fin.pop("val_acc"),
            "test_acc": fin.pop("test_acc"),
            "topk": c.topk,
            "best_epoch": bests[s]["epoch"],
            "per_layer": sel[s]["layers"],
            "epoch_time_s": sum(times) / len(times),
            "stage1_time_s": sum(times),
            "finish_time_s": t_fin,
            **fin,
            "history": histories[s],
            "torch": torch.__version__,
            "seed_batch": {"n_seeds": S, "epoch_time_s_all_seeds": sum(t_all) / max(len(t_all), 1)},
        }
        if outs is not None:
            atomic_write_json(outs[s] / "result.json", res)
        results.append(res)
    return results


def train_run(cfg: TrainConfig, out_dir: str | Path | None = None, *, progress: bool = True,
              stop_after_epoch: int | None = None, dataset: Dataset | None = None) -> dict[str, Any]:
    """Train one run (S = 1 of :func:`train_runs`) and return its JSON-able result.

    Args:
        cfg: the run configuration.
        out_dir: where ``log.jsonl``, ``ckpt.pt``, ``result.json`` go (None: nothing written).
            An existing ``result.json`` with the same config is returned without training; a
            checkpoint with the same config is resumed.
        progress: progress lines on stderr.
        stop_after_epoch: raise :class:`RunInterrupted` right after this epoch is checkpointed.
        dataset: an already loaded :class:`Dataset` (must match ``cfg``'s dataset/subset/split).
    """
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    out = Path(out_dir) if out_dir is not None else None
    return train_runs([cfg], [out] if out is not None else None, ckpt=out / "ckpt.pt" if out is not None else None,
                      progress=progress, stop_after_epoch=stop_after_epoch,
                      datasets=[dataset] if dataset is not None else None)[0]
