"""Tracker simulation: determinism, geometry, helix physics, noise, inefficiency and event size."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gnnreco import _compat
from gnnreco.data import trackml as tm
from gnnreco.sim.tracker import (
    C_LIGHT,
    TrackerSimulator,
    event_seeds,
    generate_dataset,
    helix_cylinder_intersection,
    highland_theta0,
)
from gnnreco.sim.tracker_geometry import TrackerGeometry, available_presets, load_geometry


@pytest.fixture(scope="module")
def trackml_sim() -> TrackerSimulator:
    return TrackerSimulator.from_preset("trackml", mu=10)


def test_presets_load_and_module_tables():
    assert {"trackml", "itk", "toy"} <= set(available_presets())
    geo = load_geometry("trackml")
    assert sorted({b.volume_id for b in geo.barrels}) == [8, 13, 17]
    assert sorted({d.volume_id for d in geo.disks}) == [7, 9, 12, 14, 16, 18]
    assert [b.radius for b in geo.barrels if b.volume_id == 8] == [32, 72, 116, 172]
    det = geo.detector_table()
    assert list(det.columns) == list(tm.DETECTORS_DTYPES)
    assert len(det) == geo.n_modules and 15_000 < len(det) < 30_000
    assert not det[["volume_id", "layer_id", "module_id"]].duplicated().any()
    rot = det[[f"rot_{a}{b}" for a in "xyz" for b in "uvw"]].to_numpy().reshape(-1, 3, 3)
    np.testing.assert_allclose(np.einsum("nji,njk->nik", rot, rot), np.broadcast_to(np.eye(3), rot.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)
    # negative endcap: layer ids increase with z, as in TrackML
    z7 = [d.z for d in sorted((d for d in geo.disks if d.volume_id == 7), key=lambda d: d.layer_id)]
    assert z7 == sorted(z7)


def test_geometry_yaml_errors(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text("geometry:\n  barrel:\n    - volume_id: 8\n      layer_ids: [2]\n      half_length: 10\n")
    with pytest.raises(ValueError, match="radii"):
        TrackerGeometry.from_yaml(bad)
    with pytest.raises(FileNotFoundError, match="unknown tracker preset"):
        load_geometry("no_such_detector")


def test_determinism_by_seed(trackml_sim):
    a = trackml_sim.simulate(123)
    b = trackml_sim.simulate(123)
    c = trackml_sim.simulate(124)
    for x, y in zip((a.hits, a.cells, a.particles, a.truth), (b.hits, b.cells, b.particles, b.truth)):
        pd.testing.assert_frame_equal(x, y)
    assert a.seed == 123 and a.meta["config"]["mu"] == 10
    assert len(a.hits) != len(c.hits) or not np.array_equal(a.hits["x"], c.hits["x"])


def test_formats_and_consistency(trackml_sim):
    ev = trackml_sim.simulate(5)
    for df, part in ((ev.hits, "hits"), (ev.cells, "cells"), (ev.truth, "truth")):
        assert list(df.columns) == list(tm.DTYPES[part]), part
        for c in df.columns:
            assert df[c].dtype == np.dtype(tm.DTYPES[part][c]), (part, c)
    assert list(ev.particles.columns) == [c for c in tm.PARTICLES_DTYPES if c != "particle_type"]
    assert ev.hits["hit_id"].tolist() == list(range(1, len(ev.hits) + 1))
    assert (ev.truth["hit_id"].to_numpy() == ev.hits["hit_id"].to_numpy()).all()
    assert set(ev.cells["hit_id"]) == set(ev.hits["hit_id"])
    assert ev.truth["weight"].sum() == pytest.approx(1.0, abs=1e-4)
    # nhits matches the truth table
    counts = ev.truth[ev.truth.particle_id != 0].groupby("particle_id").size()
    nh = ev.particles.set_index("particle_id")["nhits"]
    assert (nh.loc[counts.index] == counts).all() and nh.sum() == counts.sum()
    # detector table lookup works for every hit: module ids are meaningful
    rows = tm.lookup_modules(ev.hits, trackml_sim.detector_table())
    assert len(rows) == len(ev.hits)


def _local_coords(hits: pd.DataFrame, det: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    rows = tm.lookup_modules(hits, det)
    d = det.iloc[rows].reset_index(drop=True)
    rot = d[[f"rot_{a}{b}" for a in "xyz" for b in "uvw"]].to_numpy().reshape(-1, 3, 3)
    delta = hits[["x", "y", "z"]].to_numpy(float) - d[["cx", "cy", "cz"]].to_numpy()
    return np.einsum("nji,nj->ni", rot, delta), d


def test_hits_lie_on_their_module_surfaces(trackml_sim):
    ev = trackml_sim.simulate(7)
    det = trackml_sim.detector_table()
    loc, d = _local_coords(ev.hits, det)
    barrel = tm.region_labels(ev.hits["volume_id"])["is_barrel"].to_numpy()
    # endcap modules are planar: w = 0, |v| <= hv, |u| <= hu(v) (trapezoid)
    e = ~barrel
    u, v, w = loc[e, 0], loc[e, 1], loc[e, 2]
    hv = d.loc[e, "module_hv"].to_numpy()
    hu = d.loc[e, "module_minhu"].to_numpy() + (d.loc[e, "module_maxhu"] - d.loc[e, "module_minhu"]).to_numpy() * (v + hv) / (2 * hv)
    tol = 1e-3
    assert np.abs(w).max() < tol
    assert (np.abs(v) <= hv + tol).all() and (np.abs(u) <= hu + tol).all()
    # barrel modules are cylinder segments: r = R, |z - cz| <= hv, |R dphi| <= hu
    b = barrel
    x, y, z = (ev.hits.loc[b, c].to_numpy(float) for c in "xyz")
    R = np.hypot(d.loc[b, "cx"], d.loc[b, "cy"]).to_numpy()
    np.testing.assert_allclose(np.hypot(x, y), R, atol=1e-3)
    assert (np.abs(z - d.loc[b, "cz"].to_numpy()) <= d.loc[b, "module_hv"].to_numpy() + tol).all()
    dphi = np.angle(np.exp(1j * (np.arctan2(y, x) - np.arctan2(d.loc[b, "cy"], d.loc[b, "cx"]).to_numpy())))
    assert (np.abs(R * dphi) <= d.loc[b, "module_maxhu"].to_numpy() + tol).all()


@pytest.mark.parametrize("charge", [1, -1])
@pytest.mark.parametrize("pt", [0.7, 3.0])
def test_helix_radius_matches_pt_over_03b(pt, charge):
    sim = TrackerSimulator(
        geometry="trackml", field=2.0, multiple_scattering=False, smearing="none", noise_fraction=0.0, inefficiency=0.0
    )
    phi0, eta = 0.4, 0.3
    ev = sim.simulate_particles([[0.0, 0.0, 0.0]], [[pt * np.cos(phi0), pt * np.sin(phi0), pt * np.sinh(eta)]], [charge])
    h = ev.hits
    assert len(h) >= 6
    x, y = h["x"].to_numpy(float), h["y"].to_numpy(float)
    # algebraic circle fit x² + y² = 2 a x + 2 b y + c
    sol = np.linalg.lstsq(np.c_[2 * x, 2 * y, np.ones_like(x)], x * x + y * y, rcond=None)[0]
    radius = np.sqrt(sol[2] + sol[0] ** 2 + sol[1] ** 2)
    expected_mm = pt / (0.3 * 2.0) * 1000 * (0.3 / (C_LIGHT * 1000))  # pT/(0.3 B) m, with c = 0.29979
    assert radius == pytest.approx(expected_mm, rel=1e-3)
    # positive charges bend clockwise in +B: the centre is to the right of the initial direction
    cross = np.cos(phi0) * sol[1] - np.sin(phi0) * sol[0]
    assert np.sign(cross) == -charge
    # z is linear in the transverse arc length: dz/ds = sinh(eta)
    r = np.hypot(x, y)
    s = 2 * radius * np.arcsin(r / (2 * radius))
    np.testing.assert_allclose(h["z"].to_numpy(float), np.sinh(eta) * s, atol=1e-2)
    # truth momentum keeps |pT| without scattering
    np.testing.assert_allclose(np.hypot(ev.truth["tpx"], ev.truth["tpy"]), pt, rtol=1e-5)


def test_helix_cylinder_intersection_straightish_track():
    # a very stiff track from the origin along x crosses r = 100 at s ≈ 100
    k = np.array([-C_LIGHT * 2.0 / 1000.0])
    s1, s2 = helix_cylinder_intersection(np.zeros(1), np.zeros(1), np.zeros(1), k, np.array([100.0]))
    assert min(s1[0, 0], s2[0, 0]) == pytest.approx(100.0, rel=1e-4)


def test_highland_formula_by_hand():
    p, beta, x = 1.0, 0.99, 0.02
    expected = 0.0136 / (beta * p) * np.sqrt(x) * (1 + 0.038 * np.log(x / beta**2))
    assert highland_theta0(np.array([p]), np.array([beta]), np.array([x]))[0] == pytest.approx(expected)


def test_multiple_scattering_widens_residuals():
    vtx = np.zeros((400, 3))
    mom = np.tile([[0.5, 0.0, 0.0]], (400, 1))
    kw = dict(geometry="toy", smearing="none", noise_fraction=0.0, inefficiency=0.0)
    ref = TrackerSimulator(**kw, multiple_scattering=False).simulate_particles(vtx, mom, np.ones(400), seed=1)
    ms = TrackerSimulator(**kw, multiple_scattering=True).simulate_particles(vtx, mom, np.ones(400), seed=1)
    last = lambda ev: ev.hits[ev.hits.layer_id == 8]  # noqa: E731
    spread_ref = np.std(np.arctan2(last(ref).y, last(ref).x))
    spread_ms = np.std(np.arctan2(last(ms).y, last(ms).x))
    assert spread_ref < 1e-6 < spread_ms < 0.05


def test_hit_count_scales_with_mu():
    kw = dict(poisson_pileup=False, n_charged_k=0.0)
    n10 = np.mean([len(TrackerSimulator.from_preset("trackml", mu=10, **kw).simulate(s).hits) for s in range(2)])
    n40 = np.mean([len(TrackerSimulator.from_preset("trackml", mu=40, **kw).simulate(s).hits) for s in range(2)])
    assert 3.2 < n40 / n10 < 4.8
    zero = TrackerSimulator.from_preset("trackml", mu=0, **kw).simulate(0)
    assert len(zero.hits) == 0 and len(zero.particles) == 0


def test_noise_fraction_matches_target():
    for f in (0.0, 0.15, 0.3):
        ev = TrackerSimulator.from_preset("trackml", mu=20, noise_fraction=f).simulate(3)
        frac = float((ev.truth["particle_id"] == 0).mean())
        assert frac == pytest.approx(f, abs=0.005)
        noise_w = ev.truth.loc[ev.truth.particle_id == 0, "weight"]
        assert (noise_w == 0).all()


def test_inefficiency_rate():
    kw = dict(mu=20, noise_fraction=0.0, multiple_scattering=True)
    full = TrackerSimulator.from_preset("trackml", inefficiency=0.0, **kw).simulate(11)
    lossy = TrackerSimulator.from_preset("trackml", inefficiency=0.1, **kw).simulate(11)
    ratio = len(lossy.hits) / len(full.hits)
    assert ratio == pytest.approx(0.9, abs=0.02)


def test_cluster_size_grows_with_incidence_angle():
    sim = TrackerSimulator(geometry="toy", noise_fraction=0.0, inefficiency=0.0, multiple_scattering=False)
    etas = np.array([0.0, 1.4])
    mom = np.c_[np.full(2, 5.0), np.zeros(2), 5.0 * np.sinh(etas)]
    ev = sim.simulate_particles(np.zeros((2, 3)), mom, [1, 1])
    tab = tm.add_derived_columns(ev.hits, ev.cells, sim.detector_table())
    tab["eta_bin"] = np.abs(tab["eta"]) > 0.7
    size = tab.groupby("eta_bin")["ly"].mean()
    # along v (z) the cluster length follows 2t·|tan(incidence)|: sinh(1.4)·0.3 mm ≈ 0.57 mm
    assert size[False] < 0.12 and 0.4 < size[True] < 0.8


def test_secondaries_have_displaced_vertices_and_ids():
    sim = TrackerSimulator.from_preset("trackml", mu=5, secondary_fraction=0.3, secondary_r_range=(50.0, 400.0))
    ev = sim.simulate(2)
    dec = tm.decode_particle_id(tm.particle_kinematics(ev.particles))
    sec = dec[dec.generation == 1]
    assert len(sec) > 0
    assert ((sec.radius > 45) & (sec.radius < 405)).all()
    assert set(sec.process) == {1} and set(sec.secondary_id) <= {1, 2, 3}
    # charge conservation at every secondary vertex (3 daughters: q, +1, -1)
    prim = dec[dec.generation == 0].set_index(["vertex_id", "primary_id"])["q"]
    dq = sec.groupby(["vertex_id", "primary_id"])["q"].sum()
    assert (dq == prim.loc[dq.index]).all()
    assert not ev.particles["particle_id"].duplicated().any()
    # parents stop at the interaction point: none of their hits lies beyond it
    t = ev.truth.merge(dec[["particle_id", "vertex_id", "primary_id", "generation"]], on="particle_id")
    t["r"] = np.hypot(t.tx, t.ty)
    parent_rmax = t[t.generation == 0].groupby(["vertex_id", "primary_id"])["r"].max()
    vtx_r = sec.groupby(["vertex_id", "primary_id"])["radius"].first()
    both = parent_rmax.index.intersection(vtx_r.index)
    assert len(both) > 0 and (parent_rmax.loc[both] <= vtx_r.loc[both] + 1e-3).all()


def test_hard_scatter_jet_adds_high_pt_particles():
    sim = TrackerSimulator.from_preset("trackml", mu=0, hard_scatter="jet")
    ev = sim.simulate(4)
    kin = tm.particle_kinematics(ev.particles)
    assert len(kin) > 5 and kin.pt.max() > 5.0
    assert (tm.decode_particle_id(ev.particles)["vertex_id"] == 1).all()


@pytest.mark.skipif(not _compat.WITH_PYTHIA8, reason="pythia8mc not installed")
def test_hard_scatter_pythia8_ttbar():
    sim = TrackerSimulator.from_preset("toy", mu=0, hard_scatter="pythia8", eta_max=2.5)
    a, b = sim.simulate(8), sim.simulate(8)
    assert len(a.particles) > 20
    pd.testing.assert_frame_equal(a.particles, b.particles)


def test_generate_dataset_writes_trackml_files(tmp_path):
    out = tmp_path / "ds"
    summary = generate_dataset(out, 3, seed=9, preset="toy", progress=False)
    assert (out / "detectors.csv.gz").exists()
    events = list(tm.load_dataset(out))
    assert [e[0] for e in events] == [0, 1, 2]
    meta = json.loads((out / "event000000001-meta.json").read_text())
    assert meta["seed"] == event_seeds(9, 3)[1] == summary["seeds"][1]
    # the stored seed regenerates the event exactly
    regen = TrackerSimulator.from_preset("toy").simulate(meta["seed"], event_id=1)
    np.testing.assert_array_equal(regen.hits[["x", "y", "z"]].to_numpy(), events[1][1][["x", "y", "z"]].to_numpy())
    det = tm.load_detector(out)
    assert len(tm.lookup_modules(events[0][1], det)) == len(events[0][1])


def test_generate_dataset_workers_give_same_output(tmp_path):
    generate_dataset(tmp_path / "a", 2, seed=1, preset="toy", progress=False, workers=1)
    generate_dataset(tmp_path / "b", 2, seed=1, preset="toy", progress=False, workers=2)
    for (ea, *da), (eb, *db) in zip(tm.load_dataset(tmp_path / "a"), tm.load_dataset(tmp_path / "b")):
        assert ea == eb
        for x, y in zip(da, db):
            pd.testing.assert_frame_equal(x, y)


def test_toy_preset_is_fast_and_central():
    sim = TrackerSimulator.from_preset("toy")
    ev = sim.simulate(0)
    assert set(ev.hits["volume_id"]) == {8}
    assert 100 < len(ev.hits) < 5000


def test_mu200_event_is_trackml_sized():
    sim = TrackerSimulator.from_preset("trackml")
    ev = sim.simulate(2026)
    assert 150 <= ev.meta["n_vertices"] <= 250
    assert 70_000 < len(ev.hits) < 140_000
    assert 7_000 < len(ev.particles) < 14_000
    assert float((ev.truth.particle_id == 0).mean()) == pytest.approx(0.15, abs=0.005)


def test_dead_modules_give_no_hits_and_are_fixed():
    sim = TrackerSimulator.from_preset("trackml", mu=20, dead_module_fraction=0.2, dead_module_seed=3)
    det = sim.detector_table()
    dead_rows = np.nonzero(sim._dead)[0]
    assert 0.17 < len(dead_rows) / len(det) < 0.23
    for seed in (1, 2):
        ev = sim.simulate(seed)
        rows = tm.lookup_modules(ev.hits, det)
        assert not np.isin(rows, dead_rows).any()
    again = TrackerSimulator.from_preset("trackml", mu=20, dead_module_fraction=0.2, dead_module_seed=3)
    assert np.array_equal(again._dead, sim._dead)


def test_scattering_angle_follows_highland():
    n, p = 3000, 1.0
    mom = np.tile([[p, 0.0, 0.0]], (n, 1))
    kw = dict(geometry="toy", smearing="none", noise_fraction=0.0, inefficiency=0.0)
    ev = TrackerSimulator(**kw).simulate_particles(np.zeros((n, 3)), mom, np.ones(n), seed=4)
    ref = TrackerSimulator(**kw, multiple_scattering=False).simulate_particles(np.zeros((1, 3)), mom[:1], [1])
    # momentum direction at layer 4 (second crossing) was kicked once, at layer 2 (x/X0 = 0.02, normal incidence)
    at = lambda e: e.truth[e.hits.layer_id.to_numpy() == 4]  # noqa: E731
    phi = np.arctan2(at(ev).tpy, at(ev).tpx).to_numpy()
    phi_ref = float(np.arctan2(at(ref).tpy, at(ref).tpx).iloc[0])
    beta = p / np.hypot(p, 0.13957)
    theta0 = highland_theta0(np.array([p]), np.array([beta]), np.array([0.02]))[0]
    assert np.std(phi - phi_ref) == pytest.approx(theta0, rel=0.08)


def test_loopers_and_energy_loss():
    base = dict(geometry="trackml", multiple_scattering=False, smearing="none", noise_fraction=0.0, inefficiency=0.0)
    mom = [[0.15, 0.0, 0.02]]  # ρ = 250 mm: curls inside the short-strip barrel
    half = TrackerSimulator(**base, max_turns=0.5).simulate_particles([[0, 0, 0]], mom, [1])
    loop = TrackerSimulator(**base, max_turns=1.0).simulate_particles([[0, 0, 0]], mom, [1])
    assert len(loop.hits) == 2 * len(half.hits)  # each layer crossed going out and coming back
    assert loop.hits.groupby(["volume_id", "layer_id"]).size().eq(2).all()
    slow = TrackerSimulator(**base, energy_loss=True).simulate_particles([[0, 0, 0]], [[0.3, 0.0, 0.1]], [1], pdg=[2212])
    order = np.argsort(np.hypot(slow.truth.tx, slow.truth.ty).to_numpy())
    p = np.sqrt(slow.truth.tpx**2 + slow.truth.tpy**2 + slow.truth.tpz**2).to_numpy()[order]
    assert (np.diff(p) < 0).all() and p[0] < np.hypot(0.3, 0.1)


def test_module_overlaps_give_double_hits_on_neighbours():
    from gnnreco.sim.tracker_geometry import load_preset

    cfg = load_preset("trackml")["geometry"]
    for vol in cfg["barrel"] + cfg["endcap"]:
        vol["overlap"] = 0.8
    geo = TrackerGeometry.from_dict(cfg, name="trackml_overlap")
    sim = TrackerSimulator(geometry=geo, mu=10, noise_fraction=0.0)
    ev = sim.simulate(1)
    base = TrackerSimulator.from_preset("trackml", mu=10, noise_fraction=0.0).simulate(1)
    assert len(ev.hits) > 1.03 * len(base.hits)
    t = ev.truth.merge(ev.hits, on="hit_id")
    groups = t.groupby(["particle_id", "volume_id", "layer_id"])["module_id"]
    doubles = groups.nunique()
    assert 0.02 < (doubles > 1).mean() < 0.2
    # the two modules of a double hit are different and the hits still lie inside their (extended) modules
    det = sim.detector_table()
    loc, d = _local_coords(ev.hits, det)
    hv = d["module_hv"].to_numpy()
    hu = d["module_minhu"].to_numpy() + (d["module_maxhu"] - d["module_minhu"]).to_numpy() * (loc[:, 1] + hv) / (2 * hv)
    endcap = ~tm.region_labels(ev.hits["volume_id"])["is_barrel"].to_numpy()
    assert (np.abs(loc[endcap, 0]) <= hu[endcap] + 1e-3).all()


def test_geometry_dict_round_trip():
    geo = load_geometry("itk")
    again = TrackerGeometry.from_dict(geo.to_dict())
    pd.testing.assert_frame_equal(geo.detector_table(), again.detector_table())
