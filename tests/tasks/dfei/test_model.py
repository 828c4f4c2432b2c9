"""DFEI networks, loss and metrics on small batches."""

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from gnnreco.data.datamodule import event_to_data
from gnnreco.sim.lhcb import generate_event
from gnnreco.tasks.dfei.data import pair_labels, process_event
from gnnreco.tasks.dfei.loss import dfei_loss, lca_class_weights
from gnnreco.tasks.dfei.metrics import chain_categories, evaluate_event, predicted_lca, roc_curve
from gnnreco.tasks.dfei.model import DFEIChain, DFEIFused, GNBlock, _topk_per_receiver
from gnnreco.tasks.dfei.reco import lca_from_ancestors, lca_to_adjacency


def _batch(seeds=(0, 1), empty=False):
    evs = [process_event(generate_event(s, backend="toy", nu=0.5, toy_tracks_per_collision=10.0)) for s in seeds]
    if empty:
        evs.append(process_event({"x": np.zeros((0, 13), np.float32), "lca": np.zeros((0, 0), int)}))
    data = [event_to_data({k: torch.as_tensor(v) for k, v in ev.items()}) for ev in evs]
    return Batch.from_data_list(data)


def _run(net, b):
    lab = lambda ei: pair_labels(ei, b.lca_edge_index, b.lca_value, b.num_nodes)  # noqa: E731
    return net(b.x, b.batch, b.n_pv.view(-1), y_node=b.y_node, pair_label=lab), lab


@pytest.mark.parametrize("make", [lambda: DFEIChain(hidden=16, np_blocks=1, ep_blocks=1, lca_blocks=1),
                                  lambda: DFEIFused(hidden=16, n_blocks=2, prune="both", k_edges=5),
                                  lambda: DFEIFused(hidden=16, n_blocks=2, prune="none", weighted_mp=False,
                                                    max_dz=None, max_theta=None)])
def test_forward_backward_shapes(make):
    torch.manual_seed(0)
    net = make()
    b = _batch(empty=True)
    for train in (True, False):
        net.train(train)
        out, lab = _run(net, b)
        n, e = b.num_nodes, out["pair_index"].shape[1]
        assert out["node_logit"].shape == (n,)
        assert out["edge_logit"].shape == (e,) and out["lca_logits"].shape == (e, 4)
        assert (b.batch[out["pair_index"][0]] == b.batch[out["pair_index"][1]]).all()
        loss, parts = dfei_loss(out, b.y_node, lab)
        assert torch.isfinite(loss)
        if train:
            loss.backward()
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_chain_prunes_with_cut_at_eval():
    torch.manual_seed(0)
    net = DFEIChain(hidden=16, np_blocks=1, ep_blocks=1, lca_blocks=1, np_cut=1.1).eval()  # nothing passes
    b = _batch()
    out, _ = _run(net, b)
    assert out["pair_index"].shape[1] == 0
    net.train()
    out, _ = _run(net, b)  # teacher forcing: true signal nodes pass in training
    assert out["pair_index"].shape[1] > 0


def test_gn_block_permutation_equivariant():
    torch.manual_seed(0)
    blk = GNBlock(4, 3, 2, 5, hidden=8)
    v, e, u = torch.randn(6, 3), torch.randn(7, 4), torch.randn(1, 2)
    ei = torch.randint(0, 6, (2, 7))
    batch = torch.zeros(6, dtype=torch.long)
    v1, e1, u1 = blk(v, e, u, ei, batch)
    perm = torch.randperm(6)
    inv = torch.argsort(perm)
    v2, e2, u2 = blk(v[perm], e, u, inv[ei], batch)
    torch.testing.assert_close(v2, v1[perm])
    torch.testing.assert_close(e2, e1)
    torch.testing.assert_close(u2, u1)


def test_topk_per_receiver():
    score = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.8, 0.7])
    recv = torch.tensor([0, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(_topk_per_receiver(score, recv, 2).numpy(), [0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(_topk_per_receiver(score, recv, 1).numpy(), [0, 1, 0, 0, 1, 1])


def test_class_weights_and_label_range():
    w = lca_class_weights(torch.tensor([0, 0, 0, 1]))
    assert w[0] == pytest.approx(4 / (4 * 3)) and w[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        lca_class_weights(torch.tensor([0, 5]))


def test_chain_categories_hand_cases():
    anc = np.array([[10, 11], [10, 11], [10, -1], [20, -1], [20, -1], [-1, -1]])
    truth = lca_from_ancestors(anc)
    cluster = np.array([0, 0, 0, 1, 1, -1])
    perfect = lca_to_adjacency(truth)
    assert chain_categories(cluster, truth, perfect) == ["perfect", "perfect"]
    flat = truth.copy()
    flat[:3, :3] = 1 - np.eye(3, dtype=int)  # right set, wrong hierarchy
    assert chain_categories(cluster, truth, lca_to_adjacency(flat))[0] == "wrong_hierarchy"
    extra = truth.copy()
    extra[3:5, 5] = extra[5, 3:5] = 1
    extra[3, 4] = extra[4, 3] = 1
    assert chain_categories(cluster, truth, lca_to_adjacency(extra))[1] == "none_isolated"
    part = np.zeros_like(truth)
    part[0, 1] = part[1, 0] = 1
    assert chain_categories(cluster, truth, lca_to_adjacency(part)) == ["part_reco", "not_found"]


def test_evaluate_event_perfect_prediction():
    anc = np.array([[10, 11], [10, 11], [10, -1], [-1, -1]])
    truth = lca_from_ancestors(anc)
    pairs = np.array(np.nonzero(~np.eye(4, dtype=bool)))
    probs = np.eye(4)[truth[pairs[0], pairs[1]]]
    rec = evaluate_event(np.array([0.9, 0.9, 0.9, 0.1]), (truth > 0).any(1).astype(int), np.array([0, 0, 0, -1]),
                         truth, pairs, probs, 0.5)
    assert rec["perfect_event"] and rec["perfect_lca"] and rec["categories"] == ["perfect"]
    assert rec["n_sig_sel"] == 3 and rec["n_bkg_sel"] == 0
    np.testing.assert_array_equal(predicted_lca(4, pairs, probs), truth)


def test_roc_curve_endpoints():
    f, t, _ = roc_curve(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0]))
    assert f[0] == 0 and t[0] == 0 and f[-1] == 1 and t[-1] == 1
    np.testing.assert_allclose(t, [0, 0.5, 0.5, 1, 1])


@pytest.mark.parametrize("kind", ["chain", "fused"])
def test_dfei_models_run_in_float64(kind):
    """A float64 model on float64 inputs stays float64 (the global inputs used to be forced to float32)."""
    from gnnreco.tasks.dfei.model import DFEIChain, DFEIFused

    torch.manual_seed(0)
    model = (DFEIChain(latent=8, hidden=12, np_cut=0.3, ep_cut=0.3, k_nearest=4) if kind == "chain"
             else DFEIFused(latent=8, hidden=12, n_blocks=2, node_cut=0.2, edge_cut=0.2)).eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(14, 10, generator=g)
    x[:, 3:6] *= 5
    batch = torch.tensor([0] * 7 + [1] * 7)
    npv = torch.tensor([1, 2])
    with torch.no_grad():
        ref = model(x, batch, npv)
        out = model.double()(x.double(), batch, npv)
    for key in ("node_logit", "edge_logit", "lca_logits"):
        assert out[key].dtype == torch.float64, key
        torch.testing.assert_close(out[key].float(), ref[key], atol=1e-4, rtol=1e-4)
