"""Batched, on-device image augmentation, per sample (no per-sample CPU transforms, and on the
GPU no host sync: nothing branches on or reads back a tensor's value; :func:`randaug`).

All functions take a float batch ``x`` (N, C, H, W) in [0, 1] on any device and a
``torch.Generator`` on the same device, and draw every random number from that generator, so a
run's augmentation stream is fixed by its seed and independent of everything else.  Every
sample draws its own crop offset, flip, RandAugment operations and signs (what torchvision does
per image in loader workers), here on the whole batch at once, on the GPU or the CPU tensor
path.

``crop_flip``  random crop with zero padding ``pad`` (torchvision ``RandomCrop(size,
               padding=pad)``: the padded image is cropped back at a uniform offset in
               [0, 2·pad]²) then a horizontal flip with probability 1/2.  The padding per
               dataset is the reference's (ContrastiveFF ``utils.py`` at HEAD, see
               :func:`crop_padding`): CIFAR-10 12, CIFAR-100 4, 64-pixel Tiny ImageNet 6;
               datasets the reference does not train on (Fashion-MNIST, SVHN, digits) use
               ``size // 8`` (3 for 28 pixels, 4 for 32), our choice.  ``TrainConfig.crop_pad``
               overrides it (the quick study uses 1 on Fashion-MNIST; see ``vit.study.QUICK``).
``randaug``    RandAugment(num_ops=3, magnitude=14, num_magnitude_bins=31) with the operation
               list, magnitude scale and sign rule of torchvision ``transforms.v2.RandAugment``
               (what the reference uses; see :data:`RANDAUG_OPS`), applied to the uint8 image
               before the crop and flip as in the reference; then ``crop_flip``.
``none``       identity.

torchvision cannot be installed next to this project's torch, so RandAugment is implemented
here from torchvision's definitions (``_get_inverse_affine_matrix``, ``_gen_affine_grid``,
``adjust_*``, ``posterize``, ``solarize``, ``autocontrast``, ``equalize``, nearest
interpolation, fill 0) on images kept in the uint8 value domain (integers 0..255 held as float,
with torchvision's truncating casts).  Departure: the random numbers come from the run's
generator, not torch's global generator (same distribution, another stream); equalize follows
torchvision's v1 tensor algorithm, which v2 re-implements to the same result.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["AUGMENTS", "RANDAUG_OPS", "RANDAUG_NUM_OPS", "RANDAUG_MAGNITUDE", "RANDAUG_BINS", "augment",
           "crop_flip", "random_crop", "hflip", "randaug", "apply_op", "op_magnitude", "default_pad",
           "crop_padding", "REFERENCE_PADDING", "GEOMETRIC"]

AUGMENTS: tuple[str, ...] = ("crop_flip", "none", "randaug")
#: torchvision v2 RandAugment's augmentation space, in its order: (name, signed)
RANDAUG_OPS: tuple[tuple[str, bool], ...] = (
    ("Identity", False), ("ShearX", True), ("ShearY", True), ("TranslateX", True), ("TranslateY", True),
    ("Rotate", True), ("Brightness", True), ("Color", True), ("Contrast", True), ("Sharpness", True),
    ("Posterize", False), ("Solarize", False), ("AutoContrast", False), ("Equalize", False))
RANDAUG_NUM_OPS = 3       # the reference: v2.RandAugment(3, 14)
RANDAUG_MAGNITUDE = 14
RANDAUG_BINS = 31         # torchvision's default num_magnitude_bins
#: crop padding of the reference (ContrastiveFF utils.py, HEAD); image side in brackets
REFERENCE_PADDING = {"cifar10": 12, "cifar100": 4, "tiny_imagenet": 6}


def default_pad(size: int) -> int:
    """Crop padding for a dataset the reference does not define: ``size // 8`` (at least 1)."""
    return max(1, size // 8)


def crop_padding(dataset: str | None, size: int) -> int:
    """Crop padding of ``dataset``: the reference's where it has one, else :func:`default_pad`."""
    return REFERENCE_PADDING.get(dataset or "", default_pad(size))


def _rand(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device)


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back to (H, W) at per-sample uniform offsets."""
    if pad <= 0:
        return x
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
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


# ----------------------------------------------------------------------------- RandAugment
def op_magnitude(name: str, magnitude: int, bins: int, height: int, width: int) -> float:
    """torchvision v2 RandAugment's magnitude of ``name`` at bin ``magnitude`` (unsigned)."""
    frac = magnitude / (bins - 1)
    if name in ("Identity", "AutoContrast", "Equalize"):
        return 0.0
    if name in ("ShearX", "ShearY"):
        return 0.3 * frac
    if name == "TranslateX":
        return 150.0 / 331.0 * width * frac
    if name == "TranslateY":
        return 150.0 / 331.0 * height * frac
    if name == "Rotate":
        return 30.0 * frac
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):
        return 0.9 * frac
    if name == "Posterize":       # 8 - (arange(bins) // ((bins - 1) / 4)), rounded
        return float(round(8 - (magnitude // ((bins - 1) / 4))))
    if name == "Solarize":        # linspace(1, 0, bins), times the dtype's maximum (255)
        return 1.0 - frac
    raise ValueError(f"unknown RandAugment op {name!r}")


def _inverse_affine(cx: torch.Tensor, cy: torch.Tensor, angle: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor,
                    shx: torch.Tensor, shy: torch.Tensor) -> torch.Tensor:
    """torchvision ``_get_inverse_affine_matrix`` (scale 1) per sample: output pixel -> input
    pixel, coordinates relative to the image centre; every argument (N,) float64 on the device
    (degrees for the angles), the matrices (N, 2, 3).  Tensor arithmetic, so building a warp
    never reads a value back to the host."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shx), torch.deg2rad(shy)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = (m0 * (-cx - tx) + m1 * (-cy - ty)) + cx
    m5 = (m3 * (-cx - tx) + m4 * (-cy - ty)) + cy
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=1).view(-1, 2, 3)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Per-sample affine warp (theta (N, 2, 3), :func:`_inverse_affine`) with torchvision's grid
    (``_gen_affine_grid``), nearest, fill 0."""
    n, _, h, w = x.shape
    theta = theta.to(x.dtype)
    xs = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w, dtype=x.dtype, device=x.device)
    ys = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h, dtype=x.dtype, device=x.device)
    base = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, dtype=x.dtype,
                                                                                          device=x.device)], -1)
    g = base.view(1, h * w, 3) @ theta.transpose(1, 2)
    # divided by Python scalars, not a tensor built from a list (a host-to-device copy per call)
    grid = torch.stack([g[..., 0] / (0.5 * w), g[..., 1] / (0.5 * h)], dim=-1)
    return F.grid_sample(x, grid.view(n, h, w, 2), mode="nearest", padding_mode="zeros", align_corners=False)


#: the geometric RandAugment ops (one affine warp each)
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


def _geometric(x: torch.Tensor, name: str, magnitude: torch.Tensor) -> torch.Tensor:
    """The affine op ``name`` at per-sample ``magnitude`` (N,), as torchvision's v2 RandAugment
    calls ``affine``/``rotate``: shear ``[deg(atan(m)), 0]`` about the corner ``center=[0, 0]``,
    translate ``[int(m), 0]`` (truncated), rotate by ``m`` degrees (the inverse matrix of ``-m``)."""
    n, _, h, w = x.shape
    m = magnitude.to(torch.float64)
    zero = torch.zeros_like(m)
    corner_x, corner_y = torch.full_like(m, -w * 0.5), torch.full_like(m, -h * 0.5)
    if name == "ShearX":
        theta = _inverse_affine(corner_x, corner_y, zero, zero, zero, torch.rad2deg(torch.atan(m)), zero)
    elif name == "ShearY":
        theta = _inverse_affine(corner_x, corner_y, zero, zero, zero, zero, torch.rad2deg(torch.atan(m)))
    elif name == "TranslateX":
        theta = _inverse_affine(zero, zero, zero, torch.trunc(m), zero, zero, zero)
    elif name == "TranslateY":
        theta = _inverse_affine(zero, zero, zero, zero, torch.trunc(m), zero, zero)
    elif name == "Rotate":
        theta = _inverse_affine(zero, zero, -m, zero, zero, zero, zero)
    else:
        raise ValueError(f"{name!r} is not a geometric RandAugment op ({', '.join(GEOMETRIC)})")
    return _affine(x, theta)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """torchvision ``rgb_to_grayscale`` of uint8 values (truncated), one channel."""
    if x.shape[1] == 1:
        return x
    return torch.floor(0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision ``_blend`` for uint8: ``(r x + (1 - r) other).clamp(0, 255)`` truncated."""
    r = ratio.view(-1, 1, 1, 1)
    return torch.floor((r * x + (1.0 - r) * other).clamp(0, 255))


def _sharp_degenerate(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    k[1, 1] = 5.0
    k = (k / k.sum()).expand(c, 1, 3, 3)
    deg = torch.round(F.conv2d(x, k, groups=c))
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = deg           # the border keeps the original pixels
    return out


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """torchvision ``equalize`` (per image and channel histogram equalisation), vectorised."""
    n, c, h, w = x.shape
    v = x.long().view(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, v, torch.ones_like(v))
    idx = torch.arange(256, device=x.device).expand(n * c, 256)
    last_bin = torch.where(hist > 0, idx, torch.full_like(idx, -1)).amax(1)
    last = hist.gather(1, last_bin[:, None]).squeeze(1)
    step = torch.div(hist.sum(1) - last, 255, rounding_mode="floor")
    safe = step.clamp(min=1)
    lut = torch.div(torch.cumsum(hist, 1) + torch.div(safe, 2, rounding_mode="floor")[:, None], safe[:, None],
                    rounding_mode="floor")
    lut = torch.cat([torch.zeros(n * c, 1, dtype=lut.dtype, device=x.device), lut[:, :-1]], 1).clamp(0, 255)
    eq = lut.gather(1, v).to(x.dtype)
    return torch.where((step == 0)[:, None], v.to(x.dtype), eq).view(n, c, h, w)


def apply_op(x: torch.Tensor, name: str, magnitude: torch.Tensor) -> torch.Tensor:
    """Apply RandAugment op ``name`` with per-sample signed ``magnitude`` (N,) to uint8-valued
    float images ``x`` (N, C, H, W), as torchvision's ``_apply_image_or_video_transform``.
    Branches only on ``name`` and shapes, never on tensor values: no host sync."""
    n, _, h, w = x.shape
    if name == "Identity":
        return x
    if name in GEOMETRIC:
        return _geometric(x, name, magnitude)
    if name == "Brightness":
        return _blend(x, torch.zeros_like(x), 1.0 + magnitude)
    if name == "Color":       # saturation: a 1-channel image is returned unchanged
        return x if x.shape[1] == 1 else _blend(x, _gray(x), 1.0 + magnitude)
    if name == "Contrast":
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        return _blend(x, mean, 1.0 + magnitude)
    if name == "Sharpness":
        return x if h <= 2 or w <= 2 else _blend(x, _sharp_degenerate(x), 1.0 + magnitude)
    if name == "Posterize":   # keep the top `bits` bits
        step = torch.pow(2.0, 8.0 - magnitude).view(-1, 1, 1, 1)
        return torch.floor(x / step) * step
    if name == "Solarize":    # threshold = 255 * m; pixels >= threshold are inverted
        thr = (255.0 * magnitude).view(-1, 1, 1, 1)
        return torch.where(x >= thr, 255.0 - x, x)
    if name == "AutoContrast":
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        flat = hi == lo
        scale = 255.0 / torch.where(flat, torch.ones_like(hi), hi - lo)
        lo = torch.where(flat, torch.zeros_like(lo), lo)
        scale = torch.where(flat, torch.ones_like(scale), scale)
        return torch.floor(((x - lo) * scale).clamp(0, 255))
    if name == "Equalize":
        return _equalize(x)
    raise ValueError(f"unknown RandAugment op {name!r}")


def randaug(x: torch.Tensor, gen: torch.Generator, n_ops: int = RANDAUG_NUM_OPS,
            magnitude: int = RANDAUG_MAGNITUDE, bins: int = RANDAUG_BINS, pad: int | None = None,
            crop: bool = True, select: bool | None = None) -> torch.Tensor:
    """RandAugment(n_ops, magnitude) per sample on a [0, 1] batch, then (``crop``) crop + flip.

    Each of the ``n_ops`` rounds draws, for every sample, an op uniformly from
    :data:`RANDAUG_OPS` and, for signed ops, a sign with probability 1/2 (torchvision: ``rand()
    <= 0.5`` negates).

    ``select`` says how each sample gets the op it drew.  True (the default off the CPU): every
    op runs on the whole batch and ``torch.where`` keeps each sample's own, so a round queues its
    kernels without one host sync.  False (the default on the CPU, where a sync costs nothing and
    this is about 5x faster): each op runs on the samples that drew it, gathered by index, which
    reads their count back once per op (14 syncs a round on a GPU).  The ops act per sample, so
    both give the same images (``tests/test_vit_augment.py``)."""
    if not 0 <= magnitude < bins:
        raise ValueError(f"RandAugment magnitude {magnitude} must be in [0, {bins - 1}]")
    if select is None:
        select = x.device.type != "cpu"
    n, _, h, w = x.shape
    u = torch.round(x * 255.0)              # the uint8 values the reference's RandAugment sees
    for _ in range(n_ops):
        pick = torch.randint(0, len(RANDAUG_OPS), (n,), generator=gen, device=x.device)
        neg = _rand(n, gen, x.device) <= 0.5
        out = u if select else u.clone()    # Identity: the sample as it is
        for k, (name, signed) in enumerate(RANDAUG_OPS):
            if name == "Identity":
                continue
            m = torch.full((n,), op_magnitude(name, magnitude, bins, h, w), dtype=x.dtype, device=x.device)
            if signed:
                m = torch.where(neg, -m, m)
            if select:
                out = torch.where((pick == k).view(n, 1, 1, 1), apply_op(u, name, m), out)
            else:
                idx = (pick == k).nonzero().flatten()
                if idx.numel():
                    out[idx] = apply_op(u[idx], name, m[idx])
        u = out
    v = u / 255.0
    return crop_flip(v, gen, pad) if crop else v


def augment(x: torch.Tensor, gen: torch.Generator, kind: str, *, dataset: str | None = None,
            pad: int | None = None) -> torch.Tensor:
    """Apply augmentation ``kind`` (one of ``AUGMENTS``) to a [0, 1] float batch; ``pad`` is the
    crop padding, None: ``dataset``'s (:func:`crop_padding`; the reference's, else ``size // 8``)."""
    pad = crop_padding(dataset, x.shape[-1]) if pad is None else int(pad)
    if kind == "crop_flip":
        return crop_flip(x, gen, pad)
    if kind == "none":
        return x
    if kind == "randaug":
        return randaug(x, gen, pad=pad)
    raise ValueError(f"unknown augmentation {kind!r}; choose from {', '.join(AUGMENTS)}")
