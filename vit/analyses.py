"""Steier's (2026) analyses, each from RECORDED runs (nothing here trains).

Every analysis reads run directories written by :func:`vit.train.train_run` (directly or by a
study: ``STUDY_DIR/runs/*/result.json``), returns a JSON-able dict and draws one figure:

``factorial``      the 2x2 factorial: margin form (``loss_mode``) x a second factor (default
                   ``method``: two views ``cff2`` vs one view ``cff1``; any ``TrainConfig``
                   field); cells from each run's own recorded config, statistics of
                   :func:`vit.factorial_analysis` (paired on the seeds when the cells share
                   them).  Figure: cell means ± SD and cell SDs.
``car``            the clamp activation rate per layer per epoch (``history[e].layers[l].car``,
                   training batches), mean ± SD over the seeds of each cell.
``grad_norms``     the gradient norm of each layer's parameters per epoch
                   (``history[e].layers[l].grad_norm``), same layout.
``dose_response``  the reduced-margin probe: for every ``m0`` level of the clamp runs, the
                   variance ratio clamp / subtraction (within-cell F) and the layer-0 CAR.  The
                   subtraction's gradient does not depend on the margin (Steier, Prop. 4.1), so
                   one subtraction reference serves every level: the subtraction runs at the
                   same ``m0`` when recorded, else those at any ``m0`` (one run per seed).
``pair_density``   positive pairs per batch against batch size and number of classes: the
                   expected share of an anchor's other rows that are positives and the chance
                   that an anchor has no positive, in closed form (sampling without replacement
                   from the class counts), with the recorded runs' batch sizes and layer-0 CAR.

Every figure has integer axes with integer ticks, titles in words and one legend entry per cell.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from cffdyn.errors import UserError
from cffdyn.io import atomic_savefig, read_json
from vit import stats
from vit.factorial import factorial_analysis, format_p, format_table

__all__ = ["load_runs", "check_fields", "factorial", "car_per_epoch", "grad_norms", "dose_response", "pair_density",
           "expected_positive_share", "prob_no_positive", "ANALYSES", "CLASS_COUNTS"]

#: training-pool class counts used by :func:`pair_density` (balanced datasets)
CLASS_COUNTS = {"fashion_mnist": [6000] * 10, "cifar10": [5000] * 10, "cifar100": [500] * 100,
                "digits": [144] * 10}


def _t(x: Any) -> str:
    from vit.plot import title
    return title(x)


# ----------------------------------------------------------------------------- reading runs
def load_runs(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """``result.json`` of every run under ``paths`` (a run directory, a study directory with
    ``runs/``, or a directory of run directories), each with ``run_dir`` added; a corrupt file
    is a one-line error naming it."""
    out: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise UserError(f"{p} does not exist", "give a study directory (with runs/) or a run directory")
        cands = [p] if (p / "result.json").is_file() else sorted(
            d for d in ((p / "runs").glob("*") if (p / "runs").is_dir() else p.glob("*")) if (d / "result.json").is_file())
        for d in cands:
            if d.resolve() in seen:
                continue
            seen.add(d.resolve())
            res = read_json(d / "result.json", expect=dict)
            if not isinstance(res.get("config"), dict) or not _is_number(res.get("test_acc")) \
                    or not isinstance(res["config"].get("seed"), int):
                raise UserError(f"{d / 'result.json'} is not a run result (needs a config with a seed and a "
                                "numeric test_acc)",
                                "point at directories written by 'cffdyn vit train' or 'cffdyn vit study', or "
                                "move this file away")
            res["run_dir"] = str(d)
            out.append(res)
    if not out:
        raise UserError(f"no recorded runs (result.json) under {', '.join(map(str, paths))}",
                        "run 'cffdyn vit study' first, or give its --out directory")
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_fields(runs: Sequence[Mapping[str, Any]], fields: Sequence[str], option: str = "--group") -> None:
    """Every name in ``fields`` is a config field of every run (an unknown one is an error, not a
    cell that pools every run)."""
    common = set(runs[0]["config"]).intersection(*(r["config"] for r in runs[1:]))
    bad = [f for f in fields if f not in common]
    if bad:
        raise UserError(f"{option} {','.join(bad)}: not a TrainConfig field of the recorded runs",
                        f"choose from {', '.join(sorted(common))}")


def _levels(runs: Sequence[Mapping[str, Any]], field: str) -> list[Any]:
    if field not in runs[0]["config"]:
        raise UserError(f"{field!r} is not a TrainConfig field of the recorded runs",
                        f"choose from {', '.join(runs[0]['config'])}")
    lv: list[Any] = []
    for r in runs:
        v = r["config"][field]
        if v not in lv:
            lv.append(v)
    return lv


def _need_levels(runs, field: str, n: int = 2) -> list[Any]:
    lv = _levels(runs, field)
    if len(lv) < n:
        raise UserError(f"factor {field!r} has {len(lv)} level ({', '.join(map(str, lv))}) in the recorded runs; "
                        f"a comparison needs at least {n}",
                        f"record runs at another {field} (e.g. cffdyn vit study --factor {field}=A,B)")
    return lv


def _cells(runs, fields: Sequence[str]) -> dict[tuple, list[dict[str, Any]]]:
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        cells.setdefault(tuple(r["config"][f] for f in fields), []).append(r)
    for k in cells:
        cells[k].sort(key=lambda r: r["config"]["seed"])
    return cells


# ----------------------------------------------------------------------------- plotting helpers
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _int_axis(ax, axis: str = "x") -> None:
    from matplotlib.ticker import MaxNLocator
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def _save(fig, path: Path | None) -> str | None:
    plt = _plt()
    if path is None:
        plt.close(fig)
        return None
    fig.tight_layout()
    return str(atomic_savefig(fig, path, dpi=110, close=True))


def _cell_label(fields: Sequence[str], key: Sequence[Any], n: int) -> str:
    return ", ".join(_t(v) for v in key) + f" ({n} seeds)"


def _mean_sd(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.nanmean(a, axis=0)
    sd = np.nanstd(a, axis=0, ddof=1) if a.shape[0] > 1 else np.zeros_like(m)
    return m, sd


# ----------------------------------------------------------------------------- 1. factorial
def factorial(runs: Sequence[Mapping[str, Any]], *, second: str = "method", metric: str = "test_acc",
              n_boot: int = 9999, n_perm: int = 9999, figure: Path | None = None) -> dict[str, Any]:
    """The 2x2 (or larger) factorial margin form x ``second`` from recorded runs."""
    if second == "loss_mode":
        raise UserError("the second factor is the margin form itself", "choose another TrainConfig field")
    lv_a = _need_levels(runs, "loss_mode")
    lv_b = _need_levels(runs, second)
    cells = _cells(runs, ("loss_mode", second))
    data = {k: [float(r[metric]) for r in v] for k, v in cells.items()}
    seeds = {k: [int(r["config"]["seed"]) for r in v] for k, v in cells.items()}
    shared = len(set.intersection(*(set(s) for s in seeds.values()))) >= 2
    an = factorial_analysis(["loss_mode", second], data, seeds=seeds, matched=shared, metric=metric,
                            n_boot=n_boot, n_perm=n_perm)
    out = {"analysis": "factorial", "factors": ["loss_mode", second], "levels": {"loss_mode": lv_a, second: lv_b},
           "result": an, "table": format_table(an), "n_runs": len(runs)}
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, a in enumerate(lv_a):
        xs, ms, sds, ns = [], [], [], []
        for j, b in enumerate(lv_b):
            v = np.array(data.get((a, b), []), float) * 100
            if v.size:
                xs.append(j)
                ms.append(v.mean())
                sds.append(v.std(ddof=1) if v.size > 1 else 0.0)
                ns.append(v.size)
        lab = f"{_t(a)} ({'/'.join(map(str, ns))} seeds)"
        axes[0].errorbar(np.array(xs) + 0.04 * i, ms, yerr=sds, marker="o", capsize=4, color=f"C{i}", label=lab)
        axes[1].plot(xs, sds, marker="s", color=f"C{i}", label=lab)
    for ax, yl in ((axes[0], f"{metric.replace('_', ' ')} (%), mean ± SD"),
                   (axes[1], "seed-to-seed SD (percentage points)")):
        ax.set_xticks(range(len(lv_b)))
        ax.set_xticklabels([_t(b) for b in lv_b])
        ax.set_xlabel(_t(second))
        ax.set_ylabel(yl)
        ax.legend(title=_t("loss_mode"), fontsize=8)
    fig.suptitle(f"Factorial: {_t('loss_mode')} x {_t(second)} ({len(runs)} runs)", fontsize=10)
    out["figure"] = _save(fig, figure)
    return out


# ----------------------------------------------------------------------------- 2-3. per layer per epoch
def _per_layer_epoch(runs, key: str, group: Sequence[str]) -> dict[str, Any]:
    cells = _cells(runs, group)
    res: dict[str, Any] = {"cells": []}
    for k, rs in cells.items():
        hs = [r.get("history") or [] for r in rs]
        if not all(hs):
            raise UserError(f"{rs[0]['run_dir']}/result.json has no per-epoch history",
                            "rerun it with the current 'cffdyn vit train' (it records history)")
        E = min(len(h) for h in hs)
        L = min(len(h[0]["layers"]) for h in hs)
        a = np.array([[[np.nan if h[e]["layers"][l].get(key) is None else float(h[e]["layers"][l][key])
                        for l in range(L)] for e in range(E)] for h in hs])   # (seeds, E, L)
        m, sd = _mean_sd(a)
        res["cells"].append({"levels": dict(zip(group, k)), "n": len(rs), "seeds": [r["config"]["seed"] for r in rs],
                             "epochs": E, "layers": L, "mean": m.tolist(), "sd": sd.tolist(),
                             "margins": [hs[0][0]["layers"][l].get("margin") for l in range(L)]})
    return res


def _plot_per_layer_epoch(res: Mapping[str, Any], group: Sequence[str], ylabel: str, title: str,
                          scale: float, figure: Path | None, log: bool = False) -> str | None:
    plt = _plt()
    cells = res["cells"]
    cols = min(len(cells), 4)
    rows = (len(cells) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, c in zip(axes.flat, cells):
        m, sd = np.array(c["mean"]) * scale, np.array(c["sd"]) * scale
        ep = np.arange(1, c["epochs"] + 1)
        for l in range(c["layers"]):
            col = cmap(l / max(c["layers"] - 1, 1))
            mg = c["margins"][l]
            ax.plot(ep, m[:, l], marker="o", ms=3, color=col,
                    label=f"layer {l}" + (f" (margin {mg:.3f})" if mg is not None else ""))
            ax.fill_between(ep, m[:, l] - sd[:, l], m[:, l] + sd[:, l], color=col, alpha=0.15)
        ax.set_title(", ".join(_t(v) for v in c["levels"].values()) + f" ({c['n']} seeds)", fontsize=9)
        ax.set_xlabel("epoch")
        _int_axis(ax, "x")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    axes.flat[0].legend(fontsize=7)
    for extra in list(axes.flat)[len(cells):]:
        extra.axis("off")
    fig.suptitle(title + " (mean ± SD over seeds)", fontsize=10)
    return _save(fig, figure)


def car_per_epoch(runs: Sequence[Mapping[str, Any]], *, group: Sequence[str] = ("loss_mode", "method"),
                  figure: Path | None = None) -> dict[str, Any]:
    """Clamp activation rate per layer per epoch (training batches), mean ± SD per cell."""
    check_fields(runs, group)
    res = _per_layer_epoch(runs, "car", group)
    res.update(analysis="car", group=list(group))
    res["figure"] = _plot_per_layer_epoch(res, group, "clamp activation rate (%)",
                                          "Clamp activation rate per layer and epoch", 100.0, figure)
    return res


def grad_norms(runs: Sequence[Mapping[str, Any]], *, group: Sequence[str] = ("loss_mode", "method"),
               figure: Path | None = None) -> dict[str, Any]:
    """Gradient norm of each layer's parameters per epoch, mean ± SD per cell."""
    check_fields(runs, group)
    res = _per_layer_epoch(runs, "grad_norm", group)
    res.update(analysis="grad_norms", group=list(group))
    res["figure"] = _plot_per_layer_epoch(res, group, "gradient norm of the layer's parameters",
                                          "Layer-wise gradient norms", 1.0, figure, log=True)
    return res


# ----------------------------------------------------------------------------- 4. dose-response
def dose_response(runs: Sequence[Mapping[str, Any]], *, metric: str = "test_acc",
                  figure: Path | None = None) -> dict[str, Any]:
    """Reduced-margin probe: per ``m0`` of the clamp runs, VR clamp/subtraction and layer-0 CAR."""
    clamp = [r for r in runs if r["config"]["loss_mode"] == "clamp"]
    sub = [r for r in runs if r["config"]["loss_mode"] == "subtract"]
    if not clamp or not sub:
        raise UserError("the dose-response needs clamp and subtraction runs",
                        "record e.g. cffdyn vit study --factor m0=0.1,0.2,0.4 --factor loss_mode=clamp,subtract")
    levels = sorted(_need_levels(clamp, "m0", 2))
    rows = []
    for m0 in levels:
        cr = [r for r in clamp if r["config"]["m0"] == m0]
        same = [r for r in sub if r["config"]["m0"] == m0]
        ref = same or list({r["config"]["seed"]: r for r in sub}.values())   # one subtraction run per seed
        row: dict[str, Any] = {"m0": m0, "n_clamp": len(cr), "n_subtract": len(ref),
                               "reference": f"subtraction runs at m0 = {m0}" if same else
                               "subtraction runs at other m0 (its gradient does not depend on the margin)"}
        ca = [float(r[metric]) for r in cr]
        cb = [float(r[metric]) for r in ref]
        car0 = [r["per_layer"][0]["car"] for r in cr if r.get("per_layer")]
        row["car_layer0_mean"] = float(np.mean(car0)) if car0 else None
        row["car_layer0_sd"] = float(np.std(car0, ddof=1)) if len(car0) > 1 else None
        row["mean_clamp"], row["mean_subtract"] = float(np.mean(ca)), float(np.mean(cb))
        if len(ca) >= 2 and len(cb) >= 2:
            va, vb = float(np.var(ca, ddof=1)), float(np.var(cb, ddof=1))
            row["ratio"] = va / vb if vb > 0 and va > 0 else None
            row["f_p"] = stats.f_test_p(va / vb, len(ca) - 1, len(cb) - 1) if row["ratio"] else None
            row["note"] = None if row["ratio"] else "not computed: zero variance in a group"
        else:
            row["ratio"], row["f_p"] = None, None
            row["note"] = "not computed: needs at least 2 runs of each margin form"
        rows.append(row)
    lines = [f"{'m0':>5}  {'clamp n':>7}  {'VR clamp/sub':>12}  {'F p':>7}  {'layer-0 CAR %':>13}"]
    for r in rows:
        vr = f"{r['ratio']:.2f}x" if r["ratio"] else "n/a"
        car = f"{100 * r['car_layer0_mean']:.1f}" if r["car_layer0_mean"] is not None else "n/a"
        lines.append(f"{r['m0']:>5}  {r['n_clamp']:>7}  {vr:>12}  {format_p(r['f_p']):>7}  {car:>13}"
                     + (f"  ({r['note']})" if r["note"] else ""))
    out = {"analysis": "dose_response", "metric": metric, "levels": rows, "table": "\n".join(lines)}
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    xs = [r["m0"] for r in rows]
    axes[0].plot(xs, [r["ratio"] if r["ratio"] else np.nan for r in rows], "o-", color="C0",
                 label=f"clamp / subtraction ({'/'.join(str(r['n_clamp']) for r in rows)} clamp seeds)")
    axes[0].axhline(1.0, color="0.5", ls="--", lw=1, label="no difference")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("variance ratio of test accuracy")
    axes[1].errorbar(xs, [100 * (r["car_layer0_mean"] or np.nan) for r in rows],
                     yerr=[100 * (r["car_layer0_sd"] or 0.0) for r in rows], marker="o", capsize=4, color="C1",
                     label="clamp runs, mean ± SD")
    axes[1].set_ylabel("layer-0 clamp activation rate (%)")
    for ax in axes:
        ax.set_xlabel("layer-0 margin m0")
        ax.set_xticks(xs)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("Reduced-margin probe: dose-response in the layer-0 margin", fontsize=10)
    out["figure"] = _save(fig, figure)
    return out


# ----------------------------------------------------------------------------- 5. positive-pair density
def expected_positive_share(counts: Sequence[int], batch: int, views: int = 2) -> float:
    """Expected share of an anchor's other rows (``views·B - 1``) that are positives, for a
    batch of ``batch`` images drawn without replacement from a pool with class ``counts``:
    an anchor of class c has ``E[n_c - 1] = (B - 1)(N_c - 1)/(N - 1)`` other images of its
    class, each giving ``views`` rows, plus its own other views."""
    n = float(sum(counts))
    if not 2 <= batch <= n:
        raise ValueError(f"batch {batch} must be in [2, {int(n)}]")
    e_other = sum((c / n) * (batch - 1) * (c - 1) / (n - 1) for c in counts)
    return ((views - 1) + views * e_other) / (views * batch - 1)


def prob_no_positive(counts: Sequence[int], batch: int) -> float:
    """Probability that a one-view anchor has no other image of its class in the batch
    (hypergeometric: ``C(N - N_c, B - 1) / C(N - 1, B - 1)``, averaged over classes)."""
    from scipy.special import gammaln
    n = int(sum(counts))
    tot = 0.0
    for c in counts:
        if n - c < batch - 1:
            continue
        lg = (gammaln(n - c + 1) - gammaln(batch) - gammaln(n - c - batch + 2)
              - (gammaln(n) - gammaln(batch) - gammaln(n - batch + 1)))
        tot += (c / n) * math.exp(lg)
    return tot


def pair_density(runs: Sequence[Mapping[str, Any]] | None = None, *,
                 batch_sizes: Sequence[int] = (16, 32, 64, 128, 256, 512, 1024),
                 datasets: Sequence[str] = ("fashion_mnist", "cifar10", "cifar100"),
                 figure: Path | None = None) -> dict[str, Any]:
    """Positive-pair density per batch vs batch size and number of classes (closed form), with
    the recorded runs' batch sizes and layer-0 CAR where runs are given."""
    rows = []
    for ds in datasets:
        counts = CLASS_COUNTS[ds]
        for b in batch_sizes:
            if b > sum(counts):
                continue
            rows.append({"dataset": ds, "classes": len(counts), "batch_size": b,
                         "positive_share_two_views": expected_positive_share(counts, b, 2),
                         "positive_share_one_view": expected_positive_share(counts, b, 1),
                         "positives_per_anchor_two_views": expected_positive_share(counts, b, 2) * (2 * b - 1),
                         "p_no_positive_one_view": prob_no_positive(counts, b)})
    rec = []
    for r in runs or []:
        c = r["config"]
        counts = CLASS_COUNTS.get(c["dataset"])
        if counts is None or not r.get("per_layer"):
            continue
        views = 1 if c["method"] == "cff1" else 2
        rec.append({"run_dir": r["run_dir"], "dataset": c["dataset"], "batch_size": c["batch_size"],
                    "views": views, "loss_mode": c["loss_mode"], "seed": c["seed"],
                    "positive_share": expected_positive_share(counts, c["batch_size"], views),
                    "car_layer0": r["per_layer"][0].get("car")})
    out = {"analysis": "pair_density", "rows": rows, "runs": rec}
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, ds in enumerate(datasets):
        rr = [r for r in rows if r["dataset"] == ds]
        bs = [r["batch_size"] for r in rr]
        lab = f"{_t(ds)} ({rr[0]['classes']} classes)" if rr else ds
        axes[0].plot(bs, [r["positives_per_anchor_two_views"] for r in rr], "o-", color=f"C{i}", label=lab)
        axes[0].plot(bs, [r["positive_share_one_view"] * (r["batch_size"] - 1) for r in rr], "o:", color=f"C{i}")
        axes[1].plot(bs, [r["p_no_positive_one_view"] for r in rr], "o-", color=f"C{i}", label=lab)
    for b in sorted({r["batch_size"] for r in rec}):
        axes[0].axvline(b, color="0.6", lw=1, ls="--")
    axes[0].set_ylabel("expected positives per anchor\n(solid: two views, dotted: one view)")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("P(one-view anchor has no positive)")
    axes[1].set_yscale("symlog", linthresh=1e-6)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(batch_sizes))
        ax.set_xticklabels([str(b) for b in batch_sizes])
        ax.set_xlabel("batch size (images)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Positive-pair density per batch" + (" (dashed: recorded runs' batch sizes)" if rec else ""),
                 fontsize=10)
    out["figure"] = _save(fig, figure)
    lines = [f"{'dataset':<14} {'classes':>7} {'batch':>6} {'pos. share 2 views %':>21} {'pos./anchor':>11} "
             f"{'P(no pos., 1 view)':>19}"]
    for r in rows:
        lines.append(f"{_t(r['dataset']):<14} {r['classes']:>7} {r['batch_size']:>6} "
                     f"{100 * r['positive_share_two_views']:>21.2f} {r['positives_per_anchor_two_views']:>11.1f} "
                     f"{r['p_no_positive_one_view']:>19.2e}")
    out["table"] = "\n".join(lines)
    return out


#: CLI name -> (function, needs recorded runs)
ANALYSES = {"factorial": (factorial, True), "car": (car_per_epoch, True), "grad-norms": (grad_norms, True),
            "dose-response": (dose_response, True), "pair-density": (pair_density, False)}
