"""``--protocol reference`` against the ContrastiveFF code (HosseinAghagol/ContrastiveFF at HEAD,
read for these values): its fixed CIFAR normalisation constants, its head learning rate, its
CIFAR-100 top-5, and its batch-size-weighted train loss; under 'cffdyn' each difference named."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import vit.config as vc
from cffdyn.errors import make_parser
from vit.config import TrainConfig, departures, input_normalisation, preset
from vit.config_args import add_train_config_args, train_config_from_args
from vit.data import REFERENCE_NORMALISATION, Dataset
from vit.device import DeviceData
from vit.train import build_method, train_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

# utils.py, set_loaders: CIFAR-10 and CIFAR-100 alike
#   v2.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
REF_MEAN, REF_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def _fake(name: str, n: int = 120, classes: int = 10, seed: int = 0) -> Dataset:
    """A CIFAR-shaped dataset (3x32x32 uint8) whose training statistics are far from the constants."""
    g = torch.Generator().manual_seed(seed)
    x = lambda m: torch.randint(0, 128, (m, 3, 32, 32), generator=g, dtype=torch.uint8)  # noqa: E731
    y = lambda m: torch.arange(m) % classes  # noqa: E731
    xtr = x(n)
    xf = xtr.double() / 255
    return Dataset(name=name, x_train=xtr, y_train=y(n), x_val=x(40), y_val=y(40), x_test=x(40), y_test=y(40),
                   num_classes=classes, mean=tuple(float(v) for v in xf.mean(dim=(0, 2, 3))),
                   std=tuple(float(v) for v in xf.std(dim=(0, 2, 3))))


def _cli_cfg(argv: list[str]) -> TrainConfig:
    p = make_parser("t")
    add_train_config_args(p)
    return train_config_from_args(p.parse_args(argv))


def test_the_constants_are_the_reference_codes():
    assert REFERENCE_NORMALISATION == {"cifar10": (REF_MEAN, REF_STD), "cifar100": (REF_MEAN, REF_STD)}


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_reference_protocol_standardises_cifar_with_the_fixed_constants(name):
    ds = _fake(name, classes=100 if name == "cifar100" else 10)
    x = ds.x_test[:4]
    ref = DeviceData.for_config(ds, TrainConfig(dataset=name, protocol="reference"), torch.device("cpu"))
    m, s = torch.tensor(REF_MEAN).view(1, 3, 1, 1), torch.tensor(REF_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(ref.clean(x), (x.float() / 255 - m) / s)
    assert ref.normalisation["source"] == "reference_constants"
    ours = DeviceData.for_config(ds, TrainConfig(dataset=name), torch.device("cpu"))
    assert ours.normalisation == {"mean": ds.mean, "std": ds.std, "source": "train_split"}
    ms, ss = torch.tensor(ds.mean).view(1, 3, 1, 1), torch.tensor(ds.std).view(1, 3, 1, 1)
    torch.testing.assert_close(ours.clean(x), ((x.double() / 255 - ms) / ss).float())
    # the split's statistics are not the constants here: the two protocols really differ
    assert not torch.allclose(ref.clean(x), ours.clean(x), atol=1e-2)
    assert "data:train_split_statistics_not_reference_constants" in departures(TrainConfig(dataset=name))
    assert not any(d.startswith("data:") for d in departures(TrainConfig(dataset=name, protocol="reference")))


def test_views_use_the_runs_normalisation():
    ds = _fake("cifar10")
    d = DeviceData(ds, torch.device("cpu"), "none", normalisation=input_normalisation(
        TrainConfig(dataset="cifar10", protocol="reference"), ds))
    x = ds.x_train[:3]
    torch.testing.assert_close(d.views(x, torch.Generator().manual_seed(0), 1), d.clean(x))


def test_datasets_the_reference_does_not_cover_keep_their_split_statistics():
    ds = _fake("svhn")
    for protocol in vc.PROTOCOLS:
        assert input_normalisation(TrainConfig(dataset="svhn", protocol=protocol), ds)["source"] == "train_split"
    assert not any(d.startswith("data:") for d in departures(TrainConfig(dataset="svhn")))
    assert not any(d.startswith("data:") for d in departures(TrainConfig()))      # Fashion-MNIST


def test_result_records_the_normalisation():
    ds = _fake("cifar10")
    cfg = TrainConfig(dataset="cifar10", subset=None, embed_dim=8, heads=2, layers=1, patch=8, epochs=1,
                      head_epochs=1, batch_size=32, device="cpu", protocol="reference")
    res = train_run(cfg, progress=False, dataset=ds)
    assert res["input_normalisation"] == {"mean": list(REF_MEAN), "std": list(REF_STD),
                                          "source": "reference_constants"}
    assert res["departures"] == []


def test_head_learning_rate_is_the_references_under_reference():
    # main_CFF.py stage 2: torch.optim.AdamW(model.classifier_head.parameters(), lr=args.lr2), lr2 = 0.0005
    assert vc.REFERENCE_HEAD_LR == 5e-4
    assert _cli_cfg(["--protocol", "reference"]).head_lr == 5e-4
    assert _cli_cfg(["--protocol", "reference", "--dataset", "digits"]).head_lr == 5e-4
    assert departures(_cli_cfg(["--protocol", "reference"])) == []
    assert _cli_cfg([]).head_lr == vc.QUICK.head_lr == 5e-3        # the quick preset under cffdyn ...
    assert "head:lr_0.005_not_0.0005" in departures(_cli_cfg([]))  # ... named
    given = _cli_cfg(["--protocol", "reference", "--head-lr", "5e-3"])   # a value given wins, and is named
    assert given.head_lr == 5e-3 and departures(given) == ["head:lr_0.005_not_0.0005"]
    assert departures(vc.QUICK.replace(protocol="reference", method="bp")) == []   # no stage-2 head


def test_the_head_optimiser_gets_the_configs_rate(monkeypatch):
    pytest.importorskip("sklearn")
    lrs = []
    real = torch.optim.AdamW

    def spy(params, lr, **kw):
        lrs.append(lr)
        return real(params, lr=lr, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    cfg = preset({"dataset": "digits", "protocol": "reference", "subset": 200, "embed_dim": 8, "heads": 2,
                  "layers": 1, "epochs": 1, "head_epochs": 1, "batch_size": 64, "device": "cpu"})
    train_run(cfg, progress=False)
    assert sorted(set(lrs)) == [5e-4, cfg.lr]          # the head at 5e-4, the layer at 0.004


def test_cifar100_reports_the_references_top5():
    # main_CFF.py eval: output.topk(args.eval_mode, ...), eval_mode = 5 for cifar100, 1 for cifar10
    assert vc.REFERENCE_TOPK == {"cifar10": 1, "cifar100": 5}
    for protocol in vc.PROTOCOLS:
        assert _cli_cfg(["--dataset", "cifar100", "--protocol", protocol]).topk == 5
    assert _cli_cfg(["--dataset", "cifar10", "--protocol", "reference"]).topk == 1
    assert _cli_cfg(["--dataset", "cifar100", "--topk", "1"]).topk == 1
    assert departures(TrainConfig(dataset="cifar100", protocol="reference")) == ["eval:top5_not_reported"]
    assert departures(TrainConfig(dataset="cifar100", protocol="reference", topk=5)) == []
    assert departures(TrainConfig(dataset="cifar10", protocol="reference", topk=3)) == []   # top-1 always reported


def test_the_engines_epoch_loss_weights_the_partial_batch_by_its_size():
    """A real CFF epoch (82 training images, batch 32: steps of 32, 32, 18): the recorded loss is
    sum(loss_i b_i) / sum(b_i) of the step losses the engine computed, not their plain mean."""
    ds = _fake("cifar10", n=82)
    cfg = TrainConfig(dataset="cifar10", subset=None, embed_dim=8, heads=2, layers=2, patch=8, epochs=1,
                      batch_size=32, device="cpu").replace(seed=3)
    m = build_method([cfg], [DeviceData.for_config(ds, cfg, torch.device("cpu"))])
    seen: list[tuple[int, int, list[float]]] = []
    real = m.layer_step

    def spy(l, h, y):
        out, row, loss = real(l, h, y)
        seen.append((l, y.shape[1], row[0].tolist()))
        return out, row, loss

    m.layer_step = spy
    rec = m.train_epoch(0)[0]["layers"]
    sizes = [b for l, b, _ in seen if l == 0]
    assert sizes == [32, 32, 18]
    for l in range(2):
        rows = np.array([r for ll, _, r in seen if ll == l])
        w = np.array(sizes, dtype=float)
        assert rec[l]["loss"] == pytest.approx(float((rows[:, 0] * w).sum() / w.sum()), rel=1e-6)
        assert rec[l]["car"] == pytest.approx(float((rows[:, 1] * w).sum() / w.sum()), rel=1e-6, abs=1e-9)
        assert rec[l]["grad_norm"] == pytest.approx(float(rows[:, 2].mean()), rel=1e-6)
    unweighted = float(np.array([r for ll, _, r in seen if ll == 0])[:, 0].mean())
    assert rec[0]["loss"] != pytest.approx(unweighted, rel=1e-9)     # the weighting is visible here
