"""``gnnreco infer``: reconstruct events with a trained model and write the results (docs/inference.md).

Inputs are ROOT TTrees with jagged branches, parquet files, TrackML CSV directories or gnnreco event
stores (``input=``; the test split of the configured data when unset), read through the task's input
schema (``io=<task>``, branch names mappable). Every event runs the task's full chain through a
:class:`gnnreco.Reconstructor` built from a checkpoint (``ckpt_path``) or an export (``export_path``):
graph building, network (on the GPU when one is present), post-processing.

Results stream out in chunks of ``chunk_size`` events (bounded memory) through
:class:`gnnreco.io.ChunkedOutput`: each chunk is written to a temporary file and renamed, and the final
ROOT/parquet file is merged and renamed at the end, so a crash never leaves a partial output and a
rerun with the same settings resumes after the last complete chunk. A progress bar shows events/s; the
throughput and memory per chunk go to ``stats_file``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from gnnreco.cli.common import build_datamodule, load_trained
from gnnreco.utils.progress import progress_iter

log = logging.getLogger("gnnreco")

__all__ = ["run_infer", "build_reconstructor", "input_schema", "rss_mb"]


def rss_mb() -> tuple[float, float]:
    """Current and peak resident memory of this process in MiB (``/proc/self/status``; else psutil)."""
    try:
        txt = Path("/proc/self/status").read_text()
        vals = {line.split(":")[0]: float(line.split()[1]) / 1024.0 for line in txt.splitlines()
                if line.startswith(("VmRSS", "VmHWM"))}
        return vals.get("VmRSS", float("nan")), vals.get("VmHWM", float("nan"))
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024.0 if sys.platform != "darwin" else 1024.0 ** 2)
        return float("nan"), peak


def _file_id(path: str | os.PathLike) -> dict:
    p = Path(path)
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime": int(st.st_mtime)}


def _explicit_io(cfg: DictConfig) -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig

        return any(o.lstrip("+~").startswith("io=") for o in HydraConfig.get().overrides.task)
    except Exception:
        return False


def input_schema(cfg: DictConfig, task: str):
    """The task's :class:`~gnnreco.io.InputSchema` from ``cfg.io`` (reselected when the checkpoint's
    task differs from the one the defaults chose)."""
    from gnnreco.cli.config import CONF_DIR
    from gnnreco.io.schema import DEFAULT_FIELDS, InputSchema

    io_cfg = cfg.get("io")
    if io_cfg is not None and io_cfg.get("task") not in (None, task):
        if _explicit_io(cfg):
            raise ValueError(f"io={io_cfg.task} was selected but the model is a '{task}' model; use io={task}")
        log.warning("the model is a '%s' model: using the input schema conf/io/%s.yaml instead of io=%s",
                    task, task, io_cfg.task)
        io_cfg = None
    if io_cfg is None:
        f = CONF_DIR / "io" / f"{task}.yaml"
        if f.exists():
            io_cfg = OmegaConf.load(f)
        elif task not in DEFAULT_FIELDS:
            return None
    return InputSchema.from_config(io_cfg, task=task)


def build_reconstructor(cfg: DictConfig):
    """A :class:`gnnreco.Reconstructor` from ``export_path`` or ``ckpt_path``; returns ``(rec, cfg, model_id)``."""
    from gnnreco.reco import Reconstructor

    kw: dict[str, Any] = {"device": cfg.get("device", "auto"), "keep_edges": bool(cfg.get("keep_edges", False))}
    if cfg.get("export_path"):
        exp = Path(cfg.export_path)
        mpath = exp / "manifest.json"
        if not mpath.exists():
            raise FileNotFoundError(f"export_path '{exp}' has no manifest.json (run gnnreco export first)")
        manifest = json.loads(mpath.read_text())
        own = isinstance(manifest.get("config"), dict) or (exp / "config.yaml").exists()
        rec = Reconstructor.from_export(exp, config=None if own else cfg, backend=cfg.get("export_backend", "auto"), **kw)
        if own:  # the export's task/data/model configs describe the exported model
            from omegaconf import open_dict

            with open_dict(cfg):
                for k in ("task", "data", "model"):
                    if k in rec.config:
                        cfg[k] = rec.config[k]
        return rec, cfg, {"export": _file_id(mpath)}
    if not cfg.get("ckpt_path"):
        raise ValueError("gnnreco infer needs ckpt_path=<checkpoint> (or ckpt_path=last) or export_path=<export dir>")
    cfg, model, ckpt = load_trained(cfg, "infer")
    rec = Reconstructor.from_config(cfg, module=model, **kw)
    return rec, cfg, {"checkpoint": _file_id(ckpt)}


def _open_reader(cfg: DictConfig, schema):
    from gnnreco.io.readers import StoreReader, open_input

    if cfg.get("input"):
        inputs = cfg.input
        if OmegaConf.is_list(inputs):
            inputs = [str(i) for i in inputs]
        return open_input(inputs, schema, fmt=cfg.get("input_format", "auto"), step_size=int(cfg.chunk_size))
    dm = build_datamodule(cfg)
    dm.setup("test")
    return StoreReader(dm.store, dm.split_indices["test"])


def run_infer(cfg: DictConfig) -> Path:
    from gnnreco.io.output import ChunkedOutput

    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    t_start = time.perf_counter()
    rss0 = rss_mb()
    rec, cfg, model_id = build_reconstructor(cfg)
    schema = input_schema(cfg, rec.task)
    reader = _open_reader(cfg, schema)
    n_total = len(reader)
    if cfg.get("max_events") is not None:
        n_total = min(n_total, int(cfg.max_events))
    fingerprint = {
        "task": rec.task,
        "model": model_id,
        "inputs": reader.describe(),
        "schema": asdict(schema) if schema is not None else None,
        "max_events": cfg.get("max_events"),
        "keep_edges": bool(cfg.get("keep_edges", False)),
    }
    out = ChunkedOutput(cfg.output, fingerprint=fingerprint, chunk_size=int(cfg.chunk_size),
                        fmt=cfg.get("output_format", "auto"), tree=str(cfg.get("output_tree", "reco")),
                        resume=bool(cfg.get("resume", True)), overwrite=bool(cfg.get("overwrite", False)))
    start = out.open()
    log.info("%s on %s: %d events from %s (%d already written)", rec, rec.device, n_total, reader.path, start)
    chunks: list[dict] = []
    n_new = n_rejected = 0
    t_loop = time.perf_counter()
    t_chunk = t_loop
    events = islice(reader.iterate(start), max(0, n_total - start))
    # seconds to sleep after each event: lets tests kill a run mid-way deterministically
    delay = float(os.environ.get("GNNRECO_INFER_EVENT_DELAY", "0") or 0)
    for ev in progress_iter(events, total=max(0, n_total - start), desc="inference", unit="events",
                            enabled=bool(cfg.get("progress", True))):
        cols = rec.reco(ev.data, kind=ev.kind)
        if cols is None:
            n_rejected += 1
        out.add(ev.run, ev.event, cols, ok=cols is not None)
        n_new += 1
        if delay:
            time.sleep(delay)
        if out.pending == 0:  # a chunk was just written
            now = time.perf_counter()
            rss, peak = rss_mb()
            chunks.append({"events_done": out.n_done, "seconds": now - t_chunk, "rss_mb": rss, "peak_rss_mb": peak})
            t_chunk = now
    t_reco = time.perf_counter() - t_loop
    tail = out.pending
    path = out.finalize()
    rss, peak = rss_mb()
    if tail:  # the last, partial chunk was written by finalize
        chunks.append({"events_done": out.n_done, "seconds": time.perf_counter() - t_chunk, "rss_mb": rss,
                       "peak_rss_mb": peak})
    stats = {
        "events": n_new, "events_resumed": start, "rejected": n_rejected, "seconds_reco": t_reco,
        "seconds_total": time.perf_counter() - t_start, "events_per_s": n_new / t_reco if t_reco > 0 else float("nan"),
        "rss_start_mb": rss0[0], "rss_end_mb": rss, "peak_rss_mb": peak, "chunks": chunks,
        "device": str(rec.device), "output": str(path),
    }
    if cfg.get("stats_file"):
        sp = Path(cfg.stats_file)
        sp.parent.mkdir(parents=True, exist_ok=True)
        tmp = sp.with_name(sp.name + ".tmp")
        tmp.write_text(json.dumps(stats, indent=1))
        os.replace(tmp, sp)
    if n_rejected:
        log.warning("%d of %d events were rejected by the processor (written with ok=false)", n_rejected, n_new)
    print(f"wrote {out.n_done} reconstructed events to {path} ({n_new} new, {start} resumed; "
          f"{stats['events_per_s']:.1f} events/s on {rec.device}; peak RSS {peak:.0f} MiB)")
    return path
