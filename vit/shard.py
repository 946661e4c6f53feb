"""Seed studies sharded over ranks / nodes (``torch.distributed`` or plain rank/world numbers).

The runs of a :class:`vit.study.StudyConfig` are taken in :func:`vit.study.cell_runs` order;
rank ``r`` of ``world`` trains the runs ``i`` with ``i % world == r``, each with
:func:`vit.train.train_run` into the study's own run directory (:func:`vit.study.run_dir`), which
writes ``result.json`` atomically and an epoch checkpoint.  The merge step is
:func:`vit.study.run_study` itself on the complete set of run directories: it reads every
``result.json`` back (nothing is retrained) and builds the one ``study.json`` / table /
``study.png`` -- the same statistics code as a single-process study, so the table is the same.

Failure model: a rank that dies loses only its current run's unfinished epoch (its finished
runs are on disk, the current one has its last epoch checkpoint); launching the same command
again skips finished runs and resumes the interrupted one.  Ranks need a shared ``out_dir``
(one machine, or a shared file system across nodes); without one, copy the ``runs/``
directories together and call :func:`merge_study` (``--merge-only``).

Entry points::

    torchrun --nproc-per-node 2 -m vit.shard_cli --quick --out results/vit/study   # any `cffdyn vit study` options
    python -m vit.shard_cli --rank 1 --world 4 ...    # no torch.distributed: this shard only, no merge
    python -m vit.shard_cli --merge-only ...          # build the table once every shard is done

Devices: under torchrun each rank selects ``cuda:LOCAL_RANK`` (:func:`set_local_device`) before
its first run, so the ranks of one node spread over its GPUs instead of all landing on cuda:0.

Python API: :func:`shard_runs`, :func:`run_shard`, :func:`merge_study`, :func:`run_study_sharded`,
:func:`run_study_torchrun` (the ``cffdyn vit study`` hook under torchrun).
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any, Sequence

from cffdyn.io import Progress
from vit.study import StudyConfig, cell_runs, run_dir, run_study
from vit.train import train_run

__all__ = ["shard_runs", "run_shard", "missing_runs", "merge_study", "run_study_sharded", "run_study_torchrun",
           "under_torchrun", "set_local_device"]


def shard_runs(cfg: StudyConfig, rank: int, world: int) -> list[tuple[int, tuple[Any, ...], int]]:
    """(index, cell, seed) of the runs of shard ``rank`` of ``world``: index % world == rank."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard: rank {rank} / world {world}: need world >= 1 and 0 <= rank < world")
    return [(i, tuple(cell), seed) for i, (cell, seed) in enumerate(cell_runs(cfg)) if i % world == rank]


def run_shard(cfg: StudyConfig, out_dir: str | Path, rank: int, world: int, *, progress: bool = True,
              run_progress: bool = False) -> list[Path]:
    """Train (or resume, or skip when finished) this shard's runs; returns their run directories."""
    if not isinstance(cfg, StudyConfig):
        raise ValueError(f"cfg must be a StudyConfig, got {type(cfg).__name__}")
    if cfg.batched:
        raise ValueError("shard: batched studies train a whole cell at once; shard with batched=False")
    from vit.config import data_key, load_run_dataset

    out = Path(out_dir)
    mine = shard_runs(cfg, rank, world)
    prog = Progress(len(mine), f"study shard {rank}/{world}", enabled=progress, min_interval=0.0)
    cache: dict[tuple, Any] = {}
    dirs = []
    for k, (i, cell, seed) in enumerate(mine):
        rc = cfg.run_config(cell, seed)
        rd = run_dir(out, cfg, cell, seed)
        done = (rd / "result.json").is_file()
        if done:
            res = train_run(rc, rd, progress=False)
        else:
            key = data_key(rc)
            if key not in cache:
                cache.clear()
                cache[key] = load_run_dataset(rc)
            res = train_run(rc, rd, progress=run_progress, dataset=cache[key])
        dirs.append(rd)
        prog.update(k + 1, f"run {i}: {dict(zip(cfg.factor_names, cell))} seed {seed}: "
                           f"{cfg.metric} {100 * float(res[cfg.metric]):.2f}%" + (" (recorded)" if done else ""))
    return dirs


def missing_runs(cfg: StudyConfig, out_dir: str | Path) -> list[Path]:
    """Run directories of the study that have no ``result.json`` yet."""
    return [rd for cell, seed in cell_runs(cfg)
            if not ((rd := run_dir(Path(out_dir), cfg, cell, seed)) / "result.json").is_file()]


def merge_study(cfg: StudyConfig, out_dir: str | Path, *, progress: bool = False) -> dict[str, Any]:
    """The merge step: :func:`vit.study.run_study` over the finished runs (ValueError naming the
    missing run directories when a shard is not done, so nothing is trained here)."""
    miss = missing_runs(cfg, out_dir)
    if miss:
        raise ValueError(f"merge: {len(miss)} run(s) not finished, e.g. {miss[0]}; run the missing shards first")
    return run_study(cfg, out_dir, progress=progress)


def set_local_device() -> int | None:
    """Under torchrun with CUDA: make ``cuda:LOCAL_RANK`` this process's current device (runs
    with device 'auto'/'cuda' then use it).  Returns the device index, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    n = torch.cuda.device_count()
    if not 0 <= local < n:
        raise ValueError(f"LOCAL_RANK={local} but {n} CUDA device(s) are visible; launch at most {n} "
                         f"processes per node (torchrun --nproc-per-node {n})")
    torch.cuda.set_device(local)
    return local


def run_study_sharded(cfg: StudyConfig, out_dir: str | Path, *, progress: bool = True,
                      run_progress: bool = False) -> dict[str, Any] | None:
    """Collective over the default process group: every rank trains its shard, all wait at a
    barrier, rank 0 merges.  Returns the study result on rank 0, ``None`` elsewhere."""
    import torch.distributed as dist

    if not dist.is_initialized():
        raise ValueError("run_study_sharded needs an initialised process group (torchrun)")
    rank, world = dist.get_rank(), dist.get_world_size()
    run_shard(cfg, out_dir, rank, world, progress=progress, run_progress=run_progress)
    dist.barrier()
    return merge_study(cfg, out_dir) if rank == 0 else None


def _local_study(cfg: StudyConfig, out_dir: str) -> None:
    """Spawned rank (:func:`vit.pipeline.launch_local`): the sharded study without progress lines."""
    run_study_sharded(cfg, out_dir, progress=False)


def under_torchrun() -> bool:
    """True when launched by torchrun with more than one process (RANK/WORLD_SIZE set)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def run_study_torchrun(cfg: StudyConfig, out_dir: str | Path, *, progress: bool = True,
                       run_progress: bool = False, barrier_timeout_h: float = 72.0) -> dict[str, Any] | None:
    """:func:`run_study_sharded` in a gloo process group initialised from torchrun's environment
    (CPU-side coordination only -- a barrier -- so gloo whatever device the runs use; rank 0
    waits at most ``barrier_timeout_h`` hours for the slowest shard).  The hook for
    ``cffdyn vit study`` under torchrun: the study on rank 0, ``None`` elsewhere."""
    import torch.distributed as dist

    set_local_device()
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=barrier_timeout_h))
    return run_study_sharded(cfg, out_dir, progress=progress, run_progress=run_progress)
