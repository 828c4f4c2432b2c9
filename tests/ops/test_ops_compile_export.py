"""torch.library registration (opcheck, torch.compile), TorchScript save/load and ONNX export."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

import gnnreco.ops as ops

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def _data():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(30, 4, generator=g, dtype=torch.double)
    idx = torch.randint(0, 6, (30,), generator=g)
    return src, idx


@pytest.mark.parametrize("reduce", ["max"])
def test_opcheck_scatter_reduce(reduce):
    src, idx = _data()
    ie = idx.view(-1, 1).expand(src.shape)
    torch.library.opcheck(torch.ops.gnnreco.scatter_reduce.default, (src.requires_grad_(), ie, 0, 7, reduce))


def test_opcheck_fused_and_segment():
    src, idx = _data()
    torch.library.opcheck(
        torch.ops.gnnreco.multi_aggregate.default, (src.requires_grad_(), idx, "mean,max,std", 7, True)
    )
    x = torch.randn(10, 3, dtype=torch.double, requires_grad=True)
    ei = torch.randint(0, 10, (2, 40))
    w = torch.rand(40, dtype=torch.double, requires_grad=True)
    torch.library.opcheck(torch.ops.gnnreco.gather_scatter.default, (x, ei[0], ei[1], w, "mean", 12))
    indptr = torch.tensor([0, 5, 5, 17, 30])
    torch.library.opcheck(torch.ops.gnnreco.segment_csr.default, (src, indptr, "max"))


def test_compile_custom_op_fullgraph_aot_eager():
    src, idx = _data()
    s = src.clone().requires_grad_()

    def f(a, i):
        out = torch.ops.gnnreco.multi_aggregate(a, i, "mean,max", 7, True)[0]
        return out + torch.ops.gnnreco.scatter_reduce(a, i.view(-1, 1).expand(a.shape), 0, 7, "sum")[0].repeat(1, 2)

    cf = torch.compile(f, backend="aot_eager", fullgraph=True)
    out = cf(s, idx)
    out.pow(2).sum().backward()
    ref_s = src.clone().requires_grad_()
    ref = f(ref_s, idx)
    ref.pow(2).sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(s.grad, ref_s.grad)


@pytest.mark.slow
def test_compile_inductor_public_functions():
    src, idx = _data()

    def f(a, i):
        return (
            ops.scatter(a, i, 0, None, 7, "max")
            + ops.scatter_mean(a, i, 0, None, 7)
            + ops.multi_aggregate(a, i, ("mean", "max"), 7)[:, :4]
            + ops.gather_scatter(a[:7], torch.stack([i % 7, i]), None, "sum", 7)
        )

    cf = torch.compile(f)
    s = src.clone().requires_grad_()
    out = cf(s, idx)
    out.sum().backward()
    r = src.clone().requires_grad_()
    ref = f(r, idx)
    ref.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(s.grad, r.grad)


class _ScriptMe(torch.nn.Module):
    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        a = ops.scatter(x, index, 0, None, 7, "mean")
        b, _ = ops.scatter_max(x, index, 0, None, 7)
        c = ops.segment_csr(x, torch.tensor([0, 10, 10, 30]), None, "sum")
        d = ops.scatter_softmax(x, index, 0)
        return torch.cat([a, b, c, ops.scatter_sum(d, index, 0, None, 7)], 0)


def test_torchscript_module_save_load():
    src, idx = _data()
    m = torch.jit.script(_ScriptMe())
    buf = io.BytesIO()
    torch.jit.save(m, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    torch.testing.assert_close(loaded(src, idx), _ScriptMe()(src, idx))


class _OnnxMe(torch.nn.Module):
    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                ops.scatter_sum(x, index, 0, None, 7),
                ops.scatter_mean(x, index, 0, None, 7),
                ops.scatter(x, index, 0, None, 7, "max"),
                ops.scatter_max(x, index, 0, None, 7)[0],
            ],
            1,
        )


def test_onnx_export_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(25, 3, generator=g)
    index = torch.randint(0, 5, (25,), generator=g)  # groups 5, 6 empty
    path = tmp_path / "scatter.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_OnnxMe(), (x, index), str(path), input_names=["x", "index"], dynamo=False)
    sess = ort.InferenceSession(str(path))
    x2 = torch.randn(25, 3, generator=g)  # new values, same shapes
    got = sess.run(None, {"x": x2.numpy(), "index": index.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), _OnnxMe()(x2, index))
    assert not any(n.domain not in ("", "ai.onnx") for n in __import__("onnx").load(str(path)).graph.node)


class _FusedExportMe(torch.nn.Module):
    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        h = ops.gather_scatter(x, edge_index, w, "mean", 6)
        return ops.multi_aggregate(h[edge_index[0]], edge_index[1], ("mean", "max", "std"), 6)


def test_fused_ops_trace_and_onnx_use_standard_ops(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 3, generator=g)
    ei = torch.randint(0, 6, (2, 20), generator=g)
    w = torch.rand(20, generator=g)
    ref = _FusedExportMe()(x, ei, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(_FusedExportMe(), (x, ei, w))
    assert "gnnreco::" not in str(traced.graph)
    torch.testing.assert_close(traced(x, ei, w), ref)
    path = tmp_path / "fused.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_FusedExportMe(), (x, ei, w), str(path), input_names=["x", "ei", "w"], dynamo=False)
    got = ort.InferenceSession(str(path)).run(None, {"x": x.numpy(), "ei": ei.numpy(), "w": w.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), ref, atol=1e-5, rtol=1e-5)
