"""Recorded files of ``vit train`` and ``vit study`` checked before use: crafted
checkpoints, edited or wrong-shape ``result.json``, a ``study.json`` that is a list.  Every case
goes through the command as a user runs it (``cffdyn vit ...``, guarded): one line naming the file
and the fix, exit 2, no traceback, and nothing trained from the file or written over it."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")

from cffdyn.errors import guarded  # noqa: E402
from cffdyn.io import HASH_KEY, read_json, record_status  # noqa: E402
from vit.cli import build_parser, main as vit_main  # noqa: E402
from vit.config_args import train_config_from_args  # noqa: E402
from vit.train import RunInterrupted, train_run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

# a run small enough for every case to train it, on sklearn digits (8x8, patch 2)
ARGS = ["--dataset", "digits", "--subset", "300", "--epochs", "2", "--head-epochs", "1", "--layers", "1",
        "--embed-dim", "16", "--heads", "2", "--patch", "2", "--batch-size", "64", "--device", "cpu", "--quiet"]


def _vit(argv, capsys) -> tuple[int, str, str]:
    rc = guarded(vit_main, argv, "cffdyn vit")
    cap = capsys.readouterr()
    return rc, cap.out, cap.err.strip()


def _refused(argv, capsys) -> str:
    rc, _, err = _vit(argv, capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A run killed after epoch 0 (its ckpt.pt) and the same run finished (result.json)."""
    ns = build_parser().parse_args(["train", *ARGS])
    cfg = train_config_from_args(ns, ["train", *ARGS])
    root = tmp_path_factory.mktemp("recorded")
    with pytest.raises(RunInterrupted):
        train_run(cfg, root / "killed", progress=False, stop_after_epoch=0)
    done = train_run(cfg, root / "done", progress=False)
    return root, torch.load(root / "killed" / "ckpt.pt", weights_only=True), done


def _first(d: dict):
    return d[next(iter(d))]


def _nan_weight(ck):
    _first(ck["state"]["modules"]["encoder"]).view(-1)[0] = float("nan")


def _inf_moment(ck):
    _first(ck["state"]["optimizers"][0]["state"])["exp_avg_sq"].view(-1)[-1] = float("inf")


def _wrong_weight_shape(ck):
    enc = ck["state"]["modules"]["encoder"]
    enc[next(iter(enc))] = torch.zeros(3, 3)


def _wrong_moment_shape(ck):
    _first(ck["state"]["optimizers"][0]["state"])["exp_avg"] = torch.zeros(2)


def _wrong_best_shape(ck):
    enc = ck["bests"][0]["state"]["encoder"]
    enc[next(iter(enc))] = torch.zeros(1, 5)


@pytest.mark.parametrize("craft,needle", [
    (lambda ck: ck.update(epoch=999), "epoch 999, outside this run's epochs 0..1"),
    (lambda ck: ck.update(epoch=-5), "epoch -5, outside this run's epochs 0..1"),
    (lambda ck: ck.update(epoch=1.0), "epoch 1.0, outside"),
    (_nan_weight, "NaN or infinite values at state/modules/encoder/"),
    (_inf_moment, "NaN or infinite values at state/optimizers[0]/state/"),
    (lambda ck: ck.pop("state"), "lacks 'state'"),
    (lambda ck: ck.pop("histories"), "lacks 'histories'"),
    (lambda ck: ck["histories"][0].append(dict(ck["histories"][0][0], epoch=1)), "histories are not epochs 0..0"),
    (lambda ck: ck["bests"][0].update(epoch=7), "best-epoch records"),
    (_wrong_weight_shape, "is [3, 3] float32, the run has [1, 1, 16, 16] float32"),
    (_wrong_moment_shape, "is [2] float32, its parameter"),
    (_wrong_best_shape, "bests[0]/state/encoder/"),
    (lambda ck: ck["state"]["modules"].pop("encoder"), "missing encoder"),
])
def test_crafted_checkpoint_is_one_line_and_never_trained_from(recorded, tmp_path, capsys, craft, needle):
    root, ck0, _ = recorded
    run = tmp_path / "run"
    shutil.copytree(root / "killed", run)
    ck = copy.deepcopy(ck0)
    craft(ck)
    torch.save(ck, run / "ckpt.pt")
    before = (run / "ckpt.pt").read_bytes()
    err = _refused(["train", *ARGS, "--out", str(run)], capsys)
    assert needle in err and str(run / "ckpt.pt") in err and "delete it" in err and "fresh --out" in err, err
    assert (run / "ckpt.pt").read_bytes() == before           # kept for the user to inspect
    assert not (run / "result.json").exists()                  # nothing trained from it


def test_checkpoint_that_is_a_directory_or_another_pickle(recorded, tmp_path, capsys):
    root, _, _ = recorded
    run = tmp_path / "run"
    shutil.copytree(root / "killed", run)
    (run / "ckpt.pt").unlink()
    (run / "ckpt.pt").mkdir()
    err = _refused(["train", *ARGS, "--out", str(run)], capsys)
    assert f"checkpoint {run / 'ckpt.pt'} is a directory" in err and "rm -r" in err
    (run / "ckpt.pt").rmdir()
    for obj, kind in (([1, 2, 3], "list"), (torch.zeros(3), "Tensor"), (7, "int")):
        torch.save(obj, run / "ckpt.pt")
        err = _refused(["train", *ARGS, "--out", str(run)], capsys)
        assert f"holds a {kind}, not a cffdyn checkpoint" in err and str(run / "ckpt.pt") in err
    assert not (run / "result.json").exists()


def test_intact_checkpoint_still_resumes(recorded, tmp_path, capsys):
    """The control: the untouched checkpoint passes every check and resumes to the same result."""
    root, _, done = recorded
    run = tmp_path / "run"
    shutil.copytree(root / "killed", run)
    rc, out, _ = _vit(["train", *ARGS, "--out", str(run)], capsys)
    assert rc == 0 and f"test acc {done['test_acc']:.4f}" in out
    untimed = lambda hist: [{k: v for k, v in h.items() if not k.endswith("time_s")} for h in hist]  # noqa: E731
    assert untimed(read_json(run / "result.json")["history"]) == untimed(done["history"])


def test_edited_or_wrong_shape_result_is_one_line_and_kept(recorded, tmp_path, capsys):
    root, _, done = recorded
    run = tmp_path / "run"
    shutil.copytree(root / "done", run)
    rp = run / "result.json"
    rc, out, _ = _vit(["train", *ARGS, "--out", str(run)], capsys)     # intact: read back, not retrained
    assert rc == 0 and f"test acc {done['test_acc']:.4f}" in out
    # a fabricated accuracy with the recorded hash left in place: refused, the file untouched
    rec = json.loads(rp.read_text())
    rec["test_acc"] = 0.999
    rp.write_text(json.dumps(rec, indent=2))
    edited = rp.read_text()
    err = _refused(["train", *ARGS, "--out", str(run)], capsys)
    assert str(rp) in err and "changed after it was written" in err and "0.999" not in err
    assert rp.read_text() == edited
    for text in ("[]", "42"):
        rp.write_text(text)
        err = _refused(["train", *ARGS, "--out", str(run)], capsys)
        assert str(rp) in err and "expected a JSON object" in err and rp.read_text() == text


def test_result_without_a_hash_is_recomputed_not_trusted(recorded, tmp_path, capsys):
    """A hand-written record (the hash removed with the edit) is recomputed, said in one note;
    the checkpoint of the finished run makes that stage 2 only, which gives the recorded numbers."""
    root, _, done = recorded
    run = tmp_path / "run"
    shutil.copytree(root / "done", run)
    rp = run / "result.json"
    rec = json.loads(rp.read_text())
    rec.pop(HASH_KEY)
    rec["test_acc"] = 0.999
    rp.write_text(json.dumps(rec))
    rc, out, err = _vit(["train", *ARGS, "--out", str(run)], capsys)
    assert rc == 0 and "test acc 0.9990" not in out and f"test acc {done['test_acc']:.4f}" in out
    assert err.count("carries no content hash") == 1 and str(rp) in err
    new = read_json(rp)
    assert record_status(new) == "ok" and new["test_acc"] == done["test_acc"]
    # a hashed record missing a field the command prints is refused, not half-printed
    from cffdyn.io import atomic_write_json
    atomic_write_json(rp, {k: v for k, v in new.items() if k != "test_topk_acc"})
    assert "lacks test_topk_acc" in _refused(["train", *ARGS, "--out", str(run)], capsys)


@pytest.mark.parametrize("text", ["[]", "42", "[{\"config\": {}}]"])
def test_study_json_of_the_wrong_shape_is_one_line(tmp_path, capsys, text):
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.json").write_text(text)
    argv = ["study", "--factor", "loss_mode=clamp,subtract", "--seeds", "2", "--no-probe", "--quiet",
            "--set", "dataset=digits", "--set", "subset=300", "--set", "patch=2", "--set", "device=cpu",
            "--out", str(out)]
    err = _refused(argv, capsys)
    assert str(out / "study.json") in err and "expected a JSON object" in err
    from cffdyn.io import LOCK_NAME
    assert sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME) == ["study.json"]
    assert (out / "study.json").read_text() == text


def test_study_records_edited_or_unhashed_are_never_reused_verbatim(tmp_path, monkeypatch, capsys):
    """study.json: edited -> one line; without a hash -> assembled again from the runs (nothing
    retrained, no fabricated number survives).  A run's edited result.json -> one line from
    --collect, and the study does not count it as finished."""
    from cffdyn.io import atomic_write_json
    from vit import study_tasks
    from vit.study import StudyConfig, run_study
    from vit.study_cli import main as study_main
    from vit.train import TrainConfig

    base = TrainConfig(dataset="digits", subset=300, patch=2, embed_dim=16, heads=2, layers=1, epochs=1,
                       head_epochs=1, batch_size=128, device="cpu")
    cfg = StudyConfig(base=base, factors=(("loss_mode", ("clamp", "subtract")),), n_seeds=2, n_boot=199, n_perm=199,
                      probe=False)
    out = tmp_path / "s"
    ref = run_study(cfg, out, progress=False)
    sp = out / "study.json"

    def no_training(*a, **k):
        raise AssertionError("a recorded run was trained again")
    monkeypatch.setattr(study_tasks, "train_run", no_training)
    rec = json.loads(sp.read_text())
    rec["runs"][0]["test_acc"] = 0.999
    sp.write_text(json.dumps(rec))
    with pytest.raises(Exception, match="changed after it was written"):
        run_study(cfg, out, progress=False)
    rec.pop(HASH_KEY)
    sp.write_text(json.dumps(rec))
    again = run_study(cfg, out, progress=False)
    assert record_status(read_json(sp)) == "ok" and again["runs"][0]["test_acc"] == ref["runs"][0]["test_acc"]
    assert again["table"] == ref["table"]
    # an edited run record: --collect does not use it; its task is unfinished, the reason named
    rp = Path(ref["runs"][1]["run_dir"]) / "result.json"
    rp.write_text(rp.read_text().replace(f'"test_acc": {ref["runs"][1]["test_acc"]}', '"test_acc": 0.999'))
    capsys.readouterr()
    rc = guarded(study_main, ["--collect", str(out)], "cffdyn vit study")
    cap = capsys.readouterr()
    assert rc == 1 and "INCOMPLETE" in cap.out and "99.9" not in cap.out and "Traceback" not in cap.err
    assert f"{rp} was changed after it was written" in cap.out
    assert read_json(sp)["status"] == "incomplete"
    with pytest.raises(Exception, match="changed after it was written"):   # a study run refuses it too
        run_study(cfg, out, progress=False)
    # the same run without a hash: not finished, so --collect says the study is incomplete
    r = json.loads(rp.read_text())
    r.pop(HASH_KEY)
    rp.write_text(json.dumps(r))
    rc = guarded(study_main, ["--collect", str(out)], "cffdyn vit study")
    cap = capsys.readouterr()
    assert rc == 1 and "INCOMPLETE" in cap.out and "carries no content hash" in cap.err
    atomic_write_json(rp, r)   # (restored for the record; the test's point is above)


def test_resume_removes_the_temp_files_of_a_killed_write(recorded, tmp_path, capsys):
    """A run killed mid-write leaves .log.jsonl.<pid>.<random>.tmp (and .ckpt.pt...); resuming
    removes those of dead writers and leaves a live process's alone."""
    import os
    import subprocess
    import sys

    root, _, done = recorded
    run = tmp_path / "run"
    shutil.copytree(root / "killed", run)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphans = [run / f".log.jsonl.{dead.pid}.k3j_x9.tmp", run / f".ckpt.pt.{dead.pid}.a1b2c3.tmp",
               run / f".result.json.{dead.pid}.zz99yy.tmp"]
    for f in orphans:
        f.write_bytes(b"half a write")
    live = run / f".log.jsonl.{os.getppid()}.ab12cd.tmp"
    live.write_bytes(b"another process's write in progress")
    rc, out, _ = _vit(["train", *ARGS, "--out", str(run)], capsys)
    assert rc == 0 and f"test acc {done['test_acc']:.4f}" in out
    assert not any(f.exists() for f in orphans) and live.exists()
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == \
        ["ckpt.pt", "log.jsonl", "result.json"]


# ----------------------------------------------------------------------------- one writer per --out
STUDY = ["study", "--factor", "loss_mode=clamp,subtract", "--seeds", "2", "--no-probe", "--quiet",
         "--set", "dataset=digits", "--set", "subset=300", "--set", "patch=2", "--set", "device=cpu",
         "--set", "epochs=1", "--set", "head_epochs=1", "--set", "layers=1", "--set", "embed_dim=16",
         "--set", "heads=2"]


def test_train_and_study_take_the_out_lock(tmp_path, capsys):
    """A second process on the same --out gets one line naming the holder's pid (here this process
    holds it on another descriptor, which flock refuses the same way) and writes nothing."""
    import os

    from cffdyn.io import LOCK_NAME, output_dir

    out = tmp_path / "held"
    with output_dir(out):
        for argv in (["train", *ARGS, "--out", str(out)], [*STUDY, "--out", str(out)],
                     ["study", "--collect", str(out)]):
            err = _refused(argv, capsys)
            assert f"in use by another cffdyn process (pid {os.getpid()})" in err and str(out) in err, err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


def test_a_command_refused_before_training_leaves_no_out(tmp_path, capsys):
    runs = [["train", *ARGS, "--topk", "20"],                                          # 10 classes
            ["train", *ARGS[:-1], "--dataset", "cifar10", "--data-root", str(tmp_path / "none")],
            [*STUDY, "--set", "dataset=cifar10", "--set", f"data_root={tmp_path / 'none'}"],
            ["study", "--collect"]]                                                       # no plan there
    for k, argv in enumerate(runs):
        out = tmp_path / f"out{k}"
        _refused(argv + ([str(out)] if argv[-1] == "--collect" else ["--out", str(out)]), capsys)
        assert not out.exists(), argv
