"""Reader (and a small writer, for tests) of the public DFEI dataset layout.

The DFEI datasets (Zenodo 7799170, and the HGNN one, Zenodo 15584745) store one event as two pickled
dictionaries, ``input_<i>.npy`` and ``target_<i>.npy``:

* input: ``nodes`` ``[N, 13]`` (origin, momentum, min-IP PV, charge, true reconstructed PV),
  ``edges`` ``[E, 4]`` (θ, d⊥P, Δz, same-PV flag), ``senders``/``receivers`` ``[E]`` (directed,
  fully connected), ``globals`` (number of PVs);
* target: ``edges`` ``[E, 4]`` one-hot LCA classes, plus optional truth extras.

:func:`read_event` turns a pair into the raw-event dict of :mod:`gnnreco.sim.lhcb` (``x``, ``lca``),
so :func:`gnnreco.tasks.dfei.data.process_event` handles both. The files are pickles: only read
files from a source you trust.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["list_events", "read_event", "iter_events", "write_event", "convert_to_store"]

_INPUT = re.compile(r"^input_(\d+)\.npy$")


def list_events(directory: str | Path) -> list[int]:
    """Sorted event numbers ``i`` for which both ``input_i.npy`` and ``target_i.npy`` exist."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"DFEI dataset directory '{d}' does not exist")
    out = []
    for p in d.iterdir():
        m = _INPUT.match(p.name)
        if m and (d / f"target_{m.group(1)}.npy").exists():
            out.append(int(m.group(1)))
    return sorted(out)


def _load_dict(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"DFEI file '{path}' does not exist")
    obj = np.load(path, allow_pickle=True)
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, Mapping):
        raise ValueError(f"DFEI file '{path}': expected a pickled dict, got {type(obj).__name__}")
    return dict(obj)


def read_event(directory: str | Path, index: int) -> dict[str, Any]:
    """Read event ``index`` as a raw DFEI event (``x`` ``[N, 13]``, dense ``lca`` ``[N, N]``, ``n_pv``).

    Raises:
        ValueError: naming the file and key when a key is missing or shapes disagree.
    """
    d = Path(directory)
    fin, ftg = d / f"input_{index}.npy", d / f"target_{index}.npy"
    inp, tgt = _load_dict(fin), _load_dict(ftg)
    for key in ("nodes", "senders", "receivers"):
        if key not in inp:
            raise ValueError(f"DFEI file '{fin}': missing key '{key}' (has {sorted(inp)})")
    if "edges" not in tgt:
        raise ValueError(f"DFEI file '{ftg}': missing key 'edges' (has {sorted(tgt)})")
    x = np.asarray(inp["nodes"], dtype=np.float32).reshape(len(inp["nodes"]), -1)
    n = x.shape[0]
    s = np.asarray(inp["senders"], dtype=np.int64).reshape(-1)
    r = np.asarray(inp["receivers"], dtype=np.int64).reshape(-1)
    y = np.asarray(tgt["edges"])
    if y.ndim == 2:
        if y.shape[1] != 4:
            raise ValueError(f"DFEI file '{ftg}': key 'edges' must be one-hot [E, 4], got {y.shape}")
        cls = y.argmax(1)
    else:
        cls = y.astype(np.int64)
    if not (len(s) == len(r) == len(cls)):
        raise ValueError(f"DFEI event {index}: senders ({len(s)}), receivers ({len(r)}) and target edges "
                         f"({len(cls)}) must have the same length")
    if len(s) and (s.max() >= n or r.max() >= n or s.min() < 0 or r.min() < 0):
        raise ValueError(f"DFEI event {index}: an edge refers to a node outside [0, {n})")
    lca = np.zeros((n, n), dtype=np.int64)
    lca[s, r] = cls
    # the files may carry one direction only: complete the symmetric matrix
    lca = np.maximum(lca, lca.T)
    glob = np.asarray(inp.get("globals", [len(np.unique(x[:, 6:9], axis=0))])).reshape(-1)
    return {"x": x, "lca": lca, "n_pv": int(glob[0]) if len(glob) else 0,
            "edges": np.asarray(inp.get("edges", np.zeros((0, 4))), dtype=np.float32)}


def iter_events(directory: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(i, raw event)`` for every complete event of a directory, in order."""
    for i in list_events(directory):
        yield i, read_event(directory, i)


def write_event(directory: str | Path, index: int, x: np.ndarray, lca: np.ndarray) -> None:
    """Write one event in the DFEI layout (fully connected directed graph, one-hot targets).

    Edge features are computed with :func:`gnnreco.tasks.dfei.data.edge_features`.
    """
    import torch

    from gnnreco.tasks.dfei.data import edge_features

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    s, r = np.nonzero(~np.eye(n, dtype=bool))
    e = edge_features(torch.from_numpy(x), torch.from_numpy(np.stack([s, r]))).numpy() if n else np.zeros((0, 4))
    onehot = np.eye(4, dtype=np.float32)[np.asarray(lca)[s, r]]
    n_pv = len(np.unique(x[:, 6:9], axis=0)) if n else 0
    np.save(d / f"input_{index}.npy", np.array({"nodes": x, "edges": e.astype(np.float32), "senders": s,
                                                 "receivers": r, "globals": np.array([n_pv])}, dtype=object))
    np.save(d / f"target_{index}.npy", np.array({"edges": onehot}, dtype=object))


def convert_to_store(directory: str | Path, out_dir: str | Path, shard_size: int = 500) -> Path:
    """Convert a DFEI dataset directory into a gnnreco event store (task ``dfei``)."""
    from gnnreco.data.store import EventStoreWriter
    from gnnreco.tasks.dfei.data import process_event

    writer = EventStoreWriter(out_dir, task="dfei", shard_size=shard_size, attrs={"source": str(directory)})
    for i, raw in iter_events(directory):
        ev = process_event(raw)
        ev["event_seed"] = np.array([i], dtype=np.int64)
        writer.append(ev)
    return writer.close()
