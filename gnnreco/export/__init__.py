"""TorchScript / ONNX export of a task network, with a manifest, and loading of the exports.

Every task network has a tensor-only ``forward`` (DESIGN.md §6). A task module says which tensors feed
it (``export_inputs(batch)``, ``export_input_names``, ``export_output_names``, ``export_dynamic_axes``)
and what a caller must do around it (``export_manifest()``: feature order, normalisation, thresholds);
networks whose training-time ``forward`` does not trace to a size-independent program get an export
wrapper (:mod:`gnnreco.export.calo`, found by :func:`as_exportable`).

:func:`export_network` traces the network once per format, runs every exported program on the example
inputs (and on extra inputs of other sizes, to check the dynamic axes) against eager PyTorch, and writes
``manifest.json``; :func:`export_task` does all of it for a task module and an example batch;
:func:`load_export` reads an export directory back and runs it with TorchScript or ONNX Runtime.
The manifest keys are listed in ``docs/export.md`` (``manifest_version`` 1).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = ["MANIFEST_VERSION", "export_network", "export_task", "example_batches", "config_hash", "as_exportable", "load_export",
           "ExportedModel", "ExportMismatchError"]

#: version of the manifest layout (bumped when a key changes meaning or disappears)
MANIFEST_VERSION = 1
FORMATS = ("torchscript", "onnx")
FILE_NAMES = {"torchscript": "model.pt", "onnx": "model.onnx"}


class ExportMismatchError(RuntimeError):
    """An exported program disagrees with eager PyTorch (values beyond tolerance, shape or dtype)."""


def config_hash(cfg: Any, keys: Sequence[str] = ("task", "data", "model")) -> str:
    """Short SHA-256 (16 hex digits) of the parts of a run config that define the model.

    For an OmegaConf config with any of ``keys`` (default: ``task``, ``data``, ``model``) only those
    sub-configs are hashed, as unresolved YAML, so the hash does not change with output paths, Hydra
    run directories or the verb that loaded the config; any other config is hashed whole (sorted JSON).
    """
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            part = {k: cfg[k] for k in keys if k in cfg} if any(k in cfg for k in keys) else cfg
            text = OmegaConf.to_yaml(OmegaConf.create(part) if isinstance(part, dict) else part, resolve=False)
        else:
            text = json.dumps(cfg, sort_keys=True, default=str)
    except Exception:
        text = repr(cfg)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain_config(cfg: Any, keys: Sequence[str] = ("task", "data", "model")) -> dict | None:
    """The task/data/model parts of a run config as plain JSON-able data (resolved where possible)."""
    if cfg is None:
        return None
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - hydra is a dependency
        return None
    if not OmegaConf.is_config(cfg):
        return None
    out: dict[str, Any] = {}
    for k in keys:
        if k not in cfg or cfg[k] is None:
            continue
        try:
            out[k] = OmegaConf.to_container(cfg[k], resolve=True)
        except Exception:  # interpolations that only resolve inside a Hydra run
            out[k] = OmegaConf.to_container(cfg[k], resolve=False)
    return out


def as_exportable(net: nn.Module) -> nn.Module:
    """The module to trace for ``net``: its export wrapper when the network family has one, else ``net``.

    :class:`~gnnreco.tasks.calo.model.CaloGravNet` → :class:`~gnnreco.export.calo.CaloExportNet`.
    """
    from gnnreco.export.adapters import adapter_for

    a = adapter_for(net)
    return a.wrap(net) if a is not None else net


def _as_tuple(o: Any, names: Sequence[str]) -> list[Tensor]:
    if isinstance(o, Tensor):
        return [o]
    if isinstance(o, Mapping):
        missing = [n for n in names if n not in o]
        if missing:
            raise KeyError(f"network output has no key(s) {missing}; it has {list(o)}")
        return [o[n] for n in names]
    return [v for v in o if isinstance(v, Tensor)]


def _dtype(t: Tensor | np.ndarray) -> str:
    return str(t.dtype).replace("torch.", "")


def _default_axes(names: Sequence[str], inputs: Sequence[Tensor], out_names: Sequence[str]) -> dict:
    axes: dict[str, dict[int, str]] = {}
    for n, t in zip(names, inputs):
        if t.dim() >= 1:
            # edge_index-like [2, E] tensors vary along their last axis; everything else along axis 0
            axis = t.dim() - 1 if (t.dim() == 2 and t.shape[0] == 2 and "index" in n) else 0
            axes[n] = {axis: f"{n}_len"}
    for n in out_names:
        axes[n] = {0: f"{n}_len"}
    return axes


def _symbolic(shape: Sequence[int], axes: Mapping[int, str] | None) -> list[int | str]:
    axes = {int(k): v for k, v in (axes or {}).items()}
    return [axes.get(i, int(s)) for i, s in enumerate(shape)]


def _compare(ref: Sequence[Tensor], got: Sequence[Tensor], names: Sequence[str], atol: float, rtol: float,
             what: str, outlier_fraction: float = 0.0) -> tuple[float, int]:
    """``(max |got - ref|, outlier rows)`` over outputs, checked against ``atol + rtol·max|ref_o|``.

    Rows (entries along axis 0) beyond tolerance are outliers; at most ``floor(outlier_fraction · rows)``
    of them are allowed per output and left out of the returned maximum (networks with a kNN in a
    learned space: a near-tie at the k-th neighbour, resolved differently by float reordering, changes a
    few hits). Shapes and integer outputs must match exactly.

    Raises:
        ExportMismatchError: a shape, a dtype kind or too many rows differ.
    """
    if len(ref) != len(got):
        raise ExportMismatchError(f"{what}: {len(got)} outputs, eager PyTorch gives {len(ref)}")
    worst, outliers = 0.0, 0
    for name, r, g in zip(names, ref, got):
        g = torch.as_tensor(g)
        if tuple(r.shape) != tuple(g.shape):
            raise ExportMismatchError(f"{what}: output {name!r} has shape {tuple(g.shape)}, eager {tuple(r.shape)}")
        if r.is_floating_point() != g.is_floating_point():
            raise ExportMismatchError(f"{what}: output {name!r} has dtype {g.dtype}, eager {r.dtype}")
        if r.numel() == 0:
            continue
        d = (g.double() - r.double()).abs()
        rows = d.reshape(d.shape[0], -1).amax(1) if d.dim() else d.reshape(1)
        tol = 0.0 if not r.is_floating_point() else atol + rtol * float(r.abs().max())
        bad = rows > tol
        n_bad = int(bad.sum())
        allowed = int(outlier_fraction * rows.numel()) if r.is_floating_point() else 0
        if n_bad > allowed:
            raise ExportMismatchError(
                f"{what}: output {name!r} differs from eager PyTorch by {float(rows.max()):.3g} > {tol:.3g} "
                f"in {n_bad} of {rows.numel()} rows (allowed: {allowed})")
        outliers = max(outliers, n_bad)
        kept = rows[~bad]
        worst = max(worst, float(kept.max()) if kept.numel() else 0.0)
    return worst, outliers


#: manifest keys that come from the traced program, never from a task's export_manifest()
_RESERVED = frozenset({"manifest_version", "model_class", "export_class", "gnnreco_version", "torch_version",
                       "onnx_opset", "created_utc", "config_hash", "files", "inputs", "outputs", "dynamic_axes", "tolerance",
                       "signature", "torchscript_device", "max_abs_diff", "outlier_rows", "max_outlier_fraction", "checked_input_shapes", "export_seconds", "config"})

def _ort_options() -> Any:
    """ONNX Runtime session options: errors only (the traced graphs declare some intermediate shapes
    loosely, which ORT reports as warnings on every run)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return so


_SYMBOLICS_DONE = False


def _register_onnx_symbolics(opset: int) -> None:
    """ONNX symbolics for ops the TorchScript-based exporter lacks (``aten::asinh`` → ``Asinh``)."""
    global _SYMBOLICS_DONE
    if _SYMBOLICS_DONE:
        return
    from torch.onnx import register_custom_op_symbolic

    def asinh(g, x):  # ONNX Asinh exists since opset 9
        return g.op("Asinh", x)

    for v in range(9, max(opset, 9) + 1):
        register_custom_op_symbolic("aten::asinh", asinh, v)
    _SYMBOLICS_DONE = True


def export_network(
    net: nn.Module,
    inputs: Sequence[Tensor],
    out_dir: str | os.PathLike,
    input_names: Sequence[str],
    output_names: Sequence[str] = ("output",),
    formats: Sequence[str] = FORMATS,
    opset: int = 17,
    extra_manifest: Mapping[str, Any] | None = None,
    cfg: Any = None,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    check_inputs: Sequence[Sequence[Tensor]] = (),
    device: str | torch.device = "cpu",
) -> dict:
    """Export ``net`` and return the manifest (also written to ``out_dir/manifest.json``).

    ``net`` is passed through :func:`as_exportable` (the export wrapper of the calo network). The
    eager reference is the wrapper's ``reference(*inputs)`` when it has one (the training-time network
    itself), else the traced module. Every exported program is loaded back from disk and run on
    ``inputs`` and on each of ``check_inputs`` (other sizes: this checks the dynamic axes); every output
    must have the eager shape, and floating outputs must agree within ``atol + rtol · max|eager output|``
    (float32 reductions are reordered by the exporters), integer outputs exactly. A wrapper may declare
    ``max_outlier_fraction`` (calo: kNN near-ties in a learned space), the fraction of rows allowed
    beyond tolerance. The largest absolute difference of the other rows per format goes into the
    manifest (``max_abs_diff``), the number of outlier rows into ``outlier_rows``.

    Args:
        net: a module with a tensor-only ``forward(*inputs)``.
        inputs: example inputs used for tracing.
        out_dir: directory of ``model.pt``, ``model.onnx`` and ``manifest.json`` (created).
        input_names / output_names: names of the positional inputs and outputs (the ONNX graph's names).
        formats: any of ``torchscript`` and ``onnx``.
        opset: ONNX opset.
        extra_manifest: task metadata merged into the manifest (``export_manifest()`` of the task).
        cfg: the run config (hashed into ``config_hash``; its task/data/model parts go to ``config``).
        atol, rtol: tolerance of the comparison with eager PyTorch.
        dynamic_axes: ``{name: {axis: symbol}}`` of the ONNX graph; default: axis 0 of everything
            (the last axis of ``[2, E]`` index tensors).
        check_inputs: more input tuples (other sizes) to run through every export.
        device: device the TorchScript program is traced on and runs on. Tracing freezes the device of
            tensors a network allocates itself (``torch.zeros(..., device=x.device)`` in the scatter
            ops), so a program for libtorch on a GPU must be traced on a GPU (``"cuda"``). The ONNX
            graph is device-free (any execution provider) and is always exported on the CPU.

    Raises:
        ValueError: unknown format or mismatched input names.
        ExportMismatchError: an exported program disagrees with eager PyTorch.
    """
    import gnnreco

    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; expected 'torchscript' and/or 'onnx'")
    if len(input_names) != len(inputs):
        raise ValueError(f"{len(inputs)} inputs but {len(input_names)} input_names {list(input_names)}")
    for i, extra in enumerate(check_inputs):
        if len(extra) != len(inputs):
            raise ValueError(f"check_inputs[{i}] has {len(extra)} tensors, expected {len(inputs)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trained = net
    net = as_exportable(net).eval().cpu()
    reference: Callable[..., Any] = getattr(net, "reference", net)
    outlier_fraction = float(getattr(net, "max_outlier_fraction", 0.0))
    input_sets = [tuple(t.detach().cpu() for t in inputs)] + [tuple(t.detach().cpu() for t in s) for s in check_inputs]
    inputs = input_sets[0]
    from gnnreco.nn.interaction_network import concatenated_edge_inputs

    # the reference in the arithmetic of the traced program (eager inference may take the first layer
    # of edge MLPs per node, equal only to float rounding: 1e-4 on logits of ~20)
    with torch.no_grad(), concatenated_edge_inputs():
        refs = [_as_tuple(reference(*s), output_names) for s in input_sets]
    ref = refs[0]
    if len(ref) != len(output_names):
        raise ValueError(f"the network returns {len(ref)} tensors but output_names has {len(output_names)}: "
                         f"{list(output_names)}")
    axes = {k: {int(a): s for a, s in v.items()} for k, v in
            (dynamic_axes or _default_axes(input_names, inputs, output_names)).items()}
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "task": None,
        "module_class": None,
        "model_class": f"{type(trained).__module__}.{type(trained).__qualname__}",
        "export_class": f"{type(net).__module__}.{type(net).__qualname__}",
        "gnnreco_version": gnnreco.__version__,
        "torch_version": torch.__version__,
        "onnx_opset": int(opset) if "onnx" in formats else None,
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config_hash": config_hash(cfg) if cfg is not None else None,
        "files": {},
        "inputs": [{"name": n, "dtype": _dtype(t), "shape": _symbolic(t.shape, axes.get(n)),
                    "example_shape": list(t.shape)} for n, t in zip(input_names, inputs)],
        "outputs": [{"name": n, "dtype": _dtype(t), "shape": _symbolic(t.shape, axes.get(n)),
                     "example_shape": list(t.shape),
                     "example_max_abs": float(t.abs().max()) if t.numel() else 0.0} for n, t in zip(output_names, ref)],
        "tolerance": {"atol": float(atol), "rtol": float(rtol)},
        "dynamic_axes": {k: {str(a): s for a, s in v.items()} for k, v in axes.items()},
        "signature": "forward(" + ", ".join(f"{n}: {_dtype(t)}{_symbolic(t.shape, axes.get(n))}"
                                            for n, t in zip(input_names, inputs)) + ") -> ("
                     + ", ".join(f"{n}: {_dtype(t)}{_symbolic(t.shape, axes.get(n))}"
                                 for n, t in zip(output_names, ref)) + ")",
        "features": {},
        "normalisation": {},
        "thresholds": {},
        "postprocessing": {},
        "max_abs_diff": {},
        "outlier_rows": {},
        "max_outlier_fraction": outlier_fraction,
        "checked_input_shapes": [[list(t.shape) for t in s] for s in input_sets],
        "export_seconds": {},
        "config": _plain_config(cfg),
    }
    clash = sorted(set(extra_manifest or {}) & _RESERVED)
    if clash:
        raise ValueError(f"extra_manifest may not set {clash}: export_network writes them from the traced program")
    manifest.update(dict(extra_manifest or {}))
    if "torchscript" in formats:
        path = out_dir / FILE_NAMES["torchscript"]
        dev = torch.device(device)
        t0 = time.perf_counter()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(net.to(dev), tuple(t.to(dev) for t in inputs), check_trace=False, strict=False)
        traced.save(str(path))
        manifest["export_seconds"]["torchscript"] = round(time.perf_counter() - t0, 3)
        manifest["torchscript_device"] = dev.type
        loaded = torch.jit.load(str(path), map_location=dev)
        with torch.no_grad():
            diffs = [_compare(r, [o.cpu() for o in _as_tuple(loaded(*(t.to(dev) for t in s)), output_names)],
                              output_names, atol, rtol,
                              f"TorchScript export, input shapes {[list(t.shape) for t in s]}", outlier_fraction)
                     for r, s in zip(refs, input_sets)]
        net = net.cpu()
        manifest["files"]["torchscript"] = path.name
        manifest["max_abs_diff"]["torchscript"] = max(d for d, _ in diffs)
        manifest["outlier_rows"]["torchscript"] = max(n for _, n in diffs)
    if "onnx" in formats:
        path = out_dir / FILE_NAMES["onnx"]
        _register_onnx_symbolics(opset)
        t0 = time.perf_counter()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, inputs, str(path), input_names=list(input_names),
                              output_names=list(output_names), opset_version=opset, dynamo=False,
                              dynamic_axes={k: dict(v) for k, v in axes.items()})
        manifest["export_seconds"]["onnx"] = round(time.perf_counter() - t0, 3)
        manifest["files"]["onnx"] = path.name
        try:
            import onnxruntime as ort
        except ImportError:
            log.warning("onnxruntime is not installed: %s was written but not checked", path)
        else:
            sess = ort.InferenceSession(str(path), _ort_options(), providers=["CPUExecutionProvider"])
            diffs = []
            for r, s in zip(refs, input_sets):
                got = sess.run(list(output_names), {n: t.numpy() for n, t in zip(input_names, s)})
                diffs.append(_compare(r, [torch.from_numpy(np.asarray(a)) for a in got], output_names, atol, rtol,
                                      f"ONNX export, input shapes {[list(t.shape) for t in s]}", outlier_fraction))
            manifest["max_abs_diff"]["onnx"] = max(d for d, _ in diffs)
            manifest["outlier_rows"]["onnx"] = max(n for _, n in diffs)
    tmp = out_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, default=str))
    os.replace(tmp, out_dir / "manifest.json")
    return manifest


def example_batches(cfg: Any, n: int, fallback_to_train: bool = True, cycle: bool = True) -> list[Any]:
    """``n`` one-event batches of the configured data for tracing and checking an export.

    Events come from the test split; a split with fewer than ``n`` events is cycled (``cycle``) or gives
    fewer batches. A test split with fewer than ``min(n, 2)`` events falls back to the training split
    when ``fallback_to_train``.

    Raises:
        ValueError: no event at all to trace with.
    """
    from torch_geometric.data import Batch

    from gnnreco.cli.common import build_datamodule

    dm = build_datamodule(cfg)
    dm.setup("test")
    ds = dm.dataset("test")
    if len(ds) < min(n, 2) and fallback_to_train:
        dm.setup("fit")
        ds = dm.dataset("train")
    if len(ds) == 0:
        raise ValueError("the data split is empty; an example event is needed to trace the network")
    m = n if cycle else min(n, len(ds))
    return [Batch.from_data_list([ds[i % len(ds)]]) for i in range(m)]


def export_task(module: nn.Module, batch: Any, out_dir: str | os.PathLike, formats: Sequence[str] | None = None,
                opset: int = 17, cfg: Any = None, check_batches: Sequence[Any] = (), **kwargs: Any) -> dict:
    """Export a task module's network from one example ``batch`` (``gnnreco export``).

    Uses the module's export hooks (:class:`~gnnreco.tasks.base.GraphTaskModule`); ``formats`` defaults
    to every format the task supports, and a requested format the task does not support raises.
    ``check_batches`` are more example batches (other sizes) every export is checked on.
    """
    supported = tuple(getattr(module, "export_formats", FORMATS))
    formats = tuple(formats) if formats is not None else supported
    missing = [f for f in formats if f not in supported]
    if missing:
        raise ValueError(f"{type(module).__name__} cannot be exported to {missing}; it supports {list(supported)}")
    from gnnreco.export.adapters import manifest_sections

    module.eval()
    extra = manifest_sections(module)
    extra.update(module.export_manifest() if hasattr(module, "export_manifest") else {})
    extra.setdefault("module_class", f"{type(module).__module__}.{type(module).__qualname__}")
    return export_network(
        module.net, module.export_inputs(batch), out_dir, input_names=tuple(module.export_input_names),
        output_names=tuple(getattr(module, "export_output_names", ("output",))), formats=formats, opset=opset,
        extra_manifest=extra, cfg=cfg, dynamic_axes=getattr(module, "export_dynamic_axes", None),
        check_inputs=[module.export_inputs(b) for b in check_batches], **kwargs)


class ExportedModel:
    """An export directory loaded for inference: ``model(*tensors)`` or ``model(name=tensor, ...)``.

    Args:
        path: the export directory (or its ``manifest.json``).
        backend: ``"torchscript"`` (``torch.jit.load``), ``"onnx"`` (ONNX Runtime, CPU provider unless
            ``providers`` or ``device`` says otherwise) or ``"auto"`` (TorchScript when present).
        providers: ONNX Runtime execution providers.
        device: where the caller's tensors live; ``cuda`` selects ONNX Runtime's CUDA provider when it is
            installed (TorchScript programs run on the device they were traced for).

    Returns from a call: ``{output name: torch.Tensor}`` in manifest order (TorchScript: on the device the
    program was traced for, ``manifest["torchscript_device"]``; ONNX: on the CPU).
    """

    def __init__(self, path: str | os.PathLike, backend: str = "torchscript",
                 providers: Sequence[str] | None = None, device: str | torch.device | None = None) -> None:
        path = Path(path)
        mpath = path if path.name == "manifest.json" else path / "manifest.json"
        if not mpath.exists():
            raise FileNotFoundError(f"{mpath}: no manifest.json (not a `gnnreco export` directory)")
        self.manifest: dict[str, Any] = json.loads(mpath.read_text())
        version = self.manifest.get("manifest_version")
        if version != MANIFEST_VERSION:
            raise ValueError(f"{mpath}: manifest_version {version!r}; this gnnreco reads version {MANIFEST_VERSION}")
        files = self.manifest.get("files", {})
        if backend == "auto":
            backend = "torchscript" if "torchscript" in files else "onnx"
        if backend not in files:
            raise ValueError(f"{mpath}: no {backend!r} export in this directory (it has {sorted(files)})")
        self.backend = backend
        self.file = mpath.parent / files[backend]
        self.input_names = [i["name"] for i in self.manifest["inputs"]]
        self.output_names = [o["name"] for o in self.manifest["outputs"]]
        if not self.file.exists():
            raise FileNotFoundError(f"{self.file}: listed in {mpath} but missing")
        want = torch.device(device) if device is not None else None
        if backend == "torchscript":
            # A traced program keeps the device it was traced on in its constants.
            self.device = torch.device(self.manifest.get("torchscript_device") or "cpu")
            if want is not None and want.type != self.device.type:
                log.warning("%s was traced on %s; it runs there, not on %s (export with device=%s)",
                            self.file, self.device, want, want.type)
            self._ts = torch.jit.load(str(self.file), map_location=self.device)
        else:
            import onnxruntime as ort

            self.device = torch.device("cpu")
            if providers is None:
                providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] \
                    if want is not None and want.type == "cuda" else ["CPUExecutionProvider"]
            avail = set(ort.get_available_providers())
            self._sess = ort.InferenceSession(str(self.file), _ort_options(),
                                              providers=[p for p in providers if p in avail] or ["CPUExecutionProvider"])

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        if args and kwargs:
            raise TypeError("pass the inputs either positionally or by name, not both")
        if kwargs:
            missing = [n for n in self.input_names if n not in kwargs]
            if missing:
                raise TypeError(f"missing export input(s) {missing}; the export takes {self.input_names}")
            args = tuple(kwargs[n] for n in self.input_names)
        if len(args) != len(self.input_names):
            raise TypeError(f"the export takes {len(self.input_names)} inputs {self.input_names}, got {len(args)}")
        spec = self.manifest["inputs"]
        tensors = []
        for a, s in zip(args, spec):
            t = torch.as_tensor(a)
            want = getattr(torch, s["dtype"])
            if t.dtype != want:
                raise TypeError(f"export input {s['name']!r} must be {s['dtype']}, got {_dtype(t)}")
            if t.dim() != len(s["shape"]):
                raise ValueError(f"export input {s['name']!r} must have shape {s['shape']}, got {list(t.shape)}")
            tensors.append(t)
        if self.backend == "torchscript":
            with torch.no_grad():
                out = _as_tuple(self._ts(*(t.to(self.device) for t in tensors)), self.output_names)
        else:
            got = self._sess.run(self.output_names, {n: t.cpu().numpy() for n, t in zip(self.input_names, tensors)})
            out = [torch.from_numpy(np.asarray(a)) for a in got]
        return dict(zip(self.output_names, out))


def load_export(path: str | os.PathLike, backend: str = "torchscript", **kwargs: Any) -> ExportedModel:
    """Load an export directory written by :func:`export_network` (see :class:`ExportedModel`)."""
    return ExportedModel(path, backend=backend, **kwargs)
