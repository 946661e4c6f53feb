"""``cffdyn vit study``: the multi-seed factorial variance study from the command line.

Examples::

    cffdyn vit study --quick                                   # 2x2 x 3 seeds on CPU (~7 min, 2 cores)
    cffdyn vit study --preset fmnist-full --out results/vit/fmnist_full         # GPU, ~10 min (estimate)
    cffdyn vit study --preset cifar10-steier --data-root /data/cifar-10-batches-py
    cffdyn vit study --factor loss_mode=clamp,subtract --factor method=cff2,cff1 \\
        --seeds 12 --set epochs=3 --out results/vit/study_a
    cffdyn vit study --independent-seeds ...                   # every cell its own seeds
    cffdyn vit study --quick --executor local --workers 2      # tasks as local subprocesses
    cffdyn vit study --preset fmnist-full --seeds 50 --executor submitit \
        --slurm-partition gpu --slurm-time 120 --out /shared/fmnist50        # a Slurm job array
    cffdyn vit study --collect /shared/fmnist50                # study.json from what has finished
    cffdyn vit study --bench-batched                           # batched-seed measurement

Run the same command again after a kill: finished runs are read back, the interrupted one
resumes from its checkpoint.  Options not given keep the preset's values.  A diverged run is
recorded as failed (failed.json) and left out of the statistics; the rest of the study runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from cffdyn.errors import UserError, finite_float, make_parser, nonneg_int, positive_int
from cffdyn.io import output_dir
from vit.study_config import METRICS, SEED_DESIGNS
from vit.study_exec import EXECUTORS

__all__ = ["main", "build_parser", "config_from_args", "slurm_options_from_args"]

DEFAULT_OUT = "results/vit/study"


PRESET_HELP = {
    "quick": "CPU: loss_mode {clamp,subtract} x method {cff2,cff1} x 3 seeds on a fixed 6,000-image "
             "Fashion-MNIST subset, ViT[64 4 2] patch 7, batch 128, 16 epochs, crop padding 1 (measured 7 minutes "
             "on 2 idle cores)",
    "fmnist-full": "GPU: all 60,000 Fashion-MNIST images, ViT[128 4 5] patch 4, the 2x2 x 7 seeds, reference "
                   "hyper-parameters, seed-batched; epochs for about 10 minutes on one H100 (estimate)",
    "cifar10-steier": "GPU: Steier's design, CIFAR-10 (--data-root), ViT[128 4 5], 600 + 50 epochs, 2x2 x 7 seeds",
    "full": "GPU: CIFAR-10 (--data-root), ViT[128 4 5], 600 + 50 epochs, 2x2 x 12 seeds",
    "noise-dose": "CPU: loss_mode {clamp,subtract} x view_noise {0.25,0.6,1.25,2.0} x 12 matched seeds, seed design sgd "
                  "(init and split fixed), no augmentation but the view noise, ViT[32 4 2] on 4,000 Fashion-MNIST "
                  "images, 10 epochs (about 40 minutes on one core); analysed by 'cffdyn vit noise-dose'",
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
            "OUT/study.png, one train_run directory per run under OUT/runs and the task records under "
            "OUT/tasks; resumable.  A run that diverges (NaN/inf loss or metric) is recorded as "
            "failed (its run directory's failed.json, with the reason) and the study goes on; the "
            "statistics leave it out and say how many failed; exit 2 with one line if a cell is left "
            "with fewer than 2 runs."))
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
                   help="seeds per cell, 2 to 10,000 (default: the preset's)")
    p.add_argument("--seed0", type=nonneg_int, default=None, help="first seed (default: the preset's, 0)")
    p.add_argument("--independent-seeds", action="store_true", default=None,
                   help="every cell gets its own seeds (no seed shared between cells): the independent-"
                        "sample tests apply and the paired analysis does not; a study recorded with "
                        "matched seeds is not resumed this way")
    p.add_argument("--seed-design", default=None, choices=SEED_DESIGNS,
                   help="what a seed changes: all (initialisation, split, batch order, augmentation) | sgd (batch "
                        "order and augmentation only: init and split held at --seed0's, so the seed variance is "
                        "SGD noise; pairing unchanged) (default: the preset's)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="directory with the dataset files (CIFAR-10 batches, SVHN .mat, Fashion-MNIST "
                        "IDX); the same as --set data_root=DIR")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="sets",
                   help="override a field of the base TrainConfig (repeatable), e.g. --set epochs=3 "
                        "--set device=cuda; fix a variance source with --set seed_init=0 (also "
                        "seed_split, seed_order, seed_aug)")
    p.add_argument("--metric", default=None, choices=METRICS,
                   help="per-run result analysed (default: the preset's, test_acc)")
    p.add_argument("--alpha", type=finite_float, default=None,
                   help="test level for the power calculation (default: the preset's, 0.05)")
    p.add_argument("--assumed-ratio", type=finite_float, default=None,
                   help="variance ratio at which power and the seeds needed are also reported "
                        "(default: the preset's, 5.90 = Steier's CIFAR-10 clamp/subtraction ratio)")
    p.add_argument("--assumed-corr", type=finite_float, default=None,
                   help="correlation of the two runs of a seed pair assumed for the paired power "
                        "(default: the preset's, 0.5: half the variance shared by the seed); the observed "
                        "one is reported too")
    p.add_argument("--n-boot", type=positive_int, default=None, help="bootstrap resamples, 100 to 1,000,000 (default: the preset's)")
    p.add_argument("--n-perm", type=positive_int, default=None,
                   help="permutations for the permutation p-values, 100 to 1,000,000 (default: the preset's)")
    p.add_argument("--stats-seed", type=nonneg_int, default=None,
                   help="seed of the bootstrap and permutation draws (default: the preset's, 0)")
    p.add_argument("--no-probe", action="store_true", default=None, help="skip the raw-pixel linear probe")
    p.add_argument("--batched", action="store_true", default=None,
                   help="train the seeds of each cell together, weights with a leading seed dimension "
                        "(vit.train.train_runs; methods cff2/cff1 only; default: the preset's)")
    p.add_argument("--batched-impl", default=None, choices=("stacked",),
                   help="seed-batched engine: stacked weights, batched matmuls, one SDPA call (the only one)")
    p.add_argument("--out", default=DEFAULT_OUT, help="output directory (study.json, study.png, runs/, tasks/)")
    p.add_argument("--run-progress", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-run-progress", action="store_true", help="no per-epoch progress lines of each run")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--dry-run", action="store_true",
                   help="print the design (cells, seeds, run directories), the tasks and, with --executor "
                        "submitit, the Slurm parameters and arrays; then exit")
    ex = p.add_argument_group(
        "executors (the study as tasks: one per seed, or per seed batch, covering every cell)",
        "Without --executor the tasks run one after another in this process.  Each task writes its "
        "runs into OUT and resumes from their checkpoints; OUT/study.json lists unfinished tasks "
        "with their logs and is 'complete' only when every task is.")
    ex.add_argument("--executor", choices=EXECUTORS, default=None,
                    help="local: tasks as local subprocesses (submitit's LocalExecutor, or a process pool "
                         "without submitit); submitit: a Slurm job array (pip install 'cffdyn[cluster]')")
    ex.add_argument("--collect", metavar="DIR", default=None,
                    help="assemble DIR/study.json from the tasks finished so far, list the missing ones "
                         "with their logs, and exit (non-zero while incomplete); trains nothing")
    ex.add_argument("--seeds-per-task", type=positive_int, default=None,
                    help="seeds of one task (default: 1; a --batched study: up to 7, one GPU pass each)")
    ex.add_argument("--workers", type=positive_int, default=None,
                    help="--executor local: tasks at once (default: 1; on CUDA one per visible GPU)")
    ex.add_argument("--no-wait", action="store_true",
                    help="--executor submitit: submit the job array(s) and exit; collect later with --collect OUT")
    sl = p.add_argument_group(
        "Slurm (--executor submitit)",
        "Any other --slurm-NAME[=VALUE] is passed to sbatch as --NAME[=VALUE] (e.g. --slurm-account=abc, "
        "--slurm-qos=high, --slurm-constraint=a100, --slurm-mem=32G).")
    sl.add_argument("--slurm-partition", default=None, help="partition (default: the site's default)")
    sl.add_argument("--slurm-gpus-per-task", type=nonneg_int, default=None,
                    help="GPUs per array task (default: 1 for a study on device cuda, else 0)")
    sl.add_argument("--slurm-cpus-per-task", type=positive_int, default=None,
                    help="CPUs per array task, also its torch threads (default: 4)")
    sl.add_argument("--slurm-time", type=positive_int, default=None, metavar="MINUTES",
                    help="time limit per array task (default: twice the projected task time, 60 min to 24 h; "
                         "a task that runs out is requeued and resumes from its checkpoints)")
    sl.add_argument("--slurm-array-parallelism", type=positive_int, default=None,
                    help="array tasks running at once (default: 256)")
    sl.add_argument("--slurm-max-array-size", type=positive_int, default=None,
                    help="the site's MaxArraySize: longer studies are split into several arrays (default: 1000)")
    sl.add_argument("--slurm-max-requeue", type=nonneg_int, default=None,
                    help="time-outs after which a task is not requeued again (default: 3)")
    sl.add_argument("--slurm-setup", action="append", default=None, metavar="LINE",
                    help="shell line run before each task, e.g. 'module load cuda' (repeatable)")
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


#: study flag (argparse dest) -> StudyConfig field; a flag not given (None) keeps the preset's value
_STUDY_FLAGS = {"seeds": "n_seeds", "seed0": "seed0", "metric": "metric", "alpha": "alpha",
                "assumed_ratio": "assumed_ratio", "assumed_corr": "assumed_corr", "n_boot": "n_boot",
                "n_perm": "n_perm", "stats_seed": "stats_seed", "batched": "batched", "batched_impl": "batched_impl",
                "independent_seeds": "independent_seeds", "seed_design": "seed_design"}


def config_from_args(args: argparse.Namespace):
    """The :class:`vit.study.StudyConfig` described by parsed arguments (UserError on bad input):
    the preset, with only the options given on the command line changed."""
    from vit.config_args import parse_field_value

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
    changes = {field: getattr(args, flag) for flag, field in _STUDY_FLAGS.items() if getattr(args, flag) is not None}
    if overrides:
        changes["base"] = base.replace(**overrides)
    if args.no_probe:
        changes["probe"] = False
    if args.factor:
        fl = []
        for s in args.factor:
            k, v = _parse_kv(s, "--factor")
            levels = tuple(parse_field_value(k, x) for x in v.split(",") if x.strip())
            fl.append((k, levels))
        changes["factors"] = tuple(fl)
    return cfg.replace(**changes) if changes else cfg


_SLURM_NAMED = ("slurm_partition", "slurm_gpus_per_task", "slurm_cpus_per_task", "slurm_time",
                "slurm_array_parallelism", "slurm_max_array_size", "slurm_max_requeue", "slurm_setup")


def _passthrough(rest: Sequence[str], parser: argparse.ArgumentParser) -> tuple[tuple[str, object], ...]:
    """``--slurm-NAME[=VALUE]`` / ``--slurm-NAME VALUE`` tokens argparse did not know -> sbatch options."""
    out: list[tuple[str, object]] = []
    k = 0
    rest = list(rest)
    while k < len(rest):
        tok = rest[k]
        if not tok.startswith("--slurm-") or len(tok) <= len("--slurm-"):
            parser.error(f"unrecognized arguments: {' '.join(rest[k:])}")
        name = tok[len("--slurm-"):]
        if "=" in name:
            name, value = name.split("=", 1)
            k += 1
        elif k + 1 < len(rest) and not rest[k + 1].startswith("--"):
            value, k = rest[k + 1], k + 2
        else:
            value, k = True, k + 1
        out.append((name, value))
    return tuple(out)


def slurm_options_from_args(args: argparse.Namespace, extra: Sequence[tuple[str, object]] = ()):
    """The :class:`vit.study_exec.SlurmOptions` of the given ``--slurm-*`` options."""
    from vit.study_exec import SlurmOptions

    given = {n[len("slurm_"):]: getattr(args, n) for n in _SLURM_NAMED if getattr(args, n) is not None}
    if "time" in given:
        given["time_min"] = given.pop("time")
    if "setup" in given:
        given["setup"] = tuple(given["setup"])
    try:
        return SlurmOptions(extra=tuple(extra), **given)
    except ValueError as exc:
        raise UserError(str(exc), "see 'cffdyn vit study --help'") from None


def _print_study(res, out: Path) -> None:
    print(res["table"])
    for m in (res.get("tasks") or {}).get("missing", []):
        print(f"task {m['task']} (seeds {', '.join(map(str, m['seeds']))}): {m['state']}"
              + (f": {m['error']}" if m.get("error") else "") + f"; log: {m.get('log') or 'none'}")
    t = res.get("timing")
    if t:
        load_end = (t.get("machine") or {}).get("load_avg")
        load = f"1/5/15-min load average {t.get('load_avg_start')} at the start, {load_end} at the end"
        cpu = f", {t['cpu_s']:.0f} CPU-s on {t.get('torch_threads')} torch threads" if t.get("cpu_s") else ""
        print(f"\n{len(res['runs'])} runs ({t['n_trained_now']} trained now, {t['n_reused']} read back) "
              f"in {t['wall_s']:.1f} s{cpu}; {load}; results: {out / 'study.json'}")
    if res.get("n_failed"):
        print(f"{res['n_failed']} run(s) FAILED (diverged) and are left out of the statistics; each one's reason is "
              f"in its failed.json and in study.json's failed_runs")
    if res.get("status") != "complete":
        n = len((res.get("tasks") or {}).get("missing", []))
        print(f"study INCOMPLETE: {n} task(s) not finished; rerun the same command to run them, then "
              f"'cffdyn vit study --collect {out}'")


def _exit_code(res: dict) -> int:
    """0 for a complete study with statistics; 1 while tasks are missing.  A complete study whose
    diverged runs leave a cell with fewer than 2 runs has no result: one line (UserError, exit 2),
    as a diverged ``vit train`` run; its study.json and the failures stay recorded."""
    if res["status"] != "complete":
        return 1
    if res.get("analysis") is None:
        first = (res.get("failed_runs") or [{}])[0].get("reason", "")
        raise UserError(f"{res.get('n_failed', 0)} of {len(res['runs']) + res.get('n_failed', 0)} runs diverged, "
                        f"leaving a cell with fewer than 2 runs: no statistics (first: {first.split(';')[0]})",
                        "lower --set lr or raise --set tau, then rerun in a fresh --out (or delete the runs' "
                        "failed.json); study.json lists every failure")
    return 0


def _dry_run(cfg, args, slurm) -> int:
    from vit.study import describe_projection
    from vit.study_config import planned_runs
    from vit.study_tasks import plan_tasks

    plan = planned_runs(cfg, Path(args.out))
    print(f"factors: {cfg.factor_names}; {len(cfg.cells())} cells x {cfg.n_seeds} seeds = "
          f"{len(plan)} runs ({'independent' if cfg.independent_seeds else 'matched'} seeds); "
          f"{describe_projection(cfg)}")
    for r in plan:
        print(f"  {dict(zip(cfg.factor_names, r.cell))} seed {r.seed}: {r.dir}")
    tasks = plan_tasks(cfg, args.seeds_per_task)
    print(f"{len(tasks)} tasks, each covering every cell: " + "; ".join(
        f"{t.index}: seeds {','.join(map(str, t.seeds))}" for t in tasks[:8]) + (" ..." if len(tasks) > 8 else ""))
    if args.executor == "submitit":
        from vit.study_exec import array_chunks, slurm_parameters
        print(f"Slurm (submitit SlurmExecutor parameters): {slurm_parameters(cfg, tasks, slurm)}")
        chunks = array_chunks(tasks, slurm.max_array_size)
        print(f"{len(chunks)} job array(s) of " + ", ".join(str(len(c)) for c in chunks) + " task(s)")
    return 0


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    extra = _passthrough(rest, parser)
    if args.bench_batched:
        from vit.bench import bench_configs, format_bench, run_bench
        from vit.device import resolve_device
        try:
            bcfg = bench_configs(resolve_device(args.bench_device)).replace(batch_size=args.bench_batch)
            res = run_bench(device=args.bench_device, rounds=args.bench_repeats, steps=args.bench_steps,
                            seeds=args.bench_seeds, cfg=bcfg)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        print(format_bench(res))
        return 0
    if args.collect is not None:
        from vit.study import collect_study
        # it writes study.json: one writer per directory (a directory it had to create for
        # nothing, i.e. holding no plan, is removed again)
        with output_dir(args.collect, "--collect"):
            res = collect_study(Path(args.collect))
        _print_study(res, Path(args.collect))
        return _exit_code(res)
    slurm_given = [n for n in _SLURM_NAMED if getattr(args, n) is not None] + [f"slurm_{k}" for k, _ in extra]
    if slurm_given and args.executor != "submitit":
        raise UserError(f"--{slurm_given[0].replace('_', '-')} is a Slurm option, but the executor is "
                        f"{args.executor or 'this process'}", "add --executor submitit, or drop the --slurm-* options")
    if args.workers is not None and args.executor != "local":
        raise UserError("--workers sets the local executor's parallelism", "add --executor local, or drop --workers")
    if args.no_wait and args.executor != "submitit":
        raise UserError("--no-wait leaves the tasks to the Slurm queue", "add --executor submitit, or drop --no-wait")
    try:
        cfg = config_from_args(args)
    except ValueError as exc:     # TrainConfig/StudyConfig validation: one line, no usage block
        raise UserError(str(exc), "see 'cffdyn vit study --help'") from None
    slurm = slurm_options_from_args(args, extra) if args.executor == "submitit" else None
    if args.dry_run:
        return _dry_run(cfg, args, slurm)
    if cfg.base.device == "cuda" and args.executor != "submitit":   # a login node has no GPU: the tasks check
        import torch
        if not torch.cuda.is_available():
            raise UserError("this study runs on a GPU (device cuda) but none is available",
                            "run it on a machine with one, or add --set device=cpu (far slower)")
    out = Path(args.out)
    # one study process per --out (a second gets one line with the holder's pid; the tasks it
    # starts write under its lock); a study refused before it wrote anything leaves no empty --out
    with output_dir(out, "--out"):
        if args.executor is None:
            from vit.study import run_study
            res = run_study(cfg, out, progress=not args.quiet, run_progress=not (args.quiet or args.no_run_progress),
                            seeds_per_task=args.seeds_per_task)
        else:
            from vit.study_exec import submit_study
            res = submit_study(cfg, out, executor=args.executor, slurm=slurm, workers=args.workers,
                               wait=not args.no_wait, seeds_per_task=args.seeds_per_task, progress=not args.quiet)
    if res["status"] == "submitted":
        for i, (job, log) in res["jobs"].items():
            print(f"task {i}: job {job}, log {log}")
        print(f"collect with: cffdyn vit study --collect {out}")
        return 0
    _print_study(res, out)
    return _exit_code(res)
