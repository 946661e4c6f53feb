"""Which variance ratio a two-level comparison reports, chosen by the design it was drawn with.

A comparison record (``analysis.comparisons[*]`` of a ViT study, made by
:func:`vit.factorial.compare_levels`) holds the within-cell ratio with its tests and Steier's pooled
ratio (all runs of a level as one sample).  Matched seeds are paired data: where the record has
the Pitman-Morgan test on the seed pairs, the reported ratio is the within-cell one, with that
test's p and the seed-bootstrap interval.  Otherwise it is Steier's pooled ratio with its F-test
(no interval).  The replication table and the clamp study's bridge to the ViT both report this
ratio, so the figure and the table cannot disagree.  Reads plain dicts; imports no study.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

from cffdyn.exports import finite

__all__ = ["ReportedRatio", "reported_ratio"]


def _num(x: Any) -> float | None:
    return float(x) if finite(x) else None


@dataclass(frozen=True)
class ReportedRatio:
    ratio: float | None                           # level a / level b
    ci95: tuple[float | None, float | None]
    p: float | None
    test: Literal["pitman_morgan", "steier_f", "within_f"]

    def inverted(self) -> "ReportedRatio":
        """The same ratio as level b / level a."""
        lo, hi = self.ci95
        inv = lambda v: None if v is None or v == 0 else 1.0 / v  # noqa: E731
        return ReportedRatio(inv(self.ratio), (inv(hi), inv(lo)), self.p, self.test)


def reported_ratio(comparison: Mapping[str, Any]) -> ReportedRatio:
    """The ratio ``comparison`` reports (see the module doc).  A record without Steier's entry
    (written before the study recorded it) reports its within-cell ratio and F-test."""
    paired = comparison.get("paired") or {}
    within = _num(comparison.get("ratio"))
    if paired and _num(paired.get("pm_p")) is not None and within is not None:
        ci = paired.get("boot_ci") or comparison.get("boot_ci") or (None, None)
        return ReportedRatio(within, (_num(ci[0]), _num(ci[1])), _num(paired["pm_p"]), "pitman_morgan")
    st = comparison.get("steier")
    if isinstance(st, Mapping):
        return ReportedRatio(_num(st.get("ratio")), (None, None), _num(st.get("p")), "steier_f")
    ci = comparison.get("boot_ci") or (None, None)
    return ReportedRatio(within, (_num(ci[0]), _num(ci[1])), _num(comparison.get("f_p")), "within_f")
