"""``Reconstructor``: the full reconstruction chain of a trained model, one event at a time.

raw event (plain arrays) → task processor (graph building, features) → network → task
post-processing (track building, condensation, candidates, decay trees) → output columns
(:mod:`gnnreco.io.results`). It is what ``gnnreco infer`` runs per event, and what another
framework embeds (docs/inference.md).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = ["Reconstructor", "load_run_config"]


# --------------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------------
def load_run_config(config: Any = None, near: str | os.PathLike | None = None, what: str = "checkpoint"):
    """The task/data/model config of a trained model as a DictConfig.

    Args:
        config: a DictConfig/dict with ``task``, ``model`` (and ``data`` for the processor), a YAML file,
            or a run directory holding ``.hydra/config.yaml``; None looks next to ``near``.
        near: a checkpoint (``<run>/checkpoints/x.ckpt`` → ``<run>/.hydra/config.yaml``).
        what: named in the error.

    Raises:
        FileNotFoundError: no config given and none found next to ``near``.
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(config, DictConfig):
        return config
    if isinstance(config, Mapping):
        return OmegaConf.create(dict(config))
    candidates: list[Path] = []
    if config is not None:
        p = Path(config)
        candidates = [p] if p.is_file() else [p / ".hydra" / "config.yaml", p / "config.yaml"]
    elif near is not None:
        p = Path(near).resolve()
        candidates = [p.parent.parent / ".hydra" / "config.yaml", p.parent / ".hydra" / "config.yaml",
                      p.parent / "config.yaml"]
    for c in candidates:
        if c.is_file():
            return OmegaConf.load(c)
    raise FileNotFoundError(
        f"no model config for {what} '{near}': looked for {[str(c) for c in candidates]}; pass config=<run dir, "
        "config.yaml or dict with task/data/model>"
    )


def _task_name(cfg: Any, module: nn.Module | None = None) -> str:
    from gnnreco.io.checkpoint import task_of_class

    name = None
    try:
        name = cfg.task.name if "task" in cfg and cfg.task is not None else None
    except Exception:
        name = None
    if name is None and module is not None:
        name = task_of_class(f"{type(module).__module__}.{type(module).__qualname__}")
    return str(name or "unknown")


# --------------------------------------------------------------------------------------------------
# buffers
# --------------------------------------------------------------------------------------------------
class TensorBuffers:
    """Per-key device buffers reused across events (grown geometrically, never shrunk).

    ``put(key, t)`` copies ``t`` into the key's buffer and returns a view of ``t``'s shape. On a GPU the
    copy goes through a pinned host buffer of the same key, so steady-state events allocate no device
    or pinned memory.

    Args:
        device: where the buffers live.
        growth: capacity factor when a buffer must grow.
    """

    def __init__(self, device: torch.device | str, growth: float = 1.5):
        self.device = torch.device(device)
        self.growth = float(growth)
        self._dev: dict[str, Tensor] = {}
        self._host: dict[str, Tensor] = {}
        self.allocations = 0

    def _buffer(self, store: dict[str, Tensor], key: str, t: Tensor, device: torch.device, pin: bool) -> Tensor:
        buf = store.get(key)
        n = t.numel()
        if buf is None or buf.dtype != t.dtype or buf.numel() < n:
            cap = max(n, int(buf.numel() * self.growth) if buf is not None and buf.dtype == t.dtype else n, 16)
            buf = torch.empty(cap, dtype=t.dtype, device=device, pin_memory=pin)
            store[key] = buf
            self.allocations += 1
        return buf[:n].view(t.shape)

    def put(self, key: str, t: Tensor) -> Tensor:
        if self.device.type == "cuda":
            host = self._buffer(self._host, key, t, torch.device("cpu"), pin=True)
            host.copy_(t)
            dev = self._buffer(self._dev, key, t, self.device, pin=False)
            dev.copy_(host, non_blocking=True)
            return dev
        view = self._buffer(self._dev, key, t, self.device, pin=False)
        view.copy_(t)
        return view

    def zeros_long(self, key: str, n: int) -> Tensor:
        """A reused all-zero ``int64`` vector of length ``n`` (the batch vector of one event)."""
        buf = self._dev.get(key)
        if buf is None or buf.numel() < n:
            buf = torch.zeros(max(16, int(n * self.growth)), dtype=torch.long, device=self.device)
            self._dev[key] = buf
            self.allocations += 1
        return buf[:n]


# --------------------------------------------------------------------------------------------------
# exported networks
# --------------------------------------------------------------------------------------------------
class _NamedOutputs(tuple):
    """Tuple of network outputs that also answers ``out["name"]``, ``out.get`` and ``"name" in out``."""

    names: tuple[str, ...] = ()

    def __new__(cls, values: Sequence[Tensor], names: Sequence[str]):
        obj = super().__new__(cls, values)
        obj.names = tuple(names)
        return obj

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            if key not in self.names:
                raise KeyError(key)
            return tuple.__getitem__(self, self.names.index(key))
        return tuple.__getitem__(self, key)

    def __contains__(self, key) -> bool:  # type: ignore[override]
        return key in self.names if isinstance(key, str) else tuple.__contains__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self.names else default

    def keys(self):
        return list(self.names)

    def items(self):
        return list(zip(self.names, self))

    def values(self):
        return list(self)


class ExportedNet(nn.Module):
    """A TorchScript or ONNX export (:class:`gnnreco.export.ExportedModel`) behind the eager network's
    call signature, so a task module can run it in place of ``module.net``.

    Positional arguments feed the manifest's inputs in order; keyword arguments named like an input
    are used too, others (training-only inputs such as labels) are ignored. Outputs come back on the
    inputs' device; several outputs come back as a tuple that can also be indexed by the manifest's
    output names.
    """

    def __init__(self, export_dir: str | os.PathLike, backend: str = "auto", device: torch.device | str = "cpu"):
        super().__init__()
        from gnnreco.export import load_export

        self.program = load_export(export_dir, backend=backend, device=device)
        self.backend = self.program.backend
        self.input_names = list(self.program.input_names)
        self.output_names = list(self.program.output_names)

    def forward(self, *args: Tensor, **kwargs: Any):
        tensors = list(args[: len(self.input_names)])
        for name in self.input_names[len(tensors):]:
            if name not in kwargs:
                raise TypeError(f"exported network needs input '{name}' (inputs: {self.input_names})")
            tensors.append(kwargs[name])
        dev = tensors[0].device if tensors and isinstance(tensors[0], Tensor) else torch.device("cpu")
        out = [t.to(dev) for t in self.program(*tensors).values()]
        if len(out) == 1:
            return out[0]
        return _NamedOutputs(out, self.output_names)


# --------------------------------------------------------------------------------------------------
# the reconstructor
# --------------------------------------------------------------------------------------------------
def _auto_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Reconstructor:
    """Reconstruct events with a trained gnnreco model: ``result = reco(event)``.

    The chain is the task's own: its processor builds the graph and features exactly as in training,
    the network scores it, and the task's post-processing builds the objects (track candidates,
    calorimeter clusters, PF candidates, decay trees). Results are flat NumPy columns in the input's
    indexing (:mod:`gnnreco.io.results`); ``None`` means the processor rejected the event (e.g. no hits).

    Inputs are plain arrays: a mapping of the task's logical fields (``conf/io/<task>.yaml``, e.g.
    ``x, y, z, volume_id, layer_id, module_id`` for tracking) as NumPy, awkward or torch arrays, an
    awkward record, a raw event of the task's simulator, or an already processed graph (with
    ``num_nodes``). Buffers are reused across events: the model, processor and graph settings are built
    once; on a GPU every input tensor is copied through a per-key pinned buffer into a per-key device
    buffer that only grows, so steady-state events allocate no device memory; on CPU the processor's
    arrays are used in place (no copy) and the batch vector is a view of one reused zero buffer.

    Example (inside an event loop of another framework)::

        import gnnreco

        reco = gnnreco.Reconstructor.from_checkpoint("logs/run/checkpoints/last.ckpt")
        # or: gnnreco.Reconstructor.from_export("export_dir")   (TorchScript / ONNX + manifest)
        for event in reader:                       # any event source
            result = reco({"x": event.hit_x, "y": event.hit_y, "z": event.hit_z,
                           "volume_id": event.volume, "layer_id": event.layer,
                           "module_id": event.module})
            if result is None:                     # rejected (e.g. no hits)
                continue
            tracks = gnnreco.io.tracks_from_columns(result["track_hits"], result["track_nhits"])
            for hits, score in zip(tracks, result["track_score"]):
                ...                                # hits: indices into this event's hit arrays

    Args:
        module: a task module (``GraphTaskModule`` with ``reconstruct``), weights loaded.
        task: task name (``tracking``, ``calo``, ``pflow``, ``dfei``; others use generic columns).
        processor: raw event → graph dict (the training ``data.processor``); None: graphs only.
        device: ``auto`` (GPU when present), ``cpu``, ``cuda`` ...
        keep_edges: tracking: also return the scored edges.
        reuse_buffers: reuse input buffers across events (see above).
        config: the config the module was built from (kept for provenance).
    """

    def __init__(self, module: nn.Module, task: str, processor: Any = None, device: str | torch.device = "auto",
                 keep_edges: bool = False, reuse_buffers: bool = True, config: Any = None) -> None:
        if not hasattr(module, "reconstruct"):
            raise TypeError(f"{type(module).__name__} has no reconstruct(batch, out); this task cannot run inference")
        self.device = _auto_device(device)
        self.module = module.to(self.device).eval()
        self.task = task
        self.processor = processor
        self.keep_edges = keep_edges
        self.config = config
        self.buffers = TensorBuffers(self.device) if reuse_buffers else None
        self.n_events = 0

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_config(cls, cfg: Any, module: nn.Module | None = None, **kwargs: Any) -> Reconstructor:
        """Build module (unless given) and processor from a config with ``task``, ``data``, ``model``."""
        from hydra.utils import instantiate

        if module is None:
            if "model" not in cfg or cfg.model is None:
                raise ValueError("the config has no 'model' section; cannot build the task module")
            module = instantiate(cfg.model)
        processor = None
        data = cfg.get("data") if hasattr(cfg, "get") else None
        if data is not None and data.get("processor") is not None:
            processor = instantiate(data.processor)
        return cls(module, _task_name(cfg, module), processor=processor, config=cfg, **kwargs)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, config: Any = None, **kwargs: Any) -> Reconstructor:
        """Load a training checkpoint (``<run>/checkpoints/*.ckpt``).

        The network's architecture and the processor come from the training run's config
        (``<run>/.hydra/config.yaml``) unless ``config`` is given. A checkpoint of another task,
        network or gnnreco version raises :class:`gnnreco.io.CheckpointMismatchError` naming both.

        Args:
            path: the checkpoint file.
            config: run directory, YAML file or config with ``task``/``data``/``model``.
            **kwargs: ``device``, ``keep_edges``, ``reuse_buffers``.
        """
        from hydra.utils import instantiate

        from gnnreco.io.checkpoint import check_checkpoint

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint '{path}' does not exist")
        cfg = load_run_config(config, near=path, what="checkpoint")
        module = instantiate(cfg.model)
        try:
            ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as exc:
            raise RuntimeError(f"cannot read checkpoint '{path}': {exc}") from exc
        if not isinstance(ckpt, dict):
            raise RuntimeError(f"'{path}' is not a gnnreco checkpoint (got {type(ckpt).__name__})")
        check_checkpoint(module, ckpt, str(path))
        module.load_state_dict(ckpt["state_dict"])
        return cls.from_config(cfg, module=module, **kwargs)

    @classmethod
    def from_export(cls, path: str | os.PathLike, config: Any = None, backend: str = "auto",
                    **kwargs: Any) -> Reconstructor:
        """Load a ``gnnreco export`` directory (``manifest.json`` + ``model.pt`` / ``model.onnx``).

        The exported network replaces the eager one inside the task module, so graph building and
        post-processing are the task's own. The task/data/model config comes from ``config``, else the
        manifest's ``config`` entry, else ``config.yaml`` in the export directory, else the Hydra config
        of the export run (``../.hydra/config.yaml``).

        Args:
            path: the export directory.
            config: run directory, YAML file or config with ``task``/``data``/``model``.
            backend: ``auto`` (TorchScript when exported, else ONNX), ``torchscript`` or ``onnx``.
            **kwargs: ``device``, ``keep_edges``, ``reuse_buffers``.
        """
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        path = Path(path)
        mpath = path / "manifest.json"
        if not mpath.exists():
            raise FileNotFoundError(f"'{path}' is not a gnnreco export directory (no manifest.json)")
        manifest = json.loads(mpath.read_text())
        if config is None:
            inline = manifest.get("config") or manifest.get("run_config")
            if isinstance(inline, Mapping) and "model" in inline:
                config = OmegaConf.create(inline)
            elif isinstance(inline, str) and (path / inline).is_file():
                config = path / inline
            elif (path / "config.yaml").is_file():
                config = path / "config.yaml"
            elif (path.parent / ".hydra" / "config.yaml").is_file():
                log.warning("from_export: the manifest carries no config; using the export run's %s",
                            path.parent / ".hydra" / "config.yaml")
                config = path.parent
        cfg = load_run_config(config, near=mpath, what="export")
        device = _auto_device(kwargs.pop("device", "auto"))
        import gnnreco

        version = manifest.get("gnnreco_version")
        if version:
            from gnnreco.io.checkpoint import versions_compatible

            if not versions_compatible(str(version), gnnreco.__version__):
                from gnnreco.io.checkpoint import CheckpointMismatchError

                raise CheckpointMismatchError(f"export '{path}' was written by gnnreco {version}; this is gnnreco "
                                              f"{gnnreco.__version__} (same major/minor version needed for 0.x)")
        module = instantiate(cfg.model)
        m_task, c_task = manifest.get("task"), _task_name(cfg, module)
        if m_task and c_task != "unknown" and m_task != c_task:
            from gnnreco.io.checkpoint import CheckpointMismatchError

            raise CheckpointMismatchError(f"export '{path}' is a '{m_task}' model but the config is task '{c_task}'")
        module.net = ExportedNet(path, backend=backend, device=device)
        return cls.from_config(cfg, module=module, device=device, **kwargs)

    # ------------------------------------------------------------------ per event
    def process(self, event: Any, kind: str | None = None) -> tuple[dict | None, np.ndarray | None]:
        """Raw event → processed graph (or None) and, for tracking, the input hit ids."""
        from gnnreco.io.readers import InputEvent
        from gnnreco.io.schema import as_numpy, assemble

        if isinstance(event, InputEvent):  # straight from a gnnreco.io reader
            event, kind = event.data, kind or event.kind
        if kind is None:
            kind = "graph" if isinstance(event, Mapping) and "num_nodes" in event else "fields"
        if kind == "graph":
            return dict(event), None
        raw = assemble(self.task, event)
        hit_id = None
        if self.task == "tracking":
            hits = raw["hits"] if isinstance(raw, Mapping) else getattr(raw, "hits", None)
            if hits is not None:
                hit_id = as_numpy(hits["hit_id"]).astype(np.int64)
        if self.processor is None:
            raise ValueError("this Reconstructor has no processor (data.processor); pass processed graphs "
                             "(mappings with num_nodes)")
        return self.processor(raw), hit_id

    def _batch(self, graph: Mapping[str, Any]):
        from torch_geometric.data import Batch

        from gnnreco.data.store import is_pair_index

        tensors: dict[str, Tensor] = {}
        for k, v in graph.items():
            if isinstance(v, Tensor):
                t = v
            else:
                a = np.ascontiguousarray(v)
                t = torch.from_numpy(a if a.flags.writeable else a.copy())
            if t.dim() == 0:
                t = t.reshape(1)
            if is_pair_index(k) and t.dim() == 2 and t.shape[0] != 2 and t.shape[1] == 2:
                t = t.t().contiguous()
            tensors[k] = t
        nn_ = tensors.pop("num_nodes", None)
        n = int(nn_.reshape(-1)[0]) if nn_ is not None else int(tensors["x"].shape[0])
        if self.buffers is not None and self.device.type != "cpu":
            tensors = {k: self.buffers.put(k, t) for k, t in tensors.items()}
        elif self.device.type != "cpu":
            tensors = {k: t.to(self.device) for k, t in tensors.items()}
        b = Batch(**tensors)
        b.num_nodes = n
        b.batch = self.buffers.zeros_long("batch", n) if self.buffers is not None else \
            torch.zeros(n, dtype=torch.long, device=self.device)
        b.ptr = torch.tensor([0, n], dtype=torch.long, device=self.device)
        b._num_graphs = 1
        return b

    @torch.inference_mode()
    def reco(self, event: Any, kind: str | None = None) -> dict[str, np.ndarray] | None:
        """Reconstruct one event.

        Args:
            event: logical fields (mapping / awkward record of NumPy, awkward or torch arrays), a raw
                event of the task, a processed graph (mapping with ``num_nodes``), or an
                :class:`~gnnreco.io.InputEvent` of a ``gnnreco.io`` reader.
            kind: ``fields``, ``raw`` or ``graph`` to skip the detection.

        Returns:
            Output columns (:mod:`gnnreco.io.results`), or None when the processor rejects the event.
        """
        from gnnreco.io.results import result_columns

        graph, hit_id = self.process(event, kind)
        if graph is None:
            return None
        batch = self._batch(graph)
        out = self.module(batch)
        rec = self.module.reconstruct(batch, out)[0]
        self.n_events += 1
        return result_columns(self.task, rec, graph, input_hit_id=hit_id, keep_edges=self.keep_edges)

    __call__ = reco

    def __repr__(self) -> str:
        net = getattr(self.module, "net", None)
        return (f"Reconstructor(task={self.task!r}, module={type(self.module).__name__}, "
                f"net={type(net).__name__}, device={self.device})")
