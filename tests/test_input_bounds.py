"""Inputs bounded or refused before any work, and options that mean what they say: unbounded
sizes (sim clamp --N), missing inputs (sim clamp --vit), unknown fields (vit analyze --group),
--out as a directory (vit plot), a study's run directories resolved under --results (paper)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cffdyn.errors import guarded
from cffdyn.io import atomic_write_json, read_json


def _refused(fn, capsys, prog="cffdyn x") -> str:
    rc = guarded(lambda a: fn(), None, prog)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- unbounded sizes, missing inputs
def test_sim_clamp_refuses_sizes_beyond_a_day_and_missing_vit_files(tmp_path, monkeypatch, capsys):
    from sim import clamp_study, cli
    from sim.clamp_study import CLAMP_FULL, CLAMP_QUICK

    monkeypatch.setattr(clamp_study, "run_clamp", lambda *a, **k: pytest.fail("clamp ran"))
    out = tmp_path / "never"
    err = _refused(lambda: cli.main(["clamp", "--N", "1000000000", "--out", str(out)]), capsys)
    assert "would take about" in err and "N^2" in err and "--N" in err
    err = _refused(lambda: cli.main(["clamp", "--vit", str(tmp_path / "missing.json"), "--out", str(out)]), capsys)
    assert "missing.json: no such file" in err
    assert not out.exists()
    # the estimate scales as trials x window x N^2 from the full preset, which it puts at its own time
    cli._check_clamp_inputs(CLAMP_FULL, (), CLAMP_FULL)
    cli._check_clamp_inputs(CLAMP_QUICK, (), CLAMP_FULL)
    unit = sum(n * n for n in (CLAMP_FULL.N, *CLAMP_FULL.n_scaling))   # N^2 summed over the full preset's sizes
    edge = (cli.CLAMP_MAX_HOURS * 60 / cli._CLAMP_FULL_MIN * unit) ** 0.5  # N (alone) at the time limit
    cli._check_clamp_inputs(CLAMP_FULL.__class__(N=int(0.9 * edge), n_scaling=()), (), CLAMP_FULL)
    with pytest.raises(Exception, match="would take about"):
        cli._check_clamp_inputs(CLAMP_FULL.__class__(N=int(1.1 * edge), n_scaling=()), (), CLAMP_FULL)


def test_crop_pad_is_bounded_by_the_image_side(tmp_path, capsys):
    """--crop-pad 100000 would pad every batch to ~200,000^2 pixels; from crop_pad = side on, a crop
    (offsets 0..2*pad) can miss the image entirely.  Refused when the config is made, in one line,
    before any --out exists; the largest padding that always overlaps the image is accepted."""
    from vit.cli import main as vit_main
    from vit.config import TrainConfig
    from vit.data import IMAGE_SIDE
    from vit.study_cli import main as study_main

    for ds, side in IMAGE_SIDE.items():
        assert TrainConfig(dataset=ds, crop_pad=side - 1).crop_pad == side - 1
        with pytest.raises(ValueError, match=f"crop_pad={side} is not below the {side}-pixel image side"):
            TrainConfig(dataset=ds, crop_pad=side)
    TrainConfig(dataset="digits", image_size=16, crop_pad=15)                   # the upsampled side counts
    with pytest.raises(ValueError, match="use crop_pad <= 15"):
        TrainConfig(dataset="digits", image_size=16, crop_pad=16)
    out = tmp_path / "run"
    err = _refused(lambda: vit_main(["train", "--dataset", "digits", "--crop-pad", "100000", "--out", str(out)]),
                   capsys)
    assert "crop_pad=100000" in err and "use crop_pad <= 7" in err
    err = _refused(lambda: study_main(["--quick", "--set", "crop_pad=100000", "--out", str(out)]), capsys)
    assert "crop_pad=100000" in err and "28-pixel" in err
    assert not out.exists()


# ----------------------------------------------------------------------------- unknown fields
def _runs(root, n=4):
    from vit.train import TrainConfig
    rng = np.random.default_rng(0)
    base = TrainConfig(dataset="fashion_mnist", layers=2, epochs=2)
    for lm in ("clamp", "subtract"):
        for s in range(n):
            cfg = base.replace(loss_mode=lm, seed=s)
            hist = [{"epoch": e, "layers": [{"layer": l, "margin": cfg.margins()[l], "car": float(rng.uniform()),
                                             "grad_norm": 1.0, "loss": 1.0} for l in range(2)]} for e in range(2)]
            atomic_write_json(root / "runs" / f"{lm}_{s}" / "result.json",
                              {"config": cfg.to_dict(), "test_acc": 0.8, "history": hist, "best_epoch": 1})
            (root / "runs" / f"{lm}_{s}" / "log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hist))


def test_vit_analyze_unknown_group_field_is_an_error(tmp_path, capsys):
    from vit.analyze_cli import main
    _runs(tmp_path / "study")
    out = tmp_path / "an"
    err = _refused(lambda: main(["car", str(tmp_path / "study"), "--group", "nosuchfield", "--out", str(out)]), capsys)
    assert "nosuchfield" in err and "not a TrainConfig field" in err and "loss_mode" in err
    assert not out.exists()
    assert main(["car", str(tmp_path / "study"), "--group", "loss_mode", "--out", str(out)]) == 0
    cells = read_json(out / "car.json")["cells"]
    assert sorted(c["levels"]["loss_mode"] for c in cells) == ["clamp", "subtract"] and all(c["n"] == 4 for c in cells)


# ----------------------------------------------------------------------------- --out is a directory
def test_vit_plot_out_is_a_directory(tmp_path, capsys):
    from vit.cli import main
    _runs(tmp_path / "study", n=1)
    run = tmp_path / "study" / "runs" / "clamp_0"
    out = tmp_path / "figs"
    assert main(["plot", str(run), "--out", str(out)]) == 0
    assert (out / "diagnostics.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "figs.png").exists()
    assert f"wrote {out / 'diagnostics.png'}" in capsys.readouterr().out
    assert main(["plot", str(run)]) == 0 and (run / "diagnostics.png").is_file()   # default: the run directory
    err = _refused(lambda: main(["plot", str(run), "--out", str(tmp_path / "x.png")]), capsys)
    assert "--out is a directory" in err
    err = _refused(lambda: main(["plot", str(tmp_path / "norun"), "--out", str(tmp_path / "o2")]), capsys)
    assert "log.jsonl not found" in err and not (tmp_path / "o2").exists()


# ----------------------------------------------------------------------------- paper --results
def test_paper_reads_a_studys_runs_under_results_never_the_cwd(tmp_path, monkeypatch):
    from vit.study import run_results as vit_run_results
    rel = "results/vit/study/quick/runs/clamp_0"
    cwd, X = tmp_path / "cwd", tmp_path / "X"
    atomic_write_json(cwd / rel / "result.json", {"test_acc": 0.11, "where": "cwd"})
    atomic_write_json(X / "vit/study/quick/runs/clamp_0/result.json", {"test_acc": 0.88, "where": "X"})
    study = X / "vit/study/quick/study.json"
    data = {"runs": [{"run_dir": rel}]}
    atomic_write_json(study, data)
    monkeypatch.chdir(cwd)
    (r, res), = vit_run_results(data, study)
    assert res["where"] == "X"
    # an absolute run_dir outside the study's runs/ is still found (a study written with an absolute --out)
    atomic_write_json(tmp_path / "abs" / "clamp_1" / "result.json", {"where": "abs"})
    (_, res), = vit_run_results({"runs": [{"run_dir": str(tmp_path / "abs" / "clamp_1")}]}, study)
    assert res["where"] == "abs"
    # a relative run_dir that exists only in the cwd is not read
    assert vit_run_results({"runs": [{"run_dir": "results/vit/study/quick/runs/only_cwd"}]}, study) == []


@pytest.mark.parametrize("text", ['[]', '42', '{"status": "complete", "analysis": {}}',
                                  '{"status": "complete", "analysis": {"comparisons": []}, "runs": []}'])
def test_paper_study_json_of_the_wrong_shape_is_one_line(tmp_path, capsys, text):
    from paper.sources import STUDIES, MissingResultError, obtain
    study = next(s for s in STUDIES if s.name == "vit_study")
    j = tmp_path / "vit" / "study" / "quick" / "study.json"
    j.parent.mkdir(parents=True)
    j.write_text(text)
    with pytest.raises(MissingResultError):
        obtain(study, tmp_path, "quick", reuse_only=True)
    from paper.cli import main
    err = _refused(lambda: main(["build", "--results", str(tmp_path), "--reuse-only", "--only", "vit_study",
                                 "--out", str(tmp_path / "b"), "--pdf", "never", "--html", "never", "--quiet"]), capsys)
    assert str(j) in err
