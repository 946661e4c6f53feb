"""Batched seeds (vit.batched) train the same weights as separate vit.train runs."""
from __future__ import annotations

import pytest
import torch

from vit.batched import IMPLS, BatchedCFF
from vit.data import load_dataset
from vit.train import DeviceData, TrainConfig, build_method


class _Data64(DeviceData):
    """DeviceData whose images come out in float64 (so the whole forward runs in float64)."""

    def clean(self, x):
        return super().clean(x).double()

    def views(self, x, gen, n):
        return super().views(x, gen, n).double()


def _datas(cfgs):
    return [_Data64(load_dataset(c.dataset, c.data_root, subset=c.subset, seed=c.resolved_seeds()["split"]),
                    torch.device("cpu"), c.augment) for c in cfgs]


class _Float64:
    """Build models with float64 parameters; train with the default dtype restored (the
    trainers allocate their float32 accumulators with the default dtype)."""

    def __enter__(self):
        self.old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.old)


@pytest.fixture
def float64():
    return _Float64()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("method", ["cff2", "cff1"])
def test_batched_equals_separate_runs_float64(float64, impl, method):
    base = TrainConfig(dataset="digits", subset=400, patch=2, embed_dim=16, heads=2, layers=2, epochs=2,
                       head_epochs=1, batch_size=96, device="cpu", method=method, loss_mode="clamp")
    # three seeds: different init, split, order and augmentation; one with a fixed init seed
    cfgs = [base.replace(seed=0), base.replace(seed=1), base.replace(seed=2, seed_init=7)]
    with float64:
        b = BatchedCFF(cfgs, _datas(cfgs), impl=impl)
        sep = [build_method(c, d) for c, d in zip(cfgs, _datas(cfgs))]
    assert next(iter(b.params[0].values())).dtype == torch.float64
    for epoch in range(2):
        rec_b = b.train_epoch(epoch)
        rec_s = [m.train_epoch(epoch) for m in sep]
        for s in range(len(cfgs)):
            for lb, ls in zip(rec_b[s]["layers"], rec_s[s]["layers"]):
                for key in ("loss", "car", "grad_norm", "pos_sim", "neg_sim"):
                    assert lb[key] == pytest.approx(ls[key], rel=1e-5, abs=1e-6), (s, key)
            assert torch.allclose(b.methods[s].class_means, sep[s].class_means, rtol=1e-5, atol=1e-6)
    for s in range(len(cfgs)):
        ref = sep[s].encoder.state_dict()
        got = b.seed_state(s)
        assert set(got) == set(ref)
        for k in ref:
            # the loss runs in float32 in both paths (pool(out).float()), hence not 1e-12
            assert torch.allclose(got[k], ref[k], rtol=1e-6, atol=1e-7), (s, k, (got[k] - ref[k]).abs().max())
    # the seeds really differ (otherwise the test above would be vacuous)
    assert not torch.allclose(b.seed_state(0)["layers.0.embed.weight"], b.seed_state(1)["layers.0.embed.weight"])
    # weights copied back into the per-seed models evaluate like the separate run
    b.sync_to_methods()
    for s in range(len(cfgs)):
        ev_b, ev_s = b.methods[s].evaluate(1), sep[s].evaluate(1)
        assert ev_b["val_loss"] == pytest.approx(ev_s["val_loss"], rel=1e-6)


def test_explicit_forward_equals_model_forward(float64):
    base = TrainConfig(dataset="digits", subset=300, patch=2, embed_dim=16, heads=4, layers=3, epochs=1,
                       device="cpu")
    cfgs = [base.replace(seed=s) for s in range(3)]
    datas = _datas(cfgs)
    with float64:
        bv, be = BatchedCFF(cfgs, datas, impl="vmap"), BatchedCFF(cfgs, datas, impl="explicit")
    x = torch.stack([d.clean(d.x["train"][:10]) for d in datas])
    hv, he = x, x
    for l in range(bv.L):
        hv, he = bv.layer_forward(l, hv), be.layer_forward(l, he)
        ref = torch.stack([m.encoder.layers[l](h) for m, h in zip(bv.methods, x if l == 0 else ref)])
        assert torch.allclose(hv, ref, rtol=1e-12, atol=1e-12)
        assert torch.allclose(he, ref, rtol=1e-10, atol=1e-12)


def test_bad_input():
    base = TrainConfig(dataset="digits", subset=300, patch=2, embed_dim=16, heads=2, layers=1, device="cpu")
    datas = _datas([base, base])
    with pytest.raises(ValueError, match="except the seeds"):
        BatchedCFF([base, base.replace(lr=0.01)], datas)
    with pytest.raises(ValueError, match="cff2/cff1"):
        BatchedCFF([base.replace(method="bp")] * 2, datas)
    with pytest.raises(ValueError, match="impl"):
        BatchedCFF([base, base], datas, impl="nope")
