"""Tensor-only DFEI forward ``net(x, edge_index, edge_attr, u)``: agreement with the batched forward and
TorchScript / ONNX programs that stay correct for events of another size."""

import warnings

import numpy as np
import pytest
import torch

from gnnreco.graph import fully_connected_graph
from gnnreco.sim.lhcb import generate_event
from gnnreco.tasks.dfei.data import edge_features, process_event
from gnnreco.tasks.dfei.model import DFEIChain, DFEIFused, rank_per_receiver


def _event(seed, nu=1.0):
    ev = process_event(generate_event(seed, backend="toy", nu=nu, toy_tracks_per_collision=12.0))
    x = torch.as_tensor(ev["x"])
    n = x.shape[0]
    ei = fully_connected_graph(num_nodes=n)
    return x, ei, edge_features(x, ei), torch.tensor([[float(ev["n_pv"][0])]])


def _nets():
    """Random-weight networks whose cuts sit at the median scores of one event, so that every stage
    prunes part of its input."""
    torch.manual_seed(3)
    chain = DFEIChain(hidden=16, np_blocks=1, ep_blocks=1, lca_blocks=2, np_cut=0.0, ep_cut=0.0, k_nearest=4).eval()
    fused = DFEIFused(hidden=16, n_blocks=3, prune="both", node_cut=0.0, edge_cut=0.0, k_edges=3, k_nearest=6).eval()
    x, ei, ea, u = _event(11)
    with torch.no_grad():
        chain.np_cut = float(torch.sigmoid(chain(x, ei, ea, u)[0]).median())
        el = chain(x, ei, ea, u)[1]
        chain.ep_cut = float(torch.sigmoid(el[el > -8.0]).median())
        # the first block's weights decide the first pruning: cut at their 20% quantiles
        out = fused(x, torch.zeros(x.shape[0], dtype=torch.long), u.view(-1).long())
    nl0, (el0, _) = out["aux_node"][0][0], out["aux_edge"][0]
    fused.node_cut = float(torch.sigmoid(nl0).quantile(0.2))
    fused.edge_cut = float(torch.sigmoid(el0).quantile(0.2))
    return [chain, fused]


def _scatter_eager(out, ei, n_edges):
    """Batched-forward outputs placed on the rows of ``ei`` (pairs it did not return: pruned values)."""
    n = int(ei.max()) + 1 if ei.numel() else 1
    key = {int(k): r for r, k in enumerate((ei[0] * n + ei[1]).tolist())}
    e = torch.full((n_edges,), -8.0)
    lca = torch.tensor([8.0, -8.0, -8.0, -8.0]).repeat(n_edges, 1)
    pi = out["pair_index"]
    rows = torch.tensor([key[int(k)] for k in (pi[0] * n + pi[1]).tolist()], dtype=torch.long)
    keep = out["lca_mask"]
    if rows.numel():
        e[rows] = out["edge_logit"]
        lca[rows[keep]] = out["lca_logits"][keep]
    return e, lca


def test_rank_per_receiver_matches_sorting():
    g = torch.Generator().manual_seed(0)
    score = torch.rand(200, generator=g)
    recv = torch.randint(0, 9, (200,), generator=g)
    rank = rank_per_receiver(score, recv, 9)
    for r in range(9):
        m = recv == r
        expect = torch.argsort(torch.argsort(score[m], descending=True))
        assert torch.equal(rank[m], expect)


@pytest.mark.parametrize("k", [0, 1])
def test_tensor_forward_equals_batched(k):
    net = _nets()[k]
    x, ei, ea, u = _event(11)
    with torch.no_grad():
        nl, el, ll = net(x, ei, ea, u)
        out = net(x, torch.zeros(x.shape[0], dtype=torch.long), u.view(-1).long())
    assert nl.shape == (x.shape[0],) and el.shape == (ei.shape[1],) and ll.shape == (ei.shape[1], 4)
    torch.testing.assert_close(nl, out["node_logit"], atol=1e-5, rtol=1e-4)
    if isinstance(net, DFEIChain):
        e, lca = _scatter_eager(out, ei, ei.shape[1])
        torch.testing.assert_close(el, e, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ll, lca, atol=1e-5, rtol=1e-4)
    else:
        e, lca = _scatter_eager(out, ei, ei.shape[1])
        torch.testing.assert_close(ll, lca, atol=1e-5, rtol=1e-4)
    # some pruning happened, and some pairs reached the LCA stage
    assert bool((ll[:, 0] == 8.0).any()) and bool((ll[:, 0] != 8.0).any())


def test_tensor_forward_empty_event():
    for net in _nets():
        x = torch.zeros(0, 13)
        ei = torch.zeros(2, 0, dtype=torch.long)
        with torch.no_grad():
            nl, el, ll = net(x, ei, torch.zeros(0, 4), torch.ones(1, 1))
        assert nl.shape == (0,) and el.shape == (0,) and ll.shape == (0, 4)


@pytest.mark.parametrize("k", [0, 1])
def test_torchscript_and_onnx_dynamic_sizes(k, tmp_path):
    net = _nets()[k]
    ex = _event(21, nu=0.6)
    other = _event(5, nu=2.0)
    assert other[0].shape[0] != ex[0].shape[0]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = net(*other)
        traced = torch.jit.trace(net, ex, check_trace=False, strict=False)
        got = traced(*other)
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)

    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "dfei.onnx"
    names = ["x", "edge_index", "edge_attr", "u"]
    outs = ["node_logit", "edge_logit", "lca_logits"]
    axes = {"x": {0: "N"}, "edge_index": {1: "E"}, "edge_attr": {0: "E"}, "node_logit": {0: "N"},
            "edge_logit": {0: "E"}, "lca_logits": {0: "E"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, ex, str(path), input_names=names, output_names=outs, opset_version=17,
                          dynamo=False, dynamic_axes=axes)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    res = sess.run(None, {n: t.numpy() for n, t in zip(names, other)})
    for a, b in zip(ref, res):
        np.testing.assert_allclose(a.numpy(), b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("opts", [dict(k_nearest=5), dict(k_nearest=0, max_dz=1.0, max_theta=0.3),
                                  dict(k_nearest=3, max_dz=5.0)])
def test_dense_candidate_graph_equals_pair_list(opts):
    """The padded-grid candidate graph (batched forward) equals the pair-list one (tensor forward)."""
    from gnnreco.tasks.dfei.model import candidate_graph_dense, candidate_mask

    evs = [_event(s, nu=0.8) for s in (1, 2, 3)]
    x = torch.cat([e[0] for e in evs])
    batch = torch.cat([torch.full((e[0].shape[0],), i) for i, e in enumerate(evs)])
    g = fully_connected_graph(batch=batch)
    f = edge_features(x, g)
    ref = g[:, candidate_mask(f, g, x.shape[0], opts.get("max_dz"), opts.get("max_theta"), opts["k_nearest"])]
    got = candidate_graph_dense(x, batch, 3, opts.get("max_dz"), opts.get("max_theta"), opts["k_nearest"])
    assert torch.equal(ref, got)


def test_pair_inputs_equal_graph_builder():
    from gnnreco.tasks.dfei.model import pair_inputs

    x, ei, ea, _ = _event(4)
    g, f = pair_inputs(x)
    assert torch.equal(g, ei)
    torch.testing.assert_close(f, ea, atol=1e-6, rtol=1e-5)
    g0, f0 = pair_inputs(torch.zeros(0, 13))
    assert g0.shape == (2, 0) and f0.shape == (0, 4)


def test_pair_mass_input_known_values():
    from gnnreco.tasks.dfei.model import pair_mass_input

    # two back-to-back 1 GeV pions: m = 2 sqrt(1 + m_pi^2)
    x = torch.zeros(2, 13)
    x[0, 3], x[1, 3] = 1.0, -1.0
    m = torch.exp(pair_mass_input(x, torch.tensor([[0], [1]])))
    torch.testing.assert_close(m, torch.tensor([[2 * (1 + 0.13957**2) ** 0.5]]), atol=1e-5, rtol=1e-5)
    # collinear pair at threshold: clamped at 2 m_pi, no NaN
    x[1, 3] = 1.0
    m = torch.exp(pair_mass_input(x, torch.tensor([[0], [1]])))
    torch.testing.assert_close(m, torch.tensor([[2 * 0.13957]]), atol=1e-4, rtol=1e-4)


def test_pair_mass_and_lca_bias_options():
    torch.manual_seed(1)
    x, ei, ea, u = _event(7)
    net = DFEIChain(hidden=16, np_blocks=1, ep_blocks=1, lca_blocks=1, np_cut=0.0, ep_cut=0.0,
                    pair_mass=True).eval()
    assert net.lca_net.enc_e[0].in_features == 6
    with torch.no_grad():
        _, _, l0 = net(x, ei, ea, u)
        net.lca_bias = (0.0, 1.0, 0.0, -1.0)
        _, _, l1 = net(x, ei, ea, u)
    live = l0[:, 0] != 8.0
    torch.testing.assert_close(l1[live] - l0[live], torch.tensor([0.0, 1.0, 0.0, -1.0]).expand(int(live.sum()), 4))
    net.train()
    with pytest.raises(ValueError, match="lca_bias"):
        DFEIChain(lca_bias=[1.0, 2.0])


def test_tune_lca_bias_picks_the_shift_that_fixes_a_biased_classifier():
    from gnnreco.tasks.dfei.metrics import tune_lca_bias

    # one chain of three particles: (0, 1) LCA 1, (0, 2) and (1, 2) LCA 2; the classifier prefers class 2
    true = np.array([[0, 1, 2], [1, 0, 2], [2, 2, 0]])
    pi = np.array([[0, 0, 1], [1, 2, 2]])
    probs = np.array([[0.05, 0.40, 0.55, 0.0], [0.05, 0.05, 0.9, 0.0], [0.05, 0.05, 0.9, 0.0]])
    ev = [(3, pi, np.log(probs + 1e-12), np.array([0, 0, 0]), true)]
    bias, frac = tune_lca_bias(ev, [(0, 0, 0, 0), (0, 1.0, 0, 0)])
    assert bias == (0.0, 1.0, 0.0, 0.0) and frac["perfect"] == 1.0
    with pytest.raises(ValueError, match="4 values"):
        tune_lca_bias(ev, [(0, 1)])


def test_module_runs_an_exported_program_like_the_network(tmp_path):
    """DFEIModule.forward with a TorchScript export in place of the network (Reconstructor.from_export)."""
    import functools

    from torch_geometric.data import Batch

    from gnnreco.data.datamodule import event_to_data
    from gnnreco.tasks.dfei.module import DFEIModule

    net = _nets()[0]
    evs = [process_event(generate_event(s, backend="toy", nu=1.0, toy_tracks_per_collision=12.0)) for s in (11, 12)]
    batch = Batch.from_data_list([event_to_data({k: torch.as_tensor(v) for k, v in e.items()}) for e in evs])
    module = DFEIModule(net=net, optimizer=functools.partial(torch.optim.Adam, lr=1e-3)).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = module(batch)
        module.net = torch.jit.trace(net, _event(11), check_trace=False, strict=False)
        got = module(batch)
    torch.testing.assert_close(got["node_logit"], ref["node_logit"], atol=1e-4, rtol=1e-4)
    assert torch.equal(got["pair_index"], ref["pair_index"])
    assert torch.equal(got["lca_mask"], ref["lca_mask"])
    torch.testing.assert_close(got["lca_logits"], ref["lca_logits"], atol=1e-4, rtol=1e-4)
    recs = module.reconstruct(batch, got)
    assert len(recs) == 2 and all(len(r["parent"]) >= len(r["node_score"]) for r in recs)


def test_traced_program_holds_no_device_constant():
    """A program traced on the CPU must also run on a GPU: no tensor is allocated on a fixed device."""
    net = _nets()[0]
    net.lca_bias = (0.0, 0.5, 0.0, 0.0)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, _event(3), check_trace=False, strict=False)
    graph = str(traced.inlined_graph)
    assert "Device" not in graph and '"cpu"' not in graph
