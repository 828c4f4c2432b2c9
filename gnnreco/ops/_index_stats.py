"""One device-to-host copy per index tensor: its minimum, maximum and sortedness, remembered.

On CUDA every check of an index (the range validation that turns a bad entry into a Python error,
and the sortedness test that picks the deterministic CSR kernel) needs the GPU to finish and send a
number back. A message-passing network aggregates over the same ``edge_index[1]`` in every layer,
so :func:`index_stats` computes the three numbers in one reduction and one ``tolist()`` and keeps
them on the tensor (on the root of a view chain, for the view's exact geometry). PyTorch's version
counter, shared by a tensor and its views, invalidates the record on any in-place write.
"""

from __future__ import annotations

import torch
from torch import Tensor

_ATTR = "_gnnreco_index_stats"


def _key(index: Tensor) -> tuple | None:
    try:
        version = index._version
    except RuntimeError:  # inference tensors have no version counter: do not remember
        return None
    return (index.storage_offset(), tuple(index.shape), tuple(index.stride()), index.dtype, version)


def index_stats(index: Tensor, cache: bool | None = None) -> tuple[int, int, bool | None]:
    """``(min, max, sorted)`` of a non-empty integer index (``sorted`` is ``None`` unless 1-D).

    ``cache`` (default: on for CUDA tensors) remembers the result on the tensor until it changes.
    """
    if cache is None:
        cache = index.is_cuda
    compiling = torch.compiler.is_compiling()
    key = _key(index) if cache and not compiling else None
    root = index._base if index._base is not None else index
    if key is not None:
        rec = getattr(root, _ATTR, None)
        if rec is not None and rec[0] == key:
            return rec[1]
    mn, mx = torch.aminmax(index.reshape(-1))
    if index.dim() == 1:
        srt = (index[1:] >= index[:-1]).all() if index.numel() > 1 else torch.ones((), dtype=torch.bool,
                                                                                  device=index.device)
        vals = torch.stack([mn.long(), mx.long(), srt.long()]).tolist()
        stats = (int(vals[0]), int(vals[1]), bool(vals[2]))
    else:
        vals = torch.stack([mn.long(), mx.long()]).tolist()
        stats = (int(vals[0]), int(vals[1]), None)
    if key is None:
        return stats
    try:
        setattr(root, _ATTR, (key, stats))
    except (AttributeError, RuntimeError):  # a tensor subclass that refuses attributes: not remembered
        return stats
    return stats
