"""The noise-dose knob (``view_noise``), its measurement (``view_pair_noise``) and the seed design
that isolates SGD noise (``StudyConfig.seed_design``)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sim.prediction_record import noise_ratio, sigma_n_from_preacts
from vit.config import QUICK, TrainConfig, departures
from vit.data import load_dataset
from vit.device import DeviceData
from vit.diagnostics import view_pair_noise
from vit.study_config import StudyConfig


def _pairs(sn: float, n: int, e: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(1, n, e, generator=g, dtype=torch.float64)
    return (s + sn * torch.randn(1, n, e, generator=g, dtype=torch.float64),
            s + sn * torch.randn(1, n, e, generator=g, dtype=torch.float64))


def test_pair_noise_agrees_with_the_sim_estimator_and_the_closed_form():
    f1, f2 = _pairs(0.7, 4000, 6, 0)
    est = view_pair_noise(f1, f2)
    # the sim package's numpy estimator of the same quantity (an independent implementation)
    assert est["sigma_n_eff"][0] == pytest.approx(sigma_n_from_preacts(f1[0].numpy(), f2[0].numpy()), rel=1e-9)
    # the model's closed form r = sn^2 / (1 + sn^2) for independent views of unit signal variance
    assert est["noise_ratio"][0] == pytest.approx(noise_ratio(0.7), abs=4 * est["noise_ratio_se"][0])
    assert est["sigma_n_eff"][0] == pytest.approx(0.7, abs=4 * est["sigma_n_eff_se"][0])


def test_pair_noise_standard_error_matches_the_spread_over_replicates():
    reps = [view_pair_noise(*_pairs(0.5, 300, 4, k)) for k in range(300)]
    sig = np.array([r["sigma_n_eff"][0] for r in reps])
    se = np.array([r["sigma_n_eff_se"][0] for r in reps])
    assert sig.std(ddof=1) == pytest.approx(se.mean(), rel=0.15)


def test_pair_noise_of_identical_views_is_zero_and_of_unrelated_views_is_outside_the_model():
    f1, _ = _pairs(0.0, 50, 3, 1)
    est = view_pair_noise(f1, f1.clone())
    assert est["noise_ratio"] == [0.0] and est["sigma_n_eff"] == [0.0] and est["sigma_n_eff_se"] == [0.0]
    g = torch.Generator().manual_seed(2)
    a = torch.randn(1, 400, 3, generator=g)
    b = -a + 0.01 * torch.randn(1, 400, 3, generator=g)      # anti-correlated views: r near 2 > 1
    est = view_pair_noise(a, b)
    assert est["noise_ratio"][0] > 1 and est["sigma_n_eff"] == [None]
    with pytest.raises(ValueError, match="feature tensors"):
        view_pair_noise(a, b[:, :10])


def _data(noise: float) -> DeviceData:
    return DeviceData(load_dataset("digits", subset=200, seed=0), torch.device("cpu"), "none", view_noise=noise)


def test_view_noise_is_independent_between_views_in_pixel_sd_units():
    d = _data(0.8)
    x = d.x["train"]
    v = d.views(x, torch.Generator().manual_seed(0), 2)
    clean = d.clean(x)
    n = x.shape[0]
    e1, e2 = v[:n] - clean, v[n:] - clean
    assert float(e1.std()) == pytest.approx(0.8, rel=0.03)
    assert float(e2.std()) == pytest.approx(0.8, rel=0.03)
    r = float(torch.corrcoef(torch.stack([e1.flatten(), e2.flatten()]))[0, 1])
    assert abs(r) < 4 / math.sqrt(e1.numel())          # 4 SE of a zero correlation


def test_no_view_noise_leaves_the_views_and_the_stream_untouched():
    d = _data(0.0)
    g = torch.Generator().manual_seed(3)
    v = d.views(d.x["train"], g, 2)
    torch.testing.assert_close(v, torch.cat([d.clean(d.x["train"])] * 2), rtol=0, atol=1e-6)
    assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_view_noise_is_one_line(bad):
    with pytest.raises(ValueError, match="view_noise=.* must be finite and >= 0"):
        TrainConfig(view_noise=bad)


def test_view_noise_is_a_named_departure_and_changes_the_config():
    assert "augment:view_noise_0.5" in departures(QUICK.replace(view_noise=0.5, protocol="reference"))
    assert not any("view_noise" in d for d in departures(QUICK.replace(protocol="reference")))
    assert QUICK.replace(view_noise=0.5).to_dict() != QUICK.to_dict()


def test_sgd_seed_design_fixes_init_and_split_and_varies_order_and_augmentation():
    st = StudyConfig(base=QUICK, factors=(("loss_mode", ("clamp", "subtract")),), n_seeds=3, seed_design="sgd")
    seeds = [st.run_config(("clamp",), k).resolved_seeds() for k in range(3)]
    for key in ("init", "split", "subset"):
        assert len({s[key] for s in seeds}) == 1, key
    for key in ("order", "aug"):
        assert len({s[key] for s in seeds}) == 3, key
    # the same seed in both cells: pairing unchanged
    assert st.run_config(("subtract",), 1).resolved_seeds() == seeds[1]
    allseeds = StudyConfig(base=QUICK, factors=(("loss_mode", ("clamp", "subtract")),), n_seeds=3)
    assert len({allseeds.run_config(("clamp",), k).resolved_seeds()["init"] for k in range(3)}) == 3
    with pytest.raises(ValueError, match="seed_design 'weird'"):
        StudyConfig(base=QUICK, seed_design="weird")
    assert math.isfinite(st.run_config(("clamp",), 0).view_noise)
