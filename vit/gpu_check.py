"""``make gpu-check`` (``python -m vit.gpu_check``): on a machine with a CUDA GPU, in a fixed time
budget, run the CUDA tests, the benchmark, and a full-scale noise-dose arm sized to the time
left, each step under its own timeout, and record what it measured in ``recorded/gpu/<stamp>/``.

It is made for a lent GPU image with its own torch and no virtual environment: the system
python with the repository on ``PYTHONPATH`` (what the Makefile target does) and Fashion-MNIST
from ``--data-root`` (default: ``$CFFDYN_FMNIST``, else ``data/fashion-mnist`` in the checkout, a
git-ignored folder to copy the IDX files into and carry along, else the Debian package's path).
Without CUDA it says so in one line and exits 2.  ``--device cpu --tiny`` runs the same steps on
the CPU at tiny sizes (what the tests do).

Steps (each a subprocess with a timeout, so a hang costs its own slice only):

1. ``cuda_tests``: the tests that need CUDA (``-m "not slow" -k "cuda or graph or gpu"`` over the
   ViT test files), which skip without CUDA;
2. ``bench``: ``cffdyn vit bench --json`` (interleaved rounds, machine recorded);
3. ``timing``: one epoch of one cell of the full-scale arm (the seed-stacked engine), to size it;
4. ``arm``: the noise-dose study at full scale (all 60,000 Fashion-MNIST training images,
   ViT[128 4 5] patch 4, batch 512, seed-stacked cells, 3 doses x 12 seeds) with as many epochs as
   the time left allows (at least 1), analysed against the recorded prediction.

``recorded/gpu/<stamp>/``: ``summary.json`` (every step: command, exit code, wall time, output
tail; the machine, device, driver, torch) and ``summary.txt`` (the one-screen summary printed at
the end), ``bench.json``, and the arm's ``record.json`` with its figures (:mod:`cffdyn.recorded`).
Commit the folder: a GPU measurement not committed is lost with the lent machine.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "plan_epochs", "arm_command", "DOSES", "SEEDS"]

REPO = Path(__file__).resolve().parent.parent
DOSES = "0.25,0.6,1.25"
SEEDS = 12
#: the full-scale arm's base config (--set overrides of the noise-dose preset)
FULL_SETS = ("subset=none", "embed_dim=128", "heads=4", "layers=5", "patch=4", "batch_size=512", "device=cuda",
             "head_epochs=20")
TINY_SETS = ("subset=300", "embed_dim=16", "heads=2", "layers=2", "patch=7", "batch_size=64", "device=cpu",
             "head_epochs=1")


def _data_root(arg: str | None) -> str | None:
    for cand in (arg, os.environ.get("CFFDYN_FMNIST"), str(REPO / "data" / "fashion-mnist"),
                 "/usr/share/datasets/fashion-mnist"):
        if cand and Path(cand).is_dir():
            return cand
    return None


def plan_epochs(seconds_left: float, epoch_s: float, cells: int, *, overhead_s: float, safety: float = 1.3,
                max_epochs: int = 50) -> int:
    """Epochs of the arm that fit: ``cells`` passes of ``epochs`` epochs at ``epoch_s`` each, times
    ``safety``, plus ``overhead_s`` (heads, evaluation, analysis), within ``seconds_left``; at
    least 1 (the arm then says it ran over), at most ``max_epochs``."""
    if not (epoch_s > 0 and math.isfinite(epoch_s)):
        raise ValueError(f"epoch time {epoch_s!r} must be finite and > 0")
    e = int((seconds_left - overhead_s) / (cells * epoch_s * safety))
    return max(1, min(max_epochs, e))


def arm_command(py: str, out: Path, sets: Sequence[str], epochs: int, seeds: int, doses: str,
                data_root: str | None, n_boot: int) -> list[str]:
    cmd = [py, "-m", "vit", "noise-dose", "--out", str(out), "--seeds", str(seeds), "--doses", doses,
           "--n-boot", str(n_boot), "--quiet", "--batched", "--set", f"epochs={epochs}"]
    for s in sets:
        cmd += ["--set", s]
    if data_root:
        cmd += ["--set", f"data_root={data_root}"]
    return cmd


def _step(name: str, cmd: list[str], timeout_s: float, log: list[dict[str, Any]], env: dict[str, str]) -> dict:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=max(1.0, timeout_s))
        rc, out = p.returncode, (p.stdout + p.stderr)
    except subprocess.TimeoutExpired as exc:
        rc = 124
        out = ((exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")) \
            + f"\n[gpu-check] {name}: timed out after {timeout_s:.0f} s"
    rec = {"step": name, "command": " ".join(cmd), "rc": rc, "wall_s": time.perf_counter() - t0,
           "timeout_s": timeout_s, "tail": out[-3000:]}
    log.append(rec)
    print(f"[gpu-check] {name}: rc {rc} in {rec['wall_s']:.0f} s", file=sys.stderr, flush=True)
    return rec


def _device_info(device: str) -> dict[str, Any]:
    import torch

    from cffdyn.recorded import provenance
    info = provenance("make gpu-check", device=device)
    info["torch_cuda"] = torch.version.cuda
    return info


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vit.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for all steps (default 480 = 8 min)")
    ap.add_argument("--out", default=str(REPO / "recorded" / "gpu"), help="where the stamped folder goes")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cuda (the check) | cpu (with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (CPU tests of the steps)")
    ap.add_argument("--data-root", default=None, help="Fashion-MNIST IDX folder (see the module doc)")
    ap.add_argument("--steps", default="cuda_tests,bench,arm", metavar="S1,S2",
                    help="the steps to run: cuda_tests, bench, arm (the arm includes its timing run); default all")
    args = ap.parse_args(argv)
    steps = [x.strip() for x in args.steps.split(",") if x.strip()]
    unknown = sorted(set(steps) - {"cuda_tests", "bench", "arm"})
    if unknown or not steps:
        print(f"gpu-check: error: --steps {args.steps!r}: unknown {unknown or 'none given'}; choose from cuda_tests, "
              f"bench, arm", file=sys.stderr)
        return 2
    if not (args.budget > 0 and math.isfinite(args.budget)):
        print(f"gpu-check: error: --budget {args.budget} must be > 0 seconds", file=sys.stderr)
        return 2
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device (torch {torch.__version__} sees none); run it on a machine with a CUDA "
              f"GPU, or use --device cpu --tiny to exercise the steps", file=sys.stderr)
        return 2
    if args.device == "cpu" and not args.tiny:
        print("gpu-check: error: --device cpu is only for --tiny (the full-scale arm needs a GPU)", file=sys.stderr)
        return 2
    root = _data_root(args.data_root)
    if root is None:
        print("gpu-check: error: no Fashion-MNIST found; copy the IDX files into data/fashion-mnist (git-ignored) "
              "and carry it, or give --data-root", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    left = lambda: args.budget - (time.perf_counter() - t_start)  # noqa: E731
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(args.out) / (stamp + ("-tiny" if args.tiny else ""))
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    py = sys.executable
    log: list[dict[str, Any]] = []
    tests = ["tests/test_vit_augment.py"] if args.tiny else \
        ["tests/test_vit_batched.py", "tests/test_vit_augment.py", "tests/test_vit_train.py",
         "tests/test_vit_pipeline.py", "tests/test_vit_bench.py"]
    if "cuda_tests" in steps:
        _step("cuda_tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "-k",
                             "cuda or graph or gpu", *tests], min(120.0, 0.25 * left()), log, env)
    bench = [py, "-m", "vit", "bench", "--device", args.device, "--json", str(out / "bench.json")]
    bench += ["--rounds", "1", "--steps", "1", "--seeds", "2", "--workers", "0"] if args.tiny else \
        ["--rounds", "3", "--steps", "3"]
    if "bench" in steps:
        _step("bench", bench, min(120.0, 0.3 * left()), log, env)
    sets = TINY_SETS if args.tiny else FULL_SETS
    seeds = 3 if args.tiny else SEEDS
    n_boot = 199 if args.tiny else 9999
    timing_out = out / "timing"
    arm: dict[str, Any] = {"ran": False}
    t = _step("timing", arm_command(py, timing_out, sets, 1, seeds, DOSES, root, 199),
              min(150.0, (0.6 if args.tiny else 0.4) * left()), log, env) if "arm" in steps else {"rc": None}
    if t["rc"] == 0:
        study = json.loads((timing_out / "study.json").read_text())
        cells = len(study["design"]["cells"])
        tim = study.get("timing") or {}
        # an epoch is its training and its evaluation (both per seed in the records: times S for a stacked cell)
        per_seed = []
        for r in study["runs"]:
            h = json.loads((Path(r["run_dir"]) / "result.json").read_text())["history"]
            per_seed += [e["time_s"] + e.get("eval_time_s", 0.0) for e in h]
        epoch_s = seeds * sum(per_seed) / max(1, len(per_seed))
        overhead = float(tim["wall_s"]) - cells * epoch_s      # data, heads, analysis, start-up
        epochs = plan_epochs(left() - 15.0, epoch_s, cells, overhead_s=max(overhead, 10.0),
                             max_epochs=3 if args.tiny else 50)
        arm = {"ran": True, "epochs": epochs, "epoch_s_per_cell": epoch_s, "cells": cells}
        a = _step("arm", arm_command(py, out / "arm", sets, epochs, seeds, DOSES, root, n_boot)
                  + ["--record", "--record-to", str(out / "arm_record")],
                  max(30.0, left() - 10.0), log, env)
        arm["rc"] = a["rc"]
    summary = {"schema": "cffdyn.gpu_check", "schema_version": 1, "tiny": args.tiny, "device": args.device,
               "budget_s": args.budget, "wall_s": time.perf_counter() - t_start, "steps": log, "arm": arm,
               "data_root": root, "machine": _device_info(args.device)}
    from cffdyn.io import atomic_write_json, atomic_write_text
    atomic_write_json(out / "summary.json", summary)
    lines = [f"gpu-check {stamp} on {summary['machine']['device'].get('gpu', args.device)} "
             f"(torch {torch.__version__}, CUDA {torch.version.cuda}, driver "
             f"{summary['machine']['device'].get('driver', 'n/a')}); {summary['wall_s']:.0f} s of {args.budget:.0f}"]
    for s in log:
        lines.append(f"  {s['step']:<11} rc {s['rc']:>3}  {s['wall_s']:6.0f} s  {s['command'][:90]}")
    if arm.get("ran"):
        lines.append(f"  arm: {arm['epochs']} epochs x {arm['cells']} cells x {seeds} seeds (one cell-epoch "
                     f"{arm['epoch_s_per_cell']:.1f} s)")
    nd = out / "arm" / "noise_dose.json"
    if nd.is_file():
        lines.append(json.loads(nd.read_text()).get("text", ""))
    lines.append(f"recorded in {out} -- commit it")
    text = "\n".join(lines)
    atomic_write_text(out / "summary.txt", text + "\n")
    print(text)
    return 0 if all(s["rc"] in (0, 5) for s in log) else 1


if __name__ == "__main__":
    sys.exit(main())
