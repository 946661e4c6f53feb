"""Image datasets as whole tensors (airbench style): readers for the real file formats.

``load_dataset(name, root, subset=, seed=)`` returns a :class:`Dataset` holding uint8 images
(N, C, H, W) and int64 labels for a train / validation / test split, plus per-channel mean and
std of the training images (used by :func:`normalize`).  Nothing is downloaded; every reader
names the directory it looked in and how to get the files when they are missing.

Datasets (``DATASETS``)
-----------------------
``fashion_mnist``  IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``; directory
                   from ``root``, else env ``CFFDYN_FMNIST``, else
                   ``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu package ``fashion-mnist``).
                   1x28x28, 60000 train, 10000 test.
``digits``         scikit-learn's bundled 8x8 handwritten digits (1797 images, values 0..16,
                   rescaled to 0..255 by ``round(v*255/16)``); 1x8x8 unless ``image_size`` asks
                   for 16 (nearest-neighbour 2x upsampling).  sklearn ships no test split: a fixed
                   20% (generator seed 0, independent of ``seed``) is the test set.
``cifar10``        python-pickle batches ``data_batch_1..5`` and ``test_batch`` (b'data' uint8
                   (N, 3072) in CHW order, b'labels'), in ``root`` or ``root/cifar-10-batches-py``.
``cifar100``       pickles ``train`` and ``test`` with b'fine_labels' (100 classes), in ``root``
                   or ``root/cifar-100-python``.
``svhn``           ``train_32x32.mat`` and ``test_32x32.mat`` (scipy.io.loadmat; X (32,32,3,N),
                   y (N,1) in 1..10 where 10 means digit 0), in ``root``.

Split protocol: the training pool (optionally a ``subset`` of it, drawn with ``seed``) is split
90/10 into train/validation with the same ``seed`` (the CFF protocol: 10% held out for model
selection).  ``subset=3000`` therefore gives 2700 train + 300 validation images; the test set
is always the full official test set.
"""
from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["DATASETS", "Dataset", "load_dataset", "read_idx", "read_cifar", "read_svhn",
           "normalize", "split_indices", "DEFAULT_FMNIST_ROOT"]

DATASETS: tuple[str, ...] = ("fashion_mnist", "digits", "cifar10", "cifar100", "svhn")
DEFAULT_FMNIST_ROOT = "/usr/share/datasets/fashion-mnist"
VAL_FRACTION = 0.1


@dataclass(frozen=True)
class Dataset:
    """Train / validation / test tensors of one dataset (uint8 images, int64 labels, on CPU)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]   # per channel, in [0, 1] units, over x_train
    std: tuple[float, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def summary(self) -> dict:
        return {"name": self.name, "image_shape": list(self.image_shape), "num_classes": self.num_classes,
                "n_train": int(self.x_train.shape[0]), "n_val": int(self.x_val.shape[0]),
                "n_test": int(self.x_test.shape[0])}


# ----------------------------------------------------------------------------- file readers

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed; detected by magic bytes)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic {raw[:4]!r})")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX element type 0x{code:02x}")
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    dtype = np.dtype(_IDX_DTYPES[code])
    n = int(np.prod(dims)) if ndim else 1
    offset = 4 + 4 * ndim
    if len(raw) - offset != n * dtype.itemsize:
        raise ValueError(f"{path}: size mismatch: header {tuple(dims)} needs {n * dtype.itemsize} "
                         f"bytes, file has {len(raw) - offset}")
    return np.frombuffer(raw, dtype=dtype, count=n, offset=offset).reshape(tuple(dims)).copy()


def _find(root: Path, stem: str) -> Path | None:
    for cand in (root / stem, root / (stem + ".gz")):
        if cand.is_file():
            return cand
    return None


def _missing(name: str, looked: list[Path], how: str) -> FileNotFoundError:
    where = ", ".join(str(p) for p in looked)
    return FileNotFoundError(f"dataset {name!r}: files not found (looked in {where}). {how}")


def _read_fashion_mnist(root: Path | None) -> tuple[np.ndarray, ...]:
    roots = [root] if root is not None else [Path(os.environ.get("CFFDYN_FMNIST", DEFAULT_FMNIST_ROOT))]
    base = roots[0]
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
    files = [_find(base, s) for s in stems]
    if any(f is None for f in files):
        raise _missing("fashion_mnist", roots,
                       "Install the Debian/Ubuntu package 'fashion-mnist' (apt-get install fashion-mnist), "
                       "or put the four IDX files (.gz or raw) in a directory and pass --data-root DIR "
                       "or set CFFDYN_FMNIST=DIR.")
    xtr, ytr, xte, yte = (read_idx(f) for f in files)
    return xtr[:, None], ytr, xte[:, None], yte


def read_cifar(root: str | os.PathLike, fine: bool = False) -> tuple[np.ndarray, ...]:
    """CIFAR-10 (``fine=False``) or CIFAR-100 python pickles -> (x_train, y_train, x_test, y_test)."""
    root = Path(root)
    sub = "cifar-100-python" if fine else "cifar-10-batches-py"
    bases = [root, root / sub]
    train_names = ["train"] if fine else [f"data_batch_{k}" for k in range(1, 6)]
    test_names = ["test"] if fine else ["test_batch"]
    base = next((b for b in bases if all((b / n).is_file() for n in train_names + test_names)), None)
    name = "cifar100" if fine else "cifar10"
    if base is None:
        url = ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" if fine
               else "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
        raise _missing(name, bases, f"Download and unpack {url} and pass --data-root to the directory "
                                    f"holding {sub}/ (or its contents).")
    key = b"fine_labels" if fine else b"labels"

    def load(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for n in names:
            with open(base / n, "rb") as fh:
                d = pickle.load(fh, encoding="bytes")
            if b"data" not in d or key not in d:
                raise ValueError(f"{base / n}: expected keys b'data' and {key!r}, found {sorted(d)}")
            x = np.asarray(d[b"data"], dtype=np.uint8)
            if x.ndim != 2 or x.shape[1] != 3072:
                raise ValueError(f"{base / n}: b'data' must be (N, 3072) uint8, got {x.shape}")
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[key], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    xtr, ytr = load(train_names)
    xte, yte = load(test_names)
    return xtr, ytr, xte, yte


def read_svhn(root: str | os.PathLike) -> tuple[np.ndarray, ...]:
    """SVHN cropped digits (``train_32x32.mat``, ``test_32x32.mat``); label 10 -> 0."""
    from scipy.io import loadmat

    root = Path(root)
    files = [root / "train_32x32.mat", root / "test_32x32.mat"]
    if not all(f.is_file() for f in files):
        raise _missing("svhn", [root], "Download train_32x32.mat and test_32x32.mat from "
                                       "http://ufldl.stanford.edu/housenumbers/ and pass --data-root DIR.")
    out = []
    for f in files:
        d = loadmat(f)
        x, y = np.asarray(d["X"]), np.asarray(d["y"]).reshape(-1).astype(np.int64)
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != y.shape[0]:
            raise ValueError(f"{f}: X must be (32, 32, 3, N) matching y (N,), got {x.shape}, {y.shape}")
        y = np.where(y == 10, 0, y)
        out += [np.ascontiguousarray(x.transpose(3, 2, 0, 1)).astype(np.uint8), y]
    return tuple(out)


def _read_digits(image_size: int | None) -> tuple[np.ndarray, ...]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - sklearn is a declared dependency
        raise FileNotFoundError("dataset 'digits' needs scikit-learn (pip install scikit-learn)") from exc
    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N,1,8,8)
    y = d.target.astype(np.int64)
    if image_size not in (None, 8, 16):
        raise ValueError(f"digits: image_size must be 8 or 16, got {image_size}")
    if image_size == 16:
        x = x.repeat(2, axis=2).repeat(2, axis=3)
    perm = np.random.default_rng(0).permutation(len(y))
    n_test = int(round(0.2 * len(y)))
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], y[tr], x[te], y[te]


# ----------------------------------------------------------------------------- public API

def split_indices(n: int, seed: int, val_fraction: float = VAL_FRACTION,
                  subset: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (subset, then) train/val index split of a pool of ``n`` samples."""
    if subset is not None:
        if not 2 <= int(subset) <= n:
            raise ValueError(f"subset={subset} must be in [2, {n}] (size of the training pool)")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must be in (0, 1)")
    perm = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED])).permutation(n)
    if subset is not None:
        perm = perm[: int(subset)]
    n_val = max(1, int(round(val_fraction * len(perm))))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def load_dataset(name: str, root: str | os.PathLike | None = None, *, subset: int | None = None,
                 seed: int = 0, val_fraction: float = VAL_FRACTION,
                 image_size: int | None = None) -> Dataset:
    """Load ``name`` (one of ``DATASETS``) as uint8 tensors with a seeded train/val split.

    Args:
        name: dataset name.
        root: directory with the files (Fashion-MNIST default: env CFFDYN_FMNIST or
            /usr/share/datasets/fashion-mnist; ignored for ``digits``).
        subset: size of the training pool before the 90/10 split (None: all).
        seed: seed of the subset draw and of the train/val split.
        val_fraction: held-out share of the pool.
        image_size: only for ``digits``: 8 (native) or 16 (2x nearest upsampling).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if image_size is not None and name != "digits":
        raise ValueError(f"image_size is only supported for 'digits', not {name!r}")
    rootp = Path(root) if root is not None else None
    if name == "fashion_mnist":
        xtr, ytr, xte, yte = _read_fashion_mnist(rootp)
        nc = 10
    elif name == "digits":
        xtr, ytr, xte, yte = _read_digits(image_size)
        nc = 10
    elif name in ("cifar10", "cifar100"):
        if rootp is None:
            raise FileNotFoundError(f"dataset {name!r}: pass --data-root DIR (the directory with the "
                                    f"python pickle batches); nothing is downloaded")
        xtr, ytr, xte, yte = read_cifar(rootp, fine=name == "cifar100")
        nc = 100 if name == "cifar100" else 10
    else:
        if rootp is None:
            raise FileNotFoundError("dataset 'svhn': pass --data-root DIR (the directory with "
                                    "train_32x32.mat and test_32x32.mat); nothing is downloaded")
        xtr, ytr, xte, yte = read_svhn(rootp)
        nc = 10
    if xtr.shape[0] != ytr.shape[0] or xte.shape[0] != yte.shape[0]:
        raise ValueError(f"{name}: image/label count mismatch")
    for lab in (ytr, yte):
        if lab.size and (lab.min() < 0 or lab.max() >= nc):
            raise ValueError(f"{name}: labels outside [0, {nc})")
    tr, va = split_indices(len(ytr), seed, val_fraction, subset)
    x_train = torch.from_numpy(np.ascontiguousarray(xtr[tr]))
    xf = x_train.double() / 255.0
    mean = tuple(float(v) for v in xf.mean(dim=(0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in xf.std(dim=(0, 2, 3)))
    return Dataset(
        name=name,
        x_train=x_train, y_train=torch.from_numpy(ytr[tr].astype(np.int64)),
        x_val=torch.from_numpy(np.ascontiguousarray(xtr[va])), y_val=torch.from_numpy(ytr[va].astype(np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(xte)), y_test=torch.from_numpy(yte.astype(np.int64)),
        num_classes=nc, mean=mean, std=std)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (or [0,255] float) images -> float, per-channel standardised."""
    m = torch.tensor(mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    return (x.to(dtype) / 255.0 - m) / s
