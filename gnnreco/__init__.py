"""gnnreco: graph-neural-network reconstruction for particle physics.

Four reconstruction tasks (``tracking``, ``calo``, ``pflow``, ``dfei``) share one graph builder
(:mod:`gnnreco.graph`), one set of scatter kernels (:mod:`gnnreco.ops`), one configuration system
(Hydra, ``conf/``) and one training loop (PyTorch Lightning).
"""

__version__ = "0.1.0"

__all__ = ["Reconstructor", "__version__"]


def __getattr__(name: str):
    """Lazy ``gnnreco.Reconstructor`` (and ``gnnreco.io``): importing gnnreco stays cheap."""
    if name == "Reconstructor":
        from gnnreco.reco import Reconstructor

        return Reconstructor
    if name == "io":
        import importlib

        return importlib.import_module("gnnreco.io")
    raise AttributeError(f"module 'gnnreco' has no attribute {name!r}")
