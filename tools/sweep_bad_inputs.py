"""Bad-input sweep of the real CLI (issue 21, "Done when"): not part of the test suite.

Runs representative bad inputs of every class the issue names against ``cffdyn`` (a fresh
process per case, a short timeout, tiny training settings) and classifies each outcome:

``good``       the expected behaviour: a one-line refusal with exit 2 for a bad input (or, for an
               input the package may accept, exit 0 and the case's own check passing);
``traceback``  a Python traceback reached the user;
``silent``     exit 0 on an input that should have been refused, or the case's check failed
               (a wrong result, a file outside --out changed, a duplicate epoch, ...);
``unbounded``  still running at the timeout;
``other``      a refusal that is not exit 2 / one line (counted as bad).

Usage (from the repository root; each case's files under ``--work``)::

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONPATH=$PWD \\
        python tools/sweep_bad_inputs.py --work /tmp/sweep [--only CLASS ...] [--id SUBSTR] [--list]

Results are appended to ``WORK/results.jsonl`` (one line per case; a rerun skips cases already
there unless ``--redo``) and summarised per class on stdout.  The kill -9 cases (class ``kill``)
kill a tiny ``vit train`` / ``vit study`` at a random moment, rerun it and compare the result
with an uninterrupted run's.  The full-filesystem class mounts a 256 KiB tmpfs (root only; skipped
otherwise) and unmounts it afterwards.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CFFDYN = os.environ.get("CFFDYN", "/work/main/.venv/bin/cffdyn")
PYTHON = os.environ.get("CFFDYN_PYTHON", "/work/main/.venv/bin/python")
TINY = ["--subset", "300", "--epochs", "1", "--head-epochs", "1", "--layers", "1", "--embed-dim", "16", "--heads", "2"]
TINY_SET = ["--set", "subset=300", "--set", "epochs=1", "--set", "head_epochs=1", "--set", "layers=1",
            "--set", "embed_dim=16", "--set", "heads=2"]
STUDY = ["--factor", "loss_mode=clamp,subtract", "--seeds", "2", "--no-probe", "--n-boot", "100", "--n-perm", "100",
         *TINY_SET]
TIMEOUT = 60.0


# ----------------------------------------------------------------------------- data files

def _idx(path: Path, arr: np.ndarray, code: int | None = None, magic: bytes | None = None, gz: bool = True) -> None:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
    a = np.asarray(arr)
    if a.dtype.kind in "if" and a.dtype.itemsize > 1:
        a = a.astype(a.dtype.newbyteorder(">"))
    code = codes[a.dtype] if code is None else code
    head = magic if magic is not None else bytes([0, 0, code, a.ndim])
    raw = head + b"".join(struct.pack(">I", d) for d in a.shape) + a.tobytes()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def fmnist(root: Path, *, images=None, labels=None, test_images=None, test_labels=None, n=400, nt=100,
           raw: dict[str, bytes] | None = None) -> Path:
    """A small Fashion-MNIST directory in the IDX format; overrides replace one array (or file bytes)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    arrs = {"train-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if images is None else images,
            "train-labels-idx1-ubyte": (np.arange(n) % 10).astype(np.uint8) if labels is None else labels,
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (nt, 28, 28), dtype=np.uint8) if test_images is None else test_images,
            "t10k-labels-idx1-ubyte": (np.arange(nt) % 10).astype(np.uint8) if test_labels is None else test_labels}
    for name, a in arrs.items():
        if raw and name in raw:
            (root / (name + ".gz")).write_bytes(raw[name])
        else:
            _idx(root / name, a)
    return root


def cifar(root: Path, *, fine: bool = False, data=None, labels=None, test_data=None, test_labels=None,
          n=100, nt=100, batch_obj=None, test_obj=None, raw_batch: bytes | None = None) -> Path:
    """A small CIFAR-10 (five train batches of ``n``) or CIFAR-100 directory of python pickles;
    ``data``/``labels`` replace the first train batch's arrays, ``batch_obj`` its whole object."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    key = b"fine_labels" if fine else b"labels"
    nc = 100 if fine else 10
    names = ["train"] if fine else [f"data_batch_{k}" for k in range(1, 6)]
    m = n * 5 if fine else n
    for i, name in enumerate(names):
        obj = {b"data": rng.integers(0, 256, (m, 3072), dtype=np.uint8), key: [int(v) for v in np.arange(m) % nc]}
        if i == 0:
            if data is not None:
                obj[b"data"] = data
            if labels is not None:
                obj[key] = labels
            if batch_obj is not None:
                obj = batch_obj
        if i == 0 and raw_batch is not None:
            (root / name).write_bytes(raw_batch)
        else:
            (root / name).write_bytes(pickle.dumps(obj, protocol=2))
    tobj = {b"data": rng.integers(0, 256, (nt, 3072), dtype=np.uint8) if test_data is None else test_data,
            key: [int(v) for v in np.arange(nt) % nc] if test_labels is None else test_labels}
    (root / ("test" if fine else "test_batch")).write_bytes(pickle.dumps(tobj if test_obj is None else test_obj, protocol=2))
    return root


def svhn(root: Path, *, X=None, y=None, n=400, nt=100, drop: str | None = None) -> Path:
    from scipy.io import savemat
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name, m, first in (("train_32x32.mat", n, True), ("test_32x32.mat", nt, False)):
        d = {"X": rng.integers(0, 256, (32, 32, 3, m), dtype=np.uint8),
             "y": (np.arange(m) % 10 + 1).astype(np.uint8).reshape(-1, 1)}
        if first and X is not None:
            d["X"] = X
        if first and y is not None:
            d["y"] = y
        if first and drop:
            d.pop(drop)
        savemat(root / name, d)
    return root


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ----------------------------------------------------------------------------- running

def run(argv: list[str], cwd: Path, timeout: float = TIMEOUT, env: dict | None = None) -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    e.update(env or {})
    t0 = time.monotonic()
    p = subprocess.Popen(argv, cwd=cwd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        rc = None
    return {"rc": rc, "stdout": out, "stderr": err, "wall": time.monotonic() - t0}


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "error:" in ln]


def classify(r: dict, expect: str, check_msg: str | None) -> str:
    if r["rc"] is None:
        return "unbounded"
    if "Traceback (most recent call last)" in r["stderr"] or "Traceback (most recent call last)" in r["stdout"]:
        return "traceback"
    if expect == "refuse":
        if r["rc"] == 0:
            return "silent"
        if check_msg:
            return "silent"
        if r["rc"] == 2 and len(error_lines(r["stderr"])) == 1:
            return "good"
        return "other"
    if expect == "ok" and r["rc"] != 0:
        return "other"          # a valid input refused
    # "either": a one-line refusal or a correct result; the check applies to both
    if check_msg:
        return "silent"
    if r["rc"] == 0:
        return "good"
    if r["rc"] == 2 and len(error_lines(r["stderr"])) == 1:
        return "good"
    return "other"


class Case:
    def __init__(self, cid: str, cls: str, argv, expect: str = "refuse", setup=None, check=None,
                 timeout: float = TIMEOUT, env: dict | None = None, runner=None) -> None:
        self.id, self.cls, self.argv, self.expect = cid, cls, argv, expect
        self.setup, self.check, self.timeout, self.env, self.runner = setup, check, timeout, env, runner


def C(cmd: str, *args) -> list[str]:
    return [CFFDYN, *cmd.split(), *args]


# ----------------------------------------------------------------------------- checks

def _json(p: Path):
    return json.loads(Path(p).read_text())


def check_conversion_recorded(W: Path, r: dict) -> str | None:
    res = W / "out" / "result.json"
    if not res.is_file():
        return "no result.json"
    conv = _json(res)["dataset"]["conversions"]
    if not conv or "note:" not in r["stderr"]:
        return "conversion not recorded / not said"
    return None


def victim_unchanged(W: Path, r: dict) -> str | None:
    for v in sorted((W / "outside").glob("*")):
        if v.read_text() != "precious\n":
            return f"{v} outside --out was written"
    return None


def no_nonfinite(name: str):
    def check(W: Path, r: dict) -> str | None:
        p = W / "out" / name
        if r["rc"] == 0 and not p.is_file():
            return f"exit 0 without {name}"
        if p.is_file() and any(t in p.read_text() for t in ("NaN", "Infinity")):
            return f"{name} records a non-finite value"
        return None
    return check


def no_train_dir(W: Path, r: dict) -> str | None:
    return "trained (runs/ written)" if (W / "out" / "runs").exists() else None


# ----------------------------------------------------------------------------- the cases

def base_run(work: Path, epochs: int = 2) -> Path:
    """One finished tiny run (shared by the record cases)."""
    d = work / f"_base_run_e{epochs}"
    if not (d / "result.json").is_file():
        r = run(C("vit train", *TINY, "--epochs", str(epochs), "--quiet", "--out", str(d)), work, 120)
        assert r["rc"] == 0, r["stderr"]
    return d


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / ".cffdyn.lock").unlink(missing_ok=True)
    return dst


def cases(work: Path) -> list[Case]:
    L: list[Case] = []
    add = L.append
    out = "{W}/out"

    # ---- data: the real formats -------------------------------------------------------------------
    def data_case(cid, ds, make, expect="refuse", check=None):
        patch = ["--patch", "4"] if ds in ("cifar10", "cifar100", "svhn") else []
        add(Case(cid, "data", C("vit train", "--dataset", ds, "--data-root", "{W}/data", *TINY, *patch, "--out", out),
                 expect, setup=lambda W, m=make: m(W / "data"), check=check))

    rng = np.random.default_rng(1)
    u = lambda *s: rng.integers(0, 256, s, dtype=np.uint8)  # noqa: E731
    lab = [int(v) for v in np.arange(100) % 10]
    data_case("cifar10-valid", "cifar10", lambda d: cifar(d), "ok")
    data_case("cifar10-float01", "cifar10", lambda d: cifar(d, data=u(100, 3072) / 255.0), "ok", check_conversion_recorded)
    data_case("cifar10-float255", "cifar10", lambda d: cifar(d, data=u(100, 3072).astype(np.float64)))
    data_case("cifar10-float32-01", "cifar10", lambda d: cifar(d, data=(u(100, 3072) / 255.0).astype(np.float32)), "ok",
              check_conversion_recorded)
    data_case("cifar10-nan", "cifar10", lambda d: cifar(d, data=np.full((100, 3072), np.nan)))
    data_case("cifar10-int8-neg", "cifar10", lambda d: cifar(d, data=u(100, 3072).astype(np.int16).astype(np.int8)))
    data_case("cifar10-int16-inrange", "cifar10", lambda d: cifar(d, data=u(100, 3072).astype(np.int16)), "ok",
              check_conversion_recorded)
    data_case("cifar10-int64-300", "cifar10", lambda d: cifar(d, data=np.full((100, 3072), 300, np.int64)))
    data_case("cifar10-object", "cifar10", lambda d: cifar(d, data=np.array(u(100, 3072), dtype=object)))
    data_case("cifar10-bool", "cifar10", lambda d: cifar(d, data=u(100, 3072) > 128))
    data_case("cifar10-complex", "cifar10", lambda d: cifar(d, data=u(100, 3072).astype(np.complex64)))
    data_case("cifar10-list-data", "cifar10", lambda d: cifar(d, data=[[1, 2], [3]]))
    data_case("cifar10-str-data", "cifar10", lambda d: cifar(d, data="hello"))
    data_case("cifar10-float-labels", "cifar10", lambda d: cifar(d, labels=[9.7] * 100))
    data_case("cifar10-float-labels-whole", "cifar10", lambda d: cifar(d, labels=np.array(lab, dtype=np.float64)), "ok",
              check_conversion_recorded)
    data_case("cifar10-label-10", "cifar10", lambda d: cifar(d, labels=[10] * 100))
    data_case("cifar10-label-neg", "cifar10", lambda d: cifar(d, labels=[-1] * 100))
    data_case("cifar10-label-str", "cifar10", lambda d: cifar(d, labels=["cat"] * 100))
    data_case("cifar10-label-huge", "cifar10", lambda d: cifar(d, labels=[2 ** 70] * 100))
    data_case("cifar10-shape-3071", "cifar10", lambda d: cifar(d, data=u(100, 3071)))
    data_case("cifar10-shape-1d", "cifar10", lambda d: cifar(d, data=u(307200)))
    data_case("cifar10-shape-4d", "cifar10", lambda d: cifar(d, data=u(100, 3, 32, 32)))
    data_case("cifar10-label-count", "cifar10", lambda d: cifar(d, labels=lab[:50]))
    data_case("cifar10-label-2d", "cifar10", lambda d: cifar(d, labels=np.array(lab).reshape(50, 2)))
    data_case("cifar10-missing-key", "cifar10", lambda d: cifar(d, batch_obj={b"data": u(100, 3072)}))
    data_case("cifar10-not-dict", "cifar10", lambda d: cifar(d, batch_obj=[1, 2, 3]))
    data_case("cifar10-truncated", "cifar10", lambda d: cifar(d, raw_batch=pickle.dumps({b"data": u(100, 3072)})[:500]))
    data_case("cifar10-garbage", "cifar10", lambda d: cifar(d, raw_batch=b"\x00garbage" * 100))
    data_case("cifar10-empty-test", "cifar10", lambda d: cifar(d, test_data=np.zeros((0, 3072), np.uint8), test_labels=[]))
    data_case("cifar10-empty-train", "cifar10",
              lambda d: [cifar(d, n=0)])

    def evil(d):
        cifar(d, batch_obj=_Evil(str(d.parent / "PWNED")))
    add(Case("cifar10-pickle-runs-code", "data",
             C("vit train", "--dataset", "cifar10", "--data-root", "{W}/data", *TINY, "--patch", "4", "--out", out),
             "refuse", setup=evil, check=lambda W, r: "code ran" if (W / "PWNED").exists() else None))
    data_case("cifar100-valid", "cifar100", lambda d: cifar(d, fine=True), "ok")
    data_case("cifar100-missing-fine", "cifar100",
              lambda d: cifar(d, fine=True, batch_obj={b"data": u(500, 3072), b"coarse_labels": [1] * 500}))
    data_case("cifar100-label-100", "cifar100", lambda d: cifar(d, fine=True, labels=[100] * 500))
    data_case("cifar100-float-labels", "cifar100", lambda d: cifar(d, fine=True, labels=[3.5] * 500))

    lab4 = (np.arange(400) % 10).astype(np.uint8)
    data_case("fmnist-valid", "fashion_mnist", lambda d: fmnist(d), "ok")
    data_case("fmnist-bad-magic", "fashion_mnist",
              lambda d: fmnist(d, raw={"train-images-idx3-ubyte": gzip.compress(b"\x08\x03\x00\x00" + b"\x00" * 100)}))
    data_case("fmnist-unknown-type", "fashion_mnist",
              lambda d: fmnist(d, raw={"train-images-idx3-ubyte": gzip.compress(bytes([0, 0, 0x07, 3]) + b"\x00" * 100)}))
    data_case("fmnist-float-images-255", "fashion_mnist", lambda d: fmnist(d, images=u(400, 28, 28).astype(">f4")))
    data_case("fmnist-float-images-01", "fashion_mnist", lambda d: fmnist(d, images=(u(400, 28, 28) / 255.0).astype(">f8")),
              "ok", check_conversion_recorded)
    data_case("fmnist-float-images-nan", "fashion_mnist", lambda d: fmnist(d, images=np.full((400, 28, 28), np.nan, ">f4")))
    data_case("fmnist-int8-neg", "fashion_mnist", lambda d: fmnist(d, images=u(400, 28, 28).astype(np.int8)))
    data_case("fmnist-i4-300", "fashion_mnist", lambda d: fmnist(d, images=np.full((400, 28, 28), 300, ">i4")))
    data_case("fmnist-float-labels", "fashion_mnist", lambda d: fmnist(d, labels=np.full(400, 9.7, ">f4")))
    data_case("fmnist-float-labels-whole", "fashion_mnist", lambda d: fmnist(d, labels=lab4.astype(">f8")), "ok",
              check_conversion_recorded)
    data_case("fmnist-label-10", "fashion_mnist", lambda d: fmnist(d, labels=np.full(400, 10, np.uint8)))
    data_case("fmnist-test-label-neg", "fashion_mnist", lambda d: fmnist(d, test_labels=np.full(100, -1, np.int8)))
    data_case("fmnist-shape-27", "fashion_mnist", lambda d: fmnist(d, images=u(400, 27, 27)))
    data_case("fmnist-shape-2d", "fashion_mnist", lambda d: fmnist(d, images=u(400, 784)))
    data_case("fmnist-labels-2d", "fashion_mnist", lambda d: fmnist(d, labels=lab4.reshape(200, 2)))
    data_case("fmnist-count-mismatch", "fashion_mnist", lambda d: fmnist(d, labels=lab4[:300]))
    data_case("fmnist-truncated-gz", "fashion_mnist",
              lambda d: fmnist(d, raw={"train-images-idx3-ubyte": gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 400, 28, 28) + u(400 * 784).tobytes())[:3000]}))
    data_case("fmnist-size-mismatch", "fashion_mnist",
              lambda d: fmnist(d, raw={"train-images-idx3-ubyte": gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 400, 28, 28) + u(100).tobytes())}))
    data_case("fmnist-huge-dims", "fashion_mnist",
              lambda d: fmnist(d, raw={"train-images-idx3-ubyte": gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 2 ** 32 - 1, 2 ** 32 - 1, 2 ** 32 - 1) + b"\x00" * 64)}))
    data_case("fmnist-overflow-dims", "fashion_mnist",
              lambda d: fmnist(d, raw={"train-images-idx3-ubyte": gzip.compress(bytes([0, 0, 8, 4]) + struct.pack(">IIII", 2 ** 16, 2 ** 16, 2 ** 16, 2 ** 16) + b"\x00" * 64)}))
    data_case("fmnist-empty-file", "fashion_mnist", lambda d: fmnist(d, raw={"t10k-labels-idx1-ubyte": b""}))
    data_case("fmnist-zero-images", "fashion_mnist", lambda d: fmnist(d, test_images=np.zeros((0, 28, 28), np.uint8),
                                                                      test_labels=np.zeros(0, np.uint8)))
    add(Case("fmnist-env-missing", "data", C("vit train", *TINY, "--out", out), env={"CFFDYN_FMNIST": "/nonexistent"}))

    data_case("svhn-valid", "svhn", lambda d: svhn(d), "ok")
    data_case("svhn-float-X-255", "svhn", lambda d: svhn(d, X=u(32, 32, 3, 400).astype(np.float64)))
    data_case("svhn-float-X-01", "svhn", lambda d: svhn(d, X=u(32, 32, 3, 400) / 255.0), "ok", check_conversion_recorded)
    data_case("svhn-int16-neg", "svhn", lambda d: svhn(d, X=u(32, 32, 3, 400).astype(np.int16) - 5))
    data_case("svhn-y-zero", "svhn", lambda d: svhn(d, y=(np.arange(400) % 10).reshape(-1, 1).astype(np.uint8)))
    data_case("svhn-y-frac", "svhn", lambda d: svhn(d, y=np.full((400, 1), 9.7)))
    data_case("svhn-y-11", "svhn", lambda d: svhn(d, y=np.full((400, 1), 11, np.uint8)))
    data_case("svhn-y-float-whole", "svhn", lambda d: svhn(d, y=(np.arange(400) % 10 + 1).reshape(-1, 1).astype(np.float64)),
              "ok", check_conversion_recorded)
    data_case("svhn-X-3d", "svhn", lambda d: svhn(d, X=u(32, 32, 400)))
    data_case("svhn-X-hwc-wrong", "svhn", lambda d: svhn(d, X=u(400, 32, 32, 3)))
    data_case("svhn-missing-y", "svhn", lambda d: svhn(d, drop="y"))
    data_case("svhn-y-count", "svhn", lambda d: svhn(d, y=np.ones((300, 1), np.uint8)))
    data_case("svhn-not-mat", "svhn", lambda d: (svhn(d), (d / "train_32x32.mat").write_bytes(b"MATLAB garbage" * 10)))
    data_case("svhn-object-X", "svhn", lambda d: svhn(d, X=np.array([["a"]], dtype=object)))

    # ---- numeric options ------------------------------------------------------------------------
    def num(cid, argv, expect="refuse", timeout=TIMEOUT, check=None, setup=None):
        add(Case(cid, "numeric", argv, expect, setup=setup, check=check, timeout=timeout))

    for v in ("nan", "-1", "0", "100000000000", "1e3"):
        num(f"theory-verify-cases={v}", C("theory verify", "--cases", v, "--out", out))
    for v in ("nan", "-1", "inf", "0"):
        num(f"theory-verify-tol={v}", C("theory verify", "--cases", "10", "--tol", v, "--out", out))
    num("theory-verify-seed=-1", C("theory verify", "--cases", "10", "--seed", "-1", "--out", out))
    num("theory-verify-seed=huge", C("theory verify", "--cases", "10", "--seed", str(10 ** 30), "--out", out), "either")
    num("theory-bench-cases=1e11", C("theory bench", "--cases", "100000000000"))
    num("theory-show-out-dir", C("theory show", "--out", "{W}"))

    for sub in ("convergence", "phase", "noise", "clamp"):
        num(f"sim-{sub}-seed=-1", C(f"sim {sub}", "--seed", "-1", "--out", out))
    # a seed above 2^64 goes through SeedSequence; phase and noise take minutes at their quick
    # presets (checked at reduced sizes in Python instead), convergence and clamp run here
    for sub in ("convergence", "clamp"):
        num(f"sim-{sub}-seed=huge", C(f"sim {sub}", "--preset", "quick", "--seed", str(10 ** 30), "--out", out), "either",
            timeout=120)
    for sub in ("convergence", "clamp"):
        num(f"sim-{sub}-trials=0", C(f"sim {sub}", "--trials", "0", "--out", out))
        num(f"sim-{sub}-trials=1e9", C(f"sim {sub}", "--preset", "quick", "--trials", "1000000000", "--out", out))
    num("sim-hfunc-out-file", C("sim hfunc", "--out", "{W}/f"), setup=lambda W: (W / "f").write_text("x"))
    for v in ("1000000000", "10", "nan"):
        num(f"sim-clamp-N={v}", C("sim clamp", "--preset", "quick", "--N", v, "--out", out))
    for v in ("1.5", "1", "nan", "-0.2"):
        num(f"sim-clamp-margins={v}", C("sim clamp", "--preset", "quick", "--margins", v, "--out", out))
    for v in ("-1", "1e300", "inf"):
        num(f"sim-clamp-sns={v}", C("sim clamp", "--preset", "quick", "--sns", v, "--out", out))
    for v in ("0", "1000000000"):
        num(f"sim-clamp-batches={v}", C("sim clamp", "--preset", "quick", "--batches", v, "--out", out))
    for v in ("nan", "0", "1e300"):
        num(f"sim-clamp-window={v}", C("sim clamp", "--preset", "quick", "--window", v, "--out", out))
    num("sim-clamp-vit-missing", C("sim clamp", "--preset", "quick", "--vit", "{W}/missing.json", "--out", out))
    for v in ("0", "1", "1.5", "nan"):
        num(f"sim-predict-margins={v}", C("sim predict", "--preset", "quick", "--margins", v, "--out", out))
    for v in ("5", "nan", "-1"):
        num(f"sim-predict-sns={v}", C("sim predict", "--preset", "quick", "--sns", v, "--out", out))
    num("sim-predict-N=10", C("sim predict", "--preset", "quick", "--N", "10", "--out", out))
    # the diffusion values are analytic in 1/N: a huge N is a valid (large-N) request
    num("sim-predict-N=1e9", C("sim predict", "--preset", "quick", "--N", "1000000000", "--out", out), "either",
        check=no_nonfinite("prediction.json"))
    num("sim-predict-record-margin-not-run", C("sim predict", "--preset", "quick", "--record-margin", "0.77", "--out", out))
    num("sim-predict-record-margin-nan", C("sim predict", "--preset", "quick", "--record-margin", "nan", "--out", out))
    num("sim-predict-activation-bogus", C("sim predict", "--preset", "quick", "--activations", "bogus", "--out", out))
    for v in ("0", "1000000000"):
        num(f"sim-validate-trials={v}", C("sim validate", "--trials", v, "--out", out))
    num("sim-bench-N=50", C("sim bench", "--N", "50"))
    num("sim-bench-steps=1e12", C("sim bench", "--steps", "1000000000000"))
    num("sim-bench-N=1e12", C("sim bench", "--N", "1000000000000"))
    num("sim-bench-table=1", C("sim bench", "--table", "1"))
    num("sim-bench-n-traj=1e12", C("sim bench", "--n-traj", "1000000000000"))

    for kv in ("eta=-1", "eta=nan", "eta=inf", "in_dim=0", "out_dim=0", "sigma=-1", "seed=-1", "collapse_tol=-1",
               "iso_tol=nan", "diverge_tol=-1", "n_steps=0", "n_steps=1000000000000", "n_samples=1000000000000",
               "in_dim=1000000", "record_every=0", "record_every=-3", "exact_euc=maybe", "activation=bogus",
               "nosuchkey=1", "alpha=nan", "eta_fast=-1", "n_samples=0", "noequals"):
        num(f"sim-eigen-settings-{kv}", C("sim eigen settings", "--set", kv, "--out", out))
    for kv in ("seeds=", "seeds=-1", "losses=bogus", "frac=2", "tail=-1", "horizon=0", "check_steps=0", "n_steps=1000000000000",
               "eta_euc=nan", "min_log_distance=-1", "check_seed=-1"):
        num(f"sim-eigen-spread-{kv}", C("sim eigen spread", "--set", kv, "--out", out))
    num("sim-eigen-all-set", C("sim eigen all", "--set", "eta=1", "--out", out))

    def eigen_exact_steps(W, r):
        p = W / "out" / "eigen_settings.json"
        if not p.is_file():
            return "no eigen_settings.json"
        d = _json(p)
        txt = json.dumps(d)
        # every setting's recorded trajectory must end at step 15 (the requested n_steps)
        steps = []

        def walk(o):
            if isinstance(o, dict):
                for k, v in o.items():
                    if k in ("steps", "t", "record_steps") and isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v):
                        steps.append(v[-1])
                    walk(v)
            elif isinstance(o, list):
                for v in o:
                    walk(v)
        walk(d)
        if not steps:
            return "no step axis found in the JSON (" + txt[:80] + ")"
        if any(s != 15 for s in steps):
            return f"last recorded steps {sorted(set(steps))}, requested 15"
        return None
    num("sim-eigen-n_steps-not-multiple", C("sim eigen settings", "--set", "n_steps=15", "--set", "n_steps_nopred=15",
                                            "--out", out), "ok", timeout=120, check=eigen_exact_steps)

    def tr(cid, *args, expect="refuse", timeout=TIMEOUT, check=None, setup=None):
        num(f"vit-train{cid}", C("vit train", *TINY, *args, "--out", out), expect, timeout, check, setup)

    # accepted inputs whose run must still be faithful (no NaN/inf recorded as a result):
    # a batch above the training split is the whole split per step, a seed above 2^64 is hashed,
    # bf16 autocast runs on CPU, and an MLP's / FFCL's normalised features stay finite at lr 1e30
    for cid, args in (("--batch-size=1e9", ("--batch-size", "1000000000")), ("--seed=2^70", ("--seed", str(2 ** 70))),
                      ("--precision=bf16", ("--precision", "bf16")),
                      # one head step at lr 1e30: finite weights, the accuracy they give is what is reported
                      ("--head-lr=1e30", ("--head-lr", "1e30")),
                      ("--model=mlp--lr=1e30", ("--model", "mlp", "--lr", "1e30")),
                      ("--method=ffcl--lr=1e30", ("--method", "ffcl", "--lr", "1e30"))):
        tr(cid, *args, expect="either", check=no_nonfinite("result.json"), timeout=90)
    for opt, vals in {"--lr": ("nan", "inf", "-1", "1e30"), "--tau": ("0", "-1", "1e-300", "nan", "1e300"),
                      "--m0": ("3", "-0.1", "nan"), "--m-last": ("5",), "--epochs": ("0", "-1", "1000000000000"),
                      "--head-epochs": ("0", "1000000000000"), "--batch-size": ("0", "1"),
                      "--subset": ("1", "0", "-5", "1000000000"), "--embed-dim": ("0", "10000000"),
                      "--heads": ("0", "3"), "--layers": ("0", "1000000"), "--patch": ("5", "0", "1000"),
                      "--crop-pad": ("100000", "-1"), "--view-noise": ("nan", "-1", "1e300"), "--wd": ("nan", "-1"),
                      "--head-lr": ("nan", "0", "1e38"), "--ff-threshold": ("nan",), "--seed": ("-1",),
                      "--seed-init": ("-1",), "--topk": ("0", "11"), "--image-size": ("16",), "--dataset": ("bogus",),
                      "--method": ("bogus",), "--loss-mode": ("bogus",), "--device": ("bogus", "cuda"),
                      "--precision": ("bogus",), "--protocol": ("bogus",), "--augment": ("bogus",),
                      "--cuda-graph": ("maybe",), "--fisher": ("maybe",), "--init": ("bogus",),
                      "--data-root": ("/nonexistent",), "--model": ("bogus",)}.items():
        for v in vals:
            tr(f"{opt}={v}", opt, v, timeout=90 if v in ("1e30",) else TIMEOUT)
    tr("-digits-image-size=9", "--dataset", "digits", "--image-size", "9")
    tr("--method=ff--lr=1e30", "--method", "ff", "--lr", "1e30", timeout=90)
    tr("--method=bp--lr=1e30", "--method", "bp", "--lr", "1e30", timeout=90)
    tr("--pipeline-procs=0", "--pipeline", "--pipeline-procs", "0")
    tr("--pipeline-procs=5", "--pipeline", "--pipeline-procs", "5")
    tr("--pipeline-depth=0", "--pipeline", "--pipeline-depth", "0")
    tr("--pipeline-threads=0", "--pipeline", "--pipeline-threads", "0")
    tr("--head-lr=1e30-3-head-epochs", "--head-lr", "1e30", "--head-epochs", "3")
    tr("-pipeline-lr=1e30", "--pipeline", "--pipeline-procs", "1", "--lr", "1e30", timeout=120)
    tr("-out-is-file", setup=lambda W: (W / "out").write_text("x"))

    def st(cid, *args, expect="refuse", timeout=TIMEOUT, check=None, setup=None):
        num(f"vit-study{cid}", C("vit study", *STUDY, *args, "--out", out), expect, timeout, check, setup)

    for opt, vals in {"--seeds": ("1", "0"), "--seed0": ("-1",), "--alpha": ("2", "nan", "0"),
                      "--assumed-ratio": ("-1", "nan", "0"), "--assumed-corr": ("2", "nan"), "--n-boot": ("0", "1000000000000"),
                      "--n-perm": ("-1", "1000000000000"), "--stats-seed": ("-1",), "--workers": ("0",),
                      "--seeds-per-task": ("0",), "--metric": ("bogus",), "--slurm-time": ("-1",),
                      "--slurm-cpus-per-task": ("0",), "--preset": ("bogus",)}.items():
        for v in vals:
            st(f"{opt}={v}", opt, v)
    for v in ("lr=nan,1", "bogus=1,2", "loss_mode=clamp", "loss_mode=clamp,clamp", "noequals", "epochs=0,1", "tau=-1,1"):
        st(f"--factor={v}", "--factor", v)
    for v in ("nosuch=1", "lr=nan", "epochs=-1", "subset=1000000000", "embed_dim=0", "heads=3", "crop_pad=100000", "noequals",
              "device=cuda"):
        st(f"--set={v}", "--set", v)
    st("--seeds=1e9-dry-run", "--seeds", "1000000000", "--dry-run")
    st("--collect-missing", "--collect", "{W}/nonexistent")
    st("--collect-empty", "--collect", "{W}/empty", setup=lambda W: (W / "empty").mkdir())
    st("--executor-local-workers=0", "--executor", "local", "--workers", "0")
    st("--dry-run-trains-nothing", "--dry-run", expect="ok", check=no_train_dir)

    def study_failed_recorded(W, r):
        p = W / "out" / "study.json"
        if not p.is_file():
            return None if r["rc"] == 2 else "no study.json and not refused"
        d = _json(p)
        txt = json.dumps(d)
        if "nan" in txt.lower().replace("nano", "") and "fail" not in txt:
            return "NaN in study.json without a failure"
        if "fail" not in txt:
            return "diverged runs not recorded as failed"
        return None
    st("--set=lr=1e30", "--set", "lr=1e30", expect="either", timeout=120, check=study_failed_recorded)

    def nd(cid, *args, expect="refuse", setup=None):
        num(f"vit-noise-dose{cid}", C("vit noise-dose", *TINY_SET, *args, "--out", out), expect, setup=setup)
    for opt, vals in {"--seeds": ("1", "0"), "--doses": ("nan,1,2", "-1,0.5,1", "1,2", "1,1,1", "a,b,c", "1e300,1,2"),
                      "--n-boot": ("0",), "--prediction": ("{W}/nonexistent",)}.items():
        for v in vals:
            nd(f"{opt}={v}", opt, v)
    nd("--prediction-list", "--prediction", "{W}/p.json", setup=lambda W: (W / "p.json").write_text("[]"))
    nd("--prediction-42", "--prediction", "{W}/p.json", setup=lambda W: (W / "p.json").write_text("42"))
    nd("--set=lr=nan", "--set", "lr=nan")
    nd("--set=nosuch=1", "--set", "nosuch=1")
    nd("--ran-at-without-record", "--ran-at", "abc")

    num("vit-bench-rounds=0", C("vit bench", "--rounds", "0"))
    num("vit-bench-steps=0", C("vit bench", "--steps", "0"))
    num("vit-bench-seeds=0", C("vit bench", "--seeds", "0"))
    num("vit-bench-seeds=1e6", C("vit bench", "--seeds", "1000000", "--rounds", "1", "--steps", "1"))
    num("vit-bench-steps=1e12", C("vit bench", "--steps", "1000000000000", "--rounds", "1"))
    num("vit-bench-workers=-1", C("vit bench", "--workers", "-1"))
    # a missing directory of --json is created (ensure_writable_file): a valid request
    num("vit-bench-json-missing-dir", C("vit bench", "--rounds", "1", "--steps", "1", "--seeds", "2", "--json",
                                        "{W}/no/such/dir/x.json"), "either", timeout=120,
        check=lambda W, r: None if r["rc"] != 0 or (W / "no/such/dir/x.json").is_file() else "no JSON written")
    num("vit-bench-data-root-missing", C("vit bench", "--data-root", "{W}/nonexistent"))

    def with_run(W):
        copy_run(base_run(work), W / "run")
    num("vit-analyze-car-group-nosuch", C("vit analyze car", "{W}/run", "--group", "nosuchfield", "--out", out), setup=with_run)
    num("vit-analyze-car-group-empty", C("vit analyze car", "{W}/run", "--group", "", "--out", out), setup=with_run)
    num("vit-analyze-car-missing", C("vit analyze car", "{W}/nonexistent", "--out", out))
    num("vit-analyze-car-empty-dir", C("vit analyze car", "{W}/empty", "--out", out), setup=lambda W: (W / "empty").mkdir())
    num("vit-analyze-factorial-n-boot=0", C("vit analyze factorial", "{W}/run", "--n-boot", "0"), setup=with_run)
    num("vit-analyze-factorial-one-run", C("vit analyze factorial", "{W}/run", "--out", out), setup=with_run)
    num("vit-analyze-factorial-second-nosuch", C("vit analyze factorial", "{W}/run", "--second", "nosuch", "--out", out),
        setup=with_run)
    num("vit-analyze-dose-response-one-run", C("vit analyze dose-response", "{W}/run", "--out", out), setup=with_run)
    # the analyses read result.json's history (hashed), not log.jsonl: a garbage log does not matter
    num("vit-analyze-grad-norms-garbage-log", C("vit analyze grad-norms", "{W}/run", "--out", out), "either",
        setup=lambda W: (with_run(W), (W / "run" / "log.jsonl").write_text("garbage\n{]\n")))
    num("vit-analyze-pair-density-bogus", C("vit analyze pair-density", "--bogus"))

    def plot_check(W, r):
        if not (W / "plots" / "diagnostics.png").is_file():
            return "DIR/diagnostics.png not written"
        if (W / "plots.png").exists():
            return "wrote DIR.png beside DIR"
        return None
    num("vit-plot-out-dir", C("vit plot", "{W}/run", "--out", "{W}/plots"), "ok", setup=with_run, check=plot_check)
    num("vit-plot-missing", C("vit plot", "{W}/nonexistent"))
    num("vit-plot-no-log", C("vit plot", "{W}/empty"), setup=lambda W: (W / "empty").mkdir())
    num("vit-plot-garbage-log", C("vit plot", "{W}/run"),
        setup=lambda W: (with_run(W), (W / "run" / "log.jsonl").write_text("garbage\n")))
    num("vit-plot-wrong-shape-log", C("vit plot", "{W}/run"),
        setup=lambda W: (with_run(W), (W / "run" / "log.jsonl").write_text("[]\n42\n")))
    num("vit-plot-wrong-shape-layers", C("vit plot", "{W}/run"),
        setup=lambda W: (with_run(W), (W / "run" / "log.jsonl").write_text('{"epoch": 0, "layers": 5}\n')))
    num("vit-plot-nan-log", C("vit plot", "{W}/run"),
        setup=lambda W: (with_run(W), (W / "run" / "log.jsonl").write_text('{"epoch": 0, "layers": [{"layer": 0, "loss": NaN}]}\n')))
    num("vit-plot-out-file", C("vit plot", "{W}/run", "--out", "{W}/f"), setup=lambda W: (with_run(W), (W / "f").write_text("x")))

    num("paper-results-missing", C("paper build", "--reuse-only", "--results", "{W}/nonexistent", "--out", out,
                                   "--pdf", "never", "--html", "never"))
    num("paper-only-nosuch", C("paper build", "--only", "nosuch", "--out", out, "--pdf", "never", "--html", "never"))
    num("paper-out-file", C("paper build", "--reuse-only", "--out", "{W}/f", "--pdf", "never", "--html", "never"),
        setup=lambda W: (W / "f").write_text("x"))
    num("paper-results-file", C("paper build", "--reuse-only", "--results", "{W}/f", "--out", out, "--pdf", "never",
                                "--html", "never"), setup=lambda W: (W / "f").write_text("x"))

    # ---- records: valid JSON / checkpoints of the wrong shape ------------------------------------
    def rec(cid, argv, setup, expect="refuse", check=None, timeout=TIMEOUT):
        add(Case(cid, "records", argv, expect, setup=setup, check=check, timeout=timeout))

    train_again = C("vit train", *TINY, "--epochs", "2", "--out", "{W}/run")

    def with_result(text):
        def s(W):
            copy_run(base_run(work), W / "run")
            (W / "run" / "result.json").write_text(text)
        return s
    def recomputed(W, r):
        """A refused record is one line; an accepted one must have been recomputed (hashed, finite)."""
        if r["rc"] != 0:
            return None
        res = _json(W / "run" / "result.json")
        if not isinstance(res, dict) or "content_sha256" not in res or not isinstance(res.get("test_acc"), float):
            return "result.json not recomputed"
        return None
    # a record without a content hash counts as unfinished and is recomputed; others are refused
    for name, text in (("list", "[]"), ("42", "42"), ("string", '"x"'), ("empty-dict", "{}"), ("null", "null"),
                       ("truncated", '{"config": {'), ("nan", "NaN")):
        rec(f"result.json={name}", train_again, with_result(text), "either", recomputed)

    def fabricate(keep_hash: bool):
        def s(W):
            d = copy_run(base_run(work), W / "run")
            res = _json(d / "result.json")
            res["test_acc"] = 0.987654
            if not keep_hash:
                res.pop("content_sha256", None)
            (d / "result.json").write_text(json.dumps(res))
        return s

    def not_fabricated(W, r):
        return "fabricated accuracy printed" if "0.9877" in r["stdout"] + r["stderr"] else None
    rec("result.json-fabricated-hash-kept", train_again, fabricate(True), "either", not_fabricated)
    rec("result.json-fabricated-no-hash", train_again, fabricate(False), "either", not_fabricated)

    def result_wrong_types(W):
        d = copy_run(base_run(work), W / "run")
        res = _json(d / "result.json")
        res["test_acc"] = "high"
        res["history"] = 5
        from cffdyn.io import content_hash
        res.pop("content_sha256")
        res["content_sha256"] = content_hash(res)
        (d / "result.json").write_text(json.dumps(res))
    rec("result.json-wrong-types-rehashed", train_again, result_wrong_types, "either", not_fabricated)

    def result_acc_2(W):
        d = copy_run(base_run(work), W / "run")
        res = _json(d / "result.json")
        res["test_acc"] = 2.5
        from cffdyn.io import content_hash
        res.pop("content_sha256")
        res["content_sha256"] = content_hash(res)
        (d / "result.json").write_text(json.dumps(res))
    rec("result.json-acc-2.5-rehashed", train_again, result_acc_2, "either",
        lambda W, r: "accuracy 2.5 accepted" if "2.5000" in r["stdout"] + r["stderr"] else None)

    def ckpt_edit(fn):
        def s(W):
            import torch
            d = copy_run(base_run(work), W / "run")
            (d / "result.json").unlink()
            ck = torch.load(d / "ckpt.pt", weights_only=True)
            ck = fn(ck, d)
            if ck is not None:
                torch.save(ck, d / "ckpt.pt")
        return s

    def nan_weights(ck, d):
        mods = ck["state"]["modules"]
        first = mods[0] if isinstance(mods, list) else next(iter(mods.values()))
        k = next(k for k, v in first.items() if hasattr(v, "dtype") and v.is_floating_point())
        first[k].fill_(float("nan"))
        return ck

    def wrong_shape(ck, d):
        mods = ck["state"]["modules"]
        first = mods[0] if isinstance(mods, list) else next(iter(mods.values()))
        k = next(k for k, v in first.items() if hasattr(v, "dtype") and v.is_floating_point() and v.ndim >= 2)
        import torch
        first[k] = torch.zeros(3, 3)
        return ck

    def ckpt_dir(ck, d):
        (d / "ckpt.pt").unlink()
        (d / "ckpt.pt").mkdir()
        return None

    def ckpt_evil(ck, d):
        (d / "ckpt.pt").write_bytes(pickle.dumps(_Evil(str(d.parent / "PWNED"))))
        return None
    for name, fn in (("no-state", lambda ck, d: {k: v for k, v in ck.items() if k != "state"}),
                     ("epoch-999", lambda ck, d: dict(ck, epoch=999)), ("epoch--5", lambda ck, d: dict(ck, epoch=-5)),
                     ("epoch-str", lambda ck, d: dict(ck, epoch="1")), ("nan-weights", nan_weights),
                     ("wrong-shape", wrong_shape), ("directory", ckpt_dir), ("runs-code", ckpt_evil),
                     ("list", lambda ck, d: [1, 2]), ("state-list", lambda ck, d: dict(ck, state=[1])),
                     ("histories-short", lambda ck, d: dict(ck, histories=[])),
                     ("configs-other", lambda ck, d: dict(ck, configs=[dict(ck["configs"][0], lr=0.5)])),
                     ("truncated", lambda ck, d: (d / "ckpt.pt").write_bytes((d / "ckpt.pt").read_bytes()[:200]))):
        rec(f"ckpt-{name}", train_again, ckpt_edit(fn),
            check=(lambda W, r: "code ran" if (W / "PWNED").exists() else None) if name == "runs-code" else None)

    def log_garbage(W):
        d = copy_run(base_run(work), W / "run")
        (d / "result.json").unlink()
        (d / "log.jsonl").write_text("[]\n42\n")
    rec("log.jsonl-wrong-shape-resume", train_again, log_garbage, "either")

    # study records
    study_dir = work / "_base_study"

    def base_study():
        if not (study_dir / "study.json").is_file():
            r = run(C("vit study", *STUDY, "--quiet", "--out", str(study_dir)), work, 300)
            assert r["rc"] == 0, r["stderr"][-2000:]
        return study_dir

    def with_study(edit):
        def s(W):
            d = W / "study"
            shutil.copytree(base_study(), d)
            (d / ".cffdyn.lock").unlink(missing_ok=True)
            edit(d)
        return s
    study_again = C("vit study", *STUDY, "--out", "{W}/study")
    for name, text in (("list", "[]"), ("42", "42")):
        rec(f"study.json={name}-rerun", study_again, with_study(lambda d, t=text: (d / "study.json").write_text(t)), "either")
        rec(f"study.json={name}-collect", C("vit study", "--collect", "{W}/study"),
            with_study(lambda d, t=text: (d / "study.json").write_text(t)), "either")
        rec(f"study.json={name}-sim-clamp-vit", C("sim clamp", "--preset", "quick", "--vit", "{W}/study/study.json",
                                                  "--out", out), with_study(lambda d, t=text: (d / "study.json").write_text(t)))
        rec(f"study.json={name}-analyze-factorial", C("vit analyze factorial", "{W}/study", "--out", out),
            with_study(lambda d, t=text: (d / "study.json").write_text(t)), "either")
    rec("study.json-no-analysis-sim-clamp-vit", C("sim clamp", "--preset", "quick", "--vit", "{W}/s.json", "--out", out),
        lambda W: (W / "s.json").write_text('{"status": "complete"}'))

    def first_run(d):
        return sorted((d / "runs").glob("*/result.json"))[0]
    for name, text in (("list", "[]"), ("42", "42")):
        rec(f"study-run-result.json={name}", study_again,
            with_study(lambda d, t=text: first_run(d).write_text(t)), "either")

    def fab_run(d):
        p = first_run(d)
        res = _json(p)
        res["test_acc"] = 0.987654
        p.write_text(json.dumps(res))
    rec("study-run-result-fabricated", study_again, with_study(fab_run), "either",
        lambda W, r: "fabricated accuracy used" if "0.987654" in (W / "study" / "study.json").read_text() else None)
    for name, text in (("list", "[]"), ("42", "42"), ("garbage", "{")):
        rec(f"study-task-record={name}", study_again,
            with_study(lambda d, t=text: (d / "tasks" / "task-0000.json").write_text(t)), "either")
        rec(f"study-plan={name}", study_again,
            with_study(lambda d, t=text: (d / "tasks" / "plan.json").write_text(t)), "either")
    rec("study-claim-garbage", study_again,
        with_study(lambda d: [p.write_text("[]") for p in (d / "tasks").glob("*.json")]), "either")

    def paper_results(W, name, text):
        R = W / "results"
        sub = {"vit_study": "vit/study/quick/study.json", "verify": "theory/quick/verify.json",
               "hfunc": "sim/meanfield/quick/hfunc.json"}[name]
        p = R / sub
        p.parent.mkdir(parents=True)
        p.write_text(text)
    for name in ("vit_study", "verify", "hfunc"):
        for tname, text in (("list", "[]"), ("42", "42"), ("no-cells", '{"status": "complete", "analysis": {}, "runs": []}'),
                            ("empty", "{}")):
            rec(f"paper-{name}-{tname}", C("paper build", "--reuse-only", "--only", name, "--results", "{W}/results",
                                           "--out", out, "--pdf", "never", "--html", "never"),
                lambda W, n=name, t=text: paper_results(W, n, t))

    # sim/theory reuse of an edited record
    def hfunc_edit(text):
        def s(W):
            r = run(C("sim hfunc", "--out", str(W / "out")), W, 120)
            assert r["rc"] == 0, r["stderr"]
            (W / "out" / "hfunc.json").write_text(text)
        return s
    for tname, text in (("list", "[]"), ("42", "42"), ("empty", "{}")):
        rec(f"sim-hfunc-reuse-{tname}", C("sim hfunc", "--out", out), hfunc_edit(text), "either", timeout=120)

    def eigen_parts(text):
        def s(W):
            (W / "out").mkdir()
            (W / "out" / "eigen_settings.parts.jsonl").write_text(text)
        return s
    for tname, text in (("list", "[]\n"), ("garbage", "garbage\n"), ("wrong-types", '{"key": 5, "setting": [], "result": 3}\n')):
        rec(f"sim-eigen-parts-{tname}", C("sim eigen settings", "--out", out), eigen_parts(text), "either", timeout=150)

    # ---- symlinks planted in --out ---------------------------------------------------------------
    def plant(names, extra=None):
        def s(W):
            (W / "outside").mkdir()
            (W / "out").mkdir(exist_ok=True)
            if extra:
                extra(W)
            for i, n in enumerate(names):
                v = W / "outside" / f"victim{i}"
                v.write_text("precious\n")
                (W / "out" / n).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(v, W / "out" / n)
        return s

    def sym(cid, argv, names, extra=None, timeout=TIMEOUT, expect="either"):
        add(Case(cid, "symlink", argv, expect, setup=plant(names, extra), check=victim_unchanged, timeout=timeout))
    sym("theory-verify", C("theory verify", "--cases", "10", "--out", out), ["verify.json", "verify.png"], timeout=90)
    sym("theory-verify-json-plot", C("theory verify", "--cases", "10", "--json", "{W}/out/a.json", "--plot", "{W}/out/a.png"),
        ["a.json", "a.png"], timeout=90)
    sym("theory-show", C("theory show", "--out", "{W}/out/g.md"), ["g.md"], timeout=90)
    sym("sim-hfunc", C("sim hfunc", "--out", out), ["hfunc.json", "hfunc.png"], timeout=120)
    sym("sim-eigen-settings", C("sim eigen settings", "--out", out),
        ["eigen_settings.json", "eigen_settings.png", "eigen_settings.parts.jsonl"], timeout=150)
    sym("vit-train", C("vit train", *TINY, "--out", out), ["log.jsonl", "result.json", "ckpt.pt"])
    sym("vit-train-log-only", C("vit train", *TINY, "--out", out), ["log.jsonl"])

    def run_into_out(W):
        copy_run(base_run(work), W / "run")
    sym("vit-plot", C("vit plot", "{W}/run", "--out", out), ["diagnostics.png"], run_into_out)
    sym("vit-analyze-car", C("vit analyze car", "{W}/run", "--out", out), ["car.json", "car.png"], run_into_out)
    sym("vit-study", C("vit study", *STUDY, "--out", out), ["study.json", "study.png", "tasks/plan.json"], timeout=120)
    sym("vit-bench-json", C("vit bench", "--rounds", "1", "--steps", "1", "--seeds", "2", "--json", "{W}/out/b.json"),
        ["b.json"], timeout=120)

    def paper_reuse(W):
        R = W / "results" / "theory" / "quick"
        R.mkdir(parents=True)
        for f in ("verify.json", "verify.png"):
            shutil.copy(base_verify() / f, R / f)
    sym("paper-build", C("paper build", "--reuse-only", "--only", "verify", "--results", "{W}/results", "--out", out,
                         "--pdf", "never", "--html", "never"),
        ["manuscript.log", ".manuscript.html.tmp", "numbers.json", "build.json", "manuscript.tex"], paper_reuse, timeout=120)

    def base_verify():
        d = work / "_base_verify"
        if not (d / "verify.json").is_file():
            r = run(C("theory verify", "--out", str(d)), work, 300)
            assert r["rc"] == 0, r["stderr"]
        return d

    # ---- concurrency: two writers on one --out ---------------------------------------------------
    def two(cid, argv, check, timeout=180, setup=None, delay=0.0):
        def runner(W):
            e = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
            a = [x.replace("{W}", str(W)) for x in argv]
            ps = []
            for k in range(2):
                ps.append(subprocess.Popen(a, cwd=W, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                           start_new_session=True))
                time.sleep(delay)
            outs = []
            t0 = time.monotonic()
            for p in ps:
                try:
                    o, er = p.communicate(timeout=max(1.0, timeout - (time.monotonic() - t0)))
                    outs.append((p.returncode, o, er))
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    o, er = p.communicate()
                    outs.append((None, o, er))
            rcs = [o[0] for o in outs]
            err = "\n---\n".join(o[2] for o in outs)
            r = {"rc": None if None in rcs else (0 if sorted(rcs) == [0, 2] or rcs == [0, 0] else max(rcs)),
                 "stdout": "\n---\n".join(o[1] for o in outs), "stderr": err, "rcs": rcs}
            return r
        add(Case(cid, "concurrency", argv, "ok", setup=setup, check=check, timeout=timeout, runner=runner))

    def one_refused(W, r):
        rcs = r["rcs"]
        if sorted(rcs) != [0, 2]:
            return f"exit codes {rcs} (expected one 0 and one 2)"
        if "pid" not in r["stderr"]:
            return "refusal does not name the holder's pid"
        return None

    def train_log_ok(W, r):
        msg = one_refused(W, r)
        if msg:
            return msg
        ep = [json.loads(x)["epoch"] for x in (W / "out" / "log.jsonl").read_text().splitlines() if x.strip()]
        return f"log.jsonl epochs {ep}" if len(ep) != len(set(ep)) else None
    two("vit-train-x2", C("vit train", *TINY, "--epochs", "40", "--out", out), train_log_ok, delay=3.0)

    def study_log_ok(W, r):
        msg = one_refused(W, r)
        if msg:
            return msg
        for lg in (W / "out" / "runs").glob("*/log.jsonl"):
            ep = [json.loads(x)["epoch"] for x in lg.read_text().splitlines() if x.strip()]
            if len(ep) != len(set(ep)):
                return f"{lg}: epochs {ep}"
        return None
    two("vit-study-x2", C("vit study", *STUDY, "--out", out), study_log_ok, delay=3.0, timeout=240)
    two("sim-hfunc-x2", C("sim hfunc", "--no-reuse", "--out", out), one_refused, delay=2.0)
    two("theory-verify-x2", C("theory verify", "--cases", "10", "--out", out), one_refused, delay=2.0)
    two("sim-eigen-x2", C("sim eigen settings", "--out", out), one_refused, delay=2.0, timeout=240)

    def paper_two_check(W, r):
        return one_refused(W, r)
    two("paper-build-x2", C("paper build", "--reuse-only", "--only", "verify", "--results", "{W}/results", "--out", out,
                            "--pdf", "auto", "--html", "never"), paper_two_check, setup=paper_reuse, delay=2.0, timeout=300)

    # ---- full filesystem -------------------------------------------------------------------------
    def full(cid, argv, free_kb, timeout=120, setup=None):
        add(Case(cid, "diskfull", argv, "refuse", setup=setup, timeout=timeout, env={"_FULL_KB": str(free_kb)},
                 check=full_check))
    for kb in (0, 24):
        full(f"vit-train-free{kb}k", C("vit train", *TINY, "--out", "{F}/out"), kb)
        full(f"vit-study-free{kb}k", C("vit study", *STUDY, "--out", "{F}/out"), kb)
        full(f"theory-verify-free{kb}k", C("theory verify", "--cases", "10", "--out", "{F}/out"), kb)
        full(f"sim-hfunc-free{kb}k", C("sim hfunc", "--out", "{F}/out"), kb)
        full(f"sim-eigen-free{kb}k", C("sim eigen settings", "--out", "{F}/out"), kb, timeout=150)
        full(f"vit-plot-free{kb}k", C("vit plot", "{W}/run", "--out", "{F}/out"), kb, setup=with_run)
        full(f"paper-build-free{kb}k", C("paper build", "--reuse-only", "--only", "verify", "--results", "{W}/results",
                                         "--out", "{F}/out", "--pdf", "never", "--html", "auto"), kb, setup=paper_reuse)
    # 120 KiB hold the whole tiny run: it must then succeed with every file intact
    add(Case("vit-train-free120k", "diskfull", C("vit train", *TINY, "--out", "{F}/out"), "either",
             timeout=120, env={"_FULL_KB": "120"}, check=full_check))
    return L


def full_check(W, r):
    """Nothing half-written: every JSON left under the full filesystem parses."""
    F = Path(r.get("F", ""))
    for p in F.rglob("*.json"):
        try:
            json.loads(p.read_text())
        except Exception as exc:  # noqa: BLE001
            return f"half-written {p} ({exc.__class__.__name__})"
    if r["rc"] == 2 and "no space" not in r["stderr"]:
        return "refusal does not say the disk is full"
    return None


# ----------------------------------------------------------------------------- kills

def _strip(obj):
    """A result without its timings and machine-dependent fields."""
    drop = ("time", "wall", "_s", "t_all", "started", "finished", "t_start", "t_end", "load", "content_sha256", "cpu",
            "torch_threads", "owner", "host", "pid", "log", "commit", "trained_now", "elapsed", "when", "reused")
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not any(d in k for d in drop)}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _state(d: Path) -> str:
    """What a killed run left: epochs logged, checkpoints and results on disk."""
    logs = list(d.rglob("log.jsonl"))
    epochs = sum(len([x for x in lg.read_text().splitlines() if x.strip()]) for lg in logs)
    return (f"{epochs} epochs logged in {len(logs)} logs, {len(list(d.rglob('*.pt')))} ckpt, "
            f"{len(list(d.rglob('result.json')))} results, {len(list(d.rglob('*.tmp')))} tmp")


def kill_cases(work: Path, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    # long enough (tens of epochs) that a kill after the imports lands inside training
    train = C("vit train", *TINY, "--epochs", "30", "--head-epochs", "10")
    study = C("vit study", "--factor", "loss_mode=clamp,subtract", "--seeds", "2", "--n-boot", "100", "--n-perm", "100",
              *TINY_SET, "--set", "epochs=12", "--set", "head_epochs=5")
    for kind, argv, files in (("train", train, ["result.json", "log.jsonl"]), ("study", study, ["study.json"])):
        ref = work / f"_kill_ref_{kind}"
        if not (ref / files[0]).is_file():
            shutil.rmtree(ref, ignore_errors=True)
            t0 = time.monotonic()
            r = run(argv + ["--out", str(ref)], work, 600)
            assert r["rc"] == 0, r["stderr"][-2000:]
            (work / f"_kill_ref_{kind}.wall").write_text(str(time.monotonic() - t0))
        wall = float((work / f"_kill_ref_{kind}.wall").read_text())
        for i in range(n):
            d = work / f"kill_{kind}_{i}"
            shutil.rmtree(d, ignore_errors=True)
            delays = []
            # up to two kills per case, then the rerun to completion
            for _ in range(rng.choice((1, 1, 2))):
                delay = rng.uniform(0.4, 0.97) * wall
                r = run(argv + ["--out", str(d)], work, delay)
                delays.append((round(delay, 2), "killed" if r["rc"] is None else f"ended rc {r['rc']}", _state(d)))
            r = run(argv + ["--out", str(d)], work, 600)
            same, why = r["rc"] == 0, "" if r["rc"] == 0 else f"rerun rc {r['rc']}: {r['stderr'][-300:]}"
            if same:
                for f in files:
                    a, b = ref / f, d / f
                    if f.endswith(".jsonl"):
                        A = [_strip(json.loads(x)) for x in a.read_text().splitlines() if x.strip()]
                        B = [_strip(json.loads(x)) for x in b.read_text().splitlines() if x.strip()]
                    else:
                        A, B = _strip(_json(a)), _strip(_json(b))
                        if kind == "study":   # run dirs and paths differ by --out
                            A = json.loads(json.dumps(A).replace(str(ref), "OUT"))
                            B = json.loads(json.dumps(B).replace(str(d), "OUT"))
                    if A != B:
                        same, why = False, f"{f} differs from the uninterrupted run's"
                        break
                if kind == "study":
                    for lg in d.glob("runs/*/log.jsonl"):
                        ep = [json.loads(x)["epoch"] for x in lg.read_text().splitlines() if x.strip()]
                        if ep != sorted(set(ep)):
                            same, why = False, f"{lg.name}: epochs {ep}"
                left = [p.name for p in d.rglob("*.tmp")]
                if left:
                    same, why = False, f"temp files left after the rerun: {left}"
            rec = {"id": f"kill-{kind}-{i}", "cls": "kill", "kills": delays, "outcome": "identical" if same else "differs",
                   "why": why, "wall": r["wall"]}
            print(json.dumps(rec), flush=True)
            out.append(rec)
    return out


# ----------------------------------------------------------------------------- main

def _mount_full(F: Path, free_kb: int) -> None:
    F.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(F)], check=True)
    st = os.statvfs(F)
    avail = st.f_bavail * st.f_frsize
    fill = max(0, avail - free_kb * 1024)
    with open(F / "filler", "wb") as fh:
        try:
            fh.write(b"\0" * fill)
        except OSError:
            pass


def _umount(F: Path) -> None:
    subprocess.run(["umount", str(F)], check=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/sweep"))
    ap.add_argument("--only", nargs="*", default=None, help="classes to run")
    ap.add_argument("--id", default=None, help="run only cases whose id contains this")
    ap.add_argument("--redo", action="store_true", help="rerun cases already in results.jsonl")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--kills", type=int, default=5, help="kill -9 cases per kind (train, study)")
    ap.add_argument("--kill-seed", type=int, default=21)
    a = ap.parse_args(argv)
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    resf = work / "results.jsonl"
    done = {}
    if resf.is_file():
        for ln in resf.read_text().splitlines():
            d = json.loads(ln)
            done[d["id"]] = d
    todo = [c for c in cases(work) if (a.only is None or c.cls in a.only) and (a.id is None or a.id in c.id)]
    if a.list:
        for c in todo:
            print(c.cls, c.id)
        print(len(todo), "cases")
        return 0
    for c in todo:
        if c.id in done and not a.redo:
            continue
        W = work / "cases" / c.id.replace("/", "_")
        shutil.rmtree(W, ignore_errors=True)
        W.mkdir(parents=True)
        F = work / "full" / c.id
        mounted = False
        try:
            if c.setup:
                c.setup(W)
            if c.env and "_FULL_KB" in c.env:
                if os.geteuid() != 0:
                    continue
                _mount_full(F, int(c.env["_FULL_KB"]))
                mounted = True
            if c.runner:
                r = c.runner(W)
            else:
                argv_ = [x.replace("{W}", str(W)).replace("{F}", str(F)) for x in c.argv]
                r = run(argv_, W, c.timeout, {k: v for k, v in (c.env or {}).items() if not k.startswith("_")})
            r["F"] = str(F)
            msg = c.check(W, r) if c.check else None
        except AssertionError as exc:
            r, msg = {"rc": -1, "stdout": "", "stderr": f"setup failed: {exc}"}, "setup failed"
        finally:
            if mounted:
                _umount(F)
        outcome = classify(r, c.expect, msg) if msg != "setup failed" else "setup-failed"
        errs = error_lines(r["stderr"])
        rec = {"id": c.id, "cls": c.cls, "expect": c.expect, "outcome": outcome, "rc": r["rc"], "check": msg,
               "error": errs[-1][:400] if errs else None,
               "tail": None if outcome == "good" else r["stderr"][-1500:], "wall": round(r.get("wall", 0.0), 1)}
        print(json.dumps({k: rec[k] for k in ("id", "outcome", "rc", "check", "error")}), flush=True)
        with open(resf, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        done[c.id] = rec
    if a.only is None or "kill" in a.only:
        if a.id is None:
            for rec in kill_cases(work, a.kills, a.kill_seed):
                with open(resf, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                done[rec["id"]] = rec
    summary(done.values())
    return 0


def summary(recs) -> None:
    by: dict[str, dict[str, int]] = {}
    for r in recs:
        d = by.setdefault(r["cls"], {})
        d[r["outcome"]] = d.get(r["outcome"], 0) + 1
    print("\nclass        tried  " + "  ".join(f"{k:>10}" for k in ("good", "traceback", "silent", "unbounded", "other")))
    for cls, d in by.items():
        if cls == "kill":
            print(f"{cls:<12} {sum(d.values()):>5}  identical {d.get('identical', 0)}  differs {d.get('differs', 0)}")
            continue
        print(f"{cls:<12} {sum(d.values()):>5}  " + "  ".join(f"{d.get(k, 0):>10}" for k in
                                                        ("good", "traceback", "silent", "unbounded", "other")))
    bad = [r for r in recs if r["outcome"] not in ("good", "identical")]
    for r in bad:
        print(f"  {r['outcome']:<10} {r['id']}: {r.get('check') or ''} {(r.get('error') or '')[:200]}")


if __name__ == "__main__":
    sys.exit(main())
