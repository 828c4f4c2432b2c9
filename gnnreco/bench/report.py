"""Timing helpers and the writer that records benchmark tables in ``docs/benchmarks.md``."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["machine_description", "time_fn", "write_section", "markdown_table"]


def machine_description() -> str:
    """One line naming the machine: CPU model, cores, torch version and GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, {gpu}"
    )


def time_fn(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1, min_time: float = 0.0) -> float:
    """Median wall time of ``fn()`` in seconds (CUDA-synchronised when a GPU is used)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    start_all = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start_all) < min_time:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        if len(times) >= 10 * repeat:
            break
    return statistics.median(times)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """Render a Markdown table; floats get 3 significant digits."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _benchmarks_md() -> Path:
    env = os.environ.get("GNNRECO_BENCHMARKS_MD")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


def write_section(name: str, title: str, command: str, body: str, path: str | Path | None = None,
                  machine: str | None = None) -> Path:
    """Replace the ``<!-- section:name -->`` block of ``docs/benchmarks.md`` with a new table.

    The block records the command and machine with the table, so every number can be rerun.
    """
    path = Path(path) if path is not None else _benchmarks_md()
    text = path.read_text() if path.exists() else "# gnnreco benchmarks\n"
    stamp = time.strftime("%Y-%m-%d")
    block = (
        f"<!-- section:{name} -->\n## {title}\n\n"
        f"Command: `{command}`  \nMachine: {machine or machine_description()}  \nDate: {stamp}\n\n"
        f"{body.strip()}\n<!-- /section:{name} -->"
    )
    pattern = re.compile(rf"<!-- section:{re.escape(name)} -->.*?<!-- /section:{re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    return path
