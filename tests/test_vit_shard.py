"""Sharded seed studies (vit.shard): 4 tiny runs over 2 gloo ranks give the single-process
table; a shard finished earlier is reused (re-launch resumes); the merge refuses a partial
study; the shard partition.  Tiny digits runs, one thread per process."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn")

from vit.pipeline import launch_local  # noqa: E402
from vit.shard import _local_study, merge_study, missing_runs, run_shard, shard_runs  # noqa: E402
from vit.study import StudyConfig, cell_runs, run_study  # noqa: E402
from vit.train import TrainConfig  # noqa: E402

BASE = TrainConfig(dataset="digits", subset=200, embed_dim=16, heads=2, layers=2, patch=2, epochs=1,
                   head_epochs=5, batch_size=64, head_lr=5e-3, device="cpu")
CFG = StudyConfig(base=BASE, factors=(("loss_mode", ("clamp", "subtract")),), n_seeds=2, n_boot=200, n_perm=200)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_two_rank_study_equals_single_process(tmp_path):
    ref = run_study(CFG, tmp_path / "one", progress=False)
    out = tmp_path / "sharded"
    run_shard(CFG, out, 0, 2, progress=False)          # rank 0 finished before a "crash" of rank 1
    assert len(missing_runs(CFG, out)) == 2
    with pytest.raises(ValueError, match="2 run\\(s\\) not finished"):
        merge_study(CFG, out)
    launch_local(_local_study, (CFG, str(out)), 2, threads=1)    # re-launch: rank 1 trains, rank 0 merges
    assert missing_runs(CFG, out) == []
    res = merge_study(CFG, out)                         # complete study.json: returned as is
    assert res["status"] == "complete" and len(res["runs"]) == 4
    assert res["table"] == ref["table"]
    for a, b in zip(res["runs"], ref["runs"]):
        assert (a["cell"], a["seed"]) == (b["cell"], b["seed"]) and a["metric"] == b["metric"]
    assert not any(r["trained_now"] for r in res["runs"])   # the merge trained nothing
    assert (out / "study.png").is_file()


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shards_partition_the_runs(world):
    n = len(cell_runs(CFG))
    idx = sorted(i for r in range(world) for i, _, _ in shard_runs(CFG, r, world))
    assert idx == list(range(n))
    for r in range(world):
        assert all(i % world == r for i, _, _ in shard_runs(CFG, r, world))


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="rank"):
        shard_runs(CFG, 2, 2)
    with pytest.raises(ValueError, match="batched"):
        run_shard(CFG.replace(batched=True), tmp_path, 0, 1)


def test_torchrun_rank_selects_its_local_gpu(monkeypatch):
    """Under torchrun each rank makes cuda:LOCAL_RANK current (not every rank on cuda:0)."""
    from vit.shard import set_local_device
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(i))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert set_local_device() == 1 and calls == [1]
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(ValueError, match="LOCAL_RANK=3"):
        set_local_device()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert set_local_device() is None
