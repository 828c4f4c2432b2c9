"""Make PyG's kNN/radius users run on :mod:`gnnreco.graph` (no pyg-lib / torch-cluster needed).

:func:`patch_pyg` does three things, each only when needed:

1. registers ``torch.ops.pyg.knn`` and ``torch.ops.pyg.radius`` (the pyg-lib schemas that PyG >= 2.8
   calls from ``nn.pool`` and from ``GravNetConv``/``DynamicEdgeConv``/``XConv``) when pyg-lib
   does not provide them, and sets ``torch_geometric.typing.WITH_KNN``/``WITH_RADIUS``;
2. replaces ``torch_geometric.nn.pool.{knn, knn_graph, radius, radius_graph}`` (and the
   re-exports in ``torch_geometric.nn``) by the gnnreco functions;
3. replaces module-level ``knn`` references inside ``nn.conv.gravnet_conv``/``edge_conv`` (older
   PyG imported them from torch_cluster).

It is idempotent and returns what it changed.
"""

from __future__ import annotations

import importlib

import torch
from torch import Tensor

from .neighbors import knn, knn_graph, radius, radius_graph

__all__ = ["patch_pyg"]

_REGISTERED: dict[str, object] = {}


def _ptr_to_batch(ptr: Tensor | None, n: int) -> Tensor | None:
    if ptr is None:
        return None
    counts = ptr[1:] - ptr[:-1]
    b = torch.repeat_interleave(torch.arange(counts.numel(), device=ptr.device), counts)
    if b.numel() != n:
        raise ValueError(f"ptr covers {b.numel()} rows but the tensor has {n}")
    return b


def _register_ops() -> list[str]:
    done = []
    if not hasattr(torch.ops, "pyg") or not _has_op("knn"):
        @torch.library.custom_op("pyg::knn", mutates_args=())
        def _pyg_knn(x: Tensor, y: Tensor, ptr_x: Tensor | None, ptr_y: Tensor | None, k: int,
                     cosine: bool, num_workers: int) -> Tensor:
            bx = _ptr_to_batch(ptr_x, x.size(0))
            by = _ptr_to_batch(ptr_y, y.size(0))
            if (bx is None) != (by is None):
                bx = bx if bx is not None else torch.zeros(x.size(0), dtype=torch.long, device=x.device)
                by = by if by is not None else torch.zeros(y.size(0), dtype=torch.long, device=y.device)
            return knn(x, y, k, bx, by, cosine=cosine)

        _REGISTERED["knn"] = _pyg_knn
        done.append("torch.ops.pyg.knn")
    if not _has_op("radius"):
        @torch.library.custom_op("pyg::radius", mutates_args=())
        def _pyg_radius(x: Tensor, y: Tensor, ptr_x: Tensor | None, ptr_y: Tensor | None, r: float,
                        max_num_neighbors: int, num_workers: int, ignore_same_index: bool) -> Tensor:
            from .neighbors import _prepare, _radius_report, _search

            bx = _ptr_to_batch(ptr_x, x.size(0))
            by = _ptr_to_batch(ptr_y, y.size(0))
            if (bx is None) != (by is None):
                bx = bx if bx is not None else torch.zeros(x.size(0), dtype=torch.long, device=x.device)
                by = by if by is not None else torch.zeros(y.size(0), dtype=torch.long, device=y.device)
            xx, yy, bx, by, nb = _prepare(x, y, bx, by, ("x", "y", "ptr_x", "ptr_y"))
            out, trunc = _search(xx, yy, bx, by, nb, int(max_num_neighbors), float(r),
                                 bool(ignore_same_index), "auto")
            _radius_report(trunc, max_num_neighbors, "pyg.radius")
            return out

        _REGISTERED["radius"] = _pyg_radius
        done.append("torch.ops.pyg.radius")
    return done


def _has_op(name: str) -> bool:
    try:
        getattr(torch.ops.pyg, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def patch_pyg() -> list[str]:
    """Route PyG's kNN / radius (functions, ops and layers) through :mod:`gnnreco.graph`.

    Returns:
        the names that were patched (empty when called again).
    """
    changed = _register_ops()
    tg_typing = importlib.import_module("torch_geometric.typing")
    for flag in ("WITH_KNN", "WITH_RADIUS"):
        if not getattr(tg_typing, flag, False):
            setattr(tg_typing, flag, True)
            changed.append(f"torch_geometric.typing.{flag}")
    repl = {"knn": knn, "knn_graph": knn_graph, "radius": radius, "radius_graph": radius_graph}
    for modname in ("torch_geometric.nn.pool", "torch_geometric.nn",
                    "torch_geometric.nn.conv.gravnet_conv", "torch_geometric.nn.conv.edge_conv"):
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        for name, fn in repl.items():
            cur = getattr(mod, name, None)
            if cur is not None and cur is not fn and (modname.endswith("pool") or modname == "torch_geometric.nn"
                                                      or callable(cur)):
                setattr(mod, name, fn)
                changed.append(f"{modname}.{name}")
    return changed
