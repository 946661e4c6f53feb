"""vit.norm_car: the CIFAR-format writer, and the premise that cff2 trains the same under both protocols
but for the input normalisation."""
from __future__ import annotations

import json

import numpy as np

from vit.data import read_cifar
from vit.norm_car import main, write_cifar_format
from vit.train import TrainConfig, train_runs


def test_cifar_format_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    xtr = rng.integers(0, 256, (23, 28, 28), dtype=np.uint8)
    ytr = rng.integers(0, 10, 23)
    xte = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    yte = rng.integers(0, 10, 7)
    write_cifar_format(tmp_path, xtr, ytr, xte, yte)
    a, ya, b, yb = read_cifar(tmp_path)
    assert a.shape == (23, 3, 32, 32) and b.shape == (7, 3, 32, 32) and a.dtype == np.uint8
    for x, img in ((a, xtr), (b, xte)):
        assert (x[:, :, 2:30, 2:30] == img[:, None]).all()          # every channel the image, centred
        border = np.ones((32, 32), bool)
        border[2:30, 2:30] = False
        assert (x[:, :, border] == 0).all()
    assert (ya == ytr).all() and (yb == yte).all()


def test_cff2_trains_identically_under_both_protocols_without_reference_constants():
    """On digits (no reference constants: both protocols normalise with the split's statistics)
    the stage-1 histories of cff2 are bit-equal: the study's paired difference is the
    normalisation alone."""
    base = TrainConfig(dataset="digits", subset=300, patch=2, embed_dim=16, heads=2, layers=2, epochs=2,
                       head_epochs=1, batch_size=64, device="cpu", method="cff2")
    hist = {}
    for protocol in ("reference", "cffdyn"):
        res = train_runs([base.replace(protocol=protocol, seed=s) for s in (0, 1)], progress=False)
        hist[protocol] = [[[(l["loss"], l["car"], l["grad_norm"]) for l in h["layers"]] for h in r["history"]]
                          for r in res]
        assert res[0]["input_normalisation"]["source"] == "train_split"
    assert hist["reference"] == hist["cffdyn"]


def test_cli_writes_both_arms_and_the_paired_difference(tmp_path, capsys):
    assert main(["--seeds", "2", "--epochs", "1", "--subset", "256", "--out", str(tmp_path), "--quiet"]) == 0
    res = json.loads((tmp_path / "norm_car.json").read_text())
    assert res["arms"]["constants"]["input_normalisation"]["source"] == "reference_constants"
    assert res["arms"]["split"]["input_normalisation"]["source"] == "train_split"
    (row,) = res["epochs"]
    c, s = np.array(res["arms"]["constants"]["car"])[:, 0], np.array(res["arms"]["split"]["car"])[:, 0]
    assert abs(row["diff"] - np.mean(s - c)) < 1e-12
    assert (tmp_path / "norm_car.png").is_file() and "split - constants" in capsys.readouterr().out
