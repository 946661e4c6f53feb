"""Per-layer diagnostics of one run directory (``cffdyn vit plot RUN_DIR [--out DIR]`` writes
``DIR/diagnostics.png``, default DIR = RUN_DIR).

Reads ``RUN_DIR/log.jsonl`` (and ``result.json`` when present for the title) and draws, over
epochs, one line per layer: training loss, clamp activation rate (CAR), gradient norm, mean
positive / negative cosine similarity, validation loss (when logged), the Fisher criterion
(when logged), and the per-epoch validation/test accuracy.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cffdyn.errors import CorruptFileError, UserError  # noqa: E402
from cffdyn.io import atomic_savefig, read_json, read_jsonl  # noqa: E402

__all__ = ["plot_run", "read_run", "TITLES", "title", "FIGURE_NAME"]

#: names in words for figure titles and legends (datasets, methods, margin forms, factors)
TITLES = {"fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN",
          "digits": "sklearn digits", "cff2": "two views (cff2)", "cff1": "one view (cff1)", "bp": "backpropagation",
          "ff": "Forward-Forward", "ffcl": "Improved FFCL", "clamp": "clamp", "subtract": "subtraction",
          "none": "no margin", "loss_mode": "margin form", "method": "views per step", "m0": "layer-0 margin m0",
          "test_acc": "test accuracy", "val_acc": "validation accuracy", "test_topk_acc": "top-k test accuracy",
          "val_topk_acc": "top-k validation accuracy"}


def title(x: object) -> str:
    """``x`` in words for a figure (its own text when not in :data:`TITLES`)."""
    return TITLES.get(str(x), str(x))


#: the file :func:`plot_run` writes in its output directory
FIGURE_NAME = "diagnostics.png"


def _check_history(log: Path, hist: list) -> None:
    """Each line of a run's log is an epoch record: ``epoch`` (int) and ``layers`` (the same
    number of per-layer dicts with a ``margin`` in every epoch); anything else is one line."""
    fix = "point at a run directory written by 'cffdyn vit train' (its log.jsonl is one epoch per line)"
    n = None
    for k, h in enumerate(hist):
        ok = isinstance(h, dict) and isinstance(h.get("epoch"), int) and isinstance(h.get("layers"), list) \
            and h["layers"] and all(isinstance(l, dict) and isinstance(l.get("margin"), (int, float))
                                    for l in h["layers"])
        if not ok or (n is not None and len(h["layers"]) != n):
            raise CorruptFileError(f"{log}:{k + 1}: not an epoch record (expected epoch and the same per-layer "
                                   "records with a margin in every line)", fix)
        n = len(h["layers"])


def read_run(run_dir: Path) -> tuple[list[dict], dict | None]:
    """``(epoch records of log.jsonl, result.json or None)`` of a run directory, checked for
    shape; a missing, empty or malformed file is one line naming it."""
    run_dir = Path(run_dir)
    log = run_dir / "log.jsonl"
    if not log.is_file():
        raise UserError(f"{log} not found (is {run_dir} a directory written by 'cffdyn vit train'?)",
                        "give the run directory of a training run")
    hist = read_jsonl(log)
    if not hist:
        raise UserError(f"{log} holds no epochs yet", "plot again after the first epoch has finished")
    _check_history(log, hist)
    res = read_json(run_dir / "result.json", expect=dict) if (run_dir / "result.json").is_file() else None
    cfg = (res or {}).get("config", {})
    if not isinstance(cfg, dict) or (cfg and not {"method", "loss_mode", "dataset", "model", "embed_dim", "heads",
                                                  "layers", "seed"} <= set(cfg)):
        raise CorruptFileError(f"{run_dir / 'result.json'}: its config is not a training config",
                               "move it away (the figure is drawn from log.jsonl alone) or rerun the training")
    if res is not None and not (isinstance(res.get("test_acc"), (int, float)) and isinstance(res.get("best_epoch"), int)):
        res = None   # a result without the summary numbers: the title says the seed only
    return hist, res


def plot_run(run_dir: Path, out_dir: Path | None = None) -> Path:
    """Draw the diagnostics of ``run_dir`` to ``out_dir/diagnostics.png`` (default ``out_dir``:
    ``run_dir``); returns the PNG's path."""
    run_dir = Path(run_dir)
    hist, res = read_run(run_dir)
    cfg = (res or {}).get("config", {})
    epochs = [h["epoch"] + 1 for h in hist]
    n_layers = len(hist[0]["layers"])
    panels = [("loss", "training loss (BP: SupCon probe)"), ("car", "clamp activation rate (CAR)"),
              ("grad_norm", "gradient norm of the layer"), ("pos_sim", "mean positive cosine sim."),
              ("neg_sim", "mean negative cosine sim.")]
    for key, label in (("val_loss", "validation loss"), ("fisher", "Fisher criterion Tr(S_W^-1 S_B)")):
        if key in hist[0]["layers"][0]:
            panels.append((key, label))
    n = len(panels) + 1
    cols = 3
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, (key, label) in zip(axes.flat, panels):
        for l in range(n_layers):
            ys = [h["layers"][l].get(key) for h in hist]
            ys = [float("nan") if v is None else v for v in ys]
            ax.plot(epochs, ys, marker="o", ms=3, color=cmap(l / max(n_layers - 1, 1)),
                    label=f"layer {l} (m={hist[0]['layers'][l]['margin']:.3f})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # epochs are integers: no 0.5 ticks
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    ax = axes.flat[len(panels)]
    for key, lab in (("val_acc", "validation"), ("test_acc", "test")):
        ys = [h.get(key) for h in hist]
        if any(v is not None for v in ys):
            ax.plot(epochs, [float("nan") if v is None else 100 * v for v in ys], marker="o", ms=3, label=lab)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("per-epoch accuracy (%)\n(CFF: nearest class mean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for extra in list(axes.flat)[len(panels) + 1:]:
        extra.axis("off")
    title = f"{run_dir.name}: 1 seed"
    if cfg:
        title = (f"{TITLES.get(cfg['method'], cfg['method'])}, margin {TITLES.get(cfg['loss_mode'], cfg['loss_mode'])} "
                 f"on {TITLES.get(cfg['dataset'], cfg['dataset'])}, {cfg['model'].upper()}[{cfg['embed_dim']} "
                 f"{cfg['heads']} {cfg['layers']}], seed {cfg['seed']} (1 seed)")
    if res:
        title += f"; test acc {100 * res['test_acc']:.2f}% (best epoch {res['best_epoch'] + 1})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = (Path(out_dir) if out_dir is not None else run_dir) / FIGURE_NAME
    return atomic_savefig(fig, out, dpi=110, close=True)   # whole or not at all, never through a planted symlink
