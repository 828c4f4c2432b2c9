"""Read and write MLPF PF-element events in ROOT or parquet (uproot / awkward).

Schema (one entry per event, jagged over elements):

* ``X_<feature>`` for the 12 Delphes element features
  (:data:`gnnreco.sim.delphes_like.X_FEATURES`: ``X_type, X_pt_et, X_eta, …, X_is_e``),
* ``y_<target>`` for the 7 targets (``y_cls, y_charge, y_pt, y_eta, y_sin_phi, y_cos_phi, y_e``),
* optionally ``gen_pt, gen_eta, gen_phi, gen_e`` (jagged over generator particles) for jets/MET.

One flat column per feature works for both formats (ROOT TTrees hold jagged arrays of numbers; parquet
holds any awkward layout). Parquet files may instead hold ``X`` as ``var * 12`` and ``y`` as ``var * 7``
nested lists (the layout of the MLPF parquet post-processing); both are read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from gnnreco.sim.delphes_like import X_FEATURES, Y_FEATURES

__all__ = ["read_pflow_events", "write_pflow_events", "X_COLUMNS", "Y_COLUMNS", "GEN_COLUMNS"]

X_COLUMNS = tuple(f"X_{f}" for f in X_FEATURES)
Y_COLUMNS = tuple(f"y_{f}" for f in Y_FEATURES)
GEN_COLUMNS = ("gen_pt", "gen_eta", "gen_phi", "gen_e")


def _to_record(events: Sequence[dict]) -> dict:
    import awkward as ak

    cols: dict = {}
    for j, name in enumerate(X_COLUMNS):
        cols[name] = ak.Array([np.asarray(e["X"], np.float32)[:, j] for e in events])
    for j, name in enumerate(Y_COLUMNS):
        cols[name] = ak.Array([np.asarray(e["y"], np.float32)[:, j] for e in events])
    if all("gen_p4" in e for e in events):
        for j, name in enumerate(GEN_COLUMNS):
            cols[name] = ak.Array([np.asarray(e["gen_p4"], np.float32).reshape(-1, 4)[:, j] for e in events])
    return cols


def write_pflow_events(events: Sequence[dict], path: str | Path, tree: str = "events") -> Path:
    """Write events (dicts with ``X`` [N,12], ``y`` [N,7], optional ``gen_p4`` [M,4]) to ``.root`` or ``.parquet``."""
    import awkward as ak

    path = Path(path)
    cols = _to_record(events)
    if path.suffix == ".parquet":
        ak.to_parquet(ak.zip(cols, depth_limit=1), path)
    elif path.suffix == ".root":
        import uproot

        with uproot.recreate(path) as f:
            f[tree] = cols
    else:
        raise ValueError(f"{path}: unknown extension {path.suffix!r}; expected .root or .parquet")
    return path


def _stack(arr, cols: Sequence[str], path: Path, fields: Sequence[str]) -> list[np.ndarray]:
    import awkward as ak

    missing = [c for c in cols if c not in fields]
    if missing:
        raise KeyError(f"{path}: missing column(s) {missing}; the MLPF element schema needs {list(cols)}")
    counts = ak.to_numpy(ak.num(arr[cols[0]], axis=1))
    flat = np.stack([ak.to_numpy(ak.flatten(arr[c])).astype(np.float32) for c in cols], 1)
    for c in cols[1:]:
        if not np.array_equal(ak.to_numpy(ak.num(arr[c], axis=1)), counts):
            raise ValueError(f"{path}: column {c!r} has a different element count per event than {cols[0]!r}")
    return np.split(flat, np.cumsum(counts)[:-1])


def read_pflow_events(path: str | Path, tree: str = "events", entry_stop: int | None = None) -> Iterator[dict]:
    """Yield events ``{"X": [N,12], "y": [N,7], "gen_p4": [M,4]}`` from a ROOT or parquet file.

    Errors name the file and the missing or inconsistent column.
    """
    import awkward as ak

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"MLPF event file not found: {path}")
    if path.suffix == ".parquet":
        arr = ak.from_parquet(path)
        if entry_stop is not None:
            arr = arr[:entry_stop]
        fields = arr.fields
        if "X" in fields and "y" in fields:  # nested var * 12 / var * 7 layout
            xs = [np.asarray(ak.to_numpy(x), np.float32).reshape(-1, 12) for x in arr["X"]]
            ys = [np.asarray(ak.to_numpy(y), np.float32).reshape(-1, 7) for y in arr["y"]]
            gens = [np.zeros((0, 4), np.float32)] * len(xs)
            for x, y in zip(xs, ys):
                if len(x) != len(y):
                    raise ValueError(f"{path}: X and y have different element counts ({len(x)} vs {len(y)})")
        else:
            xs, ys = _stack(arr, X_COLUMNS, path, fields), _stack(arr, Y_COLUMNS, path, fields)
            gens = _stack(arr, GEN_COLUMNS, path, fields) if all(c in fields for c in GEN_COLUMNS) else \
                [np.zeros((0, 4), np.float32)] * len(xs)
    elif path.suffix == ".root":
        import uproot

        with uproot.open(path) as f:
            if tree not in f:
                raise KeyError(f"{path}: no TTree {tree!r} (found {list(f.keys())})")
            t = f[tree]
            arr = t.arrays(entry_stop=entry_stop)
            fields = arr.fields
        xs, ys = _stack(arr, X_COLUMNS, path, fields), _stack(arr, Y_COLUMNS, path, fields)
        gens = _stack(arr, GEN_COLUMNS, path, fields) if all(c in fields for c in GEN_COLUMNS) else \
            [np.zeros((0, 4), np.float32)] * len(xs)
    else:
        raise ValueError(f"{path}: unknown extension {path.suffix!r}; expected .root or .parquet")
    for x, y, g in zip(xs, ys, gens):
        if len(x) != len(y):
            raise ValueError(f"{path}: X and y columns have different element counts ({len(x)} vs {len(y)})")
        yield {"X": x, "y": y, "gen_p4": g}
