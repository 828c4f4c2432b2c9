"""gnnreco.ops: scatter / segment / gather kernels with the torch_scatter 2.1.2 API, plus fused
aggregations.

CPU runs PyTorch-native code (no compiled extension); CUDA runs Triton kernels registered as
``torch.ops.gnnreco.*``. See ``docs/ops.md``.

Example:
    >>> from gnnreco.ops import scatter
    >>> scatter(src, index, dim=0, dim_size=n, reduce="mean")  # doctest: +SKIP
"""

from __future__ import annotations

from types import ModuleType

from gnnreco.ops import testing  # noqa: F401  (torch_scatter.testing counterpart)
from gnnreco.ops._utils import broadcast, set_index_validation
from gnnreco.ops.composite import scatter_log_softmax, scatter_logsumexp, scatter_softmax, scatter_std
from gnnreco.ops.fused import gather_scatter, gather_scatter_weighted, multi_aggregate
from gnnreco.ops.scatter import (
    scatter,
    scatter_add,
    scatter_max,
    scatter_mean,
    scatter_min,
    scatter_mul,
    scatter_sum,
)
from gnnreco.ops.segment import (
    gather_coo,
    gather_csr,
    segment_add_coo,
    segment_add_csr,
    segment_coo,
    segment_csr,
    segment_max_coo,
    segment_max_csr,
    segment_mean_coo,
    segment_mean_csr,
    segment_min_coo,
    segment_min_csr,
    segment_sum_coo,
    segment_sum_csr,
)


def install_as_torch_scatter() -> ModuleType:
    """Register :mod:`gnnreco.ops.compat` as ``torch_scatter`` in ``sys.modules``.

    Third-party code doing ``import torch_scatter`` (or ``from torch_scatter import scatter``,
    ``torch_scatter.testing``, ``torch_scatter.utils``, ``torch_scatter.composite``) afterwards runs
    on gnnreco. A real torch_scatter that was already imported is set aside and restored by
    ``gnnreco.ops.compat.uninstall()``; modules that bound it before the call keep it.

    Returns:
        The alias module (``torch_scatter.__version__ == "2.1.2"``).
    """
    from gnnreco.ops.compat import install

    return install()


__all__ = [
    "scatter",
    "scatter_sum",
    "scatter_add",
    "scatter_mul",
    "scatter_mean",
    "scatter_min",
    "scatter_max",
    "segment_csr",
    "segment_sum_csr",
    "segment_add_csr",
    "segment_mean_csr",
    "segment_min_csr",
    "segment_max_csr",
    "segment_coo",
    "segment_sum_coo",
    "segment_add_coo",
    "segment_mean_coo",
    "segment_min_coo",
    "segment_max_coo",
    "gather_csr",
    "gather_coo",
    "scatter_softmax",
    "scatter_log_softmax",
    "scatter_logsumexp",
    "scatter_std",
    "multi_aggregate",
    "gather_scatter",
    "gather_scatter_weighted",
    "broadcast",
    "set_index_validation",
    "install_as_torch_scatter",
]
