"""Event readers for ``gnnreco infer``: ROOT TTrees (uproot), parquet (awkward/pyarrow), TrackML CSV
directories and gnnreco event stores, all streamed in chunks.

Every reader is opened *before* any work starts: files are listed, each file is checked for every
required branch of the :class:`~gnnreco.io.schema.InputSchema` (a missing one raises
:class:`~gnnreco.io.schema.MissingBranchError` naming the branch and the file) and the number of
events is read from the metadata. Iterating then reads ``step_size`` events at a time and hands out one
:class:`InputEvent` per event, so memory is bounded by one chunk whatever the file size.

``iterate(start)`` begins at global event position ``start`` (over all files, in order) without
reading what comes before; a resumed ``gnnreco infer`` uses it to skip the chunks already written.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gnnreco.io.schema import InputSchema, MissingBranchError

__all__ = [
    "InputEvent",
    "EventReader",
    "RootReader",
    "ParquetReader",
    "TrackMLReader",
    "StoreReader",
    "MultiReader",
    "open_input",
    "expand_inputs",
    "detect_format",
    "write_input_file",
]


@dataclass
class InputEvent:
    """One input event.

    Attributes:
        run: run number.
        event: event number.
        data: logical fields (``kind="fields"``), a raw task event (``"raw"``) or a processed graph
            (``"graph"``, from an event store).
        kind: ``fields``, ``raw`` or ``graph``.
        source: file the event came from.
    """

    run: int
    event: int
    data: Any
    kind: str = "fields"
    source: str = ""


class EventReader:
    """Base class: ``len(reader)`` events, ``reader.iterate(start)`` yields :class:`InputEvent`."""

    path: str = ""

    def __len__(self) -> int:  # pragma: no cover - every reader overrides it
        raise TypeError(f"{type(self).__name__} must define __len__")

    def iterate(self, start: int = 0) -> Iterator[InputEvent]:  # pragma: no cover
        raise TypeError(f"{type(self).__name__} must define iterate(start)")

    def __iter__(self) -> Iterator[InputEvent]:
        return self.iterate(0)

    def describe(self) -> list[dict]:
        """Identity of the inputs (path, size, mtime) for the resume check."""
        p = Path(self.path)
        st = p.stat() if p.exists() else None
        return [{"path": str(p.resolve()), "size": st.st_size if st else None,
                 "mtime": int(st.st_mtime) if st else None, "events": len(self)}]


# --------------------------------------------------------------------------------------------------
# columnar (ROOT / parquet) chunks -> per-event fields
# --------------------------------------------------------------------------------------------------
class _Columns:
    """A chunk of columns as flat arrays and offsets, sliced per event without awkward overhead."""

    def __init__(self, arrays: dict[str, Any], n: int):
        import awkward as ak

        self.n = n
        self.flat: dict[str, np.ndarray] = {}
        self.offsets: dict[str, np.ndarray | None] = {}
        for name, a in arrays.items():
            if a.ndim == 1 or not isinstance(a, ak.Array):
                self.flat[name] = np.asarray(ak.to_numpy(a) if isinstance(a, ak.Array) else a)
                self.offsets[name] = None
            else:
                counts = ak.to_numpy(ak.num(a, axis=1)).astype(np.int64)
                self.flat[name] = np.asarray(ak.to_numpy(ak.flatten(a, axis=1)))
                self.offsets[name] = np.concatenate([[0], np.cumsum(counts)])

    def get(self, name: str, i: int) -> np.ndarray:
        off = self.offsets[name]
        if off is None:
            return self.flat[name][i]
        return self.flat[name][off[i]:off[i + 1]]


def _events_from_columns(cols: _Columns, schema: InputSchema, present: dict[str, str], first_entry: int,
                         global_start: int, source: str) -> Iterator[InputEvent]:
    for i in range(cols.n):
        fields = {f: cols.get(b, i) for f, b in present.items()}
        run = int(cols.get(schema.run_branch, i)) if schema.run_branch in cols.flat else 0
        evn = int(cols.get(schema.event_branch, i)) if schema.event_branch in cols.flat else global_start + i
        yield InputEvent(run=run, event=evn, data=fields, kind="fields", source=source)


class _ColumnarReader(EventReader):
    """Shared logic of the ROOT and parquet readers (branch checks, run/event keys)."""

    what = "branch"

    def __init__(self, path: str | os.PathLike, schema: InputSchema, step_size: int = 100):
        self.path = str(path)
        self.schema = schema
        self.step_size = max(1, int(step_size))
        if not Path(self.path).exists():
            raise FileNotFoundError(f"input file not found: {self.path}")
        names = self._names()
        missing = [b for f, b in schema.branches.items() if f not in schema.optional and b not in names]
        if missing:
            raise schema.missing_error(self.path, missing[0], names, self.what)
        self.present = {f: b for f, b in schema.branches.items() if b in names}
        self.keys = [b for b in (schema.run_branch, schema.event_branch) if b and b in names]
        self.columns = sorted(set(self.present.values()) | set(self.keys))

    def _names(self) -> list[str]:  # pragma: no cover - overridden
        raise TypeError

    def _chunks(self, start: int) -> Iterator[tuple[int, dict[str, Any], int]]:  # pragma: no cover
        raise TypeError

    def iterate(self, start: int = 0) -> Iterator[InputEvent]:
        for first, arrays, n in self._chunks(int(start)):
            yield from _events_from_columns(_Columns(arrays, n), self.schema, self.present, first, first, self.path)


class RootReader(_ColumnarReader):
    """Events of a ROOT TTree with jagged branches (uproot; an RNTuple of that name is read too);
    ``schema.tree`` names the tree."""

    def __init__(self, path: str | os.PathLike, schema: InputSchema, step_size: int = 100):
        import uproot

        self._file = None
        p = str(path)
        if not Path(p).exists():
            raise FileNotFoundError(f"input file not found: {p}")
        with uproot.open(p) as f:
            trees = [k.split(";")[0] for k, cls in f.classnames().items() if cls in ("TTree", "ROOT::RNTuple")]
            if schema.tree not in trees:
                raise MissingBranchError(f"{p}: no TTree '{schema.tree}' (io.tree); the file has trees {sorted(set(trees))}")
            t = f[schema.tree]
            self._branch_names = list(t.keys())
            self._n = int(t.num_entries)
        super().__init__(path, schema, step_size)

    def _names(self) -> list[str]:
        return self._branch_names

    def __len__(self) -> int:
        return self._n

    def _chunks(self, start: int):
        import uproot

        if start >= self._n:
            return
        with uproot.open(self.path) as f:
            t = f[self.schema.tree]
            pos = start
            for arr in t.iterate(self.columns, step_size=self.step_size, entry_start=start, library="ak"):
                n = len(arr)
                yield pos, {c: arr[c] for c in self.columns}, n
                pos += n


class ParquetReader(_ColumnarReader):
    """Events of a parquet file (one row per event, list columns per hit/element), read by row group."""

    what = "column"

    def __init__(self, path: str | os.PathLike, schema: InputSchema, step_size: int = 100):
        import pyarrow.parquet as pq

        p = str(path)
        if not Path(p).exists():
            raise FileNotFoundError(f"input file not found: {p}")
        self._pf = pq.ParquetFile(p)
        self._n = int(self._pf.metadata.num_rows)
        self._rg_rows = [self._pf.metadata.row_group(i).num_rows for i in range(self._pf.num_row_groups)]
        super().__init__(path, schema, step_size)

    def _names(self) -> list[str]:
        return list(self._pf.schema_arrow.names)

    def __len__(self) -> int:
        return self._n

    def _chunks(self, start: int):
        import awkward as ak

        if start >= self._n:
            return
        ends = np.cumsum(self._rg_rows)
        g = int(np.searchsorted(ends, start, side="right"))
        pos = int(ends[g - 1]) if g > 0 else 0
        drop = start - pos
        for batch in self._pf.iter_batches(batch_size=self.step_size, row_groups=list(range(g, len(self._rg_rows))),
                                           columns=self.columns):
            arr = ak.from_arrow(batch)
            n = len(arr)
            if drop >= n:
                drop -= n
                pos += n
                continue
            if drop:
                arr = arr[drop:]
                pos += drop
                n -= drop
                drop = 0
            yield pos, {c: arr[c] for c in self.columns}, n
            pos += n


class TrackMLReader(EventReader):
    """Events of a TrackML CSV directory (or zip): ``event<9 digits>-hits.csv[.gz]`` (only hits are read)."""

    def __init__(self, path: str | os.PathLike, schema: InputSchema | None = None, step_size: int = 1):
        from gnnreco.data.trackml import list_events

        self.path = str(path)
        if schema is not None and schema.task != "tracking":
            raise ValueError(f"{self.path}: a TrackML directory holds tracking events, the model's task is '{schema.task}'")
        self.prefixes = list_events(self.path)
        if not self.prefixes:
            raise FileNotFoundError(f"{self.path}: no TrackML events (event<9 digits>-hits.csv[.gz]) found")

    def __len__(self) -> int:
        return len(self.prefixes)

    def iterate(self, start: int = 0) -> Iterator[InputEvent]:
        from gnnreco.data.trackml import load_dataset

        skip = int(start)
        if skip >= len(self.prefixes):
            return
        for item in load_dataset(self.path, skip=skip, parts=("hits",)):
            eid, hits = item
            yield InputEvent(run=0, event=int(eid), data={"hits": hits}, kind="raw", source=self.path)


class StoreReader(EventReader):
    """Processed graphs of a gnnreco :class:`~gnnreco.data.store.EventStore` (no graph building)."""

    def __init__(self, store: Any, indices: Sequence[int] | None = None):
        from gnnreco.data.store import EventStore

        self.store = store if isinstance(store, EventStore) else EventStore(store)
        self.path = str(getattr(self.store, "path", getattr(self.store, "root", store)))
        self.indices = np.arange(len(self.store)) if indices is None else np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def iterate(self, start: int = 0) -> Iterator[InputEvent]:
        for pos in range(int(start), len(self.indices)):
            i = int(self.indices[pos])
            ev = self.store[i]
            seed = ev.get("event_seed")
            evn = int(seed.reshape(-1)[0]) if seed is not None else i
            yield InputEvent(run=0, event=i if seed is None else evn, data=ev, kind="graph", source=self.path)

    def describe(self) -> list[dict]:
        return [{"path": self.path, "events": len(self), "indices_hash": int(np.bitwise_xor.reduce(
            (self.indices * 2654435761) % (1 << 61))) if len(self.indices) else 0}]


class MultiReader(EventReader):
    """Several readers one after another; global positions run over all of them in order."""

    def __init__(self, readers: Sequence[EventReader]):
        if not readers:
            raise ValueError("no input readers")
        self.readers = list(readers)
        self.path = ",".join(r.path for r in self.readers)

    def __len__(self) -> int:
        return sum(len(r) for r in self.readers)

    def iterate(self, start: int = 0) -> Iterator[InputEvent]:
        skip = int(start)
        for r in self.readers:
            n = len(r)
            if skip >= n:
                skip -= n
                continue
            yield from r.iterate(skip)
            skip = 0

    def describe(self) -> list[dict]:
        return [d for r in self.readers for d in r.describe()]


# --------------------------------------------------------------------------------------------------
# opening inputs
# --------------------------------------------------------------------------------------------------
def expand_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Paths from a path, a glob pattern, a comma-separated string or a list of them (order kept)."""
    if isinstance(inputs, str | os.PathLike):
        items = [s for s in str(inputs).split(",") if s]
    else:
        items = [str(i) for i in inputs]
    out: list[str] = []
    for item in items:
        if any(ch in item for ch in "*?["):
            hits = sorted(glob.glob(item))
            if not hits:
                raise FileNotFoundError(f"input pattern '{item}' matches no file")
            out.extend(hits)
        else:
            out.append(item)
    return out


def detect_format(path: str) -> str:
    """``root``, ``parquet``, ``trackml`` or ``store`` from a path's extension or content."""
    p = Path(path)
    if p.is_dir():
        if (p / "meta.json").exists():
            return "store"
        return "trackml"
    if p.suffix == ".root":
        return "root"
    if p.suffix in (".parquet", ".pq"):
        return "parquet"
    if p.suffix == ".zip":
        return "trackml"
    if not p.exists():
        raise FileNotFoundError(f"input not found: {path}")
    raise ValueError(f"{path}: cannot tell the input format from the name; pass input_format=root|parquet|trackml|store")


def open_input(inputs: str | os.PathLike | Sequence[str | os.PathLike], schema: InputSchema | None,
               fmt: str = "auto", step_size: int = 100) -> EventReader:
    """Open (and check) every input; returns one reader over all of them in order.

    Args:
        inputs: file/directory paths, glob patterns or a comma-separated string.
        schema: the task's input schema (needed for ROOT and parquet).
        fmt: ``auto`` (from each path), ``root``, ``parquet``, ``trackml`` or ``store``.
        step_size: events read per chunk.

    Raises:
        FileNotFoundError: an input does not exist.
        MissingBranchError: a file lacks a required branch (names the branch and the file).
    """
    paths = expand_inputs(inputs)
    if not paths:
        raise ValueError("no input given: pass input=<file, directory or pattern>")
    readers: list[EventReader] = []
    for p in paths:
        f = detect_format(p) if fmt in (None, "auto") else fmt
        if f in ("root", "parquet") and schema is None:
            raise ValueError(f"{p}: reading {f} needs an input schema (io=<task>)")
        if f == "root":
            readers.append(RootReader(p, schema, step_size))
        elif f == "parquet":
            readers.append(ParquetReader(p, schema, step_size))
        elif f == "trackml":
            readers.append(TrackMLReader(p, schema))
        elif f == "store":
            readers.append(StoreReader(p))
        else:
            raise ValueError(f"input_format must be auto, root, parquet, trackml or store, got {f!r}")
    return readers[0] if len(readers) == 1 else MultiReader(readers)


def write_input_file(path: str | os.PathLike, events: Sequence[dict[str, np.ndarray]], schema: InputSchema,
                     runs: Sequence[int] | None = None, event_numbers: Sequence[int] | None = None) -> Path:
    """Write events given as logical fields to a ROOT (``.root``) or parquet file in ``schema``'s layout.

    Used by tests and benchmarks to make inputs (e.g. ``fields_of_raw`` of simulated events). Written
    atomically (temporary name, then rename).
    """
    import awkward as ak

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(events)
    cols: dict[str, Any] = {}
    if schema.run_branch:
        cols[schema.run_branch] = np.asarray(runs if runs is not None else np.zeros(n), np.int64)
    if schema.event_branch:
        cols[schema.event_branch] = np.asarray(event_numbers if event_numbers is not None else np.arange(n), np.int64)
    fields = [f for f in schema.branches if n and f in events[0]]
    for f in fields:
        vals = [np.asarray(e[f]) for e in events]
        if f in schema.scalars:
            cols[schema.branches[f]] = np.concatenate([v.reshape(-1)[:1] for v in vals])
        else:
            counts = np.array([len(v) for v in vals], np.int64)
            cols[schema.branches[f]] = ak.unflatten(np.concatenate(vals) if n else np.zeros(0), counts)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}{path.suffix}")
    try:
        if path.suffix == ".root":
            from gnnreco.io.output import write_root_tree

            write_root_tree(tmp, schema.tree, cols)
        elif path.suffix in (".parquet", ".pq"):
            ak.to_parquet(ak.Array(cols), tmp)
        else:
            raise ValueError(f"{path}: expected a .root or .parquet file name")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
