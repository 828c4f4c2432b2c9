"""Object-condensation loss: golden values, equality with dense references, memory-safe variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnreco.bench.calo import reference_condensation_loss
from gnnreco.tasks.calo.loss import (
    OCInputError,
    condensation_loss,
    condensation_loss_tiger,
    oc_total,
    payload_loss,
    payload_weights,
)

KEYS = ("attractive", "repulsive", "coward", "noise")


def golden_inputs():
    rng = np.random.default_rng(0)
    beta = rng.random((1000, 1))
    x = rng.random((1000, 3))
    object_id = rng.choice(250, 1000)
    return torch.tensor(beta), torch.tensor(x), torch.tensor(object_id), torch.ones(1000, dtype=torch.float64)


@pytest.mark.parametrize("repulsive", ["chunked", "radius"])
def test_golden_case_of_the_object_condensation_package(repulsive):
    beta, x, oid, w = golden_inputs()
    r = condensation_loss(beta=beta, x=x, object_id=oid, weights=w, q_min=1.0, repulsive=repulsive,
                          max_elements=20_000)
    expected = {"attractive": 1.7951122, "repulsive": 1.9508767, "coward": 0.2156792, "noise": 0.7748448}
    for k, v in expected.items():
        assert abs(float(r[k]) - v) < 1e-6, (k, float(r[k]))


def _loss_and_grads(fn, beta, x, oid, w, **kw):
    b = beta.clone().reshape(-1).requires_grad_(True)
    xx = x.clone().requires_grad_(True)
    r = fn(beta=b, x=xx, object_id=oid, weights=w, q_min=0.5, **kw)
    total = r["attractive"] + 1.7 * r["repulsive"] + 0.3 * r["coward"] + r["noise"]
    total.backward()
    return {k: float(r[k].detach()) for k in KEYS}, b.grad, xx.grad


@pytest.mark.parametrize("repulsive", ["chunked", "radius"])
def test_values_and_gradients_match_dense_reference(repulsive):
    g = torch.Generator().manual_seed(3)
    n, k = 400, 37
    beta = torch.rand(n, generator=g, dtype=torch.float64) * 0.98
    x = torch.rand(n, 4, generator=g, dtype=torch.float64) * 1.5
    oid = torch.randint(0, k, (n,), generator=g)
    w = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    v_ref, gb_ref, gx_ref = _loss_and_grads(reference_condensation_loss, beta, x, oid, w)
    v, gb, gx = _loss_and_grads(condensation_loss, beta, x, oid, w, repulsive=repulsive, max_elements=3000)
    for key in KEYS:
        assert v[key] == pytest.approx(v_ref[key], abs=1e-9), key
    torch.testing.assert_close(gb, gb_ref, atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(gx, gx_ref, atol=1e-8, rtol=1e-6)


def test_against_installed_package_float32():
    oc = pytest.importorskip("object_condensation.pytorch.losses")
    g = torch.Generator().manual_seed(5)
    n = 3000
    beta = torch.rand(n, generator=g) * 0.99
    x = torch.randn(n, 3, generator=g)
    oid = torch.randint(0, 300, (n,), generator=g)
    ref = oc.condensation_loss(beta=beta, x=x, object_id=oid, weights=torch.ones(n), q_min=0.1)
    mine = condensation_loss(beta=beta, x=x, object_id=oid, q_min=0.1)
    for key in KEYS:
        assert float(mine[key]) == pytest.approx(float(ref[key]), rel=1e-5, abs=1e-6), key


def test_soft_potential_matches_dense_reference():
    g = torch.Generator().manual_seed(11)
    n = 300
    beta = torch.rand(n, generator=g, dtype=torch.float64) * 0.95
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    oid = torch.randint(0, 20, (n,), generator=g)
    sigma = torch.rand(n, generator=g, dtype=torch.float64) + 0.2
    w = torch.ones(n, dtype=torch.float64)
    v_ref, gb_ref, gx_ref = _loss_and_grads(reference_condensation_loss, beta, x, oid, w, potential="soft",
                                            distance_scale=sigma)
    v, gb, gx = _loss_and_grads(condensation_loss, beta, x, oid, w, potential="soft", distance_scale=sigma,
                                max_elements=1000)
    for key in KEYS:
        assert v[key] == pytest.approx(v_ref[key], abs=1e-8), key
    torch.testing.assert_close(gx, gx_ref, atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(gb, gb_ref, atol=1e-6, rtol=1e-5)


def test_tiger_subsampling_is_unbiased_on_average():
    beta, x, oid, w = golden_inputs()
    full = float(condensation_loss(beta=beta, x=x, object_id=oid, q_min=1.0)["repulsive"])
    vals = [float(condensation_loss_tiger(beta=beta, x=x, object_id=oid, q_min=1.0, max_n_rep=20_000,
                                          generator=torch.Generator().manual_seed(s))["repulsive"])
            for s in range(5)]
    assert np.mean(vals) == pytest.approx(full, rel=0.02)
    assert all(v != full for v in vals)


def test_memory_is_bounded_by_blocks():
    """The chunked loss keeps only O(N + K·C) tensors for backward: no saved N×K tensor."""
    n, k = 4000, 1000
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g, requires_grad=True)
    beta = torch.rand(n, generator=g).requires_grad_(True)
    oid = torch.randint(1, k + 1, (n,), generator=g)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        r = condensation_loss(beta=beta, x=x, object_id=oid, q_min=1.0, max_elements=100_000)
        (r["attractive"] + r["repulsive"]).backward()
    assert max(saved) < n * 10


def test_bad_inputs_give_clear_errors():
    beta, x, oid, w = golden_inputs()
    with pytest.raises(OCInputError, match="zero hits"):
        condensation_loss(beta=beta[:0], x=x[:0], object_id=oid[:0], q_min=1.0)
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(OCInputError, match="'x' has 1 NaN"):
        condensation_loss(beta=beta, x=bad, object_id=oid, q_min=1.0)
    with pytest.raises(OCInputError, match="'beta' must lie in"):
        condensation_loss(beta=beta + 1.0, x=x, object_id=oid, q_min=1.0)
    with pytest.raises(OCInputError, match="'object_id' has 999 rows"):
        condensation_loss(beta=beta, x=x, object_id=oid[1:], q_min=1.0)
    with pytest.raises(OCInputError, match="q_min"):
        condensation_loss(beta=beta, x=x, object_id=oid, q_min=0.0)


def test_noise_only_and_no_noise_events_are_finite():
    x = torch.rand(10, 3, requires_grad=True)
    beta = torch.rand(10, requires_grad=True)
    r = condensation_loss(beta=beta, x=x, object_id=torch.zeros(10, dtype=torch.long), q_min=1.0)
    assert float(r["attractive"]) == 0 and float(r["noise"]) == pytest.approx(float(beta.mean()))
    sum(r[k] for k in KEYS).backward()
    r = condensation_loss(beta=beta, x=x, object_id=torch.arange(1, 11), q_min=1.0)
    assert float(r["noise"]) == 0.0 and all(torch.isfinite(r[k]) for k in KEYS)
    # a saturated sigmoid (beta == 1) gives a finite charge
    r = condensation_loss(beta=torch.ones(10), x=x, object_id=torch.arange(1, 11) // 2 + 1, q_min=1.0)
    assert all(torch.isfinite(r[k]) for k in KEYS)


def test_payload_weights_and_losses():
    beta = torch.tensor([0.1, 0.9, 0.5, 0.99])
    oid = torch.tensor([0, 1, 1, 2])
    xi = payload_weights(beta, oid)
    assert xi[0] == 0 and xi[3] > xi[1] > xi[2] > 0
    pred = {"energy": torch.tensor([1.0, 2.0, 2.0, 5.0]), "pid_logits": torch.zeros(4, 3),
            "position": torch.zeros(4, 2), "time": torch.zeros(4)}
    tgt = {"energy": torch.tensor([0.0, 2.0, 2.0, 5.0]), "pid": torch.tensor([-1, 0, 0, 2]),
           "position": torch.zeros(4, 3), "time": torch.zeros(4)}
    parts = payload_loss(pred, tgt, xi)
    assert float(parts["energy"]) == 0.0 and float(parts["pid"]) == pytest.approx(np.log(3))
    total = oc_total({"attractive": torch.tensor(1.0), "repulsive": torch.tensor(2.0),
                      "coward": torch.tensor(0.5), "noise": torch.tensor(0.5), **parts}, s_b=2.0)
    assert float(total) == pytest.approx(1 + 2 + 0.5 + 1.0 + np.log(3))


@pytest.mark.parametrize("repulsive", ["chunked", "radius"])
def test_batch_equals_objectwise_mean_of_separate_events(repulsive):
    """With ``batch``, events do not interact: the batch loss is the object-weighted mean of the events'."""
    g = torch.Generator().manual_seed(2)
    evs = []
    for n, k in ((200, 10), (300, 25)):
        evs.append((torch.rand(n, generator=g, dtype=torch.float64) * 0.9, torch.rand(n, 3, generator=g, dtype=torch.float64),
                    torch.randint(0, k + 1, (n,), generator=g)))
    singles = [condensation_loss(beta=b, x=x, object_id=o, q_min=1.0, repulsive=repulsive) for b, x, o in evs]
    off = int(evs[0][2].max())
    oid = torch.cat([evs[0][2], torch.where(evs[1][2] > 0, evs[1][2] + off, 0)])
    batch = torch.cat([torch.zeros(200, dtype=torch.long), torch.ones(300, dtype=torch.long)])
    both = condensation_loss(beta=torch.cat([evs[0][0], evs[1][0]]), x=torch.cat([evs[0][1], evs[1][1]]),
                             object_id=oid, q_min=1.0, batch=batch, repulsive=repulsive)
    ks = [float(s["n_objects"]) for s in singles]
    for key in ("attractive", "repulsive", "coward"):
        expect = sum(float(s[key]) * k for s, k in zip(singles, ks)) / sum(ks)
        assert float(both[key]) == pytest.approx(expect, rel=1e-10), key
    with pytest.raises(OCInputError, match="spans several events"):
        condensation_loss(beta=torch.cat([evs[0][0], evs[1][0]]), x=torch.cat([evs[0][1], evs[1][1]]),
                          object_id=torch.cat([evs[0][2], evs[1][2]]), q_min=1.0, batch=batch)
