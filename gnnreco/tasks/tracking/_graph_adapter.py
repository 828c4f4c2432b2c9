"""Bridge from the tracking processor's hit table to :mod:`gnnreco.graph`'s builders.

Layer pairs: :func:`gnnreco.graph.geometric_layer_pairs` (consecutive barrel layers, consecutive disks
of each end cap, every barrel layer to the first disk of each end cap) and
:class:`gnnreco.graph.LayerPairBuilder` (φ-slope and z0 cuts of the HEP.TrkX / IN paper, reference
§1.1, exact sorted-window search). Module map: :class:`gnnreco.graph.ModuleMap`. This file only maps
table columns and preset names; the algorithms live in :mod:`gnnreco.graph`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = ["layer_pair_edges", "module_map_edges", "adjacent_layer_pairs", "global_module_id", "PRESETS"]

#: Preset names of the tracking configs -> truth-pT threshold of :data:`gnnreco.graph.LAYER_PAIR_PRESETS`
#: (full-event cuts, 2 T: 2.5e-4 / 5e-4 / 1e-3 rad/mm and 200 / 250 / 300 mm).
PRESETS: dict[str, float] = {"pt2": 2.0, "pt1": 1.0, "pt05": 0.5}


def _column(hits: pd.DataFrame, name: str, dtype) -> torch.Tensor:
    if name not in hits.columns:
        raise ValueError(f"hit table lacks the column '{name}' (have {list(hits.columns)})")
    return torch.from_numpy(np.ascontiguousarray(hits[name].to_numpy(dtype)))


def adjacent_layer_pairs(hits: pd.DataFrame, skip: int = 0) -> list[tuple[int, int]]:
    """Adjacent layer pairs ``(inner, outer)`` as keys ``volume_id * 1000 + layer_id``.

    See :func:`gnnreco.graph.geometric_layer_pairs` (barrel layers by radius, disks by :math:`|z|` per
    side, every barrel layer to the first ``1 + skip`` disks of each end cap).
    """
    from gnnreco.graph import geometric_layer_pairs

    pairs = geometric_layer_pairs(_column(hits, "r", np.float64), _column(hits, "z", np.float64),
                                  _column(hits, "layer_id", np.int64), _column(hits, "volume_id", np.int64),
                                  skip=int(skip))
    return [((a // 100000) * 1000 + a % 100000, (b // 100000) * 1000 + b % 100000) for a, b in pairs]


def layer_pair_edges(hits: pd.DataFrame, preset: str | None = "pt1", phi_slope_max: float | None = None,
                     z0_max: float | None = None, layer_pairs: list | None = None, skip: int = 0,
                     **options: Any) -> np.ndarray:
    """Layer-pair graph of one event (``[2, E]``, inner layer -> outer layer), via :mod:`gnnreco.graph`.

    Args:
        hits: hit table with ``r, phi, z, volume_id, layer_id``.
        preset: cut preset (``pt2``, ``pt1``, ``pt05``: :data:`gnnreco.graph.LAYER_PAIR_PRESETS`);
            explicit cuts override it.
        phi_slope_max: max :math:`|\\Delta\\phi/\\Delta r|` (rad/mm).
        z0_max: max :math:`|z_0|` (mm).
        layer_pairs: explicit ``[[[vol, layer], [vol, layer]], ...]``; default:
            :func:`gnnreco.graph.geometric_layer_pairs`.
        skip: also pair layers this many positions further apart (recovers missing hits).
        **options: further :class:`gnnreco.graph.LayerPairBuilder` arguments (``deta_max``,
            ``intersecting_cylinders``, ``num_bins``).
    """
    from gnnreco.graph import LAYER_PAIR_PRESETS, LayerPairBuilder, geometric_layer_pairs

    if preset is not None and preset not in PRESETS:
        raise ValueError(f"graph.preset must be one of {sorted(PRESETS)} or null, got {preset!r}")
    cuts: dict[str, float] = {}
    if preset is not None:
        cuts["phi_slope_max"], cuts["z0_max"] = LAYER_PAIR_PRESETS[PRESETS[preset]]
    if phi_slope_max is not None:
        cuts["phi_slope_max"] = phi_slope_max
    if z0_max is not None:
        cuts["z0_max"] = z0_max
    if "phi_slope_max" not in cuts or "z0_max" not in cuts:
        raise ValueError("graph: layer_pair needs phi_slope_max and z0_max (or a preset)")
    allowed = {"deta_max", "intersecting_cylinders", "num_bins"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"graph method 'layer_pair': unknown options {unknown} (allowed: {sorted(allowed)})")
    r = _column(hits, "r", np.float64)
    z = _column(hits, "z", np.float64)
    layer = _column(hits, "layer_id", np.int64)
    volume = _column(hits, "volume_id", np.int64)
    if layer_pairs is None:
        pairs = geometric_layer_pairs(r, z, layer, volume, skip=int(skip))
    else:
        pairs = [(tuple(int(v) for v in a), tuple(int(v) for v in b)) for a, b in layer_pairs]
    builder = LayerPairBuilder(phi_slope_max=float(cuts["phi_slope_max"]), z0_max=float(cuts["z0_max"]),
                               layer_pairs=pairs, **options)
    ei = builder(r, _column(hits, "phi", np.float64), z, layer, volume)
    return ei.cpu().numpy()


def global_module_id(hits: pd.DataFrame) -> np.ndarray:
    """One non-negative id per module: ``(volume_id · 100 + layer_id) · 100000 + module_id``."""
    return ((hits["volume_id"].to_numpy(np.int64) * 100 + hits["layer_id"].to_numpy(np.int64)) * 100000
            + hits["module_id"].to_numpy(np.int64))


def module_map_edges(hits: pd.DataFrame, module_map: Any = None, triplets: bool = False, **options: Any) -> np.ndarray:
    """Module-map graph via :class:`gnnreco.graph.ModuleMap` (a map object or the path of a saved map).

    Args:
        hits: hit table with ``r, phi, z, volume_id, layer_id, module_id``.
        module_map: a :class:`gnnreco.graph.ModuleMap` or the path of a saved one.
        triplets: also apply the learned triplet windows (keeps edges of at least one valid
            triplet; needs a map learned from enough events to cover the module triplets).
        **options: :meth:`gnnreco.graph.ModuleMap.load` options (``tolerance``, ``abs_tolerance``).
    """
    from gnnreco.graph import ModuleMap

    if module_map is None:
        raise ValueError("graph.method=module_map needs graph.module_map (a ModuleMap or the path of a saved map)")
    mm = module_map if isinstance(module_map, ModuleMap) else ModuleMap.load(module_map, **options)
    ei = mm(hits["r"].to_numpy(np.float64), hits["phi"].to_numpy(np.float64), hits["z"].to_numpy(np.float64),
            global_module_id(hits), triplets=bool(triplets))
    return ei.cpu().numpy()
