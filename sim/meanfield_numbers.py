"""The numbers the mean-field studies of :mod:`sim.studies` export for the manuscript (specs over
``convergence.json``, ``hfunc.json``, ``phase.json`` and ``noise.json``)."""
from __future__ import annotations

from cffdyn.exports import NumberSpec

__all__ = ["convergence_specs", "hfunc_specs", "phase_specs", "noise_specs"]


def convergence_specs(data: dict) -> list[NumberSpec]:
    c = "convergence"
    out = [NumberSpec("ConvExponent", c, "exponent", ".3f", desc="fitted exponent of the fluctuation (RMS_t SD_t) vs N",
                      uncertainty=("ConvExponentLo",)),
           NumberSpec("ConvExponentLo", c, "exponent_ci95[0]", ".3f", desc="bootstrap 95% CI, lower"),
           NumberSpec("ConvExponentHi", c, "exponent_ci95[1]", ".3f", desc="bootstrap 95% CI, upper"),
           NumberSpec("ConvBoot", c, "config.n_boot", "d"),
           NumberSpec("ConvTrials", c, "config.trials", "d"),
           NumberSpec("ConvTau", c, "config.model.tau", "g"),
           NumberSpec("ConvMTwo", c, "config.model.m2[0]", "g"),
           NumberSpec("ConvQZero", c, "config.q0", "g"),
           NumberSpec("ConvTEnd", c, "config.t_end", "g"),
           NumberSpec("ConvTEscape", c, "t_escape", ".1f"),
           NumberSpec("ConvNcount", c, "rows[*].N", "d", reduce="count"),
           NumberSpec("ConvNmin", c, "rows[*].N", "d", reduce="min"),
           NumberSpec("ConvNmax", c, "rows[*].N", "d", reduce="max"),
           NumberSpec("ConvFlucNmin", c, "rows[0].fluct", ".4f"),
           NumberSpec("ConvFlucNmax", c, "rows[-1].fluct", ".4f"),
           NumberSpec("ConvMaxZ", c, "rows[*].max_abs_z", ".1f", reduce="max",
                      desc="largest |mean - ODE| / SE over record times and N"),
           NumberSpec("ConvRkErr", c, "rk4_vs_solve_ivp_max", "sci"),
           NumberSpec("ConvFullZ", c, "full_vs_reduced.max_z", ".2f"),
           NumberSpec("ConvFullTrials", c, "full_vs_reduced.full_trials", "d")]
    for tag, i in (("Nmin", 0), ("Nmax", -1)):
        for when, w in (("end", "End"), ("escape", "Esc")):
            out += [NumberSpec(f"ConvNBias{w}{tag}", c, f"rows[{i}].bias.{when}.N_bias", ".2f",
                               desc=f"N x (mean - ODE) at the {when} time"),
                    NumberSpec(f"ConvNBiasSe{w}{tag}", c, f"rows[{i}].bias.{when}.N_se", ".2f")]
    return out


def hfunc_specs(data: dict) -> list[NumberSpec]:
    h = "hfunc"
    out = [NumberSpec("HKappaTanh", h, "learnability.tanh.kappa", ".4f"),
           NumberSpec("HVTanh", h, "learnability.tanh.v", ".5f")]
    tau0 = data["config"]["taus"][0]
    out += [NumberSpec("HSlopeTanh", h, f"curves[activation=tanh,tau={tau0}].slope_at_0", ".5f"),
            NumberSpec("HSlopeLinTanh", h, f"curves[activation=tanh,tau={tau0}].slope_at_0_linearised", ".5f"),
            NumberSpec("HTauZero", h, "config.taus[0]", "g")]
    return out


def phase_specs(data: dict) -> list[NumberSpec]:
    p = "phase"
    return [NumberSpec("PhaseShareOne", p, "share_feature1", ".1f", 100.0),
            NumberSpec("PhaseShareTwo", p, "share_feature2", ".1f", 100.0),
            NumberSpec("PhaseNics", p, "n_ics", "d"),
            NumberSpec("PhaseNicsMFour", p, "n_ics_m4", "d", desc="initial conditions of the m4 sweep"),
            NumberSpec("PhaseGridMFour", p, "config.n_grid_m4", "d"),
            NumberSpec("PhaseTau", p, "config.model.tau", "g"),
            NumberSpec("PhaseMTwoA", p, "config.model.m2[0]", "g"),
            NumberSpec("PhaseMTwoB", p, "config.model.m2[1]", "g"),
            NumberSpec("PhaseKurtLo", p, "m4_sweep[0].kurtosis", "g"),
            NumberSpec("PhaseKurtHi", p, "m4_sweep[-1].kurtosis", "g"),
            NumberSpec("PhaseShareKurtLo", p, "m4_sweep[0].share_feature1", ".1f", 100.0),
            NumberSpec("PhaseShareKurtHi", p, "m4_sweep[-1].share_feature1", ".1f", 100.0),
            NumberSpec("PhaseEigKurtLo", p, "m4_sweep[0].eigs_at_0[-1]", ".5f"),
            NumberSpec("PhaseEigKurtHi", p, "m4_sweep[-1].eigs_at_0[-1]", ".5f"),
            NumberSpec("PhaseSgdN", p, "config.sgd_N", "d")]


def noise_specs(data: dict) -> list[NumberSpec]:
    n = "noise"
    out = [NumberSpec("NoiseMaxDiffNotes", n, "curves[*].max_abs_diff_notes", "sci", reduce="max"),
           NumberSpec("NoiseSgdTrials", n, "config.sgd_trials", "d"),
           NumberSpec("NoiseSgdN", n, "config.sgd_N", "d")]
    for rho, tag in ((0.0, "Indep"), (-1.0, "Anti")):
        out.append(NumberSpec(f"NoiseQ{tag}", n, f"curves[tau=1.0,rho={rho}].vs_notes[sn2=1.0].ode", ".4f",
                              desc=f"stationary Q*, tau=1, sigma_n^2=1, rho={rho}"))
        out.append(NumberSpec(f"NoiseSgd{tag}", n, f"sgd[rho={rho},sn2=1.0].mean", ".4f"))
        out.append(NumberSpec(f"NoiseSgdSd{tag}", n, f"sgd[rho={rho},sn2=1.0].sd", ".4f"))
    out.append(NumberSpec("NoiseQZero", n, "curves[tau=1.0,rho=0.0].vs_notes[sn2=0.0].ode", ".4f"))
    return out
