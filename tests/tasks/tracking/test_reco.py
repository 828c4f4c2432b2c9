"""Track builders on hand-crafted graphs."""

import numpy as np
import pytest

from gnnreco.tasks.tracking.reco import (
    build_tracks,
    candidates_from_labels,
    cc_and_walk_tracks,
    cc_tracks,
    dbscan,
    junction_removal_tracks,
    relabel_min_size,
)


def _same_partition(labels, groups):
    """labels put exactly the hits of each group together (and nothing else)."""
    for g in groups:
        assert len(set(labels[g])) == 1 and labels[g[0]] >= 0, (labels, g)
    rest = np.setdiff1d(np.arange(labels.size), np.concatenate(groups))
    assert (labels[rest] == -1).all()
    assert len({labels[g[0]] for g in groups}) == len(groups)


def crossing_tracks():
    """Track A 0-1-2-3 and track B 4-5-6-7 sharing no hit; a fake edge 1->6 with a low score."""
    ei = np.array([[0, 1, 2, 4, 5, 6, 1], [1, 2, 3, 5, 6, 7, 6]])
    s = np.array([0.9, 0.95, 0.9, 0.9, 0.92, 0.97, 0.3])
    coords = np.array([[r, 0.0, 0.0] for r in (30, 70, 110, 170, 30, 70, 110, 170)], float)
    return ei, s, coords


@pytest.mark.parametrize("method", ["cc", "junction", "walk"])
def test_two_crossing_tracks(method):
    ei, s, coords = crossing_tracks()
    labels = build_tracks(method, 8, ei, s, coords=coords, min_hits=3)
    _same_partition(labels, [np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7])])


def test_cc_merges_when_fake_edge_passes_cut_but_junction_and_walk_split():
    ei, s, coords = crossing_tracks()
    s = s.copy()
    s[-1] = 0.8  # fake 1->6 passes the 0.5 cut
    assert len(set(cc_tracks(8, ei, s, 0.5))) == 1  # one merged blob
    _same_partition(junction_removal_tracks(8, ei, s, 0.5), [np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7])])
    # walk: from hit 0, the best next hit of 1 is 2 (0.95) and 6 is a branch (0.8 > add_cut); both roads
    # have 4 hits, the best-score one wins the tie; then 4-5-6-7 is walked from hit 4
    lab = cc_and_walk_tracks(8, ei, s, coords, min_hits=3)
    _same_partition(lab, [np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7])])


def test_junction_keeps_best_in_and_out_edge():
    # 0->2 (0.9) and 1->2 (0.7) both enter 2; 2->3 (0.8) and 2->4 (0.85) both leave 2
    ei = np.array([[0, 1, 2, 2, 3, 4], [2, 2, 3, 4, 5, 6]])
    s = np.array([0.9, 0.7, 0.8, 0.85, 0.9, 0.9])
    lab = junction_removal_tracks(7, ei, s, 0.5, min_hits=3)
    _same_partition(lab, [np.array([0, 2, 4, 6])])
    # with min_hits=2 the orphaned 3-5 pair becomes a candidate too
    lab2 = junction_removal_tracks(7, ei, s, 0.5, min_hits=2)
    assert lab2[3] == lab2[5] and lab2[3] != lab2[0]


def test_walk_on_branched_component_takes_longest_road_and_uses_hits_once():
    # 0-1-2-3-4 is long; at 1 a branch 1->5->6 (scores above add_cut); 7 hangs off 3 with low score
    ei = np.array([[0, 1, 2, 3, 1, 5, 3], [1, 2, 3, 4, 5, 6, 7]])
    s = np.array([0.9, 0.7, 0.9, 0.9, 0.8, 0.9, 0.05])
    coords = np.array([[r, 0, 0] for r in (10, 20, 30, 40, 50, 30, 40, 50)], float)
    lab = cc_and_walk_tracks(8, ei, s, coords, cc_cut=0.01, min_cut=0.1, add_cut=0.6, min_hits=3)
    _same_partition(lab, [np.array([0, 1, 2, 3, 4])])  # 5-6 left with 2 hits, 7 below min_cut
    # edges given inward are re-oriented by R = r^2 + z^2
    lab_rev = cc_and_walk_tracks(8, ei[::-1], s, coords, min_hits=3)
    _same_partition(lab_rev, [np.array([0, 1, 2, 3, 4])])


def test_walk_simple_paths_skip_walking():
    ei = np.array([[0, 1, 3, 4], [1, 2, 4, 5]])
    s = np.array([0.5, 0.02, 0.9, 0.9])
    lab = cc_and_walk_tracks(6, ei, s, None, cc_cut=0.01, min_hits=3)
    _same_partition(lab, [np.array([0, 1, 2]), np.array([3, 4, 5])])


@pytest.mark.parametrize("method", ["cc", "junction", "walk"])
def test_empty_graph_and_no_hits(method):
    lab = build_tracks(method, 5, np.zeros((2, 0), np.int64), np.zeros(0), coords=np.zeros((5, 3)))
    assert lab.tolist() == [-1] * 5
    assert build_tracks(method, 0, np.zeros((2, 0), np.int64), np.zeros(0), coords=np.zeros((0, 3))).size == 0


def test_builder_errors():
    with pytest.raises(ValueError, match="scores"):
        cc_tracks(3, np.array([[0], [1]]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="track_builder.method"):
        build_tracks("magic", 3, np.zeros((2, 0)), np.zeros(0))


def test_dbscan_clusters_cores_borders_and_noise():
    x = np.array([[0.0, 0], [0.1, 0], [0.2, 0], [0.32, 0], [5, 5], [5.1, 5], [9, 9]])
    lab = dbscan(x, eps=0.15, min_samples=3)
    # 1 and 2 are core points (3 points within eps, themselves included); 0 and 3 are border points
    # (2 within eps); 4,5 have only 2 points -> noise; 6 alone -> noise
    assert lab[0] == lab[1] == lab[2] == lab[3] >= 0
    assert (lab[4:] == -1).all()
    lab2 = dbscan(x, eps=0.15, min_samples=2)
    assert lab2[4] == lab2[5] >= 0 and lab2[4] != lab2[0] and lab2[6] == -1
    assert dbscan(np.zeros((0, 2)), 0.1).size == 0


def test_candidates_and_relabel():
    lab = relabel_min_size(np.array([7, 7, 3, 7, 3, -1, 9]), 2)
    assert lab.tolist() == [0, 0, 1, 0, 1, -1, -1]
    c = candidates_from_labels(lab, hit_ids=np.array([10, 11, 12, 13, 14, 15, 16]))
    assert [t.tolist() for t in c] == [[10, 11, 13], [12, 14]]
    assert candidates_from_labels(np.array([-1, -1])) == []
