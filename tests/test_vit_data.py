"""Dataset readers on small files written in the real formats; split protocol; augmentation."""
from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from vit.augment import augment, crop_flip, random_crop
from vit.data import load_dataset, read_idx, split_indices


def _write_idx(path, arr: np.ndarray, gz: bool) -> None:
    assert arr.dtype == np.uint8
    raw = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(tmp_path, gz):
    a = np.random.default_rng(1).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    p = tmp_path / "x.idx"
    _write_idx(p, a, gz)
    np.testing.assert_array_equal(read_idx(p), a)


def test_idx_bad_files(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(p)
    p.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"\x00\x01")
    with pytest.raises(ValueError, match="size mismatch"):
        read_idx(p)


def _fmnist_dir(tmp_path, n_train=50, n_test=20):
    rng = np.random.default_rng(0)
    xtr = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    ytr = (np.arange(n_train) % 10).astype(np.uint8)
    xte = rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)
    yte = (np.arange(n_test) % 10).astype(np.uint8)
    for stem, arr in [("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                      ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)]:
        _write_idx(tmp_path / (stem + ".gz"), arr, True)
    return xtr, ytr, xte, yte


def test_fashion_mnist_from_dir_and_env(tmp_path, monkeypatch):
    xtr, ytr, xte, yte = _fmnist_dir(tmp_path)
    ds = load_dataset("fashion_mnist", tmp_path, seed=3)
    assert ds.x_train.shape[1:] == (1, 28, 28) and ds.x_train.dtype == torch.uint8
    assert ds.x_train.shape[0] + ds.x_val.shape[0] == 50 and ds.x_val.shape[0] == 5
    np.testing.assert_array_equal(ds.x_test[:, 0].numpy(), xte)
    np.testing.assert_array_equal(ds.y_test.numpy(), yte)
    # every train image sits in the pool with its own label
    tr, va = split_indices(50, 3)
    np.testing.assert_array_equal(ds.x_train[:, 0].numpy(), xtr[tr])
    np.testing.assert_array_equal(ds.y_train.numpy(), ytr[tr])
    monkeypatch.setenv("CFFDYN_FMNIST", str(tmp_path))
    ds2 = load_dataset("fashion_mnist", seed=3)
    assert torch.equal(ds2.x_train, ds.x_train)


def test_split_protocol():
    tr, va = split_indices(1000, 5)
    assert len(va) == 100 and len(tr) == 900 and not set(tr) & set(va)
    assert set(tr) | set(va) == set(range(1000))
    tr2, va2 = split_indices(1000, 5)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    tr3, _ = split_indices(1000, 6)
    assert not np.array_equal(tr, tr3)
    trs, vas = split_indices(1000, 5, subset=300)
    assert len(trs) == 270 and len(vas) == 30 and not set(trs) & set(vas)
    with pytest.raises(ValueError, match="subset"):
        split_indices(10, 0, subset=11)


def test_subset_seed_fixes_the_images_and_the_split_seed_moves_the_split():
    pools = []
    for seed in (0, 1, 2):
        tr, va = split_indices(1000, seed, subset=300, subset_seed=7)
        assert len(tr) == 270 and len(va) == 30 and not set(tr) & set(va)
        pools.append((set(tr) | set(va), set(va)))
    assert pools[0][0] == pools[1][0] == pools[2][0]          # the same 300 images for every seed
    assert len({frozenset(v) for _, v in pools}) == 3          # three different validation sets
    assert pools[0][0] != set(np.concatenate(split_indices(1000, 0, subset=300, subset_seed=8)))
    # a subset seed equal to the split seed (or none) is the one-permutation draw of before
    for a, b in zip(split_indices(1000, 4, subset=300, subset_seed=4), split_indices(1000, 4, subset=300)):
        np.testing.assert_array_equal(a, b)
    from vit.config import TrainConfig, data_key
    c = TrainConfig(subset=300, seed_subset=7)
    assert c.resolved_seeds()["subset"] == 7 and c.replace(seed=1).resolved_seeds()["split"] == 1
    assert TrainConfig(seed_split=3).resolved_seeds()["subset"] == 3
    assert data_key(c) != data_key(c.replace(seed=1)) and data_key(c) == data_key(c.replace(seed_order=5))


def _write_cifar(root, fine: bool, n_per=6):
    rng = np.random.default_rng(2)
    key = b"fine_labels" if fine else b"labels"
    names = ["train", "test"] if fine else [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    sub = root / ("cifar-100-python" if fine else "cifar-10-batches-py")
    sub.mkdir()
    written = {}
    for n in names:
        data = rng.integers(0, 256, size=(n_per, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 100 if fine else 10, size=n_per))
        with open(sub / n, "wb") as fh:
            pickle.dump({b"data": data, key: labels, b"batch_label": b"x"}, fh)
        written[n] = (data, labels)
    return written


@pytest.mark.parametrize("fine", [False, True])
def test_cifar_pickles(tmp_path, fine):
    written = _write_cifar(tmp_path, fine)
    name = "cifar100" if fine else "cifar10"
    ds = load_dataset(name, tmp_path, seed=0, val_fraction=0.5)
    assert ds.num_classes == (100 if fine else 10)
    test_name = "test" if fine else "test_batch"
    data, labels = written[test_name]
    # CHW order: the first 1024 bytes are the red plane, row-major
    np.testing.assert_array_equal(ds.x_test.numpy(), data.reshape(-1, 3, 32, 32))
    assert ds.x_test[0, 0, 0, 1].item() == data[0, 1] and ds.x_test[0, 1, 0, 0].item() == data[0, 1024]
    np.testing.assert_array_equal(ds.y_test.numpy(), np.array(labels))
    assert ds.x_train.shape[0] + ds.x_val.shape[0] == (6 if fine else 30)


def test_svhn_mat(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(3)
    for split, n in (("train", 10), ("test", 4)):
        X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [2], [10], [5], [6], [7], [8], [9], [3]][:n], dtype=np.uint8)
        savemat(tmp_path / f"{split}_32x32.mat", {"X": X, "y": y})
        if split == "test":
            Xte, yte = X, y
    ds = load_dataset("svhn", tmp_path, seed=0)
    assert ds.x_test.shape == (4, 3, 32, 32)
    n, c, i, j = 2, 1, 5, 17
    assert ds.x_test[n, c, i, j].item() == Xte[i, j, c, n]
    np.testing.assert_array_equal(ds.y_test.numpy(), np.where(yte[:, 0] == 10, 0, yte[:, 0]))


def test_digits():
    pytest.importorskip("sklearn")
    ds = load_dataset("digits", seed=0)
    assert ds.x_train.shape[1:] == (1, 8, 8) and ds.num_classes == 10
    assert ds.x_train.shape[0] + ds.x_val.shape[0] + ds.x_test.shape[0] == 1797
    assert int(ds.x_train.max()) == 255
    ds16 = load_dataset("digits", seed=0, image_size=16)
    assert ds16.x_train.shape[1:] == (1, 16, 16)
    assert torch.equal(ds16.x_test[:, :, ::2, ::2], ds.x_test)
    # the test set does not depend on the run seed
    assert torch.equal(load_dataset("digits", seed=7).x_test, ds.x_test)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_dataset("fashion_mnist", tmp_path)
    with pytest.raises(FileNotFoundError, match="cifar-10"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(FileNotFoundError, match="train_32x32.mat"):
        load_dataset("svhn", tmp_path)
    with pytest.raises(ValueError, match="augmentation"):
        augment(torch.zeros(2, 1, 8, 8), torch.Generator(), "cutout")


def test_random_crop_is_a_window_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 8, 8, generator=g)
    pad = 2
    out = random_crop(x, pad, torch.Generator().manual_seed(1))
    xp = torch.nn.functional.pad(x, (pad,) * 4)
    offsets = set()
    for n in range(16):
        hits = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                if torch.equal(out[n], xp[n, :, dy:dy + 8, dx:dx + 8])]
        assert hits, f"sample {n} is not a crop"
        offsets.add(hits[0])
    assert len(offsets) > 3  # offsets vary per sample


def test_crop_flip_deterministic_and_flip_only():
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = crop_flip(x, torch.Generator().manual_seed(5))
    b = crop_flip(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    f = crop_flip(x, torch.Generator().manual_seed(5), pad=0)
    same = [torch.equal(f[n], x[n]) for n in range(32)]
    flipped = [torch.equal(f[n], x[n].flip(-1)) for n in range(32)]
    assert all(s or fl for s, fl in zip(same, flipped)) and any(flipped) and any(same)
    r = augment(x, torch.Generator().manual_seed(0), "randaug")
    assert r.shape == x.shape and torch.isfinite(r).all() and 0 <= r.min() and r.max() <= 1


# --------------------------------------------------------------------------- one-line errors
from cffdyn.errors import CorruptFileError, UserError, guarded  # noqa: E402
from vit.data import MissingDataError, RestrictedUnpickler, load_pickle_restricted  # noqa: E402


def _one_line(fn, capsys) -> str:
    """Run ``fn`` as a command would (under ``guarded``): exit 2 and exactly one stderr line."""
    rc = guarded(lambda argv: fn(), None, "cffdyn vit train")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_fashion_mnist_truncated_gz_is_one_line(tmp_path, monkeypatch, capsys):
    _fmnist_dir(tmp_path)
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])          # a download cut short
    with pytest.raises(CorruptFileError, match="not a complete gzip file"):
        load_dataset("fashion_mnist", tmp_path)
    err = _one_line(lambda: load_dataset("fashion_mnist", tmp_path), capsys)
    assert str(f) in err and "apt-get install -y dataset-fashion-mnist" in err and "the data root" in err
    monkeypatch.setenv("CFFDYN_FMNIST", str(tmp_path))              # the same through the environment
    err = _one_line(lambda: load_dataset("fashion_mnist"), capsys)
    assert str(f) in err and "CFFDYN_FMNIST" in err


def test_fashion_mnist_damaged_files_are_one_line(tmp_path, capsys):
    _fmnist_dir(tmp_path)
    f = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(f.read_bytes())
    raw[12:20] = b"\xff" * 8                                          # gzip magic intact, stream damaged
    f.write_bytes(bytes(raw))
    assert str(f) in _one_line(lambda: load_dataset("fashion_mnist", tmp_path), capsys)
    # a raw (uncompressed) IDX file cut short is a size mismatch naming the file
    _fmnist_dir(tmp_path)
    g = tmp_path / "t10k-images-idx3-ubyte.gz"
    g.unlink()
    arr = np.zeros((4, 28, 28), np.uint8)
    raw_path = tmp_path / "t10k-images-idx3-ubyte"
    _write_idx(raw_path, arr, gz=False)
    raw_path.write_bytes(raw_path.read_bytes()[:-10])
    err = _one_line(lambda: load_dataset("fashion_mnist", tmp_path), capsys)
    assert str(raw_path) in err and "size mismatch" in err


def test_missing_fashion_mnist_names_the_debian_package(tmp_path, capsys):
    with pytest.raises(MissingDataError) as exc:
        load_dataset("fashion_mnist", tmp_path)
    msg = str(exc.value)
    assert "apt-get install -y dataset-fashion-mnist" in msg and "install fashion-mnist" not in msg
    assert isinstance(exc.value, FileNotFoundError) and isinstance(exc.value, UserError)
    assert "dataset-fashion-mnist" in _one_line(lambda: load_dataset("fashion_mnist", tmp_path), capsys)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not_a_dict", "bad_shape"])
def test_cifar_bad_batch_is_one_line(tmp_path, capsys, damage):
    _write_cifar(tmp_path, fine=False)
    f = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    if damage == "truncated":
        f.write_bytes(f.read_bytes()[:100])
    elif damage == "garbage":
        f.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif damage == "empty":
        f.write_bytes(b"")
    elif damage == "not_a_dict":
        f.write_bytes(pickle.dumps([1, 2, 3]))
    else:
        f.write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}))
    with pytest.raises(CorruptFileError):
        load_dataset("cifar10", tmp_path)
    assert str(f) in _one_line(lambda: load_dataset("cifar10", tmp_path), capsys)


class _Evil:
    """Unpickling this would run a shell command (``os.system``) that writes a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


class _EvilEval:
    def __reduce__(self):
        return eval, ("__import__('os').system('touch /tmp/cffdyn-evil-eval-marker')",)


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_cifar_pickle_that_runs_code_is_refused(tmp_path, capsys, protocol):
    _write_cifar(tmp_path, fine=False)
    marker = tmp_path / "PWNED"
    f = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    payload = {b"data": np.zeros((6, 3072), np.uint8), b"labels": [0] * 6, b"x": _Evil(marker)}
    f.write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(CorruptFileError, match=r"refused global (posix|os|nt)\.system"):
        load_dataset("cifar10", tmp_path)
    err = _one_line(lambda: load_dataset("cifar10", tmp_path), capsys)
    assert str(f) in err and "system" in err
    assert not marker.exists()
    # the plain pickle module WOULD run it: the control shows the payload is live
    pickle.loads(f.read_bytes())
    assert marker.exists()


def test_restricted_unpickler_refuses_builtins(tmp_path):
    f = tmp_path / "b"
    f.write_bytes(pickle.dumps(_EvilEval()))
    with pytest.raises(CorruptFileError, match="refused global builtins.eval"):
        load_pickle_restricted(f, "fix")
    assert not __import__("pathlib").Path("/tmp/cffdyn-evil-eval-marker").exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_restricted_unpickler_reads_what_the_format_holds(tmp_path, protocol):
    """Dicts, lists, tuples, bytes/str, ints/floats, numpy arrays and scalars, any protocol;
    and the globals of the original Python-2 CIFAR files (numpy.core.multiarray._reconstruct)."""
    a = np.arange(24, dtype=np.uint8).reshape(2, 12)
    obj = {b"data": a, b"labels": [1, 2], "name": "x", b"t": (1.5, None, True), b"s": np.int64(7),
           b"f": np.float32(0.25)}
    raw = pickle.dumps(obj, protocol=protocol)
    if protocol <= 2:   # what numpy 1.x / Python 2 wrote: numpy.core instead of numpy._core
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    import io
    got = RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    np.testing.assert_array_equal(got[b"data"], a)
    assert got[b"labels"] == [1, 2] and got["name"] == "x" and got[b"t"] == (1.5, None, True)
    assert got[b"s"] == 7 and got[b"f"] == np.float32(0.25)


def test_svhn_bad_mat_is_one_line(tmp_path, capsys):
    from scipy.io import savemat

    rng = np.random.default_rng(3)
    for split, n in (("train", 10), ("test", 4)):
        savemat(tmp_path / f"{split}_32x32.mat", {"X": rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8),
                                                  "y": np.ones((n, 1), np.uint8)})
    f = tmp_path / "test_32x32.mat"
    good = f.read_bytes()
    for bad in (good[: len(good) // 2], b"garbage" * 100):
        f.write_bytes(bad)
        with pytest.raises(CorruptFileError):
            load_dataset("svhn", tmp_path)
        assert str(f) in _one_line(lambda: load_dataset("svhn", tmp_path), capsys)
    savemat(f, {"X": np.zeros((32, 32, 3, 2), np.uint8)})             # y missing
    err = _one_line(lambda: load_dataset("svhn", tmp_path), capsys)
    assert str(f) in err and "X and y" in err


def test_bad_arguments_are_one_line(capsys):
    assert "unknown dataset" in _one_line(lambda: load_dataset("mnist"), capsys)
    assert "subset" in _one_line(lambda: load_dataset("digits", subset=10 ** 6), capsys)
    assert "data root" in _one_line(lambda: load_dataset("cifar10"), capsys)


# --------------------------------------------------------------------------- contents: dtype, range, labels
_IDX_CODE = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


def _write_idx_typed(path, arr: np.ndarray) -> None:
    """An IDX file of any element type the format defines (big-endian, as the format says)."""
    arr = arr.astype(arr.dtype.newbyteorder(">")) if arr.dtype.itemsize > 1 else arr
    code = _IDX_CODE[np.dtype(arr.dtype)]
    raw = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(raw))


def _cifar_with(root, data, labels):
    """CIFAR-10 batches whose test_batch holds ``data``/``labels`` (the others are valid)."""
    _write_cifar(root, False)
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"x"}, fh)
    return root / "cifar-10-batches-py" / "test_batch"


_U8 = np.random.default_rng(5).integers(0, 256, size=(6, 3072)).astype(np.uint8)
_BAD_CIFAR = {
    "float images above 1": (_U8.astype(np.float32), [1] * 6, "float32 values"),
    "int8 that would wrap": (_U8.astype(np.int8), [1] * 6, "int8 values -"),
    "int64 above 255": (_U8.astype(np.int64) + 200, [1] * 6, "int64 values"),
    "object images": (np.array([[None] * 3072] * 6, dtype=object), [1] * 6, "object"),
    "NaN images": (np.full((6, 3072), np.nan, np.float64), [1] * 6, "NaN"),
    "fractional labels": (_U8, [9.7, 1.0, 2.0, 3.0, 4.0, 5.0], "float64 values 1..9.7 as labels"),
    "labels out of range": (_U8, [10, 1, 2, 3, 4, 5], "labels 1..10"),
}


@pytest.mark.parametrize("case", list(_BAD_CIFAR))
def test_cifar_contents_that_a_cast_would_change_are_refused(tmp_path, capsys, case):
    data, labels, found = _BAD_CIFAR[case]
    f = _cifar_with(tmp_path, data, labels)
    err = _one_line(lambda: load_dataset("cifar10", tmp_path), capsys)
    assert str(f) in err and found in err and "expected" in err


def test_float_images_in_unit_range_are_converted_and_said(tmp_path, capsys):
    unit = _U8.astype(np.float64) / 255.0
    _cifar_with(tmp_path, unit, [3] * 6)
    ds = load_dataset("cifar10", tmp_path)
    np.testing.assert_array_equal(ds.x_test.numpy(), _U8.reshape(-1, 3, 32, 32))   # round(255 x) is exact here
    assert any("round(255 x)" in c for c in ds.conversions)
    assert ds.summary()["conversions"] == list(ds.conversions)      # what result.json records
    assert "converted to uint8" in capsys.readouterr().err
    # uint8 files convert nothing
    assert load_dataset("cifar10", _fresh(tmp_path)).conversions == ()


def _fresh(tmp_path):
    d = tmp_path / "fresh"
    d.mkdir()
    _write_cifar(d, False)
    return d


@pytest.mark.parametrize("what", ["float labels", "int8 images", "float images above 1"])
def test_fashion_mnist_contents_are_checked(tmp_path, capsys, what):
    _fmnist_dir(tmp_path)
    rng = np.random.default_rng(0)
    if what == "float labels":
        f = tmp_path / "t10k-labels-idx1-ubyte.gz"
        _write_idx_typed(f, np.array([9.7] + [1.0] * 19, np.float32))
        found = "float32 values 1..9.7 as labels"
    elif what == "int8 images":
        f = tmp_path / "t10k-images-idx3-ubyte.gz"
        _write_idx_typed(f, rng.integers(-128, 128, size=(20, 28, 28)).astype(np.int8))
        found = "int8 values -128"
    else:
        f = tmp_path / "train-images-idx3-ubyte.gz"
        _write_idx_typed(f, rng.uniform(0, 255, size=(50, 28, 28)).astype(np.float32))
        found = "float32 values"
    err = _one_line(lambda: load_dataset("fashion_mnist", tmp_path), capsys)
    assert str(f) in err and found in err and "expected" in err


def test_fashion_mnist_whole_float_labels_are_read_as_integers_and_said(tmp_path, capsys):
    _, _, _, yte = _fmnist_dir(tmp_path)
    _write_idx_typed(tmp_path / "t10k-labels-idx1-ubyte.gz", yte.astype(np.float32))
    ds = load_dataset("fashion_mnist", tmp_path)
    np.testing.assert_array_equal(ds.y_test.numpy(), yte)
    assert len(ds.conversions) == 1 and "whole numbers" in capsys.readouterr().err


@pytest.mark.parametrize("what", ["float X", "label 0", "fractional y"])
def test_svhn_contents_are_checked(tmp_path, capsys, what):
    from scipy.io import savemat

    rng = np.random.default_rng(3)
    for split, n in (("train", 10), ("test", 4)):
        X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [2], [3]] * 3, np.uint8)[:n]
        if split == "test" and what == "float X":
            X = X.astype(np.float64)            # 0..255 stored as double
        if split == "test" and what == "label 0":
            y = np.array([[0], [1], [2], [3]], np.uint8)
        if split == "test" and what == "fractional y":
            y = np.array([[1.5], [1], [2], [3]], np.float64)
        savemat(tmp_path / f"{split}_32x32.mat", {"X": X, "y": y})
    err = _one_line(lambda: load_dataset("svhn", tmp_path), capsys)
    assert str(tmp_path / "test_32x32.mat") in err and "expected" in err
