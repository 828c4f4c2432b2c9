r"""Data-driven module map (L2IT / GNN4ITk): doublet and triplet cut windows learned from truth.

Features of a hit pair :math:`(1 \to 2)` (inner to outer, mm and rad):

.. math::
    z_0 = z_1 - r_1 \frac{\Delta z}{\Delta r}, \quad \Delta\phi = \phi_2 - \phi_1, \quad
    \phi_\text{slope} = \frac{\Delta\phi}{\Delta r}, \quad \Delta\eta = \eta_2 - \eta_1,

and of a triplet :math:`(1 \to 2 \to 3)` the doublet features of :math:`(1, 2)` and :math:`(2, 3)`
plus the changes of direction

.. math::
    \delta_{dz/dr} = \frac{\Delta z_{23}}{\Delta r_{23}} - \frac{\Delta z_{12}}{\Delta r_{12}}, \qquad
    \delta_{dy/dx} = \frac{\Delta y_{23}}{\Delta x_{23}} - \frac{\Delta y_{12}}{\Delta x_{12}}.

**Learning.** Every true doublet of the training events records its module pair
:math:`(m_1, m_2)` and the running min/max of its features; every true triplet (two true doublets
sharing the middle hit) records :math:`(m_1, m_2, m_3)` and the min/max of its 10 features. Keys
are 64-bit integers (:math:`m_1 M + m_2`, and dense module indices for triplets) merged across
events with ``unique`` + ``scatter_reduce``.

**Applying.** Doublet stage: every hit pair on a known module pair is enumerated by range
expansion over hits sorted by module, and kept when its features lie in the pair's windows
(checked one feature at a time, cheapest first, on the survivors only). Triplet stage
(``triplets=True``): surviving doublets :math:`(a \to b)` and :math:`(b \to c)` are joined on the
shared hit :math:`b` (edges sorted by source; range expansion over each middle hit's outgoing
edges), the triplet key is looked up with ``searchsorted``, and an edge is kept when it belongs to
at least one triplet inside its windows. Windows are widened by ``tolerance`` times their width
plus ``abs_tolerance``. No Python loop over hits, edges or modules.

On CPU both stages run in a small C++ kernel (``native/module_map.cpp``, compiled on first use by
:mod:`gnnreco.utils.native`, threads = ``torch.get_num_threads()``), which gives the same edges in the
same order as the torch code and is used whenever it is available; ``ModuleMap.native = False`` or
``GNNRECO_NO_NATIVE=1`` selects the torch code (also the path on GPU or without a compiler).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..utils.native import NativeLibrary
from ._util import _one_thread, as_tensor, eta_of, expand_ranges, single_threaded, wrap_phi


def _bind_triplets(so) -> None:
    import ctypes

    vp, i64 = ctypes.c_void_p, ctypes.c_int64
    so.gnr_mm_triplets.restype = ctypes.c_int
    so.gnr_mm_triplets.argtypes = [i64, vp, vp, vp, vp, vp, i64, vp, vp, vp, i64, vp, i64, vp, i64, vp, i64,
                                   vp, vp, vp, vp, vp, ctypes.c_int]
    pp = ctypes.POINTER(ctypes.c_void_p)
    so.gnr_mm_doublets.restype = i64
    so.gnr_mm_doublets.argtypes = [vp, vp, vp, vp, vp, i64, vp, vp, vp, vp, vp, vp, pp, pp, pp, ctypes.c_int]
    so.gnr_mm_free.restype = None
    so.gnr_mm_free.argtypes = [vp]


#: The triplet join in C++ (gnnreco/graph/native/module_map.cpp), compiled on first use; None → torch.
_NATIVE = NativeLibrary(Path(__file__).with_name("native") / "module_map.cpp", "module-map", "gnr_mm_version", 3,
                        _bind_triplets, "native module-map triplet join")

__all__ = ["ModuleMap", "FEATURES", "TRIPLET_FEATURES", "pair_features"]

FEATURES = ("z0", "dphi", "phi_slope", "deta")
TRIPLET_FEATURES = tuple(f"{f}_12" for f in FEATURES) + tuple(f"{f}_23" for f in FEATURES) + (
    "diff_dzdr", "diff_dydx")


def pair_features(r: Tensor, phi: Tensor, z: Tensor, src: Tensor, dst: Tensor) -> dict[str, Tensor]:
    r"""Doublet features :math:`z_0`, :math:`\Delta\phi`, :math:`\phi_\text{slope}`, :math:`\Delta\eta`.

    Args:
        r, phi, z: hit cylindrical coordinates, :math:`(N,)`.
        src, dst: inner and outer hit of each pair, :math:`(E,)`.

    Returns:
        dict of :math:`(E,)` tensors keyed ``z0``, ``dphi``, ``phi_slope``, ``deta``, ``dr``, ``dz``.
    """
    r1, r2 = r[src], r[dst]
    z1, z2 = z[src], z[dst]
    dr = r2 - r1
    dz = z2 - z1
    dphi = wrap_phi(phi[dst] - phi[src])
    safe = torch.where(dr == 0, torch.full_like(dr, 1e-12), dr)
    phi_slope = dphi / safe
    z0 = z1 - r1 * dz / safe
    deta = eta_of(r2, z2) - eta_of(r1, z1)
    return {"z0": z0, "dphi": dphi, "phi_slope": phi_slope, "deta": deta, "dr": dr, "dz": dz}


def _directions(r: Tensor, phi: Tensor, z: Tensor, src: Tensor, dst: Tensor) -> Tensor:
    r""":math:`(dz/dr, dy/dx)` of each segment, :math:`(E, 2)` (0-denominators replaced by 1e-12)."""
    x, y = r * torch.cos(phi), r * torch.sin(phi)
    dr = r[dst] - r[src]
    dx = x[dst] - x[src]
    dr = torch.where(dr == 0, torch.full_like(dr, 1e-12), dr)
    dx = torch.where(dx == 0, torch.full_like(dx, 1e-12), dx)
    return torch.stack([(z[dst] - z[src]) / dr, (y[dst] - y[src]) / dx], 1)


def _merge(keys: Tensor, lo: Tensor, hi: Tensor, cnt: Tensor, new_keys: Tensor, vals: Tensor):
    """Union of (key -> min, max, count) tables."""
    allk = torch.cat([keys, new_keys])
    uk, inv = torch.unique(allk, return_inverse=True)
    f = vals.size(1)
    idx = inv.unsqueeze(1).expand(-1, f)
    nlo = torch.full((uk.numel(), f), math.inf, dtype=torch.float64)
    nhi = torch.full((uk.numel(), f), -math.inf, dtype=torch.float64)
    nlo.scatter_reduce_(0, idx, torch.cat([lo, vals]), "amin")
    nhi.scatter_reduce_(0, idx, torch.cat([hi, vals]), "amax")
    ncnt = torch.zeros(uk.numel(), dtype=torch.long).index_add_(
        0, inv, torch.cat([cnt, torch.ones(new_keys.numel(), dtype=torch.long)]))
    return uk, nlo, nhi, ncnt


def _triplets_of(src: Tensor, dst: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """All pairs of edges ``(e1, e2)`` with ``dst[e1] == src[e2]`` (joined on the middle hit)."""
    order = torch.argsort(src, stable=True)
    cnt = torch.bincount(src, minlength=num_nodes)
    first = torch.cumsum(cnt, 0) - cnt
    mid = dst
    e1, pos = expand_ranges(first[mid], cnt[mid])
    return e1, order[pos]


class ModuleMap:
    r"""Data-driven doublet + triplet module map (L2IT / GNN4ITk; see the module docstring).

    Args:
        tolerance: relative widening of each learned window (0 = the exact min/max).
        abs_tolerance: absolute widening per feature, ``{name: value}`` (doublet feature names
            also widen the triplet's ``_12``/``_23`` windows).
    """

    #: run the triplet join in the native C++ kernel when it is available (CPU); False: torch only
    native: bool = True

    def __init__(self, tolerance: float = 0.0, abs_tolerance: dict[str, float] | None = None):
        self.tolerance = float(tolerance)
        self.abs_tolerance = dict(abs_tolerance or {})
        self.keys = torch.empty(0, dtype=torch.long)  # sorted m1 * M + m2
        self.lo = torch.empty(0, len(FEATURES), dtype=torch.float64)
        self.hi = torch.empty(0, len(FEATURES), dtype=torch.float64)
        self.counts = torch.empty(0, dtype=torch.long)
        self.num_modules = 0
        # triplets: dense module index d = searchsorted(modules, m); key (d1 * K + d2) * K + d3
        self.modules = torch.empty(0, dtype=torch.long)
        self.tkeys = torch.empty(0, dtype=torch.long)
        self.tlo = torch.empty(0, len(TRIPLET_FEATURES), dtype=torch.float64)
        self.thi = torch.empty(0, len(TRIPLET_FEATURES), dtype=torch.float64)
        self.tcounts = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.keys.numel())

    @property
    def num_triplets(self) -> int:
        """Number of module triplets in the map."""
        return int(self.tkeys.numel())

    def __repr__(self) -> str:
        return (f"ModuleMap(pairs={len(self)}, triplets={self.num_triplets}, num_modules={self.num_modules}, "
                f"tolerance={self.tolerance})")

    # -- learning ------------------------------------------------------------------------------
    @single_threaded
    def update(self, r, phi, z, module_id, truth_edge_index, triplets: bool = True) -> ModuleMap:
        """Add one training event's true doublets (``truth_edge_index``: inner -> outer) and triplets."""
        r = as_tensor(r, "r", torch.float64).cpu()
        phi = as_tensor(phi, "phi", torch.float64).cpu()
        z = as_tensor(z, "z", torch.float64).cpu()
        mod = as_tensor(module_id, "module_id", torch.long).cpu()
        ei = as_tensor(truth_edge_index, "truth_edge_index", torch.long).cpu()
        if ei.dim() != 2 or ei.size(0) != 2:
            raise ValueError(f"'truth_edge_index' must have shape [2, E], got {tuple(ei.shape)}")
        if mod.numel() != r.numel():
            raise ValueError(f"'module_id' has {mod.numel()} entries, expected {r.numel()}")
        if mod.numel() and int(mod.min()) < 0:
            raise ValueError("'module_id' must be non-negative")
        src, dst = ei
        f = pair_features(r, phi, z, src, dst)
        vals = torch.stack([f[n] for n in FEATURES], 1)
        M = max(self.num_modules, int(mod.max()) + 1 if mod.numel() else 0)
        if M > 3_037_000_499:
            raise ValueError(f"'module_id' values up to {M - 1} overflow 64-bit pair keys; renumber the modules")
        if M != self.num_modules and len(self):
            m1, m2 = self.keys // self.num_modules, self.keys % self.num_modules
            self.keys = m1 * M + m2
        self.num_modules = M
        self.keys, self.lo, self.hi, self.counts = _merge(self.keys, self.lo, self.hi, self.counts,
                                                          mod[src] * M + mod[dst], vals)
        if triplets and src.numel():
            self._update_triplets(r, phi, z, mod, src, dst, vals)
        self._col_cache = self._ht_cache = None  # the caches of _columns / _heads_tails are stale
        return self

    def _update_triplets(self, r, phi, z, mod, src, dst, vals) -> None:
        e1, e2 = _triplets_of(src, dst, r.numel())
        if e1.numel() == 0:
            return
        dirs = _directions(r, phi, z, src, dst)
        tv = torch.cat([vals[e1], vals[e2], dirs[e2] - dirs[e1]], 1)
        ma, mb, mc = mod[src[e1]], mod[dst[e1]], mod[dst[e2]]
        old_mods = self.modules
        mods = torch.unique(torch.cat([old_mods, ma, mb, mc]))
        K = mods.numel()
        if K ** 3 >= 2 ** 63:
            raise ValueError(f"{K} modules in triplets overflow 64-bit triplet keys")
        if self.num_triplets and K != old_mods.numel():
            k0 = old_mods.numel()
            d1, rest = self.tkeys // (k0 * k0), self.tkeys % (k0 * k0)
            d2, d3 = rest // k0, rest % k0
            remap = torch.searchsorted(mods, old_mods)
            self.tkeys = (remap[d1] * K + remap[d2]) * K + remap[d3]
        self.modules = mods
        key = (torch.searchsorted(mods, ma) * K + torch.searchsorted(mods, mb)) * K + torch.searchsorted(mods, mc)
        self.tkeys, self.tlo, self.thi, self.tcounts = _merge(self.tkeys, self.tlo, self.thi, self.tcounts, key, tv)

    @classmethod
    def fit(cls, events, tolerance: float = 0.0, abs_tolerance: dict[str, float] | None = None,
            triplets: bool = True) -> ModuleMap:
        """Learn a map from an iterable of ``(r, phi, z, module_id, truth_edge_index)`` tuples."""
        mm = cls(tolerance, abs_tolerance)
        for ev in events:
            mm.update(*ev, triplets=triplets)
        return mm

    # -- applying ------------------------------------------------------------------------------
    def _widen(self, lo: Tensor, hi: Tensor, names) -> tuple[Tensor, Tensor]:
        width = (hi - lo).clamp(min=0)
        extra = torch.tensor([self.abs_tolerance.get(n, self.abs_tolerance.get(n[:-3], 0.0)) for n in names],
                             dtype=torch.float64)
        return lo - self.tolerance * width - extra, hi + self.tolerance * width + extra

    def _windows(self) -> tuple[Tensor, Tensor]:
        return self._widen(self.lo, self.hi, FEATURES)

    def _columns(self, dev: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Widened windows, column-major (``[F, pairs]``, ``[10, triplets]``), cached per map state.

        Widening the ~10^6 x 10 triplet table took a third of an apply; one contiguous row per
        feature makes each window lookup a 1-D ``index_select`` (~10x faster than ``lo[j, c]``).
        """
        state = (self.tolerance, tuple(sorted(self.abs_tolerance.items())), id(self.lo), id(self.hi),
                 id(self.tlo), id(self.thi), self.lo.shape, self.tlo.shape, str(dev))
        cache = getattr(self, "_col_cache", None)
        if cache is None or cache[0] != state:
            lo, hi = self._widen(self.lo, self.hi, FEATURES)
            tlo, thi = self._widen(self.tlo, self.thi, TRIPLET_FEATURES)
            cols = tuple(t.t().contiguous().to(dev) for t in (lo, hi, tlo, thi))
            cache = (state, cols)
            self._col_cache = cache
        return cache[1]

    def _heads_tails(self, dev: torch.device) -> tuple[Tensor, Tensor]:
        """Sorted module-pair keys that start (``d1 K + d2``) and end (``d2 K + d3``) a map triplet."""
        cache = getattr(self, "_ht_cache", None)
        state = (id(self.tkeys), self.tkeys.shape, self.modules.numel(), str(dev))
        if cache is None or cache[0] != state:
            K = self.modules.numel()
            tk = self.tkeys.to(dev)
            cache = (state, (torch.unique(torch.div(tk, K, rounding_mode="floor")),
                             torch.unique(torch.remainder(tk, K * K))))
            self._ht_cache = cache
        return cache[1]

    def __call__(self, r, phi, z, module_id, triplets: bool | None = None) -> Tensor:
        """Edges of one event.

        Args:
            r, phi, z: hit coordinates :math:`(N,)`.
            module_id: module of each hit (the ids used when learning).
            triplets: apply the triplet stage; ``None``: when the map has triplets.

        Returns:
            ``[2, E]`` edge index (inner -> outer): hit pairs on known module pairs inside the doublet
            windows and, with ``triplets``, part of at least one triplet inside its windows.
        """
        r = as_tensor(r, "r", torch.float64)
        dev = r.device
        phi = as_tensor(phi, "phi", torch.float64, dev)
        z = as_tensor(z, "z", torch.float64, dev)
        mod = as_tensor(module_id, "module_id", torch.long, dev)
        if mod.numel() != r.numel():
            raise ValueError(f"'module_id' has {mod.numel()} entries, expected {r.numel()}")
        if triplets is None:
            triplets = self.num_triplets > 0
        if triplets and self.num_triplets == 0:
            raise ValueError("triplets=True but the module map has no triplets (fit with triplets=True)")
        if len(self) == 0 or r.numel() == 0:
            return torch.empty(2, 0, dtype=torch.long, device=dev)
        # memory-bound chains of ops run single-threaded (see gnnreco.graph._util.single_threaded);
        # the triplet join is split into parts on torch.get_num_threads() worker threads instead
        workers = torch.get_num_threads() if dev.type == "cpu" else 1
        with _one_thread():
            src, dst, feats = self._doublets(r, phi, z, mod, workers)
            if triplets and src.numel():
                keep = self._triplet_mask(r, phi, z, mod, src, dst, feats, workers)
                src, dst = src[keep], dst[keep]
        return torch.stack([src, dst])

    def _doublets(self, r: Tensor, phi: Tensor, z: Tensor, mod: Tensor,
                  workers: int = 1) -> tuple[Tensor, Tensor, Tensor]:
        """Hit pairs on known module pairs inside the doublet windows: ``src, dst, feats [4, E]``."""
        dev = r.device
        M = self.num_modules
        known = (mod >= 0) & (mod < M)
        order = torch.argsort(torch.where(known, mod, torch.full_like(mod, M)), stable=True)
        smod = mod.index_select(0, order)
        umod, cnt = torch.unique_consecutive(smod, return_counts=True)
        first = torch.cumsum(cnt, 0) - cnt
        keys = self.keys.to(dev)
        m1, m2 = keys // M, keys % M

        # dense per-module tables (first hit, hit count): one gather per map key instead of a search
        kn = umod < M
        first_m = torch.zeros(M, dtype=torch.long, device=dev)
        cnt_m = torch.zeros(M, dtype=torch.long, device=dev)
        first_m[umod[kn]] = first[kn]
        cnt_m[umod[kn]] = cnt[kn]

        so = _NATIVE.get() if (dev.type == "cpu" and self.native) else None
        if so is not None:
            return self._doublets_native(so, order, first_m, cnt_m, m1, m2, r, phi, z, workers)

        def lookup(m: Tensor) -> tuple[Tensor, Tensor]:
            return first_m.index_select(0, m), cnt_m.index_select(0, m)

        f1, c1 = lookup(m1)
        f2, c2 = lookup(m2)
        npairs = c1 * c2
        pidx = (npairs > 0).nonzero(as_tuple=True)[0]
        owner, t = expand_ranges(torch.zeros_like(pidx), npairs.index_select(0, pidx))
        p = pidx.index_select(0, owner)
        c2p = c2.index_select(0, p)
        i1 = torch.div(t, c2p, rounding_mode="floor")
        src = order.index_select(0, f1.index_select(0, p) + i1)
        dst = order.index_select(0, f2.index_select(0, p) + (t - i1 * c2p))
        lo, hi, _, _ = self._columns(dev)

        def sel(*ts: Tensor, mask: Tensor) -> list[Tensor]:
            i = mask.nonzero(as_tuple=True)[0]
            return [a.index_select(0, i) for a in ts]

        def inside(v: Tensor, c: int, p: Tensor) -> Tensor:
            return (v >= lo[c].index_select(0, p)) & (v <= hi[c].index_select(0, p))

        # features one at a time, each on the survivors of the previous cuts (cheapest first)
        dphi = wrap_phi(phi.index_select(0, dst) - phi.index_select(0, src))
        src, dst, p, dphi = sel(src, dst, p, dphi, mask=inside(dphi, 1, p) & (src != dst))
        r1, r2 = r.index_select(0, src), r.index_select(0, dst)
        dr = r2 - r1
        dr = torch.where(dr == 0, torch.full_like(dr, 1e-12), dr)
        slope = dphi / dr
        src, dst, p, r1, r2, dr, dphi, slope = sel(src, dst, p, r1, r2, dr, dphi, slope,
                                                   mask=inside(slope, 2, p))
        z1, z2 = z.index_select(0, src), z.index_select(0, dst)
        z0 = z1 - r1 * (z2 - z1) / dr
        src, dst, p, r1, r2, z1, z2, dphi, slope, z0 = sel(src, dst, p, r1, r2, z1, z2, dphi, slope, z0,
                                                           mask=inside(z0, 0, p))
        deta = eta_of(r2, z2) - eta_of(r1, z1)
        ok = inside(deta, 3, p)
        src, dst, z0, dphi, slope, deta = sel(src, dst, z0, dphi, slope, deta, mask=ok)
        return src, dst, torch.stack([z0, dphi, slope, deta])

    def _doublets_native(self, so, order, first_m, cnt_m, m1, m2, r, phi, z,
                         workers: int) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`_doublets` in C++ (``native/module_map.cpp``): same pairs, windows, order and features."""
        import ctypes

        lo, hi, _, _ = self._columns(r.device)
        f64 = torch.float64
        r64, p64, z64 = (t.to(f64).contiguous() for t in (r, phi, z))
        eta = eta_of(r64, z64).contiguous()
        ints = [t.to(torch.long).contiguous() for t in (order, first_m, cnt_m, m1, m2)]
        lo, hi = lo.to(f64).contiguous(), hi.to(f64).contiguous()
        ps, pd, pf = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        n = so.gnr_mm_doublets(*(t.data_ptr() for t in ints), ints[3].numel(), lo.data_ptr(), hi.data_ptr(),
                               r64.data_ptr(), p64.data_ptr(), z64.data_ptr(), eta.data_ptr(), ctypes.byref(ps),
                               ctypes.byref(pd), ctypes.byref(pf), int(max(1, workers)))
        if n < 0:
            raise MemoryError("native module-map doublets: out of memory")
        try:
            def take(ptr, ctype, count, dtype):
                if count == 0:
                    return torch.empty(0, dtype=dtype)
                buf = (ctype * count).from_address(ptr.value)
                return torch.frombuffer(buf, dtype=dtype).clone()

            src = take(ps, ctypes.c_int64, n, torch.long)
            dst = take(pd, ctypes.c_int64, n, torch.long)
            feats = take(pf, ctypes.c_double, 4 * n, f64).view(4, n)
        finally:
            for p in (ps, pd, pf):
                so.gnr_mm_free(p)
        return src, dst, feats

    def _triplet_mask(self, r, phi, z, mod, src, dst, feats, workers: int = 1) -> Tensor:
        """Edges (of the doublet stage) in at least one triplet inside its windows.

        ``feats``: the doublet features ``[4, E]`` (z0, dphi, phi_slope, deta) of the edges.
        """
        dev = r.device
        keep = torch.zeros(src.numel(), dtype=torch.bool, device=dev)
        mods = self.modules.to(dev)
        K = mods.numel()
        # dense module index per hit, then per edge: key12 = d1 * K + d2 (unknown modules: -1)
        dh = torch.searchsorted(mods, mod).clamp(max=K - 1)
        dh = torch.where(mods.index_select(0, dh) == mod, dh, -1)
        so = _NATIVE.get() if (dev.type == "cpu" and self.native) else None
        if so is not None:
            return self._triplet_mask_native(so, r, phi, z, dh, src, dst, feats, K, workers)
        d1, d2 = dh.index_select(0, src), dh.index_select(0, dst)
        good = (d1 >= 0) & (d2 >= 0)
        k12 = torch.where(good, d1 * K + d2, -1)
        # join only edges whose module pair starts (ends) some triplet of the map
        tk = self.tkeys.to(dev)
        heads, tails = self._heads_tails(dev)

        def member(sorted_keys: Tensor, k: Tensor) -> Tensor:
            i = torch.searchsorted(sorted_keys, k).clamp(max=sorted_keys.numel() - 1)
            return sorted_keys.index_select(0, i) == k

        first = (good & member(heads, k12)).nonzero(as_tuple=True)[0]
        second = (good & member(tails, k12)).nonzero(as_tuple=True)[0]
        s_src = src.index_select(0, second)
        order = torch.argsort(s_src, stable=True)
        second = second.index_select(0, order)
        cnt = torch.bincount(s_src, minlength=r.numel())
        start = torch.cumsum(cnt, 0) - cnt
        mid = dst.index_select(0, first)
        joins = cnt.index_select(0, mid)
        total = int(joins.sum())
        if total == 0:
            return keep
        _, _, lo, hi = self._columns(dev)
        d_all = _directions(r, phi, z, src, dst).t().contiguous()  # [2, E]

        # every triplet window lies inside the union of all windows: a cheap pre-cut of the joined
        # pairs on the change of direction before the (costlier) triplet-key lookup
        glo = (float(lo[8].min()), float(lo[9].min()))
        ghi = (float(hi[8].max()), float(hi[9].max()))

        def part(bounds: tuple[int, int]) -> tuple[Tensor, Tensor]:
            f = first[bounds[0]:bounds[1]]
            m = mid[bounds[0]:bounds[1]]
            o, pos = expand_ranges(start.index_select(0, m), cnt.index_select(0, m))
            e1, e2 = f.index_select(0, o), second.index_select(0, pos)
            for c in (0, 1):
                v = d_all[c].index_select(0, e2) - d_all[c].index_select(0, e1)
                i = ((v >= glo[c]) & (v <= ghi[c])).nonzero(as_tuple=True)[0]
                e1, e2 = e1.index_select(0, i), e2.index_select(0, i)
            key = k12.index_select(0, e1) * K + d2.index_select(0, e2)
            j = torch.searchsorted(tk, key).clamp(max=tk.numel() - 1)
            i = (tk.index_select(0, j) == key).nonzero(as_tuple=True)[0]
            e1, e2, j = e1.index_select(0, i), e2.index_select(0, i), j.index_select(0, i)
            # the ten windows one at a time on the survivors; azimuthal features first (most selective)
            for c in (1, 5, 2, 6, 0, 4, 3, 7, 8, 9):
                if c < 8:
                    v = feats[c % 4].index_select(0, e1 if c < 4 else e2)
                else:
                    v = d_all[c - 8].index_select(0, e2) - d_all[c - 8].index_select(0, e1)
                ok = (v >= lo[c].index_select(0, j)) & (v <= hi[c].index_select(0, j))
                i = ok.nonzero(as_tuple=True)[0]
                e1, e2, j = e1.index_select(0, i), e2.index_select(0, i), j.index_select(0, i)
                if e1.numel() == 0:
                    break
            return e1, e2

        # the join in parts of about equal size (bounded memory), on `workers` threads
        nparts = max(1, min(first.numel(), max(4 * workers if workers > 1 else 1, -(-total // (1 << 21)))))
        cum = torch.cumsum(joins, 0)
        cuts = torch.searchsorted(cum, torch.arange(1, nparts, device=dev) * (total / nparts)).tolist()
        edges = sorted(set([0] + cuts + [first.numel()]))
        parts = list(zip(edges[:-1], edges[1:]))
        if workers > 1 and len(parts) > 1 and dev.type == "cpu":
            def run(bounds):
                torch.set_num_threads(1)
                return part(bounds)

            with ThreadPoolExecutor(min(workers, len(parts))) as ex:
                results = list(ex.map(run, parts))
        else:
            results = [part(bd) for bd in parts]
        for e1, e2 in results:
            keep[e1] = True
            keep[e2] = True
        return keep

    def _triplet_mask_native(self, so, r, phi, z, dh, src, dst, feats, K: int, workers: int) -> Tensor:
        """:meth:`_triplet_mask` in C++ (``native/module_map.cpp``): the same join, pre-cut and windows,
        with the module-pair roles, directions and the by-source grouping computed there too."""
        heads, tails = self._heads_tails(r.device)
        _, _, lo, hi = self._columns(r.device)
        f64 = torch.float64
        r64, z64 = r.to(f64).contiguous(), z.to(f64).contiguous()
        p64 = phi.to(f64)
        x64, y64 = (r64 * torch.cos(p64)).contiguous(), (r64 * torch.sin(p64)).contiguous()
        ints = [t.to(torch.long).contiguous() for t in (dh, src, dst, heads, tails, self.tkeys)]
        f = feats.to(f64).contiguous()
        lo, hi = lo.to(f64).contiguous(), hi.to(f64).contiguous()
        glo = torch.stack([lo[8].min(), lo[9].min()]).contiguous()
        ghi = torch.stack([hi[8].max(), hi[9].max()]).contiguous()
        keep = torch.zeros(src.numel(), dtype=torch.uint8)
        rc = so.gnr_mm_triplets(r64.numel(), ints[0].data_ptr(), r64.data_ptr(), z64.data_ptr(), x64.data_ptr(),
                                y64.data_ptr(), src.numel(), ints[1].data_ptr(), ints[2].data_ptr(), f.data_ptr(),
                                int(K), ints[3].data_ptr(), ints[3].numel(), ints[4].data_ptr(), ints[4].numel(),
                                ints[5].data_ptr(), ints[5].numel(), lo.data_ptr(), hi.data_ptr(), glo.data_ptr(),
                                ghi.data_ptr(), keep.data_ptr(), int(max(1, workers)))
        if rc != 0:
            raise MemoryError("native module-map triplet join: out of memory")
        return keep.bool()

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the map to ``path`` (``.npz``), atomically."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, keys=self.keys.numpy(), lo=self.lo.numpy(), hi=self.hi.numpy(),
                 counts=self.counts.numpy(), num_modules=np.int64(self.num_modules),
                 features=np.array(FEATURES), tolerance=np.float64(self.tolerance),
                 modules=self.modules.numpy(), tkeys=self.tkeys.numpy(), tlo=self.tlo.numpy(),
                 thi=self.thi.numpy(), tcounts=self.tcounts.numpy(),
                 triplet_features=np.array(TRIPLET_FEATURES))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, tolerance: float | None = None,
             abs_tolerance: dict[str, float] | None = None) -> ModuleMap:
        """Read a map written by :meth:`save` (maps saved before triplets existed load as doublet maps)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"module map file '{path}' does not exist")
        with np.load(path) as d:
            for name in ("keys", "lo", "hi", "num_modules", "features"):
                if name not in d:
                    raise ValueError(f"module map file '{path}' lacks the array '{name}'")
            if tuple(d["features"].tolist()) != FEATURES:
                raise ValueError(f"module map file '{path}' has features {d['features'].tolist()}, "
                                 f"expected {list(FEATURES)}")
            mm = cls(float(d["tolerance"]) if tolerance is None else tolerance, abs_tolerance)
            mm.keys = torch.from_numpy(d["keys"]).long()
            mm.lo = torch.from_numpy(d["lo"]).double()
            mm.hi = torch.from_numpy(d["hi"]).double()
            mm.counts = torch.from_numpy(d["counts"]).long() if "counts" in d else torch.ones_like(mm.keys)
            mm.num_modules = int(d["num_modules"])
            if "tkeys" in d:
                if tuple(d["triplet_features"].tolist()) != TRIPLET_FEATURES:
                    raise ValueError(f"module map file '{path}' has triplet features "
                                     f"{d['triplet_features'].tolist()}, expected {list(TRIPLET_FEATURES)}")
                mm.modules = torch.from_numpy(d["modules"]).long()
                mm.tkeys = torch.from_numpy(d["tkeys"]).long()
                mm.tlo = torch.from_numpy(d["tlo"]).double().reshape(-1, len(TRIPLET_FEATURES))
                mm.thi = torch.from_numpy(d["thi"]).double().reshape(-1, len(TRIPLET_FEATURES))
                mm.tcounts = torch.from_numpy(d["tcounts"]).long()
        return mm
