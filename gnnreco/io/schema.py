"""Input schemas: which branches (columns) one event of a task is read from, and how they form a raw event.

A schema (``conf/io/<task>.yaml``) maps *logical fields* to *branch names*::

    task: tracking
    tree: events              # ROOT TTree name
    run_branch: run           # per-event run number (null: 0)
    event_branch: event       # per-event event number (null: the entry index)
    branches:                 # logical field -> branch / column name
      x: hit_x
      ...
    optional: [hit_id]        # fields that may be absent from a file

Every logical field is one jagged branch (one value per hit / element / particle per event) except
the per-event scalars a task lists in :data:`SCALAR_FIELDS`. Renaming a branch is one override, e.g.
``gnnreco infer io.branches.x=SpacePoint_x``.

:func:`assemble` turns the logical fields of one event into the *raw event* the task's processor
reads (the same object its simulator produces), filling truth-only inputs (labels, particle tables)
with empty placeholders so that the unchanged training-time processor builds the inference graph.
:func:`fields_of_raw` is the inverse (used to write input files from simulated events).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "InputSchema",
    "MissingBranchError",
    "DEFAULT_FIELDS",
    "SCALAR_FIELDS",
    "default_schema",
    "assemble",
    "fields_of_raw",
    "as_numpy",
]


class MissingBranchError(KeyError):
    """An input file lacks a branch (column) of the input schema; the message names both."""

    def __str__(self) -> str:  # KeyError quotes its message; print it plainly
        return str(self.args[0]) if self.args else ""


def _tracking_fields() -> dict[str, str]:
    return {"hit_id": "hit_id", "x": "hit_x", "y": "hit_y", "z": "hit_z", "volume_id": "hit_volume_id",
            "layer_id": "hit_layer_id", "module_id": "hit_module_id"}


def _calo_fields() -> dict[str, str]:
    return {k: k for k in ("hit_x", "hit_y", "hit_z", "hit_layer", "hit_energy", "hit_time")}


def _pflow_fields() -> dict[str, str]:
    from gnnreco.data.pflow_io import X_COLUMNS

    return {c: c for c in X_COLUMNS}


def _dfei_fields() -> dict[str, str]:
    from gnnreco.sim.lhcb import NODE_FEATURES

    out = {f: f for f in NODE_FEATURES}
    out["n_pv"] = "n_pv"
    return out


#: Default logical field → branch name of every task (``conf/io/<task>.yaml`` repeats them).
DEFAULT_FIELDS = {"tracking": _tracking_fields, "calo": _calo_fields, "pflow": _pflow_fields, "dfei": _dfei_fields}
#: Per-event scalar fields (one value per event, not jagged).
SCALAR_FIELDS: dict[str, frozenset[str]] = {"dfei": frozenset({"n_pv"})}
_DEFAULT_OPTIONAL = {"tracking": ("hit_id",), "dfei": ("n_pv", "PVx", "PVy", "PVz")}


@dataclass
class InputSchema:
    """Where one event of ``task`` is read from.

    Args:
        task: task name (``tracking``, ``calo``, ``pflow``, ``dfei``).
        branches: logical field → branch (ROOT) / column (parquet) name.
        optional: logical fields that may be missing from a file.
        tree: ROOT TTree name.
        run_branch: branch of the run number (None: run 0 for every event).
        event_branch: branch of the event number (None: the entry index in the input stream).
    """

    task: str
    branches: dict[str, str]
    optional: tuple[str, ...] = ()
    tree: str = "events"
    run_branch: str | None = "run"
    event_branch: str | None = "event"
    scalars: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, task: str | None = None) -> InputSchema:
        """Build from an ``io`` config (DictConfig or dict); missing keys take the task defaults."""
        from gnnreco.utils.config import to_plain

        c = dict(to_plain(cfg) or {})
        task = task or c.get("task")
        if not task:
            raise ValueError("io.task is not set: an input schema needs its task name")
        if c.get("task") and task != c["task"]:
            raise ValueError(f"io.task is '{c['task']}' but the model's task is '{task}': select io={task}")
        base = default_schema(task) if task in DEFAULT_FIELDS else None
        branches = dict(base.branches if base else {})
        branches.update({str(k): str(v) for k, v in (c.get("branches") or {}).items()})
        if not branches:
            raise ValueError(f"io.branches is empty and task '{task}' has no default input schema")
        optional = tuple(c.get("optional", base.optional if base else ()))
        unknown_opt = [o for o in optional if o not in branches]
        if unknown_opt:
            raise ValueError(f"io.optional names fields {unknown_opt} that are not in io.branches {sorted(branches)}")
        return cls(task=task, branches=branches, optional=optional, tree=str(c.get("tree", "events")),
                   run_branch=c.get("run_branch", "run"), event_branch=c.get("event_branch", "event"),
                   scalars=SCALAR_FIELDS.get(task, frozenset()))

    def required(self) -> list[str]:
        return [f for f in self.branches if f not in self.optional]

    def field_of(self, branch: str) -> str | None:
        for k, v in self.branches.items():
            if v == branch:
                return k
        return None

    def missing_error(self, path: Any, branch: str, available: Sequence[str], what: str = "branch") -> MissingBranchError:
        fld = self.field_of(branch)
        where = f" (input field '{fld}' of the {self.task} schema; rename it with io.branches.{fld}=<name>)" if fld else ""
        avail = sorted(available)
        shown = ", ".join(avail[:20]) + (" …" if len(avail) > 20 else "")
        return MissingBranchError(f"{path}: no {what} '{branch}'{where}; the file has: {shown}")


def default_schema(task: str) -> InputSchema:
    """The built-in schema of ``task`` (the same as ``conf/io/<task>.yaml``)."""
    if task not in DEFAULT_FIELDS:
        raise ValueError(f"no default input schema for task '{task}'; expected one of {sorted(DEFAULT_FIELDS)}")
    return InputSchema(task=task, branches=DEFAULT_FIELDS[task](), optional=_DEFAULT_OPTIONAL.get(task, ()),
                       scalars=SCALAR_FIELDS.get(task, frozenset()))


# --------------------------------------------------------------------------------------------------
# plain arrays from numpy / awkward / torch / pandas
# --------------------------------------------------------------------------------------------------
def as_numpy(v: Any, name: str = "value") -> np.ndarray:
    """A NumPy array from a NumPy, awkward, torch, pandas or list value (no copy where possible)."""
    if isinstance(v, np.ndarray):
        return v
    if hasattr(v, "detach") and hasattr(v, "cpu"):  # torch
        return v.detach().cpu().numpy()
    if hasattr(v, "to_numpy") and not type(v).__module__.startswith("awkward"):  # pandas
        return v.to_numpy()
    if type(v).__module__.startswith("awkward"):
        import awkward as ak

        try:
            return ak.to_numpy(v)
        except Exception as exc:  # ragged inside one event
            raise ValueError(f"'{name}': expected a flat (non-ragged) array for one event, got {ak.type(v)}") from exc
    return np.asarray(v)


def _get(ev: Mapping[str, Any], key: str) -> Any:
    if hasattr(ev, "fields") and not isinstance(ev, Mapping):  # awkward Record
        return ev[key] if key in ev.fields else None
    return ev.get(key) if isinstance(ev, Mapping) else getattr(ev, key, None)


def _keys(ev: Any) -> list[str]:
    if hasattr(ev, "fields") and not isinstance(ev, Mapping):
        return list(ev.fields)
    if isinstance(ev, Mapping):
        return list(ev.keys())
    return [k for k in ("hits", "particles", "truth", "cells") if getattr(ev, k, None) is not None]


def _need(ev: Any, names: Sequence[str], task: str) -> dict[str, np.ndarray]:
    out, missing = {}, []
    for n in names:
        v = _get(ev, n)
        if v is None:
            missing.append(n)
        else:
            out[n] = as_numpy(v, n)
    if missing:
        raise KeyError(f"{task} event: missing field(s) {missing}; got {sorted(_keys(ev))}")
    return out


# --------------------------------------------------------------------------------------------------
# logical fields -> raw event of the task processor
# --------------------------------------------------------------------------------------------------
def _assemble_tracking(ev: Any) -> Any:
    import pandas as pd

    if _get(ev, "hits") is not None:  # already a TrackML-style raw event
        return ev
    cols = _need(ev, ["x", "y", "z", "volume_id", "layer_id", "module_id"], "tracking")
    n = len(cols["x"])
    hid = _get(ev, "hit_id")
    hits = pd.DataFrame({
        "hit_id": as_numpy(hid).astype(np.int64) if hid is not None else np.arange(1, n + 1, dtype=np.int64),
        "x": cols["x"].astype(np.float32), "y": cols["y"].astype(np.float32), "z": cols["z"].astype(np.float32),
        "volume_id": cols["volume_id"].astype(np.int32), "layer_id": cols["layer_id"].astype(np.int32),
        "module_id": cols["module_id"].astype(np.int32),
    })
    return {"hits": hits}


def _assemble_calo(ev: Any) -> dict[str, np.ndarray]:
    names = ("hit_x", "hit_y", "hit_z", "hit_layer", "hit_energy", "hit_time")
    raw: dict[str, np.ndarray] = dict(_need(ev, names, "calo"))
    n = len(raw["hit_energy"])
    truth = {"hit_shower": np.full(n, -1, np.int64), "shower_energy": np.zeros(0), "shower_pid": np.zeros(0, np.int64),
             "shower_eta": np.zeros(0), "shower_impact": np.zeros((0, 3)), "shower_time": np.zeros(0)}
    for k, v in truth.items():
        got = _get(ev, k)
        raw[k] = as_numpy(got, k) if got is not None else v
    return raw


def _assemble_pflow(ev: Any) -> dict[str, np.ndarray]:
    from gnnreco.data.pflow_io import X_COLUMNS

    X = _get(ev, "X")
    if X is not None:
        X = np.asarray(as_numpy(X, "X"), np.float32).reshape(-1, len(X_COLUMNS))
    else:
        cols = _need(ev, list(X_COLUMNS), "pflow")
        X = np.stack([cols[c].astype(np.float32) for c in X_COLUMNS], 1) if len(cols[X_COLUMNS[0]]) else \
            np.zeros((0, len(X_COLUMNS)), np.float32)
    y = _get(ev, "y")
    y = np.asarray(as_numpy(y, "y"), np.float32).reshape(len(X), -1) if y is not None else np.zeros((len(X), 7), np.float32)
    return {"X": X, "y": y}


def _assemble_dfei(ev: Any) -> dict[str, np.ndarray]:
    from gnnreco.sim.lhcb import NODE_FEATURES

    x = _get(ev, "x")
    if x is not None and np.ndim(as_numpy(x)) == 2:
        x = np.asarray(as_numpy(x, "x"), np.float32)
    else:
        present = [f for f in NODE_FEATURES if _get(ev, f) is not None]
        cols = _need(ev, [f for f in NODE_FEATURES[:10]], "dfei")
        if all(f in present for f in NODE_FEATURES[10:]):
            cols.update(_need(ev, list(NODE_FEATURES[10:]), "dfei"))
        names = [f for f in NODE_FEATURES if f in cols]
        n = len(cols["Ox"])
        x = np.stack([cols[f].astype(np.float32) for f in names], 1) if n else np.zeros((0, len(names)), np.float32)
    n = len(x)
    raw: dict[str, Any] = {"x": x}
    lca = _get(ev, "lca")
    raw["lca"] = as_numpy(lca, "lca") if lca is not None else np.zeros((n, n), np.int64)
    npv = _get(ev, "n_pv")
    if npv is not None:
        raw["n_pv"] = np.asarray(as_numpy(npv, "n_pv")).reshape(-1)[:1]
    for k in ("pv", "pid", "cluster", "pv_ip_index", "pv_true_index", "mode_id"):
        v = _get(ev, k)
        if v is not None:
            raw[k] = as_numpy(v, k)
    return raw


_ASSEMBLERS = {"tracking": _assemble_tracking, "calo": _assemble_calo, "pflow": _assemble_pflow, "dfei": _assemble_dfei}


def assemble(task: str, event: Any) -> Any:
    """The raw event of ``task``'s processor from logical fields (or a raw event, returned as is).

    Args:
        task: task name.
        event: mapping (or awkward record) of logical fields as NumPy/awkward/torch arrays, or an
            event already in the task's raw form (a TrackML-style event with ``hits``; a calo/pflow/dfei
            raw dict).

    Raises:
        KeyError: a required field is missing (the message lists the fields the event has).
    """
    fn = _ASSEMBLERS.get(task)
    if fn is None:
        return event  # tasks without a schema (e.g. test tasks): the processor reads the event as is
    return fn(event)


# --------------------------------------------------------------------------------------------------
# raw event -> logical fields (writing input files from simulated events)
# --------------------------------------------------------------------------------------------------
def fields_of_raw(task: str, raw: Any) -> dict[str, np.ndarray]:
    """The logical fields of a raw ``task`` event (inverse of :func:`assemble`, truth dropped)."""
    if task == "tracking":
        hits = raw["hits"] if isinstance(raw, Mapping) else raw.hits
        return {k: hits[k].to_numpy() for k in ("hit_id", "x", "y", "z", "volume_id", "layer_id", "module_id")}
    if task == "calo":
        return {k: np.asarray(raw[k]) for k in ("hit_x", "hit_y", "hit_z", "hit_layer", "hit_energy", "hit_time")}
    if task == "pflow":
        from gnnreco.data.pflow_io import X_COLUMNS

        X = np.asarray(raw["X"], np.float32)
        return {c: X[:, j] for j, c in enumerate(X_COLUMNS)}
    if task == "dfei":
        from gnnreco.sim.lhcb import NODE_FEATURES

        x = np.asarray(raw["x"], np.float32)
        out = {f: x[:, j] for j, f in enumerate(NODE_FEATURES[: x.shape[1]])}
        if "n_pv" in raw or "pv" in raw:
            out["n_pv"] = np.asarray([raw["n_pv"] if "n_pv" in raw else len(raw["pv"])], np.int64).reshape(-1)[:1]
        return out
    raise ValueError(f"fields_of_raw: no input schema for task '{task}'")
