"""``cffdyn vit analyze``: Steier's analyses from recorded runs, one command each.

Examples::

    cffdyn vit analyze factorial results/vit/study               # margin form x views (cff2/cff1)
    cffdyn vit analyze factorial results/vit/study --second m0   # any TrainConfig field
    cffdyn vit analyze car results/vit/study                     # CAR per layer per epoch
    cffdyn vit analyze grad-norms results/vit/study              # layer-wise gradient norms
    cffdyn vit analyze dose-response results/vit/dose            # m0 in {0.1, 0.2, 0.4}: VR, layer-0 CAR
    cffdyn vit analyze pair-density [results/vit/study]          # positives per batch vs batch size

Each writes ``OUT/<analysis>.json`` and ``OUT/<analysis>.png`` (default OUT: the first
directory given, or ``results/vit/analyses``) and prints its table.  The dose-response study is
recorded with ``cffdyn vit study --factor m0=0.1,0.2,0.4 --factor loss_mode=clamp,subtract``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from cffdyn.errors import UserError, make_parser
from vit.study_config import resamples_arg

__all__ = ["main", "build_parser"]


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = make_parser(prog=prog, description="Steier's analyses from recorded runs (nothing is trained): the "
                                           "factorial, CAR per layer per epoch, layer-wise gradient norms, the "
                                           "reduced-margin dose-response and the positive-pair density per batch.")
    sub = p.add_subparsers(dest="analysis", metavar="{factorial,car,grad-norms,dose-response,pair-density}")
    helps = {"factorial": "2x2 factorial: margin form x a second factor (default: one/two views)",
             "car": "clamp activation rate per layer per epoch, mean ± SD per cell",
             "grad-norms": "gradient norm of each layer per epoch, mean ± SD per cell",
             "dose-response": "reduced-margin probe: VR clamp/subtraction and layer-0 CAR per m0",
             "pair-density": "positive pairs per batch vs batch size and number of classes"}
    for name, h in helps.items():
        sp = sub.add_parser(name, help=h, description=h)
        sp.add_argument("dirs", nargs="*" if name == "pair-density" else "+", metavar="DIR",
                        help="study directories (with runs/) or run directories")
        sp.add_argument("--out", default=None, help="output directory (default: the first DIR, else "
                                                    "results/vit/analyses)")
        if name == "factorial":
            sp.add_argument("--second", default="method", help="second factor: any TrainConfig field")
            sp.add_argument("--metric", default="test_acc", choices=("test_acc", "val_acc"), help="metric")
            sp.add_argument("--n-boot", type=resamples_arg, default=9999, help="bootstrap resamples")
            sp.add_argument("--n-perm", type=resamples_arg, default=9999, help="permutations")
        if name in ("car", "grad-norms"):
            sp.add_argument("--group", default="loss_mode,method",
                            help="TrainConfig fields that define a cell (comma-separated)")
    return p


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    from cffdyn.io import atomic_write_json, output_dir
    from vit import analyses as A

    parser = build_parser(prog)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.analysis is None:
        raise UserError("no analysis named", "give one of factorial, car, grad-norms, dose-response, pair-density")
    out = Path(args.out or (args.dirs[0] if args.dirs else "results/vit/analyses"))
    if args.dirs and args.out is None and (out / "result.json").is_file():
        out = out / "analyses"
    runs = A.load_runs(args.dirs) if args.dirs else None   # inputs first: a bad one must leave nothing behind
    group = [g.strip() for g in getattr(args, "group", "").split(",") if g.strip()]
    if args.analysis in ("car", "grad-norms") and not group:   # no field: every run would pool into one cell
        raise UserError(f"--group {args.group!r} names no field", "give TrainConfig fields, e.g. --group loss_mode,method")
    if runs is not None and args.analysis in ("car", "grad-norms"):
        A.check_fields(runs, group)
    name = args.analysis.replace("-", "_")
    fig = out / f"{name}.png"
    with output_dir(out, "--out"):   # one writer per directory; a failed analysis leaves no empty --out
        if args.analysis == "factorial":
            res = A.factorial(runs, second=args.second, metric=args.metric, n_boot=args.n_boot,
                              n_perm=args.n_perm, figure=fig)
        elif args.analysis in ("car", "grad-norms"):
            fn = A.car_per_epoch if args.analysis == "car" else A.grad_norms
            res = fn(runs, group=group, figure=fig)
            res["table"] = _per_layer_table(res, 100.0 if args.analysis == "car" else 1.0)
        elif args.analysis == "dose-response":
            res = A.dose_response(runs, figure=fig)
        else:
            res = A.pair_density(runs, figure=fig)
        atomic_write_json(out / f"{name}.json", res)
    print(res["table"])
    print(f"\nwritten: {out / f'{name}.json'}, {fig}")
    return 0


def _per_layer_table(res, scale: float) -> str:
    lines = []
    for c in res["cells"]:
        lab = ", ".join(f"{k} {v}" for k, v in c["levels"].items())
        last = c["mean"][-1]
        first = c["mean"][0]
        lines.append(f"{lab} ({c['n']} seeds), epoch 1 -> {c['epochs']}: " + "; ".join(
            f"layer {l} {scale * first[l]:.3g} -> {scale * last[l]:.3g}" for l in range(c["layers"])))
    return "\n".join(lines)
