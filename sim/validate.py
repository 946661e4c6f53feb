"""``cffdyn sim validate``: the predictions of :mod:`sim.predict` (diffusion and linear noise)
against SGD, cell by cell, at several N: a long CPU computation whose result is recorded with
its provenance (commit, command, machine, wall time, load) under ``recorded/sim/``.

Each cell is a one-unit model; at each N its prediction (:func:`sim.predict.cell_prediction`)
is made first, then SGD (exact-in-law reduced engine) starts at Q* and N Var(Q) is measured over
a stationary window with batch-means 95% intervals (:mod:`sim.stationary`).  The window is sized
by the diffusion's own time scales, not by the linear correlation time 1/|lambda| alone: where
the density is skewed (Q* a few SD from an end of its basin) the excursions that make N Var(Q)
are rare and slow, the kurtosis and the autocorrelation time of (Q - mean)^2 several times the
Gaussian ones, and a window of 40 / |lambda| gives an estimate whose batch-means SE is itself
low exactly when the run missed the excursions (relu, sigma_n = 0.7, N = 2000 is such a cell:
over such windows the seeds' estimates differ by several of their quoted SEs).  So the window is
long enough for a relative SE of ``target_rel_se`` by :func:`sim.diffusion.expected_rel_se` (at most
``max_window``), the burn-in covers the slowest relaxation time, a batch covers many
autocorrelation times of (Q - mean)^2, and the expected SE is recorded next to the measured one.  A cell outside
validity is still run, over a short window from Q* (quasi-frozen) or from q0 (no stationary
point), and reported with its outcome: it is never counted as a check of a valid prediction.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cffdyn.errors import UserError
from cffdyn.io import Progress, atomic_write_json, to_jsonable
from sim.model import MFConfig
from sim.sgd import SGDConfig, run_sgd
from sim.diffusion import expected_rel_se, window_for_rel_se
from sim.predict import cell_prediction
from sim.stationary import WindowSpec, measure_nvar

__all__ = ["ValidateConfig", "VALIDATE_CELLS", "VALIDATE_DEFAULT", "run_validate"]

_BASE = MFConfig(tau=1.0, m2=(3.0,))
#: (label, model): relu, B = 2, sigma_n = 1.3, rho = -0.5 at tau = 0.5, the collapse and the
#: quasi-frozen case among them
VALIDATE_CELLS: tuple[tuple[str, MFConfig], ...] = (
    ("relu subtract sn=0.7", _BASE.replace(activation="relu", mode="subtract", sn=0.7)),
    ("relu clamp m=0.3 sn=0.7", _BASE.replace(activation="relu", mode="clamp", margin=0.3, sn=0.7)),
    ("relu clamp m=0.1 sn=0.7", _BASE.replace(activation="relu", mode="clamp", margin=0.1, sn=0.7)),
    ("relu subtract sn=0.7 B=2", _BASE.replace(activation="relu", mode="subtract", sn=0.7, batch=2)),
    ("tanh subtract sn=1.3", _BASE.replace(mode="subtract", sn=1.3)),
    ("tanh clamp m=0.1 sn=1.3", _BASE.replace(mode="clamp", margin=0.1, sn=1.3)),
    ("tanh clamp m=0.3 sn=1.3 (collapse)", _BASE.replace(mode="clamp", margin=0.3, sn=1.3)),
    ("tanh clamp m=0.3 sn=0.7 B=2", _BASE.replace(mode="clamp", margin=0.3, sn=0.7, batch=2)),
    ("tanh subtract sn=0.7 B=2", _BASE.replace(mode="subtract", sn=0.7, batch=2)),
    ("tanh clamp m=0.3 sn=0.7 rho=-0.5 tau=0.5", _BASE.replace(tau=0.5, mode="clamp", margin=0.3, sn=0.7, rho=-0.5)),
    ("tanh clamp m=0.1 sn=0", _BASE.replace(mode="clamp", margin=0.1)),
    ("tanh clamp m=0.15 sn=0 (quasi-frozen)", _BASE.replace(mode="clamp", margin=0.15)),
    ("tanh clamp m=0.5 sn=0.7", _BASE.replace(mode="clamp", margin=0.5, sn=0.7)),
)


@dataclass(frozen=True)
class ValidateConfig:
    """Cells x Ns; SGD ``trials`` per cell and N over ``window`` time units (at least
    ``min_corr`` correlation times) after ``burn_corr`` correlation times, batch-means batches
    of ``batch_corr`` correlation times (>= ``min_batch``), the window lengthened (to at most
    ``max_window``) until the diffusion's expected relative SE of N Var(Q) is ``target_rel_se``,
    the correlation time for burn-in the slowest relaxation time and for batches the
    autocorrelation time of (Q - mean)^2 where they are longer than 1/|lambda|; outside validity
    a ``short_window`` from Q* (or from ``q0``) with ``short_trials`` trials."""
    cells: tuple[tuple[str, MFConfig], ...] = VALIDATE_CELLS
    Ns: tuple[int, ...] = (500, 1000, 2000)
    trials: int = 48
    window: float = 100.0
    min_corr: float = 40.0
    burn_corr: float = 5.0
    batch_corr: float = 10.0
    min_batch: float = 5.0
    target_rel_se: float = 0.04
    max_window: float = 2000.0
    short_window: float = 50.0
    short_trials: int = 16
    q0: float = 0.5
    seed: int = 0


VALIDATE_DEFAULT = ValidateConfig()


def _commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+uncommitted" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _one(cfg: ValidateConfig, mf: MFConfig, N: int, seed: int) -> dict:
    pred = cell_prediction(mf, N, q0=cfg.q0)
    row = {"N": N, "prediction": {k: pred.get(k) for k in ("outcome", "valid", "reason", "Q_star", "N_var",
                                                            "N_var_ou", "N_shift", "corr_time", "car_star", "fp",
                                                            "validity", "quad")}}
    if "Q_star" not in pred:  # no stationary point: show where SGD goes
        r = run_sgd(mf, SGDConfig(N=N, trials=cfg.short_trials, t_end=cfg.short_window, n_records=20, seed=seed),
                    [cfg.q0])
        row["measured"] = {"from": cfg.q0, "t_end": cfg.short_window, "trials": cfg.short_trials,
                           "final_Q_mean": float(np.mean(np.abs(r.Q[:, -1, 0]))),
                           "final_car": float(np.nanmean(r.car[:, -1]))}
        row["fp_in_ci"] = row["ou_in_ci"] = None
        return row
    tc = pred["corr_time"]
    fp = pred["fp"]
    if pred["valid"]:
        trials = cfg.trials
        need = window_for_rel_se(fp, trials, cfg.target_rel_se)
        win = WindowSpec(burn=cfg.burn_corr * max(tc, fp["relax_time"]),
                         window=min(max(cfg.window, cfg.min_corr * tc, need), cfg.max_window),
                         batch_len=max(cfg.batch_corr * max(tc, fp["sq_dev_tau"]), cfg.min_batch))
    else:  # quasi-frozen or escaping: a short look, not a stationary measurement
        win = WindowSpec(burn=0.0, window=cfg.short_window, batch_len=cfg.short_window / 5)
        trials = cfg.short_trials
    m = measure_nvar(mf, pred["Q_star"], N, trials, win, seed)
    lo, hi = m["N_var"]["ci95"]
    row["measured"] = m
    row["window"] = to_jsonable(win)
    row["fp_in_ci"] = bool(lo <= pred["N_var"] <= hi) if pred["valid"] else None
    row["ou_in_ci"] = bool(lo <= pred["N_var_ou"] <= hi) if pred["valid"] else None
    row["expected_rel_se"] = expected_rel_se(fp, trials, win.window)
    row["measured_rel_se"] = m["N_var"]["se"] / m["N_var"]["est"]
    row["fp_leading_in_ci"] = bool(lo <= fp["N_var_leading"] <= hi) if pred["valid"] else None
    row["sgd_over_fp"] = m["N_var"]["est"] / pred["N_var"]
    row["sgd_over_ou"] = m["N_var"]["est"] / pred["N_var_ou"]
    return row


def run_validate(cfg: ValidateConfig, out_path, *, progress: bool = True, command: str = "") -> dict:
    """Predictions then SGD for every cell and N; writes ``out_path`` (JSON, atomically)."""
    from cffdyn.machine import machine_info

    if not cfg.cells or not cfg.Ns or min(cfg.Ns) < 100 or cfg.trials < 2:
        raise UserError("validate needs at least one cell, N >= 100 and >= 2 trials", "use the defaults")
    t0, c0 = time.perf_counter(), time.process_time()
    before, commit = machine_info(), _commit()  # the code that runs, not the tree at the end
    prog = Progress(len(cfg.cells) * len(cfg.Ns), "validate", enabled=progress)
    rows = []
    for i, (label, mf) in enumerate(cfg.cells):
        per_n = []
        for j, N in enumerate(cfg.Ns):
            per_n.append(_one(cfg, mf, N, cfg.seed + 1000 * i + j))
            r = per_n[-1]
            prog.update(i * len(cfg.Ns) + j + 1, f"{label} N={N}: {r['prediction']['outcome']}"
                        + (f", FP {r['prediction']['N_var']:.3g} SGD {r['measured']['N_var']['est']:.3g}"
                           if r.get("fp_in_ci") is not None else ""))
        rows.append({"cell": label, "model": to_jsonable(mf), "by_N": per_n})
    checked = [r for c in rows for r in c["by_N"] if r.get("fp_in_ci") is not None]
    res = {"study": "validate", "config": to_jsonable(cfg), "cells": rows,
           "summary": {"valid_checks": len(checked), "fp_in_ci": sum(r["fp_in_ci"] for r in checked),
                       "ou_in_ci": sum(r["ou_in_ci"] for r in checked),
                       "fp_leading_in_ci": sum(r["fp_leading_in_ci"] for r in checked),
                       "outside_validity": sum(1 for c in rows for r in c["by_N"] if not r["prediction"]["valid"])},
           "provenance": {"commit": commit, "command": command, "machine_before": before,
                          "machine_after": machine_info(), "wall_s": time.perf_counter() - t0,
                          "cpu_s": time.process_time() - c0, "threads": "NUMBA_NUM_THREADS as set in the environment"}}
    atomic_write_json(Path(out_path), res)
    return res
