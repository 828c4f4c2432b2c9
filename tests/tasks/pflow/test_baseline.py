"""Rule-based PF: linking, energy subtraction, neutral candidates from excess and from unlinked clusters."""

import numpy as np
import pytest

from gnnreco.tasks.pflow.baseline import rule_based_pf


def _track(pt, eta, phi, q=1.0, is_mu=0.0, is_e=0.0):
    return [2, pt, eta, np.sin(phi), np.cos(phi), pt * np.cosh(eta), eta, np.sin(phi), np.cos(phi), q, is_mu, is_e]


def _cluster(e, eta, phi, ecal=True):
    return [1, e / np.cosh(eta), eta, np.sin(phi), np.cos(phi), e, e if ecal else 0.0, 0.0 if ecal else e, 0, 0, 0, 0]


def test_isolated_clusters_become_photon_and_neutral_hadron():
    X = np.array([_cluster(20.0, 0.0, 0.0, ecal=True), _cluster(18.0, 1.0, 2.0, ecal=False)])
    c = rule_based_pf(X, hadron_response=0.9)
    assert c[0, 0] == 3 and c[0, 6] == 20.0
    assert c[1, 0] == 2 and abs(c[1, 6] - 20.0) < 1e-4
    assert abs(c[1, 2] - 20.0 / np.cosh(1.0)) < 1e-4


def test_track_absorbs_compatible_calorimeter_energy():
    X = np.array([_track(20.0, 0.0, 0.5), _cluster(4.0, 0.01, 0.51, ecal=True), _cluster(14.0, 0.02, 0.52, ecal=False)])
    c = rule_based_pf(X, hadron_response=0.9)
    assert c[0, 0] == 1 and c[0, 1] == 1 and c[0, 2] == 20.0
    assert (c[1:, 0] == 0).all()  # (4 + 14)/0.9 = 20 GeV = track momentum: no neutral excess


def test_excess_energy_gives_neutral_candidates():
    X = np.array([_track(10.0, 0.0, 0.5), _cluster(12.0, 0.01, 0.51, ecal=True), _cluster(60.0, 0.02, 0.52, ecal=False)])
    c = rule_based_pf(X, hadron_response=0.9)
    excess = (12.0 + 60.0) / 0.9 - 10.0
    assert c[1, 0] == 3 and abs(c[1, 6] - 12.0) < 1e-4  # photon up to the ECAL energy
    assert c[2, 0] == 2 and abs(c[2, 6] - (excess - 12.0)) < 1e-3
    total_e = c[:, 6].sum()
    assert abs(total_e - (10.0 + excess)) < 1e-3


def test_lepton_flags_and_far_clusters_are_not_linked():
    X = np.array([_track(30.0, 0.0, 0.0, q=-1, is_mu=1.0), _track(15.0, 1.0, 1.0, q=1, is_e=1.0),
                  _cluster(15.0, 1.0, 1.0), _cluster(5.0, -1.0, -2.0)])
    c = rule_based_pf(X)
    assert c[0, 0] == 5 and c[0, 1] == -1 and c[1, 0] == 4
    assert c[2, 0] == 0  # the electron's ECAL deposit is subtracted
    assert c[3, 0] == 3  # unlinked far cluster is a photon


def test_empty_event():
    assert rule_based_pf(np.zeros((0, 12))).shape == (0, 7)


def test_response_calibration_inverts_the_hadron_response_curve():
    from gnnreco.tasks.pflow.baseline import calibrate_hadron_energy, hadron_response_curve

    e_true = np.array([2.0, 10.0, 50.0, 200.0])
    raw = e_true * hadron_response_curve(e_true)
    np.testing.assert_allclose(calibrate_hadron_energy(raw), e_true, rtol=1e-4)
    assert np.all(np.diff(hadron_response_curve(e_true)) > 0)  # non-compensating: response rises with E
    # an isolated HCAL cluster of raw energy 40 becomes a neutral hadron of the calibrated energy
    X = np.array([_cluster(40.0, 0.5, 1.0, ecal=False)])
    c = rule_based_pf(X, calibration="response")
    assert c[0, 0] == 2 and abs(c[0, 6] - calibrate_hadron_energy(np.array([40.0]))[0]) < 1e-3
    # a track whose expected deposit p·r(p) matches the cluster leaves no neutral excess
    p = 30.0
    X = np.array([_track(p, 0.0, 0.5), _cluster(p * float(hadron_response_curve(np.array([p]))[0]), 0.02, 0.51, ecal=False)])
    c = rule_based_pf(X, calibration="response")
    assert c[0, 0] == 1 and c[1, 0] == 0
    with pytest.raises(ValueError, match="calibration"):
        rule_based_pf(X, calibration="bogus")
