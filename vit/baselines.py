"""The baselines CFF is compared with, each one seed per pass (S = 1) on the same data pipeline:

``bp``    BP+CE: the same encoder (S = 1; patch embedding included) + a LayerNorm/Linear head
          trained end to end.  Under 'reference' at lr 5e-4, selected on the validation
          cross-entropy of one augmented view, without per-step SupCon probes.
``ff``    Forward-Forward on the ViT with a label token (a fixed random Gaussian embedding per
          class appended as an extra token after the position embedding); goodness
          ``G = mean(pool(f)²)``; loss ``softplus(θ - G_pos) + softplus(G_neg - θ)`` with a
          uniformly drawn wrong label; the next layer gets ``f/‖f‖`` (per token), detached;
          prediction = argmax over classes of the goodness summed over layers.  Under
          'reference': goodness over the image tokens (label token excluded), one mean over the
          2B softplus terms, per-sample normalisation between layers, prediction from the last
          layer's goodness and selection on the summed validation loss of layers 1..L-1.
``ffcl``  Improved FFCL: two MLPs in-64-64-classes; cosine-embedding loss per hidden layer, BCE
          at the output; Adam lr 1e-4.  Test accuracy is model A's.

Each records the same per-layer statistics as CFF (:class:`vit.method.EpochStats`; for BP the
per-layer "loss" is the SupCon loss of the pooled outputs, a probe, since BP trains on CE).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from vit.config import FFCL_HIDDEN, FFCL_LR, TrainConfig, derive_seed
from vit.device import DeviceData, autocast, generator
from vit.diagnostics import grad_norm, topk_accuracy
from vit.method import Method, adamw, margin_loss
from vit.models import FFCLNet, Head, build_encoder, pool

__all__ = ["BP", "FF", "FFCL", "accuracies"]


def accuracies(sv: torch.Tensor, st: torch.Tensor, yv: torch.Tensor, yt: torch.Tensor, k: int) -> dict[str, float]:
    """Top-1 and top-k accuracy of validation and test scores."""
    return {"val_acc": float(topk_accuracy(sv, yv)), "test_acc": float(topk_accuracy(st, yt)),
            "val_topk_acc": float(topk_accuracy(sv, yv, k)), "test_topk_acc": float(topk_accuracy(st, yt, k))}


class BP(Method):
    """BP+CE end to end: encoder (patch embedding included) + LayerNorm/Linear head."""

    @property
    def metric_name(self) -> str:   # the reference selects on the CE of one augmented view
        return "val_ce_augmented" if self.cfg.reference else "val_ce"

    def __init__(self, cfgs: Sequence[TrainConfig], datas: Sequence[DeviceData]) -> None:
        super().__init__(cfgs, datas)
        self.one_seed()
        cfg, data, seeds = self.cfg, self.data, self.seeds[0]
        self.encoder = build_encoder(cfg.model, data.ds.image_shape, embed_dim=cfg.embed_dim, heads=cfg.heads,
                                     layers=cfg.layers, patch=cfg.patch, seeds=[seeds["init"]],
                                     init=cfg.init).to(self.device)
        torch.manual_seed(derive_seed(seeds["init"], "head"))
        self.head = Head(cfg.embed_dim, self.num_classes).to(self.device)
        self.modules = {"encoder": self.encoder, "head": self.head}
        self.optimizers = [adamw(list(self.encoder.parameters()) + list(self.head.parameters()),
                                  cfg.method_lr(), cfg.wd, self.device)]
        self.net = self._net

    def _net(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outs = []
        h = x.unsqueeze(0)                       # the stacked encoder at S = 1
        for layer in self.encoder.layers:
            h = layer(h)
            outs.append(pool(h)[0])
        return self.head(outs[-1]), outs

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        L = len(self.encoder.layers)
        self.encoder.train()
        g_aug, batches, stats = self.one_seed_epoch(epoch, L)
        opt = self.optimizers[0]
        probes = not self.cfg.reference          # the reference computes no per-step SupCon probes
        ce_sum = torch.zeros((), device=self.device)
        n_seen = 0
        for step, idx in enumerate(batches):
            y = self.data.y["train"][idx]
            x = self.data.views(self.data.x["train"][idx], g_aug, 1)
            with autocast(self.cfg, self.device):
                logits, outs = self.net(x)
            loss = F.cross_entropy(logits.float(), y)
            ce_sum += loss.detach() * y.shape[0]     # weighted by batch size, as main_BP.py's logged loss
            n_seen += y.shape[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if probes:
                with torch.no_grad():
                    for l, f in enumerate(outs):
                        pl, st = margin_loss(f.detach(), y, self.margins[l], self.cfg)
                        gn = grad_norm(self.encoder.layers[l].parameters()).to(loss.device)
                        stats.add(l, torch.stack([pl, st.clamp_rate, gn, st.mean_pos_sim, st.mean_neg_sim])[None],
                                  y.shape[0])
            stats.mark(L - 1, loss.reshape(1), step)
            opt.step()
        stats.check(epoch, self.cfgs)
        # per-layer "loss" is the SupCon loss of the pooled outputs (a probe; BP trains on CE)
        layers = stats.records(self.margins)[0] if probes else []
        return {"layers": layers, "train_ce": float(ce_sum / max(n_seen, 1))}

    @torch.no_grad()
    def _scores(self, split: str) -> torch.Tensor:
        self.encoder.eval()
        with autocast(self.cfg, self.device):
            return torch.cat([self.net(self.data.clean(xb))[0].float()
                              for xb, _ in self.data.batches(split, 2 * self.cfg.batch_size)])

    def evaluate(self, epoch: int) -> dict[str, Any]:
        sv, st = self._scores("val"), self._scores("test")
        yv, yt = self.data.y["val"], self.data.y["test"]
        metric = float(F.cross_entropy(sv, yv))
        if self.cfg.reference:   # the reference selects on the CE of one augmented view of the validation split
            g = generator(self.device, derive_seed(self.seeds[0]["aug"], f"val{epoch}"))
            self.encoder.eval()
            with torch.no_grad(), autocast(self.cfg, self.device):
                sa = torch.cat([self.net(self.data.views(xb, g, 1))[0].float()
                                for xb, _ in self.data.batches("val", self.cfg.batch_size)])
            metric = float(F.cross_entropy(sa, yv))
        return {"val_ce": float(F.cross_entropy(sv, yv)), "val_acc": float(topk_accuracy(sv, yv)),
                "test_acc": float(topk_accuracy(st, yt)), "metric": metric}

    def finish(self) -> dict[str, Any]:
        sv, st = self._scores("val"), self._scores("test")
        yv, yt, k = self.data.y["val"], self.data.y["test"], self.cfg.topk
        return accuracies(sv, st, yv, yt, k)


class FF(Method):
    """Forward-Forward on the ViT with a fixed random label token (see module doc)."""

    epoch_acc_name = "goodness_val_acc"    # the label of the highest goodness

    @property
    def metric_name(self) -> str:   # the reference selects on the summed loss of layers 1..L-1
        return "val_ff_loss_layers_1+" if self.cfg.reference and self.cfg.layers > 1 else "val_ff_loss"

    def __init__(self, cfgs: Sequence[TrainConfig], datas: Sequence[DeviceData]) -> None:
        super().__init__(cfgs, datas)
        self.one_seed()
        cfg, data, seeds = self.cfg, self.data, self.seeds[0]
        if cfg.model != "vit":
            raise ValueError("method 'ff' is implemented for model 'vit' (label token)")
        self.encoder = build_encoder("vit", data.ds.image_shape, embed_dim=cfg.embed_dim, heads=cfg.heads,
                                     layers=cfg.layers, patch=cfg.patch, seeds=[seeds["init"]],
                                     init=cfg.init).to(self.device)
        g = torch.Generator().manual_seed(derive_seed(seeds["init"], "label_token"))
        self.label_emb = torch.randn(self.num_classes, cfg.embed_dim, generator=g).to(self.device)
        self.modules = {"encoder": self.encoder}
        self.optimizers = [adamw(l.parameters(), cfg.method_lr(), cfg.wd, self.device) for l in self.encoder.layers]

    def _layer(self, l: int, h: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        """Layer ``l`` of the stacked encoder at S = 1 on unstacked rows."""
        if l == 0:
            return self.encoder.layers[0](h.unsqueeze(0), self.label_emb[lab][None, :, None, :])[0]
        return self.encoder.layers[l](h.unsqueeze(0))[0]

    def goodness(self, out: torch.Tensor) -> torch.Tensor:
        """Mean square of the token mean; out (N, T, E).  'reference': image tokens only (the
        label token excluded, as the reference's ``x[:, 1:]``); 'cffdyn': every token."""
        if self.cfg.reference and out.shape[1] > 1:
            out = out[:, :-1]                                  # our label token is the last token
        return out.mean(1).float().pow(2).mean(dim=1)

    def _ff_loss(self, out: torch.Tensor, b: int) -> torch.Tensor:
        g = self.goodness(out)
        th = self.cfg.ff_threshold
        if self.cfg.reference:   # the reference: one mean over the 2B softplus terms
            return F.softplus(torch.cat([th - g[:b], g[b:] - th])).mean()
        return F.softplus(th - g[:b]).mean() + F.softplus(g[b:] - th).mean()

    def _normalize(self, out: torch.Tensor) -> torch.Tensor:
        """Input of the next layer: 'reference' L2-normalises each sample over all its tokens and
        dims (``F.normalize(flatten(x, 1))``); 'cffdyn' each token."""
        out = out.float()
        if self.cfg.reference:
            return F.normalize(out.flatten(1), dim=1).view(out.shape)
        return F.normalize(out, dim=-1)

    def _wrong(self, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        off = torch.randint(1, self.num_classes, y.shape, generator=gen, device=y.device)
        return (y + off) % self.num_classes

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        L = len(self.encoder.layers)
        self.encoder.train()
        g_aug, batches, stats = self.one_seed_epoch(epoch, L)
        for step, idx in enumerate(batches):
            y = self.data.y["train"][idx]
            b = y.shape[0]
            x = self.data.views(self.data.x["train"][idx], g_aug, 1)
            h = torch.cat([x, x])
            lab = torch.cat([y, self._wrong(y, g_aug)])
            for l in range(L):
                with autocast(self.cfg, self.device):
                    out = self._layer(l, h, lab)
                loss = self._ff_loss(out, b)
                opt = self.optimizers[l]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                gn = grad_norm(self.encoder.layers[l].parameters()).to(loss.device)
                opt.step()
                with torch.no_grad():
                    _, st = margin_loss(out[:b].mean(1).detach(), y, self.margins[l], self.cfg)
                    stats.add(l, torch.stack([loss.detach(), st.clamp_rate, gn, st.mean_pos_sim,
                                              st.mean_neg_sim])[None], b)
                stats.mark(l, loss.reshape(1), step)
                h = self._normalize(out.detach())
        stats.check(epoch, self.cfgs)
        return {"layers": stats.records(self.margins)[0]}

    @torch.no_grad()
    def _scores(self, split: str) -> torch.Tensor:
        """Per candidate label: goodness summed over layers ('cffdyn'), or the last layer's
        goodness ('reference': its score is overwritten layer by layer for l >= 1): (N, C)."""
        self.encoder.eval()
        out = []
        for xb, _ in self.data.batches(split, self.cfg.batch_size):
            x = self.data.clean(xb)
            cols = []
            for c in range(self.num_classes):
                lab = torch.full((x.shape[0],), c, dtype=torch.long, device=self.device)
                h, tot = x, torch.zeros(x.shape[0], device=self.device)
                for l in range(len(self.encoder.layers)):
                    with autocast(self.cfg, self.device):
                        o = self._layer(l, h, lab)
                    if self.cfg.reference:
                        tot = self.goodness(o)
                    else:
                        tot = tot + self.goodness(o)
                    h = self._normalize(o)
                cols.append(tot)
            out.append(torch.stack(cols, dim=1))
        return torch.cat(out)

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict[str, Any]:
        """'cffdyn': last-layer FF loss on clean validation images with fixed wrong labels.
        'reference': the sample-weighted FF loss of every layer but the first, summed, on one
        augmented view with wrong labels drawn afresh each epoch (the reference's selection)."""
        self.encoder.eval()
        ref = self.cfg.reference
        g = generator(self.device, derive_seed(self.seeds[0]["aug"], f"val{epoch}" if ref else "val"))
        L = len(self.encoder.layers)
        tot, n = torch.zeros(L, device=self.device), 0
        for xb, yb in self.data.batches("val", self.cfg.batch_size):
            x = self.data.views(xb, g, 1) if ref else self.data.clean(xb)
            h = torch.cat([x, x])
            lab = torch.cat([yb, self._wrong(yb, g)])
            w = xb.shape[0] if ref else 1
            for l in range(L):
                with autocast(self.cfg, self.device):
                    o = self._layer(l, h, lab)
                tot[l] += self._ff_loss(o, xb.shape[0]) * w
                h = self._normalize(o)
            n += w
        per_layer = tot / max(n, 1)
        metric = float(per_layer[1:].sum()) if (ref and L > 1) else float(per_layer[-1])
        sv = self._scores("val")
        return {"val_ff_loss": float(per_layer[-1]), "val_acc": float(topk_accuracy(sv, self.data.y["val"])),
                "metric": metric}

    def finish(self) -> dict[str, Any]:
        sv, st = self._scores("val"), self._scores("test")
        yv, yt, k = self.data.y["val"], self.data.y["test"], self.cfg.topk
        return accuracies(sv, st, yv, yt, k)


class FFCL(Method):
    """Improved FFCL: two MLPs, per-layer cosine-embedding loss, BCE at the output, Adam 1e-4."""

    minimize = False
    metric_name = "val_acc"       # selects on its validation accuracy
    epoch_acc_name = None

    def __init__(self, cfgs: Sequence[TrainConfig], datas: Sequence[DeviceData]) -> None:
        super().__init__(cfgs, datas)
        self.one_seed()
        data, seeds = self.data, self.seeds[0]
        c, h, w = data.ds.image_shape
        torch.manual_seed(seeds["init"])
        self.a = FFCLNet(c * h * w, self.num_classes, FFCL_HIDDEN).to(self.device)
        torch.manual_seed(derive_seed(seeds["init"], "ffcl_b"))
        self.b = FFCLNet(c * h * w, self.num_classes, FFCL_HIDDEN).to(self.device)
        self.modules = {"a": self.a, "b": self.b}
        self.optimizers = [torch.optim.Adam(self.a.parameters(), lr=FFCL_LR),
                           torch.optim.Adam(self.b.parameters(), lr=FFCL_LR)]

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        L = len(self.a.layers)
        g_aug, batches, stats = self.one_seed_epoch(epoch, L)
        for step, idx in enumerate(batches):
            y = self.data.y["train"][idx]
            x = self.data.views(self.data.x["train"][idx], g_aug, 1).flatten(1)
            ha, hb = x, x
            losses, outs = [], []
            for l in range(L):
                oa, ob = self.a.layers[l](ha), self.b.layers[l](hb)
                if l < L - 1:
                    loss = (1.0 - F.cosine_similarity(oa, ob, dim=1, eps=1e-8)).mean()
                else:
                    t = F.one_hot(y, self.num_classes).float()
                    loss = (F.binary_cross_entropy_with_logits(oa, t) + F.binary_cross_entropy_with_logits(ob, t))
                losses.append(loss)
                outs.append(oa.detach())
                ha, hb = oa.detach(), ob.detach()
            for o in self.optimizers:
                o.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()   # graphs are disjoint per layer: local updates
            with torch.no_grad():
                for l in range(L):
                    params = list(self.a.layers[l].parameters()) + list(self.b.layers[l].parameters())
                    _, st = margin_loss(outs[l], y, self.margins[l], self.cfg)
                    stats.add(l, torch.stack([losses[l].detach(), st.clamp_rate, grad_norm(params).to(x.device),
                                              st.mean_pos_sim, st.mean_neg_sim])[None], y.shape[0])
                    stats.mark(l, losses[l].reshape(1), step)
            for o in self.optimizers:
                o.step()
        stats.check(epoch, self.cfgs)
        return {"layers": stats.records(self.margins)[0]}

    @torch.no_grad()
    def _scores(self, split: str, net: nn.Module) -> torch.Tensor:
        return torch.cat([net(self.data.clean(xb)) for xb, _ in self.data.batches(split, 2 * self.cfg.batch_size)])

    def evaluate(self, epoch: int) -> dict[str, Any]:
        va = float(topk_accuracy(self._scores("val", self.a), self.data.y["val"]))
        return {"val_acc": va, "test_acc": float(topk_accuracy(self._scores("test", self.a), self.data.y["test"])),
                "metric": va}

    def finish(self) -> dict[str, Any]:
        yv, yt, k = self.data.y["val"], self.data.y["test"], self.cfg.topk
        sv, st = self._scores("val", self.a), self._scores("test", self.a)
        return {**accuracies(sv, st, yv, yt, k), "test_acc_model_b": float(topk_accuracy(self._scores("test", self.b), yt))}
