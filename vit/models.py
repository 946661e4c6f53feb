"""The models of the CFF experiments, defined once, with a leading seed axis (nanoGPT style).

Every encoder holds the weights of S independent seeds stacked along a leading dimension
(``weight`` of shape (S, out, in), LayerNorm affine (S, E), ...) and maps a stacked input
(S, B, ...) to a stacked output; a single run is S = 1 through the same code.  The seeds share
no parameter, so the gradient of a sum of per-seed losses is each seed's own gradient, and an
elementwise optimiser (AdamW) over the stacked tensors is S independent optimisers.

ViT[E H L] (CFF Sec. 3.4)
    layer 0   = patch projection (Linear on flattened p×p patches) -> ReLU -> + learnable
                position embedding -> first pre-LN encoder block;
    layer l>0 = one pre-LN encoder block.
    Block: ``x = x + MSA(LN(x)); x = x + MLP(LN(x))``, MLP ratio 2 with GELU, no dropout, no
    class token.  Linear maps and LayerNorm run each seed through the one-seed kernels
    (``F.linear``, fused ``F.layer_norm``), so a seed's arithmetic is the same whether it trains
    alone or stacked with others (a batched ``baddbmm`` rounds differently, and a run carries the
    difference to another selected epoch: :mod:`vit.layout_floor`); attention is ONE
    ``F.scaled_dot_product_attention`` call over all S·B sequences (each sequence on its own; no
    ``vmap``: vmap through SDPA's backward fails on CUDA).  The CFF loss and the head see the token mean (:func:`pool`);
    the next layer gets the full token sequence.  Layer 0 optionally takes extra tokens
    (already embedded, (S, B, k, E)) appended after the position embedding: the FF label token.
MLP[E L]
    layer 0 = flatten -> Linear(C·H·W, E) -> ReLU; layer l>0 = Linear(E, E) -> ReLU.
Head
    LayerNorm(E) -> Linear(E, num_classes) on pooled features of one seed (stage 2, BP).
FFCLNet
    the Improved-FFCL MLP ``in -> 64 -> 64 -> classes``, ReLU after the hidden layers.

Initialisation (``init``), drawn per seed from its own ``torch.Generator`` seeded with that
seed's init seed, in a fixed parameter order -- so seed s gets the same weights whether it is
trained alone or with others:

``reference``  as the public ContrastiveFF code builds its modules: ``nn.Linear`` default
               (weight and bias uniform in ±1/sqrt(fan_in)); the attention's in-projection
               (q, k, v stacked, (3E, E)) xavier-uniform with zero bias and its out-projection
               with ``nn.Linear``'s weight init and zero bias, as ``nn.MultiheadAttention`` does;
               position embedding plain ``randn`` (std 1); LayerNorm ones/zeros.
``small``      this package's alternative (``TrainConfig.init``; a named departure): every Linear (qkv
               and out-projection included) with the ``nn.Linear`` default, position embedding
               ``0.02·randn``.

Every encoder exposes ``.layers`` (an ``nn.ModuleList`` trained layer by layer), ``.n_seeds``
and ``.embed_dim``; ``encoder(x)`` runs all layers.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["patchify", "pool", "SLinear", "SLayerNorm", "Block", "PatchLayer", "ViT", "MLPEncoder", "Head",
           "FFCLNet", "build_encoder", "MODELS", "INITS", "seed_slice"]

MODELS: tuple[str, ...] = ("vit", "mlp")
INITS: tuple[str, ...] = ("reference", "small")


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, (H/p)·(W/p), C·p·p), patches in row-major order."""
    if x.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W); got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {patch}")
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


def pool(h: torch.Tensor) -> torch.Tensor:
    """Token mean of stacked ViT outputs (S, B, T, E) -> (S, B, E); stacked MLP outputs
    (S, B, E) pass through."""
    return h.mean(dim=-2) if h.dim() == 4 else h


def _uniform(shape: Sequence[int], bound: float, g: torch.Generator) -> torch.Tensor:
    return (torch.rand(tuple(shape), generator=g, dtype=torch.float64) * 2.0 - 1.0) * bound


class SLinear(nn.Module):
    """S independent Linear maps: x (S, ..., in) -> (S, ..., out), each seed by the one-seed ``F.linear``."""

    def __init__(self, n_seeds: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.weight = nn.Parameter(torch.empty(n_seeds, d_out, d_in))
        self.bias = nn.Parameter(torch.empty(n_seeds, d_out))

    @torch.no_grad()
    def init_seed(self, s: int, g: torch.Generator, kind: str = "linear") -> None:
        """``linear``: nn.Linear's default (kaiming-uniform a=√5 = U(±1/√fan_in), bias the same);
        ``xavier_zero``: xavier-uniform weight, zero bias; ``linear_zero``: Linear weight, zero bias."""
        b = 1.0 / math.sqrt(self.d_in)
        if kind == "xavier_zero":
            self.weight[s].copy_(_uniform((self.d_out, self.d_in), math.sqrt(6.0 / (self.d_in + self.d_out)), g))
        else:
            self.weight[s].copy_(_uniform((self.d_out, self.d_in), b, g))
        if kind == "linear":
            self.bias[s].copy_(_uniform((self.d_out,), b, g))
        else:
            self.bias[s].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:   # one seed: one addmm on views (cheap backward)
            return F.linear(x, self.weight.squeeze(0), self.bias.squeeze(0))
        # S seeds: seed s through exactly the one-seed kernel, so its arithmetic (reduction order)
        # does not depend on the layout; one baddbmm rounds differently and AdamW carries it on
        return torch.stack([F.linear(x[s], self.weight[s], self.bias[s]) for s in range(x.shape[0])])


class SLayerNorm(nn.Module):
    """LayerNorm over the last dim with a per-seed affine: x (S, ..., E), weight/bias (S, E)."""

    def __init__(self, n_seeds: int, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_seeds, dim))
        self.bias = nn.Parameter(torch.zeros(n_seeds, dim))

    @torch.no_grad()
    def init_seed(self, s: int, g: torch.Generator, kind: str = "") -> None:
        self.weight[s].fill_(1.0)
        self.bias[s].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:   # one seed: the fused affine LayerNorm kernel
            return F.layer_norm(x, x.shape[-1:], self.weight.squeeze(0), self.bias.squeeze(0), self.eps)
        # S seeds: the same fused kernel per seed (layout-independent arithmetic, as SLinear)
        return torch.stack([F.layer_norm(x[s], x.shape[-1:], self.weight[s], self.bias[s], self.eps)
                            for s in range(x.shape[0])])


class Block(nn.Module):
    """Pre-LN transformer encoder block (MSA + MLP, residuals), MLP ratio 2, no dropout, S seeds."""

    def __init__(self, n_seeds: int, dim: int, heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.ln1 = SLayerNorm(n_seeds, dim)
        self.qkv = SLinear(n_seeds, dim, 3 * dim)     # rows: q, k, v (nn.MultiheadAttention's in_proj)
        self.proj = SLinear(n_seeds, dim, dim)
        self.ln2 = SLayerNorm(n_seeds, dim)
        self.fc1 = SLinear(n_seeds, dim, mlp_ratio * dim)
        self.fc2 = SLinear(n_seeds, mlp_ratio * dim, dim)

    def init_seed(self, s: int, g: torch.Generator, init: str) -> None:
        ref = init == "reference"
        self.ln1.init_seed(s, g)
        self.qkv.init_seed(s, g, "xavier_zero" if ref else "linear")
        self.proj.init_seed(s, g, "linear_zero" if ref else "linear")
        self.ln2.init_seed(s, g)
        self.fc1.init_seed(s, g)
        self.fc2.init_seed(s, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, b, t, e = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(s * b, t, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)                 # (S·B, H, T, e/H): one call
        x = x + self.proj(a.transpose(1, 2).reshape(s, b, t, e))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class PatchLayer(nn.Module):
    """CFF layer 0: patch projection + ReLU + position embedding + first encoder block."""

    def __init__(self, n_seeds: int, image_shape: tuple[int, int, int], patch: int, dim: int, heads: int) -> None:
        super().__init__()
        c, h, w = image_shape
        if patch < 1 or h % patch or w % patch:
            raise ValueError(f"image size {h}x{w} is not divisible by the patch size {patch}")
        self.patch = patch
        self.image_shape = (c, h, w)
        self.n_tokens = (h // patch) * (w // patch)
        self.embed = SLinear(n_seeds, c * patch * patch, dim)
        self.pos = nn.Parameter(torch.zeros(n_seeds, 1, self.n_tokens, dim))
        self.block = Block(n_seeds, dim, heads)

    @torch.no_grad()
    def init_seed(self, s: int, g: torch.Generator, init: str) -> None:
        self.embed.init_seed(s, g)
        std = 1.0 if init == "reference" else 0.02
        self.pos[s].copy_(torch.randn(self.pos.shape[1:], generator=g, dtype=torch.float64) * std)
        self.block.init_seed(s, g, init)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 5 or tuple(x.shape[2:]) != self.image_shape:
            raise ValueError(f"expected stacked images (S, B, *{self.image_shape}), got {tuple(x.shape)}")
        s, b = x.shape[:2]
        tok = patchify(x.reshape(s * b, *self.image_shape), self.patch).view(s, b, self.n_tokens, -1)
        t = torch.add(F.relu(self.embed(tok)), self.pos)
        if extra is not None:
            t = torch.cat([t, extra.to(t.dtype)], dim=2)
        return self.block(t)


def _init_all(model: nn.Module, seeds: Sequence[int], init: str) -> None:
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose from {', '.join(INITS)}")
    for s, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(int(seed) % (2 ** 63))
        for layer in model.layers:
            layer.init_seed(s, g, init)


class ViT(nn.Module):
    """ViT[E H L] encoder for CFF (no class token, no head), S seeds stacked."""

    def __init__(self, image_shape: tuple[int, int, int], embed_dim: int, heads: int, layers: int,
                 patch: int, seeds: Sequence[int] = (0,), init: str = "reference") -> None:
        super().__init__()
        if layers < 1 or embed_dim < 1 or heads < 1:
            raise ValueError(f"ViT needs layers, embed_dim, heads >= 1; got {layers}, {embed_dim}, {heads}")
        if len(seeds) < 1:
            raise ValueError("ViT needs at least one seed (S >= 1)")
        n = len(seeds)
        self.n_seeds, self.embed_dim = n, embed_dim
        self.layers = nn.ModuleList([PatchLayer(n, image_shape, patch, embed_dim, heads)]
                                    + [Block(n, embed_dim, heads) for _ in range(layers - 1)])
        _init_all(self, seeds, init)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        h = self.layers[0](x, extra)
        for layer in self.layers[1:]:
            h = layer(h)
        return h


class _MLPLayer(nn.Module):
    def __init__(self, n_seeds: int, d_in: int, d_out: int, flatten: bool) -> None:
        super().__init__()
        self.flatten = flatten
        self.fc = SLinear(n_seeds, d_in, d_out)

    def init_seed(self, s: int, g: torch.Generator, init: str) -> None:
        self.fc.init_seed(s, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(x.flatten(2) if self.flatten else x))


class MLPEncoder(nn.Module):
    """MLP[E L]: flatten, then L × (Linear + ReLU), S seeds stacked: (S, B, C, H, W) -> (S, B, E)."""

    def __init__(self, image_shape: tuple[int, int, int], embed_dim: int, layers: int,
                 seeds: Sequence[int] = (0,), init: str = "reference") -> None:
        super().__init__()
        if layers < 1 or embed_dim < 1:
            raise ValueError(f"MLP needs layers, embed_dim >= 1; got {layers}, {embed_dim}")
        if len(seeds) < 1:
            raise ValueError("MLP needs at least one seed (S >= 1)")
        c, h, w = image_shape
        n = len(seeds)
        self.n_seeds, self.embed_dim = n, embed_dim
        self.layers = nn.ModuleList([_MLPLayer(n, c * h * w, embed_dim, True)]
                                    + [_MLPLayer(n, embed_dim, embed_dim, False) for _ in range(layers - 1)])
        _init_all(self, seeds, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def seed_slice(state: dict[str, torch.Tensor], s: int) -> dict[str, torch.Tensor]:
    """Seed ``s``'s weights of a stacked state dict, kept stacked with S = 1 (loadable into a
    one-seed encoder of the same shape)."""
    return {k: v[s:s + 1].detach().clone() for k, v in state.items()}


class Head(nn.Module):
    """LayerNorm + Linear classifier on pooled features (one seed)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(self.ln(f))


class FFCLNet(nn.Module):
    """Improved-FFCL MLP: in -> 64 -> 64 -> classes; ``layers[-1]`` returns logits."""

    def __init__(self, in_dim: int, num_classes: int, hidden: tuple[int, ...] = (64, 64)) -> None:
        super().__init__()
        dims = (in_dim, *hidden)
        mods: list[nn.Module] = [nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(dims[:-1], dims[1:])]
        mods.append(nn.Linear(dims[-1], num_classes))
        self.layers = nn.ModuleList(mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers:
            x = layer(x)
        return x


def build_encoder(model: str, image_shape: tuple[int, int, int], *, embed_dim: int, heads: int,
                  layers: int, patch: int, seeds: Sequence[int] = (0,), init: str = "reference") -> nn.Module:
    """ViT[embed_dim heads layers] with ``patch`` or MLP[embed_dim layers], one stacked slot per
    init seed in ``seeds``."""
    if model == "vit":
        return ViT(image_shape, embed_dim, heads, layers, patch, seeds, init)
    if model == "mlp":
        return MLPEncoder(image_shape, embed_dim, layers, seeds, init)
    raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
