"""vit.augment: RandAugment (torchvision v2 semantics) and crop padding, by their properties."""
from __future__ import annotations

import math

import pytest
import torch

from vit import augment as A


def _imgs(n=6, c=3, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g).float()


def test_crop_padding_is_the_reference_per_dataset():
    assert A.crop_padding("cifar10", 32) == 12       # ContrastiveFF utils.py at HEAD
    assert A.crop_padding("cifar100", 32) == 4
    assert A.crop_padding("fashion_mnist", 28) == 3  # ours: size // 8
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 32, 32)
    # with padding 12 some crops reach 12 pixels into the zero border
    y = A.augment(x, g, "crop_flip", dataset="cifar10")
    assert (y == 0).all(dim=(1, 2)).any(dim=-1).float().sum() > 0
    zero_rows = (y.abs().sum(dim=(1, 3)) == 0).sum(dim=1)
    assert zero_rows.max() > 4 and zero_rows.max() <= 12


def test_an_explicit_crop_pad_overrides_the_dataset_padding_and_is_a_named_departure():
    x = torch.rand(256, 1, 28, 28) + 0.1                     # no zero pixel of its own
    for pad in (0, 1, 3):
        y = A.augment(x, torch.Generator().manual_seed(0), "crop_flip", dataset="fashion_mnist", pad=pad)
        zero_rows = (y.abs().sum(dim=(1, 3)) == 0).sum(dim=1)
        assert zero_rows.max() == pad                         # the crop never reaches further in
    from vit.config import TrainConfig, departures
    assert departures(TrainConfig(dataset="cifar10", protocol="reference", crop_pad=4)) == ["augment:crop_pad_4_not_12"]
    assert departures(TrainConfig(dataset="cifar10", protocol="reference", crop_pad=12)) == []
    assert departures(TrainConfig(protocol="reference", crop_pad=1)) == []   # no reference padding for Fashion-MNIST


def test_magnitudes_follow_torchvision_scale_of_31_bins():
    h = w = 32
    assert A.op_magnitude("ShearX", 30, 31, h, w) == pytest.approx(0.3)
    assert A.op_magnitude("Rotate", 14, 31, h, w) == pytest.approx(14.0)
    assert A.op_magnitude("TranslateX", 30, 31, h, w) == pytest.approx(150 / 331 * 32)
    assert A.op_magnitude("Brightness", 14, 31, h, w) == pytest.approx(0.42)
    assert A.op_magnitude("Posterize", 14, 31, h, w) == 7.0    # 8 - 14 // 7.5
    assert A.op_magnitude("Posterize", 0, 31, h, w) == 8.0
    assert A.op_magnitude("Solarize", 0, 31, h, w) == 1.0       # threshold 255: nothing inverted
    assert [n for n, _ in A.RANDAUG_OPS][:1] == ["Identity"] and len(A.RANDAUG_OPS) == 14


def test_identity_and_magnitude_zero_leave_images_unchanged():
    x = _imgs()
    zero = torch.zeros(x.shape[0])
    assert torch.equal(A.apply_op(x, "Identity", zero), x)
    for name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
        assert torch.equal(A.apply_op(x, name, zero), x), name
    for name in ("Brightness", "Color", "Contrast", "Sharpness"):   # factor 1 + 0 = 1
        assert torch.equal(A.apply_op(x, name, zero), x), name
    assert torch.equal(A.apply_op(x, "Posterize", torch.full((6,), 8.0)), x)
    assert torch.equal(A.apply_op(x, "Solarize", torch.ones(6)), torch.where(x >= 255, 255 - x, x))


def test_geometric_ops_match_exact_pixel_moves():
    x = _imgs(2, 1, 8, 8)
    t = A.apply_op(x, "TranslateX", torch.tensor([2.0, -3.0]))
    assert torch.equal(t[0, :, :, 2:], x[0, :, :, :-2]) and (t[0, :, :, :2] == 0).all()
    assert torch.equal(t[1, :, :, :-3], x[1, :, :, 3:]) and (t[1, :, :, -3:] == 0).all()
    ty = A.apply_op(x, "TranslateY", torch.tensor([1.9, 0.0]))    # int(1.9) = 1
    assert torch.equal(ty[0, :, 1:], x[0, :, :-1]) and torch.equal(ty[1], x[1])
    # rotation by 90 degrees of a square image is an exact permutation of pixels (counter-clockwise)
    r = A.apply_op(x, "Rotate", torch.tensor([90.0, -90.0]))
    assert torch.equal(r[0], torch.rot90(x[0], 1, dims=(1, 2)))
    assert torch.equal(r[1], torch.rot90(x[1], -1, dims=(1, 2)))


def test_colour_ops_against_their_formulas():
    x = _imgs(3, 3, 8, 8, seed=1)
    b = A.apply_op(x, "Brightness", torch.tensor([0.42, -0.42, 0.0]))
    assert torch.equal(b[0], torch.floor((1.42 * x[0]).clamp(0, 255)))
    assert torch.equal(b[1], torch.floor((0.58 * x[1]).clamp(0, 255)))
    p = A.apply_op(x, "Posterize", torch.full((3,), 7.0))
    assert torch.equal(p, (x.long() & ~1).float())                # keep the top 7 bits
    s = A.apply_op(x, "Solarize", torch.full((3,), 1 - 14 / 30))
    thr = 255 * (1 - 14 / 30)
    assert torch.equal(s, torch.where(x >= thr, 255 - x, x))
    ac = A.apply_op(x, "AutoContrast", torch.zeros(3))
    assert (ac.amin(dim=(2, 3)) == 0).all() and (ac.amax(dim=(2, 3)) == 255).all()
    eq = A.apply_op(x, "Equalize", torch.zeros(3))
    assert eq.min() >= 0 and eq.max() <= 255 and torch.equal(eq, torch.round(eq))
    # equalisation is monotone per channel: it never reorders two pixel values
    for i in range(3):
        for c in range(3):
            v, e = x[i, c].flatten(), eq[i, c].flatten()
            o = torch.argsort(v)
            assert (e[o].diff() >= 0).all()


def test_randaug_is_per_sample_and_deterministic_under_a_seed():
    x = torch.rand(1, 3, 16, 16).expand(64, 3, 16, 16).contiguous()
    x = torch.round(x * 255) / 255
    y1 = A.randaug(x, torch.Generator().manual_seed(5), crop=False)
    y2 = A.randaug(x, torch.Generator().manual_seed(5), crop=False)
    assert torch.equal(y1, y2)
    y3 = A.randaug(x, torch.Generator().manual_seed(6), crop=False)
    assert not torch.equal(y1, y3)
    # the same image in every row: rows differ because each sample draws its own ops
    distinct = {tuple(r.flatten()[:64].tolist()) for r in y1}
    assert len(distinct) > 10
    assert (y1 >= 0).all() and (y1 <= 1).all()
    assert torch.equal(torch.round(y1 * 255), y1 * 255) or torch.allclose(torch.round(y1 * 255), y1 * 255, atol=1e-4)


def test_randaug_magnitude_zero_changes_only_through_value_ops():
    """At magnitude 0 every geometric and blend op is the identity and posterize keeps 8 bits, so
    with one op each row is its image unchanged or one of solarize (threshold 255), autocontrast
    and equalize of it."""
    x = _imgs(64, 3, 16, 16, seed=3) / 255
    y = A.randaug(x, torch.Generator().manual_seed(0), n_ops=1, magnitude=0, crop=False)
    u = torch.round(x * 255)
    cands = [u] + [A.apply_op(u, name, torch.full((64,), A.op_magnitude(name, 0, A.RANDAUG_BINS, 16, 16)))
                   for name in ("Solarize", "AutoContrast", "Equalize")]
    kinds = [next(i for i, c in enumerate(cands) if torch.equal(c[r], torch.round(y[r] * 255))) for r in range(64)]
    assert 0 in kinds and len(set(kinds)) > 2          # unchanged rows and value-op rows both occur
    with pytest.raises(ValueError, match="magnitude"):
        A.randaug(x, torch.Generator().manual_seed(0), magnitude=31)


def _inverse_affine_scalar(center, angle, translate, shear):
    """torchvision ``_get_inverse_affine_matrix`` (scale 1) in Python floats, written out from its
    definition: the per-sample tensor form in vit.augment must give the same matrices."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    (cx, cy), (tx, ty) = center, translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [d, -b, 0.0, -c, a, 0.0]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty) + cx
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty) + cy
    return m


def test_tensor_affine_matrices_are_torchvisions():
    g = torch.Generator().manual_seed(0)
    p = (torch.rand(7, 50, generator=g, dtype=torch.float64) - 0.5) * torch.tensor(
        [32, 32, 60, 30, 30, 40, 40], dtype=torch.float64)[:, None]
    t = A._inverse_affine(*p)
    ref = torch.tensor([_inverse_affine_scalar((float(p[0, i]), float(p[1, i])), float(p[2, i]),
                                               (float(p[3, i]), float(p[4, i])), (float(p[5, i]), float(p[6, i])))
                        for i in range(50)], dtype=torch.float64).view(50, 2, 3)
    torch.testing.assert_close(t, ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(t.float(), ref.float())          # the fp32 warp sees the same matrices


def _randaug_gathered(x, gen, n_ops=A.RANDAUG_NUM_OPS, magnitude=A.RANDAUG_MAGNITUDE, bins=A.RANDAUG_BINS):
    """RandAugment as it was before the sync-free rewrite, written out here: each op applied to
    the gathered samples that drew it (no crop)."""
    n, _, h, w = x.shape
    u = torch.round(x * 255.0)
    for _ in range(n_ops):
        pick = torch.randint(0, len(A.RANDAUG_OPS), (n,), generator=gen)
        neg = torch.rand(n, generator=gen) <= 0.5
        out = u.clone()
        for k, (name, signed) in enumerate(A.RANDAUG_OPS):
            idx = (pick == k).nonzero().flatten()
            if idx.numel() == 0 or name == "Identity":
                continue
            m = torch.full((idx.numel(),), A.op_magnitude(name, magnitude, bins, h, w), dtype=x.dtype)
            if signed:
                m = torch.where(neg[idx], -m, m)
            out[idx] = A.apply_op(u[idx], name, m)
        u = out
    return u / 255.0


@pytest.mark.parametrize("c,side", [(3, 16), (1, 28), (3, 32)])
def test_sync_free_randaug_gives_the_gathered_images(c, side):
    """The sync-free form (every op on the whole batch, torch.where per sample) and the gathered
    form give the same images bit for bit, each op drawn at least once (128 samples x 3 rounds)."""
    x = _imgs(128, c, side, side, seed=7) / 255
    first = torch.randint(0, len(A.RANDAUG_OPS), (128,), generator=torch.Generator().manual_seed(11))
    assert set(first.tolist()) == set(range(len(A.RANDAUG_OPS)))     # round 1 alone covers every op
    free = A.randaug(x, torch.Generator().manual_seed(11), crop=False, select=True)
    assert torch.equal(free, A.randaug(x, torch.Generator().manual_seed(11), crop=False, select=False))
    assert torch.equal(free, _randaug_gathered(x, torch.Generator().manual_seed(11)))
    assert torch.equal(A.randaug(x, torch.Generator().manual_seed(3), pad=2, select=True),
                       A.randaug(x, torch.Generator().manual_seed(3), pad=2, select=False))
    assert not torch.equal(free, x)


def test_randaug_output_is_the_recorded_one():
    """SHA-256 prefixes of the uint8 output recorded from the implementation before the sync-free
    rewrite (per-op gathering, Python-float affine matrices; commit ecbcf76) on fixed images and
    generators: the rewrite changed no pixel."""
    import hashlib
    want = {(3, 16, False): "74674da3bdb6720b", (3, 16, True): "a554caa91f7f3c37",
            (1, 28, False): "f531a7c54582d5d6", (1, 28, True): "fcc601b9e4461946",
            (3, 32, False): "3a4c805014c563bb", (3, 32, True): "abbb715146485630"}
    for (c, h, crop), digest in want.items():
        x = _imgs(64, c, h, h, seed=7) / 255
        for select in (True, False):
            y = A.randaug(x, torch.Generator().manual_seed(11), crop=crop, pad=2, select=select)
            got = hashlib.sha256(torch.round(y * 255).to(torch.uint8).numpy().tobytes()).hexdigest()[:16]
            assert got == digest, (c, h, crop, select)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_randaug_on_cuda_never_syncs_with_the_host():
    """torch's sync debug mode turns any synchronising call (a value read back, a blocking copy)
    into an error: the CUDA default (select=True), crop and flip included, makes none once the
    libraries are initialised (one call first: creating a cuBLAS/cuDNN handle is not per op)."""
    x = torch.rand(256, 3, 32, 32, device="cuda")
    A.augment(x, torch.Generator(device="cuda").manual_seed(1), "randaug", dataset="cifar10")
    gen = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.synchronize()
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y = A.augment(x, gen, "randaug", dataset="cifar10")
        z = A.augment(x, gen, "crop_flip", dataset="cifar10")
    finally:
        torch.cuda.set_sync_debug_mode(before)
    assert y.shape == z.shape == x.shape
    again = A.augment(x, torch.Generator(device="cuda").manual_seed(0), "randaug", dataset="cifar10")
    assert torch.equal(y, again)


def test_augment_kinds():
    x = torch.rand(4, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(A.augment(x, g, "none"), x)
    assert A.augment(x, g, "randaug").shape == x.shape
    with pytest.raises(ValueError, match="unknown augmentation"):
        A.augment(x, g, "mixup")
