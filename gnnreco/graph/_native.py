"""Loader and ctypes bindings of gnnreco's native k-d tree (``gnnreco/graph/native/knn.cpp``).

The C++ source ships with the package and is compiled on first use with the system C++ compiler
(``$CXX``, ``c++``, ``g++`` or ``clang++``; ``-O3 -std=c++17 -shared -fPIC -pthread``, no
``-march=native``, so the cached library stays portable). No torch headers are needed, so the
compile takes a few seconds. The shared library is cached as
``~/.cache/gnnreco/native-knn-<hash>.so`` (``$XDG_CACHE_HOME`` respected; ``$GNNRECO_NATIVE_CACHE``
overrides the directory), keyed by a hash of the source, the flags and the compiler's version. It
is compiled under a temporary name and renamed into place atomically, so concurrent processes
(``pytest -n 2``) never load a half-written file.

If ``GNNRECO_NO_NATIVE=1``, if no compiler is found, or if compiling or loading fails, :func:`lib`
returns ``None`` and the callers use the torch engines; the reason is logged once at INFO level.
Compiling, caching and loading are :class:`gnnreco.utils.native.NativeLibrary`'s (shared with the
module-map kernel).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch import Tensor

from gnnreco.utils.native import NativeLibrary, compile_shared

__all__ = ["lib", "available", "supports", "knn", "radius", "SOURCE"]

#: The C++ source of the native engine, installed with the package.
SOURCE = Path(__file__).with_name("native") / "knn.cpp"
_API_VERSION = 1


def _bind(so: ctypes.CDLL) -> None:
    vp, i64, i32, p64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    so.gnr_tree_build.restype = vp
    so.gnr_tree_build.argtypes = [vp, i64, i32, p64, i64, i32]
    so.gnr_tree_free.restype = None
    so.gnr_tree_free.argtypes = [vp]
    so.gnr_tree_knn.restype = i32
    so.gnr_tree_knn.argtypes = [vp, vp, p64, i32, i64, i32, i32, p64, p64, i32]
    so.gnr_tree_radius.restype = i32
    so.gnr_tree_radius.argtypes = [vp, vp, p64, i32, ctypes.c_double, i32, i64, p64, p64, p64, p64, i32]


_LIB = NativeLibrary(SOURCE, "knn", "gnr_native_version", _API_VERSION, _bind, "native kNN engine")


def _build() -> Path:
    """Compile (or find in the cache) the engine's shared library and return its path."""
    return compile_shared(SOURCE, "knn")


def lib():
    """The loaded native library, or ``None`` (disabled, no compiler, build failed; logged once).

    ``GNNRECO_NO_NATIVE`` is read on every call, so setting it later still disables the engine.
    """
    return _LIB.get()


def available() -> bool:
    """Whether the native engine can be used in this process."""
    return lib() is not None


def supports(x: Tensor) -> bool:
    """Whether the native engine handles these coordinates (CPU float32/float64) and is available."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and available()


class _Tree:
    def __init__(self, so, x: Tensor, ptr_x: Tensor, threads: int):
        self.so = so
        self.handle = so.gnr_tree_build(x.data_ptr(), x.size(1), 0 if x.dtype == torch.float32 else 1,
                                        ptr_x.data_ptr(), ptr_x.numel() - 1, threads)
        if not self.handle:
            raise MemoryError("gnnreco native kNN: building the k-d tree failed")

    def __enter__(self):
        return self.handle

    def __exit__(self, *exc):
        self.so.gnr_tree_free(self.handle)


def _ptr(ptr: Tensor) -> Tensor:
    return ptr.to("cpu", torch.long).contiguous()


def _prepare(x: Tensor, y: Tensor, ptr_x: Tensor, ptr_y: Tensor):
    """Library, contiguous points and event offsets, whether ``y`` is ``x`` itself, and the thread count."""
    ptr_x, ptr_y = _ptr(ptr_x), _ptr(ptr_y)
    same = y is x and torch.equal(ptr_x, ptr_y)
    x = x.contiguous()
    return lib(), x, (x if same else y.contiguous()), ptr_x, ptr_y, same, max(1, torch.get_num_threads())


def knn(x: Tensor, y: Tensor, ptr_x: Tensor, ptr_y: Tensor, k: int, exclude_self: bool, *,
        flip: bool = False, dense_out: Tensor | None = None) -> Tensor:
    """Exact kNN with the native k-d tree: ``[2, E]`` edges ``[query, neighbour]`` grouped by query, nearest first.

    ``y is x`` (the same tensor) queries the tree's own points in tree order (better locality).
    With ``dense_out`` (``[M, k]`` long, pre-filled) the neighbours are written into it and it is returned.
    ``exclude_self`` skips the point whose index equals the query's (``x`` and ``y`` the same points).
    """
    so, x, y, ptr_x, ptr_y, same, threads = _prepare(x, y, ptr_x, ptr_y)
    nx = ptr_x[1:] - ptr_x[:-1]
    ny = nx if same else ptr_y[1:] - ptr_y[:-1]
    avail = nx - (1 if exclude_self else 0) * (nx > 0).long()
    cnt = avail.clamp(min=0, max=k)
    if dense_out is not None:
        out_q, out_n, dense = None, dense_out, 1
    else:
        e = int((ny * cnt).sum())
        out = torch.empty(2, e, dtype=torch.long)
        out_q, out_n = (out[1], out[0]) if flip else (out[0], out[1])
        dense = 0
    with _Tree(so, x, ptr_x, threads) as t:
        rc = so.gnr_tree_knn(t, y.data_ptr(), ptr_y.data_ptr(), int(same), int(k), int(exclude_self), dense,
                             0 if out_q is None else out_q.data_ptr(), out_n.data_ptr(), threads)
    if rc != 0:
        raise RuntimeError(f"gnnreco native kNN failed (code {rc})")
    return dense_out if dense_out is not None else out


def radius(x: Tensor, y: Tensor, ptr_x: Tensor, ptr_y: Tensor, r: float, max_num_neighbors: int,
           exclude_self: bool, *, flip: bool = False) -> tuple[Tensor, int, int]:
    """Exact radius search (``d < r``), nearest ``max_num_neighbors`` per query, nearest first.

    Returns ``([2, E] edges [query, neighbour], queries truncated, edges dropped)``.
    """
    so, x, y, ptr_x, ptr_y, same, threads = _prepare(x, y, ptr_x, ptr_y)
    counts = torch.zeros(y.size(0), dtype=torch.long)
    with _Tree(so, x, ptr_x, threads) as t:
        rc = so.gnr_tree_radius(t, y.data_ptr(), ptr_y.data_ptr(), int(same), float(r), int(exclude_self),
                                int(max_num_neighbors), counts.data_ptr(), None, None, None, threads)
        if rc != 0:
            raise RuntimeError(f"gnnreco native radius failed (code {rc})")
        kept = counts.clamp(max=int(max_num_neighbors))
        over = counts - kept
        offsets = torch.cumsum(kept, 0) - kept
        e = int(kept.sum())
        out = torch.empty(2, e, dtype=torch.long)
        out_q, out_n = (out[1], out[0]) if flip else (out[0], out[1])
        if e:
            rc = so.gnr_tree_radius(t, y.data_ptr(), ptr_y.data_ptr(), int(same), float(r), int(exclude_self),
                                    int(max_num_neighbors), counts.data_ptr(), offsets.data_ptr(),
                                    out_q.data_ptr(), out_n.data_ptr(), threads)
            if rc != 0:
                raise RuntimeError(f"gnnreco native radius failed (code {rc})")
    return out, int((over > 0).sum()), int(over.sum())
