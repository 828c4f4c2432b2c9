"""The tracking benchmark's 'edge efficiency at 95 % purity' (gnnreco.bench.tracking._cut_at_purity)."""

from __future__ import annotations

import numpy as np

from gnnreco.bench.tracking import _cut_at_purity


def test_efficiency_at_purity_on_unsorted_scores():
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.random(n) < 0.3
    target = y & (rng.random(n) < 0.5)
    scores = np.where(y, rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.7, n)).astype(np.float32)
    perm = rng.permutation(n)  # the answer must not depend on the input order
    cut, eff = _cut_at_purity(scores[perm], y[perm], target[perm], 0.95)
    sel = scores >= cut
    assert y[sel].mean() >= 0.95
    assert eff == (target & sel).sum() / target.sum()
    # the lowest such cut: one step lower the purity drops below 0.95
    lower = scores[scores < cut].max()
    assert y[scores >= lower].mean() < 0.95
    assert eff > 0.8  # true edges sit in [0.6, 1], fakes in [0, 0.7]: most targets pass the cut


def test_no_cut_reaches_the_purity():
    y = np.array([False, False, True])
    cut, eff = _cut_at_purity(np.array([0.9, 0.8, 0.1], np.float32), y, y, 0.95)
    assert np.isnan(cut) and eff == 0.0
