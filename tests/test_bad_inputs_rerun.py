"""Regressions of the issue-21 rerun (tools/sweep_bad_inputs.py against the real CLI), one test
per class of input that still traced back, ran without bound or was accepted silently:

* data files in the real formats with an empty split (IDX, CIFAR pickle at protocol 2);
* sizes beyond memory or a day of work, refused with the estimate before any work;
* numerical overflow and divergence (float32 limits, a diverging eigen toy, a NaN head, a
  pipeline stage's error) as one line instead of a traceback or a silent result;
* options that were accepted but meant nothing (an untrained head, --ran-at without --record,
  an empty --group, a --vit study the bridge cannot use);
* recorded files of the wrong shape or without a content hash, reused by sim and paper.
"""
from __future__ import annotations

import gzip
import json
import pickle
import struct

import numpy as np
import pytest

from cffdyn.errors import guarded
from cffdyn.io import atomic_write_json, read_json

TINY = ["--subset", "300", "--epochs", "1", "--head-epochs", "1", "--layers", "1", "--embed-dim", "16", "--heads", "2",
        "--quiet"]


def _refused(fn, capsys, prog="cffdyn x") -> str:
    try:
        rc = guarded(lambda a: fn(), None, prog)
    except SystemExit as exc:            # argparse's own refusals exit from inside main()
        rc = exc.code
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if not ln.startswith("note:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _idx(path, a: np.ndarray) -> None:
    raw = bytes([0, 0, 0x08, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape) + a.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw))


def _fmnist(root, n_test: int) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    _idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (200, 28, 28)))
    _idx(root / "train-labels-idx1-ubyte.gz", np.arange(200) % 10)
    _idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    _idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)


def _cifar(root, n_test: int) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for k in range(1, 6):
        d = {b"data": rng.integers(0, 256, (40, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(40)]}
        (root / f"data_batch_{k}").write_bytes(pickle.dumps(d, protocol=2))
    t = {b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(n_test)]}
    (root / "test_batch").write_bytes(pickle.dumps(t, protocol=2))


# ----------------------------------------------------------------------------- data files
def test_an_empty_split_in_the_real_formats_is_one_line(tmp_path, capsys):
    """An IDX test file with 0 images traced back in the first forward pass (reshape of 0
    elements); a protocol-2 CIFAR pickle of an empty array was refused as 'not a plain data
    pickle' (its data is the argument-less bytes()).  Both now name the split, before --out."""
    from vit.cli import main
    from vit.data import load_dataset

    _fmnist(tmp_path / "fm", 0)
    out = tmp_path / "run"
    err = _refused(lambda: main(["train", "--data-root", str(tmp_path / "fm"), *TINY, "--out", str(out)]), capsys)
    assert "the test files hold no images" in err and str(tmp_path / "fm") in err
    _cifar(tmp_path / "c", 0)
    err = _refused(lambda: main(["train", "--dataset", "cifar10", "--data-root", str(tmp_path / "c"), "--patch", "4",
                                 *TINY, "--out", str(out)]), capsys)
    assert "the test files hold no images" in err
    assert not out.exists()
    # the same files with images load, and bytes() with an argument (an allocation) stays refused
    _cifar(tmp_path / "c2", 10)
    assert load_dataset("cifar10", tmp_path / "c2").x_test.shape == (10, 3, 32, 32)

    class Alloc:
        def __reduce__(self):
            return (bytes, (10,))
    (tmp_path / "c2" / "test_batch").write_bytes(pickle.dumps({b"data": Alloc(), b"labels": []}, protocol=2))
    with pytest.raises(ValueError, match="refused bytes"):
        load_dataset("cifar10", tmp_path / "c2")


# ----------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("argv, words", [
    (["theory", "bench", "--cases", "100000000000"], "GiB of memory"),
    (["theory", "bench", "--loop-cases", "100000000000"], "--loop-cases"),
    (["sim", "convergence", "--trials", "1000000000"], "would take about"),
    (["sim", "validate", "--trials", "1000000000"], "would take about"),
    (["sim", "bench", "--n-traj", "1000000000000"], "the default bench's"),
    (["sim", "eigen", "settings", "--set", "in_dim=1000000"], "per-step arrays need about"),
    (["sim", "eigen", "settings", "--set", "n_steps=1000000000", "--set", "record_every=1000000"], "would take about"),
    (["vit", "train", *TINY, "--embed-dim", "10000000"], "a training step needs about"),
    (["vit", "train", *TINY, "--layers", "1000000"], "a training step needs about"),
    (["vit", "train", *TINY, "--epochs", "1000000000000"], "exceeds 10000"),
    (["vit", "train", *TINY, "--head-epochs", "1000000000000"], "exceeds 10000"),
    (["vit", "bench", "--steps", "1000000000000", "--rounds", "1"], "timed steps per row"),
    (["vit", "study", "--quick", "--seeds", "1000000000", "--dry-run"], "seeds per cell"),
    (["vit", "study", "--quick", "--n-boot", "1000000000000"], "resamples"),
    (["vit", "analyze", "factorial", "DIR", "--n-perm", "1000000000000"], "resamples"),
])
def test_sizes_beyond_memory_or_a_day_are_refused_before_work(argv, words, tmp_path, monkeypatch, capsys):
    """Each of these ran past the sweep's 60 s (or asked the allocator for petabytes) before a
    line came; now each is refused with its estimate before any work or output."""
    import sim.bench as SB
    import sim.studies as S
    import sim.validate as V
    import vit.train as T
    from cffdyn.cli import main

    def never(*a, **k):
        pytest.fail("the work started")
    monkeypatch.setattr(T, "build_method", never)
    monkeypatch.setattr(V, "run_validate", never)
    monkeypatch.setattr(SB, "run_bench", never)
    monkeypatch.setitem(S.STUDIES, "convergence", (never, S.CONVERGENCE_QUICK, S.CONVERGENCE_FULL))
    out = tmp_path / "out"
    argv = [str(tmp_path) if a == "DIR" else a for a in argv]
    if argv[:2] not in (["theory", "bench"], ["sim", "bench"], ["vit", "bench"], ["vit", "analyze"]):
        argv += ["--out", str(out)]
    err = _refused(lambda: main(argv), capsys)
    assert words in err
    assert not out.exists()


def test_the_estimates_pass_every_preset_and_bound_the_real_sizes():
    """The bounds refuse nothing the presets ask for, and the memory estimate of a training step
    is a lower bound within 10% of the parameters the model really has (x16 bytes: weights,
    gradients, two AdamW moments)."""
    import sim.cli as scli
    import sim.eigen_cli as ecli
    import sim.bench as SB
    import sim.eigen_studies as es
    import sim.studies as S
    from vit.config import TrainConfig, memory_estimate
    from vit.models import ViT

    scli._check_convergence_time(S.CONVERGENCE_FULL, S.CONVERGENCE_QUICK)
    scli._check_bench_size(SB.BENCH_QUICK, SB.BENCH_QUICK)
    for name, quick, full in (("settings", es.SETTINGS_QUICK, es.SETTINGS_FULL),
                              ("settings-relu", es.SETTINGS_RELU_QUICK, es.SETTINGS_RELU_FULL),
                              ("spread", es.SPREAD_QUICK, es.SPREAD_FULL)):
        ecli.check_size(name, full, quick)
    for E, L, S_ in ((16, 1, 1), (64, 4, 3), (128, 5, 2)):
        cfg = TrainConfig(embed_dim=E, heads=4, layers=L, patch=7)
        n_params = sum(p.numel() for p in ViT((1, 28, 28), E, 4, L, 7, seeds=range(S_)).parameters())
        est = memory_estimate(cfg, S_, 1000, 1)["params"]
        assert est <= 16 * n_params <= 1.1 * est


# ----------------------------------------------------------------------------- overflow, divergence
def test_overflow_and_divergence_are_one_line(tmp_path, monkeypatch, capsys):
    """sim clamp --sns 1e300 (OverflowError in the quadrature), a diverging eigen spread
    (FloatingPointError) and a W whose W W^T overflows (LinAlgError in eigh), a head lr whose
    AdamW step overflows float32 (torch RuntimeError): tracebacks before, one line now."""
    from cffdyn.cli import main
    from sim.eigen import toy_predictor

    out = tmp_path / "out"
    err = _refused(lambda: main(["sim", "clamp", "--preset", "quick", "--sns", "1e300", "--out", str(out)]), capsys)
    assert "must lie in [0, 2]" in err
    err = _refused(lambda: main(["sim", "eigen", "spread", "--set", "eta_euc=50", "--set", "n_steps=50",
                                 "--set", "n_steps_cos=50", "--set", "horizon=10", "--set", "n_samples_cos=10",
                                 "--quiet", "--out", str(out)]), capsys)
    assert "became non-finite" in err and "eta_euc" in err
    with pytest.raises(FloatingPointError, match="W W\\^T is not finite"):
        toy_predictor(np.full((1, 2, 3), 1e200), 1.0)
    for opt, val, words in (("--head-lr", "1e38", "AdamW's first step"), ("--tau", "1e300", "not finite in float32")):
        err = _refused(lambda: main(["vit", "train", *TINY, opt, val, "--out", str(out)]), capsys)
        assert words in err
    assert not out.exists()
    # torch's own failures reach guarded as RuntimeError: named in one line, others still raise
    for text, words in (("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory", "out of memory"),
                        ("value cannot be converted to type float without overflow", "overflowed float32")):
        def boom(argv, t=text):
            raise RuntimeError(t)
        assert guarded(boom, None, "cffdyn x") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err
    with pytest.raises(RuntimeError, match="a bug"):
        guarded(lambda a: (_ for _ in ()).throw(RuntimeError("a bug")), None, "cffdyn x")


def test_a_diverged_head_is_one_line_and_no_result(tmp_path, capsys):
    """A head lr of 1e30 made the stage-2 loss NaN from its second step; the run ended with exit
    0 and the class-0 share as its accuracy.  Now the head's first non-finite loss stops the run
    (stage 1's checkpoint kept) and no result.json is written."""
    from vit.cli import main

    out = tmp_path / "run"
    err = _refused(lambda: main(["train", *TINY, "--head-epochs", "3", "--head-lr", "1e30", "--out", str(out)]),
                   capsys)
    assert "non-finite stage-2 head loss" in err and "--head-lr" in err
    assert (out / "ckpt.pt").is_file() and not (out / "result.json").exists()


def test_a_pipeline_stage_error_reaches_the_parent_as_one_line(tmp_path, capsys, one_torch_thread):
    """A diverged run in a spawned stage surfaced as mp.spawn's re-raised child traceback."""
    from vit.cli import main

    err = _refused(lambda: main(["train", *TINY, "--pipeline", "--pipeline-procs", "1", "--lr", "1e30",
                                 "--out", str(tmp_path / "run")]), capsys)
    assert "non-finite validation metric" in err and "--lr" in err


# ----------------------------------------------------------------------------- options that meant nothing
def test_options_that_would_mean_nothing_are_refused(tmp_path, capsys):
    """A CFF run with 0 head epochs reported an untrained head's accuracy; --ran-at without
    --record ran the whole noise-dose study and dropped it; --group '' pooled every run into one
    cell; sim clamp --vit with a study the bridge cannot use warned, exited 0 and computed the
    whole study without the overlay."""
    from cffdyn.cli import main
    from vit.config import TrainConfig

    out = tmp_path / "out"
    err = _refused(lambda: main(["vit", "train", *TINY[:2], "--head-epochs", "0", "--out", str(out)]), capsys)
    assert "head_epochs=0" in err and "stage-2 head" in err
    TrainConfig(method="bp", head_epochs=0)                      # no head: 0 is meaningful there
    err = _refused(lambda: main(["vit", "noise-dose", "--ran-at", "abc", "--out", str(out)]), capsys)
    assert "--ran-at is only used with --record" in err
    err = _refused(lambda: main(["vit", "noise-dose", "--set", "nosuch=1", "--out", str(out)]), capsys)
    assert "nosuch" in err
    atomic_write_json(tmp_path / "r" / "result.json", {"config": TrainConfig().to_dict(), "history": [], "test_acc": 0.5})
    err = _refused(lambda: main(["vit", "analyze", "car", str(tmp_path / "r"), "--group", " , ", "--out", str(out)]),
                   capsys)
    assert "names no field" in err
    for text in ('{"status": "complete"}', '{"runs": [{"cell": 5}], "analysis": {"comparisons": [3]}}'):
        (tmp_path / "s.json").write_text(text)
        err = _refused(lambda: main(["sim", "clamp", "--preset", "quick", "--vit", str(tmp_path / "s.json"),
                                     "--out", str(out)]), capsys)
        assert "cannot be overlaid" in err
    assert not out.exists()


# ----------------------------------------------------------------------------- recorded files
def test_records_of_the_wrong_shape_or_without_a_hash_are_not_reused(tmp_path, capsys):
    """sim studies reused any dict with a matching config (a list traced back with
    AttributeError); paper build --reuse-only trusted a hand-written record and traced back with
    KeyError on the first field it read.  Now sim recomputes what is not an intact record and
    paper refuses what has no content hash, in one line."""
    from paper.sources import STUDIES, MissingResultError, obtain
    from sim.report import SCHEMA, reuse_recorded
    from sim.studies import HFUNC_QUICK
    from cffdyn.io import to_jsonable

    (tmp_path / "hfunc.png").write_bytes(b"\x89PNG")
    good = {"schema": SCHEMA, "config": to_jsonable(HFUNC_QUICK), "value": 1}
    for text in ("[]", "42", '{"config": {}}', json.dumps(good)):   # the last: unhashed
        (tmp_path / "hfunc.json").write_text(text)
        assert reuse_recorded(tmp_path, "hfunc", HFUNC_QUICK, True) is None
    atomic_write_json(tmp_path / "hfunc.json", good)
    assert reuse_recorded(tmp_path, "hfunc", HFUNC_QUICK, True)["value"] == 1
    edited = read_json(tmp_path / "hfunc.json")
    edited["value"] = 2
    (tmp_path / "hfunc.json").write_text(json.dumps(edited))
    assert reuse_recorded(tmp_path, "hfunc", HFUNC_QUICK, True) is None
    assert "was changed after it was written" in capsys.readouterr().err

    study = next(s for s in STUDIES if s.name == "hfunc")
    j = tmp_path / "res" / "sim" / "meanfield" / "quick" / "hfunc.json"
    j.parent.mkdir(parents=True)
    j.write_text('{"status": "complete"}')
    with pytest.raises(MissingResultError, match="carries no content hash"):
        obtain(study, tmp_path / "res", "quick", reuse_only=True)
    atomic_write_json(j, {"status": "complete"})
    assert obtain(study, tmp_path / "res", "quick", reuse_only=True).data["status"] == "complete"
