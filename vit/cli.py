"""``cffdyn vit`` (= ``python -m vit``): train one run, plot its diagnostics, benchmark, studies.

Sub-commands
  train  one run of :func:`vit.train.train_run` (every :class:`TrainConfig` field is an option)
  plot   per-layer diagnostics of a run directory -> PNG
  bench  the reference training loop vs ours (S = 1 per precision, S = 7), interleaved rounds
  study  multi-seed factorial studies (:mod:`vit.study_cli`)
  analyze  Steier's analyses from recorded runs (:mod:`vit.analyze_cli`)

This module sits on top: it imports the library modules (config_args, train, pipeline, bench,
plot, study_cli) and nothing imports it.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from cffdyn.errors import UserError, make_parser, positive_int
from cffdyn.io import output_dir
from vit.config_args import add_train_config_args, train_config_from_args

__all__ = ["main"]


def _cmd_train(ns: argparse.Namespace, argv: Sequence[str]) -> int:
    from vit.train import train_run

    try:
        cfg = train_config_from_args(ns, argv)
    except ValueError as exc:
        raise UserError(str(exc).replace("TrainConfig: ", ""), "see 'cffdyn vit train --help'") from None
    out = Path(ns.out) if ns.out else Path("results/vit/runs") / _run_name(cfg)
    # one writer per run directory (a second process gets one line with the holder's pid); a run
    # refused before it wrote anything leaves no empty --out.  Under torchrun rank 0 holds it for
    # the group (a refused rank 0 ends the group); spawned pipeline stages run under the launcher's.
    torchrun_rank = os.environ.get("RANK") if "RANK" in os.environ and "WORLD_SIZE" in os.environ else None
    lock = output_dir(out, "--out") if not (ns.pipeline and torchrun_rank not in (None, "0")) \
        else contextlib.nullcontext()
    with lock:
        if ns.pipeline:  # layer pipeline over processes (vit.pipeline); only rank 0 reports
            from vit.pipeline import run_pipeline_from_args
            res = run_pipeline_from_args(ns, cfg, out)
        else:
            res = train_run(cfg, out, progress=not ns.quiet)
    if res is None:
        return 0
    print(f"run dir: {out}")
    print(f"device {res['device']}  precision {res.get('precision', cfg.precision)}  protocol "
          f"{res.get('protocol', cfg.protocol)}  best epoch (0-based) {res['best_epoch']}  val acc "
          f"{res['val_acc']:.4f}  test acc {res['test_acc']:.4f}  (top-{res['topk']}: {res['test_topk_acc']:.4f})  "
          f"epoch time {res['epoch_time_s']:.2f} s")
    if res.get("departures"):
        print("departures from the reference protocol: " + ", ".join(res["departures"]))
    if res["per_layer"]:
        print("layer  margin   loss     CAR   grad_norm  pos_sim  neg_sim")
    for r in res["per_layer"]:
        print(f"{r['layer']:>5}  {r['margin']:.3f}  {r['loss']:7.4f}  {r['car']:.3f}  {r['grad_norm']:9.4f}  "
              f"{r['pos_sim']:.3f}    {r['neg_sim']:.3f}")
    return 0


def _run_name(cfg) -> str:
    h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg.dataset}_{cfg.method}_{cfg.loss_mode}_seed{cfg.seed}_{h}"


def _cmd_plot(ns: argparse.Namespace, argv: Sequence[str]) -> int:
    from vit.plot import plot_run, read_run

    out = Path(ns.out) if ns.out else Path(ns.run_dir)
    if out.suffix.lower() == ".png" and not out.is_dir():
        raise UserError(f"--out {out} names a PNG; --out is a directory (it gets diagnostics.png)",
                        f"give --out {out.parent}")
    read_run(Path(ns.run_dir))   # the input first: a bad one leaves no --out behind
    with output_dir(out, "--out"):
        path = plot_run(Path(ns.run_dir), out)
    print(f"wrote {path}")
    return 0


def _cmd_bench(ns: argparse.Namespace, argv: Sequence[str]) -> int:
    from vit.bench import format_bench, run_bench

    if ns.json:
        from cffdyn.io import ensure_writable_file
        ensure_writable_file(ns.json, "--json")
    if ns.epoch:
        from vit.bench import format_epoch_bench, parse_threads, run_epoch_bench
        res = run_epoch_bench(device=ns.device, rounds=ns.rounds or 3, threads=parse_threads(ns.threads),
                              n_train=ns.n_train, n_val=ns.n_val, workers=ns.workers, data_root=ns.data_root,
                              json_path=Path(ns.json) if ns.json else None)
        print(format_epoch_bench(res))
        return 0
    res = run_bench(device=ns.device, rounds=ns.rounds or 5, steps=ns.steps, seeds=ns.seeds, workers=ns.workers,
                    data_root=ns.data_root, json_path=Path(ns.json) if ns.json else None)
    print(format_bench(res))
    return 0


def build_parser(prog: str = "cffdyn vit") -> argparse.ArgumentParser:
    from vit.pipeline import add_pipeline_args

    ap = make_parser(prog, description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", metavar="{train,plot,bench,study,analyze}")
    tp = sub.add_parser("train", help="train one run (CFF or a baseline)",
                        description="Train one run; writes log.jsonl, ckpt.pt (resume) and result.json "
                                    "(with protocol, precision and departures) into --out, which one process "
                                    "writes at a time. Rerunning resumes from ckpt.pt (checked against the run "
                                    "first) or reads result.json back. Progress lines name the epoch's "
                                    "selection metric and validation accuracy (CFF: val_loss_last_layer and "
                                    "ncm_val_acc, the nearest-class-mean accuracy; the summary's val acc is the "
                                    "stage-2 head's). Defaults are the CPU quick "
                                    "preset vit.config.QUICK (QUICK_DIGITS with --dataset digits); under --protocol "
                                    "reference the head lr is the reference's 5e-4, on cifar100 --topk is 5.")
    add_train_config_args(tp)
    tp.add_argument("--out", default=None, help="run directory (default results/vit/runs/<name>_<config hash>)")
    tp.add_argument("--quiet", action="store_true", help="no progress lines")
    add_pipeline_args(tp)
    pp = sub.add_parser("plot", help="plot per-layer diagnostics of a run directory",
                        description="Per-layer loss, CAR, gradient norm, pos/neg similarity over epochs "
                                    "(and Fisher when logged) from RUN_DIR/log.jsonl -> PNG.")
    pp.add_argument("run_dir", help="directory written by 'train' (holds log.jsonl)")
    pp.add_argument("--out", default=None, metavar="DIR",
                    help="output directory: writes DIR/diagnostics.png (default: RUN_DIR)")
    bp = sub.add_parser("bench", help="reference training loop vs ours, interleaved rounds",
                        description="Times one CFF training step (cff2, all layers) of the reference loop as "
                                    "the reference runs it (two forwards per layer, .item() per layer, "
                                    "nn.MultiheadAttention blocks with default init, per-sample CPU "
                                    "augmentation in a DataLoader with pinned memory, fp32) against ours at "
                                    "S=1 for each precision the device supports and at S=7 seeds in one pass; "
                                    "rounds interleaved (A B C A B C ...), median and spread. GPU: ViT[128 4 5], "
                                    "patch 4, 32x32, batch 512; CPU: ViT[64 4 4], patch 7, 28x28, batch 128.")
    bp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device")
    bp.add_argument("--epoch", action="store_true",
                    help="time whole stage-1 epochs (train + valid pass) of the published reference loop, ported "
                         "operation for operation (its 4 DataLoader workers), against ours, at each --threads setting")
    bp.add_argument("--threads", default="1,all", help="--epoch: torch thread counts, e.g. 1,all (default)")
    bp.add_argument("--n-train", type=positive_int, default=2048, help="--epoch: training images (default 2048)")
    bp.add_argument("--n-val", type=positive_int, default=256, help="--epoch: valid images (default 256)")
    bp.add_argument("--rounds", type=positive_int, default=None,
                    help="interleaved timed rounds after one warm-up (default 5; --epoch: 3)")
    bp.add_argument("--steps", type=positive_int, default=3, help="training steps per row per round")
    bp.add_argument("--seeds", type=positive_int, default=7, help="S of the seed-batched row")
    bp.add_argument("--workers", type=int, default=None,
                    help="DataLoader workers of the reference row (default 4, capped at the CPU count; --epoch: 4 "
                         "as published)")
    bp.add_argument("--data-root", default=None, help="CIFAR-10 directory (default: random 32x32 images on GPU, "
                                                      "Fashion-MNIST on CPU)")
    bp.add_argument("--json", default=None, help="also write the rows and machine_info() as JSON here")
    sub.add_parser("study", help="multi-seed factorial studies (see 'study --help')", add_help=False)
    sub.add_parser("analyze", help="Steier's analyses from recorded runs (see 'analyze --help')", add_help=False)
    sub.add_parser("noise-dose", help="the noise-dose study: the recorded prediction tested dose by dose "
                                      "(see 'noise-dose --help')", add_help=False)
    return ap


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    prog = prog or "cffdyn vit"
    if args and args[0] == "study":
        study_cli = importlib.import_module("vit.study_cli")
        return int(study_cli.main(args[1:], prog=prog + " study") or 0)
    if args and args[0] == "noise-dose":   # the noise-dose study and its test of the prediction
        from vit import noise_dose_cli
        return int(noise_dose_cli.main(args[1:], prog=prog + " noise-dose") or 0)
    if args and args[0] == "analyze":   # Steier's analyses from recorded runs (vit/analyze_cli.py)
        from vit import analyze_cli
        return int(analyze_cli.main(args[1:], prog=prog + " analyze") or 0)
    ap = build_parser(prog)
    ns = ap.parse_args(args)
    if ns.cmd is None:
        ap.print_help()
        return 2
    try:
        return {"train": _cmd_train, "plot": _cmd_plot, "bench": _cmd_bench}[ns.cmd](ns, args)
    except UserError:
        raise
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc).replace("TrainConfig: ", "")) from None
