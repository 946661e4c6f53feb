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
                   about 10 minutes on one H100 (an ESTIMATE from issue 11's measured figure, see
                   :data:`WALL_MODEL`).
``cifar10-steier`` Steier's design: CIFAR-10 (``--data-root``), ViT[128 4 5], patch 4, 600 + 50
                   epochs, 2x2 x 7 seeds per cell.
``full``           the same on CIFAR-10 with 12 seeds per cell (80% power for the within-cell
                   F-test at Steier's 5.9x).

Seeds
-----
Matched (default): every cell runs seeds ``seed0 .. seed0 + n_seeds - 1``, so the runs of one
seed share split, initialisation, data order and augmentation across cells and the paired
analysis of :mod:`vit.stats` applies.  ``independent_seeds=True``: cell ``c`` (in
:meth:`StudyConfig.cells` order) runs seeds ``seed0 + c n_seeds ...``, no seed is shared, and the
independent-sample tests are the right ones.  A study recorded one way is never resumed the
other way.

Raw-pixel probe
---------------
For every seed the study also trains the CFF head on raw pixels (:mod:`vit.probe`: same head,
same protocol, same images); the table reports its test accuracy beside each cell's.

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

from cffdyn.errors import UserError
from cffdyn.io import Progress, atomic_write_json, read_json
from vit import stats
from vit import config as _train
from vit.data import image_side
from vit.train import TrainConfig, train_run

__all__ = ["StudyConfig", "QUICK", "FULL", "FMNIST_FULL", "CIFAR10_STEIER", "PRESETS", "run_study", "cell_runs",
           "parse_field_value", "projected_wall_s", "describe_projection", "STUDY_NAME", "SEED_FIELDS",
           "WALL_MODEL"]

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
    n_seeds: seeds per cell (>= 2: a variance needs two runs); seeds are ``seed0 .. seed0 +
        n_seeds - 1`` in every cell, or distinct per cell with ``independent_seeds``.
    metric: the per-run result entry analysed (``test_acc`` ...).
    alpha, n_boot, n_perm, stats_seed, assumed_ratio, target_power: see :mod:`vit.stats`.
    batched, batched_impl: train each cell's seeds in one pass of the seed-batched engine
        (:func:`vit.train.train_runs`, weights stacked (S, ...)); ``"stacked"`` is the one engine.
    independent_seeds: every cell gets its own seeds (no pairing; see module doc).
    assumed_corr: correlation of paired runs assumed in the paired power calculation.
    probe: also train the raw-pixel linear probe for every seed (:mod:`vit.probe`).
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
    independent_seeds: bool = False
    assumed_corr: float = 0.5
    probe: bool = True

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
                bad(f"factor {name!r} has {len(levels)} level ({', '.join(map(str, levels))}); a factor needs "
                    f"at least 2 levels to compare")
            if len(set(map(repr, levels))) != len(levels):
                bad(f"factor {name!r} has repeated levels {list(levels)}")
        if self.n_seeds < 2:
            bad(f"{self.n_seeds} seed per cell: a variance test needs at least 2 seeds per cell "
                f"(3 for Levene, the permutation and bootstrap tests and the paired analysis)")
        if not -1 < self.assumed_corr < 1:
            bad(f"assumed_corr={self.assumed_corr} must be in (-1, 1)")
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

    def seeds(self, cell: Sequence[Any] | None = None) -> list[int]:
        """Seeds of ``cell``: the same for every cell (matched), or a block of its own
        (``independent_seeds``; then ``cell`` is required)."""
        if not self.independent_seeds:
            return list(range(self.seed0, self.seed0 + self.n_seeds))
        if cell is None:
            raise ValueError("independent_seeds: the seeds depend on the cell")
        c = self.cells().index(tuple(cell))
        return list(range(self.seed0 + c * self.n_seeds, self.seed0 + (c + 1) * self.n_seeds))

    def all_seeds(self) -> list[int]:
        out: list[int] = []
        for cell in self.cells():
            out += [sd for sd in self.seeds(cell) if sd not in out]
        return out

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


def _reference(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` under the reference protocol where :class:`TrainConfig` has a ``protocol`` field
    (issue 12 item 1); its hyper-parameter defaults are the reference's either way."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return cfg.replace(protocol="reference") if "protocol" in names else cfg


#: CPU quick preset, sized for about 10 minutes on 2 idle cores: ViT[64 4 2] patch 7, batch 128,
#: 16 epochs, crop padding 1 on a 6,000-image Fashion-MNIST pool.  ``seed_subset=0``: the same
#: images for every seed; the train/validation split, initialisation, order and augmentation vary
#: with the seed.  Chosen by single-seed runs on the same pool (seed 0, cff2 clamp, test accuracy
#: against 81.65% for the raw-pixel probe): crop padding 3 (side // 8) 81.1%, 1 83.4%; position
#: embedding std 0.02 instead of the reference's 1: -2.1 points; 1 layer x 32 epochs, 2 layers x 16,
#: 3 layers x 16: 84.2/84.2/83.9% at 43/45/62 s; patch 4, width 128/256, RandAugment or a cosine
#: learning-rate decay did not help.  The measured study is in the README.
QUICK = StudyConfig(base=_train.QUICK.replace(subset=6000, layers=2, batch_size=128, epochs=16, crop_pad=1,
                                              seed_subset=0), n_seeds=3)
#: Fashion-MNIST, all 60,000 training images, ViT[128 4 5] patch 4, 2x2 x 7 seeds, GPU, batched
#: seeds; epochs from the wall-time estimate (about 10 minutes on one H100, see WALL_MODEL).
FMNIST_FULL = StudyConfig(base=_reference(_train.TrainConfig(dataset="fashion_mnist", subset=None, embed_dim=128, heads=4,
                                                  layers=5, patch=4, epochs=6, head_epochs=50, device="cuda")),
                          n_seeds=7, batched=True)
#: Steier's CIFAR-10 design: 600 + 50 epochs, 2x2 x 7 seeds per cell (needs --data-root and a GPU).
CIFAR10_STEIER = StudyConfig(base=_reference(_train.FULL_CIFAR10.replace(device="cuda")), n_seeds=7, batched=True,
                             )
#: full study: 2x2 x 12 seeds on the CFF CIFAR-10 protocol (GPU, data_root needed).
FULL = StudyConfig(base=_train.FULL_CIFAR10, n_seeds=12)
#: command-line preset name -> study config
PRESETS: dict[str, StudyConfig] = {"quick": QUICK, "fmnist-full": FMNIST_FULL, "cifar10-steier": CIFAR10_STEIER,
                                   "full": FULL}

#: Wall-time model: seconds per (training image x epoch x seed) of ViT[128 4 5] with 49 tokens,
#: two views, measured (issue 11): H100, batched explicit engine, 7 seeds x 10 epochs of full
#: Fashion-MNIST (54,000 images) in 226 s for one cell -> 226 / (10 * 7 * 54000).  CPU: the
#: quick study's own measurement (2 cores; see README), scaled the same way.  Other models scale
#: by the forward cost per image (:func:`_cost_per_image`); an ESTIMATE, not a measurement.
WALL_MODEL = {"cuda": {"s_per_image_epoch_seed": 226.0 / (10 * 7 * 54000),
                       "source": "issue 11: H100, batched explicit engine, 226 s for 7 seeds x 10 epochs of "
                                 "54,000 Fashion-MNIST images, ViT[128 4 5] patch 4"},
              # 2 cff2 cells + 2 cff1 cells (half the forward cost) = 3 cff2-cell equivalents
              "cpu": {"s_per_image_epoch_seed": 414.6 / (1.15 * 5400 * 16 * 3 * 3),
                      "source": "the quick study measured on 2026-11-26: 414.6 s wall for its 12 runs and 3 probes "
                                "on 2 torch threads, 2 cores (load average 0.6 at the start, 2.0 at the end)"}}


def _cell_name(names: Sequence[str], cell: Sequence[Any]) -> str:
    s = "__".join(f"{n}-{v}" for n, v in zip(names, cell))
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)


def _cfg_hash(cfg: TrainConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:10]


def run_dir(out_dir: Path, cfg: StudyConfig, cell: Sequence[Any], seed: int) -> Path:
    rc = cfg.run_config(cell, seed)
    return Path(out_dir) / "runs" / f"{_cell_name(cfg.factor_names, cell)}__seed{seed}__{_cfg_hash(rc)}"


def cell_runs(cfg: StudyConfig) -> list[tuple[tuple[Any, ...], int]]:
    """The study's runs in execution order: seed-major (the i-th seed of every cell, then the
    next), so a partial study is balanced across cells."""
    cells = cfg.cells()
    return [(cell, cfg.seeds(cell)[i]) for i in range(cfg.n_seeds) for cell in cells]


# ----------------------------------------------------------------------------- wall-time estimate
_POOL = {"fashion_mnist": 60000, "cifar10": 50000, "cifar100": 50000, "svhn": 73257, "digits": 1438}


def _cost_per_image(cfg: TrainConfig, device: str) -> float:
    """Forward multiply-adds per training image (all layers and views; MLP ratio 2) — the
    scaling of the wall-time model between configurations.  On CUDA a step is launch-bound
    (issue 11: one cff1 step costs as much as a cff2 step), so views do not scale there."""
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


#: the configuration each device's figure in WALL_MODEL was measured on
_WALL_REF = {"cuda": TrainConfig(dataset="fashion_mnist", subset=None, embed_dim=128, heads=4, layers=5, patch=4),
             "cpu": QUICK.base}

#: evaluation (validation and per-epoch test features), the head and the probe on top of
#: the training epochs, as a share of the training time (the quick study's measurement)
EVAL_OVERHEAD = 0.15


def projected_wall_s(cfg: StudyConfig, device: str | None = None) -> float | None:
    """Projected wall time of the whole study from :data:`WALL_MODEL` (None: no figure for the
    device).  An estimate: the per-image cost measured once, scaled by :func:`_cost_per_image`."""
    dev = device or _device_of(cfg)
    m = WALL_MODEL.get(dev)
    if not m or not m["s_per_image_epoch_seed"]:
        return None
    ref = _cost_per_image(_WALL_REF.get(dev, _WALL_REF["cuda"]), dev)
    tot = 0.0
    for cell in cfg.cells():
        rc = cfg.run_config(cell, cfg.seed0)
        tot += _n_train(rc) * rc.epochs * cfg.n_seeds * m["s_per_image_epoch_seed"] * _cost_per_image(rc, dev) / ref
    return tot * (1.0 + EVAL_OVERHEAD)


def describe_projection(cfg: StudyConfig, device: str | None = None) -> str:
    dev = device or _device_of(cfg)
    w = projected_wall_s(cfg, dev)
    if w is None:
        return f"projected wall time: no measured figure for device {dev!r}"
    txt = f"{w:.0f} s" if w < 120 else f"{w / 60:.0f} min" if w < 2 * 3600 else f"{w / 3600:.1f} h"
    where = "one H100 (seed-batched engine)" if dev == "cuda" else "2 idle CPU cores (2 torch threads)"
    return (f"projected wall time {txt} on {where}"
            f" -- an estimate from {WALL_MODEL[dev]['source']}, scaled by model size; not a measurement")


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


def _analysis(cfg: StudyConfig, records: list[dict[str, Any]],
              probe: Mapping[str, Any] | None = None) -> tuple[dict[str, Any] | None, str]:
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
    an = stats.factorial_analysis(cfg.factor_names, data, seeds=seeds, matched=not cfg.independent_seeds,
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
    table = stats.format_table(an, extra_cols=cols)
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


def _probe_runs(cfg: StudyConfig, out: Path, dataset_for, progress: bool) -> dict[str, Any] | None:
    """The raw-pixel probe for every seed of the study (cached per seed in ``runs/``)."""
    if not cfg.probe:
        return None
    from vit.probe import raw_pixel_probe

    runs = []
    cell0 = cfg.cells()[0]
    for seed in cfg.all_seeds():
        cells = [c for c in cfg.cells() if seed in cfg.seeds(c)]
        rc = cfg.run_config(cells[0] if cells else cell0, seed)
        path = out / "runs" / f"probe__seed{seed}__{_cfg_hash(rc)}.json"
        if path.is_file():
            rec = read_json(path)
        else:
            rec = {"seed": seed, **raw_pixel_probe(rc, dataset_for(rc))}
            atomic_write_json(path, rec)
        runs.append(rec)
    acc = [r["test_acc"] for r in runs]
    m = sum(acc) / len(acc)
    sd = (sum((a - m) ** 2 for a in acc) / (len(acc) - 1)) ** 0.5 if len(acc) > 1 else None
    return {"runs": runs, "test_acc_mean": m, "test_acc_sd": sd, "protocol": runs[0]["protocol"] if runs else None}


def _plot(cfg: StudyConfig, result: Mapping[str, Any], path: Path) -> None:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cffdyn.io import atomic_write_bytes
    from vit.plot import title

    cells = cfg.cells()
    names = ["\n".join(title(v) for v in c) for c in cells]
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.8 * len(cells), 4.4))
    probe = result.get("probe") or {}
    for ax, key, ylabel in ((axes[0], "metric", f"{title(cfg.metric)} (%)"),
                            (axes[1], "car_layer0", "layer-0 clamp activation rate (%)")):
        for i, c in enumerate(cells):
            cd = dict(zip(cfg.factor_names, c))
            v = [100 * r[key] for r in result["runs"] if r["cell"] == cd and r[key] is not None]
            if not v:
                continue
            ax.plot([i] * len(v), v, "o", alpha=0.6, color=f"C{i}",
                    label=f"{', '.join(title(x) for x in cd.values())}: {len(v)} seeds")
            m = sum(v) / len(v)
            sd = (sum((x - m) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0.0
            ax.errorbar([i + 0.15], [m], yerr=[sd], fmt="s", color="k", capsize=4,
                        label="cell mean ± SD" if i == 0 else None)
        if key == "metric" and probe.get("test_acc_mean") is not None and cfg.metric == "test_acc":
            ax.axhline(100 * probe["test_acc_mean"], color="0.4", ls="--", lw=1,
                       label="raw-pixel linear probe (same head)")
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels(names, fontsize=7)
        ax.set_xlabel("cell")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=6)
    b = cfg.base
    design = "independent seeds per cell" if cfg.independent_seeds else "the same seeds in every cell"
    fig.suptitle(f"{title(b.dataset)}, ViT[{b.embed_dim} {b.heads} {b.layers}], "
                 f"{b.epochs} epochs, {cfg.n_seeds} seeds per cell ({design})", fontsize=9)
    fig.tight_layout()
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
        seeds = [s for s in cfg.seeds(cell) if not (run_dir(out, cfg, cell, s) / "result.json").is_file()]
        if seeds:
            rcs = [cfg.run_config(cell, s) for s in seeds]
            tag = hashlib.sha256(json.dumps([c.to_dict() for c in rcs], sort_keys=True).encode()).hexdigest()[:10]
            ck = out / "runs" / f"{_cell_name(cfg.factor_names, cell)}__batched__{tag}.pt"
            dirs = [run_dir(out, cfg, cell, s) for s in seeds]
            train_runs(rcs, dirs, ckpt=ck, progress=False)
            ck.unlink(missing_ok=True)
        prog.update(k + 1, f"{dict(zip(cfg.factor_names, cell))}: {len(seeds)} seeds trained batched")


def _check_design_matches(cfg: StudyConfig, path: Path) -> dict[str, Any] | None:
    """The recorded ``study.json`` (None if none); refuses to resume one of the other seed
    design (matched vs independent), which would mix designs in one analysis."""
    if not path.is_file():
        return None
    prev = read_json(path)      # CorruptFileError names the path
    was = bool((prev.get("config") or {}).get("independent_seeds", False))
    if was != cfg.independent_seeds:
        rec = "independent seeds per cell" if was else "matched seeds (the same seeds in every cell)"
        raise UserError(f"{path} records a study with {rec}; "
                        f"{'--independent-seeds' if cfg.independent_seeds else 'matched seeds'} would mix two designs",
                        "give another --out (nothing recorded was changed)")
    return prev


def _dataset_loader(out_progress: bool):
    """Load datasets once per (dataset, root, subset, split seed, size); data errors become one
    line naming the option."""
    from vit.config import data_key, load_run_dataset
    cache: dict[tuple, Any] = {}

    def get(rc: TrainConfig):
        key = data_key(rc)
        if key not in cache:
            cache.clear()   # one dataset in memory at a time (runs are seed-major)
            try:
                cache[key] = load_run_dataset(rc)
            except FileNotFoundError as exc:
                raise UserError(f"dataset {rc.dataset!r} not found ({exc})",
                                "give the directory that holds its files with --data-root DIR "
                                "(or --set data_root=DIR)") from None
        return cache[key]
    return get


def run_study(cfg: StudyConfig, out_dir: str | Path, *, progress: bool = True,
              run_progress: bool = False) -> dict[str, Any]:
    """Run (or resume, or reuse) the study; write ``study.json`` and ``study.png``; return the
    result dict (keys: config, design, status, runs, probe, analysis, table, timing)."""
    if not isinstance(cfg, StudyConfig):
        raise ValueError(f"cfg must be a StudyConfig, got {type(cfg).__name__}")
    out = Path(out_dir)
    path = out / f"{STUDY_NAME}.json"
    cfg_dict = json.loads(json.dumps(cfg.to_dict()))
    prev = _check_design_matches(cfg, path)
    if prev is not None and prev.get("config") == cfg_dict and prev.get("status") == "complete":
        return prev
    out.mkdir(parents=True, exist_ok=True)
    todo = cell_runs(cfg)
    design = {"factors": cfg.factor_names, "levels": {f: list(lv) for f, lv in cfg.factors},
              "cells": [dict(zip(cfg.factor_names, c)) for c in cfg.cells()],
              "seeds": {_cell_label(dict(zip(cfg.factor_names, c))): cfg.seeds(c) for c in cfg.cells()},
              "seed_design": "independent" if cfg.independent_seeds else "matched",
              "n_runs": len(todo)}
    get_data = _dataset_loader(progress)
    recorded = sum((run_dir(out, cfg, c, sd) / "result.json").is_file() for c, sd in todo)
    if progress:
        import sys
        print(f"[study] {len(todo)} runs planned ({len(cfg.cells())} cells x {cfg.n_seeds} seeds, "
              f"{design['seed_design']} seeds), {recorded} recorded, {len(todo) - recorded} to train; "
              f"{describe_projection(cfg)}; results: {path}", file=sys.stderr, flush=True)
    if recorded < len(todo):
        get_data(cfg.run_config(*todo[0]))     # a missing dataset fails here, before any training
    records: list[dict[str, Any]] = []
    prog = Progress(len(todo), f"study {'x'.join(str(len(lv)) for _, lv in cfg.factors)} x {cfg.n_seeds} seeds",
                    enabled=progress, min_interval=0.0)
    t_start = time.perf_counter()
    cpu_start = time.process_time()     # CPU seconds of this process: with one thread, the compute
    from cffdyn.machine import load_average
    load_start = load_average()
    if cfg.batched:
        _train_cells_batched(cfg, out, progress)
    for k, (cell, seed) in enumerate(todo):
        rc = cfg.run_config(cell, seed)
        rd = run_dir(out, cfg, cell, seed)
        done = (rd / "result.json").is_file()
        t0 = time.perf_counter()
        if done:
            res = train_run(rc, rd, progress=False)     # a corrupt result.json: one line naming it
        else:
            res = train_run(rc, rd, progress=run_progress, dataset=get_data(rc))
        rec = _record(cfg, tuple(cell), seed, res, rd, not done, time.perf_counter() - t0)
        records.append(rec)
        result = {"config": cfg_dict, "design": design, "status": "running", "runs": records}
        result["analysis"], result["table"] = None, ""
        atomic_write_json(path, result)
        prog.update(k + 1, f"{_cell_label(rec['cell'])}, seed {seed}: "
                           f"{cfg.metric} {100 * rec['metric']:.2f}%" + ("" if not done else " (recorded)"))
    t_probe = time.perf_counter()
    probe = _probe_runs(cfg, out, get_data, progress)
    t_probe = time.perf_counter() - t_probe
    analysis, table = _analysis(cfg, records, probe)
    trained = [r for r in records if r["trained_now"]]
    from cffdyn.machine import machine_info
    import torch
    timing = {"wall_s": time.perf_counter() - t_start, "cpu_s": time.process_time() - cpu_start,
              "torch_threads": torch.get_num_threads(), "n_trained_now": len(trained),
              "n_reused": len(records) - len(trained), "probe_s": t_probe,
              "mean_run_wall_s": (sum(r["wall_s"] for r in trained) / len(trained)) if trained else None,
              "mean_epoch_time_s": sum(r["epoch_time_s"] or 0.0 for r in records) / len(records),
              "projected_wall_s": projected_wall_s(cfg), "load_avg_start": load_start,
              "machine": machine_info(records[0].get("device"))}
    result = {"config": cfg_dict, "design": design, "status": "complete", "runs": records, "probe": probe,
              "analysis": analysis, "table": table, "timing": timing}
    _plot(cfg, result, out / f"{STUDY_NAME}.png")
    atomic_write_json(path, result)
    return read_json(path)   # exactly what a later call reuses (NaN statistics become null)
