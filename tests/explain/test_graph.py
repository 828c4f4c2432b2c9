"""Relevance through message passing on every task model: LRP forwards equal the models' forwards,
aggregation rules, conservation, sparse storage."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gnnreco.explain import conservation, explain, load_rule_set
from gnnreco.explain.graph import lrp_multi_aggregate
from gnnreco.explain.propagate import lrp_session

torch.set_num_threads(1)


def _tracking_inputs(seed=0, n=20, e=50):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.double)
    ei = torch.randint(0, n, (2, e), generator=g)
    ea = torch.randn(e, 2, generator=g, dtype=torch.double)
    return x, ei, ea


def _calo_inputs(seed=0, n=40):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 9, generator=g, dtype=torch.double)
    b = torch.zeros(n, dtype=torch.long)
    b[n // 2:] = 1
    return x, b


def _pflow_inputs(seed=0, n=20):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(1, n, 12, generator=g, dtype=torch.double)
    X[..., 0] = torch.randint(1, 3, (1, n), generator=g).double()
    X[..., 1] = X[..., 1].abs() * 5
    X[..., 5] = X[..., 5].abs() * 5
    mask = torch.ones(1, n, dtype=torch.bool)
    mask[0, -3:] = False
    return X, mask


def _dfei_inputs(seed=0, n=12):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    x[:, 3:6] *= 5
    batch = torch.zeros(n, dtype=torch.long)
    batch[n // 2:] = 1
    ei = torch.tensor([[i, j] for i in range(n) for j in range(n) if i != j and batch[i] == batch[j]]).T
    return x, ei, batch, torch.tensor([1, 2])


def _models():
    from gnnreco.tasks.calo.model import CaloGravNet
    from gnnreco.tasks.dfei.model import EncodeProcessDecode
    from gnnreco.tasks.pflow.model import MLPFNet
    from gnnreco.tasks.tracking.model import InteractionGNN, InteractionGNN2, ResIN

    torch.manual_seed(0)
    out = []
    for cls in (InteractionGNN, InteractionGNN2, ResIN):
        out.append((cls.__name__, cls(node_features=3, edge_features=2, hidden=12, n_graph_iters=2).double(),
                    _tracking_inputs(), 7))
    out.append(("undirected-IGNN", InteractionGNN(node_features=3, edge_features=0, hidden=12, n_graph_iters=2,
                                                  directions="undirected", undirected=True).double(),
                _tracking_inputs()[:2], 3))
    out.append(("CaloGravNet", CaloGravNet(hidden=12, n_blocks=2, k=5, prop_dim=8).double(), _calo_inputs(),
                ("beta", 4)))
    out.append(("CaloGravNet-scale", CaloGravNet(hidden=12, n_blocks=1, k=5, prop_dim=8, local_scale=True,
                                                 subtract_self=False).double(), _calo_inputs(), ("energy", 30)))
    for bb in ("gravnet", "gnn_lsh"):
        out.append((f"MLPF-{bb}", MLPFNet(backbone=bb, width=12, n_layers=1, bin_size=8, k=4, distance_dim=6,
                                          prop_dim=6).double(), _pflow_inputs(), ("pid", 2, 1)))
    out.append(("DFEI-EPD", EncodeProcessDecode(latent=8, n_blocks=2, hidden=12, edge_head=4, node_head=2),
                _dfei_inputs(), ("edge", 5, 2)))
    return out


MODELS = _models()


@pytest.mark.parametrize("name,model,inputs,target", MODELS, ids=[m[0] for m in MODELS])
def test_lrp_forward_equals_model_forward(name, model, inputs, target):
    model.eval()
    with torch.no_grad():
        ref = model(*inputs)
    with lrp_session(model, load_rule_set("epsilon")):
        with torch.enable_grad():
            got = model(*inputs)
    flat = lambda o: [t for t in (o.values() if isinstance(o, dict) else o if isinstance(o, tuple) else [o])  # noqa: E731
                      if t is not None]
    for a, b in zip(flat(ref), flat(got)):
        torch.testing.assert_close(b.detach(), a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,model,inputs,target", MODELS, ids=[m[0] for m in MODELS])
@pytest.mark.parametrize("rules", ["zero", "gamma", "composite"])
def test_conservation_on_task_models(name, model, inputs, target, rules):
    # float64 so that round-off does not hide a leak (biases absorb large, cancelling shares)
    model = copy.deepcopy(model).double()
    inputs = tuple(t.double() if t.is_floating_point() else t for t in inputs)
    ex = explain(model, inputs, target, rules=rules)
    c = conservation(ex)
    assert c["relative"] < 1e-4, c
    assert torch.isfinite(ex.node_relevance).all()
    # the explained output is where the relevance starts
    assert ex.output != 0.0


def test_messages_are_sparse_per_edge():
    name, model, (x, b), target = next(m for m in MODELS if m[0] == "CaloGravNet")
    ex = explain(model, (x, b), target)
    n = x.shape[0]
    assert len(ex.messages) == 4  # 2 blocks x (mean, max)
    for m in ex.messages:
        assert m.relevance.shape[0] == n * 5  # k messages per hit, never N x N
        assert m.source is not None and m.index.shape[0] == m.relevance.shape[0]
    ei, r = ex.graph_edges("blocks.0.knn.mean")
    assert ei.shape == (2, n * 5) and r.shape == (n * 5,)
    # kNN stays inside each event: no relevance crosses events
    assert bool((b[ei[0]] == b[ei[1]]).all())
    assert float(ex.node_relevance[b != b[4]].abs().sum()) == 0.0


def test_tracking_edge_relevance_on_input_edges():
    name, model, inputs, target = MODELS[0]
    ex = explain(model, inputs, target)
    er = ex.edge_relevance()
    assert er.shape == (inputs[1].shape[1],)
    assert ex.edge_attr_relevance.shape == inputs[2].shape
    assert ex.target_nodes.tolist() == inputs[1][:, target].tolist()


class _AggNet(nn.Module):
    """x -> Linear -> aggregate over a fixed graph -> sum: isolates one aggregation rule."""

    def __init__(self, reduce):
        super().__init__()
        self.lin = nn.Linear(2, 2, bias=False)
        self.reduce = reduce

    def forward(self, x, edge_index):
        m = self.lin(x)[edge_index[0]]
        return lrp_multi_aggregate(m, edge_index[1], x.shape[0], (self.reduce,), "agg", edge_index[0])


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "std"])
def test_aggregation_rules(reduce):
    from gnnreco.explain.graph import register_composite

    register_composite(_AggNet)
    net = _AggNet(reduce).double()
    with torch.no_grad():
        net.lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[1.0, 2.0], [3.0, 1.0], [0.5, 4.0], [0.0, 0.0]], dtype=torch.double)
    ei = torch.tensor([[0, 1, 2], [3, 3, 3]])
    ex = explain(net, (x, ei), (3, 0), rules="zero")
    msg = ex.messages[0].relevance[:, 0]  # feature 0 of the messages into node 3: values 1, 3, 0.5
    vals = torch.tensor([1.0, 3.0, 0.5], dtype=torch.double)
    out = ex.output
    if reduce in ("sum", "mean"):
        ref = vals / vals.sum() * out  # proportional to the contribution
    elif reduce == "max":
        ref = torch.tensor([0.0, out, 0.0], dtype=torch.double)  # all to the arg-max
    else:
        dev2 = (vals - vals.mean()) ** 2
        ref = dev2 / dev2.sum() * out  # share of the variance
    torch.testing.assert_close(msg, ref)
    torch.testing.assert_close(ex.node_relevance[:3, 0], ref)
    assert abs(conservation(ex)["residual"]) < 1e-12


def test_lsh_bin_messages_recorded_and_consistent():
    name, model, inputs, target = next(m for m in MODELS if m[0] == "MLPF-gnn_lsh")
    model = copy.deepcopy(model).double()
    ex = explain(model, inputs, target, rules="zero")
    lsh = [m for m in ex.messages if m.name.endswith("lsh")]
    # two GHConv steps in each of the identification and regression layers
    assert [m.name for m in lsh] == [f"layers_{b}.0.convs.{i}.lsh" for b in ("id", "reg") for i in (0, 1)]
    n_real = int(inputs[1].sum())
    for m in lsh:
        # edges only between real elements of the same bin (bin size 8): at most N * 8 messages
        assert m.relevance.shape[0] <= n_real * 8 and m.relevance.shape[1] == 1
        assert int(m.source.max()) < n_real and int(m.index.max()) < n_real
    # the GHConv aggregate of the explained element: its messages' relevance adds up to the
    # relevance of the aggregate, which is finite and not all zero across the event
    assert torch.isfinite(torch.cat([m.relevance for m in lsh])).all()
    assert float(torch.cat([m.relevance for m in lsh]).abs().sum()) > 0


class _GravNetNet(nn.Module):
    """PyG-style GravNetConv followed by a Linear head (a test model)."""

    def __init__(self):
        super().__init__()
        from gnnreco.nn.gravnet_conv import GravNetConv

        self.conv = GravNetConv(5, 8, space_dimensions=3, propagate_dimensions=6, k=4)
        self.head = nn.Linear(8, 2)

    def forward(self, x, batch):
        return self.head(torch.relu(self.conv(x, batch)))


def test_gravnet_conv_forward_and_conservation():
    from gnnreco.explain.graph import register_composite

    register_composite(_GravNetNet)
    torch.manual_seed(0)
    net = _GravNetNet().double().eval()
    x = torch.randn(30, 5, dtype=torch.double)
    b = torch.zeros(30, dtype=torch.long)
    b[15:] = 1
    with torch.no_grad():
        ref = net(x, b)
    with lrp_session(net, load_rule_set("epsilon")), torch.enable_grad():
        got = net(x, b)
    torch.testing.assert_close(got.detach(), ref)
    ex = explain(net, (x, b), (3, 1), rules="zero")
    assert conservation(ex)["relative"] < 1e-10
    names = [m.name for m in ex.messages]
    assert names == ["conv.knn.mean", "conv.knn.max"]
    ei, r = ex.graph_edges("conv.knn.mean")
    assert ei.shape[1] == 30 * 4 and bool((b[ei[0]] == b[ei[1]]).all())
    # the explained node only receives messages from its own kNN list: other nodes' inputs reach it
    # only through those messages (and its own self term)
    srcs = set(ei[0][ei[1] == 3].tolist()) | {3}
    nz = set(torch.where(ex.node_relevance.abs().sum(-1) > 0)[0].tolist())
    assert nz <= srcs


def test_transformer_backbone_attention_held_constant():
    from gnnreco.tasks.pflow.model import MLPFNet

    torch.manual_seed(0)
    net = MLPFNet(backbone="transformer", width=8, n_layers=2, heads=2).double().eval()
    X, mask = _pflow_inputs()
    with torch.no_grad():
        ref = net(X, mask)
    with lrp_session(net, load_rule_set("epsilon")):
        got = net(X, mask)
    for a, b in zip(ref, got):  # the LRP forward (explicit softmax) equals scaled_dot_product_attention
        torch.testing.assert_close(b.detach(), a)
    ex = explain(net, (X, mask), ("pid", 2, 1), rules="zero")
    assert conservation(ex)["relative"] < 1e-8
    assert float(ex.node_relevance[~mask[0]].abs().sum()) == 0.0  # padded elements are never attended to
    names = [m.name for m in ex.messages]
    assert names == ["layers_id.0.attention", "layers_id.1.attention", "layers_reg.0.attention",
                     "layers_reg.1.attention"]
    n_real = int(mask.sum())
    m0 = ex.messages[0]
    assert m0.relevance.shape == (n_real * n_real, 1)
    assert bool(mask[0][m0.source].all() and mask[0][m0.index].all())
    # the last identification layer's messages into the explained element carry relevance; others' are 0
    m1 = ex.messages[1]
    assert float(m1.relevance[m1.index != 2].abs().sum()) == 0.0
    assert float(m1.relevance[m1.index == 2].abs().sum()) > 0.0


def test_transformer_attention_messages_topk_beyond_dense_limit(monkeypatch):
    import gnnreco.explain.graph as graph
    from gnnreco.tasks.pflow.model import MLPFNet

    monkeypatch.setattr(graph, "ATTENTION_DENSE_LIMIT", 16)
    torch.manual_seed(0)
    net = MLPFNet(backbone="transformer", width=8, n_layers=1, heads=2).double().eval()
    X, mask = _pflow_inputs()
    ex = explain(net, (X, mask), ("pid", 2, 1))
    n_real = int(mask.sum())
    assert ex.messages[0].relevance.shape[0] == n_real * n_real  # k = 64 > N: all sources kept per target
    assert conservation(ex)["relative"] < 1e-8


@pytest.mark.parametrize("geo_scale", [0.0, 16.0])
@pytest.mark.parametrize("backbone", ["gravnet", "gnn_lsh"])
def test_mlpf_geometric_prior_forward_equal(backbone, geo_scale):
    from gnnreco.tasks.pflow.model import MLPFNet

    torch.manual_seed(0)
    net = MLPFNet(backbone=backbone, width=12, n_layers=1, bin_size=8, k=4, distance_dim=6, prop_dim=6,
                  geo_scale=geo_scale).double().eval()
    X, mask = _pflow_inputs()
    X[..., 2:5] = torch.randn(1, X.shape[1], 3, dtype=torch.double)
    with torch.no_grad():
        ref = net(X, mask)
    with lrp_session(net, load_rule_set("epsilon")):
        got = net(X, mask)
    for a, b in zip(ref, got):
        torch.testing.assert_close(b.detach(), a)
    assert conservation(explain(net, (X, mask), ("pid", 3, 2)))["relative"] < 1e-8


def _dfei_pipelines():
    from gnnreco.tasks.dfei.model import DFEIChain, DFEIFused

    torch.manual_seed(1)
    chain = DFEIChain(latent=8, hidden=12, np_cut=0.3, ep_cut=0.3, k_nearest=4).eval()
    fused = DFEIFused(latent=8, hidden=12, n_blocks=3, node_cut=0.2, edge_cut=0.2).eval()
    return [("chain", chain), ("fused", fused)]


@pytest.mark.parametrize("name,model", _dfei_pipelines(), ids=["chain", "fused"])
def test_dfei_pipeline_forward_and_conservation(name, model):
    x, _, b, npv = _dfei_inputs(n=16)
    with torch.no_grad():
        ref = model(x, b, npv)
    with lrp_session(model, load_rule_set("epsilon")):
        got = model(x, b, npv)
    for k in ("node_logit", "edge_logit", "lca_logits"):
        torch.testing.assert_close(got[k].detach(), ref[k])
    pairs = torch.nonzero(ref["lca_mask"]).view(-1)
    assert pairs.numel() > 0, "test model prunes everything; change the cuts"
    e = int(pairs[0])
    for target in (("lca", e, 1), ("edge", e), ("node", int(ref["pair_index"][0, e]))):
        for precision in ("float64", "native"):
            ex = explain(model, (x, b, npv), target, precision=precision)
            c = conservation(ex)
            assert c["relative"] < 1e-4, (target, precision, c)
            assert ex.node_relevance.shape == (16, 11)
            assert ex.edge_attr_relevance.shape[0] == ex.edge_index.shape[1]
            # relevance stays inside the explained pair's event (events never mix)
            ev = int(b[ex.target_nodes[0]])
            assert float(ex.node_relevance[b != ev].abs().sum()) == 0.0
    pruned = torch.nonzero(~ref["lca_mask"]).view(-1)
    if pruned.numel():
        with pytest.raises(ValueError, match="pruned"):
            explain(model, (x, b, npv), ("lca", int(pruned[0]), 1))


def test_explain_chain_explains_each_stage():
    from gnnreco.explain import explain_chain

    model = _dfei_pipelines()[0][1]
    x, _, b, npv = _dfei_inputs(n=16)
    with torch.no_grad():
        out = model(x, b, npv)
    e = int(torch.nonzero(out["lca_mask"]).view(-1)[0])
    ch = explain_chain(model, (x, b, npv), e, 1)
    i, j = (int(t) for t in out["pair_index"][:, e])
    assert ch["pair"] == (i, j)
    assert ch["lca"].output == pytest.approx(float(out["lca_logits"][e, 1]), rel=1e-5)
    assert ch["edge_pruning"].output == pytest.approx(float(out["edge_logit"][e]), rel=1e-5)
    assert [n.output for n in ch["node_pruning"]] == pytest.approx(
        [float(out["node_logit"][i]), float(out["node_logit"][j])], rel=1e-5)
    with pytest.raises(TypeError, match="DFEIChain"):
        explain_chain(torch.nn.Linear(2, 2), (torch.randn(1, 2),), 0, 0)
