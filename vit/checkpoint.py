"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)``, checked before use.

A checkpoint holds tensors and plain containers only, so loading it runs no pickled code; a file
that is not one (foreign, truncated, torn, a directory, another pickle) is refused with one line
naming the path, what was found and the fix (:class:`cffdyn.errors.CorruptFileError`).  What a
checkpoint holds is the run loop's business (:func:`vit.train.checkpoint_payload`); the loop checks
it against the run before resuming (:func:`check_tensors`, :func:`check_optimizer`): a checkpoint
is never trained from unless its epoch lies inside the run, every tensor is finite and every
tensor has the shape and dtype the run's model and optimisers have.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from cffdyn.errors import CorruptFileError
from cffdyn.io import atomic_write_bytes

__all__ = ["save_checkpoint", "load_checkpoint", "bad_checkpoint", "RESTART_FIX", "nonfinite_tensor",
           "check_tensors", "check_optimizer"]

#: how to recover from a checkpoint that cannot be resumed (the run restarts from epoch 0)
RESTART_FIX = "delete it to restart the run from epoch 0 (or give a fresh --out)"


def bad_checkpoint(path: Path, what: str) -> CorruptFileError:
    """The one-line refusal of checkpoint ``path``: ``what`` was found, and how to recover."""
    return CorruptFileError(f"checkpoint {path} {what}", RESTART_FIX)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (a kill leaves the previous checkpoint whole)."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def _torch_load(path: Path, device: torch.device) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors naming the path and the fix."""
    if path.is_dir():
        raise CorruptFileError(f"checkpoint {path} is a directory, not a file",
                               f"remove it (rm -r {path}) to restart the run from epoch 0 (or give a fresh --out)")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptFileError(f"{path} holds objects other than tensors and plain containers, refused by "
                               f"torch.load(weights_only=True) ({first[:120]})",
                               "it was not written by cffdyn: delete it to restart the run") from None
    except (EOFError, RuntimeError, OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptFileError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {first[:120]})",
                               "delete it to restart the run from epoch 0") from None


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by this package (tensors and plain containers only): a dict with
    ``configs`` and ``epoch``, or one line naming what the file holds instead."""
    p = Path(path)
    ck = _torch_load(p, torch.device(device))
    if not isinstance(ck, dict):
        raise bad_checkpoint(p, f"holds a {type(ck).__name__}, not a cffdyn checkpoint (a dict with configs, "
                                "epoch, state)")
    missing = [k for k in ("configs", "epoch") if k not in ck]
    if missing:
        raise bad_checkpoint(p, f"is not a cffdyn checkpoint (no {', '.join(missing)})")
    return ck


def _tensors(obj: Any, where: str) -> Iterator[tuple[str, torch.Tensor]]:
    if torch.is_tensor(obj):
        yield where, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _tensors(v, f"{where}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{where}[{i}]")


def nonfinite_tensor(obj: Any, where: str = "") -> str | None:
    """Where in ``obj`` (nested dicts/lists) the first tensor with a NaN or an infinity is, or None."""
    for w, t in _tensors(obj, where):
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            return w
    return None


def _shape(t: torch.Tensor) -> str:
    return f"{list(t.shape)} {str(t.dtype).replace('torch.', '')}"


def check_tensors(path: Path, found: Any, want: Mapping[str, Any], where: str) -> None:
    """``found`` must hold exactly the keys of ``want`` (nested), every tensor of the same shape and
    dtype (a state dict of the run's model); one line naming the first difference otherwise."""
    if not isinstance(found, Mapping):
        raise bad_checkpoint(path, f"has a {type(found).__name__} at {where}, expected the run's state")
    if set(found) != set(want):
        extra, lack = sorted(map(str, set(found) - set(want))), sorted(map(str, set(want) - set(found)))
        raise bad_checkpoint(path, f"does not fit this run's model at {where} ("
                             + "; ".join(x for x in (f"missing {', '.join(lack[:3])}" if lack else "",
                                                     f"unexpected {', '.join(extra[:3])}" if extra else "") if x)
                             + ")")
    for k, w in want.items():
        f = found[k]
        if torch.is_tensor(w):
            if not torch.is_tensor(f) or f.shape != w.shape or f.dtype != w.dtype:
                got = _shape(f) if torch.is_tensor(f) else type(f).__name__
                raise bad_checkpoint(path, f"does not fit this run's model: {where}/{k} is {got}, the run has "
                                           f"{_shape(w)}")
        elif isinstance(w, Mapping):
            check_tensors(path, f, w, f"{where}/{k}")


def check_optimizer(path: Path, found: Any, opt: torch.optim.Optimizer, where: str) -> None:
    """An optimiser state dict of ``opt``'s parameters: the same groups and sizes, each parameter's
    state tensors (moments) of the parameter's shape; ``step`` counters excepted."""
    params = [p for g in opt.param_groups for p in g["params"]]
    groups = found.get("param_groups") if isinstance(found, Mapping) else None
    state = found.get("state") if isinstance(found, Mapping) else None
    if not isinstance(groups, list) or not isinstance(state, Mapping) or not all(
            isinstance(g, Mapping) and isinstance(g.get("params"), list) for g in groups):
        raise bad_checkpoint(path, f"has no optimiser state at {where}")
    sizes = [len(g["params"]) for g in groups]
    if sizes != [len(g["params"]) for g in opt.param_groups]:
        raise bad_checkpoint(path, f"does not fit this run's optimiser at {where} (parameter groups of sizes "
                                   f"{sizes}, the run has {[len(g['params']) for g in opt.param_groups]})")
    ids = [i for g in groups for i in g["params"]]
    by_id = dict(zip(ids, params))
    for i, st in state.items():
        p = by_id.get(i)
        if p is None or not isinstance(st, Mapping):
            raise bad_checkpoint(path, f"does not fit this run's optimiser at {where}/state/{i}")
        for k, t in st.items():
            if k == "step" or not torch.is_tensor(t):
                continue
            if t.shape != p.shape:
                raise bad_checkpoint(path, f"does not fit this run's optimiser: {where}/state/{i}/{k} is "
                                           f"{_shape(t)}, its parameter {_shape(p)}")
