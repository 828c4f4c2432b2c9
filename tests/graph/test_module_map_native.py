"""The module map's native (C++) doublet and triplet stages give exactly the torch stages' edges."""

import pytest
import torch

from gnnreco.graph import ModuleMap, truth_graph
from gnnreco.graph import module_map as mm_mod
from gnnreco.graph._synthetic import helix_event

pytestmark = pytest.mark.skipif(mm_mod._NATIVE.get() is None, reason="no C++ compiler for the native kernel")


@pytest.fixture(scope="module")
def fitted():
    train = [helix_event(600, seed=s, smear=0.02, noise_fraction=0.1) for s in range(5)]
    events = [(e["r"], e["phi"], e["z"], e["module_id"],
               truth_graph(e["particle_id"], "modulewise", order=e["r"], module_id=e["module_id"])) for e in train]
    return ModuleMap.fit(events)


@pytest.mark.parametrize("tolerance", [0.0, 0.3])
@pytest.mark.parametrize("threads", [1, 2])
def test_native_triplet_join_equals_torch(fitted, tolerance, threads):
    mm = fitted
    mm.tolerance = tolerance
    ev = helix_event(800, seed=50, smear=0.03, noise_fraction=0.2)  # unseen event with noise
    mod = torch.as_tensor(ev["module_id"]).clone()
    mod[::17] = 10**6  # some hits on modules the map never saw
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        mm.native = False
        ref = mm(ev["r"], ev["phi"], ev["z"], mod)
        ref2 = mm(ev["r"], ev["phi"], ev["z"], mod, triplets=False)
        mm.native = True
        got = mm(ev["r"], ev["phi"], ev["z"], mod)
        got2 = mm(ev["r"], ev["phi"], ev["z"], mod, triplets=False)
    finally:
        torch.set_num_threads(old)
        mm.native = True
        mm.tolerance = 0.0
    assert 0 < ref.size(1) < ref2.size(1)
    assert torch.equal(got, ref) and torch.equal(got2, ref2)  # same edges in the same order


def test_native_doublet_features_equal_torch(fitted):
    ev = helix_event(500, seed=52, smear=0.02, noise_fraction=0.1)
    r, phi, z = (torch.as_tensor(ev[k], dtype=torch.float64) for k in ("r", "phi", "z"))
    mod = torch.as_tensor(ev["module_id"])
    fitted.native = False
    a = fitted._doublets(r, phi, z, mod)
    fitted.native = True
    b = fitted._doublets(r, phi, z, mod, workers=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[2].shape == b[2].shape == (4, a[0].numel()) and torch.allclose(a[2], b[2], rtol=0, atol=1e-12)


def test_native_join_is_skipped_when_disabled(fitted, monkeypatch):
    ev = helix_event(300, seed=51, smear=0.02)
    calls = []
    orig = ModuleMap._triplet_mask_native

    def spy(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(ModuleMap, "_triplet_mask_native", spy)
    a = fitted(ev["r"], ev["phi"], ev["z"], ev["module_id"])
    assert calls == [1]
    monkeypatch.setenv("GNNRECO_NO_NATIVE", "1")
    b = fitted(ev["r"], ev["phi"], ev["z"], ev["module_id"])
    assert calls == [1] and torch.equal(a, b)
