"""Layer-pipelined CFF (vit.pipeline): two gloo processes on 127.0.0.1 give the sequential
trainer's weights, statistics and result; a pipelined checkpoint resumes sequentially; the stage
layout; bad input.  Tiny digits configs (8x8, patch 2), one thread per process."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn")

from cffdyn.io import read_json  # noqa: E402
from vit.pipeline import (local_train_many, add_pipeline_args, launch_local, stage_layers,  # noqa: E402
                          streams_train_epoch)
from vit.train import TrainConfig, train_run  # noqa: E402

TINY = TrainConfig(dataset="digits", subset=300, embed_dim=16, heads=2, layers=3, patch=2, epochs=2,
                   head_epochs=5, batch_size=64, head_lr=5e-3, device="cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _ckpt(d):
    return torch.load(d / "ckpt.pt", map_location="cpu", weights_only=False)


def _assert_same_run(a_dir, b_dir, a, b):
    ca, cb = _ckpt(a_dir), _ckpt(b_dir)
    wa, wb = ca["state"]["modules"]["encoder"], cb["state"]["modules"]["encoder"]
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=f"weight {k}")
    for oa, ob in zip(ca["state"]["optimizers"], cb["state"]["optimizers"]):
        for i in oa["state"]:
            for k in ("exp_avg", "exp_avg_sq", "step"):
                torch.testing.assert_close(oa["state"][i][k], ob["state"][i][k], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ca["class_means"], cb["class_means"], rtol=1e-5, atol=1e-6)
    for ha, hb in zip(a["history"], b["history"]):
        for ra, rb in zip(ha["layers"], hb["layers"]):
            for k in ("loss", "car", "grad_norm", "pos_sim", "neg_sim", "val_loss", "val_car"):
                assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), (k, ha["epoch"], ra["layer"])
    assert a["best_epoch"] == b["best_epoch"]
    assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1e-9)
    assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1e-9)


#: (config, depth, stop_after_epoch) of the pipelined runs; all run in ONE 2-process launch
JOBS = {"cff2": (TINY, 2, None), "cff1": (TINY.replace(method="cff1"), 1, None),
        "killed": (TINY.replace(epochs=3, layers=2), 2, 0)}


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    launch_local(local_train_many, ([(c.to_dict(), str(root / k), d, False, s) for k, (c, d, s) in JOBS.items()],),
                 2, threads=1)
    return root


@pytest.mark.parametrize("name", ["cff2", "cff1"])
def test_two_stage_pipeline_matches_sequential(tmp_path, piped, name):
    """Layers 3 over 2 stages ([0], [1, 2]), 5 batches/epoch with a short last one; depth 2 and 1."""
    cfg = JOBS[name][0]
    seq = train_run(cfg, tmp_path / "seq", progress=False)
    pipe = read_json(piped / name / "result.json")
    assert pipe["config"] == cfg.to_dict()
    assert len(pipe["history"]) == cfg.epochs
    _assert_same_run(tmp_path / "seq", piped / name, seq, pipe)
    # a finished pipelined run is returned as is by the sequential trainer (same files)
    assert train_run(cfg, piped / name, progress=False)["test_acc"] == pipe["test_acc"]


def test_pipelined_checkpoint_resumes_sequentially(tmp_path, piped):
    """The pipeline stopped after epoch 0 (of 3); the sequential trainer resumes its checkpoint and
    ends where an uninterrupted sequential run ends (checkpoints are interchangeable)."""
    cfg = JOBS["killed"][0]
    d = piped / "killed"
    assert not (d / "result.json").exists() and _ckpt(d)["epoch"] == 0
    resumed = train_run(cfg, d, progress=False)
    ref = train_run(cfg, tmp_path / "seq", progress=False)
    _assert_same_run(tmp_path / "seq", d, ref, resumed)


@pytest.mark.parametrize("n_layers,world", [(1, 1), (4, 2), (5, 2), (7, 3), (6, 6)])
def test_stage_layers_partition(n_layers, world):
    st = stage_layers(n_layers, world)
    assert len(st) == world
    assert [l for r in st for l in r] == list(range(n_layers))       # contiguous, in order, complete
    sizes = [len(r) for r in st]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes)                                     # extra layers go to later stages


def test_bad_input():
    with pytest.raises(ValueError, match="at most one stage per layer"):
        stage_layers(2, 3)
    with pytest.raises(ValueError, match="world size"):
        stage_layers(2, 0)
    import argparse
    p = argparse.ArgumentParser()
    add_pipeline_args(p)
    ns = p.parse_args(["--pipeline", "--pipeline-procs", "5"])
    from vit.pipeline import run_pipeline_from_args
    with pytest.raises(ValueError, match="at most one stage per layer"):
        run_pipeline_from_args(ns, TINY, "unused")
    with pytest.raises(ValueError, match="not layer-local"):
        run_pipeline_from_args(p.parse_args(["--pipeline"]), TINY.replace(method="bp"), "unused")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA streams form needs a GPU")
def test_cuda_streams_epoch_matches_sequential():
    from vit.data import load_dataset
    from vit.device import DeviceData
    from vit.train import build_method

    cfg = TINY.replace(device="cuda", layers=4)
    ds = load_dataset("digits", subset=300, seed=cfg.seed)
    a = build_method(cfg, DeviceData(ds, torch.device("cuda"), cfg.augment))
    b = build_method(cfg, DeviceData(ds, torch.device("cuda"), cfg.augment))
    for e in range(2):
        ra = a.train_epoch(e)
        rb = streams_train_epoch(b, e, n_stages=2)
        for x, y in zip(ra[0]["layers"], rb[0]["layers"]):
            assert x["loss"] == pytest.approx(y["loss"], rel=1e-4, abs=1e-5)
    for pa, pb in zip(a.encoder.parameters(), b.encoder.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)
