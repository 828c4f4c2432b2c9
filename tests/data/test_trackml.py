"""TrackML format: round trips, error messages, derived quantities and the TrackML score."""

from __future__ import annotations

import gzip
import zipfile

import numpy as np
import pandas as pd
import pytest

from gnnreco.data import trackml as tm


def _toy_event(seed: int = 0, n_particles: int = 6, hits_per_particle: int = 5, n_noise: int = 4):
    """A small hand-made event: particle i has hits on consecutive barrel layers."""
    rng = np.random.default_rng(seed)
    pids = tm.encode_particle_id(np.ones(n_particles, int), np.arange(1, n_particles + 1))
    pt = rng.uniform(0.3, 5.0, n_particles)
    phi = rng.uniform(-np.pi, np.pi, n_particles)
    particles = pd.DataFrame(
        {
            "particle_id": pids,
            "vx": rng.normal(0, 0.01, n_particles),
            "vy": rng.normal(0, 0.01, n_particles),
            "vz": rng.normal(0, 50, n_particles),
            "px": pt * np.cos(phi),
            "py": pt * np.sin(phi),
            "pz": rng.normal(0, 2, n_particles),
            "q": rng.choice([-1, 1], n_particles),
            "nhits": np.full(n_particles, hits_per_particle),
        }
    )
    rows = []
    for i in range(n_particles):
        for j in range(hits_per_particle):
            r = 30.0 + 40 * j
            rows.append((pids[i], r * np.cos(phi[i]), r * np.sin(phi[i]), particles.vz[i] + 10 * j, 8, 2 + 2 * j, 1 + i))
    for k in range(n_noise):
        rows.append((0, rng.normal(), rng.normal(), rng.normal(), 8, 2, 100 + k))
    arr = pd.DataFrame(rows, columns=["pid", "x", "y", "z", "volume_id", "layer_id", "module_id"])
    n = len(arr)
    hit_id = np.arange(1, n + 1)
    hits = pd.DataFrame({"hit_id": hit_id, **{c: arr[c] for c in ["x", "y", "z", "volume_id", "layer_id", "module_id"]}})
    truth = pd.DataFrame(
        {
            "hit_id": hit_id,
            "particle_id": arr["pid"],
            "tx": arr["x"],
            "ty": arr["y"],
            "tz": arr["z"],
            "tpx": 0.0,
            "tpy": 0.0,
            "tpz": 0.0,
            "weight": 0.0,
        }
    )
    truth["weight"] = tm.weight_hits(truth, particles)
    cells = pd.DataFrame({"hit_id": np.repeat(hit_id, 2), "ch0": np.tile([3, 4], n), "ch1": np.tile([7, 7], n), "value": 0.1})
    hits = hits.astype(tm.HITS_DTYPES)
    cells = cells.astype(tm.CELLS_DTYPES)
    particles = particles.astype({k: v for k, v in tm.PARTICLES_DTYPES.items() if k != "particle_type"})
    truth = truth.astype(tm.TRUTH_DTYPES)
    return hits, cells, particles, truth


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip_and_dtypes(tmp_path, compress):
    hits, cells, particles, truth = _toy_event()
    prefix = tmp_path / "event000000042"
    written = tm.write_event(prefix, hits=hits, cells=cells, particles=particles, truth=truth, compress=compress)
    assert all(p.name.endswith(".csv.gz" if compress else ".csv") for p in written)
    loaded = tm.load_event(prefix)
    for orig, back, part in zip((hits, cells, particles, truth), loaded, tm.DEFAULT_PARTS):
        assert list(back.columns) == list(orig.columns), part
        for col in back.columns:
            assert back[col].dtype == np.dtype(tm.DTYPES[part][col]), (part, col)
        np.testing.assert_array_equal(back.to_numpy(), orig.to_numpy())
    # parts order follows the request
    p2, h2 = tm.load_event(prefix, parts=["particles", "hits"])
    assert "particle_id" in p2.columns and "x" in h2.columns


def test_column_names_match_public_dataset(tmp_path):
    hits, cells, particles, truth = _toy_event()
    prefix = tmp_path / "event000000001"
    tm.write_event(prefix, hits=hits, cells=cells, particles=particles, truth=truth, compress=False)
    header = {p: (tmp_path / f"event000000001-{p}.csv").read_text().splitlines()[0] for p in tm.DEFAULT_PARTS}
    assert header["hits"] == "hit_id,x,y,z,volume_id,layer_id,module_id"
    assert header["cells"] == "hit_id,ch0,ch1,value"
    assert header["particles"] == "particle_id,vx,vy,vz,px,py,pz,q,nhits"
    assert header["truth"] == "hit_id,particle_id,tx,ty,tz,tpx,tpy,tpz,weight"


def test_load_dataset_directory_and_zip(tmp_path):
    ev = _toy_event()
    for eid in (1000, 1001, 1002):
        tm.write_event(tmp_path / tm.event_prefix(eid), *ev, compress=True)
    out = list(tm.load_dataset(tmp_path, skip=1, nevents=1, parts=["hits", "truth"]))
    assert len(out) == 1 and out[0][0] == 1001 and len(out[0]) == 3
    assert len(out[0][1]) == len(ev[0])
    zpath = tmp_path / "ds.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for eid in (1000, 1001):
            for part in tm.DEFAULT_PARTS:
                name = f"{tm.event_prefix(eid)}-{part}.csv.gz"
                z.write(tmp_path / name, arcname=f"train/{name}")
    zout = list(tm.load_dataset(zpath, parts=["particles"]))
    assert [e[0] for e in zout] == [1000, 1001]
    assert zout[0][1]["particle_id"].dtype == np.int64


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="event000000007-hits.csv"):
        tm.load_event(tmp_path / "event000000007", parts=["hits"])


def test_missing_column_names_file_and_column(tmp_path):
    hits, *_ = _toy_event()
    path = tmp_path / "event000000003-hits.csv"
    hits.drop(columns=["layer_id"]).to_csv(path, index=False)
    with pytest.raises(tm.TrackMLFormatError) as err:
        tm.load_event(tmp_path / "event000000003", parts=["hits"])
    assert "layer_id" in str(err.value) and str(path) in str(err.value)


def test_nan_names_file_and_column(tmp_path):
    hits, *_ = _toy_event()
    hits = hits.astype({"y": "f8"})
    hits.loc[3, "y"] = np.nan
    path = tmp_path / "event000000004-hits.csv.gz"
    with gzip.open(path, "wt") as fh:
        hits.to_csv(fh, index=False)
    with pytest.raises(tm.TrackMLFormatError) as err:
        tm.load_event(tmp_path / "event000000004", parts=["hits"])
    assert "'y'" in str(err.value) and str(path) in str(err.value)


def test_non_integer_id_is_an_error(tmp_path):
    _, cells, _, _ = _toy_event()
    cells = cells.astype({"ch0": "f8"})
    cells.loc[0, "ch0"] = 1.5
    cells.to_csv(tmp_path / "event000000005-cells.csv", index=False)
    with pytest.raises(tm.TrackMLFormatError, match="ch0"):
        tm.load_event(tmp_path / "event000000005", parts=["cells"])


def test_detector_round_trip_and_missing_column(tmp_path):
    det = pd.DataFrame(
        {
            "volume_id": [8, 8],
            "layer_id": [2, 2],
            "module_id": [1, 2],
            "cx": [32.0, -32.0],
            "cy": [0.0, 0.0],
            "cz": [0.0, 0.0],
            **{c: [1.0 if c in ("rot_xu", "rot_yv", "rot_zw") else 0.0] * 2 for c in tm._ROT},
            "module_t": 0.15,
            "module_minhu": 8.4,
            "module_maxhu": 8.4,
            "module_hv": 36.0,
            "pitch_u": 0.05,
            "pitch_v": 0.05625,
        }
    )
    path = tm.write_detector(det, tmp_path / "detectors.csv.gz")
    back = tm.load_detector(tmp_path)
    assert list(back.columns) == list(tm.DETECTORS_DTYPES)
    np.testing.assert_allclose(back[["cx", "pitch_v"]].to_numpy(), det[["cx", "pitch_v"]].to_numpy())
    det.drop(columns=["pitch_v"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(tm.TrackMLFormatError, match="pitch_v"):
        tm.load_detector(tmp_path / "bad.csv")
    assert path.exists()


def test_hit_cylindrical_and_particle_kinematics_by_hand():
    r, phi, eta = tm.hit_cylindrical(np.array([3.0, 0.0]), np.array([4.0, -2.0]), np.array([5.0, -1.0]))
    np.testing.assert_allclose(r, [5.0, 2.0])
    np.testing.assert_allclose(phi, [np.arctan2(4, 3), -np.pi / 2])
    theta = np.arctan2(5.0, 5.0)
    np.testing.assert_allclose(eta[0], -np.log(np.tan(theta / 2)))
    np.testing.assert_allclose(eta[1], -np.log(np.tan(np.arctan2(2.0, -1.0) / 2)))
    p = pd.DataFrame({"particle_id": [1], "vx": [3.0], "vy": [4.0], "vz": [1.0], "px": [0.6], "py": [0.8], "pz": [-1.0]})
    k = tm.particle_kinematics(p)
    np.testing.assert_allclose(k["pt"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(k["p"], np.sqrt(2.0), rtol=1e-6)
    np.testing.assert_allclose(k["eta"], -np.log(np.tan(np.arctan2(1.0, -1.0) / 2)), rtol=1e-6)
    np.testing.assert_allclose(k["radius"], 5.0, rtol=1e-6)


def test_region_labels():
    lab = tm.region_labels(np.array([7, 8, 9, 12, 13, 14, 16, 17, 18, 99]))
    assert lab["region"].tolist() == [1, 3, 5, 2, 4, 6, 2, 4, 6, 0]
    assert lab["is_barrel"].tolist() == [False, True, False, False, True, False, False, True, False, False]
    assert lab["technology"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, -1]


def test_add_derived_columns_and_cell_features():
    hits = pd.DataFrame(
        {"hit_id": [2, 1], "x": [0.0, 30.0], "y": [40.0, 0.0], "z": [30.0, 0.0], "volume_id": [13, 8], "layer_id": [2, 2], "module_id": [1, 1]}
    ).astype(tm.HITS_DTYPES)
    cells = pd.DataFrame({"hit_id": [1, 1, 1, 2], "ch0": [10, 11, 12, 5], "ch1": [4, 5, 5, 9], "value": [0.1, 0.2, 0.3, 0.5]})
    # module (8,2,1): u = ŷ, v = ẑ, w = x̂ ; module (13,2,1): identity rotation
    det = pd.DataFrame(
        {
            "volume_id": [8, 13],
            "layer_id": [2, 2],
            "module_id": [1, 1],
            "cx": [30.0, 0.0],
            "cy": [0.0, 40.0],
            "cz": [0.0, 0.0],
            "rot_xu": [0.0, 1.0], "rot_xv": [0.0, 0.0], "rot_xw": [1.0, 0.0],
            "rot_yu": [1.0, 0.0], "rot_yv": [0.0, 1.0], "rot_yw": [0.0, 0.0],
            "rot_zu": [0.0, 0.0], "rot_zv": [1.0, 0.0], "rot_zw": [0.0, 1.0],
            "module_t": [0.15, 0.25],
            "module_minhu": 8.4, "module_maxhu": 8.4, "module_hv": 36.0,
            "pitch_u": [0.05, 0.08],
            "pitch_v": [0.05625, 1.2],
        }
    )
    out = tm.add_derived_columns(hits, cells, det)
    assert out["hit_id"].tolist() == [1, 2] and out["hit_index"].tolist() == [0, 1]
    np.testing.assert_allclose(out["r"], [30.0, 40.0], rtol=1e-6)
    np.testing.assert_allclose(out["phi"], [0.0, np.pi / 2], rtol=1e-6)
    np.testing.assert_allclose(out["eta"], [0.0, np.arcsinh(30 / 40)], rtol=1e-6)
    assert out["region"].tolist() == [3, 4]
    assert out["cell_count"].tolist() == [3, 1]
    np.testing.assert_allclose(out["cell_val"], [0.6, 0.5], rtol=1e-6)
    lx, ly, lz = 3 * 0.05, 2 * 0.05625, 0.3
    np.testing.assert_allclose(out.loc[0, ["lx", "ly", "lz"]].to_numpy(float), [lx, ly, lz], rtol=1e-6)
    np.testing.assert_allclose(out.loc[0, "lphi"], np.arctan2(ly, lx), rtol=1e-6)
    np.testing.assert_allclose(out.loc[0, "leta"], np.arcsinh(lz / np.hypot(lx, ly)), rtol=1e-6)
    g = np.array([lz, lx, ly])  # R @ (lx, ly, lz) with columns u=ŷ, v=ẑ, w=x̂
    np.testing.assert_allclose(out.loc[0, "gphi"], np.arctan2(g[1], g[0]), rtol=1e-6)
    np.testing.assert_allclose(out.loc[0, "geta"], np.arcsinh(g[2] / np.hypot(g[0], g[1])), rtol=1e-6)
    np.testing.assert_allclose(out.loc[1, ["lx", "ly", "lz"]].to_numpy(float), [0.08, 1.2, 0.5], rtol=1e-6)


def test_cell_features_unknown_module_is_an_error():
    hits = pd.DataFrame({"hit_id": [1], "x": [1.0], "y": [0.0], "z": [0.0], "volume_id": [8], "layer_id": [2], "module_id": [99]})
    cells = pd.DataFrame({"hit_id": [1], "ch0": [0], "ch1": [0], "value": [1.0]})
    det = pd.DataFrame({c: [0.0] for c in tm.DETECTORS_DTYPES}).astype({"volume_id": int, "layer_id": int, "module_id": int})
    with pytest.raises(tm.TrackMLFormatError, match="module_id=99"):
        tm.cell_features(hits, cells, det)


def test_build_hit_table_joins_truth_and_particles():
    hits, cells, particles, truth = _toy_event()
    tab = tm.build_hit_table(hits, cells, particles, truth)
    assert len(tab) == len(hits)
    noise = tab["particle_id"] == 0
    assert (tab.loc[noise, "pt"] == 0).all() and (tab.loc[noise, "nhits"] == 0).all()
    kin = tm.particle_kinematics(particles).set_index("particle_id")
    sig = tab[~noise]
    np.testing.assert_allclose(sig["pt"], kin.loc[sig["particle_id"], "pt"], rtol=1e-6)


# ------------------------------------------------------------------------------------------ scoring
def test_score_perfect_is_one_and_labels_are_arbitrary():
    _, _, _, truth = _toy_event()
    sub = pd.DataFrame({"hit_id": truth["hit_id"], "track_id": truth["particle_id"]})
    assert tm.score_event(truth, sub) == pytest.approx(1.0, abs=1e-6)
    # relabel tracks with a random permutation of arbitrary integers: score unchanged
    uniq = np.unique(sub["track_id"])
    perm = dict(zip(uniq, np.random.default_rng(1).permutation(len(uniq)) * 7 + 3))
    sub2 = pd.DataFrame({"hit_id": sub["hit_id"], "track_id": sub["track_id"].map(perm)}).sample(frac=1.0, random_state=0)
    assert tm.score_event(truth, sub2) == pytest.approx(1.0, abs=1e-6)


def test_score_all_in_one_track_is_near_zero():
    _, _, _, truth = _toy_event(n_particles=8)
    sub = pd.DataFrame({"hit_id": truth["hit_id"], "track_id": 1})
    assert tm.score_event(truth, sub) < 0.01


def test_score_hand_computed_case():
    # particle 1: hits 1-4 (w .1 each), particle 2: hits 5-8 (w .1 each), noise 9-10 (w 0), total .8
    truth = pd.DataFrame(
        {"hit_id": np.arange(1, 11), "particle_id": [1] * 4 + [2] * 4 + [0] * 2, "weight": [0.1] * 8 + [0.0] * 2}
    )
    # track A: 3 hits of p1 + 1 noise (purity .75, p1 fraction .75) -> good, weight .3
    # track B: 2 hits of p2 + 2 of p1? p1 has only one left; B = 2 of p2 + hit 4 of p1 + noise
    #          majority p2 with 2/4 -> purity_rec = .5 -> not good (strict)
    # track C: remaining 2 hits of p2 -> 2/2 rec but 2/4 of p2 -> not good
    sub = pd.DataFrame(
        {"hit_id": np.arange(1, 11), "track_id": [10, 10, 10, 20, 20, 20, 30, 30, 10, 20]}
    )
    assert tm.score_event(truth, sub) == pytest.approx(0.3 / 0.8)
    tracks = tm.analyze_tracks(truth, sub).set_index("track_id")
    assert tracks.loc[10, "major_particle_id"] == 1 and tracks.loc[10, "major_nhits"] == 3
    # a tie (2 of p1? no: 1 of p1, 2 of p2 ...) majority tie goes to the smallest particle id
    sub_tie = pd.DataFrame({"hit_id": [1, 2, 5, 6], "track_id": [1, 1, 1, 1]})
    t2 = tm.analyze_tracks(truth, sub_tie).set_index("track_id")
    assert t2.loc[1, "major_particle_id"] == 1


def test_score_missing_and_duplicate_hits():
    truth = pd.DataFrame({"hit_id": np.arange(1, 9), "particle_id": [1] * 4 + [2] * 4, "weight": [0.125] * 8})
    sub = pd.DataFrame({"hit_id": [1, 2, 3, 5, 6, 7, 8], "track_id": [1, 1, 1, 2, 2, 2, 2]})
    assert tm.score_event(truth, sub) == pytest.approx(0.375 + 0.5)
    dup = pd.DataFrame({"hit_id": [1, 1], "track_id": [1, 2]})
    with pytest.raises(tm.TrackMLFormatError, match="more than once"):
        tm.score_event(truth, dup)
    with pytest.raises(tm.TrackMLFormatError, match="track_id"):
        tm.score_event(truth, sub.drop(columns=["track_id"]))


def test_weight_hits_properties():
    _, _, particles, truth = _toy_event(hits_per_particle=6)
    w = tm.weight_hits(truth, particles)
    assert w.sum() == pytest.approx(1.0)
    assert (w[truth["particle_id"].to_numpy() == 0] == 0).all()
    # fewer than 4 hits -> zero weight
    short = truth[truth["hit_id"].isin([1, 2, 3, 7, 8, 9, 10, 11, 12])]
    w2 = tm.weight_hits(short, particles)
    assert (w2[:3] == 0).all() and w2[3:].sum() == pytest.approx(1.0)
    # order weights follow the profile: the first hit of a track outweighs its middle hits
    one = truth[truth["particle_id"] == truth["particle_id"].iloc[0]]
    w3 = tm.weight_hits(one, particles)
    assert w3[0] > w3[3]
    assert tm.weight_pt(np.array([0.3, 3.0, 10.0])).tolist() == [0.2, 1.0, 1.0]


def test_particle_id_bits_round_trip():
    pid = tm.encode_particle_id(np.array([1, 4095]), np.array([7, 65535]), np.array([0, 2]), np.array([0, 3]), np.array([0, 5]))
    dec = tm.decode_particle_id(pd.DataFrame({"particle_id": pid}))
    assert dec["vertex_id"].tolist() == [1, 4095]
    assert dec["primary_id"].tolist() == [7, 65535]
    assert dec["generation"].tolist() == [0, 2]
    assert dec["secondary_id"].tolist() == [0, 3]
    assert dec["process"].tolist() == [0, 5]
    assert pid[0] == (1 << 52) | (7 << 36)
    with pytest.raises(ValueError, match="primary_id"):
        tm.encode_particle_id(np.array([1]), np.array([1 << 16]))


def test_write_submission(tmp_path):
    sub = pd.DataFrame({"hit_id": [1, 2, 3], "track_id": [5, 5, 9]})
    path = tm.write_submission(tmp_path / "sub.csv", sub, event_id=12)
    back = pd.read_csv(path)
    assert list(back.columns) == ["event_id", "hit_id", "track_id"]
    assert back["event_id"].tolist() == [12, 12, 12]
    with pytest.raises(tm.TrackMLFormatError, match="event_id"):
        tm.write_submission(tmp_path / "sub2.csv", sub)


def test_event_container_round_trip(tmp_path):
    hits, cells, particles, truth = _toy_event()
    ev = tm.TrackMLEvent(hits, cells, particles, truth, event_id=77, seed=1234, meta={"note": "x"})
    prefix = ev.write(tmp_path)
    back = tm.TrackMLEvent.read(prefix)
    assert back.event_id == 77 and back.seed == 1234 and back.meta["note"] == "x"
    pd.testing.assert_frame_equal(back.truth, truth)


def test_vectorised_score_matches_loop_reference():
    rng = np.random.default_rng(5)
    _, _, _, truth = _toy_event(seed=3, n_particles=30, hits_per_particle=8, n_noise=20)
    for flip in (0.0, 0.2, 0.45, 0.7):
        tid = truth["particle_id"].to_numpy().copy()
        swap = rng.random(len(tid)) < flip
        tid[swap] = rng.choice(tid, swap.sum())
        sub = pd.DataFrame({"hit_id": truth["hit_id"], "track_id": tid})
        keep = rng.random(len(sub)) > 0.05  # some hits left out of the submission
        sub = sub[keep]
        assert tm.score_event(truth, sub) == pytest.approx(tm.score_event_loop(truth, sub), abs=1e-9)


def test_event_prefix_is_nine_digits():
    assert tm.event_prefix(1000) == "event000001000"
    with pytest.raises(ValueError, match="9-digit"):
        tm.event_prefix(1_000_000_000)


def test_throughput_phase_particle_type_is_kept(tmp_path):
    _, _, particles, _ = _toy_event()
    particles.insert(1, "particle_type", np.where(particles["q"] > 0, 211, -211).astype(np.int32))
    tm.write_event(tmp_path / "event000000009", particles=particles, compress=False)
    header = (tmp_path / "event000000009-particles.csv").read_text().splitlines()[0]
    assert header == "particle_id,particle_type,vx,vy,vz,px,py,pz,q,nhits"
    (back,) = tm.load_event(tmp_path / "event000000009", parts=["particles"])
    assert back["particle_type"].dtype == np.int32
    np.testing.assert_array_equal(back["particle_type"], particles["particle_type"])
