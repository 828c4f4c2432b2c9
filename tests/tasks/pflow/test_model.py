"""MLPF networks: shapes, padding never leaks (outputs and loss), gradients, ONNX (dynamic N) and TorchScript."""

import numpy as np
import pytest
import torch

from gnnreco.tasks.pflow.loss import focal_loss_multiclass, mlpf_loss, regression_targets
from gnnreco.tasks.pflow.model import MLPFNet, lsh_perm

BACKBONES = ["gnn_lsh", "gravnet", "transformer"]


def _inputs(B=2, N=90, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(B, N, 12, generator=g)
    X[..., 0] = torch.randint(1, 3, (B, N), generator=g).float()
    X[..., 1] = X[..., 1] * 20 + 0.5
    X[..., 5] = X[..., 1] * 1.3
    mask = torch.ones(B, N, dtype=torch.bool)
    if B > 1:
        mask[1, 60:] = False
    Y = torch.zeros(B, N, 7)
    Y[..., 0] = torch.randint(0, 6, (B, N), generator=g).float()
    Y[..., 1] = torch.where(Y[..., 0] == 1, 1.0, 0.0)
    Y[..., 2] = X[..., 1] * 1.1
    Y[..., 3] = X[..., 2]
    Y[..., 4], Y[..., 5] = X[..., 3], X[..., 4]
    Y[..., 6] = X[..., 5] * 0.9
    Y = Y * (Y[..., :1] > 0)
    return X, mask, Y


@pytest.mark.parametrize("backbone", BACKBONES)
def test_shapes_and_padding_does_not_leak(backbone):
    torch.manual_seed(0)
    net = MLPFNet(backbone=backbone, width=32, n_layers=2, bin_size=16, k=8).eval()
    X, mask, _ = _inputs()
    out = net(X, mask)
    assert [tuple(o.shape) for o in out] == [(2, 90, 2), (2, 90, 6), (2, 90, 3), (2, 90, 5), (2, 90, 5)]
    X2 = X.clone()
    X2[1, 60:] = 1e4 * torch.randn(30, 12)  # garbage in padded slots
    out2 = net(X2, mask)
    single = net(X[1:2, :60], mask[1:2, :60])
    for a, b, c in zip(out, out2, single):
        torch.testing.assert_close(a[1, :60], b[1, :60], rtol=0, atol=1e-5)
        torch.testing.assert_close(a[1, :60], c[0], rtol=1e-4, atol=1e-4)
        assert torch.isfinite(b).all()


def test_lsh_perm_sort_padding_last_and_are_a_permutation():
    d = torch.randn(1, 64, 8)
    mask = torch.rand(1, 64) > 0.3
    perm = lsh_perm(d, mask, torch.randn(8, 4), 16)
    assert sorted(perm[0].tolist()) == list(range(64))
    assert mask[0, perm[0]][: int(mask.sum())].all()  # real elements first


def test_loss_ignores_padding_and_is_differentiable():
    torch.manual_seed(1)
    net = MLPFNet(width=32, n_layers=1, bin_size=16)
    X, mask, Y = _inputs()
    loss, parts = mlpf_loss(net(X, mask), X, Y, mask)
    Xg, Yg = X.clone(), Y.clone()
    Xg[1, 60:] = 50.0
    Yg[1, 60:, 0] = 3.0  # fake targets in padding must not count
    Yg[1, 60:, 2:] = 123.0
    loss_g, _ = mlpf_loss(net(Xg, mask), Xg, Yg, mask)
    torch.testing.assert_close(loss, loss_g, rtol=1e-5, atol=1e-5)
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert set(parts) == {"binary", "pid", "charge", "reg_pt", "reg_eta", "reg_sin", "reg_cos", "reg_e"}


def test_linear_pt_chi2_term():
    X = torch.zeros(1, 3, 12)
    X[0, :, 0] = 1
    X[0, :, 1] = torch.tensor([10.0, 4.0, 7.0])
    X[0, :, 5] = X[0, :, 1]
    y = torch.zeros(1, 3, 7)
    y[0, 0] = torch.tensor([2.0, 0.0, 8.0, 0.0, 0.0, 1.0, 8.0])
    y[0, 1] = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # no target: not in the term
    y[0, 2] = torch.tensor([3.0, 0.0, 5.0, 0.0, 0.0, 1.0, 5.0])  # padded below: not in the term
    mask = torch.tensor([[True, True, False]])
    reg = torch.zeros(1, 3, 5)
    reg[0, 0, 0] = float(np.log(0.5))  # predicted p_T 5 vs target 8
    from gnnreco.tasks.pflow.model import decode_momentum

    out = (torch.zeros(1, 3, 2), torch.zeros(1, 3, 6), torch.zeros(1, 3, 3), reg, decode_momentum(X, reg))
    base, parts0 = mlpf_loss(out, X, y, mask)
    loss, parts = mlpf_loss(out, X, y, mask, pt_linear_weight=2.0, pt_linear_scale=1.0)
    assert "pt_linear" not in parts0
    assert parts["pt_linear"].item() == pytest.approx((5.0 - 8.0) ** 2 / (10.0 + 1.0), rel=1e-5)
    assert (loss - base).item() == pytest.approx(2.0 * 9.0 / 11.0, rel=1e-5)
    # on all elements: the real element without target (p_T,pred = 4) counts with target 0, padding does not
    _, parts_all = mlpf_loss(out, X, y, mask, pt_linear_weight=1.0, pt_linear_on_all=True)
    assert parts_all["pt_linear"].item() == pytest.approx((9.0 / 11.0 + 16.0 / 5.0) / 2, rel=1e-5)


def test_focal_loss_and_regression_targets():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    t = torch.tensor([0, 0])
    fl = focal_loss_multiclass(logits, t, gamma=2.0)
    ce = torch.nn.functional.cross_entropy(logits, t, reduction="none")
    assert fl[0] < 1e-4 * ce[1] and fl[1] == pytest.approx(ce[1].item() * (1 - torch.exp(-ce[1])).item() ** 2)
    X = torch.zeros(1, 12)
    X[0, 1], X[0, 5] = 10.0, 20.0
    y = torch.tensor([[1.0, 1.0, 20.0, 0.5, 0.0, 1.0, 10.0]])
    r = regression_targets(X, y)
    torch.testing.assert_close(r, torch.tensor([[np.log(2.0), 0.5, 0.0, 1.0, np.log(0.5)]], dtype=torch.float32))


@pytest.mark.parametrize("backbone", ["gnn_lsh", pytest.param("transformer", marks=pytest.mark.slow)])
def test_onnx_export_dynamic_n_matches_eager(tmp_path, backbone):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = MLPFNet(backbone=backbone, width=32, n_layers=1, bin_size=16).eval()
    X, mask, _ = _inputs(1, 40)
    from gnnreco.tasks.pflow.module import export_mlpf_onnx

    path = export_mlpf_onnx(net, tmp_path / "mlpf.onnx", (X, mask))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for B, N in ((1, 40), (2, 77), (1, 300)):
        Xn, mn, _ = _inputs(B, N, seed=N)
        if B == 2:
            mn[1, 50:] = False
        with torch.no_grad():
            ref = net(Xn, mn)
        got = sess.run(None, {"X": Xn.numpy(), "mask": mn.numpy()})
        for r, g in zip(ref, got):
            assert g.shape == tuple(r.shape)
            np.testing.assert_allclose(g, r.numpy(), rtol=1e-4, atol=1e-4)


def test_torchscript_trace_matches_eager():
    torch.manual_seed(0)
    net = MLPFNet(width=32, n_layers=1, bin_size=16).eval()
    X, mask, _ = _inputs(1, 48)
    traced = torch.jit.trace(net, (X, mask))
    X2, m2, _ = _inputs(2, 70, seed=3)
    with torch.no_grad():
        for a, b in zip(traced(X2, m2), net(X2, m2)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="backbone"):
        MLPFNet(backbone="mamba")
    with pytest.raises(ValueError, match="in_features"):
        MLPFNet(in_features=17)
