"""LHCb-like DFEI event generation: toy backend always, Pythia8 backend when pythia8mc is installed."""

import numpy as np
import pytest

from gnnreco._compat import WITH_PYTHIA8
from gnnreco.sim.lhcb import EXCLUSIVE_MODES, generate_event, has_bottom, impact_parameter
from gnnreco.tasks.dfei.reco import check_lca_matrix, lca_to_adjacency

KEYS = {"x", "pv", "pid", "collision", "pv_true_index", "pv_ip_index", "cluster", "anc", "lca", "n_collisions",
        "mode_id"}


def _check_event(ev, eta=(2.0, 5.0)):
    assert KEYS <= set(ev)
    n = len(ev["x"])
    assert ev["x"].shape == (n, 13) and ev["x"].dtype == np.float32
    lca = check_lca_matrix(ev["lca"], max_value=3)
    assert lca.shape == (n, n)
    # positive LCA exactly within chains
    cl = ev["cluster"]
    same = (cl[:, None] == cl[None, :]) & (cl >= 0)[:, None] & ~np.eye(n, dtype=bool)
    np.testing.assert_array_equal(lca > 0, same)
    # acceptance (smeared momenta: allow the resolution)
    p = ev["x"][:, 3:6].astype(np.float64)
    pt = np.hypot(p[:, 0], p[:, 1])
    et = np.arcsinh(p[:, 2] / pt)
    assert np.all((et > eta[0] - 0.01) & (et < eta[1] + 0.01))
    assert np.all(np.linalg.norm(p, axis=1) > 2.0 * 0.97) and np.all(pt > 0.2 * 0.97)
    assert set(np.abs(ev["pid"]).tolist()) <= {11, 13, 211, 321, 2212}
    assert np.all(np.abs(ev["x"][:, 9]) == 1)
    # the min-IP PV column is one of the reconstructed PVs
    if len(ev["pv"]):
        d = np.abs(ev["x"][:, None, 6:9] - ev["pv"][None]).max(2).min(1)
        assert np.all(d < 1e-5)
    return n


def test_has_bottom():
    assert has_bottom(511) and has_bottom(-521) and has_bottom(5122) and has_bottom(10513) and has_bottom(-5332)
    assert not has_bottom(421) and not has_bottom(211) and not has_bottom(5) and not has_bottom(4122)


def test_impact_parameter_geometry():
    o = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    p = np.array([[0.0, 0.0, 10.0], [0.0, 0.0, 1.0]])
    ip = impact_parameter(o, p, np.zeros((1, 3)))
    np.testing.assert_allclose(ip[:, 0], [1.0, 0.0], atol=1e-12)


def test_toy_events_valid_and_deterministic():
    n_sig = 0
    for s in range(15):
        ev = generate_event(s, backend="toy")
        _check_event(ev)
        n_sig += int((ev["cluster"] >= 0).sum())
        if (ev["cluster"] >= 0).sum() >= 2:
            sig = ev["cluster"] >= 0
            lca_to_adjacency(ev["lca"][np.ix_(sig, sig)])  # a valid tree
    assert n_sig > 0
    a, b = generate_event(7, backend="toy"), generate_event(7, backend="toy")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = generate_event(8, backend="toy")
    assert not np.array_equal(a["x"], c["x"]) or len(a["x"]) == 0


def test_pileup_gives_several_pvs():
    npv = [len(generate_event(s, backend="toy", nu=7.6)["pv"]) for s in range(10)]
    assert np.mean(npv) > 2
    ev = generate_event(3, backend="toy", nu=0.0)
    assert ev["n_collisions"][0] == 1 and (ev["collision"] == 0).all()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="mode="):
        generate_event(0, mode="B_nonsense")
    with pytest.raises(ValueError, match="backend="):
        generate_event(0, backend="geant")


@pytest.mark.skipif(not WITH_PYTHIA8, reason="pythia8mc not installed")
def test_pythia_inclusive_events():
    evs = [generate_event(s, backend="pythia") for s in (11, 12, 13)]
    for ev in evs:
        _check_event(ev)
    # the Pythia engine is re-seeded per event: same seed, same event, whatever ran before
    again = generate_event(12, backend="pythia")
    assert all(np.array_equal(again[k], evs[1][k]) for k in again)
    assert np.mean([len(e["x"]) for e in evs]) > 20  # signal + pile-up tracks


@pytest.mark.slow
@pytest.mark.skipif(not WITH_PYTHIA8, reason="pythia8mc not installed")
@pytest.mark.parametrize("mode", sorted(EXCLUSIVE_MODES))
def test_pythia_exclusive_modes(mode):
    for s in range(3):
        ev = generate_event(s, backend="pythia", mode=mode, nu=1.0)
        _check_event(ev)
        assert ev["mode_id"][0] == sorted(EXCLUSIVE_MODES).index(mode)
