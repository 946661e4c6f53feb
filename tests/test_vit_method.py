"""The pieces the run loop is built from: the epoch-statistics accumulator, the one precision
setter, the one TrainConfig text parser and the presets of options not given."""
from __future__ import annotations

import pytest
import torch

from cffdyn.errors import make_parser
from vit.config import QUICK, QUICK_DIGITS
from vit.config_args import add_train_config_args, parse_field_value, train_config_from_args
from vit.device import use_precision
from vit.method import EpochStats, NonFiniteLoss


def _rows(g, S):
    return torch.rand(S, 5, generator=g)


def test_epoch_stats_merge_equals_one_accumulator():
    """Steps recorded in two accumulators and merged give the sums, first bad steps and class
    sums of one accumulator that saw every step (the CUDA-graph replay path vs the eager one)."""
    g = torch.Generator().manual_seed(0)
    S, L, C, E = 3, 2, 4, 5
    one, a, b = (EpochStats(S, L, torch.device("cpu"), torch.float64, (C, E)) for _ in range(3))
    seen = []
    for step in range(6):
        part = a if step % 2 else b
        for l in range(L):
            row = _rows(g, S).double()
            loss = torch.tensor([1.0, float("nan") if (step, l) in ((3, 1), (4, 1)) else 1.0,
                                 float("inf") if step == 2 and l == 0 else 1.0])
            for acc in (one, part):
                acc.add(l, row, 8)
                acc.mark(l, loss, step)
        y = torch.randint(0, C, (S, 8), generator=g)
        f = torch.randn(S, 8, E, generator=g, dtype=torch.float64)
        seen.append((y, f))
        for l in range(L):
            one.add_classes(l, y, f + l)
            part.add_classes(l, y, f + l)
    a.merge(b)
    torch.testing.assert_close(a.sums, one.sums)
    torch.testing.assert_close(a.weights, one.weights)
    assert torch.equal(a.bad, one.bad)
    assert one.bad.tolist() == [[-1, -1], [-1, 3], [2, -1]]      # the first bad step, not a later one
    torch.testing.assert_close(a.class_means(), one.class_means())
    # class means are the plain per-class mean of each layer's features added
    ys = torch.cat([y for y, _ in seen], dim=1)
    fs = torch.cat([f for _, f in seen], dim=1)
    for s_ in range(S):
        for l in range(L):
            for c in range(C):
                sel = fs[s_][ys[s_] == c] + l
                want = sel.mean(0) if len(sel) else torch.zeros(E, dtype=torch.float64)
                torch.testing.assert_close(one.class_means()[s_, l, c].double(), want, rtol=1e-6, atol=1e-6)
    recs = one.records([0.4, 0.1])
    assert recs[0][1]["loss"] == pytest.approx(float(one.sums[0, 1, 0]) / (6 * 8))
    with pytest.raises(NonFiniteLoss, match=r"layer 1, epoch 7, step 3"):
        one.check(7, [QUICK.replace(seed=s) for s in range(S)])


def test_reset_keeps_the_same_tensors():
    st = EpochStats(1, 2, torch.device("cpu"), classes=(3, 4))
    ids = [id(t) for t in (st.sums, st.weights, st.bad, st.csum, st.ccnt)]
    st.add(0, torch.ones(1, 5), 4)
    st.mark(1, torch.tensor([float("nan")]), 4)
    st.reset()
    assert [id(t) for t in (st.sums, st.weights, st.bad, st.csum, st.ccnt)] == ids
    assert st.sums.abs().sum() == 0 and st.weights.abs().sum() == 0 and (st.bad == -1).all()


def test_epoch_means_weight_steps_by_batch_size_the_partial_batch_by_its_own():
    """Closed form: steps of 64, 64 and a last batch of 20 images with losses 1, 2, 4 give the
    reference's logged loss sum(loss_i b_i) / sum(b_i) = 272/148 (the unweighted step mean would be
    7/3); CAR and the similarities are weighted the same way, the gradient norm (one per optimiser
    step) is the plain step mean."""
    st = EpochStats(2, 1, torch.device("cpu"), torch.float64)
    steps = [(64, [1.0, 0.1, 3.0, 0.5, -0.2]), (64, [2.0, 0.3, 5.0, 0.6, -0.1]), (20, [4.0, 0.9, 1.0, 0.9, 0.4])]
    for b, row in steps:
        r = torch.tensor(row, dtype=torch.float64)
        st.add(0, torch.stack([r, 2 * r]), b)              # seed 1: every statistic doubled
    rec = st.records([0.4])
    assert rec[0][0]["loss"] == pytest.approx(272 / 148, rel=1e-12)
    assert rec[0][0]["car"] == pytest.approx((64 * 0.1 + 64 * 0.3 + 20 * 0.9) / 148, rel=1e-12)
    assert rec[0][0]["pos_sim"] == pytest.approx((64 * 0.5 + 64 * 0.6 + 20 * 0.9) / 148, rel=1e-12)
    assert rec[0][0]["neg_sim"] == pytest.approx((64 * -0.2 + 64 * -0.1 + 20 * 0.4) / 148, rel=1e-12)
    assert rec[0][0]["grad_norm"] == pytest.approx(3.0, rel=1e-12)         # (3 + 5 + 1) / 3
    assert rec[1][0]["loss"] == pytest.approx(2 * 272 / 148, rel=1e-12)    # each seed its own sums
    assert EpochStats(1, 1, torch.device("cpu")).records([0.4])[0][0]["loss"] == 0.0   # no step: 0, not NaN
    with pytest.raises(ValueError, match="a step of 0 samples"):
        st.add(0, torch.zeros(2, 5), 0)


def test_use_precision_sets_the_matmul_mode_and_refuses_tf32_on_cpu():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        use_precision("fp32", torch.device("cpu"))
        assert torch.get_float32_matmul_precision() == "highest"
        with pytest.raises(ValueError, match="tf32 needs a CUDA device"):
            use_precision("tf32", torch.device("cpu"))
    finally:
        torch.set_float32_matmul_precision(before)


def test_one_text_parser_and_presets_of_options_not_given():
    assert parse_field_value("subset", "none") is None and parse_field_value("tau", " 0.2 ") == 0.2
    with pytest.raises(ValueError, match="seed='-1'"):
        parse_field_value("seed", "-1")
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        parse_field_value("nope", "1")
    p = make_parser("t")
    add_train_config_args(p)
    # no argv needed: an option not given takes the dataset's preset, a given one wins
    assert train_config_from_args(p.parse_args(["--dataset", "digits"])) == QUICK_DIGITS
    assert train_config_from_args(p.parse_args(["--dataset", "digits", "--patch", "4"])).patch == 4
    assert train_config_from_args(p.parse_args([])) == QUICK
