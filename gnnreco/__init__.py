"""gnnreco: graph-neural-network reconstruction for particle physics.

Four reconstruction tasks (``tracking``, ``calo``, ``pflow``, ``dfei``) share one graph builder
(:mod:`gnnreco.graph`), one set of scatter kernels (:mod:`gnnreco.ops`), one configuration system
(Hydra, ``conf/``) and one training loop (PyTorch Lightning).
"""

__version__ = "0.1.0"
