"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint holds tensors and plain containers only, so loading it runs no pickled code; a file
that is not one (foreign, truncated, torn) is refused with one line naming the path and the fix
(:class:`cffdyn.errors.CorruptFileError`).  What a checkpoint holds is the run loop's business
(:func:`vit.train.checkpoint_payload`).
"""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from cffdyn.errors import CorruptFileError
from cffdyn.io import atomic_write_bytes

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (a kill leaves the previous checkpoint whole)."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def _torch_load(path: Path, device: torch.device) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors naming the path and the fix."""
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
    """Read a checkpoint written by this package (tensors and plain containers only)."""
    p = Path(path)
    ck = _torch_load(p, torch.device(device))
    if not isinstance(ck, dict) or "configs" not in ck or "epoch" not in ck:
        raise CorruptFileError(f"{p} is not a cffdyn checkpoint (no configs/epoch)", "delete it to restart the run")
    return ck

