"""Optional accelerators, detected once at import.

gnnreco never *requires* any of these packages. Every feature has a plain-PyTorch path; when an
accelerator is installed it may be used instead (and tests run both paths).

Flags:
    WITH_TORCH_SCATTER: ``torch_scatter`` imports and works with the installed torch.
    WITH_TORCH_CLUSTER: ``torch_cluster`` imports.
    WITH_PYG_LIB: ``pyg_lib`` imports.
    WITH_FAISS: ``faiss`` imports.
    WITH_TRITON: ``triton`` imports (kernels run on CUDA, or on CPU with ``TRITON_INTERPRET=1``).
    WITH_PYTHIA8: ``pythia8mc`` (Pythia 8 Python bindings) imports.
    WITH_CUDA: ``torch.cuda.is_available()``.

A package that is installed but broken (e.g. an ABI mismatch giving ``undefined symbol``) is treated
as absent, with a warning, instead of crashing ``import gnnreco``.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

import torch

__all__ = [
    "WITH_TORCH_SCATTER",
    "WITH_TORCH_CLUSTER",
    "WITH_PYG_LIB",
    "WITH_FAISS",
    "WITH_TRITON",
    "WITH_PYTHIA8",
    "WITH_CUDA",
    "TRITON_INTERPRET",
    "optional_import",
    "summary",
]


def optional_import(name: str) -> ModuleType | None:
    """Import ``name`` if it is installed and importable, else return ``None``.

    ImportError means "not installed" and is silent. Any other exception means "installed but
    broken" and gives a warning naming the package.
    """
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
    except Exception as exc:  # noqa: BLE001 - a broken extension must not break gnnreco
        warnings.warn(
            f"gnnreco: optional package '{name}' is installed but failed to import ({exc!r}); "
            "continuing without it.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def _disabled(name: str) -> bool:
    """``GNNRECO_DISABLE=torch_scatter,torch_cluster`` turns accelerators off (tests, debugging)."""
    return name in {s.strip() for s in os.environ.get("GNNRECO_DISABLE", "").split(",") if s.strip()}


torch_scatter = None if _disabled("torch_scatter") else optional_import("torch_scatter")
torch_cluster = None if _disabled("torch_cluster") else optional_import("torch_cluster")
pyg_lib = None if _disabled("pyg_lib") else optional_import("pyg_lib")
faiss = None if _disabled("faiss") else optional_import("faiss")
triton = None if _disabled("triton") else optional_import("triton")
pythia8mc = None if _disabled("pythia8mc") else optional_import("pythia8mc")

WITH_TORCH_SCATTER: bool = torch_scatter is not None
WITH_TORCH_CLUSTER: bool = torch_cluster is not None
WITH_PYG_LIB: bool = pyg_lib is not None
WITH_FAISS: bool = faiss is not None
WITH_TRITON: bool = triton is not None
WITH_PYTHIA8: bool = pythia8mc is not None
WITH_CUDA: bool = torch.cuda.is_available()
TRITON_INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"


def summary() -> dict[str, bool]:
    """Which optional accelerators this process sees (printed by ``gnnreco --version``)."""
    return {
        "torch_scatter": WITH_TORCH_SCATTER,
        "torch_cluster": WITH_TORCH_CLUSTER,
        "pyg_lib": WITH_PYG_LIB,
        "faiss": WITH_FAISS,
        "triton": WITH_TRITON,
        "pythia8mc": WITH_PYTHIA8,
        "cuda": WITH_CUDA,
    }
