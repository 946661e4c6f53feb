"""The findings of a build, as sentences: the abstract's results and the Conclusion.

Every finding is generated from the same numbers and verdicts as the body (numbers through the
macros of :mod:`paper.numbers`, verdicts of :mod:`paper.verdicts` with the test each rests on), so
the abstract cannot state a result the build did not obtain.  A finding is *confirmed*, *refuted*
or *not tested* (the build could not test it: other data, other hardware, too little power).

The abstract states the headline findings (those with a ``clause``: the gradients, the theory's
prediction in simulation and on the ViT, Steier's claims where ours could be set beside them, the
power), each with its key number and uncertainty, and counts the others, which the Conclusion
states in full; :func:`abstract_words` counts its words against :data:`ABSTRACT_MAX_WORDS`.

:data:`FINDINGS` lists the makers, each with the studies it needs; a maker returns nothing when its
record is absent.  A study that tests a prediction on the ViT (a prediction or noise-dose record)
adds its maker to the build's list (:data:`paper.assemble.FINDINGS`), and the abstract and the
Conclusion then state its outcome.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from cffdyn.exports import finite
from paper.replication import RepRow, replication_rows
from paper.tex import tex_escape
from paper.verdicts import ALPHA
from vit.study_numbers import loss_mode_comparison

__all__ = ["Finding", "STATUSES", "FINDINGS", "ABSTRACT_MAX_WORDS", "findings", "abstract_tex", "abstract_words",
           "conclusion_tex"]

STATUSES = ("confirmed", "refuted", "not tested")
#: the abstract's length limit (words of the typeset text, the hand-written opening included)
ABSTRACT_MAX_WORDS = 250


@dataclass(frozen=True)
class Finding:
    """``status`` in :data:`STATUSES`; ``clause``: the finding as a short that-clause with its key
    number and uncertainty (LaTeX, no final period, no ``\\ref``) for the abstract, or "" for a
    finding the abstract only counts; ``sentence``: one or more complete sentences for the
    Conclusion; ``where``: the section it comes from (a ``\\ref`` label)."""

    status: str
    clause: str
    sentence: str
    where: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"finding status {self.status!r} not in {STATUSES}")
        if not self.sentence.rstrip().endswith((".", ".)")):
            raise ValueError(f"finding sentence does not end a sentence: {self.sentence!r}")


def _verify(results: dict, der: dict) -> list[Finding]:
    d = results["verify"]
    ids, muts = d.get("identities") or [], d.get("mutations") or []
    ok = (ids and all(i["passed"] for i in ids) and all(m["flagged"] for m in muts)
          and (d.get("autograd") or {}).get("passed", False))
    clause = (r"the derived gradients of the clamped loss are CFF's Eq.~18 and A.5--A.7 (\NIdentitiesPassed{} of "
              r"\NIdentities{} symbolic identities exact, \NMutationsFlagged{} of \NMutations{} deliberately wrong "
              r"references flagged) and match automatic differentiation to a relative error of at most "
              r"$\AutogradMaxErr$ (tolerance $\AutogradTol$)")
    if ok:
        short = (r"the gradients are exact (\NIdentitiesPassed{} of \NIdentities{} identities; autograd agrees to "
                 r"$\AutogradMaxErr$)")
        return [Finding("confirmed", short, clause + ".", "sec:losses")]
    return [Finding("refuted", r"every derived gradient case is an exact identity (\NIdentitiesPassed{} of "
                               r"\NIdentities{} hold)",
                    r"only \NIdentitiesPassed{} of \NIdentities{} symbolic gradient identities hold exactly "
                    r"(Table~\ref{tab:identities}).", "sec:losses")]


def _convergence(results: dict, der: dict) -> list[Finding]:
    d = results["convergence"]
    lo, hi = d.get("exponent_ci95") or (None, None)
    if not (finite(lo) and finite(hi)):
        return []
    clause = (r"the seed-to-seed fluctuation of online SGD in the one-layer model falls as $N^{\ConvExponent}$ "
              r"(95\% bootstrap interval \ConvExponentLo{} to \ConvExponentHi)")
    if lo <= -0.5 <= hi:
        return [Finding("confirmed", "",
                        clause + r", which contains the $N^{-1/2}$ of the central limit theorem; "
                        r"the statistic that tests the ODE is the bias, reported there.",
                        "sec:mfconv")]
    return [Finding("refuted", clause + r", which excludes $N^{-1/2}$",
                    clause + r", which excludes the $N^{-1/2}$ of the central limit theorem.",
                    "sec:mfconv")]


def _clamp(results: dict, der: dict) -> list[Finding]:
    d = results["clamp"]
    sm = d.get("summary") or {}
    b = (der.get("clamp") or {})
    if not sm.get("arms_checked") or b.get("arms_binom_p") is None:
        return []
    ok = b["arms_binom_p"] >= ALPHA and (b.get("ratios_binom_p") is None or b["ratios_binom_p"] >= ALPHA)
    ratios = b.get("ratios_binom_p") is not None
    test = (r"one-sided binomial test against the 5\% miss rate of a 95\% interval: p = \ClampArmsBinomP{} for the "
            r"arms" + (r", p = \ClampRatiosBinomP{} for the ratios" if ratios else "") + ")")
    counts = (r"the prediction lies inside the measured 95\% interval for \ClampArmsIn{} of \ClampArmsChecked{} arms"
              + (r" and the predicted clamp/subtract ratio inside its interval for \ClampRatiosIn{} of "
                 r"\ClampRatiosChecked{} cells" if ratios else ""))
    clause = (r"the linear-noise theory predicts the seed-to-seed variance of the clamped one-layer model: " + counts
              + (r", no more misses than chance allows (" if ok else r", more misses than chance allows (") + test)
    extra = ""
    rows = [r for r in d["rows"] if r.get("ratio") is not None]
    cf = d["config"]
    clean = [r for r in rows if (r["margin"], r["sn"], r["batch"]) == (min(cf["margins"]), min(cf["sns"]),
                                                                       min(cf["batches"]))]
    if clean:
        extra = (r" Without augmentation noise the clamp lowers the variance (ratio \ClampCleanRPred{} predicted, "
                 r"\ClampCleanR{} [\ClampCleanRLo, \ClampCleanRHi] measured; Table~\ref{tab:clamp}).") if clean[0]["ratio"]["ci95"][1] < 1 else ""
    short = (r"the theory predicts the clamped model's seed-to-seed variance (\ClampArmsIn{} of "
             r"\ClampArmsChecked{} arms" + (r" and \ClampRatiosIn{} of \ClampRatiosChecked{} ratios" if ratios else "")
             + r" inside the measured 95\% intervals"
             + (")" if ok else r"; more misses than chance allows, binomial p~=~\ClampArmsBinomP)"))
    return [Finding("confirmed" if ok else "refuted", short, clause + "." + extra, "sec:mfclamp")]


def _with_key(that: str, key: str) -> str:
    """The claim with our key number: "... (ratio 0.08x; ours: ratio 0.62x, p = ...)"."""
    if not key:
        return that
    return that[:-1] + f"; ours: {key})" if that.endswith(")") else f"{that} ({key})"


def _row_finding(r: RepRow) -> Finding | None:
    v = r.verdict
    if not r.that:
        return None
    who = f", as reported by {r.who}" if r.who else ""
    rests = f"; the verdict rests on the {v.test}" if v.test else ""
    clause = _with_key(r.that, r.key) if r.headline and v.compared else ""
    if v.word in ("agree", "disagree"):
        status = "confirmed" if v.word == "agree" else "refuted"
        return Finding(status, clause, f"{r.that}{who}; here {r.ours}{rests}.", "sec:replication")
    why = tex_escape(v.why)
    return Finding("not tested", clause,
                   f"{r.that}{who}; " + (f"here {r.ours}; {why}{rests}" if v.inconclusive else why) + ".",
                   "sec:replication")


def _replication(results: dict, der: dict) -> list[Finding]:
    return [f for f in (_row_finding(r) for r in replication_rows(results)) if f is not None]


def _vit_power(results: dict, der: dict) -> list[Finding]:
    lmc = loss_mode_comparison(results["vit_study"])
    pp = ((lmc or {}).get("power") or {}).get("paired") or {}
    pw = pp.get("power_assumed_ratio_assumed_corr")
    if not finite(pw) or pw >= 0.8:
        return []
    sentence = (r"the clamp changes the ViT's seed-to-seed variance by a ratio of Steier's size (with \VitSeeds{} "
                r"seeds per cell the paired Pitman--Morgan test has power \PowerPairedLossMode{} for a ratio of "
                r"\AssumedRatioLossMode$\times$; \SeedsForPowerPairedLossMode{} seeds per cell would give 80\%)")
    clause = (r"the ViT's ratio is of Steier's size (\AssumedRatioLossMode$\times$; power \PowerPairedLossMode{} "
              r"with \VitSeeds{} seeds per cell, \SeedsForPowerPairedLossMode{} would give 80\%)")
    return [Finding("not tested", clause, sentence + ".", "sec:vit")]


#: (studies needed, maker) in the order the findings are stated
FINDINGS: list[tuple[tuple[str, ...], Callable[[dict, dict], list[Finding]]]] = [
    (("verify",), _verify),
    (("convergence",), _convergence),
    (("clamp",), _clamp),
    ((), _replication),
    (("vit_study",), _vit_power),
]


def findings(results: dict, der: dict, makers: list) -> list[Finding]:
    """The findings of ``makers`` (the build's list, :data:`paper.assemble.FINDINGS`: these and the
    sections' own) whose studies are in the build, in order."""
    out: list[Finding] = []
    for needs, fn in makers:
        if all(n in results for n in needs):
            out += fn(results, der)
    return out


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "; that ".join(items[:-1]) + "; and that " + items[-1]


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def abstract_tex(fs: list[Finding]) -> str:
    """The abstract's results: one sentence per status that has headline findings (a ``clause``),
    then one that counts the findings only the Conclusion states, by status."""
    by = {s: [f.clause for f in fs if f.status == s and f.clause] for s in STATUSES}
    lead = {"confirmed": "This build confirms that ", "refuted": "It refutes that ",
            "not tested": "It could not test that "}
    out = [lead[s] + _join(items) + "." for s, items in by.items() if items]
    if not fs:
        return "This build contains no study with a finding to report."
    if out and not by["confirmed"]:
        out[0] = out[0].replace("It refutes", "This build refutes").replace("It could not", "This build could not")
    rest = {s: sum(1 for f in fs if f.status == s and not f.clause) for s in STATUSES}
    n = sum(rest.values())
    if n:
        parts = [f"{k} {s}" for s, k in rest.items() if k]
        parts = ", ".join(parts)
        out.append(f"The Conclusion states {_count(n, 'further finding')} ({parts}).")
    return "\n".join(out)


def abstract_words(text: str) -> int:
    """Words of a typeset abstract (plain text, as the HTML or the PDF shows it): a number or a
    symbol with its unit counts once, punctuation not at all."""
    import re
    return len(re.findall(r"[^\s()\[\];,:.=]*[A-Za-z0-9][^\s()\[\];,:]*", text))


def conclusion_tex(fs: list[Finding]) -> str:
    """The Conclusion: every finding as complete sentences, grouped by status, with its section."""
    if not fs:
        return "This build contains no study with a finding to report.\n"
    lines = [r"Each finding below is generated from the verdicts and numbers of the sections it cites; "
             r"\emph{not tested} means that this build could not test the claim, not that it fails."]
    head = {"confirmed": "Confirmed", "refuted": "Refuted", "not tested": "Not tested by this build"}
    for s in STATUSES:
        items = [f for f in fs if f.status == s]
        if not items:
            continue
        lines += [f"\\paragraph{{{head[s]}.}}", r"\begin{itemize}"]
        for f in items:
            body = f.sentence
            lines.append(f"\\item Section~\\ref{{{f.where}}}: {body[:1].upper() + body[1:]}")
        lines.append(r"\end{itemize}")
    return "\n".join(lines) + "\n"
