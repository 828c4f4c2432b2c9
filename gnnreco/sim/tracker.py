"""Fast tracking-detector simulation that writes the TrackML format.

Charged particles from pile-up vertices (and an optional hard scatter) are propagated on helices in a
uniform solenoidal field ``B ẑ`` through the surfaces of a :class:`~gnnreco.sim.tracker_geometry.TrackerGeometry`.
The propagation is vectorised over all particles: at every step each live particle moves to its
nearest surface crossing (analytic helix–cylinder and helix–plane intersections for all particles and
surfaces at once), records a hit, and receives a multiple-scattering kick (Highland formula) and
optionally an energy loss. Hits are then assigned to modules, smeared by the module pitch, given cell
clusters from the crossing angle, thinned by the module inefficiency, and mixed with noise hits.

Helix in transverse arc length s (mm), with signed curvature ``k = −q c B / p_T`` (c = 0.299792458e-3
GeV/(T·mm), so that the transverse radius is ``ρ = 1/|k| = p_T / (0.3 B)`` in GeV, T, m)::

    φ(s) = φ₀ + k s,   x(s) = x_c + sin φ(s) / k,   y(s) = y_c − cos φ(s) / k,   z(s) = z₀ + s · p_z / p_T

Highland: ``θ₀ = 13.6 MeV / (β c p) · |q| √(x/X₀) · (1 + 0.038 ln(x q² / (X₀ β²)))`` with
``x/X₀ = (x/X₀)_layer / cos α`` for incidence angle α.

Use :class:`TrackerSimulator` (``.simulate(seed)``) for one event and :func:`generate_dataset` to write
a directory of TrackML CSV files.
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gnnreco.data.trackml import (
    TrackMLEvent,
    encode_particle_id,
    weight_hits,
    write_detector,
)
from gnnreco.sim.tracker_geometry import TrackerGeometry, load_geometry, load_preset

__all__ = [
    "C_LIGHT",
    "TrackerSimulator",
    "TrackMLEvent",
    "generate_dataset",
    "simulate_event",
    "helix_cylinder_intersection",
    "highland_theta0",
]

#: c in GeV / (T · mm): p_T [GeV] = C_LIGHT · B [T] · ρ [mm].
C_LIGHT = 0.299792458e-3
_MASS = {211: 0.13957, 321: 0.493677, 2212: 0.938272, 11: 0.000511, 13: 0.105658}
_TWO_PI = 2.0 * np.pi


# --------------------------------------------------------------------------------------------------
# Pure physics helpers
# --------------------------------------------------------------------------------------------------
def highland_theta0(p: np.ndarray, beta: np.ndarray, x_x0: np.ndarray, q: np.ndarray | float = 1.0) -> np.ndarray:
    """Highland width of the projected multiple-scattering angle (rad).

    ``θ₀ = 0.0136 GeV / (β p) · |q| √(x/X₀) · (1 + 0.038 ln(x q² / (X₀ β²)))``

    Args:
        p: momentum |p| (GeV).
        beta: velocity β.
        x_x0: traversed material in radiation lengths (x/X₀ > 0).
        q: charge in units of e.
    """
    q = np.abs(np.asarray(q, float))
    x_x0 = np.maximum(np.asarray(x_x0, float), 1e-12)
    corr = 1.0 + 0.038 * np.log(x_x0 * q * q / (beta * beta))
    return 0.0136 / (beta * p) * q * np.sqrt(x_x0) * np.maximum(corr, 0.0)


def _helix_centre(x, y, phi0, k):
    return x - np.sin(phi0) / k, y + np.cos(phi0) / k


def _crossing_lengths(x, y, phi0, k, radius, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Both helix–cylinder path lengths for broadcastable arrays (see :func:`helix_cylinder_intersection`)."""
    xc, yc = _helix_centre(x, y, phi0, k)
    rho = 1.0 / np.abs(k)
    d = np.maximum(np.hypot(xc, yc), 1e-12)
    a = (radius * radius - rho * rho + d * d) / (2.0 * d)
    h2 = radius * radius - a * a
    ok = h2 >= 0
    h = np.sqrt(np.where(ok, h2, 0.0))
    ux, uy = xc / d, yc / d
    period = _TWO_PI * rho
    out = []
    for sign in (1.0, -1.0):
        px = a * ux - sign * h * uy
        py = a * uy + sign * h * ux
        ang = np.arctan2(k * (px - xc), -k * (py - yc))
        s = np.mod((ang - phi0) / k, period)
        s = np.where(s < eps, s + period, s)
        out.append(np.where(ok, s, np.inf))
    return out[0], out[1]


def helix_cylinder_intersection(
    x: np.ndarray,
    y: np.ndarray,
    phi0: np.ndarray,
    k: np.ndarray,
    radius: np.ndarray,
    eps: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:
    """Transverse path lengths to the two crossings of a helix with cylinders ``r = R``.

    Intersects the helix's transverse circle (centre ``c``, radius ρ = 1/|k|) with the circle of
    radius R about the origin. With ``d = |c|``, ``a = (R² − ρ² + d²) / (2d)`` and ``h = √(R² − a²)``
    the crossing points are ``a ĉ ± h ĉ⊥``; their path length is ``s = ((φ − φ₀)/k) mod 2πρ``,
    smallest value ≥ ``eps``.

    Args:
        x, y, phi0, k: particle state (N,) — position, momentum azimuth, signed curvature (1/mm).
        radius: cylinder radii (C,).
        eps: crossings closer than this (mm) are moved one turn further (the current surface).

    Returns:
        ``(s1, s2)``, each (N, C), ``inf`` where the circles do not meet.

    Shapes:
        x, y, phi0, k: (N,); radius: (C,); outputs (N, C).
    """
    return _crossing_lengths(x[:, None], y[:, None], phi0[:, None], k[:, None], np.asarray(radius)[None, :], eps)


# --------------------------------------------------------------------------------------------------
# Simulator
# --------------------------------------------------------------------------------------------------
@dataclass
class TrackerSimulator:
    """Pile-up + hard-scatter events through a tracker, written in TrackML form.

    Args:
        geometry: a :class:`TrackerGeometry`, a preset name (``'trackml'``, ``'itk'``, ``'toy'``) or
            a YAML path.
        field: solenoid field B (T) along +z.
        mu: mean number of pile-up interactions ⟨μ⟩ (0-200+).
        poisson_pileup: draw the number of vertices from Poisson(μ) (else exactly round(μ)).
        n_charged_mean: mean number of charged particles per min-bias vertex in |η| < ``eta_max``.
        n_charged_k: negative-binomial shape k of the multiplicity (0: Poisson).
        pt_min: lowest generated p_T (GeV).
        pt_mean: mean p_T of the min-bias spectrum (GeV); p_T − p_T,min follows a Lomax (power-law)
            distribution with tail exponent ``pt_power``.
        pt_power: tail index a of ``dN/dp_T ∝ (1 + (p_T − p_T,min)/λ)^(−a−1)``.
        eta_max: particles are generated flat in η ∈ [−η_max, η_max].
        vertex_sigma_z, vertex_sigma_xy: luminous-region widths (mm).
        hard_scatter: ``'none'``, ``'pythia8'`` (Pythia 8 through pythia8mc), ``'jet'`` (the
            parametric stand-in of :mod:`gnnreco.sim.pythia`) or ``'auto'`` (Pythia 8 if installed,
            else the stand-in); its charged particles form vertex 1.
        hard_scatter_process: ``'ttbar'``, ``'qcd'``, ``'ztautau'`` or ``'minbias'``.
        hard_scatter_ecm: √s (GeV).
        noise_fraction: fraction of noise hits among all hits (particle_id 0 in truth).
        inefficiency: probability to lose a particle hit (per module crossing); a layer's own
            ``inefficiency`` overrides it.
        dead_module_fraction: fraction of modules that give no hits at all (noise included); the
            dead modules are drawn once from ``dead_module_seed`` and are the same in every event.
        dead_module_seed: seed of the dead-module map.
        multiple_scattering: apply Highland kicks at every crossing.
        energy_loss: subtract a mean ionisation loss ``dE = e_loss_per_x0 · (x/X₀) / β²`` at every
            crossing (the 1/β² rise of Bethe–Bloch below minimum ionisation, capped at 100×); a
            particle that stops is not followed further.
        e_loss_per_x0: energy loss per radiation length of silicon-like material (GeV).
        smearing: ``'gaussian'`` (σ = pitch/√12), ``'uniform'`` (± pitch/2) or ``'none'``.
        secondary_fraction: fraction of primaries that interact/decay and produce daughters.
        secondary_r_range: transverse radius range (mm) of the secondary vertices.
        n_daughters: charged daughters per secondary vertex with charges q, +1, −1, +1, −1, ... (charge
            is conserved for odd counts; the default 3 mimics a hadronic interaction q → q π⁺ π⁻).
        max_turns: stop following a particle after this many transverse turns (0.5 = outgoing
            half-turn only; larger values keep loopers).
        max_hits_per_particle: hard cap on the propagation steps.
        max_cells: cap on the cells of one cluster.
        write_particle_type: add the PDG ``particle_type`` column (throughput-phase layout).
    """

    geometry: Any = "trackml"
    field: float = 2.0
    mu: float = 200.0
    poisson_pileup: bool = True
    n_charged_mean: float = 50.0
    n_charged_k: float = 3.0
    pt_min: float = 0.1
    pt_mean: float = 0.5
    pt_power: float = 5.0
    eta_max: float = 4.0
    vertex_sigma_z: float = 55.0
    vertex_sigma_xy: float = 0.015
    hard_scatter: str = "none"
    hard_scatter_process: str = "ttbar"
    hard_scatter_ecm: float = 14000.0
    noise_fraction: float = 0.15
    inefficiency: float = 0.01
    dead_module_fraction: float = 0.0
    dead_module_seed: int = 0
    multiple_scattering: bool = True
    energy_loss: bool = False
    e_loss_per_x0: float = 0.0365
    smearing: str = "gaussian"
    secondary_fraction: float = 0.0
    secondary_r_range: tuple[float, float] = (10.0, 600.0)
    n_daughters: int = 3
    max_turns: float = 0.5
    max_hits_per_particle: int = 40
    max_cells: int = 24
    write_particle_type: bool = False

    def __post_init__(self) -> None:
        self.geometry = load_geometry(self.geometry)
        if self.field == 0:
            raise ValueError("field: B must be non-zero (straight tracks are not supported)")
        if not 0 <= self.noise_fraction < 1:
            raise ValueError(f"noise_fraction must be in [0, 1), got {self.noise_fraction}")
        if not 0 <= self.inefficiency <= 1:
            raise ValueError(f"inefficiency must be in [0, 1], got {self.inefficiency}")
        if self.mu < 0:
            raise ValueError(f"mu must be >= 0, got {self.mu}")
        if self.smearing not in ("gaussian", "uniform", "none"):
            raise ValueError(f"smearing must be 'gaussian', 'uniform' or 'none', got {self.smearing!r}")
        if self.hard_scatter not in ("none", "pythia8", "jet", "auto"):
            raise ValueError(f"hard_scatter must be 'none', 'pythia8', 'jet' or 'auto', got {self.hard_scatter!r}")
        if self.pt_mean <= self.pt_min or self.pt_power <= 1:
            raise ValueError("pt_mean must exceed pt_min and pt_power must be > 1")
        self.secondary_r_range = tuple(float(v) for v in self.secondary_r_range)  # type: ignore[assignment]
        if not 0 <= self.dead_module_fraction < 1:
            raise ValueError(f"dead_module_fraction must be in [0, 1), got {self.dead_module_fraction}")
        self._detector: pd.DataFrame | None = None
        n_mod = self.geometry.n_modules
        dead_rng = np.random.default_rng(int(self.dead_module_seed))
        self._dead = dead_rng.random(n_mod) < self.dead_module_fraction
        self._live_modules = np.nonzero(~self._dead)[0]

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TrackerSimulator:
        """Simulator for a preset (``gnnreco/conf/sim/tracker_<name>.yaml``): geometry + defaults."""
        cfg = load_preset(name)
        sim = dict(cfg.get("simulation", {}) or {})
        known = {f.name for f in fields(cls)}
        unknown = set(sim) - known
        if unknown:
            raise ValueError(f"preset '{name}': unknown simulation key(s) {sorted(unknown)}")
        sim.update(overrides)
        geo = sim.pop("geometry", None) or TrackerGeometry.from_dict(cfg["geometry"], name=cfg["geometry"].get("name", name))
        return cls(geometry=geo, **sim)

    def config(self) -> dict[str, Any]:
        """Settings as a plain dict (geometry by name), recorded in every event's metadata."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "geometry"}
        d["geometry"] = self.geometry.name
        d["secondary_r_range"] = list(self.secondary_r_range)
        return d

    def detector_table(self) -> pd.DataFrame:
        """The TrackML ``detectors.csv`` table of the geometry (cached)."""
        if self._detector is None:
            self._detector = self.geometry.detector_table()
        return self._detector

    # ------------------------------------------------------------------ generation
    def _sample_minbias(self, rng: np.random.Generator, n_vertices: int) -> dict[str, np.ndarray]:
        m = self.n_charged_mean
        if n_vertices == 0:
            counts = np.zeros(0, np.int64)
        elif self.n_charged_k > 0:
            lam = rng.gamma(self.n_charged_k, m / self.n_charged_k, size=n_vertices)
            counts = rng.poisson(lam)
        else:
            counts = rng.poisson(m, size=n_vertices)
        n = int(counts.sum())
        vtx = np.repeat(np.arange(n_vertices), counts)
        a = self.pt_power
        lam_pt = (self.pt_mean - self.pt_min) * (a - 1.0)
        u = rng.random(n)
        pt = self.pt_min + lam_pt * ((1.0 - u) ** (-1.0 / a) - 1.0)
        eta = rng.uniform(-self.eta_max, self.eta_max, n)
        phi = rng.uniform(-np.pi, np.pi, n)
        q = np.where(rng.random(n) < 0.5, -1, 1)
        species = rng.choice(np.array([211, 321, 2212]), size=n, p=[0.8, 0.12, 0.08])
        zeros = np.zeros(n)
        return dict(vertex=vtx, pt=pt, eta=eta, phi=phi, q=q, pdg=species * q, dx=zeros, dy=zeros, dz=zeros)

    def _sample_hard_scatter(self, seed: int) -> dict[str, np.ndarray]:
        """Charged final-state particles of the hard process from :mod:`gnnreco.sim.pythia`.

        ``'pythia8'`` uses Pythia 8 (production vertices kept, so K⁰_S/Λ/b/c decay products are
        displaced), ``'jet'`` the parametric stand-in, ``'auto'`` Pythia when installed. Particles
        outside p_T ≥ ``pt_min`` and |η| ≤ ``eta_max`` are dropped.
        """
        from gnnreco.sim.pythia import generate_event

        backend = {"pythia8": "pythia", "jet": "parametric", "auto": "auto"}[self.hard_scatter]
        gen = generate_event(int(seed), process=self.hard_scatter_process, ecm=self.hard_scatter_ecm, backend=backend)
        px, py, pz = (gen[k].astype(np.float64) for k in ("px", "py", "pz"))
        pt = np.hypot(px, py)
        with np.errstate(divide="ignore", invalid="ignore"):
            eta = np.arcsinh(pz / np.maximum(pt, 1e-12))
        sel = (gen["charge"] != 0) & (pt >= self.pt_min) & (np.abs(eta) <= self.eta_max)
        if "is_pu" in gen:
            sel &= ~gen["is_pu"]
        # production points relative to the hard-scatter vertex (most particles come from it)
        offs = {k: gen[v].astype(np.float64) - np.median(gen[v][sel]) if sel.any() else gen[v].astype(np.float64)
                for k, v in (("dx", "vx"), ("dy", "vy"), ("dz", "vz"))}
        return dict(
            vertex=np.zeros(int(sel.sum()), np.int64),
            pt=pt[sel],
            eta=eta[sel],
            phi=np.arctan2(py[sel], px[sel]),
            q=np.sign(gen["charge"][sel]).astype(np.int64),
            pdg=gen["pid"][sel].astype(np.int64),
            dx=offs["dx"][sel],
            dy=offs["dy"][sel],
            dz=offs["dz"][sel],
        )

    def simulate(self, seed: int, event_id: int | None = None) -> TrackMLEvent:
        """Simulate one event; deterministic in ``seed``.

        Args:
            seed: random seed (recorded in ``event.seed`` and ``event.meta``).
            event_id: event number (default: ``seed`` modulo 10⁹, to fit the 9-digit file names).

        Returns:
            A :class:`~gnnreco.data.trackml.TrackMLEvent` with hits, cells, particles and truth.
        """
        t0 = time.perf_counter()
        seed = int(seed)
        rng = np.random.default_rng(seed)
        # ---------------- primaries
        n_pu = int(rng.poisson(self.mu)) if self.poisson_pileup else int(round(self.mu))
        parts = []
        n_vertices = n_pu
        if self.hard_scatter != "none":
            hs = self._sample_hard_scatter(seed)
            hs["vertex"] = np.zeros(len(hs["pt"]), np.int64)
            parts.append(hs)
            mb = self._sample_minbias(rng, n_pu)
            mb["vertex"] = mb["vertex"] + 1
            parts.append(mb)
            n_vertices = n_pu + 1
        else:
            parts.append(self._sample_minbias(rng, n_pu))
        prim = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        vx = rng.normal(0.0, self.vertex_sigma_xy, n_vertices)
        vy = rng.normal(0.0, self.vertex_sigma_xy, n_vertices)
        vz = rng.normal(0.0, self.vertex_sigma_z, n_vertices)
        n_prim = len(prim["pt"])
        v = prim["vertex"]
        # primary index within its vertex (1-based)
        order = np.argsort(v, kind="stable")
        first = np.searchsorted(v[order], v[order])
        prim_id = np.empty(n_prim, np.int64)
        prim_id[order] = np.arange(n_prim) - first + 1
        pt = prim["pt"]
        P = {
            "x": vx[v] + prim["dx"],
            "y": vy[v] + prim["dy"],
            "z": vz[v] + prim["dz"],
            "px": pt * np.cos(prim["phi"]),
            "py": pt * np.sin(prim["phi"]),
            "pz": pt * np.sinh(prim["eta"]),
            "q": prim["q"].astype(np.int64),
            "pdg": prim["pdg"].astype(np.int64),
            "vertex_id": v + 1,
            "primary_id": prim_id,
            "generation": np.zeros(n_prim, np.int64),
            "secondary_id": np.zeros(n_prim, np.int64),
            "process": np.zeros(n_prim, np.int64),
            "s_max": np.full(n_prim, np.inf),
        }
        # ---------------- secondaries, propagation, digitisation
        if self.secondary_fraction > 0 and n_prim > 0:
            self._choose_decays(P, rng)
        P, H = self._propagate_all(P, rng)
        event = self._digitise(P, H, rng)
        event.event_id = int(seed % 1_000_000_000 if event_id is None else event_id)
        event.seed = seed
        event.meta = {
            "generator": "gnnreco.sim.tracker.TrackerSimulator",
            "n_vertices": int(n_vertices),
            "n_pileup": int(n_pu),
            "config": self.config(),
            "generation_time_s": round(time.perf_counter() - t0, 4),
        }
        return event

    def simulate_particles(
        self,
        vertex: np.ndarray,
        momentum: np.ndarray,
        charge: np.ndarray,
        seed: int = 0,
        pdg: np.ndarray | None = None,
        event_id: int = 0,
    ) -> TrackMLEvent:
        """Propagate and digitise given particles (no pile-up generation, no secondaries).

        Args:
            vertex: production points (N, 3), mm.
            momentum: momenta (N, 3), GeV.
            charge: charges (N,), units of e.
            seed: random seed for scattering, smearing, inefficiency and noise.
            pdg: PDG ids (N,) for the mass in the scattering formula (default: π±).
            event_id: event number.

        Shapes:
            vertex, momentum: (N, 3); charge, pdg: (N,).
        """
        vertex = np.asarray(vertex, float).reshape(-1, 3)
        momentum = np.asarray(momentum, float).reshape(-1, 3)
        charge = np.asarray(charge, np.int64).reshape(-1)
        n = len(vertex)
        if len(momentum) != n or len(charge) != n:
            raise ValueError("simulate_particles: vertex, momentum and charge need the same length N")
        if pdg is None:
            pdg = 211 * np.where(charge != 0, np.sign(charge), 1)
        rng = np.random.default_rng(int(seed))
        P = {
            "x": vertex[:, 0].copy(),
            "y": vertex[:, 1].copy(),
            "z": vertex[:, 2].copy(),
            "px": momentum[:, 0].copy(),
            "py": momentum[:, 1].copy(),
            "pz": momentum[:, 2].copy(),
            "q": charge,
            "pdg": np.asarray(pdg, np.int64),
            "vertex_id": np.ones(n, np.int64),
            "primary_id": np.arange(1, n + 1, dtype=np.int64),
            "generation": np.zeros(n, np.int64),
            "secondary_id": np.zeros(n, np.int64),
            "process": np.zeros(n, np.int64),
            "s_max": np.full(n, np.inf),
        }
        P, H = self._propagate_all(P, rng)
        event = self._digitise(P, H, rng)
        event.event_id = int(event_id)
        event.seed = int(seed)
        event.meta = {"generator": "gnnreco.sim.tracker.TrackerSimulator.simulate_particles", "config": self.config()}
        return event

    # ------------------------------------------------------------------ secondaries
    def _choose_decays(self, P: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        """Mark a fraction of the primaries to interact at a radius drawn from ``secondary_r_range``.

        Sets the parent's transverse path limit ``s_max`` to the path length at which its helix
        reaches that radius; the propagation stops it there and reports its state (see
        :meth:`_daughters`).
        """
        n = len(P["x"])
        sel = np.nonzero((rng.random(n) < self.secondary_fraction) & (P["q"] != 0))[0]
        if len(sel) == 0:
            return
        r_lo, r_hi = self.secondary_r_range
        r_dec = rng.uniform(r_lo, r_hi, len(sel))
        pt = np.hypot(P["px"][sel], P["py"][sel])
        phi0 = np.arctan2(P["py"][sel], P["px"][sel])
        k = -P["q"][sel] * C_LIGHT * self.field / pt
        s_d = np.minimum(*_crossing_lengths(P["x"][sel], P["y"][sel], phi0, k, r_dec))
        zd = P["z"][sel] + P["pz"][sel] / pt * s_d
        z_max = float(np.nanmax(np.abs(np.r_[self.geometry.surfaces["z"], self.geometry.surfaces["half_length"]])))
        ok = np.isfinite(s_d) & (np.abs(zd) < z_max)
        P["s_max"][sel[ok]] = s_d[ok]

    def _daughters(self, P: dict[str, np.ndarray], decays: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Charged daughters at the parents' end points (charges q, +1, −1, ...; 90 % of |p| shared
        by a flat Dirichlet draw; directions within ~0.15 rad of the parent)."""
        par = decays["pidx"]
        m = len(par)
        pvec = np.stack([decays["px"], decays["py"], decays["pz"]], 1)
        p_par = np.linalg.norm(pvec, axis=1)
        dir_par = pvec / p_par[:, None]
        nd = int(self.n_daughters)
        frac = rng.dirichlet(np.ones(nd), size=m) * 0.9
        rows = []
        for j in range(nd):
            q = P["q"][par] if j == 0 else np.full(m, 1 if j % 2 == 1 else -1)
            dvec = _rotate_directions(dir_par, np.abs(rng.normal(0, 0.15, m)), rng.uniform(0, _TWO_PI, m))
            pm = np.maximum(frac[:, j] * p_par, 0.02)
            rows.append(
                dict(
                    x=decays["x"],
                    y=decays["y"],
                    z=decays["z"],
                    px=pm * dvec[:, 0],
                    py=pm * dvec[:, 1],
                    pz=pm * dvec[:, 2],
                    q=q.astype(np.int64),
                    pdg=(211 * q).astype(np.int64),
                    vertex_id=P["vertex_id"][par],
                    primary_id=P["primary_id"][par],
                    generation=np.ones(m, np.int64),
                    secondary_id=np.full(m, j + 1, np.int64),
                    process=np.ones(m, np.int64),
                    s_max=np.full(m, np.inf),
                )
            )
        return {key: np.concatenate([r[key] for r in rows]) for key in P}

    def _propagate_all(self, P: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[dict, dict]:
        """Propagate primaries, then the daughters of those that interacted; merged particles and hits."""
        H = self._propagate(P, rng)
        dec = H.pop("decays")
        if len(dec["pidx"]) == 0:
            return P, H
        D = self._daughters(P, dec, rng)
        HD = self._propagate(D, rng)
        HD.pop("decays")
        HD["pidx"] = HD["pidx"] + len(P["x"])
        P = {k: np.concatenate([P[k], D[k]]) for k in P}
        H = {k: np.concatenate([H[k], HD[k]]) for k in H}
        return P, H

    # ------------------------------------------------------------------ propagation
    def _propagate(self, P: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Step all particles from surface to surface.

        Returns:
            The crossings (``pidx, surf, x, y, z, px, py, pz, step``) and, under ``'decays'``, the
            end states of the particles stopped by their ``s_max`` (secondary interactions).
        """
        geo = self.geometry
        S = geo.surfaces
        n_cyl = geo.n_cylinders
        R = S["radius"][:n_cyl]
        zlo = -S["half_length"][:n_cyl]
        zhi = S["half_length"][:n_cyl]
        Zd = S["z"][n_cyl:]
        rmin = S["r_min"][n_cyl:]
        rmax = S["r_max"][n_cyl:]
        xx0 = S["x_x0"]
        B = self.field
        n = len(P["x"])
        x = P["x"].astype(float).copy()
        y = P["y"].astype(float).copy()
        z = P["z"].astype(float).copy()
        px = P["px"].astype(float).copy()
        py = P["py"].astype(float).copy()
        pz = P["pz"].astype(float).copy()
        q = P["q"].astype(float)
        mass = np.full(n, _MASS[211])
        apdg = np.abs(P["pdg"])
        for code, m in _MASS.items():
            mass[apdg == code] = m
        s_left = P["s_max"].astype(float).copy()
        turn_left = np.full(n, self.max_turns * _TWO_PI)
        alive = np.nonzero(q != 0)[0]
        rec: dict[str, list[np.ndarray]] = {k: [] for k in ("pidx", "surf", "x", "y", "z", "px", "py", "pz", "step")}
        decays: dict[str, list[np.ndarray]] = {k: [] for k in ("pidx", "x", "y", "z", "px", "py", "pz")}
        eps = 1e-6
        for step in range(self.max_hits_per_particle):
            if len(alive) == 0:
                break
            ax, ay, az = x[alive], y[alive], z[alive]
            apx, apy, apz, aq = px[alive], py[alive], pz[alive], q[alive]
            pt = np.hypot(apx, apy)
            pt = np.maximum(pt, 1e-9)
            phi0 = np.arctan2(apy, apx)
            k = -aq * C_LIGHT * B / pt
            tanl = apz / pt
            period = _TWO_PI / np.abs(k)
            cand = []
            if n_cyl:
                s1, s2 = helix_cylinder_intersection(ax, ay, phi0, k, R, eps)
                # s-range where z is inside the cylinder
                with np.errstate(divide="ignore", invalid="ignore"):
                    t = tanl[:, None]
                    sa = (zlo[None, :] - az[:, None]) / t
                    sb = (zhi[None, :] - az[:, None]) / t
                    s_lo = np.where(t > 0, sa, np.where(t < 0, sb, np.where((az[:, None] >= zlo) & (az[:, None] <= zhi), 0.0, np.inf)))
                    s_hi = np.where(t > 0, sb, np.where(t < 0, sa, np.where((az[:, None] >= zlo) & (az[:, None] <= zhi), np.inf, -np.inf)))
                per = period[:, None]
                for s in (s1, s2):
                    nturn = np.ceil(np.maximum(s_lo - s, 0.0) / per)
                    s_ok = s + nturn * per
                    cand.append(np.where(np.isfinite(s) & (s_ok <= s_hi), s_ok, np.inf))
            if len(Zd):
                with np.errstate(divide="ignore", invalid="ignore"):
                    sd = (Zd[None, :] - az[:, None]) / tanl[:, None]
                sd = np.where(np.isfinite(sd) & (sd > eps), sd, np.inf)
                fin = np.isfinite(sd)
                xc, yc = _helix_centre(ax, ay, phi0, k)
                ph = phi0[:, None] + k[:, None] * np.where(fin, sd, 0.0)
                xd = xc[:, None] + np.sin(ph) / k[:, None]
                yd = yc[:, None] - np.cos(ph) / k[:, None]
                rd = np.hypot(xd, yd)
                cand.append(np.where(fin & (rd >= rmin[None, :]) & (rd <= rmax[None, :]), sd, np.inf))
            # candidates: [cyl s1 (C), cyl s2 (C), disks (D)]
            allc = np.concatenate(cand, axis=1)
            j = np.argmin(allc, axis=1)
            smin = allc[np.arange(len(alive)), j]
            surf = np.where(j < 2 * n_cyl, j % max(n_cyl, 1), j - 2 * n_cyl + n_cyl)
            s_rem = s_left[alive]
            go = np.isfinite(smin) & (smin <= s_rem) & (np.abs(k) * smin <= turn_left[alive])
            # particles that interact before their next crossing: record their state there
            dec = ~go & np.isfinite(s_rem) & (np.abs(k) * s_rem <= turn_left[alive])
            if dec.any():
                sd_, kd, p0d = s_rem[dec], k[dec], phi0[dec]
                xcd, ycd = _helix_centre(ax[dec], ay[dec], p0d, kd)
                phid = p0d + kd * sd_
                for key, val in (
                    ("pidx", alive[dec]),
                    ("x", xcd + np.sin(phid) / kd),
                    ("y", ycd - np.cos(phid) / kd),
                    ("z", az[dec] + tanl[dec] * sd_),
                    ("px", pt[dec] * np.cos(phid)),
                    ("py", pt[dec] * np.sin(phid)),
                    ("pz", apz[dec]),
                ):
                    decays[key].append(val)
            if not go.any():
                break
            idx = alive[go]
            smin, surf, k_, phi0_, tanl_ = smin[go], surf[go], k[go], phi0[go], tanl[go]
            xc, yc = _helix_centre(ax[go], ay[go], phi0_, k_)
            phi1 = phi0_ + k_ * smin
            nx = xc + np.sin(phi1) / k_
            ny = yc - np.cos(phi1) / k_
            nz = az[go] + tanl_ * smin
            barrel = surf < n_cyl
            # snap onto the surface (removes round-off)
            rr = np.hypot(nx, ny)
            scale = np.where(barrel, S["radius"][surf] / np.maximum(rr, 1e-12), 1.0)
            nx, ny = nx * scale, ny * scale
            nz = np.where(barrel, nz, S["z"][surf])
            ptg = pt[go]
            npx = ptg * np.cos(phi1)
            npy = ptg * np.sin(phi1)
            npz = apz[go]
            for key, val in (("pidx", idx), ("surf", surf), ("x", nx), ("y", ny), ("z", nz), ("px", npx), ("py", npy), ("pz", npz), ("step", np.full(len(idx), step))):
                rec[key].append(val)
            # material effects
            p = np.sqrt(ptg**2 + npz**2)
            cos_inc = np.where(barrel, np.abs(npx * nx + npy * ny) / (p * np.maximum(np.hypot(nx, ny), 1e-12)), np.abs(npz) / p)
            cos_inc = np.maximum(cos_inc, 0.05)
            t_mat = xx0[surf] / cos_inc
            m = mass[idx]
            d = np.stack([npx, npy, npz], 1) / p[:, None]
            if self.energy_loss:
                beta2 = p**2 / (p**2 + m**2)
                E = np.sqrt(p**2 + m**2) - self.e_loss_per_x0 * t_mat * np.minimum(1.0 / beta2, 100.0)
                stopped = E <= m * 1.0001
                p = np.where(stopped, 1e-6, np.sqrt(np.maximum(E**2 - m**2, 1e-12)))
                turn_left[idx[stopped]] = -1.0
            if self.multiple_scattering:
                beta = p / np.sqrt(p**2 + m**2)
                th0 = highland_theta0(p, beta, t_mat, q[idx])
                d = _scatter(d, th0, rng)
            x[idx], y[idx], z[idx] = nx, ny, nz
            px[idx], py[idx], pz[idx] = p * d[:, 0], p * d[:, 1], p * d[:, 2]
            s_left[idx] -= smin
            turn_left[idx] -= np.abs(k_) * smin
            alive = idx[turn_left[idx] > 0]
        out = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in rec.items()}
        out["decays"] = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in decays.items()}
        out["decays"]["pidx"] = out["decays"]["pidx"].astype(np.int64)
        out["pidx"] = out["pidx"].astype(np.int64)
        out["surf"] = out["surf"].astype(np.int64)
        out["step"] = out["step"].astype(np.int64)
        return out

    # ------------------------------------------------------------------ digitisation
    def _locate(self, surf: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Global module index of points on their surfaces."""
        geo = self.geometry
        S = geo.surfaces
        n_cyl = geo.n_cylinders
        phi = np.arctan2(y, x)
        r = np.hypot(x, y)
        barrel = surf < n_cyl
        mod = np.zeros(len(surf), np.int64)
        if barrel.any():
            sb = surf[barrel]
            nphi = S["n_phi"][sb]
            nz = S["n_z"][sb]
            iphi = np.floor(np.mod(phi[barrel] - S["phi_offset"][sb], _TWO_PI) / (_TWO_PI / nphi)).astype(np.int64)
            iphi = np.clip(iphi, 0, nphi - 1)
            hl = S["half_length"][sb]
            iz = np.clip(np.floor((z[barrel] + hl) / (2 * hl / nz)).astype(np.int64), 0, nz - 1)
            mod[barrel] = S["module_offset"][sb] + iz * nphi + iphi
        if (~barrel).any():
            sd = surf[~barrel]
            nr = S["n_rings"][sd]
            rmin, rmax = S["r_min"][sd], S["r_max"][sd]
            ring = np.clip(np.floor((r[~barrel] - rmin) / ((rmax - rmin) / nr)).astype(np.int64), 0, nr - 1)
            g = S["ring_first"][sd] + ring
            nphi = S["ring_n_phi"][g]
            iphi = np.floor(np.mod(phi[~barrel] - S["phi_offset"][sd], _TWO_PI) / (_TWO_PI / nphi)).astype(np.int64)
            iphi = np.clip(iphi, 0, nphi - 1)
            mod[~barrel] = S["module_offset"][sd] + S["ring_module0"][g] + iphi
        return mod

    def _to_local(self, mod: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local (u, v) of points on module ``mod`` (barrel: arc length and z offset from the centre)."""
        M = self.geometry.modules
        barrel = M["is_barrel"][mod]
        phic = M["phi_c"][mod]
        rc = M["r_c"][mod]
        phi = np.arctan2(y, x)
        dphi = np.mod(phi - phic + np.pi, _TWO_PI) - np.pi
        r = np.hypot(x, y)
        u = np.where(barrel, rc * dphi, r * np.sin(dphi))
        v = np.where(barrel, z - M["z_c"][mod], r * np.cos(dphi) - rc)
        return u, v

    def _to_global(self, mod: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        M = self.geometry.modules
        barrel = M["is_barrel"][mod]
        phic = M["phi_c"][mod]
        rc = M["r_c"][mod]
        # barrel: phi = phic + u / R on the cylinder; endcap: planar
        phib = phic + u / rc
        xb, yb, zb = rc * np.cos(phib), rc * np.sin(phib), M["z_c"][mod] + v
        c, s = np.cos(phic), np.sin(phic)
        xe = (rc + v) * c - u * s
        ye = (rc + v) * s + u * c
        return np.stack([np.where(barrel, xb, xe), np.where(barrel, yb, ye), np.where(barrel, zb, M["z_c"][mod])], 1)

    def _clip_local(self, mod: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        M = self.geometry.modules
        hv = M["hv"][mod]
        v = np.clip(v, -hv * (1 - 1e-9), hv * (1 - 1e-9))
        minhu, maxhu = M["minhu"][mod], M["maxhu"][mod]
        hu = minhu + (maxhu - minhu) * (v + hv) / (2 * hv)
        u = np.clip(u, -hu * (1 - 1e-9), hu * (1 - 1e-9))
        return u, v

    def _digitise(self, P: dict[str, np.ndarray], H: dict[str, np.ndarray], rng: np.random.Generator) -> TrackMLEvent:
        geo = self.geometry
        S = geo.surfaces
        M = geo.modules
        n_part = len(P["x"])
        # ---- inefficiency
        ineff = np.where(np.isnan(S["inefficiency"]), self.inefficiency, S["inefficiency"])[H["surf"]]
        mod = self._locate(H["surf"], H["x"], H["y"], H["z"])
        keep = (rng.random(len(H["surf"])) >= ineff) & ~self._dead[mod]
        H = {k: v[keep] for k, v in H.items()}
        mod = mod[keep]
        H, mod = self._overlap_duplicates(H, mod, rng)
        n_sig = len(H["surf"])
        u_true, v_true = self._to_local(mod, H["x"], H["y"], H["z"])
        pu, pv = S["pitch_u"][H["surf"]], S["pitch_v"][H["surf"]]
        if self.smearing == "gaussian":
            du, dv = rng.normal(0, 1, n_sig) * pu / math.sqrt(12), rng.normal(0, 1, n_sig) * pv / math.sqrt(12)
        elif self.smearing == "uniform":
            du, dv = rng.uniform(-0.5, 0.5, n_sig) * pu, rng.uniform(-0.5, 0.5, n_sig) * pv
        else:
            du = dv = np.zeros(n_sig)
        u_m, v_m = self._clip_local(mod, u_true + du, v_true + dv)
        pos = self._to_global(mod, u_m, v_m)
        # local direction at the crossing for the cluster size
        rot = geo.module_frames(mod, phi=np.arctan2(H["y"], H["x"]))
        pvec = np.stack([H["px"], H["py"], H["pz"]], 1)
        dloc = np.einsum("nji,nj->ni", rot, pvec)
        # ---- noise
        n_noise = int(round(self.noise_fraction / (1 - self.noise_fraction) * n_sig)) if self.noise_fraction > 0 else 0
        nmod = self._live_modules[rng.integers(0, len(self._live_modules), n_noise)]
        hv = M["hv"][nmod]
        nv = rng.uniform(-1, 1, n_noise) * hv
        hu = M["minhu"][nmod] + (M["maxhu"][nmod] - M["minhu"][nmod]) * (nv + hv) / (2 * hv)
        nu = rng.uniform(-1, 1, n_noise) * hu
        npos = self._to_global(nmod, nu, nv)
        ndir = np.stack([rng.normal(0, 0.3, n_noise), rng.normal(0, 0.3, n_noise), np.ones(n_noise)], 1)
        # ---- all hits
        all_mod = np.concatenate([mod, nmod])
        all_u = np.concatenate([u_m, nu])
        all_v = np.concatenate([v_m, nv])
        all_pos = np.concatenate([pos, npos])
        all_dir = np.concatenate([dloc, ndir])
        surf_all = M["surface"][all_mod]
        vol = S["volume_id"][surf_all]
        lay = S["layer_id"][surf_all]
        mid = M["module_id"][all_mod]
        n_all = len(all_mod)
        order = np.lexsort((rng.random(n_all), mid, lay, vol))
        hit_id = np.empty(n_all, np.int64)
        hit_id[order] = np.arange(1, n_all + 1)
        # ---- particles table
        pid = encode_particle_id(P["vertex_id"], P["primary_id"], P["generation"], P["secondary_id"], P["process"])
        nhits = np.bincount(H["pidx"], minlength=n_part)
        particles = pd.DataFrame(
            {
                "particle_id": pid,
                "vx": P["x"].astype(np.float32),
                "vy": P["y"].astype(np.float32),
                "vz": P["z"].astype(np.float32),
                "px": P["px"].astype(np.float32),
                "py": P["py"].astype(np.float32),
                "pz": P["pz"].astype(np.float32),
                "q": P["q"].astype(np.int32),
                "nhits": nhits.astype(np.int32),
            }
        )
        if self.write_particle_type:
            particles.insert(1, "particle_type", P["pdg"].astype(np.int32))
        # ---- truth
        hit_pid = np.concatenate([pid[H["pidx"]], np.zeros(n_noise, np.int64)])
        tpos = np.concatenate([np.stack([H["x"], H["y"], H["z"]], 1), npos])
        tmom = np.concatenate([pvec, np.zeros((n_noise, 3))])
        # hit rank along the trajectory (after inefficiency)
        rank = np.zeros(n_all, np.int64)
        if n_sig:
            o = np.lexsort((H["step"], H["pidx"]))
            first = np.searchsorted(H["pidx"][o], H["pidx"][o])
            rank[o] = np.arange(n_sig) - first
        truth = pd.DataFrame(
            {
                "hit_id": hit_id.astype(np.int32),
                "particle_id": hit_pid,
                "tx": tpos[:, 0].astype(np.float32),
                "ty": tpos[:, 1].astype(np.float32),
                "tz": tpos[:, 2].astype(np.float32),
                "tpx": tmom[:, 0].astype(np.float32),
                "tpy": tmom[:, 1].astype(np.float32),
                "tpz": tmom[:, 2].astype(np.float32),
            }
        )
        truth["weight"] = weight_hits(truth, particles, order=rank).astype(np.float32)
        hits = pd.DataFrame(
            {
                "hit_id": hit_id.astype(np.int32),
                "x": all_pos[:, 0].astype(np.float32),
                "y": all_pos[:, 1].astype(np.float32),
                "z": all_pos[:, 2].astype(np.float32),
                "volume_id": vol.astype(np.int32),
                "layer_id": lay.astype(np.int32),
                "module_id": mid.astype(np.int32),
            }
        )
        cells = self._cells(all_mod, all_u, all_v, all_dir, hit_id, rng)
        hits = hits.iloc[order].reset_index(drop=True)
        truth = truth.iloc[order].reset_index(drop=True)
        return TrackMLEvent(hits=hits, cells=cells, particles=particles, truth=truth)

    def _overlap_duplicates(
        self, H: dict[str, np.ndarray], mod: np.ndarray, rng: np.random.Generator
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Second hits on the neighbouring module for crossings within a layer's ``overlap`` of a
        tile edge (in φ). The duplicate has the same true position and momentum; it is lost with
        the same inefficiency and never lands on a dead module."""
        S = self.geometry.surfaces
        M = self.geometry.modules
        ov = S["overlap"][H["surf"]]
        if len(mod) == 0 or not (ov > 0).any():
            return H, mod
        u, v = self._to_local(mod, H["x"], H["y"], H["z"])
        hv = M["hv"][mod]
        hu_nom = M["minhu"][mod] + (M["maxhu"][mod] - M["minhu"][mod]) * (v + hv) / (2 * hv) - ov
        near = (ov > 0) & (np.abs(u) > hu_nom - ov)
        idx = np.nonzero(near)[0]
        if len(idx) == 0:
            return H, mod
        r = np.hypot(H["x"][idx], H["y"][idx])
        dphi = np.sign(u[idx]) * (hu_nom[idx] - np.abs(u[idx]) + 1e-3) / r
        phi = np.arctan2(H["y"][idx], H["x"][idx]) + dphi
        nmod = self._locate(H["surf"][idx], r * np.cos(phi), r * np.sin(phi), H["z"][idx])
        ineff = np.where(np.isnan(S["inefficiency"]), self.inefficiency, S["inefficiency"])[H["surf"][idx]]
        ok = (nmod != mod[idx]) & (rng.random(len(idx)) >= ineff) & ~self._dead[nmod]
        idx, nmod = idx[ok], nmod[ok]
        H = {k: np.concatenate([v_, v_[idx]]) for k, v_ in H.items()}
        return H, np.concatenate([mod, nmod])

    def _cells(
        self,
        mod: np.ndarray,
        u: np.ndarray,
        v: np.ndarray,
        dloc: np.ndarray,
        hit_id: np.ndarray,
        rng: np.random.Generator,
    ) -> pd.DataFrame:
        """Cell clusters: the track crosses the sensor thickness 2t, spanning Δu = 2t |d_u/d_w| and
        Δv = 2t |d_v/d_w| around the measured position; cells are sampled along that segment."""
        S = self.geometry.surfaces
        M = self.geometry.modules
        surf = M["surface"][mod]
        pu, pv, t = S["pitch_u"][surf], S["pitch_v"][surf], S["module_t"][surf]
        dw = np.maximum(np.abs(dloc[:, 2]), 1e-3 * np.linalg.norm(dloc, axis=1) + 1e-12)
        span_u = np.minimum(2 * t * np.abs(dloc[:, 0]) / dw, self.max_cells * pu)
        span_v = np.minimum(2 * t * np.abs(dloc[:, 1]) / dw, self.max_cells * pv)
        hu0, hv0 = M["maxhu"][mod], M["hv"][mod]
        nu_max = np.floor(2 * hu0 / pu).astype(np.int64)
        nv_max = np.floor(2 * hv0 / pv).astype(np.int64)
        u0, u1 = u - span_u / 2 + hu0, u + span_u / 2 + hu0
        v0, v1 = v - span_v / 2 + hv0, v + span_v / 2 + hv0
        n_u = np.floor(u1 / pu).astype(np.int64) - np.floor(u0 / pu).astype(np.int64) + 1
        n_v = np.floor(v1 / pv).astype(np.int64) - np.floor(v0 / pv).astype(np.int64) + 1
        n = np.clip(np.maximum(n_u, n_v), 1, self.max_cells)
        rows = np.repeat(np.arange(len(mod)), n)
        start = np.cumsum(n) - n
        i = np.arange(len(rows)) - np.repeat(start, n)
        frac = (i + 0.5) / n[rows]
        ch0 = np.clip(np.floor((u0[rows] + frac * (u1 - u0)[rows]) / pu[rows]).astype(np.int64), 0, nu_max[rows])
        ch1 = np.clip(np.floor((v0[rows] + frac * (v1 - v0)[rows]) / pv[rows]).astype(np.int64), 0, nv_max[rows])
        hid = hit_id.astype(np.int64)[rows]
        key = (hid << 32) | (ch0 << 16) | ch1  # sorted unique keys = cells ordered by (hit_id, ch0, ch1)
        uk, first_idx, counts = np.unique(key, return_index=True, return_counts=True)
        rows_u = rows[first_idx]
        # deposited charge: path length in silicon × 0.39 MeV/mm shared among the unique cells, with
        # Landau-like (log-normal) fluctuations
        path = 2 * t / (dw / np.maximum(np.linalg.norm(dloc, axis=1), 1e-12))
        path = np.minimum(path, 2 * t * 20)
        val = 0.39 * path[rows_u] * counts / n[rows_u] * rng.lognormal(0.0, 0.25, len(uk))
        return pd.DataFrame(
            {
                "hit_id": hit_id[rows_u].astype(np.int32),
                "ch0": ch0[first_idx].astype(np.int32),
                "ch1": ch1[first_idx].astype(np.int32),
                "value": val.astype(np.float32),
            }
        )


def _perp_basis(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors e₁, e₂ orthogonal to the unit vectors ``d`` (N, 3) and to each other."""
    ref = np.where(np.abs(d[:, 2:3]) < 0.9, np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 0.0, 0.0]]))
    e1 = np.cross(d, ref)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return e1, np.cross(d, e1)


def _rotate_directions(d: np.ndarray, theta: np.ndarray, azim: np.ndarray) -> np.ndarray:
    """Tilt unit vectors ``d`` (N, 3) by polar angle θ around them, at azimuth ``azim``."""
    e1, e2 = _perp_basis(d)
    out = d * np.cos(theta)[:, None] + np.sin(theta)[:, None] * (
        np.cos(azim)[:, None] * e1 + np.sin(azim)[:, None] * e2
    )
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _scatter(d: np.ndarray, theta0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Multiple-scattering kick: two independent Gaussian projected angles of width θ₀."""
    e1, e2 = _perp_basis(d)
    a1 = rng.normal(0, 1, len(d)) * theta0
    a2 = rng.normal(0, 1, len(d)) * theta0
    out = d + np.tan(a1)[:, None] * e1 + np.tan(a2)[:, None] * e2
    return out / np.linalg.norm(out, axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------------
# Convenience and datasets
# --------------------------------------------------------------------------------------------------
def simulate_event(seed: int, preset: str = "trackml", event_id: int | None = None, **kwargs: Any) -> TrackMLEvent:
    """One event from a preset (``kwargs`` override the preset's simulation settings)."""
    return TrackerSimulator.from_preset(preset, **kwargs).simulate(seed, event_id=event_id)


def event_seeds(seed: int, n_events: int) -> list[int]:
    """Independent per-event seeds derived from a base seed (``numpy.random.SeedSequence.spawn``)."""
    return [int(s.generate_state(1, np.uint32)[0]) for s in np.random.SeedSequence(int(seed)).spawn(n_events)]


_WORKER_SIM: TrackerSimulator | None = None


def _worker_init(kwargs: dict[str, Any]) -> None:
    global _WORKER_SIM
    _WORKER_SIM = _make_sim(kwargs)


def _make_sim(kwargs: dict[str, Any]) -> TrackerSimulator:
    kwargs = dict(kwargs)
    preset = kwargs.pop("preset", None)
    if preset is not None:
        return TrackerSimulator.from_preset(preset, **kwargs)
    return TrackerSimulator(**kwargs)


def _worker_run(args: tuple[int, int, str, bool]) -> tuple[int, float, int]:
    seed, event_id, out_dir, compress = args
    assert _WORKER_SIM is not None
    ev = _WORKER_SIM.simulate(seed, event_id=event_id)
    ev.write(out_dir, compress=compress)
    return event_id, float(ev.meta["generation_time_s"]), len(ev.hits)


def generate_dataset(
    out_dir: str | os.PathLike,
    n_events: int,
    seed: int = 0,
    workers: int = 1,
    first_event_id: int = 0,
    compress: bool = True,
    progress: bool = True,
    **sim_kwargs: Any,
) -> dict[str, Any]:
    """Simulate ``n_events`` and write them as TrackML CSV files plus ``detectors.csv.gz``.

    Every event gets its own seed from :func:`event_seeds` (recorded in ``event*-meta.json``), so
    the output does not depend on ``workers``.

    Args:
        out_dir: output directory (created).
        n_events: number of events.
        seed: base seed.
        workers: worker processes (1: in this process).
        first_event_id: event_id of the first event.
        compress: write ``.csv.gz`` (else ``.csv``).
        progress: show a tqdm progress bar.
        **sim_kwargs: :class:`TrackerSimulator` arguments, or ``preset='toy'`` plus overrides.

    Returns:
        Summary dict (events, hits, total and per-event generation time), also written as
        ``dataset.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sim = _make_sim(sim_kwargs)
    write_detector(sim.detector_table(), out / "detectors.csv.gz")
    seeds = event_seeds(seed, n_events)
    jobs = [(s, first_event_id + i, str(out), compress) for i, s in enumerate(seeds)]
    t0 = time.perf_counter()
    results: list[tuple[int, float, int]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_events, desc="simulating events", unit="event")
    try:
        if workers <= 1:
            global _WORKER_SIM
            _WORKER_SIM = sim
            for job in jobs:
                results.append(_worker_run(job))
                if bar is not None:
                    bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, initargs=(sim_kwargs,)) as ex:
                for res in ex.map(_worker_run, jobs, chunksize=1):
                    results.append(res)
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    summary = {
        "n_events": n_events,
        "base_seed": int(seed),
        "seeds": seeds,
        "first_event_id": first_event_id,
        "n_hits": [r[2] for r in results],
        "generation_time_s": [r[1] for r in results],
        "wall_time_s": round(wall, 3),
        "config": sim.config(),
    }
    (out / "dataset.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
