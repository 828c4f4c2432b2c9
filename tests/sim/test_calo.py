"""Tests of the HGCAL-like calorimeter simulation."""

from __future__ import annotations

import numpy as np
import pytest

from gnnreco.sim.calo import CaloGeometry, CaloGun, pid_to_class, sample_gun, simulate


def test_deterministic_by_seed():
    a = simulate(7, gun={"n_particles": 10})
    b = simulate(7, gun={"n_particles": 10})
    c = simulate(8, gun={"n_particles": 10})
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert len(a["hit_energy"]) != len(c["hit_energy"]) or not np.array_equal(a["hit_energy"], c["hit_energy"])


def test_truth_is_consistent():
    ev = simulate(3, gun={"n_particles": 20}, pileup_density=0.02)
    n = len(ev["hit_energy"])
    for k in ("hit_x", "hit_y", "hit_z", "hit_layer", "hit_time", "hit_shower", "hit_origin",
              "hit_energy_fraction", "hit_true_energy", "hit_pid", "hit_true_time"):
        assert ev[k].shape == (n,), k
    assert ev["hit_impact"].shape == (n, 3)
    sh = ev["hit_shower"]
    assert sh.min() >= -1 and sh.max() < 20
    sig = sh >= 0
    # signal hits carry their shower's truth; noise/pile-up carry the -1 label and origin 1/2
    np.testing.assert_allclose(ev["hit_true_energy"][sig], ev["shower_energy"][sh[sig]])
    np.testing.assert_array_equal(ev["hit_pid"][sig], ev["shower_pid"][sh[sig]])
    np.testing.assert_allclose(ev["hit_impact"][sig], ev["shower_impact"][sh[sig]])
    assert set(np.unique(ev["hit_origin"][~sig])) <= {1, 2}
    assert (ev["hit_origin"] == 2).any() and (ev["hit_origin"] == 1).any()
    assert np.all(ev["hit_energy_fraction"][sig] > 0) and np.all(ev["hit_energy_fraction"][~sig] == 0)
    assert np.all(ev["hit_energy_fraction"] <= 1 + 1e-9)
    geo = CaloGeometry()
    assert ev["hit_energy"].min() > geo.noise_threshold_sigma * geo.noise_sigma
    # hits lie in the acceptance and in the layers
    r = np.hypot(ev["hit_x"], ev["hit_y"])
    lo, hi = geo.r_range(ev["hit_z"])
    assert np.all(r >= lo - geo.cell_size) and np.all(r <= hi + geo.cell_size)
    assert ev["hit_layer"].max() < geo.n_layers


def test_energy_response_and_resolution():
    """EM showers are calibrated (response ≈ 1, stochastic term as configured); hadrons are not."""
    geo = CaloGeometry()
    resp = {11: [], 211: []}
    for pid in resp:
        for s in range(25):
            ev = simulate(s, gun={"n_particles": 1, "pids": [pid], "energy": [40, 40]}, noise=False)
            resp[pid].append(ev["hit_energy"].sum() / 40.0)
    em, had = np.array(resp[11]), np.array(resp[211])
    assert 0.95 < em.mean() < 1.03
    expected = np.sqrt(geo.em_quantum * (1 + 1 / geo.spot_gamma_shape) / 40.0)
    assert 0.5 * expected < em.std() < 2.0 * expected
    assert had.mean() < em.mean() and had.std() > em.std()


def test_em_longitudinal_profile_peaks_in_em_section():
    prof = 0.0
    for s in range(8):
        ev = simulate(s, gun={"n_particles": 1, "pids": [22], "energy": [50, 50]}, noise=False)
        prof = prof + np.bincount(ev["hit_layer"], weights=ev["hit_energy"], minlength=CaloGeometry().n_layers)
    assert 3 <= int(np.argmax(prof)) <= 15
    assert prof[:28].sum() > 0.9 * prof.sum()


def test_gun_ranges_and_errors():
    rng = np.random.default_rng(0)
    p = sample_gun(CaloGun(n_particles=[1, 200], energy=[2, 20], eta=[1.7, 2.5]), rng)
    assert 1 <= len(p["pid"]) <= 200
    assert p["energy"].min() >= 2 and p["energy"].max() <= 20
    assert p["eta"].min() >= 1.7 and p["eta"].max() <= 2.5
    with pytest.raises(ValueError, match="gun.energy"):
        sample_gun(CaloGun(energy=[0, 10]), rng)
    with pytest.raises(ValueError, match="gun.pids"):
        sample_gun(CaloGun(pids=[13]), rng)
    with pytest.raises(ValueError, match="source"):
        simulate(0, source="geant")
    assert list(pid_to_class(np.array([11, -11, 22, 211, -211, 130]))) == [0, 0, 1, 2, 2, 3]


def test_empty_gun_gives_noise_only():
    ev = simulate(0, gun={"n_particles": 0})
    assert len(ev["shower_energy"]) == 0
    assert (ev["hit_shower"] == -1).all()


def test_pythia_jets_optional():
    from gnnreco._compat import WITH_PYTHIA8

    if not WITH_PYTHIA8:
        pytest.skip("pythia8mc not installed")
    ev = simulate(5, source="pythia", pythia={"pt_hat_min": 30.0})
    assert (ev["hit_shower"] >= 0).sum() > 0 or len(ev["shower_energy"]) == 0
