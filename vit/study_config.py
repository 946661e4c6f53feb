"""The configuration of a factorial multi-seed study: :class:`StudyConfig`, the presets, and
the names of its runs on disk (one job: what a study is; :mod:`vit.study` runs and analyses it).

A :class:`StudyConfig` names a base :class:`vit.train.TrainConfig`, the factors (each a
``TrainConfig`` field with its levels, e.g. ``loss_mode = clamp, subtract`` x
``method = cff2, cff1``) and the number of seeds per cell.  Every cell runs the same seeds
``seed0 .. seed0 + n_seeds - 1`` (common random numbers across cells); ``TrainConfig.seed``
derives the initialisation, split, data-order and augmentation seeds, and fixing any of them in
the base config (``seed_init=0`` etc.) removes that source of variance, which is how the
variance is attributed to its sources.  ``independent_seeds=True``: cell ``c`` (in
:meth:`StudyConfig.cells` order) runs seeds ``seed0 + c n_seeds ...``, no seed is shared.

The run plan: :func:`planned_runs`, each :class:`PlannedRun` a (cell, seed) with its config
and directory, in execution order.  Run names: ``runs/<cell>__seed<k>__<hash>/``
(:func:`run_dir`), ``<hash>`` a digest of the run's full ``TrainConfig`` (:func:`config_hash`),
so a changed base config never collides with old runs and an extended study reuses every run it
already has; the raw-pixel probe of seed ``k``: ``runs/probe__seed<k>__<hash>.json``
(:func:`probe_path`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from vit import stats
from vit import config as _train
from vit.config import TrainConfig

__all__ = ["MAX_RESAMPLES", "MAX_SEEDS", "resamples_arg", "SEED_DESIGNS", "StudyConfig", "QUICK", "NOISE_DOSE", "FULL", "FMNIST_FULL", "CIFAR10_STEIER", "PRESETS", "STUDY_NAME", "SEED_FIELDS",
           "METRICS", "cell_name", "config_hash", "run_dir", "probe_config", "probe_path", "cell_runs",
           "PlannedRun", "planned_run", "planned_runs"]

STUDY_NAME = "study"
#: TrainConfig fields that a factor may not vary (the study owns the seed axis).
SEED_FIELDS = ("seed",)
METRICS = ("test_acc", "val_acc", "test_topk_acc", "val_topk_acc")
#: what a seed changes (StudyConfig.seed_design)
SEED_DESIGNS = ("all", "sgd")


def _train_fields() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


#: resamples of the bootstrap and permutation tests at most (100x the default 9999)
MAX_RESAMPLES = 1_000_000
#: seeds per cell at most (every run is listed in the plan, the task records and study.json)
MAX_SEEDS = 10_000


def resamples_arg(text: str) -> int:
    """argparse type of --n-boot / --n-perm: an integer in [1, MAX_RESAMPLES]."""
    import argparse

    from cffdyn.errors import positive_int
    n = positive_int(text)
    if n > MAX_RESAMPLES:
        raise argparse.ArgumentTypeError(f"{text!r} is above {MAX_RESAMPLES} resamples (scipy holds them all in memory)")
    return n


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
    seed_design: what a seed changes (:data:`SEED_DESIGNS`): ``all`` -- initialisation, data
        split, batch order and augmentation (each derived from the seed unless the base config
        fixes it); ``sgd`` -- only batch order and augmentation (with the view noise): the
        initialisation, split and subset are held at ``seed0``'s for every seed, so the seed
        variance is the SGD noise the mean-field theory speaks of.  Pairing is unchanged.
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
    seed_design: str = "all"
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
        if self.seed_design not in SEED_DESIGNS:
            bad(f"seed_design {self.seed_design!r} is not one of {', '.join(SEED_DESIGNS)}")
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
        if max(self.n_boot, self.n_perm) > MAX_RESAMPLES:
            # scipy draws every resample at once (resamples x runs floats), after the whole study trained
            bad(f"n_boot={self.n_boot}, n_perm={self.n_perm}: at most {MAX_RESAMPLES} resamples (100x the "
                f"default 9999; scipy holds them all in memory, after every run has trained)")
        if self.n_seeds > MAX_SEEDS:
            bad(f"{self.n_seeds} seeds per cell: the study plan and study.json list every run; use at most "
                f"{MAX_SEEDS} seeds per cell")
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
        fixed: dict[str, int] = {}
        if self.seed_design == "sgd":    # init, split and subset of seed0 for every seed (unless the base fixes them)
            b = self.base
            fixed = {"seed_init": b.seed_init if b.seed_init is not None else _train.derive_seed(self.seed0, "init"),
                     "seed_split": b.seed_split if b.seed_split is not None else int(self.seed0),
                     "seed_subset": (b.seed_subset if b.seed_subset is not None
                                     else b.seed_split if b.seed_split is not None else int(self.seed0))}
        try:
            return self.base.replace(seed=int(seed), **fixed, **dict(zip(self.factor_names, cell)))
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
    """``cfg`` under the reference protocol where :class:`TrainConfig` has a ``protocol`` field;
    its hyper-parameter defaults are the reference's either way."""
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
#: seeds; epochs from the wall-time estimate (about 10 minutes on one H100, from the measurement
#: in recorded/vit/wall_model, see vit.study.wall_model).
FMNIST_FULL = StudyConfig(base=_reference(_train.TrainConfig(dataset="fashion_mnist", subset=None, embed_dim=128, heads=4,
                                                  layers=5, patch=4, epochs=6, head_epochs=50, device="cuda")),
                          n_seeds=7, batched=True)
#: Steier's CIFAR-10 design: 600 + 50 epochs, 2x2 x 7 seeds per cell (needs --data-root and a GPU).
CIFAR10_STEIER = StudyConfig(base=_reference(_train.FULL_CIFAR10.replace(device="cuda")), n_seeds=7, batched=True,
                             )
#: full study: 2x2 x 12 seeds on the CFF CIFAR-10 protocol (GPU, data_root needed).
FULL = StudyConfig(base=_train.FULL_CIFAR10, n_seeds=12)
#: the noise-dose study (:mod:`vit.noise_dose`): loss_mode {clamp, subtract} x view_noise at 4 doses
#: spanning the predicted sign change of the clamp/subtract variance ratio (sigma_n_cross = 0.53 for
#: tanh at m = 0.3, recorded/sim/prediction), 12 matched seeds per cell, seed_design 'sgd' (init and
#: split fixed: the seed variance is SGD noise), no augmentation but the view noise (so the noise is
#: the dose), cff2 on a fixed 4,000-image Fashion-MNIST pool, ViT[32 4 2] patch 7, batch 128, 10
#: epochs.  Doses: 12-seed runs at 3 epochs gave sigma_n_eff 0.46 (layer 0) and 0.30 (layer 1) at
#: view_noise 0.5, so 0.25 / 0.6 / 1.25 / 2.0 reach from below to above the crossing in both layers
#: (measured per run, never assumed).  12 seeds: the record's power table asks 11 (tanh, sigma_n 0.2)
#: and 5-6 (relu) per arm for 80% power.  Sized for about 40 minutes on one core (2.3 s per
#: seed-epoch measured, 96 runs).
NOISE_DOSE = StudyConfig(base=_train.QUICK.replace(subset=4000, layers=2, embed_dim=32, heads=4, batch_size=128,
                                                   epochs=10, augment="none", seed_subset=0),
                         factors=(("loss_mode", ("clamp", "subtract")), ("view_noise", (0.25, 0.6, 1.25, 2.0))),
                         n_seeds=12, seed_design="sgd", probe=False, assumed_ratio=0.3)
#: command-line preset name -> study config
PRESETS: dict[str, StudyConfig] = {"quick": QUICK, "fmnist-full": FMNIST_FULL, "cifar10-steier": CIFAR10_STEIER,
                                   "full": FULL, "noise-dose": NOISE_DOSE}


def cell_name(names: Sequence[str], cell: Sequence[Any]) -> str:
    s = "__".join(f"{n}-{v}" for n, v in zip(names, cell))
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)


def config_hash(cfg: TrainConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class PlannedRun:
    """One (cell, seed) run of a study under an output folder: its :class:`TrainConfig`
    (:meth:`StudyConfig.run_config`) and its directory (:func:`run_dir`), computed once."""

    cell: tuple[Any, ...]
    seed: int
    config: TrainConfig
    dir: Path


def planned_run(out_dir: Path, cfg: StudyConfig, cell: Sequence[Any], seed: int) -> PlannedRun:
    rc = cfg.run_config(cell, seed)
    return PlannedRun(tuple(cell), seed, rc,
                      Path(out_dir) / "runs" / f"{cell_name(cfg.factor_names, cell)}__seed{seed}__{config_hash(rc)}")


def planned_runs(cfg: StudyConfig, out_dir: Path,
                 runs: Sequence[tuple[Sequence[Any], int]] | None = None) -> list[PlannedRun]:
    """The study's run plan under ``out_dir``: the (cell, seed) ``runs`` (default
    :func:`cell_runs`, the execution order), each with its config and directory."""
    return [planned_run(out_dir, cfg, c, sd) for c, sd in (cell_runs(cfg) if runs is None else runs)]


def run_dir(out_dir: Path, cfg: StudyConfig, cell: Sequence[Any], seed: int) -> Path:
    return planned_run(out_dir, cfg, cell, seed).dir


def cell_runs(cfg: StudyConfig) -> list[tuple[tuple[Any, ...], int]]:
    """The study's runs in execution order: seed-major (the i-th seed of every cell, then the
    next), so a partial study is balanced across cells."""
    cells = cfg.cells()
    return [(cell, cfg.seeds(cell)[i]) for i in range(cfg.n_seeds) for cell in cells]


def probe_config(cfg: StudyConfig, seed: int) -> TrainConfig:
    """The config of ``seed``'s raw-pixel probe: the run config of the first cell that runs the seed."""
    cells = [c for c in cfg.cells() if seed in cfg.seeds(c)] or cfg.cells()[:1]
    return cfg.run_config(cells[0], seed)


def probe_path(out_dir: Path, cfg: StudyConfig, seed: int) -> Path:
    """The recorded raw-pixel probe of ``seed`` (its config: :func:`probe_config`)."""
    return Path(out_dir) / "runs" / f"probe__seed{seed}__{config_hash(probe_config(cfg, seed))}.json"

