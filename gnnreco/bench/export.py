"""Benchmark of ``gnnreco export``: export time, agreement with eager PyTorch and call latency per task.

``python -m gnnreco.bench.export [--quick] [--write] [--tasks tracking calo ...]``

For each task the quick-start model (``conf/experiment/<task>_quickstart.yaml``, untrained: agreement
and latency do not depend on the weights) is exported from one test event and checked on two more
events of other sizes (:func:`gnnreco.export.export_task`). The table gives the export time per format,
the largest absolute difference from eager PyTorch (``max_abs_diff`` of the manifest; calo counts
kNN near-tie outlier rows separately), and the median latency of one call of the TorchScript and ONNX
Runtime programs relative to the training-time eager network on the trace event (torch on
``--threads`` threads, ONNX Runtime on its default thread pool), all measured in this process.
``--quick`` uses fewer, smaller events (calo without noise hits: its export kNN is dense, O(N²)).
``--cpp`` also builds the libtorch runner (:mod:`gnnreco.export.native`) and calls every TorchScript export
from C++: one more row per task, "libtorch C++", with its largest difference from the exported network
called in Python and its median call time measured inside the C++ program.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

__all__ = ["run", "TASKS"]

TASKS = ("tracking", "calo", "pflow", "dfei")
#: quick mode: calo events without noise/pile-up and with few showers (the dense export kNN is O(N²))
_QUICK = {"calo": ["data.generator.gun.n_particles=[1,3]", "data.generator.gun.energy=[2.0,20.0]",
                   "data.generator.noise=false", "data.generator.pileup_density=0.0"]}


def _compose(task: str, root: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from gnnreco.cli.config import CONF_DIR, register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={task}_quickstart", *overrides],
                      return_hydra_config=True)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.root_dir = str(root)
        cfg.paths.data_dir = str(root / "data")
        cfg.paths.log_dir = str(root / "logs")
        cfg.paths.output_dir = str(root / "out")
        cfg.data.num_workers = 0
        cfg.data.gen_workers = 1
        if "progress" in cfg.data:
            cfg.data.progress = False
    return cfg


def _latency(fn, repeat: int) -> float:
    from gnnreco.bench.report import time_fn

    with torch.no_grad():
        return time_fn(fn, repeat=repeat, warmup=2)


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out if o is not None for t in _flat(o)]


def bench_task(task: str, root: Path, quick: bool, cpp: str | None = None) -> list[list[object]]:
    """Export one task's quick-start model under ``root``; one table row per format."""
    from omegaconf import open_dict

    from gnnreco.cli.common import build_model
    from gnnreco.export import as_exportable, example_batches, export_task, load_export

    cfg = _compose(task, root, _QUICK.get(task, []) if quick else [])
    with open_dict(cfg):
        if "n_events" in cfg.data:
            cfg.data.n_events = 12 if quick else 30
    torch.manual_seed(0)
    batches = example_batches(cfg, 3)
    model = build_model(cfg).eval()
    m = export_task(model, batches[0], root / "export", cfg=cfg, check_batches=batches[1:])
    inputs = model.export_inputs(batches[0])
    net = as_exportable(model.net).eval()
    eager = getattr(net, "reference", net)  # the training-time network (calo: its own kNN, not the wrapper's)
    repeat = 3 if quick else 10
    t_eager = _latency(lambda: eager(*inputs), repeat)
    shapes = " / ".join("x".join(map(str, s[0])) for s in m["checked_input_shapes"])
    rows = []
    for fmt in ("torchscript", "onnx"):
        prog = load_export(root / "export", backend=fmt)
        t = _latency(lambda prog=prog: prog(*inputs), repeat)
        rows.append([task, fmt, shapes, m["export_seconds"][fmt], m["max_abs_diff"][fmt], m["outlier_rows"][fmt],
                     t_eager * 1e3, t * 1e3, t_eager / t])
    if cpp is not None:
        from gnnreco.export.native import run_cpp

        with torch.no_grad():
            ref = _flat(net(*inputs))
        outs, ms = run_cpp(root / "export" / "model.pt", [t for t in inputs if t is not None], runner=cpp,
                           repeat=repeat, threads=torch.get_num_threads())
        if len(outs) != len(ref) or any(a.shape != b.shape for a, b in zip(outs, ref)):
            raise RuntimeError(f"{task}: the C++ runner returned shapes {[tuple(o.shape) for o in outs]}, "
                               f"Python {[tuple(r.shape) for r in ref]}")
        diff = max(float((a.double() - b.double()).abs().max()) if a.numel() else 0.0 for a, b in zip(outs, ref))
        rows.append([task, "libtorch C++", shapes, float("nan"), diff, 0, t_eager * 1e3, ms, t_eager * 1e3 / ms])
    return rows


def run(quick: bool = False, tasks: tuple[str, ...] = TASKS, cpp: bool = False) -> str:
    """Export every task in ``tasks`` and return the Markdown table (module docstring)."""
    from gnnreco.bench.report import markdown_table

    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise ValueError(f"unknown task(s) {bad}; expected some of {list(TASKS)}")
    rows: list[list[object]] = []
    runner = None
    if cpp:
        from gnnreco.export.native import build_cpp_runner

        runner = str(build_cpp_runner())
    with tempfile.TemporaryDirectory(prefix="gnnreco_bench_export_") as tmp:
        for task in tasks:
            rows += bench_task(task, Path(tmp) / task, quick, runner)
    header = ["task", "format", "first input of the 3 checked events", "export s", "max abs diff vs eager",
              "outlier rows", "eager ms", "export ms", "speed-up vs eager"]
    return markdown_table(header, rows)


TITLE = "Export (TorchScript / ONNX Runtime vs eager PyTorch)"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer, smaller events")
    p.add_argument("--write", action="store_true", help="record the table in docs/benchmarks.md")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (ONNX Runtime uses its own)")
    p.add_argument("--cpp", action="store_true", help="also call each TorchScript export from the C++ runner")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    table = run(quick=a.quick, tasks=tuple(a.tasks), cpp=a.cpp)
    print(table)
    if a.write:
        import os

        from gnnreco.bench.report import write_section

        cmd = "python -m gnnreco.bench.export" + (" --quick" if a.quick else "") + (" --cpp" if a.cpp else "") + \
            (f" --tasks {' '.join(a.tasks)}" if tuple(a.tasks) != TASKS else "")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        write_section("export", TITLE, cmd, table + f"\n\nUntrained quick-start models; CPU, load average "
                      f"{load:.1f} while measuring (machine shared with other jobs).\n")


if __name__ == "__main__":
    main()
