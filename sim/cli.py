"""``cffdyn sim`` (also ``python -m sim``): the one-layer contrastive model and eigenmode dynamics.

Sub-commands
------------
convergence  ODE vs online SGD for N in {1e3, 1e4, 1e5}; fitted N-exponent of the deviation.
hfunc        h(Q) = Qdot/tau with fixed points and stability; learnability constants.
phase        two-feature phase portrait, attraction regions, m4 sweep (claim ii).
noise        stationary cosine similarity vs noise strength and correlation rho.
clamp        clamp vs subtraction margin: CAR(t), stationary Q, seed variance ratios.
bench        speed ratios measured side by side (numba vs NumPy, threads, phase portrait).
eigen        eigenmode (IsoLoss) dynamics: handed to ``sim.eigen_cli``.

Every study writes ``<out>/<name>.json`` and ``<name>.png`` (see :mod:`sim.studies`) and
reuses an existing JSON whose recorded config matches (``--no-reuse`` reruns).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Sequence

__all__ = ["main"]

_HELP = {
    "convergence": "ODE vs SGD mean +- SD for several N; fits the exponent of the deviation (expected -1/2)",
    "hfunc": "h(Q) = Qdot/tau with fixed points/stability; kappa, v vs the notes' table",
    "phase": "two-feature phase portrait with attraction regions, SGD paths, m4 sweep",
    "noise": "stationary Q* vs sigma_n^2 for several rho and tau, with SGD points and the notes' table",
    "clamp": "clamp vs subtraction margin: CAR, stationary Q, final-Q variance ratios (SGD and OU prediction)",
}


def _parser(prog: str | None) -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog=prog, formatter_class=fmt,
                                description="Numba simulators of the one-layer nonlinear contrastive model "
                                            "(online SGD, mean-field ODEs, fixed points) and eigenmode dynamics.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{" + ",".join([*_HELP, "bench", "eigen"]) + "}")
    for name, hlp in _HELP.items():
        s = sub.add_parser(name, formatter_class=fmt, help=hlp, description=hlp + ". Writes NAME.json + NAME.png.")
        s.add_argument("--preset", choices=("quick", "full"), default="quick",
                       help="QUICK: small CPU run (seconds to a minute); FULL: the paper-size run")
        s.add_argument("--out", default="results/sim", help="output directory")
        s.add_argument("--no-reuse", action="store_true",
                       help="rerun even if OUT/NAME.json exists with the same config")
        s.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
        if name in ("convergence", "phase", "noise", "clamp"):
            s.add_argument("--seed", type=int, default=None,
                           help="master seed of the SGD trials (default: the preset's, 0)")
        if name in ("convergence", "clamp"):
            s.add_argument("--trials", type=int, default=None,
                           help="SGD trials per configuration (default: the preset's)")
    b = sub.add_parser("bench", formatter_class=fmt, help="print speed ratios measured in one run",
                       description="numba full-engine SGD vs a NumPy step loop (1 thread), normals/s vs "
                                   "NumPy's Generator, parallel speedup 1 vs 2 threads, and the time of a "
                                   "many-trajectory RK4 phase portrait. No pass/fail: it prints ratios.")
    from sim.studies import BENCH_QUICK as B
    b.add_argument("--N", type=int, default=B.N, help="dimension of the SGD comparison")
    b.add_argument("--steps", type=int, default=B.steps, help="SGD steps timed per engine")
    b.add_argument("--sn", type=float, default=B.sn, help="noise strength (sn > 0: 3N normals per step)")
    b.add_argument("--par-trials", type=int, default=B.par_trials, help="trials for the thread speedup")
    b.add_argument("--n-traj", type=int, default=B.n_traj, help="phase-portrait trajectories")
    b.add_argument("--n-steps", type=int, default=B.n_steps, help="RK4 steps per phase-portrait trajectory")
    b.add_argument("--table", type=int, default=B.table, help="mu-points of the tabulated phase-portrait RHS")
    b.add_argument("--json", metavar="PATH", default=None, help="also write the figures as JSON (atomic)")
    e = sub.add_parser("eigen", help="eigenmode (IsoLoss) dynamics; 'eigen --help' lists its commands",
                       add_help=False)
    e.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the eigenmode command line")
    return p


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or "cffdyn sim"
    if argv and argv[0] == "eigen":
        try:
            mod = importlib.import_module("sim.eigen_cli")
        except ModuleNotFoundError as exc:
            if exc.name != "sim.eigen_cli":
                raise
            print(f"{prog} eigen: the eigenmode command line (sim/eigen_cli.py) is not available in this "
                  "checkout", file=sys.stderr)
            return 2
        return int(mod.main(argv[1:], prog=prog + " eigen") or 0)
    args = _parser(prog).parse_args(argv)
    from sim import studies as S

    if args.cmd == "bench":
        cfg = S.BenchConfig(N=args.N, steps=args.steps, sn=args.sn, par_trials=args.par_trials,
                            n_traj=args.n_traj, n_steps=args.n_steps, table=args.table)
        res = S.run_bench(cfg)
        if args.json:
            from cffdyn.io import atomic_write_json
            atomic_write_json(args.json, res)
        return 0
    run, quick, full = S.STUDIES[args.cmd]
    cfg = S.replace(quick if args.preset == "quick" else full, seed=getattr(args, "seed", None),
                    trials=getattr(args, "trials", None))
    res = run(cfg, args.out, reuse=not args.no_reuse, progress=not args.quiet)
    summary = _summary(args.cmd, res)
    print(f"{args.cmd}: {'reused' if res.get('reused') else 'wrote'} {args.out}/{args.cmd}.json and .png "
          f"({res.get('elapsed_s', 0):.1f}s)")
    print(json.dumps(summary, indent=1))
    return 0


def _summary(name: str, r: dict) -> dict:
    if name == "convergence":
        return {"exponent": r["exponent"], "exponent_se": r["exponent_se"],
                "rms_max_dev": {str(x["N"]): x["rms_max_dev"] for x in r["rows"]},
                "full_vs_reduced": r["full_vs_reduced"], "rk4_vs_solve_ivp_max": r["rk4_vs_solve_ivp_max"]}
    if name == "hfunc":
        return {"learnability": r["learnability"],
                "fixed_points": {f"{c['activation']} tau={c['tau']}": c["fixed_points"] for c in r["curves"]}}
    if name == "phase":
        return {"share_feature1": r["share_feature1"], "share_feature2": r["share_feature2"],
                "fixed_points": r["fixed_points"],
                "m4_sweep": [{k: s[k] for k in ("kurtosis", "share_feature1", "eigs_at_0")} for s in r["m4_sweep"]]}
    if name == "noise":
        return {f"tau={c['tau']} rho={c['rho']}": {"Q": c["Q"], "max_abs_diff_notes": c["max_abs_diff_notes"]}
                for c in r["curves"]}
    if name == "clamp":
        return [{"m": x["margin"], "sn": x["sn"], "B": x["batch"], "var_ratio": x["var_ratio"],
                 "var_ratio_pred": x["var_ratio_pred"], "car_clamp": x["clamp"]["car_star"]} for x in r["rows"]]
    return {}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
