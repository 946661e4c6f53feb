"""Layer-pipelined CFF training on ``torch.distributed`` (CFF paper Sec. 5.1).

CFF trains every layer with its own loss on a *detached* input, so layer ``l`` can work on
batch ``s`` while layer ``l+1`` works on batch ``s-1``: with ``S`` stages and ``N`` batches an
epoch takes ``S + N - 1`` stage-steps instead of ``S·N`` (the paper's ``T = L + N - 1``).

Stages
------
One process per contiguous group of layers (:func:`stage_layers`; when the layers do not divide
evenly the *later* stages get the extra layer, because layer 0 also holds the patch embedding).
Stage 0 draws the batch order and the augmented views from exactly the generators of
:meth:`vit.cff.CFF.train_epoch`; every stage runs :meth:`vit.cff.CFF.layer_step` (the one
definition of the local forward / SupCon-margin loss / backward / AdamW step) on its layers and
sends the detached output (both views, view-major) and the labels to the next stage with
``isend``; the next stage has ``irecv`` posted for at most ``depth`` batches ahead and the
sender waits once more than ``depth`` sends are in flight, so at most ~2·depth activations per
link exist at any time (flat memory).  Message tags are ``2·step`` (activations) and
``2·step+1`` (labels).  Every layer sees the same inputs in the same order as in the sequential
trainer (layer ``l``'s output for batch ``s`` is computed before its own step ``s``, in both), so
**the same seed gives the same weights** (bit for bit with the same kernels; the tests check it).

After each epoch the statistics (:class:`vit.method.EpochStats`) are summed over the ranks
(``all_reduce``; each layer's rows, and the class sums of the last layer, are non-zero on their
owner only, so the sums are exact), and every layer's parameters and AdamW state are broadcast
from its owner, so every rank holds the full model.  The epoch plugs into the one run loop of
:mod:`vit.train` (:func:`pipelined_epochs`): rank 0 evaluates, checkpoints, logs, selects and
runs stage 2, so a pipelined run and a sequential run write the same files, and either can
resume the other's checkpoint.

Backends: gloo on CPU, nccl on GPU (one GPU per process, ``cuda:LOCAL_RANK``; :mod:`vit.distributed`).
On a single GPU, :func:`streams_train_epoch` is the single-device form: stage ``s`` runs on its
own CUDA stream and batch ``t - s`` at pipeline tick ``t``, dependencies by CUDA events.

Entry points::

    torchrun --nproc-per-node 2 -m vit.pipeline train --layers 4 --method cff1   # (see --help)
    cffdyn vit train --pipeline [--pipeline-procs 2]    # spawns local gloo processes when not under torchrun
    python -m vit.pipeline bench                        # sequential vs pipelined epoch time, ratios

Python API: :func:`train_run_pipelined` (inside an initialised process group),
:func:`pipelined_train_epoch`, :func:`streams_train_epoch`, :func:`bench_pipeline`,
:func:`add_pipeline_args` / :func:`run_pipeline_from_args` (the ``cffdyn vit train --pipeline`` hook).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist

from cffdyn.io import atomic_write_json, read_json
from vit.config import CFF_METHODS, TrainConfig, load_run_dataset
from vit.config_args import add_train_config_args, train_config_from_args
from vit.data import Dataset
from vit.device import DeviceData, autocast, resolve_device, sync, use_precision
from vit.distributed import backend_for, init_from_env, launch_local
from vit.models import pool
from vit.train import Epochs, RunInterrupted, build_method, train_run

__all__ = ["stage_layers", "pipelined_train_epoch", "streams_train_epoch", "train_run_pipelined",
           "bench_pipeline", "format_bench",
           "add_pipeline_args", "run_pipeline_from_args", "main", "PIPELINE_METHODS", "pipelined_epochs",
           "local_train", "local_train_many", "check_pipeline_method"]

PIPELINE_METHODS: tuple[str, ...] = CFF_METHODS
DEFAULT_DEPTH = 2


# ============================================================================ stage layout
def stage_layers(n_layers: int, world: int) -> list[range]:
    """Contiguous layer ranges of the ``world`` stages; the later stages take the extra layers."""
    if world < 1:
        raise ValueError(f"pipeline: world size {world} must be >= 1")
    if world > n_layers:
        raise ValueError(f"pipeline: {world} stages for {n_layers} layers; at most one stage per layer")
    q, r = divmod(n_layers, world)
    out, a = [], 0
    for s in range(world):
        n = q + (1 if s >= world - r else 0)
        out.append(range(a, a + n))
        a += n
    return out


@dataclass(frozen=True)
class _Spec:
    shape: tuple[int, ...]   # trailing shape of one row
    dtype: torch.dtype


@torch.no_grad()
def _output_specs(method) -> list[_Spec]:
    """Row shape and dtype of every layer's output (one dummy image through the encoder, under
    the run's autocast), so a stage can post ``irecv`` before the data arrives."""
    c, h, w = method.data.ds.image_shape
    x = torch.zeros(1, 1, c, h, w, device=method.device)       # stacked: one seed, one image
    specs = []
    with autocast(method.cfg, method.device):
        for layer in method.encoder.layers:
            x = layer(x)
            specs.append(_Spec(tuple(x.shape[2:]), x.dtype))
    return specs


def check_pipeline_method(method: str) -> None:
    """Refuse a method whose layers are not trained locally (only those can be pipelined)."""
    if method not in PIPELINE_METHODS:
        raise ValueError(f"pipeline: method {method!r} is not layer-local; choose from {', '.join(PIPELINE_METHODS)}")


def _check_method(method) -> None:
    check_pipeline_method(method.cfg.method)
    if method.S != 1:
        raise ValueError(f"pipeline: one seed per pipeline (S=1), got S={method.S}")


# ============================================================================ one epoch, one stage
def pipelined_train_epoch(method, epoch: int, stages: Sequence[range], rank: int,
                          depth: int = DEFAULT_DEPTH, timing: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """This rank's part of one pipelined CFF epoch (collective: every rank of the default
    process group calls it with the same arguments but its own ``rank``).

    ``method`` is a :class:`vit.cff.CFF` built identically on every rank.  Returns what
    :meth:`vit.cff.CFF.train_epoch` returns (``[{"layers": [...]}]``), on every rank, and leaves every
    rank with the full updated model, optimiser states and ``class_means``.  With a ``timing``
    dict, host wall seconds are added to its keys ``input`` (stage 0: views), ``compute`` (layer
    steps), ``recv_wait``, ``send_wait`` and ``sync`` (end-of-epoch collectives); on CUDA
    these are launch-side times."""
    _check_method(method)
    if depth < 1:
        raise ValueError(f"pipeline: depth={depth} must be >= 1")
    world = len(stages)
    if not 0 <= rank < world:
        raise ValueError(f"pipeline: rank {rank} outside [0, {world})")
    cfg, data, dev = method.cfg, method.data, method.device
    mine = stages[rank]
    nv = method.n_views
    g_order, g_aug = method.epoch_gens(epoch)[0]
    stats = method.new_epoch_stats()                              # stacked engine at S = 1
    method.encoder.train()
    batches = data.epoch_order(g_order, cfg.batch_size)   # same stream on every rank (cheap)
    n = len(batches)
    spec = _output_specs(method)[mine.start - 1] if rank > 0 else None
    recv_q: deque = deque()
    send_q: deque = deque()

    def post_recv(step: int) -> None:
        b = int(batches[step].shape[0])
        h = torch.empty((1, nv * b, *spec.shape), dtype=spec.dtype, device=dev)
        y = torch.empty((1, b), dtype=torch.long, device=dev)
        recv_q.append((h, y, [dist.irecv(h, src=rank - 1, tag=2 * step),
                              dist.irecv(y, src=rank - 1, tag=2 * step + 1)]))

    clock = time.perf_counter
    tm = dict.fromkeys(("input", "compute", "recv_wait", "send_wait", "sync"), 0.0)
    if rank > 0:
        for s in range(min(depth, n)):
            post_recv(s)
    for step, idx in enumerate(batches):
        t = clock()
        if rank == 0:
            y = data.y["train"][idx].unsqueeze(0)
            h = data.views(data.x["train"][idx], g_aug, nv).unsqueeze(0)
            tm["input"] += clock() - t
        else:
            h, y, works = recv_q.popleft()
            for wk in works:
                wk.wait()
            if step + depth < n:
                post_recv(step + depth)
            tm["recv_wait"] += clock() - t
        t = clock()
        for l in mine:
            h, row, loss = method.layer_step(l, h, y)
            stats.add(l, row, y.shape[1])
            stats.mark(l, loss, step)
            stats.add_classes(l, y.repeat(1, nv), pool(h))
        tm["compute"] += clock() - t
        t = clock()
        if rank < world - 1:
            h, y = h.contiguous(), y.contiguous()
            send_q.append([dist.isend(h, dst=rank + 1, tag=2 * step), dist.isend(y, dst=rank + 1, tag=2 * step + 1)])
            while len(send_q) > depth:
                for wk in send_q.popleft():
                    wk.wait()
            tm["send_wait"] += clock() - t
        else:
            tm["compute"] += clock() - t
    t = clock()
    while send_q:
        for wk in send_q.popleft():
            wk.wait()
    tm["send_wait"] += clock() - t
    t = clock()
    dist.all_reduce(stats.sums)                # rows are zero off their owner: the sum is exact
    dist.all_reduce(stats.weights)             # likewise their weights
    dist.all_reduce(stats.bad, op=dist.ReduceOp.MAX)
    dist.all_reduce(stats.csum)                # each layer's rows are zero off its stage: the sum is exact
    dist.all_reduce(stats.ccnt)
    _broadcast_layers(method, stages)
    tm["sync"] += clock() - t
    if timing is not None:
        for k, v in tm.items():
            timing[k] = timing.get(k, 0.0) + v
    return method.end_epoch(stats, epoch)


def _layer_tensors(method, layers: range) -> list[torch.Tensor]:
    """Parameters and AdamW state tensors (exp_avg, exp_avg_sq, step) of ``layers``, in a fixed
    order; a missing state is created as AdamW's own initial state (zeros, step 0), which AdamW
    then uses exactly as if it had created it."""
    out = []
    for l in layers:
        opt = method.optimizers[l]
        for p in method.encoder.layers[l].parameters():
            st = opt.state[p]
            if not st:
                st.update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p, memory_format=torch.preserve_format),
                          exp_avg_sq=torch.zeros_like(p, memory_format=torch.preserve_format))
            if set(st) != {"step", "exp_avg", "exp_avg_sq"}:
                raise ValueError(f"pipeline: unexpected optimiser state keys {sorted(st)} (AdamW without amsgrad "
                                 f"expected)")
            out += [p.data, st["exp_avg"], st["exp_avg_sq"], st["step"]]
    return out


def _broadcast_layers(method, stages: Sequence[range]) -> None:
    """Every layer's parameters and AdamW state from its owner stage to all ranks: one flat
    ``dist.broadcast`` per stage (exact copies; the ``step`` counters travel as floats, which
    are exact below 2**24 steps)."""
    dev = method.device
    for s, layers in enumerate(stages):
        ts = _layer_tensors(method, layers)
        with torch.no_grad():
            flat = torch.cat([t.detach().reshape(-1).to(device=dev, dtype=torch.float32) for t in ts])
            dist.broadcast(flat, src=s)
            if dist.get_rank() != s:
                k = 0
                for t in ts:
                    t.copy_(flat[k:k + t.numel()].view_as(t))
                    k += t.numel()


# ============================================================================ one GPU: CUDA streams
def streams_train_epoch(method, epoch: int, n_stages: int = 2) -> list[dict[str, Any]]:
    """Single-device pipeline form: ``n_stages`` CUDA streams, stage ``s`` processes batch
    ``t - s`` at tick ``t`` on its own stream; a CUDA event orders each hand-over.  Same updates
    as :meth:`vit.cff.CFF.train_epoch` (same per-layer input order) and returns what it returns.  CUDA only (ValueError on CPU)."""
    _check_method(method)
    if method.device.type != "cuda":
        raise ValueError("streams_train_epoch needs a CUDA device")
    cfg, data, dev = method.cfg, method.data, method.device
    L = len(method.encoder.layers)
    stages = stage_layers(L, n_stages)
    nv = method.n_views
    g_order, g_aug = method.epoch_gens(epoch)[0]
    stats = method.new_epoch_stats()                              # stacked engine at S = 1
    method.encoder.train()
    batches = data.epoch_order(g_order, cfg.batch_size)
    main = torch.cuda.current_stream(dev)
    streams = [torch.cuda.Stream(device=dev) for _ in stages]
    for st in streams:
        st.wait_stream(main)
    handoff: list[dict[int, tuple]] = [dict() for _ in stages]   # stage -> {step: (h, y, event)}
    n = len(batches)
    for t in range(n + len(stages) - 1):
        if t < n:   # batch t's views, drawn in batch order on the default stream (the sequential stream)
            idx = batches[t]
            e0 = torch.cuda.Event()
            x, y0 = data.views(data.x["train"][idx], g_aug, nv).unsqueeze(0), data.y["train"][idx].unsqueeze(0)
            e0.record(main)
            handoff[0][t] = (x, y0, e0)
        for s, layers in enumerate(stages):
            step = t - s
            if not 0 <= step < n:
                continue
            h, y, ev = handoff[s].pop(step)
            with torch.cuda.stream(streams[s]):
                if ev is not None:
                    streams[s].wait_event(ev)
                h.record_stream(streams[s])
                y.record_stream(streams[s])
                for l in layers:
                    h, row, loss = method.layer_step(l, h, y)
                    stats.add(l, row, y.shape[1])
                    stats.mark(l, loss, step)
                    stats.add_classes(l, y.repeat(1, nv), pool(h))
                if s + 1 < len(stages):
                    e = torch.cuda.Event()
                    e.record(streams[s])
                    handoff[s + 1][step] = (h, y, e)
    for st in streams:
        main.wait_stream(st)
    return method.end_epoch(stats, epoch)


# ============================================================================ a whole run
def _decide_on_rank0(fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0 (the run directory lives on its file system), its value or its error
    given to every rank."""
    msg: list[Any] = [None]
    err = None
    if dist.get_rank() == 0:
        try:
            msg[0] = ("ok", fn())
        except Exception as exc:   # every rank must hear of it, or the others wait forever
            err, msg[0] = exc, ("error", f"{type(exc).__name__}: {exc}")
    dist.broadcast_object_list(msg, src=0)
    kind, value = msg[0]
    if kind == "error":
        raise err if err is not None else ValueError(value)
    return value


def pipelined_epochs(stages: Sequence[range], depth: int = DEFAULT_DEPTH) -> Epochs:
    """The run loop's :class:`vit.train.Epochs` of this process's stage: the pipelined epoch,
    rank 0 recording (evaluation, checkpoint, log, selection, stage 2, ``result.json``)."""
    rank = dist.get_rank()
    return Epochs(train=lambda m, e: pipelined_train_epoch(m, e, stages, rank, depth), lead=rank == 0,
                  decide=_decide_on_rank0, barrier=dist.barrier, label=f"pipeline x{len(stages)} ")


def train_run_pipelined(cfg: TrainConfig, out_dir: str | Path, *, depth: int = DEFAULT_DEPTH,
                        progress: bool = True, dataset: Dataset | None = None,
                        stop_after_epoch: int | None = None) -> dict[str, Any] | None:
    """Pipelined :func:`vit.train.train_run` for CFF (collective; call on every rank of an
    initialised default process group, one stage per rank).  Returns the result dict on rank 0
    (``None`` elsewhere); writes the same ``out_dir`` files as ``train_run``."""
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    check_pipeline_method(cfg.method)
    if not dist.is_initialized():
        raise ValueError("train_run_pipelined needs an initialised process group (torchrun or launch_local)")
    stages = stage_layers(cfg.n_layers, dist.get_world_size())
    return train_run(cfg, out_dir, progress=progress, stop_after_epoch=stop_after_epoch, dataset=dataset,
                     epochs=pipelined_epochs(stages, depth))


def local_train(cfg_dict: dict, out_dir: str, depth: int, progress: bool, stop_after_epoch: int | None) -> None:
    """Spawned stage: one pipelined run (a RunInterrupted from ``stop_after_epoch`` ends it quietly)."""
    try:
        train_run_pipelined(TrainConfig.from_dict(cfg_dict), out_dir, depth=depth, progress=progress,
                            stop_after_epoch=stop_after_epoch)
    except RunInterrupted:
        pass


def local_train_many(jobs: list[tuple]) -> None:
    """Spawned stage: several :func:`local_train` argument tuples in one process group (tests)."""
    for job in jobs:
        local_train(*job)


# ============================================================================ CLI hook
def add_pipeline_args(parser: argparse.ArgumentParser) -> None:
    """``--pipeline`` options of ``cffdyn vit train``."""
    g = parser.add_argument_group("layer pipeline (CFF Sec. 5.1; methods cff2/cff1)")
    g.add_argument("--pipeline", action="store_true",
                   help="train stage 1 as a layer pipeline, one process per group of layers "
                        "(torch.distributed: gloo on CPU, nccl on GPU). Under torchrun the world size is "
                        "the number of stages; otherwise --pipeline-procs local processes are spawned. "
                        "Same weights as the sequential trainer for the same seed.")
    g.add_argument("--pipeline-procs", type=int, default=2,
                   help="stages to spawn on this machine when not launched by torchrun (<= layers; "
                        "CPU: gloo on 127.0.0.1; CUDA: one GPU per stage)")
    g.add_argument("--pipeline-depth", type=int, default=DEFAULT_DEPTH,
                   help="bounded queue: batches a stage may run ahead of the next one (in-flight sends "
                        "and pre-posted receives per link)")
    g.add_argument("--pipeline-threads", type=int, default=None,
                   help="intra-op threads per spawned stage (default: CPU cores // stages, at least 1)")


def run_pipeline_from_args(args: argparse.Namespace, cfg: TrainConfig, out: str | Path) -> dict[str, Any] | None:
    """Run ``cfg`` pipelined into ``out`` as the options in ``args`` say; the result dict on
    rank 0 (or in the launching process), ``None`` on other torchrun ranks."""
    progress = not getattr(args, "quiet", False)
    if int(args.pipeline_depth) < 1:
        raise ValueError(f"--pipeline-depth={args.pipeline_depth} must be >= 1")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        init_from_env(cfg.device)
        return train_run_pipelined(cfg, out, depth=args.pipeline_depth, progress=progress)
    procs = int(args.pipeline_procs)
    stage_layers(cfg.n_layers, procs)          # validate before spawning
    check_pipeline_method(cfg.method)
    backend = backend_for(cfg.device)
    threads = args.pipeline_threads or max(1, (os.cpu_count() or 1) // procs)
    launch_local(local_train, (cfg.to_dict(), str(out), int(args.pipeline_depth), progress, None), procs,
                 backend=backend, threads=threads)
    return read_json(Path(out) / "result.json", expect=dict)


# ============================================================================ benchmark
#: CPU benchmark config: the paper's one-forward pipeline experiment scaled to 2 CPU cores --
#: ViT[64 4 4] (4 equal blocks, 2 per stage), patch 7, Fashion-MNIST 3000 -> 2700 train, batch 256
#: (11 batches per epoch: ideal 2-stage speed-up 2·11/(2+11-1) = 1.83).
BENCH_CPU = TrainConfig(method="cff1", subset=3000, batch_size=256, device="cpu", epochs=1)
#: GPU: the paper's ViT[128 4 2] (two layers, one forward), here on all of Fashion-MNIST (patch 7).
BENCH_GPU = TrainConfig(method="cff1", subset=None, embed_dim=128, heads=4, layers=2, batch_size=512,
                        device="cuda", epochs=1)


def _bench_worker(cfg_dict: dict, epochs: int, depth: int, n_stages: int, out_json: str) -> None:
    """All variants, interleaved round by round in the same processes (round 0 = warm-up).  The
    single-process variants run on rank 0 while the other ranks wait at a barrier; then every
    rank runs its stage of the pipelined epoch.  Without a process group: single-process only."""
    cfg = TrainConfig.from_dict(cfg_dict)
    dev = resolve_device(cfg.device)
    distributed = dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    cores = os.cpu_count() or 1
    own = torch.get_num_threads()
    ds = load_run_dataset(cfg)
    use_precision(cfg.precision, dev)

    def mk(c: TrainConfig):
        return build_method(c, DeviceData.for_config(ds, c, dev))

    variants: list[tuple[str, Any, Callable, int]] = [
        (f"sequential CFF, 1 process x {cores} threads", mk(cfg), lambda m, e: m.train_epoch(e), cores)]
    if dev.type == "cpu":
        variants.append(("sequential CFF, 1 process x 1 thread", mk(cfg), lambda m, e: m.train_epoch(e), 1))
    variants.append((f"BP+CE, 1 process x {cores} threads", mk(cfg.replace(method="bp")),
                     lambda m, e: m.train_epoch(e), cores))
    if dev.type == "cuda":
        variants.append((f"CUDA streams, {n_stages} stages, 1 GPU", mk(cfg),
                         lambda m, e: streams_train_epoch(m, e, n_stages=n_stages), cores))
    pipe_name = f"pipelined CFF, {world} processes x {own} thread(s) ({dist.get_backend() if distributed else ''})"
    stages = stage_layers(cfg.n_layers, world) if world > 1 else None
    pipe = mk(cfg) if world > 1 else None
    times: dict[str, list[float]] = {v[0]: [] for v in variants}
    if pipe is not None:
        times[pipe_name] = []
    breakdown: dict[str, float] = {}
    for e in range(epochs + 1):
        for name, m, fn, th in variants:
            if distributed:
                dist.barrier()
            if rank == 0:
                torch.set_num_threads(th)
                sync(dev)
                t0 = time.perf_counter()
                fn(m, e)
                sync(dev)
                times[name].append(time.perf_counter() - t0)
                torch.set_num_threads(own)
        if pipe is not None:
            dist.barrier()
            sync(dev)
            t0 = time.perf_counter()
            pipelined_train_epoch(pipe, e, stages, rank, depth, timing=breakdown if e > 0 else None)
            sync(dev)
            times[pipe_name].append(time.perf_counter() - t0)
    per_rank: list[Any] = [None] * world
    if distributed:
        dist.all_gather_object(per_rank, {k: v / max(epochs, 1) for k, v in breakdown.items()})
    if rank == 0:
        atomic_write_json(out_json, {"times": {k: v[1:] for k, v in times.items()}, "n_train": int(ds.x_train.shape[0]),
                                     "stages": [list(r) for r in stages] if stages else None,
                                     "stage_breakdown_s": per_rank if distributed else None})


def bench_pipeline(cfg: TrainConfig | None = None, *, epochs: int = 3, world: int = 2,
                   depth: int = DEFAULT_DEPTH, out: str | Path | None = None) -> dict[str, Any]:
    """Time per stage-1 epoch of every variant, measured interleaved in one run: sequential CFF
    (1 process; all cores, and 1 thread on CPU), BP+CE (1 process, all cores), the ``world``-stage
    pipeline (gloo on CPU with cores // world threads per stage; nccl when ``world`` GPUs are
    visible) and, on CUDA, the single-GPU CUDA-streams form.  One warm-up round, then ``epochs``
    timed rounds; the median and the fastest are reported.  Prints nothing (:func:`format_bench`)."""
    import statistics

    cfg = cfg or BENCH_CPU
    dev = resolve_device(cfg.device)
    cores = os.cpu_count() or 1
    n_stages = min(world, cfg.n_layers)
    stage_layers(cfg.n_layers, n_stages)
    backend = backend_for(cfg.device)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        jf = str(Path(tmp) / "bench.json")
        args = (cfg.to_dict(), epochs, depth, n_stages, jf)
        if world > 1 and (backend == "gloo" or torch.cuda.device_count() >= world):
            launch_local(_bench_worker, args, world, backend=backend, threads=max(1, cores // world))
        else:
            _bench_worker(*args)
        raw = read_json(jf)
    ds_n = raw["n_train"]
    n_batches = sum(1 for i in range(0, ds_n, cfg.batch_size) if ds_n - i >= 2)
    med = {k: statistics.median(v) for k, v in raw["times"].items()}
    fast = {k: min(v) for k, v in raw["times"].items()}
    base = next(iter(med))
    res = {"config": cfg.to_dict(), "world": world, "cores": cores, "depth": depth, "n_batches": n_batches,
           "epochs_timed": epochs, "ideal_speedup": n_stages * n_batches / (n_stages + n_batches - 1),
           "stages": raw["stages"], "stage_breakdown_s_per_epoch": raw["stage_breakdown_s"],
           "epoch_times_s": raw["times"], "median_s": med, "fastest_s": fast,
           "speedup_vs_first": {k: med[base] / v for k, v in med.items()},
           "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
           "load_avg_1min": [load_before, os.getloadavg()[0]]}
    if out is not None:
        atomic_write_json(Path(out), res)
    return res


def format_bench(res: dict[str, Any]) -> str:
    c = res["config"]
    lines = [f"pipeline benchmark on {res['device']} ({res['cores']} cores): {c['method']} "
             f"{c['model']}[{c['embed_dim']} {c['heads']} {c['layers']}] patch {c['patch']}, {c['dataset']}, "
             f"batch {c['batch_size']}, {res['n_batches']} batches/epoch; {res['epochs_timed']} interleaved "
             f"rounds after 1 warm-up; stages {res['stages']}; 1-min load average before/after "
             f"{res['load_avg_1min'][0]:.2f}/{res['load_avg_1min'][1]:.2f} (other processes share the cores)",
             f"{'variant':<52} {'median s':>9} {'fastest s':>9} {'speed-up (median)':>18}"]
    for k, v in res["median_s"].items():
        lines.append(f"{k:<52} {v:9.3f} {res['fastest_s'][k]:9.3f} {res['speedup_vs_first'][k]:17.2f}x")
    for r, bd in enumerate(res.get("stage_breakdown_s_per_epoch") or []):
        lines.append(f"  stage {r} per epoch (mean of timed rounds): " + ", ".join(f"{k} {v:.3f} s" for k, v in bd.items()))
    lines.append(f"ideal {min(res['world'], c['layers'])}-stage speed-up for {res['n_batches']} batches: "
                 f"{res['ideal_speedup']:.2f}x (paper: ~1.8x vs DataParallel BP on 2 T4 GPUs)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``python -m vit.pipeline {bench,train}``."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    ap = argparse.ArgumentParser(prog=prog or "python -m vit.pipeline", formatter_class=fmt,
                                 description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", metavar="{bench,train}")
    bp = sub.add_parser("bench", formatter_class=fmt, help="sequential vs pipelined epoch time (ratios)",
                        description="Times one CFF stage-1 epoch sequentially and as a layer pipeline, side "
                                    "by side in one run, and prints the ratios (CPU: 2-process gloo pipeline; "
                                    "GPU: CUDA-streams form and, with >= WORLD GPUs, the nccl pipeline).")
    bp.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cpu: BENCH_CPU config; cuda: BENCH_GPU config (skips with a message without CUDA)")
    bp.add_argument("--world", type=int, default=2, help="pipeline stages (processes)")
    bp.add_argument("--epochs", type=int, default=3, help="timed rounds (one epoch of every variant each), after one warm-up round")
    bp.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help="bounded queue depth per link")
    bp.add_argument("--batch-size", type=int, default=None, help="batch size (default: the config's)")
    bp.add_argument("--subset", type=int, default=None, help="training pool size (default: the config's)")
    bp.add_argument("--layers", type=int, default=None, help="encoder layers (default: the config's)")
    bp.add_argument("--data-root", default=None, help="dataset directory")
    bp.add_argument("--out", default=None, help="also write the numbers as JSON here")
    tp = sub.add_parser("train", formatter_class=fmt, help="one pipelined run (use under torchrun)",
                        description="Same options as 'cffdyn vit train'; always pipelined.")
    add_train_config_args(tp)
    tp.add_argument("--out", required=True, help="run directory")
    tp.add_argument("--quiet", action="store_true", help="no progress lines")
    add_pipeline_args(tp)
    ns = ap.parse_args(list(sys.argv[1:] if argv is None else argv))
    if ns.cmd is None:
        ap.print_help()
        return 2
    try:
        if ns.cmd == "bench":
            if ns.device == "cuda" and not torch.cuda.is_available():
                print("pipeline bench: no CUDA device, skipped")
                return 0
            cfg = BENCH_CPU if ns.device == "cpu" else BENCH_GPU
            ch = {k: v for k, v in (("batch_size", ns.batch_size), ("subset", ns.subset), ("layers", ns.layers),
                                    ("data_root", ns.data_root)) if v is not None}
            res = bench_pipeline(cfg.replace(**ch), epochs=ns.epochs, world=ns.world, depth=ns.depth, out=ns.out)
            print(format_bench(res))
            return 0
        cfg = train_config_from_args(ns)
        res = run_pipeline_from_args(ns, cfg, ns.out)
        if res is not None:
            print(f"run dir: {ns.out}\nval acc {res['val_acc']:.4f}  test acc {res['test_acc']:.4f}  "
                  f"epoch time {res['epoch_time_s']:.2f} s")
        return 0
    except (ValueError, FileNotFoundError) as exc:
        print(f"pipeline {ns.cmd}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
