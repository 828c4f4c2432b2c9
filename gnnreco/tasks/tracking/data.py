"""Tracking events: simulation entry point and processing of a raw event into a training graph.

``simulate`` is the ``data.generator`` partial and ``process_event`` the ``data.processor`` partial of
:class:`gnnreco.data.datamodule.EventDataModule`.

Processing one event (TrackML-format DataFrames ``hits``, ``particles``, ``truth``, optionally ``cells``):

1. build the hit table (r, φ, η, particle pT/η per hit) with :func:`gnnreco.data.trackml.build_hit_table`;
2. select volumes and apply ``hard_cuts`` (acorn's "cheating" toy-training cuts; they also drop noise);
3. node features :math:`(r/1000, \\phi/\\pi, z/1000, [\\eta, \\ldots])`;
4. build the graph (layer-pair cuts by default, module map, kNN or radius);
5. edge features :math:`(\\Delta r, \\Delta\\phi, \\Delta z, \\Delta\\eta, \\Delta\\phi/\\Delta r)` in
   the scaled units, truth labels :math:`y_{ji}` (pid truth: both hits from the same particle) and
   per-edge weights :math:`w_{ji}` from declarative weighting rules (acorn's ``weighting``);
6. keep per-hit truth and a per-particle table (``particle_*``) for the track metrics.

Weighting rules are applied in order, later rules overriding earlier ones; each rule is
``{weight: w, conditions: {...}}`` with conditions on the edge truth ``y``, on ``target`` (the
particle passes the target definition) and on particle properties (``pt``, ``eta``, ``nhits``,
``primary``, ``pdg_id``, ``abs_pdg_id``, ``radius``, ``q``). A condition value is a ``[lo, hi]``
range (inclusive), a scalar or boolean (equality), or ``{in: [...]}`` / ``{not_in: [...]}``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from gnnreco.utils.config import to_plain

log = logging.getLogger(__name__)

__all__ = [
    "simulate",
    "process_event",
    "build_graph",
    "evaluate_conditions",
    "edge_features",
    "fit_module_map",
    "DEFAULT_TARGET",
    "DEFAULT_WEIGHTING",
    "NODE_SCALES",
    "EDGE_FEATURES",
    "SHAPE_EDGE_FEATURES",
    "needs_cluster_shape",
    "cluster_shape_eta",
]

#: Scale of each node feature: the stored value is ``column / scale``.
NODE_SCALES: dict[str, float] = {"r": 1000.0, "phi": math.pi, "z": 1000.0, "eta": 1.0,
                                 "cell_count": 1.0, "cell_val": 1.0, "geta": 1.0}
#: Edge features computed by :func:`edge_features`; the ``shape_*`` ones compare the edge with the
#: cluster shape of its hits and need the event's ``cells`` and detector table.
EDGE_FEATURES: tuple[str, ...] = ("dr", "dphi", "dz", "deta", "phislope", "rphislope", "shape_deta_in",
                                  "shape_deta_out")
#: The cluster-shape edge features (:func:`edge_features`).
SHAPE_EDGE_FEATURES: tuple[str, ...] = ("shape_deta_in", "shape_deta_out")


def needs_cluster_shape(edge_feature_names: Sequence[str], features: Sequence[str] = ()) -> bool:
    """Whether these features need the cluster shape (the event's ``cells`` and a detector table)."""
    return "geta" in features or any(f in SHAPE_EDGE_FEATURES for f in edge_feature_names)


def _shape_eta(cell_count: Any, geta: Any) -> np.ndarray:
    """The cluster-shape η where a hit has cells, NaN where it has none."""
    return np.where(np.asarray(cell_count) > 0, np.asarray(geta, np.float64), np.nan)


def cluster_shape_eta(hits: pd.DataFrame, cells: pd.DataFrame, detector: pd.DataFrame) -> np.ndarray:
    """The ``shape_eta`` input of :func:`edge_features_scaled_t` and :class:`~gnnreco.tasks.tracking.device.DeviceTracker`
    for every row of ``hits``: ``geta`` of :func:`gnnreco.data.trackml.cell_features`, NaN without cells."""
    from gnnreco.data.trackml import cell_features

    f = cell_features(hits, cells, detector)
    return _shape_eta(f["cell_count"], f["geta"])
#: Target particles (GNN4ITk CTD2023): pT > 1 GeV, ≥ 3 hits, primary, not e±, |η| < 4.
DEFAULT_TARGET: dict[str, Any] = {"pt": [1.0, math.inf], "nhits": [3, math.inf], "primary": True,
                                  "abs_pdg_id": {"not_in": [11]}, "eta": [-4.0, 4.0]}
#: Fakes 0.1, true non-target 0 (masked), true target 1.
DEFAULT_WEIGHTING: list[dict[str, Any]] = [
    {"weight": 0.1, "conditions": {"y": False}},
    {"weight": 0.0, "conditions": {"y": True}},
    {"weight": 1.0, "conditions": {"y": True, "target": True}},
]


# --------------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------------
_SIMULATORS: dict[str, Any] = {}


def simulate(seed: int, preset: str | None = None, **sim_kwargs: Any) -> Any:
    """Simulate one event with :class:`gnnreco.sim.tracker.TrackerSimulator` (the ``data.generator``).

    Args:
        seed: event seed.
        preset: simulator preset (``toy``, ``trackml``, ``itk``: geometry + defaults); None uses the
            simulator's own defaults.
        **sim_kwargs: simulator settings overriding the preset (``mu``, ``geometry``, ``pt_min`` ...).

    Returns:
        The simulator's event (``hits``, ``particles``, ``truth`` and ``cells`` DataFrames, and the
        geometry's ``detector`` table).
    """
    from gnnreco.sim.tracker import TrackerSimulator

    key = repr((preset, sorted(sim_kwargs.items())))
    sim = _SIMULATORS.get(key)
    if sim is None:
        kw = to_plain(dict(sim_kwargs))
        sim = TrackerSimulator.from_preset(preset, **kw) if preset else TrackerSimulator(**kw)
        _SIMULATORS.clear()
        _SIMULATORS[key] = sim
    ev = sim.simulate(int(seed))
    ev.detector = sim.detector_table()  # cached by the simulator; for the cluster-shape features
    return ev


def _part(raw: Any, name: str) -> pd.DataFrame | None:
    if isinstance(raw, Mapping):
        return raw.get(name)
    return getattr(raw, name, None)


# --------------------------------------------------------------------------------------------------
# declarative conditions
# --------------------------------------------------------------------------------------------------
def _condition(values: np.ndarray, cond: Any, name: str) -> np.ndarray:
    if isinstance(cond, Mapping):
        if set(cond) - {"in", "not_in"}:
            raise ValueError(f"condition '{name}': a mapping must use 'in' or 'not_in', got {sorted(cond)}")
        out = np.ones(values.shape, bool)
        if "in" in cond:
            out &= np.isin(values, np.asarray(list(cond["in"])))
        if "not_in" in cond:
            out &= ~np.isin(values, np.asarray(list(cond["not_in"])))
        return out
    if isinstance(cond, Sequence) and not isinstance(cond, str):
        if len(cond) != 2:
            raise ValueError(f"condition '{name}': a range must be [lo, hi], got {list(cond)}")
        lo, hi = (float(c) if c is not None else math.nan for c in cond)
        out = np.ones(values.shape, bool)
        if not math.isnan(lo):
            out &= values >= lo
        if not math.isnan(hi):
            out &= values <= hi
        return out
    if isinstance(cond, bool):
        return values.astype(bool) == cond
    return values == cond


def evaluate_conditions(props: Mapping[str, np.ndarray], conditions: Mapping[str, Any] | None,
                        n: int, where: str = "conditions") -> np.ndarray:
    """Boolean mask of the rows of ``props`` passing every condition (AND).

    Args:
        props: column name → array of length ``n``.
        conditions: column name → range ``[lo, hi]``, scalar, bool, or ``{in|not_in: [...]}``.
        n: number of rows.
        where: config location named in errors.
    """
    mask = np.ones(n, bool)
    for key, cond in (conditions or {}).items():
        if key not in props:
            raise KeyError(f"{where}: unknown property '{key}'; available: {sorted(props)}")
        mask &= _condition(np.asarray(props[key]), cond, key)
    return mask




# --------------------------------------------------------------------------------------------------
# graph construction
# --------------------------------------------------------------------------------------------------
def _orient_outward(edge_index: np.ndarray, r: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Orient every edge from smaller to larger :math:`R = r^2 + z^2` and drop duplicates/self loops."""
    if edge_index.size == 0:
        return edge_index.reshape(2, 0).astype(np.int64)
    R = r.astype(np.float64) ** 2 + z.astype(np.float64) ** 2
    a, b = edge_index
    flip = R[a] > R[b]
    src = np.where(flip, b, a)
    dst = np.where(flip, a, b)
    keep = src != dst
    pairs = np.unique(np.stack([src[keep], dst[keep]], 1), axis=0)
    return pairs.T.astype(np.int64)


def _geometric_cuts(edge_index: np.ndarray, r: np.ndarray, phi: np.ndarray, z: np.ndarray,
                    phi_slope_max: float | None, z0_max: float | None) -> np.ndarray:
    if edge_index.size == 0:
        return edge_index
    s, d = edge_index
    dr = r[d] - r[s]
    dphi = np.angle(np.exp(1j * (phi[d] - phi[s])))
    dz = z[d] - z[s]
    keep = np.ones(s.size, bool)
    safe = np.where(np.abs(dr) > 1e-6, dr, 1e-6)
    if phi_slope_max is not None:
        keep &= np.abs(dphi / safe) < phi_slope_max
    if z0_max is not None:
        z0 = z[s] - r[s] * dz / safe
        keep &= (np.abs(z0) < z0_max) | (np.abs(dr) <= 1e-6)
    return edge_index[:, keep]


def _knn_edges(coords: np.ndarray, k: int) -> np.ndarray:
    from gnnreco.graph import knn_graph

    pts = torch.from_numpy(np.ascontiguousarray(coords, dtype=np.float32))
    return knn_graph(pts, k=min(k, max(len(pts) - 1, 1))).numpy()


def build_graph(hits: pd.DataFrame, method: str = "layer_pair", **options: Any) -> np.ndarray:
    """Candidate edges of one event, oriented outward in :math:`R = r^2 + z^2`.

    Args:
        hits: hit table with ``r, phi, z, volume_id, layer_id, module_id`` (row = node).
        method: ``layer_pair`` (adjacent-layer pairs with φ-slope/z0 cuts, :mod:`gnnreco.graph`),
            ``module_map`` (``options['module_map']``: a :class:`gnnreco.graph.ModuleMap` or a path),
            ``knn`` (``k`` nearest neighbours in scaled (x, y, z) with optional ``phi_slope_max``,
            ``z0_max`` cuts) or ``radius`` (``r``, ``max_num_neighbors``).
        **options: options of the method.

    Returns:
        ``[2, E]`` int64 edge index.
    """
    n = len(hits)
    r = hits["r"].to_numpy(np.float64)
    phi = hits["phi"].to_numpy(np.float64)
    z = hits["z"].to_numpy(np.float64)
    if n < 2:
        return np.zeros((2, 0), np.int64)
    if method == "layer_pair":
        from gnnreco.tasks.tracking._graph_adapter import layer_pair_edges

        ei = layer_pair_edges(hits, **options)
    elif method == "module_map":
        from gnnreco.tasks.tracking._graph_adapter import module_map_edges

        ei = module_map_edges(hits, **options)
    elif method in ("knn", "radius"):
        opts = dict(options)
        phi_slope_max = opts.pop("phi_slope_max", None)
        z0_max = opts.pop("z0_max", None)
        scale = np.asarray(opts.pop("scale", [1.0, 1.0, 1.0]), dtype=np.float64)
        coords = np.stack([hits["x"].to_numpy(), hits["y"].to_numpy(), z], 1) / 1000.0 * scale
        if method == "knn":
            ei = _knn_edges(coords, int(opts.pop("k", 10)))
        else:
            from gnnreco.graph import radius_graph

            ei = radius_graph(torch.from_numpy(coords.astype(np.float32)), r=float(opts.pop("r", 0.05)),
                              max_num_neighbors=int(opts.pop("max_num_neighbors", 64))).numpy()
        if opts:
            raise TypeError(f"graph method '{method}': unknown options {sorted(opts)}")
        ei = _orient_outward(ei, r, z)
        ei = _geometric_cuts(ei, r, phi, z, phi_slope_max, z0_max)
        return ei
    else:
        raise ValueError(f"graph.method must be 'layer_pair', 'module_map', 'knn' or 'radius', got {method!r}")
    return _orient_outward(np.asarray(ei, dtype=np.int64).reshape(2, -1), r, z)


def edge_features(x_scaled: Mapping[str, np.ndarray], edge_index: np.ndarray,
                  names: Sequence[str] = EDGE_FEATURES[:5]) -> np.ndarray:
    """Edge features from scaled node coordinates (acorn's convention).

    .. math::
        \\Delta r = r_i - r_j,\\; \\Delta\\phi = \\mathrm{wrap}(\\phi_i - \\phi_j),\\; \\Delta z,\\;
        \\Delta\\eta,\\; \\mathrm{phislope} = \\Delta\\phi / \\Delta r,\\;
        \\mathrm{rphislope} = \\tfrac12 (r_i + r_j)\\,\\mathrm{phislope}

    with :math:`r, \\phi, z` in the scaled units (r/1000, φ/π, z/1000), :math:`\\Delta\\phi` wrapped
    into [−1, 1) and the slopes set to 0 where :math:`\\Delta r = 0`, clipped to ±10.

    The cluster-shape features compare the edge's direction with the direction that the cluster of
    each hit measures (``geta`` of :func:`gnnreco.data.trackml.cell_features`: the extent of the
    cluster over the sensor thickness gives :math:`|\\cot\\theta|` of the crossing track, as the
    ATLAS ITk and Exa.TrkX pipelines use it to reject combinatorial doublets):
    ``shape_deta_in`` / ``shape_deta_out`` :math:`= |\\eta_e| - |\\eta^{cl}_h|` at the inner / outer hit,
    with :math:`\\eta_e = \\operatorname{asinh}(\\Delta z / |\\Delta r|)` the edge's pseudorapidity
    (clipped to ±6); 0 for a hit without cluster information (``x_scaled["shape_eta"]`` NaN). The
    cluster only measures :math:`|\\cot\\theta|`, hence the absolute values.

    One implementation (:func:`edge_features_scaled_t`, float64 torch) serves the host processor and
    the on-device tracker.

    Shapes:
        edge_index ``[2, E]`` → ``[E, len(names)]`` float32.
    """
    cols = [torch.from_numpy(np.asarray(x_scaled[k], np.float64)) for k in ("r", "phi", "z", "eta")]
    shape_eta = x_scaled.get("shape_eta")
    return edge_features_scaled_t(*cols, torch.from_numpy(np.asarray(edge_index, np.int64)), names,
                                  shape_eta=None if shape_eta is None else
                                  torch.from_numpy(np.asarray(shape_eta, np.float64))).numpy()


def edge_features_scaled_t(r: torch.Tensor, phi: torch.Tensor, z: torch.Tensor, eta: torch.Tensor,
                           edge_index: torch.Tensor, names: Sequence[str] = EDGE_FEATURES[:5],
                           shape_eta: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`edge_features` on tensors of scaled coordinates (any device): float32 ``[E, len(names)]``.

    ``shape_eta`` (the cluster-shape pseudorapidity per hit, NaN where unknown) is needed only by the
    ``shape_*`` features."""
    r, phi, z, eta = (t.double() for t in (r, phi, z, eta))
    s, d = edge_index[0], edge_index[1]
    dr = r[d] - r[s]
    dphi = torch.remainder(phi[d] - phi[s] + 1.0, 2.0) - 1.0
    big = dr.abs() > 1e-9
    slope = torch.where(big, dphi / torch.where(big, dr, torch.ones_like(dr)), torch.zeros_like(dr)).clamp(-10.0, 10.0)
    dz = z[d] - z[s]
    table = {"dr": dr, "dphi": dphi, "dz": dz, "deta": eta[d] - eta[s], "phislope": slope,
             "rphislope": 0.5 * (r[d] + r[s]) * slope}
    bad = [k for k in names if k not in EDGE_FEATURES]
    if bad:
        raise ValueError(f"unknown edge feature(s) {bad}; expected some of {list(EDGE_FEATURES)}")
    if any(k in SHAPE_EDGE_FEATURES for k in names):
        if shape_eta is None:
            raise ValueError(f"edge features {[k for k in names if k in SHAPE_EDGE_FEATURES]} need the cluster-shape "
                             "eta of every hit: process the event with its 'cells' and a detector table")
        se = shape_eta.double().to(r.device)
        # |Δz/Δr| of a (near-)radial edge: the edge's |cot θ|; Δr = 0 (a disk-to-disk edge at equal r) is
        # a forward edge
        cot = torch.where(big, dz.abs() / torch.where(big, dr.abs(), torch.ones_like(dr)), torch.full_like(dr, 1e9))
        abs_eta_e = torch.asinh(cot).clamp(max=6.0)
        for name, h in (("shape_deta_in", s), ("shape_deta_out", d)):
            v = se[h]
            table[name] = torch.where(torch.isnan(v), torch.zeros_like(v), abs_eta_e - v.abs())
    if not names:
        return torch.zeros(s.numel(), 0, dtype=torch.float32, device=r.device)
    return torch.stack([table[k] for k in names], 1).float()


def fit_module_map(raws: Any, path: str | None = None, volumes: Sequence[int] | None = None,
                   target: Mapping[str, Any] | None = None, tolerance: float = 0.0,
                   primary_max_radius: float = 260.0) -> Any:
    """Learn a doublet :class:`gnnreco.graph.ModuleMap` from the target particles of training events.

    The true doublets are the modulewise truth edges (a particle's hits ordered by distance from the
    origin, consecutive stations linked; :func:`gnnreco.graph.truth_graph`) of the target particles.
    Save it with ``path`` and use it with ``graph: {method: module_map, module_map: <path>}``.
    """
    from gnnreco.data.trackml import build_hit_table
    from gnnreco.graph import ModuleMap, truth_graph
    from gnnreco.tasks.tracking._graph_adapter import global_module_id

    target = to_plain(target) if target is not None else DEFAULT_TARGET
    mm = ModuleMap(tolerance=tolerance)
    for raw in raws:
        hits, particles, truth = (_part(raw, k) for k in ("hits", "particles", "truth"))
        tab = build_hit_table(hits, truth=truth)
        if volumes is not None:
            tab = tab[tab["volume_id"].isin(list(volumes))].reset_index(drop=True)
        ptab = _particle_table(tab, particles, primary_max_radius)
        ok = evaluate_conditions(_props(ptab), target, len(ptab), "fit_module_map.target")
        is_t = tab["particle_id"].isin(ptab["particle_id"].to_numpy()[ok]).to_numpy()
        R = np.sqrt(tab["r"].to_numpy(np.float64) ** 2 + tab["z"].to_numpy(np.float64) ** 2)
        gmod = global_module_id(tab)
        tg = truth_graph(torch.from_numpy(tab["particle_id"].to_numpy(np.int64)), "modulewise",
                         order=torch.from_numpy(R), module_id=torch.from_numpy(gmod), hit_mask=torch.from_numpy(is_t))
        mm.update(tab["r"].to_numpy(np.float64), tab["phi"].to_numpy(np.float64), tab["z"].to_numpy(np.float64),
                  gmod, tg)
    if path is not None:
        mm.save(path)
    return mm


# --------------------------------------------------------------------------------------------------
# processing
# --------------------------------------------------------------------------------------------------
def _particle_table(hits: pd.DataFrame, particles: pd.DataFrame | None, primary_max_radius: float) -> pd.DataFrame:
    """One row per particle with at least one selected hit: pt, eta, nhits, primary, pdg_id, radius, q."""
    from gnnreco.data.trackml import decode_particle_id, particle_kinematics

    pid_hits = hits["particle_id"].to_numpy(np.int64)
    ids, counts = np.unique(pid_hits[pid_hits != 0], return_counts=True)
    out = pd.DataFrame({"particle_id": ids, "nhits": counts.astype(np.int64)})
    if particles is None or len(out) == 0:
        for c in ("pt", "eta", "radius"):
            out[c] = np.zeros(len(out), np.float32)
        out["q"] = 0
        out["pdg_id"] = 0
        out["primary"] = True
    else:
        pk = particle_kinematics(particles).drop_duplicates("particle_id").set_index("particle_id").reindex(ids)
        out["pt"] = pk["pt"].fillna(0).to_numpy(np.float32)
        out["eta"] = pk["eta"].fillna(0).to_numpy(np.float32)
        out["radius"] = pk["radius"].fillna(0).to_numpy(np.float32)
        out["q"] = pk["q"].fillna(0).to_numpy(np.int64) if "q" in pk else 0
        out["pdg_id"] = pk["particle_type"].fillna(0).to_numpy(np.int64) if "particle_type" in pk else 0
        gen = decode_particle_id(pd.DataFrame({"particle_id": ids}))["generation"].to_numpy()
        primary = (gen == 0) & (out["radius"].to_numpy() < primary_max_radius)
        if "primary" in pk:
            primary = pk["primary"].fillna(False).to_numpy(bool)
        out["primary"] = primary
    out["abs_pdg_id"] = np.abs(out["pdg_id"].to_numpy())
    return out


def _props(tab: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: tab[c].to_numpy() for c in ("pt", "eta", "nhits", "primary", "pdg_id", "abs_pdg_id", "radius", "q")}


def process_event(
    raw: Any,
    graph: Mapping[str, Any] | None = None,
    features: Sequence[str] = ("r", "phi", "z"),
    edge_feature_names: Sequence[str] = EDGE_FEATURES[:5],
    target: Mapping[str, Any] | None = None,
    weighting: Sequence[Mapping[str, Any]] | None = None,
    hard_cuts: Mapping[str, Any] | None = None,
    falsify_low_pt: float | None = None,
    volumes: Sequence[int] | None = None,
    max_graph_size: int | None = None,
    primary_max_radius: float = 260.0,
    min_hits: int = 1,
    detector: pd.DataFrame | str | None = None,
) -> dict[str, np.ndarray] | None:
    """Turn one raw event into a graph with features, labels, weights and truth (``data.processor``).

    Args:
        raw: event with ``hits``, ``particles``, ``truth`` (and optionally ``cells``) DataFrames
            (attributes or mapping keys).
        graph: graph construction: ``{method: layer_pair | module_map | knn | radius, **options}``
            (see :func:`build_graph`); default layer pairs with the 1 GeV cuts.
        features: node feature columns (``r, phi, z, eta, cell_count, cell_val``), scaled by
            :data:`NODE_SCALES`.
        edge_feature_names: edge features (subset of :data:`EDGE_FEATURES`).
        target: conditions of a target particle (default :data:`DEFAULT_TARGET`).
        weighting: ordered weighting rules (default :data:`DEFAULT_WEIGHTING`).
        hard_cuts: particle conditions a hit must pass to be kept (noise always fails); None keeps all.
        falsify_low_pt: relabel true edges of particles below this pT (GeV) as fake.
        volumes: keep only hits of these ``volume_id`` (e.g. ``[7, 8, 9]`` for the pixel detector).
        max_graph_size: reject (return None, with a warning) graphs with more edges than this.
        primary_max_radius: a particle is primary if its generation is 0 and it was produced
            within this transverse radius (mm).
        min_hits: events with fewer selected hits are rejected (None).
        detector: the TrackML detector table (or a ``detectors.csv`` path) for the cluster-shape
            features (node feature ``geta``, edge features :data:`SHAPE_EDGE_FEATURES`); default: the
            raw event's own ``detector`` entry.

    Returns:
        Dict of arrays (see the keys below), or None when the event is empty or too large.

    Keys: ``x [N,F]``, ``edge_index [2,E]``, ``edge_attr [E,Fe]``, ``y [E]`` (bool, pid truth after
    falsification), ``weight [E]``, ``edge_target [E]`` (true edge of a target particle),
    ``hit_id, hit_particle_id, hit_pt, hit_eta, hit_target, hit_weight [N]``, ``hit_coords [N,3]``
    (r, φ, z in mm, rad), ``hit_layer [N]`` (volume_id · 1000 + layer_id), ``particle_id, particle_pt, particle_eta, particle_nhits,
    particle_is_target, particle_primary, particle_pdg [P]``, ``num_nodes [1]``, ``num_particles [1]``.
    """
    from gnnreco.data.trackml import build_hit_table

    graph = dict(to_plain(graph) or {"method": "layer_pair"})
    target = to_plain(target) if target is not None else DEFAULT_TARGET
    weighting = to_plain(weighting) if weighting is not None else DEFAULT_WEIGHTING
    hard_cuts = to_plain(hard_cuts)
    hits, particles, truth, cells = (_part(raw, k) for k in ("hits", "particles", "truth", "cells"))
    if hits is None:
        raise ValueError("process_event: the raw event has no 'hits' table")
    if len(hits) < max(1, min_hits):
        return None
    use_shape = needs_cluster_shape(edge_feature_names, features)
    use_cells = use_shape or any(f in ("cell_count", "cell_val") for f in features)
    if use_cells and cells is None:
        raise ValueError(f"process_event: features {list(features)} / edge features {list(edge_feature_names)} need "
                         "a 'cells' table, the event has none")
    if use_shape:
        detector = detector if detector is not None else _part(raw, "detector")
        if detector is None:
            raise ValueError("process_event: the cluster-shape features (geta, shape_deta_*) need a detector table: "
                             "pass detector= (a DataFrame or detectors.csv path) or give the raw event a 'detector'")
        if isinstance(detector, (str, os.PathLike)):
            from gnnreco.data.trackml import load_detector

            detector = load_detector(detector)
    tab = build_hit_table(hits, cells=cells if use_cells else None, particles=None, truth=truth,
                          detector=detector if use_shape else None)
    if "particle_id" not in tab:
        tab["particle_id"] = np.zeros(len(tab), np.int64)
        tab["weight"] = np.zeros(len(tab), np.float32)
    if "weight" not in tab:
        tab["weight"] = np.zeros(len(tab), np.float32)
    if volumes is not None:
        tab = tab[tab["volume_id"].isin(list(volumes))].reset_index(drop=True)
    ptab = _particle_table(tab, particles, primary_max_radius)
    if hard_cuts:
        keep_p = evaluate_conditions(_props(ptab), hard_cuts, len(ptab), "data.processor.hard_cuts")
        tab = tab[tab["particle_id"].isin(ptab["particle_id"].to_numpy()[keep_p])].reset_index(drop=True)
        ptab = _particle_table(tab, particles, primary_max_radius)
    if len(tab) < max(1, min_hits):
        return None
    is_target_p = evaluate_conditions(_props(ptab), target, len(ptab), "data.processor.target")
    ptab["is_target"] = is_target_p

    # per-hit particle properties
    pid = tab["particle_id"].to_numpy(np.int64)
    pos = np.searchsorted(ptab["particle_id"].to_numpy(), pid)
    pos = np.clip(pos, 0, max(len(ptab) - 1, 0))
    has = (pid != 0) & (len(ptab) > 0)
    if len(ptab):
        has &= ptab["particle_id"].to_numpy()[pos] == pid
    def per_hit(col: str, fill: Any) -> np.ndarray:
        if len(ptab) == 0:
            return np.full(len(tab), fill)
        return np.where(has, ptab[col].to_numpy()[pos], fill)
    hit_props = {c: per_hit(c, 0) for c in ("pt", "eta", "nhits", "pdg_id", "abs_pdg_id", "radius", "q")}
    hit_props["primary"] = per_hit("primary", False).astype(bool)
    hit_target = per_hit("is_target", False).astype(bool)

    # node features
    cols = {"r": tab["r"].to_numpy(np.float64), "phi": tab["phi"].to_numpy(np.float64),
            "z": tab["z"].to_numpy(np.float64), "eta": tab["eta"].to_numpy(np.float64)}
    for c in ("cell_count", "cell_val", "geta"):
        if c in tab:
            cols[c] = tab[c].to_numpy(np.float64)
    unknown = [f for f in features if f not in cols]
    if unknown:
        raise ValueError(f"process_event: unknown node feature(s) {unknown}; available: {sorted(cols)}")
    scaled = {k: v / NODE_SCALES.get(k, 1.0) for k, v in cols.items()}
    if use_shape:  # the cluster-shape η where the hit has cells, NaN where it has none (edge features only)
        scaled["shape_eta"] = _shape_eta(tab["cell_count"], tab["geta"])
    x = np.stack([scaled[f] for f in features], 1).astype(np.float32)

    # graph, labels, weights
    g = dict(graph)
    method = g.pop("method", "layer_pair")
    edge_index = build_graph(tab, method, **g)
    if max_graph_size is not None and edge_index.shape[1] > max_graph_size:
        log.warning("process_event: graph with %d edges exceeds max_graph_size=%d; event rejected",
                    edge_index.shape[1], max_graph_size)
        return None
    s, d = edge_index
    y = (pid[s] == pid[d]) & (pid[s] != 0)
    if falsify_low_pt is not None:
        y &= hit_props["pt"][s] >= float(falsify_low_pt)
    e_props = {k: v[s] for k, v in hit_props.items()}
    e_props["y"] = y
    e_props["target"] = hit_target[s] & y
    weight = np.ones(s.size, np.float32)
    for i, rule in enumerate(weighting):
        if "weight" not in rule:
            raise KeyError(f"data.processor.weighting[{i}] needs a 'weight' key, got {sorted(rule)}")
        m = evaluate_conditions(e_props, rule.get("conditions"), s.size, f"data.processor.weighting[{i}].conditions")
        weight[m] = float(rule["weight"])

    out: dict[str, np.ndarray] = {
        "x": x,
        "edge_index": edge_index.astype(np.int64),
        "edge_attr": edge_features(scaled, edge_index, edge_feature_names),
        "y": y.astype(bool),
        "weight": weight,
        "edge_target": (y & hit_target[s]).astype(bool),
        "hit_id": tab["hit_id"].to_numpy(np.int64),
        "hit_particle_id": pid,
        "hit_pt": hit_props["pt"].astype(np.float32),
        "hit_eta": hit_props["eta"].astype(np.float32),
        "hit_target": hit_target,
        "hit_weight": tab["weight"].to_numpy(np.float32),
        "hit_coords": np.stack([cols["r"], cols["phi"], cols["z"]], 1).astype(np.float32),
        "hit_layer": (tab["volume_id"].to_numpy(np.int64) * 1000 + tab["layer_id"].to_numpy(np.int64)),
        "particle_id": ptab["particle_id"].to_numpy(np.int64),
        "particle_pt": ptab["pt"].to_numpy(np.float32),
        "particle_eta": ptab["eta"].to_numpy(np.float32),
        "particle_nhits": ptab["nhits"].to_numpy(np.int64),
        "particle_is_target": ptab["is_target"].to_numpy(bool),
        "particle_primary": ptab["primary"].to_numpy(bool),
        "particle_pdg": ptab["pdg_id"].to_numpy(np.int64),
        "num_nodes": np.array([len(tab)], np.int64),
        "num_particles": np.array([len(ptab)], np.int64),
    }
    return out
