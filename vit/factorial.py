"""One study's variance comparisons: every test of :mod:`vit.stats` for every pair of levels of
every factor, side by side, and the text table of them.

:func:`compare_levels` takes the cells of two levels (one cell per level combination of the
other factors) and reports each test of :mod:`vit.stats` that fits, with the paired ones where
the seeds are matched (``matched=True``); :func:`factorial_analysis` does it for a whole
factorial design; :func:`format_table` prints it as Steier's table.

Small samples: each test has a minimum seeds per cell (:data:`MIN_SEEDS`); below it, or on
degenerate data (zero variance), the test gives ``None`` and a sentence in ``notes`` saying why,
never a NaN or a p-value of a degenerate statistic.

Data format: ``factors`` is a sequence of factor names; ``data`` maps a tuple of levels (one per
factor, in factor order) to the sequence of per-seed values of that cell; ``seeds`` (optional)
maps the same keys to the seeds of those values.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from vit.stats import (STEIER_RATIO, as_cells, bootstrap_ratio_ci, describe_cells, f_test_p,
                       f_test_power, levene_tests, paired_bootstrap_ci, paired_permutation_p, paired_t_test,
                       permutation_ratio_p, pitman_morgan, pitman_morgan_power, pooled_variance, seeds_for_power,
                       seeds_for_power_paired, steier_pooled_f, welch_test)

__all__ = ["MIN_SEEDS", "compare_levels", "factorial_analysis", "format_p", "format_table"]


# ============================================================================ one comparison
#: fewest seeds per cell each test needs; below, the test is reported as not computed, in words
MIN_SEEDS = {"within_f": 2, "steier_f": 2, "levene": 3, "perm_independent": 3, "boot_independent": 3,
             "pitman_morgan": 3, "perm_paired": 3, "boot_paired": 3, "paired_t": 2, "welch": 2}
_WHY_MIN = {
    "levene": "with 2 seeds the two absolute residuals of a cell are equal, so Levene/Brown-Forsythe are degenerate",
    "perm_independent": "too few distinct permutations of within-cell residuals",
    "boot_independent": "with 2 seeds half the within-cell resamples have zero variance",
    "pitman_morgan": "with 2 seeds the centred pairs of a cell are +-d/2 and leave no df for the correlation",
    "perm_paired": "too few distinct swaps",
    "boot_paired": "with 2 seeds half the seed resamples have zero variance",
}


def _need(key: str, n: int) -> str | None:
    m = MIN_SEEDS[key]
    if n >= m:
        return None
    why = _WHY_MIN.get(key)
    return f"not computed: needs at least {m} seeds per cell, has {n}" + (f" ({why})" if why else "")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def compare_levels(cells_a: Sequence[Sequence[float]], cells_b: Sequence[Sequence[float]], *,
                   matched: bool = True, alpha: float = 0.05, n_boot: int = 9999, n_perm: int = 9999,
                   seed: int = 0, assumed_ratio: float = STEIER_RATIO, assumed_corr: float = 0.5,
                   target_power: float = 0.8) -> dict[str, Any]:
    """All statistics of level a against level b, side by side (see module doc); JSON-able.

    ``cells_a[j]`` and ``cells_b[j]`` are partner cells (same levels of the other factors);
    ``matched``: the values of partner cells are aligned by seed (the same seeds in the same
    order), so the paired analysis applies.  A test that needs more seeds than the cells have,
    or whose data are degenerate, gives ``None`` and a sentence in ``notes[test]``."""
    import warnings
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return _compare_levels(cells_a, cells_b, matched=matched, alpha=alpha, n_boot=n_boot, n_perm=n_perm,
                               seed=seed, assumed_ratio=assumed_ratio, assumed_corr=assumed_corr,
                               target_power=target_power)


def _compare_levels(cells_a, cells_b, *, matched, alpha, n_boot, n_perm, seed, assumed_ratio, assumed_corr,
                    target_power) -> dict[str, Any]:
    ca, cb = as_cells(cells_a, "level a", 1), as_cells(cells_b, "level b", 1)
    n_min = min(c.size for c in ca + cb)
    notes: dict[str, str] = {}
    out: dict[str, Any] = {"design": "matched seeds" if matched else "independent seeds",
                           "cells_a": len(ca), "cells_b": len(cb), "n_a": int(sum(c.size for c in ca)),
                           "n_b": int(sum(c.size for c in cb)), "seeds_per_cell": int(n_min), "notes": notes}
    # ---- within-cell pooled F (the cells of a level pooled after removing each cell's mean)
    out.update({"pooled_var_a": None, "pooled_var_b": None, "df_a": None, "df_b": None, "ratio": None, "f_p": None})
    if (why := _need("within_f", n_min)) is None:
        va, dfa = pooled_variance(ca)
        vb, dfb = pooled_variance(cb)
        out.update(pooled_var_a=va, pooled_var_b=vb, df_a=dfa, df_b=dfb)
        if va > 0 and vb > 0:
            out["ratio"] = va / vb
            out["f_p"] = f_test_p(va / vb, dfa, dfb)
        else:
            notes["within_f"] = "not computed: a level has zero within-cell variance (all its seeds gave equal values)"
    else:
        notes["within_f"] = why
    # ---- Steier's pooled F (all runs of a level as one sample)
    st = steier_pooled_f(ca, cb)
    out["steier"] = st
    if st["p"] is None:
        notes["steier_f"] = "not computed: a level has zero variance over all its runs"
    # ---- independent-sample tests on within-cell residuals
    out.update({"levene_W": None, "levene_p": None, "bf_W": None, "bf_p": None, "perm_log_ratio": None,
                "perm_p": None, "boot_ci": None})
    if (why := _need("levene", n_min)) is None:
        lv = levene_tests(ca, cb)
        if all(_finite(v) for v in lv.values()):
            out.update(lv)
        else:
            notes["levene"] = "not computed: the absolute residuals are constant (degenerate data)"
    else:
        notes["levene"] = why
    if out["ratio"] is not None and (why := _need("perm_independent", n_min)) is None:
        out["perm_log_ratio"], out["perm_p"] = permutation_ratio_p(ca, cb, n_resamples=n_perm, seed=seed)
    else:
        notes["perm_independent"] = why or notes["within_f"]
    if out["ratio"] is not None and (why := _need("boot_independent", n_min)) is None:
        lo, hi = bootstrap_ratio_ci(ca, cb, n_resamples=n_boot, seed=seed + 1)
        if _finite(lo) and _finite(hi) and lo > 0:
            out["boot_ci"] = [lo, hi]
        else:
            notes["boot_independent"] = "not computed: resamples with zero variance make the interval unbounded"
    else:
        notes["boot_independent"] = why or notes["within_f"]
    out["boot_confidence"] = 0.95
    out.update(welch_test(ca, cb) if n_min >= 2 else {})
    # ---- paired analysis (matched seeds)
    paired: dict[str, Any] | None = None
    if matched:
        paired = {"pm_r": None, "pm_t": None, "pm_df": None, "pm_p": None, "pair_corr": None, "n_pairs": None,
                  "perm_log_ratio": None, "perm_p": None, "boot_ci": None, "boot_dropped": None,
                  "paired_t": None, "paired_t_df": None, "paired_t_p": None}
        if (why := _need("pitman_morgan", n_min)) is None:
            pm = pitman_morgan(ca, cb)
            pm.pop("ratio")
            if _finite(pm["pm_p"]) and _finite(pm["pair_corr"]):
                paired.update(pm)
            else:
                notes["pitman_morgan"] = "not computed: a level has zero within-cell variance"
        else:
            notes["pitman_morgan"] = why
        if out["ratio"] is not None and (why := _need("perm_paired", n_min)) is None:
            paired["perm_log_ratio"], paired["perm_p"] = paired_permutation_p(ca, cb, n_resamples=n_perm, seed=seed)
        else:
            notes["perm_paired"] = why or notes["within_f"]
        if out["ratio"] is not None and (why := _need("boot_paired", n_min)) is None:
            lo, hi, bad = paired_bootstrap_ci(ca, cb, n_resamples=n_boot, seed=seed + 2)
            if _finite(lo) and _finite(hi) and lo > 0:
                paired["boot_ci"], paired["boot_dropped"] = [lo, hi], bad
            else:
                notes["boot_paired"] = "not computed: resamples with zero variance make the interval unbounded"
        else:
            notes["boot_paired"] = why or notes["within_f"]
        if n_min >= 2:
            paired.update(paired_t_test(ca, cb))
    out["paired"] = paired
    # ---- power
    power: dict[str, Any] = {"alpha": alpha, "target": target_power, "seeds_per_cell": int(n_min),
                             "cells_per_level": len(ca)}
    for tag, rho in (("observed", out["ratio"]), ("assumed", assumed_ratio)):
        ok = rho is not None and rho > 0 and math.isfinite(rho) and out["df_a"] is not None
        power[f"{tag}_ratio"] = rho
        power[f"power_{tag}"] = f_test_power(rho, out["df_a"], out["df_b"], alpha) if ok else None
        power[f"seeds_for_target_{tag}"] = (seeds_for_power(rho, len(ca), len(cb), power=target_power, alpha=alpha)
                                            if ok else None)
    # Steier's pooled F: df k n - 1 (the within-cell power is the right one when cell means differ)
    n_lv = out["n_a"]
    power["steier_power_assumed"] = f_test_power(assumed_ratio, n_lv - 1, out["n_b"] - 1, alpha)
    if matched and len(ca) == len(cb):
        pp: dict[str, Any] = {"assumed_corr": assumed_corr, "observed_corr": paired["pair_corr"] if paired else None}
        for ctag, c in (("assumed_corr", assumed_corr), ("observed_corr", pp["observed_corr"])):
            okc = c is not None and _finite(c) and -1 < c < 1
            df = len(ca) * (n_min - 1) - 1
            pp[f"power_assumed_ratio_{ctag}"] = (pitman_morgan_power(assumed_ratio, c, df, alpha)
                                                 if okc and df >= 1 else None)
            pp[f"seeds_for_target_{ctag}"] = (seeds_for_power_paired(assumed_ratio, c, len(ca), power=target_power,
                                                                     alpha=alpha) if okc else None)
        power["paired"] = pp
    out["power"] = power
    return out


def factorial_analysis(factors: Sequence[str], data: Mapping[tuple, Sequence[float]], *,
                       seeds: Mapping[tuple, Sequence[int]] | None = None, matched: bool = True,
                       metric: str = "test_acc", alpha: float = 0.05, n_boot: int = 9999,
                       n_perm: int = 9999, seed: int = 0, assumed_ratio: float = STEIER_RATIO,
                       assumed_corr: float = 0.5, target_power: float = 0.8) -> dict[str, Any]:
    """Cell summaries and, for every factor, every pair of its levels in level order (a 2-level
    factor gives one comparison, ratio ``level0 / level1``).

    ``seeds`` (cell -> the seed of each value) with ``matched=True``: partner cells (equal levels
    of the other factors) are aligned on the seeds common to ALL cells of the comparison, so the
    paired analysis compares runs of the same seed; without ``seeds`` values are taken to be in
    seed order.  ``matched=False`` (independent seeds per cell): no paired analysis.
    A comparison with a cell of fewer than 2 values (a partial study) is left out."""
    factors = list(factors)
    if not factors:
        raise ValueError("factorial_analysis: no factors")
    for key in data:
        if not isinstance(key, tuple) or len(key) != len(factors):
            raise ValueError(f"cell key {key!r} must be a tuple of {len(factors)} levels ({factors})")
    cells = describe_cells(data)
    out: dict[str, Any] = {"metric": metric, "factors": factors,
                           "design": "matched seeds" if matched else "independent seeds",
                           "assumed_corr": assumed_corr,
                           "cells": [{"levels": dict(zip(factors, c.levels)), "n": c.n, "mean": c.mean,
                                      "sd": c.sd if c.n > 1 else None, "values": [float(v) for v in data[c.levels]],
                                      **({"seeds": [int(s) for s in seeds[c.levels]]} if seeds else {})}
                                     for c in cells],
                           "comparisons": []}
    for fi, fname in enumerate(factors):
        levels: list[Any] = []
        for key in data:
            if key[fi] not in levels:
                levels.append(key[fi])
        others = []
        for key in data:
            o = key[:fi] + key[fi + 1:]
            if o not in others:
                others.append(o)
        for i in range(len(levels)):
            for j in range(i + 1, len(levels)):
                ka = [o[:fi] + (levels[i],) + o[fi:] for o in others]
                kb = [o[:fi] + (levels[j],) + o[fi:] for o in others]
                keep = [(a, b) for a, b in zip(ka, kb) if a in data and b in data]
                if not keep or any(len(data[k]) < 2 for ab in keep for k in ab):
                    continue  # variance needs >= 2 seeds per cell (partial study)
                if matched and seeds is not None:
                    common = set.intersection(*(set(seeds[k]) for ab in keep for k in ab))
                    order = sorted(common)

                    def vals(k):
                        m = dict(zip(seeds[k], data[k]))
                        return [m[s] for s in order]
                    if len(order) < 2:
                        continue
                else:
                    def vals(k):
                        return list(data[k])
                ca = [vals(a) for a, _ in keep]
                cb = [vals(b) for _, b in keep]
                cmp = compare_levels(ca, cb, matched=matched, alpha=alpha, n_boot=n_boot, n_perm=n_perm, seed=seed,
                                     assumed_ratio=assumed_ratio, assumed_corr=assumed_corr, target_power=target_power)
                out["comparisons"].append({"factor": fname, "level_a": levels[i], "level_b": levels[j], **cmp})
    return out


# ============================================================================ text
def format_p(p: float | None) -> str:
    """A p-value as the study's reports print it: three decimals, ``< 0.001`` below, ``n/a`` without one."""
    if p is None or not isinstance(p, (int, float)) or not math.isfinite(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else "< 0.001"


def _ci(ci: Sequence[float] | None) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def _cell_name(levels: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in levels.items())


def format_table(analysis: Mapping[str, Any], scale: float = 100.0, unit: str = "%",
                 extra_cols: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """Steier-style text table of :func:`factorial_analysis` output (values times ``scale``).

    Every test is one line: its statistic and p, or the sentence saying why it was not
    computed.  ``extra_cols``: optional {column title: {cell name: text}} appended to the cell
    rows (e.g. the raw-pixel probe)."""
    names = [_cell_name(c["levels"]) for c in analysis["cells"]]
    w = max([len(n) for n in names] + [4])
    extra_cols = dict(extra_cols or {})
    head = f"{'cell':<{w}}  {'n':>3}  {'mean':>8}  {'SD':>7}" + "".join(f"  {t:>{max(len(t), 8)}}" for t in extra_cols)
    lines = [f"metric: {analysis['metric']} (x{scale:g}, {unit}); design: {analysis.get('design', 'matched seeds')}",
             head]
    for c, name in zip(analysis["cells"], names):
        sd = c.get("sd")
        sd_s = f"{sd * scale:7.3f}" if _finite(sd) else "  (1 run)"
        row = f"{name:<{w}}  {c['n']:>3}  {c['mean'] * scale:8.3f}  {sd_s}"
        for t, col in extra_cols.items():
            row += f"  {col.get(name, ''):>{max(len(t), 8)}}"
        lines.append(row)
    for cmp in analysis["comparisons"]:
        notes = cmp.get("notes", {})
        a, b = cmp["level_a"], cmp["level_b"]

        def say(key: str, text: str | None) -> str:
            return text if text is not None else notes.get(key, "not computed")
        pw = cmp["power"]
        st = cmp["steier"]
        lines += ["", f"{cmp['factor']}: {a} vs {b} ({cmp['cells_a']} + {cmp['cells_b']} cells, "
                      f"{cmp['seeds_per_cell']} seeds per cell; {cmp['design']}); variance ratio = {a}/{b}"]
        lines.append("  Steier's pooled F (all runs of a level, other factors ignored): " + say(
            "steier_f", None if st["p"] is None else
            f"ratio {st['ratio']:.2f}x, F({st['df_a']}, {st['df_b']}) p {format_p(st['p'])}"))
        lines.append("  within-cell pooled F (cell means removed): " + say(
            "within_f", None if cmp["f_p"] is None else
            f"ratio {cmp['ratio']:.2f}x, F({cmp['df_a']}, {cmp['df_b']}) p {format_p(cmp['f_p'])}"))
        pr = cmp.get("paired")
        if pr is not None:
            lines.append("  paired, Pitman-Morgan (matched seeds): " + say(
                "pitman_morgan", None if pr["pm_p"] is None else
                f"r(sum, diff) {pr['pm_r']:+.2f}, t({pr['pm_df']}) {pr['pm_t']:+.2f}, p {format_p(pr['pm_p'])}; "
                f"correlation of paired runs {pr['pair_corr']:+.2f}"))
            lines.append("  paired permutation (labels swapped within each seed pair): " + say(
                "perm_paired", None if pr["perm_p"] is None else f"p {format_p(pr['perm_p'])}"))
            lines.append("  paired bootstrap (seeds resampled, 95% CI of the ratio): " + say(
                "boot_paired", None if pr["boot_ci"] is None else _ci(pr["boot_ci"])))
        else:
            lines.append("  paired analysis: not applicable (independent seeds per cell)")
        indep = "" if pr is None else " [assume independent cells; conservative when seeds are shared]"
        lines.append(f"  Levene / Brown-Forsythe{indep}: " + say(
            "levene", None if cmp["levene_p"] is None else f"p {format_p(cmp['levene_p'])} / {format_p(cmp['bf_p'])}"))
        lines.append(f"  permutation of residuals between levels{indep}: " + say(
            "perm_independent", None if cmp["perm_p"] is None else f"p {format_p(cmp['perm_p'])}"))
        lines.append(f"  bootstrap within cells, 95% CI{indep}: " + say(
            "boot_independent", None if cmp["boot_ci"] is None else _ci(cmp["boot_ci"])))
        if "mean_a" in cmp:
            mline = (f"  means {cmp['mean_a'] * scale:.2f} vs {cmp['mean_b'] * scale:.2f} "
                     f"(difference {cmp['mean_diff'] * scale:+.2f}); Welch p {format_p(cmp['welch_p'])}")
            if pr is not None and pr.get("paired_t_p") is not None:
                mline += f", paired t p {format_p(pr['paired_t_p'])}"
            lines.append(mline)
        if pw.get("power_assumed") is not None:
            lines.append(f"  power at an assumed ratio {pw['assumed_ratio']:.2f}x (alpha {pw['alpha']}): within-cell F "
                         f"{pw['power_assumed']:.2f} ({_seeds(pw['seeds_for_target_assumed'])} seeds/cell for "
                         f"{pw['target']:.0%}); Steier's F {pw['steier_power_assumed']:.2f}")
        pp = pw.get("paired")
        if pp:
            for ctag, label in (("assumed_corr", "assumed"), ("observed_corr", "observed")):
                c = pp.get(ctag)
                val = pp.get(f"power_assumed_ratio_{ctag}")
                if c is None or not _finite(c):
                    lines.append(f"  paired power at the {label} correlation: not computed (no correlation estimate)")
                    continue
                lines.append(f"  paired (Pitman-Morgan) power at ratio {pw['assumed_ratio']:.2f}x and an {label} "
                             f"correlation of paired runs of {c:+.2f}: "
                             + (f"{val:.2f}" if val is not None else "not computed (too few seeds)")
                             + f"; {_seeds(pp.get(f'seeds_for_target_{ctag}'))} seeds/cell for {pw['target']:.0%}")
    if not analysis["comparisons"]:
        lines.append("(no comparison: every cell needs >= 2 seeds)")
    return "\n".join(lines)


def _seeds(n: int | None) -> str:
    return str(n) if n is not None else "more than 2000"
