"""Tracking builders: layer-pair cuts against a brute-force pair loop, module map, presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gnnreco.graph import (
    IN_PAPER_PRESETS,
    LAYER_PAIR_PRESETS,
    LayerPairBuilder,
    ModuleMap,
    adjacent_layer_pairs,
    construction_metrics,
    geometric_layer_pairs,
    layer_pair_graph,
    metric_learning_graph,
    pair_features,
    phi_slope_for_pt,
    truth_graph,
)
from gnnreco.graph._synthetic import helix_event

CONF = Path(__file__).resolve().parents[2] / "gnnreco" / "conf" / "graph"


def edge_set(ei):
    return set(map(tuple, torch.as_tensor(ei).t().tolist()))


def brute_layer_pairs(ev, pairs, phi_slope_max, z0_max, deta_max=None, cylinders=()):
    """Every hit pair of every allowed layer pair, cut with pair_features (no search structure)."""
    r, phi, z, layer = (torch.as_tensor(ev[k]) for k in ("r", "phi", "z", "layer"))
    out = set()
    for a, b in pairs:
        ha, hb = (layer == a).nonzero().flatten(), (layer == b).nonzero().flatten()
        s = ha.repeat_interleave(hb.numel())
        d = hb.repeat(ha.numel())
        f = pair_features(r.double(), phi.double(), z.double(), s, d)
        keep = (f["phi_slope"].abs() < phi_slope_max) & (f["z0"].abs() < z0_max) & (s != d)
        if deta_max is not None:
            keep &= f["deta"].abs() < deta_max
        for rc, hl in cylinders:
            zc = z[s] + (rc - r[s]) * f["dz"] / f["dr"]
            keep &= ~((r[s] < rc) & (r[d] > rc) & (zc.abs() < hl))
        out |= set(zip(s[keep].tolist(), d[keep].tolist()))
    return out


@pytest.fixture(scope="module")
def small_event():
    return helix_event(150, seed=3, noise_fraction=0.2, smear=0.05)


@pytest.mark.parametrize("pt", sorted(LAYER_PAIR_PRESETS))
def test_layer_pairs_equal_brute_force(small_event, pt):
    ev = small_event
    b = LayerPairBuilder.from_pt(pt, num_bins=7)
    pairs = adjacent_layer_pairs(ev["layer"])
    got = b(ev["r"], ev["phi"], ev["z"], ev["layer"])
    assert got.dtype == torch.long
    assert edge_set(got) == brute_layer_pairs(ev, pairs, b.phi_slope_max, b.z0_max)
    # edges point outwards
    assert bool((torch.as_tensor(ev["r"])[got[1]] > torch.as_tensor(ev["r"])[got[0]]).all())


def test_layer_pairs_tight_cuts_skip_pairs_deta_and_intersections(small_event):
    ev = small_event
    pairs = [(0, 1), (1, 2), (0, 2), (2, 3), (5, 7)]
    cyl = [(72.0, 300.0), (172.0, 500.0)]
    got = layer_pair_graph(ev["r"], ev["phi"], ev["z"], ev["layer"], phi_slope_max=0.0006, z0_max=150,
                           deta_max=0.05, layer_pairs=pairs, intersecting_cylinders=cyl)
    ref = brute_layer_pairs(ev, pairs, 0.0006, 150, 0.05, cyl)
    assert edge_set(got) == ref and len(ref) > 0


def test_layer_pairs_keep_true_edges_of_high_pt_tracks():
    ev = helix_event(300, seed=4, pt_range=(2.0, 20.0), sigma_vz=30.0)
    got = LayerPairBuilder.from_pt(2.0)(ev["r"], ev["phi"], ev["z"], ev["layer"])
    truth = truth_graph(ev["particle_id"], "modulewise", order=ev["r"])
    m = construction_metrics(got, truth)
    assert m.loc[0, "efficiency"] == 1.0


def test_layer_pair_volume_keys_and_errors():
    r = torch.tensor([30.0, 70.0, 30.0, 70.0])
    phi = torch.zeros(4)
    z = torch.tensor([1.0, 2.0, 1.0, 2.0])
    layer = torch.tensor([0, 1, 0, 1])
    vol = torch.tensor([7, 7, 8, 8])
    e = LayerPairBuilder(0.01, 100)(r, phi, z, layer, vol)
    assert edge_set(e) == {(0, 1), (2, 3)}
    e2 = LayerPairBuilder(0.01, 100, layer_pairs=[((7, 0), (8, 1))])(r, phi, z, layer, vol)
    assert edge_set(e2) == {(0, 3)}
    bad = z.clone()
    bad[1] = float("nan")
    with pytest.raises(ValueError, match="'z'"):
        LayerPairBuilder()(r, phi, bad, layer)
    with pytest.raises(ValueError, match="'layer'"):
        LayerPairBuilder()(r, phi, z, layer[:3])
    assert LayerPairBuilder()(r[:0], phi[:0], z[:0], layer[:0]).shape == (2, 0)


def test_presets_are_yaml_configs():
    hydra_utils = pytest.importorskip("hydra.utils")
    from omegaconf import OmegaConf

    for name, pt in (("2gev", 2.0), ("1gev", 1.0), ("0p5gev", 0.5)):
        b = hydra_utils.instantiate(OmegaConf.load(CONF / f"layer_pairs_{name}.yaml"))
        assert isinstance(b, LayerPairBuilder)
        assert (b.phi_slope_max, b.z0_max) == LAYER_PAIR_PRESETS[pt]
        p = hydra_utils.instantiate(OmegaConf.load(CONF / f"layer_pairs_{name}_in_paper.yaml"))
        assert (p.phi_slope_max, p.z0_max) == IN_PAPER_PRESETS[pt]
        assert LayerPairBuilder.from_pt(pt, table="in_paper").phi_slope_max == IN_PAPER_PRESETS[pt][0]


def test_full_event_presets_follow_the_track_curvature():
    # rad/mm: 1/(2 rho) with rho = pT / (0.3 B) m; a 1 GeV track in 2 T has 3.0e-4 rad/mm
    assert phi_slope_for_pt(1.0, 2.0, margin=1.0) == pytest.approx(2.998e-4, rel=1e-3)
    for pt, (ps, _) in LAYER_PAIR_PRESETS.items():
        assert ps == pytest.approx(phi_slope_for_pt(pt), rel=0.01)
        # the published (truth-filtered) table is an order of magnitude looser
        assert IN_PAPER_PRESETS[pt][0] > 8 * ps


def barrel_disk_event(n=400, seed=0):
    """Random hits on 3 barrel cylinders and 3 disks per side (r, phi, z, layer)."""
    g = torch.Generator().manual_seed(seed)
    r, z, lay = [], [], []
    for i, rad in enumerate((40.0, 90.0, 150.0)):
        r.append(rad + torch.rand(n, generator=g) * 4)
        z.append((torch.rand(n, generator=g) * 2 - 1) * 400)
        lay.append(torch.full((n,), i))
    for j, zd in enumerate((600.0, 800.0, 1100.0)):
        for side, off in ((1, 10), (-1, 20)):
            r.append(30 + torch.rand(n, generator=g) * 150)
            z.append(side * (zd + torch.rand(n, generator=g) * 6))
            lay.append(torch.full((n,), off + j))
    r, z, lay = torch.cat(r).double(), torch.cat(z).double(), torch.cat(lay)
    phi = (torch.rand(r.numel(), generator=g).double() * 2 - 1) * torch.pi
    return {"r": r, "phi": phi, "z": z, "layer": lay}


@pytest.mark.parametrize("cuts", [(0.0005, 250.0), (0.007, 350.0), (0.03, 800.0)])
def test_layer_pairs_with_endcap_disks_equal_brute_force(cuts):
    ev = barrel_disk_event(n=250 if cuts[0] < 0.01 else 120)
    pairs = geometric_layer_pairs(ev["r"], ev["z"], ev["layer"])
    assert (0, 1) in pairs and (1, 2) in pairs and (10, 11) in pairs and (20, 21) in pairs
    assert (2, 10) in pairs and (2, 20) in pairs and (11, 10) not in pairs
    for nb in (1, 5, 64):
        got = LayerPairBuilder(*cuts, layer_pairs=pairs, num_bins=nb)(ev["r"], ev["phi"], ev["z"], ev["layer"])
        ref = brute_layer_pairs(ev, pairs, *cuts)
        assert edge_set(got) == ref and got.size(1) == len(ref)
    assert len(ref) > 0


def test_module_map_learn_apply_save_load(tmp_path):
    train = [helix_event(400, seed=s, smear=0.02) for s in range(6)]
    events = []
    for ev in train:
        t = truth_graph(ev["particle_id"], "modulewise", order=ev["r"], module_id=ev["module_id"])
        events.append((ev["r"], ev["phi"], ev["z"], ev["module_id"], t))
    mm = ModuleMap.fit(events)
    assert len(mm) > 0 and mm.num_triplets > 0
    # on a training event every true doublet passes (windows are min/max over it)
    ev = train[0]
    got = mm(ev["r"], ev["phi"], ev["z"], ev["module_id"], triplets=False)
    truth = events[0][4]
    m = construction_metrics(got, truth, num_nodes=len(ev["r"]))
    assert m.loc[0, "efficiency"] == 1.0
    # the result equals a brute-force check of every hit pair against the map
    r, phi, z, mod = (torch.as_tensor(ev[k]) for k in ("r", "phi", "z", "module_id"))
    n = r.numel()
    s, d = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    s, d = s.flatten(), d.flatten()
    keys = mod[s] * mm.num_modules + mod[d]
    i = torch.searchsorted(mm.keys, keys).clamp(max=len(mm) - 1)
    known = (mm.keys[i] == keys) & (s != d)
    s, d, i = s[known], d[known], i[known]
    f = pair_features(r.double(), phi.double(), z.double(), s, d)
    vals = torch.stack([f[k] for k in ("z0", "dphi", "phi_slope", "deta")], 1)
    ok = ((vals >= mm.lo[i]) & (vals <= mm.hi[i])).all(1)
    assert edge_set(got) == set(zip(s[ok].tolist(), d[ok].tolist()))
    path = mm.save(tmp_path / "mm.npz")
    mm2 = ModuleMap.load(path)
    assert torch.equal(mm2.keys, mm.keys) and torch.equal(mm2.lo, mm.lo) and torch.equal(mm2.tkeys, mm.tkeys)
    assert edge_set(mm2(ev["r"], ev["phi"], ev["z"], ev["module_id"], triplets=False)) == edge_set(got)
    # tolerance widens the windows (superset)
    wide = ModuleMap.load(path, tolerance=0.5)(ev["r"], ev["phi"], ev["z"], ev["module_id"], triplets=False)
    assert edge_set(got) <= edge_set(wide)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        ModuleMap.load(tmp_path / "nope.npz")
    np.savez(tmp_path / "bad.npz", keys=np.zeros(1))
    with pytest.raises(ValueError, match="lacks"):
        ModuleMap.load(tmp_path / "bad.npz")


def brute_triplet_filter(mm, ev, doublets):
    """Edges of ``doublets`` that belong to a triplet passing the map (plain loops, small events)."""
    r, phi, z = (torch.as_tensor(ev[k]).double() for k in ("r", "phi", "z"))
    mod = torch.as_tensor(ev["module_id"])
    src, dst = doublets
    f = pair_features(r, phi, z, src, dst)
    feats = torch.stack([f[k] for k in ("z0", "dphi", "phi_slope", "deta")], 1)
    x, y = r * torch.cos(phi), r * torch.sin(phi)
    table = {int(k): i for i, k in enumerate(mm.tkeys.tolist())}
    dense = {int(m): i for i, m in enumerate(mm.modules.tolist())}
    K = mm.modules.numel()
    out = set()
    by_src = {}
    for e in range(src.numel()):
        by_src.setdefault(int(src[e]), []).append(e)
    for e1 in range(src.numel()):
        for e2 in by_src.get(int(dst[e1]), []):
            a, b, c = int(mod[src[e1]]), int(mod[dst[e1]]), int(mod[dst[e2]])
            if a not in dense or b not in dense or c not in dense:
                continue
            j = table.get((dense[a] * K + dense[b]) * K + dense[c])
            if j is None:
                continue
            def slope(p, q, num, den):
                d = den[q] - den[p]
                return (num[q] - num[p]) / (d if d != 0 else 1e-12)
            s1, d1, d2 = int(src[e1]), int(dst[e1]), int(dst[e2])
            diff = [slope(d1, d2, z, r) - slope(s1, d1, z, r), slope(d1, d2, y, x) - slope(s1, d1, y, x)]
            v = torch.cat([feats[e1], feats[e2], torch.tensor(diff, dtype=torch.float64)])
            if bool(((v >= mm.tlo[j]) & (v <= mm.thi[j])).all()):
                out |= {(s1, d1), (d1, d2)}
    return out


def test_module_map_triplets_equal_brute_force_and_keep_training_truth():
    train = [helix_event(300, seed=s, smear=0.02, noise_fraction=0.1) for s in range(4)]
    events = [(e["r"], e["phi"], e["z"], e["module_id"],
               truth_graph(e["particle_id"], "modulewise", order=e["r"], module_id=e["module_id"])) for e in train]
    mm = ModuleMap.fit(events)
    for ev, (*_, truth) in zip(train[:2], events[:2]):
        doublets = mm(ev["r"], ev["phi"], ev["z"], ev["module_id"], triplets=False)
        got = mm(ev["r"], ev["phi"], ev["z"], ev["module_id"])
        assert edge_set(got) == brute_triplet_filter(mm, ev, doublets)
        assert edge_set(got) <= edge_set(doublets) and got.size(1) < doublets.size(1)
        # every true doublet of a particle with >= 3 hits is part of a true (learned) triplet
        pid = torch.as_tensor(ev["particle_id"])
        nh = torch.bincount(pid)
        t3 = truth[:, nh[pid[truth[0]]] >= 3]
        assert edge_set(t3) <= edge_set(got)
    assert mm(train[0]["r"], train[0]["phi"], train[0]["z"], train[0]["module_id"] * 0 + 10**6).shape == (2, 0)
    with pytest.raises(ValueError, match="no triplets"):
        ModuleMap.fit(events[:1], triplets=False)(train[0]["r"], train[0]["phi"], train[0]["z"],
                                                   train[0]["module_id"], triplets=True)


def test_module_map_incremental_update_equals_fit():
    evs = [helix_event(100, seed=s) for s in (10, 11)]
    tr = [truth_graph(e["particle_id"], "modulewise", order=e["r"]) for e in evs]
    a = ModuleMap.fit([(e["r"], e["phi"], e["z"], e["module_id"], t) for e, t in zip(evs, tr)])
    b = ModuleMap()
    b.update(evs[1]["r"], evs[1]["phi"], evs[1]["z"], evs[1]["module_id"] * 0 + evs[1]["module_id"], tr[1])
    b.update(evs[0]["r"], evs[0]["phi"], evs[0]["z"], evs[0]["module_id"], tr[0])
    assert torch.equal(a.keys, b.keys) and torch.allclose(a.lo, b.lo) and torch.allclose(a.hi, b.hi)


def test_metric_learning_graph():
    emb = torch.nn.functional.normalize(torch.randn(500, 12, generator=torch.Generator().manual_seed(0)), dim=1)
    e = metric_learning_graph(emb, r=0.9, k=50)
    d = (emb[e[0]] - emb[e[1]]).norm(dim=1)
    assert bool((d < 0.9).all())
    assert int(torch.bincount(e[1], minlength=500).max()) <= 50
    ek = metric_learning_graph(emb, r=None, k=5)
    assert ek.size(1) == 500 * 5
