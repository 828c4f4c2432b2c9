"""TorchScript / ONNX export of a task network, with a manifest.

Every task network has a tensor-only ``forward`` (DESIGN.md §6). A task module says which tensors feed
it through ``export_inputs(batch) -> tuple[Tensor, ...]`` and ``export_input_names``; this module
traces the network once per format, checks the exported program against eager PyTorch on the same
inputs, and writes a ``manifest.json`` with input names, shapes and dtypes, the task's own metadata
(feature names, normalisation, thresholds: ``export_manifest()``), the versions and a config hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = ["export_network", "config_hash"]


def config_hash(cfg: Any) -> str:
    """Short SHA-256 of a config (OmegaConf or any JSON-serialisable object)."""
    try:
        from omegaconf import OmegaConf

        text = OmegaConf.to_yaml(cfg, resolve=False) if OmegaConf.is_config(cfg) else json.dumps(cfg, sort_keys=True, default=str)
    except Exception:
        text = repr(cfg)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _outputs(o) -> list[Tensor]:
    if isinstance(o, Tensor):
        return [o]
    if isinstance(o, dict):
        return [v for v in o.values() if isinstance(v, Tensor)]
    return [v for v in o if isinstance(v, Tensor)]


def _dynamic_axes(names: Sequence[str], inputs: Sequence[Tensor], out_names: Sequence[str]) -> dict:
    axes: dict[str, dict[int, str]] = {}
    for n, t in zip(names, inputs):
        if t.dim() >= 1:
            # edge_index-like [2, E] tensors vary along their last axis; everything else along axis 0
            axis = t.dim() - 1 if (t.dim() == 2 and t.shape[0] == 2 and "index" in n) else 0
            axes[n] = {axis: f"{n}_len"}
    for n in out_names:
        axes[n] = {0: f"{n}_len"}
    return axes


def export_network(
    net: nn.Module,
    inputs: Sequence[Tensor],
    out_dir: str | os.PathLike,
    input_names: Sequence[str],
    output_names: Sequence[str] = ("output",),
    formats: Sequence[str] = ("torchscript", "onnx"),
    opset: int = 17,
    extra_manifest: dict | None = None,
    cfg: Any = None,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> dict:
    """Export ``net`` and return the manifest (also written to ``out_dir/manifest.json``).

    Each exported program is run on ``inputs`` and must match eager PyTorch within
    ``atol + rtol * max|eager|`` (float32 reductions such as a standard deviation are reordered by the
    exporters); the measured maximum absolute difference is recorded in the manifest.

    ``dynamic_axes`` (ONNX) defaults to "axis 0 of every input and output varies" (the last axis of
    ``[2, E]`` index tensors); tasks with padded ``[B, N, F]`` inputs pass their own.

    Raises:
        ValueError: unknown format or mismatched input names.
        RuntimeError: an exported program disagrees with eager PyTorch beyond ``atol``.
    """
    import gnnreco

    unknown = set(formats) - {"torchscript", "onnx"}
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; expected 'torchscript' and/or 'onnx'")
    if len(input_names) != len(inputs):
        raise ValueError(f"{len(inputs)} inputs but {len(input_names)} input_names")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net = net.eval().cpu()
    inputs = tuple(t.cpu() for t in inputs)
    with torch.no_grad():
        ref = _outputs(net(*inputs))
    scale = max((float(r.abs().max()) for r in ref if r.numel() and r.is_floating_point()), default=0.0)
    tol = atol + rtol * scale
    manifest: dict[str, Any] = {
        "gnnreco_version": gnnreco.__version__,
        "torch_version": torch.__version__,
        "model_class": f"{type(net).__module__}.{type(net).__qualname__}",
        "config_hash": config_hash(cfg) if cfg is not None else None,
        "inputs": [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                   for n, t in zip(input_names, inputs)],
        "outputs": [{"name": n, "dtype": str(t.dtype).replace("torch.", "")} for n, t in zip(output_names, ref)],
        "files": {},
        "max_abs_diff": {},
    }
    manifest.update(extra_manifest or {})
    if "torchscript" in formats:
        path = out_dir / "model.pt"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(net, inputs, check_trace=False, strict=False)
        traced.save(str(path))
        loaded = torch.jit.load(str(path))
        with torch.no_grad():
            got = _outputs(loaded(*inputs))
        diff = max((float((a - b).abs().max()) if a.numel() else 0.0) for a, b in zip(ref, got))
        if diff > tol:
            raise RuntimeError(f"TorchScript export differs from eager by {diff:.3g} > {tol:.3g}")
        manifest["files"]["torchscript"] = path.name
        manifest["max_abs_diff"]["torchscript"] = diff
    if "onnx" in formats:
        path = out_dir / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, inputs, str(path), input_names=list(input_names),
                              output_names=list(output_names), opset_version=opset, dynamo=False,
                              dynamic_axes=dynamic_axes or _dynamic_axes(input_names, inputs, output_names))
        manifest["files"]["onnx"] = path.name
        manifest["opset"] = opset
        manifest["dynamic_axes"] = dynamic_axes or _dynamic_axes(input_names, inputs, output_names)
        try:
            import onnxruntime as ort
        except ImportError:
            log.warning("onnxruntime is not installed: the ONNX file was written but not checked")
        else:
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            feeds = {n: t.numpy() for n, t in zip(input_names, inputs)}
            got = [torch.from_numpy(a) for a in sess.run(None, feeds)]
            diff = max((float((a - b).abs().max()) if a.numel() else 0.0) for a, b in zip(ref, got))
            if diff > tol:
                raise RuntimeError(f"ONNX export differs from eager by {diff:.3g} > {tol:.3g}")
            manifest["max_abs_diff"]["onnx"] = diff
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    return manifest
