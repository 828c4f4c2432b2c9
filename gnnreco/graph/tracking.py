r"""Graph construction for tracking: layer-pair geometric cuts, module map, metric learning.

Hit pairs :math:`(1, 2)` with hit 1 on the inner layer are described by (HEP.TrkX / Exa.TrkX)

.. math::
    \Delta\phi = \phi_2 - \phi_1 \ (\text{wrapped to } [-\pi, \pi)), \qquad
    \phi_\text{slope} = \frac{\Delta\phi}{\Delta r}, \qquad
    z_0 = z_1 - r_1 \frac{\Delta z}{\Delta r}, \qquad
    \Delta\eta = \eta_2 - \eta_1,

with :math:`\Delta r = r_2 - r_1`, :math:`\Delta z = z_2 - z_1` (units: mm, rad). Edges point
from the inner hit (source) to the outer hit (target).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._util import as_tensor, check_finite, eta_of, single_threaded, wrap_phi
from ._window import window_candidates
from .module_map import ModuleMap, pair_features
from .neighbors import knn_graph, radius_graph

__all__ = [
    "pair_features",
    "LayerPairBuilder",
    "layer_pair_graph",
    "adjacent_layer_pairs",
    "geometric_layer_pairs",
    "phi_slope_for_pt",
    "IN_PAPER_PRESETS",
    "ModuleMap",
    "metric_learning_graph",
    "LAYER_PAIR_PRESETS",
]

#: Cuts for *full* events (every hit, noise included) per truth-pT threshold in a 2 T field:
#: pT threshold (GeV) -> (phi_slope_max [rad/mm], z0_max [mm]). A track of transverse momentum
#: :math:`p_T` from the beam line bends with radius :math:`\rho = p_T / (0.3 B)` (GeV, T, m), so its
#: doublets have :math:`|\Delta\phi / \Delta r| \approx 1 / (2\rho) = 0.3 B / (2 p_T)` rad/m,
#: i.e. 3.0e-4 rad/mm at 1 GeV and 2 T; the presets allow 5/3 of that (multiple scattering,
#: impact parameter, the secant of a curved track): :func:`phi_slope_for_pt`. These are the cuts
#: of the tracking task (99 % graph efficiency for pT > 1 GeV targets at mu = 200, docs/benchmarks.md).
LAYER_PAIR_PRESETS: dict[float, tuple[float, float]] = {
    2.0: (0.00025, 200.0),
    1.0: (0.0005, 250.0),
    0.5: (0.001, 300.0),
}

#: The published table of the Interaction Network paper (GageDeZoort/interaction_network_paper,
#: ``graph_construction/configs/geometric.yaml``, header "phi_slope [1/mm], z0 [mm]"): same units
#: and same definitions (:math:`\Delta\phi/\Delta r` with r in mm) as :data:`LAYER_PAIR_PRESETS`,
#: but tuned on an *idealised* hit set: only hits of particles above the pT threshold, noise removed,
#: one hit per (particle, layer). There they give ~1e5 edges per event at 1 GeV; on a full
#: mu = 200 event (1e5 hits) the same cuts give ~4e7 edges. Use them only on truth-filtered hits.
IN_PAPER_PRESETS: dict[float, tuple[float, float]] = {
    2.0: (0.006, 275.0),
    1.0: (0.007, 350.0),
    0.5: (0.0085, 500.0),
}


def phi_slope_for_pt(pt_min: float, b_field: float = 2.0, margin: float = 5.0 / 3.0) -> float:
    r"""φ-slope cut (rad/mm) that keeps doublets of tracks above ``pt_min``.

    .. math::
        \phi_\text{slope}^\max = m \, \frac{0.3\, B}{2\, p_T^\min} \cdot 10^{-3}\ \text{rad/mm}

    Args:
        pt_min: :math:`p_T^\min` (GeV).
        b_field: :math:`B` (T).
        margin: :math:`m`, the allowance above the curvature of an ideal track from the origin.
    """
    if pt_min <= 0 or b_field <= 0:
        raise ValueError(f"'pt_min' and 'b_field' must be > 0, got {pt_min}, {b_field}")
    return margin * 0.299792458 * b_field / (2.0 * pt_min) * 1e-3




def _layer_keys(layer: Tensor, volume: Tensor | None) -> Tensor:
    layer = layer.long()
    if volume is None:
        return layer
    return volume.long() * 100000 + layer


def adjacent_layer_pairs(layer, volume=None) -> list[tuple[int, int]]:
    """Consecutive layer ids (within the same volume when ``volume`` is given).

    Layer ids are assumed to be numbered outwards (as in TrackML, where ``layer_id`` grows with
    :math:`r` in the barrel and with :math:`|z|` in the end caps). Cross-volume pairs (barrel to
    end cap) must be listed explicitly.

    Returns:
        list of ``(inner, outer)`` layer keys; with ``volume`` the key is ``volume * 100000 + layer``.
    """
    layer = as_tensor(layer, "layer")
    vol = None if volume is None else as_tensor(volume, "volume")
    keys = torch.unique(_layer_keys(layer, vol)).tolist()
    pairs = []
    for a, b in zip(keys[:-1], keys[1:]):
        if vol is None or a // 100000 == b // 100000:
            pairs.append((int(a), int(b)))
    return pairs


@single_threaded
def geometric_layer_pairs(r, z, layer, volume=None, skip: int = 0) -> list[tuple[int, int]]:
    """Adjacent layer pairs found from the layers' positions (barrel layers and end-cap disks).

    A layer is barrel-like when its hits spread more in :math:`z` than in :math:`r`. Barrel layers
    are ordered by median radius and disks by median :math:`|z|` on each side; pairs join
    consecutive layers (and layers up to ``skip`` positions further apart), and every barrel layer
    to the first ``1 + skip`` disks of each end cap (the HEP.TrkX / IN-paper pattern).

    Args:
        r, z: hit coordinates :math:`(N,)`.
        layer: layer id per hit.
        volume: optional volume id per hit (keys ``volume * 100000 + layer``).
        skip: extra layers skipped by the additional pairs.

    Returns:
        list of ``(inner, outer)`` layer keys, as accepted by :class:`LayerPairBuilder`.
    """
    r = as_tensor(r, "r", torch.float64).cpu()
    z = as_tensor(z, "z", torch.float64).cpu()
    layer = as_tensor(layer, "layer").cpu()
    vol = None if volume is None else as_tensor(volume, "volume").cpu()
    keys = _layer_keys(layer, vol)
    if keys.numel() == 0:
        return []
    uk, lid = torch.unique(keys, return_inverse=True)
    nl = uk.numel()
    cnt = torch.bincount(lid, minlength=nl)
    first = torch.cumsum(cnt, 0) - cnt
    mid = first + torch.div(cnt - 1, 2, rounding_mode="floor")  # lower median, as torch.median

    def medians(v: Tensor) -> Tensor:
        # sort by (layer, value): the median of a layer is its middle element
        o = torch.argsort(v, stable=True)
        o = o[torch.argsort(lid[o], stable=True)]
        return v[o][mid]

    def spread(v: Tensor) -> Tensor:
        lo = torch.full((nl,), math.inf, dtype=v.dtype).scatter_reduce_(0, lid, v, "amin")
        hi = torch.full((nl,), -math.inf, dtype=v.dtype).scatter_reduce_(0, lid, v, "amax")
        return hi - lo

    is_barrel = (spread(z) > spread(r)).tolist()
    med_r, med_z, med_az = medians(r).tolist(), medians(z).tolist(), medians(z.abs()).tolist()
    barrel, ends = [], {-1: [], 1: []}
    for i, k in enumerate(uk.tolist()):
        if is_barrel[i]:
            barrel.append((med_r[i], int(k)))
        else:
            ends[1 if med_z[i] > 0 else -1].append((med_az[i], int(k)))
    barrel.sort()
    pairs: list[tuple[int, int]] = []
    for seq in (barrel, sorted(ends[-1]), sorted(ends[1])):
        for i in range(len(seq)):
            for j in range(i + 1, min(i + 2 + int(skip), len(seq))):
                pairs.append((seq[i][1], seq[j][1]))
    for _, b in barrel:
        for side in (-1, 1):
            for _, e in sorted(ends[side])[: 1 + int(skip)]:
                pairs.append((b, e))
    return pairs


def _pair_key(p) -> int:
    if isinstance(p, (tuple, list)) and len(p) == 2:
        return int(p[0]) * 100000 + int(p[1])
    return int(p)


class LayerPairBuilder:
    r"""Geometric layer-pair graph builder (HEP.TrkX / Interaction Network paper).

    An edge :math:`1 \to 2` between hits on an allowed layer pair is kept when

    .. math::
        |\phi_\text{slope}| < \phi_\text{slope}^\text{max}, \quad |z_0| < z_0^\text{max}
        \ [,\ |\Delta\eta| < \Delta\eta^\text{max}]

    and, optionally, when its straight line in :math:`(r, z)` does not cross one of the given
    barrel cylinders between the two hits ("intersecting" edges removed).

    Candidates come from one sorted-:math:`\phi` window search over all layer pairs at once
    (:mod:`gnnreco.graph._window`): hits sorted by (layer bin, :math:`\phi`), each inner hit looks
    up the :math:`\phi` window implied by :math:`\phi_\text{slope}^\text{max}` in every bin of the
    outer layer allowed by :math:`z_0^\text{max}` (bins along :math:`z` in the barrel, along
    :math:`r` on end-cap disks). No Python loop over hits or layer pairs; the result is exact.

    Args:
        phi_slope_max: :math:`\phi_\text{slope}^\text{max}` in rad/mm.
        z0_max: :math:`z_0^\text{max}` in mm.
        deta_max: optional :math:`\Delta\eta^\text{max}`.
        layer_pairs: allowed ``(inner, outer)`` layer pairs; with volumes, each layer is a
            ``(volume, layer)`` tuple or the key ``volume * 100000 + layer``. ``None``: consecutive
            layers (:func:`adjacent_layer_pairs`).
        intersecting_cylinders: optional ``[(radius, half_length), ...]`` of barrel layers; an
            edge whose line crosses one of them strictly between its hits is removed.
        num_bins: :math:`\phi` sectors per layer (hits sorted along :math:`z` in the barrel, :math:`r` on
            disks) used to prune candidates (speed only; the result does not depend on it).
        pt_min: informational, the truth-pT threshold the cuts were tuned for.
    """

    def __init__(self, phi_slope_max: float = 0.007, z0_max: float = 350.0, deta_max: float | None = None,
                 layer_pairs: Sequence | None = None,
                 intersecting_cylinders: Sequence[Sequence[float]] | None = None,
                 num_bins: int = 256, pt_min: float | None = None):
        if phi_slope_max <= 0 or z0_max <= 0:
            raise ValueError(f"'phi_slope_max' and 'z0_max' must be > 0, got {phi_slope_max}, {z0_max}")
        self.phi_slope_max = float(phi_slope_max)
        self.z0_max = float(z0_max)
        self.deta_max = None if deta_max is None else float(deta_max)
        self.layer_pairs = None
        if layer_pairs is not None:
            self.layer_pairs = [(self._key(a), self._key(b)) for a, b in layer_pairs]
        self.intersecting_cylinders = [tuple(map(float, c)) for c in (intersecting_cylinders or [])]
        if int(num_bins) < 1:
            raise ValueError(f"'num_bins' must be >= 1, got {num_bins}")
        self.num_bins = int(num_bins)
        self.pt_min = pt_min

    @classmethod
    def from_pt(cls, pt_min: float, table: str = "full", **kwargs) -> LayerPairBuilder:
        """Builder with the preset cuts for ``pt_min`` in {2, 1, 0.5} GeV.

        Args:
            pt_min: truth-pT threshold (GeV).
            table: ``"full"`` (:data:`LAYER_PAIR_PRESETS`, for events with every hit) or
                ``"in_paper"`` (:data:`IN_PAPER_PRESETS`, the published cuts for truth-filtered hits).
        """
        tables = {"full": LAYER_PAIR_PRESETS, "in_paper": IN_PAPER_PRESETS}
        if table not in tables:
            raise ValueError(f"'table' must be one of {sorted(tables)}, got {table!r}")
        if float(pt_min) not in tables[table]:
            raise ValueError(f"'pt_min' must be one of {sorted(tables[table])}, got {pt_min}")
        ps, z0 = tables[table][float(pt_min)]
        return cls(phi_slope_max=ps, z0_max=z0, pt_min=pt_min, **kwargs)

    @staticmethod
    def _key(a) -> int:
        return _pair_key(a)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(phi_slope_max={self.phi_slope_max}, z0_max={self.z0_max}, "
                f"deta_max={self.deta_max})")

    @single_threaded
    def __call__(self, r, phi, z, layer, volume=None) -> Tensor:
        """Build the graph of one event.

        Args:
            r, phi, z: hit coordinates :math:`(N,)` (mm, rad).
            layer: layer id per hit :math:`(N,)`.
            volume: optional volume id per hit.

        Returns:
            ``[2, E]`` long edge index, inner hit -> outer hit.
        """
        r = as_tensor(r, "r", torch.float64)
        dev = r.device
        phi = as_tensor(phi, "phi", torch.float64, dev)
        z = as_tensor(z, "z", torch.float64, dev)
        layer = as_tensor(layer, "layer", device=dev)
        n = r.numel()
        for name, t in (("phi", phi), ("z", z), ("layer", layer)):
            if t.numel() != n:
                raise ValueError(f"'{name}' has {t.numel()} entries, expected {n} (one per hit, like 'r')")
        for name, t in (("r", r), ("phi", phi), ("z", z)):
            check_finite(t, name)
        vol = None
        if volume is not None:
            vol = as_tensor(volume, "volume", device=dev)
            if vol.numel() != n:
                raise ValueError(f"'volume' has {vol.numel()} entries, expected {n}")
        keys = _layer_keys(layer, vol)
        pairs = self.layer_pairs if self.layer_pairs is not None else adjacent_layer_pairs(layer, vol)
        if n == 0 or not pairs:
            return torch.empty(2, 0, dtype=torch.long, device=dev)
        ukeys, lid = torch.unique(keys, return_inverse=True)
        pk = torch.tensor(pairs, dtype=torch.long, device=dev).reshape(-1, 2)
        ia = torch.searchsorted(ukeys, pk[:, 0].contiguous()).clamp(max=ukeys.numel() - 1)
        ib = torch.searchsorted(ukeys, pk[:, 1].contiguous()).clamp(max=ukeys.numel() - 1)
        present = (ukeys[ia] == pk[:, 0]) & (ukeys[ib] == pk[:, 1])
        src, dst, coords = window_candidates(r, phi, z, lid, ukeys.numel(), ia[present], ib[present],
                                             self.phi_slope_max, self.z0_max, self.num_bins)
        keep = self._cuts(src, dst, *coords)
        return torch.stack([src[keep], dst[keep]])

    def _cuts(self, src: Tensor, dst: Tensor, r1: Tensor, z1: Tensor, p1: Tensor, r2: Tensor, z2: Tensor,
              p2: Tensor) -> Tensor:
        # cheapest cut first; the others only on the survivors (same arithmetic as pair_features)
        dr = r2 - r1
        dr = torch.where(dr == 0, torch.full_like(dr, 1e-12), dr)
        keep = (wrap_phi(p2 - p1) / dr).abs() < self.phi_slope_max
        idx = keep.nonzero(as_tuple=True)[0]
        r1, z1, r2, z2, dr = r1[idx], z1[idx], r2[idx], z2[idx], dr[idx]
        dz = z2 - z1
        ok = ((z1 - r1 * dz / dr).abs() < self.z0_max) & (src[idx] != dst[idx])
        if self.deta_max is not None:
            ok &= (eta_of(r2, z2) - eta_of(r1, z1)).abs() < self.deta_max
        for rc, half_len in self.intersecting_cylinders:
            between = (r1 < rc) & (r2 > rc)
            z_at = z1 + (rc - r1) * dz / dr
            ok &= ~(between & (z_at.abs() < half_len))
        keep[idx] = ok
        return keep


def layer_pair_graph(r, phi, z, layer, volume=None, *, phi_slope_max: float = 0.007, z0_max: float = 350.0,
                     deta_max: float | None = None, layer_pairs: Sequence | None = None,
                     intersecting_cylinders: Sequence[Sequence[float]] | None = None) -> Tensor:
    """Functional form of :class:`LayerPairBuilder` (same arguments); returns ``[2, E]``."""
    return LayerPairBuilder(phi_slope_max, z0_max, deta_max, layer_pairs, intersecting_cylinders)(
        r, phi, z, layer, volume)


# ----------------------------------------------------------------------------------------------
# metric learning
# ----------------------------------------------------------------------------------------------


def metric_learning_graph(embedding: Tensor, r: float | None = 0.1, k: int | None = 1000,
                          batch: Tensor | None = None, loop: bool = False,
                          flow: str = "source_to_target", method: str = "auto") -> Tensor:
    r"""Graph of hits that are close in a learned embedding (Exa.TrkX / acorn metric learning).

    With ``r`` given: all pairs :math:`\|e_i - e_j\| < r`, at most ``k`` per hit (nearest kept,
    truncation reported as in :func:`~gnnreco.graph.radius_graph`). With ``r=None``: the ``k``
    nearest neighbours.

    Args:
        embedding: :math:`(N, d)` embedded hits.
        r: radius :math:`r_\text{infer}` or ``None``.
        k: neighbour cap :math:`k_\text{infer}` (or the ``k`` of kNN).
        batch: sorted event index per hit (optional).
        loop: keep self loops.
        flow: edge direction convention, as in PyG.
        method: neighbour-search engine.

    Returns:
        ``[2, E]`` edge index.
    """
    if r is None:
        if k is None:
            raise ValueError("metric_learning_graph needs 'r' or 'k'")
        return knn_graph(embedding, k, batch, loop=loop, flow=flow, method=method)
    return radius_graph(embedding, r, batch, loop=loop, max_num_neighbors=k if k is not None else 1 << 30,
                        flow=flow, method=method)
