"""Multi-seed factorial variance study (Steier 2026 design): one command, resumable.

Python API (the paper build calls this)::

    from vit.study import QUICK, FULL, StudyConfig, run_study
    res = run_study(QUICK, "results/vit/study_quick")     # -> dict, also study.json + study.png
    print(res["table"])

A :class:`StudyConfig` names a base :class:`vit.train.TrainConfig`, the factors (each a
``TrainConfig`` field with its levels, e.g. ``loss_mode = clamp, subtract`` x
``method = cff2, cff1``) and the number of seeds per cell.  Every cell runs the same seeds
``seed0 .. seed0 + n_seeds - 1`` (common random numbers across cells); ``TrainConfig.seed``
derives the initialisation, split, data-order and augmentation seeds, and fixing any of them in
the base config (``seed_init=0`` etc.) removes that source of variance, which is how the
variance is attributed to its sources.

Presets
-------
``QUICK``  CPU: loss_mode {clamp, subtract} x method {cff2, cff1} x 3 seeds on the base
           ``vit.train.QUICK`` (ViT[64 4 4], patch 7, a 3000-image Fashion-MNIST pool; a few
           minutes on 2 idle cores, much longer on a loaded machine; ``study.json`` records
           the wall time).  Three seeds per cell estimate a variance
           poorly (the F-test has about 33% power even at a 5.9x ratio); the preset exists to
           exercise the pipeline end to end and for the paper's CPU build.
``FULL``   the same factorial with 12 seeds per cell on the CFF CIFAR-10 protocol
           (``vit.train.FULL_CIFAR10``; needs ``data_root`` and a GPU).  12 seeds per cell give
           80% power for a single-cell F-test at Steier's 5.9x (7 seeds: about 50%; see
           :mod:`vit.stats`).

Files under ``out_dir``
-----------------------
``runs/<cell>__seed<k>__<hash>/``  one :func:`vit.train.train_run` directory per run
           (``result.json``, ``ckpt.pt``, ``log.jsonl``); ``<hash>`` is a digest of the run's
           full ``TrainConfig``, so a changed base config never collides with old runs and an
           extended study (more seeds, another level) reuses every run it already has.
``study.json``  config, design, per-run records, statistics (:func:`vit.stats.factorial_analysis`),
           the printed table; rewritten atomically after every run (``status: running``) and at
           the end (``status: complete``).  A complete ``study.json`` whose config equals the
           requested one is returned without touching anything.
``study.png``   per-seed metric by cell (mean ± SD), and the layer-0 clamp activation rate.

Batched mode (``batched=True``, methods cff2/cff1): the seeds of a cell that have no
``result.json`` yet are trained in one pass with a leading seed dimension
(:func:`vit.train.train_runs`; same algorithm, float rounding aside), writing the same
per-run ``result.json`` files (tagged ``"batched"``), so the analysis is unchanged and either
mode reuses the other's runs.

Resuming: a killed study is simply run again.  Finished runs are read back from their
``result.json`` (not retrained); an interrupted run resumes from its last epoch checkpoint.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from cffdyn.io import Progress, atomic_write_json, read_json
from vit import stats
from vit import train as _train
from vit.train import TrainConfig, train_run

__all__ = ["StudyConfig", "QUICK", "FULL", "run_study", "cell_runs", "parse_field_value",
           "STUDY_NAME", "SEED_FIELDS"]

STUDY_NAME = "study"
#: TrainConfig fields that a factor may not vary (the study owns the seed axis).
SEED_FIELDS = ("seed",)
METRICS = ("test_acc", "val_acc", "test_topk_acc", "val_topk_acc")


def _train_fields() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


def parse_field_value(name: str, text: str) -> Any:
    """Parse the command-line text of a ``TrainConfig`` field to the field's type.

    ``none``/``None`` gives None for optional fields; bools accept true/false/1/0/yes/no."""
    fields = _train_fields()
    if name not in fields:
        raise ValueError(f"unknown TrainConfig field {name!r}; choose from {', '.join(fields)}")
    tp = fields[name]
    args = typing.get_args(tp)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), tp) if args else tp
    t = text.strip()
    if optional and t.lower() == "none":
        return None
    try:
        if base is bool:
            low = t.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(t)
        if base is int:
            return int(t)
        if base is float:
            return float(t)
        return str(t)
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected a value of type {getattr(base, '__name__', base)}") from None


@dataclass(frozen=True)
class StudyConfig:
    """A factorial multi-seed study (see module doc).

    factors: ((TrainConfig field, (level, level, ...)), ...); levels in the field's type.
    n_seeds: seeds per cell; seeds are ``seed0 .. seed0 + n_seeds - 1`` in every cell.
    metric: the per-run result entry analysed (``test_acc`` ...).
    alpha, n_boot, n_perm, stats_seed, assumed_ratio, target_power: see :mod:`vit.stats`.
    batched, batched_impl: train each cell's seeds in one pass of the seed-batched engine
        (:func:`vit.train.train_runs`, weights stacked (S, ...)); ``"stacked"`` is the one engine.
    """

    base: TrainConfig = field(default_factory=lambda: _train.QUICK)
    factors: tuple[tuple[str, tuple[Any, ...]], ...] = (("loss_mode", ("clamp", "subtract")),
                                                        ("method", ("cff2", "cff1")))
    n_seeds: int = 3
    seed0: int = 0
    metric: str = "test_acc"
    alpha: float = 0.05
    n_boot: int = 9999
    n_perm: int = 9999
    stats_seed: int = 0
    assumed_ratio: float = stats.STEIER_RATIO
    target_power: float = 0.8
    batched: bool = False
    batched_impl: str = "stacked"

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"StudyConfig: {msg}")
        if not isinstance(self.base, TrainConfig):
            bad(f"base must be a TrainConfig, got {type(self.base).__name__}")
        if not self.factors:
            bad("at least one factor is needed")
        fields = _train_fields()
        names = [f for f, _ in self.factors]
        if len(set(names)) != len(names):
            bad(f"factor names repeat: {names}")
        for name, levels in self.factors:
            if name not in fields:
                bad(f"factor {name!r} is not a TrainConfig field")
            if name in SEED_FIELDS:
                bad(f"factor {name!r}: the seed axis is set by n_seeds/seed0")
            if len(levels) < 2:
                bad(f"factor {name!r} needs >= 2 levels, got {list(levels)}")
            if len(set(map(repr, levels))) != len(levels):
                bad(f"factor {name!r} has repeated levels {list(levels)}")
        if self.n_seeds < 1:
            bad(f"n_seeds={self.n_seeds} must be >= 1")
        if self.metric not in METRICS:
            bad(f"metric {self.metric!r} is not one of {', '.join(METRICS)}")
        if not 0 < self.alpha < 1 or not 0 < self.target_power < 1:
            bad("alpha and target_power must be in (0, 1)")
        if self.n_boot < 100 or self.n_perm < 100:
            bad("n_boot and n_perm must be >= 100")
        if not (self.assumed_ratio > 0 and math.isfinite(self.assumed_ratio)):
            bad(f"assumed_ratio={self.assumed_ratio} must be finite and > 0")
        for cell in self.cells():        # every level combination must be a valid TrainConfig
            rc = self.run_config(cell, self.seed0)
            if self.batched and rc.method not in ("cff2", "cff1"):
                bad(f"batched=True needs method cff2/cff1 in every cell, cell {cell} has {rc.method!r}")
        if self.batched_impl != "stacked":
            bad(f"batched_impl {self.batched_impl!r}: the one seed-batched engine is 'stacked'")

    def replace(self, **changes: Any) -> "StudyConfig":
        return dataclasses.replace(self, **changes)

    @property
    def factor_names(self) -> list[str]:
        return [f for f, _ in self.factors]

    def cells(self) -> list[tuple[Any, ...]]:
        """All level combinations, first factor slowest."""
        out: list[tuple[Any, ...]] = [()]
        for _, levels in self.factors:
            out = [c + (lv,) for c in out for lv in levels]
        return out

    def seeds(self) -> list[int]:
        return list(range(self.seed0, self.seed0 + self.n_seeds))

    def run_config(self, cell: Sequence[Any], seed: int) -> TrainConfig:
        try:
            return self.base.replace(seed=int(seed), **dict(zip(self.factor_names, cell)))
        except ValueError as exc:
            raise ValueError(f"StudyConfig: cell {dict(zip(self.factor_names, cell))}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "factors": [[f, list(lv)] for f, lv in self.factors],
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("base", "factors")}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StudyConfig":
        d = dict(d)
        base = TrainConfig.from_dict(d.pop("base"))
        factors = tuple((str(f), tuple(lv)) for f, lv in d.pop("factors"))
        return cls(base=base, factors=factors, **d)


#: CPU quick preset (2x2 x 3 seeds, ViT[64 4 4] on a Fashion-MNIST subset).
QUICK = StudyConfig()
#: full study: 2x2 x 12 seeds on the CFF CIFAR-10 protocol (GPU, data_root needed).
FULL = StudyConfig(base=_train.FULL_CIFAR10, n_seeds=12)


def _cell_name(names: Sequence[str], cell: Sequence[Any]) -> str:
    s = "__".join(f"{n}-{v}" for n, v in zip(names, cell))
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)


def _cfg_hash(cfg: TrainConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:10]


def run_dir(out_dir: Path, cfg: StudyConfig, cell: Sequence[Any], seed: int) -> Path:
    rc = cfg.run_config(cell, seed)
    return Path(out_dir) / "runs" / f"{_cell_name(cfg.factor_names, cell)}__seed{seed}__{_cfg_hash(rc)}"


def cell_runs(cfg: StudyConfig) -> list[tuple[tuple[Any, ...], int]]:
    """The study's runs in execution order: seed-major (all cells of a seed, then the next
    seed), so a partial study is balanced across cells."""
    return [(cell, s) for s in cfg.seeds() for cell in cfg.cells()]


def _record(cfg: StudyConfig, cell: tuple[Any, ...], seed: int, res: Mapping[str, Any], path: Path,
            trained: bool, wall: float) -> dict[str, Any]:
    layers = res.get("per_layer") or []
    return {"cell": dict(zip(cfg.factor_names, cell)), "seed": seed, "metric": float(res[cfg.metric]),
            "test_acc": res.get("test_acc"), "val_acc": res.get("val_acc"), "best_epoch": res.get("best_epoch"),
            "car_layer0": layers[0].get("car") if layers else None,
            "grad_norm_layer0": layers[0].get("grad_norm") if layers else None,
            "epoch_time_s": res.get("epoch_time_s"), "seeds": res.get("seeds"), "device": res.get("device"),
            "run_dir": str(path), "trained_now": trained, "wall_s": wall}


def _analysis(cfg: StudyConfig, records: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str]:
    data: dict[tuple, list[float]] = {}
    for cell in cfg.cells():
        cd = dict(zip(cfg.factor_names, cell))
        vals = [r["metric"] for r in records if r["cell"] == cd]
        if vals:
            data[tuple(cell)] = vals
    if not data:
        return None, "(no finished runs yet)"
    an = stats.factorial_analysis(cfg.factor_names, data, metric=cfg.metric, alpha=cfg.alpha, n_boot=cfg.n_boot,
                                  n_perm=cfg.n_perm, seed=cfg.stats_seed, assumed_ratio=cfg.assumed_ratio,
                                  target_power=cfg.target_power)
    car = []
    for c in an["cells"]:
        v = [r["car_layer0"] for r in records if r["cell"] == c["levels"] and r["car_layer0"] is not None]
        c["car_layer0_mean"] = sum(v) / len(v) if v else None
        name = " ".join(f"{k}={x}" for k, x in c["levels"].items())
        car.append(f"  {name}: {100 * c['car_layer0_mean']:.1f}%" if v else f"  {name}: n/a")
    table = stats.format_table(an) + "\nlayer-0 clamp activation rate (train, best epoch), cell mean:\n" + "\n".join(car)
    return an, table


def _plot(cfg: StudyConfig, result: Mapping[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = cfg.cells()
    names = ["\n".join(f"{n}={v}" for n, v in zip(cfg.factor_names, c)) for c in cells]
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.6 * len(cells), 4.2))
    for ax, key, ylabel in ((axes[0], "metric", f"{cfg.metric} (%)"),
                            (axes[1], "car_layer0", "layer-0 clamp activation rate (%)")):
        for i, c in enumerate(cells):
            cd = dict(zip(cfg.factor_names, c))
            v = [100 * r[key] for r in result["runs"] if r["cell"] == cd and r[key] is not None]
            if not v:
                continue
            ax.plot([i] * len(v), v, "o", alpha=0.6, color=f"C{i}", label=f"n={len(v)} seeds")
            m = sum(v) / len(v)
            sd = (sum((x - m) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0.0
            ax.errorbar([i + 0.15], [m], yerr=[sd], fmt="s", color="k", capsize=4,
                        label="mean ± SD" if i == 0 else None)
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels(names, fontsize=7)
        ax.set_xlabel("cell")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=6)
    b = cfg.base
    fig.suptitle(f"{b.dataset}, {b.model}[{b.embed_dim} {b.heads} {b.layers}], {b.epochs} epochs, "
                 f"{cfg.n_seeds} seeds/cell", fontsize=9)
    fig.tight_layout()
    from cffdyn.io import atomic_write_bytes
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _train_cells_batched(cfg: StudyConfig, out: Path, progress: bool) -> None:
    """Batched mode: per cell, train the seeds without a ``result.json`` in one batched pass
    (:func:`vit.train.train_runs`), which writes each seed's ``result.json`` into its
    run directory; a killed cell resumes from its batched checkpoint."""
    from vit.train import train_runs

    cells = cfg.cells()
    prog = Progress(len(cells), "study batched cells", enabled=progress, min_interval=0.0)
    for k, cell in enumerate(cells):
        seeds = [s for s in cfg.seeds() if not (run_dir(out, cfg, cell, s) / "result.json").is_file()]
        if seeds:
            rcs = [cfg.run_config(cell, s) for s in seeds]
            tag = hashlib.sha256(json.dumps([c.to_dict() for c in rcs], sort_keys=True).encode()).hexdigest()[:10]
            ck = out / "runs" / f"{_cell_name(cfg.factor_names, cell)}__batched__{tag}.pt"
            dirs = [run_dir(out, cfg, cell, s) for s in seeds]
            train_runs(rcs, dirs, ckpt=ck, progress=False)
            ck.unlink(missing_ok=True)
        prog.update(k + 1, f"{dict(zip(cfg.factor_names, cell))}: {len(seeds)} seeds trained batched")


def run_study(cfg: StudyConfig, out_dir: str | Path, *, progress: bool = True,
              run_progress: bool = False) -> dict[str, Any]:
    """Run (or resume, or reuse) the study; write ``study.json`` and ``study.png``; return the
    result dict (keys: config, design, status, runs, analysis, table, timing)."""
    if not isinstance(cfg, StudyConfig):
        raise ValueError(f"cfg must be a StudyConfig, got {type(cfg).__name__}")
    out = Path(out_dir)
    path = out / f"{STUDY_NAME}.json"
    cfg_dict = json.loads(json.dumps(cfg.to_dict()))
    if path.is_file():
        prev = read_json(path)
        if prev.get("config") == cfg_dict and prev.get("status") == "complete":
            return prev
    out.mkdir(parents=True, exist_ok=True)
    todo = cell_runs(cfg)
    design = {"factors": cfg.factor_names, "levels": {f: list(lv) for f, lv in cfg.factors},
              "cells": [dict(zip(cfg.factor_names, c)) for c in cfg.cells()], "seeds": cfg.seeds(),
              "n_runs": len(todo)}
    records: list[dict[str, Any]] = []
    prog = Progress(len(todo), f"study {'x'.join(str(len(lv)) for _, lv in cfg.factors)} x {cfg.n_seeds} seeds",
                    enabled=progress, min_interval=0.0)
    t_start = time.perf_counter()
    cache: dict[tuple, Any] = {}
    from vit.data import load_dataset
    if cfg.batched:
        _train_cells_batched(cfg, out, progress)
    for k, (cell, seed) in enumerate(todo):
        rc = cfg.run_config(cell, seed)
        rd = run_dir(out, cfg, cell, seed)
        done = (rd / "result.json").is_file()
        split = rc.resolved_seeds()["split"]
        key = (rc.dataset, rc.data_root, rc.subset, split, rc.image_size)
        t0 = time.perf_counter()
        if done:
            res = train_run(rc, rd, progress=False)
        else:
            if key not in cache:
                cache.clear()   # one dataset in memory at a time (runs are seed-major)
                cache[key] = load_dataset(rc.dataset, rc.data_root, subset=rc.subset, seed=split,
                                          image_size=rc.image_size)
            res = train_run(rc, rd, progress=run_progress, dataset=cache[key])
        rec = _record(cfg, tuple(cell), seed, res, rd, not done, time.perf_counter() - t0)
        records.append(rec)
        result = {"config": cfg_dict, "design": design, "status": "running", "runs": records}
        result["analysis"], result["table"] = None, ""
        atomic_write_json(path, result)
        prog.update(k + 1, f"{' '.join(f'{n}={v}' for n, v in zip(cfg.factor_names, cell))} seed {seed}: "
                           f"{cfg.metric} {100 * rec['metric']:.2f}%" + ("" if not done else " (recorded)"))
    analysis, table = _analysis(cfg, records)
    trained = [r for r in records if r["trained_now"]]
    timing = {"wall_s": time.perf_counter() - t_start, "n_trained_now": len(trained),
              "n_reused": len(records) - len(trained),
              "mean_run_wall_s": (sum(r["wall_s"] for r in trained) / len(trained)) if trained else None,
              "mean_epoch_time_s": sum(r["epoch_time_s"] or 0.0 for r in records) / len(records)}
    result = {"config": cfg_dict, "design": design, "status": "complete", "runs": records,
              "analysis": analysis, "table": table, "timing": timing}
    _plot(cfg, result, out / f"{STUDY_NAME}.png")
    atomic_write_json(path, result)
    return read_json(path)   # exactly what a later call reuses (NaN statistics become null)
