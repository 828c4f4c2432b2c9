"""Turn a raw calorimeter event (:func:`gnnreco.sim.calo.simulate`) into model inputs and OC labels.

Hit features ``x`` (``F_IN = 9`` columns, fixed scalings so no fit on data is needed):

====  =========================================  ===========================================
 col   feature                                     scaling
====  =========================================  ===========================================
  0    hit energy :math:`e`                        :math:`\\log(e / 10\\,\\mathrm{MeV})/3`
  1    hit energy                                  :math:`e` / 10 GeV
  2-3  :math:`x, y`                                / 1 m
  4    :math:`z - z_{front}`                       / 1 m
  5    pseudorapidity :math:`\\eta`                  :math:`\\eta - 2.25`
  6    layer                                       / number of layers
  7    time minus time of flight from the origin   clipped to ±5 ns
  8    EM section flag                             0/1
====  =========================================  ===========================================

Labels per hit: ``hit_shower`` (−1 noise/pile-up), ``hit_pid_class`` (class of
:data:`gnnreco.sim.calo.PID_CLASSES`, −1 for noise), ``hit_true_energy`` (the shower's generated
energy), ``hit_energy_factor`` (target of the energy head: generated energy over the shower's summed
hit energy), ``hit_impact`` and ``hit_dt`` (shower time minus hit time). Per shower: the generated
energy, η, PID class, impact, summed hit energy of its truth hits. ``num_showers`` is one row per event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gnnreco.sim.calo import C_LIGHT, CaloGeometry, pid_to_class

__all__ = ["F_IN", "FEATURE_NAMES", "POSITION_SCALE_MM", "process_event", "hit_features"]

#: length unit (mm) of the position features x, y, dz
POSITION_SCALE_MM = 1000.0
FEATURE_NAMES = ("log_energy", "energy", "x", "y", "dz", "eta", "layer", "dt", "em_section")
F_IN = len(FEATURE_NAMES)


def hit_features(raw: Mapping[str, np.ndarray], geometry: CaloGeometry | None = None) -> np.ndarray:
    """The ``[N, F_IN]`` float32 feature matrix of the hits of ``raw`` (see the module table)."""
    geo = geometry or CaloGeometry()
    e = np.asarray(raw["hit_energy"], dtype=np.float64)
    x, y, z = (np.asarray(raw[k], dtype=np.float64) for k in ("hit_x", "hit_y", "hit_z"))
    layer = np.asarray(raw["hit_layer"])
    r = np.hypot(x, y)
    eta = np.arcsinh(z / np.maximum(r, 1e-6))
    tof = np.sqrt(x ** 2 + y ** 2 + z ** 2) / C_LIGHT
    dt = np.clip(np.asarray(raw["hit_time"], dtype=np.float64) - tof, -5.0, 5.0)
    feats = np.stack([
        np.log(np.maximum(e, 1e-4) / 0.01) / 3.0, e / 10.0, x / POSITION_SCALE_MM, y / POSITION_SCALE_MM,
        (z - geo.z_front) / POSITION_SCALE_MM, eta - 2.25, layer / geo.n_layers, dt,
        (layer < geo.n_em_layers).astype(np.float64),
    ], axis=1)
    return feats.astype(np.float32)


def process_event(raw: Mapping[str, Any], *, geometry: Mapping[str, Any] | CaloGeometry | None = None,
                  min_hits: int = 1, max_hits: int | None = None) -> dict[str, np.ndarray] | None:
    """Processed event for the :class:`~gnnreco.data.store.EventStore`; ``None`` rejects the event.

    Args:
        raw: raw event from :func:`gnnreco.sim.calo.simulate`.
        geometry: the geometry the event was simulated with (for feature scalings).
        min_hits: events with fewer hits are rejected (counted by the data module).
        max_hits: events with more hits are rejected (``None``: no limit).

    Raises:
        ValueError: a required key is missing or hit arrays disagree in length, or a hit energy is
            not finite, or a shower index is out of range.
    """
    geo = geometry if isinstance(geometry, CaloGeometry) else CaloGeometry(**dict(geometry or {}))
    required = ("hit_x", "hit_y", "hit_z", "hit_layer", "hit_energy", "hit_time", "hit_shower",
                "shower_energy", "shower_pid", "shower_eta", "shower_impact", "shower_time")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ValueError(f"calo raw event is missing keys {missing}")
    n = len(raw["hit_energy"])
    for k in required[:7]:
        if len(raw[k]) != n:
            raise ValueError(f"calo raw event: '{k}' has {len(raw[k])} rows, expected {n} (rows of 'hit_energy')")
    if n < min_hits or (max_hits is not None and n > max_hits):
        return None
    e = np.asarray(raw["hit_energy"], dtype=np.float64)
    if not np.all(np.isfinite(e)):
        raise ValueError(f"calo raw event: 'hit_energy' has {int((~np.isfinite(e)).sum())} non-finite values")
    shower = np.asarray(raw["hit_shower"], dtype=np.int64)
    k = len(raw["shower_energy"])
    if shower.min(initial=0) < -1 or shower.max(initial=-1) >= k:
        raise ValueError(f"calo raw event: 'hit_shower' must lie in [-1, {k - 1}] (number of showers {k}), "
                         f"got [{shower.min()}, {shower.max()}]")
    sig = shower >= 0
    safe = np.where(sig, shower, 0)
    sh_energy = np.asarray(raw["shower_energy"], dtype=np.float64)
    sh_class = pid_to_class(np.asarray(raw["shower_pid"]))
    sh_impact = np.asarray(raw["shower_impact"], dtype=np.float64).reshape(k, 3)
    sh_time = np.asarray(raw["shower_time"], dtype=np.float64)
    hit_sum = np.bincount(shower[sig], weights=e[sig], minlength=k)
    factor = np.where(hit_sum > 0, sh_energy / np.maximum(hit_sum, 1e-9), 1.0)
    t = np.asarray(raw["hit_time"], dtype=np.float64)
    out = {
        "x": hit_features(raw, geo),
        "hit_energy": e.astype(np.float32),
        "hit_pos": np.stack([raw["hit_x"], raw["hit_y"], raw["hit_z"]], 1).astype(np.float32),
        "hit_shower": shower,
        "hit_pid_class": np.where(sig, sh_class[safe] if k else -1, -1).astype(np.int64),
        "hit_true_energy": np.where(sig, sh_energy[safe] if k else 0.0, 0.0).astype(np.float32),
        "hit_energy_factor": np.where(sig, factor[safe] if k else 1.0, 1.0).astype(np.float32),
        "hit_impact": np.where(sig[:, None], sh_impact[safe] if k else 0.0, 0.0).astype(np.float32),
        "hit_dt": np.where(sig, (sh_time[safe] if k else 0.0) - t, 0.0).clip(-5, 5).astype(np.float32),
        "shower_energy": sh_energy.astype(np.float32),
        "shower_eta": np.asarray(raw["shower_eta"], dtype=np.float32),
        "shower_pid_class": sh_class.astype(np.int64),
        "shower_impact": sh_impact.astype(np.float32),
        "shower_hit_energy": hit_sum.astype(np.float32),
        "num_showers": np.array([k], dtype=np.int64),
        "num_nodes": np.array([n], dtype=np.int64),
    }
    return out
