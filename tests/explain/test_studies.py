"""The MLPF neighbour measurement: relevance spread per explained element, and the study on a tiny model."""

from __future__ import annotations

import pytest
import torch

from gnnreco.explain.studies import neighbour_study, relevance_spread, summarise


def test_relevance_spread_counts_elements_holding_q():
    r = torch.zeros(6, 2)
    r[0] = torch.tensor([5.0, -1.0])  # |R| 6 on the explained element
    r[1, 0], r[2, 1], r[3, 0] = 2.0, -1.0, 1.0  # neighbours: 2, 1, 1
    m = relevance_spread(r, 0, q=0.9)
    assert m["neighbour_share"] == pytest.approx(4.0 / 10.0)
    assert m["k_q"] == 3.0  # 6 + 2 = 8 < 9, 6 + 2 + 1 = 9 >= 9
    assert m["k_q_neighbours"] == 3.0  # of 4: 2 + 1 = 3 < 3.6, + 1 = 4
    assert relevance_spread(r, 0, q=0.5)["k_q"] == 1.0
    only_self = torch.zeros(4, 3)
    only_self[2, 1] = -3.0
    m = relevance_spread(only_self, 2)
    assert m == {"neighbour_share": 0.0, "k_q": 1.0, "k_q_neighbours": 0.0}


def test_neighbour_study_on_a_tiny_model():
    from gnnreco.tasks.pflow.model import MLPFNet

    torch.manual_seed(0)
    net = MLPFNet(backbone="gravnet", width=8, n_layers=1, k=4, prop_dim=4).eval()
    g = torch.Generator().manual_seed(0)
    X = torch.randn(20, 12, generator=g)
    X[:, 0] = torch.randint(1, 3, (20,), generator=g).float()
    X[:, 1] = X[:, 1].abs() * 5
    X[:, 5] = X[:, 5].abs() * 5
    with torch.no_grad():
        pred = net(X[None], torch.ones(1, 20, dtype=torch.bool))[1][0].argmax(-1)
    y = torch.zeros(20, 7)
    y[:, 0] = pred.float()  # every element "correctly classified" as its prediction
    c = int(pred[0])
    res = neighbour_study(net, [(X, y)], classes=(c,), per_event=3)
    assert 1 <= len(res[c]) <= 3
    for m in res[c]:
        assert 0.0 <= m["neighbour_share"] <= 1.0 and 1 <= m["k_q"] <= 20
    s = summarise(res, n_boot=20)
    assert s[("none", "ch.had", "n.had", "gamma", "e", "mu")[c]]["n"] == len(res[c])
