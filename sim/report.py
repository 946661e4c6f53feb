"""Shared plumbing of the sim studies: matplotlib (Agg), atomic PNG, reuse of a recorded JSON
whose config matches, and the final write of ``<name>.json`` + ``<name>.png``."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from cffdyn.io import atomic_write_bytes, atomic_write_json, read_json, record_status, to_jsonable

__all__ = ["pyplot", "save_fig", "reuse_recorded", "finish"]


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_fig(fig, path: Path, *, formats: tuple[str, ...] = ("png",), dpi: int = 110) -> None:
    """Write ``fig`` to ``path`` (its suffix replaced by each of ``formats``, atomically) and
    close it; PDF keeps the figure vector."""
    import io
    path = Path(path)
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
        atomic_write_bytes(path.with_suffix("." + fmt), buf.getvalue())
    pyplot().close(fig)


#: Version of what the study JSONs hold.  A result recorded by code with another schema (say,
#: before a key was added) is recomputed, not reused: the same config does not mean the same file.
SCHEMA = 2


def reuse_recorded(out_dir: Path, name: str, cfg: Any, reuse: bool) -> dict | None:
    path = out_dir / f"{name}.json"
    if reuse and path.exists() and (out_dir / f"{name}.png").exists():
        old = read_json(path, verify=False)
        status = record_status(old)
        if status != "ok":
            # edited after writing, written by hand, or another JSON shape ([] / 42): not trusted
            print(f"note: {path} {'was changed after it was written' if status == 'edited' else 'carries no content hash'}"
                  f"; recomputing it", file=sys.stderr)
            return None
        if old.get("config") == to_jsonable(cfg) and old.get("schema") == SCHEMA:
            old["reused"] = True
            return old
    return None


def finish(out_dir: Path, name: str, cfg: Any, res: dict, fig, t0: float) -> dict:
    """Write ``<name>.json`` (with schema, config and elapsed time) and, unless ``fig`` is None
    (the study drew its own), ``<name>.png``."""
    res = {"study": name, "schema": SCHEMA, "config": to_jsonable(cfg), **res,
           "elapsed_s": time.perf_counter() - t0}
    if fig is not None:
        save_fig(fig, out_dir / f"{name}.png")
    atomic_write_json(out_dir / f"{name}.json", res)
    res = to_jsonable(res)
    res["reused"] = False
    return res
