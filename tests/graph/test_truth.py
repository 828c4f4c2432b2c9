"""Truth graphs, labels, weights and construction metrics on hand-made events."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gnnreco.graph import (
    construction_metrics,
    edge_labels,
    edge_target_weights,
    edge_truth_labels,
    target_hit_mask,
    truth_graph,
)


def edge_set(ei):
    return set(map(tuple, torch.as_tensor(ei).t().tolist()))


# hits: particle 1 has 4 hits at increasing distance (two on the same module), particle 2 has 2,
# hit 6 is noise. The hit order in the arrays is shuffled on purpose.
PID = torch.tensor([1, 2, 1, 0, 1, 2, 1])
DIST = torch.tensor([3.0, 2.0, 1.0, 5.0, 2.0, 1.0, 2.5])
MODULE = torch.tensor([30, 20, 10, 99, 21, 11, 21])


def test_pid_truth_is_all_pairs_of_a_particle():
    e = truth_graph(PID, "pid", order=DIST)
    # particle 1 hits ordered by distance: 2 (1.0), 4 (2.0), 6 (2.5), 0 (3.0)
    assert edge_set(e) == {(2, 4), (2, 6), (2, 0), (4, 6), (4, 0), (6, 0), (5, 1)}


def test_modulewise_truth_links_consecutive_modules():
    e = truth_graph(PID, "modulewise", order=DIST, module_id=MODULE)
    # hits 4 and 6 share module 21: not linked to each other, both linked to 2 and to 0
    assert edge_set(e) == {(2, 4), (2, 6), (4, 0), (6, 0), (5, 1)}
    e2 = truth_graph(PID, "modulewise", order=DIST)
    assert edge_set(e2) == {(2, 4), (4, 6), (6, 0), (5, 1)}


def test_truth_from_positions_and_vertex():
    pos = np.array([[0, 0, 3.0], [0, 0, 12.0], [0, 0, 1.0], [0, 0, 50.0], [0, 0, 2.0], [0, 0, 11.0], [0, 0, 2.5]])
    vtx = np.zeros_like(pos)
    vtx[[1, 5], 2] = 10.0
    e = truth_graph(PID.numpy(), "modulewise", pos=pos, vertex=vtx, module_id=MODULE.numpy())
    assert edge_set(e) == {(2, 4), (2, 6), (4, 0), (6, 0), (5, 1)}
    masked = truth_graph(PID, "pid", order=DIST, hit_mask=PID == 2)
    assert edge_set(masked) == {(5, 1)}
    with pytest.raises(ValueError, match="kind"):
        truth_graph(PID, "segments")
    assert truth_graph(torch.tensor([0, 0, 3]), "pid").shape == (2, 0)


def test_truth_graph_random_event_counts():
    g = torch.Generator().manual_seed(0)
    pid = torch.randint(0, 50, (2000,), generator=g)
    e = truth_graph(pid, "pid", order=torch.rand(2000, generator=g))
    counts = torch.bincount(pid, minlength=50)[1:]
    assert e.size(1) == int((counts * (counts - 1) // 2).sum())
    assert bool((pid[e[0]] == pid[e[1]]).all()) and bool((pid[e[0]] != 0).all())
    m = truth_graph(pid, "modulewise", order=torch.rand(2000, generator=g))
    assert m.size(1) == int((counts - 1).clamp(min=0).sum())


def test_edge_labels_pid_and_matching():
    ei = torch.tensor([[2, 4, 3, 1, 0], [4, 0, 3, 5, 6]])
    y = edge_truth_labels(ei, PID)
    assert y.tolist() == [True, True, False, True, True]
    assert torch.equal(edge_labels(ei, PID), y)
    truth = truth_graph(PID, "modulewise", order=DIST, module_id=MODULE)
    ym = edge_labels(ei, truth_edge_index=truth, num_nodes=7)
    assert ym.tolist() == [True, True, False, True, True]
    yd = edge_labels(ei, truth_edge_index=truth, num_nodes=7, undirected=False)
    assert yd.tolist() == [True, True, False, False, False]
    with pytest.raises(ValueError, match="exactly one"):
        edge_labels(ei)
    with pytest.raises(ValueError, match="particle_id"):
        edge_labels(torch.tensor([[0], [40]]), PID)


def test_target_mask_and_weights():
    pt = torch.tensor([2.0, 0.5, 2.0, 0.0, 2.0, 0.5, 2.0])
    m = target_hit_mask(PID, pt, pt_min=1.0, nhits_min=3)
    assert m.tolist() == [True, False, True, False, True, False, True]
    assert target_hit_mask(PID, pt, pt_min=1.0, nhits_min=5).sum() == 0
    ei = torch.tensor([[2, 5, 3], [4, 1, 0]])
    y = edge_truth_labels(ei, PID)
    w = edge_target_weights(ei, y, m)
    assert w.tolist() == [1.0, 0.0, 1.0]


def test_construction_metrics_overall_and_binned():
    truth = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    built = torch.tensor([[0, 2, 3, 0, 1], [1, 3, 4, 4, 3]])
    df = construction_metrics(built, truth, num_nodes=5,
                              truth_values={"pt": [0.5, 1.5, 1.5, 3.0]},
                              edge_values={"pt": [0.5, 1.5, 3.0, 0.5, 1.5]},
                              bins={"pt": [0, 1, 2, 5]})
    allrow = df.iloc[0]
    assert allrow["n_truth"] == 4 and allrow["n_found"] == 3
    assert allrow["efficiency"] == pytest.approx(0.75) and allrow["purity"] == pytest.approx(0.6)
    pt = df[df.variable == "pt"].reset_index(drop=True)
    assert pt["efficiency"].tolist() == [1.0, 0.5, 1.0]
    assert pt["purity"].tolist() == [0.5, 0.5, 1.0]
    empty = construction_metrics(torch.empty(2, 0, dtype=torch.long), truth)
    assert empty.iloc[0]["efficiency"] == 0 and math.isnan(empty.iloc[0]["purity"])
    with pytest.raises(ValueError, match="truth_values"):
        construction_metrics(built, truth, truth_values={"pt": [1.0]}, bins={"pt": [0, 1]})
