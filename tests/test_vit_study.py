"""vit.study: resumable factorial study, reuse, config parsing, CLI."""
from __future__ import annotations

from pathlib import Path

import pytest

import json

from cffdyn.errors import CorruptFileError, UserError
from cffdyn.io import read_json
from vit import study, study_tasks
from vit.config_args import parse_field_value
from vit.study import StudyConfig, run_study
from vit.study_cli import main as study_main
from vit.train import RunInterrupted, TrainConfig

TINY = TrainConfig(dataset="digits", subset=300, patch=2, embed_dim=16, heads=2, layers=2, epochs=2,
                   head_epochs=2, batch_size=128, device="cpu")
CFG = StudyConfig(base=TINY, n_seeds=2, n_boot=199, n_perm=199)


def _strip(res):
    return {k: res[k] for k in ("config", "design", "analysis", "table", "status")}


def test_killed_study_resumes_to_the_same_table_without_retraining(tmp_path, monkeypatch):
    ref = run_study(CFG, tmp_path / "ref", progress=False)
    n_runs = len(ref["runs"])
    assert ref["status"] == "complete" and n_runs == 8

    real = study_tasks.train_run
    trained: list[tuple] = []
    k = 3

    def killing(cfg, out_dir=None, **kw):
        fresh = not (Path(out_dir) / "result.json").is_file()
        if fresh and len(trained) == k:
            # the (k+1)-th run dies after its first epoch is checkpointed, then the study dies
            real(cfg, out_dir, stop_after_epoch=0, **kw)
        if fresh:
            trained.append((cfg.seed, cfg.loss_mode, cfg.method))
        return real(cfg, out_dir, **kw)

    monkeypatch.setattr(study_tasks, "train_run", killing)
    with pytest.raises(RunInterrupted):
        run_study(CFG, tmp_path / "b", progress=False)
    part = read_json(tmp_path / "b" / "study.json")
    assert part["status"] == "running" and len(part["runs"]) == k
    ckpts = list((tmp_path / "b" / "runs").glob("*/ckpt.pt"))
    assert len(ckpts) == k + 1          # k finished runs and the interrupted one

    calls: list[tuple] = []

    def counting(cfg, out_dir=None, **kw):
        if not (Path(out_dir) / "result.json").is_file():
            calls.append((cfg.seed, cfg.loss_mode, cfg.method))
        return real(cfg, out_dir, **kw)

    monkeypatch.setattr(study_tasks, "train_run", counting)
    res = run_study(CFG, tmp_path / "b", progress=False)
    assert len(calls) == n_runs - k                       # finished runs were not retrained
    assert not set(calls) & set(trained)
    assert res["timing"]["n_reused"] == k
    assert _strip(res) == _strip(ref)                     # same numbers, same table
    # a complete study with the same config is returned as recorded, nothing is called
    calls.clear()
    again = run_study(CFG, tmp_path / "b", progress=False)
    assert calls == [] and again == read_json(tmp_path / "b" / "study.json")
    assert (tmp_path / "b" / "study.png").stat().st_size > 0


def test_extending_seeds_reuses_existing_runs(tmp_path, monkeypatch):
    small = CFG.replace(n_seeds=2, factors=(("loss_mode", ("clamp", "subtract")),), base=TINY.replace(epochs=1))
    run_study(small, tmp_path, progress=False)
    real = study_tasks.train_run
    calls = []

    def counting(cfg, out_dir=None, **kw):
        if not (Path(out_dir) / "result.json").is_file():
            calls.append(cfg.seed)
        return real(cfg, out_dir, **kw)

    monkeypatch.setattr(study_tasks, "train_run", counting)
    res = run_study(small.replace(n_seeds=3), tmp_path, progress=False)
    assert sorted(calls) == [2, 2]
    assert [c["n"] for c in res["analysis"]["cells"]] == [3, 3]


def test_table_values_match_the_run_results(tmp_path):
    res = run_study(CFG.replace(factors=(("loss_mode", ("clamp", "subtract")),), n_seeds=2), tmp_path, progress=False)
    for cell in res["analysis"]["cells"]:
        vals = [read_json(Path(r["run_dir"]) / "result.json")["test_acc"] for r in res["runs"]
                if r["cell"] == cell["levels"]]
        assert cell["values"] == vals and cell["mean"] == pytest.approx(sum(vals) / len(vals))


def test_config_validation_and_parsing():
    assert parse_field_value("epochs", "3") == 3
    assert parse_field_value("m0", "0.25") == 0.25
    assert parse_field_value("seed_init", "none") is None
    assert parse_field_value("cuda_graph", "false") is False
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        parse_field_value("nope", "1")
    with pytest.raises(ValueError, match="int"):
        parse_field_value("epochs", "x")
    with pytest.raises(ValueError, match="2 levels"):
        CFG.replace(factors=(("loss_mode", ("clamp",)),))
    with pytest.raises(ValueError, match="loss_mode"):
        CFG.replace(factors=(("loss_mode", ("clamp", "bogus")),))
    with pytest.raises(ValueError, match="seed axis"):
        CFG.replace(factors=(("seed", (1, 2)),))
    assert study.QUICK.n_seeds == 3 and study.FULL.n_seeds >= 12
    assert StudyConfig.from_dict(CFG.to_dict()) == CFG


def test_cli_runs_a_study_with_factors_and_overrides(tmp_path, capsys):
    rc = study_main(["--factor", "m0=0.2,0.4", "--seeds", "2", "--set", "dataset=digits", "--set", "subset=300",
                     "--set", "patch=2", "--set", "embed_dim=16", "--set", "heads=2", "--set", "layers=1",
                     "--set", "epochs=1", "--set", "head_epochs=1", "--set", "device=cpu", "--n-boot", "199",
                     "--n-perm", "199", "--quiet", "--out", str(tmp_path)], prog="cffdyn vit study")
    assert rc == 0
    out = capsys.readouterr().out
    assert "m0: 0.2 vs 0.4" in out and "variance ratio" in out
    saved = read_json(tmp_path / "study.json")
    assert saved["config"]["factors"] == [["m0", [0.2, 0.4]]] and saved["config"]["base"]["epochs"] == 1
    with pytest.raises(UserError, match="expected FIELD=VALUE"):
        study_main(["--set", "epochs"], prog="x")


@pytest.mark.parametrize("argv, match", [
    (["--set", "data_root=/nonexistent"], "--data-root"),
    (["--data-root", "/nonexistent"], "--data-root"),
    (["--factor", "loss_mode=clamp"], "1 level"),
    (["--seeds", "1"], "at least 2 seeds"),
    (["--set", "loss_mode=bogus"], "loss_mode"),
    (["--set", "protocol=bogus"], "protocol"),
    pytest.param(["--preset", "fmnist-full"], "GPU", marks=pytest.mark.skipif(
        __import__("torch").cuda.is_available(), reason="only without a GPU")),
])
def test_bad_study_input_is_one_line_without_usage(argv, match, tmp_path, capsys):
    from cffdyn.errors import guarded
    rc = guarded(lambda a: study_main(a, prog="cffdyn vit study"), argv + ["--out", str(tmp_path / "o")],
                 "cffdyn vit study")
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and match in err and "usage" not in err
    assert not (tmp_path / "o" / "study.json").exists()


def test_truncated_result_json_is_one_line_naming_it_and_nothing_is_lost(tmp_path, capsys):
    cfg = CFG.replace(factors=(("loss_mode", ("clamp", "subtract")),), n_seeds=2)
    cell, seed = study.cell_runs(cfg)[0]
    rd = study.run_dir(tmp_path, cfg, cell, seed)
    rd.mkdir(parents=True)
    (rd / "result.json").write_text('{"config": {"dataset": "dig')
    (tmp_path / "study.json").write_text('{"config": {}, "status": "running", "runs": []}')
    before = (tmp_path / "study.json").read_bytes()
    with pytest.raises(CorruptFileError, match=str(rd / "result.json")):
        run_study(cfg, tmp_path, progress=True)
    assert (tmp_path / "study.json").read_bytes() == before
    assert (rd / "result.json").read_text() == '{"config": {"dataset": "dig'
    err = capsys.readouterr().err
    assert "runs planned" not in err          # refused while counting the recorded runs, before any plan


def test_independent_seeds_design_and_refusal_to_resume_the_other_way(tmp_path):
    ind = CFG.replace(independent_seeds=True, n_seeds=3)
    seeds = [ind.seeds(c) for c in ind.cells()]
    assert sorted(sum(seeds, [])) == list(range(12))          # no seed shared between cells
    assert [sd for _, sd in study.cell_runs(ind)][:4] == [0, 3, 6, 9]
    matched = CFG.replace(n_seeds=3)
    assert all(matched.seeds(c) == [0, 1, 2] for c in matched.cells())
    (tmp_path / "study.json").write_text(json.dumps({"config": matched.to_dict(), "status": "running", "runs": []}))
    before = (tmp_path / "study.json").read_bytes()
    with pytest.raises(UserError, match="matched seeds.*--independent-seeds"):
        run_study(ind, tmp_path, progress=False)
    assert (tmp_path / "study.json").read_bytes() == before


def test_presets_print_a_projected_wall_time():
    for name in ("quick", "fmnist-full", "cifar10-steier"):
        cfg = study.PRESETS[name]
        assert cfg.n_seeds >= 3 and len(cfg.cells()) == 4
        txt = study.describe_projection(cfg, "cuda")
        assert "projected wall time" in txt and "estimate" in txt
    ff = study.PRESETS["fmnist-full"]
    assert ff.base.subset is None and ff.n_seeds == 7 and (ff.base.embed_dim, ff.base.heads, ff.base.layers,
                                                            ff.base.patch) == (128, 4, 5, 4)
    assert 7 * 60 < study.projected_wall_s(ff, "cuda") < 13 * 60
    cs = study.PRESETS["cifar10-steier"]
    assert cs.base.dataset == "cifar10" and (cs.base.epochs, cs.base.head_epochs, cs.n_seeds) == (600, 50, 7)
    # the quick preset keeps its image subset fixed across seeds
    assert study.QUICK.base.seed_subset is not None and study.QUICK.base.seed_split is None


def test_wall_model_is_computed_from_its_record(tmp_path, monkeypatch):
    import shutil

    from cffdyn.io import atomic_write_json, read_json as rj

    model = study.wall_model()
    rec = rj(study.WALL_MODEL_DIR / "record.json", verify=False)
    for dev, m in rec["payload"]["devices"].items():
        f = (1.0 + rec["payload"]["eval_overhead"]) if m["includes_eval"] else 1
        want = m["wall_s"] / (f * m["images"] * m["epochs"] * m["seeds"] * m["cell_equivalents"])
        assert model["devices"][dev]["s_per_image_epoch_seed"] == want
    # the quick preset on the CPU projects back to the quick study's own measured wall time
    assert study.projected_wall_s(study.QUICK, "cpu") == pytest.approx(rec["payload"]["devices"]["cpu"]["wall_s"])

    # an install without recorded/: no measured figure, said so
    monkeypatch.setattr(study, "RECORDED_ROOT", tmp_path / "absent")
    study.wall_model.cache_clear()
    try:
        assert study.projected_wall_s(study.QUICK, "cpu") is None
        assert "no measured figure" in study.describe_projection(study.QUICK, "cpu")
    finally:
        study.wall_model.cache_clear()
    # a missing, edited or malformed record: one line naming the file
    with pytest.raises(UserError, match="no wall-time record at"):
        study.wall_model(tmp_path / "none")
    d = tmp_path / "bad"
    shutil.copytree(study.WALL_MODEL_DIR, d)
    bad = rj(d / "record.json", verify=False)
    bad["payload"]["devices"]["cpu"]["wall_s"] = 500.0          # its content hash left as it was
    (d / "record.json").write_text(json.dumps(bad))
    with pytest.raises(UserError, match="edited after it was recorded"):
        study.wall_model(d)
    d2 = tmp_path / "malformed"
    shutil.copytree(study.WALL_MODEL_DIR, d2)
    bad = rj(d2 / "record.json", verify=False)
    bad["payload"]["devices"]["cpu"]["seeds"] = 0               # hashed again: whole, but not a model
    atomic_write_json(d2 / "record.json", bad)
    with pytest.raises(UserError, match="not a wall-time model record.*seeds"):
        study.wall_model(d2)


def test_batched_study_matches_sequential_and_resumes(tmp_path, monkeypatch):
    import vit.cff as vc
    import vit.train as vb

    cfg = CFG.replace(factors=(("loss_mode", ("clamp", "subtract")),), n_seeds=2)
    seq = run_study(cfg, tmp_path / "seq", progress=False)
    bcfg = cfg.replace(batched=True)
    # kill the second cell's batched pass after its first epoch is checkpointed
    real = vb.train_runs
    state = {"n": 0}

    def killing(rcs, dirs, **kw):
        if "__batched__" not in str(kw.get("ckpt")):   # train_run (S = 1) goes through train_runs too
            return real(rcs, dirs, **kw)
        state["n"] += 1
        if state["n"] == 2:
            orig = vc.CFF.train_epoch

            def once(self, epoch):
                if epoch == 1:
                    raise RunInterrupted("killed")
                return orig(self, epoch)
            monkeypatch.setattr(vc.CFF, "train_epoch", once)
            try:
                return real(rcs, dirs, **kw)
            finally:
                monkeypatch.setattr(vc.CFF, "train_epoch", orig)
        return real(rcs, dirs, **kw)

    monkeypatch.setattr(vb, "train_runs", killing)
    with pytest.raises(RunInterrupted):
        run_study(bcfg, tmp_path / "bat", progress=False)
    assert len(list((tmp_path / "bat" / "runs").glob("*__batched__*.pt"))) == 1
    res = run_study(bcfg, tmp_path / "bat", progress=False)
    assert state["n"] == 3 and not list((tmp_path / "bat" / "runs").glob("*.pt.*"))
    for rs, rb in zip(seq["runs"], res["runs"]):
        assert rs["cell"] == rb["cell"] and rs["seed"] == rb["seed"]
        rj = read_json(Path(rb["run_dir"]) / "result.json")
        assert rj["seed_batch"]["n_seeds"] == 2
        # same algorithm; float32 rounding differs between batched and separate matmuls
        # (30 validation images: one image flipped by fp32 rounding is 0.033)
        assert rb["val_acc"] == pytest.approx(rs["val_acc"], abs=0.035)
        assert rb["best_epoch"] == rs["best_epoch"]


def test_the_quick_preset_help_names_the_preset_as_configured():
    from vit.study_cli import PRESET_HELP
    b, text = study.QUICK.base, PRESET_HELP["quick"]
    assert f"x {study.QUICK.n_seeds} seeds" in text and f"{b.subset:,}-image" in text
    assert f"ViT[{b.embed_dim} {b.heads} {b.layers}] patch {b.patch}, batch {b.batch_size}, {b.epochs} epochs" in text
    assert f"crop padding {b.crop_pad}" in text
