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


# ----------------------------------------------------------------------------- the published loop, ported
def test_ported_reference_loss_equals_our_supcon_loss():
    """The port's operation sequence (tiled mask, scatter, where/clamp, row max, masked log-sum-exp,
    guarded mean over positives) is the marginal SupCon loss of vit.losses: an independent
    implementation of the same formula, in float64 to rounding."""
    from vit.losses import supcon_loss
    from vit.reference_port import port_supmcon_loss

    g = torch.Generator().manual_seed(0)
    for margin, tau in ((0.0, 0.15), (0.3, 0.15), (0.4, 0.5)):
        f1, f2 = torch.randn(24, 8, generator=g, dtype=torch.float64), torch.randn(24, 8, generator=g, dtype=torch.float64)
        y = torch.randint(0, 5, (24,), generator=g)
        y[0] = 99                       # an anchor whose only positive is its other view
        ours = supcon_loss([f1, f2], y, margin=margin, temperature=tau, mode="clamp")
        assert float(port_supmcon_loss([f1, f2], y, margin, tau)) == pytest.approx(float(ours), rel=1e-12)


def test_ported_patches_and_views():
    from vit.models import patchify
    from vit.reference_port import PortViews, port_patches

    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(port_patches(x, 4), patchify(x, 4))
    imgs = torch.randint(0, 256, (4, 1, 6, 6), dtype=torch.uint8)
    ds = PortViews(imgs, torch.arange(4), mean=(0.5,), std=(0.25,), pad=0)
    (v1, v2), label = ds[2]
    ref = (imgs[2].float() / 255 - 0.5) / 0.25
    for v in (v1, v2):            # no padding: the view is the image or its mirror image
        assert torch.allclose(v, ref) or torch.allclose(v, ref.flip(-1))
    (v1, _), _ = PortViews(imgs, torch.arange(4), mean=(0.0,), std=(1.0,), pad=3)[0]
    assert v1.shape == (1, 6, 6) and float(v1.min()) >= 0 and float(v1.max()) <= 1
    with pytest.raises(ValueError, match="uint8"):
        PortViews(imgs.float(), torch.arange(4), mean=(0.5,), std=(0.25,), pad=1)


def test_epoch_bench_rows(tmp_path):
    from vit.bench import format_epoch_bench, parse_threads, run_epoch_bench

    res = run_epoch_bench(device="cpu", rounds=1, threads=[1], n_train=64, n_val=32, workers=0, cfg=TINY,
                          json_path=tmp_path / "e.json")
    (ref, ours) = res["rows"]
    assert ref["impl"].startswith("reference") and ours["impl"] == "ours" and ref["threads"] == ours["threads"] == 1
    assert ours["ratio_reference_over_ours"] == pytest.approx(ref["epoch_s"] / ours["epoch_s"])
    assert ours["ratio_per_round_min"] <= ours["ratio_reference_over_ours"] <= ours["ratio_per_round_max"]
    assert json.loads((tmp_path / "e.json").read_text())["rows"] == json.loads(json.dumps(res["rows"]))
    assert "load average before" in format_epoch_bench(res)
    import os
    assert parse_threads("1,all,1") == list(dict.fromkeys([1, os.cpu_count()]))
    with pytest.raises(ValueError, match="--threads"):
        parse_threads("0")
