"""A tiny tracking-like event (helices on barrel cylinders) for tests and benchmarks of the builders.

Not a detector simulation: ideal helices from a luminous region in a solenoid, one hit per layer,
optional smearing and noise. ``gnnreco.sim`` holds the real generators.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["helix_event", "BARREL_RADII"]

BARREL_RADII = (32.0, 72.0, 116.0, 172.0, 260.0, 360.0, 500.0, 660.0, 820.0, 1020.0)


def helix_event(num_particles: int, *, seed: int = 0, radii=BARREL_RADII, half_length: float = 1100.0,
                bfield: float = 2.0, pt_range=(0.5, 10.0), eta_max: float = 2.0, sigma_vz: float = 50.0,
                noise_fraction: float = 0.0, phi_modules: int = 64, z_modules: int = 20,
                smear: float = 0.0) -> dict[str, np.ndarray]:
    """Hits of ``num_particles`` helices crossing cylinders at ``radii`` (mm).

    Returns:
        dict of per-hit arrays ``r, phi, z, x, y, layer, module_id, particle_id, pt, eta, vz``
        (``particle_id`` 0 = noise, particles numbered from 1).
    """
    rng = np.random.default_rng(seed)
    n = num_particles
    # pT ~ 1/pT^2 between the bounds (falls like a soft spectrum)
    lo, hi = pt_range
    u = rng.random(n)
    pt = 1.0 / (1.0 / lo - u * (1.0 / lo - 1.0 / hi))
    eta = rng.uniform(-eta_max, eta_max, n)
    phi0 = rng.uniform(-math.pi, math.pi, n)
    q = rng.choice([-1.0, 1.0], n)
    vz = rng.normal(0.0, sigma_vz, n)
    rc = pt / (0.3 * bfield) * 1000.0  # mm
    R = np.asarray(radii, dtype=np.float64)[None, :]
    ok = R < 2 * rc[:, None]
    a = np.arcsin(np.clip(R / (2 * rc[:, None]), -1, 1))
    phi = phi0[:, None] + q[:, None] * a
    z = vz[:, None] + 2 * rc[:, None] * a * np.sinh(eta)[:, None]
    ok &= np.abs(z) < half_length
    # a track stops at the first layer it misses
    ok = np.cumprod(ok, axis=1).astype(bool)
    pi_, li_ = np.nonzero(ok)
    r_h = R[0, li_]
    phi_h = phi[pi_, li_]
    z_h = z[pi_, li_]
    if smear > 0:
        phi_h = phi_h + rng.normal(0, smear / r_h)
        z_h = z_h + rng.normal(0, smear, z_h.shape)
    pid = pi_ + 1
    layer = li_
    n_noise = int(noise_fraction * len(r_h))
    if n_noise:
        nl = rng.integers(0, len(radii), n_noise)
        r_h = np.concatenate([r_h, R[0, nl]])
        phi_h = np.concatenate([phi_h, rng.uniform(-math.pi, math.pi, n_noise)])
        z_h = np.concatenate([z_h, rng.uniform(-half_length, half_length, n_noise)])
        pid = np.concatenate([pid, np.zeros(n_noise, dtype=pid.dtype)])
        layer = np.concatenate([layer, nl])
    phi_h = np.remainder(phi_h + math.pi, 2 * math.pi) - math.pi
    iphi = np.floor((phi_h + math.pi) / (2 * math.pi) * phi_modules).astype(np.int64) % phi_modules
    iz = np.clip(np.floor((z_h + half_length) / (2 * half_length) * z_modules), 0, z_modules - 1).astype(np.int64)
    module = (layer * phi_modules + iphi) * z_modules + iz
    pidx = np.maximum(pid - 1, 0)
    return {
        "r": r_h, "phi": phi_h, "z": z_h, "x": r_h * np.cos(phi_h), "y": r_h * np.sin(phi_h),
        "layer": layer.astype(np.int64), "module_id": module, "particle_id": pid.astype(np.int64),
        "pt": np.where(pid > 0, pt[pidx], 0.0), "eta": np.where(pid > 0, eta[pidx], 0.0),
        "vz": np.where(pid > 0, vz[pidx], 0.0),
    }
