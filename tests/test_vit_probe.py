"""Stage 2 (``vit.train.fit_heads``) and the raw-pixel probe: one head protocol for the CFF heads
and the probe, seeds independent in a stacked fit, the selection rule of each protocol, and the
probe against an independent linear classifier (scikit-learn's logistic regression)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from vit.data import load_dataset  # noqa: E402
from vit.diagnostics import topk_accuracy  # noqa: E402
from vit.probe import raw_pixel_probe  # noqa: E402
from vit.config import TrainConfig  # noqa: E402
from vit.device import DeviceData  # noqa: E402
from vit.head import fit_heads  # noqa: E402

CFG = TrainConfig(dataset="digits", subset=600, batch_size=64, head_epochs=12, head_lr=5e-3, device="cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", subset=600, seed=0)


def _flat(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(2)


def test_probe_is_within_a_few_points_of_logistic_regression(digits):
    """An independent linear classifier on the same pixels and split sets the level the probe
    (LayerNorm + Linear, AdamW, early stopping on validation) must reach."""
    from sklearn.linear_model import LogisticRegression

    def xy(split):
        x = getattr(digits, f"x_{split}").float().flatten(1).numpy()
        return x, getattr(digits, f"y_{split}").numpy()

    (xtr, ytr), (xte, yte) = xy("train"), xy("test")
    lr = LogisticRegression(max_iter=5000).fit(xtr / 16.0, ytr)
    ref = float((lr.predict(xte / 16.0) == yte).mean())
    res = raw_pixel_probe(CFG, digits)
    assert ref > 0.85                                   # digits are close to linearly separable
    assert res["test_acc"] > ref - 0.05, (res, ref)
    assert res["protocol"] == "cffdyn" and res["selection"] == "val_acc_clean"
    assert res["input_dim"] == int(np.prod(digits.image_shape))


@pytest.mark.parametrize("protocol", ["cffdyn", "reference"])
def test_stacked_heads_equal_heads_fitted_one_seed_at_a_time(digits, protocol):
    cfgs = [CFG.replace(protocol=protocol, seed=s, head_epochs=4) for s in (0, 1)]
    datas = [DeviceData(digits, torch.device("cpu"), "crop_flip") for _ in cfgs]
    dim = datas[0].x["train"][0].numel()
    heads, info = fit_heads(cfgs, datas, _flat, dim)
    for s in range(2):
        (h1,), (i1,) = fit_heads([cfgs[s]], [datas[s]], _flat, dim)
        assert i1 == info[s]
        for (k, a), b in zip(heads[s].state_dict().items(), h1.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    assert info[0]["val_curve"] != info[1]["val_curve"]      # different seeds, different draws


@pytest.mark.parametrize("protocol", ["cffdyn", "reference"])
def test_the_kept_epoch_is_the_best_by_the_protocols_rule(digits, protocol):
    cfg = CFG.replace(protocol=protocol)
    data = DeviceData(digits, torch.device("cpu"), "crop_flip")
    (head,), (info,) = fit_heads([cfg], [data], _flat, data.x["train"][0].numel())
    curve = info["val_curve"]
    assert len(curve) == cfg.head_epochs
    if protocol == "reference":            # lowest validation cross-entropy on augmented view 0
        assert info["selection"] == "val_ce_aug_view0"
        assert info["best_epoch"] == int(np.argmin(curve)) and min(curve) > 0
    else:                                  # best clean validation accuracy, and it is the kept head's
        assert info["selection"] == "val_acc_clean"
        assert info["best_epoch"] == int(np.argmax(curve))
        with torch.no_grad():
            acc = float(topk_accuracy(head(data.clean(data.x["val"]).flatten(1)), data.y["val"], 1))
        assert acc == pytest.approx(max(curve), abs=1e-12)


def test_reference_heads_train_on_augmented_views(digits):
    """Under 'reference' the head sees augmented view 0: switching augmentation off changes the
    validation cross-entropy curve; under 'cffdyn' (clean features) it changes nothing."""
    def curve(protocol, aug):
        data = DeviceData(digits, torch.device("cpu"), aug)
        cfg = CFG.replace(protocol=protocol, head_epochs=3, augment=aug)
        return fit_heads([cfg], [data], _flat, data.x["train"][0].numel())[1][0]["val_curve"]

    assert curve("reference", "crop_flip") != pytest.approx(curve("reference", "none"), rel=1e-3)
    assert curve("cffdyn", "crop_flip") == curve("cffdyn", "none")
