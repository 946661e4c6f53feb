"""Unit and property tests of vit.losses (supcon_loss, margin_schedule, check_margin).

The reference is an independent direct implementation written here from the formulas in
shared/notes/cff-and-margin.md: explicit Python loops over anchors, float64 scalars, its
gradient by autograd through those scalar operations.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vit.losses import check_margin, margin_schedule, supcon_loss

F64 = torch.float64


def direct_loss(x: torch.Tensor, labels: list[int], n_views: int, m: float, tau: float,
                mode: str) -> torch.Tensor:
    """Per-anchor loop of the notes' formulas; mean over anchors that have a positive."""
    n = x.shape[0]
    z = [x[i] / torch.sqrt(torch.sum(x[i] * x[i])) for i in range(n)]
    lab = list(labels) * n_views
    one = torch.tensor(1.0, dtype=F64)
    total, count = None, 0
    for i in range(n):
        P = [p for p in range(n) if p != i and lab[p] == lab[i]]
        if not P:
            continue
        A = [a for a in range(n) if a != i]

        def logit(a: int) -> torch.Tensor:
            s = torch.sum(z[i] * z[a])
            if mode == "clamp" and lab[a] == lab[i]:
                s = torch.minimum(s + m, one)          # Q(s) = min(s + m, 1), before / tau
            return s / tau

        log_den = torch.log(sum(torch.exp(logit(a)) for a in A))
        li = -sum(logit(p) - log_den for p in P) / len(P)
        if mode == "subtract":
            li = li + m                                 # -(1/|P|) sum_p (log_prob - m)
        total = li if total is None else total + li
        count += 1
    return total / count if count else (x * 0.0).sum()


def _sims(x: torch.Tensor) -> torch.Tensor:
    z = x / x.norm(dim=1, keepdim=True)
    return z @ z.T


def _pos_mask(labels: list[int], n_views: int) -> np.ndarray:
    lab = np.tile(np.asarray(labels), n_views)
    pos = lab[:, None] == lab[None, :]
    np.fill_diagonal(pos, False)
    return pos


@st.composite
def batches(draw):
    n_views = draw(st.integers(1, 3))
    B = draw(st.integers(1, 5))
    D = draw(st.integers(2, 6))
    labels = draw(st.lists(st.integers(0, 3), min_size=B, max_size=B))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_views * B, D)) * 10.0 ** rng.uniform(-1, 1, size=(n_views * B, 1))
    m = draw(st.floats(0.0, 2.0))
    tau = draw(st.floats(0.05, 1.0))
    mode = draw(st.sampled_from(["none", "clamp", "subtract"]))
    return x, labels, n_views, m, tau, mode


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_supcon_matches_direct_implementation(batch):
    x_np, labels, n_views, m, tau, mode = batch
    x1 = torch.tensor(x_np, requires_grad=True)
    x2 = torch.tensor(x_np, requires_grad=True)
    pos = _pos_mask(labels, n_views)
    s = _sims(x1.detach()).numpy()
    # stay off the clamp boundary (conventions differ there: torch.clamp 1, torch.minimum 1/2)
    assume(not pos.any() or np.min(np.abs(s[pos] + m - 1.0)) > 1e-7)
    lab_t = torch.tensor(labels)
    got = supcon_loss(x1, lab_t, margin=m, temperature=tau, mode=mode)
    ref = direct_loss(x2, labels, n_views, m, tau, mode)
    got.backward()
    ref.backward()
    assert got.dtype == F64
    assert math.isclose(got.item(), ref.item(), rel_tol=1e-11, abs_tol=1e-11 / tau)
    g_term = float(torch.max(1.0 / (tau * x1.detach().norm(dim=1))))
    assert torch.all(torch.isfinite(x1.grad))
    assert torch.max(torch.abs(x1.grad - x2.grad)).item() <= 1e-11 * g_term


@settings(max_examples=100, deadline=None)
@given(batches())
def test_subtract_gradient_equals_none(batch):
    x_np, labels, n_views, m, tau, _ = batch
    grads, vals = [], []
    for mode in ("none", "subtract"):
        x = torch.tensor(x_np, requires_grad=True)
        loss = supcon_loss(x, torch.tensor(labels), margin=m, temperature=tau, mode=mode)
        loss.backward()
        grads.append(x.grad)
        vals.append(loss.item())
    assert torch.equal(grads[0], grads[1])
    has_anchor = _pos_mask(labels, n_views).any()
    assert math.isclose(vals[1] - vals[0], m if has_anchor else 0.0, abs_tol=1e-12)


def _angle_case(m: float, cos_target: float, mode: str = "clamp") -> torch.Tensor:
    """Rows: e1 (anchor), cosθ e1 + sinθ e3 (its positive), e2 (negative); dL/dθ."""
    theta = torch.tensor(math.acos(cos_target), dtype=F64, requires_grad=True)
    e = torch.eye(4, dtype=F64)
    x = torch.stack([e[0], torch.cos(theta) * e[0] + torch.sin(theta) * e[2], e[1]])
    loss = supcon_loss(x, torch.tensor([0, 0, 1]), margin=m, temperature=0.15, mode=mode)
    (g,) = torch.autograd.grad(loss, theta)
    return g


@pytest.mark.parametrize("m", [0.1, 0.4, 1.0, 1.7])
@pytest.mark.parametrize("delta", [1e-9, 1e-6, 1e-2])
def test_clamp_gradient_zero_on_saturated_pair_both_sides(m, delta):
    # s + m = 1 + delta: clamp active, the pair's gradient is exactly zero
    assert _angle_case(m, 1.0 - m + delta).item() == 0.0
    # s + m = 1 - delta: clamp inactive, gradient equals the no-margin one at the shifted logit
    below = _angle_case(m, 1.0 - m - delta).item()
    assert below != 0.0
    # closed form below the boundary: the no-margin gradient at the shifted logit (s + m)/tau;
    # anchors 0 and 1 each see this pair and the negative (s = 0); anchor 2 has no positive
    s = 1.0 - m - delta
    tau, sin = 0.15, math.sqrt(1.0 - s * s)
    ell = (s + m) / tau
    dl_ds = -(1.0 / tau) + math.exp(ell) / (tau * (math.exp(ell) + 1.0))   # mean of 2 equal anchors
    assert math.isclose(below, dl_ds * (-sin), rel_tol=1e-9)


def test_torch_clamp_boundary_convention():
    """Documented convention: torch.clamp(max=1) passes gradient 1 exactly on the boundary."""
    s = torch.tensor(0.6, dtype=F64, requires_grad=True)
    torch.clamp(s + 0.4, max=1.0).backward()
    assert s.grad.item() == 1.0


def test_anchor_without_positive_excluded_never_nan():
    rng = np.random.default_rng(3)
    x_np = rng.normal(size=(4, 5))
    labels = [0, 0, 1, 2]                    # one view: anchors 2 and 3 have no positive
    for mode in ("none", "clamp", "subtract"):
        x1 = torch.tensor(x_np, requires_grad=True)
        x2 = torch.tensor(x_np, requires_grad=True)
        loss, stats = supcon_loss(x1, torch.tensor(labels), margin=0.3, mode=mode, diagnostics=True)
        ref = direct_loss(x2, labels, 1, 0.3, 0.15, mode)
        loss.backward()
        ref.backward()
        assert math.isclose(loss.item(), ref.item(), rel_tol=1e-12)
        assert torch.all(torch.isfinite(x1.grad))
        assert torch.allclose(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)
        assert int(stats.n_no_positive) == 2
        assert int(stats.n_pos_pairs) == 2


@pytest.mark.parametrize("shape,labels", [((5, 3), [0, 1, 2, 3, 4]), ((1, 3), [7])])
@pytest.mark.parametrize("mode", ["none", "clamp", "subtract"])
def test_all_singleton_batch_zero_loss_zero_grad(shape, labels, mode):
    x = torch.randn(*shape, dtype=F64, requires_grad=True)
    loss = supcon_loss(x, torch.tensor(labels), margin=0.5, mode=mode)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("mode", ["none", "clamp", "subtract"])
def test_dtypes(mode):
    gen = torch.Generator().manual_seed(0)
    x64 = torch.randn(8, 6, dtype=F64, generator=gen)
    lab = torch.tensor([0, 1, 0, 2])
    ref = supcon_loss(x64, lab, margin=0.4, mode=mode)
    assert ref.dtype == F64
    l32 = supcon_loss(x64.float(), lab, margin=0.4, mode=mode)
    assert l32.dtype == torch.float32
    assert math.isclose(l32.item(), ref.item(), rel_tol=1e-5)
    xb = x64.to(torch.bfloat16).requires_grad_(True)
    lb = supcon_loss(xb, lab, margin=0.4, mode=mode)
    assert lb.dtype == torch.float32        # bf16 is computed in float32
    same_inputs = supcon_loss(xb.detach().double(), lab, margin=0.4, mode=mode)
    assert math.isclose(lb.item(), same_inputs.item(), rel_tol=1e-5)
    lb.backward()
    assert xb.grad.dtype == torch.bfloat16 and torch.all(torch.isfinite(xb.grad.float()))


def test_list_of_views_equals_stacked():
    gen = torch.Generator().manual_seed(1)
    v1, v2 = torch.randn(5, 4, dtype=F64, generator=gen), torch.randn(5, 4, dtype=F64, generator=gen)
    lab = torch.tensor([0, 1, 1, 2, 0])
    a1, a2 = v1.clone().requires_grad_(True), v2.clone().requires_grad_(True)
    b = torch.cat([v1, v2]).requires_grad_(True)
    la = supcon_loss([a1, a2], lab, margin=0.3, mode="clamp")
    lb = supcon_loss(b, lab, margin=0.3, mode="clamp")
    la.backward()
    lb.backward()
    assert la.item() == lb.item()
    assert torch.equal(torch.cat([a1.grad, a2.grad]), b.grad)


def test_diagnostics_clamp_rate_independent():
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.normal(size=(12, 3)))
    labels = [0, 1, 0, 1, 2, 0]
    _, st_ = supcon_loss(x, torch.tensor(labels), margin=0.8, mode="clamp", diagnostics=True)
    s = _sims(x).numpy()
    pos = _pos_mask(labels, 2)
    neg = ~(pos | np.eye(12, dtype=bool))
    f = st_.as_floats()
    assert math.isclose(f["clamp_rate"], float(np.mean(s[pos] > 0.2)), rel_tol=1e-12)
    assert math.isclose(f["mean_pos_sim"], float(np.mean(s[pos])), rel_tol=1e-12)
    assert math.isclose(f["mean_neg_sim"], float(np.mean(s[neg])), rel_tol=1e-12)
    assert f["n_pos_pairs"] == pos.sum() and f["n_no_positive"] == 0


@pytest.mark.parametrize("features,labels,match", [
    (torch.randn(2, 3, 4), torch.tensor([0, 1]), "shape"),
    (torch.randn(4), torch.tensor([0, 1]), "shape"),
    (torch.randn(4, 3), torch.tensor([[0, 1]]), "labels must be a 1-D"),
    (torch.randn(5, 3), torch.tensor([0, 1]), "label count mismatch"),
    ([torch.randn(4, 3), torch.randn(4, 3)], torch.tensor([0, 1]), "label count mismatch"),
    ([torch.randn(2, 3), torch.randn(3, 3)], torch.tensor([0, 1]), "view 1 has shape"),
    ([torch.randn(2, 3), torch.randn(2)], torch.tensor([0, 1]), "view 1 must be a 2-D"),
    ([], torch.tensor([0, 1]), "empty list"),
    (torch.randn(0, 3), torch.tensor([], dtype=torch.long), "empty label"),
    (torch.randn(2, 0), torch.tensor([0, 1]), "empty tensor"),
    (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), torch.tensor([0, 1]), "non-finite"),
    (torch.tensor([[1.0, float("inf")], [0.0, 1.0]]), torch.tensor([0, 1]), "non-finite"),
])
def test_value_errors_inputs(features, labels, match):
    with pytest.raises(ValueError, match=match):
        supcon_loss(features, labels)


@pytest.mark.parametrize("kwargs,match", [
    ({"margin": -0.1}, "outside"), ({"margin": 2.1}, "outside"), ({"margin": float("nan")}, "outside"),
    ({"temperature": 0.0}, "tau"), ({"temperature": -1.0}, "tau"),
    ({"temperature": float("inf")}, "tau"), ({"temperature": float("nan")}, "tau"),
    ({"mode": "margin"}, "mode"),
])
def test_value_errors_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        supcon_loss(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), **kwargs)


def test_margin_bounds_inclusive():
    x = torch.randn(4, 3, dtype=F64)
    for m in (0.0, 2.0):
        assert torch.isfinite(supcon_loss(x, torch.tensor([0, 1, 0, 1]), margin=m, mode="clamp"))
    assert check_margin(2) == 2.0


def test_margin_schedule():
    got = margin_schedule(0.4, 0.1, 5)
    assert np.allclose(got, np.linspace(0.4, 0.1, 5), rtol=0, atol=1e-15)
    assert margin_schedule(0.4, 0.1, 1) == [0.4]
    for bad in ((0.4, 0.1, 0), (2.5, 0.1, 3), (0.4, -0.1, 3)):
        with pytest.raises(ValueError):
            margin_schedule(*bad)
