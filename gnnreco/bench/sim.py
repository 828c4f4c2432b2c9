"""Benchmark of the tracker simulation and the TrackML I/O and scoring.

Measures, on one core:

* generation time of one event per preset and pile-up ⟨μ⟩ (goal: ≤ 5 s for a TrackML μ = 200 event),
  with its hit and particle counts;
* writing and reading that event as ``.csv.gz``;
* :func:`gnnreco.data.trackml.score_event` (vectorised) against the plain per-hit loop
  :func:`gnnreco.data.trackml.score_event_loop` measured in the same process.

Run ``python -m gnnreco.bench.sim [--quick] [--write]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import pandas as pd

from gnnreco.bench.report import markdown_table, time_fn, write_section

GOAL_MU200_S = 5.0


def _sim_rows(quick: bool) -> list[list[object]]:
    from gnnreco.sim.tracker import TrackerSimulator

    cases = [("toy", 5), ("trackml", 10), ("trackml", 50), ("trackml", 200), ("itk", 200)]
    if quick:
        cases = [("toy", 5), ("trackml", 200)]
    rows: list[list[object]] = []
    for preset, mu in cases:
        sim = TrackerSimulator.from_preset(preset, mu=mu)
        sim.simulate(999)  # warm-up
        walls, cpus = [], []
        for seed in range(2 if quick else 5):
            w0, c0 = time.perf_counter(), time.process_time()
            ev = sim.simulate(seed)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        t, t_cpu = statistics.median(walls), statistics.median(cpus)
        goal = f"{t_cpu / GOAL_MU200_S:.2f}" if mu == 200 else "-"
        noise = float((ev.truth["particle_id"] == 0).mean())
        pt = np.hypot(ev.particles["px"], ev.particles["py"])
        nh = ev.particles.loc[pt > 1.0, "nhits"]
        rows.append(
            [preset, mu, len(ev.hits), len(ev.particles), len(ev.cells), f"{noise:.1%}", float(nh.mean()), t, t_cpu, goal]
        )
    return rows


def _io_rows(quick: bool) -> list[list[object]]:
    from gnnreco.data import trackml as tm
    from gnnreco.sim.tracker import TrackerSimulator

    ev = TrackerSimulator.from_preset("trackml", mu=200).simulate(7)
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as d:
        prefix = os.path.join(d, "event000000007")
        t_w = time_fn(lambda: ev.write(d), repeat=1 if quick else 3, warmup=0)
        t_r = time_fn(lambda: tm.load_event(prefix), repeat=1 if quick else 3, warmup=0)
        hits, cells, particles, truth = tm.load_event(prefix)
        det = TrackerSimulator.from_preset("trackml").detector_table()
        t_d = time_fn(lambda: tm.add_derived_columns(hits, cells, det), repeat=1 if quick else 3, warmup=0)
    rows.append(["write_event (.csv.gz, 4 parts)", len(ev.hits), t_w, "-"])
    rows.append(["load_event (.csv.gz, 4 parts)", len(ev.hits), t_r, "-"])
    rows.append(["add_derived_columns (r, φ, η, regions, cell features)", len(ev.hits), t_d, "-"])
    rng = np.random.default_rng(0)
    tid = truth["particle_id"].to_numpy().copy()
    swap = rng.random(len(tid)) < 0.1
    tid[swap] = rng.choice(tid, int(swap.sum()))
    sub = pd.DataFrame({"hit_id": truth["hit_id"], "track_id": tid})
    t_vec = time_fn(lambda: tm.score_event(truth, sub), repeat=2 if quick else 5)
    t_loop = time_fn(lambda: tm.score_event_loop(truth, sub), repeat=1 if quick else 3, warmup=0)
    rows.append(["score_event (vectorised) vs per-hit loop reference", len(ev.hits), t_vec, f"{t_loop / t_vec:.1f}× faster"])
    return rows


def run(quick: bool = False, **options: object) -> str:
    """Run the benchmark and return Markdown tables."""
    sim = markdown_table(
        ["preset", "⟨μ⟩", "hits", "particles", "cells", "noise", "hits / particle (pT > 1)", "wall / event (s)", "CPU / event (s)", "CPU / 5 s goal"],
        _sim_rows(quick),
    )
    io = markdown_table(["operation", "hits", "time (s)", "vs reference"], _io_rows(quick))
    notes = (
        "One process, numpy only. Median over 5 events (seeds 0-4; sizes vary with the Poisson "
        "pile-up; the table shows the last one). CPU = process time; the machine is shared with other "
        "jobs, so wall times are upper bounds."
    )
    return f"{sim}\n\n{io}\n\n{notes}\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer cases and repeats")
    ap.add_argument("--write", action="store_true", help="record the table in docs/benchmarks.md")
    args = ap.parse_args(argv)
    table = run(quick=args.quick)
    print(table)
    if args.write:
        cmd = "python -m gnnreco.bench.sim" + (" --quick" if args.quick else "")
        write_section("sim", "Tracker simulation and TrackML I/O", cmd, table)


if __name__ == "__main__":
    main()
