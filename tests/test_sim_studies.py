"""The five studies run end to end on tiny configs (JSON + PNG, reuse), and the CLI."""
from __future__ import annotations

import dataclasses
import json

import pytest

from sim import studies as S
from sim.cli import main

TINY = {
    "convergence": dataclasses.replace(S.CONVERGENCE_QUICK, Ns=(300, 1200, 4800), trials=8, t_end=2.0,
                                       q0=0.5, n_records=8, full_check_trials=4, dt=0.02),
    "hfunc": dataclasses.replace(S.HFUNC_QUICK, activations=("tanh", "identity"), taus=(0.5,), n_grid=21,
                                 n_starts=7),
    "phase": dataclasses.replace(S.PHASE_QUICK, t_end=300.0, dt=1.5, n_grid=9, table=401, kurtoses=(1.0, 3.0),
                                 n_grid_m4=7, sgd_N=200, sgd_starts=((0.3, 0.2),)),
    "noise": dataclasses.replace(S.NOISE_QUICK, taus=(1.0,), rhos=(0.0, -1.0), sn2=(0.0, 0.5),
                                 sgd_sn2=(0.5,), sgd_N=300, sgd_trials=3, sgd_t_end=2.0),
    "clamp": dataclasses.replace(S.CLAMP_QUICK, margins=(0.2,), sns=(0.0,), batches=(1,), N=200, trials=6,
                                 t_end=2.0, n_records=4),
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
    if name == "hfunc":
        L = res["learnability"]["tanh"]
        assert abs(L["kappa"] - 0.1818) < 1e-4
        cur = res["curves"][0]
        assert abs(cur["slope_at_0"] - cur["slope_at_0_linearised"]) < 1e-6


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
