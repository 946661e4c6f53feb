"""The five studies run end to end on tiny configs (JSON + PNG, reuse), and the CLI."""
from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest

from sim import studies as S
from sim.cli import main

TINY = {
    "convergence": dataclasses.replace(S.CONVERGENCE_QUICK, Ns=(300, 1200, 4800), trials=8, t_end=2.0,
                                       q0=0.5, n_records=8, full_check_trials=4, dt=0.02, n_boot=50),
    "hfunc": dataclasses.replace(S.HFUNC_QUICK, activations=("tanh", "identity"), taus=(0.5,), n_grid=21,
                                 n_starts=7),
    "phase": dataclasses.replace(S.PHASE_QUICK, t_end=300.0, dt=1.5, n_grid=9, table=401, kurtoses=(1.0, 3.0),
                                 n_grid_m4=7, sgd_N=200, sgd_starts=((0.3, 0.2),)),
    "noise": dataclasses.replace(S.NOISE_QUICK, taus=(1.0,), rhos=(0.0, -1.0), sn2=(0.0, 0.5),
                                 sgd_sn2=(0.5,), sgd_N=300, sgd_trials=3, sgd_t_end=2.0),
    "clamp": dataclasses.replace(S.CLAMP_QUICK, margins=(0.1, 0.3), sns=(0.0,), batches=(1,), N=200, trials=4,
                                 window=12.0, n_scaling=(200,), bridge_margins=(0.1,), fc_trials=2, fc_t_end=1.0,
                                 scaling_cells=(("subtract", 0.0, 0.0, 1),), oja=False),
}


@pytest.mark.parametrize("name", list(TINY))
def test_study_runs_writes_and_reuses(name, tmp_path):
    run = S.STUDIES[name][0]
    res = run(TINY[name], tmp_path, progress=False)
    assert (tmp_path / f"{name}.json").exists() and (tmp_path / f"{name}.png").stat().st_size > 1000
    assert res["reused"] is False
    stored = json.loads((tmp_path / f"{name}.json").read_text())
    assert stored["config"] == res["config"]
    again = run(TINY[name], tmp_path, progress=False)
    assert again["reused"] is True
    if name == "noise":
        c = res["curves"][0]
        assert c["vs_notes"] and c["max_abs_diff_notes"] < 3e-3
    if name == "clamp":  # m = 0.3 at sn = 0 is fully clamped: an outcome, not a number
        fc = [r for r in res["rows"] if r["margin"] == 0.3][0]
        assert fc["outcome"] == "fully_clamped" and fc["ratio"] is None
        ok = [r for r in res["rows"] if r["margin"] == 0.1][0]
        assert ok["ratio_pred"] > 0 and ok["ratio"]["ci95"][0] < ok["ratio"]["ci95"][1]
    if name == "convergence":
        assert res["exponent_ci95"][0] < res["exponent"] < res["exponent_ci95"][1]
        assert all("escape" in r["bias"] and r["bias"]["end"]["se"] > 0 for r in res["rows"])
    if name == "hfunc":
        L = res["learnability"]["tanh"]
        assert abs(L["kappa"] - 0.1818) < 1e-4
        cur = res["curves"][0]
        assert abs(cur["slope_at_0"] - cur["slope_at_0_linearised"]) < 1e-6


def test_phase_json_holds_its_portrait_and_the_figure_is_vector_at_print_size(tmp_path):
    """The stored grid of winners decodes to the study's own shares and count of initial
    conditions; the portrait is drawn from the JSON alone, vector, fonts >= the floor at its
    printed width; a result without the grid is one line."""
    from cffdyn.figures import RC, TEXT_WIDTH_IN, save_figure, small_fonts
    from cffdyn.io import read_json
    res = S.run_phase(TINY["phase"], tmp_path, progress=False)
    d = read_json(tmp_path / "phase.json")
    g, W = S.winner_grid(d)
    n = TINY["phase"].n_grid
    assert W.shape == (n, n) and g[0] == -g[-1] and int(W.count()) == d["n_ics"]
    for k in (1, 2):
        assert abs(float((W.compressed() == k).mean()) - d[f"share_feature{k}"]) < 1e-12
    inside = np.add.outer(g ** 2, g ** 2) < g[-1] ** 2
    assert np.array_equal(~W.mask, inside)
    # W[i, j] is the start (Q1, Q2) = (g[i], g[j]): a start near an axis goes to that axis's feature
    mid, near = n // 2, n - 2
    assert abs(g[mid]) < 1e-12 and W[near, mid] == 1 and W[mid, near] == 2
    assert np.allclose([p[0] for p in d["sgd_paths"]], TINY["phase"].sgd_starts, atol=1e-3)
    fig = S.fig_phase(d)
    fig.savefig(io.BytesIO(), format="png")   # as the study saves it: outside the style, ticks made now
    assert fig.get_figwidth() == TEXT_WIDTH_IN and small_fonts(fig, TEXT_WIDTH_IN) == []
    assert {t.get_fontsize() for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()} \
        == {RC["xtick.labelsize"]}
    pdf = save_figure(fig, tmp_path / "fig", "mf_phase")
    assert b"/Subtype /Image" not in pdf.read_bytes()
    with pytest.raises(ValueError, match="no grid of winners"):
        S.fig_phase({k: v for k, v in res.items() if k != "winners"})


def test_fit_exponent_recovers_power_law():
    Ns = [100, 1000, 10000]
    slope, se = S.fit_exponent(Ns, [3.0 * n ** -0.5 for n in Ns])
    assert abs(slope + 0.5) < 1e-12


def test_cli_help_and_eigen_routing(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"], prog="cffdyn sim")
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("convergence", "hfunc", "phase", "noise", "clamp", "bench", "eigen"):
        assert cmd in out
    with pytest.raises(SystemExit):
        main(["clamp", "--help"], prog="cffdyn sim")
    assert "--preset" in capsys.readouterr().out
    try:  # routed to sim.eigen_cli (its argparse exits on --help), or a clear error (rc 2)
        rc = main(["eigen", "--help"], prog="cffdyn sim")
    except SystemExit as e:
        rc = e.code
    assert rc in (0, 2)
    out = capsys.readouterr()
    assert "cffdyn sim eigen" in out.out + out.err or "not available" in out.err


def test_cli_runs_a_study(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(S.STUDIES, "hfunc", (S.run_hfunc, TINY["hfunc"], TINY["hfunc"]))
    assert main(["hfunc", "--out", str(tmp_path), "--quiet"], prog="cffdyn sim") == 0
    assert "hfunc" in capsys.readouterr().out and (tmp_path / "hfunc.json").exists()


@pytest.mark.parametrize("argv,needle", [
    (["convergence", "--trials", "0"], "--trials"), (["convergence", "--seed", "-1"], "--seed"),
    (["bench", "--N", "1"], "--N"), (["bench", "--sn", "-1"], "--sn"), (["clamp", "--N", "nan"], "--N"),
    (["clamp", "--window", "0"], "--window"), (["convergence", "--trial", "3"], "--trial")])
def test_cli_bad_options_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv, prog="cffdyn sim")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err


@pytest.mark.parametrize("cmd", ["hfunc", "clamp", "convergence"])
def test_cli_unwritable_out_fails_before_work(cmd, tmp_path, capsys):
    from cffdyn.errors import UserError
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        main([cmd, "--out", str(f), "--quiet"], prog="cffdyn sim")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os
        if os.access(ro, os.W_OK):  # root ignores permissions
            pytest.skip("running as root")
        with pytest.raises(UserError, match="cannot be written"):
            main([cmd, "--out", str(ro / "x"), "--quiet"], prog="cffdyn sim")
    finally:
        ro.chmod(0o700)


def test_clamp_bad_configs_one_line(tmp_path):
    from cffdyn.errors import UserError
    with pytest.raises(UserError, match="below 100"):
        main(["clamp", "--N", "50", "--out", str(tmp_path), "--quiet"], prog="cffdyn sim")
    with pytest.raises(UserError, match="no clamped cell"):
        main(["clamp", "--preset", "quick", "--margins", "0.3", "--sns", "0", "--batches", "1", "--out",
              str(tmp_path), "--quiet"], prog="cffdyn sim")
    with pytest.raises(UserError, match="correlation times"):
        main(["clamp", "--preset", "quick", "--margins", "0.1", "--sns", "0", "--batches", "1", "--window", "2",
              "--out", str(tmp_path), "--quiet"], prog="cffdyn sim")
    assert not (tmp_path / "clamp.json").exists()


def test_cli_prints_a_summary_not_the_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(S.STUDIES, "hfunc", (S.run_hfunc, TINY["hfunc"], TINY["hfunc"]))
    assert main(["hfunc", "--out", str(tmp_path), "--quiet"], prog="cffdyn sim") == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 5 and str(tmp_path / "hfunc.json") in out


def test_vit_points_tolerant(tmp_path):
    from sim.clamp_study import vit_points
    good = {"runs": [{"cell": {"loss_mode": mode, "method": "cff2"}, "metric": v, "car_layer0": 0.3}
                     for mode, vals in (("clamp", (0.5, 0.6, 0.7)), ("subtract", (0.55, 0.6, 0.65))) for v in vals],
            "analysis": {"comparisons": [{"factor": "loss_mode", "level_a": "subtract", "level_b": "clamp",
                                          "ratio": 0.25, "boot_ci": [0.1, 0.5]}]}}
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "bad.json").write_text(json.dumps({"runs": []}))
    msgs = []
    pts = vit_points([tmp_path / "good.json", tmp_path / "bad.json", tmp_path / "missing.json"], warn=msgs.append)
    pooled = [p for p in pts if p["kind"] == "pooled"][0]
    assert pooled["ratio"] == 4.0 and pooled["ci95"] == [2.0, 10.0] and abs(pooled["car"] - 0.3) < 1e-12
    cell = [p for p in pts if p["kind"] == "cell"][0]
    assert abs(cell["ratio"] - 4.0) < 1e-9
    assert len(msgs) == 2 and all(m.count("\n") == 0 for m in msgs)


def test_eigen_cli_bad_input_before_any_setting(tmp_path):
    from cffdyn.errors import UserError
    from sim.eigen_cli import main as eigen_main
    with pytest.raises(UserError, match="eta=nan is not a finite number"):
        eigen_main(["settings", "--set", "eta=nan", "--out", str(tmp_path)])
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        eigen_main(["all", "--out", str(f), "--quiet"])
    assert not list(tmp_path.glob("*.json"))


def test_reuse_refuses_a_result_of_another_schema(tmp_path):
    """Same config, older file layout (a key added since): recomputed, not reused."""
    from cffdyn.io import atomic_write_json, to_jsonable
    from sim.report import SCHEMA, reuse_recorded
    cfg = {"a": 1}
    (tmp_path / "phase.png").write_bytes(b"png")
    atomic_write_json(tmp_path / "phase.json", {"study": "phase", "config": to_jsonable(cfg)})
    assert reuse_recorded(tmp_path, "phase", cfg, True) is None
    atomic_write_json(tmp_path / "phase.json", {"study": "phase", "schema": SCHEMA, "config": to_jsonable(cfg)})
    assert reuse_recorded(tmp_path, "phase", cfg, True)["reused"] is True
