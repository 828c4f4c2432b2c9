"""Edge-classifier variants: shapes, gradients, options, chunking and export equality."""

import pytest
import torch

from gnnreco.tasks.tracking.model import InteractionEdgeClassifier, InteractionGNN, InteractionGNN2, ResIN

VARIANTS = [
    (InteractionGNN, {}),
    (InteractionGNN, {"undirected": True, "recurrent": False}),
    (InteractionGNN2, {}),
    (ResIN, {}),
    (ResIN, {"residual_alpha": None, "concat_edge_history": False}),
]


def graph(n=30, e=90, fe=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randint(0, n, (2, e), generator=g), torch.randn(e, fe, generator=g)


@pytest.mark.parametrize("cls,kw", VARIANTS)
def test_forward_backward_shapes(cls, kw):
    torch.manual_seed(0)
    m = cls(node_features=3, edge_features=5, hidden=16, n_graph_iters=2, **kw)
    x, ei, ea = graph()
    out = m(x, ei, ea)
    assert out.shape == (90,)
    out.sum().backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert m(x, ei[:, :0], ea[:0]).shape == (0,)


def test_recurrent_shares_weights_and_parameter_counts():
    a = InteractionGNN(hidden=16, n_graph_iters=4, recurrent=True)
    b = InteractionGNN(hidden=16, n_graph_iters=4, recurrent=False)
    assert len(a.blocks) == 1 and len(b.blocks) == 4
    assert sum(p.numel() for p in b.parameters()) > sum(p.numel() for p in a.parameters())


def test_undirected_is_symmetric_under_edge_reversal():
    torch.manual_seed(1)
    m = InteractionGNN(edge_features=0, hidden=16, n_graph_iters=2, undirected=True).eval()
    x, ei, _ = graph()
    assert torch.allclose(m(x, ei), m(x, ei.flip(0)), atol=1e-5)


def test_checkpointing_gives_the_same_gradients():
    torch.manual_seed(2)
    a = InteractionGNN(hidden=16, n_graph_iters=3, checkpointing=False)
    b = InteractionGNN(hidden=16, n_graph_iters=3, checkpointing=True)
    b.load_state_dict(a.state_dict())
    x, ei, _ = graph()
    a(x, ei).pow(2).sum().backward()
    b(x, ei).pow(2).sum().backward()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-5)


@pytest.mark.parametrize("cls", [InteractionGNN, InteractionGNN2, ResIN])
def test_predict_chunked_equals_forward(cls):
    m = cls(edge_features=5, hidden=16, n_graph_iters=2).eval()
    x, ei, ea = graph(e=200)
    with torch.no_grad():
        assert torch.allclose(m(x, ei, ea), m.predict_chunked(x, ei, ea, n_chunks=7), atol=1e-5)
    assert m.n_chunks == 1


def test_errors_name_the_argument():
    m = InteractionGNN(edge_features=5, hidden=8, n_graph_iters=1)
    x, ei, ea = graph()
    with pytest.raises(ValueError, match="edge_attr"):
        m(x, ei)
    with pytest.raises(ValueError, match=r"x must have shape \[N, 3\]"):
        m(torch.randn(4, 2), ei)
    with pytest.raises(ValueError, match="skip"):
        InteractionEdgeClassifier(skip="dense")


@pytest.mark.parametrize("cls", [InteractionGNN, InteractionGNN2, ResIN])
def test_torchscript_trace_equals_eager_on_other_graph_sizes(cls, tmp_path):
    torch.manual_seed(3)
    m = cls(edge_features=5, hidden=16, n_graph_iters=2).eval()
    ex = graph(20, 60)
    with torch.no_grad():
        traced = torch.jit.trace(m, ex, check_trace=False)
    traced.save(str(tmp_path / "m.pt"))
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x, ei, ea = graph(45, 170, seed=9)
    with torch.no_grad():
        assert (loaded(x, ei, ea) - m(x, ei, ea)).abs().max() < 1e-5


def _onnx_roundtrip(m, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    ex = graph(20, 60)
    path = tmp_path / "m.onnx"
    torch.onnx.export(m, ex, str(path), input_names=["x", "edge_index", "edge_attr"], output_names=["logits"],
                      opset_version=17, dynamo=False,
                      dynamic_axes={"x": {0: "N"}, "edge_index": {1: "E"}, "edge_attr": {0: "E"}, "logits": {0: "E"}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, ei, ea = graph(45, 170, seed=9)
    x[40:] = 0.0
    ei[1] = ei[1] % 40  # nodes 40-44 receive no message: empty groups in every aggregation
    got = sess.run(None, {"x": x.numpy(), "edge_index": ei.numpy(), "edge_attr": ea.numpy()})[0]
    with torch.no_grad():
        ref = m(x, ei, ea).numpy()
    assert abs(got - ref).max() < 1e-5


@pytest.mark.parametrize("cls", [InteractionGNN2, ResIN])
def test_onnx_equals_eager(cls, tmp_path):
    torch.manual_seed(4)
    _onnx_roundtrip(cls(edge_features=5, hidden=16, n_graph_iters=2).eval(), tmp_path)


@pytest.mark.slow
def test_onnx_equals_eager_multi_aggregation(tmp_path):
    torch.manual_seed(5)
    _onnx_roundtrip(InteractionGNN(edge_features=5, hidden=16, n_graph_iters=2).eval(), tmp_path)
