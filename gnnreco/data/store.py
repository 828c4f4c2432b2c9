"""One on-disk format for processed events of every task.

An *event* is a flat mapping ``name -> array``. Each array may have any dtype and any shape; its
first axis is ragged across events (hits, edges, particles, or a single row for event-level values).

Edge indices (keys named ``edge_index`` or ending in ``_edge_index``) follow the PyG convention
``[2, E]`` in memory; the store keeps them as ``[E, 2]`` so that their ragged axis comes first, and
hands them back as ``[2, E]``.

A store is a directory::

    store/
      meta.json              schema version, task, key list, dtypes, trailing shapes, shard table
      shard-00000.pt         {name: concatenated tensor, name + ".ptr": int64 offsets [n_events+1]}
      shard-00001.pt
      ...

Shards are written with :func:`torch.save` and read back with ``torch.load(mmap=True)``, so opening a
store touches no event data, and reading event *i* is one slice per key (no copy, no unpickling of
Python objects). This is what makes the reader reach thousands of small events per second on one
core (``gnnreco bench io``).

Writing is atomic per shard (temporary file + rename) and ``meta.json`` is written last, so an
interrupted write never leaves a store that looks complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["SCHEMA_VERSION", "EventStoreWriter", "EventStore", "write_events", "StoreError", "is_pair_index"]

SCHEMA_VERSION = 1
_META = "meta.json"


class StoreError(RuntimeError):
    """A store is missing, incomplete, of another schema version, or an event does not match it."""


def is_pair_index(name: str) -> bool:
    """Keys stored edge-major (``[E, 2]`` on disk, ``[2, E]`` in memory)."""
    return name == "edge_index" or name.endswith("_edge_index")


def _as_tensor(name: str, value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
    else:
        arr = np.asarray(value)
        if arr.dtype == object:
            raise StoreError(f"event key '{name}': object arrays cannot be stored (got dtype=object)")
        if arr.dtype.kind in "US":
            raise StoreError(f"event key '{name}': string arrays cannot be stored; encode them as integers")
        arr = np.ascontiguousarray(arr)
        if not arr.flags.writeable:
            arr = arr.copy()
        t = torch.from_numpy(arr)
    if t.dim() == 0:
        t = t.reshape(1)
    if is_pair_index(name):
        if t.dim() != 2 or t.shape[0] != 2:
            raise StoreError(f"event key '{name}': an edge index must have shape [2, E], got {tuple(t.shape)}")
        t = t.t()
    return t.contiguous()


@dataclass
class _KeySpec:
    dtype: torch.dtype
    trailing: tuple[int, ...]


def _atomic_torch_save(obj, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class EventStoreWriter:
    """Write events into a sharded store.

    Args:
        path: store directory (created).
        task: task name recorded in the metadata (``tracking``, ``calo``, ...).
        shard_size: events per shard.
        attrs: free-form JSON-serialisable metadata (generator config, seeds, feature names ...).

    Every event must carry the same keys with the same dtypes and trailing shapes as the first one;
    a mismatch raises :class:`StoreError` naming the key, so nothing is dropped silently.
    """

    def __init__(self, path: str | os.PathLike, task: str, shard_size: int = 1000, attrs: dict | None = None):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        if (self.path / _META).exists():
            raise StoreError(f"{self.path} already holds a complete event store; refusing to overwrite it")
        self.task = task
        self.shard_size = shard_size
        self.attrs = dict(attrs or {})
        self._specs: dict[str, _KeySpec] | None = None
        self._buffer: list[dict[str, torch.Tensor]] = []
        self._shards: list[dict] = []
        self._n = 0

    def append(self, event: Mapping[str, object]) -> None:
        tensors = {k: _as_tensor(k, v) for k, v in event.items()}
        if self._specs is None:
            if not tensors:
                raise StoreError("cannot store an event with no keys")
            self._specs = {k: _KeySpec(t.dtype, tuple(t.shape[1:])) for k, t in tensors.items()}
        else:
            missing = set(self._specs) - set(tensors)
            extra = set(tensors) - set(self._specs)
            if missing or extra:
                raise StoreError(
                    f"event {self._n}: keys differ from the first event (missing {sorted(missing)}, "
                    f"unexpected {sorted(extra)})"
                )
            for k, t in tensors.items():
                spec = self._specs[k]
                if t.dtype != spec.dtype or tuple(t.shape[1:]) != spec.trailing:
                    raise StoreError(
                        f"event {self._n}: key '{k}' has dtype {t.dtype} and trailing shape "
                        f"{tuple(t.shape[1:])}, expected {spec.dtype} and {spec.trailing}"
                    )
        self._buffer.append(tensors)
        self._n += 1
        if len(self._buffer) >= self.shard_size:
            self._flush()

    def extend(self, events: Iterable[Mapping[str, object]]) -> None:
        for ev in events:
            self.append(ev)

    def _flush(self) -> None:
        if not self._buffer:
            return
        assert self._specs is not None
        shard: dict[str, torch.Tensor] = {}
        for k in self._specs:
            parts = [ev[k] for ev in self._buffer]
            lengths = torch.tensor([p.shape[0] for p in parts], dtype=torch.long)
            ptr = torch.zeros(len(parts) + 1, dtype=torch.long)
            torch.cumsum(lengths, 0, out=ptr[1:])
            shard[k] = torch.cat(parts, 0)
            shard[k + ".ptr"] = ptr
        name = f"shard-{len(self._shards):05d}.pt"
        _atomic_torch_save(shard, self.path / name)
        self._shards.append({"file": name, "n_events": len(self._buffer)})
        self._buffer = []

    def close(self) -> Path:
        """Flush the last shard and write ``meta.json`` (which marks the store complete)."""
        self._flush()
        if self._specs is None:
            raise StoreError(f"no events were written to {self.path}")
        meta = {
            "schema_version": SCHEMA_VERSION,
            "task": self.task,
            "n_events": self._n,
            "keys": {k: {"dtype": str(s.dtype).replace("torch.", ""), "trailing": list(s.trailing)}
                     for k, s in self._specs.items()},
            "shards": self._shards,
            "attrs": self.attrs,
        }
        tmp = self.path / (_META + ".tmp")
        tmp.write_text(json.dumps(meta, indent=1, default=str))
        os.replace(tmp, self.path / _META)
        return self.path

    def __enter__(self) -> EventStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def write_events(path: str | os.PathLike, events: Iterable[Mapping[str, object]], task: str,
                 shard_size: int = 1000, attrs: dict | None = None) -> Path:
    """Write an iterable of events to a new store and return its path."""
    w = EventStoreWriter(path, task=task, shard_size=shard_size, attrs=attrs)
    w.extend(events)
    return w.close()


class EventStore:
    """Lazy, random-access reader of a store written by :class:`EventStoreWriter`.

    ``store[i]`` returns a dict of tensors (views into memory-mapped shards). ``len(store)`` is the
    number of events. Shards are opened on first use, so a DataLoader worker opens only what it reads.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / _META
        if not self.path.exists():
            raise FileNotFoundError(f"event store '{self.path}' does not exist")
        if not meta_path.exists():
            raise StoreError(
                f"'{self.path}' is not a complete event store: '{_META}' is missing (interrupted write?)"
            )
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"'{meta_path}' is not valid JSON: {exc}") from exc
        version = self.meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"'{self.path}' has schema version {version}, this gnnreco reads version {SCHEMA_VERSION}"
            )
        self.task: str = self.meta["task"]
        self.keys: list[str] = list(self.meta["keys"])
        counts = [s["n_events"] for s in self.meta["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._shards: list[dict[str, torch.Tensor] | None] = [None] * len(counts)

    @property
    def attrs(self) -> dict:
        return self.meta.get("attrs", {})

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _shard(self, s: int) -> dict[str, torch.Tensor]:
        sh = self._shards[s]
        if sh is None:
            f = self.path / self.meta["shards"][s]["file"]
            try:
                sh = torch.load(f, mmap=True, weights_only=True)
            except FileNotFoundError as exc:
                raise StoreError(f"shard '{f}' listed in meta.json is missing") from exc
            except Exception as exc:  # corrupt pickle/zip
                raise StoreError(f"shard '{f}' cannot be read: {exc}") from exc
            # Plain-python offsets: slicing with ints is much faster than with 0-d tensors.
            sh = {k: (v.tolist() if k.endswith(".ptr") else v) for k, v in sh.items()}
            self._shards[s] = sh
        return sh

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"event index {i} out of range for a store of {n} events ({self.path})")
        s = int(np.searchsorted(self._starts, i, side="right") - 1)
        j = i - int(self._starts[s])
        sh = self._shard(s)
        out = {}
        for k in self.keys:
            ptr = sh[k + ".ptr"]
            v = sh[k][ptr[j]:ptr[j + 1]]
            out[k] = v.t() if is_pair_index(k) else v
        return out

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"EventStore('{self.path}', task={self.task!r}, n_events={len(self)}, keys={self.keys})"
