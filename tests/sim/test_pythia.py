"""Event generation: seeds, processes, pile-up flags and the parametric fallback."""

import numpy as np
import pytest

from gnnreco.sim.pythia import GEN_KEYS, generate_event, generate_events, parametric_event, pythia_available


def _check_event(ev):
    n = len(ev["pid"])
    assert n > 10
    for k in GEN_KEYS:
        assert len(ev[k]) == n, k
    m2 = ev["e"].astype(np.float64) ** 2 - (ev["px"].astype(np.float64) ** 2 + ev["py"] ** 2 + ev["pz"] ** 2)
    assert np.all(m2 > -1e-2 * ev["e"] ** 2)  # physical four-momenta (float32 rounding allowed)
    assert set(np.unique(ev["charge"])) <= {-1.0, 0.0, 1.0, -2.0, 2.0}


def test_parametric_event_is_seeded_and_valid():
    a, b, c = parametric_event(1), parametric_event(1), parametric_event(2)
    _check_event(a)
    np.testing.assert_array_equal(a["px"], b["px"])
    assert len(a["pid"]) != len(c["pid"]) or not np.array_equal(a["px"], c["px"])
    pu = parametric_event(1, pileup=4.0)
    assert pu["is_pu"].sum() > 30 and not a["is_pu"].any()


def test_parametric_backend_flag_and_bad_args():
    ev = generate_event(5, backend="parametric", process="qcd")
    assert ev["backend"][0] == 0
    _check_event(ev)
    with pytest.raises(ValueError, match="process"):
        generate_event(1, process="higgs", backend="parametric")
    with pytest.raises(ValueError, match="backend"):
        generate_event(1, backend="herwig")


@pytest.mark.skipif(not pythia_available(), reason="pythia8mc not installed")
def test_pythia_seed_per_event_independent_of_order():
    a = generate_event(11, process="ttbar")
    b = generate_event(12, process="ttbar")
    a2 = generate_event(11, process="ttbar")  # same worker, after another event: same result
    assert a["backend"][0] == 1
    _check_event(a)
    np.testing.assert_array_equal(a["px"], a2["px"])
    assert not (len(a["px"]) == len(b["px"]) and np.array_equal(a["px"], b["px"]))
    # tt̄ has (anti-)top decay products: at least one b-hadron-level charged particle set, high multiplicity
    assert len(a["pid"]) > 100


@pytest.mark.skipif(not pythia_available(), reason="pythia8mc not installed")
def test_pythia_workers_match_serial():
    serial = [generate_event(s, process="ztautau") for s in (1, 2)]
    par = generate_events([1, 2], n_workers=2, process="ztautau")
    for s, p in zip(serial, par):
        np.testing.assert_array_equal(s["pz"], p["pz"])
