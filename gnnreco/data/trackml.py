"""TrackML CSV format: reader, writer, scorer and derived hit/particle features.

A drop-in for the reading and scoring parts of ``trackml-library`` (MIT, reimplemented here from the
format description):

* :func:`load_event` / :func:`load_dataset` read ``event<9 digits>-{hits,cells,particles,truth}.csv[.gz]``
  with the column names and dtypes of the public dataset;
* :func:`score_event` computes the TrackML score (weighted double-majority matching);
* :func:`weight_hits` computes the per-hit truth weights (hit-order and pT weighting);
* :func:`write_event` / :func:`write_submission` write the same format back (atomically);
* :func:`load_detector` reads ``detectors.csv[.gz]`` (module positions, rotations and pitches);
* :func:`add_derived_columns`, :func:`cell_features` and :func:`particle_kinematics` give the quantities
  used by the GNN tracking pipelines (r, φ, η, region labels, cluster shape features, particle pT/η and
  production radius).

Units: mm, GeV. Hit ids in the files are 1-based; internally a 0-based ``hit_index`` is added (the row
position after sorting by ``hit_id``) and the original ``hit_id`` is kept.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "HITS_DTYPES",
    "CELLS_DTYPES",
    "PARTICLES_DTYPES",
    "TRUTH_DTYPES",
    "DETECTORS_DTYPES",
    "DTYPES",
    "DEFAULT_PARTS",
    "TrackMLFormatError",
    "TrackMLEvent",
    "load_event",
    "load_dataset",
    "load_detector",
    "write_event",
    "write_detector",
    "write_submission",
    "score_event",
    "score_event_loop",
    "analyze_tracks",
    "weight_hits",
    "encode_particle_id",
    "decode_particle_id",
    "region_labels",
    "hit_cylindrical",
    "cell_features",
    "add_derived_columns",
    "particle_kinematics",
    "build_hit_table",
    "event_prefix",
]

# --------------------------------------------------------------------------------------------------
# Column names and dtypes of the public dataset (order = column order written to disk)
# --------------------------------------------------------------------------------------------------
HITS_DTYPES: dict[str, str] = {
    "hit_id": "i4",
    "x": "f4",
    "y": "f4",
    "z": "f4",
    "volume_id": "i4",
    "layer_id": "i4",
    "module_id": "i4",
}
CELLS_DTYPES: dict[str, str] = {"hit_id": "i4", "ch0": "i4", "ch1": "i4", "value": "f4"}
#: ``particle_type`` (PDG id) exists only in the throughput-phase files; it is optional here.
PARTICLES_DTYPES: dict[str, str] = {
    "particle_id": "i8",
    "particle_type": "i4",
    "vx": "f4",
    "vy": "f4",
    "vz": "f4",
    "px": "f4",
    "py": "f4",
    "pz": "f4",
    "q": "i4",
    "nhits": "i4",
}
TRUTH_DTYPES: dict[str, str] = {
    "hit_id": "i4",
    "particle_id": "i8",
    "tx": "f4",
    "ty": "f4",
    "tz": "f4",
    "tpx": "f4",
    "tpy": "f4",
    "tpz": "f4",
    "weight": "f4",
}
_ROT = [f"rot_{a}{b}" for a in "xyz" for b in "uvw"]
DETECTORS_DTYPES: dict[str, str] = {
    "volume_id": "i4",
    "layer_id": "i4",
    "module_id": "i4",
    "cx": "f8",
    "cy": "f8",
    "cz": "f8",
    **{c: "f8" for c in _ROT},
    "module_t": "f8",
    "module_minhu": "f8",
    "module_maxhu": "f8",
    "module_hv": "f8",
    "pitch_u": "f8",
    "pitch_v": "f8",
}
DTYPES: dict[str, dict[str, str]] = {
    "hits": HITS_DTYPES,
    "cells": CELLS_DTYPES,
    "particles": PARTICLES_DTYPES,
    "truth": TRUTH_DTYPES,
    "detectors": DETECTORS_DTYPES,
}
#: Columns that may be absent from a file without error.
OPTIONAL_COLUMNS: dict[str, set[str]] = {"particles": {"particle_type"}}
DEFAULT_PARTS: list[str] = ["hits", "cells", "particles", "truth"]
SUBMISSION_DTYPES: dict[str, str] = {"event_id": "i4", "hit_id": "i4", "track_id": "i8"}

_EVENT_FILE_RE = re.compile(r"(?:^|.*[/\\])(event\d{9})-([a-zA-Z]+)\.csv(?:\.gz)?$")


class TrackMLFormatError(ValueError):
    """A TrackML file is missing, malformed, lacks a column or holds NaN; the message names both."""


# --------------------------------------------------------------------------------------------------
# Event container
# --------------------------------------------------------------------------------------------------
@dataclass
class TrackMLEvent:
    """One event in TrackML form: the four tables plus its id and the seed that made it.

    Attributes:
        hits: ``hit_id, x, y, z, volume_id, layer_id, module_id``.
        cells: ``hit_id, ch0, ch1, value``.
        particles: ``particle_id, vx, vy, vz, px, py, pz, q, nhits`` (optionally ``particle_type``).
        truth: ``hit_id, particle_id, tx, ty, tz, tpx, tpy, tpz, weight``.
        event_id: integer event number (files are ``event{event_id:09d}-*.csv``).
        seed: the random seed that generated the event (``None`` for events read from disk).
        meta: free-form provenance (simulator settings, generation time, ...).
        detector: the ``detectors.csv`` table of the geometry when it is at hand (simulated events;
            the cluster-shape features need it), else ``None``. Not written by :meth:`write`.
    """

    hits: pd.DataFrame
    cells: pd.DataFrame
    particles: pd.DataFrame
    truth: pd.DataFrame
    event_id: int = 0
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    detector: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def write(self, out_dir: str | os.PathLike, compress: bool = True, write_meta: bool = True) -> Path:
        """Write ``event{id:09d}-{hits,cells,particles,truth}.csv[.gz]`` (and ``-meta.json``) to ``out_dir``.

        Returns:
            The event prefix (path without the ``-hits.csv`` suffix).
        """
        prefix = Path(out_dir) / event_prefix(self.event_id)
        write_event(
            prefix,
            hits=self.hits,
            cells=self.cells,
            particles=self.particles,
            truth=self.truth,
            compress=compress,
        )
        if write_meta:
            meta = {"event_id": int(self.event_id), "seed": self.seed, **self.meta}
            _atomic_write_bytes(Path(f"{prefix}-meta.json"), json.dumps(meta, indent=1, default=str).encode())
        return prefix

    @classmethod
    def read(cls, prefix: str | os.PathLike) -> TrackMLEvent:
        """Read an event written by :meth:`write` (or any TrackML training event)."""
        hits, cells, particles, truth = load_event(prefix)
        m = re.search(r"event(\d+)$", str(prefix))
        event_id = int(m.group(1)) if m else 0
        meta: dict[str, Any] = {}
        meta_path = Path(f"{prefix}-meta.json")
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
        seed = meta.pop("seed", None)
        meta.pop("event_id", None)
        return cls(hits, cells, particles, truth, event_id=event_id, seed=seed, meta=meta)


def event_prefix(event_id: int) -> str:
    """File prefix of an event, ``event{event_id:09d}`` (0 ≤ event_id < 10⁹, nine digits)."""
    if not 0 <= int(event_id) < 1_000_000_000:
        raise ValueError(f"event_id must be in [0, 1e9) to fit the 9-digit TrackML file name, got {event_id}")
    return f"event{int(event_id):09d}"


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
def _validate_frame(df: pd.DataFrame, part: str, source: str, dtypes: dict[str, str]) -> pd.DataFrame:
    """Check required columns and NaN, cast to the format dtypes. Errors name ``source`` and the column."""
    optional = OPTIONAL_COLUMNS.get(part, set())
    missing = [c for c in dtypes if c not in df.columns and c not in optional]
    if missing:
        raise TrackMLFormatError(
            f"{source}: missing column(s) {missing} for TrackML part '{part}'; "
            f"expected columns {list(c for c in dtypes if c not in optional)}, found {list(df.columns)}"
        )
    for col in dtypes:
        if col not in df.columns:
            continue
        values = df[col]
        if values.isna().any():
            bad = int(values.isna().to_numpy().nonzero()[0][0])
            raise TrackMLFormatError(
                f"{source}: column '{col}' holds NaN/empty values (first at data row {bad}); "
                f"expected {dtypes[col]} values everywhere"
            )
        try:
            if dtypes[col].startswith("i") and values.dtype.kind == "f":
                arr = values.to_numpy()
                if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                    raise ValueError("non-integer values")
            df[col] = values.astype(dtypes[col])
        except (ValueError, TypeError) as exc:
            raise TrackMLFormatError(
                f"{source}: column '{col}' cannot be read as {dtypes[col]} ({exc})"
            ) from exc
        if dtypes[col].startswith("f") and not np.all(np.isfinite(df[col].to_numpy())):
            raise TrackMLFormatError(f"{source}: column '{col}' holds non-finite values (inf)")
    return df


def _read_csv(handle: Any, part: str, source: str) -> pd.DataFrame:
    dtypes = DTYPES[part]
    try:
        df = pd.read_csv(handle, header=0, index_col=False)
    except pd.errors.EmptyDataError as exc:
        raise TrackMLFormatError(f"{source}: file is empty; expected a CSV header {list(dtypes)}") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise TrackMLFormatError(f"{source}: cannot parse as CSV ({exc})") from exc
    return _validate_frame(df, part, source, dtypes)


def _find_part_file(prefix: str | os.PathLike, part: str) -> Path:
    prefix = str(prefix)
    candidates = [p for p in (f"{prefix}-{part}.csv", f"{prefix}-{part}.csv.gz") if os.path.exists(p)]
    if not candidates:
        raise FileNotFoundError(
            f"TrackML '{part}' file not found: expected '{prefix}-{part}.csv' or '{prefix}-{part}.csv.gz'"
        )
    if len(candidates) > 1:
        raise TrackMLFormatError(f"both {candidates[0]} and {candidates[1]} exist; keep only one")
    return Path(candidates[0])


def load_event_part(prefix: str | os.PathLike, part: str) -> pd.DataFrame:
    """Load one part (``'hits'``, ``'cells'``, ``'particles'`` or ``'truth'``) of one event."""
    if part not in ("hits", "cells", "particles", "truth"):
        raise ValueError(f"parts: unknown TrackML part '{part}'; expected one of {DEFAULT_PARTS}")
    path = _find_part_file(prefix, part)
    return _read_csv(path, part, str(path))


def load_event(
    prefix: str | os.PathLike, parts: Sequence[str] = tuple(DEFAULT_PARTS)
) -> tuple[pd.DataFrame, ...]:
    """Load the requested parts of one event, as ``trackml.dataset.load_event`` does.

    Args:
        prefix: common prefix of the event files, e.g. ``'train/event000001000'``.
        parts: which of ``'hits', 'cells', 'particles', 'truth'`` to load, in the returned order.

    Returns:
        A tuple with one DataFrame per element of ``parts`` (column names as in the CSV header, dtypes
        of the public dataset: ids ``int32``/``int64``, coordinates and momenta ``float32``).

    Raises:
        FileNotFoundError: a part's file does not exist (the message gives the expected path).
        TrackMLFormatError: a column is missing, holds NaN or cannot be cast (message names file and
            column).
    """
    if isinstance(parts, str):
        parts = [parts]
    return tuple(load_event_part(prefix, p) for p in parts)


def _event_id_of(prefix: str) -> int:
    m = re.search(r"event(\d+)", os.path.basename(prefix))
    if not m:
        raise ValueError(f"cannot extract an event id from '{prefix}'")
    return int(m.group(1))


def list_events(path: str | os.PathLike) -> list[str]:
    """Sorted event prefixes (``event<9 digits>``) found in a directory or zip file."""
    path = str(path)
    if os.path.isdir(path):
        names = os.listdir(path)
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    else:
        raise FileNotFoundError(f"TrackML dataset path '{path}' is neither a directory nor a zip file")
    prefixes = set()
    for n in names:
        m = _EVENT_FILE_RE.match(n)
        if m:
            prefixes.add(n[: n.rfind(m.group(1))] + m.group(1))
    return sorted(prefixes)


def load_dataset(
    path: str | os.PathLike,
    skip: int | None = None,
    nevents: int | None = None,
    parts: Sequence[str] = tuple(DEFAULT_PARTS),
) -> Iterator[tuple[Any, ...]]:
    """Iterate over the events of a dataset directory (or zip file), lazily.

    Args:
        path: a directory or zip file holding ``event*-<part>.csv[.gz]`` files.
        skip: skip the first ``skip`` events (sorted by name).
        nevents: yield at most ``nevents`` events.
        parts: which parts to load for each event.

    Yields:
        ``(event_id, *dataframes)`` with one DataFrame per element of ``parts``.
    """
    if isinstance(parts, str):
        parts = [parts]
    prefixes = list_events(path)
    if skip is not None:
        prefixes = prefixes[skip:]
    if nevents is not None:
        prefixes = prefixes[:nevents]
    if os.path.isdir(str(path)):
        for p in prefixes:
            yield (_event_id_of(p), *load_event(os.path.join(str(path), p), parts))
        return
    with zipfile.ZipFile(str(path)) as z:
        names = set(z.namelist())
        for p in prefixes:
            dfs = []
            for part in parts:
                member = next((n for n in (f"{p}-{part}.csv", f"{p}-{part}.csv.gz") if n in names), None)
                if member is None:
                    raise FileNotFoundError(f"{path}: no member '{p}-{part}.csv[.gz]' in the zip file")
                data = z.read(member)
                if member.endswith(".gz"):
                    data = gzip.decompress(data)
                dfs.append(_read_csv(io.BytesIO(data), part, f"{path}:{member}"))
            yield (_event_id_of(p), *dfs)


def load_detector(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``detectors.csv[.gz]``: one row per module with position, rotation and pitches.

    Columns: ``volume_id, layer_id, module_id, cx, cy, cz, rot_xu ... rot_zw, module_t, module_minhu,
    module_maxhu, module_hv, pitch_u, pitch_v``. The rotation matrix maps local (u, v, w) to global
    (x, y, z): ``[x, y, z]ᵀ = R [u, v, w]ᵀ + c`` with ``R[i, j] = rot_{ij}``. ``module_t`` is the
    half-thickness and ``module_minhu``/``module_maxhu``/``module_hv`` the half-lengths of the module.

    A directory may be given; ``detectors.csv`` or ``detectors.csv.gz`` inside it is read.
    """
    p = Path(path)
    if p.is_dir():
        found = [q for q in (p / "detectors.csv", p / "detectors.csv.gz") if q.exists()]
        if not found:
            raise FileNotFoundError(f"no detectors.csv[.gz] in directory '{p}'")
        p = found[0]
    if not p.exists():
        raise FileNotFoundError(f"TrackML detector file not found: '{p}'")
    df = _read_csv(p, "detectors", str(p))
    key = df[["volume_id", "layer_id", "module_id"]]
    if key.duplicated().any():
        dup = key[key.duplicated()].iloc[0].tolist()
        raise TrackMLFormatError(f"{p}: duplicate module (volume_id, layer_id, module_id) = {dup}")
    return df


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _frame_for_writing(df: pd.DataFrame, part: str) -> dict[str, np.ndarray]:
    """The format columns of ``df`` as numpy arrays of the format dtypes (checked for NaN)."""
    dtypes = DTYPES[part]
    optional = OPTIONAL_COLUMNS.get(part, set())
    cols = [c for c in dtypes if c in df.columns or c not in optional]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise TrackMLFormatError(f"write_event: '{part}' DataFrame lacks column(s) {missing}")
    out: dict[str, np.ndarray] = {}
    for c in cols:
        arr = df[c].to_numpy()
        if arr.dtype.kind in "fO" and pd.isna(arr).any():
            raise TrackMLFormatError(f"write_event: '{part}' column '{c}' holds NaN")
        out[c] = arr.astype(dtypes[c], copy=False)
    return out


def _csv_bytes(columns: dict[str, np.ndarray]) -> bytes:
    """CSV text of named columns (header unquoted, floats in shortest round-trip form).

    pyarrow's writer is ~10× faster than ``DataFrame.to_csv``; pandas is the fallback.
    """
    header = (",".join(columns) + "\n").encode()
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        buf = io.BytesIO()
        table = pa.table({c: pa.array(v) for c, v in columns.items()})
        pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="none"))
        return header + buf.getvalue()
    except (ImportError, TypeError, ValueError, AttributeError):
        return pd.DataFrame(columns).to_csv(index=False, float_format="%.9g").encode()


def _write_csv(columns: dict[str, np.ndarray], path: Path, compress: bool) -> None:
    data = _csv_bytes(columns)
    if compress:
        data = gzip.compress(data, compresslevel=1, mtime=0)
    _atomic_write_bytes(path, data)


def write_event(
    prefix: str | os.PathLike,
    hits: pd.DataFrame | None = None,
    cells: pd.DataFrame | None = None,
    particles: pd.DataFrame | None = None,
    truth: pd.DataFrame | None = None,
    compress: bool = True,
) -> list[Path]:
    """Write the given parts of one event as ``{prefix}-{part}.csv[.gz]`` (atomically).

    Only the format columns are written, in the format order and dtypes (extra columns are dropped;
    ``particle_type`` is written when present). Existing files of the other compression are removed so
    that :func:`load_event` finds exactly one file per part.

    Returns:
        The written paths.
    """
    written = []
    for part, df in (("hits", hits), ("cells", cells), ("particles", particles), ("truth", truth)):
        if df is None:
            continue
        out = _frame_for_writing(df, part)
        path = Path(f"{prefix}-{part}.csv{'.gz' if compress else ''}")
        _write_csv(out, path, compress)
        other = Path(f"{prefix}-{part}.csv{'' if compress else '.gz'}")
        if other.exists():
            other.unlink()
        written.append(path)
    return written


def write_detector(detector: pd.DataFrame, path: str | os.PathLike, compress: bool | None = None) -> Path:
    """Write a ``detectors.csv[.gz]`` table (compression from the suffix unless ``compress`` is given)."""
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    out = _frame_for_writing(detector, "detectors")
    text = _csv_bytes(out)
    _atomic_write_bytes(path, gzip.compress(text, compresslevel=6, mtime=0) if compress else text)
    return path


def write_submission(
    path: str | os.PathLike, submission: pd.DataFrame, event_id: int | None = None, compress: bool | None = None
) -> Path:
    """Write a submission table ``event_id, hit_id, track_id`` (one row per hit).

    Args:
        path: output file (``.csv`` or ``.csv.gz``).
        submission: must have ``hit_id`` and ``track_id``; ``event_id`` is taken from the frame or the
            ``event_id`` argument.
        event_id: event number used when the frame has no ``event_id`` column.
    """
    df = submission.copy()
    if "event_id" not in df.columns:
        if event_id is None:
            raise TrackMLFormatError("write_submission: no 'event_id' column and no event_id argument")
        df.insert(0, "event_id", int(event_id))
    for c in SUBMISSION_DTYPES:
        if c not in df.columns:
            raise TrackMLFormatError(f"write_submission: submission lacks column '{c}'")
        if df[c].isna().any():
            raise TrackMLFormatError(f"write_submission: column '{c}' holds NaN")
    df = df[list(SUBMISSION_DTYPES)].astype(SUBMISSION_DTYPES)
    if df.duplicated(["event_id", "hit_id"]).any():
        raise TrackMLFormatError("write_submission: a hit_id appears more than once for one event_id")
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    text = df.to_csv(index=False).encode()
    _atomic_write_bytes(path, gzip.compress(text, compresslevel=6, mtime=0) if compress else text)
    return path


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------
def _require(df: pd.DataFrame, cols: Sequence[str], name: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise TrackMLFormatError(f"{name}: missing column(s) {missing}; found {list(df.columns)}")


def analyze_tracks(truth: pd.DataFrame, submission: pd.DataFrame) -> pd.DataFrame:
    """Per reconstructed track: size, majority particle and its hit counts and weight.

    The majority particle of a track is the particle with the most hits in it (ties go to the smallest
    ``particle_id``; noise, ``particle_id == 0``, can be a majority). Hits of ``truth`` that the
    submission does not mention count as one-hit tracks of their own.

    Returns:
        DataFrame with ``track_id, nhits, major_particle_id, major_particle_nhits, major_nhits,
        major_weight`` (weight normalised by the total truth weight).
    """
    _require(truth, ["hit_id", "particle_id", "weight"], "score_event: truth")
    _require(submission, ["hit_id", "track_id"], "score_event: submission")
    if submission["hit_id"].duplicated().any():
        dup = submission["hit_id"][submission["hit_id"].duplicated()].iloc[0]
        raise TrackMLFormatError(f"score_event: submission assigns hit_id {dup} more than once")
    if truth["hit_id"].duplicated().any():
        raise TrackMLFormatError("score_event: truth has duplicated hit_id values")
    total_weight = float(truth["weight"].sum())
    hit_id = truth["hit_id"].to_numpy()
    pid = truth["particle_id"].to_numpy().astype(np.int64)
    w = truth["weight"].to_numpy().astype(np.float64)
    sub = submission.set_index("hit_id")["track_id"]
    tid = sub.reindex(hit_id).to_numpy()
    # missing hits: each its own track, with ids below every real track id
    missing = pd.isna(tid)
    tid = np.where(missing, 0, tid).astype(np.int64)
    if missing.any():
        tid[missing] = tid[~missing].min(initial=0) - 1 - np.arange(int(missing.sum()))
    # dense indices by hashing (O(n)); only the (track, particle) pairs are sorted
    pinv, uniq_p = pd.factorize(pid)
    tinv, uniq_t = pd.factorize(tid)
    pcount = np.bincount(pinv, minlength=len(uniq_p))
    n_p = len(uniq_p)
    pair_inv, pair = pd.factorize(tinv.astype(np.int64) * n_p + pinv)
    pair_n = np.bincount(pair_inv, minlength=len(pair))
    pair_w = np.bincount(pair_inv, weights=w, minlength=len(pair))
    pair_t, pair_p = np.divmod(pair, n_p)
    track_n = np.bincount(pair_t, weights=pair_n, minlength=len(uniq_t)).astype(np.int64)
    # majority: most hits, ties -> smallest particle_id
    order = np.lexsort((uniq_p[pair_p], -pair_n, uniq_t[pair_t]))
    first = np.ones(len(order), bool)
    first[1:] = pair_t[order][1:] != pair_t[order][:-1]
    major = order[first]
    return pd.DataFrame(
        {
            "track_id": uniq_t[pair_t[major]],
            "nhits": track_n[pair_t[major]],
            "major_particle_id": uniq_p[pair_p[major]],
            "major_particle_nhits": pcount[pair_p[major]],
            "major_nhits": pair_n[major],
            "major_weight": pair_w[major] / total_weight if total_weight > 0 else np.zeros(len(major)),
        }
    )


def score_event(truth: pd.DataFrame, submission: pd.DataFrame) -> float:
    """TrackML score of one event.

    A reconstructed track is *good* if more than half of its hits belong to its majority particle and
    more than half of that particle's hits are in the track (double majority, both strict)::

        score = Σ_{good tracks} Σ_{hits h of the majority particle in the track} w_h  /  Σ_h w_h

    Args:
        truth: ``hit_id, particle_id, weight`` (weights of noise hits are 0).
        submission: ``hit_id, track_id``; the labels are arbitrary integers.

    Returns:
        The score in [0, 1] (1 for a perfect submission when the truth weights are the TrackML ones).
    """
    tracks = analyze_tracks(truth, submission)
    purity_rec = tracks["major_nhits"] / tracks["nhits"]
    purity_maj = tracks["major_nhits"] / tracks["major_particle_nhits"]
    good = (purity_rec > 0.5) & (purity_maj > 0.5)
    return float(tracks.loc[good, "major_weight"].sum())


def score_event_loop(truth: pd.DataFrame, submission: pd.DataFrame) -> float:
    """Reference TrackML score written as a plain loop over hits (slow; for cross-checks and benchmarks).

    Same semantics as :func:`score_event`: hits are grouped by (track, particle), the majority particle
    of a track has the most hits (ties: smallest particle id), and a track counts when both purities
    exceed one half.
    """
    pid_of = dict(zip(truth["hit_id"].tolist(), truth["particle_id"].tolist()))
    w_of = dict(zip(truth["hit_id"].tolist(), truth["weight"].tolist()))
    total = sum(w_of.values())
    particle_n: dict[int, int] = {}
    for p in pid_of.values():
        particle_n[p] = particle_n.get(p, 0) + 1
    track_of = dict(zip(submission["hit_id"].tolist(), submission["track_id"].tolist()))
    tracks: dict[Any, dict[int, list[float]]] = {}
    for h, p in pid_of.items():
        t = track_of.get(h, ("missing", h))
        entry = tracks.setdefault(t, {}).setdefault(p, [0, 0.0])
        entry[0] += 1
        entry[1] += w_of[h]
    score = 0.0
    for parts in tracks.values():
        n_track = sum(v[0] for v in parts.values())
        best = min(parts, key=lambda p: (-parts[p][0], p))
        n_maj, w_maj = parts[best]
        if n_maj / n_track > 0.5 and n_maj / particle_n[best] > 0.5:
            score += w_maj
    return score / total if total > 0 else 0.0


_ORDER_PROPOSAL = np.array([10.0, 8.0, 6.0, 5.0, 3.0, 3.0, 3.0, 5.0, 6.0])
_ORDER_MIN_HITS = 4
_ORDER_MAX_HITS = 20


def _order_weight_matrix() -> np.ndarray:
    """W[n, i]: weight of the i-th hit (ordered from the vertex) of an n-hit particle, rows sum to 1."""
    m = np.zeros((_ORDER_MAX_HITS + 1, _ORDER_MAX_HITS))
    k = len(_ORDER_PROPOSAL)
    for n in range(_ORDER_MIN_HITS, _ORDER_MAX_HITS + 1):
        support = np.arange(k) * (n - 1) / (k - 1)
        row = np.interp(np.arange(n), support, _ORDER_PROPOSAL)
        m[n, :n] = row / row.sum()
    return m


_ORDER_MATRIX = _order_weight_matrix()


def weight_pt(pt: np.ndarray, pt_inf: float = 0.5, pt_sup: float = 3.0, w_min: float = 0.2) -> np.ndarray:
    """pT weight: 0 below 0.05 GeV, ``w_min`` up to ``pt_inf``, linear to 1 at ``pt_sup``, then 1."""
    return np.interp(pt, [min(0.05, pt_inf), pt_inf, pt_sup], [w_min, w_min, 1.0], left=0.0, right=1.0)


def weight_hits(truth: pd.DataFrame, particles: pd.DataFrame, order: np.ndarray | None = None) -> np.ndarray:
    """TrackML per-hit weights, normalised to sum to 1.

    ``w_h = w_order(i_h, n_p) · w_pT(p_T)``: the order weight interpolates the profile
    [10, 8, 6, 5, 3, 3, 3, 5, 6] over the n_p hits of the particle (0 for n_p < 4; n_p is capped at 20
    and hits beyond the 20th get 0); the hit rank i_h counts from the production vertex (by
    ``|tz − vz|`` unless ``order`` is given). Noise hits (``particle_id == 0``) get 0.

    Args:
        truth: ``particle_id, tz`` per hit.
        particles: ``particle_id, vz, px, py``.
        order: optional per-hit rank along the particle trajectory (0-based), e.g. from a simulator.

    Returns:
        ``float64`` array of weights aligned with ``truth`` rows.
    """
    _require(truth, ["particle_id", "tz"], "weight_hits: truth")
    _require(particles, ["particle_id", "vz", "px", "py"], "weight_hits: particles")
    pid = truth["particle_id"].to_numpy().astype(np.int64)
    n = len(pid)
    if n == 0:
        return np.zeros(0)
    ppid = particles["particle_id"].to_numpy().astype(np.int64)
    if len(ppid) == 0:
        return np.zeros(n)
    sorter = np.argsort(ppid)
    pos = np.clip(np.searchsorted(ppid, pid, sorter=sorter), 0, len(ppid) - 1)
    prow = sorter[pos]
    found = ppid[prow] == pid
    pt = np.hypot(particles["px"].to_numpy(np.float64), particles["py"].to_numpy(np.float64))[prow]
    w_pt = np.where(found, weight_pt(pt), 0.0)
    _, inv, cnt = np.unique(pid, return_inverse=True, return_counts=True)
    nhits = cnt[inv]
    if order is None:
        dz = np.abs(truth["tz"].to_numpy(np.float64) - particles["vz"].to_numpy(np.float64)[prow])
        idx = np.lexsort((dz, inv))
        start = np.zeros(len(cnt), dtype=np.int64)
        start[1:] = np.cumsum(cnt)[:-1]
        rank = np.empty(n, dtype=np.int64)
        rank[idx] = np.arange(n) - np.repeat(start, cnt)
    else:
        rank = np.asarray(order, dtype=np.int64)
    ncap = np.minimum(nhits, _ORDER_MAX_HITS)
    ok = (nhits >= _ORDER_MIN_HITS) & (rank < _ORDER_MAX_HITS) & (pid != 0)
    w_order = np.where(ok, _ORDER_MATRIX[ncap, np.minimum(rank, _ORDER_MAX_HITS - 1)], 0.0)
    w = w_pt * w_order
    s = w.sum()
    return w / s if s > 0 else w


# --------------------------------------------------------------------------------------------------
# particle_id bit layout
# --------------------------------------------------------------------------------------------------
_PID_FIELDS = (("vertex_id", 52, 12), ("primary_id", 36, 16), ("generation", 24, 12), ("secondary_id", 12, 12), ("process", 0, 12))


def encode_particle_id(
    vertex_id: np.ndarray,
    primary_id: np.ndarray,
    generation: np.ndarray | int = 0,
    secondary_id: np.ndarray | int = 0,
    process: np.ndarray | int = 0,
) -> np.ndarray:
    """Pack the TrackML particle-id fields into an ``int64``.

    Bits (from the top): vertex_id 12, primary_id 16, generation 12, secondary_id 12, process 12.
    """
    out = np.zeros(np.broadcast(vertex_id, primary_id, generation, secondary_id, process).shape, np.uint64)
    for (name, shift, bits), val in zip(_PID_FIELDS, (vertex_id, primary_id, generation, secondary_id, process)):
        v = np.asarray(val, dtype=np.int64)
        if np.any(v < 0) or np.any(v >= (1 << bits)):
            raise ValueError(f"encode_particle_id: {name} must be in [0, {1 << bits}), got {v.min()}..{v.max()}")
        out |= v.astype(np.uint64) << np.uint64(shift)
    return out.view(np.int64)


def decode_particle_id(particles: pd.DataFrame) -> pd.DataFrame:
    """Add ``vertex_id, primary_id, generation, secondary_id, process`` decoded from ``particle_id``."""
    _require(particles, ["particle_id"], "decode_particle_id: particles")
    out = particles.copy()
    pid = out["particle_id"].to_numpy().astype(np.int64).view(np.uint64)
    for name, shift, bits in _PID_FIELDS:
        out[name] = ((pid >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int64)
    return out


# --------------------------------------------------------------------------------------------------
# Derived quantities
# --------------------------------------------------------------------------------------------------
#: acorn TrackML region labels: 1 = vol 7, 2 = vol 12/16, 3 = vol 8, 4 = vol 13/17, 5 = vol 9, 6 = vol 14/18.
REGION_OF_VOLUME: dict[int, int] = {7: 1, 12: 2, 16: 2, 8: 3, 13: 4, 17: 4, 9: 5, 14: 6, 18: 6}
#: Technology per volume: 0 = pixel, 1 = short strip, 2 = long strip.
TECHNOLOGY_OF_VOLUME: dict[int, int] = {7: 0, 8: 0, 9: 0, 12: 1, 13: 1, 14: 1, 16: 2, 17: 2, 18: 2}
BARREL_VOLUMES: frozenset[int] = frozenset({8, 13, 17})
TECHNOLOGY_NAMES: tuple[str, ...] = ("pixel", "short_strip", "long_strip")


def region_labels(volume_id: np.ndarray | pd.Series) -> pd.DataFrame:
    """Region labels of hits from their ``volume_id`` (TrackML numbering).

    Returns:
        DataFrame with ``region`` (acorn 1-6, 0 for unknown volumes), ``is_barrel`` (bool),
        ``technology`` (0 pixel, 1 short strip, 2 long strip, -1 unknown) and ``is_pixel``.
    """
    vol = np.asarray(volume_id, dtype=np.int64)
    lut_size = max(int(vol.max(initial=0)) + 1, 19)
    region = np.zeros(lut_size, np.int8)
    tech = np.full(lut_size, -1, np.int8)
    for v, r in REGION_OF_VOLUME.items():
        region[v] = r
    for v, t in TECHNOLOGY_OF_VOLUME.items():
        tech[v] = t
    t = tech[vol]
    return pd.DataFrame(
        {
            "region": region[vol],
            "is_barrel": np.isin(vol, list(BARREL_VOLUMES)),
            "technology": t,
            "is_pixel": t == 0,
        }
    )


def hit_cylindrical(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cylindrical coordinates of points: ``r = √(x²+y²)``, ``φ = atan2(y, x)``, ``η = −ln tan(θ/2)``.

    η is computed as ``asinh(z / r)`` (equal to −ln tan(θ/2) with θ = atan2(r, z)), finite for r > 0.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    z = np.asarray(z, np.float64)
    r = np.hypot(x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(r > 0, z / np.where(r > 0, r, 1.0), np.sign(z) * 1e9))
    return r, np.arctan2(y, x), eta


def _module_keys(volume: np.ndarray, layer: np.ndarray, module: np.ndarray) -> np.ndarray:
    return (
        (np.asarray(volume, np.int64) << 40) | (np.asarray(layer, np.int64) << 24) | np.asarray(module, np.int64)
    )


def lookup_modules(hits: pd.DataFrame, detector: pd.DataFrame, source: str = "hits") -> np.ndarray:
    """Row index in ``detector`` of every hit's module (by volume_id, layer_id, module_id).

    Raises:
        TrackMLFormatError: a hit's module is not in the detector table.
    """
    dkey = _module_keys(detector["volume_id"], detector["layer_id"], detector["module_id"])
    hkey = _module_keys(hits["volume_id"], hits["layer_id"], hits["module_id"])
    order = np.argsort(dkey)
    pos = np.searchsorted(dkey, hkey, sorter=order)
    pos = np.clip(pos, 0, len(dkey) - 1)
    rows = order[pos]
    bad = dkey[rows] != hkey
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        h = hits.iloc[i]
        raise TrackMLFormatError(
            f"{source}: hit_id {int(h['hit_id'])} is on module (volume_id={int(h['volume_id'])}, "
            f"layer_id={int(h['layer_id'])}, module_id={int(h['module_id'])}) that is not in the detector table"
        )
    return rows


def cell_features(hits: pd.DataFrame, cells: pd.DataFrame, detector: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cluster-shape features of every hit from its cells (as used by the Exa.TrkX/acorn pipelines).

    For each hit the cluster extent in channels along the module axes gives the local track direction
    ``l = (l_u, l_v, l_w) = (n_u · pitch_u, n_v · pitch_v, 2 t)`` with ``n_u = max ch0 − min ch0 + 1``,
    ``n_v = max ch1 − min ch1 + 1`` and ``t`` the module half-thickness. The global direction is
    ``g = R l`` with the module rotation R. The angles of a vector (a, b, c) are
    ``η = asinh(c / √(a²+b²))`` and ``φ = atan2(b, a)``; ``leta, lphi`` are those of ``l`` and
    ``geta, gphi`` those of ``g``. (The sign of the direction is not measured by the cluster size, so
    ``l`` lies in the first octant of the local frame.)

    Returns:
        DataFrame aligned with ``hits`` rows: ``cell_count``, ``cell_val`` (charge sum), and if a
        detector table is given ``leta, lphi, lx, ly, lz, geta, gphi``; hits without cells get
        ``cell_count = 0`` and zeros.
    """
    _require(hits, ["hit_id"], "cell_features: hits")
    _require(cells, ["hit_id", "ch0", "ch1", "value"], "cell_features: cells")
    hid = cells["hit_id"].to_numpy()
    agg = (
        pd.DataFrame(
            {
                "hit_id": hid,
                "ch0": cells["ch0"].to_numpy(),
                "ch1": cells["ch1"].to_numpy(),
                "value": cells["value"].to_numpy(np.float64),
            }
        )
        .groupby("hit_id", sort=False)
        .agg(
            cell_count=("value", "size"),
            cell_val=("value", "sum"),
            min0=("ch0", "min"),
            max0=("ch0", "max"),
            min1=("ch1", "min"),
            max1=("ch1", "max"),
        )
    )
    agg = agg.reindex(hits["hit_id"].to_numpy())
    count = agg["cell_count"].fillna(0).to_numpy().astype(np.int32)
    out = pd.DataFrame(
        {"cell_count": count, "cell_val": agg["cell_val"].fillna(0.0).to_numpy(np.float32)}, index=hits.index
    )
    if detector is None:
        return out
    has = count > 0
    n_u = np.where(has, agg["max0"].fillna(0).to_numpy() - agg["min0"].fillna(0).to_numpy() + 1, 0)
    n_v = np.where(has, agg["max1"].fillna(0).to_numpy() - agg["min1"].fillna(0).to_numpy() + 1, 0)
    rows = lookup_modules(hits, detector, "cell_features: hits")
    det = detector.iloc[rows]
    lx = n_u * det["pitch_u"].to_numpy(np.float64)
    ly = n_v * det["pitch_v"].to_numpy(np.float64)
    lz = np.where(has, 2.0 * det["module_t"].to_numpy(np.float64), 0.0)
    rot = det[_ROT].to_numpy(np.float64).reshape(-1, 3, 3)
    g = np.einsum("nij,nj->ni", rot, np.stack([lx, ly, lz], axis=1))
    _, lphi, leta = hit_cylindrical(lx, ly, lz)
    _, gphi, geta = hit_cylindrical(g[:, 0], g[:, 1], g[:, 2])
    for name, val in (
        ("leta", leta),
        ("lphi", lphi),
        ("lx", lx),
        ("ly", ly),
        ("lz", lz),
        ("geta", geta),
        ("gphi", gphi),
    ):
        out[name] = np.where(has, val, 0.0).astype(np.float32)
    return out


def add_derived_columns(
    hits: pd.DataFrame, cells: pd.DataFrame | None = None, detector: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Return ``hits`` sorted by ``hit_id`` with derived columns added.

    Added: ``hit_index`` (0-based row position; the original ``hit_id`` is kept), ``r, phi, eta``
    (cylindrical coordinates, :func:`hit_cylindrical`), ``region, is_barrel, technology, is_pixel``
    (:func:`region_labels`), and with ``cells``: ``cell_count, cell_val`` and with ``detector`` too:
    ``leta, lphi, lx, ly, lz, geta, gphi`` (:func:`cell_features`).
    """
    _require(hits, list(HITS_DTYPES), "add_derived_columns: hits")
    out = hits.sort_values("hit_id", kind="stable").reset_index(drop=True)
    out.insert(0, "hit_index", np.arange(len(out), dtype=np.int64))
    r, phi, eta = hit_cylindrical(out["x"].to_numpy(), out["y"].to_numpy(), out["z"].to_numpy())
    out["r"] = r.astype(np.float32)
    out["phi"] = phi.astype(np.float32)
    out["eta"] = eta.astype(np.float32)
    regions = region_labels(out["volume_id"].to_numpy())
    for c in regions.columns:
        out[c] = regions[c].to_numpy()
    if cells is not None:
        feats = cell_features(out, cells, detector)
        for c in feats.columns:
            out[c] = feats[c].to_numpy()
    return out


def particle_kinematics(particles: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``particles`` with ``pt, p, eta, phi, radius`` (production radius √(vx²+vy²)).

    ``η = asinh(pz / pT)``; particles with pT = 0 get η = ±1e9·sign(pz) guarded to a finite value
    (±20).
    """
    _require(particles, ["particle_id", "vx", "vy", "vz", "px", "py", "pz"], "particle_kinematics: particles")
    out = particles.copy()
    px = out["px"].to_numpy(np.float64)
    py = out["py"].to_numpy(np.float64)
    pz = out["pz"].to_numpy(np.float64)
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(pt > 0, np.arcsinh(pz / np.where(pt > 0, pt, 1.0)), np.sign(pz) * 20.0)
    out["pt"] = pt.astype(np.float32)
    out["p"] = np.hypot(pt, pz).astype(np.float32)
    out["eta"] = np.clip(eta, -20, 20).astype(np.float32)
    out["phi"] = np.arctan2(py, px).astype(np.float32)
    out["radius"] = np.hypot(out["vx"].to_numpy(np.float64), out["vy"].to_numpy(np.float64)).astype(np.float32)
    return out


def build_hit_table(
    hits: pd.DataFrame,
    cells: pd.DataFrame | None = None,
    particles: pd.DataFrame | None = None,
    truth: pd.DataFrame | None = None,
    detector: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per hit with everything a tracking pipeline needs.

    :func:`add_derived_columns` plus, from ``truth``, ``particle_id, weight, tx, ty, tz, tpx, tpy, tpz``
    and, from ``particles`` (via :func:`particle_kinematics`), ``pt, particle_eta, particle_phi,
    radius, vx, vy, vz, q, nhits`` (0 / NaN-free defaults for noise hits: pt 0, nhits 0).
    """
    out = add_derived_columns(hits, cells, detector)
    if truth is not None:
        _require(truth, ["hit_id", "particle_id"], "build_hit_table: truth")
        t = truth.set_index("hit_id").reindex(out["hit_id"].to_numpy())
        if t["particle_id"].isna().any():
            missing = out["hit_id"].to_numpy()[t["particle_id"].isna().to_numpy()][0]
            raise TrackMLFormatError(f"build_hit_table: truth has no row for hit_id {missing}")
        for c in ("particle_id", "weight", "tx", "ty", "tz", "tpx", "tpy", "tpz"):
            if c in t.columns:
                out[c] = t[c].to_numpy().astype(TRUTH_DTYPES[c])
        if particles is not None:
            pk = particle_kinematics(particles).set_index("particle_id")
            cols = {
                "pt": "pt",
                "eta": "particle_eta",
                "phi": "particle_phi",
                "radius": "radius",
                "vx": "vx",
                "vy": "vy",
                "vz": "vz",
                "q": "q",
                "nhits": "nhits",
            }
            pk = pk[[c for c in cols if c in pk.columns]].reindex(out["particle_id"].to_numpy())
            for src, dst in cols.items():
                if src in pk.columns:
                    vals = pk[src].to_numpy()
                    fill = 0
                    out[dst] = np.where(pd.isna(vals), fill, vals).astype(
                        np.int32 if src in ("q", "nhits") else np.float32
                    )
    return out
