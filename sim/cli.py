"""``cffdyn sim`` (also ``python -m sim``): the one-layer contrastive model and eigenmode dynamics.

Sub-commands
------------
convergence  ODE vs online SGD for >= 5 N: fluctuation exponent (bootstrap CI) and bias (mean - ODE, SE).
hfunc        h(Q) = Qdot/tau with fixed points and stability; learnability constants.
phase        two-feature phase portrait, attraction regions, m4 sweep (claim ii).
noise        stationary cosine similarity vs noise strength and correlation rho.
clamp        N Var(Q) and the clamp/subtract ratio: linear-noise theory vs SGD with 95% CIs; ViT bridge.
predict      the VR map in sigma_n (tanh, relu; per margin), its crossing of 1, power, prediction.json.
validate     predictions (diffusion, linear noise) vs SGD for the validation cells at N = 500, 1000, 2000.
bench        engines vs a NumPy loop and vs their normals alone, 1 vs 2 threads (interleaved).
eigen        eigenmode (IsoLoss) dynamics: handed to ``sim.eigen_cli``.

Every study writes ``<out>/<name>.json`` and ``<name>.png`` (see :mod:`sim.studies`) and
reuses an existing JSON whose recorded config matches (``--no-reuse`` reruns).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Sequence

from cffdyn.errors import (HelpFormatter, UserError, make_parser, nonneg_float, nonneg_int, positive_float,
                           positive_int)
from cffdyn.io import atomic_write_json, ensure_writable_file, output_dir, read_json

__all__ = ["main"]

_HELP = {
    "convergence": "ODE vs SGD for several N: fluctuation exponent with bootstrap CI, bias mean - ODE with SE",
    "hfunc": "h(Q) = Qdot/tau with fixed points/stability; kappa, v vs the notes' table",
    "phase": "two-feature phase portrait with attraction regions, SGD paths, m4 sweep",
    "noise": "stationary Q* vs sigma_n^2 for several rho and tau, with SGD points and the notes' table",
    "clamp": "N Var(Q) and the clamp/subtract variance ratio: linear-noise prediction vs SGD (95% CIs), ViT bridge",
}


def _parser(prog: str | None) -> argparse.ArgumentParser:
    fmt = HelpFormatter
    p = make_parser(prog=prog, formatter_class=fmt,
                    description="Numba simulators of the one-layer nonlinear contrastive model "
                                "(online SGD, mean-field ODEs, fixed points) and eigenmode dynamics.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{" + ",".join([*_HELP, "predict", "validate", "bench", "eigen"]) + "}")
    for name, hlp in _HELP.items():
        s = sub.add_parser(name, formatter_class=fmt, help=hlp.replace("%", "%%"),
                           description=hlp + ". Writes NAME.json + NAME.png.")
        if name == "clamp":
            s.add_argument("--preset", choices=("quick", "full"), default="full",
                           help="FULL (default): the measurement of the paper, N=2000, 64 trials per arm, about "
                                "15-25 min on 2 shared cores; QUICK: N=500, 16 trials, about a minute (paper quick build)")
        else:
            s.add_argument("--preset", choices=("quick", "full"), default="quick",
                           help="QUICK: small CPU run (seconds to a minute); FULL: the paper-size run")
        s.add_argument("--out", default="results/sim", help="output directory")
        s.add_argument("--no-reuse", action="store_true",
                       help="rerun even if OUT/NAME.json exists with the same config")
        s.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
        s.add_argument("--json-stdout", action="store_true",
                       help="also print the summary as JSON on stdout (default: a few lines and the paths)")
        if name in ("convergence", "phase", "noise", "clamp"):
            s.add_argument("--seed", type=nonneg_int, default=None,
                           help="master seed of the SGD trials (default: the preset's, 0)")
        if name in ("convergence", "clamp"):
            s.add_argument("--trials", type=positive_int, default=None,
                           help="SGD trials per configuration (default: the preset's)")
        if name == "clamp":
            s.add_argument("--N", type=positive_int, default=None, help="dimension (>= 100; default: the preset's)")
            s.add_argument("--margins", type=nonneg_float, nargs="+", default=None, help="margins m in [0, 1)")
            s.add_argument("--sns", type=nonneg_float, nargs="+", default=None, help="noise strengths sigma_n in [0, 2]")
            s.add_argument("--batches", type=positive_int, nargs="+", default=None, help="batch sizes B")
            s.add_argument("--window", type=positive_float, default=None,
                           help="stationary window in time units t = steps/N (>= 10 correlation times)")
            s.add_argument("--vit", nargs="+", default=(), metavar="STUDY_JSON",
                           help="ViT study JSONs (cffdyn vit study) whose variance ratio vs layer-0 CAR is "
                                "overlaid on the predicted curve (panel (c) of clamp.png)")
    b = sub.add_parser("bench", formatter_class=fmt, help="print speed ratios measured in one run",
                       description="full and semi-reduced SGD engines vs a NumPy step loop (1 thread), each "
                                   "against the rate of drawing its normals alone, 1 vs 2 threads interleaved, "
                                   "and the time of a many-trajectory RK4 phase portrait. Prints ratios with the "
                                   "machine's load; no pass/fail.")
    from sim.bench import BENCH_QUICK as B
    b.add_argument("--N", type=_bench_N, default=B.N, help="dimension of the SGD comparison (>= 100)")
    b.add_argument("--steps", type=positive_int, default=B.steps, help="SGD steps timed per engine")
    b.add_argument("--sn", type=nonneg_float, default=B.sn, help="noise strength (sn > 0: 3N normals per step)")
    b.add_argument("--rounds", type=positive_int, default=B.rounds, help="interleaved rounds (A B A B) per timing")
    b.add_argument("--par-trials", type=positive_int, default=B.par_trials, help="trials for the thread speedup")
    b.add_argument("--n-traj", type=positive_int, default=B.n_traj, help="phase-portrait trajectories")
    b.add_argument("--n-steps", type=positive_int, default=B.n_steps, help="RK4 steps per phase-portrait trajectory")
    b.add_argument("--table", type=_table, default=B.table, help="mu-points of the tabulated phase-portrait RHS")
    b.add_argument("--json", metavar="PATH", default=None, help="also write the figures as JSON (atomic)")
    pr = sub.add_parser("predict", formatter_class=fmt,
                        help="the clamp/subtract variance-ratio map against sigma_n: prediction.json + predict.pdf/png",
                        description="VR = N Var(clamp) / N Var(subtract) of the one-unit model against the within-pair "
                                    "noise sigma_n, per activation and margin, from the exact 1-D diffusion at N with "
                                    "the linear-noise limit and validity figures; the crossing of 1 with its spread; "
                                    "seeds per arm for the paired test. Writes OUT/prediction.json (the record a ViT "
                                    "analysis reads: sim.prediction_record.load_prediction), OUT/predict.json (every "
                                    "cell) and OUT/predict.pdf/.png. No SGD.")
    pr.add_argument("--preset", choices=("quick", "full"), default="full",
                    help="FULL: 12 noise levels x 3 margins x tanh, relu; QUICK: 5 noise levels x 2 margins")
    pr.add_argument("--out", default="results/sim", help="output directory")
    pr.add_argument("--activations", nargs="+", default=None, help="tanh, relu (identity also covered)")
    pr.add_argument("--margins", type=nonneg_float, nargs="+", default=None, help="margins m in (0, 1)")
    pr.add_argument("--sns", type=nonneg_float, nargs="+", default=None, help="noise levels sigma_n in [0, 2]")
    pr.add_argument("--record-margin", type=nonneg_float, default=None, help="the margin the record states")
    pr.add_argument("--N", type=positive_int, default=None, help="dimension of the diffusion values (>= 100)")
    pr.add_argument("--no-reuse", action="store_true", help="recompute even if OUT/predict.json matches")
    pr.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    pr.add_argument("--record", action="store_true",
                    help="also keep the result in the repository's recorded/sim/prediction/ (record.json with "
                         "provenance and hashes, predict.png/pdf): the prediction a ViT noise-dose analysis reads")
    va = sub.add_parser("validate", formatter_class=fmt, help="predictions vs SGD for the validation cells (long)",
                        description="For each validation cell (relu, B = 2, sigma_n = 1.3, rho = -0.5, the collapse "
                                    "and the quasi-frozen case) at N = 500, 1000, 2000: the diffusion and "
                                    "linear-noise predictions, then SGD from Q* with batch-means 95% CIs. Writes "
                                    "OUT/validation.json with provenance (commit, command, machine, wall time, load). "
                                    "About an hour on 2 loaded cores.")
    va.add_argument("--out", default="recorded/sim", help="output directory")
    va.add_argument("--trials", type=positive_int, default=None, help="SGD trials per cell and N")
    va.add_argument("--target-se", type=float, default=None,
                    help="relative SE of N Var(Q) the SGD windows are sized for, by the diffusion's kurtosis and "
                         "autocorrelation time (default 0.04; 0.02 takes about 4x as long), in [0.005, 0.2]")
    va.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    e = sub.add_parser("eigen", help="eigenmode (IsoLoss) dynamics; 'eigen --help' lists its commands",
                       add_help=False)
    e.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the eigenmode command line")
    return p


def _bench_N(text: str) -> int:
    n = positive_int(text)
    if n < 100:
        raise argparse.ArgumentTypeError(f"{text!r} is below 100 (the bench times large-N steps)")
    return n


def _table(text: str) -> int:
    n = positive_int(text)
    if n < 16:
        raise argparse.ArgumentTypeError(f"{text!r} is below 16 grid points")
    return n


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
        if args.json:
            ensure_writable_file(args.json, "--json")
        from sim import bench as SB
        cfg = SB.BenchConfig(N=args.N, steps=args.steps, sn=args.sn, rounds=args.rounds, par_trials=args.par_trials,
                            n_traj=args.n_traj, n_steps=args.n_steps, table=args.table)
        _check_bench_size(cfg, SB.BENCH_QUICK)
        res = SB.run_bench(cfg)
        if args.json:
            atomic_write_json(args.json, res)
            print(f"bench: wrote {args.json}")
        return 0
    if args.cmd in ("predict", "validate"):
        with output_dir(args.out, "--out"):   # one writer per directory; a failed run leaves no empty --out
            return _predict_or_validate(args, argv, prog)
    run, quick, full = S.STUDIES[args.cmd]
    over = {k: getattr(args, k, None) for k in ("seed", "trials", "N", "window")}
    for k in ("margins", "sns", "batches"):
        if getattr(args, k, None):
            over[k] = tuple(getattr(args, k))
    cfg = S.replace(quick if args.preset == "quick" else full, **over)
    if args.cmd == "clamp":
        _check_clamp_inputs(cfg, args.vit, full)
    if args.cmd == "convergence":
        _check_convergence_time(cfg, quick)
    kw = {"vit": args.vit, "warn": lambda m: print(f"{prog} clamp: {m}", file=sys.stderr)} \
        if args.cmd == "clamp" else {}
    try:
        with output_dir(args.out, "--out"):   # one writer per directory; a failed run leaves no empty --out
            res = run(cfg, args.out, reuse=not args.no_reuse, progress=not args.quiet, **kw)
    except ValueError as exc:  # a config the model rejects (MFConfig / SGDConfig checks)
        raise UserError(f"{args.cmd}: {exc}", "change the offending option") from None
    out = Path(args.out)
    files = [out / f"{args.cmd}.json", out / f"{args.cmd}.png"]
    if args.cmd == "clamp" and (out / "clamp_scaling.png").exists():
        files.append(out / "clamp_scaling.png")
    print(f"{args.cmd}: {'reused' if res.get('reused') else 'computed'} in {res.get('elapsed_s', 0):.1f}s; "
          f"wrote {', '.join(map(str, files))}")
    for line in _summary_lines(args.cmd, res):
        print(line)
    if args.json_stdout:
        print(json.dumps(_summary(args.cmd, res), indent=1))
    return 0


#: wall time of the FULL clamp preset on 2 shared cores (help text: 15-25 min), the unit of the estimate
_CLAMP_FULL_MIN = 25.0
#: a clamp run estimated to take longer than this is refused before any work
CLAMP_MAX_HOURS = 24.0


def _check_clamp_inputs(cfg, vit: Sequence[str], full) -> None:
    """Before any compute: every --vit file exists, and the run fits in time.  SGD work grows as
    trials x window x N^2 (window time units of N steps, each O(N)); scaled from the FULL preset."""
    for p in vit:
        if not Path(p).is_file():
            raise UserError(f"--vit {p}: no such file", "give the study.json written by 'cffdyn vit study' "
                                                          "(e.g. results/vit/study/quick/study.json)")
        read_json(p, expect=dict)   # not JSON, another shape ([] or 42) or edited: one line, before any work
        from sim.clamp_study import vit_points
        why: list[str] = []
        if not vit_points([p], warn=why.append):   # a study without the runs/comparison the overlay needs
            raise UserError(why[0].replace(": skipped (", ": cannot be overlaid (", 1) if why else
                            f"--vit {p}: no point to overlay", "give the study.json of a complete 'cffdyn vit study' "
                                                              "with the loss_mode clamp/subtract factor")
    sizes = [cfg.N, *cfg.n_scaling]
    work = cfg.trials * cfg.window * sum(n * n for n in sizes)
    unit = full.trials * full.window * sum(n * n for n in [full.N, *full.n_scaling])
    hours = _CLAMP_FULL_MIN / 60 * work / unit
    if hours > CLAMP_MAX_HOURS:
        raise UserError(f"clamp at N={cfg.N} ({cfg.trials} trials, window {cfg.window:g}) would take about "
                        f"{hours:.3g} h (SGD work grows as trials x window x N^2; the full preset, N={full.N}, "
                        f"takes about {_CLAMP_FULL_MIN:g} min)", f"use a smaller --N (the limit is about "
                                                                  f"{CLAMP_MAX_HOURS:g} h of work)")


def _refuse_long(what: str, hours: float, unit: str, fix: str) -> None:
    """One line, before any work, for a run estimated at more than :data:`CLAMP_MAX_HOURS`."""
    if hours > CLAMP_MAX_HOURS:
        raise UserError(f"{what} would take about {hours:.3g} h ({unit})",
                        f"{fix} (the limit is about {CLAMP_MAX_HOURS:g} h of work)")


#: wall time of the QUICK convergence preset (measured 60 s on 2 loaded cores), the unit of its estimate
_CONVERGENCE_QUICK_MIN = 1.0


def _check_convergence_time(cfg, quick) -> None:
    """Reduced-engine SGD costs O(1) a step, N steps per time unit: trials x t_end x sum(N); the
    full-engine cross-check O(N) a step at Ns[0]; scaled from the QUICK preset."""
    def work(c):
        return c.t_end * (c.trials * sum(c.Ns) + c.full_check_trials * c.Ns[0] ** 2)
    hours = _CONVERGENCE_QUICK_MIN / 60 * work(cfg) / work(quick)
    _refuse_long(f"convergence with {cfg.trials} trials per N", hours,
                 f"SGD work grows with trials x sum(N); the quick preset takes about {_CONVERGENCE_QUICK_MIN:g} min",
                 "use fewer --trials")


#: wall time of the default validation (its help: about an hour on 2 loaded cores)
_VALIDATE_DEFAULT_H = 1.0


def _check_bench_size(cfg, default) -> None:
    """The bench's parts scale with rounds x steps x N (SGD timings), n_traj x n_steps (phase
    portrait) and table; refused past 100x the default bench (about a minute), with the part named."""
    parts = {"--rounds x --steps x --N": (cfg.rounds * cfg.steps * cfg.N * max(1, cfg.par_trials),
                                         default.rounds * default.steps * default.N * default.par_trials),
             "--n-traj x --n-steps": (cfg.n_traj * cfg.n_steps, default.n_traj * default.n_steps),
             "--table": (cfg.table, default.table)}
    for name, (w, w0) in parts.items():
        if w > 100 * w0:
            raise UserError(f"sim bench: {name} is {w / w0:.3g}x the default bench's (which takes about a minute)",
                            f"keep {name} within 100x the defaults (see 'cffdyn sim bench --help')")


def _predict_or_validate(args, argv, prog) -> int:
    import dataclasses

    command = " ".join([prog, *argv])
    if args.cmd == "validate":
        from sim.validate import VALIDATE_DEFAULT, run_validate
        cfg = VALIDATE_DEFAULT if args.trials is None else dataclasses.replace(VALIDATE_DEFAULT, trials=args.trials)
        if args.target_se is not None:
            if not 0.005 <= args.target_se <= 0.2:
                raise UserError(f"--target-se {args.target_se!r} must be in [0.005, 0.2]", "use 0.04 (the default) or 0.02")
            cfg = dataclasses.replace(cfg, target_rel_se=args.target_se)
        # SGD work is proportional to the trials (every cell and N runs them all) and, where the
        # window is sized by the target SE, to 1 / target^2
        scale = cfg.trials / VALIDATE_DEFAULT.trials * (VALIDATE_DEFAULT.target_rel_se / cfg.target_rel_se) ** 2
        _refuse_long(f"validate with {cfg.trials} trials at target SE {cfg.target_rel_se:g}", _VALIDATE_DEFAULT_H * scale,
                     f"the default {VALIDATE_DEFAULT.trials} trials take about {_VALIDATE_DEFAULT_H:g} h",
                     "use fewer --trials")
        res = run_validate(cfg, Path(args.out) / "validation.json", progress=not args.quiet, command=command)
        s = res["summary"]
        print(f"validate: wrote {Path(args.out) / 'validation.json'} in {res['provenance']['wall_s']:.0f}s; diffusion "
              f"prediction inside the SGD 95% CI: {s['fp_in_ci']}/{s['valid_checks']} (linear noise: "
              f"{s['ou_in_ci']}/{s['valid_checks']}); {s['outside_validity']} cell-N outside validity")
        return 0
    from sim.predict import PREDICT_FULL, PREDICT_QUICK, run_predict
    from sim.studies import replace
    over = {"N": args.N, "record_margin": args.record_margin,
            "activations": tuple(args.activations) if args.activations else None,
            "margins": tuple(args.margins) if args.margins else None, "sns": tuple(args.sns) if args.sns else None}
    cfg = replace(PREDICT_QUICK if args.preset == "quick" else PREDICT_FULL, **over)
    import time

    from cffdyn.machine import load_average
    load0, t0 = load_average(), time.perf_counter()
    res = run_predict(cfg, args.out, reuse=not args.no_reuse, progress=not args.quiet, command=command)
    out = Path(args.out)
    if args.record:
        from sim.predict import record_prediction
        wall = float(res.get("elapsed_s", 0.0)) if res.get("reused") else time.perf_counter() - t0
        rp = record_prediction(out, command=command, wall_s=wall, load_start=load0)
        print(f"predict: recorded {rp}")
    print(f"predict: {'reused' if res.get('reused') else 'computed'} in {res.get('elapsed_s', 0):.1f}s; wrote "
          f"{out / 'prediction.json'}, {out / 'predict.json'}, {out / 'predict.pdf'}, {out / 'predict.png'}")
    for a, c in res["crossings"].items():
        if c["sigma_n_cross"] is None:
            print(f"  {a}: {c['note']}")
        else:
            lo, hi = c["interval"]
            print(f"  {a}: VR crosses 1 at sigma_n = {c['sigma_n_cross']:.3f} (m = {c['margin']:g}; spread "
                  f"{lo:.3f} to {hi:.3f} over {c['spans']})")
    return 0


def _summary_lines(name: str, r: dict) -> list[str]:
    if name == "clamp":
        from sim.clamp_study import summary_lines
        return summary_lines(r)
    if name == "convergence":
        b = r.get("bias_exponent") or {}
        bias = (f"bias exponent {b['est']:.3f} (95% CI {b['ci95'][0]:.3f} to {b['ci95'][1]:.3f})" if b.get("resolved")
                else "bias exponent not resolved (bias at t_end within 2 SE of 0 at some N)")
        rows = ", ".join(f"N={x['N']}: {x['bias']['end']['N_bias']:.2f}±{x['bias']['end']['N_se']:.2f}" for x in r["rows"])
        return [f"fluctuation exponent {r['exponent']:.3f} (95% CI {r['exponent_ci95'][0]:.3f} to "
                f"{r['exponent_ci95'][1]:.3f}); {bias}", f"N x bias at t_end (mean ± SE): {rows}"]
    if name == "hfunc":
        return [f"learnability kappa (tanh) {r['learnability']['tanh']['kappa']:.4f}; "
                f"{sum(len(c['fixed_points']) for c in r['curves'])} fixed points over {len(r['curves'])} curves"]
    if name == "phase":
        return [f"share won by feature 1: {100 * r['share_feature1']:.1f}% of {r['n_ics']} initial conditions"]
    if name == "noise":
        return [f"{len(r['curves'])} curves; max |ODE - notes' table| = "
                f"{max((c['max_abs_diff_notes'] or 0) for c in r['curves']):.2g}"]
    return []


def _summary(name: str, r: dict) -> dict:
    if name == "convergence":
        return {"exponent": r["exponent"], "exponent_ci95": r["exponent_ci95"], "bias_exponent": r["bias_exponent"],
                "bias": {str(x["N"]): x["bias"] for x in r["rows"]},
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
        return {"summary": r["summary"],
                "rows": [{"m": x["margin"], "sn": x["sn"], "B": x["batch"], "outcome": x["outcome"],
                          "ratio_pred": x["ratio_pred"], "ratio": x["ratio"], "ratio_in_ci": x["ratio_in_ci"]}
                         for x in r["rows"]]}
    return {}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
