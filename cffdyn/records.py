"""Run or reuse a recorded result, and the header every study record starts with.

A study writes one JSON record (:func:`cffdyn.io.atomic_write_json`, which adds its content
hash) and the outputs beside it (figures, a second record).  Asked again for the same config,
the study returns that record instead of recomputing it (:func:`reusable_record`), but only when
the record can stand for the run asked for:

* it is a JSON object whose ``content_sha256`` matches its content: not edited after it was
  written, and not written by code that did not hash its records (such a record cannot be told
  from a hand-written one);
* its ``schema`` is the code's: the version of the record's layout, so a record of the same
  config laid out by other code (a key missing that a reader needs) is not taken for this one;
* its ``config`` equals the requested config, compared as JSON (:func:`cffdyn.io.to_jsonable`);
* every output it comes with exists, and it has the keys the caller relies on.

Anything else is recomputed, except where recomputing would destroy work the record stands
for (a trained run): there a damaged record (not JSON, not an object, edited) is refused in one
line (``damaged="refuse"``, :class:`cffdyn.errors.CorruptFileError`) and a record of another
config is refused by the caller's own error (``other_config``), so nothing recorded is
overwritten.  A damaged record that is recomputed, and a record without a hash, are said on
stderr: a result that silently changes is a result nobody can check.

:func:`record_header` and :func:`study_timing` are the keys a study record carries for that
check and for its timing: the schema, the config, the wall time and the machine
(:func:`cffdyn.machine.machine_info`) it ran on.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping

from cffdyn.errors import CorruptFileError
from cffdyn.io import read_json, record_status, to_jsonable
from cffdyn.machine import load_average, machine_info

__all__ = ["reusable_record", "record_header", "study_timing"]

#: paths already said to carry no content hash: said once per process, not at every look-up
#: (a study looks up each run's record several times while it plans and runs its tasks)
_SAID_UNHASHED: set[str] = set()


def reusable_record(path: str | os.PathLike, config: Any, *, schema: Any = None,
                    outputs: Iterable[str | os.PathLike] = (), keys: Iterable[str] = (),
                    when: Callable[[dict[str, Any]], bool] | None = None,
                    damaged: Literal["recompute", "refuse"] = "recompute",
                    other_config: Callable[[Path], Exception] | None = None,
                    unhashed: str = "and is recomputed") -> dict[str, Any] | None:
    """The record at ``path`` when it stands for a run of ``config`` (module doc); else None.

    Args:
        path: the record (a JSON file).
        config: the requested config (a dataclass or a dict), compared as JSON.
        schema: the record's ``schema`` must equal it (None: no schema is checked).
        outputs: files that must exist beside the record (a missing figure is recomputed).
        keys: keys the record must hold.
        when: a further condition on the record (e.g. ``status == "complete"``).
        damaged: ``"recompute"``: a file that is not a JSON object, or edited, is recomputed and
            said on stderr; ``"refuse"``: :class:`CorruptFileError` naming the path (nothing is
            overwritten).
        other_config: the error raised for an intact record of another config (None: recompute).
        unhashed: what happens to a record without a content hash (the end of the note said
            once on stderr: "... so it is not trusted <unhashed>").
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        rec = read_json(path, expect=dict)      # not JSON, another shape, edited: CorruptFileError
    except CorruptFileError as exc:
        if damaged == "refuse":
            raise
        print(f"note: {exc.problem}; recomputing it", file=sys.stderr, flush=True)
        return None
    if record_status(rec) == "unhashed":
        if str(path) not in _SAID_UNHASHED:
            _SAID_UNHASHED.add(str(path))
            print(f"note: {path} carries no content hash (written by older cffdyn or by hand), so it is not "
                  f"trusted {unhashed}", file=sys.stderr, flush=True)
        return None
    if schema is not None and rec.get("schema") != schema:
        return None
    if rec.get("config") != to_jsonable(config):
        if other_config is not None:
            raise other_config(path)
        return None
    if any(k not in rec for k in keys) or not all(Path(p).exists() for p in outputs):
        return None
    if when is not None and not when(rec):
        return None
    return rec


def record_header(schema: Any, config: Any) -> dict[str, Any]:
    """The keys :func:`reusable_record` checks, first in every study record: ``schema`` (the
    version of the record's layout) and ``config`` (as JSON)."""
    return {"schema": schema, "config": to_jsonable(config)}


def study_timing(started: float, machine: Mapping[str, Any] | None = None, *, key: str = "seconds",
                 device: str | None = None) -> dict[str, Any]:
    """``{key: wall seconds since started, "machine": ...}`` for a study record.

    ``started`` is a :func:`time.perf_counter` reading.  ``machine`` is
    :func:`cffdyn.machine.machine_info` taken when the study started, so its load is the load
    the study started under; the load at the end is added as ``load_avg_after`` (a timing says
    little without the load it ran under).  Without it the machine is taken now.
    """
    seconds = time.perf_counter() - started
    mach = dict(machine) if machine is not None else machine_info(device)
    if machine is not None:
        mach["load_avg_after"] = load_average()
    return {key: seconds, "machine": mach}
