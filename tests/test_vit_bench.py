"""``vit bench``: rows, JSON fields and projections (tiny config; timings are never asserted)."""
from __future__ import annotations

import json

import pytest
import torch

from vit.bench import PROTOCOL_RUNS, RefViT, format_bench, run_bench
from vit.train import TrainConfig

TINY = TrainConfig(dataset="fashion_mnist", subset=None, embed_dim=16, heads=2, layers=2, patch=7, batch_size=32,
                   device="cpu", epochs=1)


def test_bench_rows_and_json(tmp_path):
    path = tmp_path / "bench.json"
    res = run_bench(device="cpu", rounds=1, steps=1, seeds=2, workers=0, cfg=TINY, n_images=96, json_path=path)
    saved = json.loads(path.read_text())
    assert saved["rows"] == json.loads(json.dumps(res["rows"]))
    rows = res["rows"]
    assert [(r["impl"], r["precision"], r["seeds"]) for r in rows][:3] == [
        ("reference", "fp32", 1), ("ours", "fp32", 1), ("ours", "fp32", 2)]
    for r in rows:
        for k in ("impl", "precision", "seeds", "ms_per_step", "ms_per_seed_step", "ops_per_step", "epoch_s_50k",
                  "protocol_hours", "speedup_vs_reference"):
            assert k in r
        assert r["ms_per_seed_step"] == pytest.approx(r["ms_per_step"] / r["seeds"])
        assert r["epoch_s_50k"] == pytest.approx(r["ms_per_seed_step"] * 50_000 / TINY.batch_size / 1e3)
        assert r["protocol_hours"] == pytest.approx(r["epoch_s_50k"] * 4 * 7 * 600 / 3600)
        assert r["ops_per_step"] > 0
    assert rows[0]["speedup_vs_reference"] == 1.0
    assert PROTOCOL_RUNS == {"cells": 4, "seeds": 7, "epochs": 600, "images": 50_000}
    assert "load_avg" in res["machine"] and "load_avg" in res["machine_before"]
    txt = format_bench(res)
    assert "reference loop as the reference runs it" in txt and ".item() per layer" in txt


def test_reference_model_is_nn_multihead_attention():
    m = RefViT(49, 16, 16, 2, 2)
    assert isinstance(m.layers[1].attn, torch.nn.MultiheadAttention)
    # default init of nn.MultiheadAttention: zero in-projection bias
    assert float(m.layers[1].attn.in_proj_bias.abs().max()) == 0.0


def test_bench_bad_input():
    with pytest.raises(ValueError, match="--seeds=0"):
        run_bench(device="cpu", seeds=0, cfg=TINY)
