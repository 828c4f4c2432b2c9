"""Parametric detector: topological clustering, tracker and calorimeter response, target assignment."""

import numpy as np
import pytest

from gnnreco.sim.delphes_like import DetectorConfig, particle_class, simulate_detector, topo_cluster


def _gen(rows):
    """rows: (pid, charge, pt, eta, phi) -> generator dict."""
    a = np.asarray(rows, np.float64).reshape(-1, 5)
    pt, eta, phi = a[:, 2], a[:, 3], a[:, 4]
    m = np.where(np.abs(a[:, 0]) == 211, 0.1396, 0.0)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return {"pid": a[:, 0].astype(np.int32), "charge": a[:, 1].astype(np.float32), "px": px, "py": py, "pz": pz,
            "e": np.sqrt(px**2 + py**2 + pz**2 + m**2)}


def test_topo_cluster_seeds_growth_boundary_and_phi_wrap():
    e = np.zeros((10, 20))
    e[2, 3], e[2, 4], e[3, 4] = 5.0, 2.5, 0.5  # seed, grown cell, boundary cell (0 < E < 2σ)
    e[7, 10] = 3.0  # above growth but no seed: not a cluster
    e[5, 0], e[5, 19] = 4.5, 2.2  # across the φ boundary: one cluster
    lab = topo_cluster(e, sigma=1.0, seed=4.0, grow=2.0)
    assert lab[2, 3] == lab[2, 4] == lab[3, 4] >= 0
    assert lab[7, 10] == -1
    assert lab[5, 0] == lab[5, 19] >= 0 and lab[5, 0] != lab[2, 3]
    assert lab.max() == 1 and (lab >= 0).sum() == 5


def test_particle_classes():
    cls = particle_class(np.array([211, -321, 130, 2112, 22, 11, -13, 12]), np.array([1, -1, 0, 0, 0, -1, 1, 0]))
    assert cls.tolist() == [1, 1, 2, 2, 3, 4, 5, 0]


def test_single_particles_elements_and_targets():
    cfg = {"track_eff_hadron": 1.0, "muon_eff": 1.0, "track_eff_muon": 1.0}
    gen = _gen([(22, 0, 50.0, 0.5, 1.0), (211, 1, 20.0, -1.0, -2.0), (13, -1, 30.0, 1.5, 2.5), (14, 0, 40.0, 0.0, 0.0)])
    out = simulate_detector(gen, seed=1, config=cfg)
    X, y = out["X"], out["y"]
    trk = X[:, 0] == 2
    assert trk.sum() == 2  # pion and muon, the photon and the neutrino have no track
    mu = trk & (X[:, 10] == 1)
    assert mu.sum() == 1 and y[mu, 0][0] == 5 and y[mu, 1][0] == -1
    pi = trk & (X[:, 10] == 0)
    assert y[pi, 0][0] == 1 and abs(X[pi, 1][0] - 20) < 1.0
    # positive charge bends to smaller φ at the calorimeter
    assert np.arctan2(X[pi, 7], X[pi, 8])[0] < np.arctan2(X[pi, 3], X[pi, 4])[0]
    phot = (X[:, 0] == 1) & (y[:, 0] == 3)
    assert phot.sum() == 1
    assert abs(X[phot, 5][0] - 50 * np.cosh(0.5)) < 5 * 0.05 * np.sqrt(50 * np.cosh(0.5)) + 1.0
    assert abs(y[phot, 2][0] - 50.0) < 1e-3 and abs(y[phot, 3][0] - 0.5) < 1e-4
    assert len(out["gen_p4"]) == 3  # the neutrino is invisible
    assert np.isfinite(X).all()


def test_track_resolution_matches_configuration():
    n = 400
    rng = np.random.default_rng(0)
    gen = _gen([(211, 1, 10.0, e, p) for e, p in zip(rng.uniform(-1, 1, n), rng.uniform(-3, 3, n))])
    cfg = DetectorConfig(track_eff_hadron=1.0, track_res_a=0.02, track_res_b=0.0)
    X = simulate_detector(gen, seed=2, config=cfg)["X"]
    pt = X[X[:, 0] == 2, 1]
    assert len(pt) == n
    rel = (10.0 / pt - 1.0)  # curvature smearing is Gaussian
    assert 0.015 < rel.std() < 0.025


def test_ecal_resolution_follows_stochastic_term():
    n = 120  # 3 rows in η × 40 in φ, 0.15 apart: one cluster per photon
    rng = np.random.default_rng(3)
    e0 = 20.0
    etas = np.repeat([-1.0, 0.0, 1.0], 40)
    phis = np.tile(np.linspace(-3, 3, 40, endpoint=False), 3) + rng.uniform(0, 0.01, n)
    gen = _gen([(22, 0, e0 / np.cosh(e), e, p) for e, p in zip(etas, phis)])
    out = simulate_detector(gen, seed=4, config={"ecal_stochastic": 0.1, "ecal_constant": 0.0, "ecal_noise": 0.02})
    X, y = out["X"], out["y"]
    ph = (X[:, 0] == 1) & (X[:, 6] > 0) & (y[:, 0] == 3)
    r = X[ph, 5] / e0
    assert ph.sum() > 0.9 * n
    assert abs(np.median(r) - 1) < 0.02
    assert 0.6 * 0.1 / np.sqrt(e0) < r.std() < 1.6 * 0.1 / np.sqrt(e0)


def test_hadron_response_is_non_compensating_and_rising():
    rng = np.random.default_rng(5)
    res = []
    for e in (5.0, 100.0):
        gen = _gen([(130, 0, e, 0.0, p) for p in np.linspace(-3, 3, 60, endpoint=False) + rng.uniform(0, 0.01, 60)])
        X = simulate_detector(gen, seed=6)["X"]
        res.append(X[X[:, 0] == 1, 5].sum() / (60 * e))
    assert res[0] < res[1] < 1.0


def test_bad_config_and_missing_keys():
    with pytest.raises(ValueError, match="unknown detector parameter"):
        DetectorConfig.from_dict({"ecal_stochastc": 0.1})
    with pytest.raises(KeyError, match="'px'"):
        simulate_detector({"pid": np.zeros(1), "charge": np.zeros(1)}, seed=0)
