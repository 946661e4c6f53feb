"""The one (seed-stacked) model definition against independent implementations: patching, manual
attention, nn.MultiheadAttention, per-seed independence, both initialisations; shape errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from vit.models import Block, FFCLNet, Head, MLPEncoder, ViT, build_encoder, patchify, pool, seed_slice


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
    m = ViT((3, 32, 32), 32, 4, 3, 4, seeds=(0, 1))
    x = torch.randn(2, 5, 3, 32, 32)
    h = m(x)
    assert h.shape == (2, 5, 64, 32) and len(m.layers) == 3 and m.n_seeds == 2
    assert pool(h).shape == (2, 5, 32)
    torch.testing.assert_close(pool(h), h.mean(2))
    # the label token of the FF baseline adds one token
    assert m(x, torch.randn(2, 5, 1, 32)).shape == (2, 5, 65, 32)
    assert Head(32, 7)(pool(h)[0]).shape == (5, 7)


def test_mlp_and_ffcl_shapes():
    x = torch.randn(2, 4, 1, 28, 28)
    enc = MLPEncoder((1, 28, 28), 50, 3, seeds=(3, 4))
    assert enc(x).shape == (2, 4, 50) and len(enc.layers) == 3
    net = FFCLNet(784, 10)
    assert [l[0].out_features if isinstance(l, torch.nn.Sequential) else l.out_features
            for l in net.layers] == [64, 64, 10]
    assert net(x[0]).shape == (4, 10)


def _manual_block(blk: Block, s: int, x: torch.Tensor, heads: int) -> torch.Tensor:
    """Seed s of a stacked block, written out with loops over heads (independent of SDPA)."""
    e = x.shape[-1]
    ln = lambda z, m: torch.nn.functional.layer_norm(z, (e,)) * m.weight[s] + m.bias[s]  # noqa: E731
    lin = lambda z, m: z @ m.weight[s].T + m.bias[s]                                       # noqa: E731
    z = ln(x, blk.ln1)
    qkv = lin(z, blk.qkv)
    q, k, v = qkv[..., :e], qkv[..., e:2 * e], qkv[..., 2 * e:]
    outs = []
    for h in range(heads):
        sl = slice(h * e // heads, (h + 1) * e // heads)
        att = torch.softmax(q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(e // heads), dim=-1)
        outs.append(att @ v[..., sl])
    x1 = x + lin(torch.cat(outs, -1), blk.proj)
    return x1 + lin(torch.nn.functional.gelu(lin(ln(x1, blk.ln2), blk.fc1)), blk.fc2)


@pytest.mark.parametrize("init", ["reference", "small"])
def test_block_matches_manual_attention_per_seed(init):
    m = ViT((1, 8, 8), 16, 4, 2, 2, seeds=(5, 6, 7), init=init).double()
    blk = m.layers[1]
    with torch.no_grad():                     # non-trivial LayerNorm affine and biases per seed
        for p in blk.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 2, 5, 16, dtype=torch.float64)
    out = blk(x)
    for s in range(3):
        torch.testing.assert_close(out[s], _manual_block(blk, s, x[s], 4))
    assert blk.fc1.d_out == 32  # MLP ratio 2


def test_block_equals_torch_multihead_attention_block():
    """The reference's block (nn.LayerNorm, nn.MultiheadAttention, GELU MLP) with our weights."""
    m = ViT((1, 8, 8), 16, 4, 2, 2, seeds=(1, 2)).double()
    blk = m.layers[1]
    s = 1
    mha = nn.MultiheadAttention(16, 4, batch_first=True).double()
    ln1, ln2 = nn.LayerNorm(16).double(), nn.LayerNorm(16).double()
    fc1, fc2 = nn.Linear(16, 32).double(), nn.Linear(32, 16).double()
    with torch.no_grad():
        for p in blk.parameters():
            p.add_(0.1 * torch.randn_like(p))
        mha.in_proj_weight.copy_(blk.qkv.weight[s]); mha.in_proj_bias.copy_(blk.qkv.bias[s])
        mha.out_proj.weight.copy_(blk.proj.weight[s]); mha.out_proj.bias.copy_(blk.proj.bias[s])
        for dst, src in ((ln1, blk.ln1), (ln2, blk.ln2), (fc1, blk.fc1), (fc2, blk.fc2)):
            dst.weight.copy_(src.weight[s]); dst.bias.copy_(src.bias[s])
    x = torch.randn(2, 3, 5, 16, dtype=torch.float64)
    a = ln1(x[s])
    r = x[s] + mha(a, a, a, need_weights=False)[0]
    r = r + fc2(torch.nn.functional.gelu(fc1(ln2(r))))
    torch.testing.assert_close(blk(x)[s], r)


@pytest.mark.parametrize("model", ["vit", "mlp"])
def test_stacked_seeds_equal_single_seed_models(model):
    """Seed s of an S-seed model has the weights and outputs of a one-seed model with its seed."""
    kw = dict(embed_dim=16, heads=2, layers=3, patch=2)
    seeds = (11, 12, 13)
    big = build_encoder(model, (1, 8, 8), seeds=seeds, **kw).double()
    x = torch.randn(3, 4, 1, 8, 8, dtype=torch.float64)
    out = big(x)
    for s, seed in enumerate(seeds):
        one = build_encoder(model, (1, 8, 8), seeds=(seed,), **kw).double()
        for k, v in one.state_dict().items():
            assert torch.equal(v, seed_slice(big.state_dict(), s)[k]), (s, k)
        torch.testing.assert_close(one(x[s:s + 1])[0], out[s], rtol=1e-12, atol=1e-12)
    assert not torch.equal(big.layers[0].fc.weight[0] if model == "mlp" else big.layers[0].embed.weight[0],
                           big.layers[0].fc.weight[1] if model == "mlp" else big.layers[0].embed.weight[1])


def test_layer0_is_patch_relu_pos_block():
    m = ViT((1, 8, 8), 8, 2, 1, 2, seeds=(2,))
    x = torch.randn(1, 2, 1, 8, 8)
    l0 = m.layers[0]
    tok = patchify(x[0], 2)
    ref = l0.block((torch.relu(tok @ l0.embed.weight[0].T + l0.embed.bias[0]) + l0.pos[0]).unsqueeze(0))
    torch.testing.assert_close(m(x), ref)


def test_initialisations():
    e = 64
    ref = ViT((1, 32, 32), e, 4, 2, 2, seeds=(0,), init="reference")
    ours = ViT((1, 32, 32), e, 4, 2, 2, seeds=(0,), init="small")
    # reference: position embedding plain randn (std 1) as the ContrastiveFF code; ours 0.02
    assert 0.95 < float(ref.layers[0].pos.std()) < 1.05
    assert 0.019 < float(ours.layers[0].pos.std()) < 0.021
    for blk in (ref.layers[0].block, ref.layers[1]):
        # nn.MultiheadAttention: xavier-uniform in-projection over (3E, E), zero biases
        bound = math.sqrt(6.0 / (e + 3 * e))
        w = blk.qkv.weight
        assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.95 * bound
        assert float(blk.qkv.bias.abs().max()) == 0.0 and float(blk.proj.bias.abs().max()) == 0.0
        assert float(blk.proj.weight.abs().max()) <= 1 / math.sqrt(e)
    # ours: nn.Linear default everywhere (bias non-zero, weight bound 1/sqrt(fan_in))
    assert float(ours.layers[1].qkv.bias.abs().max()) > 0
    assert float(ours.layers[1].qkv.weight.abs().max()) <= 1 / math.sqrt(e)
    # LayerNorm affine starts at ones / zeros
    assert torch.equal(ref.layers[1].ln1.weight, torch.ones(1, e))


def test_shape_errors():
    with pytest.raises(ValueError, match="not divisible by the patch"):
        ViT((3, 30, 30), 32, 4, 2, 4)
    with pytest.raises(ValueError, match="divisible by heads"):
        ViT((3, 32, 32), 30, 4, 2, 4)
    with pytest.raises(ValueError, match="at least one seed"):
        ViT((3, 32, 32), 32, 4, 2, 4, seeds=())
    with pytest.raises(ValueError, match="unknown init"):
        ViT((3, 32, 32), 32, 4, 2, 4, init="xavier")
    m = ViT((3, 32, 32), 32, 4, 2, 4)
    with pytest.raises(ValueError, match="expected stacked images"):
        m(torch.randn(1, 2, 3, 28, 28))
    with pytest.raises(ValueError, match="expected stacked images"):
        m(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="not divisible by the patch"):
        patchify(torch.randn(1, 1, 10, 10), 3)
    with pytest.raises(ValueError, match="unknown model"):
        build_encoder("cnn", (1, 8, 8), embed_dim=8, heads=2, layers=1, patch=2)
