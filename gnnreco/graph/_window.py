r"""Sorted window search for layer-pair graphs (exact, vectorised over all layer pairs).

Every layer is split into ``num_bins`` sectors in :math:`\phi`; inside a sector its hits are sorted
along the layer's long coordinate :math:`u` (:math:`z` for a barrel-like layer, whose hits spread
more in :math:`z` than in :math:`r`; :math:`r` for a disk). All hits are sorted once by the key
:math:`S\,c + (u - u^\min_L)` with :math:`c` the global (layer, sector) cell id and :math:`S` larger
than any layer's extent in :math:`u`, so a :math:`u` interval of one cell is a contiguous slice.

For an inner hit :math:`1` and an outer layer :math:`L_2` the cut :math:`|z_0| < z_0^\max`, with
:math:`z_0 = z_1 - r_1 \Delta z / \Delta r`, is equivalent (for :math:`r_1 > 0`) to

.. math::
    z_2 = z_1 + (z_1 - z_0)\,\frac{r_2 - r_1}{r_1} \quad\text{(barrel)}, \qquad
    r_2 = r_1 + r_1\,\frac{z_2 - z_1}{z_1 - z_0} \quad\text{(disk, } |z_1| > z_0^\max\text{)},

each monotone in :math:`z_0` and in the layer's short coordinate, so the allowed :math:`u` interval
of hit 2 is spanned by the four corners :math:`z_0 = \pm z_0^\max` times the layer's
short-coordinate extremes. The φ-slope cut :math:`|\Delta\phi| < \phi_\text{slope}^\max |\Delta r|`
bounds :math:`|\Delta\phi|` by :math:`\phi_\text{slope}^\max \max|r_2 - r_1|` over that interval,
which selects a few sectors; each (query, sector) is one ``searchsorted`` slice. The candidates
are a superset of the edges (windows widened by a relative :math:`10^{-9}`); the exact cuts are
then applied to each candidate.

No Python loop over hits or layer pairs: the (hit, layer pair), (query, sector) and
(query, candidate) lists are built by range expansion.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._util import expand_ranges

__all__ = ["window_candidates"]

_TWO_PI = 2.0 * math.pi
_REL = 1e-9  # relative widening of every window (float rounding of the exact cut)


def _layer_stats(v: Tensor, lid: Tensor, nl: int) -> tuple[Tensor, Tensor]:
    lo = torch.full((nl,), math.inf, dtype=v.dtype, device=v.device).scatter_reduce_(0, lid, v, "amin")
    hi = torch.full((nl,), -math.inf, dtype=v.dtype, device=v.device).scatter_reduce_(0, lid, v, "amax")
    return lo, hi


def window_candidates(r: Tensor, phi: Tensor, z: Tensor, lid: Tensor, num_layers: int, pair_a: Tensor,
                      pair_b: Tensor, phi_slope_max: float, z0_max: float, num_bins: int = 256
                      ) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    r"""Candidate hit pairs :math:`(1 \to 2)` for the layer pairs ``(pair_a[i], pair_b[i])``.

    Args:
        r, phi, z: float64 hit coordinates :math:`(N,)`.
        lid: layer index of each hit, :math:`0 \le` ``lid`` :math:`<` ``num_layers``.
        num_layers: number of layers.
        pair_a, pair_b: inner and outer layer index of each allowed pair, :math:`(P,)`.
        phi_slope_max, z0_max: the cuts that bound the windows.
        num_bins: :math:`\phi` sectors per layer (fewer for layers with few hits; speed only).

    Returns:
        ``(src, dst, (r1, z1, phi1, r2, z2, phi2))``: every hit pair that can pass
        :math:`|\phi_\text{slope}| < \phi_\text{slope}^\max` and :math:`|z_0| < z_0^\max` (and some
        that do not), with the coordinates of both hits (gathered once, in cache-friendly order).
    """
    dev = r.device
    empty = torch.empty(0, dtype=torch.long, device=dev)
    if r.numel() == 0 or pair_a.numel() == 0:
        e = r[empty]
        return empty, empty, (e, e, e, e, e, e)
    nl = int(num_layers)
    rlo, rhi = _layer_stats(r, lid, nl)
    zlo, zhi = _layer_stats(z, lid, nl)
    count = torch.bincount(lid, minlength=nl)
    barrel = (zhi - zlo) > (rhi - rlo)
    ulo = torch.where(barrel, zlo, rlo)
    uhi = torch.where(barrel, zhi, rhi)
    span = float((uhi - ulo).max()) if nl else 0.0
    S = float(2.0 ** math.ceil(math.log2(span + 2.0)))  # > every layer's extent in u
    nphi = torch.clamp(torch.div(count, 4, rounding_mode="floor"), 1, max(1, int(num_bins)))
    bw = _TWO_PI / nphi.double()
    cell_off = torch.cumsum(nphi, 0) - nphi
    u = torch.where(barrel[lid], z, r)
    ph = torch.remainder(phi, _TWO_PI)
    sec = torch.minimum(torch.floor(ph / bw[lid]).long(), nphi[lid] - 1)
    cell = cell_off[lid] + sec
    key = cell.double() * S + (u - ulo[lid])
    skey, order = torch.sort(key)

    # (inner hit, layer pair) queries: pairs grouped by inner layer
    porder = torch.argsort(pair_a, stable=True)
    pa, pb = pair_a[porder], pair_b[porder]
    npairs_of = torch.bincount(pa, minlength=nl)
    pfirst = torch.cumsum(npairs_of, 0) - npairs_of
    qh, qp = expand_ranges(pfirst[lid], npairs_of[lid])
    h1 = qh
    b = pb[qp]
    r1, z1, p1 = r[h1], z[h1], ph[h1]

    # allowed interval of the outer layer's long coordinate (corners of z0 = +-z0_max x short coord.)
    zm = float(z0_max)
    is_bar = barrel[b]
    rlb, rhb, zlb, zhb = rlo[b], rhi[b], zlo[b], zhi[b]
    safe_r1 = torch.where(r1 > 0, r1, torch.ones_like(r1))
    lo = torch.full_like(r1, math.inf)
    hi = torch.full_like(r1, -math.inf)
    for s in (-zm, zm):
        den = z1 - s
        den = torch.where(den == 0, torch.ones_like(den), den)
        for rr, zz in ((rlb, zlb), (rhb, zhb)):
            v = torch.where(is_bar, z1 + (z1 - s) * (rr - r1) / safe_r1, r1 + r1 * (zz - z1) / den)
            lo = torch.minimum(lo, v)
            hi = torch.maximum(hi, v)
    pad = _REL * (lo.abs() + hi.abs()) + 1e-9
    ul, uh = ulo[b], uhi[b]
    lo = torch.maximum(lo - pad, ul)
    hi = torch.minimum(hi + pad, uh)
    # disk with |z1| <= z0_max: the line can be vertical, the allowed r2 set is the union of
    # (-inf, U] and [W, inf) (one per side of z0 = z1); its hull within the layer is the interval
    inner = ~is_bar & (z1.abs() <= zm * (1 + 1e-12))
    if bool(inner.any()):
        d_lo, d_hi = zlb - z1, zhb - z1
        t_a = 1.0 / (z1 + zm).clamp(min=1e-300)  # z0 in [-zm, z1): 1/(z1 - z0) >= t_a > 0
        t_b = 1.0 / (z1 - zm).clamp(max=-1e-300)  # z0 in (z1, zm]: 1/(z1 - z0) <= t_b < 0
        pos = d_lo > 0
        d_near = torch.where(pos, d_lo, d_hi)
        w_low = r1 + r1 * d_near * torch.where(pos, t_a, t_b)  # start of [W, inf)
        u_up = r1 + r1 * d_near * torch.where(pos, t_b, t_a)  # end of (-inf, U]
        w_low = w_low - (_REL * w_low.abs() + 1e-9)
        u_up = u_up + (_REL * u_up.abs() + 1e-9)
        has_w = w_low <= rhb
        has_u = u_up >= rlb
        straddle = (d_lo <= 0) & (d_hi >= 0)
        both = (has_w & has_u) | straddle | (r1 <= 0)
        i_lo = torch.where(both | has_u, rlb, torch.maximum(w_low, rlb))
        i_hi = torch.where(both | has_w, rhb, torch.minimum(u_up, rhb))
        none = ~(both | has_w | has_u)
        i_lo = torch.where(none, torch.full_like(i_lo, math.inf), i_lo)
        lo = torch.where(inner, i_lo, lo)
        hi = torch.where(inner, i_hi, hi)
    # barrel seen from r1 = 0: any z
    lo = torch.where(is_bar & (r1 <= 0), ul, lo)
    hi = torch.where(is_bar & (r1 <= 0), uh, hi)
    ok = (hi >= lo) & (count[b] > 0)
    # largest |dr| over the interval: the layer's r extremes (barrel) or the r interval (disk)
    r_a = torch.where(is_bar, rlb, lo)
    r_b = torch.where(is_bar, rhb, hi)
    drmax = torch.maximum((r_a - r1).abs(), (r_b - r1).abs())
    half = float(phi_slope_max) * drmax * (1 + _REL) + 1e-12
    bwb = bw[b]
    npb = nphi[b]
    s_lo = torch.floor((p1 - half) / bwb).long()
    s_hi = torch.floor((p1 + half) / bwb).long()
    nsec = torch.minimum(s_hi - s_lo + 1, npb)
    nsec = torch.where(ok & (half < math.pi), nsec, torch.where(ok, npb, torch.zeros_like(npb)))
    s_lo = torch.where(half < math.pi, s_lo, torch.zeros_like(s_lo))
    q2, k = expand_ranges(torch.zeros_like(nsec), nsec)
    bq = b[q2]
    cq = cell_off[bq] + torch.remainder(s_lo[q2] + k, npb[q2])
    base = cq.double() * S - ulo[bq]
    st = torch.searchsorted(skey, base + lo[q2])
    en = torch.searchsorted(skey, base + hi[q2], right=True)
    which, idx = expand_ranges(st, en - st)
    own = q2[which]  # query of each candidate (ascending); idx: position in the sorted hits (runs)
    ph1 = phi[h1]
    coords = (r1[own], z1[own], ph1[own], r[order][idx], z[order][idx], phi[order][idx])
    return h1[own], order[idx], coords
