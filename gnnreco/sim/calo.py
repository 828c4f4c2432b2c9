"""A high-granularity endcap calorimeter in the style of the CMS HGCAL, and its particle guns.

The detector is a stack of sampling layers perpendicular to the beam at ``z > 0``:

* an electromagnetic (EM) section of ``n_em_layers`` silicon layers, each ``em_layer_x0`` radiation
  lengths :math:`X_0` deep (``em_layer_lambda`` interaction lengths :math:`\\lambda`);
* a hadronic section of ``n_had_layers`` layers, each ``had_layer_lambda`` :math:`\\lambda` deep;
* square cells of ``cell_size`` mm in every layer, covering ``eta_min <= |eta| <= eta_max``.

A shower is sampled as a set of energy *spots* (energy quanta). Each spot gets a depth from the
longitudinal profile and a radius from the transverse profile, and is binned into the cell it falls
into. Because every spot carries the energy quantum :math:`\\varepsilon`, the number of spots is
Poisson and the visible energy fluctuates with the stochastic term
:math:`\\sigma_E/E = \\sqrt{\\varepsilon(1+1/\\kappa)/E}` (sampling fluctuations; :math:`\\kappa` is the
shape of the per-spot Gamma jitter).

* **EM showers** (e, γ): longitudinal Gamma profile in :math:`t = z/X_0`,
  :math:`dE/dt = E\\, b\\,(bt)^{a-1} e^{-bt}/\\Gamma(a)` with :math:`t_{max} = (a-1)/b = \\ln(E/E_c) + C`,
  :math:`C = -0.5` (e) or :math:`+0.5` (γ, which also converts after an exponential depth with mean
  :math:`9/7\\,X_0`). Transverse profile of Grindhammer type, a core and a tail component
  :math:`f(r) = p\\,2rR_C^2/(r^2+R_C^2)^2 + (1-p)\\,2rR_T^2/(r^2+R_T^2)^2` in units of the Molière radius.
* **Hadronic showers** (π±, K_L): an exponential first-interaction depth (in :math:`\\lambda`), a
  minimum-ionising track before it for charged hadrons, a fluctuating EM fraction
  :math:`f_{em} \\sim \\mathrm{Beta}` around :math:`1-(E/E_0)^{k-1}` deposited as a few EM
  sub-showers (π⁰ → γγ), and a wide, Gamma-profiled hadronic component seen with the response
  ``h_over_e``.
* **Cell noise:** every hit cell gets Gaussian noise of width ``noise_sigma``; every other cell fires
  with the Gaussian tail probability above the threshold ``noise_threshold_sigma * noise_sigma``.
* **Pile-up:** ``pileup_density`` soft deposits per cm² of the front face (summed over layers),
  falling as :math:`1/r^2` in radius.

Truth per hit: the index of the shower that deposited most of the hit's energy (−1 for noise and
pile-up), that shower's true energy, impact position on the front face and time, its PID, and the
fraction of the hit's true energy that came from it. Units: GeV, mm, ns.

Everything is vectorised over spots with NumPy; :func:`simulate` is deterministic given ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import ndtri

__all__ = [
    "CaloGeometry",
    "CaloGun",
    "PID_CLASSES",
    "pid_to_class",
    "simulate",
    "simulate_particles",
    "sample_gun",
    "pythia_particles",
]

C_LIGHT = 299.792458  # mm / ns

#: classes of the PID head: 0 electron, 1 photon, 2 charged hadron, 3 neutral hadron.
PID_CLASSES: tuple[str, ...] = ("electron", "photon", "charged_hadron", "neutral_hadron")

_EM_PIDS = {11, 22}
_SUPPORTED = {11, 22, 211, 321, 2212, 130, 2112, 310}


def pid_to_class(pid: np.ndarray) -> np.ndarray:
    """Map PDG ids to :data:`PID_CLASSES` indices (|pid|: 11 → 0, 22 → 1, 211/321/2212 → 2, else 3)."""
    a = np.abs(np.asarray(pid))
    out = np.full(a.shape, 3, dtype=np.int64)
    out[a == 11] = 0
    out[a == 22] = 1
    out[(a == 211) | (a == 321) | (a == 2212)] = 2
    return out


@dataclass(frozen=True)
class CaloGeometry:
    """HGCAL-like endcap geometry and detector response.

    Args:
        z_front: z of the calorimeter front face (mm).
        n_em_layers: EM (silicon) layers.
        em_layer_x0: depth of one EM layer in radiation lengths.
        em_layer_lambda: depth of one EM layer in interaction lengths.
        em_layer_dz: thickness of one EM layer (mm).
        n_had_layers: hadronic layers.
        had_layer_lambda: depth of one hadronic layer in interaction lengths.
        had_layer_dz: thickness of one hadronic layer (mm).
        x0_per_lambda: radiation lengths per interaction length in the hadronic absorber.
        cell_size: square cell side (mm).
        eta_min, eta_max: pseudorapidity coverage.
        moliere_radius: Molière radius :math:`R_M` (mm).
        em_critical_energy: critical energy :math:`E_c` (GeV).
        em_quantum: EM spot energy :math:`\\varepsilon_{em}` (GeV); sets the EM stochastic term.
        had_quantum: hadronic spot energy (GeV).
        spot_gamma_shape: shape :math:`\\kappa` of the per-spot Gamma energy jitter.
        had_core_radius, had_tail_radius: transverse radii of the hadronic component (mm).
        h_over_e: response to the non-EM hadronic energy relative to EM.
        mip_energy: energy of a minimum-ionising particle per layer at EM scale (GeV), EM section;
            scaled by ``had_layer_dz / em_layer_dz`` in the hadronic section.
        noise_sigma: cell noise (GeV).
        noise_threshold_sigma: zero-suppression threshold in units of ``noise_sigma``.
        time_resolution: hit-time resolution (ns).
    """

    z_front: float = 3200.0
    n_em_layers: int = 28
    em_layer_x0: float = 0.93
    em_layer_lambda: float = 0.047
    em_layer_dz: float = 12.0
    n_had_layers: int = 22
    had_layer_lambda: float = 0.4
    had_layer_dz: float = 50.0
    x0_per_lambda: float = 9.5
    cell_size: float = 10.0
    eta_min: float = 1.5
    eta_max: float = 3.0
    moliere_radius: float = 25.0
    em_critical_energy: float = 0.008
    em_quantum: float = 0.04
    had_quantum: float = 0.2
    spot_gamma_shape: float = 4.0
    had_core_radius: float = 35.0
    had_tail_radius: float = 110.0
    h_over_e: float = 0.75
    mip_energy: float = 0.01
    noise_sigma: float = 0.004
    noise_threshold_sigma: float = 3.0
    time_resolution: float = 0.03

    @property
    def n_layers(self) -> int:
        return self.n_em_layers + self.n_had_layers

    def layer_tables(self) -> dict[str, np.ndarray]:
        """Per-layer boundaries: cumulative X0 and λ at each layer's back face, z of its sensor."""
        x0 = np.concatenate([np.full(self.n_em_layers, self.em_layer_x0),
                             np.full(self.n_had_layers, self.had_layer_lambda * self.x0_per_lambda)])
        lam = np.concatenate([np.full(self.n_em_layers, self.em_layer_lambda),
                              np.full(self.n_had_layers, self.had_layer_lambda)])
        dz = np.concatenate([np.full(self.n_em_layers, self.em_layer_dz),
                             np.full(self.n_had_layers, self.had_layer_dz)])
        z_back = self.z_front + np.cumsum(dz)
        return {"x0_back": np.cumsum(x0), "lambda_back": np.cumsum(lam), "z": z_back - 0.5 * dz,
                "dz": dz}

    def r_range(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inner and outer radius of the sensitive area at ``z``."""
        return z / np.sinh(self.eta_max), z / np.sinh(self.eta_min)


@dataclass(frozen=True)
class CaloGun:
    """Particle gun: how many particles of which kind, energy and direction.

    Args:
        n_particles: fixed multiplicity, or ``[min, max]`` (inclusive) for a uniform draw.
        pids: PDG ids to draw from (e.g. 11, 22, 211, -211, 130).
        pid_weights: relative probabilities of ``pids`` (uniform when ``None``).
        energy: ``[E_min, E_max]`` (GeV).
        log_energy: draw the energy log-uniformly instead of uniformly.
        eta: ``[eta_min, eta_max]`` (positive endcap).
        min_separation: minimal distance (mm) between impact points on the front face; particles
            closer than this to an earlier one are redrawn (a few times), 0 disables.
        vertex_z_sigma: Gaussian spread of the vertex along z (mm).
    """

    n_particles: int | Sequence[int] = 50
    pids: Sequence[int] = (11, 22, 211, -211, 130)
    pid_weights: Sequence[float] | None = None
    energy: Sequence[float] = (1.0, 100.0)
    log_energy: bool = True
    eta: Sequence[float] = (1.6, 2.9)
    min_separation: float = 0.0
    vertex_z_sigma: float = 0.0


def sample_gun(gun: CaloGun, rng: np.random.Generator, geometry: CaloGeometry | None = None) -> dict[str, np.ndarray]:
    """Draw the particles of one event from ``gun``: ``pid``, ``energy``, ``eta``, ``phi``, ``vz``."""
    geometry = geometry or CaloGeometry()
    n = gun.n_particles
    if isinstance(n, int | np.integer):
        n = int(n)
    else:
        lo, hi = (int(v) for v in n)
        if not 0 <= lo <= hi:
            raise ValueError(f"gun.n_particles must be an int or [min, max] with 0 <= min <= max, got {list(gun.n_particles)}")
        n = int(rng.integers(lo, hi + 1))
    if n < 0:
        raise ValueError(f"gun.n_particles must be >= 0, got {n}")
    pids = np.asarray(gun.pids, dtype=np.int64)
    bad = [int(p) for p in pids if abs(int(p)) not in _SUPPORTED]
    if len(pids) == 0 or bad:
        raise ValueError(f"gun.pids must be non-empty PDG ids among {sorted(_SUPPORTED)} (with sign), got {list(gun.pids)}")
    p = None
    if gun.pid_weights is not None:
        p = np.asarray(gun.pid_weights, dtype=float)
        if p.shape != pids.shape or (p < 0).any() or p.sum() <= 0:
            raise ValueError(f"gun.pid_weights must be {len(pids)} non-negative numbers, got {list(gun.pid_weights)}")
        p = p / p.sum()
    e_lo, e_hi = (float(v) for v in gun.energy)
    if not 0 < e_lo <= e_hi:
        raise ValueError(f"gun.energy must be [E_min, E_max] with 0 < E_min <= E_max (GeV), got {list(gun.energy)}")
    eta_lo, eta_hi = (float(v) for v in gun.eta)
    if not eta_lo <= eta_hi:
        raise ValueError(f"gun.eta must be [eta_min, eta_max], got {list(gun.eta)}")
    pid = rng.choice(pids, size=n, p=p)
    if gun.log_energy:
        energy = np.exp(rng.uniform(np.log(e_lo), np.log(e_hi), size=n))
    else:
        energy = rng.uniform(e_lo, e_hi, size=n)
    eta = rng.uniform(eta_lo, eta_hi, size=n)
    phi = rng.uniform(-np.pi, np.pi, size=n)
    if gun.min_separation > 0 and n > 1:
        for _ in range(10):  # a few vectorised redraw rounds; bounded
            r = geometry.z_front / np.sinh(eta)
            xy = np.stack([r * np.cos(phi), r * np.sin(phi)], 1)
            d2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
            d2[np.tril_indices(n)] = np.inf
            close = (d2.min(0) < gun.min_separation ** 2)
            if not close.any():
                break
            k = int(close.sum())
            eta[close] = rng.uniform(eta_lo, eta_hi, size=k)
            phi[close] = rng.uniform(-np.pi, np.pi, size=k)
    vz = rng.normal(0.0, gun.vertex_z_sigma, size=n) if gun.vertex_z_sigma > 0 else np.zeros(n)
    return {"pid": pid.astype(np.int64), "energy": energy, "eta": eta, "phi": phi, "vz": vz}


def pythia_particles(rng: np.random.Generator, *, sqrt_s: float = 13000.0, pt_hat_min: float = 50.0,
                     eta: Sequence[float] = (1.6, 2.9), min_energy: float = 1.0,
                     max_particles: int = 200) -> dict[str, np.ndarray]:
    """Final-state particles of one Pythia 8 hard-QCD event that point into the endcap.

    Needs the optional ``pythia8mc`` package (``gnnreco._compat.WITH_PYTHIA8``). Muons and neutrinos
    are dropped; other hadrons are mapped to the shower types the simulation knows (charged → π±,
    neutral → K_L) by :func:`simulate_particles`.
    """
    from gnnreco._compat import WITH_PYTHIA8, pythia8mc

    if not WITH_PYTHIA8:
        raise ImportError("gun='pythia' needs the optional package 'pythia8mc' (pip install pythia8mc)")
    py = pythia8mc.Pythia("", False)
    for s in ("HardQCD:all = on", f"PhaseSpace:pTHatMin = {pt_hat_min}", f"Beams:eCM = {sqrt_s}",
              "Random:setSeed = on", f"Random:seed = {int(rng.integers(1, 900_000_000))}",
              "Next:numberCount = 0", "Print:quiet = on"):
        py.readString(s)
    py.init()
    while not py.next():
        pass
    rows = []
    for prt in py.event:
        if not prt.isFinal():
            continue
        a = abs(prt.id())
        if a in (12, 13, 14, 16):
            continue
        e, pz = prt.e(), prt.pz()
        if e < min_energy or pz <= 0:
            continue
        et = prt.eta()
        if not eta[0] <= et <= eta[1]:
            continue
        charged = prt.isCharged()
        pid = prt.id() if a in (11, 22) else ((211 if prt.id() > 0 else -211) if charged else 130)
        rows.append((pid, e, et, prt.phi()))
    rows.sort(key=lambda r: -r[1])
    rows = rows[:max_particles]
    arr = np.array(rows, dtype=float).reshape(-1, 4)
    return {"pid": arr[:, 0].astype(np.int64), "energy": arr[:, 1], "eta": arr[:, 2], "phi": arr[:, 3],
            "vz": np.zeros(len(arr))}


# ----------------------------------------------------------------------------------------------
# shower sampling


def _grindhammer_radius(rng: np.random.Generator, r_core: np.ndarray, r_tail: np.ndarray, p_core: float) -> np.ndarray:
    """Radius from p·2rR_C²/(r²+R_C²)² + (1−p)·2rR_T²/(r²+R_T²)² (inverse CDF r = R√(u/(1−u)))."""
    n = r_core.shape[0]
    u = rng.uniform(0.0, 0.97, size=n)  # cap the Lorentzian tail at r ≈ 5.7 R
    radius = np.where(rng.random(n) < p_core, r_core, r_tail)
    return radius * np.sqrt(u / (1.0 - u))


def _em_spots(rng, geo: CaloGeometry, shower: np.ndarray, energy: np.ndarray, t_start: np.ndarray,
              is_photon: np.ndarray, quantum: float):
    """EM spots of showers ``shower`` (indices) with energies ``energy`` starting at depth ``t_start`` (X0).

    Returns (shower index, depth in X0, transverse radius in mm, spot energy, local index into
    ``shower``) per spot.
    """
    n_spots = rng.poisson(energy / quantum)
    sid = np.repeat(np.arange(len(energy)), n_spots)
    b = 0.5
    t_max = np.log(np.maximum(energy, 1.1 * geo.em_critical_energy) / geo.em_critical_energy) + np.where(is_photon, 0.5, -0.5)
    t_max = np.maximum(t_max, 0.5) * rng.normal(1.0, 0.08, size=len(energy)).clip(0.7, 1.3)
    a = 1.0 + b * t_max
    t = rng.gamma(a[sid], 1.0 / b) + t_start[sid]
    # core narrows at shower maximum and widens with depth (Grindhammer); tail ≈ R_M
    tau = t / np.maximum(t_max[sid] + t_start[sid], 1e-3)
    r_core = geo.moliere_radius * (0.12 + 0.12 * tau)
    r_tail = geo.moliere_radius * (0.6 + 0.4 * np.minimum(tau, 3.0))
    r = _grindhammer_radius(rng, r_core, r_tail, p_core=0.85)
    e = quantum * rng.gamma(geo.spot_gamma_shape, 1.0 / geo.spot_gamma_shape, size=len(sid))
    return shower[sid], t, r, e, sid


def simulate_particles(particles: dict[str, np.ndarray], rng: np.random.Generator,
                       geometry: CaloGeometry | None = None, *, pileup_density: float = 0.0,
                       pileup_energy: float = 0.03, noise: bool = True) -> dict[str, np.ndarray]:
    """Simulate the showers of ``particles`` (from :func:`sample_gun` or :func:`pythia_particles`).

    Args:
        particles: arrays ``pid``, ``energy`` (GeV), ``eta``, ``phi``, ``vz`` (mm), one row per particle.
        rng: the event's random generator.
        geometry: detector description.
        pileup_density: mean pile-up deposits per cm² of front face (all layers together).
        pileup_energy: mean energy of a pile-up deposit (GeV, exponential).
        noise: add cell noise (Gaussian on hit cells, tail hits elsewhere).

    Returns:
        The raw event: per-hit arrays ``hit_x, hit_y, hit_z, hit_layer, hit_energy, hit_time`` and truth
        ``hit_shower`` (−1 noise/pile-up), ``hit_origin`` (0 shower, 1 noise, 2 pile-up),
        ``hit_energy_fraction``, ``hit_true_energy``, ``hit_pid``, ``hit_impact`` [N,3],
        ``hit_true_time``; per-shower arrays ``shower_pid, shower_energy, shower_eta, shower_phi,
        shower_impact`` [K,3], ``shower_time``, ``shower_visible_energy`` (deposited, after
        calibration, before noise) and ``shower_em_fraction``.
    """
    geo = geometry or CaloGeometry()
    tab = geo.layer_tables()
    n_layers = geo.n_layers
    pid = np.asarray(particles["pid"], dtype=np.int64)
    energy = np.asarray(particles["energy"], dtype=float)
    eta = np.asarray(particles["eta"], dtype=float)
    phi = np.asarray(particles["phi"], dtype=float)
    vz = np.asarray(particles.get("vz", np.zeros(len(pid))), dtype=float)
    k = len(pid)
    if not (len(energy) == len(eta) == len(phi) == len(vz) == k):
        raise ValueError("particles arrays pid/energy/eta/phi/vz must have the same length")
    if k and (not np.all(np.isfinite(energy)) or energy.min() <= 0):
        raise ValueError("particles['energy'] must be finite and > 0 GeV")
    apid = np.abs(pid)
    is_em = np.isin(apid, list(_EM_PIDS))
    is_photon = apid == 22
    charged = ~np.isin(apid, [22, 130, 2112, 310])

    # direction and impact on the front face (straight lines; no magnetic field)
    theta = 2.0 * np.arctan(np.exp(-eta))
    tan_t = np.tan(theta)
    path_z = geo.z_front - vz
    impact = np.stack([path_z * tan_t * np.cos(phi), path_z * tan_t * np.sin(phi), np.full(k, geo.z_front)], 1)
    shower_time = np.sqrt((impact[:, 0]) ** 2 + impact[:, 1] ** 2 + path_z ** 2) / C_LIGHT

    # ---------------- spots: (shower, depth in X0, radius, energy); depths of hadronic parts are
    # converted from λ to X0 with the per-layer tables below
    spots: list[tuple[np.ndarray, ...]] = []  # (shower, depth X0, radius, energy, dx, dy)
    em_frac = np.ones(k)
    # EM showers
    em_idx = np.flatnonzero(is_em)
    if len(em_idx):
        t0 = np.where(is_photon[em_idx], rng.exponential(9.0 / 7.0, size=len(em_idx)), 0.0)
        s, t, r, e, _ = _em_spots(rng, geo, em_idx, energy[em_idx], t0, is_photon[em_idx], geo.em_quantum)
        spots.append((s, t, r, e, np.zeros(len(s)), np.zeros(len(s))))
    # hadronic showers
    had_idx = np.flatnonzero(~is_em)
    lam_to_x0 = _lambda_to_x0_fn(tab)
    if len(had_idx):
        e_h = energy[had_idx]
        t_int = rng.exponential(1.0, size=len(had_idx))  # first interaction (λ)
        mean_fem = np.clip(1.0 - (np.maximum(e_h, 1.0) / 1.0) ** (0.82 - 1.0), 0.05, 0.9)
        conc = 12.0
        f_em = rng.beta(mean_fem * conc, (1 - mean_fem) * conc)
        em_frac[had_idx] = f_em
        # EM sub-showers (π0 -> γγ): 1 + Poisson(2) per shower, Dirichlet-like energy split
        n_sub = 1 + rng.poisson(2.0, size=len(had_idx))
        sub_owner = np.repeat(np.arange(len(had_idx)), n_sub)
        w = rng.gamma(1.0, size=len(sub_owner))
        wsum = np.bincount(sub_owner, weights=w, minlength=len(had_idx))
        e_sub = (f_em * e_h)[sub_owner] * w / wsum[sub_owner]
        keep = e_sub > 0.02
        sub_owner, e_sub = sub_owner[keep], e_sub[keep]
        start_lam = t_int[sub_owner] + rng.exponential(0.3, size=len(sub_owner))
        s, t, r, e, sub_of_spot = _em_spots(rng, geo, had_idx[sub_owner], e_sub, lam_to_x0(start_lam),
                               np.ones(len(sub_owner), bool), geo.em_quantum)
        # sub-showers are displaced laterally from the axis
        off = rng.normal(0.0, 0.5 * geo.had_core_radius, size=(len(sub_owner), 2))
        spots.append((s, t, r, e, off[sub_of_spot, 0], off[sub_of_spot, 1]))
        # non-EM hadronic component, visible with response h/e
        e_vis = (1.0 - f_em) * e_h * geo.h_over_e
        n_sp = rng.poisson(e_vis / geo.had_quantum)
        hid = np.repeat(np.arange(len(had_idx)), n_sp)
        a_h = 1.0 + 0.35 * np.log(np.maximum(e_h, 1.0)) + 0.5
        lam = t_int[hid] + rng.gamma(a_h[hid], 0.75)
        depth_frac = np.clip((lam - t_int[hid]) / (a_h[hid] * 0.75), 0.0, 3.0)
        r_core = geo.had_core_radius * (0.5 + 0.5 * depth_frac)
        r_tail = geo.had_tail_radius * np.ones_like(r_core)
        r = _grindhammer_radius(rng, r_core, r_tail, p_core=0.7)
        e = geo.had_quantum * rng.gamma(geo.spot_gamma_shape, 1.0 / geo.spot_gamma_shape, size=len(hid))
        spots.append((had_idx[hid], lam_to_x0(lam), r, e, np.zeros(len(hid)), np.zeros(len(hid))))
        # minimum-ionising track of charged hadrons before the first interaction: one spot per layer
        ch = charged[had_idx]
        if ch.any():
            lam_mid = np.concatenate([[0.0], tab["lambda_back"][:-1]]) + 0.5 * np.diff(np.concatenate([[0.0], tab["lambda_back"]]))
            before = ch[:, None] & (lam_mid[None, :] < t_int[:, None])
            si, li = np.nonzero(before)
            x0_mid = np.concatenate([[0.0], tab["x0_back"][:-1]]) + 0.5 * np.diff(np.concatenate([[0.0], tab["x0_back"]]))
            mip = geo.mip_energy * tab["dz"][li] / geo.em_layer_dz * rng.gamma(4.0, 0.25, size=len(li))
            zeros = np.zeros(len(li))
            spots.append((had_idx[si], x0_mid[li], zeros, mip, zeros, zeros))

    if spots:
        sh, t, r, e, cx, cy = (np.concatenate(c) for c in zip(*spots))
    else:
        sh = np.zeros(0, np.int64)
        t = r = e = cx = cy = np.zeros(0)
    # depth -> layer; spots beyond the last layer leak out
    layer = np.searchsorted(tab["x0_back"], t, side="right")
    inside = layer < n_layers
    sh, layer, r, e, cx, cy = sh[inside], layer[inside], r[inside], e[inside], cx[inside], cy[inside]
    z = tab["z"][layer]
    # position: axis at this z plus transverse offset (radius, uniform azimuth)
    alpha = rng.uniform(0.0, 2 * np.pi, size=len(sh))
    scale = (z - vz[sh]) / path_z[sh]
    x = impact[sh, 0] * scale + cx + r * np.cos(alpha)
    y = impact[sh, 1] * scale + cy + r * np.sin(alpha)

    # pile-up deposits: density ∝ 1/r² over the front face -> p(r) ∝ 1/r
    n_pu = 0
    if pileup_density > 0:
        r_in, r_out = geo.r_range(np.array(geo.z_front))
        area_cm2 = np.pi * (r_out ** 2 - r_in ** 2) / 100.0
        n_pu = int(rng.poisson(pileup_density * area_cm2))
        pu_r = r_in * (r_out / r_in) ** rng.random(n_pu)
        pu_a = rng.uniform(0, 2 * np.pi, n_pu)
        pu_layer = rng.integers(0, n_layers, n_pu)
        pu_scale = tab["z"][pu_layer] / geo.z_front
        x = np.concatenate([x, pu_r * np.cos(pu_a) * pu_scale])
        y = np.concatenate([y, pu_r * np.sin(pu_a) * pu_scale])
        layer = np.concatenate([layer, pu_layer])
        e = np.concatenate([e, rng.exponential(pileup_energy, n_pu)])
        sh = np.concatenate([sh, np.full(n_pu, k, np.int64)])  # "shower" k = pile-up
        z = tab["z"][layer]

    # ---------------- bin spots into cells, keep cells in the acceptance
    cs = geo.cell_size
    ix = np.floor(x / cs).astype(np.int64)
    iy = np.floor(y / cs).astype(np.int64)
    cell_r = np.hypot((ix + 0.5) * cs, (iy + 0.5) * cs)
    r_lo, r_hi = geo.r_range(tab["z"][layer])
    ok = (cell_r >= r_lo) & (cell_r <= r_hi)
    sh, layer, ix, iy, e = sh[ok], layer[ok], ix[ok], iy[ok], e[ok]
    cell = (layer.astype(np.int64) << 42) | ((ix + (1 << 20)) << 21) | (iy + (1 << 20))
    # energy per (cell, contributor), then per cell
    pair = cell * (k + 1) + sh if k + 1 < (1 << 12) else None
    if pair is not None:
        upair, pinv = np.unique(pair, return_inverse=True)
        pe = np.bincount(pinv, weights=e)
        pcell = upair // (k + 1)
        psh = upair % (k + 1)
    else:  # very many showers: lexsort path
        order = np.lexsort((sh, cell))
        cs_, ss_ = cell[order], sh[order]
        new = np.ones(len(order), bool)
        new[1:] = (cs_[1:] != cs_[:-1]) | (ss_[1:] != ss_[:-1])
        grp = np.cumsum(new) - 1
        pe = np.bincount(grp, weights=e[order])
        pcell, psh = cs_[new], ss_[new]
    ucell, cinv = np.unique(pcell, return_inverse=True)
    cell_e = np.bincount(cinv, weights=pe, minlength=len(ucell))
    # dominant contributor per cell: sort pairs by (cell, -energy), take first
    order = np.lexsort((-pe, cinv))
    first = np.ones(len(order), bool)
    first[1:] = cinv[order][1:] != cinv[order][:-1]
    dom = order[first]
    dom_sh = psh[dom]
    dom_frac = pe[dom] / np.maximum(cell_e, 1e-12)
    visible = np.bincount(psh, weights=pe, minlength=k + 1)[:k]

    sigma = geo.noise_sigma
    thr = geo.noise_threshold_sigma * sigma
    meas = cell_e + (rng.normal(0.0, sigma, len(cell_e)) if noise else 0.0)
    keep = meas > thr
    ucell, meas, cell_true, dom_sh, dom_frac = ucell[keep], meas[keep], cell_e[keep], dom_sh[keep], dom_frac[keep]
    origin = np.where(dom_sh == k, 2, 0)

    # pure-noise cells: Gaussian tail above threshold in cells of the acceptance
    if noise and sigma > 0:
        p_tail = _normal_sf(geo.noise_threshold_sigma)
        r_lo_l, r_hi_l = geo.r_range(tab["z"])
        cells_per_layer = np.pi * (r_hi_l ** 2 - r_lo_l ** 2) / cs ** 2
        n_noise = rng.poisson(p_tail * cells_per_layer)
        nl = np.repeat(np.arange(n_layers), n_noise)
        nr = np.sqrt(rng.uniform(r_lo_l[nl] ** 2, r_hi_l[nl] ** 2))
        na = rng.uniform(0, 2 * np.pi, len(nl))
        nix = np.floor(nr * np.cos(na) / cs).astype(np.int64)
        niy = np.floor(nr * np.sin(na) / cs).astype(np.int64)
        ncell = (nl.astype(np.int64) << 42) | ((nix + (1 << 20)) << 21) | (niy + (1 << 20))
        ncell = np.unique(ncell)
        fresh = ~np.isin(ncell, ucell)
        ncell = ncell[fresh]
        # energy: Gaussian tail above threshold, by inverse CDF
        u = rng.random(len(ncell))
        ne = sigma * -ndtri(u * p_tail)
        ucell = np.concatenate([ucell, ncell])
        meas = np.concatenate([meas, ne])
        cell_true = np.concatenate([cell_true, np.zeros(len(ncell))])
        dom_sh = np.concatenate([dom_sh, np.full(len(ncell), -1)])
        dom_frac = np.concatenate([dom_frac, np.zeros(len(ncell))])
        origin = np.concatenate([origin, np.ones(len(ncell), np.int64)])

    # decode cells
    h_layer = (ucell >> 42).astype(np.int64)
    h_ix = ((ucell >> 21) & ((1 << 21) - 1)) - (1 << 20)
    h_iy = (ucell & ((1 << 21) - 1)) - (1 << 20)
    hx = (h_ix + 0.5) * cs
    hy = (h_iy + 0.5) * cs
    hz = tab["z"][h_layer]
    shower_idx = np.where((dom_sh >= 0) & (dom_sh < k), dom_sh, -1).astype(np.int64)
    dom_frac = np.where(shower_idx >= 0, dom_frac, 0.0)
    # times: time of flight from the vertex, smeared; noise is out of time
    sig = shower_idx >= 0
    path = np.sqrt(hx ** 2 + hy ** 2 + hz ** 2)
    ht = path / C_LIGHT + rng.normal(0.0, geo.time_resolution, len(hx))
    n_noise_hits = int((origin == 1).sum())
    ht[origin == 1] = rng.uniform(0.0, 25.0, n_noise_hits)
    ht[origin == 2] += rng.normal(0.0, 0.18, int((origin == 2).sum()))
    # a fixed hit order (by cell id) so the event does not depend on generation order
    order = np.argsort(ucell, kind="stable")
    safe = np.where(sig, shower_idx, 0)
    out = {
        "hit_x": hx[order], "hit_y": hy[order], "hit_z": hz[order], "hit_layer": h_layer[order],
        "hit_energy": meas[order], "hit_time": ht[order],
        "hit_shower": shower_idx[order], "hit_origin": origin[order].astype(np.int64),
        "hit_energy_fraction": dom_frac[order], "hit_true_deposit": cell_true[order],
        "hit_true_energy": np.where(sig, energy[safe] if k else 0.0, 0.0)[order],
        "hit_pid": np.where(sig, pid[safe] if k else 0, 0)[order].astype(np.int64),
        "hit_impact": np.where(sig[:, None], impact[safe] if k else 0.0, 0.0)[order],
        "hit_true_time": np.where(sig, shower_time[safe] if k else 0.0, 0.0)[order],
        "shower_pid": pid, "shower_energy": energy, "shower_eta": eta, "shower_phi": phi,
        "shower_impact": impact, "shower_time": shower_time, "shower_visible_energy": visible,
        "shower_em_fraction": em_frac,
    }
    return out


def _normal_sf(x: float) -> float:
    from math import erfc, sqrt

    return 0.5 * erfc(x / sqrt(2.0))


def _lambda_to_x0_fn(tab: dict[str, np.ndarray]):
    """Piecewise-linear map from depth in λ to depth in X0 through the layer tables."""
    lam_b = np.concatenate([[0.0], tab["lambda_back"]])
    x0_b = np.concatenate([[0.0], tab["x0_back"]])
    slope_last = (x0_b[-1] - x0_b[-2]) / (lam_b[-1] - lam_b[-2])

    def f(lam: np.ndarray) -> np.ndarray:
        out = np.interp(lam, lam_b, x0_b)
        beyond = lam > lam_b[-1]
        return np.where(beyond, x0_b[-1] + (lam - lam_b[-1]) * slope_last, out)

    return f


def simulate(seed: int, *, geometry: dict[str, Any] | CaloGeometry | None = None,
             gun: dict[str, Any] | CaloGun | None = None, source: str = "gun",
             pileup_density: float = 0.0, pileup_energy: float = 0.03, noise: bool = True,
             pythia: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Simulate one calorimeter event, deterministically from ``seed``.

    Args:
        seed: event seed (``numpy.random.default_rng(seed)``).
        geometry: :class:`CaloGeometry` or a dict of its fields.
        gun: :class:`CaloGun` or a dict of its fields (``source='gun'``).
        source: ``"gun"`` (particle gun) or ``"pythia"`` (hard-QCD jets, needs ``pythia8mc``).
        pileup_density: pile-up deposits per cm² of front face.
        pileup_energy: mean pile-up deposit energy (GeV).
        noise: simulate cell noise.
        pythia: keyword arguments of :func:`pythia_particles`.

    Returns:
        The raw event (see :func:`simulate_particles`), plus ``seed``.
    """
    geo = geometry if isinstance(geometry, CaloGeometry) else CaloGeometry(**(dict(geometry or {})))
    rng = np.random.default_rng(seed)
    if source == "gun":
        g = gun if isinstance(gun, CaloGun) else CaloGun(**(dict(gun or {})))
        particles = sample_gun(g, rng, geo)
    elif source == "pythia":
        particles = pythia_particles(rng, **(dict(pythia or {})))
    else:
        raise ValueError(f"source must be 'gun' or 'pythia', got {source!r}")
    ev = simulate_particles(particles, rng, geo, pileup_density=pileup_density,
                            pileup_energy=pileup_energy, noise=noise)
    ev["seed"] = np.array([seed], dtype=np.int64)
    return ev


def geometry_dict(geometry: CaloGeometry) -> dict[str, Any]:
    """The fields of ``geometry`` as a plain dict (for configs and metadata)."""
    return asdict(geometry)

