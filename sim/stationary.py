"""Measuring the stationary seed-to-seed variance of Q by SGD, with honest errors.

Protocol: every trial starts AT the mean-field fixed point Q* (no transient to
discard beyond a burn-in of a few correlation times ``1/|lambda|``), runs the exact-in-law
engine over a stationary window, and N Var(Q) is the time average of ``N (Q - mean)^2`` over
the window, pooled over trials (the mean is the pooled mean).  Its error is a batch-means
error: each trial's window is cut into consecutive batches of ``batch_len`` time units (many
correlation times, so batch means are nearly independent; the lag-1 correlation of adjacent
batch means is reported as a check), and the standard error is the SD of all batch means over
sqrt(number of batches), with a Student-t 95% interval.  The trial-level standard error
(one batch per trial, exact independence) is reported next to it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.model import MFConfig
from sim.sgd import SGDConfig, run_sgd

__all__ = ["WindowSpec", "batch_means", "measure_nvar", "ratio_ci"]


@dataclass(frozen=True)
class WindowSpec:
    """burn (time units before the window), window (length), batch_len (batch-means batch),
    rec_dt (recording interval), all in t = steps / N."""
    burn: float
    window: float
    batch_len: float
    rec_dt: float = 0.25


def batch_means(x: np.ndarray, n_batches: int) -> np.ndarray:
    """(K, R) series -> (K, n_batches) means of consecutive equal batches (the tail that does
    not fill a batch is dropped)."""
    K, R = x.shape
    L = R // n_batches
    if L < 1:
        raise ValueError(f"{R} records cannot fill {n_batches} batches")
    return x[:, :L * n_batches].reshape(K, n_batches, L).mean(axis=2)


def _mean_ci(b: np.ndarray) -> dict:
    from scipy.stats import t as student_t
    flat = b.ravel()
    n = flat.size
    se = float(flat.std(ddof=1) / math.sqrt(n))
    q = float(student_t.ppf(0.975, n - 1))
    est = float(flat.mean())
    lag1 = float(np.corrcoef(b[:, :-1].ravel(), b[:, 1:].ravel())[0, 1]) if b.shape[1] > 2 else float("nan")
    return {"est": est, "se": se, "ci95": [est - q * se, est + q * se], "n_batches": n, "lag1_corr": lag1}


def measure_nvar(mf: MFConfig, q_star: float, N: int, trials: int, win: WindowSpec, seed: int) -> dict:
    """SGD from Q* (reduced engine) -> N Var(Q) over the stationary window with its batch-means
    error, the trial-level error, N (mean Q - Q*) with its error, and the mean CAR."""
    t_end = win.burn + win.window
    n_rec = int(round(t_end / win.rec_dt))
    r = run_sgd(mf, SGDConfig(N=N, trials=trials, t_end=t_end, n_records=n_rec, engine="reduced", seed=seed),
                [q_star])
    sel = r.t > win.burn + 1e-12
    q = np.abs(r.Q[:, sel, 0])
    mu = float(q.mean())
    dev2 = N * (q - mu) ** 2
    nb = max(2, int(win.window // win.batch_len))
    out = {"N": N, "trials": trials, "records_per_trial": int(q.shape[1]), "batches_per_trial": nb}
    v = _mean_ci(batch_means(dev2, nb))
    per_trial = dev2.mean(axis=1)
    v["se_trials"] = float(per_trial.std(ddof=1) / math.sqrt(trials))
    out["N_var"] = v
    bias = _mean_ci(batch_means(N * (q - q_star), nb))
    out["N_bias"] = bias
    out["mean_Q"] = mu
    out["car"] = float(np.nanmean(r.car[:, sel]))
    return out


def ratio_ci(a: dict, b: dict) -> dict:
    """a/b of two independent estimates ({"est", "se"}) with a 95% interval from the delta
    method on the log scale."""
    r = a["est"] / b["est"]
    sl = math.sqrt((a["se"] / a["est"]) ** 2 + (b["se"] / b["est"]) ** 2)
    return {"est": r, "se_log": sl, "ci95": [r * math.exp(-1.96 * sl), r * math.exp(1.96 * sl)]}
