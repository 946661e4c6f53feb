"""Verdicts of the replication table: does our number agree with the source paper's claim?

One rule for every row (stated in the manuscript as :data:`VERDICT_RULE`): a claim tied to a
dataset, model or schedule is compared only when ours match it; a directional claim agrees when
our test rejects equality at :data:`ALPHA` in the source's direction and disagrees when it
rejects in the opposite one (else: cannot compare, inconclusive); a claim of no difference
disagrees when our test rejects equality; a reported value agrees when it lies within two
seed-to-seed SDs of our mean; a qualitative ordering about a deterministic model agrees when
our computed quantities show it.  Each function returns a :class:`Verdict` (word + reason).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cffdyn.exports import finite

__all__ = ["ALPHA", "VERDICTS", "VERDICT_RULE", "Verdict", "verdict_direction", "verdict_null",
           "verdict_value", "verdict_ordering"]

#: significance level of every verdict that rests on a test
ALPHA = 0.05
VERDICTS = ("agree", "disagree", "cannot compare")
VERDICT_RULE = (
    r"Verdicts follow one rule, computed from the numbers by \texttt{paper/verdicts.py}: "
    r"a claim tied to a dataset, model or schedule is compared only when ours match it (else \emph{cannot compare}); "
    r"a directional claim (a ratio above or below 1) \emph{agrees} when our test rejects equality at the 5\% level "
    r"in the source's direction, \emph{disagrees} when it rejects in the opposite direction, and is "
    r"\emph{cannot compare} (inconclusive) when it does not reject; a claim of no difference \emph{disagrees} "
    r"when our test rejects equality at the 5\% level and \emph{agrees} otherwise; a reported value \emph{agrees} "
    r"when it lies within two seed-to-seed SDs of our mean; a qualitative claim about a deterministic model "
    r"\emph{agrees} when our computed quantities show the stated ordering; "
    r"a comparison of timings across devices, machines or loads is \emph{cannot compare}. "
    r"Each verdict names the test it rests on; with matched seeds that is the paired test.")


@dataclass(frozen=True)
class Verdict:
    """One row's verdict: ``word`` in :data:`VERDICTS`, the reason (plain text) and ``test``, the
    test or computation it rests on (LaTeX, e.g. ``paired t-test, p = 0.024``; empty only when the
    claim could not be compared at all).  ``compared``: False when ours could not be set beside the
    claim (other data, model, schedule or device; no estimate), True when the comparison was made,
    so that "cannot compare" with ``compared`` True is an inconclusive test."""

    word: str
    why: str
    test: str = ""
    compared: bool = True

    @property
    def inconclusive(self) -> bool:
        """Compared, and the test decided nothing."""
        return self.compared and self.word == "cannot compare"

    def __post_init__(self) -> None:
        if self.word not in VERDICTS:
            raise ValueError(f"verdict {self.word!r} not in {VERDICTS}")


def verdict_direction(source_sign: int, estimate: float | None, p: float | None, *, comparable: bool = True,
                      why_not: str = "", alpha: float = ALPHA, test: str = "") -> Verdict:
    """Directional claim (``source_sign`` +1: ours should exceed the null, -1: fall below it);
    ``estimate`` is signed relative to the null (e.g. log of a ratio), ``p`` the two-sided p-value
    of ``test``."""
    if not comparable:
        return Verdict("cannot compare", why_not, test, compared=False)
    if not (finite(estimate) and finite(p)):
        return Verdict("cannot compare", "no estimate or no test", test, compared=False)
    if p >= alpha:
        return Verdict("cannot compare", f"inconclusive: not significant at the {alpha:g} level", test)
    same = (estimate > 0) == (source_sign > 0)
    return (Verdict("agree", f"same direction, p < {alpha:g}", test) if same
            else Verdict("disagree", f"opposite direction, p < {alpha:g}", test))


def verdict_null(p: float | None, *, comparable: bool = True, why_not: str = "", alpha: float = ALPHA,
                 test: str = "") -> Verdict:
    """A claim of no difference: rejected (disagree) when ``p < alpha`` in ``test``."""
    if not comparable:
        return Verdict("cannot compare", why_not, test, compared=False)
    if not finite(p):
        return Verdict("cannot compare", "no test", test, compared=False)
    return (Verdict("disagree", f"difference significant, p < {alpha:g}", test) if p < alpha
            else Verdict("agree", f"no difference at the {alpha:g} level", test))


def verdict_value(source: float, values: list[float], *, comparable: bool = True, why_not: str = "",
                  test: str = "within 2 SD of our per-seed values") -> Verdict:
    """A reported value against our per-seed values: within two SDs of our mean agrees."""
    if not comparable:
        return Verdict("cannot compare", why_not, test, compared=False)
    v = [float(x) for x in values if finite(x)]
    if len(v) < 2:
        return Verdict("cannot compare", "fewer than 2 seeds", test, compared=False)
    mean, sd = float(np.mean(v)), float(np.std(v, ddof=1))
    return (Verdict("agree", "within 2 SD of our seeds", test) if abs(source - mean) <= 2 * sd
            else Verdict("disagree", f"{abs(source - mean) / sd:.1f} SD from our mean" if sd > 0
                         else "outside our (constant) seeds", test))


def verdict_ordering(holds: bool | None, *, comparable: bool = True, why_not: str = "",
                     test: str = "ordering of the computed quantities") -> Verdict:
    """A qualitative ordering claim about a deterministic computation."""
    if not comparable:
        return Verdict("cannot compare", why_not, test, compared=False)
    if holds is None:
        return Verdict("cannot compare", "quantity not computed", test, compared=False)
    return (Verdict("agree", "ordering as stated", test) if holds
            else Verdict("disagree", "ordering reversed", test))
