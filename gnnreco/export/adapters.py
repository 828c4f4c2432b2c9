"""Export hooks of network families whose training-time ``forward`` needs an export wrapper.

:class:`~gnnreco.tasks.base.GraphTaskModule` answers its export hooks (``export_inputs``,
``export_input_names``, ...) from the adapter of its network when the task module does not define them
itself; :func:`gnnreco.export.as_exportable` uses the same adapter to pick the module to trace. Tracking
and MLPF need no adapter: their networks trace as they are and their modules define the hooks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn

__all__ = ["ExportAdapter", "adapter_for"]


class ExportAdapter(ABC):
    """Export hooks of one network family that is traced through a wrapper (:mod:`gnnreco.export.calo`).

    Attributes:
        task: task name written to the manifest.
        formats: formats the exported program supports.
    """

    task: str = ""
    formats: tuple[str, ...] = ("torchscript", "onnx")

    @abstractmethod
    def wrap(self, net: nn.Module) -> nn.Module:
        """The tensor-only module to trace (shares ``net``'s weights; has ``reference(*inputs)``)."""

    @abstractmethod
    def inputs(self, module: Any, batch: Any) -> tuple[Tensor, ...]:
        """Example inputs of the wrapper from a PyG batch."""

    @abstractmethod
    def input_names(self, net: nn.Module) -> tuple[str, ...]:
        """Names of the wrapper's inputs, in order."""

    @abstractmethod
    def output_names(self, net: nn.Module) -> tuple[str, ...]:
        """Names of the wrapper's outputs, in order."""

    @abstractmethod
    def dynamic_axes(self, net: nn.Module) -> dict[str, dict[int, str]]:
        """``{name: {axis: symbol}}`` of inputs and outputs (ONNX dynamic axes, manifest shapes)."""

    def manifest(self, module: Any) -> dict[str, Any]:
        """Task metadata of the manifest (features, normalisation, thresholds, post-processing)."""
        return {"task": self.task}


def adapter_for(net: nn.Module) -> ExportAdapter | None:
    """The adapter of ``net``'s family, or ``None`` when ``net`` traces as it is."""
    from gnnreco.tasks.calo.model import CaloGravNet

    if isinstance(net, CaloGravNet):
        from gnnreco.export.calo import CaloAdapter

        return CaloAdapter()
    return None


def manifest_sections(module: Any) -> dict[str, Any]:
    """Standard manifest sections gnnreco.export knows for ``module`` (merged under the module's own
    ``export_manifest()``): the adapter's for wrapped networks, :func:`gnnreco.export.dfei.
    dfei_manifest_sections` for DFEI, nothing otherwise (tracking and MLPF write theirs)."""
    net = getattr(module, "net", None)
    a = adapter_for(net) if net is not None else None
    if a is not None:
        return a.manifest(module)
    from gnnreco.tasks.dfei.model import DFEIChain, DFEIFused

    if isinstance(net, DFEIChain | DFEIFused):
        from gnnreco.export.dfei import dfei_manifest_sections

        return dfei_manifest_sections(module)
    return {}
