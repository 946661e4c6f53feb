"""``cffdyn vit`` (= ``python -m vit``): train one run, plot its diagnostics, benchmark, studies.

Sub-commands
  train  one run of :func:`vit.train.train_run` (every :class:`TrainConfig` field is an option)
  plot   per-layer diagnostics of a run directory -> PNG
  bench  reference-style training step vs ours, epoch times side by side with the ratio
  study  multi-seed factorial studies (:mod:`vit.study_cli`)
  analyze  Steier's analyses from recorded runs (:mod:`vit.analyze_cli`)
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main", "FIELD_HELP", "add_train_config_args", "train_config_from_args"]

FIELD_HELP: dict[str, str] = {
    "dataset": "dataset: fashion_mnist | digits | cifar10 | cifar100 | svhn",
    "data_root": "directory with the dataset files (Fashion-MNIST default: $CFFDYN_FMNIST or "
                 "/usr/share/datasets/fashion-mnist; CIFAR/SVHN need it)",
    "subset": "size of the training pool before the 90/10 train/val split ('none' = all)",
    "image_size": "digits only: 8 (native) or 16 (2x upsampled); 'none' = native",
    "model": "encoder: vit (ViT[E H L]) or mlp (MLP[E L]); ffcl always uses its 64-64 MLPs",
    "embed_dim": "embedding width E",
    "heads": "attention heads H (ViT)",
    "layers": "number of layers L (trained layer by layer)",
    "patch": "patch side p (image side must be divisible by it)",
    "method": "cff2 (two views, two-forward CFF) | cff1 (one view) | bp (BP+CE) | ff (Forward-Forward, "
              "label token) | ffcl (Improved FFCL, two MLPs)",
    "loss_mode": "margin handling: clamp (CFF min(s+m,1)) | subtract (gradient-neutral) | none (SupCon)",
    "m0": "margin of the first layer, in [0, 2]",
    "m_last": "margin of the last layer, in [0, 2] (linear schedule in between)",
    "tau": "SupCon temperature",
    "epochs": "stage-1 epochs (all epochs for bp/ff/ffcl)",
    "head_epochs": "stage-2 epochs of the LayerNorm+Linear head (CFF)",
    "batch_size": "batch size (samples; CFF two-forward sees 2x as many rows)",
    "lr": "AdamW learning rate of every layer (constant)",
    "wd": "AdamW weight decay",
    "head_lr": "AdamW learning rate of the stage-2 head",
    "ff_threshold": "FF goodness threshold theta",
    "seed": "run seed (derives the init/order/augmentation seeds; is the split seed)",
    "seed_init": "fix the weight-init seed ('none' = derived from --seed)",
    "seed_split": "fix the subset/train/val split seed ('none' = --seed)",
    "seed_order": "fix the batch-order seed ('none' = derived from --seed)",
    "seed_aug": "fix the augmentation seed ('none' = derived from --seed)",
    "augment": "augmentation: crop_flip | none | randaug (batched, on the device)",
    "device": "auto | cpu | cuda",
    "amp": "bf16 autocast on GPU (ignored on CPU)",
    "compile": "torch.compile each layer (GPU)",
    "fisher": "Fisher criterion Tr(S_W^-1 S_B) per layer each epoch (validation features)",
    "topk": "also report top-k accuracy for this k",
}


def _optional(kind):
    def parse(s: str):
        return None if s.lower() in ("none", "null", "") else kind(s)
    parse.__name__ = kind.__name__
    return parse


def _bool(s: str) -> bool:
    v = s.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def add_train_config_args(p: argparse.ArgumentParser, defaults=None) -> None:
    """One ``--field`` option per :class:`TrainConfig` field (help from ``FIELD_HELP``)."""
    from vit.train import TrainConfig, QUICK

    base = defaults or QUICK
    for f in dataclasses.fields(TrainConfig):
        d = getattr(base, f.name)
        t = f.type if isinstance(f.type, str) else str(f.type)
        if "bool" in t:
            kind = _bool
        elif "int" in t:
            kind = int
        elif "float" in t:
            kind = float
        else:
            kind = str
        if "None" in t:
            kind = _optional(kind)
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=d,
                       metavar=f.name.upper(), help=FIELD_HELP.get(f.name, f.name))


def train_config_from_args(ns: argparse.Namespace):
    from vit.train import TrainConfig

    return TrainConfig(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(TrainConfig)})


def _cmd_train(ns: argparse.Namespace) -> int:
    from vit.train import train_run

    cfg = train_config_from_args(ns)
    out = Path(ns.out) if ns.out else Path("results/vit/runs") / _run_name(cfg)
    if ns.pipeline:  # layer pipeline over processes (vit.pipeline); only rank 0 reports
        from vit.pipeline import run_pipeline_from_args
        res = run_pipeline_from_args(ns, cfg, out)
        if res is None:
            return 0
    else:
        res = train_run(cfg, out, progress=not ns.quiet)
    print(f"run dir: {out}")
    print(f"device {res['device']}  best epoch (0-based) {res['best_epoch']}  val acc {res['val_acc']:.4f}  "
          f"test acc {res['test_acc']:.4f}  (top-{res['topk']}: {res['test_topk_acc']:.4f})  "
          f"epoch time {res['epoch_time_s']:.2f} s")
    print("layer  margin   loss     CAR   grad_norm  pos_sim  neg_sim")
    for r in res["per_layer"]:
        loss = r["loss"]
        print(f"{r['layer']:>5}  {r['margin']:.3f}  {loss:7.4f}  {r['car']:.3f}  {r['grad_norm']:9.4f}  "
              f"{r['pos_sim']:.3f}    {r['neg_sim']:.3f}")
    return 0


def _run_name(cfg) -> str:
    import hashlib

    h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg.dataset}_{cfg.method}_{cfg.loss_mode}_seed{cfg.seed}_{h}"


def _cmd_plot(ns: argparse.Namespace) -> int:
    from vit.plot import plot_run

    path = plot_run(Path(ns.run_dir), Path(ns.out) if ns.out else None)
    print(f"wrote {path}")
    return 0


def _cmd_bench(ns: argparse.Namespace) -> int:
    from vit.bench import run_bench

    run_bench(device=ns.device, epochs=ns.epochs, subset=ns.subset, data_root=ns.data_root,
              dataset=ns.dataset, out=Path(ns.out) if ns.out else None)
    return 0


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    prog = prog or "cffdyn vit"
    if args and args[0] == "study":
        try:
            study_cli = importlib.import_module("vit.study_cli")
        except ModuleNotFoundError as exc:
            if exc.name != "vit.study_cli":
                raise
            print(f"{prog} study: vit/study_cli.py is not installed in this tree", file=sys.stderr)
            return 2
        return int(study_cli.main(args[1:], prog=prog + " study") or 0)
    if args and args[0] == "analyze":   # Steier's analyses from recorded runs (vit/analyze_cli.py)
        from vit import analyze_cli
        return int(analyze_cli.main(args[1:], prog=prog + " analyze") or 0)

    fmt = argparse.ArgumentDefaultsHelpFormatter
    ap = argparse.ArgumentParser(prog=prog, formatter_class=fmt, description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", metavar="{train,plot,bench,study,analyze}")
    tp = sub.add_parser("train", formatter_class=fmt, help="train one run (CFF or a baseline)",
                        description="Train one run; writes log.jsonl, ckpt.pt (resume) and result.json. "
                                    "Defaults are the CPU quick preset vit.train.QUICK.")
    add_train_config_args(tp)
    tp.add_argument("--out", default=None, help="run directory (default results/vit/runs/<name>_<config hash>)")
    tp.add_argument("--quiet", action="store_true", help="no progress lines")
    from vit.pipeline import add_pipeline_args
    add_pipeline_args(tp)
    pp = sub.add_parser("plot", formatter_class=fmt, help="plot per-layer diagnostics of a run directory",
                        description="Per-layer loss, CAR, gradient norm, pos/neg similarity over epochs "
                                    "(and Fisher when logged) from RUN_DIR/log.jsonl -> PNG.")
    pp.add_argument("run_dir", help="directory written by 'train' (holds log.jsonl)")
    pp.add_argument("--out", default=None, help="PNG path (default RUN_DIR/diagnostics.png)")
    bp = sub.add_parser("bench", formatter_class=fmt, help="reference-style vs ours: epoch times and ratio",
                        description="Times a faithful re-implementation of the reference CFF training step "
                                    "(two separate forwards per layer, .item() per layer, fp32, per-sample CPU "
                                    "augmentation) against ours (one concatenated forward, on-device batched "
                                    "augmentation, one sync per epoch, bf16+compile on GPU) and prints the epoch "
                                    "times side by side with their ratio. CPU: ViT[64 4 4] on Fashion-MNIST; "
                                    "GPU: ViT[128 4 5] on 32x32 (CIFAR-10 with --data-root, else random "
                                    "32x32 data), batch 512.")
    bp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device")
    bp.add_argument("--epochs", type=int, default=2, help="timed epochs per implementation (after one warm-up)")
    bp.add_argument("--subset", type=int, default=None,
                    help="training images per epoch (default 2048 on CPU, 10240 on GPU)")
    bp.add_argument("--dataset", default=None, help="dataset (default fashion_mnist on CPU, cifar10 on GPU "
                                                     "when --data-root is given, else synthetic 32x32)")
    bp.add_argument("--data-root", default=None, help="dataset directory")
    bp.add_argument("--out", default=None, help="also write the numbers as JSON here")
    sub.add_parser("study", help="multi-seed factorial studies (see 'study --help')", add_help=False)
    sub.add_parser("analyze", help="Steier's analyses from recorded runs (see 'analyze --help')", add_help=False)
    ns = ap.parse_args(args)
    if ns.cmd is None:
        ap.print_help()
        return 2
    try:
        return {"train": _cmd_train, "plot": _cmd_plot, "bench": _cmd_bench}[ns.cmd](ns)
    except (ValueError, FileNotFoundError) as exc:
        print(f"{prog} {ns.cmd}: error: {exc}", file=sys.stderr)
        return 2
