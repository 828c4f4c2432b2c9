"""DDP speed-up on CPU processes (``gnnreco bench ddp``).

Trains the tracking quick-start model (InteractionGNN edge classifier on small pixel-barrel events)
twice on the same event store, through the real command line:

* one process, ``data.batch_size = 2 b``;
* ``trainer=ddp trainer.accelerator=cpu trainer.devices=2`` (gloo), ``data.batch_size = b`` per rank.

Both runs take the same optimizer steps over the same events per epoch (the EpochSeededSampler deals
each epoch's order out to the ranks), so the ratio of their epoch times is the DDP speed-up
:math:`S_2 = t_1 / t_2` (ideal 2 on two free cores). Epoch times come from :class:`EpochTimer`
(training only: validation is off); the first epoch is left out as warm-up. Each process uses one
intra-op thread. The machine load (``os.getloadavg``) is recorded before and after, because the
speed-up of two processes on a shared two-core machine depends on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl

from gnnreco.bench.report import markdown_table, write_section

__all__ = ["EpochTimer", "run"]

TITLE = "DDP on CPU processes (`gnnreco bench ddp`)"


class EpochTimer(pl.Callback):
    """Records the wall time of every training epoch (rank 0) into a JSON file.

    Args:
        path: the JSON file written at the end of training: ``{"epochs": [seconds, ...],
            "world_size": N, "global_step": steps}``.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.times: list[float] = []
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.times.append(time.perf_counter() - self._t0)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            loss = trainer.callback_metrics.get("train/loss_epoch", trainer.callback_metrics.get("train/loss"))
            self.path.write_text(json.dumps({
                "epochs": self.times, "world_size": trainer.world_size, "global_step": trainer.global_step,
                "train_loss_rank0": float(loss) if loss is not None else None,
            }))


def _train(root: Path, name: str, devices: int, batch_size: int, epochs: int, n_events: int,
           timeout: int) -> dict:
    timing = root / f"{name}.json"
    cmd = [
        sys.executable, "-m", "gnnreco.cli.main", "train", "experiment=tracking_quickstart",
        f"data.n_events={n_events}", f"data.batch_size={batch_size}", f"trainer.max_epochs={epochs}",
        "trainer.limit_val_batches=0", "test=false", "plots=false", "callbacks=none", "num_threads=1",
        "trainer.enable_progress_bar=false", f"hydra.run.dir={root / name}",
        f"paths.data_dir={root / 'data'}",
        "+callbacks.epoch_timer._target_=gnnreco.bench.ddp.EpochTimer", f"+callbacks.epoch_timer.path={timing}",
    ]
    if devices > 1:
        cmd += ["trainer=ddp", "trainer.accelerator=cpu", f"trainer.devices={devices}"]
    env = dict(os.environ, GNNRECO_ROOT=str(root), GNNRECO_PROGRESS="0", OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"bench ddp: `{' '.join(cmd)}` failed:\n{(r.stdout + r.stderr)[-3000:]}")
    out = json.loads(timing.read_text())
    out["wall"] = wall
    return out


def run(quick: bool = False, epochs: int | None = None, n_events: int | None = None, batch_size: int = 1,
        devices: int = 2, timeout: int = 1800) -> str:
    """Time one process against ``devices`` DDP processes; returns the Markdown table.

    Args:
        quick: fewer events and epochs (a smoke run).
        epochs: training epochs per run (the first is warm-up).
        n_events: events generated for the store (70 % are training events).
        batch_size: events per batch per DDP rank (the single process uses ``devices`` times more).
        devices: DDP processes.
        timeout: seconds allowed per training run.
    """
    epochs = epochs or (3 if quick else 5)
    n_events = n_events or (40 if quick else 150)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="gnnreco_bench_ddp_") as d:
        root = Path(d)
        one = _train(root, "one", 1, batch_size * devices, epochs, n_events, timeout)
        ddp = _train(root, "ddp", devices, batch_size, epochs, n_events, timeout)
    load_after = os.getloadavg()
    if ddp["world_size"] != devices:
        raise RuntimeError(f"bench ddp: expected world size {devices}, the DDP run reported {ddp['world_size']}")
    t1 = statistics.median(one["epochs"][1:] or one["epochs"])
    t2 = statistics.median(ddp["epochs"][1:] or ddp["epochs"])
    rows = [
        ["1 process", f"{batch_size * devices}", one["global_step"], t1, one["wall"], "1.00"],
        [f"DDP, {devices} CPU processes (gloo)", f"{batch_size} x {devices}", ddp["global_step"], t2,
         ddp["wall"], f"{t1 / t2:.2f}"],
    ]
    table = markdown_table(
        ["run", "events / step", "optimizer steps", "epoch time (s, median)", "wall incl. start-up (s)",
         "speed-up"], rows)
    notes = (
        f"\n\nTracking quick-start model, {n_events} generated events ({epochs} epochs, first left out), "
        f"one intra-op thread per process, validation off. Load average (1/5/15 min) before: "
        f"{'/'.join(f'{x:.1f}' for x in load_before)}, after: {'/'.join(f'{x:.1f}' for x in load_after)}. "
        f"The 1-process wall time includes generating the event store. When more processes are runnable "
        f"than there are cores ({os.cpu_count()} here), {devices} processes also get a larger share of "
        f"the CPU than one, so on a loaded machine the ratio mixes parallel speed-up and scheduler share."
    )
    return table + notes


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write", action="store_true", help="record the table in docs/benchmarks.md")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--n-events", type=int, default=None)
    args = ap.parse_args(argv)
    table = run(quick=args.quick, epochs=args.epochs, n_events=args.n_events)
    print(table)
    if args.write:
        cmd = "python -m gnnreco.bench.ddp" + (" --quick" if args.quick else "")
        print(f"recorded in {write_section('ddp', TITLE, cmd, table)}")


if __name__ == "__main__":
    main()
