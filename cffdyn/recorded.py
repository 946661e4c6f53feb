"""Recorded results: long or GPU-measured results kept in the repository with their provenance.

``results/`` is git-ignored and rebuilt by ``make run``; a study that takes an hour on the CPU,
or anything measured on a GPU, would be lost with the machine that ran it.  Such a result is
committed under ``recorded/<kind>/<name>/`` as

``record.json``  schema :data:`SCHEMA` v :data:`SCHEMA_VERSION`: ``kind``, ``config`` (what was
                 run, as the producer's config dict), ``payload`` (the producer's result),
                 ``files`` (name -> SHA-256 of each file stored beside it, e.g. figures),
                 ``provenance`` (:func:`provenance`: commit and whether the tree was dirty, the
                 exact command, machine, device and driver, torch version, wall time, load at
                 the start and the end) and ``content_sha256`` over all of it
                 (:func:`cffdyn.io.content_hash`).

:func:`load_record` is how a consumer (the paper build) reads one: it refuses, in one line
naming the file, a record of another schema or kind, an edited one (hash), a missing or edited
stored file, and a record whose config differs from the config the consumer would run now
(stale: the code's preset moved on); the fix it names is to rerun the producer with
``--record``.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from cffdyn.errors import UserError
from cffdyn.io import HASH_KEY, atomic_write_bytes, atomic_write_json, content_hash, read_json, to_jsonable
from cffdyn.machine import load_average, machine_info

__all__ = ["SCHEMA", "SCHEMA_VERSION", "RECORDED_ROOT", "provenance", "write_record", "load_record", "file_sha256",
           "record_dir"]

SCHEMA = "cffdyn.recorded"
SCHEMA_VERSION = 1
#: the repository's recorded-results folder (beside the packages)
RECORDED_ROOT = Path(__file__).resolve().parent.parent / "recorded"


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(RECORDED_ROOT.parent), *args], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cuda_info() -> dict[str, Any]:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {"cuda": False}
    info: dict[str, Any] = {"cuda": True, "gpu": torch.cuda.get_device_name(0), "cuda_runtime": torch.version.cuda}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0:
            info["driver"] = out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return info


def provenance(command: str, *, wall_s: float | None = None, load_start: list[float] | None = None,
               device: str | None = None) -> dict[str, Any]:
    """Where and how a result was made: commit (and ``dirty``: uncommitted changes in the tree),
    the exact command, the machine (:func:`cffdyn.machine.machine_info`), device and driver,
    torch version, wall time and the load at the start and the end."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    torch = sys.modules.get("torch")
    return {"commit": _git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None,
            "command": command, "machine": machine_info(device), "device": _cuda_info(),
            "torch": torch.__version__ if torch is not None else None,
            "wall_s": wall_s, "load_start": load_start, "load_end": load_average(),
            "recorded_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def record_dir(kind: str, name: str, root: str | os.PathLike | None = None) -> Path:
    return Path(root if root is not None else RECORDED_ROOT) / kind / name


def write_record(directory: str | os.PathLike, *, kind: str, config: Mapping[str, Any], payload: Any,
                 prov: Mapping[str, Any], files: Mapping[str, str | os.PathLike] | None = None) -> Path:
    """Write ``directory/record.json`` (module doc), copying ``files`` (stored name -> source
    path) beside it first; returns the record's path.  Atomic per file."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name, src in (files or {}).items():
        if Path(name).name != name:
            raise ValueError(f"stored file name {name!r} must be a plain name")
        atomic_write_bytes(d / name, Path(src).read_bytes())
        hashes[name] = file_sha256(d / name)
    rec = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "kind": kind, "config": to_jsonable(config),
           "payload": to_jsonable(payload), "files": hashes, "provenance": dict(prov)}
    return atomic_write_json(d / "record.json", rec)


def load_record(directory: str | os.PathLike, *, kind: str, config: Mapping[str, Any] | None = None,
                rerun: str = "rerun the producer with --record") -> dict[str, Any]:
    """The record under ``directory`` if it is whole, unedited, of ``kind`` and (with ``config``)
    of that config; otherwise UserError in one line naming the file and the fix (module doc)."""
    d = Path(directory)
    path = d / "record.json"
    if not path.is_file():
        raise UserError(f"no recorded result at {path}", rerun)
    rec = read_json(path, expect=dict, verify=False)
    if rec.get("schema") != SCHEMA or rec.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{path}: schema {rec.get('schema')!r} v{rec.get('schema_version')!r}, expected {SCHEMA!r} "
                        f"v{SCHEMA_VERSION}", rerun)
    if rec.get(HASH_KEY) != content_hash(rec):
        raise UserError(f"{path} was edited after it was recorded (its {HASH_KEY} does not match)",
                        f"restore it with git checkout, or {rerun}")
    if rec.get("kind") != kind:
        raise UserError(f"{path} records a {rec.get('kind')!r} result, not {kind!r}", "give the right folder")
    for name, h in (rec.get("files") or {}).items():
        f = d / name
        if not f.is_file():
            raise UserError(f"{path}: stored file {name} is missing", f"restore it with git checkout, or {rerun}")
        if file_sha256(f) != h:
            raise UserError(f"{f} differs from the file recorded in {path} (SHA-256)",
                            f"restore it with git checkout, or {rerun}")
    if config is not None and to_jsonable(config) != rec.get("config"):
        want, got = to_jsonable(config), rec.get("config") or {}
        diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k)) if isinstance(got, dict) else []
        raise UserError(f"{path} is stale: recorded for another config (differs in {', '.join(diff[:4]) or 'shape'})",
                        rerun)
    return rec

