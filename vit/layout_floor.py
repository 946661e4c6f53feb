"""The floating-point floor of the seed-stacking layout: one seed trained in an S-seed pass vs alone.

A seed's arithmetic may depend on its layout (the number S of seeds stacked in one pass and its
position there): batched kernels over the seed axis (one ``baddbmm`` for S linear maps, a
strided reduction over seeds) round differently from the one-seed kernels, and AdamW carries the
difference through a run.  The engine therefore runs each seed through the one-seed kernels
(:mod:`vit.models`, :func:`vit.method.seed_grad_norm`), and this module measures what is left as
a control arm: the same S seeds trained once stacked (one S-seed pass) and once separately (S
one-seed passes), per seed the differences of test accuracy, selected epoch and training loss,
beside the seed standard deviation of test accuracy.  Zero is the expected floor on one
machine and thread count; anything else is a layout effect, not seed variance.

Which layout a run had is part of its result (``result.json["seed_batch"]``: ``n_seeds`` and
``position``); :func:`check_one_layout` refuses results of a comparison that mix layouts.

CLI::

    python -m vit.layout_floor --seeds 3 --out recorded/vit/layout_floor/quick.json
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from cffdyn.errors import UserError, make_parser, positive_int
from cffdyn.io import atomic_write_json

__all__ = ["layout_of", "check_one_layout", "layout_floor", "main"]


def layout_of(result: dict[str, Any]) -> tuple[int, int]:
    """(S, position) of a recorded run: how many seeds its pass stacked and where it sat."""
    sb = result.get("seed_batch") or {}
    return int(sb.get("n_seeds", 1)), int(sb.get("position", 0))


def check_one_layout(results: Sequence[dict[str, Any]], what: str = "runs") -> int:
    """The one stacking size S shared by ``results`` (ValueError naming both sizes when they mix:
    stacked and separate runs of one seed differ at the floating-point floor, so one comparison
    must not mix them)."""
    sizes = sorted({layout_of(r)[0] for r in results})
    if len(sizes) > 1:
        raise ValueError(f"{what} mix seed-stacking layouts (S = {', '.join(map(str, sizes))}): stacked and "
                         f"separate runs of one seed differ in floating point; rerun them with one layout")
    return sizes[0] if sizes else 1


def _loss_gap(a: dict[str, Any], b: dict[str, Any]) -> list[float]:
    """Per epoch the largest |difference| of the per-layer training loss of two runs of one seed."""
    return [max(abs(la["loss"] - lb["loss"]) for la, lb in zip(ha["layers"], hb["layers"]))
            for ha, hb in zip(a["history"], b["history"])]


def layout_floor(stacked: Sequence[dict[str, Any]], separate: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The layout floor from the results of S seeds trained stacked and the same seeds trained
    separately (matched by position): per seed |Δ test acc|, the selected epochs, the loss gap
    per epoch; the mean and max |Δ test acc| beside the seed SD of test accuracy (each layout)."""
    if len(stacked) != len(separate) or len(stacked) < 2:
        raise ValueError(f"need the same >= 2 seeds in both layouts; got {len(stacked)} stacked, {len(separate)} separate")
    per = []
    for a, b in zip(stacked, separate):
        if a["config"] != b["config"]:
            raise ValueError(f"stacked and separate results of seed {a['config'].get('seed')} have different configs")
        gap = _loss_gap(a, b)
        per.append({"seed": a["config"]["seed"], "test_acc_stacked": a["test_acc"], "test_acc_separate": b["test_acc"],
                    "abs_diff_test_acc": abs(a["test_acc"] - b["test_acc"]),
                    "best_epoch_stacked": a["best_epoch"], "best_epoch_separate": b["best_epoch"],
                    "loss_gap_per_epoch": gap})
    d = [p["abs_diff_test_acc"] for p in per]
    return {
        "n_seeds": len(per),
        "per_seed": per,
        "floor_mean_abs_diff_test_acc": statistics.fmean(d),
        "floor_max_abs_diff_test_acc": max(d),
        "selected_epoch_changed": sum(p["best_epoch_stacked"] != p["best_epoch_separate"] for p in per),
        "seed_sd_test_acc_stacked": statistics.stdev([a["test_acc"] for a in stacked]),
        "seed_sd_test_acc_separate": statistics.stdev([b["test_acc"] for b in separate]),
        "loss_gap_first_epoch_max": max(p["loss_gap_per_epoch"][0] for p in per),
        "loss_gap_last_epoch_max": max(p["loss_gap_per_epoch"][-1] for p in per),
    }


def _code_version() -> tuple[str, bool | None]:
    """(HEAD commit, whether vit/ has uncommitted changes), read when the run starts."""
    here = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "vit"],
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", None
    return commit, dirty


def _provenance(argv: Sequence[str], wall_s: float, version: tuple[str, bool | None]) -> dict[str, Any]:
    commit, dirty = version
    return {"commit": commit, "vit_tree_dirty": dirty, "command": "python -m vit.layout_floor " + " ".join(argv),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus", "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "wall_s": wall_s, "load_avg_at_end": list(os.getloadavg())}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = make_parser("python -m vit.layout_floor",
                    description="Train S seeds of the quick preset stacked (one pass) and separately (S passes) and "
                                "report the layout floor beside the seed SD (JSON).")
    p.add_argument("--seeds", type=positive_int, default=3, help="number of seeds S (>= 2)")
    p.add_argument("--epochs", type=positive_int, default=None, help="stage-1 epochs (default: the quick preset's)")
    p.add_argument("--method", default="cff2", choices=("cff2", "cff1"))
    p.add_argument("--out", required=True, help="JSON file to write")
    ns = p.parse_args(argv)
    if ns.seeds < 2:
        raise UserError(f"--seeds {ns.seeds}: a seed SD needs at least 2 seeds", "use --seeds 2 or more")
    from vit.config import QUICK
    from vit.train import train_run, train_runs

    base = QUICK.replace(device="cpu", method=ns.method, **({"epochs": ns.epochs} if ns.epochs else {}))
    cfgs = [base.replace(seed=s) for s in range(ns.seeds)]
    version, t0 = _code_version(), time.perf_counter()
    stacked = train_runs(cfgs, progress=False)
    separate = [train_run(c, progress=False) for c in cfgs]
    out = {"config": base.to_dict(), **layout_floor(stacked, separate),
           "provenance": _provenance(argv, time.perf_counter() - t0, version)}
    atomic_write_json(ns.out, out)
    print(f"layout floor: mean |d test acc| {out['floor_mean_abs_diff_test_acc']:.4f}, max "
          f"{out['floor_max_abs_diff_test_acc']:.4f}; seed SD {out['seed_sd_test_acc_separate']:.4f}; selected epoch "
          f"changed for {out['selected_epoch_changed']}/{ns.seeds}; wrote {ns.out}")
    return 0


if __name__ == "__main__":
    from cffdyn.errors import guarded
    sys.exit(guarded(main, None, "python -m vit.layout_floor"))
