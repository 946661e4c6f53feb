"""``cffdyn sim bench``: the speed of the SGD engines and the phase portrait, measured side by side.

Rows, each a ratio from one interleaved run (A B A B, :class:`BenchConfig` ``rounds``), with the
machine's load before and after: the full numba engine and the semi-reduced one, each against a
NumPy loop of its own algorithm (:func:`numpy_sgd`, :func:`numpy_semi_sgd`) and against the rate
of drawing its normals alone; the semi engine against the full one; 1 vs 2 threads over trials;
a many-trajectory RK4 phase portrait (tabulated fast path vs direct quadrature).  Numba
compilation is excluded from every ratio (timed once and reported); the engines are closures,
so numba's on-disk cache cannot hold them.  Speed is never asserted in tests.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from numba import njit

from cffdyn.io import to_jsonable
from sim.model import MFConfig
from sim.ode import integrate_ode_batch
from sim.sgd import SGDConfig, run_sgd

__all__ = ["BenchConfig", "BENCH_QUICK", "numpy_sgd", "numpy_semi_sgd", "run_bench"]


@dataclass(frozen=True)
class BenchConfig:
    """Speed benchmark: numba full-engine SGD vs a NumPy step loop at N; normals/s vs NumPy's
    vectorised generator; parallel speedup over trials (1 vs 2 threads); phase portrait of
    n_traj trajectories x n_steps RK4 steps (tabulated fast path with ``table`` mu-points)."""
    N: int = 10000
    steps: int = 2000
    sn: float = 0.5
    rounds: int = 3
    par_trials: int = 4
    n_traj: int = 10000
    n_steps: int = 2000
    table: int = 2001
    seed: int = 0


BENCH_QUICK = BenchConfig()


def numpy_sgd(cfg: MFConfig, N: int, steps: int, q0: float, seed: int) -> np.ndarray:
    """Straightforward NumPy loop of the same algorithm (d = 1, tanh, B = 1): the reference."""
    rng = np.random.default_rng(seed)
    sq = math.sqrt(N)
    rc = math.sqrt(1 - cfg.rho ** 2)
    w = rng.standard_normal(N)
    w[1:] *= math.sqrt(N * (1 - q0 ** 2) / np.sum(w[1:] ** 2))
    w[0] = q0 * sq
    out = np.empty(steps)
    m = math.sqrt(cfg.m2[0])
    for k in range(steps):
        x = rng.standard_normal(N)
        x[0] = m if rng.random() < 0.5 else -m
        z1 = rng.standard_normal(N)
        z2 = cfg.rho * z1 + rc * rng.standard_normal(N)
        x1 = x + cfg.sn * z1
        x2 = x + cfg.sn * z2
        h1, h2 = w @ x1 / sq, w @ x2 / sq
        S1, S2 = math.tanh(h1), math.tanh(h2)
        w += cfg.tau / sq * ((1 - S1 * S1) * S2 * x1 + S1 * (1 - S2 * S2) * x2)
        w *= sq / np.linalg.norm(w)
        out[k] = w[0] / sq
    return out


def numpy_semi_sgd(cfg: MFConfig, N: int, steps: int, q0: float, seed: int) -> np.ndarray:
    """NumPy loop of the semi-reduced engine's algorithm (d = 1, tanh, B = 1): the background
    parts of x, n1, n2 enter through their projections on u = w_bg / |w_bg| and one isotropic
    Gaussian vector orthogonal to u (N - 1 normals per step), as in :mod:`sim.sgd`."""
    rng = np.random.default_rng(seed)
    sq = math.sqrt(N)
    rc = math.sqrt(1 - cfg.rho ** 2)
    wb = rng.standard_normal(N - 1)
    wb *= math.sqrt(N * (1 - q0 ** 2) / np.sum(wb ** 2))
    w0 = q0 * sq
    m = math.sqrt(cfg.m2[0])
    sn = cfg.sn
    out = np.empty(steps)
    for k in range(steps):
        sR = math.sqrt(wb @ wb)
        u = wb / sR
        c = m if rng.random() < 0.5 else -m
        apar = rng.standard_normal()
        z = rng.standard_normal(4)
        x1, x2 = c + sn * z[0], c + sn * (cfg.rho * z[0] + rc * z[1])
        p1, p2 = apar + sn * z[2], apar + sn * (cfg.rho * z[2] + rc * z[3])
        h1, h2 = (w0 * x1 + sR * p1) / sq, (w0 * x2 + sR * p2) / sq
        S1, S2 = math.tanh(h1), math.tanh(h2)
        g1, g2 = (1 - S1 * S1) * S2, S1 * (1 - S2 * S2)
        V = (g1 + g2) ** 2 + sn * sn * (g1 * g1 + g2 * g2 + 2 * cfg.rho * g1 * g2)
        zeta = rng.standard_normal(N - 1)
        zeta -= (zeta @ u) * u
        lr = cfg.tau / sq
        w0 += lr * (g1 * x1 + g2 * x2)
        wb += lr * ((g1 * p1 + g2 * p2) * u + math.sqrt(V) * zeta)
        sc = sq / math.sqrt(w0 * w0 + wb @ wb)
        w0 *= sc
        wb *= sc
        out[k] = w0 / sq
    return out


@njit(cache=True)
def _draw_normals(n: int, seed: int) -> float:
    """The rate of numba's generator alone: n normals drawn one by one (as the engines do)."""
    np.random.seed(seed)
    acc = 0.0
    for _ in range(n):
        acc += np.random.standard_normal()
    return acc


@njit(cache=True)
def _draw_normals_rng(rng, n: int) -> float:
    """The same on a numpy Generator, the stream of the semi-reduced engine."""
    acc = 0.0
    for _ in range(n):
        acc += rng.standard_normal()
    return acc


def _med(xs) -> dict:
    xs = sorted(xs)
    return {"median": float(np.median(xs)), "min": float(xs[0]), "max": float(xs[-1]), "n": len(xs)}


def run_bench(cfg: BenchConfig = BENCH_QUICK, *, echo: Callable[[str], None] = print) -> dict:
    """Engines against the NumPy step loop (1 thread), each against the rate of drawing its
    normals alone, 1 vs 2 threads, all in interleaved rounds (A B A B ...) with median and
    range, and machine_info() (load, CPUs) before and after."""
    import numba
    from cffdyn.machine import machine_info

    res: dict[str, Any] = {"config": to_jsonable(cfg), "machine_before": machine_info()}
    mf = MFConfig(tau=0.5, m2=(3.0,), sn=cfg.sn, rho=0.0)
    t_end = cfg.steps / cfg.N
    nthreads0 = numba.get_num_threads()
    numba.set_num_threads(1)
    compile_s = {}
    for eng in ("full", "semi"):  # compile (the engines are closures over the activation: no numba cache)
        ts = time.perf_counter()
        run_sgd(mf, SGDConfig(N=200, trials=1, t_end=1.0, n_records=1, engine=eng), [0.3])
        compile_s[eng] = time.perf_counter() - ts
    res["compile_seconds"] = compile_s
    _draw_normals(10, 0)
    _draw_normals_rng(np.random.default_rng(0), 10)
    noise = 2 if cfg.sn > 0 else 0
    n_full = cfg.steps * ((cfg.N - 1) + noise * cfg.N)          # x off the feature + two noise vectors
    n_semi = cfg.steps * ((cfg.N - 1) + 1 + noise * 2)          # zeta + (a_par, feature / projected noise)
    one = SGDConfig(N=cfg.N, trials=1, t_end=t_end, n_records=1, seed=cfg.seed)
    T: dict[str, list[float]] = {k: [] for k in ("numpy", "numpy_semi", "full", "semi", "normals_full",
                                                  "normals_semi")}
    for r in range(cfg.rounds):
        for k in T:  # interleaved: every quantity once per round
            ts = time.perf_counter()
            if k == "numpy":
                numpy_sgd(mf, cfg.N, cfg.steps, 0.3, cfg.seed + r)
            elif k == "numpy_semi":
                numpy_semi_sgd(mf, cfg.N, cfg.steps, 0.3, cfg.seed + r)
            elif k in ("full", "semi"):
                run_sgd(mf, dataclasses.replace(one, engine=k, seed=cfg.seed + r), [0.3])
            elif k == "normals_full":
                _draw_normals(n_full, cfg.seed + r)
            else:
                _draw_normals_rng(np.random.default_rng(cfg.seed + r), n_semi)
            T[k].append(time.perf_counter() - ts)
    res["seconds_1_thread"] = {k: _med(v) for k, v in T.items()}
    m = {k: res["seconds_1_thread"][k]["median"] for k in T}
    res["full_over_numpy"] = m["numpy"] / m["full"]
    res["semi_over_numpy"] = m["numpy"] / m["semi"]
    res["semi_over_full"] = m["full"] / m["semi"]
    res["semi_over_numpy_semi"] = m["numpy_semi"] / m["semi"]
    res["full_normals_fraction"] = m["normals_full"] / m["full"]
    res["semi_normals_fraction"] = m["normals_semi"] / m["semi"]
    res["normals_per_step"] = {"full": n_full / cfg.steps, "semi": n_semi / cfg.steps}
    echo(f"SGD N={cfg.N}, {cfg.steps} steps, sn={cfg.sn}, 1 thread, median of {cfg.rounds} interleaved rounds: "
         f"NumPy loop {m['numpy']:.3f}s, full {m['full']:.3f}s, semi-reduced {m['semi']:.3f}s")
    echo(f"  implementation (each engine vs a NumPy loop of its own algorithm): full {res['full_over_numpy']:.2f}x, "
         f"semi-reduced {res['semi_over_numpy_semi']:.2f}x (NumPy semi loop {m['numpy_semi']:.3f}s)")
    echo(f"  algorithm and implementation: semi-reduced vs the full engine {res['semi_over_full']:.2f}x, vs the full "
         f"NumPy loop {res['semi_over_numpy']:.2f}x")
    echo(f"  compilation excluded from these ratios (first calls, not cached: full {compile_s['full']:.1f}s, "
         f"semi-reduced {compile_s['semi']:.1f}s)")
    echo(f"  fraction of the rate of drawing its normals alone: full {100 * res['full_normals_fraction']:.0f}% "
         f"({n_full / cfg.steps:.0f} normals/step), semi-reduced {100 * res['semi_normals_fraction']:.0f}% "
         f"({n_semi / cfg.steps:.0f} normals/step; goal >= 80%)")
    # threads: 1 vs 2, interleaved, for both O(N) engines
    sg = SGDConfig(N=cfg.N, trials=cfg.par_trials, t_end=t_end / 2, n_records=1, seed=cfg.seed)
    TT: dict[str, list[float]] = {f"{e}_{nt}": [] for e in ("full", "semi") for nt in (1, 2)}
    same = True
    for r in range(cfg.rounds):
        for e in ("full", "semi"):
            outs = {}
            for nt in (1, 2):
                numba.set_num_threads(min(nt, nthreads0))
                ts = time.perf_counter()
                outs[nt] = run_sgd(mf, dataclasses.replace(sg, engine=e), [0.3]).Q
                TT[f"{e}_{nt}"].append(time.perf_counter() - ts)
            same &= bool(np.array_equal(outs[1], outs[2]))
    res["threads_seconds"] = {k: _med(v) for k, v in TT.items()}
    for e in ("full", "semi"):
        res[f"{e}_speedup_2_threads"] = res["threads_seconds"][f"{e}_1"]["median"] / res["threads_seconds"][f"{e}_2"]["median"]
    res["thread_count_independent"] = same
    res["threads_available"] = nthreads0
    echo(f"  1 vs 2 threads over {cfg.par_trials} trials (interleaved): full {res['full_speedup_2_threads']:.2f}x, "
         f"semi-reduced {res['semi_speedup_2_threads']:.2f}x; identical results: {same}")
    numba.set_num_threads(min(2, nthreads0))
    # reduced engine throughput (compiled first: the timing is of steps, not of numba)
    run_sgd(MFConfig(tau=0.5, m2=(3.0,)), SGDConfig(N=1000, trials=2, t_end=0.01, n_records=1), [0.3])
    ts = time.perf_counter()
    run_sgd(MFConfig(tau=0.5, m2=(3.0,)), SGDConfig(N=100000, trials=2, t_end=5.0, n_records=1), [0.3])
    t_red = time.perf_counter() - ts
    res["reduced_steps_per_s"] = 2 * 5 * 100000 / t_red
    echo(f"reduced (exact-in-law, O(1) per step) engine: {res['reduced_steps_per_s']:.3e} steps/s")
    # phase portrait
    from sim.ode import pack_params
    ph = MFConfig(tau=0.2, m2=(1.2, 1.1))
    ics = np.random.default_rng(cfg.seed).uniform(-0.6, 0.6, size=(cfg.n_traj, 2))
    ts = time.perf_counter()
    P = pack_params(ph, table=cfg.table)
    t_tab = time.perf_counter() - ts
    integrate_ode_batch(ph, ics[:4], t_end=0.75 * 2, dt=0.75, params=P)  # compile
    ts, cs = time.perf_counter(), time.process_time()
    _, tr, _ = integrate_ode_batch(ph, ics, t_end=0.75 * cfg.n_steps, dt=0.75, record_every=cfg.n_steps,
                                   params=P)
    t_ph, c_ph = time.perf_counter() - ts, time.process_time() - cs
    _, trq, _ = integrate_ode_batch(ph, ics[:100], t_end=0.75 * cfg.n_steps, dt=0.75,
                                    record_every=cfg.n_steps)
    res["phase_seconds"], res["phase_cpu_seconds"], res["phase_table_seconds"] = t_ph, c_ph, t_tab
    res["phase_error_vs_direct_quadrature"] = float(np.max(np.abs(tr[:100, -1] - trq[:, -1])))
    echo(f"phase portrait: {cfg.n_traj} trajectories x {cfg.n_steps} RK4 steps in {t_ph:.2f}s wall, "
         f"{c_ph:.2f}s CPU (+ {t_tab:.2f}s tabulation); max |final state - direct quadrature| = "
         f"{res['phase_error_vs_direct_quadrature']:.1e}")
    res["machine_after"] = machine_info()
    la, lb = res["machine_before"]["load_avg"], res["machine_after"]["load_avg"]
    echo(f"(device: {res['machine_before'].get('cpu') or 'cpu'}; 1-min load average "
         f"{la[0] if la else float('nan'):.1f} before, {lb[0] if lb else float('nan'):.1f} after, on {os.cpu_count()} "
         f"CPUs; wall times on a shared machine are inflated accordingly, the interleaved ratios much less)")
    return res
