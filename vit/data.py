"""Image datasets as whole tensors (airbench style): readers for the real file formats.

``load_dataset(name, root, subset=, seed=)`` returns a :class:`Dataset` holding uint8 images
(N, C, H, W) and int64 labels for a train / validation / test split, plus per-channel mean and
std of the training images (used by :func:`normalize`).  Nothing is downloaded; every reader
names the directory it looked in and how to get the files when they are missing.

Normalisation: ``REFERENCE_NORMALISATION`` holds the fixed (mean, std) constants the ContrastiveFF
code standardises with (``utils.py``, ``set_loaders``: CIFAR-10 and CIFAR-100 both with
(0.4914, 0.4822, 0.4465) / (0.2023, 0.1994, 0.2010); its Tiny-ImageNet constants are not needed,
that dataset is not read here).  Which statistics a run uses is the protocol's choice
(:func:`vit.config.input_normalisation`): these constants under ``reference``, the training
split's own statistics otherwise and for every dataset the reference does not cover.

Datasets (``DATASETS``)
-----------------------
``fashion_mnist``  IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``; directory
                   from ``root``, else env ``CFFDYN_FMNIST``, else
                   ``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu package
                   ``dataset-fashion-mnist``: ``apt-get install -y dataset-fashion-mnist``).
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

Errors: every problem with the files ends in one line naming the file and the fix (raised as
:class:`cffdyn.errors.UserError` subclasses that also derive from the matching built-in
exception, so callers that catch ``ValueError`` / ``FileNotFoundError`` catch them):
:class:`MissingDataError` (files not there), :class:`cffdyn.errors.CorruptFileError` (truncated
``.gz``, a truncated or garbage pickle, an unreadable ``.mat``, wrong shapes) and
:class:`DataArgumentError` (bad arguments).

Security: CIFAR batches are python pickles.  They are read with :class:`RestrictedUnpickler`,
which admits only what the format holds - dicts, lists, tuples, bytes/str, ints/floats and numpy
arrays and scalars (the globals ``_reconstruct`` and ``scalar`` of ``numpy.core.multiarray`` /
``numpy._core.multiarray``, ``numpy._core.numeric._frombuffer``, ``numpy.ndarray``, ``numpy.dtype`` and,
for pickles written by Python 3 at protocol < 3, a latin-1-only ``_codecs.encode`` and the
argument-less ``bytes()`` of an empty array) - and refuses
any other global, so a file crafted to run code (``__reduce__`` -> ``os.system``) is rejected
before anything runs.

Contents: every reader checks what the arrays hold (:func:`check_images`, :func:`check_labels`)
before anything is cast: images must be uint8 in [0, 255] (other integer dtypes are accepted only
when every value lies in [0, 255]; float images only when every value lies in [0, 1], converted
by ``round(255 x)``), labels integers in [0, num_classes) (floats only when every value is a
whole number).  Each accepted conversion is printed on stderr and kept in
``Dataset.conversions`` (recorded in ``result.json`` through :meth:`Dataset.summary`); anything
else - values that would wrap, NaN, object or bool arrays, fractional labels - is one
:class:`cffdyn.errors.CorruptFileError` line naming the file, what it holds and what was expected.

Split protocol: the training pool (optionally a ``subset`` of it, drawn with ``seed``) is split
90/10 into train/validation with the same ``seed`` (the CFF protocol: 10% held out for model
selection).  ``subset=3000`` therefore gives 2700 train + 300 validation images; the test set
is always the full official test set.
"""
from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cffdyn.errors import CorruptFileError, UserError

__all__ = ["DATASETS", "Dataset", "load_dataset", "read_idx", "read_cifar", "read_svhn",
           "normalize", "split_indices", "DEFAULT_FMNIST_ROOT", "MissingDataError",
           "DataArgumentError", "RestrictedUnpickler", "load_pickle_restricted", "FMNIST_APT", "IMAGE_SIDE",
           "image_side", "check_images", "check_labels", "REFERENCE_NORMALISATION"]

DATASETS: tuple[str, ...] = ("fashion_mnist", "digits", "cifar10", "cifar100", "svhn")
DEFAULT_FMNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FMNIST_APT = "apt-get install -y dataset-fashion-mnist"
VAL_FRACTION = 0.1
#: native image side of each dataset (digits: 8, or ``image_size`` when upsampled)
IMAGE_SIDE: dict[str, int] = {"fashion_mnist": 28, "digits": 8, "cifar10": 32, "cifar100": 32, "svhn": 32}
#: (mean, std) per channel, in [0, 1] units, as the reference code's ``v2.Normalize`` has them; its
#: CIFAR-100 loader reuses the CIFAR-10 constants (read from ``utils.py``, ``set_loaders``).
REFERENCE_NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
}
_ROOT_HINT = "('vit train --data-root DIR', or data_root=DIR in a study config)"


class MissingDataError(UserError, FileNotFoundError):
    """The dataset's files are not where the loader looked (one line: where, and how to get them)."""


class DataArgumentError(UserError, ValueError):
    """A bad argument to :func:`load_dataset` (unknown name, subset out of range, ...)."""


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
    conversions: tuple[str, ...] = ()   # explicit conversions of what the files held (see check_images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def summary(self) -> dict:
        return {"name": self.name, "image_shape": list(self.image_shape), "num_classes": self.num_classes,
                "n_train": int(self.x_train.shape[0]), "n_val": int(self.x_val.shape[0]),
                "n_test": int(self.x_test.shape[0]), "conversions": list(self.conversions)}


# ----------------------------------------------------------------------------- content checks

def _describe(a: np.ndarray) -> str:
    if a.dtype.kind in "biuf" and a.size:
        import warnings

        with warnings.catch_warnings():   # an all-NaN array: the message says NaN below
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanmin(a), np.nanmax(a)
        nan = ", with NaN" if a.dtype.kind == "f" and np.isnan(a).any() else ""
        return f"{a.dtype.name} values {lo:g}..{hi:g}{nan}"
    return f"{a.dtype.name} values"


_IMAGES_FIX = "write the images as uint8 in 0..255 (floats in [0, 1] are converted), or use the original dataset file"
_LABELS_FIX = "write the labels as integer class indices, or use the original dataset file"


def check_images(path: object, x: object, conversions: list[str] | None = None) -> np.ndarray:
    """``x`` as uint8, refusing anything a cast would change (one line naming ``path``).

    uint8: as is.  Other integers: only when every value is in [0, 255].  Floats: only when
    every value is finite and in [0, 1], converted by ``round(255 x)``.  Each conversion is
    printed on stderr and appended to ``conversions``.  Object, bool, complex or string arrays,
    values that would wrap and NaN are refused."""
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise CorruptFileError(f"{path}: images are not an array ({exc})", _IMAGES_FIX) from None
    if a.dtype == np.uint8:
        return a
    if a.size == 0 and a.dtype.kind in "biuf":   # no value to change: the empty split is refused by load_dataset
        return a.astype(np.uint8)
    want = "uint8 images in [0, 255] (or floats in [0, 1])"
    if a.dtype.kind in "iu" and a.size and a.min() >= 0 and a.max() <= 255:
        note = f"{path}: {a.dtype.name} images (values {a.min()}..{a.max()}) converted to uint8 (no value changed)"
        out = a.astype(np.uint8)
    elif a.dtype.kind == "f" and a.size and np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0:
        note = f"{path}: float images in [0, 1] ({a.dtype.name}) converted to uint8 by round(255 x)"
        out = np.rint(a * 255.0).astype(np.uint8)
    else:
        raise CorruptFileError(f"{path}: found {_describe(a)} as images, expected {want}", _IMAGES_FIX)
    print(f"note: {note}", file=sys.stderr)
    if conversions is not None:
        conversions.append(note)
    return out


def check_labels(path: object, y: object, num_classes: int,
                 conversions: list[str] | None = None) -> np.ndarray:
    """``y`` as int64 class indices in [0, num_classes), refusing anything a cast would change.

    Integer labels: as they are.  Float labels only when every value is a whole number (a
    MATLAB file stores doubles), said on stderr and appended to ``conversions``; fractional
    labels (9.7) are refused, never truncated."""
    try:
        a = np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise CorruptFileError(f"{path}: labels are not an array ({exc})", _LABELS_FIX) from None
    want = f"integer labels in [0, {num_classes})"
    if a.size == 0 and a.dtype.kind in "iuf":   # an empty list unpickles as float64; no value to change
        return a.astype(np.int64)
    if a.dtype.kind == "f" and a.size and np.isfinite(a).all() and np.all(a == np.rint(a)):
        note = f"{path}: {a.dtype.name} labels hold whole numbers only; read as integers"
        print(f"note: {note}", file=sys.stderr)
        if conversions is not None:
            conversions.append(note)
        a = a.astype(np.int64)
    elif a.dtype.kind not in "iu":
        raise CorruptFileError(f"{path}: found {_describe(a)} as labels, expected {want}", _LABELS_FIX)
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= num_classes):
        raise CorruptFileError(f"{path}: found labels {a.min()}..{a.max()}, expected {want}", _LABELS_FIX)
    return a


# ----------------------------------------------------------------------------- file readers

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike, fix: str | None = None) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed; detected by magic bytes).

    A truncated or damaged file raises :class:`CorruptFileError` naming it; ``fix`` overrides
    the advice (e.g. how to reinstall the dataset).
    """
    path = Path(path)
    fix = fix or "replace it with a complete copy of the file"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc})", "check its permissions") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:      # truncated (EOFError) or damaged .gz
            raise CorruptFileError(f"{path} is not a complete gzip file ({exc.__class__.__name__}: {exc})",
                                   fix) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise CorruptFileError(f"{path}: not an IDX file (bad magic {raw[:4]!r})", fix)
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise CorruptFileError(f"{path}: unknown IDX element type 0x{code:02x}", fix)
    if len(raw) < 4 + 4 * ndim:
        raise CorruptFileError(f"{path}: IDX header cut short ({len(raw)} bytes)", fix)
    # Python ints: a header's product of dimensions can exceed int64 (np.prod would wrap)
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    n = math.prod(dims)
    offset = 4 + 4 * ndim
    if len(raw) - offset != n * dtype.itemsize:
        raise CorruptFileError(f"{path}: size mismatch: header {tuple(dims)} needs {n * dtype.itemsize} "
                               f"bytes, file has {len(raw) - offset} (truncated?)", fix)
    return np.frombuffer(raw, dtype=dtype, count=n, offset=offset).reshape(dims).copy()


def _find(root: Path, stem: str) -> Path | None:
    for cand in (root / stem, root / (stem + ".gz")):
        if cand.is_file():
            return cand
    return None


def _missing(name: str, looked: list[Path], how: str) -> MissingDataError:
    where = ", ".join(str(p) for p in looked)
    return MissingDataError(f"dataset {name!r}: files not found (looked in {where})", how)


def _read_fashion_mnist(root: Path | None, conv: list[str]) -> tuple[np.ndarray, ...]:
    env = os.environ.get("CFFDYN_FMNIST")
    base = root if root is not None else Path(env or DEFAULT_FMNIST_ROOT)
    via = "" if root is not None else (f" (CFFDYN_FMNIST={env})" if env else "")
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
    files = [_find(base, s) for s in stems]
    if any(f is None for f in files):
        missing = ", ".join(s for s, f in zip(stems, files) if f is None)
        raise _missing("fashion_mnist", [base],
                       f"{missing}[.gz] missing{via}: install the Debian/Ubuntu package with "
                       f"'{FMNIST_APT}', or put the four IDX files (.gz or raw) in a directory DIR and "
                       f"set CFFDYN_FMNIST=DIR or give DIR as the data root {_ROOT_HINT}")
    if root is None and not env:
        fix = "the file is cut short or damaged: reinstall it with 'apt-get install --reinstall -y dataset-fashion-mnist'"
    else:
        given = "CFFDYN_FMNIST" if root is None else "the data root"
        fix = (f"the file is cut short or damaged: replace it with a complete copy (its directory comes from "
               f"{given}), or use the packaged copy ('{FMNIST_APT}', then leave {given} unset)")
    xtr, ytr, xte, yte = (read_idx(f, fix) for f in files)
    for f, x, nd in ((files[0], xtr, 3), (files[2], xte, 3), (files[1], ytr, 1), (files[3], yte, 1)):
        if x.ndim != nd or (nd == 3 and x.shape[1:] != (28, 28)):
            raise CorruptFileError(f"{f}: expected {'(N, 28, 28) images' if nd == 3 else '(N,) labels'}, "
                                   f"got shape {x.shape}", fix)
    xtr, xte = check_images(files[0], xtr, conv), check_images(files[2], xte, conv)
    ytr, yte = check_labels(files[1], ytr, 10, conv), check_labels(files[3], yte, 10, conv)
    return xtr[:, None], ytr, xte[:, None], yte


# ----------------------------------------------------------------------------- restricted pickles

def _numpy_global(module: str, name: str):
    """The numpy function a CIFAR/numpy pickle names, from whichever numpy is installed."""
    import importlib

    for mod in (module.replace("numpy.core.", "numpy._core."), module):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {module}.{name}")


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes at protocol < 3, latin-1 only."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1", errors)


def _empty_bytes(*args: object) -> bytes:
    """``bytes()`` as Python 3 pickles an empty bytes object at protocol < 3 (the data of an empty
    numpy array); only the no-argument call, which allocates nothing."""
    if args:
        raise pickle.UnpicklingError("refused bytes() with arguments")
    return b""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers, strings, numbers and numpy arrays/scalars.

    ``find_class`` admits exactly the globals a numpy-array pickle needs (see the module doc);
    any other global - ``os.system``, ``builtins.eval``, ``subprocess.Popen``, ... - raises
    :class:`pickle.UnpicklingError` before it is looked up, so nothing in the file can run.
    """

    def find_class(self, module: str, name: str):  # type: ignore[override]
        key = (module, name)
        if key in (("numpy", "ndarray"), ("numpy", "dtype")):
            return getattr(np, name)
        if key in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                   ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")):
            return _numpy_global(module, name)
        if key == ("_codecs", "encode"):
            return _latin1_encode
        if key in (("__builtin__", "bytes"), ("builtins", "bytes")):
            return _empty_bytes
        raise pickle.UnpicklingError(f"refused global {module}.{name} (only numpy arrays, dicts, lists, "
                                     f"bytes/str and numbers are allowed)")

    def persistent_load(self, pid):  # pragma: no cover - pickle already refuses by default
        raise pickle.UnpicklingError("refused a persistent id")


def load_pickle_restricted(path: str | os.PathLike, fix: str) -> object:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (``encoding="bytes"``, as the CIFAR
    batches are Python-2 pickles); any failure is one :class:`CorruptFileError` naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc})", "check its permissions") from None
    try:
        return RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        if "refused" in str(exc):
            raise CorruptFileError(f"{path}: not loaded, it is not a plain data pickle ({exc})",
                                   "use the original dataset file; a pickle that names other objects "
                                   "could run code when loaded") from None
        raise CorruptFileError(f"{path} is not a readable pickle (UnpicklingError: {exc})", fix) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError,
            OverflowError, UnicodeDecodeError, ImportError) as exc:
        raise CorruptFileError(f"{path} is not a readable pickle ({exc.__class__.__name__}: {exc})",
                               fix) from None


def read_cifar(root: str | os.PathLike, fine: bool = False,
               conversions: list[str] | None = None) -> tuple[np.ndarray, ...]:
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
        raise _missing(name, bases, f"download and unpack {url} and give the directory holding {sub}/ "
                                    f"(or its contents) as the data root {_ROOT_HINT}")
    key = b"fine_labels" if fine else b"labels"

    def load(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for n in names:
            f = base / n
            fix = f"the file is cut short or damaged: download and unpack {sub} again ({f.name} must be complete)"
            d = load_pickle_restricted(f, fix)
            if not isinstance(d, dict) or b"data" not in d or key not in d:
                found = sorted(d) if isinstance(d, dict) else type(d).__name__
                raise CorruptFileError(f"{f}: expected a dict with keys b'data' and {key!r}, found {found}", fix)
            x = check_images(f, d[b"data"], conversions)
            y = check_labels(f, d[key], 100 if fine else 10, conversions)
            if x.ndim != 2 or x.shape[1] != 3072:
                raise CorruptFileError(f"{f}: b'data' must be (N, 3072) uint8, got {x.shape}", fix)
            if y.shape != (x.shape[0],):
                raise CorruptFileError(f"{f}: {key!r} must hold one label per image, got {y.shape} for "
                                       f"{x.shape[0]} images", fix)
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    xtr, ytr = load(train_names)
    xte, yte = load(test_names)
    return xtr, ytr, xte, yte


def read_svhn(root: str | os.PathLike, conversions: list[str] | None = None) -> tuple[np.ndarray, ...]:
    """SVHN cropped digits (``train_32x32.mat``, ``test_32x32.mat``); label 10 -> 0."""
    from scipy.io import loadmat

    root = Path(root)
    files = [root / "train_32x32.mat", root / "test_32x32.mat"]
    if not all(f.is_file() for f in files):
        raise _missing("svhn", [root], "download train_32x32.mat and test_32x32.mat from "
                                       f"http://ufldl.stanford.edu/housenumbers/ into DIR and give DIR as the "
                                       f"data root {_ROOT_HINT}")
    out = []
    for f in files:
        fix = f"the file is cut short or damaged: download {f.name} again from http://ufldl.stanford.edu/housenumbers/"
        try:
            with open(f, "rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise UserError(f"cannot read {f} ({exc.strerror or exc})", "check its permissions") from None
        try:
            d = loadmat(f)
        except Exception as exc:  # scipy: OSError (truncated), ValueError, MatReadError, TypeError, ...
            raise CorruptFileError(f"{f} is not a readable MATLAB file ({exc.__class__.__name__}: {exc})",
                                   fix) from None
        if "X" not in d or "y" not in d:
            raise CorruptFileError(f"{f}: expected variables X and y, found "
                                   f"{sorted(k for k in d if not k.startswith('__'))}", fix)
        x = check_images(f, d["X"], conversions)
        y = np.asarray(d["y"])
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3] or y.ndim > 2:
            raise CorruptFileError(f"{f}: X must be (32, 32, 3, N) matching y (N, 1), got {x.shape}, {y.shape}", fix)
        y = y.reshape(-1)
        y = check_labels(f, y, 11, conversions)
        if y.size and y.min() < 1:   # the format has no 0: the digit 0 is 10
            raise CorruptFileError(f"{f}: found labels {y.min()}..{y.max()} in y, expected 1..10 (10 means "
                                   "the digit 0)", _LABELS_FIX)
        y = np.where(y == 10, 0, y)
        out += [np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y]
    return tuple(out)


def _read_digits(image_size: int | None) -> tuple[np.ndarray, ...]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - sklearn is a declared dependency
        raise MissingDataError("dataset 'digits' needs scikit-learn, which is not installed",
                               "pip install scikit-learn (it ships the digits)") from None
    d = load_digits()
    img = np.asarray(d.images)
    src = "scikit-learn's digits"
    fix = "reinstall scikit-learn (pip install --force-reinstall scikit-learn)"
    if img.ndim != 3 or img.shape[1:] != (8, 8) or img.dtype.kind not in "iuf" \
            or not np.isfinite(img).all() or img.min() < 0 or img.max() > 16 or np.any(img != np.rint(img)):
        raise CorruptFileError(f"{src}: found {img.shape} {_describe(img)} as images, expected (N, 8, 8) "
                               "whole numbers in 0..16", fix)
    x = np.rint(img * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N,1,8,8)
    y = check_labels(src, d.target, 10)
    if image_size not in (None, 8, 16):
        raise DataArgumentError(f"digits: image_size must be 8 or 16, got {image_size}", "use 8 or 16")
    if image_size == 16:
        x = x.repeat(2, axis=2).repeat(2, axis=3)
    perm = np.random.default_rng(0).permutation(len(y))
    n_test = int(round(0.2 * len(y)))
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], y[tr], x[te], y[te]


# ----------------------------------------------------------------------------- public API

def image_side(name: str, image_size: int | None = None) -> int:
    """Side in pixels of the images a run on dataset ``name`` sees (``image_size`` for digits)."""
    return int(image_size) if image_size else IMAGE_SIDE[name]


def split_indices(n: int, seed: int, val_fraction: float = VAL_FRACTION,
                  subset: int | None = None, subset_seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (subset, then) train/val index split of a pool of ``n`` samples.

    With ``subset_seed`` None (or equal to ``seed``) one permutation drawn from ``seed`` gives
    both the subset (its first ``subset`` entries) and the split.  With another ``subset_seed`` the
    subset is drawn from ``subset_seed`` and then split by ``seed``: the same images for every
    ``seed``, a different train/validation split each."""
    if subset is not None:
        if not 2 <= int(subset) <= n:
            raise DataArgumentError(f"subset={subset} must be in [2, {n}] (size of the training pool)",
                                    f"give a subset between 2 and {n}, or none for the whole pool")
    if not 0.0 < val_fraction < 1.0:
        raise DataArgumentError(f"val_fraction={val_fraction} must be in (0, 1)", "give a fraction such as 0.1")
    def draw(s: int, m: int) -> np.ndarray:
        return np.random.default_rng(np.random.SeedSequence([int(s), 0x5EED])).permutation(m)

    if subset is not None and subset_seed is not None and int(subset_seed) != int(seed):
        pool = draw(subset_seed, n)[: int(subset)]
        perm = pool[draw(seed, len(pool))]
    else:
        perm = draw(seed, n)
        if subset is not None:
            perm = perm[: int(subset)]
    n_val = max(1, int(round(val_fraction * len(perm))))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def load_dataset(name: str, root: str | os.PathLike | None = None, *, subset: int | None = None,
                 seed: int = 0, val_fraction: float = VAL_FRACTION,
                 image_size: int | None = None, subset_seed: int | None = None) -> Dataset:
    """Load ``name`` (one of ``DATASETS``) as uint8 tensors with a seeded train/val split.

    Args:
        name: dataset name.
        root: directory with the files (Fashion-MNIST default: env CFFDYN_FMNIST or
            /usr/share/datasets/fashion-mnist; ignored for ``digits``).
        subset: size of the training pool before the 90/10 split (None: all).
        seed: seed of the train/val split (and of the subset draw unless ``subset_seed`` is given).
        val_fraction: held-out share of the pool.
        image_size: only for ``digits``: 8 (native) or 16 (2x nearest upsampling).
        subset_seed: seed of the subset draw (None: ``seed``); see :func:`split_indices`.
    """
    if name not in DATASETS:
        raise DataArgumentError(f"unknown dataset {name!r}", f"choose from {', '.join(DATASETS)}")
    if image_size is not None and name != "digits":
        raise DataArgumentError(f"image_size is only supported for 'digits', not {name!r}",
                                "leave image_size unset for this dataset")
    rootp = Path(root) if root is not None else None
    conv: list[str] = []
    if name == "fashion_mnist":
        xtr, ytr, xte, yte = _read_fashion_mnist(rootp, conv)
        nc = 10
    elif name == "digits":
        xtr, ytr, xte, yte = _read_digits(image_size)
        nc = 10
    elif name in ("cifar10", "cifar100"):
        if rootp is None:
            raise MissingDataError(f"dataset {name!r} needs a data root (nothing is downloaded)",
                                   f"give the directory with the python pickle batches as the data root {_ROOT_HINT}")
        xtr, ytr, xte, yte = read_cifar(rootp, fine=name == "cifar100", conversions=conv)
        nc = 100 if name == "cifar100" else 10
    else:
        if rootp is None:
            raise MissingDataError("dataset 'svhn' needs a data root (nothing is downloaded)",
                                   f"give the directory with train_32x32.mat and test_32x32.mat as the data root {_ROOT_HINT}")
        xtr, ytr, xte, yte = read_svhn(rootp, conversions=conv)
        nc = 10
    where = f" in {rootp}" if rootp is not None else ""
    if xtr.shape[0] != ytr.shape[0] or xte.shape[0] != yte.shape[0]:
        raise CorruptFileError(f"{name}{where}: image/label count mismatch ({xtr.shape[0]}/{ytr.shape[0]} train, "
                               f"{xte.shape[0]}/{yte.shape[0]} test)", "replace the files with a complete, matching set")
    # an empty split would train on nothing or score on nothing (a NaN accuracy, or a crash in the
    # first forward pass): refused with the files named
    for what, n in (("training", xtr.shape[0]), ("test", xte.shape[0])):
        if n == 0:
            raise CorruptFileError(f"{name}{where}: the {what} files hold no images",
                                   "replace the files with the original dataset files")
    for lab in (ytr, yte):
        if lab.size and (lab.min() < 0 or lab.max() >= nc):
            raise CorruptFileError(f"{name}{where}: labels outside [0, {nc})",
                                   "replace the files with the original dataset files")
    tr, va = split_indices(len(ytr), seed, val_fraction, subset, subset_seed)
    x_train = torch.from_numpy(np.ascontiguousarray(xtr[tr]))
    xf = x_train.double() / 255.0
    mean = tuple(float(v) for v in xf.mean(dim=(0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in xf.std(dim=(0, 2, 3)))
    return Dataset(
        name=name,
        x_train=x_train, y_train=torch.from_numpy(ytr[tr].astype(np.int64)),
        x_val=torch.from_numpy(np.ascontiguousarray(xtr[va])), y_val=torch.from_numpy(ytr[va].astype(np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(xte)), y_test=torch.from_numpy(yte.astype(np.int64)),
        num_classes=nc, mean=mean, std=std, conversions=tuple(conv))


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (or [0,255] float) images -> float, per-channel standardised."""
    m = torch.tensor(mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    return (x.to(dtype) / 255.0 - m) / s
