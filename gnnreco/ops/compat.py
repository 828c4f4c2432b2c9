"""A ``torch_scatter``-shaped namespace backed by gnnreco.

``gnnreco.ops.install_as_torch_scatter()`` puts this module into ``sys.modules["torch_scatter"]``
(with ``torch_scatter.testing``, ``torch_scatter.utils`` and ``torch_scatter.composite``), so code
written against torch_scatter 2.1.2 runs unchanged.
"""

from __future__ import annotations

import sys
import types

import gnnreco.ops as _ops
from gnnreco.ops import testing
from gnnreco.ops._utils import broadcast

__version__ = "2.1.2"
__gnnreco__ = True

# torch_scatter 2.1.2's public names.
_API = (
    "scatter_sum",
    "scatter_add",
    "scatter_mul",
    "scatter_mean",
    "scatter_min",
    "scatter_max",
    "scatter",
    "segment_sum_csr",
    "segment_add_csr",
    "segment_mean_csr",
    "segment_min_csr",
    "segment_max_csr",
    "segment_csr",
    "gather_csr",
    "segment_sum_coo",
    "segment_add_coo",
    "segment_mean_coo",
    "segment_min_coo",
    "segment_max_coo",
    "segment_coo",
    "gather_coo",
    "scatter_std",
    "scatter_logsumexp",
    "scatter_softmax",
    "scatter_log_softmax",
    "__version__",
)
__all__ = list(_API)

# torch_scatter's public functions, bound from gnnreco.ops (``__version__`` is this module's own).
globals().update({_name: getattr(_ops, _name) for _name in _API if _name != "__version__"})

utils = types.ModuleType("torch_scatter.utils", "broadcast() as in torch_scatter.utils")
utils.broadcast = broadcast  # type: ignore[attr-defined]

composite = types.ModuleType("torch_scatter.composite", "composite ops as in torch_scatter.composite")
for _name in ("scatter_std", "scatter_logsumexp", "scatter_softmax", "scatter_log_softmax"):
    setattr(composite, _name, getattr(_ops, _name))


_SAVED: dict[str, types.ModuleType] = {}
_ALIASES = ("torch_scatter", "torch_scatter.testing", "torch_scatter.utils", "torch_scatter.composite")


def install() -> types.ModuleType:
    """Alias this module as ``torch_scatter`` (see :func:`gnnreco.ops.install_as_torch_scatter`).

    A real ``torch_scatter`` already in ``sys.modules`` (``gnnreco._compat`` imports it to detect
    it) is remembered and put back by :func:`uninstall`. Modules that bound ``torch_scatter``
    before the call keep their reference, so install early.
    """
    this = sys.modules[__name__]
    if sys.modules.get("torch_scatter") is not this:
        _SAVED.clear()
        for name in list(sys.modules):
            if name == "torch_scatter" or name.startswith("torch_scatter."):
                _SAVED[name] = sys.modules.pop(name)
    sys.modules["torch_scatter"] = this
    sys.modules["torch_scatter.testing"] = testing
    sys.modules["torch_scatter.utils"] = utils
    sys.modules["torch_scatter.composite"] = composite
    return this


def uninstall() -> None:
    """Undo :func:`install`, restoring a previously imported real ``torch_scatter``."""
    for name in _ALIASES:
        sys.modules.pop(name, None)
    sys.modules.update(_SAVED)
    _SAVED.clear()
