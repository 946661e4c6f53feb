"""vit.analyses: Steier's analyses from recorded runs, against direct computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from cffdyn.errors import UserError
from cffdyn.io import atomic_write_json, read_json
from vit import analyses as A
from vit import factorial as F
from vit.analyze_cli import main as analyze_main
from vit.train import TrainConfig

BASE = TrainConfig(dataset="fashion_mnist", layers=3, epochs=4)


def _write_runs(root, rng, *, m0s=(0.4,), seeds=range(4), methods=("cff2", "cff1"), modes=("clamp", "subtract")):
    for m0 in m0s:
        for lm in modes:
            for me in methods:
                for s in seeds:
                    cfg = BASE.replace(loss_mode=lm, method=me, seed=s, m0=m0)
                    hist = [{"epoch": e, "layers": [{"layer": l, "margin": cfg.margins()[l],
                                                     "car": float(rng.uniform(0, 1)), "grad_norm": float(rng.uniform(0.1, 2)),
                                                     "loss": 1.0} for l in range(3)]} for e in range(4)]
                    sd = 0.03 * (m0 / 0.4) if lm == "clamp" else 0.01
                    res = {"config": cfg.to_dict(), "test_acc": float(0.8 + sd * rng.standard_normal()),
                           "val_acc": 0.8, "per_layer": hist[-1]["layers"], "history": hist}
                    atomic_write_json(root / "runs" / f"{lm}_{me}_{m0}_{s}" / "result.json", res)
    return A.load_runs([root])


def test_factorial_equals_the_stats_module_on_the_recorded_cells(tmp_path):
    runs = _write_runs(tmp_path, np.random.default_rng(0))
    res = A.factorial(runs, n_boot=199, n_perm=199, figure=tmp_path / "f.png")
    data, seeds = {}, {}
    for r in runs:
        k = (r["config"]["loss_mode"], r["config"]["method"])
        data.setdefault(k, []).append((r["config"]["seed"], r["test_acc"]))
    d = {k: [a for _, a in sorted(v)] for k, v in data.items()}
    sd = {k: [s for s, _ in sorted(v)] for k, v in data.items()}
    ref = F.factorial_analysis(["loss_mode", "method"], d, seeds=sd, n_boot=199, n_perm=199)
    assert res["result"]["comparisons"][0]["ratio"] == pytest.approx(ref["comparisons"][0]["ratio"], rel=1e-12)
    assert res["result"]["comparisons"][0]["paired"]["pm_p"] == pytest.approx(
        ref["comparisons"][0]["paired"]["pm_p"], rel=1e-12)
    assert (tmp_path / "f.png").is_file()
    with pytest.raises(UserError, match="'m0' has 1 level"):
        A.factorial(runs, second="m0")


def test_car_per_epoch_is_the_seed_mean_and_plots_integer_epoch_ticks(tmp_path, monkeypatch):
    runs = _write_runs(tmp_path, np.random.default_rng(1))
    figs = []
    monkeypatch.setattr(A, "_save", lambda fig, path: figs.append(fig) or None)
    res = A.car_per_epoch(runs)
    c = next(c for c in res["cells"] if c["levels"] == {"loss_mode": "clamp", "method": "cff1"})
    rs = [r for r in runs if r["config"]["loss_mode"] == "clamp" and r["config"]["method"] == "cff1"]
    direct = np.mean([[h["layers"][2]["car"] for h in r["history"]] for r in rs], axis=0)
    assert np.allclose(np.array(c["mean"])[:, 2], direct, rtol=1e-12)
    assert c["n"] == 4 and c["epochs"] == 4 and c["layers"] == 3
    fig = figs[0]
    fig.canvas.draw()
    for ax in fig.axes:
        if ax.get_visible() and ax.get_xlabel() == "epoch":
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks)
    g = A.grad_norms(runs)
    assert g["analysis"] == "grad_norms" and len(g["cells"]) == 4


def test_dose_response_ratio_per_margin_with_one_subtraction_reference(tmp_path):
    rng = np.random.default_rng(2)
    _write_runs(tmp_path, rng, m0s=(0.1, 0.2, 0.4), methods=("cff2",), modes=("clamp",))
    _write_runs(tmp_path, rng, m0s=(0.4,), methods=("cff2",), modes=("subtract",))
    runs = A.load_runs([tmp_path])
    res = A.dose_response(runs)
    assert [r["m0"] for r in res["levels"]] == [0.1, 0.2, 0.4]
    sub = [r["test_acc"] for r in runs if r["config"]["loss_mode"] == "subtract"]
    for row in res["levels"]:
        cl = [r["test_acc"] for r in runs if r["config"]["loss_mode"] == "clamp" and r["config"]["m0"] == row["m0"]]
        assert row["ratio"] == pytest.approx(np.var(cl, ddof=1) / np.var(sub, ddof=1), rel=1e-12)
        car = [r["per_layer"][0]["car"] for r in runs if r["config"]["loss_mode"] == "clamp"
               and r["config"]["m0"] == row["m0"]]
        assert row["car_layer0_mean"] == pytest.approx(np.mean(car), rel=1e-12)
    assert "other m0" in res["levels"][0]["reference"] and "m0 = 0.4" in res["levels"][2]["reference"]


def test_positive_share_and_no_positive_probability_against_simulation_and_hypergeometric():
    counts = [30, 20, 10]
    labels = np.repeat(np.arange(3), counts)
    rng = np.random.default_rng(3)
    b, reps = 12, 20000
    share = []
    for _ in range(reps // 100):
        for _ in range(100):
            y = rng.choice(labels, size=b, replace=False)
            y2 = np.concatenate([y, y])                      # two views
            same = (y2[:, None] == y2[None, :]).sum(1) - 1  # other rows of the anchor's class
            share.append(same.mean() / (2 * b - 1))
    sim = float(np.mean(share))
    ana = A.expected_positive_share(counts, b, 2)
    assert abs(sim - ana) < 4 * np.std(share) / math.sqrt(len(share))
    n = sum(counts)
    hyp = sum(c / n * sps.hypergeom.pmf(0, n - 1, c - 1, b - 1) for c in counts)
    assert A.prob_no_positive(counts, b) == pytest.approx(hyp, rel=1e-9)
    # the share is about 1/classes whatever the batch; the COUNT of positives per anchor grows
    # with the batch and falls with the number of classes
    assert A.expected_positive_share([500] * 10, 512) == pytest.approx(0.1, abs=0.002)
    per_anchor = lambda c, b: A.expected_positive_share(c, b) * (2 * b - 1)
    assert per_anchor([500] * 10, 512) > 7 * per_anchor([500] * 10, 64)
    assert per_anchor([50] * 100, 512) < per_anchor([500] * 10, 512) / 5


def test_cli_writes_json_and_png_and_bad_input_is_one_line(tmp_path, capsys):
    _write_runs(tmp_path, np.random.default_rng(4), seeds=range(3))
    assert analyze_main(["factorial", str(tmp_path), "--n-boot", "199", "--n-perm", "199"]) == 0
    out = read_json(tmp_path / "factorial.json")
    assert out["analysis"] == "factorial" and (tmp_path / "factorial.png").is_file()
    assert "Pitman-Morgan" in capsys.readouterr().out
    assert analyze_main(["pair-density", "--out", str(tmp_path / "pd")]) == 0
    assert (tmp_path / "pd" / "pair_density.png").is_file()
    with pytest.raises(UserError, match="not a TrainConfig field"):
        analyze_main(["factorial", str(tmp_path), "--second", "nonsense"])
    with pytest.raises(UserError, match="no recorded runs"):
        analyze_main(["car", str(tmp_path / "pd")])


def test_vit_plot_epoch_axes_have_integer_ticks(tmp_path, monkeypatch):
    from cffdyn.io import atomic_write_text
    import json
    from vit import plot as P
    hist = [{"epoch": e, "val_acc": 0.5, "layers": [{"layer": l, "margin": 0.4, "loss": 1.0, "car": 0.5,
                                                      "grad_norm": 1.0, "pos_sim": 0.5, "neg_sim": 0.1}
                                                     for l in range(2)]} for e in range(2)]
    atomic_write_text(tmp_path / "log.jsonl", "".join(json.dumps(h) + "\n" for h in hist))
    figs = []
    real_close = P.plt.close
    monkeypatch.setattr(P.plt, "close", lambda fig=None: figs.append(fig))
    P.plot_run(tmp_path)
    fig = figs[0]
    fig.canvas.draw()
    n = 0
    for ax in fig.axes:
        if ax.get_xlabel() == "epoch":
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks)
            n += 1
    assert n >= 5
    real_close(fig)


def test_missing_input_directory_is_refused_and_not_created(tmp_path):
    """The input is checked before the output directory (which defaults to it) is made."""
    missing = tmp_path / "missing"
    with pytest.raises(UserError, match="does not exist"):
        analyze_main(["car", str(missing)])
    assert not missing.exists()
