"""Anti-kT (against a brute-force reference and fastjet when installed), matching, summaries."""

import numpy as np
import pytest

from gnnreco.tasks.pflow.metrics import (
    PFEvaluator,
    anti_kt,
    match_jets,
    med_iqr,
    met,
    particle_metrics,
    summarize_response,
)


def _brute_anti_kt(pt, eta, phi, R=0.4):
    """O(N^3) textbook anti-kT with E-scheme on massless inputs (reference for the test)."""
    p = [np.array([a * np.cos(c), a * np.sin(c), a * np.sinh(b), a * np.cosh(b)]) for a, b, c in zip(pt, eta, phi)]
    jets = []
    while p:
        def kin(v):
            t = np.hypot(v[0], v[1])
            return t, 0.5 * np.log((v[3] + v[2]) / (v[3] - v[2])), np.arctan2(v[1], v[0])
        k = [kin(v) for v in p]
        best, what = np.inf, None
        for i in range(len(p)):
            if k[i][0] ** -2 < best:
                best, what = k[i][0] ** -2, (i, None)
            for j in range(i + 1, len(p)):
                dphi = abs(k[i][2] - k[j][2])
                dphi = min(dphi, 2 * np.pi - dphi)
                d = min(k[i][0] ** -2, k[j][0] ** -2) * ((k[i][1] - k[j][1]) ** 2 + dphi**2) / R**2
                if d < best:
                    best, what = d, (i, j)
        i, j = what
        if j is None:
            jets.append(p.pop(i))
        else:
            p[i] = p[i] + p[j]
            p.pop(j)
    out = np.array([[np.hypot(v[0], v[1]), np.arcsinh(v[2] / np.hypot(v[0], v[1]))] for v in jets])
    return out[np.argsort(-out[:, 0])]


def _event(rng, n=60):
    pt = rng.exponential(3, n) + 0.2
    eta = rng.uniform(-2.5, 2.5, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    for k in range(3):  # collimated sprays, one across φ = ±π
        c = (rng.uniform(-2, 2), np.pi - 0.05 if k == 0 else rng.uniform(-3, 3))
        m = slice(10 * k, 10 * k + 10)
        eta[m] = c[0] + rng.normal(0, 0.15, 10)
        phi[m] = (c[1] + rng.normal(0, 0.15, 10) + np.pi) % (2 * np.pi) - np.pi
        pt[m] *= 8
    return pt, eta, phi


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_anti_kt_matches_brute_force(seed):
    pt, eta, phi = _event(np.random.default_rng(seed))
    ours = anti_kt(pt, eta, phi, 0.4)
    ref = _brute_anti_kt(pt, eta, phi, 0.4)
    assert ours.shape[0] == ref.shape[0]
    np.testing.assert_allclose(ours[:, :2], ref, rtol=1e-9, atol=1e-9)
    assert ours[:, 0].sum() <= pt.sum() + 1e-9  # |Σ p_T vectors| never exceeds Σ|p_T|


def test_anti_kt_against_fastjet_if_installed():
    fj = pytest.importorskip("fastjet")
    rng = np.random.default_rng(7)
    pt, eta, phi = _event(rng, 300)
    ours = anti_kt(pt, eta, phi, 0.4, pt_min=5.0)
    parts = [fj.PseudoJet(a * np.cos(c), a * np.sin(c), a * np.sinh(b), a * np.cosh(b)) for a, b, c in zip(pt, eta, phi)]
    cs = fj.ClusterSequence(parts, fj.JetDefinition(fj.antikt_algorithm, 0.4))
    ref = np.array(sorted([(j.pt(), j.eta()) for j in cs.inclusive_jets(5.0)], reverse=True))
    np.testing.assert_allclose(ours[:, :2], ref, rtol=1e-9, atol=1e-9)


def test_anti_kt_edge_cases():
    assert anti_kt(np.zeros(0), np.zeros(0), np.zeros(0)).shape == (0, 4)
    one = anti_kt(np.array([10.0]), np.array([0.3]), np.array([1.0]))
    np.testing.assert_allclose(one[0, :3], [10.0, 0.3, 1.0], atol=1e-9)
    # two particles further apart than R stay separate; closer ones merge
    far = anti_kt(np.array([10.0, 5.0]), np.array([0.0, 0.0]), np.array([0.0, 0.5]))
    near = anti_kt(np.array([10.0, 5.0]), np.array([0.0, 0.0]), np.array([0.0, 0.3]))
    assert len(far) == 2 and len(near) == 1


def test_matching_and_summaries():
    gen = np.array([[50.0, 0.0, 0.0, 50.0], [30.0, 1.0, 2.0, 40.0], [20.0, -1.0, -2.0, 30.0]])
    reco = np.array([[29.0, 1.05, 2.0, 0], [55.0, 0.0, 0.02, 0], [10.0, 2.0, 0.0, 0]])
    assert match_jets(gen, reco, 0.1).tolist() == [1, 0, -1]
    med, iqr = med_iqr(np.array([0.9, 1.0, 1.1, np.nan]))
    assert med == pytest.approx(1.0) and iqr == pytest.approx(0.1)
    rows = summarize_response(np.array([40.0, 50.0, 200.0]), np.array([1.0, np.nan, 0.5]), (30, 100, 300))
    assert rows[0]["n_gen"] == 2 and rows[0]["matched_frac"] == 0.5 and rows[1]["median"] == 0.5
    assert met(np.array([[10.0, 0, 0.0, 10], [10.0, 0, np.pi, 10]])) == pytest.approx(0.0, abs=1e-9)


def test_particle_metrics_and_bad_classes():
    m = particle_metrics(np.array([0, 1, 1, 2, 3]), np.array([1, 1, 0, 2, 2]))
    assert m["eff_ch.had"] == 0.5 and m["fake_ch.had"] == 0.5 and m["fake_n.had"] == 0.5
    with pytest.raises(ValueError, match="classes"):
        particle_metrics(np.array([7]), np.array([0]))


def test_evaluator_truth_candidates_are_perfect():
    from gnnreco.tasks.pflow.data import generate_pflow_event

    ev = PFEvaluator()
    for s in range(2):
        d = generate_pflow_event(s, backend="parametric")
        ev.add(d["y"], d["gen_p4"], {"truth": d["y"]})
    s = ev.summary()["truth"]
    assert all(v == 1.0 for k, v in s["particle"].items() if k.startswith("eff") and v == v)
    assert "truth" in ev.table()
    with pytest.raises(ValueError, match="one per element"):
        ev.add(d["y"], d["gen_p4"], {"bad": d["y"][:3]})


def test_evaluator_merge_equals_one_pass():
    """Merging per-rank evaluators (DDP) gives the summary of one evaluator over all the events."""
    from gnnreco.tasks.pflow.data import generate_pflow_event

    events = [generate_pflow_event(s, backend="parametric") for s in range(4)]
    rng = np.random.default_rng(0)
    cands = []
    for d in events:  # the targets with a smeared third column (momentum), classes untouched
        c = np.array(d["y"], dtype=np.float64)
        c[:, 2] *= rng.uniform(0.8, 1.2, size=len(c))
        cands.append(c)
    whole, a, b = PFEvaluator(), PFEvaluator(), PFEvaluator()
    for i, (d, c) in enumerate(zip(events, cands)):
        whole.add(d["y"], d["gen_p4"], {"alg": c})
        (a if i % 2 == 0 else b).add(d["y"], d["gen_p4"], {"alg": c})
    merged = a.merge(b)
    assert merged.n_events == 4
    fa, fw = merged.flat_metrics(), whole.flat_metrics()
    assert fa.keys() == fw.keys()
    for k in fw:
        assert (fa[k] == fw[k]) or (fa[k] != fa[k] and fw[k] != fw[k]), k
    with pytest.raises(ValueError, match="different jet settings"):
        PFEvaluator(R=0.8).merge(a)
