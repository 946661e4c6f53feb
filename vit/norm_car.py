"""Layer-0 CAR per epoch under the two input normalisations of CIFAR-format data.

On CIFAR-10 files the reference standardises inputs with fixed constants (mean 0.4914/0.4822/
0.4465, std 0.2023/0.1994/0.2010); ``--protocol cffdyn`` uses the run's own training-split
statistics.  An independent comparison against the reference code found the per-split inputs
about 1.22x narrower and layer-0 CAR 0.03-0.08 higher at epochs 2-5, on Fashion-MNIST written as
CIFAR-10 pickles.  This study repeats that design with the package's own engine: Fashion-MNIST
zero-padded to 32x32, replicated to 3 channels and written as CIFAR-10 batches
(:func:`write_cifar_format`), the same seeds trained under ``protocol="reference"`` (constants)
and ``protocol="cffdyn"`` (split statistics).  For ``cff2`` the two protocols train identically
but for the normalisation (``tests/test_vit_norm_car.py`` checks this on data without reference
constants), so the paired difference per epoch is the normalisation's effect on CAR.

Usage::

    python -m vit.norm_car --out results/vit/norm_car              # ~10 min on 2 cores
    python -m vit.norm_car --record                                # also keep it in recorded/vit/norm_car
"""
from __future__ import annotations

import math
import pickle
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cffdyn.errors import UserError, guarded, make_parser, positive_int
from cffdyn.figures import TEXT_WIDTH_IN, styled
from cffdyn.io import atomic_savefig, atomic_write_json, output_dir

__all__ = ["NormCarConfig", "write_cifar_format", "run_norm_car", "fig_norm_car", "main"]

RECORD_KIND = "vit.norm_car"


@dataclass(frozen=True)
class NormCarConfig:
    """The design: ViT[64 4 2] patch 4, batch 128, crop padding 12 (the reference's CIFAR-10), cff2
    clamp, ``n_seeds`` matched seeds per arm on a fixed ``subset`` of the training images."""

    n_seeds: int = 3
    epochs: int = 10
    subset: int = 6000
    embed_dim: int = 64
    heads: int = 4
    layers: int = 2
    patch: int = 4
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.n_seeds < 2:
            raise ValueError(f"n_seeds={self.n_seeds}: a paired difference needs at least 2 seeds")
        if not 1 <= self.epochs <= 1000:
            raise ValueError(f"epochs={self.epochs} must be 1 to 1000")


def write_cifar_format(out: Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                       y_test: np.ndarray) -> Path:
    """Write (N, 28, 28) uint8 images as CIFAR-10 python batches: zero-padded by 2 to 32x32, the
    one channel replicated to three, rows of 3072 in CHW order, ``data_batch_1..5`` and
    ``test_batch``.  Returns ``out``."""
    for name, x in (("train", x_train), ("test", x_test)):
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
            raise ValueError(f"{name} images must be uint8 (N, 28, 28), got {x.dtype} {x.shape}")
    out.mkdir(parents=True, exist_ok=True)

    def rows(x: np.ndarray) -> np.ndarray:
        padded = np.zeros((x.shape[0], 32, 32), dtype=np.uint8)
        padded[:, 2:30, 2:30] = x
        return np.repeat(padded[:, None], 3, axis=1).reshape(x.shape[0], 3072)

    chunks = np.array_split(np.arange(x_train.shape[0]), 5)
    for k, idx in enumerate(chunks, start=1):
        with open(out / f"data_batch_{k}", "wb") as fh:
            pickle.dump({b"data": rows(x_train[idx]), b"labels": [int(v) for v in y_train[idx]]}, fh)
    with open(out / "test_batch", "wb") as fh:
        pickle.dump({b"data": rows(x_test), b"labels": [int(v) for v in y_test]}, fh)
    return out


def _configs(cfg: NormCarConfig, root: Path, protocol: str) -> list:
    from vit.config import TrainConfig
    base = TrainConfig(dataset="cifar10", data_root=str(root), subset=cfg.subset, embed_dim=cfg.embed_dim,
                       heads=cfg.heads, layers=cfg.layers, patch=cfg.patch, batch_size=cfg.batch_size,
                       epochs=cfg.epochs, head_epochs=1, crop_pad=12, method="cff2", loss_mode="clamp", device="cpu",
                       protocol=protocol, seed_subset=0)
    return [base.replace(seed=s) for s in range(cfg.n_seeds)]


def run_norm_car(cfg: NormCarConfig, fmnist_root: str | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Train both arms (module doc) and return per epoch the layer-0 CAR of each arm (mean, SD)
    and the paired difference split - constants (mean, SE, in SDs of the seed spread)."""
    from vit.data import load_dataset
    from vit.train import train_runs

    fm = load_dataset("fashion_mnist", fmnist_root, seed=0)
    # the pool the subset is drawn from: twice the subset (not all 60,000 images: 184 MB of pickles)
    pool = min(fm.x_train.shape[0] + fm.x_val.shape[0], 2 * cfg.subset)
    xtr = np.concatenate([fm.x_train.numpy(), fm.x_val.numpy()])[:pool, 0]
    ytr = np.concatenate([fm.y_train.numpy(), fm.y_val.numpy()])[:pool]
    arms: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cffdyn_norm_car_") as tmp:
        n_test = min(fm.x_test.shape[0], max(1000, cfg.subset // 2))   # test accuracy is a by-product here
        root = write_cifar_format(Path(tmp) / "cifar-10-batches-py", xtr, ytr, fm.x_test.numpy()[:n_test, 0],
                                  fm.y_test.numpy()[:n_test])
        for protocol, label in (("reference", "constants"), ("cffdyn", "split")):
            rcs = _configs(cfg, root, protocol)
            res = train_runs(rcs, progress=progress)
            arms[label] = {"protocol": protocol, "input_normalisation": res[0]["input_normalisation"],
                           "car": [[h["layers"][0]["car"] for h in r["history"]] for r in res],
                           "test_acc": [r["test_acc"] for r in res]}
    const, split = np.asarray(arms["constants"]["car"]), np.asarray(arms["split"]["car"])
    diff = split - const
    rows = []
    for e in range(cfg.epochs):
        sd = float(np.sqrt((np.var(const[:, e], ddof=1) + np.var(split[:, e], ddof=1)) / 2))
        d_mean, d_se = float(diff[:, e].mean()), float(diff[:, e].std(ddof=1) / math.sqrt(cfg.n_seeds))
        rows.append({"epoch": e, "car_constants": float(const[:, e].mean()), "car_constants_sd": float(const[:, e].std(ddof=1)),
                     "car_split": float(split[:, e].mean()), "car_split_sd": float(split[:, e].std(ddof=1)),
                     "diff": d_mean, "diff_se": d_se,
                     "diff_in_seed_sd": d_mean / sd if sd > 0 else None,
                     "note": None if sd > 0 else "the seeds agree exactly at this epoch (seed SD 0): no SD units"})
    std_c = arms["constants"]["input_normalisation"]["std"]
    std_s = arms["split"]["input_normalisation"]["std"]
    return {"config": asdict(cfg), "arms": arms, "epochs": rows,
            "input_width_ratio": statistics.mean(float(a) / float(b) for a, b in zip(std_s, std_c)),
            "data": f"Fashion-MNIST zero-padded to 32x32, 3 channels, as CIFAR-10 python batches (its first {pool} "
                    f"training images, the subset of {cfg.subset} drawn from them; its first {n_test} test images)"}


@styled
def fig_norm_car(result: dict[str, Any], *, width_in: float = TEXT_WIDTH_IN * 0.6, height_in: float = 2.3):
    import matplotlib.pyplot as plt

    rows = result["epochs"]
    ep = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(width_in, height_in))
    for key, label, colour in (("constants", "reference constants", "C0"), ("split", "training-split statistics", "C1")):
        m = np.array([r[f"car_{key}"] for r in rows])
        s = np.array([r[f"car_{key}_sd"] for r in rows])
        ax.plot(ep, m, color=colour, label=label)
        ax.fill_between(ep, m - s, m + s, color=colour, alpha=0.25, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("layer-0 CAR")
    ax.legend(frameon=False, loc="upper right")   # the curves meet low on the right
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    p = make_parser(prog="python -m vit.norm_car", description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[1])
    p.add_argument("--out", default="results/vit/norm_car", help="directory for norm_car.json and norm_car.png")
    p.add_argument("--seeds", type=positive_int, default=NormCarConfig.n_seeds, help="seeds per arm (default 3)")
    p.add_argument("--epochs", type=positive_int, default=NormCarConfig.epochs, help="epochs (default 10)")
    p.add_argument("--subset", type=positive_int, default=NormCarConfig.subset, help="training images (default 6000)")
    p.add_argument("--data-root", default=None, help="Fashion-MNIST IDX directory (default: the Debian package's)")
    p.add_argument("--record", action="store_true", help="also keep the result in recorded/vit/norm_car")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    try:
        cfg = NormCarConfig(n_seeds=args.seeds, epochs=args.epochs, subset=args.subset)
    except ValueError as exc:
        raise UserError(str(exc), "see --help") from None
    from cffdyn.machine import load_average
    load0, t0 = load_average(), time.perf_counter()
    with output_dir(Path(args.out), "--out") as out:
        res = run_norm_car(cfg, args.data_root, progress=not args.quiet)
        atomic_write_json(out / "norm_car.json", res)
        atomic_savefig(fig_norm_car(res), out / "norm_car", formats=("png", "pdf"))
    for r in res["epochs"]:
        sdu = f"{r['diff_in_seed_sd']:+.1f} SD" if r["diff_in_seed_sd"] is not None else r["note"]
        print(f"epoch {r['epoch']:2d}: CAR constants {r['car_constants']:.3f} +- {r['car_constants_sd']:.3f}, "
              f"split {r['car_split']:.3f} +- {r['car_split_sd']:.3f}; split - constants {r['diff']:+.3f} "
              f"+- {r['diff_se']:.3f} (SE; {sdu})")
    print(f"pixel SD of the training split / the reference's constant SD (mean over channels): "
          f"{res['input_width_ratio']:.3f} (the inputs normalised with the split's statistics are this many times "
          f"narrower); wrote {out / 'norm_car.json'}")
    if args.record:
        from cffdyn.recorded import provenance, record_dir, write_record
        cmd = "python -m vit.norm_car " + " ".join(argv if argv is not None else sys.argv[1:])
        path = write_record(record_dir("vit", "norm_car"), kind=RECORD_KIND, config=res["config"], payload=res,
                            prov=provenance(cmd, wall_s=time.perf_counter() - t0, load_start=load0, device="cpu"),
                            files={"norm_car.png": out / "norm_car.png", "norm_car.pdf": out / "norm_car.pdf"})
        print(f"recorded: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main, None, "python -m vit.norm_car"))
