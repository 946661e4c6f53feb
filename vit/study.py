"""Multi-seed factorial variance study (Steier 2026 design): one command, resumable, on one
machine or a cluster.

Python API (the paper build calls this)::

    from vit.study import QUICK, FULL, StudyConfig, run_study
    res = run_study(QUICK, "results/vit/study_quick")     # -> dict, also study.json + study.png
    print(res["table"])

The config, presets, seeds and run names are :mod:`vit.study_config` (re-exported here); the
study is a list of tasks, one per seed in every cell (:mod:`vit.study_tasks`); this module
runs them in this process (:func:`run_study`) and assembles ``study.json`` from whatever has
finished (:func:`collect_study`), which is also how a study run by local subprocesses or a
Slurm job array (:mod:`vit.study_exec`) is put together.

Presets (:data:`PRESETS`; each prints its projected wall time before starting)
-------------------------------------------------------------------------------
``quick``          CPU: loss_mode {clamp, subtract} x method {cff2, cff1} x ``QUICK.n_seeds``
                   seeds on a FIXED Fashion-MNIST subset (``seed_subset=0``: the same 6,000
                   images for every seed, so seed variance is split, init, order and
                   augmentation, no data-subset variance), sized to finish in about 10 minutes
                   on 2 idle cores with encoders that beat the raw-pixel linear probe (see
                   :data:`QUICK`).  Too few seeds to detect a variance effect: it exercises the
                   pipeline end to end and feeds the paper's CPU build.
``fmnist-full``    all 60,000 Fashion-MNIST training images (54,000 train + 6,000 validation),
                   ViT[128 4 5], patch 4, the 2x2 with 7 seeds per cell, the reference
                   hyper-parameters, on one GPU with the seed-batched engine; epochs chosen for
                   about 10 minutes on one H100 (an ESTIMATE, see :func:`wall_model`).
``cifar10-steier`` Steier's design: CIFAR-10 (``--data-root``), ViT[128 4 5], patch 4, 600 + 50
                   epochs, 2x2 x 7 seeds per cell.
``full``           the same on CIFAR-10 with 12 seeds per cell (80% power for the within-cell
                   F-test at Steier's 5.9x).

Seeds
-----
Matched (default): every cell runs seeds ``seed0 .. seed0 + n_seeds - 1``, so the runs of one
seed share split, initialisation, data order and augmentation across cells and the paired
analysis of :mod:`vit.stats` applies.  ``independent_seeds=True``: no seed is shared and the
independent-sample tests are the right ones.  A study recorded one way is never resumed the
other way.

Raw-pixel probe
---------------
For every seed the study also trains the CFF head on raw pixels (:mod:`vit.probe`: same head,
same protocol, same images); the table reports its test accuracy beside each cell's.

Files under ``out_dir``
-----------------------
``runs/``       one :func:`vit.train.train_run` directory per run (``result.json``, ``ckpt.pt``,
                ``log.jsonl``) and one probe record per seed (:mod:`vit.study_config`).
``tasks/``      the plan, one claim and one record per task (:mod:`vit.study_tasks`).
``study.json``  schema (:data:`STUDY_SCHEMA`), config, design, per-run records, statistics
                (:func:`vit.factorial.factorial_analysis`), the printed table, the tasks and timing.
                :func:`run_study` rewrites it atomically after every run (``status: running``);
                :func:`collect_study` writes ``status: complete`` only when every task is
                complete, else ``status: incomplete`` with the missing tasks (by id, with their
                state and log) and statistics over the finished seeds only (whole matched
                pairs).  A complete ``study.json`` of the same schema whose config equals the
                requested one is returned without touching anything.
``study.png``   per-seed metric by cell (mean ± SD), and the layer-0 clamp activation rate
                (:func:`fig_study`, the paper's figure too, drawn at its printed size).

Batched mode (``batched=True``, methods cff2/cff1): the seeds of a task without a
``result.json`` are trained per cell in one pass with a leading seed dimension
(:func:`vit.train.train_runs`; same algorithm, float rounding aside), writing the same per-run
``result.json`` files, so the analysis is unchanged and either mode reuses the other's runs.

Resuming: a killed study is simply run again.  Finished runs are read back from their
``result.json`` (not retrained); an interrupted run resumes from its last epoch checkpoint.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cffdyn.errors import UserError
from cffdyn.figures import TEXT_WIDTH_IN, figure, save_figure, styled
from cffdyn.io import Progress, atomic_write_json, read_json
from cffdyn.recorded import RECORDED_ROOT, load_record, record_dir
from cffdyn.records import record_header, reusable_record
from vit import factorial
from vit.data import image_side
from vit.study_config import (CIFAR10_STEIER, FMNIST_FULL, FULL, METRICS, PRESETS, QUICK, SEED_FIELDS, STUDY_NAME,
                              StudyConfig, cell_runs, planned_runs, run_dir)
from vit.study_tasks import (DatasetCache, check_not_running, read_failure, read_plan, read_probe, read_result,
                             run_finished, run_task, task_state, write_plan)
from vit.config import TrainConfig

__all__ = ["StudyConfig", "QUICK", "FULL", "FMNIST_FULL", "CIFAR10_STEIER", "PRESETS", "run_study", "collect_study",
           "cell_runs", "run_dir", "projected_wall_s", "describe_projection", "STUDY_NAME", "STUDY_SCHEMA",
           "SEED_FIELDS", "METRICS", "wall_model", "WALL_MODEL_DIR", "fig_study", "fig_layers", "run_results",
           "analyse_runs"]

#: version of the layout of study.json (a complete record of another schema is re-assembled)
STUDY_SCHEMA = 1


# ----------------------------------------------------------------------------- wall-time estimate
_POOL = {"fashion_mnist": 60000, "cifar10": 50000, "cifar100": 50000, "svhn": 73257, "digits": 1438}


def _cost_per_image(cfg: TrainConfig, device: str) -> float:
    """Forward multiply-adds per training image (all layers and views; MLP ratio 2) — the
    scaling of the wall-time model between configurations.  On CUDA a step is launch-bound (one
    cff1 step took as long as a cff2 step on the H100 of the recorded :func:`wall_model`), so
    views do not scale there."""
    side = image_side(cfg.dataset, cfg.image_size)
    t = max(1, (side // cfg.patch) ** 2)
    e, chans = cfg.embed_dim, (3 if cfg.dataset in ("cifar10", "cifar100", "svhn") else 1)
    views = 1 if cfg.method == "cff1" else 2
    per_view = cfg.layers * t * (8 * e * e + 2 * t * e) + t * cfg.patch ** 2 * chans * e
    return per_view * (2 if device == "cuda" else views)


def _n_train(cfg: TrainConfig) -> int:
    pool = cfg.subset if cfg.subset is not None else _POOL.get(cfg.dataset, 50000)
    return int(round(pool * 0.9))


def _device_of(cfg: StudyConfig) -> str:
    d = cfg.base.device
    if d == "auto":
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"
    return d


#: the recorded wall-time measurements (:func:`wall_model`)
WALL_MODEL_DIR = record_dir("vit", "wall_model")
WALL_MODEL_KIND = "vit.wall_model"
_WALL_FIELDS = ("wall_s", "images", "epochs", "seeds", "cell_equivalents")


@functools.lru_cache(maxsize=None)
def wall_model(directory: str | Path | None = None) -> dict[str, Any] | None:
    """The wall-time model from its record (``recorded/vit/wall_model``, the default): the
    ``eval_overhead`` (evaluation, heads and probe as a share of the training time) and, per
    device, ``s_per_image_epoch_seed`` (seconds per training image x epoch x seed of the
    ``reference`` TrainConfig it was measured on, two views), ``source`` and ``where``.  The
    per-image figure is computed here from the recorded raw quantities (the record's
    ``formula``).  None when the package has no ``recorded/`` folder (an install outside the
    repository: no measured figure); UserError in one line naming the file when the record is
    missing, edited or malformed."""
    d = Path(directory) if directory is not None else WALL_MODEL_DIR
    if directory is None and not RECORDED_ROOT.is_dir():
        return None
    path = d / "record.json"
    restore = "restore it with git checkout (the figures are measurements; no command remakes them)"
    if not path.is_file():
        raise UserError(f"no wall-time record at {path}", restore)
    rec = load_record(d, kind=WALL_MODEL_KIND, rerun="measure the wall times again and record them with "
                                                     "cffdyn.recorded.write_record")
    try:
        pay, refs = rec["payload"], rec["config"]
        overhead = float(pay["eval_overhead"])
        devices = {}
        for dev, m in pay["devices"].items():
            bad = [k for k in _WALL_FIELDS if isinstance(m[k], bool) or not isinstance(m[k], (int, float)) or m[k] <= 0]
            if bad:
                raise ValueError(f"device {dev!r}: {', '.join(bad)} not a positive number")
            # the record's formula, in its float expression order
            eval_factor = (1.0 + overhead) if m["includes_eval"] else 1
            s_per = m["wall_s"] / (eval_factor * m["images"] * m["epochs"] * m["seeds"] * m["cell_equivalents"])
            devices[dev] = {"s_per_image_epoch_seed": s_per, "source": str(m["source"]), "where": str(m["where"]),
                            "reference": TrainConfig.from_dict(refs[dev])}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path} is not a wall-time model record ({type(e).__name__}: {e})", restore) from None
    return {"eval_overhead": overhead, "devices": devices}


def projected_wall_s(cfg: StudyConfig, device: str | None = None) -> float | None:
    """Projected wall time of the whole study from the recorded :func:`wall_model` (None: no
    measured figure for the device).  An estimate: the per-image cost measured once, scaled by
    :func:`_cost_per_image`."""
    dev = device or _device_of(cfg)
    model = wall_model()
    m = model["devices"].get(dev) if model is not None else None
    if not m or not m["s_per_image_epoch_seed"]:
        return None
    ref = _cost_per_image(m["reference"], dev)
    tot = 0.0
    for cell in cfg.cells():
        rc = cfg.run_config(cell, cfg.seed0)
        tot += _n_train(rc) * rc.epochs * cfg.n_seeds * m["s_per_image_epoch_seed"] * _cost_per_image(rc, dev) / ref
    return tot * (1.0 + model["eval_overhead"])


def describe_projection(cfg: StudyConfig, device: str | None = None) -> str:
    dev = device or _device_of(cfg)
    w = projected_wall_s(cfg, dev)
    if w is None:
        return f"projected wall time: no measured figure for device {dev!r}"
    txt = f"{w:.0f} s" if w < 120 else f"{w / 60:.0f} min" if w < 2 * 3600 else f"{w / 3600:.1f} h"
    m = wall_model()["devices"][dev]
    return (f"projected wall time {txt} on {m['where']}"
            f" -- an estimate from {m['source']}, scaled by model size; not a measurement")



# ----------------------------------------------------------------------------- records and analysis
def _record(cfg: StudyConfig, cell: tuple[Any, ...], seed: int, res: Mapping[str, Any], path: Path,
            trained: bool, wall: float) -> dict[str, Any]:
    layers = res.get("per_layer") or []
    return {"cell": dict(zip(cfg.factor_names, cell)), "seed": seed, "metric": float(res[cfg.metric]),
            "test_acc": res.get("test_acc"), "val_acc": res.get("val_acc"), "best_epoch": res.get("best_epoch"),
            "car_layer0": layers[0].get("car") if layers else None,
            "grad_norm_layer0": layers[0].get("grad_norm") if layers else None,
            "epoch_time_s": res.get("epoch_time_s"), "seeds": res.get("seeds"), "device": res.get("device"),
            "protocol": res.get("protocol"), "departures": res.get("departures"),
            "run_dir": str(path), "trained_now": trained, "wall_s": wall}


def _cell_label(levels: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in levels.items())


def analyse_runs(cfg: StudyConfig, records: list[dict[str, Any]],
                 probe: Mapping[str, Any] | None = None) -> tuple[dict[str, Any] | None, str]:
    """The study's statistics and printed table from its run records (``study.json`` ``runs``)
    and the probe summary: :func:`vit.factorial.factorial_analysis` over each cell's metric, paired on
    the seeds unless the seeds are independent, each cell given its mean layer-0 clamp
    activation rate and, where probes are recorded, the probe's mean test accuracy and the mean
    CFF-minus-probe difference over matched seeds.  ``(None, "(no finished runs yet)")`` when no
    record belongs to any cell."""
    data: dict[tuple, list[float]] = {}
    seeds: dict[tuple, list[int]] = {}
    for cell in cfg.cells():
        cd = dict(zip(cfg.factor_names, cell))
        rs = [r for r in records if r["cell"] == cd]
        if rs:
            data[tuple(cell)] = [r["metric"] for r in rs]
            seeds[tuple(cell)] = [int(r["seed"]) for r in rs]
    if not data:
        return None, "(no finished runs yet)"
    an = factorial.factorial_analysis(cfg.factor_names, data, seeds=seeds, matched=not cfg.independent_seeds,
                                      metric=cfg.metric, alpha=cfg.alpha, n_boot=cfg.n_boot, n_perm=cfg.n_perm,
                                      seed=cfg.stats_seed, assumed_ratio=cfg.assumed_ratio,
                                      assumed_corr=cfg.assumed_corr, target_power=cfg.target_power)
    car_col: dict[str, str] = {}
    probe_col: dict[str, str] = {}
    pmap = {int(p["seed"]): p["test_acc"] for p in (probe or {}).get("runs", [])}
    for c in an["cells"]:
        v = [r["car_layer0"] for r in records if r["cell"] == c["levels"] and r["car_layer0"] is not None]
        c["car_layer0_mean"] = sum(v) / len(v) if v else None
        name = _cell_label(c["levels"])
        car_col[name] = f"{100 * c['car_layer0_mean']:.1f}" if v else "n/a"
        pv = [pmap[sd] for sd in c.get("seeds", []) if sd in pmap]
        if pv:
            diffs = [x - pmap[sd] for x, sd in zip(c["values"], c["seeds"]) if sd in pmap]
            c["probe_test_acc_mean"] = sum(pv) / len(pv)
            c["minus_probe_mean"] = sum(diffs) / len(diffs)
            probe_col[name] = f"{100 * c['probe_test_acc_mean']:.2f}"
    cols = {"layer-0 CAR %": car_col}
    if probe_col:
        cols["raw-pixel probe %"] = probe_col
    table = factorial.format_table(an, extra_cols=cols)
    if probe and probe.get("runs"):
        pr = probe
        sd = f" +- {100 * pr['test_acc_sd']:.2f}" if pr.get("test_acc_sd") is not None else ""
        beat = [c for c in an["cells"] if c.get("minus_probe_mean") is not None]
        verdict = ", ".join(f"{_cell_label(c['levels'])} {100 * c['minus_probe_mean']:+.2f}" for c in beat)
        table += (f"\n\nraw-pixel linear probe (the CFF head on raw pixels; same head, protocol and images): test "
                  f"{100 * pr['test_acc_mean']:.2f}%{sd} over {len(pr['runs'])} seeds"
                  f"\nCFF minus probe, mean over matched seeds (points): {verdict}")
    table += "\nlayer-0 CAR: clamp activation rate of layer 0 on training batches at the selected epoch, cell mean"
    return an, table




@styled
def fig_study(result: Mapping[str, Any], *, width_in: float = TEXT_WIDTH_IN, height_in: float = 2.7):
    """The study's figure from its ``study.json`` dict: per cell, the per-seed metric and layer-0
    clamp activation rate (points) with the cell mean ± SD, and the raw-pixel probe's test
    accuracy (dashed) when the metric is test accuracy."""
    from vit.plot import title

    c = result["config"]       # read as recorded (not StudyConfig.from_dict): an older record still draws
    metric = c.get("metric", "test_acc")
    names = [f for f, _ in c["factors"]]
    cells: list[dict[str, Any]] = [{}]
    for f, levels in c["factors"]:      # first factor slowest, as StudyConfig.cells()
        cells = [{**cd, f: lv} for cd in cells for lv in levels]
    fig, axes = figure(width_in, height_in, ncols=2)
    ticks = []
    for i, cd in enumerate(cells):
        runs = [r for r in result["runs"] if r["cell"] == cd]
        acc = [100 * r["metric"] for r in runs if r.get("metric") is not None]
        car = [100 * r["car_layer0"] for r in runs if r.get("car_layer0") is not None]
        ticks.append(f"{', '.join(str(v) for v in cd.values())}\n(n = {len(acc)})")
        for ax, v in ((axes[0], acc), (axes[1], car)):
            if not v:
                continue
            ax.plot([i] * len(v), v, "o", color=f"C{i}", alpha=0.7)
            sd = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
            ax.errorbar([i + 0.2], [np.mean(v)], yerr=[sd], fmt="s", color="k", capsize=3,
                        label="cell mean ± SD" if i == 0 else None)
    probe = result.get("probe") or {}
    if metric == "test_acc" and probe.get("test_acc_mean") is not None:
        axes[0].axhline(100 * probe["test_acc_mean"], color="0.4", ls="--", lw=1, label="raw-pixel linear probe")
    for ax, yl in ((axes[0], f"{title(metric)} (%)"), (axes[1], "layer-0 clamp activation rate (%)")):
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels(ticks)
        ax.set_xlim(-0.5, len(cells) - 0.3)
        ax.set_xlabel(f"cell ({', '.join(f.replace('_', ' ') for f in names)}; n seeds)")
        ax.set_ylabel(yl)
        ax.legend(loc="best")
    b = c["base"]
    fig.suptitle(f"{title(b['dataset'])}, ViT[{b['embed_dim']} {b['heads']} {b['layers']}], {b['epochs']} epochs; "
                 f"{c['n_seeds']} seeds per cell")
    return fig


def run_results(data: Mapping[str, Any], study_json: Path) -> list[tuple[dict, dict]]:
    """``(run record, run result.json)`` for every run whose result file can be found."""
    out = []
    for r in data["runs"]:
        # the study's own runs/ (under --results) first; a recorded relative run_dir is relative to
        # the study's working directory, so it is never looked up in the current one
        rd = Path(r["run_dir"])
        cands = [study_json.parent / "runs" / rd.name] + ([rd] if rd.is_absolute() else [])
        for c in cands:
            if (c / "result.json").is_file():
                out.append((r, read_json(c / "result.json")))
                break
    return out


@styled
def fig_layers(d: Mapping[str, Any], study_json: Path):
    """Per layer, the clamp activation rate and the gradient norm at the selected epoch (training
    batches), mean ± SD over each cell's seeds, from the runs' ``result.json`` files; None when no
    run's file is found.  Drawn at its printed size (the text width)."""
    runs = run_results(d, study_json)
    if not runs:
        return None
    fig, axes = figure(TEXT_WIDTH_IN, 2.7, ncols=2)
    for i, c in enumerate(d["analysis"]["cells"]):
        per = [res["per_layer"] for r, res in runs if r["cell"] == c["levels"] and res.get("per_layer")]
        if not per:
            continue
        label = ", ".join(f"{v}" for v in c["levels"].values())
        L = min(len(p) for p in per)
        for ax, key, sc in ((axes[0], "car", 100.0), (axes[1], "grad_norm", 1.0)):
            v = np.array([[sc * (p[l].get(key) if p[l].get(key) is not None else np.nan) for l in range(L)] for p in per])
            m = np.nanmean(v, axis=0)
            sd = np.nanstd(v, axis=0, ddof=1) if len(per) > 1 else np.zeros(L)
            ax.errorbar(np.arange(L) + 0.05 * i, m, yerr=sd, marker="o", capsize=3, color=f"C{i}",
                        label=f"{label} (n = {len(per)})")
    axes[0].set_ylabel("clamp activation rate (%)")
    axes[1].set_ylabel("gradient norm of the layer (a.u.)")
    from matplotlib.ticker import MaxNLocator
    for ax in axes:
        ax.set_xlabel("layer (0 = patch embedding + first block)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # layers are integers: no 0.5 ticks
        ax.legend(loc="best")
    fig.suptitle("per layer at the selected epoch (training batches), mean ± SD over seeds")
    return fig


def _check_design_matches(cfg: StudyConfig, path: Path) -> dict[str, Any] | None:
    """The recorded ``study.json`` (None if none); refuses to resume one of the other seed
    design (matched vs independent), which would mix designs in one analysis."""
    if not path.is_file():
        return None
    prev = read_json(path, expect=dict)      # not JSON, a list, or edited: CorruptFileError names the path
    pc = prev.get("config")
    was = bool(pc.get("independent_seeds", False)) if isinstance(pc, dict) else False
    if was != cfg.independent_seeds:
        rec = "independent seeds per cell" if was else "matched seeds (the same seeds in every cell)"
        raise UserError(f"{path} records a study with {rec}; "
                        f"{'--independent-seeds' if cfg.independent_seeds else 'matched seeds'} would mix two designs",
                        "give another --out (nothing recorded was changed)")
    return prev




def _probe_summary(cfg: StudyConfig, out: Path, seeds: Sequence[int]) -> dict[str, Any] | None:
    """The recorded raw-pixel probes of ``seeds`` (in :meth:`StudyConfig.all_seeds` order)."""
    if not cfg.probe:
        return None
    want = set(seeds)
    runs = [r for r in (read_probe(cfg, out, sd) for sd in cfg.all_seeds() if sd in want) if r is not None]
    if not runs:
        return None
    acc = [r["test_acc"] for r in runs]
    m = sum(acc) / len(acc)
    sd = (sum((a - m) ** 2 for a in acc) / (len(acc) - 1)) ** 0.5 if len(acc) > 1 else None
    return {"runs": runs, "test_acc_mean": m, "test_acc_sd": sd, "protocol": runs[0]["protocol"] if runs else None}


def _design(cfg: StudyConfig) -> dict[str, Any]:
    return {"factors": cfg.factor_names, "levels": {f: list(lv) for f, lv in cfg.factors},
            "cells": [dict(zip(cfg.factor_names, c)) for c in cfg.cells()],
            "seeds": {_cell_label(dict(zip(cfg.factor_names, c))): cfg.seeds(c) for c in cfg.cells()},
            "seed_design": "independent" if cfg.independent_seeds else "matched",
            "seed_changes": ("batch order and augmentation (init and split fixed)" if cfg.seed_design == "sgd"
                             else "initialisation, split, batch order and augmentation"),
            "n_runs": len(cell_runs(cfg))}


def run_study(cfg: StudyConfig, out_dir: str | Path, *, progress: bool = True, run_progress: bool = False,
              seeds_per_task: int | None = None) -> dict[str, Any]:
    """Run (or resume, or reuse) the study in this process, task after task; write
    ``study.json`` and ``study.png``; return the result dict (keys: schema, config, design,
    status, runs, probe, analysis, table, tasks, timing)."""
    if not isinstance(cfg, StudyConfig):
        raise ValueError(f"cfg must be a StudyConfig, got {type(cfg).__name__}")
    out = Path(out_dir)
    path = out / f"{STUDY_NAME}.json"
    cfg_dict = json.loads(json.dumps(cfg.to_dict()))
    _check_design_matches(cfg, path)
    # a damaged study.json is refused (it may be the only record of a cluster study's statistics);
    # one without a hash is assembled again from the runs' own records, which trains nothing
    prev = reusable_record(path, cfg_dict, schema=STUDY_SCHEMA, when=lambda r: r.get("status") == "complete",
                           damaged="refuse", unhashed="and is assembled again from the runs' records")
    if prev is not None:
        return prev
    check_not_running(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = planned_runs(cfg, out)
    design = _design(cfg)
    unfinished = [r for r in plan if not run_finished(r.config, r.dir)]
    if progress:
        import sys
        print(f"[study] {len(plan)} runs planned ({len(cfg.cells())} cells x {cfg.n_seeds} seeds, "
              f"{design['seed_design']} seeds), {len(plan) - len(unfinished)} recorded, {len(unfinished)} to train; "
              f"{describe_projection(cfg)}; results: {path}", file=sys.stderr, flush=True)
    data = DatasetCache()
    if unfinished:
        data(unfinished[0].config)   # a missing dataset fails here
    tasks, plan_hash = write_plan(out, cfg, seeds_per_task)
    records: list[dict[str, Any]] = []
    failed: list[tuple] = []
    prog = Progress(len(plan), f"study {'x'.join(str(len(lv)) for _, lv in cfg.factors)} x {cfg.n_seeds} seeds",
                    enabled=progress, min_interval=0.0)

    def on_run(cell, seed, res, rd, trained, wall):
        if res is None:     # diverged: recorded as failed (failed.json), left out of the statistics
            failed.append((cell, seed))
            prog.update(len(records) + len(failed), f"{_cell_label(dict(zip(cfg.factor_names, cell)))}, seed {seed}: "
                                                     f"FAILED (diverged; {rd / 'failed.json'})")
            return
        rec = _record(cfg, tuple(cell), seed, res, rd, trained, wall)
        records.append(rec)
        atomic_write_json(path, {**record_header(STUDY_SCHEMA, cfg_dict), "design": design, "status": "running",
                                 "runs": records, "analysis": None, "table": ""})
        prog.update(len(records) + len(failed), f"{_cell_label(rec['cell'])}, seed {seed}: {cfg.metric} "
                                  f"{100 * rec['metric']:.2f}%" + ("" if trained else " (recorded)"))

    for task in tasks:
        run_task(cfg, out, task, plan_hash=plan_hash, run_progress=run_progress, on_run=on_run, data=data)
    return collect_study(out, cfg)


def collect_study(out_dir: str | Path, cfg: StudyConfig | None = None) -> dict[str, Any]:
    """Assemble ``study.json`` (and ``study.png``) from the tasks recorded under ``out_dir``
    (the config is the plan's; ``cfg``, if given, must equal it).  ``status`` is ``complete``
    only when every task is; otherwise ``incomplete``, with ``tasks.missing`` naming each
    unfinished task (id, seeds, state, error, log) and the statistics over the complete tasks
    (whole seeds in every cell) when each cell has at least 2 of them.  Runs that diverged are
    listed in ``failed_runs`` (cell, seed, reason, run_dir), counted in ``n_failed`` and left
    out of the statistics (the paired comparisons align on the seeds finished in every cell of
    a comparison).  Trains nothing."""
    out = Path(out_dir)
    pcfg, tasks, plan_hash = read_plan(out)
    if cfg is not None and json.loads(json.dumps(cfg.to_dict())) != json.loads(json.dumps(pcfg.to_dict())):
        raise UserError(f"{out} holds the plan of another study config", "give its own --out, or collect it as is")
    cfg = pcfg
    path = out / f"{STUDY_NAME}.json"
    _check_design_matches(cfg, path)
    states = [task_state(cfg, out, t) for t in tasks]
    records: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    task_recs = []
    for t, s in zip(tasks, states):
        if s["state"] != "complete":
            continue
        task_recs.append(s["record"])
        meta = {(json.dumps(r["cell"], sort_keys=True), r["seed"]): r for r in s["record"]["runs"]}
        for r in t.planned(cfg, out):
            cell, seed, rc, rd = r.cell, r.seed, r.config, r.dir
            m = meta.get((json.dumps(dict(zip(cfg.factor_names, cell)), sort_keys=True), seed), {})
            res = read_result(rc, rd)
            if res is None:      # a complete task's run without a result has a recorded divergence
                fail = read_failure(rc, rd) or {"reason": "no result.json and no failed.json"}
                failures.append({"cell": dict(zip(cfg.factor_names, cell)), "seed": seed, "reason": fail["reason"],
                                 "run_dir": str(rd)})
                continue
            records.append(_record(cfg, tuple(cell), seed, res, rd, bool(m.get("trained_now")),
                                   float(m.get("wall_s") or 0.0)))
    complete = all(s["state"] == "complete" for s in states)
    done_seeds = sorted({sd for t, s in zip(tasks, states) if s["state"] == "complete" for sd in t.seeds})
    probe = _probe_summary(cfg, out, done_seeds)
    counts = [sum(r["cell"] == dict(zip(cfg.factor_names, c)) for r in records) for c in cfg.cells()]
    if min(counts) >= 2:
        analysis, table = analyse_runs(cfg, records, probe)
    else:
        analysis, table = None, f"(too few finished seeds for statistics: {min(counts)} per cell)"
    if analysis is not None:
        analysis["n_failed"] = len(failures)
        for c in analysis["cells"]:
            c["n_failed"] = sum(f["cell"] == c["levels"] for f in failures)
    if failures:
        listed = "; ".join(f"{_cell_label(f['cell'])}, seed {f['seed']}: {f['reason']}" for f in failures[:3])
        more = f"; and {len(failures) - 3} more (study.json failed_runs)" if len(failures) > 3 else ""
        table = (f"FAILED: {len(failures)} of {len(records) + len(failures)} runs diverged and are left out of the "
                 f"statistics (paired comparisons use the seeds finished in every cell they compare; delete a "
                 f"run's failed.json to train it again): {listed}{more}\n" + table)
    missing = [{k: v for k, v in s.items() if k != "record"} for s in states if s["state"] != "complete"]
    if missing:
        table = (f"INCOMPLETE: {len(missing)} of {len(tasks)} tasks not finished (seeds "
                 f"{', '.join(str(sd) for s in missing for sd in s['seeds'])}); statistics over the "
                 f"{len(done_seeds)} finished seed(s) only\n" + table)
    result = {**record_header(STUDY_SCHEMA, json.loads(json.dumps(cfg.to_dict()))), "design": _design(cfg),
              "status": "complete" if complete else "incomplete", "runs": records, "failed_runs": failures,
              "n_failed": len(failures), "probe": probe,
              "analysis": analysis, "table": table,
              "tasks": {"n": len(tasks), "plan": plan_hash, "complete": [s["task"] for s in states
                                                                          if s["state"] == "complete"],
                        "missing": missing},
              "timing": _timing(cfg, records, task_recs)}
    if records:
        save_figure(fig_study(result), out, STUDY_NAME, formats=("png",), dpi=110)
    atomic_write_json(path, result)
    return read_json(path)   # exactly what a later call reuses (NaN statistics become null)


def _timing(cfg: StudyConfig, records: list[dict[str, Any]], task_recs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Wall (first task start to last task end), CPU seconds of the tasks, and the machine."""
    if not task_recs:
        return None
    from cffdyn.machine import machine_info
    trained = [r for r in records if r["trained_now"]]
    return {"wall_s": max(t["t_end"] for t in task_recs) - min(t["t_start"] for t in task_recs),
            "cpu_s": sum(t["cpu_s"] for t in task_recs), "torch_threads": task_recs[0].get("torch_threads"),
            "n_tasks": len(task_recs), "n_trained_now": len(trained), "n_reused": len(records) - len(trained),
            "probe_s": sum(t.get("probe_s") or 0.0 for t in task_recs),
            "mean_run_wall_s": (sum(r["wall_s"] for r in trained) / len(trained)) if trained else None,
            "mean_epoch_time_s": sum(r["epoch_time_s"] or 0.0 for r in records) / len(records) if records else None,
            "projected_wall_s": projected_wall_s(cfg), "load_avg_start": task_recs[0].get("load_avg_start"),
            "hosts": sorted({(t.get("owner") or {}).get("host") for t in task_recs} - {None}),
            "machine": machine_info(records[0].get("device") if records else None)}
