"""The numbers ``theory verify`` exports for the manuscript (specs over ``verify.json``)."""
from __future__ import annotations

from cffdyn.exports import NumberSpec

__all__ = ["number_specs"]


def number_specs(data: dict) -> list[NumberSpec]:
    """The symbolic identities, the mutation controls, the autograd and mpmath comparisons, timing."""
    v = "verify"
    mp = "autograd.worst_unfloored_vs_mpmath."
    return [NumberSpec("NIdentities", v, "identities[*].name", "d", reduce="count"),
            NumberSpec("NIdentitiesPassed", v, "identities[passed=True].name", "d", reduce="count"),
            NumberSpec("NMutations", v, "mutations[*].name", "d", reduce="count",
                       desc="mutation controls (deliberately wrong references)"),
            NumberSpec("NMutationsFlagged", v, "mutations[flagged=True].name", "d", reduce="count",
                       desc="mutation controls with a non-zero residual"),
            NumberSpec("AutogradCases", v, "autograd.cases", "d"),
            NumberSpec("AutogradMaxErr", v, "autograd.max_rel_err", "sci",
                       desc="max relative gradient error, denominator floored at FLOOR of one gradient term"),
            NumberSpec("AutogradFloor", v, "autograd.floor", "sci", desc="the floor, in gradient terms"),
            NumberSpec("AutogradBelowFloor", v, "autograd.cases_below_floor", "d",
                       desc="cases whose largest gradient entry is below the floor"),
            NumberSpec("AutogradMaxErrUnfloored", v, "autograd.max_rel_err_unfloored", "sci",
                       desc="max relative gradient error without the floor"),
            NumberSpec("AutogradAbsErrTerm", v, "autograd.max_abs_err_over_term", "sci",
                       desc="max absolute gradient error in units of one gradient term"),
            NumberSpec("AutogradTol", v, "autograd.tol_rel", "sci"),
            NumberSpec("MpCases", v, mp + "cases", "d", desc="worst un-floored cases re-computed with mpmath"),
            NumberSpec("MpDigits", v, mp + "dps", "d", desc="significant digits of the mpmath reference"),
            NumberSpec("MpErrDerived", v, mp + "symbolic_float64_max_abs_err_over_term", "sci",
                       desc="|derived float64 - mpmath| in gradient terms, worst cases"),
            NumberSpec("MpErrAutograd", v, mp + "autograd_float64_max_abs_err_over_term", "sci",
                       desc="|autograd float64 - mpmath| in gradient terms, worst cases"),
            NumberSpec("MpGradOverTerm", v, mp + "max_grad_over_term", "sci",
                       desc="largest max|gradient| of the worst cases, in gradient terms (their cancellation)"),
            NumberSpec("MpNearBoundary", v, mp + "cases_with_a_positive_pair_within_1e-7_of_boundary", "d",
                       desc="worst cases with a positive pair within 1e-7 of the clamp boundary"),
            NumberSpec("MpWorstGap", v, mp + "worst_case.closest_positive_pair_to_boundary", "sci",
                       desc="distance |s + m - 1| of the closest positive pair in the single worst case"),
            NumberSpec("VerifySeconds", v, "seconds", ".1f"),
            NumberSpec("VerifyLoad", v, "machine.load_avg[0]", ".1f", desc="1-minute load average at the start"),
            NumberSpec("VerifyCpus", v, "machine.cpus", "d", desc="CPUs of the machine that ran verify")]
