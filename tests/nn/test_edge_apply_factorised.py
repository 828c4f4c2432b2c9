"""edge_apply's inference path splits the first Linear by input blocks: same function as the concatenation."""

from __future__ import annotations

import pytest
import torch

from gnnreco.nn.interaction_network import _factorisable_first_linear, edge_apply
from gnnreco.nn.mlp import MLP


def _graph(n=40, e=300, f=8, fe=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, f, generator=g)
    ei = torch.randint(0, n, (2, e), generator=g)
    ea = torch.randn(e, fe, generator=g)
    return x, ei, ea


@pytest.mark.parametrize("fe", [0, 5])
@pytest.mark.parametrize("chunks", [1, 4])
def test_factorised_equals_concatenated(fe, chunks):
    x, ei, ea = _graph(fe=max(fe, 1))
    ea = ea if fe else None
    net = MLP(2 * x.shape[1] + fe, 16, 6, n_layers=2, activation="silu", norm="layer").eval()
    with torch.enable_grad():  # autograd on: the concatenated form
        ref = edge_apply(net, x, ei, ea, chunks).detach()
    with torch.no_grad():
        assert _factorisable_first_linear(net, x, ea) is net[0]
        got = edge_apply(net, x, ei, ea, chunks)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_not_factorised_when_observed_or_mismatched():
    x, ei, ea = _graph()
    net = MLP(2 * x.shape[1] + ea.shape[1], 16, 6, n_layers=2).eval()
    h = net[0].register_forward_hook(lambda *a: None)  # e.g. an explanation hook must see the layer
    assert _factorisable_first_linear(net, x, ea) is None
    h.remove()
    assert _factorisable_first_linear(net, x, ea) is net[0]
    assert _factorisable_first_linear(net, x, None) is None  # input width does not match
    assert _factorisable_first_linear(torch.nn.Linear(21, 3), x, ea) is None  # not a Sequential


def test_interaction_gnn_inference_matches_training_form():
    from gnnreco.tasks.tracking.model import InteractionGNN

    x, ei, ea = _graph(n=60, e=400, f=3, fe=5)
    net = InteractionGNN(node_features=3, edge_features=5, hidden=16, n_graph_iters=3).eval()
    with torch.enable_grad():
        ref = net(x, ei, ea).detach()
    with torch.inference_mode():
        got = net(x, ei, ea)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_concatenated_edge_inputs_switches_the_fast_path_off():
    from gnnreco.nn.interaction_network import concatenated_edge_inputs

    x, ei, ea = _graph()
    net = MLP(2 * x.shape[1] + ea.shape[1], 16, 6, n_layers=2).eval()
    with concatenated_edge_inputs():
        assert _factorisable_first_linear(net, x, ea) is None
    assert _factorisable_first_linear(net, x, ea) is net[0]
