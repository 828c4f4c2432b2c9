"""Chunked, atomic and resumable output of reconstruction results (ROOT or parquet).

Layout while a job runs, for ``output=reco.root``::

    reco.root.parts/
      state.json            what is being made: inputs (path, size, mtime), model, schema, chunk size
      chunk-000000.parquet  events [0, chunk_size) — each written to a temporary name, then renamed
      chunk-000001.parquet  ...

Only whole chunks ever carry their final name, so a crash leaves complete chunks and at most a
temporary file (removed on the next start). :meth:`ChunkedOutput.finalize` merges the chunks, one at a
time (bounded memory), into ``reco.root.tmp<pid>`` and renames it to ``reco.root``; only then is the
parts directory removed. Hence the final file either does not exist or is complete, and a rerun with
the same inputs and settings resumes after the last complete chunk (:meth:`ChunkedOutput.open`
returns how many events are done). A rerun with other inputs or settings is refused, naming what
changed, unless ``resume=False`` (which discards the parts).

One row per event: ``run``, ``event``, ``ok`` and the task's columns
(:mod:`gnnreco.io.results`); ragged columns are awkward ``var`` lists (parquet) or jagged branches
with a counter (ROOT). :func:`read_results` reads either back as one awkward array.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["ChunkedOutput", "ResumeMismatchError", "read_results", "output_format", "write_results", "write_root_tree",
           "root_columns", "root_types"]

_STATE = "state.json"


class ResumeMismatchError(RuntimeError):
    """Partial output of an earlier run exists but was made with other inputs or settings."""


def output_format(path: str | os.PathLike, fmt: str = "auto") -> str:
    """``root`` or ``parquet`` from ``fmt`` or the file extension."""
    if fmt not in (None, "auto"):
        if fmt not in ("root", "parquet"):
            raise ValueError(f"output_format must be auto, root or parquet, got {fmt!r}")
        return fmt
    suf = Path(path).suffix
    if suf == ".root":
        return "root"
    if suf in (".parquet", ".pq"):
        return "parquet"
    raise ValueError(f"output '{path}': cannot tell the format from the extension {suf!r}; "
                     "use .root or .parquet (or output_format=root|parquet)")


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


class ChunkedOutput:
    """Collect per-event result columns, write them chunk by chunk, then merge atomically.

    Args:
        path: final output file (``.root`` or ``.parquet``).
        fingerprint: JSON-serialisable description of the job (inputs, model, schema ...); a resume
            must match it exactly.
        chunk_size: events per chunk file.
        fmt: ``auto`` (from the extension), ``root`` or ``parquet``.
        tree: TTree name of a ROOT output.
        resume: continue from complete chunks of an earlier run with the same fingerprint.
        overwrite: replace an existing final output (otherwise it is an error).
    """

    def __init__(self, path: str | os.PathLike, fingerprint: Mapping[str, Any] | None = None,
                 chunk_size: int = 100, fmt: str = "auto", tree: str = "reco", resume: bool = True,
                 overwrite: bool = False) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.path = Path(path)
        self.fmt = output_format(self.path, fmt)
        self.parts = self.path.with_name(self.path.name + ".parts")
        self.fingerprint = json.loads(json.dumps(dict(fingerprint or {}), sort_keys=True, default=str))
        self.chunk_size = int(chunk_size)
        self.tree = tree
        self.resume = resume
        self.overwrite = overwrite
        self.n_chunks = 0
        self.n_done = 0
        self.columns: dict[str, dict] = {}  # name -> {"dtype": str, "scalar": bool}
        self._rows: list[tuple[int, int, bool, dict[str, np.ndarray]]] = []

    # ------------------------------------------------------------------ start / resume
    def open(self) -> int:
        """Prepare the parts directory; returns the number of events already written (resume)."""
        if self.path.exists() and not self.overwrite:
            raise FileExistsError(f"output '{self.path}' already exists; pass overwrite=true or another output")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state_path = self.parts / _STATE
        if self.parts.exists():
            state = json.loads(state_path.read_text()) if state_path.exists() else None
            if state is None or not self.resume:
                why = "resume=false" if state is not None else "no state.json"
                log.warning("discarding partial output %s (%s)", self.parts, why)
                shutil.rmtree(self.parts)
            else:
                self._check_state(state)
                self.columns = {k: v for k, v in state.get("columns", [])}  # a list: keeps the column order
                self._scan_chunks()
        if not self.parts.exists():
            self.parts.mkdir(parents=True)
            self._save_state()
        if self.n_done:
            log.info("resuming %s: %d events in %d complete chunks already written", self.path, self.n_done, self.n_chunks)
        return self.n_done

    def _state(self) -> dict:
        return {"fingerprint": self.fingerprint, "chunk_size": self.chunk_size, "format": self.fmt,
                "tree": self.tree, "columns": [[k, v] for k, v in self.columns.items()]}

    def _save_state(self) -> None:
        _atomic_json(self.parts / _STATE, self._state())

    def _check_state(self, state: Mapping[str, Any]) -> None:
        diffs = []
        if state.get("chunk_size") != self.chunk_size:
            diffs.append(f"chunk_size {state.get('chunk_size')} -> {self.chunk_size}")
        old, new = state.get("fingerprint", {}), self.fingerprint
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                diffs.append(f"{k}: {json.dumps(old.get(k), default=str)[:200]} -> {json.dumps(new.get(k), default=str)[:200]}")
        if diffs:
            raise ResumeMismatchError(
                f"partial output '{self.parts}' was made by a run with other settings ({'; '.join(diffs)}); "
                "rerun with the same inputs and settings to resume, or pass resume=false to start over"
            )

    def _chunk_path(self, i: int) -> Path:
        return self.parts / f"chunk-{i:06d}.parquet"

    def _scan_chunks(self) -> None:
        import pyarrow.parquet as pq

        for p in self.parts.iterdir():
            if ".tmp" in p.name and p.name != _STATE:
                p.unlink()  # an interrupted write
        i, done = 0, 0
        while self._chunk_path(i).exists():
            done += pq.ParquetFile(self._chunk_path(i)).metadata.num_rows
            i += 1
        for p in self.parts.glob("chunk-*.parquet"):  # a gap means later chunks are not contiguous
            if int(p.stem.split("-")[1]) >= i:
                p.unlink()
        self.n_chunks, self.n_done = i, done

    # ------------------------------------------------------------------ adding events
    def add(self, run: int, event: int, columns: Mapping[str, Any] | None, ok: bool = True) -> None:
        """Add one event's columns (None or ``ok=False``: rejected event, empty columns)."""
        cols = {k: np.asarray(v) for k, v in (columns or {}).items()}
        for k, v in cols.items():
            spec = self.columns.get(k)
            if spec is None:
                self.columns[k] = {"dtype": v.dtype.str, "scalar": v.ndim == 0}
            elif spec["scalar"] != (v.ndim == 0):
                raise ValueError(f"result column '{k}' is a scalar in some events and an array in others")
        self._rows.append((int(run), int(event), bool(ok and columns is not None), cols))
        if len(self._rows) >= self.chunk_size:
            self.flush()

    @property
    def pending(self) -> int:
        return len(self._rows)

    def _chunk_array(self, rows: list) -> Any:
        import awkward as ak

        n = len(rows)
        data: dict[str, Any] = {
            "run": np.array([r[0] for r in rows], np.int64),
            "event": np.array([r[1] for r in rows], np.int64),
            "ok": np.array([r[2] for r in rows], bool),
        }
        for name, spec in self.columns.items():
            dt = np.dtype(spec["dtype"])
            if spec["scalar"]:
                data[name] = np.array([r[3].get(name, np.zeros((), dt)) for r in rows], dt)
            else:
                parts = [np.asarray(r[3].get(name, np.zeros(0, dt)), dt).reshape(-1) for r in rows]
                counts = np.array([len(p) for p in parts], np.int64)
                flat = np.concatenate(parts) if n else np.zeros(0, dt)
                data[name] = ak.unflatten(flat, counts)
        return ak.Array(data)

    def flush(self) -> None:
        """Write the pending events as the next chunk (temporary name, then rename)."""
        import awkward as ak

        if not self._rows:
            return
        arr = self._chunk_array(self._rows)
        final = self._chunk_path(self.n_chunks)
        tmp = final.with_name(final.name + f".tmp{os.getpid()}")
        try:
            ak.to_parquet(arr, tmp)
            self._save_state()  # the column schema must be known before a chunk that relies on it exists
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
        self.n_done += len(self._rows)
        self.n_chunks += 1
        self._rows = []

    # ------------------------------------------------------------------ merge
    def _complete(self, arr: Any) -> Any:
        """Add columns a chunk lacks (all its events rejected before the schema was known)."""
        import awkward as ak

        n = len(arr)
        for name, spec in self.columns.items():
            if name in arr.fields:
                continue
            dt = np.dtype(spec["dtype"])
            col = np.zeros(n, dt) if spec["scalar"] else ak.unflatten(np.zeros(0, dt), np.zeros(n, np.int64))
            arr = ak.with_field(arr, col, name)
        return arr[["run", "event", "ok", *self.columns]]

    def _chunks(self):
        import awkward as ak

        for i in range(self.n_chunks):
            yield self._complete(ak.from_parquet(self._chunk_path(i)))

    def finalize(self) -> Path:
        """Merge every chunk into the final file atomically and remove the parts directory."""
        self.flush()
        tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        try:
            if self.fmt == "parquet":
                self._merge_parquet(tmp)
            else:
                self._merge_root(tmp)
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()
        shutil.rmtree(self.parts, ignore_errors=True)
        return self.path

    def _merge_parquet(self, tmp: Path) -> None:
        import awkward as ak

        if self.n_chunks == 0:
            ak.to_parquet(self._complete(ak.Array({"run": np.zeros(0, np.int64), "event": np.zeros(0, np.int64),
                                                   "ok": np.zeros(0, bool)})), tmp)
            return
        ak.to_parquet_row_groups(self._chunks(), tmp)

    def _merge_root(self, tmp: Path) -> None:
        import uproot

        with uproot.recreate(tmp) as f:
            tree = None
            for arr in self._chunks():
                cols = root_columns(arr)
                if tree is None:
                    tree = f.mktree(self.tree, root_types(cols))
                tree.extend(cols)
            if tree is None:  # no events: an empty tree with the key columns
                f.mktree(self.tree, {"run": np.int64, "event": np.int64, "ok": np.bool_})


def root_columns(arr: Any) -> dict[str, Any]:
    """Columns of an awkward record array for ``uproot`` (jagged ones stay awkward)."""
    import awkward as ak

    out = {}
    for f in arr.fields:
        col = arr[f]
        out[f] = ak.to_numpy(col) if col.ndim == 1 else col
    return out


def root_types(cols: Mapping[str, Any]) -> dict[str, Any]:
    """Branch types for ``uproot``'s ``mktree``: NumPy dtypes, or awkward list types for jagged columns."""
    return {k: (v.dtype if isinstance(v, np.ndarray) else v.type.content) for k, v in cols.items()}


def write_root_tree(path: str | os.PathLike, tree: str, cols: Mapping[str, Any]) -> None:
    """Write columns (NumPy arrays, awkward jagged arrays) as one TTree (not an RNTuple)."""
    import uproot

    with uproot.recreate(path) as f:
        f.mktree(tree, root_types(cols)).extend(dict(cols))


def write_results(path: str | os.PathLike, rows: list[tuple[int, int, Mapping[str, Any]]], tree: str = "reco",
                  overwrite: bool = True) -> Path:
    """Write ``(run, event, columns)`` rows in one go (atomic); for small outputs and tests."""
    out = ChunkedOutput(path, chunk_size=max(1, len(rows)), tree=tree, resume=False, overwrite=overwrite)
    out.open()
    for run, ev, cols in rows:
        out.add(run, ev, cols)
    return out.finalize()


def read_results(path: str | os.PathLike, tree: str = "reco") -> Any:
    """Read a ``gnnreco infer`` output (ROOT or parquet) as one awkward array (one record per event)."""
    import awkward as ak

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"result file not found: {path}")
    if output_format(path) == "parquet":
        return ak.from_parquet(path)
    import uproot

    with uproot.open(path) as f:
        if tree not in f:
            raise KeyError(f"{path}: no TTree '{tree}' (found {list(f.keys())})")
        t = f[tree]
        keys = list(t.keys())
        counters = {f"n{k}" for k in keys}  # uproot's counter branches of jagged columns
        return t.arrays([k for k in keys if k not in counters or k[1:] not in keys], library="ak")
