"""Shower metrics on hand-made events."""

from __future__ import annotations

import numpy as np
import pytest

from gnnreco.tasks.calo.metrics import CaloMetricsAccumulator, EventResult, energy_budget, robust_resolution
from gnnreco.tasks.calo.plots import plot_all, plot_energy_budget
from gnnreco.tasks.calo.reco import match_showers


def _event():
    # truth: 0,1 merged into pred 0; 2 split into preds 1 and 2; 3 clean -> pred 3; pred 4 is fake (noise)
    truth = np.array([0, 0, 1, 1, 2, 2, 2, 2, 3, 3, -1, -1])
    pred = np.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    e = np.array([1, 1, 1, 1, 2, 2, 2, 2, 5, 5, 3, 3], float)
    m = match_showers(truth, pred, e, n_truth=4, n_pred=5)
    return EventResult(m, truth_energy=np.array([2.0, 2.0, 8.0, 10.0]), truth_hit_energy=np.array([2, 2, 8, 10.0]),
                       truth_eta=np.array([1.7, 2.0, 2.3, 2.6]), truth_pid=np.array([0, 1, 2, 3]),
                       pred_energy=np.array([4.0, 4.0, 4.0, 11.0, 6.0]), pred_pid=np.array([0, 2, 2, 3, 1]))


def test_rates():
    acc = CaloMetricsAccumulator(min_energy=0.0)
    acc.add(_event())
    s = acc.summary()
    # matched: one of {0,1}, 2 (to one half), 3 -> 3 of 4
    assert s["efficiency"] == pytest.approx(0.75)
    assert s["merge_rate"] == pytest.approx(0.5)
    assert s["split_rate"] == pytest.approx(0.25)
    assert s["fake_rate"] == pytest.approx(2 / 5)  # pred 4 (noise) and the leftover half of the split
    t = acc.truth_table()
    assert t["matched"][3] and t["pred_energy"][3] == 11.0
    conf = acc.pid_confusion()
    assert conf.sum() == 3 and conf[3, 3] == 1


def test_energy_threshold_and_resolution():
    acc = CaloMetricsAccumulator(min_energy=9.0)
    acc.add(_event())
    s = acc.summary()
    assert s["n_truth"] == 1 and s["efficiency"] == 1.0
    med, res = robust_resolution(np.array([0.9, 1.0, 1.1, 1.0, 0.95, 1.05]))
    assert med == pytest.approx(1.0) and 0 < res < 0.1
    assert np.isnan(robust_resolution(np.array([1.0]))[1])


def test_plots(tmp_path):
    acc = CaloMetricsAccumulator()
    for _ in range(3):
        acc.add(_event())
    paths = plot_all(acc, tmp_path)
    assert {p.name for p in paths} == {"efficiency.png", "energy_response.png", "pid_confusion.png"}
    assert all(p.stat().st_size > 1000 for p in paths)


def test_bootstrap_spread_shrinks_with_more_events():
    """The event bootstrap of the resolution ratio: finite, positive, and about 4 times smaller
    with 16 times the events."""
    rng = np.random.default_rng(0)

    def event():
        k = 20
        truth = np.repeat(np.arange(k), 5)
        m = match_showers(truth, truth, np.ones(len(truth)))
        e = rng.uniform(20, 100, k)
        return EventResult(m, e, e * rng.normal(1, 0.05, k), np.zeros(k), rng.integers(0, 4, k),
                           e * rng.normal(1, 0.1, k), np.zeros(k, dtype=np.int64))

    small = CaloMetricsAccumulator(min_energy=10.0, events=[event() for _ in range(10)])
    big = CaloMetricsAccumulator(min_energy=10.0, events=[event() for _ in range(160)])
    bs, bb = small.bootstrap(300), big.bootstrap(300)
    assert 0 < bb["resolution_ratio"] < bs["resolution_ratio"]
    assert 0.1 < bb["resolution_ratio"] / bs["resolution_ratio"] < 0.5
    assert abs(big.summary()["resolution_ratio"] - 2.0) < 3 * bb["resolution_ratio"] + 0.1
    # paired with itself the difference never moves; with a worse copy of the same events it does
    assert big.bootstrap(50, other=big)["ratio_difference"] == 0.0
    worse = CaloMetricsAccumulator(min_energy=10.0, events=[
        EventResult(ev.matching, ev.truth_energy, ev.truth_hit_energy, ev.truth_eta, ev.truth_pid,
                    ev.truth_energy + 1.5 * (ev.pred_energy - ev.truth_energy), ev.pred_pid) for ev in big.events])
    pair = big.bootstrap(300, other=worse)
    assert 0 < pair["ratio_difference"] < bb["resolution_ratio"] + 0.5 * pair["resolution_ratio"]
    with pytest.raises(ValueError, match="same events"):
        big.bootstrap(10, other=small)


def test_energy_budget_of_a_hand_made_event():
    """t0 (hits 0-2) keeps hits 0, 1, gives half of hit 2 to an unmatched fragment and leaves the other
    half unassigned; t1 (hits 3, 4) gives half of hit 3 to t0's prediction; a noise hit joins t0's."""
    truth = np.array([0, 0, 0, 1, 1, -1])
    e = np.array([4.0, 3.0, 1.0, 2.0, 2.0, 1.0])
    m = match_showers(truth, np.array([0, 0, 2, 1, 1, 0]), e, n_truth=2, n_pred=3)
    assert list(m.truth_idx) == [0, 1] and list(m.pred_idx) == [0, 1]
    hit = np.array([0, 1, 2, 3, 3, 4, 5])
    cl = np.array([0, 0, 2, 0, 1, 1, 0])
    fr = np.array([1.0, 1.0, 0.5, 0.5, 0.5, 1.0, 1.0])
    b = energy_budget(truth, e, hit, cl, fr, m, n_truth=2, n_pred=3)
    np.testing.assert_allclose(b["total"], [8.0, 4.0])
    np.testing.assert_allclose(b["own"], [7.0, 3.0])
    np.testing.assert_allclose(b["lost_matched"], [0.0, 1.0])
    np.testing.assert_allclose(b["lost_unmatched"], [0.5, 0.0])
    np.testing.assert_allclose(b["unassigned"], [0.5, 0.0])
    np.testing.assert_allclose(b["received_other"], [1.0, 0.0])
    np.testing.assert_allclose(b["received_noise"], [1.0, 0.0])
    with pytest.raises(ValueError, match="outside"):
        energy_budget(truth, e, hit, cl + 1, fr, m, n_truth=2, n_pred=3)
    with pytest.raises(ValueError, match="same shape"):
        energy_budget(truth, e, hit[:-1], cl, fr, m, n_truth=2, n_pred=3)


def _fragmented_events(n_events=30, n_showers=8, seed=0):
    """Each shower keeps a random fraction 1 - f of its hits' energy (f up to 0.3) and gives f to an
    unmatched fragment: giving the fragments back restores the truth-assignment hit sum exactly."""
    rng = np.random.default_rng(seed)
    evs = []
    for _ in range(n_events):
        truth = np.repeat(np.arange(n_showers), 10)
        e_true = rng.uniform(20, 100, n_showers)
        e = rng.uniform(0.5, 1.5, truth.size) * e_true[truth] / 10
        f = rng.uniform(0, 0.3, n_showers)
        hit = np.concatenate([np.arange(truth.size)] * 2)
        cl = np.concatenate([truth, truth + n_showers])
        fr = np.concatenate([1 - f[truth], f[truth]])
        m = match_showers(truth, truth, e, n_truth=n_showers, n_pred=2 * n_showers)
        hs = np.bincount(truth, weights=e)
        b = energy_budget(truth, e, hit, cl, fr, m, n_truth=n_showers, n_pred=2 * n_showers)
        evs.append(EventResult(m, e_true, hs, np.full(n_showers, 2.0), np.arange(n_showers) % 4,
                               np.concatenate([b["own"], np.zeros(n_showers)]), np.zeros(2 * n_showers, int), b))
    return evs


def test_energy_budget_oracles_size_the_losses(tmp_path):
    acc = CaloMetricsAccumulator(min_energy=10.0, events=_fragmented_events())
    bud = acc.energy_budget()
    assert set(bud) == {"all", "electron", "photon", "charged_hadron", "neutral_hadron"}
    a = bud["all"]
    assert a["n"] == 240
    assert a["own"] + a["lost_matched"] + a["lost_unmatched"] + a["unassigned"] == pytest.approx(1.0)
    assert a["lost_unmatched"] == pytest.approx(0.15, abs=0.03) and a["received"] == 0.0
    assert a["ratio_plus_fragments"] == pytest.approx(1.0) and a["ratio_plus_lost"] == pytest.approx(1.0)
    assert a["ratio_reco"] > 1.3 and a["ratio_minus_received"] == pytest.approx(a["ratio_reco"])
    path = plot_energy_budget(bud, tmp_path / "budget.png")
    assert path.stat().st_size > 1000
    assert "energy_budget.png" in {p.name for p in plot_all(acc, tmp_path)}
    acc.add(_event())  # no budget
    with pytest.raises(ValueError, match="no budget"):
        acc.energy_budget()


def test_an_empty_accumulator_summarises_to_nan_not_a_crash():
    """No events (e.g. no validation events at fixed settings): every rate is NaN, the truth table's
    flag columns stay boolean."""
    acc = CaloMetricsAccumulator(min_energy=10.0)
    assert acc.truth_table()["matched"].dtype == bool
    s = acc.summary()
    assert all(s[k] != s[k] for k in ("efficiency", "fake_rate", "merge_rate", "resolution_ratio"))
