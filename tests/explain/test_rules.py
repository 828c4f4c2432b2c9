"""LRP rules on plain MLPs: explicit formulas, Captum agreement, conservation, rule sets, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gnnreco.explain import (
    Epsilon,
    RuleSet,
    UnsupportedLayerError,
    conservation,
    explain,
    load_rule_set,
    make_rule,
    supported_layers,
)
from gnnreco.nn.mlp import MLP

torch.set_num_threads(1)


def _mlp(seed: int = 0, bias: bool = True, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Linear(6, 10, bias=bias), act(), nn.Linear(10, 8, bias=bias), act(),
                      nn.Linear(8, 3, bias=bias)).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.double) * 0.5)
    return m


def _explicit(model: nn.Sequential, x: torch.Tensor, out: int, rho, eps: float, w2_first: bool = False,
              bias_rho=None) -> torch.Tensor:
    """Textbook LRP (Montavon et al. 2019, explicit matrices) for a Linear/ReLU stack, one sample."""
    acts = [x]
    for layer in model:
        acts.append(layer(acts[-1]))
    R = torch.zeros_like(acts[-1])
    R[out] = acts[-1][out]
    layers = list(model)
    for li in range(len(layers) - 1, -1, -1):
        layer, a = layers[li], acts[li]
        if not isinstance(layer, nn.Linear):
            continue  # ReLU: R passes through unchanged
        W = layer.weight
        if w2_first and li == 0:
            W2 = W * W
            R = (W2 / W2.sum(1, keepdim=True)).T @ R
            continue
        Wr = rho(W)
        b = layer.bias if layer.bias is not None else torch.zeros(W.shape[0], dtype=W.dtype)
        z = Wr @ a + (bias_rho(b) if bias_rho else b)
        s = torch.where(z == 0, torch.ones_like(z), torch.sign(z))
        R = a * (Wr.T @ (R / (z + eps * s)))
    return R


@pytest.mark.parametrize("name,rule,rho,bias_rho", [
    ("epsilon", {"name": "epsilon", "epsilon": 1e-3}, lambda w: w, None),
    ("gamma", {"name": "gamma", "gamma": 0.5, "epsilon": 1e-3}, lambda w: w + 0.5 * w.clamp(min=0), None),
    ("zplus", {"name": "zplus", "epsilon": 1e-3}, lambda w: w.clamp(min=0), lambda b: 0 * b),
])
def test_linear_rules_match_explicit_formula(name, rule, rho, bias_rho):
    m = _mlp()
    x = torch.randn(6, dtype=torch.double, generator=torch.Generator().manual_seed(1)).abs()
    ours = explain(m, (x[None],), (0, 2), rules={"types": {"Linear": rule}}).node_relevance[0]
    ref = _explicit(m, x, 2, rho, 1e-3, bias_rho=bias_rho)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_w2_first_layer_then_epsilon():
    m = _mlp(bias=True)
    x = torch.randn(1, 6, dtype=torch.double)
    rules = {"patterns": {"0": {"name": "w2", "epsilon": 0.0}}, "types": {"Linear": {"name": "epsilon", "epsilon": 0.0}}}
    ours = explain(m, (x,), (0, 1), rules=rules).node_relevance[0]
    ref = _explicit(m, x[0], 1, lambda w: w, 0.0, w2_first=True)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_flat_rule_spreads_uniformly():
    m = nn.Sequential(nn.Linear(4, 1, bias=False)).double()
    ex = explain(m, (torch.randn(1, 4, dtype=torch.double),), (0, 0), rules={"patterns": {"0": "flat"}})
    torch.testing.assert_close(ex.node_relevance[0], torch.full((4,), ex.output / 4, dtype=torch.double))


def test_bias_free_lrp0_conserves_exactly():
    m = _mlp(bias=False, act=nn.Tanh)
    x = torch.randn(3, 6, dtype=torch.double)
    ex = explain(m, (x,), (1, 0), rules="zero")
    assert abs(ex.input_relevance - ex.output) < 1e-12 * max(1.0, abs(ex.output))
    # only the explained sample carries relevance
    assert float(ex.node_relevance[[0, 2]].abs().sum()) == 0.0


def test_conservation_residual_with_biases_norms_and_activations():
    for norm in ("layer", "batch"):
        m = MLP(5, 12, 3, n_layers=3, activation="silu", norm=norm).double().eval()
        if norm == "batch":
            for mod in m.modules():
                if isinstance(mod, nn.BatchNorm1d):
                    mod.running_mean.normal_()
                    mod.running_var.uniform_(0.5, 2.0)
        x = torch.randn(7, 5, dtype=torch.double)
        for rules in ("epsilon", "gamma", {"types": {"norm": "epsilon", "Linear": "epsilon"}}):
            c = conservation(explain(m, (x,), (4, 2), rules=rules))
            assert c["relative"] < 1e-8, (norm, rules, c)


def test_layernorm_epsilon_rule_is_affine_with_frozen_std():
    ln = nn.LayerNorm(4).double()
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.zero_()
    m = nn.Sequential(ln)
    x = torch.randn(1, 4, dtype=torch.double)
    ex = explain(m, (x,), (0, 2), rules={"types": {"norm": {"name": "epsilon", "epsilon": 0.0}}})
    sigma = (x.var(unbiased=False) + ln.eps).sqrt()
    centre = torch.eye(4, dtype=torch.double) - 1.0 / 4  # d(x - mean)_2 / dx_j
    ref = x[0] * centre[2] * ln.weight[2] / sigma  # z_2 = sum_j x_j w_2j with the frozen sigma
    torch.testing.assert_close(ex.node_relevance[0], ref)


def test_agreement_with_captum():
    captum = pytest.importorskip("captum")  # noqa: F841
    from captum.attr import LRP
    from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, GammaRule

    m = _mlp(3, act=nn.ReLU).float()
    m[3] = nn.Tanh()
    x = torch.randn(5, 6)
    cases = [(lambda: EpsilonRule(1e-6), {"name": "epsilon", "epsilon": 1e-6}),
             (lambda: GammaRule(0.25), {"name": "gamma", "gamma": 0.25}),
             (lambda: Alpha1_Beta0_Rule(), {"name": "zplus", "bias": True})]
    for make, ours_rule in cases:
        for mod in m:
            if isinstance(mod, nn.Linear):
                mod.rule = make()
        ref = LRP(m).attribute(x.clone().requires_grad_(True), target=1).detach()
        for mod in m:
            if hasattr(mod, "rule"):
                del mod.rule
        ours = torch.stack([explain(m, (x,), (i, 1), rules={"types": {"Linear": ours_rule}},
                                    precision="native").node_relevance[i]
                            for i in range(x.shape[0])])
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_unsupported_layer_raises_with_names():
    m = nn.Sequential(nn.Linear(3, 4), nn.Softmax(-1), nn.Linear(4, 1))
    with pytest.raises(UnsupportedLayerError) as err:
        explain(m, (torch.randn(2, 3),), (0, 0))
    msg = str(err.value)
    assert "'1'" in msg and "Softmax" in msg and "Linear" in msg and "LayerNorm" in msg


def test_unaudited_composite_raises():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return torch.exp(self.lin(x))  # a nonlinearity the engine cannot see

    m = nn.Sequential(Custom(), nn.Linear(3, 1))
    with pytest.raises(UnsupportedLayerError, match="Custom"):
        explain(m, (torch.randn(2, 3),), (0, 0))


def test_model_restored_after_explain():
    m = MLP(4, 8, 2, n_layers=2, norm="layer", dropout=0.1).double().train()
    x = torch.randn(3, 4, dtype=torch.double)
    explain(m, (x,), (0, 0))
    assert m.training
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())
    m.eval()
    y0 = m(x)
    explain(m, (x,), (1, 1))
    torch.testing.assert_close(m(x), y0)


def test_rule_set_resolution_and_configs():
    rs = RuleSet.from_dict({"types": {"Linear": "gamma"}, "patterns": {"head.*": {"name": "epsilon", "epsilon": 0.1}}})
    lin = nn.Linear(2, 2)
    assert rs.rule_for("head.0", lin).name == "epsilon" and rs.rule_for("head.0", lin).epsilon == 0.1
    assert rs.rule_for("body.0", lin).name == "gamma"
    assert rs.rule_for("blocks.0.lin_s", lin).name == "detach"
    assert rs.rule_for("x", nn.ELU()).name == "pass"
    assert rs.rule_for("x", nn.Softmax()) is None
    for name in ("epsilon", "zero", "gamma", "composite"):
        assert isinstance(load_rule_set(name), RuleSet)
    with pytest.raises(ValueError, match="unknown LRP rule"):
        make_rule("alpha2beta1")
    with pytest.raises(ValueError, match="unknown keys"):
        RuleSet.from_dict({"typo": {}})
    with pytest.raises(FileNotFoundError, match="nope"):
        load_rule_set("nope")
    assert isinstance(make_rule({"name": "eps", "epsilon": 0.5}), Epsilon)
    assert "Linear" in supported_layers() and "LayerNorm" in supported_layers()


def test_float32_conservation_on_interaction_gnn():
    """The float32 gap of the last session: LRP-ε (ε = 1e-9) on an untrained Interaction GNN."""
    from gnnreco.tasks.tracking.model import InteractionGNN

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    m = InteractionGNN(node_features=3, edge_features=5, hidden=32, n_graph_iters=3).eval()
    x = torch.randn(200, 3, generator=g)
    ei = torch.randint(0, 200, (2, 600), generator=g)
    ea = torch.randn(600, 5, generator=g)
    exact = explain(m, (x, ei, ea), 11, rules={"epsilon": 1e-9})  # float64 propagation (default)
    assert exact.node_relevance.dtype == torch.float64
    assert conservation(exact)["relative"] < 1e-10
    native = explain(m, (x, ei, ea), 11, rules={"epsilon": 1e-9}, precision="native")
    assert native.node_relevance.dtype == torch.float32
    assert conservation(native)["relative"] < 1e-4
    torch.testing.assert_close(native.node_relevance.double(), exact.node_relevance, rtol=1e-3, atol=1e-5)
    # the ratio rule on LayerNorm amplifies relevance where x ~ 0 but y = beta != 0: exact in float64 only
    amp = explain(m, (x, ei, ea), 11, rules={"epsilon": 1e-9, "types": {"norm": "pass"}})
    assert conservation(amp)["relative"] < 1e-6


def test_float64_copy_is_cached_and_refreshed():
    from gnnreco.explain.api import cast_network

    m = _mlp(1).float()
    a = cast_network(m, torch.float64)
    assert cast_network(m, torch.float64) is a and a[0].weight.dtype == torch.float64
    with torch.no_grad():
        m[0].weight.add_(1.0)  # in-place update (an optimiser step) invalidates the copy
    b = cast_network(m, torch.float64)
    assert b is not a
    torch.testing.assert_close(b[0].weight, m[0].weight.double())
    with pytest.raises(ValueError, match="precision"):
        explain(m, (torch.randn(2, 6),), (0, 0), precision="half")
