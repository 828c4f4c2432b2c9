"""Private fallback event generator, used only while :mod:`gnnreco.sim.tracker` is unavailable.

Helices in a uniform solenoid field through a TrackML-like pixel detector (4 barrel layers, 7 endcap
disks per side), Gaussian hit smearing and uniform noise; TrackML-format DataFrames. It has no
material effects; the real simulator lives in :mod:`gnnreco.sim.tracker`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["ToyEvent", "toy_event"]

_BARREL_R = np.array([32.0, 72.0, 116.0, 172.0])
_BARREL_HALF_Z = 500.0
_DISK_Z = np.array([600.0, 700.0, 820.0, 960.0, 1100.0, 1300.0, 1500.0])
_DISK_R = (30.0, 175.0)


@dataclass
class ToyEvent:
    hits: pd.DataFrame
    particles: pd.DataFrame
    truth: pd.DataFrame
    cells: pd.DataFrame | None = None


def toy_event(seed: int, mu: int = 10, particles_per_vertex: int = 40, noise_fraction: float = 0.1,
              b_field: float = 2.0, sigma: float = 0.02, pt_min: float = 0.3, eta_max: float = 4.0) -> ToyEvent:
    """One toy event with ``mu`` vertices of ``particles_per_vertex`` charged particles."""
    rng = np.random.default_rng(seed)
    n_vtx = max(1, int(rng.poisson(mu)))
    n_per = rng.poisson(particles_per_vertex, n_vtx)
    n = int(n_per.sum())
    vz = np.repeat(rng.normal(0, 50.0, n_vtx), n_per)
    vx = rng.normal(0, 0.01, n)
    vy = rng.normal(0, 0.01, n)
    pt = pt_min * (1 - rng.random(n)) ** (-1 / 2.0)  # power-law tail
    eta = rng.uniform(-eta_max, eta_max, n)
    phi0 = rng.uniform(-np.pi, np.pi, n)
    q = rng.choice([-1, 1], n)
    pdg = rng.choice([211, -211, 321, 2212, 11, 13], n, p=[0.4, 0.4, 0.08, 0.06, 0.04, 0.02])
    vtx_id = np.repeat(np.arange(n_vtx), n_per)
    from gnnreco.data.trackml import encode_particle_id

    pid = encode_particle_id(vtx_id + 1, np.arange(n) % 65535 + 1)
    R = pt / (0.3 * b_field) * 1000.0  # curvature radius in mm
    sinh = np.sinh(eta)
    rows = []
    # barrel layers
    for li, rl in enumerate(_BARREL_R):
        ok = rl < 2 * R
        s = 2 * R * np.arcsin(np.clip(rl / (2 * R), 0, 1))
        z = vz + s * sinh
        ok &= np.abs(z) < _BARREL_HALF_Z
        idx = np.nonzero(ok)[0]
        phi = phi0[idx] - q[idx] * s[idx] / (2 * R[idx])
        rows.append((idx, rl * np.cos(phi), rl * np.sin(phi), z[idx], np.full(idx.size, 8), np.full(idx.size, 2 + 2 * li), s[idx]))
    # endcap disks
    for side, vol in ((-1, 7), (1, 9)):
        for di, zd in enumerate(_DISK_Z):
            with np.errstate(divide="ignore", invalid="ignore"):
                s = (side * zd - vz) / sinh
            ok = (s > 0) & (s < np.pi * R)
            r = 2 * R * np.sin(np.where(ok, s, 0) / (2 * R))
            ok &= (r > _DISK_R[0]) & (r < _DISK_R[1])
            idx = np.nonzero(ok)[0]
            phi = phi0[idx] - q[idx] * s[idx] / (2 * R[idx])
            layer = (7 - di) * 2 if side < 0 else 2 + 2 * di
            rows.append((idx, r[idx] * np.cos(phi), r[idx] * np.sin(phi), np.full(idx.size, side * zd),
                         np.full(idx.size, vol), np.full(idx.size, layer), s[idx]))
    idx = np.concatenate([r[0] for r in rows]).astype(np.int64)
    x = np.concatenate([r[1] for r in rows]) + rng.normal(0, sigma, idx.size)
    y = np.concatenate([r[2] for r in rows]) + rng.normal(0, sigma, idx.size)
    z = np.concatenate([r[3] for r in rows])
    vol = np.concatenate([r[4] for r in rows])
    lay = np.concatenate([r[5] for r in rows])
    n_noise = int(noise_fraction * idx.size)
    if n_noise:
        nr = rng.uniform(30, 175, n_noise)
        nphi = rng.uniform(-np.pi, np.pi, n_noise)
        bl = rng.integers(0, 4, n_noise)
        x = np.concatenate([x, _BARREL_R[bl] * np.cos(nphi)])
        y = np.concatenate([y, _BARREL_R[bl] * np.sin(nphi)])
        z = np.concatenate([z, rng.uniform(-_BARREL_HALF_Z, _BARREL_HALF_Z, n_noise)])
        vol = np.concatenate([vol, np.full(n_noise, 8)])
        lay = np.concatenate([lay, 2 + 2 * bl])
        del nr
    hit_pid = np.concatenate([pid[idx], np.zeros(n_noise, np.int64)])
    perm = rng.permutation(x.size)
    x, y, z, vol, lay, hit_pid = x[perm], y[perm], z[perm], vol[perm], lay[perm], hit_pid[perm]
    hit_id = np.arange(1, x.size + 1, dtype=np.int64)
    module = (np.floor((np.arctan2(y, x) + np.pi) / (2 * np.pi) * 64).astype(np.int64) * 16
              + np.clip(((z + 1500) / 3000 * 16).astype(np.int64), 0, 15))
    hits = pd.DataFrame({"hit_id": hit_id, "x": x.astype(np.float32), "y": y.astype(np.float32),
                         "z": z.astype(np.float32), "volume_id": vol.astype(np.int32),
                         "layer_id": lay.astype(np.int32), "module_id": module.astype(np.int32)})
    px, py, pz = pt * np.cos(phi0), pt * np.sin(phi0), pt * sinh
    nh = pd.Series(hit_pid[hit_pid != 0]).value_counts()
    particles = pd.DataFrame({"particle_id": pid, "particle_type": pdg.astype(np.int32), "vx": vx, "vy": vy,
                              "vz": vz, "px": px, "py": py, "pz": pz, "q": q.astype(np.int32),
                              "nhits": nh.reindex(pid).fillna(0).to_numpy().astype(np.int32)})
    w = np.where(hit_pid != 0, 1.0, 0.0)
    w = w / max(w.sum(), 1.0)
    truth = pd.DataFrame({"hit_id": hit_id, "particle_id": hit_pid, "tx": x, "ty": y, "tz": z,
                          "tpx": 0.0, "tpy": 0.0, "tpz": 0.0, "weight": w.astype(np.float32)})
    return ToyEvent(hits, particles, truth)
