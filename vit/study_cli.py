"""``cffdyn vit study``: the multi-seed factorial variance study from the command line.

Examples::

    cffdyn vit study --quick                                   # 2x2 x 3 seeds on CPU (~7 min, 2 cores)
    cffdyn vit study --preset fmnist-full --out results/vit/fmnist_full         # GPU, ~10 min (estimate)
    cffdyn vit study --preset cifar10-steier --data-root /data/cifar-10-batches-py
    cffdyn vit study --factor loss_mode=clamp,subtract --factor method=cff2,cff1 \\
        --seeds 12 --set epochs=3 --out results/vit/study_a
    cffdyn vit study --independent-seeds ...                   # every cell its own seeds
    cffdyn vit study --bench-batched                           # batched-seed measurement

Run the same command again after a kill: finished runs are read back, the interrupted one
resumes from its checkpoint.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from cffdyn.errors import UserError, finite_float, make_parser, nonneg_int, positive_int

__all__ = ["main", "build_parser", "config_from_args"]

DEFAULT_OUT = "results/vit/study"


PRESET_HELP = {
    "quick": "CPU: loss_mode {clamp,subtract} x method {cff2,cff1} x 3 seeds on a fixed 6,000-image "
             "Fashion-MNIST subset, ViT[64 4 2] patch 7, batch 128, 16 epochs, crop padding 1 (measured 7 minutes "
             "on 2 idle cores)",
    "fmnist-full": "GPU: all 60,000 Fashion-MNIST images, ViT[128 4 5] patch 4, the 2x2 x 7 seeds, reference "
                   "hyper-parameters, seed-batched; epochs for about 10 minutes on one H100 (estimate)",
    "cifar10-steier": "GPU: Steier's design, CIFAR-10 (--data-root), ViT[128 4 5], 600 + 50 epochs, 2x2 x 7 seeds",
    "full": "GPU: CIFAR-10 (--data-root), ViT[128 4 5], 600 + 50 epochs, 2x2 x 12 seeds",
}


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = make_parser(
        prog=prog, description=(
            "Multi-seed factorial variance study (Steier 2026 design): every cell (level "
            "combination of the factors) is trained with n seeds, the same seeds in every cell "
            "(matched) unless --independent-seeds.  Per factor, side by side: the paired analysis "
            "of matched seeds (Pitman-Morgan, a permutation swapping levels within each seed, a "
            "bootstrap over seeds), Steier's pooled F (all runs of a level), the within-cell "
            "pooled F, Levene/Brown-Forsythe, permutation and bootstrap for independent cells, "
            "means by Welch's and the paired t-test, power and seeds for 80% power; and the "
            "raw-pixel linear probe with the same head on the same images.  Writes OUT/study.json, "
            "OUT/study.png and one train_run directory per run under OUT/runs; resumable."))
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--preset", choices=tuple(PRESET_HELP), default=None,
                        help="study preset: " + "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items())
                             + " (default: quick)")
    preset.add_argument("--quick", action="store_true", help="the quick preset (= --preset quick)")
    preset.add_argument("--full", action="store_true", help="the full preset (= --preset full)")
    p.add_argument("--factor", action="append", default=[], metavar="FIELD=L1,L2[,...]",
                   help="a factor: a TrainConfig field and its levels (repeatable; replaces the preset's "
                        "factors when given), e.g. --factor loss_mode=clamp,subtract --factor m0=0.2,0.4")
    p.add_argument("--seeds", type=positive_int, default=None,
                   help="seeds per cell, at least 2 (default: the preset's)")
    p.add_argument("--seed0", type=nonneg_int, default=0, help="first seed")
    p.add_argument("--independent-seeds", action="store_true",
                   help="every cell gets its own seeds (no seed shared between cells): the independent-"
                        "sample tests apply and the paired analysis does not; a study recorded with "
                        "matched seeds is not resumed this way")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="directory with the dataset files (CIFAR-10 batches, SVHN .mat, Fashion-MNIST "
                        "IDX); the same as --set data_root=DIR")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="sets",
                   help="override a field of the base TrainConfig (repeatable), e.g. --set epochs=3 "
                        "--set device=cuda; fix a variance source with --set seed_init=0 (also "
                        "seed_split, seed_order, seed_aug)")
    p.add_argument("--metric", default="test_acc",
                   choices=("test_acc", "val_acc", "test_topk_acc", "val_topk_acc"),
                   help="per-run result analysed")
    p.add_argument("--alpha", type=finite_float, default=0.05, help="test level for the power calculation")
    p.add_argument("--assumed-ratio", type=finite_float, default=5.90,
                   help="variance ratio at which power and the seeds needed are also reported "
                        "(5.90 = Steier's CIFAR-10 clamp/subtraction ratio)")
    p.add_argument("--assumed-corr", type=finite_float, default=0.5,
                   help="correlation of the two runs of a seed pair assumed for the paired power "
                        "(0.5: half the variance shared by the seed); the observed one is reported too")
    p.add_argument("--n-boot", type=positive_int, default=9999, help="bootstrap resamples")
    p.add_argument("--n-perm", type=positive_int, default=9999, help="permutations for the permutation p-values")
    p.add_argument("--stats-seed", type=nonneg_int, default=0, help="seed of the bootstrap and permutation draws")
    p.add_argument("--no-probe", action="store_true", help="skip the raw-pixel linear probe")
    p.add_argument("--batched", action="store_true",
                   help="train the seeds of each cell together, weights with a leading seed dimension "
                        "(vit.train.train_runs; methods cff2/cff1 only)")
    p.add_argument("--batched-impl", default="stacked", choices=("stacked",),
                   help="seed-batched engine: stacked weights, batched matmuls, one SDPA call (the only one)")
    p.add_argument("--out", default=DEFAULT_OUT, help="output directory (study.json, study.png, runs/)")
    p.add_argument("--run-progress", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-run-progress", action="store_true", help="no per-epoch progress lines of each run")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--dry-run", action="store_true", help="print the design (cells, seeds, run directories) and exit")
    bench = p.add_argument_group("batched-seed benchmark (instead of a study)")
    bench.add_argument("--bench-batched", action="store_true",
                       help="time the reference loop vs ours at S=1 and S seeds in one pass "
                            "(the same as 'cffdyn vit bench --seeds S')")
    bench.add_argument("--bench-seeds", type=int, default=7, help="S, seeds in the benchmark")
    bench.add_argument("--bench-steps", type=int, default=3, help="timed training steps per variant")
    bench.add_argument("--bench-batch", type=int, default=128, help="batch size in the benchmark")
    bench.add_argument("--bench-repeats", type=int, default=3,
                       help="interleaved timing rounds per variant (the fastest round is reported)")
    bench.add_argument("--bench-device", default="auto", choices=("auto", "cpu", "cuda"), help="benchmark device")
    return p


def _parse_kv(text: str, what: str) -> tuple[str, str]:
    if "=" not in text:
        raise ValueError(f"{what} {text!r}: expected FIELD=VALUE")
    k, v = text.split("=", 1)
    k = k.strip()
    if not k:
        raise ValueError(f"{what} {text!r}: empty field name")
    return k, v


def _preset(args: argparse.Namespace):
    from vit.study import PRESETS
    name = args.preset or ("full" if args.full else "quick")
    return name, PRESETS[name]


def config_from_args(args: argparse.Namespace):
    """The :class:`vit.study.StudyConfig` described by parsed arguments (UserError on bad input)."""
    from vit.study import parse_field_value

    _, cfg = _preset(args)
    base = cfg.base
    overrides = {}
    for s in args.sets:
        k, v = _parse_kv(s, "--set")
        overrides[k] = parse_field_value(k, v)
    if args.data_root is not None:
        if "data_root" in overrides and overrides["data_root"] != args.data_root:
            raise UserError("--data-root and --set data_root disagree", "give the directory once")
        overrides["data_root"] = args.data_root
    if "seed" in overrides:
        raise UserError("--set seed=...: the study sets the seed of each run", "use --seed0/--seeds")
    if overrides.get("data_root") is not None and not Path(overrides["data_root"]).is_dir():
        raise UserError(f"data root {overrides['data_root']} is not a directory",
                        "give the directory that holds the dataset files with --data-root DIR "
                        "(or --set data_root=DIR)")
    if overrides:
        base = base.replace(**overrides)
    factors = cfg.factors
    if args.factor:
        fl = []
        for s in args.factor:
            k, v = _parse_kv(s, "--factor")
            levels = tuple(parse_field_value(k, x) for x in v.split(",") if x.strip())
            fl.append((k, levels))
        factors = tuple(fl)
    return cfg.replace(base=base, factors=factors, n_seeds=args.seeds if args.seeds is not None else cfg.n_seeds,
                       seed0=args.seed0, metric=args.metric, alpha=args.alpha, assumed_ratio=args.assumed_ratio,
                       assumed_corr=args.assumed_corr, n_boot=args.n_boot, n_perm=args.n_perm,
                       stats_seed=args.stats_seed, batched=args.batched or cfg.batched,
                       batched_impl=args.batched_impl or cfg.batched_impl,
                       independent_seeds=args.independent_seeds, probe=not args.no_probe)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.bench_batched:
        from vit.bench import bench_configs, format_bench, run_bench
        from vit.train import resolve_device
        try:
            bcfg = bench_configs(resolve_device(args.bench_device)).replace(batch_size=args.bench_batch)
            res = run_bench(device=args.bench_device, rounds=args.bench_repeats, steps=args.bench_steps,
                            seeds=args.bench_seeds, cfg=bcfg)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        print(format_bench(res))
        return 0
    try:
        cfg = config_from_args(args)
    except ValueError as exc:     # TrainConfig/StudyConfig validation: one line, no usage block
        raise UserError(str(exc), "see 'cffdyn vit study --help'") from None
    from cffdyn.io import ensure_writable_dir
    from vit.study import cell_runs, describe_projection, run_dir, run_study

    if args.dry_run:
        print(f"factors: {cfg.factor_names}; {len(cfg.cells())} cells x {cfg.n_seeds} seeds = "
              f"{len(cell_runs(cfg))} runs ({'independent' if cfg.independent_seeds else 'matched'} seeds); "
              f"{describe_projection(cfg)}")
        for cell, seed in cell_runs(cfg):
            print(f"  {dict(zip(cfg.factor_names, cell))} seed {seed}: {run_dir(Path(args.out), cfg, cell, seed)}")
        return 0
    ensure_writable_dir(args.out, "--out")
    if cfg.base.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UserError("this study runs on a GPU (device cuda) but none is available",
                            "run it on a machine with one, or add --set device=cpu (far slower)")
    run_progress = not (args.quiet or args.no_run_progress)
    from vit.shard import run_study_torchrun, under_torchrun
    if under_torchrun():  # launched by torchrun: this rank trains its share, rank 0 merges
        res = run_study_torchrun(cfg, Path(args.out), progress=not args.quiet, run_progress=run_progress)
        if res is None:
            return 0
    else:
        res = run_study(cfg, Path(args.out), progress=not args.quiet, run_progress=run_progress)
    print(res["table"])
    t = res["timing"]
    if t:
        load_end = (t.get("machine") or {}).get("load_avg")
        load = f"1/5/15-min load average {t.get('load_avg_start')} at the start, {load_end} at the end"
        cpu = f", {t['cpu_s']:.0f} CPU-s on {t.get('torch_threads')} torch threads" if t.get("cpu_s") else ""
        print(f"\n{len(res['runs'])} runs ({t['n_trained_now']} trained now, {t['n_reused']} read back) "
              f"in {t['wall_s']:.1f} s{cpu}; {load}; results: {Path(args.out) / 'study.json'}")
    return 0
