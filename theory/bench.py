"""Timing of ``theory verify`` (goal: the whole verification in < 30 s on 2 cores).

Prints the time of every phase measured in one run, and the speed-up of evaluating the
lambdified formulas vectorised over all cases of a mode (one padded array per mode) against
evaluating them one case at a time, both on the same cases, side by side.
"""
from __future__ import annotations

import time

__all__ = ["run_bench"]

GOAL_SECONDS = 30.0


def run_bench(n_cases: int = 10_000, seed: int = 0, loop_cases: int = 600) -> dict:
    """Run the benchmark, print it, return the figures."""
    from cffdyn.machine import load_average, machine_info
    from theory.autograd_check import check_autograd, make_cases, symbolic_gradients
    from theory.numeric import numeric_coefficients
    from theory.symbolic import identities

    before = machine_info("cpu")
    t0 = time.perf_counter()
    ids = identities()
    t_id = time.perf_counter() - t0
    t1 = time.perf_counter()
    for mode in ("none", "clamp", "subtract"):
        numeric_coefficients(mode)
    t_lam = time.perf_counter() - t1
    auto = check_autograd(n_cases, seed)
    total = time.perf_counter() - t0

    cases = make_cases(loop_cases, seed + 1)
    by_mode = {m: [c for c in cases if c.mode == m] for m in ("none", "clamp", "subtract")}
    tv = time.perf_counter()
    for sub in by_mode.values():
        symbolic_gradients(sub)
    t_vec = time.perf_counter() - tv
    tl = time.perf_counter()
    for c in cases:
        symbolic_gradients([c])
    t_loop = time.perf_counter() - tl

    sec = auto["seconds"]
    print(f"theory bench: {len(ids)} identities, {n_cases} autograd cases (seed {seed})")
    print(f"  identities (derivation + normal form)    {t_id:8.2f} s")
    print(f"  lambdify (3 modes)                       {t_lam:8.2f} s")
    print(f"  generate cases                           {sec['generate']:8.2f} s")
    print(f"  derived formulas, vectorised             {sec['symbolic_numeric']:8.2f} s")
    print(f"  torch autograd of supcon_loss            {sec['autograd']:8.2f} s "
          f"({1e3 * sec['autograd'] / max(n_cases, 1):.3f} ms/case)")
    print(f"  total verify                             {total:8.2f} s   goal < {GOAL_SECONDS:.0f} s: "
          f"{'met' if total < GOAL_SECONDS else 'NOT met'}")
    print(f"  derived formulas on {loop_cases} cases: vectorised {t_vec:.3f} s, one case at a time "
          f"{t_loop:.3f} s, ratio {t_loop / max(t_vec, 1e-12):.1f}x")
    print(f"  max_rel_err {auto['max_rel_err']:.3e}")
    after = load_average()
    print(f"  machine: {before.get('cpu', '?')}, {before.get('cpus', '?')} CPUs, device cpu; load average "
          f"before {before.get('load_avg')}, after {after} (a shared machine slows every phase)")
    return {"machine": before, "load_average_after": after,"identities_s": t_id, "lambdify_s": t_lam, **{f"{k}_s": v for k, v in sec.items()},
            "total_s": total, "vectorised_s": t_vec, "loop_s": t_loop,
            "ratio_loop_over_vectorised": t_loop / max(t_vec, 1e-12),
            "max_rel_err": auto["max_rel_err"]}
