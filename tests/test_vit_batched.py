"""The seed axis: S separate runs (S = 1 each) equal one S-seed pass of the same engine."""
from __future__ import annotations

import pytest
import torch

from vit.data import load_dataset
from vit.models import seed_slice
from vit.config import TrainConfig, check_seed_batch
from vit.device import DeviceData
from vit.train import build_method, train_run, train_runs

BASE = TrainConfig(dataset="digits", subset=400, patch=2, embed_dim=16, heads=2, layers=2, epochs=2,
                   head_epochs=2, batch_size=96, device="cpu", loss_mode="clamp")
#: three seeds: different init, split, order and augmentation; one with a fixed init seed
SEEDS = [dict(seed=0), dict(seed=1), dict(seed=2, seed_init=7)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


class _Data64(DeviceData):
    """DeviceData whose images come out in float64 (so the whole forward runs in float64)."""

    def clean(self, x):
        return super().clean(x).double()

    def views(self, x, gen, n):
        return super().views(x, gen, n).double()


def _datas(cfgs, cls=DeviceData):
    return [cls(load_dataset(c.dataset, c.data_root, subset=c.subset, seed=c.resolved_seeds()["split"]),
                torch.device("cpu"), c.augment) for c in cfgs]


def _compare(method, cfgs, cls, dtype, rtol, atol, epochs=2):
    batched = build_method(cfgs, _datas(cfgs, cls))
    sep = [build_method(c, d) for c, d in zip(cfgs, _datas(cfgs, cls))]
    if dtype == torch.float64:
        for m in [batched, *sep]:
            m.encoder.double()
            for o in m.optimizers:       # AdamW states are created lazily in the parameters' dtype
                o.state.clear()
    assert next(batched.encoder.parameters()).dtype == dtype
    for epoch in range(epochs):
        rec_b = batched.train_epoch(epoch)
        rec_s = [m.train_epoch(epoch)[0] for m in sep]
        for s in range(len(cfgs)):
            for lb, ls in zip(rec_b[s]["layers"], rec_s[s]["layers"]):
                for key in ("loss", "car", "grad_norm", "pos_sim", "neg_sim"):
                    assert lb[key] == pytest.approx(ls[key], rel=rtol, abs=atol), (s, key)
            torch.testing.assert_close(batched.class_means[s], sep[s].class_means[0], rtol=rtol, atol=atol)
    big = batched.encoder.state_dict()
    e = cfgs[0].embed_dim
    for s, m in enumerate(sep):
        got, ref = seed_slice(big, s), m.encoder.state_dict()
        assert set(got) == set(ref)
        for k in ref:
            a, b = got[k], ref[k]
            if dtype == torch.float32 and k.endswith("qkv.bias"):
                # the key bias has gradient exactly 0 in exact arithmetic (softmax is invariant to
                # q·b_k, constant across keys); in fp32 its gradient is rounding noise, which
                # AdamW's normalisation turns into lr-sized steps -- compare q and v biases only
                a, b = torch.cat([a[:, :e], a[:, 2 * e:]], 1), torch.cat([b[:, :e], b[:, 2 * e:]], 1)
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda t: f"{s} {k}: {t}")
    # the seeds really differ (otherwise the comparison above would be vacuous)
    assert not torch.allclose(big["layers.0.embed.weight"][0], big["layers.0.embed.weight"][1])
    ev_b, ev_s = batched.evaluate(1), [m.evaluate(1)[0] for m in sep]
    for s in range(len(cfgs)):
        assert ev_b[s]["val_loss"] == pytest.approx(ev_s[s]["val_loss"], rel=rtol, abs=atol)
        assert ev_b[s]["val_acc"] == ev_s[s]["val_acc"]


@pytest.mark.parametrize("method", ["cff2", "cff1"])
def test_seed_batch_equals_separate_runs_float64(method):
    cfgs = [BASE.replace(method=method, **kw) for kw in SEEDS]
    # float64 end to end (the loss too): the stacked kernels equal the one-seed ones to rounding
    _compare(method, cfgs, _Data64, torch.float64, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("protocol", ["cffdyn", "reference"])
def test_seed_batch_stage2_equals_separate_runs_float64(protocol):
    """Stage 2 in float64: every seed's clean images are normalised with its own split's
    statistics, so the stacked pass gives each seed the separate run's head curve (to 1e-9) and
    exactly its test and validation accuracies (seed 0's statistics for every seed would move
    the other seeds' features by the ratio of the splits' stds, far above 1e-9)."""
    cfgs = [BASE.replace(method="cff2", protocol=protocol, epochs=1, **kw) for kw in SEEDS]
    datas = _datas(cfgs, _Data64)
    assert len({d.ds.std for d in datas}) == len(cfgs)      # the splits' statistics really differ
    batched = build_method(cfgs, datas)
    sep = [build_method(c, d) for c, d in zip(cfgs, _datas(cfgs, _Data64))]
    for m in [batched, *sep]:
        m.encoder.double()
        for o in m.optimizers:
            o.state.clear()
        m.train_epoch(0)
    fb, fs = batched.finish(), [m.finish()[0] for m in sep]
    for s in range(len(cfgs)):
        assert fb[s]["head"]["val_curve"] == pytest.approx(fs[s]["head"]["val_curve"], rel=1e-9, abs=1e-12), s
        for k in ("val_acc", "test_acc", "val_topk_acc", "test_topk_acc"):
            assert fb[s][k] == fs[s][k], (s, k)
        pb, ps = batched.pooled("test")[-1][s], sep[s].pooled("test")[-1][0]
        torch.testing.assert_close(pb, ps, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("protocol,init", [("cffdyn", "small"), ("reference", "reference")])
def test_seed_batch_equals_separate_runs_fp32(protocol, init):
    cfgs = [BASE.replace(method="cff2", protocol=protocol, init=init, **kw) for kw in SEEDS]
    # fp32: batched matmuls may block differently from one-seed ones; 2 epochs of AdamW keep
    # the difference at the level of fp32 rounding
    _compare("cff2", cfgs, DeviceData, torch.float32, rtol=2e-4, atol=2e-5)


def test_train_runs_equals_train_run_results(tmp_path):
    cfgs = [BASE.replace(**kw) for kw in SEEDS[:2]]
    many = train_runs(cfgs, [tmp_path / "a0", tmp_path / "a1"], ckpt=tmp_path / "a.pt", progress=False)
    for c, r in zip(cfgs, many):
        one = train_run(c, tmp_path / f"one{c.seed}", progress=False)
        assert r["config"] == one["config"] and r["precision"] == one["precision"] == "fp32"
        assert r["best_epoch"] == one["best_epoch"]
        for hb, hs in zip(r["history"], one["history"]):
            for lb, ls in zip(hb["layers"], hs["layers"]):
                assert lb["loss"] == pytest.approx(ls["loss"], rel=2e-4)
        assert abs(r["test_acc"] - one["test_acc"]) <= 0.02     # head on fp32-close features
        assert (tmp_path / f"a{c.seed}" / "result.json").is_file()
    assert many[0]["seed_batch"]["n_seeds"] == 2
    # a finished pass is returned as is
    again = train_runs(cfgs, [tmp_path / "a0", tmp_path / "a1"], ckpt=tmp_path / "a.pt", progress=False)
    assert [a["test_acc"] for a in again] == [m["test_acc"] for m in many]


_TIMING = ("time_s", "eval_time_s", "epoch_time_s", "stage1_time_s", "finish_time_s", "seed_batch")


def _untimed(x):
    """A result without its wall times and layout (everything that must not depend on the layout)."""
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k not in _TIMING}
    if isinstance(x, list):
        return [_untimed(v) for v in x]
    return x


def _stacked_equals_separate(cfgs):
    many = train_runs(cfgs, progress=False)
    for s, (c, r) in enumerate(zip(cfgs, many)):
        one = train_run(c, progress=False)
        assert r["seed_batch"]["n_seeds"] == len(cfgs) and r["seed_batch"]["position"] == s
        assert one["seed_batch"]["n_seeds"] == 1 and one["seed_batch"]["position"] == 0
        assert _untimed(r) == _untimed(one), c.seed       # bit for bit: history, selection, heads, accuracies


@pytest.mark.parametrize("method", ["cff2", "cff1"])
def test_stacked_run_is_bit_identical_to_separate_runs_fp32(method):
    """fp32: a seed's whole result (every epoch's statistics, the selected epoch, the head curve,
    test accuracy) is the same bits whether it trains alone or at any position of a 3-seed
    stack (each seed runs through the one-seed kernels)."""
    _stacked_equals_separate([BASE.replace(method=method, epochs=3, **kw) for kw in SEEDS])


@pytest.mark.slow
def test_stacked_quick_run_is_bit_identical_to_separate_runs():
    """The quick preset's full length (8 epochs, 50 head epochs), 3 seeds: stacked = separate, bit for bit."""
    from vit.config import QUICK
    _stacked_equals_separate([QUICK.replace(device="cpu", seed=s) for s in range(3)])


def _uninterrupted_and_resumed(cfgs, tmp_path):
    """(results of one uninterrupted pass, results of a pass stopped after epoch 0 and resumed)."""
    from vit.train import RunInterrupted
    ref = train_runs(cfgs, progress=False)
    dirs = [tmp_path / f"r{k}" for k in range(len(cfgs))]
    with pytest.raises(RunInterrupted):
        train_runs(cfgs, dirs, ckpt=tmp_path / "c.pt", progress=False, stop_after_epoch=0)
    return ref, train_runs(cfgs, dirs, ckpt=tmp_path / "c.pt", progress=False)


def test_seed_batch_resumes(tmp_path):
    ref, res = _uninterrupted_and_resumed([BASE.replace(epochs=3, **kw) for kw in SEEDS[:2]], tmp_path)
    for a, b in zip(ref, res):
        assert [h["layers"][0]["loss"] for h in a["history"]] == [h["layers"][0]["loss"] for h in b["history"]]
        assert a["test_acc"] == b["test_acc"]


def test_bad_seed_batches():
    with pytest.raises(ValueError, match="S must be >= 1"):
        train_runs([])
    with pytest.raises(ValueError, match="except the seeds"):
        train_runs([BASE, BASE.replace(seed=1, lr=0.001)])
    with pytest.raises(ValueError, match="cff2/cff1"):
        train_runs([BASE.replace(method="bp"), BASE.replace(method="bp", seed=1)])


def test_bad_seed_batch_names_the_field_and_refuses_duplicates():
    """A refused seed batch names the first differing field with both values; two configs with
    the same resolved seeds (the same run twice) are refused, however the seeds were given."""
    with pytest.raises(ValueError, match=r"config 1 has lr=0\.001 where config 0 has lr=0\.004"):
        check_seed_batch([BASE, BASE.replace(seed=1, lr=0.001)])
    with pytest.raises(ValueError, match=r"config 2 has tau=.*also differs: batch_size"):
        check_seed_batch([BASE, BASE.replace(seed=1), BASE.replace(seed=2, tau=0.5, batch_size=64)])
    with pytest.raises(ValueError, match="runs 0 and 1 have the same seeds"):
        check_seed_batch([BASE, BASE])
    # explicit seeds equal to the derived ones are the same run too
    same = BASE.replace(seed=1, seed_split=0, **{f"seed_{k}": v for k, v in BASE.resolved_seeds().items()
                                                 if k != "split"})
    with pytest.raises(ValueError, match="runs 0 and 1 have the same seeds"):
        check_seed_batch([BASE, same])
    check_seed_batch([BASE, BASE.replace(seed_init=7)])     # another init seed: another run


def _cuda_datas(cfgs):
    dev = torch.device("cuda")
    return [DeviceData(load_dataset(c.dataset, subset=c.subset, seed=c.resolved_seeds()["split"]), dev, c.augment)
            for c in cfgs]


def _close_weights(got, ref, tol):
    for k, v in ref.items():
        if not k.endswith("qkv.bias"):      # the key bias: fp32 rounding noise (see _compare)
            torch.testing.assert_close(got[k], v, **tol, msg=lambda t: f"{k}: {t}")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method,precision", [("cff2", "fp32"), ("cff2", "bf16"), ("cff1", "fp32")])
def test_cuda_graph_step_equals_eager_step(method, precision):
    """The captured step (replayed for full batches, the partial last batch eager: 360 training
    images, batch 64 = 5 full + 40) trains the same weights and records the same epoch statistics
    as the eager step, for cff2 and for cff1 (one view, its own capture); and the captured 3-seed
    pass equals 3 captured one-seed passes, seed by seed."""
    cfgs = [BASE.replace(method=method, device="cuda", precision=precision, batch_size=64, **kw) for kw in SEEDS]
    datas = _cuda_datas(cfgs)
    g = build_method(cfgs, datas)
    e = build_method([c.replace(cuda_graph=False) for c in cfgs], datas)
    ones = [build_method([c], [d]) for c, d in zip(cfgs, datas)]
    assert g.use_graph and not e.use_graph and all(o.use_graph for o in ones)
    assert g.n_views == (2 if method == "cff2" else 1)
    rel = 1e-2 if precision == "bf16" else 1e-4
    for epoch in range(2):
        rg, re_ = g.train_epoch(epoch), e.train_epoch(epoch)
        r1 = [o.train_epoch(epoch)[0] for o in ones]
        assert g.graph is not None and e.graph is None         # the graph really was captured and replayed
        for s in range(len(cfgs)):
            for la, lb, lo in zip(rg[s]["layers"], re_[s]["layers"], r1[s]["layers"]):
                for key in ("loss", "car", "pos_sim", "neg_sim"):
                    assert la[key] == pytest.approx(lb[key], rel=rel, abs=1e-6), (s, key)
                    assert la[key] == pytest.approx(lo[key], rel=rel, abs=1e-6), (s, key)
    tol = dict(rtol=5e-2, atol=5e-3) if precision == "bf16" else dict(rtol=1e-3, atol=1e-4)
    _close_weights(g.encoder.state_dict(), e.encoder.state_dict(), tol)
    for s, o in enumerate(ones):
        _close_weights(seed_slice(g.encoder.state_dict(), s), o.encoder.state_dict(), tol)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["cff2", "cff1"])
def test_resume_with_a_captured_graph_equals_uninterrupted(tmp_path, method):
    """A 2-seed captured-graph pass interrupted after epoch 0 and resumed (a new process state:
    new engine, optimiser states loaded into capturable AdamW, a fresh capture whose warm-up must
    not move the loaded weights) gives the uninterrupted pass's history, selection and accuracy.
    GPU reductions are not bit-reproducible (atomic adds), so losses agree to 1e-5 and test
    accuracy to one image."""
    ref, res = _uninterrupted_and_resumed(
        [BASE.replace(method=method, device="cuda", batch_size=64, epochs=3, **kw) for kw in SEEDS[:2]], tmp_path)
    for a, b in zip(ref, res):
        assert len(b["history"]) == 3 and a["best_epoch"] == b["best_epoch"]
        for ha, hb in zip(a["history"], b["history"]):
            for la, lb in zip(ha["layers"], hb["layers"]):
                assert la["loss"] == pytest.approx(lb["loss"], rel=1e-5), ha["epoch"]
        assert abs(a["test_acc"] - b["test_acc"]) <= 1.0 / a["dataset"]["n_test"] + 1e-12
