"""The run configuration: :class:`TrainConfig` (one frozen dataclass; every field is a CLI option
of ``cffdyn vit train``), its presets, its departures from the reference protocol and its seeds.

Presets: ``QUICK`` is the CPU quick preset (ViT[64 4 4], patch 7 on a 3000-image Fashion-MNIST
pool = 2700 train + 300 val, 8 epochs, head lr 5e-3); ``QUICK_DIGITS`` the same on sklearn digits;
``FULL_CIFAR10`` the CFF protocol (ViT[128 4 5], patch 4, 600 + 50 epochs, ``protocol="reference"``).
:func:`preset` is the preset of options not given on the command line: under ``protocol
reference`` it takes the reference's head learning rate (5e-4, not QUICK's 5e-3), and on CIFAR-100
the reference's top-5 under either protocol.

Protocols (``TrainConfig.protocol``): ``reference`` reproduces the public ContrastiveFF code where
this package controls it (fp32, cff1's loss averaged over all anchors, the reference's selection and
head rules, BP at lr 5e-4, FF's threshold 2, goodness and normalisation, CIFAR inputs standardised
with the reference's fixed constants (:func:`input_normalisation`)); ``result.json["departures"]``
is then empty except for FF's label token (the reference sets one element of a patch, so classes
can collide; ours is a Gaussian embedding per class, ``ff:label_token_gaussian_embedding``), a
precision other than fp32, and settings a config gives that differ from the reference's: a head
learning rate other than 5e-4 (``head:lr_<x>_not_5e-4``), a crop padding other than the dataset's,
or a top-k that does not report the reference's (CIFAR-100: top-5, ``eval:top5_not_reported``).
``cffdyn`` is this package's own variant; :func:`departures` names each difference (on CIFAR also
``data:train_split_statistics_not_reference_constants``: ours standardises with the split's own
statistics).  Initialisation is a setting of its own (``init``): ``reference`` (the default
under both protocols) or ``small`` (two ``init:`` departures).  Augmentation details (crop
padding, RandAugment) belong to :mod:`vit.augment`; a crop padding other than the reference's is
a departure.  ``view_noise`` (the noise-dose knob, :mod:`vit.noise_dose`) adds independent
Gaussian noise to each normalised view, in units of the pixel standard deviation; any value
above 0 is a departure.

Seeds: ``seed`` derives the init, order and augmentation seeds (:func:`derive_seed`, stable
across processes and platforms) and is the split seed; each can be fixed on its own.  Runs that
differ only in their seed fields can train in one seed-stacked pass (:func:`check_seed_batch`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Sequence

from vit.augment import AUGMENTS, REFERENCE_PADDING
from vit.data import DATASETS, REFERENCE_NORMALISATION, Dataset, image_side, load_dataset
from vit.losses import LOSS_MODES, check_margin, margin_schedule
from vit.models import INITS, MODELS

__all__ = ["MAX_EPOCHS", "memory_estimate", "TrainConfig", "QUICK", "QUICK_DIGITS", "FULL_CIFAR10", "METHODS", "CFF_METHODS", "DEVICES",
           "PRECISIONS", "PROTOCOLS", "SEED_FIELDS", "FFCL_LR", "FFCL_HIDDEN", "REFERENCE_BP_LR", "REFERENCE_HEAD_LR",
           "REFERENCE_TOPK", "derive_seed", "departures", "data_key", "load_run_dataset", "check_seed_batch",
           "input_normalisation", "preset"]

METHODS: tuple[str, ...] = ("cff2", "cff1", "bp", "ff", "ffcl")
CFF_METHODS: tuple[str, ...] = ("cff2", "cff1")   # the layer-local methods that train S seeds in one pass
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16")
PROTOCOLS: tuple[str, ...] = ("reference", "cffdyn")
FFCL_LR = 1e-4
FFCL_HIDDEN = (64, 64)
#: largest stage-1 / stage-2 epoch count: every epoch's record is kept in the run's history, which
#: each epoch's checkpoint rewrites (its size grows with the epochs); 10,000 is 16x the reference's 600
MAX_EPOCHS = 10_000
#: the largest finite float32, the precision the losses, optimisers and augmentation compute in:
#: a larger value becomes inf there (tau = 1e300 made every logit 0 and the run "learn" nothing)
FLOAT32_MAX = 3.4028234663852886e38
REFERENCE_BP_LR = 5e-4   # main_BP.py trains end to end with lr2 = 5e-4
REFERENCE_HEAD_LR = 5e-4  # main_CFF.py stage 2: AdamW(classifier_head, lr=args.lr2), lr2 default 0.0005
#: the k of the accuracy the reference reports (its ``eval_mode``: CIFAR-10 1, CIFAR-100 5; its
#: Tiny-ImageNet 10 is not a dataset here); other datasets: top-1, which every result reports
REFERENCE_TOPK = {"cifar10": 1, "cifar100": 5}
SEED_FIELDS = ("seed", "seed_init", "seed_split", "seed_subset", "seed_order", "seed_aug")


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
    view_noise: float = 0.0             # Gaussian pixel noise per view, in pixel SDs (independent between views)
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
        if not (isinstance(self.view_noise, (int, float)) and math.isfinite(self.view_noise)
                and self.view_noise >= 0):
            bad(f"view_noise={self.view_noise!r} must be finite and >= 0 (pixel noise in units of the pixel SD; "
                f"0 = none)")
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
        if int(self.head_epochs) < 1 and self.method in CFF_METHODS:
            # the run's val/test accuracies are the stage-2 head's: an untrained head scores chance
            bad(f"head_epochs={self.head_epochs}: method {self.method} reports the accuracy of its stage-2 head, "
                f"which needs at least 1 epoch")
        for name in ("epochs", "head_epochs"):
            if int(getattr(self, name)) > MAX_EPOCHS:
                bad(f"{name}={getattr(self, name)} exceeds {MAX_EPOCHS} (every epoch's record is kept in the "
                    f"history that each checkpoint rewrites); use {name} <= {MAX_EPOCHS}")
        if self.batch_size < 2:
            bad(f"batch_size={self.batch_size} must be >= 2 (the contrastive loss needs pairs)")
        for name in SEED_FIELDS:
            v = getattr(self, name)
            if v is not None and int(v) < 0:
                bad(f"{name}={v} must be >= 0")
        if self.embed_dim % self.heads:
            bad(f"embed_dim={self.embed_dim} is not divisible by heads={self.heads}")
        for name in ("tau", "lr", "head_lr"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v <= 0:
                bad(f"{name}={v} must be finite and > 0")
        for name in ("tau", "lr", "head_lr", "wd", "view_noise", "ff_threshold"):
            v = float(getattr(self, name))
            if math.isfinite(v) and abs(v) > FLOAT32_MAX:
                bad(f"{name}={v:g} is not finite in float32, the precision the run computes in (largest "
                    f"{FLOAT32_MAX:.3g})")
        for name in ("lr", "head_lr"):
            # AdamW's first step is lr / (1 - beta1) = 10 lr, its decay factor 1 - lr wd: torch
            # converts both to float32 and raises (not NaN) when they overflow
            v = float(getattr(self, name))
            if 10 * v > FLOAT32_MAX or v * self.wd > FLOAT32_MAX:
                bad(f"{name}={v:g} (with wd={self.wd:g}): AdamW's first step 10 x {name} and its decay "
                    f"{name} x wd must be finite in float32 (largest {FLOAT32_MAX:.3g})")
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
        if self.crop_pad is not None:
            # offsets run over 0..2*pad, so from pad = side on a crop can miss the image entirely
            # (a blank view), and the padded batch grows as (side + 2 pad)^2 (memory)
            side = image_side(self.dataset, self.image_size)
            if int(self.crop_pad) >= side:
                bad(f"crop_pad={self.crop_pad} is not below the {side}-pixel image side of {self.dataset}: crops "
                    f"could hold no image at all (and the padded batch grows with it); use crop_pad <= {side - 1}")

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


def memory_estimate(cfg: TrainConfig, n_seeds: int, n_train: int, channels: int) -> dict[str, float]:
    """Bytes a training step holds, estimated from the sizes alone (float32): ``params`` (weights,
    gradients and AdamW's two moments of every layer, S seeds) and ``activations`` (one batch of
    ``min(batch, n_train)`` images through the layers whose graph is kept: one for the layer-local
    methods, all for bp/ff; tokens x width for the block's tensors and heads x tokens^2 for the
    attention scores).  A lower bound, for refusing sizes that cannot fit before any work."""
    side = image_side(cfg.dataset, cfg.image_size)
    E, L, S = cfg.embed_dim, cfg.n_layers, n_seeds
    if cfg.method == "ffcl":
        return {"params": 0.0, "activations": 0.0}   # fixed 64-wide MLPs
    if cfg.model == "vit":
        tokens = (side // cfg.patch) ** 2 + (1 if cfg.method == "ff" else 0)
        params = L * 8 * E * E + channels * cfg.patch ** 2 * E + tokens * E
        per_row = 10 * tokens * E + 2 * cfg.heads * tokens ** 2
    else:
        params = channels * side * side * E + (L - 1) * E * E
        per_row = 4 * E
    rows = min(cfg.batch_size, max(n_train, 1)) * (2 if cfg.method == "cff2" else 1)
    kept = L if cfg.method in ("bp", "ff") else 1
    return {"params": 16.0 * S * params, "activations": 4.0 * S * rows * per_row * kept}


def data_key(cfg: TrainConfig) -> tuple:
    """What fixes a run's images and split: runs with equal keys can share one loaded dataset."""
    sd = cfg.resolved_seeds()
    return (cfg.dataset, cfg.data_root, cfg.subset, sd["split"], sd["subset"], cfg.image_size)


def load_run_dataset(cfg: TrainConfig) -> Dataset:
    """The run's dataset: its subset (``seed_subset``) and train/validation split (``seed_split``)."""
    sd = cfg.resolved_seeds()
    return load_dataset(cfg.dataset, cfg.data_root, subset=cfg.subset, seed=sd["split"], image_size=cfg.image_size,
                        subset_seed=sd["subset"])


def input_normalisation(cfg: TrainConfig, ds: Dataset) -> dict[str, Any]:
    """The per-channel (mean, std) a run standardises its inputs with, and where they come from:
    under 'reference' on a dataset the reference normalises with fixed constants
    (``vit.data.REFERENCE_NORMALISATION``) those constants (``source="reference_constants"``),
    else the statistics of the run's own training split (``source="train_split"``)."""
    if cfg.reference and cfg.dataset in REFERENCE_NORMALISATION:
        mean, std = REFERENCE_NORMALISATION[cfg.dataset]
        return {"mean": tuple(mean), "std": tuple(std), "source": "reference_constants"}
    return {"mean": tuple(ds.mean), "std": tuple(ds.std), "source": "train_split"}


def departures(cfg: TrainConfig) -> list[str]:
    """Names of this config's departures from the reference protocol (module doc; empty under
    'reference' for everything this package controls unless a setting the config gives differs
    from the reference's; augmentation details belong to ``vit.augment``)."""
    common = (["init:pos_embedding_std_0.02", "init:attention_projections_linear_default"]
            if cfg.init == "small" and cfg.method != "ffcl" else [])
    ref_pad = REFERENCE_PADDING.get(cfg.dataset)
    if cfg.crop_pad is not None and ref_pad is not None and cfg.crop_pad != ref_pad and cfg.augment != "none":
        common.append(f"augment:crop_pad_{cfg.crop_pad}_not_{ref_pad}")
    if cfg.method in CFF_METHODS and cfg.head_lr != REFERENCE_HEAD_LR:
        common.append(f"head:lr_{cfg.head_lr:g}_not_{REFERENCE_HEAD_LR:g}")
    ref_k = REFERENCE_TOPK.get(cfg.dataset, 1)
    if ref_k not in (1, cfg.topk):      # top-1 is always reported; another k only when asked for
        common.append(f"eval:top{ref_k}_not_reported")
    if cfg.view_noise > 0:      # the reference adds no noise: the noise-dose knob is ours
        common.append(f"augment:view_noise_{cfg.view_noise:g}")
    if cfg.reference:
        # the reference's FF label token sets one element of a patch, so classes can collide;
        # ours is a Gaussian embedding per class (a known defect not copied, named here)
        out = ["ff:label_token_gaussian_embedding"] if cfg.method == "ff" else []
        return common + out + ([f"precision:{cfg.precision}"] if cfg.precision != "fp32" else [])
    out = list(common)
    if cfg.dataset in REFERENCE_NORMALISATION:
        out.append("data:train_split_statistics_not_reference_constants")
    if cfg.method in CFF_METHODS:
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
#: head_lr 5e-3 (10x the reference) because a 2700-image head sees only 6 steps per epoch (a named
#: departure, ``head:lr_0.005_not_0.0005``; :func:`preset` drops it under protocol reference).
QUICK = TrainConfig(epochs=8, head_lr=5e-3)
#: the same on sklearn digits (8x8, patch 2 -> 16 tokens), whole pool (1438 images).
QUICK_DIGITS = QUICK.replace(dataset="digits", subset=None, patch=2)
#: CFF protocol on CIFAR-10 (needs --data-root and a GPU): ViT[128 4 5], patch 4, 600 + 50 epochs.
FULL_CIFAR10 = TrainConfig(dataset="cifar10", subset=None, embed_dim=128, heads=4, layers=5, patch=4,
                           epochs=600, head_epochs=50, protocol="reference")



def preset(given: dict[str, Any]) -> TrainConfig:
    """The config of the options ``given`` (field -> value) on top of the dataset's preset
    (``QUICK_DIGITS`` for digits, else ``QUICK``), an option given always winning.  Options not
    given follow the protocol: under 'reference' the head trains at the reference's learning rate
    (``REFERENCE_HEAD_LR``, not the preset's 5e-3); on a dataset whose reference accuracy is a
    top-k (CIFAR-100: top-5) that k is the reported ``topk``."""
    base = QUICK_DIGITS if given.get("dataset", QUICK.dataset) == "digits" else QUICK
    follow: dict[str, Any] = {}
    if given.get("protocol", base.protocol) == "reference":
        follow["head_lr"] = REFERENCE_HEAD_LR
    ref_k = REFERENCE_TOPK.get(given.get("dataset", base.dataset), 1)
    if ref_k != 1:
        follow["topk"] = ref_k
    return base.replace(**{**follow, **given})


def derive_seed(seed: int, tag: str) -> int:
    """Deterministic 63-bit seed from (seed, tag), stable across processes and platforms."""
    h = hashlib.sha256(f"cffdyn:{int(seed)}:{tag}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def check_seed_batch(cfgs: Sequence[TrainConfig]) -> None:
    """The configs of one pass: S >= 1, identical except for the seed fields (a refusal names the
    first differing field), no two with the same resolved seeds, S > 1 only for CFF."""
    if len(cfgs) < 1:
        raise ValueError("seeds: S must be >= 1 (no config given)")
    if not all(isinstance(c, TrainConfig) for c in cfgs):
        raise ValueError("every config must be a TrainConfig")
    strip = [{k: v for k, v in c.to_dict().items() if k not in SEED_FIELDS} for c in cfgs]
    for i, s in enumerate(strip[1:], 1):
        diff = [k for k in s if s[k] != strip[0][k]]
        if diff:
            k = diff[0]
            raise ValueError(f"seed-batched runs must share every TrainConfig field except the seeds; config {i} "
                             f"has {k}={s[k]!r} where config 0 has {k}={strip[0][k]!r}"
                             + (f" (also differs: {', '.join(diff[1:])})" if len(diff) > 1 else ""))
    seen: dict[tuple, int] = {}
    for i, c in enumerate(cfgs):
        key = tuple(sorted(c.resolved_seeds().items()))
        if key in seen:
            raise ValueError(f"seed-batched runs {seen[key]} and {i} have the same seeds (seed={c.seed}, resolved "
                             f"{dict(key)}): the same run twice; give each run its own --seed")
        seen[key] = i
    if len(cfgs) > 1 and cfgs[0].method not in CFF_METHODS:
        raise ValueError(f"seed-batched training (S={len(cfgs)}) is for methods cff2/cff1, not {cfgs[0].method!r}")
