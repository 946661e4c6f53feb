"""Batched seeds: train all seeds of a study cell in one pass, weights with a leading seed dim.

The S seeds of a cell run the same CFF algorithm as S separate :func:`vit.train.train_run` runs
(method ``cff2``/``cff1``): each seed has its own initialisation, split, data order and
augmentation stream (its own :class:`vit.train.DeviceData` and per-epoch generators, drawn
exactly as ``_CFF.train_epoch`` draws them), and per layer and step its own SupCon margin loss.
Only the arithmetic is batched: layer ``l`` of all seeds is one forward over a (S, V·B, ...)
input, the S losses are summed (the seeds share no parameters, so the gradient of the sum is
each seed's own gradient), and one AdamW over the stacked (S, ...) parameters takes the step
(AdamW is elementwise, so this is S independent AdamWs).  Evaluation, model selection and the
stage-2 head reuse the per-seed method objects of :mod:`vit.train` after the stacked weights are
copied back (:meth:`BatchedCFF.sync_to_methods`).

Two implementations of the batched layer forward, selected by ``impl``
-----------------------------------------------------------------------
``vmap``      the model of :mod:`vit.models` itself: ``torch.func.stack_module_state`` +
              ``functional_call`` + ``vmap`` over the seed dimension (works for every encoder).
``explicit``  ViT layers written out with ``baddbmm`` on the stacked weights and one
              ``scaled_dot_product_attention`` call over (S·B) sequences (no vmap); ViT only.
              It exists for the measurement below: vmap through SDPA falls back to a slow
              path (torch 2.13 warns: no batching rule for
              ``_scaled_dot_product_flash_attention_for_cpu``).  :func:`bench_batched`
              (``cffdyn vit study --bench-batched``) times both side by side against 1 seed
              and S sequential seeds.

Measurement and choice (CPU, 2 threads, lightly loaded, torch 2.13, ViT[64 4 4], 16 tokens,
cff2, batch 128, 7 seeds; seconds per training step over all layers): 1 seed 0.049; 7
sequential 0.30 (6.1x one seed); batched vmap 0.42 (8.6x; 0.72x the speed of sequential);
batched explicit 0.36 (7.3x; 0.84x).  Repeats on the same machine while other jobs loaded it
(load average 4-8) scattered widely (explicit/vmap speed ratio 0.04x to 5.8x), so on a shared
2-core CPU only the quiet figure is usable.  On a 2-core CPU the step is compute-bound, so batching
cannot beat sequential runs; the explicit layers are only 1.17x faster than vmap, which does
not justify a second ViT definition as the default: ``DEFAULT_IMPL = "vmap"`` (the model of
:mod:`vit.models` itself).  The batched path is meant for GPUs, where small per-seed kernels
are launch-bound; no GPU was available to measure it when this was written, so rerun the
benchmark there before choosing ``explicit``.

Equivalence with separate runs is tested on CPU in float64 (``tests/test_vit_batched.py``).
"""
from __future__ import annotations

import copy
import time
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from vit.losses import supcon_loss
from vit.models import patchify, pool
from vit.train import N_STATS, DeviceData, TrainConfig, _sync, build_method, resolve_device

__all__ = ["BatchedCFF", "IMPLS", "DEFAULT_IMPL", "bench_batched", "format_bench", "train_batched"]

IMPLS: tuple[str, ...] = ("vmap", "explicit")
DEFAULT_IMPL = "vmap"
_SEED_FIELDS = ("seed", "seed_init", "seed_split", "seed_order", "seed_aug")


def _lin(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-seed Linear: x (S, N, in), w (S, out, in), b (S, out) -> (S, N, out)."""
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


def _ln(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-seed LayerNorm over the last dim: x (S, ..., E), w/b (S, E)."""
    shape = (w.shape[0],) + (1,) * (x.dim() - 2) + (w.shape[1],)
    return F.layer_norm(x, x.shape[-1:], eps=eps) * w.view(shape) + b.view(shape)


def _block(p: dict[str, torch.Tensor], pre: str, x: torch.Tensor, heads: int) -> torch.Tensor:
    """Explicit batched pre-LN block (same math as ``vit.models.Block``): x (S, B, T, E)."""
    s, b, t, e = x.shape
    h = _ln(x, p[pre + "ln1.weight"], p[pre + "ln1.bias"]).reshape(s, b * t, e)
    qkv = _lin(h, p[pre + "qkv.weight"], p[pre + "qkv.bias"])
    q, k, v = qkv.view(s * b, t, 3, heads, e // heads).permute(2, 0, 3, 1, 4)
    a = F.scaled_dot_product_attention(q, k, v)                        # (S·B, H, T, e/H)
    x = x + _lin(a.transpose(1, 2).reshape(s, b * t, e), p[pre + "proj.weight"], p[pre + "proj.bias"]).view(s, b, t, e)
    h = _ln(x, p[pre + "ln2.weight"], p[pre + "ln2.bias"]).reshape(s, b * t, e)
    h = _lin(F.gelu(_lin(h, p[pre + "fc1.weight"], p[pre + "fc1.bias"])), p[pre + "fc2.weight"], p[pre + "fc2.bias"])
    return x + h.view(s, b, t, e)


def _patch_layer(p: dict[str, torch.Tensor], x: torch.Tensor, patch: int, heads: int) -> torch.Tensor:
    """Explicit batched ``vit.models.PatchLayer``: x (S, B, C, H, W) -> (S, B, T, E)."""
    s, b = x.shape[:2]
    tok = patchify(x.reshape(s * b, *x.shape[2:]), patch)             # (S·B, T, C·p·p)
    t = tok.shape[1]
    h = F.relu(_lin(tok.reshape(s, b * t, -1), p["embed.weight"], p["embed.bias"])).view(s, b, t, -1)
    return _block(p, "block.", h + p["pos"], heads)


class BatchedCFF:
    """S seeds of one CFF cell with stacked per-layer parameters (see module doc).

    Args:
        cfgs: one :class:`TrainConfig` per seed; they may differ only in the seed fields.
        datas: one :class:`DeviceData` per seed (its own split), all on the same device.
        impl: ``"vmap"`` or ``"explicit"`` (ViT only).
    """

    def __init__(self, cfgs: Sequence[TrainConfig], datas: Sequence[DeviceData], impl: str = DEFAULT_IMPL) -> None:
        if not cfgs or len(cfgs) != len(datas):
            raise ValueError(f"need one DeviceData per config; got {len(cfgs)} configs, {len(datas)} datas")
        if impl not in IMPLS:
            raise ValueError(f"impl {impl!r} is not one of {IMPLS}")
        strip = [{k: v for k, v in c.to_dict().items() if k not in _SEED_FIELDS} for c in cfgs]
        if any(s != strip[0] for s in strip):
            raise ValueError("batched seeds must share every TrainConfig field except the seeds")
        cfg = cfgs[0]
        if cfg.method not in ("cff2", "cff1"):
            raise ValueError(f"batched training supports methods cff2/cff1, not {cfg.method!r}")
        if impl == "explicit" and cfg.model != "vit":
            raise ValueError("impl 'explicit' is written for model 'vit'; use impl 'vmap'")
        if cfg.compile:
            raise ValueError("batched training does not use torch.compile (compile=False)")
        if len({d.device for d in datas}) != 1:
            raise ValueError("all DeviceData must be on the same device")
        self.cfgs, self.datas, self.impl, self.cfg = list(cfgs), list(datas), impl, cfg
        self.S = len(cfgs)
        self.device = datas[0].device
        self.methods = [build_method(c, d) for c, d in zip(cfgs, datas)]
        self.L = len(self.methods[0].encoder.layers)
        self.margins = self.methods[0].margins
        self.n_views = 2 if cfg.method == "cff2" else 1
        self.params: list[dict[str, torch.Tensor]] = []
        self.templates = []
        for l in range(self.L):
            params, _ = stack_module_state([m.encoder.layers[l] for m in self.methods])
            self.params.append({k: v.detach().clone().requires_grad_(True) for k, v in params.items()})
            self.templates.append(copy.deepcopy(self.methods[0].encoder.layers[l]).to("meta"))
        self.optimizers = [torch.optim.AdamW(list(p.values()), lr=cfg.lr, weight_decay=cfg.wd, betas=(0.9, 0.999))
                           for p in self.params]
        self.class_means: list[torch.Tensor] = []

    # ---------------------------------------------------------------- forward of one layer
    def layer_forward(self, l: int, h: torch.Tensor) -> torch.Tensor:
        """Layer ``l`` of every seed: h (S, N, ...) -> (S, N, T, E) (or (S, N, E) for MLPs)."""
        p = self.params[l]
        if self.impl == "explicit":
            if l == 0:
                return _patch_layer(p, h, self.cfg.patch, self.cfg.heads)
            return _block(p, "", h, self.cfg.heads)
        tpl = self.templates[l]
        return vmap(lambda pp, x: functional_call(tpl, pp, (x,)))(p, h)

    def layer_step(self, l: int, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, S losses, one backward, one stacked AdamW step.  Returns (detached output,
        stats (S, 5): loss, CAR, grad norm, pos sim, neg sim)."""
        out = self.layer_forward(l, h)
        rows, losses = [], []
        for s in range(self.S):
            loss, st = supcon_loss(pool(out[s]).float(), y[s], margin=self.margins[l], temperature=self.cfg.tau,
                                   mode=self.cfg.loss_mode, check_finite=False, diagnostics=True)
            losses.append(loss)
            rows.append((loss.detach(), st))
        opt = self.optimizers[l]
        opt.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        gsq = sum(g.grad.detach().double().flatten(1).pow(2).sum(1) for g in self.params[l].values())
        gn = gsq.sqrt()
        opt.step()
        stats = torch.stack([torch.stack([ls, st.clamp_rate, gn[s].to(ls.dtype), st.mean_pos_sim.to(ls.dtype),
                                          st.mean_neg_sim.to(ls.dtype)]).float()
                             for s, (ls, st) in enumerate(rows)])
        return out.detach(), stats

    def _dtype(self) -> torch.dtype:
        return next(iter(self.params[0].values())).dtype

    def train_epoch(self, epoch: int) -> list[dict[str, Any]]:
        """One stage-1 epoch of every seed; returns per-seed ``{"layers": [...]}`` records (the
        format of ``_CFF.train_epoch``) and sets per-seed class means (for the NCM accuracy)."""
        gens = [m._epoch_gens(epoch) for m in self.methods]
        orders = [d.epoch_order(g[0], self.cfg.batch_size) for d, g in zip(self.datas, gens)]
        n_steps = len(orders[0])
        if any(len(o) != n_steps or any(a.shape != b.shape for a, b in zip(o, orders[0])) for o in orders):
            raise ValueError("seeds have different batch layouts (training splits of different sizes)")
        f32 = {"device": self.device, "dtype": torch.float32}
        acc = torch.zeros(self.S, self.L, N_STATS, **f32)
        nc, e = self.methods[0].num_classes, self.methods[0].encoder.embed_dim
        csum = torch.zeros(self.S, nc, e, **f32)
        ccnt = torch.zeros(self.S, nc, **f32)
        dt = self._dtype()
        for step in range(n_steps):
            ys, hs = [], []
            for s, (d, g) in enumerate(zip(self.datas, gens)):
                idx = orders[s][step]
                ys.append(d.y["train"][idx])
                hs.append(d.views(d.x["train"][idx], g[1], self.n_views).to(dt))
            y, h = torch.stack(ys), torch.stack(hs)
            for l in range(self.L):
                h, row = self.layer_step(l, h, y)
                acc[:, l] += row
            yy = y.repeat(1, self.n_views)
            pooled = pool(h.flatten(0, 1)).float().view(self.S, yy.shape[1], -1)
            for s in range(self.S):
                csum[s].index_add_(0, yy[s], pooled[s])
                ccnt[s].index_add_(0, yy[s], torch.ones_like(yy[s], dtype=torch.float32))
        for s, m in enumerate(self.methods):
            m.class_means = csum[s] / ccnt[s].clamp(min=1)[:, None]
        return [{"layers": m._layer_records(acc[s], n_steps)} for s, m in enumerate(self.methods)]

    @torch.no_grad()
    def sync_to_methods(self) -> None:
        """Copy the stacked weights into each seed's own encoder (for evaluate / finish)."""
        for l in range(self.L):
            for s, m in enumerate(self.methods):
                layer = m.encoder.layers[l]
                for name, t in layer.named_parameters():
                    t.copy_(self.params[l][name][s])

    def seed_state(self, s: int) -> dict[str, torch.Tensor]:
        """Seed ``s``'s encoder weights as a state dict (keys as ``ViT.state_dict()``)."""
        return {f"layers.{l}.{k}": v[s].detach().clone() for l in range(self.L) for k, v in self.params[l].items()}


# ============================================================================ benchmark
def _bench_cfg(device: str, batch: int) -> TrainConfig:
    return TrainConfig(dataset="digits", subset=None, image_size=16, patch=4, embed_dim=64, heads=4, layers=4,
                       epochs=1, head_epochs=1, batch_size=batch, device=device, amp=False)


def _time_interleaved(fns: dict[str, Any], steps: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Seconds per call of each function: every round times ``steps`` calls of each function in
    turn (interleaved, so a load change on a shared machine hits all of them); the minimum
    over ``repeats`` rounds is kept.  One untimed warm-up call each first."""
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            _sync(device)
            best[k] = min(best[k], (time.perf_counter() - t0) / steps)
    return best


def bench_batched(n_seeds: int = 7, steps: int = 3, batch_size: int = 128, device: str = "auto",
                  repeats: int = 3) -> dict[str, Any]:
    """Time one CFF training step (all layers, cff2) of ViT[64 4 4] (digits upsampled to 16x16,
    patch 4, 16 tokens): 1 seed (the ``vit.train`` path), ``n_seeds`` sequential seeds (S x 1
    seed, measured), and ``n_seeds`` batched with ``vmap`` and with ``explicit``, side by side in
    one process.  Returns seconds per step and the ratios."""
    from vit.data import load_dataset

    if n_seeds < 1 or steps < 1 or batch_size < 2:
        raise ValueError("bench needs n_seeds >= 1, steps >= 1, batch_size >= 2")
    dev = resolve_device(device)
    base = _bench_cfg(str(dev.type), batch_size)
    cfgs = [base.replace(seed=s) for s in range(n_seeds)]
    datas = [DeviceData(load_dataset(c.dataset, c.data_root, subset=c.subset, seed=c.resolved_seeds()["split"],
                                     image_size=c.image_size), dev, c.augment) for c in cfgs]
    gen = torch.Generator(device=dev).manual_seed(0)
    xs = [d.views(d.x["train"][:batch_size], gen, 2) for d in datas]
    ys = [d.y["train"][:batch_size] for d in datas]

    singles = [build_method(c, d) for c, d in zip(cfgs, datas)]

    def one_seed(s: int) -> None:
        h = xs[s]
        for l in range(len(singles[s].encoder.layers)):
            h, _, _ = singles[s].layer_step(l, h, ys[s])

    def sequential() -> None:
        for s in range(n_seeds):
            one_seed(s)

    res: dict[str, Any] = {"device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
                           "n_seeds": n_seeds, "batch_size": batch_size, "steps": steps,
                           "model": "ViT[64 4 4], 16 tokens, cff2 (2 views)", "torch": torch.__version__,
                           "threads": torch.get_num_threads()}
    y = torch.stack(ys)
    xb = torch.stack(xs)
    fns: dict[str, Any] = {"t_one_seed": lambda: one_seed(0), "t_sequential": sequential}
    for impl in IMPLS:
        b = BatchedCFF(cfgs, datas, impl=impl)

        def batched(b=b) -> None:
            h = xb
            for l in range(b.L):
                h, _ = b.layer_step(l, h, y)
        fns[f"t_batched_{impl}"] = batched
    res.update(_time_interleaved(fns, steps, repeats, dev))
    res["repeats"] = repeats
    for impl in IMPLS:
        t = res[f"t_batched_{impl}"]
        res[f"speedup_{impl}_vs_sequential"] = res["t_sequential"] / t
        res[f"cost_{impl}_vs_one_seed"] = t / res["t_one_seed"]
    res["sequential_vs_one_seed"] = res["t_sequential"] / res["t_one_seed"]
    res["explicit_vs_vmap"] = res["t_batched_vmap"] / res["t_batched_explicit"]
    return res


def format_bench(res: dict[str, Any]) -> str:
    s = res["n_seeds"]
    lines = [f"batched seeds benchmark: {res['model']}, batch {res['batch_size']}, {res['steps']} timed steps, "
             f"{res['device']}, torch {res['torch']}, {res['threads']} threads, best of {res['repeats']} interleaved rounds",
             f"  {'variant':<28} {'s/step':>9} {'x one seed':>11} {'speed-up vs sequential':>23}",
             f"  {'1 seed':<28} {res['t_one_seed']:9.4f} {1.0:11.2f} {'':>23}",
             f"  {f'{s} seeds sequential':<28} {res['t_sequential']:9.4f} {res['sequential_vs_one_seed']:11.2f} {1.0:23.2f}"]
    for impl in IMPLS:
        lines.append(f"  {f'{s} seeds batched ({impl})':<28} {res[f't_batched_{impl}']:9.4f} "
                     f"{res[f'cost_{impl}_vs_one_seed']:11.2f} {res[f'speedup_{impl}_vs_sequential']:23.2f}")
    lines.append(f"  explicit is {res['explicit_vs_vmap']:.2f}x the speed of vmap")
    return "\n".join(lines)


# ============================================================================ full runs
def _ckpt_save(path, payload) -> None:
    import io

    from cffdyn.io import atomic_write_bytes
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def train_batched(cfgs: Sequence[TrainConfig], out_dirs: Sequence[Any] | None = None, *, impl: str = DEFAULT_IMPL,
                  ckpt: Any = None, progress: bool = True) -> list[dict[str, Any]]:
    """Train S seeds of one cell together; return one result per seed in the format of
    :func:`vit.train.train_run` (plus ``"batched": {n_seeds, impl, epoch_time_s_all_seeds}``).

    Stage 1 runs batched (:class:`BatchedCFF`); per-epoch evaluation, best-epoch selection
    (lowest last-layer validation loss) and the stage-2 head reuse each seed's ``vit.train``
    method object.  ``out_dirs`` (one per seed): each seed's ``result.json`` is written there
    atomically at the end.  ``ckpt``: a file for the batched checkpoint (stacked weights, AdamW
    states, histories, best states), written atomically after every epoch, so a killed cell
    resumes from its last epoch."""
    from pathlib import Path

    from cffdyn.io import Progress, atomic_write_json
    from vit.data import load_dataset
    from vit.train import _is_better

    cfgs = list(cfgs)
    if out_dirs is not None and len(out_dirs) != len(cfgs):
        raise ValueError("need one out_dir per config")
    cfg = cfgs[0]
    dev = resolve_device(cfg.device)
    dsets = [load_dataset(c.dataset, c.data_root, subset=c.subset, seed=c.resolved_seeds()["split"],
                          image_size=c.image_size) for c in cfgs]
    b = BatchedCFF(cfgs, [DeviceData(d, dev, c.augment) for d, c in zip(dsets, cfgs)], impl=impl)
    S = b.S
    cfg_dicts = [c.to_dict() for c in cfgs]
    histories: list[list[dict[str, Any]]] = [[] for _ in range(S)]
    best = [{"epoch": -1, "metric": None, "state": m.model_state()} for m in b.methods]
    start, t_all = 0, []
    ck = Path(ckpt) if ckpt is not None else None
    if ck is not None and ck.is_file():
        st = torch.load(ck, map_location=dev, weights_only=False)
        if st["configs"] != cfg_dicts or st["impl"] != impl:
            raise ValueError(f"{ck} belongs to other configs; use another checkpoint path")
        with torch.no_grad():
            for l in range(b.L):
                for k, v in b.params[l].items():
                    v.copy_(st["params"][l][k])
                b.optimizers[l].load_state_dict(st["optimizers"][l])
        histories, best, start, t_all = st["histories"], st["best"], int(st["epoch"]) + 1, st["t_all"]
        for m, cm in zip(b.methods, st["class_means"]):
            m.class_means = cm.to(dev)
    prog = Progress(cfg.epochs, f"batched {S} seeds {cfg.method}/{cfg.loss_mode}", enabled=progress)
    prog.update(start)
    for epoch in range(start, cfg.epochs):
        _sync(dev)
        t0 = time.perf_counter()
        recs = b.train_epoch(epoch)
        _sync(dev)
        t_train = time.perf_counter() - t0
        t_all.append(t_train)
        b.sync_to_methods()
        for s, m in enumerate(b.methods):
            t1 = time.perf_counter()
            ev = m.evaluate(epoch)
            for k in ("val_loss", "val_car", "fisher"):
                if k in ev:
                    for r, v in zip(recs[s]["layers"], ev.pop(k)):
                        r[k] = v
            rec = {"epoch": epoch, "time_s": t_train / S, "eval_time_s": time.perf_counter() - t1, **recs[s], **ev}
            histories[s].append(rec)
            if _is_better(ev["metric"], best[s]["metric"], m.minimize):
                best[s] = {"epoch": epoch, "metric": ev["metric"], "state": m.model_state()}
        if ck is not None:
            _ckpt_save(ck, {"configs": cfg_dicts, "impl": impl, "epoch": epoch, "t_all": t_all,
                            "params": [{k: v.detach() for k, v in p.items()} for p in b.params],
                            "optimizers": [o.state_dict() for o in b.optimizers], "histories": histories,
                            "best": best, "class_means": [m.class_means for m in b.methods]})
        prog.update(epoch + 1)
    results = []
    for s, (m, c) in enumerate(zip(b.methods, cfgs)):
        if best[s]["epoch"] < 0:
            best[s]["epoch"] = len(histories[s]) - 1
        else:
            m.load_model_state(best[s]["state"])
        t_fin = time.perf_counter()
        fin = m.finish()
        times = [h["time_s"] for h in histories[s]]
        res = {"config": cfg_dicts[s], "seeds": c.resolved_seeds(),
               "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
               "dataset": dsets[s].summary(), "val_acc": fin.pop("val_acc"), "test_acc": fin.pop("test_acc"),
               "topk": c.topk, "best_epoch": best[s]["epoch"], "per_layer": histories[s][best[s]["epoch"]]["layers"],
               "epoch_time_s": sum(times) / len(times), "stage1_time_s": sum(times),
               "finish_time_s": time.perf_counter() - t_fin, **fin, "history": histories[s],
               "torch": torch.__version__,
               "batched": {"n_seeds": S, "impl": impl, "epoch_time_s_all_seeds": sum(t_all) / len(t_all)}}
        if out_dirs is not None:
            atomic_write_json(Path(out_dirs[s]) / "result.json", res)
        results.append(res)
    return results
