"""Parametric, Delphes-style detector response for particle flow (MLPF PF elements and targets).

From generator-level final-state particles (:mod:`gnnreco.sim.pythia`) this module makes the inputs and
targets of MLPF in the **Delphes schema** of Pata et al. (2021), one row per PF element:

* **track** (``type = 2``): ``[2, p_T, η, sinφ, cosφ, p, η_out, sinφ_out, cosφ_out, q, is_μ, is_e]``
* **cluster** (``type = 1``): ``[1, E_T, η, sinφ, cosφ, E, E_em, E_had, 0, 0, 0, 0]``

and the target of each element, ``y = [class, q, p_T, η, sinφ, cosφ, E]`` with classes
0 none, 1 charged hadron, 2 neutral hadron, 3 γ, 4 e, 5 μ (:data:`CLASS_NAMES`).

Detector model (all numbers in :class:`DetectorConfig`):

* **Tracker**, |η| < 2.5, p_T > 0.5 GeV, per-species efficiency; curvature resolution
  σ(p_T)/p_T = a ⊕ b·p_T (× (1 + (|η|−1.5)_+) in the endcaps), angular resolution σ_η = σ_φ.
  Tracks are extrapolated to the calorimeter in a solenoid B: the track reaches transverse radius
  r = min(R_calo, Z_calo/|sinh η|) with φ_out = φ − q·asin(0.3·B·r / (2 p_T)); tracks that curl
  (argument > 1) leave no calorimeter deposit.
* **ECAL / HCAL** cells on η–φ grids (|η| < 3). Electrons and photons deposit in ECAL; hadrons start
  their shower in ECAL with probability ``p_had_ecal`` (a fraction U(``had_ecal_frac``) of their energy)
  and deposit the rest in HCAL. Hadronic response is non-compensating: the visible fraction is
  f_em + (1 − f_em)·(h/e) with the electromagnetic shower fraction f_em = 1 − (E/E₀)^(k−1)
  (Groom), so it rises with energy. Each deposit is smeared by σ/E = S/√E ⊕ C, spread laterally over a
  3×3 cell patch with a Gaussian profile, and every cell gets Gaussian noise N(0, σ_noise).
* **Topological clustering** (4–2–0): seeds above 4σ_noise, grown through 8-connected neighbours above
  2σ_noise (φ wraps around), plus one ring of positive boundary cells. ECAL and HCAL are clustered
  separately; each cluster is one element (E_em = E for ECAL, E_had = E for HCAL).
* **Muon system**: |η| < 2.4, p_T > 3 GeV, efficiency ``muon_eff``, sets ``is_μ`` on the muon's track.
  **Electron ID** sets ``is_e`` on electron tracks with efficiency ``electron_id_eff`` and on hadron tracks
  with rate ``electron_fake``. Muons leave a MIP deposit in both calorimeters.

Targets (MLPF convention, reference §3.1): each visible gen particle goes to its track if it has one,
otherwise to the cluster where it deposited most (visible if that deposit is ≥ ``min_visible`` GeV or
≥ half of its energy). A cluster with several gen particles gets their summed four-momentum, class γ if
the most energetic one is a photon or electron, else neutral hadron, and charge 0. Neutrinos are invisible.

Generator-level particles for jets and MET are the visible (non-ν) final-state particles with
|η| < ``eta_gen`` (= calorimeter acceptance), returned in ``gen_*`` arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage

__all__ = [
    "CLASS_NAMES",
    "X_FEATURES",
    "Y_FEATURES",
    "DetectorConfig",
    "simulate_detector",
    "topo_cluster",
    "particle_class",
]

CLASS_NAMES = ("none", "ch.had", "n.had", "gamma", "e", "mu")
X_FEATURES = ("type", "pt_et", "eta", "sin_phi", "cos_phi", "p_e", "eta_out_eem", "sin_phi_out_ehad",
              "cos_phi_out", "charge", "is_mu", "is_e")
Y_FEATURES = ("cls", "charge", "pt", "eta", "sin_phi", "cos_phi", "e")

_NEUTRINOS = (12, 14, 16)


@dataclass
class DetectorConfig:
    """Parameters of the parametric detector (units GeV, m, T)."""

    b_field: float = 3.8
    calo_radius: float = 1.29
    calo_z: float = 3.0
    eta_tracker: float = 2.5
    track_pt_min: float = 0.5
    track_eff_hadron: float = 0.95
    track_eff_electron: float = 0.93
    track_eff_muon: float = 0.99
    track_res_a: float = 0.01
    track_res_b: float = 2e-4
    track_angle_res: float = 0.002
    eta_calo: float = 3.0
    ecal_cell: float = 0.025
    hcal_cell: float = 0.1
    ecal_stochastic: float = 0.05
    ecal_constant: float = 0.005
    ecal_noise: float = 0.05
    hcal_stochastic: float = 1.0
    hcal_constant: float = 0.05
    hcal_noise: float = 0.2
    h_over_e: float = 0.6
    groom_k: float = 0.82
    p_had_ecal: float = 0.6
    had_ecal_frac: tuple[float, float] = (0.1, 0.7)
    ecal_spread: float = 0.5
    hcal_spread: float = 0.6
    mip_ecal: float = 0.3
    mip_hcal: float = 1.5
    topo_seed: float = 4.0
    topo_grow: float = 2.0
    muon_eta: float = 2.4
    muon_pt_min: float = 3.0
    muon_eff: float = 0.95
    electron_id_eff: float = 0.9
    electron_fake: float = 0.005
    min_visible: float = 0.5
    eta_gen: float = 3.0

    @classmethod
    def from_dict(cls, d: dict | None) -> DetectorConfig:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"unknown detector parameter(s) {bad}; expected some of {sorted(known)}")
        return cls(**d)


def particle_class(pid: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Target class of gen particles: 1 ch.had, 2 n.had, 3 γ, 4 e, 5 μ (neutrinos → 0)."""
    a = np.abs(pid)
    cls = np.where(charge != 0, 1, 2)
    cls = np.where(a == 22, 3, cls)
    cls = np.where(a == 11, 4, cls)
    cls = np.where(a == 13, 5, cls)
    return np.where(np.isin(a, _NEUTRINOS), 0, cls).astype(np.int64)


class _Grid:
    """An η–φ cell grid over |η| < eta_max."""

    def __init__(self, eta_max: float, cell: float):
        self.n_eta = int(round(2 * eta_max / cell))
        self.n_phi = int(round(2 * np.pi / cell))
        self.eta_max = eta_max
        self.d_eta = 2 * eta_max / self.n_eta
        self.d_phi = 2 * np.pi / self.n_phi
        self.eta_c = -eta_max + (np.arange(self.n_eta) + 0.5) * self.d_eta
        self.phi_c = -np.pi + (np.arange(self.n_phi) + 0.5) * self.d_phi

    def spread(self, eta: np.ndarray, phi: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """Flat cell indices [n, 9] and Gaussian weights [n, 9] (rows sum to 1) of a 3×3 patch."""
        fe = (eta + self.eta_max) / self.d_eta - 0.5
        fp = (phi + np.pi) / self.d_phi - 0.5
        ie, ip = np.rint(fe).astype(np.int64), np.rint(fp).astype(np.int64)
        off = np.array([-1, 0, 1])
        de = (ie[:, None, None] + off[None, :, None]) - fe[:, None, None]
        dp = (ip[:, None, None] + off[None, None, :]) - fp[:, None, None]
        w = np.exp(-(de**2 + dp**2) / (2 * sigma**2)).reshape(len(eta), 9)
        ce = np.clip(ie[:, None, None] + off[None, :, None], 0, self.n_eta - 1)
        cp = (ip[:, None, None] + off[None, None, :]) % self.n_phi
        cells = (ce * self.n_phi + cp).reshape(len(eta), 9)
        return cells, w / w.sum(1, keepdims=True)


def topo_cluster(energy: np.ndarray, sigma: float, seed: float = 4.0, grow: float = 2.0) -> np.ndarray:
    """4–2–0 topological clustering of a cell grid with φ (axis 1) periodic.

    Args:
        energy: cell energies E [n_η, n_φ].
        sigma: noise σ of a cell.
        seed: seed threshold in σ (cluster must contain a cell with E > seed·σ).
        grow: growth threshold in σ (cells with E > grow·σ connect, 8-neighbourhood).

    Returns:
        cluster label per cell [n_η, n_φ], −1 for unclustered cells; labels are 0..K−1.
    """
    n_eta, n_phi = energy.shape
    grow_mask = energy > grow * sigma
    lab, n = ndimage.label(grow_mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.full(energy.shape, -1, np.int64)
    parent = np.arange(n + 1)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # φ wrap-around: connect column n_φ−1 with column 0 (rows i−1, i, i+1)
    last, first = lab[:, -1], lab[:, 0]
    for d in (-1, 0, 1):
        a = last[max(0, -d): n_eta - max(0, d)]
        b = first[max(0, d): n_eta - max(0, -d)]
        for u, v in zip(a[(a > 0) & (b > 0)], b[(a > 0) & (b > 0)]):
            ru, rv = find(int(u)), find(int(v))
            if ru != rv:
                parent[max(ru, rv)] = min(ru, rv)
    roots = np.array([find(i) for i in range(n + 1)])
    lab = roots[lab]
    has_seed = np.zeros(n + 1, bool)
    has_seed[np.unique(lab[energy > seed * sigma])] = True
    has_seed[0] = False
    lab = np.where(has_seed[lab], lab, 0)
    # boundary ring: positive cells adjacent to a cluster join the neighbour cluster of highest energy
    best_e = np.full(energy.shape, -np.inf)
    best_l = np.zeros(energy.shape, np.int64)
    padded_e = np.pad(np.where(lab > 0, energy, -np.inf), ((1, 1), (0, 0)), constant_values=-np.inf)
    padded_l = np.pad(lab, ((1, 1), (0, 0)))
    for de in (-1, 0, 1):
        for dp in (-1, 0, 1):
            if de == 0 and dp == 0:
                continue
            e_n = np.roll(padded_e, (-de, -dp), axis=(0, 1))[1:-1]
            l_n = np.roll(padded_l, (-de, -dp), axis=(0, 1))[1:-1]
            better = e_n > best_e
            best_e = np.where(better, e_n, best_e)
            best_l = np.where(better, l_n, best_l)
    boundary = (lab == 0) & (energy > 0) & (best_l > 0)
    lab = np.where(boundary, best_l, lab)
    uniq, inv = np.unique(lab, return_inverse=True)
    inv = inv.reshape(lab.shape)
    out = inv - (1 if uniq[0] == 0 else 0)
    return np.where(lab > 0, out, -1).astype(np.int64)


def _smear(e: np.ndarray, stoch: float, const: float, rng: np.random.Generator) -> np.ndarray:
    rel = np.sqrt(stoch**2 / np.maximum(e, 1e-3) + const**2)
    return np.maximum(e * (1 + rel * rng.standard_normal(len(e))), 0.0)


def _cluster_elements(cells_e: np.ndarray, labels: np.ndarray, grid: _Grid) -> np.ndarray:
    """Per-cluster [E, η, φ] from positive cell energies."""
    k = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    if k == 0:
        return np.zeros((0, 3))
    m = labels >= 0
    lab = labels[m]
    e = np.maximum(cells_e[m], 0.0)
    eta = np.broadcast_to(grid.eta_c[:, None], labels.shape)[m]
    phi = np.broadcast_to(grid.phi_c[None, :], labels.shape)[m]
    es = np.bincount(lab, e, k)
    w = np.maximum(es, 1e-9)
    ceta = np.bincount(lab, e * eta, k) / w
    cphi = np.arctan2(np.bincount(lab, e * np.sin(phi), k), np.bincount(lab, e * np.cos(phi), k))
    return np.stack([es, ceta, cphi], 1)


def simulate_detector(gen: dict[str, np.ndarray], seed: int, config: DetectorConfig | dict | None = None
                      ) -> dict[str, np.ndarray]:
    """Detector response of one event: PF elements, per-element targets and gen-level particles.

    Args:
        gen: final-state particles (keys ``pid, charge, px, py, pz, e``; see :mod:`gnnreco.sim.pythia`).
        seed: seed of the detector randomness of this event.
        config: :class:`DetectorConfig` or a dict of its fields.

    Returns:
        ``X`` [N, 12] elements (tracks, then ECAL clusters, then HCAL clusters), ``y`` [N, 7] targets,
        ``elem_gen`` [N] index of the leading gen particle of each element (−1 none), ``gen_p4`` [M, 4]
        visible gen particles (p_T, η, φ, E) and ``gen_cls`` [M], ``gen_is_pu`` [M].
    """
    cfg = config if isinstance(config, DetectorConfig) else DetectorConfig.from_dict(config)
    rng = np.random.default_rng([int(seed), 4242])
    for k in ("pid", "charge", "px", "py", "pz", "e"):
        if k not in gen:
            raise KeyError(f"gen event lacks key '{k}' (expected keys pid, charge, px, py, pz, e)")
    pid = np.asarray(gen["pid"]).astype(np.int64)
    q = np.asarray(gen["charge"], np.float64)
    px, py, pz, en = (np.asarray(gen[k], np.float64) for k in ("px", "py", "pz", "e"))
    is_pu = np.asarray(gen.get("is_pu", np.zeros(len(pid), bool)), bool)
    pt = np.hypot(px, py)
    ok = pt > 1e-6
    pt, px, py, pz, en, pid, q, is_pu = (a[ok] for a in (pt, px, py, pz, en, pid, q, is_pu))
    eta = np.arcsinh(pz / pt)
    phi = np.arctan2(py, px)
    cls = particle_class(pid, q)
    visible = cls > 0
    n = len(pid)
    apid = np.abs(pid)

    # ------------------------------------------------------------------ tracker
    eff = np.where(apid == 13, cfg.track_eff_muon, np.where(apid == 11, cfg.track_eff_electron, cfg.track_eff_hadron))
    has_track = (q != 0) & (np.abs(eta) < cfg.eta_tracker) & (pt > cfg.track_pt_min) & (rng.random(n) < eff)
    r_t = np.minimum(cfg.calo_radius, cfg.calo_z / np.maximum(np.abs(np.sinh(eta)), 1e-9))
    bend = 0.3 * cfg.b_field * r_t / (2 * pt)
    reaches_calo = (q == 0) | (bend <= 1.0)
    phi_out = phi - q * np.arcsin(np.clip(bend, 0, 1))
    it = np.flatnonzero(has_track)
    rel = np.sqrt(cfg.track_res_a**2 + (cfg.track_res_b * pt[it]) ** 2) * (1 + np.maximum(np.abs(eta[it]) - 1.5, 0))
    t_pt = pt[it] / np.maximum(1 + rel * rng.standard_normal(len(it)), 0.05)
    t_eta = eta[it] + cfg.track_angle_res * rng.standard_normal(len(it))
    t_phi = phi[it] + cfg.track_angle_res * rng.standard_normal(len(it))
    t_phi_out = phi_out[it] + (t_phi - phi[it])
    is_mu = (apid[it] == 13) & (np.abs(eta[it]) < cfg.muon_eta) & (pt[it] > cfg.muon_pt_min) & (rng.random(len(it)) < cfg.muon_eff)
    e_rate = np.where(apid[it] == 11, cfg.electron_id_eff, np.where(apid[it] == 13, 0.0, cfg.electron_fake))
    is_e = rng.random(len(it)) < e_rate
    X_trk = np.stack([np.full(len(it), 2.0), t_pt, t_eta, np.sin(t_phi), np.cos(t_phi), t_pt * np.cosh(t_eta),
                      t_eta, np.sin(t_phi_out), np.cos(t_phi_out), q[it], is_mu.astype(float), is_e.astype(float)], 1)

    # ------------------------------------------------------------------ calorimeters
    in_calo = visible & reaches_calo & (np.abs(eta) < cfg.eta_calo)
    em = in_calo & ((apid == 22) | (apid == 11))
    mu = in_calo & (apid == 13)
    had = in_calo & ~em & ~mu
    calo_phi = np.where(q != 0, phi_out, phi)
    e_ecal = np.zeros(n)
    e_hcal = np.zeros(n)
    e_ecal[em] = _smear(en[em], cfg.ecal_stochastic, cfg.ecal_constant, rng)
    ih = np.flatnonzero(had)
    ekin = np.maximum(en[ih] - np.where(apid[ih] == 2212, 0.938, 0.0), 0.05)
    f_em = 1.0 - np.power(np.maximum(ekin, 1.0), cfg.groom_k - 1.0)
    resp = f_em + (1 - f_em) * cfg.h_over_e
    vis = ekin * resp
    starts_ecal = rng.random(len(ih)) < cfg.p_had_ecal
    frac = np.where(starts_ecal, rng.uniform(*cfg.had_ecal_frac, len(ih)), 0.0)
    mip = np.minimum(cfg.mip_ecal, vis)
    e_ecal[ih] = np.where(starts_ecal, _smear(vis * frac, cfg.hcal_stochastic, cfg.hcal_constant, rng), mip)
    e_hcal[ih] = _smear(np.maximum(vis - e_ecal[ih], 0.0), cfg.hcal_stochastic, cfg.hcal_constant, rng)
    im = np.flatnonzero(mu)
    e_ecal[im] = np.minimum(cfg.mip_ecal, en[im]) * rng.uniform(0.7, 1.3, len(im))
    e_hcal[im] = np.minimum(cfg.mip_hcal, en[im]) * rng.uniform(0.7, 1.3, len(im))

    out_clusters = []
    deposits = []  # per calorimeter: [n_particles, n_clusters] deposited energy (sparse as triplets)
    for e_dep, cell, spread, noise in ((e_ecal, cfg.ecal_cell, cfg.ecal_spread, cfg.ecal_noise),
                                       (e_hcal, cfg.hcal_cell, cfg.hcal_spread, cfg.hcal_noise)):
        grid = _Grid(cfg.eta_calo, cell)
        ip = np.flatnonzero(e_dep > 0)
        cells, w = grid.spread(eta[ip], calo_phi[ip], spread)
        contrib = w * e_dep[ip, None]
        ncell = grid.n_eta * grid.n_phi
        cell_e = np.bincount(cells.ravel(), contrib.ravel(), ncell)
        cell_e = cell_e + noise * rng.standard_normal(ncell)
        cell_e = cell_e.reshape(grid.n_eta, grid.n_phi)
        labels = topo_cluster(cell_e, noise, cfg.topo_seed, cfg.topo_grow)
        cl = _cluster_elements(cell_e, labels, grid)
        lab_flat = labels.ravel()[cells.ravel()]
        part = np.repeat(ip, 9)
        keep = lab_flat >= 0
        deposits.append((part[keep], lab_flat[keep], contrib.ravel()[keep], len(cl)))
        out_clusters.append(cl)

    X_cl = []
    for j, cl in enumerate(out_clusters):
        e_c, eta_c, phi_c = cl[:, 0], cl[:, 1], cl[:, 2]
        z = np.zeros(len(cl))
        e_em, e_had = (e_c, z) if j == 0 else (z, e_c)
        X_cl.append(np.stack([np.ones(len(cl)), e_c / np.cosh(eta_c), eta_c, np.sin(phi_c), np.cos(phi_c), e_c,
                              e_em, e_had, z, z, z, z], 1))
    X = np.concatenate([X_trk] + X_cl, 0).astype(np.float32)
    n_trk, n_ecal = len(it), len(out_clusters[0])
    n_elem = len(X)

    # ------------------------------------------------------------------ targets
    y = np.zeros((n_elem, 7), np.float64)
    elem_gen = np.full(n_elem, -1, np.int64)
    y[:n_trk, 0] = cls[it]
    y[:n_trk, 1] = q[it]
    elem_gen[:n_trk] = it
    # untracked visible particles: the cluster (over both calorimeters) with the largest deposit
    part_all = np.concatenate([deposits[0][0], deposits[1][0]])
    elem_all = np.concatenate([deposits[0][1] + n_trk, deposits[1][1] + n_trk + n_ecal])
    dep_all = np.concatenate([deposits[0][2], deposits[1][2]])
    if len(part_all):
        key = part_all * n_elem + elem_all
        uk, inv = np.unique(key, return_inverse=True)
        dep = np.bincount(inv, dep_all)
        kp, ke = uk // n_elem, uk % n_elem
        order = np.lexsort((-dep, kp))
        first = np.ones(len(order), bool)
        first[1:] = kp[order][1:] != kp[order][:-1]
        best_p, best_e, best_d = kp[order][first], ke[order][first], dep[order][first]
        cand = ~has_track[best_p] & ((best_d >= cfg.min_visible) | (best_d >= 0.5 * en[best_p]))
        best_p, best_e = best_p[cand], best_e[cand]
    else:
        best_p = best_e = np.zeros(0, np.int64)
    # four-momentum of each element's target: track → its particle; cluster → sum of assigned particles
    sum_p = np.zeros((n_elem, 4))
    sum_p[:n_trk] = np.stack([px[it], py[it], pz[it], en[it]], 1)
    np.add.at(sum_p, best_e, np.stack([px[best_p], py[best_p], pz[best_p], en[best_p]], 1))
    lead_e = np.full(n_elem, -1.0)
    order = np.argsort(en[best_p])  # ascending: the last write per element is the leading particle
    elem_gen[best_e[order]] = best_p[order]
    lead_e[best_e[order]] = en[best_p[order]]
    cl_mask = (np.arange(n_elem) >= n_trk) & (elem_gen >= 0)
    lead_cls = cls[np.maximum(elem_gen, 0)]
    y[cl_mask, 0] = np.where(np.isin(lead_cls[cl_mask], (3, 4)), 3, 2)
    y[cl_mask, 1] = 0.0
    has_t = y[:, 0] > 0
    tpt = np.hypot(sum_p[:, 0], sum_p[:, 1])
    tphi = np.arctan2(sum_p[:, 1], sum_p[:, 0])
    teta = np.arcsinh(sum_p[:, 2] / np.maximum(tpt, 1e-9))
    y[has_t, 2] = tpt[has_t]
    y[has_t, 3] = teta[has_t]
    y[has_t, 4] = np.sin(tphi[has_t])
    y[has_t, 5] = np.cos(tphi[has_t])
    y[has_t, 6] = sum_p[has_t, 3]
    elem_gen[~has_t] = -1

    gsel = visible & (np.abs(eta) < cfg.eta_gen)
    gen_p4 = np.stack([pt[gsel], eta[gsel], phi[gsel], en[gsel]], 1).astype(np.float32)
    return {"X": X, "y": y.astype(np.float32), "elem_gen": elem_gen, "gen_p4": gen_p4,
            "gen_cls": cls[gsel], "gen_is_pu": is_pu[gsel]}
