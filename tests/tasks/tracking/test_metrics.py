"""Edge and track metrics on crafted matchings."""

import math

import numpy as np
import pytest

from gnnreco.tasks.tracking.metrics import (
    construction_efficiency,
    edge_metrics,
    match_tracks,
    roc_auc,
    track_metrics,
    trackml_score,
)


def test_roc_auc_matches_pair_counting():
    rng = np.random.default_rng(0)
    s = np.round(rng.random(60), 1)  # many ties
    y = rng.random(60) > 0.6
    pos, neg = s[y], s[~y]
    ref = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
    assert roc_auc(s, y) == pytest.approx(ref)
    assert math.isnan(roc_auc(s, np.zeros(60, bool)))


def test_edge_metrics_efficiency_purity_masked_purity():
    s = np.array([0.9, 0.8, 0.2, 0.7, 0.6, 0.1])
    y = np.array([1, 1, 1, 0, 1, 0], bool)
    target = np.array([1, 1, 1, 0, 0, 0], bool)  # edge 4 is true but not a target
    w = np.array([1, 1, 1, 0.1, 0, 0.1])
    m = edge_metrics(s, y, target, w, cut=0.5)
    assert m["efficiency"] == pytest.approx(2 / 3)  # targets 0,1 selected, 2 missed
    assert m["purity"] == pytest.approx(3 / 4)  # selected 0,1,3,4 of which 0,1,4 true
    assert m["masked_purity"] == pytest.approx(2 / 3)  # edge 4 (w=0) ignored
    assert 0 < m["auc"] <= 1


# Particles: p1 has hits 0-3 (4 hits), p2 hits 4-7 (4 hits), p3 hits 8-10 (3 hits); 11 is noise.
PID = np.array([1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 0])
PARTICLES = np.array([1, 2, 3])
NHITS = np.array([4, 4, 3])


def test_match_tracks_majority_and_ties():
    lab = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, -1, 2])
    t = match_tracks(lab, PID)
    assert t["major_pid"].tolist() == [1, 2, 3]
    assert t["n_shared"].tolist() == [3, 3, 2]
    assert t["n_hits"].tolist() == [3, 4, 4]


def test_double_majority_atlas_one_way_perfect_lhc():
    # track 0: hits 0,1,2 (p1: 3/3 pure, 3/4 of p1)       -> DM matched
    # track 1: hits 3,4,5,6 (p2 3/4 pure, 3/4 of p2)      -> DM matched; LHC (0.75 not > 0.75) not
    # track 2: hits 7,8,9,11 (p3 2/4 = 0.5 pure)           -> not DM/ATLAS (0.5 not > 0.5)
    lab = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, -1, 2])
    m = track_metrics(lab, PID, PARTICLES, NHITS, min_hits=3,
                      definitions=("double_majority", "two_way", "atlas", "one_way", "perfect", "lhc"))
    assert m["double_majority_efficiency"] == pytest.approx(2 / 3)
    assert m["two_way_efficiency"] == m["double_majority_efficiency"]
    assert m["double_majority_fake_rate"] == pytest.approx(1 / 3)
    assert m["double_majority_duplicate_rate"] == 0.0
    assert m["atlas_efficiency"] == pytest.approx(2 / 3)
    # one-way: p3 has 2/3 of its hits in track 2 -> reconstructed
    assert m["one_way_efficiency"] == pytest.approx(1.0)
    assert m["perfect_efficiency"] == 0.0
    assert m["lhc_efficiency"] == pytest.approx(1 / 3)  # only track 0 (purity 1 > 0.75)
    assert m["lhc_fake_rate"] == pytest.approx(2 / 3)


def test_perfect_duplicates_denominator_and_min_hits():
    # p1 split into two 2-hit pieces (below min_hits: dropped); p2 perfect; p3 found twice? (3 hits only)
    lab = np.array([0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, -1])
    m = track_metrics(lab, PID, PARTICLES, NHITS, min_hits=3, definitions=("perfect", "double_majority"))
    assert m["n_tracks"] == 2.0
    assert m["perfect_efficiency"] == pytest.approx(2 / 3)
    # denominator restricted to p1 only
    m1 = track_metrics(lab, PID, PARTICLES, NHITS, denominator=np.array([1, 0, 0], bool))
    assert m1["double_majority_efficiency"] == 0.0 and m1["n_particles"] == 1.0
    # two DM-matched tracks of the same particle -> duplicate rate 1/2
    pid = np.array([5] * 8)
    lab2 = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    m2 = track_metrics(lab2, pid, np.array([5]), np.array([8]), definitions=("atlas",))
    assert m2["atlas_duplicate_rate"] == pytest.approx(0.5)
    assert m2["atlas_efficiency"] == 1.0


def test_no_tracks_and_noise_majority():
    m = track_metrics(np.full(12, -1), PID, PARTICLES, NHITS)
    assert m["double_majority_efficiency"] == 0.0 and math.isnan(m["double_majority_fake_rate"])
    lab = np.array([-1] * 8 + [0, -1, -1, 0])
    lab[9] = 0
    pid = PID.copy()
    pid[8:11] = 0  # noise majority
    m2 = track_metrics(lab, pid, PARTICLES, NHITS)
    assert m2["double_majority_fake_rate"] == 1.0


def test_trackml_score_perfect_and_unassigned():
    hid = np.arange(1, 13)
    w = np.where(PID > 0, 1.0, 0.0) / 11
    perfect = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, -1])
    assert trackml_score(hid, PID, w, perfect) == pytest.approx(1.0)
    assert trackml_score(hid, PID, w, np.full(12, -1)) == pytest.approx(0.0)
    half = np.array([0, 0, 0, -1, 1, 1, 1, 1, -1, -1, -1, -1])
    assert trackml_score(hid, PID, w, half) == pytest.approx(7 / 11)


def test_construction_efficiency():
    coords = np.array([[r, 0, 0] for r in (30, 70, 110, 170)] * 2, float)
    pid = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    ei = np.array([[0, 1, 2, 4], [1, 2, 3, 5]])
    tgt = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    assert construction_efficiency(ei, pid, coords, tgt) == pytest.approx(1.0)
    assert construction_efficiency(ei[:, :2], pid, coords, tgt) == pytest.approx(2 / 3)
    assert construction_efficiency(ei, pid, coords, np.ones(8, bool)) == pytest.approx(4 / 6)
