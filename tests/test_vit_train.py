"""Training: finite runs of every method, the two-forward identity, detached inputs, resume,
non-finite stop, bad input, Fisher criterion, CLI.  Tiny digits configs (8x8, patch 2)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

import vit.config as vc  # noqa: E402
import vit.device as vd  # noqa: E402
import vit.method as vm  # noqa: E402
from cffdyn.errors import CorruptFileError  # noqa: E402
from vit.cli import main as cli_main  # noqa: E402
from vit.data import load_dataset  # noqa: E402
from vit.diagnostics import fisher_criterion  # noqa: E402
from vit.losses import supcon_loss  # noqa: E402
from vit.config import TrainConfig  # noqa: E402
from vit.device import DeviceData  # noqa: E402
from vit.method import NonFiniteLoss  # noqa: E402
from vit.train import RunInterrupted, build_method, train_run  # noqa: E402

TINY = TrainConfig(dataset="digits", subset=300, embed_dim=16, heads=2, layers=2, patch=2, epochs=2,
                   head_epochs=30, batch_size=64, head_lr=5e-3, device="cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", subset=300, seed=TINY.seed)


@pytest.mark.parametrize("method", ["cff2", "cff1"])
def test_cff_runs_finite_and_learns(digits, method):
    res = train_run(TINY.replace(method=method, epochs=3), progress=False, dataset=digits)
    mlp = train_run(TINY.replace(method=method, epochs=3, model="mlp", embed_dim=32), progress=False,
                    dataset=digits)
    losses = [[r["loss"] for r in h["layers"]] for h in res["history"]]
    assert np.isfinite(losses).all()
    assert losses[-1][0] < losses[0][0]          # layer-0 training loss goes down
    assert mlp["test_acc"] > 0.5                  # 10 classes: chance is 0.1 (a tiny ViT on 8x8 is weak)
    assert [h["layers"][0]["loss"] for h in mlp["history"]][-1] < mlp["history"][0]["layers"][0]["loss"]
    for r in res["per_layer"]:
        assert 0 <= r["car"] <= 1 and r["grad_norm"] > 0 and -1 <= r["neg_sim"] <= 1
    json.dumps(res)  # JSON-able


@pytest.mark.parametrize("method,model", [("bp", "vit"), ("bp", "mlp"), ("ff", "vit"), ("ffcl", "vit"),
                                          ("cff2", "mlp")])
def test_baselines_run_finite(digits, method, model):
    res = train_run(TINY.replace(method=method, model=model, epochs=1, topk=3), progress=False, dataset=digits)
    assert 0 <= res["test_acc"] <= res["test_topk_acc"] <= 1
    assert all(np.isfinite(r["grad_norm"]) for r in res["per_layer"])
    assert len(res["per_layer"]) == (3 if method == "ffcl" else TINY.layers)


def test_concatenated_forward_equals_two_forwards(digits):
    """One forward of [view1; view2] gives the same loss and gradients as two forwards."""
    cfg = TINY.replace(device="cpu")
    m = build_method(cfg, DeviceData(digits, torch.device("cpu"), "crop_flip"))
    layer = m.encoder.layers[0].double()
    g = torch.Generator().manual_seed(0)
    x = m.data.views(m.data.x["train"][:32], g, 2).double().unsqueeze(0)     # stacked, S = 1
    y = m.data.y["train"][:32]
    loss_cat = supcon_loss(layer(x)[0].mean(1), y, margin=0.4, mode="clamp")
    gcat = torch.autograd.grad(loss_cat, list(layer.parameters()))
    f1, f2 = layer(x[:, :32])[0].mean(1), layer(x[:, 32:])[0].mean(1)
    loss_two = supcon_loss([f1, f2], y, margin=0.4, mode="clamp")
    gtwo = torch.autograd.grad(loss_two, list(layer.parameters()))
    torch.testing.assert_close(loss_cat, loss_two)
    for a, b in zip(gcat, gtwo):
        torch.testing.assert_close(a, b)


def test_detached_inputs(digits):
    """Layer 1's loss gradient does not reach layer 0's parameters."""
    m = build_method(TINY, DeviceData(digits, torch.device("cpu"), "crop_flip"))
    g = torch.Generator().manual_seed(0)
    x = m.data.views(m.data.x["train"][:64], g, 2).unsqueeze(0)
    y = m.data.y["train"][:64].unsqueeze(0)
    h, _, _ = m.layer_step(0, x, y)
    assert not h.requires_grad
    before = [p.grad.clone() for p in m.encoder.layers[0].parameters()]
    w_before = [p.detach().clone() for p in m.encoder.layers[0].parameters()]
    m.layer_step(1, h, y)
    for p, g0, w0 in zip(m.encoder.layers[0].parameters(), before, w_before):
        assert torch.equal(p.grad, g0) and torch.equal(p.detach(), w0)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder.layers[1].parameters())


def test_resume_equals_uninterrupted(tmp_path, digits):
    cfg = TINY.replace(epochs=3)
    ref = train_run(cfg, tmp_path / "a", progress=False, dataset=digits)
    with pytest.raises(RunInterrupted):
        train_run(cfg, tmp_path / "b", progress=False, stop_after_epoch=0, dataset=digits)
    assert not (tmp_path / "b" / "result.json").exists()
    assert len((tmp_path / "b" / "log.jsonl").read_text().splitlines()) == 1
    res = train_run(cfg, tmp_path / "b", progress=False, dataset=digits)
    assert res["test_acc"] == ref["test_acc"] and res["best_epoch"] == ref["best_epoch"]
    for ha, hb in zip(ref["history"], res["history"]):
        assert [r["loss"] for r in ha["layers"]] == [r["loss"] for r in hb["layers"]]
    assert len(res["history"]) == 3
    assert len((tmp_path / "b" / "log.jsonl").read_text().splitlines()) == 3
    # a finished run is returned as is, not retrained
    mtime = (tmp_path / "b" / "result.json").stat().st_mtime_ns
    again = train_run(cfg, tmp_path / "b", progress=False, dataset=digits)
    assert again == json.loads((tmp_path / "b" / "result.json").read_text())
    assert (tmp_path / "b" / "result.json").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="different config"):
        train_run(cfg.replace(seed=9), tmp_path / "b", progress=False)


def test_nonfinite_loss_stops_and_keeps_checkpoint(tmp_path, digits, monkeypatch):
    calls = {"n": 0}
    real = vm.supcon_loss

    def poisoned(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        # epoch 1, layer 1, step 0: per epoch 5 steps x 2 layers + 1 validation batch x 2 layers = 12 calls
        if calls["n"] == 12 + 2:
            loss, st = out
            return loss * float("nan"), st
        return out

    monkeypatch.setattr(vm, "supcon_loss", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"layer 1, epoch 1, step 0"):
        train_run(TINY, tmp_path, progress=False, dataset=digits)
    ck = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ck["epoch"] == 0
    assert all(torch.isfinite(t).all() for t in ck["state"]["modules"]["encoder"].values())


def test_bad_config_values():
    with pytest.raises(ValueError, match="outside"):
        TINY.replace(m0=2.5)
    with pytest.raises(ValueError, match="outside"):
        TINY.replace(m_last=-0.1)
    with pytest.raises(ValueError, match="unknown dataset"):
        TINY.replace(dataset="imagenet")
    with pytest.raises(ValueError, match="unknown method"):
        TINY.replace(method="sgd")
    with pytest.raises(ValueError, match="divisible by heads"):
        TINY.replace(embed_dim=15)
    with pytest.raises(ValueError, match="not divisible by the patch"):
        train_run(TINY.replace(patch=3), progress=False)


def test_seeds_derivation():
    s = TINY.resolved_seeds()
    assert s["split"] == TINY.seed and len({s["init"], s["order"], s["aug"]}) == 3
    assert TINY.replace(seed_init=5).resolved_seeds()["init"] == 5
    assert TINY.replace(seed=1).resolved_seeds()["order"] != s["order"]
    assert TrainConfig.from_dict(TINY.to_dict()) == TINY


def test_fisher_matches_numpy():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(200, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (200,), generator=g)
    f[:, 1] += 1.5 * y
    F_, Y = f.numpy(), y.numpy()
    m = F_.mean(0)
    sw, sb = np.zeros((4, 4)), np.zeros((4, 4))
    for c in range(3):
        fc = F_[Y == c]
        mc = fc.mean(0)
        sw += (fc - mc).T @ (fc - mc) / len(fc)
        sb += len(fc) * np.outer(mc - m, mc - m) / len(F_)
    assert fisher_criterion(f, y, ridge=0.0) == pytest.approx(np.trace(np.linalg.solve(sw, sb)), rel=1e-10)
    # well separated classes score higher
    f2 = f.clone()
    f2[:, 1] += 5 * y
    assert fisher_criterion(f2, y) > fisher_criterion(f, y)


def test_cli_train_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli_main(["train", "--dataset", "digits", "--subset", "200", "--embed-dim", "16", "--heads", "2",
                   "--layers", "2", "--patch", "2", "--epochs", "1", "--head-epochs", "1", "--batch-size", "64",
                   "--device", "cpu", "--fisher", "true", "--out", str(out), "--quiet"])
    assert rc == 0
    txt = capsys.readouterr().out
    assert "test acc" in txt and "CAR" in txt
    res = json.loads((out / "result.json").read_text())
    assert len(res["fisher_val"]) == 2 and all(v > 0 for v in res["fisher_val"])
    assert cli_main(["plot", str(out)]) == 0
    assert (out / "diagnostics.png").stat().st_size > 1000
    assert res["precision"] == "fp32" and res["protocol"] == "cffdyn" and res["departures"]
    assert cli_main([]) == 2


def _cli(argv):
    """``cffdyn vit ...`` as the user runs it: guarded (one line, exit code)."""
    from cffdyn.errors import guarded
    try:
        return guarded(lambda a: cli_main(a), argv, "cffdyn vit")
    except SystemExit as exc:              # argparse's own one-line parse errors
        return int(exc.code)


@pytest.mark.parametrize("argv,needle", [
    (["train", "--m0", "3"], "m0"),
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--epochs", "-1"], "--epochs"),
    (["train", "--epoch", "1"], "--epoch"),                      # abbreviations are rejected
    (["train", "--precision", "tf32", "--device", "cpu"], "precision=tf32"),
    (["train", "--protocol", "paper"], "protocol"),
])
def test_cli_train_bad_input_one_line(tmp_path, capsys, argv, needle):
    rc = _cli(argv + ["--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r" / "result.json").exists()


def test_cli_epochs_wording(capsys):
    _cli(["train", "--epochs", "0"])
    a = capsys.readouterr().err
    _cli(["train", "--head-epochs", "-1"])
    b = capsys.readouterr().err
    assert "integer >= 1" in a and "integer >= 0" in b
    with pytest.raises(ValueError, match="epochs=0 must be >= 1"):
        TINY.replace(epochs=0)
    with pytest.raises(ValueError, match="head_epochs=-1 must be >= 0"):
        TINY.replace(head_epochs=-1)


def test_topk_larger_than_classes_is_an_error(tmp_path, capsys):
    rc = _cli(["train", "--dataset", "digits", "--topk", "20", "--epochs", "1", "--device", "cpu",
               "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "topk=20" in err and "10 classes" in err
    assert not (tmp_path / "r" / "ckpt.pt").exists()        # refused before any training


def test_cli_digits_with_default_subset(tmp_path):
    """``--dataset digits`` alone takes the digits preset (whole pool, patch 2)."""
    from vit.config_args import add_train_config_args, train_config_from_args
    from cffdyn.errors import make_parser
    p = make_parser("t")
    add_train_config_args(p)
    argv = ["--dataset", "digits"]
    cfg = train_config_from_args(p.parse_args(argv), argv)
    assert cfg.subset is None and cfg.patch == 2
    argv = ["--dataset", "digits", "--subset", "300"]
    assert train_config_from_args(p.parse_args(argv), argv).subset == 300


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_with_code_is_refused(tmp_path, digits, capsys):
    import pickle
    out = tmp_path / "run"
    out.mkdir()
    (out / "ckpt.pt").write_bytes(pickle.dumps({"configs": [TINY.to_dict()], "epoch": 0, "x": _Evil()}))
    with pytest.raises(CorruptFileError, match="weights_only") as ei:
        train_run(TINY, out, progress=False, dataset=digits)
    assert "pwned" not in capsys.readouterr().out
    assert str(out / "ckpt.pt") in str(ei.value) and "delete it" in str(ei.value)
    assert len(str(ei.value).splitlines()) == 1


def test_corrupt_checkpoint_names_path_and_fix(tmp_path, digits):
    out = tmp_path / "run"
    out.mkdir()
    (out / "ckpt.pt").write_bytes(b"PK\x03\x04 garbage, a torn write")
    with pytest.raises(CorruptFileError) as ei:
        train_run(TINY, out, progress=False, dataset=digits)
    msg = str(ei.value)
    assert str(out / "ckpt.pt") in msg and "delete it" in msg and len(msg.splitlines()) == 1


def test_precision_recorded_and_in_config_hash():
    from vit.cli import _run_name
    assert _run_name(TINY) != _run_name(TINY.replace(precision="bf16"))
    with pytest.raises(ValueError, match="precision=tf32"):
        vd.check_precision("tf32", torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown precision"):
        TINY.replace(precision="fp16")


def test_reference_protocol_has_no_departures(digits):
    ref = TINY.replace(protocol="reference", head_lr=vc.REFERENCE_HEAD_LR, epochs=1, head_epochs=2)
    res = train_run(ref, progress=False, dataset=digits)
    assert res["departures"] == [] and res["protocol"] == "reference"
    # TINY's head lr 5e-3 is not the reference's: a named departure, not a silent one
    assert vc.departures(ref.replace(head_lr=5e-3)) == ["head:lr_0.005_not_0.0005"]
    assert res["head"]["selection"] == "val_ce_aug_view0"
    ours = vc.departures(TINY.replace(method="cff1"))
    assert "cff1:mean_over_anchors_with_positive" in ours and not any(d.startswith("init:") for d in ours)
    assert "init:pos_embedding_std_0.02" in vc.departures(TINY.replace(init="small", protocol="reference"))
    assert TINY.replace(method="bp", protocol="reference").method_lr() == 5e-4


@pytest.mark.parametrize("method", ["bp", "ff", "cff1"])
def test_reference_protocol_baselines_run(digits, method):
    res = train_run(TINY.replace(protocol="reference", method=method, epochs=1, head_epochs=1,
                                 head_lr=vc.REFERENCE_HEAD_LR), progress=False, dataset=digits)
    assert 0 <= res["test_acc"] <= 1 and res["protocol"] == "reference"
    assert res["departures"] == (["ff:label_token_gaussian_embedding"] if method == "ff" else [])
    if method == "bp":
        assert res["per_layer"] == []                     # the reference computes no SupCon probes
    with pytest.raises(ValueError, match="threshold 2"):
        TINY.replace(protocol="reference", method="ff", ff_threshold=1.0)


def test_cff1_reference_averages_over_all_anchors():
    """With a one-view batch where some anchors have no positive, 'reference' divides by all
    anchors, ours by those with a positive: closed-form ratio n_with_pos / n."""
    z = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 3])                  # anchors 4 and 5 have no positive
    ours = supcon_loss(z, y, margin=0.3, mode="clamp", average="positive")
    ref = supcon_loss(z, y, margin=0.3, mode="clamp", average="all")
    torch.testing.assert_close(ref, ours * 4 / 6)
    # with a seed axis each seed is reduced on its own
    zz, yy = torch.stack([z, z.flip(0)]), torch.stack([y, y.flip(0)])
    both = supcon_loss(zz, yy, margin=0.3, mode="clamp", average="all")
    torch.testing.assert_close(both[0], ref)
    torch.testing.assert_close(both[1], supcon_loss(z.flip(0), y.flip(0), margin=0.3, mode="clamp", average="all"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_gpu_run_each_precision(digits, precision):
    res = train_run(TINY.replace(device="cuda", precision=precision, epochs=2), progress=False, dataset=digits)
    assert np.isfinite([r["loss"] for r in res["per_layer"]]).all() and "cuda" in res["device"]


def test_crop_pad_of_the_config_reaches_the_views(digits):
    """crop_pad=0: every view is the clean image or its mirror image (flip only)."""
    data = DeviceData.for_config(digits, TINY.replace(crop_pad=0), torch.device("cpu"))
    x = data.x["train"][:64]
    v = data.views(x, torch.Generator().manual_seed(0), 1)
    c = data.clean(x)
    same = (v - c).abs().flatten(1).amax(1) < 1e-6
    flipped = (v - c.flip(-1)).abs().flatten(1).amax(1) < 1e-6
    assert bool((same | flipped).all()) and same.any() and flipped.any()
    padded = DeviceData.for_config(digits, TINY.replace(crop_pad=2), torch.device("cpu"))
    w = padded.views(x, torch.Generator().manual_seed(0), 1)
    assert not bool(((w - c).abs().flatten(1).amax(1) < 1e-6).all())


def test_diverged_run_is_one_user_error_and_no_result(tmp_path):
    """A non-finite loss or metric stops the run with a RunDiverged (a UserError: one line, exit
    2) naming the epoch and the likely cause, and no result.json is written."""
    from cffdyn.errors import UserError
    from vit.method import RunDiverged
    from vit.train import train_run
    cfg = TrainConfig(dataset="digits", subset=200, patch=2, embed_dim=8, heads=2, layers=1, epochs=1,
                      head_epochs=1, batch_size=64, device="cpu", lr=1e30)
    with pytest.raises(RunDiverged, match=r"epoch 0.*likely cause: the learning rate") as ei:
        train_run(cfg, tmp_path / "r", progress=False)
    assert isinstance(ei.value, UserError) and "\n" not in str(ei.value)
    assert not (tmp_path / "r" / "result.json").exists()


@pytest.mark.parametrize("method,model,names", [
    ("cff2", "vit", ("val_loss_last_layer", "ncm_val_acc")),     # nearest class mean, not the head
    ("bp", "vit", ("val_ce", "val_acc")),
    ("ff", "vit", ("val_ff_loss", "goodness_val_acc")),
    ("ffcl", "vit", ("val_acc", None)),                          # its metric is its accuracy
])
def test_progress_lines_name_their_quantities(digits, capsys, method, model, names):
    """Every number of a progress line has its name: the epoch's accuracy is not a bare 'acc' that
    reads like the summary's (stage-2 head) 'val acc'."""
    import re
    train_run(TINY.replace(method=method, model=model, epochs=1, head_epochs=1), progress=True, dataset=digits)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    tail = last.split(" | ", 1)[1]
    metric, acc = names
    want = rf"{metric} -?\d+\.\d{{4}}" + (rf" {acc} \d\.\d{{3}}" if acc else "")
    assert re.fullmatch(want, tail), last
    assert not re.search(r"(^| )(val|acc) ", tail), last
