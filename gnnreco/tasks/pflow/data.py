"""MLPF event processing: generator → detector → checked element/target arrays for the event store.

A stored pflow event holds

* ``x`` [N, 12] PF elements (Delphes schema, :data:`gnnreco.sim.delphes_like.X_FEATURES`),
* ``y`` [N, 7] per-element targets ``[class, q, p_T, η, sinφ, cosφ, E]``,
* ``gen_p4`` [M, 4] visible generator particles (p_T, η, φ, E) for generator jets and MET,
* ``n_gen`` [1] = M (to split ``gen_p4`` of a batch into events), ``num_nodes`` [1] = N.

Bad inputs never pass silently: non-finite features raise (or are counted and the event skipped
with ``on_bad="skip"``), an event without elements is skipped (the DataModule counts it), and a target
class outside 0..5 raises.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from gnnreco.sim.delphes_like import CLASS_NAMES, simulate_detector
from gnnreco.sim.pythia import generate_event

log = logging.getLogger(__name__)

__all__ = ["split_gen", "store_from_files", "generate_pflow_event", "process_pflow_event", "check_elements", "BadEventError", "SKIPPED"]

N_FEATURES = 12
N_TARGETS = 7
#: counts of events skipped by reason in this process (reported by ``process_pflow_event`` callers).
SKIPPED: dict[str, int] = {"empty": 0, "non_finite": 0}


class BadEventError(ValueError):
    """An event whose elements or targets break the schema."""


def generate_pflow_event(seed: int, process: str = "ttbar", pileup: float = 0.0, backend: str = "auto",
                         ecm: float = 13600.0, pthat_min: float = 30.0,
                         detector: Mapping | None = None) -> dict[str, np.ndarray]:
    """Generate one event and its detector response (the DataModule ``generator``).

    Args:
        seed: event seed (generator and detector draw independent streams from it).
        process: ``ttbar``, ``qcd`` or ``ztautau`` (see :mod:`gnnreco.sim.pythia`).
        pileup: mean pile-up μ.
        backend: ``auto``, ``pythia`` or ``parametric``.
        ecm: √s (GeV).
        pthat_min: p̂_T threshold for ``qcd``.
        detector: overrides of :class:`gnnreco.sim.delphes_like.DetectorConfig`.
    """
    gen = generate_event(seed, process=process, pileup=pileup, ecm=ecm, pthat_min=pthat_min, backend=backend)
    out = simulate_detector(gen, seed, dict(detector or {}))
    out["backend"] = gen["backend"]
    return out


def check_elements(x: np.ndarray, y: np.ndarray | None = None, where: str = "event") -> None:
    """Raise :class:`BadEventError` naming the problem if ``x``/``y`` break the element schema."""
    if x.ndim != 2 or x.shape[1] != N_FEATURES:
        raise BadEventError(f"{where}: X must have shape [N, {N_FEATURES}], got {tuple(x.shape)}")
    bad = ~np.isfinite(x)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise BadEventError(f"{where}: {len(np.unique(rows))} element(s) have NaN/inf features "
                            f"(first: element {rows[0]}, feature {cols[0]})")
    types = np.unique(x[:, 0])
    if not np.isin(types, (1.0, 2.0)).all():
        raise BadEventError(f"{where}: element type (X[:, 0]) must be 1 (cluster) or 2 (track), got {types.tolist()}")
    if y is None:
        return
    if y.shape != (x.shape[0], N_TARGETS):
        raise BadEventError(f"{where}: y must have shape [{x.shape[0]}, {N_TARGETS}], got {tuple(y.shape)}")
    if not np.isfinite(y).all():
        raise BadEventError(f"{where}: targets contain NaN/inf")
    cls = y[:, 0]
    if (cls != np.round(cls)).any() or cls.min(initial=0) < 0 or cls.max(initial=0) >= len(CLASS_NAMES):
        raise BadEventError(f"{where}: unknown target class {sorted(set(np.unique(cls).tolist()) - set(range(len(CLASS_NAMES))))}; "
                            f"expected integers 0..{len(CLASS_NAMES) - 1} ({', '.join(CLASS_NAMES)})")


def process_pflow_event(raw: Mapping[str, np.ndarray], on_bad: str = "raise") -> dict[str, np.ndarray] | None:
    """Check and pack one event for the store (the DataModule ``processor``).

    Args:
        raw: ``X``, ``y`` (and optionally ``gen_p4``) of one event.
        on_bad: ``raise`` (default) or ``skip`` for events with non-finite features.

    Returns:
        the stored dict, or ``None`` for an event with zero elements (counted in :data:`SKIPPED`).
    """
    if on_bad not in ("raise", "skip"):
        raise ValueError(f"on_bad must be 'raise' or 'skip', got {on_bad!r}")
    x = np.asarray(raw["X"], np.float32)
    y = np.asarray(raw["y"], np.float32)
    if x.shape[0] == 0:
        SKIPPED["empty"] += 1
        log.warning("skipping an event with zero PF elements (%d so far)", SKIPPED["empty"])
        return None
    try:
        check_elements(x, y)
    except BadEventError as exc:
        if on_bad == "skip" and "NaN/inf" in str(exc):
            SKIPPED["non_finite"] += 1
            log.warning("skipping event: %s (%d skipped so far)", exc, SKIPPED["non_finite"])
            return None
        raise
    gen = np.asarray(raw.get("gen_p4", np.zeros((0, 4))), np.float32).reshape(-1, 4)
    return {"x": x, "y": y, "gen_p4": gen, "n_gen": np.array([len(gen)], np.int64),
            "num_nodes": np.array([len(x)], np.int64)}


def split_gen(gen_p4: np.ndarray, n_gen: Sequence[int]) -> list[np.ndarray]:
    """Split a batch's concatenated ``gen_p4`` into per-event arrays."""
    ends = np.cumsum(np.asarray(n_gen, np.int64))
    return np.split(np.asarray(gen_p4), ends[:-1])


def store_from_files(paths: Sequence[str], store_dir: str, on_bad: str = "raise", tree: str = "events") -> dict:
    """Convert ROOT/parquet element files (:mod:`gnnreco.data.pflow_io` schema) into an event store.

    Train on them with ``data.generator=null data.data_dir=<store_dir>``. Events are checked exactly as
    generated ones (:func:`process_pflow_event`); empty or (with ``on_bad="skip"``) non-finite events are
    skipped and counted.

    Returns:
        ``{"written": n, "skipped": m, "store": store_dir}``.
    """
    from gnnreco.data.pflow_io import read_pflow_events
    from gnnreco.data.store import EventStoreWriter

    written = skipped = 0
    w = EventStoreWriter(store_dir, task="pflow", attrs={"source_files": [str(p) for p in paths]})
    for path in paths:
        for raw in read_pflow_events(path, tree=tree):
            ev = process_pflow_event(raw, on_bad=on_bad)
            if ev is None:
                skipped += 1
                continue
            w.append(ev)
            written += 1
    w.close()
    log.info("wrote %d events to %s (%d skipped)", written, store_dir, skipped)
    return {"written": written, "skipped": skipped, "store": str(store_dir)}
