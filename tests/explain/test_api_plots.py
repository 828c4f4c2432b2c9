"""API (targets, adapters, batch objects, errors) and plots."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from gnnreco.explain import conservation, explain
from gnnreco.explain.plots import event_display, feature_relevance_bar, rmap, top_neighbours

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tracking():
    from gnnreco.tasks.tracking.model import InteractionGNN

    torch.manual_seed(0)
    net = InteractionGNN(node_features=3, hidden=8, n_graph_iters=1).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(15, 3, generator=g, dtype=torch.double)
    ei = torch.randint(0, 15, (2, 30), generator=g)
    return net, x, ei


def test_batch_object_and_lightning_wrapper(tracking):
    net, x, ei = tracking
    a = explain(net, (x, ei), 4)
    wrapper = torch.nn.Module()
    wrapper.net = net
    b = explain(wrapper, SimpleNamespace(x=x, edge_index=ei, edge_attr=None), 4)
    torch.testing.assert_close(a.node_relevance, b.node_relevance)
    assert a.output == pytest.approx(float(net(x, ei)[4]))


def test_bad_targets(tracking):
    net, x, ei = tracking
    with pytest.raises(IndexError, match="edge target"):
        explain(net, (x, ei), 99)
    from gnnreco.tasks.calo.model import CaloGravNet

    calo = CaloGravNet(hidden=8, n_blocks=1, k=3, prop_dim=4)
    with pytest.raises(ValueError, match="expected one of"):
        explain(calo, (torch.randn(10, 9), torch.zeros(10, dtype=torch.long)), ("bogus", 0))
    with pytest.raises(KeyError, match="edge_index"):
        explain(net, {"x": x}, 0)


def test_calo_targets_are_head_columns():
    from gnnreco.tasks.calo.model import CaloGravNet

    torch.manual_seed(0)
    net = CaloGravNet(hidden=8, n_blocks=1, k=3, prop_dim=4, n_pid=3).double().eval()
    x, b = torch.randn(12, 9, dtype=torch.double), torch.zeros(12, dtype=torch.long)
    out = net(x, b)
    beta = explain(net, (x, b), ("beta", 2))
    assert torch.sigmoid(torch.tensor(beta.output)).item() == pytest.approx(float(out["beta"][2]))
    en = explain(net, (x, b), ("energy", 5))
    assert en.output + 1.0 == pytest.approx(float(out["energy_factor"][5]))
    pid = explain(net, (x, b), ("pid:2", 0))
    assert pid.output == pytest.approx(float(out["pid_logits"][0, 2]))
    assert en.target_nodes.tolist() == [5]


def test_generic_callable_target():
    m = torch.nn.Sequential(torch.nn.Linear(3, 2)).double()
    x = torch.randn(4, 3, dtype=torch.double)
    ex = explain(m, (x,), lambda out: out[1].sum())
    assert abs(conservation(ex)["residual"]) < 1e-12


def test_plots_write_png(tmp_path, tracking):
    net, x, ei = tracking
    ex = [explain(net, (x, ei), e) for e in range(3)]
    fig = feature_relevance_bar([ex[:2], ex[2:]], ["r", "phi", "z"], labels=["a", "b"], path=tmp_path / "bar.png")
    assert (tmp_path / "bar.png").stat().st_size > 1000
    pos = torch.randn(15, 3)
    event_display(pos, ex[0], coords="xy", path=tmp_path / "xy.png")
    event_display(pos, ex[0], coords="etaphi", path=tmp_path / "etaphi.png")
    rmap(ex[0], k=4, feature_names=["r", "phi", "z"], path=tmp_path / "rmap.png")
    for n in ("xy", "etaphi", "rmap"):
        assert (tmp_path / f"{n}.png").stat().st_size > 1000
    rows = top_neighbours(ex[0], k=4)
    assert int(rows[0]) == int(ex[0].target_nodes[0]) and len(rows) <= 5
    with pytest.raises(ValueError, match="coords"):
        event_display(pos, ex[0], coords="rz")
    with pytest.raises(ValueError, match="feature_names"):
        feature_relevance_bar(ex[0], ["a"])
    import matplotlib.pyplot as plt

    plt.close("all")
    assert fig is not None
