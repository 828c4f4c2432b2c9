"""Event-storage read speed (``gnnreco bench io``).

Writes the same small processed events (graph-sized arrays) three ways and reads them back on one
core: the gnnreco sharded store, one ``torch.save`` file of a PyG ``Data`` per event (the acorn /
Exa.TrkX layout), and one ``.npz`` per event. Reported: events/s for raw reads and for reads turned
into PyG ``Data``, and the ratio to each per-event-file layout. Goal: ≥ 2,000 small events/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gnnreco.bench.report import markdown_table, write_section
from gnnreco.data.datamodule import event_to_data
from gnnreco.data.store import EventStore, write_events

TITLE = "Event storage read speed (`gnnreco bench io`)"


def _events(n: int, n_nodes: int, n_edges: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        nn_ = int(rng.integers(n_nodes // 2, n_nodes * 3 // 2))
        ne = int(rng.integers(n_edges // 2, n_edges * 3 // 2))
        out.append({
            "x": rng.normal(size=(nn_, 6)).astype(np.float32),
            "edge_index": rng.integers(0, nn_, size=(2, ne)),
            "edge_attr": rng.normal(size=(ne, 4)).astype(np.float32),
            "y": (rng.random(ne) > 0.5).astype(np.float32),
            "particle_id": rng.integers(0, 1000, nn_),
            "num_nodes": np.array([nn_]),
        })
    return out


def _rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def run(quick: bool = False, n_events: int | None = None, sizes: tuple = ((100, 400), (1000, 5000))) -> str:
    torch.set_num_threads(1)
    n = n_events or (500 if quick else 5000)
    rows = []
    for n_nodes, n_edges in sizes:
        evs = _events(n, n_nodes, n_edges)
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            write_events(d / "store", evs, task="bench", shard_size=1000)
            (d / "pt").mkdir()
            (d / "npz").mkdir()
            for i, ev in enumerate(evs):
                torch.save(event_to_data({k: torch.from_numpy(v) for k, v in ev.items()}), d / "pt" / f"{i}.pt")
                np.savez(d / "npz" / f"{i}.npz", **ev)

            def read_store(to_data: bool, d: Path = d):
                s = EventStore(d / "store")
                for i in range(len(s)):
                    ev = s[i]
                    if to_data:
                        event_to_data(ev)

            def read_pt(d: Path = d):
                for i in range(n):
                    torch.load(d / "pt" / f"{i}.pt", weights_only=False)

            def read_npz(to_data: bool, d: Path = d):
                for i in range(n):
                    with np.load(d / "npz" / f"{i}.npz") as z:
                        ev = {k: torch.from_numpy(z[k]) for k in z.files}
                    if to_data:
                        event_to_data(ev)

            r_raw = _rate(lambda: read_store(False), n)
            r_data = _rate(lambda: read_store(True), n)
            r_pt = _rate(read_pt, n)
            r_npz = _rate(lambda: read_npz(True), n)
            rows.append([f"{n_nodes} nodes, {n_edges} edges", n, f"{r_raw:,.0f}", f"{r_data:,.0f}",
                         f"{r_pt:,.0f}", f"{r_npz:,.0f}", f"{r_data / r_pt:.1f}x", f"{r_data / r_npz:.1f}x",
                         "yes" if r_data >= 2000 else "NO"])
    header = ["event size (mean)", "events", "gnnreco store raw ev/s", "gnnreco store -> Data ev/s",
              "torch.save Data per file ev/s", "npz per file -> Data ev/s", "ratio vs .pt files",
              "ratio vs .npz files", "≥ 2000 ev/s"]
    return markdown_table(header, rows) + "\n\nOne core (`torch.set_num_threads(1)`), warm page cache."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write", action="store_true", help="record the table in docs/benchmarks.md")
    a = ap.parse_args()
    table = run(quick=a.quick)
    print(table)
    if a.write:
        write_section("io", TITLE, "gnnreco bench io write=true" + (" quick=true" if a.quick else ""), table)


if __name__ == "__main__":
    main()
