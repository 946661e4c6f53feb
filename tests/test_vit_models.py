"""Model shapes, patching and attention against independent implementations; shape errors."""
from __future__ import annotations

import math

import pytest
import torch

from vit.models import Block, FFCLNet, Head, MLPEncoder, ViT, build_encoder, patchify, pool


def test_patchify_matches_loop():
    x = torch.randn(2, 3, 8, 12)
    p = 4
    out = patchify(x, p)
    assert out.shape == (2, 6, 48)
    k = 0
    for i in range(0, 8, p):
        for j in range(0, 12, p):
            torch.testing.assert_close(out[:, k], x[:, :, i:i + p, j:j + p].reshape(2, -1), rtol=0, atol=0)
            k += 1


def test_vit_shapes_and_pool():
    torch.manual_seed(0)
    m = ViT((3, 32, 32), 32, 4, 3, 4)
    x = torch.randn(5, 3, 32, 32)
    h = m(x)
    assert h.shape == (5, 64, 32) and len(m.layers) == 3
    assert pool(h).shape == (5, 32)
    torch.testing.assert_close(pool(h), h.mean(1))
    # the label token of the FF baseline adds one token
    assert m(x, torch.randn(5, 1, 32)).shape == (5, 65, 32)
    assert Head(32, 7)(pool(h)).shape == (5, 7)


def test_mlp_and_ffcl_shapes():
    x = torch.randn(4, 1, 28, 28)
    enc = MLPEncoder((1, 28, 28), 50, 3)
    assert enc(x).shape == (4, 50) and len(enc.layers) == 3
    net = FFCLNet(784, 10)
    assert [l[0].out_features if isinstance(l, torch.nn.Sequential) else l.out_features
            for l in net.layers] == [64, 64, 10]
    assert net(x).shape == (4, 10)


def test_block_matches_manual_attention():
    torch.manual_seed(1)
    blk = Block(16, 4).double()
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    b, t, e, hd = 3, 5, 16, 4
    z = blk.ln1(x)
    qkv = z @ blk.qkv.weight.T + blk.qkv.bias
    q, k, v = qkv[..., :e], qkv[..., e:2 * e], qkv[..., 2 * e:]
    heads = []
    for h in range(hd):
        sl = slice(h * e // hd, (h + 1) * e // hd)
        att = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(e // hd), dim=-1)
        heads.append(att @ v[..., sl])
    x1 = x + blk.proj(torch.cat(heads, -1))
    ref = x1 + blk.fc2(torch.nn.functional.gelu(blk.fc1(blk.ln2(x1))))
    torch.testing.assert_close(blk(x), ref)
    assert blk.fc1.out_features == 32  # MLP ratio 2


def test_layer0_is_patch_relu_pos_block():
    torch.manual_seed(2)
    m = ViT((1, 8, 8), 8, 2, 1, 2)
    x = torch.randn(2, 1, 8, 8)
    l0 = m.layers[0]
    ref = l0.block(torch.relu(l0.embed(patchify(x, 2))) + l0.pos)
    torch.testing.assert_close(m(x), ref)


def test_shape_errors():
    with pytest.raises(ValueError, match="not divisible by the patch"):
        ViT((3, 30, 30), 32, 4, 2, 4)
    with pytest.raises(ValueError, match="divisible by heads"):
        ViT((3, 32, 32), 30, 4, 2, 4)
    m = ViT((3, 32, 32), 32, 4, 2, 4)
    with pytest.raises(ValueError, match="expected images of shape"):
        m(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="not divisible by the patch"):
        patchify(torch.randn(1, 1, 10, 10), 3)
    with pytest.raises(ValueError, match="unknown model"):
        build_encoder("cnn", (1, 8, 8), embed_dim=8, heads=2, layers=1, patch=2)
