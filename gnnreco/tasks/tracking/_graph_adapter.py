"""Bridge from the tracking processor to :mod:`gnnreco.graph`'s layer-pair and module-map builders.

When those builders are not importable (they are written in parallel), a private vectorised
fallback builds adjacent-layer-pair graphs with the φ-slope and z0 cuts of the HEP.TrkX / IN paper
(reference §1.1): hits on adjacent layers (consecutive barrel layers, consecutive disks of each
endcap, every barrel layer to the first disk of each endcap) are paired within a φ window, then an
edge is kept if :math:`|\\Delta\\phi/\\Delta r| <` ``phi_slope_max`` and
:math:`|z_0| = |z_1 - r_1\\,\\Delta z/\\Delta r| <` ``z0_max``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["layer_pair_edges", "module_map_edges", "adjacent_layer_pairs"]

#: φ-slope (rad/mm) and z0 (mm) cuts per pT threshold for a 2 T field (1/(2R) with margin).
PRESETS: dict[str, dict[str, float]] = {
    "pt2": {"phi_slope_max": 0.00025, "z0_max": 200.0},
    "pt1": {"phi_slope_max": 0.0005, "z0_max": 250.0},
    "pt05": {"phi_slope_max": 0.001, "z0_max": 300.0},
}


def _layer_keys(hits: pd.DataFrame) -> np.ndarray:
    return hits["volume_id"].to_numpy(np.int64) * 1000 + hits["layer_id"].to_numpy(np.int64)


def adjacent_layer_pairs(hits: pd.DataFrame, skip: int = 0) -> list[tuple[int, int]]:
    """Adjacent layer pairs (inner, outer) from the layers' positions in this event.

    A layer is a barrel layer when its hits spread more in z than in r. Barrel layers are ordered by
    radius and endcap layers by |z| per side; pairs join consecutive layers (and layers ``skip``
    further apart), and every barrel layer to the first ``1 + skip`` disks of each endcap.
    """
    keys = _layer_keys(hits)
    r = hits["r"].to_numpy(np.float64)
    z = hits["z"].to_numpy(np.float64)
    uk = np.unique(keys)
    barrel, ends = [], {-1: [], 1: []}
    for k in uk:
        m = keys == k
        rr, zz = r[m], z[m]
        if np.ptp(zz) > np.ptp(rr):
            barrel.append((float(np.median(rr)), int(k)))
            continue
        ends[1 if np.median(zz) > 0 else -1].append((float(np.median(np.abs(zz))), int(k)))
    barrel.sort()
    pairs: list[tuple[int, int]] = []
    for seq in (barrel, sorted(ends[-1]), sorted(ends[1])):
        for i in range(len(seq)):
            for j in range(i + 1, min(i + 2 + skip, len(seq))):
                pairs.append((seq[i][1], seq[j][1]))
    for _, b in barrel:
        for side in (-1, 1):
            for _, e in sorted(ends[side])[: 1 + skip]:
                pairs.append((b, e))
    return pairs


def _pair_candidates(phi_a: np.ndarray, phi_b: np.ndarray, window: float) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j) with |φ_a[i] − φ_b[j]| < window (wrapped), via a sorted search."""
    if phi_a.size == 0 or phi_b.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(phi_b)
    pb = phi_b[order]
    # periodic extension
    lo_ext = pb > np.pi - window
    hi_ext = pb < -np.pi + window
    ext_phi = np.concatenate([pb[lo_ext] - 2 * np.pi, pb, pb[hi_ext] + 2 * np.pi])
    ext_idx = np.concatenate([order[lo_ext], order, order[hi_ext]])
    lo = np.searchsorted(ext_phi, phi_a - window, side="left")
    hi = np.searchsorted(ext_phi, phi_a + window, side="right")
    cnt = hi - lo
    ia = np.repeat(np.arange(phi_a.size), cnt)
    offs = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    jb = ext_idx[np.repeat(lo, cnt) + offs]
    return ia, jb


def _fallback_layer_pairs(hits: pd.DataFrame, phi_slope_max: float, z0_max: float,
                          layer_pairs: list | None, skip: int, dr_max: float | None) -> np.ndarray:
    keys = _layer_keys(hits)
    r = hits["r"].to_numpy(np.float64)
    phi = hits["phi"].to_numpy(np.float64)
    z = hits["z"].to_numpy(np.float64)
    pairs = adjacent_layer_pairs(hits, skip) if layer_pairs is None else [
        (int(a[0]) * 1000 + int(a[1]), int(b[0]) * 1000 + int(b[1])) for a, b in layer_pairs]
    by_layer = {int(k): np.nonzero(keys == k)[0] for k in np.unique(keys)}
    max_dr = float(np.ptp(r)) if dr_max is None else float(dr_max)
    window = min(np.pi, phi_slope_max * max(max_dr, 1.0))
    out = []
    for a, b in pairs:
        ha, hb = by_layer.get(a), by_layer.get(b)
        if ha is None or hb is None:
            continue
        # window from the layers' radial gap
        gap = float(np.abs(np.median(r[hb]) - np.median(r[ha]))) + 5.0 * (np.std(r[ha]) + np.std(r[hb])) + 5.0
        w = min(window, phi_slope_max * gap)
        ia, jb = _pair_candidates(phi[ha], phi[hb], w)
        s, d = ha[ia], hb[jb]
        dr = r[d] - r[s]
        dphi = np.angle(np.exp(1j * (phi[d] - phi[s])))
        dz = z[d] - z[s]
        safe = np.where(np.abs(dr) > 1e-6, dr, 1e-6)
        keep = (np.abs(dphi / safe) < phi_slope_max) & (np.abs(z[s] - r[s] * dz / safe) < z0_max)
        out.append(np.stack([s[keep], d[keep]]))
    if not out:
        return np.zeros((2, 0), np.int64)
    return np.concatenate(out, 1).astype(np.int64)


def layer_pair_edges(hits: pd.DataFrame, preset: str | None = "pt1", phi_slope_max: float | None = None,
                     z0_max: float | None = None, layer_pairs: list | None = None, skip: int = 0,
                     dr_max: float | None = None, backend: str = "fast", **options: Any) -> np.ndarray:
    """Layer-pair graph of one event (``[2, E]``, not yet oriented).

    Args:
        hits: hit table with ``r, phi, z, volume_id, layer_id``.
        preset: cut preset (``pt2``, ``pt1``, ``pt05``); explicit cuts override it.
        phi_slope_max: max :math:`|\\Delta\\phi/\\Delta r|` (rad/mm).
        z0_max: max :math:`|z_0|` (mm).
        layer_pairs: explicit ``[[[vol, layer], [vol, layer]], ...]``; default: adjacent layers.
        skip: also pair layers this many positions further apart (recovers missing hits).
        dr_max: bound of the radial gap used for the φ window.
        backend: ``fast`` (this module's sorted-φ-window search, default) or ``graph``
            (:class:`gnnreco.graph.LayerPairBuilder`; identical edges, but ~40× slower on μ=200
            events with endcap disks at the time of writing).
    """
    cuts = dict(PRESETS.get(preset or "", {}))
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"graph.preset must be one of {sorted(PRESETS)} or null, got {preset!r}")
    if phi_slope_max is not None:
        cuts["phi_slope_max"] = phi_slope_max
    if z0_max is not None:
        cuts["z0_max"] = z0_max
    if "phi_slope_max" not in cuts or "z0_max" not in cuts:
        raise ValueError("graph: layer_pair needs phi_slope_max and z0_max (or a preset)")
    if options:
        raise TypeError(f"graph method 'layer_pair': unknown options {sorted(options)}")
    if backend not in ("fast", "graph"):
        raise ValueError(f"graph.backend must be 'fast' or 'graph', got {backend!r}")
    try:
        from gnnreco.graph import LayerPairBuilder
    except ImportError:
        LayerPairBuilder = None
    if backend == "fast" or LayerPairBuilder is None:
        return _fallback_layer_pairs(hits, float(cuts["phi_slope_max"]), float(cuts["z0_max"]), layer_pairs,
                                     int(skip), dr_max)
    if layer_pairs is None:
        keys = adjacent_layer_pairs(hits, int(skip))
        layer_pairs = [((a // 1000, a % 1000), (b // 1000, b % 1000)) for a, b in keys]
    builder = LayerPairBuilder(phi_slope_max=float(cuts["phi_slope_max"]), z0_max=float(cuts["z0_max"]),
                               layer_pairs=[(tuple(a), tuple(b)) for a, b in layer_pairs])
    ei = builder(hits["r"].to_numpy(np.float64), hits["phi"].to_numpy(np.float64), hits["z"].to_numpy(np.float64),
                 hits["layer_id"].to_numpy(np.int64), hits["volume_id"].to_numpy(np.int64))
    return ei.cpu().numpy()


def global_module_id(hits: pd.DataFrame) -> np.ndarray:
    """One non-negative id per module: ``(volume_id · 100 + layer_id) · 100000 + module_id``."""
    return ((hits["volume_id"].to_numpy(np.int64) * 100 + hits["layer_id"].to_numpy(np.int64)) * 100000
            + hits["module_id"].to_numpy(np.int64))


def module_map_edges(hits: pd.DataFrame, module_map: Any = None, **options: Any) -> np.ndarray:
    """Module-map graph via :class:`gnnreco.graph.ModuleMap` (a map object or the path of a saved map)."""
    from gnnreco.graph import ModuleMap

    if module_map is None:
        raise ValueError("graph.method=module_map needs graph.module_map (a ModuleMap or the path of a saved map)")
    mm = module_map if isinstance(module_map, ModuleMap) else ModuleMap.load(module_map, **options)
    ei = mm(hits["r"].to_numpy(np.float64), hits["phi"].to_numpy(np.float64), hits["z"].to_numpy(np.float64),
            global_module_id(hits))
    return ei.cpu().numpy()
