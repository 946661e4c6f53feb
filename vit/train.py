"""The run loop: resume, train epoch by epoch, evaluate, checkpoint, log, select, stage 2, result.json.

Python API (used by the studies)::

    from vit.config import QUICK
    from vit.train import train_run, train_runs
    res = train_run(QUICK.replace(seed=3, loss_mode="subtract"), Path("results/vit/run3"))
    res["test_acc"], res["per_layer"][0]["car"]
    many = train_runs([QUICK.replace(seed=s) for s in range(7)], out_dirs, ckpt=path)  # S = 7 in one pass

:func:`train_runs` trains S configs that differ only in their seeds in one pass (the seed-stacked
CFF engine of :mod:`vit.cff`; S = 1 for the baselines of :mod:`vit.baselines`); :func:`train_run`
is S = 1 through the same code.  The loop is the same for every way of training an epoch: an
:class:`Epochs` says how an epoch trains (the method's own ``train_epoch``, or the layer
pipeline's distributed epoch, :mod:`vit.pipeline`) and which process records, so the sequential
and the pipelined trainer resume, checkpoint, log and select alike and read each other's files.

Per epoch (one host read each): per-layer training loss, CAR, gradient norm, mean positive and
negative similarity (means over the epoch's images, each step weighted by its batch size as the
reference weights its loss; the gradient norm over steps: :class:`vit.method.EpochStats`); the
method's validation metrics and its selection ``metric``.  The epoch
with the best metric is kept (model selection); stage 2 (:meth:`finish`) runs on its weights.

Files (with ``out_dir``): ``log.jsonl`` (one line per epoch, rewritten from the checkpoint on
resume), ``ckpt.pt`` (:mod:`vit.checkpoint`; written atomically after every epoch, checked against
the run before it is resumed from), ``result.json`` (atomic; a run whose intact ``result.json`` has
the same config is returned as is, one with another config or edited is refused, one without a
content hash is recomputed: :func:`recorded_result`).  Temporary files a killed writer left in
those directories are removed when the run starts (:func:`cffdyn.io.clean_stale_tmp`).
``result.json`` records the protocol, the precision, the input statistics
(``input_normalisation``: mean, std and their source) and the departures from the reference
protocol (:func:`vit.config.departures`).  A non-finite loss stops the run with
:class:`vit.method.NonFiniteLoss` naming seed, layer, epoch and step; the last good checkpoint stays.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from cffdyn.errors import CorruptFileError, UserError
from cffdyn.io import Progress, append_jsonl, atomic_write_json, atomic_write_text, clean_stale_tmp
from cffdyn.records import reusable_record
from vit.baselines import BP, FF, FFCL
from vit.cff import CFF
from vit.checkpoint import (bad_checkpoint, check_optimizer, check_tensors, load_checkpoint, nonfinite_tensor,
                            save_checkpoint)
from vit.config import CFF_METHODS, TrainConfig, check_seed_batch, departures, load_run_dataset, memory_estimate
from vit.data import Dataset
from vit.device import DeviceData, device_name, resolve_device, sync, use_precision
from vit.method import Method, RunDiverged, likely_cause

__all__ = ["train_runs", "train_run", "Epochs", "SEQUENTIAL", "RunInterrupted", "METHOD_CLASSES", "build_method", "prepare_method",
           "recorded_result"]

METHOD_CLASSES: dict[str, type[Method]] = {"cff2": CFF, "cff1": CFF, "bp": BP, "ff": FF, "ffcl": FFCL}


class RunInterrupted(RuntimeError):
    """Raised by ``train_run(stop_after_epoch=k)`` after epoch k is checkpointed (simulated kill)."""


def build_method(cfg: TrainConfig | Sequence[TrainConfig], data: DeviceData | Sequence[DeviceData]) -> Method:
    """The method object of one config (S = 1) or of S seed configs (CFF), models and optimisers
    on the data's device.  The precision is the caller's to set (:func:`vit.device.use_precision`;
    :func:`train_runs` does)."""
    cfgs = [cfg] if isinstance(cfg, TrainConfig) else list(cfg)
    datas = [data] if isinstance(data, DeviceData) else list(data)
    check_seed_batch(cfgs)
    if len(datas) != len(cfgs):
        raise ValueError(f"need one DeviceData per config; got {len(cfgs)} configs, {len(datas)} datas")
    if len({d.device for d in datas}) != 1:
        raise ValueError("all DeviceData must be on the same device")
    return METHOD_CLASSES[cfgs[0].method](cfgs, datas)


def prepare_method(cfgs: Sequence[TrainConfig], datasets: Sequence[Dataset]) -> Method:
    """The untrained method of the seed configs ``cfgs`` as a run starts it: the device resolved,
    its precision set (:func:`vit.device.use_precision`), the datasets (one per config) checked
    against the config and the memory bound, and put on the device."""
    cfgs = list(cfgs)
    cfg = cfgs[0]
    device = resolve_device(cfg.device)
    use_precision(cfg.precision, device)
    _check_data(cfg, datasets, device)
    check_memory(cfg, len(cfgs), int(datasets[0].x_train.shape[0]), datasets[0].image_shape[0], device)
    return build_method(cfgs, [DeviceData.for_config(ds, c, device) for ds, c in zip(datasets, cfgs)])


def _call(fn: Callable[[], Any]) -> Any:
    return fn()


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Epochs:
    """How the run loop trains an epoch, and which process records.

    ``train(method, epoch)`` trains one epoch and returns one record per seed (None: the
    method's own ``train_epoch``).  Several processes may run one loop together (the layer
    pipeline): every one calls ``train``; only the ``lead`` evaluates, checkpoints, logs and
    writes ``result.json``; ``decide(fn)`` runs ``fn`` on the lead and gives every process its
    value (or its exception); ``barrier()`` is where the processes meet (before each epoch, before
    an interruption and after the last epoch).  One process: :data:`SEQUENTIAL`."""

    train: Callable[[Method, int], Any] | None = None
    lead: bool = True
    decide: Callable[[Callable[[], Any]], Any] = _call
    barrier: Callable[[], None] = _nothing
    label: str = ""


SEQUENTIAL = Epochs()


def _is_better(metric: float, best: float | None, minimize: bool) -> bool:
    if not math.isfinite(metric):
        return False
    if best is None:
        return True
    return metric < best if minimize else metric > best


def _as_list(x: Any) -> list:
    return x if isinstance(x, list) else [x]


def _record_epoch(method: Method, epoch: int, recs: list[dict[str, Any]], t_train: float, t_eval0: float,
                  histories: list[list], bests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluate after a training epoch, merge the per-layer validation metrics into each seed's
    epoch record, append it to that seed's history and update its best state; returns the records."""
    evs = _as_list(method.evaluate(epoch))
    for s, ev in enumerate(evs):
        if not math.isfinite(ev["metric"]):
            seed = f"seed {method.cfgs[s].seed}, " if method.S > 1 else ""
            raise RunDiverged(f"non-finite validation metric ({ev['metric']}) at {seed}epoch {epoch} "
                              f"(method {method.cfg.method}, lr {method.cfg.lr:g}, tau {method.cfg.tau:g}); "
                              f"{likely_cause(method.cfg)}; the last good checkpoint is kept", position=s)
    t_eval = time.perf_counter() - t_eval0
    out = []
    for s, (rec, ev) in enumerate(zip(recs, evs)):
        for k in ("val_loss", "val_car", "fisher", "ncm_val_acc", "ncm_test_acc", "noise_ratio", "noise_ratio_se",
                  "sigma_n_eff", "sigma_n_eff_se"):
            if k in ev:
                for r, v in zip(rec["layers"], ev.pop(k)):
                    r[k] = v
        rec = {"epoch": epoch, "time_s": t_train / method.S, "eval_time_s": t_eval / method.S, **rec, **ev}
        histories[s].append(rec)
        if _is_better(ev["metric"], bests[s]["metric"], method.minimize):
            bests[s] = {"epoch": epoch, "metric": ev["metric"], "state": method.model_state(s)}
        out.append(rec)
    return out


def _payload(method: Method, cfg_dicts: list[dict], epoch: int, histories: list, bests: list,
             t_all: list[float]) -> dict[str, Any]:
    """The per-epoch checkpoint (tensors and plain containers only)."""
    payload = {"configs": cfg_dicts, "epoch": epoch, "state": method.state(), "histories": histories,
               "bests": bests, "t_all": t_all}
    if hasattr(method, "class_means"):
        payload["class_means"] = method.class_means
    return payload


#: keys every result.json has (what the CLI prints and a study reads)
_RESULT_KEYS = ("config", "device", "val_acc", "test_acc", "test_topk_acc", "topk", "best_epoch", "per_layer",
                "epoch_time_s", "history")


def _other_run(path: Path) -> ValueError:
    return ValueError(f"{path} holds a run with a different config; use another out_dir")


def recorded_result(path: Path, cfg_dict: dict[str, Any]) -> dict[str, Any] | None:
    """The ``result.json`` at ``path`` when it is an intact record of the run ``cfg_dict``.

    None when there is none, or when it carries no content hash (older cffdyn, or written by
    hand): such a record is recomputed, not trusted, and that is said once on stderr.  Refused
    with one line (:class:`CorruptFileError`): not a JSON object (``[]``, ``42``), changed after it
    was written (its ``content_sha256`` no longer matches, e.g. an edited ``test_acc``), or
    without the fields of a result; a result of another config is a ValueError."""
    # refused, never recomputed: the record stands for a trained run that a rerun would overwrite
    r = reusable_record(path, cfg_dict, damaged="refuse", other_config=_other_run,
                        unhashed="and the run counts as unfinished (training it recomputes the file)")
    if r is None:
        return None
    missing = [k for k in _RESULT_KEYS if k not in r]
    bad = [k for k in ("val_acc", "test_acc", "test_topk_acc")
           if k in r and not (isinstance(r[k], (int, float)) and not isinstance(r[k], bool) and 0 <= r[k] <= 1)]
    if missing or bad:
        what = (f"lacks {', '.join(missing)}" if missing else
                f"has {bad[0]}={r[bad[0]]!r}, not an accuracy in [0, 1]")
        raise CorruptFileError(f"{path} {what}", "it was not written by this version of cffdyn: move it away and "
                               "rerun, which recomputes it")
    return r


def _start_point(outs: list[Path] | None, cfg_dicts: list[dict], ck: Path | None) -> tuple[str, Any]:
    """("done", results) when every seed has a recorded result of its config, else ("run", the
    checkpoint or None); a result or checkpoint of another config, or one that is not a record
    of this run (:func:`recorded_result`, :func:`_check_checkpoint`), is refused."""
    if outs is not None:
        prev = [r for r in (recorded_result(o / "result.json", d) for o, d in zip(outs, cfg_dicts)) if r is not None]
        if len(prev) == len(cfg_dicts):
            return "done", prev
    if ck is not None and (ck.exists() or ck.is_symlink()):
        st = load_checkpoint(ck, "cpu")
        if st["configs"] != cfg_dicts:
            raise ValueError(f"{ck} belongs to a different config; use another out_dir (or delete it to restart)")
        _check_checkpoint(ck, st, int(cfg_dicts[0]["epochs"]), len(cfg_dicts))
        return "run", st
    return "run", None


_CK_KEYS = ("configs", "epoch", "state", "histories", "bests", "t_all")


def _finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_checkpoint(ck: Path, st: dict[str, Any], n_epochs: int, S: int) -> None:
    """What :func:`train_runs` resumes from, checked before use: every key of :func:`_payload`,
    the epoch inside the run, one history of epochs 0..epoch and one best per seed, a time per
    epoch, and no NaN or infinity in any tensor (weights, moments, class means).  The shapes are
    checked against the built method (:func:`_check_fits`)."""
    missing = [k for k in _CK_KEYS if k not in st]
    if missing:
        raise bad_checkpoint(ck, f"lacks {', '.join(repr(k) for k in missing)} (not a checkpoint of this run loop)")
    e = st["epoch"]
    if not isinstance(e, int) or isinstance(e, bool) or not 0 <= e < n_epochs:
        raise bad_checkpoint(ck, f"records epoch {e!r}, outside this run's epochs 0..{n_epochs - 1}")
    hist, bests, t_all = st["histories"], st["bests"], st["t_all"]
    if not (isinstance(hist, list) and len(hist) == S and all(
            isinstance(h, list) and len(h) == e + 1 and all(isinstance(r, dict) and r.get("epoch") == k
                                                            for k, r in enumerate(h)) for h in hist)):
        raise bad_checkpoint(ck, f"records epoch {e}, but its histories are not epochs 0..{e} of {S} seed(s)")
    if not (isinstance(bests, list) and len(bests) == S and all(
            isinstance(b, dict) and isinstance(b.get("epoch"), int) and -1 <= b["epoch"] <= e and "state" in b
            and (b.get("metric") is None or _finite_number(b["metric"])) for b in bests)):
        raise bad_checkpoint(ck, f"has best-epoch records that are not {S} selection(s) within epochs 0..{e}")
    if not (isinstance(t_all, list) and len(t_all) == e + 1 and all(_finite_number(t) and t >= 0 for t in t_all)):
        raise bad_checkpoint(ck, f"records epoch {e}, but not {e + 1} epoch times")
    where = nonfinite_tensor(st)
    if where is not None:
        raise bad_checkpoint(ck, f"holds NaN or infinite values at {where.lstrip('/')} (resuming would train "
                                 "from broken weights)")


def _check_fits(ck: Path, st: dict[str, Any], method: Method) -> None:
    """The checkpoint's tensors have the shapes and dtypes of ``method``'s models and optimisers
    (its weights, optimiser moments, each seed's best weights, class means)."""
    state = st["state"]
    if not isinstance(state, dict):
        raise bad_checkpoint(ck, f"has a {type(state).__name__} as its state, not the run's weights")
    check_tensors(ck, state.get("modules"), {k: m.state_dict() for k, m in method.modules.items()}, "state/modules")
    opts = state.get("optimizers")
    if not isinstance(opts, list) or len(opts) != len(method.optimizers):
        raise bad_checkpoint(ck, f"does not hold the run's {len(method.optimizers)} optimiser state(s)")
    for i, (o, s) in enumerate(zip(method.optimizers, opts)):
        check_optimizer(ck, s, o, f"state/optimizers[{i}]")
    for s, b in enumerate(st["bests"]):
        check_tensors(ck, b["state"], method.model_state(s), f"bests[{s}]/state")
    if "class_means" in st and hasattr(method, "class_means"):
        check_tensors(ck, {"class_means": st["class_means"]}, {"class_means": method.class_means}, "")


def _check_data(cfg: TrainConfig, datasets: Sequence[Dataset], device: torch.device) -> None:
    for ds in datasets:
        if ds.name != cfg.dataset:
            raise ValueError(f"dataset {ds.name!r} passed for a config on {cfg.dataset!r}")
    if cfg.topk > datasets[0].num_classes:
        raise ValueError(f"topk={cfg.topk} but {cfg.dataset} has {datasets[0].num_classes} classes (top-k would be "
                         f"1.0); use --topk <= {datasets[0].num_classes}")
    if (cfg.method in CFF_METHODS and cfg.cuda_graph and device.type == "cuda"
            and cfg.batch_size > datasets[0].x_train.shape[0]):
        raise ValueError(f"batch_size={cfg.batch_size} exceeds the {datasets[0].x_train.shape[0]} training images, so "
                         f"no batch has the captured step's static shape; use a smaller --batch-size or "
                         f"--cuda-graph false")


def check_memory(cfg: TrainConfig, n_seeds: int, n_train: int, channels: int, device: torch.device,
                 fix: str = "reduce --embed-dim, --layers, --batch-size or the seeds trained together") -> None:
    """Refuse, before the model is built, sizes whose estimated step memory
    (:func:`vit.config.memory_estimate`) exceeds half the RAM (CPU) or the GPU's memory: a
    width of 1e7 asked the allocator for 1.2 PB, 1e6 layers built for minutes first."""
    est = memory_estimate(cfg, n_seeds, n_train, channels)
    need = est["params"] + est["activations"]
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        have, where = total, "the GPU's"
    else:
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
            return
        have, where = total // 2, "half of this machine's"
    if need > have:
        raise UserError(f"a training step needs about {need / 2**30:.3g} GiB (weights, gradients and AdamW "
                        f"moments {est['params'] / 2**30:.3g} GiB, activations {est['activations'] / 2**30:.3g} "
                        f"GiB), more than {where} {total / 2**30:.3g} GiB",
                        fix)


def train_runs(cfgs: Sequence[TrainConfig], out_dirs: Sequence[str | Path] | None = None, *,
               ckpt: str | Path | None = None, progress: bool = True, stop_after_epoch: int | None = None,
               datasets: Sequence[Dataset] | None = None, epochs: Epochs = SEQUENTIAL) -> list[dict[str, Any]]:
    """Train S runs that differ only in their seeds in one pass (S = 1 for baselines) and
    return one JSON-able result per seed (see module doc).

    Args:
        cfgs: the S configs.
        out_dirs: one directory per seed for ``log.jsonl`` and ``result.json`` (None: nothing
            written).  When every seed already has a ``result.json`` with its config, those are
            returned without training.
        ckpt: the checkpoint file of this pass (stacked weights, optimiser states, histories),
            written atomically after every epoch and resumed from when present.
        progress: progress lines on stderr.
        stop_after_epoch: raise :class:`RunInterrupted` right after this epoch is checkpointed.
        datasets: already loaded datasets, one per seed (matching each config's split seed).
        epochs: how an epoch trains and who records (:class:`Epochs`); processes other than the
            lead return ``[None] * S``.
    """
    cfgs = list(cfgs)
    check_seed_batch(cfgs)
    outs = [Path(o) for o in out_dirs] if out_dirs is not None else None
    if outs is not None and len(outs) != len(cfgs):
        raise ValueError(f"need one out_dir per config; got {len(outs)} for {len(cfgs)} configs")
    cfg_dicts = [c.to_dict() for c in cfgs]
    ck = Path(ckpt) if ckpt is not None else None
    kind, resume = epochs.decide(lambda: _start_point(outs, cfg_dicts, ck))
    if kind == "done":
        return resume if epochs.lead else [None] * len(cfgs)
    if not epochs.lead:
        outs = ck = None
    # temp files of a writer killed mid-write (.log.jsonl.<pid>.<random>.tmp, .ckpt.pt...): a
    # resumed run rewrites those files, so the orphans only take space (live writers' are kept)
    for d in {*(outs or ()), *([ck.parent] if ck is not None else [])}:
        clean_stale_tmp(d)
    cfg = cfgs[0]
    if datasets is None:
        datasets = [load_run_dataset(c) for c in cfgs]
    method = prepare_method(cfgs, datasets)
    device = method.device
    S = method.S
    train = epochs.train or (lambda m, e: m.train_epoch(e))

    histories: list[list[dict[str, Any]]] = [[] for _ in range(S)]
    bests: list[dict[str, Any]] = [{"epoch": -1, "metric": None, "state": method.model_state(s)} for s in range(S)]
    start, t_all = 0, []
    if resume is not None:
        _check_fits(Path(ckpt) if ckpt is not None else Path("ckpt.pt"), resume, method)
        method.load_state(resume["state"])
        histories, bests, start, t_all = resume["histories"], resume["bests"], int(resume["epoch"]) + 1, \
            list(resume["t_all"])
        if "class_means" in resume:
            method.class_means = resume["class_means"].to(device)
    if outs is not None:  # each log mirrors the checkpointed history (a killed run may have torn it)
        for o, hist in zip(outs, histories):
            atomic_write_text(o / "log.jsonl", "".join(json.dumps(h) + "\n" for h in hist))

    label = epochs.label + f"{cfg.method}/{cfg.loss_mode} {cfg.dataset} " + (
        f"seed {cfg.seed}" if S == 1 else f"{S} seeds")
    prog = Progress(cfg.epochs, label, enabled=progress and epochs.lead)
    prog.update(start)
    for epoch in range(start, cfg.epochs):
        epochs.barrier()
        sync(device)
        t0 = time.perf_counter()
        recs = _as_list(train(method, epoch))
        sync(device)
        t_train = time.perf_counter() - t0
        t_all.append(t_train)
        if epochs.lead:
            recs = _record_epoch(method, epoch, recs, t_train, t0 + t_train, histories, bests)
            if ck is not None:
                save_checkpoint(ck, _payload(method, cfg_dicts, epoch, histories, bests, t_all))
            if outs is not None:
                for o, r in zip(outs, recs):
                    append_jsonl(o / "log.jsonl", [r])
            r0 = recs[0]
            extra = f"{method.metric_name} {r0['metric']:.4f}"
            if method.epoch_acc_name and "val_acc" in r0:
                extra += f" {method.epoch_acc_name} {r0['val_acc']:.3f}"
            prog.update(epoch + 1, extra)
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch + 1 < cfg.epochs:
            epochs.barrier()
            raise RunInterrupted(f"stopped after epoch {epoch} (stop_after_epoch)")
    epochs.barrier()
    if not epochs.lead:
        return [None] * S
    return _finish_runs(method, cfgs, cfg_dicts, datasets, device, histories, bests, t_all, outs)


def _finish_runs(method: Method, cfgs, cfg_dicts, datasets, device, histories, bests, t_all,
                 outs) -> list[dict[str, Any]]:
    """Select each seed's best epoch, run stage 2 and write each ``result.json``."""
    S = method.S
    sel = []
    for s in range(S):
        if bests[s]["epoch"] < 0:   # every epoch non-selectable (non-finite metric): keep the last weights
            bests[s]["epoch"] = len(histories[s]) - 1
            sel.append(histories[s][-1])
        else:
            method.load_model_state(bests[s]["state"], s)
            sel.append(histories[s][bests[s]["epoch"]])
    t_fin = time.perf_counter()
    fins = _as_list(method.finish())
    t_fin = (time.perf_counter() - t_fin) / S
    results = []
    for s, (c, fin) in enumerate(zip(cfgs, fins)):
        times = [h["time_s"] for h in histories[s]]
        res = {
            "config": cfg_dicts[s],
            "seeds": c.resolved_seeds(),
            "protocol": c.protocol,
            "precision": c.precision,
            "departures": departures(c),
            "device": device_name(device),
            "dataset": datasets[s].summary(),
            "input_normalisation": {k: (list(v) if k != "source" else v)
                                    for k, v in method.datas[s].normalisation.items()},
            "val_acc": fin.pop("val_acc"),
            "test_acc": fin.pop("test_acc"),
            "topk": c.topk,
            "best_epoch": bests[s]["epoch"],
            "per_layer": sel[s]["layers"],
            "epoch_time_s": sum(times) / len(times),
            "stage1_time_s": sum(times),
            "finish_time_s": t_fin,
            **fin,
            "history": histories[s],
            "torch": torch.__version__,
            # the layout is part of what was run: one seed stacked with others and alone differ in
            # floating point (vit.layout_floor), so a comparison checks its runs share one layout
            "seed_batch": {"n_seeds": S, "position": s, "epoch_time_s_all_seeds": sum(t_all) / max(len(t_all), 1)},
        }
        if outs is not None:
            atomic_write_json(outs[s] / "result.json", res)
        results.append(res)
    return results


def train_run(cfg: TrainConfig, out_dir: str | Path | None = None, *, progress: bool = True,
              stop_after_epoch: int | None = None, dataset: Dataset | None = None,
              epochs: Epochs = SEQUENTIAL) -> dict[str, Any] | None:
    """Train one run (S = 1 of :func:`train_runs`) and return its JSON-able result.

    Args:
        cfg: the run configuration.
        out_dir: where ``log.jsonl``, ``ckpt.pt``, ``result.json`` go (None: nothing written).
            An existing ``result.json`` with the same config is returned without training; a
            checkpoint with the same config is resumed.
        progress: progress lines on stderr.
        stop_after_epoch: raise :class:`RunInterrupted` right after this epoch is checkpointed.
        dataset: an already loaded :class:`Dataset` (must match ``cfg``'s dataset/subset/split).
        epochs: how an epoch trains and who records (:class:`Epochs`; None is returned off the lead).
    """
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    out = Path(out_dir) if out_dir is not None else None
    return train_runs([cfg], [out] if out is not None else None, ckpt=out / "ckpt.pt" if out is not None else None,
                      progress=progress, stop_after_epoch=stop_after_epoch,
                      datasets=[dataset] if dataset is not None else None, epochs=epochs)[0]
