"""The variance ratio a comparison reports: chosen by the design (cffdyn.variance_ratio), on
records made by vit.factorial.compare_levels itself."""
from __future__ import annotations

import numpy as np
import pytest

from cffdyn.variance_ratio import reported_ratio
from vit.factorial import compare_levels


def _cells(seed, n=8):
    rng = np.random.default_rng(seed)
    a = [list(rng.normal(0.8, 0.03, n)), list(rng.normal(0.7, 0.02, n))]
    b = [list(rng.normal(0.8, 0.01, n)), list(rng.normal(0.7, 0.015, n))]
    return a, b


def test_matched_seeds_report_the_within_cell_ratio_and_pitman_morgan():
    a, b = _cells(1)
    c = compare_levels(a, b, matched=True, n_boot=199, n_perm=199, seed=0)
    r = reported_ratio(c)
    assert r.test == "pitman_morgan" and r.ratio == c["ratio"] and r.p == c["paired"]["pm_p"]
    assert list(r.ci95) == list(c["paired"]["boot_ci"]) and r.ci95[0] < r.ratio < r.ci95[1]
    assert r.ratio != pytest.approx(c["steier"]["ratio"])   # the two ratios differ here: the choice matters


def test_independent_seeds_report_steiers_pooled_ratio():
    a, b = _cells(2)
    c = compare_levels(a, b, matched=False, n_boot=199, n_perm=199, seed=0)
    r = reported_ratio(c)
    assert r.test == "steier_f" and r.ratio == c["steier"]["ratio"] and r.p == c["steier"]["p"]
    assert r.ci95 == (None, None)


def test_inverted_and_a_record_without_steier():
    r = reported_ratio({"ratio": 0.25, "boot_ci": [0.1, 0.5], "f_p": 0.01})
    assert r.test == "within_f" and r.ratio == 0.25 and r.p == 0.01
    inv = r.inverted()
    assert inv.ratio == 4.0 and inv.ci95 == (2.0, 10.0) and inv.p == 0.01
    assert reported_ratio({"ratio": None, "steier": {"ratio": None, "p": None}}).ratio is None
