"""A run that diverges inside a study: recorded as failed, the study goes on, the statistics say so.

The divergence is real (a learning rate of 1e30 makes the loss non-finite in the first epoch:
:class:`vit.method.RunDiverged`), except in the test of the paired alignment, where one chosen
run is made to raise the same error so that the other seeds of its cell survive.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cffdyn.io import read_json
from vit import study_tasks
from vit.method import RunDiverged
from vit.study import StudyConfig, cell_runs, run_dir, run_study
from vit.study_cli import main as study_main
from vit.train import TrainConfig

TINY = TrainConfig(dataset="digits", subset=300, patch=2, embed_dim=16, heads=2, layers=1, epochs=1,
                   head_epochs=1, batch_size=128, device="cpu")
#: one cell trains, the other diverges at its first step
LR_CFG = StudyConfig(base=TINY, factors=(("lr", (1e-3, 1e30)),), n_seeds=2, n_boot=199, n_perm=199, probe=False)


def _counting(monkeypatch):
    real = study_tasks.train_run
    calls: list[tuple] = []

    def counting(cfg, out_dir=None, **kw):
        calls.append((cfg.lr, cfg.seed))
        return real(cfg, out_dir, **kw)

    monkeypatch.setattr(study_tasks, "train_run", counting)
    return calls


def test_a_diverged_cell_is_recorded_failed_the_rest_trains_and_a_rerun_reads_it_back(tmp_path, monkeypatch, capsys):
    calls = _counting(monkeypatch)
    from cffdyn.errors import guarded
    argv = ["--factor", "lr=0.001,1e30", "--seeds", "2", "--no-probe", "--n-boot", "199", "--n-perm", "199",
            *_tiny_sets(), "--out", str(tmp_path), "--quiet"]
    assert guarded(lambda a: study_main(a, prog="cffdyn vit study"), argv, "cffdyn vit study") == 2
    cap = capsys.readouterr()
    out, err = cap.out, cap.err
    assert len(err.strip().splitlines()) == 1 and "2 of 4 runs diverged" in err and "no statistics" in err
    assert sorted(calls) == [(1e-3, 0), (1e-3, 1), (1e30, 0), (1e30, 1)]     # every run was tried
    res = read_json(tmp_path / "study.json")
    assert res["status"] == "complete" and res["n_failed"] == 2 and res["analysis"] is None
    assert [r["cell"]["lr"] for r in res["runs"]] == [1e-3, 1e-3]             # the finite runs are recorded
    assert {(f["cell"]["lr"], f["seed"]) for f in res["failed_runs"]} == {(1e30, 0), (1e30, 1)}
    for f in res["failed_runs"]:
        assert "non-finite" in f["reason"] and "learning rate" in f["reason"]
        assert (Path(f["run_dir"]) / "failed.json").is_file() and not (Path(f["run_dir"]) / "result.json").exists()
    assert "FAILED: 2 of 4 runs diverged" in res["table"] and "2 run(s) FAILED" in out
    assert "nan" not in json.dumps(res).lower().replace("nano", "")

    # the rerun trains nothing: the finished runs and the recorded divergences are read back
    calls.clear()
    cfg = _study_cfg_from_record(res)
    again = run_study(cfg, tmp_path, progress=False)
    assert calls == [] and again["n_failed"] == 2

    # deleting a failure retries that run (and it diverges again, deterministically)
    (Path(res["failed_runs"][0]["run_dir"]) / "failed.json").unlink()
    (tmp_path / "study.json").unlink()
    run_study(cfg, tmp_path, progress=False)
    assert calls == [(1e30, res["failed_runs"][0]["seed"])]


def _tiny_sets() -> list[str]:
    return [a for k, v in (("dataset", "digits"), ("subset", 300), ("patch", 2), ("embed_dim", 16), ("heads", 2),
                           ("layers", 1), ("epochs", 1), ("head_epochs", 1), ("batch_size", 128), ("device", "cpu"))
            for a in ("--set", f"{k}={v}")]


def _study_cfg_from_record(res):
    return StudyConfig.from_dict(res["config"])


def test_failed_run_leaves_the_paired_statistics_on_the_seeds_of_every_cell(tmp_path, monkeypatch):
    """Seed 1 of the subtract cell diverges: that cell has seeds {0, 2, 3}, the clamp cell
    {0, 1, 2, 3}, and the paired comparison aligns on {0, 2, 3}: the same statistics as
    :func:`vit.factorial.compare_levels` of those seeds' runs alone."""
    cfg = StudyConfig(base=TINY, factors=(("loss_mode", ("clamp", "subtract")),), n_seeds=4, n_boot=199, n_perm=199,
                      probe=False)
    real = study_tasks.train_run

    def one_diverges(rc, out_dir=None, **kw):
        if rc.loss_mode == "subtract" and rc.seed == 1:
            raise RunDiverged("non-finite loss at layer 0, epoch 0, step 3 (test)", position=0)
        return real(rc, out_dir, **kw)

    monkeypatch.setattr(study_tasks, "train_run", one_diverges)
    res = run_study(cfg, tmp_path / "a", progress=False)
    an = res["analysis"]
    assert res["n_failed"] == 1 and an["n_failed"] == 1
    by_cell = {c["levels"]["loss_mode"]: c for c in an["cells"]}
    assert by_cell["subtract"]["n_failed"] == 1 and by_cell["clamp"]["n_failed"] == 0
    assert by_cell["subtract"]["seeds"] == [0, 2, 3] and by_cell["clamp"]["seeds"] == [0, 1, 2, 3]
    (cmp,) = an["comparisons"]
    assert cmp["paired"]["n_pairs"] == 3

    from vit import factorial
    vals = {c: [r["metric"] for r in sorted(res["runs"], key=lambda r: r["seed"])
                if r["cell"]["loss_mode"] == c and r["seed"] != 1] for c in ("clamp", "subtract")}
    ref = factorial.compare_levels([vals["clamp"]], [vals["subtract"]], matched=True, alpha=cfg.alpha, n_boot=cfg.n_boot,
                               n_perm=cfg.n_perm, seed=cfg.stats_seed, assumed_ratio=cfg.assumed_ratio,
                               assumed_corr=cfg.assumed_corr, target_power=cfg.target_power)
    assert cmp["paired"] == ref["paired"]


def test_a_batched_pass_records_the_diverged_seed_and_trains_the_others_again(tmp_path):
    """Every seed of the 1e30 cell diverges: each is recorded with its own seed, one pass at a time
    (the stack shrinks by the seed that failed), and no batched checkpoint is left behind."""
    cfg = LR_CFG.replace(batched=True, n_seeds=3)
    res = run_study(cfg, tmp_path, progress=False)
    assert res["n_failed"] == 3 and {f["seed"] for f in res["failed_runs"]} == {0, 1, 2}
    for f in res["failed_runs"]:
        rec = read_json(Path(f["run_dir"]) / "failed.json")
        assert rec["config"]["seed"] == f["seed"] and rec["config"]["lr"] == 1e30
    ok = [r for r in res["runs"]]
    assert len(ok) == 3 and all(r["cell"]["lr"] == 1e-3 for r in ok)
    assert not list((tmp_path / "runs").glob("*__batched__*.pt"))
    for cell, seed in cell_runs(cfg):
        assert study_tasks.run_finished(cfg.run_config(cell, seed), run_dir(tmp_path, cfg, cell, seed))


def test_an_edited_failure_record_is_not_trusted(tmp_path, monkeypatch):
    cfg = LR_CFG
    run_study(cfg, tmp_path, progress=False)
    cell, seed = [(c, s) for c, s in cell_runs(cfg) if c[0] == 1e30][0]
    p = run_dir(tmp_path, cfg, cell, seed) / "failed.json"
    rec = json.loads(p.read_text())
    rec["reason"] = "edited"
    p.write_text(json.dumps(rec))
    assert study_tasks.read_failure(cfg.run_config(cell, seed), p.parent) is None
    calls = _counting(monkeypatch)
    (tmp_path / "study.json").unlink()
    run_study(cfg, tmp_path, progress=False)
    assert calls == [(1e30, seed)]        # retrained (and recorded again), not read back
    assert read_json(p)["reason"] != "edited"


def test_a_probe_record_is_reused_only_when_intact_and_of_its_config(tmp_path, monkeypatch):
    """The raw-pixel probe of a seed is read back like a run's result: an edited or header-less
    file is trained again, not trusted."""
    from vit.study_config import probe_path

    cfg = LR_CFG.replace(factors=(("loss_mode", ("clamp", "subtract")),), probe=True)
    run_study(cfg, tmp_path, progress=False)
    p = probe_path(tmp_path, cfg, 0)
    assert study_tasks.read_probe(cfg, tmp_path, 0)["seed"] == 0
    rec = json.loads(p.read_text())
    assert rec["config"] == study_tasks.probe_config(cfg, 0).to_dict()
    rec["test_acc"] = 0.99                                  # a fabricated accuracy keeping the old hash
    p.write_text(json.dumps(rec))
    assert study_tasks.read_probe(cfg, tmp_path, 0) is None
    (tmp_path / "study.json").unlink()
    res = run_study(cfg, tmp_path, progress=False)
    assert res["probe"]["runs"][0]["test_acc"] != 0.99 and study_tasks.read_probe(cfg, tmp_path, 0) is not None
