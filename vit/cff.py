"""The seed-stacked CFF engine (``cff2`` two views, ``cff1`` one view): stage 1 layer by layer,
per-epoch evaluation, stage 2 heads.

The seed axis: the engine trains S configs that differ only in their seeds in one pass, their
weights stacked (S, ...) in the one model definition of :mod:`vit.models`; one seed is S = 1
through the same code.  Each seed keeps its own initialisation (its own generator), split (its
own :class:`DeviceData`), batch order and augmentation stream (per-seed, per-epoch generators),
and its own loss; the S losses are summed before one backward (the seeds share no parameter, so
each gets its own gradient) and one AdamW over the stacked parameters steps them (AdamW is
elementwise: S independent optimisers), and every seed goes through the one-seed kernels
(:mod:`vit.models`).  Hence S separate runs and one S-seed run give the same bits, each seed's
clean images normalised with its own split's statistics (``tests/test_vit_batched.py``;
:mod:`vit.layout_floor` measures the floor).

The step (per layer, :meth:`CFF.layer_step`): forward of both views as one batch of 2B rows (the
layers act per sample, so this is the math of two forwards), the margin loss of
:mod:`vit.losses` on the token mean with its diagnostics and the per-seed gradient norm, all kept
on the device (:class:`vit.method.EpochStats`; no host sync inside an epoch), backward, AdamW
(``fused=True`` on CUDA, ``foreach`` on CPU).  :meth:`CFF.step` runs every layer on one batch.
On CUDA with ``cuda_graph=True`` that step is captured once as a CUDA graph
(:class:`StepGraph`) and replayed for every full batch; the last, partial batch of an epoch
(``n_train % batch_size`` samples) runs the same step eagerly, as every step does on CPU.

Evaluation per epoch: validation loss and CAR per layer (the selection metric is the last
layer's validation loss), nearest-class-mean accuracy per layer (class means of the epoch's
training features; a probe of each layer, the last layer's is ``val_acc``) on validation and on
the first ``PER_EPOCH_TEST_N`` test images (never used for selection), the effective
within-pair noise per layer (:meth:`CFF.pair_noise`), the Fisher criterion per layer with
``fisher=True``.  Views: under 'reference' two fresh augmented views per epoch of a shuffled
validation split (batch-size-weighted mean, as the reference's loader); under 'cffdyn' the clean
image and one fixed-seed augmented view.

Stage 2: :func:`vit.head.fit_heads` on the frozen last layer's token mean.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from vit.config import TrainConfig, derive_seed
from vit.device import DeviceData, autocast, generator, loss_dtype
from vit.diagnostics import fisher_criterion, topk_accuracy, view_pair_noise
from vit.head import fit_heads
from vit.method import EpochStats, Method, adamw, margin_loss, seed_grad_norm
from vit.models import build_encoder, pool

__all__ = ["CFF", "StepGraph", "PER_EPOCH_TEST_N"]

PER_EPOCH_TEST_N = 2048  # the per-epoch NCM test accuracy reads the first 2048 test images (cost)


class CFF(Method):
    """The CFF engine: S seeds (two-forward or one-forward), stacked weights, + stage-2 heads."""

    metric_name = "val_loss_last_layer"
    epoch_acc_name = "ncm_val_acc"      # nearest class mean on the last layer's features

    def __init__(self, cfgs: Sequence[TrainConfig], datas: Sequence[DeviceData]) -> None:
        super().__init__(cfgs, datas)
        cfg = self.cfg
        self.encoder = build_encoder(cfg.model, self.data.ds.image_shape, embed_dim=cfg.embed_dim, heads=cfg.heads,
                                     layers=cfg.layers, patch=cfg.patch, seeds=[sd["init"] for sd in self.seeds],
                                     init=cfg.init).to(self.device)
        self.modules = {"encoder": self.encoder}
        self.use_graph = bool(cfg.cuda_graph and self.device.type == "cuda")
        self.optimizers = [adamw(l.parameters(), cfg.method_lr(), cfg.wd, self.device, capturable=self.use_graph)
                           for l in self.encoder.layers]
        self.n_views = 2 if cfg.method == "cff2" else 1
        self.class_means = torch.zeros(self.S, cfg.layers, self.num_classes, cfg.embed_dim, device=self.device)
        self.graph: StepGraph | None = None

    # ---------------------------------------------------------------- the step
    def layer_step(self, l: int, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One local step of layer ``l`` for every seed: forward (h (S, V·B, ...)), S margin
        losses with diagnostics, one backward, one stacked AdamW step.  Returns (detached
        output, stats (S, N_STATS): loss, CAR, grad norm, pos sim, neg sim; losses (S,))."""
        with autocast(self.cfg, self.device):
            out = self.encoder.layers[l](h)
        loss, st = margin_loss(pool(out), y, self.margins[l], self.cfg)
        opt = self.optimizers[l]
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()               # seeds share no parameter: each gets its own gradient
        gn = seed_grad_norm(list(self.encoder.layers[l].parameters()))
        opt.step()
        ld = loss.detach()
        row = torch.stack([ld, st.clamp_rate, gn.to(ld.dtype), st.mean_pos_sim, st.mean_neg_sim], dim=1)
        return out.detach(), row, ld

    def step(self, h: torch.Tensor, y: torch.Tensor, step: int | torch.Tensor, stats: EpochStats) -> None:
        """All layers for one batch; statistics, first-bad-step and class sums accumulate into
        ``stats`` on the device (the function :class:`StepGraph` captures)."""
        yv = y.repeat(1, self.n_views)                                           # labels (S, V·B)
        for l in range(len(self.encoder.layers)):
            h, row, loss = self.layer_step(l, h, y)
            stats.add(l, row, y.shape[1])          # weighted by the batch's images per seed
            stats.mark(l, loss, step)
            stats.add_classes(l, yv, pool(h))

    def batch(self, orders, gens, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked (S, V·B, C, H, W) views and (S, B) labels: each seed its own indices and
        augmentation stream."""
        ys, hs = [], []
        for s, d in enumerate(self.datas):
            idx = orders[s][step]
            ys.append(d.y["train"][idx])
            hs.append(d.views(d.x["train"][idx], gens[s][1], self.n_views))
        if self.S == 1:
            return hs[0].unsqueeze(0).to(self.param_dtype()), ys[0].unsqueeze(0)
        return torch.stack(hs).to(self.param_dtype()), torch.stack(ys)

    def batch_orders(self, gens) -> list[list[torch.Tensor]]:
        """Every seed's batch indices for the epoch (the seeds' layouts must agree)."""
        orders = [d.epoch_order(g[0], self.cfg.batch_size) for d, g in zip(self.datas, gens)]
        if any(len(o) != len(orders[0]) or any(a.shape != b.shape for a, b in zip(o, orders[0])) for o in orders):
            raise ValueError("seeds have different batch layouts (training splits of different sizes)")
        return orders

    def param_dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype

    def new_epoch_stats(self) -> EpochStats:
        dt = torch.float64 if self.param_dtype() == torch.float64 else torch.float32
        return self.new_stats(len(self.encoder.layers), dt, (self.num_classes, self.encoder.embed_dim))

    def train_step(self, orders, gens, step: int, stats: EpochStats) -> None:
        """Training step ``step`` of an epoch: every seed's batch, then all layers -- a CUDA-graph
        replay for full batches on CUDA (recording into the graph's own statistics, merged at the
        end of the epoch), else the same step eagerly into ``stats``."""
        h, y = self.batch(orders, gens, step)
        if self.use_graph and y.shape[1] == self.cfg.batch_size:
            if self.graph is None:
                self.graph = StepGraph(self, h, y)
            self.graph.replay(h, y, step)
        else:
            self.step(h, y, torch.tensor(step, device=self.device), stats)

    def train_epoch(self, epoch: int) -> list[dict[str, Any]]:
        """One stage-1 epoch of every seed; returns per-seed ``{"layers": [...]}`` records and sets
        the per-seed class means (nearest-class-mean accuracy).  One host read at the end."""
        gens = self.epoch_gens(epoch)
        orders = self.batch_orders(gens)
        self.encoder.train()
        if self.graph is not None:
            self.graph.stats.reset()
        stats = self.new_epoch_stats()
        for step in range(len(orders[0])):
            self.train_step(orders, gens, step, stats)
        return self.end_epoch(stats, epoch)

    def end_epoch(self, stats: EpochStats, epoch: int) -> list[dict[str, Any]]:
        """Close an epoch: merge the graph's statistics, refuse a non-finite loss, set the class
        means, and return the per-seed records (also the end of the pipelined epochs)."""
        if self.graph is not None:
            stats.merge(self.graph.stats)
        stats.check(epoch, self.cfgs)
        self.class_means = stats.class_means()
        return [{"layers": r} for r in stats.records(self.margins)]

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def layer_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer token means (S, N, E) of stacked inputs x (S, N, C, H, W)."""
        outs = []
        h = x.to(self.param_dtype())
        with autocast(self.cfg, self.device):
            for layer in self.encoder.layers:
                h = layer(h)
                outs.append(loss_dtype(pool(h)))
        return outs

    def _stack_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([d.x[split] for d in self.datas]), torch.stack([d.y[split] for d in self.datas])

    @torch.no_grad()
    def pooled(self, split: str) -> list[torch.Tensor]:
        """Per-layer pooled features (S, N, E) of the clean images of ``split``, each seed's
        normalised with its own training split's statistics."""
        self.encoder.eval()
        xs, _ = self._stack_split(split)
        bs = 2 * self.cfg.batch_size
        # each seed's images with its own split's statistics (its DeviceData), as a separate run
        parts = [self.layer_features(torch.stack([d.clean(xs[s, i:i + bs]) for s, d in enumerate(self.datas)]))
                 for i in range(0, xs.shape[1], bs)]
        L = len(self.encoder.layers)
        return [torch.cat([p[l] for p in parts], dim=1) for l in range(L)]

    @torch.no_grad()
    def evaluate(self, epoch: int) -> list[dict[str, Any]]:
        """Per seed: validation loss/CAR per layer, NCM accuracies; ``metric`` = last-layer
        validation loss (views as in the module doc)."""
        self.encoder.eval()
        cfg, L, S = self.cfg, len(self.encoder.layers), self.S
        ref = cfg.reference
        tag = f"val{epoch}" if ref else "val"
        gens = [generator(self.device, derive_seed(sd["aug"], tag)) for sd in self.seeds]
        xv, yv = self._stack_split("val")
        n_val = xv.shape[1]
        perms = [torch.randperm(n_val, generator=g, device=self.device) for g in gens] if ref else None
        acc = torch.zeros(S, L, 2, dtype=torch.float64, device=self.device)
        wsum = 0.0
        clean_val: list[list[torch.Tensor]] = [[] for _ in range(L)]
        for i in range(0, n_val, cfg.batch_size):
            if ref:
                idx = [p[i:i + cfg.batch_size] for p in perms]
                xb = torch.stack([xv[s][idx[s]] for s in range(S)])
                yb = torch.stack([yv[s][idx[s]] for s in range(S)])
            else:
                xb, yb = xv[:, i:i + cfg.batch_size], yv[:, i:i + cfg.batch_size]
            b = xb.shape[1]
            if b < 2:
                continue
            if ref:
                x = torch.stack([d.views(xb[s], gens[s], 2) for s, d in enumerate(self.datas)])
            else:
                x = torch.stack([torch.cat([d.clean(xb[s]), d.views(xb[s], gens[s], 1)])
                                 for s, d in enumerate(self.datas)])
            feats = self.layer_features(x)
            w = float(b) if ref else 1.0
            for l, f in enumerate(feats):
                loss, st = margin_loss(f, yb, self.margins[l], cfg)
                acc[:, l] += torch.stack([loss, st.clamp_rate], dim=1).double() * w
            if not ref:
                for l, f in enumerate(feats):
                    clean_val[l].append(f[:, :b])
            wsum += w
        vals = (acc / max(wsum, 1.0)).cpu().tolist()
        val_feats = self.pooled("val") if ref else [torch.cat(c, dim=1) for c in clean_val]
        n_t = min(PER_EPOCH_TEST_N, self.data.x["test"].shape[0])
        xt = torch.stack([d.clean(d.x["test"][:n_t]) for d in self.datas])
        test_feats = self.layer_features(xt)
        noise = self.pair_noise()
        out = []
        for s in range(S):
            o: dict[str, Any] = {"val_loss": [v[0] for v in vals[s]], "val_car": [v[1] for v in vals[s]]}
            nv = val_feats[-1].shape[1]
            o["ncm_val_acc"] = [self._ncm(f[s], yv[s][:nv], s, l) for l, f in enumerate(val_feats)]
            o["ncm_test_acc"] = [self._ncm(f[s], self.datas[s].y["test"][:n_t], s, l)
                                 for l, f in enumerate(test_feats)]
            o["val_acc"], o["test_acc"] = o["ncm_val_acc"][-1], o["ncm_test_acc"][-1]
            o["test_n"] = n_t
            for k, rows in noise.items():
                o[k] = [r[s] for r in rows]
            o["metric"] = o["val_loss"][-1]
            out.append(o)
        if cfg.fisher:
            pv = self.pooled("val")
            for s in range(S):
                out[s]["fisher"] = [fisher_criterion(f[s], yv[s], self.num_classes) for f in pv]
        return out

    def _ncm(self, feats: torch.Tensor, y: torch.Tensor, s: int, layer: int) -> float:
        """Nearest-class-mean accuracy of seed ``s``'s ``layer`` features (cosine to the class
        means of the epoch's training features): the per-layer probe."""
        f = F.normalize(feats.float(), dim=1)
        mu = F.normalize(self.class_means[s, layer].float(), dim=1)
        return float(((f @ mu.T).argmax(1) == y).float().mean())

    @torch.no_grad()
    def pair_noise(self) -> dict[str, list[list[float | None]]]:
        """Per layer and seed the effective within-pair noise of the model
        (:func:`vit.diagnostics.view_pair_noise`) on the pooled features of two training-style
        views (augmentation and view noise) of every validation image.  The views come from a
        generator of their own with a fixed tag, so every epoch measures the same views and no
        training or evaluation stream moves."""
        self.encoder.eval()
        gens = [generator(self.device, derive_seed(sd["aug"], "pair_noise")) for sd in self.seeds]
        xv, _ = self._stack_split("val")
        bs = self.cfg.batch_size
        L = len(self.encoder.layers)
        f1: list[list[torch.Tensor]] = [[] for _ in range(L)]
        f2: list[list[torch.Tensor]] = [[] for _ in range(L)]
        for i in range(0, xv.shape[1], bs):
            x = torch.stack([d.views(xv[s, i:i + bs], gens[s], 2) for s, d in enumerate(self.datas)])
            b = x.shape[1] // 2
            for l, f in enumerate(self.layer_features(x)):
                f1[l].append(f[:, :b])
                f2[l].append(f[:, b:])
        keys = ("noise_ratio", "noise_ratio_se", "sigma_n_eff", "sigma_n_eff_se")
        out: dict[str, list[list[float | None]]] = {k: [] for k in keys}
        for l in range(L):
            est = view_pair_noise(torch.cat(f1[l], dim=1), torch.cat(f2[l], dim=1))
            for k in keys:
                out[k].append(est[k])
        return out

    # ---------------------------------------------------------------- stage 2
    def finish(self) -> list[dict[str, Any]]:
        """Stage 2 for every seed: :func:`fit_heads` on the frozen last layer's token mean, then
        validation and test accuracy on clean images."""
        cfg, S = self.cfg, self.S
        self.encoder.eval()
        pv = self.pooled("val")          # every layer: the head reads the last, Fisher all of them
        clean = None if cfg.reference else (self.pooled("train")[-1], pv[-1])
        heads, info = fit_heads(self.cfgs, self.datas, lambda v: self.layer_features(v)[-1], cfg.embed_dim,
                                clean=clean, dtype=self.param_dtype())
        fva_c, fte = pv[-1], self.pooled("test")[-1]
        out = []
        for s in range(S):
            yv, yt = self.datas[s].y["val"], self.datas[s].y["test"]
            with torch.no_grad():
                sv, st = heads[s](fva_c[s]), heads[s](fte[s])
                r = {"val_acc": float(topk_accuracy(sv, yv, 1)), "test_acc": float(topk_accuracy(st, yt, 1)),
                     "val_topk_acc": float(topk_accuracy(sv, yv, cfg.topk)),
                     "test_topk_acc": float(topk_accuracy(st, yt, cfg.topk)), "head": info[s]}
            if cfg.fisher:
                r["fisher_val"] = [fisher_criterion(f[s], yv, self.num_classes) for f in pv]
            out.append(r)
        return out


class StepGraph:
    """:meth:`CFF.step` captured once as a CUDA graph for full batches (static shapes) and replayed.

    The graph records into its own :class:`EpochStats` (``stats``; reset at each epoch start and
    merged into the epoch's by :meth:`CFF.end_epoch`).  Capture needs a warm-up on a side stream
    (two eager steps, so that lazily made state exists before capture); that warm-up changes no
    weight: parameters and optimiser states are restored from copies before capture, and capture
    itself records, it does not run."""

    def __init__(self, engine: CFF, h: torch.Tensor, y: torch.Tensor) -> None:
        self.engine = engine
        dev = engine.device
        self.h, self.y = h.clone(), y.clone()
        self.step = torch.zeros((), dtype=torch.long, device=dev)
        keep = self._snapshot()
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        scratch = engine.new_epoch_stats()
        with torch.cuda.stream(side):
            for _ in range(2):
                engine.step(self.h, self.y, self.step, scratch)
        torch.cuda.current_stream(dev).wait_stream(side)
        self._restore(keep)
        self.graph = torch.cuda.CUDAGraph()
        for o in engine.optimizers:
            o.zero_grad(set_to_none=True)
        self.stats = engine.new_epoch_stats()
        with torch.cuda.graph(self.graph):
            engine.step(self.h, self.y, self.step, self.stats)

    def replay(self, h: torch.Tensor, y: torch.Tensor, step: int) -> None:
        self.h.copy_(h)
        self.y.copy_(y)
        self.step.fill_(step)
        self.graph.replay()

    @torch.no_grad()
    def _snapshot(self) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
        e = self.engine
        return ([p.detach().clone() for p in e.encoder.parameters()],
                [copy.deepcopy(o.state_dict()) for o in e.optimizers])

    @torch.no_grad()
    def _restore(self, snap: tuple[list[torch.Tensor], list[dict[str, Any]]]) -> None:
        e = self.engine
        for p, t in zip(e.encoder.parameters(), snap[0]):
            p.copy_(t)
        for o, sd in zip(e.optimizers, snap[1]):
            o.load_state_dict(sd)
            for p in o.param_groups[0]["params"]:   # AdamW's own initial state, made before capture
                if not o.state[p]:
                    o.state[p].update(step=torch.zeros((), dtype=torch.float32, device=p.device),
                                      exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
