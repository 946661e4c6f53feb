"""The numbers the eigenmode studies export for the manuscript (specs over ``eigen_spread.json``
and ``eigen_settings.json``), and the names their figures and tables print.  Imports nothing
heavy, so the paper build can read these without loading the studies' simulators."""
from __future__ import annotations

from cffdyn.exports import NumberSpec, macro_name
__all__ = ["SPREAD_LOSSES", "setting_label", "spread_specs", "settings_specs"]

#: the losses of the spread study, in the order its table and figure list them
SPREAD_LOSSES = ("euc_simsiam", "euc_isoloss", "cos_simsiam", "cos_isoloss")


def setting_label(name: str) -> str:
    """Readable name of an eigenmode setting code (``euc_simsiam_nopred`` -> "Euclidean
    SimSiam, no predictor")."""
    parts = name.split("_")
    loss = {"euc": "Euclidean", "cos": "cosine"}.get(parts[0], parts[0])
    if len(parts) > 1 and parts[1] == "isoloss":
        return f"{loss} IsoLoss"
    extra = {"nopred": "no predictor", "nosg": "no stop-gradient"}
    tail = [extra.get(p, p) for p in parts[2:]]
    return f"{loss} SimSiam" + (", " + ", ".join(tail) if tail else "")


def spread_specs(data: dict) -> list[NumberSpec]:
    out = [NumberSpec("EigSeeds", "eigen_spread", "n_seeds", "d"),
           NumberSpec("EigHorizon", "eigen_spread", "config.horizon", "d"),
           NumberSpec("EigFrac", "eigen_spread", "config.frac", ".0f", 100.0),
           NumberSpec("EigModes", "eigen_spread", "config.out_dim", "d"),
           NumberSpec("EigInDim", "eigen_spread", "config.in_dim", "d"),
           NumberSpec("EigSigma", "eigen_spread", "config.sigma", "g"),
           NumberSpec("EigMapErr", "eigen_spread", "ode_check.euc_isoloss.rows[*].max_abs_iteration_minus_map",
                      "sci", reduce="max", desc="max |matrix iteration - per-mode map| (IsoLoss)"),
           NumberSpec("EigMapErrEuc", "eigen_spread", "ode_check.euc_simsiam.rows[*].max_abs_iteration_minus_map",
                      "sci", reduce="max")]
    for name in SPREAD_LOSSES:
        if name not in data.get("losses", {}):
            continue
        t = macro_name(name)
        p = f"losses.{name}"
        out += [NumberSpec(f"EigSpread{t}", "eigen_spread", p + ".ratio_slowest_fastest_median", ".1f",
                           desc=f"median over seeds of slowest/fastest time-to-90%, {name}"),
                NumberSpec(f"EigVarNorm{t}", "eigen_spread", p + ".mean_var_normalized_across_seeds_at_horizon",
                           "sci", desc=f"mean across-seed variance of normalised eigenvalues at the horizon, {name}"),
                NumberSpec(f"EigEta{t}", "eigen_spread", p + ".eta", "g")]
    return out


def settings_specs(data: dict) -> list[NumberSpec]:
    out = [NumberSpec("SetSteps", "eigen_settings", "config.n_steps", "d"),
           NumberSpec("SetStepsNopred", "eigen_settings", "config.n_steps_nopred", "d")]
    for name in data.get("settings", {}):
        t = macro_name(name)
        out.append(NumberSpec(f"SetMinMax{t}", "eigen_settings", f"settings.{name}.min_over_max_end", ".2f",
                              desc=f"min/max eigenvalue at the end, {name}"))
    return out
