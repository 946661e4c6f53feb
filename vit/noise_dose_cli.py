"""``cffdyn vit noise-dose``: run (or resume) the noise-dose study, test the recorded prediction
dose by dose, draw it, and optionally keep the result in ``recorded/vit/noise_dose``.

Examples::

    cffdyn vit noise-dose                                  # the preset: 2 x 4 doses x 12 seeds (~30 min, 1 core)
    cffdyn vit noise-dose --record                         # ... and keep it in recorded/vit/noise_dose
    cffdyn vit noise-dose --seeds 3 --set epochs=1 --set subset=300 --out /tmp/nd   # a tiny smoke run
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

from cffdyn.errors import UserError, make_parser, positive_int
from vit.study_config import resamples_arg

__all__ = ["main", "build_parser"]

DEFAULT_OUT = "results/vit/noise_dose"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = make_parser(prog=prog, description=(
        "The noise-dose study: loss_mode {clamp, subtract} x view_noise doses x matched seeds (seed design "
        "sgd: init and split fixed), each run measuring per layer the effective within-pair noise sigma_n_eff, "
        "the probe accuracy, the positive-pair similarity and the CAR; then, per dose, the clamp/subtract "
        "variance ratio of each with its paired 95% bootstrap interval and p-values, placed at the measured "
        "sigma_n_eff on the recorded prediction (recorded/sim/prediction), with a verdict per curve (tanh, "
        "relu: confirmed / refuted / inconclusive / untestable, rule in vit/noise_dose.py) and a trend test. "
        "Writes OUT/noise_dose.json, OUT/noise_dose.png/.pdf and the study under OUT; resumable."))
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    p.add_argument("--prediction", default=None, metavar="PATH",
                   help="the prediction: a recorded folder or a prediction.json (default: recorded/sim/prediction)")
    p.add_argument("--seeds", type=positive_int, default=None, help="seeds per cell (default: the preset's, 12)")
    p.add_argument("--doses", default=None, metavar="V1,V2,...",
                   help="view_noise doses in pixel SDs, at least 3 (default: the preset's 0.25,0.6,1.25,2.0)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="sets",
                   help="override a field of the base TrainConfig (repeatable), e.g. --set epochs=2")
    p.add_argument("--n-boot", type=resamples_arg, default=9999, help="bootstrap resamples (default 9999)")
    p.add_argument("--record", action="store_true",
                   help="keep the result (with provenance) in the repository's recorded/vit/noise_dose")
    p.add_argument("--record-to", default=None, metavar="DIR",
                   help="with --record: the folder of the record (default: recorded/vit/noise_dose; make gpu-check "
                        "records its arm beside its summary)")
    p.add_argument("--ran-at", default=None, metavar="COMMIT",
                   help="with --record: the commit the study's runs were trained at, when it differs from the one "
                        "analysing them now (recorded as provenance.study_commit)")
    p.add_argument("--batched", action="store_true",
                   help="train each cell's seeds in one seed-stacked pass (the GPU way; the same bits per seed)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _config(args: argparse.Namespace):
    from vit.config_args import parse_field_value
    from vit.study_config import NOISE_DOSE

    cfg = NOISE_DOSE
    changes: dict = {}
    if args.sets:
        over = {}
        for s in args.sets:
            if "=" not in s:
                raise UserError(f"--set {s!r}: expected FIELD=VALUE", "e.g. --set epochs=2")
            k, v = s.split("=", 1)
            if k.strip() in ("seed", "view_noise", "loss_mode"):
                raise UserError(f"--set {k.strip()}: the study sets it", "use --seeds / --doses")
            try:   # an unknown field, a bad value or a config the TrainConfig checks refuse
                over[k.strip()] = parse_field_value(k.strip(), v)
            except ValueError as exc:
                raise UserError(f"--set {s}: {exc}", "give FIELD=VALUE with a TrainConfig field "
                                                    "(see 'cffdyn vit train --help')") from None
        try:
            changes["base"] = cfg.base.replace(**over)
        except ValueError as exc:
            raise UserError(f"--set: {str(exc).replace('TrainConfig: ', '')}",
                            "change the offending --set value") from None
    if args.seeds is not None:
        changes["n_seeds"] = args.seeds
    if args.batched:
        changes["batched"] = True
    if args.doses is not None:
        try:
            doses = tuple(float(x) for x in args.doses.split(",") if x.strip())
        except ValueError:
            raise UserError(f"--doses {args.doses!r}: not a list of numbers", "e.g. --doses 0.25,0.6,1.25") from None
        changes["factors"] = (("loss_mode", ("clamp", "subtract")), ("view_noise", doses))
    try:
        return cfg.replace(**changes) if changes else cfg
    except ValueError as exc:
        raise UserError(str(exc).replace("StudyConfig: ", ""), "see 'cffdyn vit noise-dose --help'") from None


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    from cffdyn.errors import guarded
    prog = prog or "cffdyn vit noise-dose"
    return guarded(lambda a: _main(a, prog), argv, prog, resumable=True)


def _main(argv: Sequence[str] | None, prog: str) -> int:
    from cffdyn.io import atomic_write_json, ensure_writable_dir, read_json
    from cffdyn.machine import load_average
    from vit import noise_dose as nd
    from vit.config import departures
    from vit.study import run_study

    args = build_parser(prog).parse_args(argv)
    for opt, val in (("--ran-at", args.ran_at), ("--record-to", args.record_to)):
        if val is not None and not args.record:   # it would be ignored: the study would run without the record
            raise UserError(f"{opt} is only used with --record", f"add --record, or drop {opt}")
    cfg = _config(args)
    cfg_dict = json.loads(json.dumps(cfg.to_dict()))
    nd.check_design(cfg_dict)                                # before any work
    prediction, pred_sha = nd.load_prediction_record(args.prediction)
    out = ensure_writable_dir(args.out)
    load0, t0 = load_average(), time.perf_counter()
    study = run_study(cfg, out, progress=not args.quiet, seeds_per_task=cfg.n_seeds if cfg.batched else None)
    table = nd.run_table(study)
    an = nd.analyse(table, cfg_dict, prediction, n_boot=args.n_boot, sigma_init=nd.init_noise(cfg_dict))
    text = nd.format_noise_dose(an)
    atomic_write_json(out / "noise_dose.json", {
        "schema": nd.SCHEMA, "schema_version": nd.SCHEMA_VERSION, "study_config": cfg_dict,
        "prediction": str(args.prediction or nd.PREDICTION_DIR), "prediction_sha256": pred_sha,
        # named by this checkout's rule for the config that ran (a newer rule may name more than the runs did)
        "departures": list(dict.fromkeys(x for c in cfg.cells() for x in departures(cfg.run_config(c, cfg.seed0)))),
        "timing": study.get("timing"),
        "table": table, "analysis": an, "text": text})
    nd.draw_noise_dose(an, prediction, out / "noise_dose.png")
    print(text)
    print(f"noise-dose: wrote {out / 'noise_dose.json'}, {out / 'noise_dose.png'}, {out / 'noise_dose.pdf'}")
    if args.record:
        wall = (study.get("timing") or {}).get("wall_s") or (time.perf_counter() - t0)
        rp = nd.record_noise_dose(out, command=" ".join([prog, *(sys.argv[1:] if argv is None else argv)]),
                                  wall_s=wall, load_start=(study.get("timing") or {}).get("load_avg_start") or load0,
                                  directory=args.record_to, study_commit=args.ran_at)
        read_json(rp)
        print(f"noise-dose: recorded {rp}")
    return 0
