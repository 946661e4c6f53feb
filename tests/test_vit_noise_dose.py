"""The noise-dose analysis: its verdict rule, its trend test, its design checks, the recorded
results it reads and writes, and one tiny end-to-end run of ``cffdyn vit noise-dose``."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from cffdyn.errors import UserError
from cffdyn.io import atomic_write_json, read_json
from cffdyn.recorded import load_record, provenance, write_record
from vit import noise_dose as nd
from vit.study_config import NOISE_DOSE


def _pred(sign: int, lo: float, hi: float, vr: float, valid: bool = True) -> dict:
    return {"valid": valid, "sign": sign, "log_vr_interval": [math.log(lo), math.log(hi)], "vr": vr,
            "reason": "outside" if not valid else "valid"}


@pytest.mark.parametrize("sign, ci, want", [
    (-1, (0.1, 0.5), "confirmed"), (-1, (1.2, 3.0), "refuted"), (-1, (0.5, 1.5), "inconclusive"),
    (+1, (1.2, 3.0), "confirmed"), (+1, (0.1, 0.8), "refuted"), (+1, (0.7, 1.3), "inconclusive")])
def test_verdict_rule(sign, ci, want):
    pred = _pred(sign, 0.2 if sign < 0 else 1.5, 0.5 if sign < 0 else 3.0, 0.3 if sign < 0 else 2.0)
    assert nd.verdict(pred, ci)[0] == want


def test_verdict_untestable_outside_validity_or_without_direction():
    assert nd.verdict(_pred(-1, 0.2, 0.5, 0.3, valid=False), (0.1, 0.2))[0] == "untestable"
    v, why = nd.verdict(_pred(0, 0.9, 1.1, 1.0), (0.1, 0.2))
    assert v == "untestable" and "contains VR = 1" in why
    assert nd.verdict(_pred(-1, 0.2, 0.5, 0.3), None)[0] == "inconclusive"


@pytest.mark.parametrize("pi, ci, kind", [
    (None, (0.1, 0.5), "outside validity"), ((0.9, 1.1), (0.1, 0.5), "no direction"),
    ((1.0, 3.0), None, "no direction"), ((0.2, 0.5), None, "no interval"),
    ((0.2, 0.5), (0.1, 0.9), "confirmed"), ((0.2, 0.5), (1.1, 2.0), "refuted"),
    ((0.2, 0.5), (0.5, 1.5), "inconclusive"), ((1.5, 3.0), (1.1, 2.0), "confirmed"),
    ((1.5, 3.0), (0.1, 0.9), "refuted"), ((1.5, 3.0), (0.9, 1.0), "inconclusive")])
def test_verdict_kind_is_a_function_of_the_two_intervals(pi, ci, kind):
    assert nd.verdict_kind(pi, ci) == kind
    # verdict() decides by the kind: its word is the kind's
    pred = ({"valid": False, "reason": "outside"} if pi is None else
            {"valid": True, "log_vr_interval": [math.log(x) for x in pi], "vr": math.sqrt(pi[0] * pi[1])})
    assert nd.verdict(pred, ci)[0] == nd.VERDICT_KINDS[kind]


#: the words of a verdict's ``why`` for each kind, as :func:`vit.noise_dose.verdict` writes them
_WHY = {"outside validity": r"outside", "no direction": r"contains VR = 1", "no interval": r"no interval",
        "confirmed": r"entirely (below|above) 1$", "refuted": r"entirely on the other side of 1$",
        "inconclusive": r"\] contains 1$"}


def test_every_recorded_verdict_is_the_kind_of_its_recorded_numbers():
    """recorded/vit/noise_dose, read as the paper reads it (hash and config checked): every verdict's
    word and text is what the kind function gives from the intervals recorded beside it, and
    verdict() against the recorded prediction writes it again word for word (no re-recording)."""
    import re

    from sim.prediction_record import predicted_at
    pred, sha = nd.load_prediction_record()
    rec = nd.find_noise_dose_record(json.loads(json.dumps(NOISE_DOSE.to_dict())), sha)
    assert rec is not None, "recorded/vit/noise_dose is missing"
    kinds = set()
    for lv in rec["payload"]["analysis"]["levels"]:
        for q, c in lv["quantities"].items():
            for key, sn in (("verdicts", c["sigma_n_eff"]), ("verdicts_at_init", c.get("sigma_n_eff_init"))):
                for act, v in (c.get(key) or {}).items():
                    kind = nd.verdict_kind(v["predicted_interval"], c["ci"])
                    kinds.add(kind)
                    assert nd.VERDICT_KINDS[kind] == v["verdict"], (q, key, act, kind, v)
                    assert re.search(_WHY[kind], v["why"]), (q, key, act, kind, v["why"])
                    assert nd.verdict(predicted_at(pred, act, sn), c["ci"]) == (v["verdict"], v["why"])
    assert {"outside validity", "no direction", "confirmed", "refuted", "inconclusive"} <= kinds


def _table(doses, seeds, scale, n_layers=2, rng_seed=0):
    """Runs whose clamp values are the subtract values' deviations times ``scale[d]`` around a
    common mean: the sample variance ratio at dose d is exactly scale[d]**2."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for d in doses:
        base = rng.normal(0, 0.01, len(seeds))
        base -= base.mean()
        for mode in ("clamp", "subtract"):
            vals = 0.8 + base * (scale[d] if mode == "clamp" else 1.0)
            for s, v in zip(seeds, vals):
                lay = {"probe": v, "pos_sim": v, "car": v, "sigma": d}
                rows.append({"loss_mode": mode, "view_noise": d, "seed": s, "test_acc": float(v), "best_epoch": 1,
                             "layers": [{"sel": dict(lay), "last": dict(lay)} for _ in range(n_layers)]})
    return rows


def _cfg(doses, n=8):
    return json.loads(json.dumps(NOISE_DOSE.replace(
        n_seeds=n, factors=(("loss_mode", ("clamp", "subtract")), ("view_noise", tuple(doses)))).to_dict()))


def test_trend_slope_is_the_least_squares_slope_of_the_exact_log_ratios():
    doses, seeds = [0.2, 0.5, 0.8, 1.1], list(range(8))
    scale = {0.2: 0.3, 0.5: 0.6, 0.8: 1.2, 1.1: 2.0}
    t = nd._trend(_table(doses, seeds, scale), doses, seeds, doses, n_boot=999, seed=0)
    want = np.polyfit(doses, [math.log(scale[d] ** 2) for d in doses], 1)[0]
    assert t["slope"] == pytest.approx(want, rel=1e-9)
    # every bootstrap draw keeps the exact ratios (same seed draw in every cell): a point interval above 0
    assert t["verdict"] == "confirmed" and t["ci"][0] == pytest.approx(want, rel=1e-6)
    rev = {d: 1 / v for d, v in scale.items()}
    assert nd._trend(_table(doses, seeds, rev), doses, seeds, doses, n_boot=999, seed=0)["verdict"] == "refuted"


def test_analyse_places_each_dose_and_gives_verdicts_against_the_record():
    pred, _ = nd.load_prediction_record()
    doses = [0.2, 0.5, 0.7]
    an = nd.analyse(_table(doses, list(range(8)), {0.2: 0.3, 0.5: 0.3, 0.7: 0.3}), _cfg(doses), pred, n_boot=499)
    lv = an["levels"][0]
    q = lv["quantities"]["test_acc@sel"]
    assert q["vr"] == pytest.approx(0.09, rel=1e-9) and q["sigma_n_eff"] == pytest.approx(0.2)
    # at sigma_n 0.2 both curves predict VR < 1 (recorded/sim/prediction): an exact 0.09 confirms both
    assert q["verdicts"]["tanh"]["verdict"] == "confirmed" and q["verdicts"]["relu"]["verdict"] == "confirmed"
    assert an["headline"][0]["shared_prediction_refuted"] is False
    text = nd.format_noise_dose(an)
    assert "test_acc@sel" in text and "trend" in text


def test_degenerate_arm_is_said_in_words():
    doses = [0.2, 0.5, 0.7]
    tab = _table(doses, list(range(4)), {d: 0.0 for d in doses})
    pred, _ = nd.load_prediction_record()
    an = nd.analyse(tab, _cfg(doses, 4), pred, n_boot=199)
    q = an["levels"][0]["quantities"]["test_acc@sel"]
    assert q["vr"] is None and "constant over the seeds" in q["note"]
    assert an["trend"]["verdict"] == "inconclusive"


@pytest.mark.parametrize("change, msg", [
    ({"independent_seeds": True}, "cannot be paired"),
    ({"factors": [["loss_mode", ["clamp", "subtract"]], ["view_noise", [0.2, 0.5]]]}, "at least 3"),
    ({"factors": [["loss_mode", ["clamp", "subtract"]], ["method", ["cff2", "cff1"]]]}, "loss_mode x view_noise"),
    ({"n_seeds": 2}, "at least 3")])
def test_designs_that_do_not_fit_are_one_line(change, msg):
    cfg = {**_cfg([0.2, 0.5, 0.7]), **change}
    with pytest.raises(UserError, match=msg):
        nd.check_design(cfg)


def test_recorded_result_refuses_edits_stale_configs_and_missing_files(tmp_path):
    fig = tmp_path / "f.png"
    fig.write_bytes(b"png")
    d = tmp_path / "rec"
    write_record(d, kind="k", config={"a": 1}, payload={"x": 2}, prov=provenance("cmd"), files={"f.png": fig})
    assert load_record(d, kind="k", config={"a": 1})["payload"] == {"x": 2}
    with pytest.raises(UserError, match="stale"):
        load_record(d, kind="k", config={"a": 2})
    with pytest.raises(UserError, match="records a 'k' result"):
        load_record(d, kind="other")
    (d / "f.png").write_bytes(b"edited")
    with pytest.raises(UserError, match="differs from the file recorded"):
        load_record(d, kind="k")
    (d / "f.png").write_bytes(b"png")
    rec = json.loads((d / "record.json").read_text())
    rec["payload"]["x"] = 3                     # a hand edit
    (d / "record.json").write_text(json.dumps(rec))
    with pytest.raises(UserError, match="edited after it was recorded"):
        load_record(d, kind="k")
    with pytest.raises(UserError, match="no recorded result"):
        load_record(tmp_path / "none", kind="k")
    p = provenance("cmd", wall_s=1.5, load_start=[0.1, 0.2, 0.3])
    assert {"commit", "dirty", "command", "machine", "device", "torch", "wall_s", "load_start", "load_end"} <= set(p)


def test_prediction_record_missing_edited_or_of_another_schema_is_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist|no recorded result"):
        nd.load_prediction_record(tmp_path / "nothing.json")
    rec = read_json(nd.PREDICTION_DIR / "record.json")["payload"]
    p = tmp_path / "prediction.json"
    atomic_write_json(p, {**rec, "schema": "other"})
    with pytest.raises(UserError, match="schema 'other'"):
        nd.load_prediction_record(p)
    d = tmp_path / "pred"
    shutil.copytree(nd.PREDICTION_DIR, d)
    r = json.loads((d / "record.json").read_text())
    r["payload"]["crossings"]["tanh"]["sigma_n_cross"] = 9.0
    (d / "record.json").write_text(json.dumps(r))
    with pytest.raises(UserError, match="edited"):
        nd.load_prediction_record(d)


def test_the_recorded_prediction_is_whole():
    pred, sha = nd.load_prediction_record()
    assert pred["crossings"]["tanh"]["sigma_n_cross"] is not None and len(sha) == 64


def test_noise_dose_command_end_to_end_tiny(tmp_path, capsys):
    from vit.noise_dose_cli import main
    out = tmp_path / "nd"
    rc = main(["--seeds", "3", "--doses", "0.2,0.8,1.6", "--set", "epochs=1", "--set", "subset=300",
               "--set", "head_epochs=1", "--set", "embed_dim=16", "--n-boot", "199", "--quiet", "--out", str(out)])
    assert rc == 0
    res = read_json(out / "noise_dose.json")
    an = res["analysis"]
    assert an["doses"] == [0.2, 0.8, 1.6] and len(res["table"]) == 18
    s0 = [lv["sigma_n_eff"]["sel"][0]["mean"] for lv in an["levels"]]
    assert s0 == sorted(s0)                  # more pixel noise, more within-pair noise
    assert (out / "noise_dose.png").is_file() and (out / "noise_dose.pdf").is_file()
    assert "augment:view_noise_0.2" in res["departures"]
    assert main(["--seeds", "3", "--doses", "0.2,0.8", "--out", str(tmp_path / "x")]) == 2
    assert "at least 3" in capsys.readouterr().err
