"""Command-line options for every :class:`vit.config.TrainConfig` field (shared by ``cffdyn vit
train`` and ``python -m vit.pipeline train``; a library module below both CLIs).

Each field gets one ``--field-name`` option with a typed converter, so bad values fail at parse
time naming the option (``--seed -1``: "argument --seed: '-1' is not an integer >= 0").
Options the user does not give take the preset of the chosen dataset: ``QUICK`` (Fashion-MNIST)
or ``QUICK_DIGITS`` (digits: whole 1,438-image pool, patch 2) -- so ``--dataset digits`` works
without also changing ``--subset`` and ``--patch`` -- and follow the protocol
(:func:`vit.config.preset`: ``--protocol reference`` trains the head at the reference's 5e-4;
CIFAR-100 reports the reference's top-5).
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Sequence

from cffdyn.errors import finite_float, nonneg_float, nonneg_int, positive_float, positive_int

__all__ = ["FIELD_HELP", "field_parser", "parse_field_value", "add_train_config_args", "train_config_from_args"]

FIELD_HELP: dict[str, str] = {
    "dataset": "dataset: fashion_mnist | digits | cifar10 | cifar100 | svhn",
    "data_root": "directory with the dataset files (Fashion-MNIST default: $CFFDYN_FMNIST or "
                 "/usr/share/datasets/fashion-mnist; CIFAR/SVHN need it)",
    "subset": "size of the training pool before the 90/10 train/val split ('none' = all; digits default: all)",
    "image_size": "digits only: 8 (native) or 16 (2x upsampled); 'none' = native",
    "model": "encoder: vit (ViT[E H L]) or mlp (MLP[E L]); ffcl always uses its 64-64 MLPs",
    "embed_dim": "embedding width E",
    "heads": "attention heads H (ViT)",
    "layers": "number of layers L (trained layer by layer)",
    "patch": "patch side p (image side must be divisible by it; digits default 2)",
    "method": "cff2 (two views, two-forward CFF) | cff1 (one view) | bp (BP+CE) | ff (Forward-Forward, "
              "label token) | ffcl (Improved FFCL, two MLPs)",
    "loss_mode": "margin handling: clamp (CFF min(s+m,1)) | subtract (gradient-neutral) | none (SupCon)",
    "m0": "margin of the first layer, in [0, 2]",
    "m_last": "margin of the last layer, in [0, 2] (linear schedule in between)",
    "tau": "SupCon temperature (> 0, finite in float32)",
    "epochs": "stage-1 epochs (all epochs for bp/ff/ffcl; at most 10,000)",
    "head_epochs": "stage-2 epochs of the LayerNorm+Linear head (CFF: 1 to 10,000; the run's accuracy is the head's)",
    "batch_size": "batch size (samples; CFF two-forward sees 2x as many rows)",
    "lr": "AdamW learning rate of every layer (constant; 10 x lr and lr x wd finite in float32); BP under "
          "--protocol reference uses 5e-4",
    "wd": "AdamW weight decay",
    "head_lr": "AdamW learning rate of the stage-2 head (default: 5e-3, the quick preset's; 5e-4, the "
               "reference's, under --protocol reference; a value other than 5e-4 is a listed departure)",
    "ff_threshold": "FF goodness threshold theta (the reference: 2)",
    "seed": "run seed (derives the init/order/augmentation seeds; is the split seed)",
    "seed_init": "fix the weight-init seed ('none' = derived from --seed)",
    "seed_split": "fix the train/val split seed ('none' = --seed)",
    "seed_subset": "fix the seed of the image subset drawn before the split ('none' = the split seed: "
                   "subset and split drawn together)",
    "seed_order": "fix the batch-order seed ('none' = derived from --seed)",
    "seed_aug": "fix the augmentation seed ('none' = derived from --seed)",
    "augment": "augmentation: crop_flip | none | randaug (batched, on the device)",
    "view_noise": "Gaussian pixel noise added to each view, independently between the two views, in units of the "
                  "pixel SD (after normalisation); 0 = none (the reference); > 0 is a named departure (noise-dose knob)",
    "crop_pad": "crop padding in pixels ('none' = the reference's for its datasets (CIFAR-10 12, CIFAR-100 4), "
                "else image side // 8), below the image side; a padding other than the reference's is a listed "
                "departure",
    "device": "auto | cpu | cuda",
    "precision": "fp32 (the reference) | tf32 (CUDA TF32 matmuls) | bf16 (bf16 autocast); recorded in result.json",
    "protocol": "reference (the ContrastiveFF code's init, selection, head and head lr, cff1 averaging, BP lr, "
                "CIFAR normalisation constants, train loss weighted by batch size) | cffdyn "
                "(ours; result.json lists the departures)",
    "init": "weight init: reference (the ContrastiveFF code: position embedding std 1, nn.MultiheadAttention "
            "projections) | small (position embedding std 0.02, Linear-default projections; a departure)",
    "cuda_graph": "capture the training step as a CUDA graph (CUDA only; full batches, the last partial batch eager)",
    "fisher": "Fisher criterion Tr(S_W^-1 S_B) per layer each epoch (validation features)",
    "topk": "also report top-k accuracy for this k (at most the number of classes; default 1, on cifar100 5 "
            "as the reference reports)",
}

_INT_KIND = {"seed": nonneg_int, "seed_init": nonneg_int, "seed_split": nonneg_int, "seed_subset": nonneg_int,
             "seed_order": nonneg_int, "seed_aug": nonneg_int, "head_epochs": nonneg_int, "crop_pad": nonneg_int}
_FLOAT_KIND = {"m0": nonneg_float, "m_last": nonneg_float, "tau": positive_float, "lr": positive_float,
               "wd": nonneg_float, "head_lr": positive_float}


def _optional(kind):
    def parse(s: str):
        return None if s.lower() in ("none", "null", "") else kind(s)
    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def _bool(s: str) -> bool:
    v = s.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def field_parser(name: str) -> Callable[[str], Any]:
    """The typed converter of :class:`TrainConfig` field ``name``'s command-line text (the one text
    parser of a TrainConfig value: ``cffdyn vit train`` options and study overrides and levels)."""
    from vit.config import TrainConfig

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if name not in fields:
        raise ValueError(f"unknown TrainConfig field {name!r}; choose from {', '.join(fields)}")
    t = fields[name].type if isinstance(fields[name].type, str) else str(fields[name].type)
    if "bool" in t:
        kind = _bool
    elif "int" in t:
        kind = _INT_KIND.get(name, positive_int)
    elif "float" in t:
        kind = _FLOAT_KIND.get(name, finite_float)
    else:
        kind = str
    return _optional(kind) if "None" in t else kind


def parse_field_value(name: str, text: str) -> Any:
    """``text`` as a value of :class:`TrainConfig` field ``name`` (ValueError naming both when it is not)."""
    try:
        return field_parser(name)(text.strip())
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise ValueError(f"{name}={text!r}: {exc}") from None


def add_train_config_args(p: argparse.ArgumentParser) -> None:
    """One ``--field`` option per :class:`TrainConfig` field (help from ``FIELD_HELP``).  An option
    not given leaves no value in the namespace (``argparse.SUPPRESS``), so
    :func:`train_config_from_args` can take it from the preset."""
    from vit.config import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=field_parser(f.name),
                       default=argparse.SUPPRESS, metavar=f.name.upper(), help=FIELD_HELP.get(f.name, f.name))


def train_config_from_args(ns: argparse.Namespace, argv: Sequence[str] | None = None):
    """The :class:`TrainConfig` of parsed options: the options given on top of the dataset's and
    protocol's preset (:func:`vit.config.preset`); an option given always wins.  (``argv`` is not
    needed: the namespace holds exactly the options given.)"""
    from vit.config import TrainConfig, preset

    given = {f.name: getattr(ns, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(ns, f.name)}
    return preset(given)
