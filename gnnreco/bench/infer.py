"""Inference in a workflow (``gnnreco bench infer``): ``gnnreco infer`` over synthetic tracking events.

1. Simulate ``n_events`` toy tracking events (TrackML pixel barrel, μ = 5: the quick-start data) and
   write them as a ROOT TTree with jagged hit branches (``conf/io/tracking.yaml``).
2. Run ``gnnreco infer`` on it in a subprocess (ROOT in, ROOT out, chunks of 100 events, one thread)
   with the quick-start network size (hidden 32, 4 message-passing steps; untrained weights, track
   building by connected components) and read its per-chunk statistics: events/s, resident memory
   after the first chunk and at the end, and the peak at both points. A second run cycles the first
   ``n_distinct`` events (no later event is larger than an early one) to tell a leak from the
   allocator's high-water mark following the largest event so far.
3. Reference, in this process: the same :class:`gnnreco.Reconstructor` on events already in memory
   (no file I/O, no chunking), so the ratio is the cost of streaming ROOT in and out.
4. ROOT round trip per event: writing the input fields to a TTree and reading them back through the
   reader, and writing the result columns through :class:`gnnreco.io.ChunkedOutput` and reading them
   back, each compared with the reconstruction time per event (parquet alongside).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gnnreco.bench.report import markdown_table, write_section

TITLE = "Inference in a workflow (`gnnreco bench infer`)"
#: the network and builder the benchmark runs (quick-start size; see the module docstring)
OVERRIDES = ["experiment=tracking_quickstart", "model.track_builder.method=cc", "~model.track_builder.cc_cut",
             "~model.track_builder.min_cut", "~model.track_builder.add_cut"]


def _make_run(root: Path) -> Path:
    """A run directory (``.hydra/config.yaml`` + ``checkpoints/last.ckpt``) of an untrained module."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from gnnreco.cli.config import CONF_DIR, register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=OVERRIDES)
    GlobalHydra.instance().clear()
    run = root / "run"
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints").mkdir(exist_ok=True)
    OmegaConf.save(OmegaConf.create({"task": cfg.task, "data": cfg.data, "model": cfg.model}), run / ".hydra" / "config.yaml")
    torch.manual_seed(0)
    module = instantiate(cfg.model)
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    return run / "checkpoints" / "last.ckpt"


def _simulate(n: int) -> list[dict]:
    from gnnreco.io import fields_of_raw
    from gnnreco.tasks.tracking.data import simulate

    return [fields_of_raw("tracking", simulate(s, preset="toy", mu=5)) for s in range(n)]


def _round_trip(path: Path, fields: list[dict], results: list[dict]) -> tuple[float, float]:
    """Seconds per event: input write + read back, and output write + read back."""
    from gnnreco.io import ChunkedOutput, default_schema, open_input, read_results, write_input_file

    schema = default_schema("tracking")
    n = len(fields)
    t0 = time.perf_counter()
    write_input_file(path.with_suffix(".in" + path.suffix), fields, schema, runs=[1] * n, event_numbers=range(n))
    got = sum(len(e.data["x"]) for e in open_input(path.with_suffix(".in" + path.suffix), schema, step_size=100))
    t_in = (time.perf_counter() - t0) / n
    assert got == sum(len(f["x"]) for f in fields)
    t0 = time.perf_counter()
    out = ChunkedOutput(path, chunk_size=100, resume=False, overwrite=True)
    out.open()
    for i, r in enumerate(results):
        out.add(1, i, r)
    out.finalize()
    arr = read_results(path)
    t_out = (time.perf_counter() - t0) / n
    assert len(arr) == n
    return t_in, t_out


def _infer(tmp: Path, ckpt: Path, src: Path, name: str, chunk_size: int) -> tuple[dict, float]:
    """Run ``gnnreco infer`` in a subprocess; returns its statistics file and the wall time."""
    out = tmp / name
    stats_file = tmp / f"{name}.stats.json"
    env = dict(os.environ, GNNRECO_ROOT=str(tmp), GNNRECO_PROGRESS="0")
    cmd = [sys.executable, "-m", "gnnreco.cli.main", "infer", OVERRIDES[0], f"ckpt_path={ckpt}", f"input={src}",
           f"output={out}", f"chunk_size={chunk_size}", "num_threads=1", "device=cpu",
           f"hydra.run.dir={tmp / ('hydra_' + name)}", f"stats_file={stats_file}"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"gnnreco infer failed:\n{r.stderr[-4000:]}")
    return json.loads(stats_file.read_text()), time.perf_counter() - t0


def run(quick: bool = False, n_events: int | None = None, chunk_size: int = 100, n_reference: int | None = None,
        n_distinct: int = 40) -> str:
    """Run the benchmark; returns the Markdown table (see the module docstring)."""
    import gnnreco
    from gnnreco.io import default_schema, write_input_file

    n = int(n_events or (200 if quick else 1000))
    n_ref = int(n_reference or min(n, 100 if quick else 200))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="gnnreco-bench-infer-") as d:
        tmp = Path(d)
        ckpt = _make_run(tmp)
        t0 = time.perf_counter()
        fields = _simulate(n)
        t_sim = time.perf_counter() - t0
        src = write_input_file(tmp / "events.root", fields, default_schema("tracking"), runs=[1] * n,
                               event_numbers=range(n))

        # --- gnnreco infer, ROOT -> ROOT, in its own process (clean RSS)
        st, t_cli = _infer(tmp, ckpt, src, "reco.root", chunk_size)
        first, last = st["chunks"][0], st["chunks"][-1]
        # memory in the steady state: after the second chunk (the first one warms the allocator up)
        steady = st["chunks"][min(1, len(st["chunks"]) - 1)]
        # leak check: the first `n_distinct` events cycled, so no later event is larger than one seen early
        n_rep = max(n // 2, 4 * chunk_size)
        rep = write_input_file(tmp / "repeated.root", [fields[i % n_distinct] for i in range(n_rep)],
                               default_schema("tracking"), runs=[1] * n_rep, event_numbers=range(n_rep))
        st_rep, _ = _infer(tmp, ckpt, rep, "reco_repeated.root", chunk_size)
        rep_steady, rep_last = st_rep["chunks"][min(1, len(st_rep["chunks"]) - 1)], st_rep["chunks"][-1]

        # --- reference: the same Reconstructor on events in memory, in this process
        reco = gnnreco.Reconstructor.from_checkpoint(ckpt, device="cpu")
        reco(fields[0])
        results = []
        t0 = time.perf_counter()
        for f in fields[:n_ref]:
            results.append(reco(f))
        t_reco = (time.perf_counter() - t0) / n_ref
        rt_root = _round_trip(tmp / "rt.root", fields[:n_ref], results)
        rt_pq = _round_trip(tmp / "rt.parquet", fields[:n_ref], results)

    traj = ", ".join(f"{c['rss_mb']:.0f}" for c in st["chunks"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    mean_hits = float(np.mean([len(f["x"]) for f in fields]))
    rows = [
        [f"`gnnreco infer` ROOT→ROOT, {n} events (events/s)", st["events_per_s"], 1.0 / t_reco,
         st["events_per_s"] * t_reco],
        [f"RSS after chunk 1 ({first['events_done']} ev) → end ({last['events_done']} ev), MiB",
         f"{first['rss_mb']:.0f} → {last['rss_mb']:.0f}", "", last["rss_mb"] / first["rss_mb"]],
        [f"RSS after chunk 2 ({steady['events_done']} ev) → end, MiB", f"{steady['rss_mb']:.0f} → {last['rss_mb']:.0f}",
         "", last["rss_mb"] / steady["rss_mb"]],
        [f"same, {n_rep} events cycling {n_distinct} distinct ones: RSS after chunk 2 → end, MiB",
         f"{rep_steady['rss_mb']:.0f} → {rep_last['rss_mb']:.0f}", "", rep_last["rss_mb"] / rep_steady["rss_mb"]],
        ["peak RSS after chunk 1 → end, MiB", f"{first['peak_rss_mb']:.0f} → {last['peak_rss_mb']:.0f}", "",
         last["peak_rss_mb"] / first["peak_rss_mb"]],
        ["ROOT input round trip (write + read), ms/event", 1e3 * rt_root[0], 1e3 * t_reco, rt_root[0] / t_reco],
        ["ROOT output round trip (chunks + merge + read), ms/event", 1e3 * rt_root[1], 1e3 * t_reco, rt_root[1] / t_reco],
        ["parquet input round trip, ms/event", 1e3 * rt_pq[0], 1e3 * t_reco, rt_pq[0] / t_reco],
        ["parquet output round trip, ms/event", 1e3 * rt_pq[1], 1e3 * t_reco, rt_pq[1] / t_reco],
    ]
    table = markdown_table(["measurement", "value", "reference (in-memory `Reconstructor`)", "ratio"], rows)
    notes = (
        f"\n\nToy tracking events (pixel barrel, μ = 5, {mean_hits:.0f} hits/event on average; simulation took "
        f"{t_sim:.0f} s, not counted). Quick-start network size, untrained weights, connected-components track "
        f"building; one CPU thread; chunks of {chunk_size} events; `gnnreco infer` wall time {t_cli:.0f} s "
        f"including start-up. Reference: {n_ref} events through the same `Reconstructor` in memory, "
        f"{1e3 * t_reco:.1f} ms/event. Round-trip ratios are the I/O cost as a fraction of the reconstruction "
        f"time; the events/s ratio compares two runs made one after the other on a shared machine, so it "
        f"moves with the load (either way), and the streaming cost itself is what the round-trip rows give. RSS after each chunk (MiB): {traj}. "
        f"Load average {load:.1f} on a shared 2-core machine (other jobs running): absolute rates are "
        "noisy, ratios less so."
    )
    return table + notes


def main() -> None:
    from gnnreco.utils.memory import tune_host_allocator

    tune_host_allocator()  # reuse freed activation buffers (see gnnreco.utils.memory)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 events instead of 1,000")
    ap.add_argument("--n-events", type=int, default=None)
    ap.add_argument("--write", action="store_true", help="record the table in docs/benchmarks.md")
    a = ap.parse_args()
    table = run(quick=a.quick, n_events=a.n_events)
    print(table)
    if a.write:
        cmd = "python -m gnnreco.bench.infer --write" + (" --quick" if a.quick else "")
        print(f"recorded in {write_section('infer', TITLE, cmd, table)}")


if __name__ == "__main__":
    main()
