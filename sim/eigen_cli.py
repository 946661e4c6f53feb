"""``cffdyn sim eigen ...``: eigenmode studies of non-contrastive SSL (see :mod:`sim.eigen_studies`).

Sub-commands: ``settings`` (eight settings, linear toy; one command makes the eight-panel figure),
``settings-relu`` (the same, ReLU toy), ``spread`` (convergence-rate spread, across-seed variance,
ODE check), ``all`` (the three).  Each prints a one-line summary per study and the JSON path.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import Sequence

from cffdyn.errors import HelpFormatter, UserError, make_parser
from cffdyn.io import output_dir
from sim import eigen_studies as es

_STUDIES = {
    "settings": (es.run_eigen_settings, es.SETTINGS_QUICK, es.SETTINGS_FULL),
    "settings-relu": (es.run_eigen_settings_relu, es.SETTINGS_RELU_QUICK, es.SETTINGS_RELU_FULL),
    "spread": (es.run_eigen_spread, es.SPREAD_QUICK, es.SPREAD_FULL),
}


def _coerce(cfg, key: str, text: str):
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    if key not in fields:
        raise ValueError(f"unknown config field {key!r}; fields: {', '.join(fields)}")
    cur = getattr(cfg, key)
    if isinstance(cur, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{key} expects true/false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(cur, tuple):
        conv = type(cur[0]) if cur else str
        return tuple(_finite(key, conv(v)) for v in text.split(",") if v)
    return _finite(key, type(cur)(text))


def _kind(f: dataclasses.Field) -> str:
    """The value type of a config field in words, for ``--set`` help."""
    t = str(f.type)
    return {"int": "integer", "float": "number", "bool": "true/false", "str": "text"}.get(
        t, "comma-separated list" if t.startswith("tuple") else t)


def _finite(key: str, v):
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{key}={v} is not a finite number")
    return v


def apply_overrides(cfg, pairs: Sequence[str]):
    """``["key=value", ...]`` -> ``dataclasses.replace(cfg, ...)`` with values typed like the defaults."""
    upd = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        k, v = pair.split("=", 1)
        upd[k.strip()] = _coerce(cfg, k.strip(), v.strip())
    return dataclasses.replace(cfg, **upd)


#: wall time of each QUICK eigen study (measured 11-12 s on 2 loaded cores), the unit of the estimate
QUICK_SECONDS = 15.0
#: a study estimated to take longer than this is refused before any work
MAX_HOURS = 24.0


def _runs(name: str, cfg) -> list[tuple[int, int, int, int, int, int]]:
    """(seeds S, samples per step n (0: exact), steps, in_dim, out_dim, records) of each simulation."""
    if name == "spread":
        return [(len(cfg.seeds), cfg.n_samples_euc if es.get_setting(l).loss == "euc" else cfg.n_samples_cos,
                 cfg.n_steps if es.get_setting(l).loss == "euc" else cfg.n_steps_cos, cfg.in_dim, cfg.out_dim,
                 (cfg.n_steps if es.get_setting(l).loss == "euc" else cfg.n_steps_cos) + 1) for l in cfg.losses]
    runs = []
    for st in es.SETTINGS:
        tc, n_steps, rec = cfg.toy(st)
        runs.append((1, tc.n_samples, n_steps, cfg.in_dim, cfg.out_dim, n_steps // rec + 2))
    return runs


def check_size(name: str, cfg, quick) -> None:
    """Refuse, before any work, a study whose per-step arrays exceed half the RAM or whose work
    (steps x seeds x samples x in_dim x out_dim, scaled from the quick preset) exceeds MAX_HOURS."""
    def work(c) -> float:
        return float(sum(n_steps * S * max(n, m) * d * m for S, n, n_steps, d, m, _ in _runs(name, c)))
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        ram = None
    # per step: the input, two views and their pre-activations (float64); the recorded eigenvalues
    need = max(8 * (4 * S * n * d + 2 * S * n * m + S * rec * m) for S, n, _, d, m, rec in _runs(name, cfg))
    if ram is not None and need > ram // 2:
        raise UserError(f"eigen {name}: the per-step arrays need about {need / 2**30:.3g} GiB (seeds x samples x "
                        f"in_dim, and the recorded eigenvalues), more than half of this machine's {ram / 2**30:.3g} GiB",
                        "reduce in_dim, n_samples or n_steps (see 'cffdyn sim eigen settings --help' for the keys)")
    hours = QUICK_SECONDS / 3600 * work(cfg) / work(quick)
    if hours > MAX_HOURS:
        raise UserError(f"eigen {name} would take about {hours:.3g} h (work grows as steps x seeds x samples x "
                        f"in_dim x out_dim; the quick preset takes about {QUICK_SECONDS:g} s)",
                        f"reduce n_steps, n_samples or in_dim (the limit is about {MAX_HOURS:g} h of work)")


def _summary(name: str, res: dict) -> str:
    if "outcomes" in res:
        return f"{name}: " + ", ".join(f"{k}={v}" for k, v in res["outcomes"].items())
    parts = [f"{k}: slowest/fastest t90 median={v['ratio_slowest_fastest_median']:.2f}, "
             f"seed-var@horizon={v['mean_var_across_seeds_at_horizon']:.3g}" for k, v in res["losses"].items()]
    return f"{name}: " + "; ".join(parts)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    fmt = HelpFormatter
    p = make_parser(prog=prog or "cffdyn sim eigen", formatter_class=fmt,
                    description="Eigenmode learning dynamics of non-contrastive SSL with a closed-form "
                                            "linear predictor (Euclidean / cosine losses and their IsoLoss forms).")
    sub = p.add_subparsers(dest="cmd", required=True)
    helps = {"settings": "eigenvalue trajectories + collapse/isotropy outcome for all eight settings, linear toy",
             "settings-relu": "the same for the ReLU toy (paper Fig. 6)",
             "spread": "per-mode time-to-90% (slowest/fastest ratio), across-seed variance at a fixed horizon, "
                       "and the per-mode ODE vs expected-gradient iteration check",
             "all": "run settings, settings-relu and spread"}
    for name, h in helps.items():
        sp = sub.add_parser(name, help=h.replace("%", "%%"), description=h, formatter_class=fmt)
        sp.add_argument("--preset", choices=("quick", "full"), default="quick",
                        help="quick: small CPU run (exact expectations for linear Euclidean settings, fewer "
                             "samples per step elsewhere, recorded in the JSON); full: the notebook's parameters")
        sp.add_argument("--out", default="results/sim/eigen", help="output directory for <study>.json/.png")
        keys = "" if name == "all" else "; keys: " + ", ".join(
            f"{f.name} ({_kind(f)})" for f in dataclasses.fields(_STUDIES[name][1]))
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one field of the study's config dataclass (repeatable; tuples as "
                             "comma-separated values, e.g. seeds=0,1,2; values are checked when parsed); "
                             "not allowed with 'all'" + keys)
        sp.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    names = list(_STUDIES) if args.cmd == "all" else [args.cmd]
    if args.cmd == "all" and args.overrides:
        raise UserError("--set is not allowed with 'all' (configs differ per study)", "run one study with --set")
    cfgs = {}
    for name in names:  # every config checked BEFORE the first study runs
        fn, quick, full = _STUDIES[name]
        try:
            cfgs[name] = apply_overrides(quick if args.preset == "quick" else full, args.overrides)
        except (ValueError, TypeError) as e:
            raise UserError(f"--set: {e}", "give KEY=VALUE with a field of the study's config and a finite "
                                           "value of its type") from None
    for name in names:
        check_size(name, cfgs[name], _STUDIES[name][1])
    with output_dir(args.out, "--out"):   # one writer per directory; a failed first run leaves no empty --out
        for name in names:
            res = _STUDIES[name][0](cfgs[name], args.out, progress=not args.quiet)
            print(_summary(name, res))
            print(f"  -> {Path(args.out) / (res['name'] + '.json')} ({res['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
