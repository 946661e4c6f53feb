"""``cffdyn vit study``: the multi-seed factorial variance study from the command line.

Examples::

    cffdyn vit study --quick                                   # 2x2 x 3 seeds on CPU
    cffdyn vit study --factor loss_mode=clamp,subtract --factor method=cff2,cff1 \\
        --seeds 12 --set epochs=3 --out results/vit/study_a
    cffdyn vit study --full --set data_root=/data/cifar10       # 2x2 x 12 seeds, CIFAR-10
    cffdyn vit study --bench-batched                           # batched-seed measurement

Run the same command again after a kill: finished runs are read back, the interrupted one
resumes from its checkpoint.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser", "config_from_args"]

DEFAULT_OUT = "results/vit/study"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=(
            "Multi-seed factorial variance study (Steier 2026 design): every cell (level "
            "combination of the factors) is trained with the same n seeds; the pooled within-cell "
            "variance ratio between the levels of each factor is tested (F, Levene, Brown-Forsythe, "
            "permutation, stratified bootstrap CI), means by Welch's t-test, with the F-test's power "
            "and the seeds needed for 80% power.  Writes OUT/study.json, OUT/study.png and one "
            "train_run directory per run under OUT/runs; resumable."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true",
                        help="CPU quick preset: loss_mode {clamp,subtract} x method {cff2,cff1} x 3 seeds, "
                             "base vit.train.QUICK: ViT[64 4 4] on a 3000-image Fashion-MNIST pool (the default preset)")
    preset.add_argument("--full", action="store_true",
                        help="full preset: the same factorial x 12 seeds on the CFF CIFAR-10 protocol "
                             "(ViT[128 4 5], 600+50 epochs; needs --set data_root=... and a GPU)")
    p.add_argument("--factor", action="append", default=[], metavar="FIELD=L1,L2[,...]",
                   help="a factor: a TrainConfig field and its levels (repeatable; replaces the preset's "
                        "factors when given), e.g. --factor loss_mode=clamp,subtract --factor m0=0.2,0.4")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds per cell (default: the preset's, 3 quick / 12 full); seeds are "
                        "SEED0..SEED0+N-1 in every cell")
    p.add_argument("--seed0", type=int, default=0, help="first seed")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="sets",
                   help="override a field of the base TrainConfig (repeatable), e.g. --set epochs=3 "
                        "--set device=cuda; fix a variance source with --set seed_init=0 (also "
                        "seed_split, seed_order, seed_aug)")
    p.add_argument("--metric", default="test_acc",
                   choices=("test_acc", "val_acc", "test_topk_acc", "val_topk_acc"),
                   help="per-run result analysed")
    p.add_argument("--alpha", type=float, default=0.05, help="test level for the power calculation")
    p.add_argument("--assumed-ratio", type=float, default=5.90,
                   help="variance ratio at which power and the seeds needed are also reported "
                        "(5.90 = Steier's CIFAR-10 clamp/subtraction ratio)")
    p.add_argument("--n-boot", type=int, default=9999, help="bootstrap resamples (stratified by cell)")
    p.add_argument("--n-perm", type=int, default=9999, help="permutations for the permutation p-value")
    p.add_argument("--stats-seed", type=int, default=0, help="seed of the bootstrap and permutation draws")
    p.add_argument("--batched", action="store_true",
                   help="train the seeds of each cell together, weights with a leading seed dimension "
                        "(vit.train.train_runs; methods cff2/cff1 only)")
    p.add_argument("--batched-impl", default="stacked", choices=("stacked",),
                   help="seed-batched engine: stacked weights, batched matmuls, one SDPA call (the only one)")
    p.add_argument("--out", default=DEFAULT_OUT, help="output directory (study.json, study.png, runs/)")
    p.add_argument("--run-progress", action="store_true", help="also print each run's per-epoch progress")
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


def config_from_args(args: argparse.Namespace):
    """The :class:`vit.study.StudyConfig` described by parsed arguments (ValueError on bad input)."""
    from vit.study import FULL, QUICK, parse_field_value

    cfg = FULL if args.full else QUICK
    base = cfg.base
    overrides = {}
    for s in args.sets:
        k, v = _parse_kv(s, "--set")
        overrides[k] = parse_field_value(k, v)
    if "seed" in overrides:
        raise ValueError("--set seed=...: the study sets the seed of each run; use --seed0/--seeds")
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
                       n_boot=args.n_boot, n_perm=args.n_perm, stats_seed=args.stats_seed,
                       batched=args.batched, batched_impl=args.batched_impl)


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
            parser.error(str(exc))
        print(format_bench(res))
        return 0
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    from vit.study import cell_runs, run_dir, run_study

    if args.dry_run:
        print(f"factors: {cfg.factor_names}; {len(cfg.cells())} cells x {cfg.n_seeds} seeds = "
              f"{len(cell_runs(cfg))} runs")
        for cell, seed in cell_runs(cfg):
            print(f"  {dict(zip(cfg.factor_names, cell))} seed {seed}: {run_dir(Path(args.out), cfg, cell, seed)}")
        return 0
    from vit.shard import run_study_torchrun, under_torchrun
    if under_torchrun():  # launched by torchrun: this rank trains its share, rank 0 merges
        res = run_study_torchrun(cfg, Path(args.out), progress=not args.quiet, run_progress=args.run_progress)
        if res is None:
            return 0
    else:
        res = run_study(cfg, Path(args.out), progress=not args.quiet, run_progress=args.run_progress)
    print(res["table"])
    t = res["timing"]
    if t:
        print(f"\n{len(res['runs'])} runs ({t['n_trained_now']} trained now, {t['n_reused']} read back) "
              f"in {t['wall_s']:.1f} s; results: {Path(args.out) / 'study.json'}")
    return 0
