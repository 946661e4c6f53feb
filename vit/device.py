"""Device and precision: where a run computes and in which number format, and its data on the device.

Precision (``TrainConfig.precision``): ``fp32`` (the reference; IEEE fp32 matmuls, TF32 off),
``tf32`` (CUDA TF32 matmuls), ``bf16`` (bf16 autocast; the loss in fp32).  :func:`use_precision`
is the one place that checks a precision against the device and sets torch's global matmul mode;
the run loop calls it once per pass (and the benchmark once per timed row).  ``tf32`` on a CPU
and ``bf16`` on a CPU without native bf16 are refused there, before any training.

:class:`DeviceData` holds a :class:`vit.data.Dataset` as uint8 tensors on the device and draws
batches and augmented views there (no host round trip inside an epoch), standardised with the
run's input statistics (:func:`vit.config.input_normalisation`: the reference's fixed constants
on CIFAR under protocol reference, else the run's own training split's);
the run's view noise (``TrainConfig.view_noise``) is added to each view on the device.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from vit.augment import augment
from vit.config import PRECISIONS, TrainConfig, input_normalisation
from vit.data import Dataset, normalize

__all__ = ["resolve_device", "check_precision", "use_precision", "supported_precisions", "autocast", "loss_dtype",
           "generator", "sync", "device_name", "DeviceData"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but no CUDA device is available; use --device cpu")
    return torch.device(name)


def cpu_has_bf16() -> bool:
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
    if device.type == "cpu" and precision == "bf16" and not cpu_has_bf16():
        raise ValueError("precision=bf16: this CPU has no native bf16 (avx512_bf16/amx_bf16); use --precision fp32")
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision=bf16: this GPU does not support bf16; use --precision fp32 or tf32")



def use_precision(precision: str, device: torch.device) -> None:
    """Check ``precision`` on ``device`` (:func:`check_precision`) and set torch's global matmul
    mode for it: fp32 must mean IEEE fp32 matmuls (the reference); tf32 allows TF32 tensor cores."""
    check_precision(precision, device)
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = precision == "tf32"


def supported_precisions(device: torch.device) -> list[str]:
    """The precisions :func:`check_precision` accepts on ``device``, in ``PRECISIONS`` order."""
    ok = []
    for p in PRECISIONS:
        try:
            check_precision(p, device)
            ok.append(p)
        except ValueError:
            pass
    return ok


def autocast(cfg: TrainConfig, device: torch.device):
    # no weight-cast cache: a captured CUDA graph must not keep casts from its capture
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16",
                          cache_enabled=False)


def loss_dtype(t: torch.Tensor) -> torch.Tensor:
    """Features for the loss: fp32 unless they are float64 (float64 runs stay float64)."""
    return t if t.dtype == torch.float64 else t.float()



def generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed) % (2 ** 63))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)



def device_name(device: torch.device) -> str:
    return str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")


class DeviceData:
    """A :class:`Dataset` as uint8 tensors on the device + the batch pipeline.

    ``normalisation``: ``{"mean", "std", "source"}`` the inputs are standardised with (None: the
    dataset's training-split statistics, ``source="train_split"``); ``view_noise``: Gaussian noise of
    that SD added to each normalised view."""

    def __init__(self, ds: Dataset, device: torch.device, augment_kind: str, crop_pad: int | None = None,
                 normalisation: dict | None = None, view_noise: float = 0.0) -> None:
        if not (math.isfinite(view_noise) and view_noise >= 0):
            raise ValueError(f"view_noise={view_noise!r} must be finite and >= 0")
        self.ds = ds
        self.device = device
        self.kind = augment_kind
        self.crop_pad = crop_pad
        self.view_noise = float(view_noise)
        self.normalisation = dict(normalisation) if normalisation is not None else \
            {"mean": tuple(ds.mean), "std": tuple(ds.std), "source": "train_split"}
        self.mean, self.std = tuple(self.normalisation["mean"]), tuple(self.normalisation["std"])
        if len(self.mean) != ds.image_shape[0] or len(self.std) != ds.image_shape[0]:
            raise ValueError(f"normalisation has {len(self.mean)}/{len(self.std)} channels, the images "
                             f"{ds.image_shape[0]}")
        self.x = {s: getattr(ds, f"x_{s}").to(device) for s in ("train", "val", "test")}
        self.y = {s: getattr(ds, f"y_{s}").to(device) for s in ("train", "val", "test")}

    @classmethod
    def for_config(cls, ds: Dataset, cfg: TrainConfig, device: torch.device) -> "DeviceData":
        """The data of a run: ``cfg``'s augmentation, crop padding, input statistics and view noise."""
        return cls(ds, device, cfg.augment, cfg.crop_pad, input_normalisation(cfg, ds), cfg.view_noise)

    def clean(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.mean, self.std)

    def views(self, x: torch.Tensor, gen: torch.Generator, n: int) -> torch.Tensor:
        """``n`` independently augmented, normalised views, view-major (n·B, C, H, W); with
        ``view_noise`` > 0 each view then gets its own Gaussian noise of that SD (the normalised
        pixels have unit SD, so the noise is in units of the pixel SD), drawn from ``gen`` after
        the augmentation (with no noise the stream is untouched)."""
        x01 = x.float() / 255.0
        aug = lambda: augment(x01, gen, self.kind, dataset=self.ds.name, pad=self.crop_pad)  # noqa: E731
        v = torch.cat([aug() for _ in range(n)]) if n > 1 else aug()
        v = normalize(v * 255.0, self.mean, self.std)
        if self.view_noise > 0:
            v = v + self.view_noise * torch.randn(v.shape, generator=gen, device=v.device, dtype=v.dtype)
        return v

    def batches(self, split: str, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        xs, ys = self.x[split], self.y[split]
        return [(xs[i:i + batch_size], ys[i:i + batch_size]) for i in range(0, xs.shape[0], batch_size)]

    def epoch_order(self, gen: torch.Generator, batch_size: int) -> list[torch.Tensor]:
        perm = torch.randperm(self.x["train"].shape[0], generator=gen, device=self.device)
        return [b for b in perm.split(batch_size) if b.shape[0] >= 2]
