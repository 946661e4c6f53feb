"""Process groups for the layer pipeline: one machine (spawned local
processes joined on 127.0.0.1) or torchrun's environment.  gloo on CPU, nccl on GPU (one GPU per
process)."""
from __future__ import annotations

import datetime
import os
import socket
import sys
import tempfile
from typing import Callable

import torch
import torch.distributed as dist

from cffdyn.errors import EXIT_USAGE, UserError
from vit.device import resolve_device

__all__ = ["free_port", "backend_for", "init_from_env", "launch_local"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bound and released; fine for tests on one machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def backend_for(device: str) -> str:
    return "nccl" if resolve_device(device).type == "cuda" else "gloo"


def init_from_env(device: str = "auto", timeout_s: float = 1800.0) -> tuple[int, int]:
    """Initialise the default process group from torchrun's environment (``env://``); on CUDA
    select ``cuda:LOCAL_RANK``.  Returns (rank, world)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ValueError("not launched by torchrun (RANK/WORLD_SIZE unset)")
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def _local_entry(rank: int, world: int, port: int, backend: str, threads: int, fn: Callable, args: tuple,
                 err_dir: str | None = None) -> None:
    torch.set_num_threads(threads)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(hours=24))
    try:
        fn(*args)
    except UserError as exc:
        # a stage's one-line error (a diverged run, a bad checkpoint) reaches the parent as its
        # message, not as the child's traceback that mp.spawn would re-raise
        if err_dir is None:
            raise
        with open(os.path.join(err_dir, f"rank{rank}.txt"), "w") as fh:
            fh.write(str(exc))
        sys.exit(EXIT_USAGE)
    finally:
        dist.destroy_process_group()


def launch_local(fn: Callable, args: tuple, world: int, *, backend: str = "gloo", threads: int = 1) -> None:
    """Run ``fn(*args)`` in ``world`` fresh processes (spawn) joined in a process group on
    127.0.0.1 (free port); ``threads`` intra-op threads each.  ``fn`` must be a module-level
    function; it reads its rank from ``torch.distributed``.  Raises if any process fails."""
    import torch.multiprocessing as mp

    if world < 1:
        raise ValueError(f"launch_local: world={world} must be >= 1")
    if backend == "nccl" and torch.cuda.device_count() < world:
        raise ValueError(f"launch_local: nccl needs one GPU per process ({world}); "
                         f"{torch.cuda.device_count()} visible")
    with tempfile.TemporaryDirectory(prefix="cffdyn-stages-") as err_dir:
        try:
            mp.spawn(_local_entry, args=(world, free_port(), backend, int(threads), fn, args, err_dir), nprocs=world,
                     join=True)
        except (mp.ProcessExitedException, mp.ProcessRaisedException):
            msgs = [open(os.path.join(err_dir, f)).read() for f in sorted(os.listdir(err_dir))]
            if msgs:
                raise UserError(msgs[0]) from None
            raise

