"""Shared plumbing of the sim studies: matplotlib (Agg), the sim figures' file style, reuse of a
recorded JSON whose config matches (:func:`cffdyn.records.reusable_record`), and the final write
of ``<name>.json`` + ``<name>.png``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from cffdyn.io import atomic_savefig, atomic_write_json, to_jsonable
from cffdyn.records import record_header, reusable_record, study_timing

__all__ = ["pyplot", "save_fig", "reuse_recorded", "finish", "SCHEMA"]


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_fig(fig, path: Path, *, formats: tuple[str, ...] = ("png",), dpi: int = 110) -> None:
    """Write ``fig`` to ``path`` (its suffix replaced by each of ``formats``, atomically:
    :func:`cffdyn.io.atomic_savefig`), cropped to its content, and close it."""
    atomic_savefig(fig, path, formats=formats, dpi=dpi, bbox_inches="tight", close=True)


#: Version of what the study JSONs hold.  A result recorded by code with another schema (say,
#: without a key a reader needs) is recomputed, not reused: the same config does not mean the same file.
SCHEMA = 3


def reuse_recorded(out_dir: Path, name: str, cfg: Any, reuse: bool, *, outputs: Iterable[str] = ()) -> dict | None:
    """``<name>.json`` as recorded (with ``reused: True``) when ``reuse`` and it is an intact
    record of ``cfg`` under :data:`SCHEMA` whose ``<name>.png`` and ``outputs`` (names in
    ``out_dir``) exist; otherwise None: the study recomputes it."""
    out_dir = Path(out_dir)
    if not reuse:
        return None
    old = reusable_record(out_dir / f"{name}.json", cfg, schema=SCHEMA,
                          outputs=[out_dir / f"{name}.png", *(out_dir / o for o in outputs)])
    if old is not None:
        old["reused"] = True
    return old


def finish(out_dir: Path, name: str, cfg: Any, res: dict, fig, t0: float) -> dict:
    """Write ``<name>.json`` (with schema, config, elapsed time and machine) and, unless ``fig``
    is None (the study drew its own), ``<name>.png``; ``t0`` is the study's start
    (:func:`time.perf_counter`)."""
    res = dict(res)
    timing = study_timing(t0, key="elapsed_s")
    timing["machine"] = res.pop("machine", timing["machine"])     # a study that took its own keeps it
    res = {"study": name, **record_header(SCHEMA, cfg), **res, **timing}
    if fig is not None:
        save_fig(fig, Path(out_dir) / f"{name}.png")
    atomic_write_json(Path(out_dir) / f"{name}.json", res)
    res = to_jsonable(res)
    res["reused"] = False
    return res
