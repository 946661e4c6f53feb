"""Models of the CFF experiments, each fully visible in this one file (nanoGPT style).

ViT[E H L] (CFF Sec. 3.4, reference defaults)
    layer 0   = patch projection (Linear on flattened p×p patches) -> ReLU -> + learnable
                position embedding -> first pre-LN encoder block;
    layer l>0 = one pre-LN encoder block.
    Block: ``x = x + MSA(LN(x)); x = x + MLP(LN(x))``, MLP ratio 2 with GELU, no dropout, no
    class token; attention by ``F.scaled_dot_product_attention``.  The CFF loss and the head
    see the token mean (:func:`pool`); the next layer gets the full token sequence.
    Layer 0 optionally takes extra tokens (already embedded, shape (B, k, E)) appended after the
    position embedding: the FF baseline's label token.
MLP[E L]
    layer 0 = flatten -> Linear(C·H·W, E) -> ReLU; layer l>0 = Linear(E, E) -> ReLU.
Head
    LayerNorm(E) -> Linear(E, num_classes) on pooled features (stage 2, and the BP model).
FFCLNet
    the Improved-FFCL MLP ``in -> 64 -> 64 -> classes`` (784-64-64-10 on MNIST-size inputs),
    ReLU after the hidden layers, raw logits at the output.

Every encoder exposes ``.layers`` (an ``nn.ModuleList`` trained layer by layer) and
``.embed_dim``; ``encoder(x)`` runs all layers.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["patchify", "pool", "Block", "PatchLayer", "ViT", "MLPEncoder", "Head", "FFCLNet",
           "build_encoder", "MODELS"]

MODELS: tuple[str, ...] = ("vit", "mlp")


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/p)·(W/p), C·p·p), patches in row-major order."""
    if x.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W); got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {patch}")
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


def pool(h: torch.Tensor) -> torch.Tensor:
    """Token mean of (B, T, E) outputs; (B, E) outputs (MLP) pass through."""
    return h.mean(dim=1) if h.dim() == 3 else h


class Block(nn.Module):
    """Pre-LN transformer encoder block (MSA + MLP, residuals), MLP ratio 2, no dropout."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, e = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)                 # (B, H, T, e/H)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, e))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class PatchLayer(nn.Module):
    """CFF layer 0: patch projection + ReLU + position embedding + first encoder block."""

    def __init__(self, image_shape: tuple[int, int, int], patch: int, dim: int, heads: int) -> None:
        super().__init__()
        c, h, w = image_shape
        if patch < 1 or h % patch or w % patch:
            raise ValueError(f"image size {h}x{w} is not divisible by the patch size {patch}")
        self.patch = patch
        self.image_shape = (c, h, w)
        self.n_tokens = (h // patch) * (w // patch)
        self.embed = nn.Linear(c * patch * patch, dim)
        self.pos = nn.Parameter(torch.randn(1, self.n_tokens, dim) * 0.02)
        self.block = Block(dim, heads)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"expected images of shape {self.image_shape}, got {tuple(x.shape[1:])}")
        t = F.relu(self.embed(patchify(x, self.patch))) + self.pos
        if extra is not None:
            t = torch.cat([t, extra.to(t.dtype)], dim=1)
        return self.block(t)


class ViT(nn.Module):
    """ViT[E H L] encoder for CFF (no class token, no head)."""

    def __init__(self, image_shape: tuple[int, int, int], embed_dim: int, heads: int, layers: int,
                 patch: int) -> None:
        super().__init__()
        if layers < 1 or embed_dim < 1 or heads < 1:
            raise ValueError(f"ViT needs layers, embed_dim, heads >= 1; got {layers}, {embed_dim}, {heads}")
        self.embed_dim = embed_dim
        self.layers = nn.ModuleList([PatchLayer(image_shape, patch, embed_dim, heads)]
                                    + [Block(embed_dim, heads) for _ in range(layers - 1)])

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        h = self.layers[0](x, extra)
        for layer in self.layers[1:]:
            h = layer(h)
        return h


class MLPEncoder(nn.Module):
    """MLP[E L]: flatten, then L × (Linear + ReLU)."""

    def __init__(self, image_shape: tuple[int, int, int], embed_dim: int, layers: int) -> None:
        super().__init__()
        if layers < 1 or embed_dim < 1:
            raise ValueError(f"MLP needs layers, embed_dim >= 1; got {layers}, {embed_dim}")
        c, h, w = image_shape
        self.embed_dim = embed_dim
        first = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, embed_dim), nn.ReLU())
        self.layers = nn.ModuleList([first] + [nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU())
                                               for _ in range(layers - 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class Head(nn.Module):
    """LayerNorm + Linear classifier on pooled features."""

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
                  layers: int, patch: int) -> nn.Module:
    """ViT[embed_dim heads layers] with ``patch`` or MLP[embed_dim layers]."""
    if model == "vit":
        return ViT(image_shape, embed_dim, heads, layers, patch)
    if model == "mlp":
        return MLPEncoder(image_shape, embed_dim, layers)
    raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
